//! History by time (`from_time`, `before_time`) over real sockets: a
//! channel with history, a user inbox and a DM, paged forward and backward across
//! several pages, checked against the stream read whole by offset; the HTTP
//! API's twin; the binary form; refusals.

use std::time::Duration;

use crate::binary::read_server;
use crate::e2e;
use crate::util::*;
use ringcast_protocol::client::{
    encode_binary_command, BinaryCommand, BinaryCommandBody, ServerMessage, SUBPROTOCOL_BINARY,
};
use serde_json::{json, Value};
use tungstenite::Message;

/// (offset, time) of each publication of a history page, in page order.
fn entries(page: &Value) -> Vec<(u64, u64)> {
    page["publications"]
        .as_array()
        .unwrap_or_else(|| panic!("publications: {page}"))
        .iter()
        .map(|p| (p["offset"].as_u64().unwrap(), p["time"].as_u64().unwrap()))
        .collect()
}

/// A history page over the socket (`result`) or the API (the body).
type Reader<'a> = dyn FnMut(Value) -> Value + 'a;

/// Every entry of `stream`, oldest first, read by offset.
fn whole(read: &mut Reader<'_>, stream: &str) -> Vec<(u64, u64)> {
    let page = read(json!({"stream": stream, "limit": 1000}));
    entries(&page)
}

/// Pages through `stream` from `first` (a `history` params object with the
/// time bounds), `limit` at a time, each next page from the last offset
/// seen, until a page comes back empty; returns what the pages held in
/// order, and how many non-empty pages there were.
fn walk(read: &mut Reader<'_>, first: Value, newest_first: bool) -> (Vec<(u64, u64)>, usize) {
    let mut params = first;
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let page = entries(&read(params.clone()));
        let Some(&(last, _)) = page.last() else {
            return (seen, pages);
        };
        assert!(page.len() <= params["limit"].as_u64().unwrap() as usize);
        pages += 1;
        seen.extend(page);
        if newest_first {
            params["before"] = json!(last);
        } else {
            params["since"] = json!(last);
        }
    }
}

/// Checks paging by time over `stream` against its whole content: forward
/// from a time, backward below a time, and a window both ways, each over
/// several pages, without gaps or duplicates.
fn check_paging(read: &mut Reader<'_>, stream: &str) {
    let all = whole(read, stream);
    assert!(all.len() >= 12, "{stream}: {all:?}");
    assert!(
        all.windows(2).all(|pair| pair[0].1 <= pair[1].1),
        "time never decreases along {stream}: {all:?}"
    );
    // Times taken from the stream, so bounds fall inside runs of equal
    // times as well as between them.
    let from = all[3].1;
    let before = all[all.len() - 3].1;
    assert!(from < before, "the writes were spread over time: {all:?}");
    let expect = |keep: &dyn Fn(u64) -> bool| -> Vec<(u64, u64)> {
        all.iter()
            .copied()
            .filter(|&(_, time)| keep(time))
            .collect()
    };

    let forward = expect(&|time| time >= from);
    let (got, pages) = walk(
        read,
        json!({"stream": stream, "from_time": from, "limit": 3}),
        false,
    );
    assert_eq!(got, forward, "{stream} forward from {from}");
    assert!(pages >= 3, "{pages} pages");

    let mut backward = expect(&|time| time < before);
    backward.reverse();
    let (got, pages) = walk(
        read,
        json!({"stream": stream, "before_time": before, "limit": 3}),
        true,
    );
    assert_eq!(got, backward, "{stream} backward below {before}");
    assert!(pages >= 3, "{pages} pages");

    let window = expect(&|time| time >= from && time < before);
    let (got, _) = walk(
        read,
        json!({"stream": stream, "from_time": from, "before_time": before, "limit": 2, "reverse": false}),
        false,
    );
    assert_eq!(got, window, "{stream} window forward");
    let (mut got, _) = walk(
        read,
        json!({"stream": stream, "from_time": from, "before_time": before, "limit": 2}),
        true,
    );
    got.reverse();
    assert_eq!(got, window, "{stream} window backward");

    // Past the newest entry: nothing, and the reply says where the stream
    // ends.
    let last_time = all.last().unwrap().1;
    let page = read(json!({"stream": stream, "from_time": last_time + 1}));
    assert!(entries(&page).is_empty(), "{page}");
    assert_eq!(page["next_offset"], all.last().unwrap().0 + 1);
}

/// [`check_paging`] with `history` commands over `ws`.
fn check_paging_over(ws: &mut Ws, stream: &str) {
    let mut next_id = 100;
    let mut over_socket = |params: Value| {
        next_id += 1;
        let reply = command(
            ws,
            json!({"id": next_id, "method": "history", "params": params}),
        );
        reply["result"].clone()
    };
    check_paging(&mut over_socket, stream);
}

/// Writes `n` publications in `rounds` rounds a few milliseconds apart, so
/// the stream holds runs of equal times and distinct ones.
fn spread(rounds: usize, mut write: impl FnMut(usize)) {
    for round in 0..rounds {
        for index in 0..4 {
            write(round * 4 + index);
        }
        std::thread::sleep(Duration::from_millis(3));
    }
}

e2e!(history_pages_a_channel_and_an_inbox_by_time, |driver| {
    let engine = start(config(driver, 2));
    let (mut ann, _) = connect(&engine, "ann");
    let (mut bob, _) = connect(&engine, "bob");
    subscribe(&mut ann, 1, "chat:times");
    // Publications from a client (its shard's clock) and from the API.
    let mut id = 10;
    spread(4, |index| {
        id += 1;
        if index % 2 == 0 {
            let reply = command(
                &mut ann,
                json!({"id": id, "method": "publish", "params": {"channel": "chat:times", "data": {"n": index}}}),
            );
            assert!(reply.get("result").is_some(), "{reply}");
        } else {
            publish(&engine, "chat:times", json!({"n": index}));
        }
    });
    // Bob's inbox: sends from Ann's connection and from the API.
    spread(4, |index| {
        id += 1;
        if index % 2 == 0 {
            let reply = command(
                &mut ann,
                json!({"id": id, "method": "send", "params": {"user": "bob", "data": {"n": index}}}),
            );
            assert!(reply.get("result").is_some(), "{reply}");
        } else {
            let (status, body) = api(
                &engine,
                "POST",
                "/api/send",
                Some(json!({"user": "bob", "data": {"n": index}})),
            );
            assert_eq!(status, 200, "{body}");
        }
    });

    check_paging_over(&mut ann, "chat:times");
    check_paging_over(&mut bob, "user:bob");
    // The HTTP API's twin, the same checks.
    for stream in ["chat:times", "user:bob"] {
        let mut over_api = |params: Value| {
            let (status, body) = api(&engine, "POST", "/api/history", Some(params));
            assert_eq!(status, 200, "{body}");
            body
        };
        check_paging(&mut over_api, stream);
    }
    engine.shutdown();
});

e2e!(history_by_time_refusals, |driver| {
    let engine = start(config(driver, 2));
    let (mut ann, _) = connect(&engine, "ann");
    publish(&engine, "chat:x", json!(1));
    let code = |ws: &mut Ws, params: Value| -> Value {
        let reply = command(ws, json!({"id": 7, "method": "history", "params": params}));
        reply["error"]["code"].clone()
    };
    for params in [
        json!({"stream": "chat:x", "from_time": 10, "before_time": 10}),
        json!({"stream": "chat:x", "before_time": 0}),
        json!({"stream": "chat:x", "before_time": 10, "since": 1}),
        json!({"stream": "chat:x", "from_time": 10, "before": 5, "reverse": false}),
        json!({"stream": "chat:x", "from_time": -5}),
        json!({"stream": "chat:x", "from_time": 1, "limit": 0}),
    ] {
        assert_eq!(code(&mut ann, params.clone()), 107, "{params}");
        let (status, body) = api(&engine, "POST", "/api/history", Some(params.clone()));
        assert_eq!(status, 400, "API {params}: {body}");
    }
    // The same permission checks as history by offset: another user's
    // inbox, a live-only channel.
    for stream in ["user:bob", "news:x"] {
        let by_offset = code(&mut ann, json!({"stream": stream}));
        assert!(by_offset.is_u64(), "{stream} refused: {by_offset}");
        let by_time = code(&mut ann, json!({"stream": stream, "from_time": 1}));
        assert_eq!(by_time, by_offset, "{stream}");
    }
    engine.shutdown();
});

e2e!(binary_clients_page_by_time, |driver| {
    let engine = start(config(driver, 2));
    let (mut bin, _) = connect_with(&engine, &token("bina"), Some(SUBPROTOCOL_BINARY));
    for n in 0..6 {
        let (status, body) = api(
            &engine,
            "POST",
            "/api/send",
            Some(json!({"user": "bina", "data": {"n": n}})),
        );
        assert_eq!(status, 200, "{body}");
        std::thread::sleep(Duration::from_millis(2));
    }
    let mut history = |id, body| {
        let cmd = BinaryCommand { id, body };
        bin.send(Message::Binary(encode_binary_command(&cmd)))
            .unwrap();
        loop {
            match read_server(&mut bin) {
                ServerMessage::History {
                    id: reply_id,
                    entries,
                    ..
                } => {
                    assert_eq!(reply_id, id);
                    return entries
                        .iter()
                        .map(|env| (env.offset, env.time_ms))
                        .collect::<Vec<_>>();
                }
                ServerMessage::Push(_) => continue,
                other => panic!("expected a history page, got {other:?}"),
            }
        }
    };
    let by_time =
        |reverse, from_time_ms, before_time_ms, offset_bound| BinaryCommandBody::HistoryByTime {
            reverse,
            limit: 4,
            stream: "user:bina".into(),
            from_time_ms,
            before_time_ms,
            offset_bound,
        };
    let all = history(1, by_time(false, 0, u64::MAX, 0));
    assert_eq!(all.iter().map(|e| e.0).collect::<Vec<_>>(), [1, 2, 3, 4]);
    let rest = history(2, by_time(false, 0, u64::MAX, 4));
    assert_eq!(rest.iter().map(|e| e.0).collect::<Vec<_>>(), [5, 6]);
    let newest = history(3, by_time(true, 0, u64::MAX, u64::MAX));
    assert_eq!(newest.iter().map(|e| e.0).collect::<Vec<_>>(), [6, 5, 4, 3]);
    // The sends were 2 ms apart, so each has a time of its own.
    let time_4 = all[3].1;
    let older = history(4, by_time(true, 0, time_4, u64::MAX));
    assert_eq!(older.iter().map(|e| e.0).collect::<Vec<_>>(), [3, 2, 1]);
    let from_4 = history(5, by_time(false, time_4, u64::MAX, 0));
    assert_eq!(from_4.iter().map(|e| e.0).collect::<Vec<_>>(), [4, 5, 6]);
    engine.shutdown();
});

/// Connects `user` with the IM layer on and reads what connect sends
/// first (the inbox's id-0 reply and the IM sync).
fn im_connect(engine: &ringcast_engine::Engine, user: &str) -> Ws {
    let (mut ws, _) = connect(engine, user);
    while read_json(&mut ws).get("im_sync").is_none() {}
    ws
}

e2e!(
    history_pages_a_conversation_by_time_for_its_users_only,
    |driver| {
        let mut config = config(driver, 2);
        config.im.enabled = true;
        let engine = start(config);
        let mut ann = im_connect(&engine, "ann");
        let mut bob = im_connect(&engine, "bob");
        let mut conv = String::new();
        let mut id = 10;
        spread(4, |index| {
            id += 1;
            let (ws, to) = if index % 2 == 0 {
                (&mut ann, "bob")
            } else {
                (&mut bob, "ann")
            };
            let reply = command(
                ws,
                json!({"id": id, "method": "msg_send", "params": {"to": to, "kind": "text", "data": {"text": "hi"}}}),
            );
            conv = reply["result"]["conv"]
                .as_str()
                .unwrap_or_else(|| panic!("{reply}"))
                .to_owned();
        });
        check_paging_over(&mut ann, &conv);
        check_paging_over(&mut bob, &conv);
        // Not one of its two users: refused by time as by offset.
        let mut cid = im_connect(&engine, "cid");
        let by_offset = command(
            &mut cid,
            json!({"id": 1, "method": "history", "params": {"stream": conv}}),
        );
        let by_time = command(
            &mut cid,
            json!({"id": 2, "method": "history", "params": {"stream": conv, "before_time": u64::MAX}}),
        );
        assert!(by_offset["error"]["code"].is_u64(), "{by_offset}");
        assert_eq!(
            by_time["error"]["code"], by_offset["error"]["code"],
            "{by_time}"
        );
        engine.shutdown();
    }
);
