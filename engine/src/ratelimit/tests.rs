use std::rc::Rc;

use super::*;

fn config(extra_websocket: &str, room: &str) -> Config {
    let text = format!(
        "version = 1\n[server]\nshards = 2\n[websocket]\n{extra_websocket}\n\
         [api]\nkey = \"test-api-key-0123456789\"\n\
         [auth]\njwt_secret = \"test-jwt-secret-0123456789abcdef0123456789\"\n\
         [[namespace]]\nname = \"news\"\n[[namespace]]\nname = \"room\"\npublish = \"any\"\n{room}\n"
    );
    match Config::from_toml_str(&text, std::path::Path::new("<ratelimit test>")) {
        Ok(config) => config,
        Err(error) => panic!("{error}"),
    }
}

#[test]
fn a_bucket_lets_a_burst_through_then_its_rate() {
    let rate = Rate::new(10, 5);
    let mut bucket = TokenBucket::full(rate, 1_000);
    for _ in 0..5 {
        assert_eq!(bucket.try_take(rate, 1_000), Ok(()));
    }
    // 10 per second: a token every 100 ms.
    assert_eq!(bucket.try_take(rate, 1_000), Err(100));
    assert_eq!(bucket.try_take(rate, 1_040), Err(60));
    assert_eq!(bucket.try_take(rate, 1_100), Ok(()));
    assert_eq!(bucket.try_take(rate, 1_100), Err(100));
    // A long pause refills up to the burst, no more.
    assert!(bucket.is_full(rate, 60_000));
    for _ in 0..5 {
        assert_eq!(bucket.try_take(rate, 60_000), Ok(()));
    }
    assert!(bucket.try_take(rate, 60_000).is_err());
}

#[test]
fn a_refusal_takes_nothing_and_retry_after_is_exact() {
    let rate = Rate::new(3, 1);
    let mut bucket = TokenBucket::full(rate, 0);
    assert_eq!(bucket.try_take(rate, 0), Ok(()));
    // 3 per second: 1000 units at 3 a millisecond, 334 ms (rounded up).
    assert_eq!(bucket.try_take(rate, 0), Err(334));
    assert_eq!(bucket.try_take(rate, 0), Err(334), "refusals do not drain");
    assert_eq!(bucket.try_take(rate, 333), Err(1));
    assert_eq!(bucket.try_take(rate, 334), Ok(()));
}

#[test]
fn a_clock_stepping_back_refills_nothing_and_unlimited_never_refuses() {
    let rate = Rate::new(1000, 1);
    let mut bucket = TokenBucket::full(rate, 5_000);
    assert_eq!(bucket.try_take(rate, 5_000), Ok(()));
    assert_eq!(bucket.try_take(rate, 4_000), Err(1));
    assert_eq!(bucket.try_take(rate, 5_001), Ok(()));
    let mut free = TokenBucket::full(Rate::UNLIMITED, 0);
    for _ in 0..10_000 {
        assert_eq!(free.try_take(Rate::UNLIMITED, 0), Ok(()));
    }
    let fastest = Rate::new(RATE_MAX, RATE_MAX);
    let mut bucket = TokenBucket::full(fastest, 0);
    assert!(
        bucket.is_full(fastest, u64::MAX),
        "no overflow at the extremes"
    );
    assert_eq!(bucket.try_take(fastest, u64::MAX), Ok(()));
}

#[test]
fn refusals_within_the_window_make_abuse() {
    let mut conn = ConnLimits::default();
    assert!(!conn.on_refused(3, 0));
    assert!(!conn.on_refused(3, 100));
    assert!(conn.on_refused(3, 200), "third refusal within the window");
    let mut conn = ConnLimits::default();
    assert!(!conn.on_refused(3, 0));
    assert!(!conn.on_refused(3, 100));
    assert!(
        !conn.on_refused(3, RATE_LIMIT_REFUSALS_WINDOW_MS),
        "a new window starts"
    );
    let mut conn = ConnLimits::default();
    for at in 0..1000 {
        assert!(!conn.on_refused(0, at), "0 never disconnects");
    }
}

#[test]
fn publish_limits_are_per_namespace_and_both_buckets_must_have_a_token() {
    let config = config(
        "",
        "publish_rate = 10\npublish_burst = 2\nuser_publish_rate = 10\nuser_publish_burst = 3",
    );
    assert!(command_limits_configured(&config));
    assert!(!command_limits_configured(&self::config("", "")));
    let room = LimitKey::Publish(1);
    assert_eq!(config.namespace_index("room:a"), Some(1));
    assert_eq!(room.connection_rate(&config), Rate::new(10, 2));
    assert!(!LimitKey::Publish(0).connection_rate(&config).is_limited());
    let mut users = UserBuckets::default();
    let alice: Rc<str> = Rc::from("alice");
    let (mut first, mut second) = (ConnLimits::default(), ConnLimits::default());
    let now = 10_000;
    for _ in 0..2 {
        assert_eq!(
            check_command(&config, &mut first, &mut users, &alice, room, now),
            Ok(())
        );
    }
    let refused = check_command(&config, &mut first, &mut users, &alice, room, now);
    assert_eq!(
        refused.map_err(|r| r.retry_after_ms),
        Err(100),
        "connection burst spent"
    );
    // The second connection has its own burst of 2, but the user's third
    // token is the last.
    assert_eq!(
        check_command(&config, &mut second, &mut users, &alice, room, now),
        Ok(())
    );
    let refused = check_command(&config, &mut second, &mut users, &alice, room, now);
    assert_eq!(
        refused.map_err(|r| r.retry_after_ms),
        Err(100),
        "user burst spent"
    );
    // Another user and another namespace are not affected.
    let bob: Rc<str> = Rc::from("bob");
    let mut third = ConnLimits::default();
    assert_eq!(
        check_command(&config, &mut third, &mut users, &bob, room, now),
        Ok(())
    );
    let news = LimitKey::Publish(0);
    assert_eq!(
        check_command(&config, &mut second, &mut users, &alice, news, now),
        Ok(())
    );
    // Refilled buckets are swept, refilling ones kept: 100 ms gave bob
    // back his one token, alice one of her three.
    users.sweep(&config, now + 100);
    assert_eq!(users.len(), 1);
    users.sweep(&config, now + 10_000);
    assert!(users.is_empty());
}

#[test]
fn anonymous_connections_have_only_their_own_limit() {
    let config = config(
        "send_rate = 1\nsend_burst = 1\nuser_send_rate = 1\nuser_send_burst = 1",
        "",
    );
    let anonymous: Rc<str> = Rc::from("");
    let mut users = UserBuckets::default();
    let (mut a, mut b) = (ConnLimits::default(), ConnLimits::default());
    let key = LimitKey::Send;
    assert_eq!(
        check_command(&config, &mut a, &mut users, &anonymous, key, 0),
        Ok(())
    );
    assert_eq!(
        check_command(&config, &mut b, &mut users, &anonymous, key, 0),
        Ok(())
    );
    assert!(users.is_empty(), "no user bucket for anonymous connections");
    let refused = check_command(&config, &mut a, &mut users, &anonymous, key, 0);
    assert_eq!(refused.map_err(|r| r.retry_after_ms), Err(1000));
}

#[test]
fn sources_get_their_share_and_the_map_stays_bounded() {
    // 5 per second and a burst of 3 per node over 2 shards: 3 a second
    // and a burst of 2 here.
    let mut sources = SourceBuckets::new(Rate::new(5, 3), 2, 4);
    let a = Some("10.0.0.1".parse().unwrap());
    let b = Some("10.0.0.2".parse().unwrap());
    assert!(sources.admit(a, 0) && sources.admit(a, 0));
    assert!(!sources.admit(a, 0), "a's burst is spent");
    assert!(sources.admit(b, 0), "another source is not affected");
    assert!(sources.admit(None, 0), "an unknown source is let in");
    assert!(sources.admit(a, 334), "a token a third of a second later");
    for last in 3..=9u8 {
        let ip = Some(std::net::IpAddr::from([10, 0, 1, last]));
        assert!(sources.admit(ip, 400));
        assert!(sources.len() <= 4);
    }
    let mut unlimited = SourceBuckets::new(Rate::UNLIMITED, 2, 4);
    for _ in 0..100 {
        assert!(unlimited.admit(a, 0));
    }
    assert!(unlimited.is_empty());
}
