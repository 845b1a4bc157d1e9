//! Rate limits: `RC.THROTTLE` semantics (redis-cell compatible) and the publish policy
//! with ban escalation and kicks.

use roomcast_tests::reply::{counts, error_text, ints};
use roomcast_tests::roomcast::{inbox, keys_of};
use roomcast_tests::Redis;

#[test]
fn throttle_is_compatible_with_cl_throttle() {
    let redis = Redis::start(&[]);
    let mut c = redis.conn();
    let reply = redis
        .cmd(&mut c, &["RC.THROTTLE", "user123", "15", "30", "60"])
        .unwrap();
    assert_eq!(ints(&reply), [0, 16, 15, -1, 2]);
    // The state key expires when the limiter is full again, rounded up (≤ 2 s here).
    let pttl: i64 = redis::cmd("PTTL")
        .arg(keys_of("user123").throttle("user123"))
        .query(&mut c)
        .unwrap();
    assert!(pttl > 0 && pttl <= 2000, "pttl {pttl}");

    // Use up the burst: 16 cells in all, then limited with a retry time.
    for left in (0..15).rev() {
        let r = ints(
            &redis
                .cmd(&mut c, &["RC.THROTTLE", "user123", "15", "30", "60"])
                .unwrap(),
        );
        assert_eq!(r[0], 0);
        assert_eq!(r[2], left);
    }
    let r = ints(
        &redis
            .cmd(&mut c, &["RC.THROTTLE", "user123", "15", "30", "60"])
            .unwrap(),
    );
    assert_eq!(r[0], 1, "{r:?}");
    assert_eq!(r[2], 0);
    assert_eq!(r[3], 2, "one cell per 2 s: retry after 2 s, rounded up");
    assert!(r[4] >= 31 && r[4] <= 32, "{r:?}");

    // Quantity 0 only inspects; a quantity larger than the quota can never fit.
    let r = ints(
        &redis
            .cmd(&mut c, &["RC.THROTTLE", "fresh", "4", "1", "1", "0"])
            .unwrap(),
    );
    assert_eq!(r, [0, 5, 5, -1, 0]);
    let r = ints(
        &redis
            .cmd(&mut c, &["RC.THROTTLE", "fresh", "4", "1", "1", "9"])
            .unwrap(),
    );
    assert_eq!((r[0], r[3]), (1, -1));
}

#[test]
fn publish_rate_limits_each_sender() {
    let redis = Redis::start(&["publish-rate", "1", "publish-burst", "2"]);
    let mut c = redis.conn();
    for _ in 0..3 {
        redis
            .cmd(&mut c, &["RC.PUBLISH", "lobby", "x", "FROM", "ann"])
            .unwrap();
    }
    let err = redis
        .cmd(&mut c, &["RC.PUBLISH", "lobby", "x", "FROM", "ann"])
        .unwrap_err();
    let text = error_text(&err);
    assert!(text.starts_with("LIMITED retry_after_ms="), "{text}");
    let retry: i64 = text
        .trim_start_matches("LIMITED retry_after_ms=")
        .parse()
        .unwrap();
    assert!(retry > 0 && retry <= 1000, "{retry}");
    // Other senders and backend publishes are unaffected.
    redis
        .cmd(&mut c, &["RC.PUBLISH", "lobby", "x", "FROM", "bob"])
        .unwrap();
    redis.cmd(&mut c, &["RC.PUBLISH", "lobby", "x"]).unwrap();
    // The same policy covers direct messages from a sender.
    let err = redis
        .cmd(&mut c, &["RC.SEND", "bob", "x", "FROM", "ann"])
        .unwrap_err();
    assert!(error_text(&err).starts_with("LIMITED"));
    // After the retry time, ann may publish again.
    std::thread::sleep(std::time::Duration::from_millis(retry as u64 + 50));
    redis
        .cmd(&mut c, &["RC.PUBLISH", "lobby", "x", "FROM", "ann"])
        .unwrap();
    // Rate 0 switches the limit off.
    redis
        .cmd(&mut c, &["CONFIG", "SET", "roomcast.publish-rate", "0"])
        .unwrap();
    for _ in 0..20 {
        redis
            .cmd(&mut c, &["RC.PUBLISH", "lobby", "x", "FROM", "ann"])
            .unwrap();
    }
}

#[test]
fn persistent_flooding_bans_and_kicks_the_sender() {
    let redis = Redis::start(&[
        "publish-rate",
        "1",
        "publish-burst",
        "0",
        "ban-after",
        "3",
        "ban-ms",
        "1500",
    ]);
    let mut c = redis.conn();
    for name in ["ann", "lobby"] {
        for node in ["n1", "n2", "n3"] {
            redis
                .cmd(&mut c, &["RC.NODE.LEASE", name, node, "60000"])
                .unwrap();
        }
    }
    redis
        .cmd(&mut c, &["RC.CONNECT", "ann", "n1", "c1"])
        .unwrap();
    redis
        .cmd(&mut c, &["RC.CONNECT", "ann", "n2", "c2"])
        .unwrap();
    redis
        .cmd(&mut c, &["RC.JOIN", "lobby", "n3", "c9", "bob"])
        .unwrap();

    redis
        .cmd(&mut c, &["RC.PUBLISH", "lobby", "ok", "FROM", "ann"])
        .unwrap();
    for _ in 0..2 {
        let err = redis
            .cmd(&mut c, &["RC.PUBLISH", "lobby", "x", "FROM", "ann"])
            .unwrap_err();
        assert!(error_text(&err).starts_with("LIMITED"));
    }
    let err = redis
        .cmd(&mut c, &["RC.PUBLISH", "lobby", "x", "FROM", "ann"])
        .unwrap_err();
    assert_eq!(error_text(&err), "BANNED retry_after_ms=1500");

    // A kick for all of ann's connections went to the nodes holding them.
    for node in ["n1", "n2"] {
        let last = inbox(&mut c, "ann", node).pop().expect("a kick entry");
        assert_eq!(last.get("kind"), "kick");
        assert_eq!(last.get("user"), "ann");
        assert!(last.get("reason").starts_with("banned"));
    }
    let kicks_n3 = inbox(&mut c, "ann", "n3")
        .iter()
        .filter(|e| e.get("kind") == "kick")
        .count();
    assert_eq!(kicks_n3, 0, "n3 holds none of ann's connections");

    // While banned every attempt is refused, and no message was routed.
    let err = redis
        .cmd(&mut c, &["RC.SEND", "bob", "x", "FROM", "ann"])
        .unwrap_err();
    assert!(error_text(&err).starts_with("BANNED retry_after_ms="));
    let messages = inbox(&mut c, "lobby", "n3")
        .iter()
        .filter(|e| e.get("kind") == "msg")
        .count();
    assert_eq!(
        messages, 1,
        "only the first, allowed message reached the room"
    );
    // Others are fine; after the ban, ann is too.
    assert_eq!(
        counts(
            &redis
                .cmd(&mut c, &["RC.PUBLISH", "lobby", "y", "FROM", "cat"])
                .unwrap()
        ),
        (1, 1)
    );
    std::thread::sleep(std::time::Duration::from_millis(1600));
    redis
        .cmd(&mut c, &["RC.PUBLISH", "lobby", "back", "FROM", "ann"])
        .unwrap();
}
