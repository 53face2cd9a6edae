# Sourced by the IM benches (benches/im-chat.sh, benches/im-group.sh): one
# engine with `[im] enabled` on loopback, 2 shards by default, started and
# stopped by its PID. Not run on its own.
#
# im_engine_config FILE PORT SHARDS DATA_DIR SECRET API_KEY: writes the
# engine's config (WebSocket on PORT, the HTTP API on PORT + 1).
im_engine_config() {
    cat > "$1" <<TOML
version = 1
[server]
shards = $3
pin_cores = false
data_dir = "$4"
[websocket]
listen = "127.0.0.1:$2"
backlog = 4096
connections_max_per_shard = 20000
[api]
listen = "127.0.0.1:$(($2 + 1))"
key = "$6"
[auth]
jwt_secret = "$5"
[log]
level = "warn"
[im]
enabled = true
TOML
}
