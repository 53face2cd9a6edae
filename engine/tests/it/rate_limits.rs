//! Rate limits (issue 12): client publishes and sends over their token
//! buckets get error 114 with `retry_after_ms`, a connection that keeps
//! going is closed with 4008, a user's connections on one shard share the
//! user's bucket, and a source opening connections faster than its accept
//! rate is closed at accept while other sources still connect.

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use ringcast_engine::config::{Config, Driver};
use ringcast_protocol::client::{
    decode_server_binary, encode_binary_command, Command, CommandBody, ServerMessage,
    SUBPROTOCOL_BINARY,
};
use serde_json::{json, Value};
use tungstenite::Message;

use crate::e2e;
use crate::util::{
    api_raw, config, connect, connect_with, read_json, send_json, shard_stat_sum, start, token, Ws,
};

/// The index of the `room` namespace (publish = "any") in `Config::test_min`.
fn room(config: &mut Config) -> &mut ringcast_engine::config::Namespace {
    config
        .namespaces
        .iter_mut()
        .find(|namespace| namespace.name == "room")
        .expect("test_min has a room namespace")
}

fn publish_json(id: u64) -> Value {
    json!({"id": id, "method": "publish", "params": {"channel": "room:flood", "data": {"n": id}}})
}

/// Sends `n` publishes at once, then reads their replies: (accepted ids,
/// the `retry_after_ms` of each refusal).
fn publish_burst(ws: &mut Ws, first_id: u64, n: u64) -> (Vec<u64>, Vec<u64>) {
    for id in first_id..first_id + n {
        ws.write(Message::text(publish_json(id).to_string()))
            .unwrap();
    }
    ws.flush().unwrap();
    let (mut accepted, mut retry_after) = (Vec::new(), Vec::new());
    while (accepted.len() + retry_after.len()) < n as usize {
        let reply = read_json(ws);
        let Some(id) = reply["id"].as_u64() else {
            continue; // a push of our own publication
        };
        if reply.get("result").is_some() {
            accepted.push(id);
        } else {
            assert_eq!(reply["error"]["code"], 114, "refused by the limit: {reply}");
            let wait_ms = reply["error"]["retry_after_ms"]
                .as_u64()
                .expect("retry_after_ms");
            assert!(wait_ms > 0, "{reply}");
            retry_after.push(wait_ms);
        }
    }
    (accepted, retry_after)
}

e2e!(
    publishes_over_the_rate_get_114_and_retry_after_is_honest,
    |driver: Driver| {
        let (rate, burst) = (10u32, 20u32);
        let mut config = config(driver, 1);
        room(&mut config).publish_rate = rate;
        room(&mut config).publish_burst = burst;
        config.websocket.rate_limit_refusals_max = 0;
        let engine = start(config);
        let (mut ws, _) = connect(&engine, "alice");

        let started = Instant::now();
        let (accepted, retry_after) = publish_burst(&mut ws, 1, 1000);
        let elapsed_s = started.elapsed().as_secs_f64();
        eprintln!(
            "1000 publishes in {elapsed_s:.3} s: {} accepted, {} refused with 114",
            accepted.len(),
            retry_after.len()
        );
        // The burst, plus what the rate refilled while they arrived.
        let refilled_max = (f64::from(rate) * elapsed_s).ceil() as usize + 1;
        assert!(accepted.len() >= burst as usize, "the burst is let through");
        assert!(
            accepted.len() <= burst as usize + refilled_max,
            "only burst + rate: {} accepted in {elapsed_s:.3} s",
            accepted.len()
        );
        assert_eq!(accepted.len() + retry_after.len(), 1000);
        // 10 a second: never more than 100 ms to wait.
        assert!(retry_after.iter().all(|&ms| ms <= 100), "{retry_after:?}");

        // After the last refusal's retry_after_ms the next one is let in.
        let wait_ms = *retry_after.last().expect("some were refused");
        std::thread::sleep(Duration::from_millis(wait_ms));
        let (accepted, refused) = publish_burst(&mut ws, 5000, 1);
        assert_eq!((accepted, refused.len()), (vec![5000], 0));
        assert!(shard_stat_sum(&engine, "rate_limited_total") >= retry_after.len() as u64);
        let (status, metrics) = api_raw(engine.api_addr, "GET", "/metrics", None, None);
        assert_eq!(status, 200);
        let metrics = metrics.as_str().expect("metrics text").to_string();
        assert!(metrics.contains("ringcast_rate_limited_total{shard=\"0\"}"));
        assert!(metrics.contains("ringcast_rate_limit_disconnects_total{shard=\"0\"} 0"));
    }
);

e2e!(
    binary_clients_get_retry_after_ms_in_the_error,
    |driver: Driver| {
        let mut config = config(driver, 1);
        config.websocket.send_rate = 1;
        config.websocket.send_burst = 1;
        let engine = start(config);
        let (mut ws, _) = connect_with(&engine, &token("alice"), Some(SUBPROTOCOL_BINARY));
        let mut replies = Vec::new();
        for id in 1..=2 {
            let command = Command {
                id,
                body: CommandBody::Send {
                    user: "bob".into(),
                    data: b"{}".to_vec(),
                    data_is_json: true,
                    client_msg_id: None,
                },
            };
            ws.send(Message::binary(encode_binary_command(&command)))
                .unwrap();
        }
        while replies.len() < 2 {
            if let Message::Binary(bytes) = ws.read().unwrap() {
                match decode_server_binary(&bytes).unwrap() {
                    ServerMessage::Push(_) => {}
                    other => replies.push(other),
                }
            }
        }
        // The send is durable (an inbox): its reply follows the fsync, so
        // the refusal, answered at once, may come first.
        let reply_id = |message: &ServerMessage| match message {
            ServerMessage::Reply { id, .. } | ServerMessage::Error { id, .. } => *id,
            _ => 0,
        };
        replies.sort_by_key(reply_id);
        assert!(
            matches!(replies[0], ServerMessage::Reply { id: 1, .. }),
            "{replies:?}"
        );
        match &replies[1] {
            ServerMessage::Error {
                id: 2,
                code: 114,
                retry_after_ms: Some(wait_ms),
                ..
            } => assert!((1..=1000).contains(wait_ms)),
            other => panic!("expected 114 with retry_after_ms, got {other:?}"),
        }
    }
);

e2e!(sustained_abuse_is_closed_with_4008, |driver: Driver| {
    let refusals_max = 5;
    let mut config = config(driver, 1);
    room(&mut config).publish_rate = 1;
    room(&mut config).publish_burst = 1;
    config.websocket.rate_limit_refusals_max = refusals_max;
    let engine = start(config);
    let (mut ws, _) = connect(&engine, "mallory");
    for id in 1..=20 {
        send_json(&mut ws, publish_json(id));
    }
    let mut refusals = 0;
    let code = loop {
        match ws.read() {
            Ok(Message::Text(text)) => {
                let reply: Value = serde_json::from_str(&text).unwrap();
                if reply["error"]["code"] == 114 {
                    refusals += 1;
                }
            }
            Ok(Message::Close(frame)) => break frame.map(|f| u16::from(f.code)),
            Ok(_) => {}
            Err(err) => panic!("closed without a close frame: {err}"),
        }
    };
    assert_eq!(code, Some(4008));
    assert_eq!(
        refusals, refusals_max,
        "closed at the refusal that made the count"
    );
    assert_eq!(shard_stat_sum(&engine, "rate_limit_disconnects_total"), 1);
    // Another connection of the node is not affected.
    let (mut other, _) = connect(&engine, "alice");
    let (accepted, _) = publish_burst(&mut other, 1, 1);
    assert_eq!(accepted, vec![1]);
});

e2e!(
    a_users_connections_on_one_shard_share_the_user_limit,
    |driver: Driver| {
        // One shard: the documented guarantee (ratelimit.rs) is exact there.
        let mut config = config(driver, 1);
        let namespace = room(&mut config);
        namespace.publish_rate = 100;
        namespace.publish_burst = 100;
        namespace.user_publish_rate = 1;
        namespace.user_publish_burst = 4;
        let engine = start(config);
        let (mut first, _) = connect(&engine, "alice");
        let (mut second, _) = connect(&engine, "alice");
        let (mut bob, _) = connect(&engine, "bob");
        let (accepted, refused) = publish_burst(&mut first, 1, 3);
        assert_eq!((accepted.len(), refused.len()), (3, 0));
        let (accepted, refused) = publish_burst(&mut second, 10, 3);
        assert_eq!(
            (accepted.len(), refused.len()),
            (1, 2),
            "the second connection gets what the user has left"
        );
        assert!(refused.iter().all(|&ms| ms <= 1000));
        let (accepted, refused) = publish_burst(&mut bob, 20, 3);
        assert_eq!(
            (accepted.len(), refused.len()),
            (3, 0),
            "another user has their own"
        );
    }
);

/// A TCP connection to `to` from the loopback address `from`.
fn connect_from(from: [u8; 4], to: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let local = SocketAddr::from((from, 0));
    socket.bind(&local.into()).expect("bind a loopback address");
    socket.connect(&to.into()).expect("connect");
    socket.into()
}

e2e!(
    connection_attempts_over_the_source_rate_are_closed_at_accept,
    |driver: Driver| {
        let (rate, burst, attempts) = (1u32, 3usize, 12usize);
        let mut config = config(driver, 1);
        config.websocket.accept_rate_per_source = rate;
        config.websocket.accept_burst_per_source = burst as u32;
        config.websocket.handshake_timeout = Duration::from_secs(30);
        let engine = start(config);
        let started = Instant::now();
        let flood: Vec<TcpStream> = (0..attempts)
            .map(|_| connect_from([127, 0, 0, 1], engine.ws_addr))
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        let elapsed_s = started.elapsed().as_secs_f64();
        let (held, closed) = crate::util::held_and_closed(&flood);
        eprintln!("accept rate: {held} held, {closed} closed at accept in {elapsed_s:.3} s");
        let refilled_max = (f64::from(rate) * elapsed_s).ceil() as usize;
        assert!(held >= burst, "the burst is accepted");
        assert!(
            held <= burst + refilled_max,
            "{held} held in {elapsed_s:.3} s"
        );
        assert_eq!(held + closed, attempts);
        assert_eq!(
            shard_stat_sum(&engine, "accepts_rate_limited_total"),
            closed as u64
        );

        // Another source address still connects and upgrades.
        let stream = connect_from([127, 0, 0, 2], engine.ws_addr);
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let url = crate::util::ws_url(&engine, &token("carol"));
        let (mut ws, _) = tungstenite::client(url, stream).expect("upgrade from 127.0.0.2");
        assert!(read_json(&mut ws).get("connect").is_some());
        drop(flood);
    }
);
