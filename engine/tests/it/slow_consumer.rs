//! A client that stops reading is cut off with 1013; the others keep
//! receiving everything.

use std::time::Duration;

use crate::e2e;
use crate::util::*;
use serde_json::json;

e2e!(
    slow_consumer_is_cut_off_while_others_keep_receiving,
    |driver| {
        let mut config = config(driver, 2);
        config.websocket.outbound_queue_bytes_max = 512 * 1024;
        config.websocket.slow_consumer_timeout = Duration::from_millis(300);
        config.api.body_bytes_max = 64 * 1024;
        let engine = start(config);

        let (mut reader, _) = connect(&engine, "reader");
        subscribe(&mut reader, 1, "news:firehose");
        // The stalled client subscribes, then stops reading until it is cut.
        let (mut stalled, _) = connect(&engine, "stalled");
        subscribe(&mut stalled, 1, "news:firehose");
        // A small receive buffer keeps what the stalled client must read
        // through, once it reads again, small.
        socket2::SockRef::from(stalled.get_ref())
            .set_recv_buffer_size(16 * 1024)
            .unwrap();

        // The cut client gets its 1013 only if it reads again within the
        // close linger (`limits::CLOSE_LINGER_MS`): the close frame waits
        // behind what is queued. So it resumes reading as soon as the cut
        // shows in the stats, while the publishing goes on.
        let api_addr = engine.api_addr;
        let stalled_thread = std::thread::spawn(move || {
            let cut = wait_until(Duration::from_secs(20), || {
                let (_, stats) = api_raw(api_addr, "GET", "/api/stats", None, Some(API_KEY));
                stats["shards"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| s["slow_consumer_disconnects_total"].as_u64().unwrap())
                    .sum::<u64>()
                    == 1
            });
            assert!(cut, "the stalled client was cut off");
            stalled
                .get_mut()
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            read_close_code(&mut stalled)
        });

        let blob = "x".repeat(32 * 1024);
        // 400 × 32 KiB is well past what loopback socket buffers absorb.
        const N: usize = 400;
        let reader_thread = std::thread::spawn(move || {
            for seq in 0..N {
                let push = read_json(&mut reader);
                assert_eq!(push["push"]["data"]["seq"], seq);
            }
            reader
        });
        for seq in 0..N {
            publish(&engine, "news:firehose", json!({"seq": seq, "blob": blob}));
        }
        let _reader = reader_thread
            .join()
            .expect("reader got every message in order");
        let code = stalled_thread.join().expect("the stalled client's close");
        assert_eq!(
            code,
            Some(1013),
            "the stalled client reads everything queued, then the 1013 close"
        );
        let (_, stats) = api(&engine, "GET", "/api/stats", None);
        let cut: u64 = stats["shards"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["slow_consumer_disconnects_total"].as_u64().unwrap())
            .sum();
        assert_eq!(cut, 1, "exactly the stalled client was cut off");
        engine.shutdown();
    }
);

e2e!(thousand_clients_that_never_read_are_all_cut_off, |driver| {
    let mut config = config(driver, 2);
    config.websocket.outbound_queue_bytes_max = 8 * 1024;
    config.websocket.slow_consumer_timeout = Duration::from_millis(200);
    config.api.body_bytes_max = 64 * 1024;
    let engine = start(config);
    let mut clients: Vec<Ws> = (0..1000)
        .map(|i| connect(&engine, &format!("s{i}")).0)
        .collect();
    for ws in clients.iter_mut() {
        subscribe(ws, 1, "news:flood");
    }
    let blob = "y".repeat(32 * 1024);
    let mut all_cut = false;
    for _ in 0..200 {
        let (status, _) = api(
            &engine,
            "POST",
            "/api/publish",
            Some(json!({"channel": "news:flood", "data": {"blob": blob}})),
        );
        assert!(status == 200 || status == 503, "status {status}");
        let (_, stats) = api(&engine, "GET", "/api/stats", None);
        if stats["connections"].as_u64().unwrap() == 0 {
            all_cut = true;
            break;
        }
    }
    assert!(
        all_cut
            || wait_until(Duration::from_secs(10), || api(
                &engine,
                "GET",
                "/api/stats",
                None
            )
            .1["connections"]
                .as_u64()
                .unwrap()
                == 0),
        "every non-reading client was disconnected"
    );
    assert_eq!(
        shard_stat_sum(&engine, "slow_consumer_disconnects_total"),
        1000
    );
    drop(clients);
    engine.shutdown();
});
