//! The cluster over a real `nats-server` (docs/cluster.md): several
//! `ringcast` processes, started from the release-or-debug binary of this
//! build, joined by NATS on loopback. Each test starts its own NATS server
//! on a random port and its own nodes, and kills them by PID at the end.
//!
//! `nats-server` comes from Debian's apt (`ci/deps-nats.sh` installs it);
//! without it these tests fail with a message saying so.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::Message;

use crate::util::{api_raw, free_port, read_close_code, token, wait_until, Ws, API_KEY, SECRET};

/// One cluster test at a time: each runs four processes, and a port two
/// tests drew alike would join both clusters' `SO_REUSEPORT` groups.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn nats_binary() -> PathBuf {
    for candidate in ["/usr/sbin/nats-server", "/usr/bin/nats-server"] {
        if Path::new(candidate).exists() {
            return candidate.into();
        }
    }
    panic!("nats-server is not installed: run ci/deps-nats.sh (apt-get install nats-server)");
}

/// A nats-server on 127.0.0.1, restartable on the same port.
struct Nats {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl Nats {
    fn start() -> Nats {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut nats = Nats {
            child: None,
            port,
            dir,
        };
        nats.restart();
        nats
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) on its port and waits until it listens.
    fn restart(&mut self) {
        let conf = self.dir.path().join("nats.conf");
        std::fs::write(
            &conf,
            format!(
                "listen: 127.0.0.1:{}\nping_interval: \"1s\"\nping_max: 2\nmax_payload: 1048576\n",
                self.port
            ),
        )
        .unwrap();
        let child = Command::new(nats_binary())
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nats-server");
        self.child = Some(child);
        let addr: SocketAddr = format!("127.0.0.1:{}", self.port).parse().unwrap();
        assert!(
            wait_until(Duration::from_secs(10), || TcpStream::connect(addr).is_ok()),
            "nats-server did not start"
        );
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One engine process of the cluster.
struct Node {
    child: Option<Child>,
    id: u8,
    api: SocketAddr,
    /// `api.node_listen`: this process alone, whatever the shared ports.
    node_api: SocketAddr,
    ws: SocketAddr,
    config_path: PathBuf,
}

impl Node {
    /// Starts node `id` with its own data directory under `dir`, on the
    /// given ports (shared with other nodes when they are the same).
    fn start(dir: &Path, id: u8, nats: &Nats, stores: u32, ws_port: u16, api_port: u16) -> Node {
        Node::start_with(dir, id, nats, stores, (ws_port, api_port), false)
    }

    /// [`Node::start`], with the IM layer on when `im`.
    fn start_with(
        dir: &Path,
        id: u8,
        nats: &Nats,
        stores: u32,
        (ws_port, api_port): (u16, u16),
        im: bool,
    ) -> Node {
        let im_enabled = if im { "enabled = true\n" } else { "" };
        let data_dir = dir.join(format!("node-{id}"));
        let config_path = dir.join(format!("node-{id}.toml"));
        let node_api_port = free_port();
        std::fs::write(
            &config_path,
            format!(
                "version = 1\n[server]\nshards = 2\npin_cores = false\nnode_id = {id}\n\
                 data_dir = {data_dir:?}\nshutdown_grace_ms = 500\n\
                 [websocket]\nlisten = \"127.0.0.1:{ws_port}\"\n\
                 [api]\nlisten = \"127.0.0.1:{api_port}\"\nkey = \"{API_KEY}\"\n\
                 node_listen = \"127.0.0.1:{node_api_port}\"\n\
                 [auth]\njwt_secret = \"{SECRET}\"\n\
                 [cluster]\nnats_url = \"{}\"\nstores = {stores}\nheartbeat_ms = 200\n\
                 node_timeout_ms = 2500\nrequest_timeout_ms = 1000\n\
                 [[namespace]]\nname = \"news\"\npublish = \"any\"\n\
                 [[namespace]]\nname = \"hist\"\npublish = \"any\"\nhistory = true\ndurability = \"sync\"\n\
                 [im]\n{im_enabled}presence_offline_grace_ms = 500\n\
                 [log]\nlevel = \"info\"\n",
                nats.url()
            ),
        )
        .unwrap();
        let mut node = Node {
            child: None,
            id,
            api: format!("127.0.0.1:{api_port}").parse().unwrap(),
            node_api: format!("127.0.0.1:{node_api_port}").parse().unwrap(),
            ws: format!("127.0.0.1:{ws_port}").parse().unwrap(),
            config_path,
        };
        node.restart();
        node
    }

    fn restart(&mut self) {
        let log = std::fs::File::create(self.config_path.with_extension("log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_ringcast"))
            .arg(format!("--config={}", self.config_path.display()))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn ringcast");
        self.child = Some(child);
        let (api, ws) = (self.api, self.ws);
        assert!(
            wait_until(Duration::from_secs(20), || TcpStream::connect(api).is_ok()
                && TcpStream::connect(ws).is_ok()),
            "node {} did not start",
            self.id
        );
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("running");
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// SIGTERM; whether the process exited within `within`.
    fn terminate(&mut self, within: Duration) -> bool {
        self.signal("TERM");
        let Some(child) = self.child.as_mut() else {
            return true;
        };
        let exited = wait_until(within, || child.try_wait().unwrap().is_some());
        if exited {
            self.child = None;
        }
        exited
    }

    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn api(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        api_raw(
            self.api,
            method,
            path,
            body.map(|b| b.to_string()).as_deref(),
            Some(API_KEY),
        )
    }

    fn connect(&self, user: &str, query: &str) -> Ws {
        let url = format!(
            "ws://{}/connection/websocket?token={}{query}",
            self.ws,
            token(user)
        );
        let stream = TcpStream::connect(self.ws).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let (mut ws, _) = tungstenite::client(url, stream).expect("upgrade");
        let first = read(&mut ws).expect("connect message");
        assert!(first.get("connect").is_some(), "{first}");
        ws
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The next JSON message, or `None` on a timeout or close.
fn read(ws: &mut Ws) -> Option<Value> {
    loop {
        match ws.read() {
            Ok(Message::Text(text)) => return Some(serde_json::from_str(&text).unwrap()),
            Ok(Message::Ping(_) | Message::Pong(_)) => continue,
            Ok(_) | Err(_) => return None,
        }
    }
}

/// The next push, skipping replies and other events.
fn next_push(ws: &mut Ws) -> Option<Value> {
    loop {
        let message = read(ws)?;
        if let Some(push) = message.get("push") {
            return Some(push.clone());
        }
    }
}

/// Subscribes; returns the reply and the pushes that came before it (a
/// recovery's replay).
fn subscribe(ws: &mut Ws, id: u64, params: Value) -> (Value, Vec<Value>) {
    let mut params = params;
    let mut pushes = Vec::new();
    ws.send(Message::Text(
        json!({"id": id, "method": "subscribe", "params": params.take()}).to_string(),
    ))
    .unwrap();
    loop {
        let message = read(ws).expect("subscribe reply");
        if message["id"] == json!(id) {
            assert!(message.get("result").is_some(), "subscribe: {message}");
            return (message, pushes);
        }
        if let Some(push) = message.get("push") {
            pushes.push(push.clone());
        }
    }
}

/// Waits until every node sees the others (heartbeats) and is connected.
fn wait_joined(nodes: &[&Node]) {
    let others = nodes.len() - 1;
    for node in nodes {
        assert!(
            wait_until(Duration::from_secs(15), || {
                let (status, health) = node.api("GET", "/health", None);
                status == 200
                    && health["cluster"]["live_nodes"]
                        .as_array()
                        .is_some_and(|live| live.len() >= others)
            }),
            "node {} did not see the cluster: {:?}",
            node.id,
            node.api("GET", "/health", None)
        );
    }
}

/// A user whose inbox lives in `partition` of `stores`.
fn user_in_partition(partition: u32, stores: u32, tag: &str) -> String {
    (0..)
        .map(|i| format!("{tag}{i}"))
        .find(|user| {
            ringcast_engine::cluster::partition_of(&format!("user:{user}"), stores) == partition
        })
        .unwrap()
}

fn three_nodes(dir: &Path, nats: &Nats) -> Vec<Node> {
    let nodes: Vec<Node> = (0..3)
        .map(|id| Node::start(dir, id, nats, 3, free_port(), free_port()))
        .collect();
    wait_joined(&nodes.iter().collect::<Vec<_>>());
    nodes
}

#[test]
fn a_publication_reaches_subscribers_on_other_nodes_once() {
    let _serial = serial();
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let nodes = three_nodes(dir.path(), &nats);
    let mut on_0 = nodes[0].connect("sub0", "");
    let mut on_1 = nodes[1].connect("sub1", "");
    subscribe(&mut on_0, 1, json!({"channel": "news:x"}));
    subscribe(&mut on_1, 1, json!({"channel": "news:x"}));
    // The bucket subscriptions travel asynchronously: publish until one
    // arrives, then check the rest arrive once each, in order.
    let mut sent = 0;
    let arrived = wait_until(Duration::from_secs(10), || {
        sent += 1;
        nodes[2].api(
            "POST",
            "/api/publish",
            Some(json!({"channel": "news:x", "data": {"n": sent}})),
        );
        on_1.get_mut()
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        next_push(&mut on_1).is_some()
    });
    assert!(arrived, "no publication crossed from node 2 to node 1");
    on_1.get_mut()
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    while next_push_within(&mut on_1, Duration::from_millis(300)).is_some() {}
    while next_push_within(&mut on_0, Duration::from_millis(300)).is_some() {}
    for n in 1..=20 {
        let (status, body) = nodes[2].api(
            "POST",
            "/api/publish",
            Some(json!({"channel": "news:x", "data": {"seq": n}})),
        );
        assert_eq!(status, 200, "{body}");
    }
    for ws in [&mut on_0, &mut on_1] {
        for n in 1..=20 {
            let push = next_push(ws).expect("a publication from node 2");
            assert_eq!(push["data"]["seq"], json!(n), "in order, once: {push}");
        }
        assert!(
            next_push_within(ws, Duration::from_millis(300)).is_none(),
            "nothing twice"
        );
    }
    // Stats of every node, from any node.
    let (_, stats) = nodes[1].api("GET", "/api/stats", None);
    assert_eq!(stats["nodes"].as_array().unwrap().len(), 3, "{stats}");
    assert_eq!(stats["cluster_connections"], json!(2), "{stats}");
    // Channel presence across nodes.
    let (_, presence) = nodes[2].api("GET", "/api/presence?channel=news:x", None);
    assert_eq!(
        presence["clients"].as_array().unwrap().len(),
        2,
        "{presence}"
    );
}

fn next_push_within(ws: &mut Ws, timeout: Duration) -> Option<Value> {
    ws.get_mut().set_read_timeout(Some(timeout)).unwrap();
    let push = next_push(ws);
    ws.get_mut()
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    push
}

#[test]
fn a_send_reaches_every_device_of_the_user_on_any_node_with_one_offset() {
    let _serial = serial();
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let nodes = three_nodes(dir.path(), &nats);
    // The inbox lives in node 0's partition; the devices are on 1 and 2;
    // the API call goes to node 1.
    let bob = user_in_partition(0, 3, "bob");
    let mut phone = nodes[1].connect(&bob, "");
    let mut laptop = nodes[2].connect(&bob, "");
    let mut last = 0;
    for n in 1..=10 {
        let (status, body) = nodes[1].api(
            "POST",
            "/api/send",
            Some(json!({"user": bob, "data": {"n": n}})),
        );
        assert_eq!(status, 200, "send via node 1: {body}");
        let offset = body["results"][0]["offset"].as_u64().unwrap();
        assert_eq!(offset, last + 1, "offsets gap-free: {body}");
        last = offset;
    }
    for device in [&mut phone, &mut laptop] {
        for n in 1..=10u64 {
            let push = next_push(device).expect("the send");
            assert_eq!(push["data"]["n"], json!(n), "{push}");
            assert_eq!(push["offset"], json!(n), "{push}");
        }
    }
    // A client's `send` from node 0, which neither owns nor holds bob.
    let mut alice = nodes[0].connect("alice", "");
    let (reply, _) = command(&mut alice, 7, "send", json!({"user": bob, "data": "hi"}));
    assert_eq!(reply["result"]["offset"], json!(11), "{reply}");
    for device in [&mut phone, &mut laptop] {
        let push = next_push(device).expect("the client's send");
        assert_eq!(
            (&push["data"], &push["sender"]),
            (&json!("hi"), &json!("alice"))
        );
    }
    let (_, presence) = nodes[0].api(
        "POST",
        "/api/presence/users",
        Some(json!({"users": [bob, "nobody"]})),
    );
    assert_eq!(presence["users"][0]["online"], json!(true), "{presence}");
    assert_eq!(presence["users"][1]["online"], json!(false), "{presence}");
    // Disconnect from a node holding none of bob's connections.
    let (status, _) = nodes[0].api("POST", "/api/disconnect", Some(json!({"user": bob})));
    assert_eq!(status, 200);
    assert_eq!(read_close_code(&mut phone), Some(4003));
    assert_eq!(read_close_code(&mut laptop), Some(4003));
}

/// The window at connect (docs/cluster.md): a connection with no recovery
/// position, on a node whose partition does not hold the user's inbox, is
/// sent `connect` only once the owner has the user's registration, so a
/// send made as soon as `connect` arrived reaches it, whichever node the
/// send goes through. Each round is a new user, so each connection is its
/// node's first of the user: the registration that has to come first.
#[test]
fn a_send_right_after_connect_reaches_a_user_whose_inbox_is_on_another_node() {
    let _serial = serial();
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let nodes = three_nodes(dir.path(), &nats);
    for round in 0..30 {
        let user = user_in_partition(0, 3, &format!("fresh{round}x"));
        let (holder, sender) = if round % 2 == 0 { (1, 2) } else { (2, 1) };
        let mut device = nodes[holder].connect(&user, "");
        let (status, body) = nodes[sender].api(
            "POST",
            "/api/send",
            Some(json!({"user": user, "data": {"round": round}})),
        );
        assert_eq!(status, 200, "{body}");
        let push = next_push(&mut device)
            .unwrap_or_else(|| panic!("round {round}: the send made right after connect"));
        assert_eq!(push["data"]["round"], json!(round), "{push}");
        assert_eq!(push["offset"], json!(1), "{push}");
    }
}

#[test]
fn history_and_recovery_work_on_a_node_that_does_not_own_the_stream() {
    let _serial = serial();
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let nodes = three_nodes(dir.path(), &nats);
    let channel = (0..)
        .map(|i| format!("hist:room{i}"))
        .find(|c| ringcast_engine::cluster::partition_of(c, 3) == 2)
        .unwrap();
    for n in 1..=30 {
        let via = &nodes[n % 2];
        let (status, body) = via.api(
            "POST",
            "/api/publish",
            Some(json!({"channel": channel, "data": {"n": n}})),
        );
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["offset"], json!(n), "{body}");
    }
    let (status, page) = nodes[0].api(
        "POST",
        "/api/history",
        Some(json!({"stream": channel, "limit": 100})),
    );
    assert_eq!(status, 200, "{page}");
    let offsets: Vec<u64> = page["publications"]
        .as_array()
        .unwrap_or_else(|| panic!("{page}"))
        .iter()
        .map(|p| p["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, (1..=30).collect::<Vec<_>>());
    let epoch = page["epoch"].clone();
    // A client on node 1 recovers from offset 10, then gets live ones.
    let mut client = nodes[1].connect("reader", "");
    let (reply, replayed) = subscribe(
        &mut client,
        1,
        json!({"channel": channel, "since": {"offset": 10, "epoch": epoch}}),
    );
    assert_eq!(
        reply["result"]["recovery"]["recovered"],
        json!(true),
        "{reply}"
    );
    let offsets: Vec<u64> = replayed
        .iter()
        .map(|push| push["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, (11..=30).collect::<Vec<_>>(), "{reply}");
    let (status, _) = nodes[0].api(
        "POST",
        "/api/publish",
        Some(json!({"channel": channel, "data": {"n": 31}})),
    );
    assert_eq!(status, 200);
    let push = next_push(&mut client).expect("live after the replay");
    assert_eq!(push["offset"], json!(31), "{push}");
    assert!(next_push_within(&mut client, Duration::from_millis(300)).is_none());
}

#[test]
fn a_killed_owner_makes_its_streams_unavailable_until_it_returns_and_loses_nothing() {
    let _serial = serial();
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = three_nodes(dir.path(), &nats);
    let alice = user_in_partition(1, 3, "alice");
    let send = |node: &Node, key: &str| {
        node.api(
            "POST",
            "/api/send",
            Some(json!({"user": alice, "data": {"k": key}, "client_msg_id": key})),
        )
    };
    let mut acked = Vec::new();
    for n in 0..10 {
        let key = format!("k{n}");
        let (status, body) = send(&nodes[0], &key);
        assert_eq!(status, 200, "{body}");
        acked.push((key, body["results"][0]["offset"].as_u64().unwrap()));
    }
    nodes[1].kill9();
    // Said, not silent: the partition's owner is gone.
    let (status, body) = send(&nodes[2], "while-down");
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], json!("store_unavailable"), "{body}");
    assert_eq!(body["error"]["retryable"], json!(true), "{body}");
    // Presence says when it could not ask the user's inbox owner.
    let (_, presence) = nodes[2].api(
        "POST",
        "/api/presence/users",
        Some(json!({"users": [alice]})),
    );
    assert_eq!(
        (
            &presence["users"][0]["online"],
            &presence["users"][0]["unknown"]
        ),
        (&json!(false), &json!(true)),
        "{presence}"
    );
    nodes[1].restart();
    wait_joined(&nodes.iter().collect::<Vec<_>>());
    // The client retries with the same key: stored once.
    let (status, body) = send(&nodes[2], "while-down");
    assert_eq!(status, 200, "{body}");
    acked.push((
        "while-down".into(),
        body["results"][0]["offset"].as_u64().unwrap(),
    ));
    let (status, again) = send(&nodes[0], "while-down");
    assert_eq!(status, 200);
    assert_eq!(
        again["results"][0]["offset"], body["results"][0]["offset"],
        "deduplicated: {again}"
    );
    let (status, page) = nodes[2].api(
        "POST",
        "/api/history",
        Some(json!({"stream": format!("user:{alice}"), "limit": 100})),
    );
    assert_eq!(status, 200, "{page}");
    let stored: Vec<(String, u64)> = page["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["data"]["k"].as_str().unwrap().to_owned(),
                p["offset"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        stored, acked,
        "every acknowledged send, once, at its offset"
    );
}

#[test]
fn a_nats_restart_is_reported_and_the_cluster_comes_back() {
    let _serial = serial();
    let mut nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let nodes = three_nodes(dir.path(), &nats);
    // A durable subscriber on node 1 of a stream node 2 owns.
    let channel = (0..)
        .map(|i| format!("hist:cut{i}"))
        .find(|c| ringcast_engine::cluster::partition_of(c, 3) == 2)
        .unwrap();
    let mut durable = nodes[1].connect("durable", "");
    subscribe(&mut durable, 1, json!({"channel": channel}));
    let publish = |n: u64| {
        nodes[2].api(
            "POST",
            "/api/publish",
            Some(json!({"channel": channel, "data": {"n": n}})),
        )
    };
    let mut epoch = Value::Null;
    let mut n = 0;
    // Until one crosses (the bucket's subscription is asynchronous).
    assert!(wait_until(Duration::from_secs(10), || {
        n += 1;
        assert_eq!(publish(n).0, 200);
        next_push_within(&mut durable, Duration::from_millis(200)).is_some_and(|push| {
            epoch = push["epoch"].clone();
            true
        })
    }));
    let mut last_seen = n;
    while let Some(push) = next_push_within(&mut durable, Duration::from_millis(300)) {
        last_seen = push["offset"].as_u64().unwrap();
    }
    assert_eq!(
        last_seen, n,
        "the durable subscriber kept up before the cut"
    );
    nats.kill();
    assert!(
        wait_until(Duration::from_secs(10), || nodes[0]
            .api("GET", "/health", None)
            .0
            == 503),
        "health did not say the node is cut off"
    );
    let (_, health) = nodes[0].api("GET", "/health", None);
    assert_eq!(
        health["cluster"]["state"],
        json!("disconnected"),
        "{health}"
    );
    // Live traffic still reaches local subscribers.
    let mut local = nodes[0].connect("local", "");
    subscribe(&mut local, 1, json!({"channel": "news:cut"}));
    let (status, _) = nodes[0].api(
        "POST",
        "/api/publish",
        Some(json!({"channel": "news:cut", "data": 1})),
    );
    assert_eq!(status, 200);
    assert!(next_push(&mut local).is_some());
    // The owner keeps storing its own partition's streams while cut off;
    // those publications cannot reach node 1 now.
    for _ in 0..5 {
        n += 1;
        let (status, body) = publish(n);
        assert_eq!(status, 200, "the owner appends while cut off: {body}");
    }
    nats.restart();
    wait_joined(&nodes.iter().collect::<Vec<_>>());
    // The rule: durable subscribers are cut (1013) and recover from their
    // position, without gap or duplicate.
    durable
        .get_mut()
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert_eq!(read_close_code(&mut durable), Some(1013));
    let mut back = nodes[1].connect("durable", "");
    let (reply, replayed) = subscribe(
        &mut back,
        1,
        json!({"channel": channel, "since": {"offset": last_seen, "epoch": epoch}}),
    );
    assert_eq!(
        reply["result"]["recovery"]["recovered"],
        json!(true),
        "{reply}"
    );
    let offsets: Vec<u64> = replayed
        .iter()
        .map(|push| push["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(
        offsets,
        ((last_seen + 1)..=n).collect::<Vec<_>>(),
        "{reply}"
    );
    let (_, health) = nodes[0].api("GET", "/health", None);
    assert!(
        health["cluster"]["reconnects"].as_u64().unwrap() >= 1,
        "{health}"
    );
    let mut remote = nodes[1].connect("remote", "");
    subscribe(&mut remote, 1, json!({"channel": "news:cut"}));
    let mut n = 0;
    assert!(
        wait_until(Duration::from_secs(10), || {
            n += 1;
            nodes[2].api(
                "POST",
                "/api/publish",
                Some(json!({"channel": "news:cut", "data": n})),
            );
            next_push_within(&mut remote, Duration::from_millis(200)).is_some()
        }),
        "cross-node publications did not come back after the restart"
    );
}

#[test]
fn nodes_share_one_port_and_a_drained_nodes_clients_move_to_the_others() {
    let _serial = serial();
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let ws_port = free_port();
    let api_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let nodes: Vec<Node> = (0..3)
        .map(|id| Node::start(dir.path(), id, &nats, 3, ws_port, api_ports[id as usize]))
        .collect();
    wait_joined(&nodes.iter().collect::<Vec<_>>());
    let user = user_in_partition(0, 3, "carol");
    let mut clients: Vec<Ws> = (0..30).map(|_| nodes[0].connect(&user, "")).collect();
    let per_node: Vec<u64> = nodes
        .iter()
        .map(|node| {
            node.api("GET", "/api/stats", None).1["connections"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(per_node.iter().sum::<u64>(), 30, "{per_node:?}");
    assert!(
        per_node.iter().filter(|n| **n > 0).count() >= 2,
        "the kernel spread the port's connections over processes: {per_node:?}"
    );
    let (status, body) = nodes[1].api("POST", "/api/drain", Some(json!({})));
    assert_eq!(status, 200, "{body}");
    let mut moved = 0;
    clients.retain_mut(|ws| {
        ws.get_mut()
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        match ws.read() {
            Ok(Message::Close(Some(frame))) => {
                assert_eq!(u16::from(frame.code), 1012);
                moved += 1;
                false
            }
            _ => true,
        }
    });
    assert_eq!(
        moved, per_node[1] as usize,
        "every client of node 1 told 1012"
    );
    // They reconnect on the same port and land on nodes 0 and 2.
    for _ in 0..moved {
        clients.push(nodes[0].connect(&user, ""));
    }
    let (_, stats) = nodes[1].api("GET", "/api/stats", None);
    assert_eq!(stats["connections"], json!(0), "{stats}");
    assert_eq!(stats["cluster_connections"], json!(30), "{stats}");
    // A send reaches every reconnected device once.
    let (status, body) = nodes[1].api(
        "POST",
        "/api/send",
        Some(json!({"user": user, "data": "after-drain"})),
    );
    assert_eq!(status, 200, "{body}");
    let started = Instant::now();
    for ws in &mut clients {
        ws.get_mut()
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let push = next_push(ws).expect("the send after the drain");
        assert_eq!(push["data"], json!("after-drain"));
    }
    assert!(started.elapsed() < Duration::from_secs(30));
    // SIGUSR1 drains too: node 2's clients move to node 0, the last one
    // taking connections.
    let on_2 = nodes[2].api("GET", "/api/stats", None).1["connections"]
        .as_u64()
        .unwrap();
    nodes[2].signal("USR1");
    let mut told = 0;
    for ws in &mut clients {
        ws.get_mut()
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        if let Ok(Message::Close(Some(frame))) = ws.read() {
            assert_eq!(u16::from(frame.code), 1012);
            told += 1;
        }
    }
    assert_eq!(told, on_2, "every client of node 2 told 1012");
    for _ in 0..told {
        nodes[0].connect(&user, "");
    }
    let (_, health) = nodes[2].api("GET", "/health", None);
    assert_eq!(health["cluster"]["state"], json!("draining"), "{health}");
}

/// Sends a command and returns its reply, keeping the pushes and events
/// that came before it.
fn command(ws: &mut Ws, id: u64, method: &str, params: Value) -> (Value, Vec<Value>) {
    ws.send(Message::Text(
        json!({"id": id, "method": method, "params": params}).to_string(),
    ))
    .unwrap();
    let mut before = Vec::new();
    loop {
        let message = read(ws).unwrap_or_else(|| panic!("no reply to {method}"));
        if message["id"] == json!(id) {
            return (message, before);
        }
        before.push(message);
    }
}

/// The next `presence` event about `user`, within `timeout`.
fn next_presence(ws: &mut Ws, user: &str, timeout: Duration) -> Option<Value> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        ws.get_mut()
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        if let Some(message) = read(ws) {
            if message["presence"]["user"] == json!(user) {
                return Some(message["presence"].clone());
            }
        }
    }
    None
}

#[test]
fn presence_watches_see_users_on_other_nodes_and_a_killed_nodes_users_go_offline() {
    let _serial = serial();
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = three_nodes(dir.path(), &nats);
    // dave's inbox is node 0's; the watcher is on node 1, dave on node 2.
    let dave = user_in_partition(0, 3, "dave");
    let mut watcher = nodes[1].connect("watcher", "");
    let (reply, _) = command(&mut watcher, 1, "presence_watch", json!({"users": [dave]}));
    assert_eq!(
        reply["result"]["users"][0]["online"],
        json!(false),
        "{reply}"
    );
    let _dave = nodes[2].connect(&dave, "");
    let online = next_presence(&mut watcher, &dave, Duration::from_secs(10))
        .expect("dave online on another node");
    assert_eq!(online["online"], json!(true), "{online}");
    let (reply, _) = command(&mut watcher, 2, "presence_query", json!({"users": [dave]}));
    assert_eq!(
        reply["result"]["users"][0]["online"],
        json!(true),
        "{reply}"
    );
    // Also from a node that watches nothing.
    let mut asker = nodes[0].connect("asker", "");
    let (reply, _) = command(&mut asker, 1, "presence_query", json!({"users": [dave]}));
    assert_eq!(
        reply["result"]["users"][0]["online"],
        json!(true),
        "{reply}"
    );
    // kill -9 the node holding dave: watchers learn it within
    // node_timeout_ms (2.5 s here) plus the offline grace (500 ms here).
    let killed = Instant::now();
    nodes[2].kill9();
    let offline = next_presence(&mut watcher, &dave, Duration::from_secs(15))
        .expect("dave offline after its node died");
    assert_eq!(offline["online"], json!(false), "{offline}");
    assert!(offline["last_seen_ms"].as_u64().unwrap() > 0, "{offline}");
    let bound = Duration::from_millis(2500 + 500) + Duration::from_secs(5);
    assert!(
        killed.elapsed() < bound,
        "offline took {:?}, past the staleness bound plus slack",
        killed.elapsed()
    );
    let (_, presence) = nodes[1].api(
        "POST",
        "/api/presence/users",
        Some(json!({"users": [dave]})),
    );
    assert_eq!(presence["users"][0]["online"], json!(false), "{presence}");
}

#[test]
fn an_owner_restarted_while_other_nodes_hold_its_users_gets_them_back() {
    let _serial = serial();
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = three_nodes(dir.path(), &nats);
    let erin = user_in_partition(0, 3, "erin");
    let mut device = nodes[1].connect(&erin, "");
    let send = |node: &Node, n: u64| {
        node.api(
            "POST",
            "/api/send",
            Some(json!({"user": erin, "data": {"n": n}, "client_msg_id": format!("m{n}")})),
        )
    };
    assert_eq!(send(&nodes[2], 1).0, 200);
    assert_eq!(
        next_push(&mut device).expect("first send")["data"]["n"],
        json!(1)
    );
    nodes[0].kill9();
    nodes[0].restart();
    wait_joined(&nodes.iter().collect::<Vec<_>>());
    // The returning owner makes node 1 cut its subscribers of the owner's
    // streams once (1013): the device reconnects from its position. Every
    // send then arrives, live, exactly once.
    let mut last = 1;
    for n in 2..=4 {
        assert!(
            wait_until(Duration::from_secs(10), || send(&nodes[2], n).0 == 200),
            "the restarted owner takes appends"
        );
        let push = loop {
            device
                .get_mut()
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            match device.read() {
                Ok(Message::Text(text)) => {
                    let message: Value = serde_json::from_str(&text).unwrap();
                    if let Some(push) = message.get("push") {
                        break push.clone();
                    }
                }
                Ok(Message::Close(Some(frame))) => {
                    assert_eq!(u16::from(frame.code), 1013, "only the recovery cut");
                    device = nodes[1].connect(&erin, &format!("&since={last}"));
                }
                Ok(_) => {}
                Err(error) => panic!("send {n} did not reach erin's device on node 1: {error}"),
            }
        };
        assert_eq!(push["data"]["n"], json!(n), "{push}");
        last = push["offset"].as_u64().unwrap();
    }
}

/// A subscriber of a durable channel that follows it across reconnects:
/// on a close it reconnects (through the shared port) and subscribes from
/// the last offset it processed.
struct Follower {
    ws: Ws,
    user: String,
    offsets: Vec<u64>,
    epoch: Value,
    closes: Vec<u16>,
}

impl Follower {
    fn new(node: &Node, user: &str, channel: &str) -> Follower {
        let mut ws = node.connect(user, "");
        let (_, replayed) = subscribe(&mut ws, 1, json!({"channel": channel}));
        assert!(replayed.is_empty());
        Follower {
            ws,
            user: user.to_owned(),
            offsets: Vec::new(),
            epoch: Value::Null,
            closes: Vec::new(),
        }
    }

    /// Reads for `wait`; follows a close.
    fn pump(&mut self, node: &Node, channel: &str, wait: Duration) {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            self.ws.get_mut().set_read_timeout(Some(left)).unwrap();
            match self.ws.read() {
                Ok(Message::Text(text)) => {
                    let message: Value = serde_json::from_str(&text).unwrap();
                    if let Some(push) = message.get("push") {
                        self.offsets.push(push["offset"].as_u64().unwrap());
                        self.epoch = push["epoch"].clone();
                    }
                }
                Ok(Message::Close(frame)) => {
                    self.closes
                        .push(frame.map_or(1005, |frame| u16::from(frame.code)));
                    self.reconnect(node, channel);
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(error))
                    if matches!(
                        error.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return
                }
                Err(_) => {
                    self.closes.push(1006);
                    self.reconnect(node, channel);
                }
            }
        }
    }

    fn reconnect(&mut self, node: &Node, channel: &str) {
        self.ws = node.connect(&self.user, "");
        let last = self.offsets.last().copied().unwrap_or(0);
        // Epoch 0 skips the check (no push seen yet: nothing to check).
        let epoch = if self.epoch.is_null() {
            json!(0)
        } else {
            self.epoch.clone()
        };
        let since = json!({"offset": last, "epoch": epoch});
        let (reply, replayed) =
            subscribe(&mut self.ws, 1, json!({"channel": channel, "since": since}));
        assert_eq!(
            reply["result"]["recovery"]["recovered"],
            json!(true),
            "{reply}"
        );
        self.offsets
            .extend(replayed.iter().map(|push| push["offset"].as_u64().unwrap()));
    }
}

#[test]
fn a_node_drained_under_load_loses_its_clients_to_the_others_without_a_gap() {
    let _serial = serial();
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let (ws_port, api_port) = (free_port(), free_port());
    let nodes: Vec<Node> = (0..3)
        .map(|id| Node::start(dir.path(), id, &nats, 3, ws_port, api_port))
        .collect();
    wait_joined(&nodes.iter().collect::<Vec<_>>());
    let channel = "hist:drain";
    let mut followers: Vec<Follower> = (0..24)
        .map(|i| Follower::new(&nodes[0], &format!("f{i}"), channel))
        .collect();
    // A publisher through the shared API port (any node answers) while
    // one node is drained.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let api = nodes[0].api;
    let publisher = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut published = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let key = format!("p{}", published + 1);
                let (status, body) = api_raw(
                    api,
                    "POST",
                    "/api/publish",
                    Some(
                        &json!({"channel": channel, "data": key, "client_msg_id": key}).to_string(),
                    ),
                    Some(API_KEY),
                );
                if status == 200 {
                    published += 1;
                    assert_eq!(body["offset"], json!(published), "{body}");
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            published
        })
    };
    for follower in &mut followers {
        follower.pump(&nodes[0], channel, Duration::from_millis(20));
    }
    // Node 1 by its own address: the shared API port would pick a process.
    let (status, drained) = api_raw(
        nodes[1].node_api,
        "POST",
        "/api/drain",
        Some("{}"),
        Some(API_KEY),
    );
    assert_eq!(status, 200, "{drained}");
    assert_eq!(drained["node"], json!(1), "{drained}");
    let (_, health) = api_raw(nodes[1].node_api, "GET", "/health", None, None);
    assert_eq!(
        (&health["node"], &health["cluster"]["state"]),
        (&json!(1), &json!("draining")),
        "{health}"
    );
    let (_, metrics) = api_raw(nodes[1].node_api, "GET", "/metrics", None, None);
    assert!(
        metrics
            .as_str()
            .is_some_and(|text| text.contains("ringcast_cluster_connected 1")),
        "{metrics}"
    );
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        for follower in &mut followers {
            follower.pump(&nodes[0], channel, Duration::from_millis(10));
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let published = publisher.join().unwrap();
    assert!(published > 20, "the publisher kept publishing: {published}");
    for follower in &mut followers {
        follower.pump(&nodes[0], channel, Duration::from_millis(500));
    }
    let moved = followers
        .iter()
        .filter(|f| f.closes.contains(&1012))
        .count();
    assert!(moved > 0, "some followers were on the drained node");
    for follower in &followers {
        assert!(
            follower.closes.iter().all(|code| *code == 1012),
            "only the drain closed them: {:?}",
            follower.closes
        );
        assert_eq!(
            follower.offsets,
            (1..=published).collect::<Vec<_>>(),
            "{}: every publication once, in order, across the move",
            follower.user
        );
    }
}

#[test]
fn a_node_stops_on_sigterm_while_nats_is_down() {
    let _serial = serial();
    let mut nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::start(dir.path(), 0, &nats, 1, free_port(), free_port());
    assert!(wait_until(Duration::from_secs(10), || node
        .api("GET", "/health", None)
        .0
        == 200));
    nats.kill();
    assert!(wait_until(Duration::from_secs(10), || node
        .api("GET", "/health", None)
        .0
        == 503));
    assert!(
        node.terminate(Duration::from_secs(15)),
        "shutdown waited for NATS"
    );
}

#[test]
fn acknowledged_sends_survive_kill_9_of_their_owner_under_load() {
    let _serial = serial();
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = three_nodes(dir.path(), &nats);
    let alice = user_in_partition(1, 3, "alice");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Two writers through the nodes that do not own alice's inbox; each
    // retries a refused send with the same key until it is acknowledged.
    let writers: Vec<_> = [nodes[0].api, nodes[2].api]
        .into_iter()
        .enumerate()
        .map(|(w, api)| {
            let stop = stop.clone();
            let alice = alice.clone();
            std::thread::spawn(move || {
                let mut acked = Vec::new();
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    n += 1;
                    let key = format!("w{w}-{n}");
                    let body = json!({"user": alice, "data": key, "client_msg_id": key});
                    loop {
                        let (status, answer) = api_raw(
                            api,
                            "POST",
                            "/api/send",
                            Some(&body.to_string()),
                            Some(API_KEY),
                        );
                        if status == 200 {
                            let result = &answer["results"][0];
                            acked.push((
                                key.clone(),
                                result["offset"].as_u64().unwrap(),
                                result["epoch"].as_str().unwrap().to_owned(),
                            ));
                            break;
                        }
                        assert_eq!(status, 503, "{answer}");
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
                acked
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    nodes[1].kill9();
    std::thread::sleep(Duration::from_millis(500));
    nodes[1].restart();
    wait_joined(&nodes.iter().collect::<Vec<_>>());
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut acked: Vec<(String, u64, String)> = writers
        .into_iter()
        .flat_map(|writer| writer.join().unwrap())
        .collect();
    acked.sort_by_key(|(_, offset, _)| *offset);
    assert!(acked.len() > 10, "the writers wrote: {}", acked.len());
    let epochs: std::collections::HashSet<_> = acked.iter().map(|(_, _, e)| e.clone()).collect();
    assert_eq!(epochs.len(), 1, "one epoch across the crash: {epochs:?}");
    // Everything stored, read back through a node that does not own it.
    let mut stored = Vec::new();
    let mut since = 0;
    loop {
        let (status, page) = nodes[0].api(
            "POST",
            "/api/history",
            Some(json!({"stream": format!("user:{alice}"), "since": since, "limit": 1000})),
        );
        assert_eq!(status, 200, "{page}");
        let publications = page["publications"].as_array().unwrap();
        if publications.is_empty() {
            break;
        }
        for p in publications {
            since = p["offset"].as_u64().unwrap();
            stored.push((p["data"].as_str().unwrap().to_owned(), since));
        }
    }
    let offsets: Vec<u64> = stored.iter().map(|(_, offset)| *offset).collect();
    assert_eq!(
        offsets,
        (1..=stored.len() as u64).collect::<Vec<_>>(),
        "gap-free"
    );
    let acked: Vec<(String, u64)> = acked.into_iter().map(|(k, o, _)| (k, o)).collect();
    assert_eq!(
        stored, acked,
        "every acknowledged send exactly once, at its offset"
    );
}

#[test]
fn a_device_acks_on_one_node_and_resumes_from_its_cursor_on_another() {
    let _serial = serial();
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let nodes = three_nodes(dir.path(), &nats);
    let gina = user_in_partition(0, 3, "gina");
    let send = |n: u64| {
        let (status, body) = nodes[2].api(
            "POST",
            "/api/send",
            Some(json!({"user": gina, "data": {"n": n}})),
        );
        assert_eq!(status, 200, "{body}");
    };
    let mut first = nodes[1].connect(&gina, "&device=d1");
    for n in 1..=3 {
        send(n);
        assert_eq!(next_push(&mut first).expect("live")["offset"], json!(n));
    }
    // The ack goes to the inbox's owner (node 0) from node 1.
    let (reply, _) = command(
        &mut first,
        2,
        "ack",
        json!({"stream": format!("user:{gina}"), "offset": 3}),
    );
    assert!(reply.get("result").is_some(), "{reply}");
    drop(first);
    send(4);
    send(5);
    // The cursor is read from the owner by node 2 at connect.
    let mut second = nodes[2].connect(&gina, "&device=d1");
    // The replay, then the recovery's result (id 0).
    let mut offsets = Vec::new();
    let reply = loop {
        let message = read(&mut second).expect("the recovery");
        if let Some(push) = message.get("push") {
            offsets.push(push["offset"].as_u64().unwrap());
        } else if message["id"] == json!(0) {
            break message;
        }
    };
    assert_eq!(
        reply["result"]["recovery"]["recovered"],
        json!(true),
        "{reply}"
    );
    assert_eq!(offsets, vec![4, 5], "resumed after the ack: {reply}");
}

// ---- regressions of the cluster review (/work/review14: findings 1-4, 10) ----

/// Finding: an owner restarted serves appends before the other nodes'
/// users are back in its directory; entries committed meanwhile are
/// acknowledged but never pushed to the user's device on another node,
/// and nothing cuts that device.
#[test]
fn sends_right_after_an_owners_restart_reach_devices_on_other_nodes() {
    let _serial = serial();
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = three_nodes(dir.path(), &nats);
    let erin = user_in_partition(0, 3, "erin");
    let mut device = nodes[1].connect(&erin, "");
    let send = |node: &Node, n: u64| {
        node.api(
            "POST",
            "/api/send",
            Some(json!({"user": erin, "data": {"n": n}, "client_msg_id": format!("m{n}")})),
        )
    };
    assert_eq!(send(&nodes[2], 1).0, 200);
    assert_eq!(next_push(&mut device).unwrap()["data"]["n"], json!(1));
    nodes[0].kill9();
    nodes[0].restart();
    assert!(wait_until(Duration::from_secs(10), || {
        nodes[0].api("GET", "/health", None).1["cluster"]["state"] == json!("connected")
    }));
    let start = Instant::now();
    let mut acked = Vec::new();
    let mut n = 2;
    while start.elapsed() < Duration::from_millis(1500) {
        let (status, body) = send(&nodes[0], n);
        if status == 200 {
            acked.push((n, body.to_string(), start.elapsed().as_millis()));
        }
        n += 1;
    }
    device
        .get_mut()
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let mut got = Vec::new();
    let mut closed = None;
    loop {
        match device.read() {
            Ok(Message::Text(text)) => {
                let v: Value = serde_json::from_str(&text).unwrap();
                if let Some(push) = v.get("push") {
                    got.push(push["data"]["n"].as_u64().unwrap());
                }
            }
            Ok(Message::Close(frame)) => {
                closed = Some(frame.map_or(1005, |f| u16::from(f.code)));
                break;
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    let missing: Vec<_> = acked.iter().filter(|(n, _, _)| !got.contains(n)).collect();
    eprintln!(
        "acked {} sends, device got {:?}, closed {:?}",
        acked.len(),
        got.len(),
        closed
    );
    eprintln!("missing (n, offset, ms after connected): {missing:?}");
    assert!(
        closed.is_some() || missing.is_empty(),
        "acknowledged sends never pushed to erin's device and the device was not cut: {missing:?}"
    );
}

/// Finding: a read page larger than NATS's max_payload cannot cross: the
/// owner's reply is refused by the client and the reader waits out the
/// request timeout, every time.
#[test]
fn a_history_page_larger_than_one_nats_message_is_read_in_pieces() {
    let _serial = serial();
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let nodes = three_nodes(dir.path(), &nats);
    let channel = (0..)
        .map(|i| format!("hist:big{i}"))
        .find(|c| ringcast_engine::cluster::partition_of(c, 3) == 0)
        .unwrap();
    let blob = "x".repeat(6000);
    for i in 0..300 {
        let (status, body) = nodes[0].api(
            "POST",
            "/api/publish",
            Some(json!({"channel": channel, "data": {"i": i, "blob": blob}})),
        );
        assert_eq!(status, 200, "{body}");
    }
    let history = json!({"stream": channel, "since": 0, "limit": 300});
    let (owner_status, _) = nodes[0].api("POST", "/api/history", Some(history.clone()));
    let t = Instant::now();
    let (remote_status, remote_body) = nodes[1].api("POST", "/api/history", Some(history));
    eprintln!(
        "owner: {owner_status}; non-owner: {remote_status} after {:?}: {remote_body}",
        t.elapsed()
    );
    assert_eq!(owner_status, 200);
    assert_eq!(remote_status, 200, "{remote_body}");
}

/// As `r14_owner_restart_window` with production-like heartbeats (3 s),
/// which widen the window between the restarted owner's NATS connect and
/// the moment the other nodes' users are back in its directory.
#[test]
fn sends_during_an_owners_restart_reach_devices_on_other_nodes_even_with_slow_heartbeats() {
    let _serial = serial();
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = three_nodes(dir.path(), &nats);
    nodes[2].kill9();
    for node in nodes.iter_mut().take(2) {
        node.kill9();
        let text = std::fs::read_to_string(&node.config_path).unwrap();
        let text = text
            .replace("heartbeat_ms = 200", "heartbeat_ms = 3000")
            .replace("node_timeout_ms = 2500", "node_timeout_ms = 10000");
        std::fs::write(&node.config_path, text).unwrap();
    }
    for node in nodes.iter_mut().take(2) {
        node.restart();
    }
    wait_joined(&[&nodes[0], &nodes[1]]);
    let erin = user_in_partition(0, 3, "erin");
    let mut device = nodes[1].connect(&erin, "");
    let send = |node: &Node, n: u64| {
        node.api(
            "POST",
            "/api/send",
            Some(json!({"user": erin, "data": {"n": n}, "client_msg_id": format!("m{n}")})),
        )
    };
    assert_eq!(send(&nodes[0], 1).0, 200);
    assert_eq!(next_push(&mut device).unwrap()["data"]["n"], json!(1));
    nodes[0].kill9();
    nodes[0].restart();
    assert!(wait_until(Duration::from_secs(10), || {
        nodes[0].api("GET", "/health", None).1["cluster"]["state"] == json!("connected")
    }));
    let start = Instant::now();
    let mut acked = Vec::new();
    let mut n = 2;
    while start.elapsed() < Duration::from_millis(1500) {
        let (status, body) = send(&nodes[0], n);
        if status == 200 {
            acked.push((n, body["offset"].clone(), start.elapsed().as_millis()));
        }
        n += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    device
        .get_mut()
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let mut got = Vec::new();
    let mut closed = None;
    loop {
        match device.read() {
            Ok(Message::Text(text)) => {
                let v: Value = serde_json::from_str(&text).unwrap();
                if let Some(push) = v.get("push") {
                    got.push(push["data"]["n"].as_u64().unwrap());
                }
            }
            Ok(Message::Close(frame)) => {
                closed = Some(frame.map_or(1005, |f| u16::from(f.code)));
                break;
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    let missing: Vec<_> = acked.iter().filter(|(n, _, _)| !got.contains(n)).collect();
    eprintln!(
        "acked {} sends, device got {}, closed {:?}",
        acked.len(),
        got.len(),
        closed
    );
    eprintln!("missing (n, offset, ms after connected): {missing:?}");
    assert!(
        closed.is_some() || missing.is_empty(),
        "acknowledged sends never pushed to erin's device and the device was not cut: {missing:?}"
    );
}

/// Finding: entries an owner committed but had not yet handed to NATS when
/// it was killed never reach the user's device on another node, and
/// nothing cuts the device (a gap in its live stream).
#[test]
fn a_device_on_another_node_misses_nothing_when_the_owner_is_killed_mid_stream() {
    let _serial = serial();
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = three_nodes(dir.path(), &nats);
    let alice = user_in_partition(1, 3, "alice");
    let device = nodes[0].connect(&alice, "");
    let stop_reader = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let stop = stop_reader.clone();
        let mut device = device;
        std::thread::spawn(move || {
            device
                .get_mut()
                .set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            let mut offsets = Vec::new();
            let mut closed = None;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match device.read() {
                    Ok(Message::Text(text)) => {
                        let v: Value = serde_json::from_str(&text).unwrap();
                        if let Some(push) = v.get("push") {
                            offsets.push(push["offset"].as_u64().unwrap());
                        }
                    }
                    Ok(Message::Close(frame)) => {
                        closed = Some(frame.map_or(1005, |f| u16::from(f.code)));
                        break;
                    }
                    Ok(_) => {}
                    Err(tungstenite::Error::Io(e))
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => {
                        closed = Some(1006);
                        break;
                    }
                }
            }
            (offsets, closed)
        })
    };
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let owner_api = nodes[1].api;
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let stop = stop.clone();
            let alice = alice.clone();
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    n += 1;
                    let key = format!("w{w}-{n}");
                    let body = json!({"user": alice, "data": key, "client_msg_id": key});
                    let text = body.to_string();
                    if std::panic::catch_unwind(|| {
                        api_raw(owner_api, "POST", "/api/send", Some(&text), Some(API_KEY))
                    })
                    .is_err()
                    {
                        break;
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(700));
    nodes[1].kill9();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for writer in writers {
        let _ = writer.join();
    }
    nodes[1].restart();
    wait_joined(&nodes.iter().collect::<Vec<_>>());
    std::thread::sleep(Duration::from_millis(500));
    let body = json!({"user": alice, "data": "final", "client_msg_id": "final"});
    assert!(wait_until(Duration::from_secs(10), || nodes[2]
        .api("POST", "/api/send", Some(body.clone()))
        .0
        == 200));
    std::thread::sleep(Duration::from_millis(1000));
    stop_reader.store(true, std::sync::atomic::Ordering::Relaxed);
    let (offsets, closed) = reader.join().unwrap();
    let first = offsets.first().copied().unwrap_or(0);
    let last = offsets.last().copied().unwrap_or(0);
    let missing: Vec<u64> = (first..=last).filter(|o| !offsets.contains(o)).collect();
    eprintln!(
        "device got {} pushes, offsets {first}..={last}, closed {closed:?}, missing {missing:?}",
        offsets.len()
    );
    assert!(
        closed.is_some() || missing.is_empty(),
        "stored entries never pushed to alice's device on node 0 and it was not cut: {missing:?}"
    );
}

/// Finding: the watching node masks the owner's answer with the nodes it
/// has heard; a holder heard later is never applied.
#[test]
fn a_watcher_on_a_fresh_node_is_told_a_user_on_an_unheard_node_went_offline() {
    let _serial = serial();
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = three_nodes(dir.path(), &nats);
    for node in nodes.iter_mut() {
        node.kill9();
        let mut text = std::fs::read_to_string(&node.config_path)
            .unwrap()
            .replace("node_timeout_ms = 2500", "node_timeout_ms = 10000");
        if node.id == 2 {
            text = text.replace("heartbeat_ms = 200", "heartbeat_ms = 3000");
        }
        std::fs::write(&node.config_path, text).unwrap();
    }
    for node in nodes.iter_mut() {
        node.restart();
    }
    wait_joined(&nodes.iter().collect::<Vec<_>>());
    let dave = user_in_partition(0, 3, "dave");
    let dave_ws = nodes[2].connect(&dave, "");
    std::thread::sleep(Duration::from_millis(500));
    nodes[1].kill9();
    nodes[1].restart();
    assert!(wait_until(Duration::from_secs(10), || {
        nodes[1].api("GET", "/health", None).1["cluster"]["state"] == json!("connected")
    }));
    let mut watcher = nodes[1].connect("watcher", "");
    let (reply, _) = command(&mut watcher, 1, "presence_watch", json!({"users": [dave]}));
    assert!(reply.get("result").is_some(), "{reply}");
    let early = next_presence(&mut watcher, &dave, Duration::from_secs(4));
    eprintln!("presence event within 4 s of the watch: {early:?}");
    drop(dave_ws);
    let event = next_presence(&mut watcher, &dave, Duration::from_secs(8));
    let (query, _) = command(&mut watcher, 2, "presence_query", json!({"users": [dave]}));
    eprintln!(
        "after dave left node 2: presence event within 8 s: {event:?}; presence_query: {query}"
    );
    assert!(
        event.is_some_and(|e| e["online"] == json!(false)),
        "the watcher on node 1 was told dave online and never told he went offline"
    );
}

/// A TCP proxy between one node and NATS that can be cut (a network
/// partition between that node and NATS, the node staying alive).
struct CutProxy {
    port: u16,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<TcpStream>>>,
}

impl CutProxy {
    fn start(target: u16) -> CutProxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let conns = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        {
            let cut = cut.clone();
            let conns = conns.clone();
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    let Ok(down) = stream else { continue };
                    if cut.load(std::sync::atomic::Ordering::SeqCst) {
                        drop(down);
                        continue;
                    }
                    let Ok(up) = TcpStream::connect(("127.0.0.1", target)) else {
                        continue;
                    };
                    conns.lock().unwrap().push(down.try_clone().unwrap());
                    conns.lock().unwrap().push(up.try_clone().unwrap());
                    let (mut d1, mut u1) = (down.try_clone().unwrap(), up.try_clone().unwrap());
                    let (mut d2, mut u2) = (down, up);
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut d1, &mut u1);
                        let _ = u1.shutdown(std::net::Shutdown::Both);
                    });
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut u2, &mut d2);
                        let _ = d2.shutdown(std::net::Shutdown::Both);
                    });
                }
            });
        }
        CutProxy { port, cut, conns }
    }

    fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        for conn in self.conns.lock().unwrap().drain(..) {
            let _ = conn.shutdown(std::net::Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Finding: an owner cut off from NATS longer than node_timeout keeps
/// appending for its own clients; when it comes back its
/// PublicationsLost reaches nodes that expired it and is ignored.
#[test]
fn an_owner_cut_off_from_nats_past_the_timeout_leaves_no_gap() {
    let _serial = serial();
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = three_nodes(dir.path(), &nats);
    let proxy = CutProxy::start(nats.port);
    nodes[0].kill9();
    let text = std::fs::read_to_string(&nodes[0].config_path)
        .unwrap()
        .replace(&nats.url(), &format!("nats://127.0.0.1:{}", proxy.port));
    std::fs::write(&nodes[0].config_path, text).unwrap();
    nodes[0].restart();
    wait_joined(&nodes.iter().collect::<Vec<_>>());
    // The restarted owner's return cuts the others' subscribers of its
    // partition once (at most a tick plus the cut interval later): let it
    // pass before the follower subscribes.
    std::thread::sleep(Duration::from_millis(1500));
    let channel = (0..)
        .map(|i| format!("hist:cut{i}"))
        .find(|c| ringcast_engine::cluster::partition_of(c, 3) == 0)
        .unwrap();
    let mut follower = Follower::new(&nodes[1], "f1", &channel);
    let publish = |n: u64| {
        nodes[0].api(
            "POST",
            "/api/publish",
            Some(json!({"channel": channel, "data": n, "client_msg_id": format!("k{n}")})),
        )
    };
    for n in 1..=3 {
        assert_eq!(publish(n).0, 200);
    }
    follower.pump(&nodes[1], &channel, Duration::from_millis(500));
    proxy.cut();
    std::thread::sleep(Duration::from_millis(500));
    for n in 4..=8 {
        let (status, body) = publish(n);
        assert_eq!(
            status, 200,
            "the owner appends for its own API while cut off: {body}"
        );
    }
    // Past node_timeout_ms (2.5 s): the others expire node 0.
    std::thread::sleep(Duration::from_millis(3500));
    proxy.restore();
    assert!(wait_until(Duration::from_secs(10), || {
        nodes[0].api("GET", "/health", None).1["cluster"]["state"] == json!("connected")
    }));
    wait_joined(&nodes.iter().collect::<Vec<_>>());
    assert_eq!(publish(9).0, 200);
    follower.pump(&nodes[1], &channel, Duration::from_millis(2000));
    eprintln!(
        "follower offsets {:?}, closes {:?}",
        follower.offsets, follower.closes
    );
    assert_eq!(
        follower.offsets,
        (1..=9).collect::<Vec<u64>>(),
        "every publication once, in order (closes: {:?})",
        follower.closes
    );
}

/// An IM connection: `connect`, then the sync of its conversations.
fn im_connect(node: &Node, user: &str, query: &str) -> (Ws, Value) {
    let mut ws = node.connect(user, query);
    loop {
        let message = read(&mut ws).expect("the IM sync at connect");
        if let Some(sync) = message.get("im_sync") {
            return (ws, sync.clone());
        }
    }
}

/// The sender's own push of what it just sent, which comes before the
/// reply, in a cluster too (docs/protocol.md, `msg_send`).
fn own_push(before: &[Value]) -> Value {
    let pushes: Vec<&Value> = before
        .iter()
        .filter_map(|message| message.get("push"))
        .collect();
    assert_eq!(pushes.len(), 1, "the own push before the reply: {before:?}");
    pushes[0].clone()
}

/// The next message with field `key` (an IM event), skipping others.
fn next_with(ws: &mut Ws, key: &str) -> Value {
    loop {
        let message = read(ws).unwrap_or_else(|| panic!("no {key} came"));
        if let Some(value) = message.get(key) {
            return value.clone();
        }
    }
}

/// The IM layer across three nodes (docs/cluster.md, "The IM layer in a
/// cluster"): its records live in the IM partition (node 0's); users on
/// nodes 1 and 2 send DMs and group messages, read, type and list their
/// conversations through it, each entry reaching every device once, and
/// while node 0 is down its calls are refused (111), never lost, and go
/// on after it returns with the same conversations and offsets.
#[test]
fn the_im_layer_spans_the_nodes_through_the_im_partition() {
    let _serial = serial();
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let mut nodes: Vec<Node> = (0..3)
        .map(|id| Node::start_with(dir.path(), id, &nats, 3, (free_port(), free_port()), true))
        .collect();
    wait_joined(&nodes.iter().collect::<Vec<_>>());
    let (mut alice, sync) = im_connect(&nodes[1], "alice", "");
    assert_eq!(sync["convs"], json!([]), "{sync}");
    let (mut bob, _) = im_connect(&nodes[2], "bob", "");
    let (mut bob_tablet, _) = im_connect(&nodes[1], "bob", "");
    let (mut carol, _) = im_connect(&nodes[0], "carol", "");

    // A DM from node 1 to bob on nodes 2 and 1: stored once, at the IM
    // partition's owner, pushed to every device.
    let (reply, own) = command(
        &mut alice,
        1,
        "msg_send",
        json!({"to": "bob", "kind": "text", "data": {"text": "hi"}, "client_msg_id": "m1"}),
    );
    let conv = reply["result"]["conv"]
        .as_str()
        .unwrap_or_else(|| panic!("{reply}"))
        .to_owned();
    assert_eq!(reply["result"]["offset"], json!(1), "{reply}");
    let own = own_push(&own);
    assert_eq!(own["id"], reply["result"]["id"], "{own}");
    for device in [&mut bob, &mut bob_tablet] {
        let push = next_push(device).expect("the DM");
        assert_eq!(push, own, "every device gets the same entry");
    }
    let (retry, _) = command(
        &mut alice,
        2,
        "msg_send",
        json!({"to": "bob", "kind": "text", "data": {"text": "hi"}, "client_msg_id": "m1"}),
    );
    assert_eq!(retry["result"]["duplicate"], json!(true), "{retry}");

    // Typing and a read cross through the owner to the other nodes.
    let (typed, _) = command(
        &mut alice,
        3,
        "typing",
        json!({"conv": conv, "state": "typing"}),
    );
    assert!(typed.get("result").is_some(), "{typed}");
    let typing = next_with(&mut bob, "typing");
    assert_eq!(typing["user"], json!("alice"), "{typing}");
    let (read_reply, _) = command(&mut bob, 4, "read", json!({"conv": conv, "offset": 1}));
    assert_eq!(read_reply["result"]["unread"], json!(0), "{read_reply}");
    let receipt = next_with(&mut alice, "receipt");
    assert_eq!(
        receipt,
        json!({"conv": conv, "user": "bob", "read": 1}),
        "the peer's receipt on another node"
    );
    let own_read = next_with(&mut bob_tablet, "read");
    assert_eq!(own_read["conv"], json!(conv), "{own_read}");

    // A group made on node 0; a message from node 1 reaches nodes 2 and 0.
    let (created, _) = command(
        &mut carol,
        5,
        "group_create",
        json!({"name": "team", "members": ["alice", "bob"], "client_msg_id": "g1"}),
    );
    let group = created["result"]["conv"]
        .as_str()
        .unwrap_or_else(|| panic!("{created}"))
        .to_owned();
    for device in [&mut alice, &mut bob, &mut bob_tablet] {
        let push = next_push(device).expect("the create entry");
        assert_eq!(push["channel"], json!(group), "{push}");
        assert_eq!(push["data"]["data"]["op"], json!("create"), "{push}");
    }
    let (said, own) = command(
        &mut alice,
        6,
        "msg_send",
        json!({"conv": group, "kind": "text", "data": {"text": "team"}}),
    );
    assert_eq!(said["result"]["offset"], json!(2), "{said}");
    own_push(&own);
    for device in [&mut bob, &mut bob_tablet, &mut carol] {
        let push = next_push(device).expect("the group message");
        assert_eq!(push["data"]["data"]["text"], json!("team"), "{push}");
        assert_eq!(push["sender"], json!("alice"));
    }

    // Lists and history on a node that holds none of it.
    let (list, _) = command(&mut bob, 7, "conv_list", json!({"limit": 10}));
    let convs = list["result"]["convs"].as_array().expect("convs");
    assert_eq!(convs.len(), 2, "{list}");
    assert_eq!(convs[0]["conv"], json!(group), "newest first: {list}");
    assert_eq!(convs[0]["unread"], json!(1), "{list}");
    assert_eq!(convs[1]["conv"], json!(conv), "{list}");
    assert_eq!(convs[1]["unread"], json!(0), "{list}");
    let (history, _) = command(&mut bob, 8, "history", json!({"stream": group}));
    let entries = history["result"]["publications"]
        .as_array()
        .expect("entries");
    assert_eq!(entries.len(), 2, "{history}");

    // The API on a node that is not the owner acts the same way.
    let (status, sent) = nodes[2].api(
        "POST",
        "/api/im/msg_send",
        Some(json!({"as_user": "bob", "to": "alice", "kind": "text", "data": {"text": "api"}})),
    );
    assert_eq!(status, 200, "{sent}");
    assert_eq!(sent["conv"], json!(conv), "{sent}");
    assert_eq!(sent["offset"], json!(2), "{sent}");
    let push = next_push(&mut alice).expect("the API's DM");
    assert_eq!(push["data"]["data"]["text"], json!("api"), "{push}");
    let (status, listed) = nodes[1].api(
        "POST",
        "/api/im/conv_list",
        Some(json!({"as_user": "alice", "limit": 10})),
    );
    assert_eq!(status, 200, "{listed}");
    assert_eq!(
        listed["convs"].as_array().map(Vec::len),
        Some(2),
        "{listed}"
    );

    // The owner of the IM partition killed: refused, not lost.
    let (_, sync_before) = im_connect(&nodes[2], "dave", "");
    let token = sync_before["token"].as_str().unwrap().to_owned();
    nodes[0].kill9();
    let (refused, _) = command(
        &mut alice,
        9,
        "msg_send",
        json!({"to": "bob", "kind": "text", "data": {"text": "while down"}, "client_msg_id": "m2"}),
    );
    assert_eq!(refused["error"]["code"], json!(111), "{refused}");
    // A connection that cannot get its sync is closed to reconnect, never
    // left open without it.
    let mut eve = nodes[1].connect("eve", "");
    assert_eq!(read_close_code(&mut eve), Some(1013));
    nodes[0].restart();
    wait_joined(&nodes.iter().collect::<Vec<_>>());
    // What the owner committed while it did not know the other nodes'
    // users never reached them: their users' connections are closed to
    // recover (1013), and sync again on reconnecting.
    for device in [&mut alice, &mut bob, &mut bob_tablet] {
        assert_eq!(read_close_code(device), Some(1013));
    }
    let (mut alice, _) = im_connect(&nodes[1], "alice", "");
    let (mut bob, sync) = im_connect(&nodes[2], "bob", "");
    assert_eq!(sync["convs"].as_array().map(Vec::len), Some(2), "{sync}");
    let (again, own) = command(
        &mut alice,
        10,
        "msg_send",
        json!({"to": "bob", "kind": "text", "data": {"text": "while down"}, "client_msg_id": "m2"}),
    );
    assert_eq!(
        again["result"]["offset"],
        json!(3),
        "gap-free after the restart: {again}"
    );
    let own = own_push(&own);
    assert_eq!(next_push(&mut bob).expect("the DM after the restart"), own);
    // A recall of a message older than the owner's restart, from a node
    // that is not the owner: the owner knows the DM's pair from the call.
    let (recalled, own) = command(&mut alice, 11, "recall", json!({"conv": conv, "offset": 1}));
    assert_eq!(recalled["result"]["offset"], json!(4), "{recalled}");
    let own = own_push(&own);
    assert_eq!(own["data"]["kind"], json!("recall"), "{own}");
    assert_eq!(next_push(&mut bob).expect("the recall"), own);
    let (_, synced) = im_connect(&nodes[2], "dave", &format!("&im_since={token}"));
    assert_ne!(
        synced["reset"],
        json!(true),
        "the token outlives the restart: {synced}"
    );
    assert_eq!(synced["convs"], json!([]), "{synced}");
}
