//! Retention by count and by age trims the oldest entries and advances
//! `first_offset`, in the background.

use std::time::Duration;

use ringcast_store::{AppendRequest, Durability, Retention, Store};

use crate::util::{config, eventually, offsets, read, read_all, request, request_at, submit};

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[test]
fn count_retention_keeps_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    // Several trimming steps per stream: bounded work per iteration.
    config.trim_keys_per_step_max = 3;
    let store = Store::open(config).unwrap();
    for idx in 0..20 {
        submit(
            &store,
            AppendRequest {
                retention: Retention {
                    count_max: 4,
                    age_max: Duration::MAX,
                },
                ..request("s", &idx.to_string(), Durability::Buffered)
            },
        )
        .unwrap();
    }
    eventually("count trim", || read_all(&store, "s").first_offset == 17);
    let result = read_all(&store, "s");
    assert_eq!(offsets(&result.entries), vec![17, 18, 19, 20]);
    assert_eq!(result.next_offset, 21);
    // A reader resuming from before the trim can tell it missed entries.
    let behind = read(&store, "s", Some(3), 100, false);
    assert!(behind.first_offset > 3 + 1);
    store.close().unwrap();

    let store = Store::open(crate::util::config(dir.path())).unwrap();
    assert_eq!(
        offsets(&read_all(&store, "s").entries),
        vec![17, 18, 19, 20]
    );
    store.close().unwrap();
}

#[test]
fn age_retention_trims_old_entries_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    let retention = Retention {
        count_max: u64::MAX,
        age_max: Duration::from_secs(60),
    };
    let now = now_ms();
    for idx in 0..8u64 {
        // Five entries from ten minutes ago, three from now.
        let time_ms = if idx < 5 { now - 600_000 } else { now };
        let append = AppendRequest {
            retention,
            ..request_at("s", &idx.to_string(), Durability::Buffered, time_ms)
        };
        submit(&store, append).unwrap();
    }
    eventually("age trim", || read_all(&store, "s").first_offset == 6);
    assert_eq!(offsets(&read_all(&store, "s").entries), vec![6, 7, 8]);
    store.close().unwrap();
}

/// Age retention looks at a bounded number of streams per maintenance
/// step, round-robin: with more streams than that bound, every stream is
/// still reached.
#[test]
fn age_retention_reaches_every_stream_a_few_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.age_streams_per_step_max = 2;
    let store = Store::open(config).unwrap();
    let retention = Retention {
        count_max: u64::MAX,
        age_max: Duration::from_secs(60),
    };
    let now = now_ms();
    let streams: Vec<String> = (0..7).map(|i| format!("s{i}")).collect();
    for stream in &streams {
        for idx in 0..3u64 {
            // Two old entries, one new, in every stream.
            let time_ms = if idx < 2 { now - 600_000 } else { now };
            let append = AppendRequest {
                retention,
                ..request_at(stream, &idx.to_string(), Durability::Buffered, time_ms)
            };
            submit(&store, append).unwrap();
        }
    }
    for stream in &streams {
        eventually("age trim of every stream", || {
            read_all(&store, stream).first_offset == 3
        });
        assert_eq!(offsets(&read_all(&store, stream).entries), vec![3]);
    }
    store.close().unwrap();
}
