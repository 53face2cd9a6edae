//! The scheduler on a virtual clock: ordering per key, concurrency, backoff,
//! dead letters, undelivered events on their own timeline, the window.

use super::*;

fn policy() -> Policy {
    Policy {
        concurrency_max: 2,
        attempts_max: 3,
        backoff_min_ms: 100,
        backoff_max_ms: 1000,
        window_max: 8,
        parked_max: 4,
        key_held_max: 8,
    }
}

fn ordered(seq: u64, key: &str) -> Item {
    Item {
        seq,
        key: key.into(),
        lane: Lane::Ordered,
        due_ms: 0,
    }
}

fn alone(seq: u64, key: &str, due_ms: u64) -> Item {
    Item {
        seq,
        key: key.into(),
        lane: Lane::Alone,
        due_ms,
    }
}

/// Every job startable now.
fn drain(scheduler: &mut Scheduler, now: u64) -> Vec<u64> {
    std::iter::from_fn(|| scheduler.poll_job(now).map(|job| job.seq)).collect()
}

#[test]
fn only_the_head_of_a_key_is_in_flight() {
    let mut s = Scheduler::new(policy(), 7);
    for (seq, key) in [(1, "a"), (2, "a"), (3, "b"), (4, "a")] {
        assert!(s.push(0, ordered(seq, key)));
    }
    // Two slots: a's head and b's head; a's next waits for its head.
    assert_eq!(drain(&mut s, 0), vec![1, 3]);
    s.done(0, 3);
    assert_eq!(drain(&mut s, 0), Vec::<u64>::new(), "a's 2 waits for 1");
    s.done(0, 1);
    assert_eq!(drain(&mut s, 0), vec![2]);
    s.done(0, 2);
    assert_eq!(drain(&mut s, 0), vec![4]);
    s.done(0, 4);
    assert_eq!(s.pending(), 0);
    assert_eq!(s.in_flight(), 0);
}

#[test]
fn concurrency_is_bounded_over_keys() {
    let mut s = Scheduler::new(policy(), 7);
    for seq in 1..=5 {
        s.push(0, ordered(seq, &format!("u{seq}")));
    }
    assert_eq!(drain(&mut s, 0), vec![1, 2]);
    assert_eq!(s.in_flight(), 2);
    s.done(0, 2);
    assert_eq!(drain(&mut s, 0), vec![3]);
}

#[test]
fn a_failed_head_retries_after_backoff_and_keeps_its_key_in_order() {
    let mut s = Scheduler::new(policy(), 7);
    s.push(0, ordered(1, "a"));
    s.push(0, ordered(2, "a"));
    s.push(0, ordered(3, "b"));
    assert_eq!(drain(&mut s, 0), vec![1, 3]);
    assert_eq!(s.failed(0, 1, "HTTP 500"), None);
    s.done(0, 3);
    // The retry waits between backoff_min and its cap; a's 2 waits too.
    let at = s.next_timer_ms().expect("a retry timer");
    assert!((100..=100).contains(&at), "first retry after min: {at}");
    assert_eq!(drain(&mut s, at - 1), Vec::<u64>::new());
    let job = s.poll_job(at).expect("the retry");
    assert_eq!(
        job,
        Job {
            seq: 1,
            attempt: 2,
            reload: true
        }
    );
    assert_eq!(drain(&mut s, at), Vec::<u64>::new(), "2 still behind 1");
    s.done(at, 1);
    assert_eq!(drain(&mut s, at), vec![2]);
}

#[test]
fn backoff_grows_with_full_jitter_under_the_cap() {
    let mut s = Scheduler::new(policy(), 42);
    for failures in 1..=10u32 {
        let cap = (100u64 << (failures - 1)).min(1000);
        let delays: Vec<u64> = (0..200).map(|_| s.backoff_ms(failures)).collect();
        assert!(delays.iter().all(|d| (100..=cap).contains(d)), "{delays:?}");
        if cap > 100 {
            // Jitter: the delays spread over the range.
            let distinct: std::collections::HashSet<_> = delays.iter().collect();
            assert!(distinct.len() > 10, "no jitter at {failures}");
            assert!(delays.iter().any(|d| *d > cap / 2 + 50));
        }
    }
}

#[test]
fn attempts_max_dead_letters_and_the_key_goes_on() {
    let mut s = Scheduler::new(policy(), 7);
    s.push(0, ordered(1, "a"));
    s.push(0, ordered(2, "a"));
    let mut now = 0;
    for attempt in 1..=3 {
        let job = s.poll_job(now).expect("an attempt");
        assert_eq!((job.seq, job.attempt), (1, attempt));
        let dead = s.failed(now, 1, &format!("fail {attempt}"));
        if attempt < 3 {
            assert_eq!(dead, None);
            now = s.next_timer_ms().expect("retry");
        } else {
            assert_eq!(
                dead,
                Some(Dead {
                    seq: 1,
                    attempts: 3,
                    last_error: "fail 3".into()
                })
            );
        }
    }
    assert_eq!(drain(&mut s, now), vec![2]);
    assert_eq!(s.pending(), 1);
}

#[test]
fn an_undelivered_event_waits_for_its_time_without_holding_its_user() {
    let mut s = Scheduler::new(policy(), 7);
    // Parked: the caller drops the record.
    assert!(!s.push(0, alone(1, "a", 5_000)));
    assert!(s.push(0, ordered(2, "a")));
    assert_eq!(
        drain(&mut s, 0),
        vec![2],
        "a's message goes before 1 is due"
    );
    s.done(0, 2);
    assert_eq!(s.next_timer_ms(), Some(5_000));
    assert_eq!(drain(&mut s, 4_999), Vec::<u64>::new());
    let job = s.poll_job(5_000).expect("due");
    assert_eq!(
        job,
        Job {
            seq: 1,
            attempt: 1,
            reload: true
        }
    );
    s.done(5_000, 1);
    assert_eq!(s.pending(), 0);
}

#[test]
fn a_failing_undelivered_event_does_not_block_its_user() {
    let mut s = Scheduler::new(policy(), 7);
    s.push(10, alone(1, "a", 0));
    s.push(10, ordered(2, "a"));
    assert_eq!(drain(&mut s, 10), vec![1, 2]);
    assert_eq!(s.failed(10, 1, "timeout"), None);
    s.done(10, 2);
    s.push(10, ordered(3, "a"));
    assert_eq!(drain(&mut s, 10), vec![3]);
}

#[test]
fn the_window_bounds_what_is_loaded() {
    let mut s = Scheduler::new(policy(), 7);
    assert_eq!(s.room(), 8);
    for seq in 1..=8 {
        s.push(0, ordered(seq, "a"));
    }
    assert_eq!(s.room(), 0);
    assert_eq!(s.read_after(), 8);
    assert_eq!(drain(&mut s, 0), vec![1]);
    s.done(0, 1);
    assert_eq!(s.room(), 1);
    // Parked events do not take window room, up to parked_max.
    for seq in 9..=12 {
        assert!(!s.push(0, alone(seq, "b", 1_000)));
    }
    assert_eq!(s.room(), 0, "parked_max reached");
    // Once due and started they count as held.
    let jobs = drain(&mut s, 1_000);
    assert_eq!(jobs, vec![2, 9]);
    assert_eq!(s.room(), 0);
}

#[test]
fn many_keys_many_failures_keep_every_key_in_order() {
    // A seeded simulation: 20 keys, 400 events, a third of attempts fail.
    let mut s = Scheduler::new(
        Policy {
            concurrency_max: 5,
            attempts_max: 1000,
            backoff_min_ms: 10,
            backoff_max_ms: 200,
            window_max: 64,
            parked_max: 16,
            key_held_max: 4,
        },
        99,
    );
    let mut rng = 0x1234_5678_u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let total = 400u64;
    let mut loaded = 0u64;
    let mut delivered: HashMap<String, Vec<u64>> = HashMap::new();
    let mut in_flight: Vec<u64> = Vec::new();
    let key_of = |seq: u64| format!("k{}", seq % 20);
    let mut now = 0u64;
    let mut done = 0u64;
    while done < total {
        while loaded < total && s.room() > 0 {
            loaded += 1;
            s.push(now, ordered(loaded, &key_of(loaded)));
        }
        while let Some(job) = s.poll_job(now) {
            in_flight.push(job.seq);
        }
        assert!(in_flight.len() <= 5);
        // Finish a random in-flight one.
        if !in_flight.is_empty() {
            let idx = (next() % in_flight.len() as u64) as usize;
            let seq = in_flight.swap_remove(idx);
            if next() % 3 == 0 {
                assert_eq!(s.failed(now, seq, "x"), None);
            } else {
                s.done(now, seq);
                delivered.entry(key_of(seq)).or_default().push(seq);
                done += 1;
            }
        } else if let Some(at) = s.next_timer_ms() {
            now = at;
        }
        now += 1;
    }
    for (key, seqs) in delivered {
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{key}: {seqs:?}");
        assert_eq!(seqs.len(), 20);
    }
    assert_eq!(s.pending(), 0);
}

#[test]
fn a_key_that_keeps_failing_leaves_the_window_to_the_others() {
    let policy = Policy {
        concurrency_max: 2,
        attempts_max: 1000,
        backoff_min_ms: 100,
        backoff_max_ms: 60_000,
        window_max: 8,
        parked_max: 1000,
        key_held_max: 2,
    };
    let mut s = Scheduler::new(policy, 7);
    // x has far more than window_max events queued, all failing.
    let mut seq = 0;
    let mut kept = 0;
    while seq < 100 {
        assert!(s.room() > 0, "x alone filled the window at {seq}");
        seq += 1;
        kept += usize::from(s.push(0, ordered(seq, "x")));
    }
    assert_eq!(kept, 2, "x holds key_held_max records, the rest parked");
    let mut now = 0;
    for _ in 0..5 {
        for job in std::iter::from_fn(|| s.poll_job(now)).collect::<Vec<_>>() {
            assert_eq!(job.seq, 1, "only x's head goes");
            assert_eq!(s.failed(now, job.seq, "HTTP 400"), None);
        }
        now = s.next_timer_ms().expect("x's retry");
    }
    // In backoff x's head is parked too: y's events are read and sent now.
    assert!(s.room() >= policy.window_max - policy.key_held_max);
    let y_first = seq + 1;
    for _ in 0..3 {
        seq += 1;
        assert!(s.push(now, ordered(seq, &format!("y{seq}"))));
    }
    let started: Vec<u64> = std::iter::from_fn(|| s.poll_job(now))
        .map(|job| job.seq)
        .filter(|&started| started >= y_first)
        .collect();
    assert_eq!(started.len(), 2, "y's events take both slots: {started:?}");
    for started in started {
        s.done(now, started);
    }
    assert_eq!(
        std::iter::from_fn(|| s.poll_job(now))
            .map(|job| job.seq)
            .filter(|&started| started >= y_first)
            .count(),
        1
    );
}

#[test]
fn a_parked_key_event_is_read_again_when_it_becomes_the_head() {
    let mut s = Scheduler::new(
        Policy {
            key_held_max: 1,
            ..policy()
        },
        7,
    );
    assert!(s.push(0, ordered(1, "a")));
    assert!(!s.push(0, ordered(2, "a")), "past key_held_max: parked");
    assert_eq!(drain(&mut s, 0), vec![1]);
    s.done(0, 1);
    let job = s.poll_job(0).expect("2 is the head now");
    assert_eq!(
        job,
        Job {
            seq: 2,
            attempt: 1,
            reload: true
        }
    );
    s.done(0, 2);
    assert_eq!(s.pending(), 0);
    assert_eq!(s.room(), 8);
}

#[test]
fn an_attempt_that_never_reached_the_backend_is_not_counted() {
    let mut s = Scheduler::new(policy(), 7);
    s.push(0, ordered(1, "a"));
    assert_eq!(drain(&mut s, 0), vec![1]);
    s.not_attempted(0, 1);
    let at = s.next_timer_ms().expect("tried again");
    assert_eq!(at, 100);
    let job = s.poll_job(at).expect("again");
    assert_eq!((job.seq, job.attempt, job.reload), (1, 1, true));
}
