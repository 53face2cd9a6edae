# Shared by tuning/check, tuning/apply and tuning/revert: argument parsing,
# host readers and the formulas that turn a connection target N into required
# values. docs/tuning.md explains each formula; keep the two in step.
#
# Sourced, not executed. Uses only bash, coreutils and util-linux (prlimit).
# Sysctls are read and written through /proc/sys, exactly as sysctl(8) does,
# so that one prefix can move every path the scripts touch.

# Every path the scripts read or write sits under this prefix: /proc/sys,
# /proc/meminfo, /sys/class/net, /etc/sysctl.d and /var/lib/ringcast. Empty
# (the default) is the host itself; tuning/test points it at a throwaway tree
# so that no test reads or changes the host's kernel settings.
RINGCAST_TUNING_ROOT=${RINGCAST_TUNING_ROOT:-}
RINGCAST_TUNING_ROOT=${RINGCAST_TUNING_ROOT%/}
SYSCTL_DIR=$RINGCAST_TUNING_ROOT/proc/sys
MEMINFO=$RINGCAST_TUNING_ROOT/proc/meminfo
NET_CLASS_DIR=$RINGCAST_TUNING_ROOT/sys/class/net
RINGCAST_SAVED_DEFAULT=$RINGCAST_TUNING_ROOT/var/lib/ringcast/tuning.saved
RINGCAST_SAVED=${RINGCAST_SAVED:-$RINGCAST_SAVED_DEFAULT}
RINGCAST_SYSCTL_CONF=${RINGCAST_SYSCTL_CONF:-$RINGCAST_TUNING_ROOT/etc/sysctl.d/90-ringcast.conf}

# The engine's `websocket.backlog` (default 4096). Read from the same
# environment variable the engine reads, so one setting drives both.
BACKLOG=${RINGCAST_WEBSOCKET_BACKLOG:-4096}

# io_uring submission queue entries per shard (engine/src/engine.rs,
# URING_ENTRIES). The kernel gives the completion queue twice as many.
URING_ENTRIES=4096

PAGE_SIZE=$(getconf PAGESIZE 2>/dev/null || echo 4096)

# The file behind a sysctl key (dots become slashes, as sysctl(8) does).
sysctl_path() {
    echo "$SYSCTL_DIR/${1//.//}"
}

# Reads a sysctl, with tabs turned into single spaces; empty when it does not
# exist on this host (e.g. nf_conntrack_max without the conntrack module).
sysctl_get() {
    local file
    file=$(sysctl_path "$1")
    [[ -r $file ]] || return 0
    tr -s '\t ' '  ' <"$file" 2>/dev/null
}

# Writes a sysctl (what `sysctl -w KEY=VALUE` does); fails like it when the
# key is missing or the kernel refuses the value.
sysctl_set() {
    printf '%s\n' "$2" >"$(sysctl_path "$1")"
}

# Creates directory $1 (and missing parents) and prints the topmost one it
# created, or nothing when $1 existed: apply records it so that revert
# removes exactly the directories apply made.
make_dir() {
    local dir=$1 top=
    while [[ -n $dir && $dir != / && ! -e $dir ]]; do
        top=$dir
        dir=$(dirname "$dir")
    done
    [[ -n $top ]] || return 0
    mkdir -p "$1"
    echo "$top"
}

# Parses `--connections=N` into CONNECTIONS, `--role=R` into ROLE (only when
# "role" is listed in $1) and any other flag listed in $1 (space-separated
# names such as "json dry-run") into FLAG_<name> variables. Exits 2 with the
# usage text in $2 on anything else.
parse_args() {
    local allowed=$1 usage=$2 arg name
    CONNECTIONS=1000000
    ROLE=both
    shift 2
    for arg in "$@"; do
        case $arg in
            --role=*)
                ROLE=${arg#--role=}
                if [[ " $allowed " != *" role "* ]]; then
                    echo "error: unknown argument '$arg'" >&2
                    echo "$usage" >&2
                    exit 2
                fi
                if [[ $ROLE != engine && $ROLE != loadgen && $ROLE != both ]]; then
                    echo "error: --role must be engine, loadgen or both (got '$ROLE')" >&2
                    echo "$usage" >&2
                    exit 2
                fi
                ;;
            --connections=*)
                CONNECTIONS=${arg#--connections=}
                if ! [[ $CONNECTIONS =~ ^[0-9]+$ ]] || ((CONNECTIONS < 1 || CONNECTIONS > 100000000)); then
                    echo "error: --connections must be an integer from 1 to 100000000 (got '${arg#--connections=}')" >&2
                    echo "$usage" >&2
                    exit 2
                fi
                ;;
            -h | --help)
                echo "$usage"
                exit 0
                ;;
            --*)
                name=${arg#--}
                if [[ " $allowed " == *" $name "* ]]; then
                    printf -v "FLAG_${name//-/_}" 1
                else
                    echo "error: unknown argument '$arg'" >&2
                    echo "$usage" >&2
                    exit 2
                fi
                ;;
            *)
                echo "error: unknown argument '$arg'" >&2
                echo "$usage" >&2
                exit 2
                ;;
        esac
    done
}

# role_needs ROW_ROLE: true when a setting needed by ROW_ROLE (engine,
# loadgen or both) matters for the host's --role.
role_needs() {
    [[ $ROLE == both || $1 == both || $1 == "$ROLE" ]]
}

# --- Formulas (docs/tuning.md, "Formulas") ---------------------------------

# Descriptors one engine process needs: one per connection, plus a margin for
# listeners (one per shard per listener), eventfds, the store's files and log
# output. The margin is 10% of N and at least 1024.
need_nofile() {
    local margin=$((CONNECTIONS / 10))
    ((margin < 1024)) && margin=1024
    echo $((CONNECTIONS + margin))
}

# System-wide file handles: 1.2 × N (the engine plus whatever else runs, load
# generators included) plus 65536 for the rest of the system.
need_file_max() {
    echo $((CONNECTIONS * 12 / 10 + 65536))
}

# Pages the kernel charges for N sockets at their minimum buffers
# (tcp_rmem[0] + tcp_wmem[0] each).
socket_min_bytes() {
    local rmin wmin
    rmin=$(sysctl_get net.ipv4.tcp_rmem | awk '{print $1}')
    wmin=$(sysctl_get net.ipv4.tcp_wmem | awk '{print $1}')
    echo $((CONNECTIONS * (${rmin:-4096} + ${wmin:-4096})))
}
need_tcp_mem_pages() {
    local bytes
    bytes=$(socket_min_bytes)
    echo $(((bytes + PAGE_SIZE - 1) / PAGE_SIZE))
}

# Locked memory for one shard's io_uring: 4096 SQEs × 64 B + 8192 CQEs × 16 B
# + the 4096 × 4 B SQ index array, about 400 KiB; 512 KiB per shard with the
# ring headers and rounding. Returned in KiB (the unit of `ulimit -l`).
need_memlock_kib() {
    local shards
    shards=$(nproc)
    echo $((shards * 512))
}

# Ephemeral ports a load generator gets per source IP with the widest sane
# range (1024-65535).
PORTS_WIDEST=64512

# True when the running kernel is at least $1.$2.
kernel_at_least() {
    local major minor
    IFS=. read -r major minor _ <<<"$(uname -r)"
    minor=${minor%%[^0-9]*}
    ((major > $1 || (major == $1 && minor >= $2)))
}
