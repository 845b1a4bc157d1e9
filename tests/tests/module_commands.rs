//! Every command's happy path and error replies, on a real redis-server.

use roomcast_common::codes::Code;
use roomcast_tests::reply::{array, error_text, expect_error, int, strings, text};
use roomcast_tests::roomcast::{keys_of, layout, rc_info_ints};
use roomcast_tests::Redis;

fn expect_err(redis: &Redis, conn: &mut redis::Connection, args: &[&str], needle: &str) {
    expect_error(redis.cmd(conn, args), args, needle);
}

/// Expects exactly `-CODE message`: the machine-readable code, then the same text.
fn expect_code(
    redis: &Redis,
    conn: &mut redis::Connection,
    args: &[&str],
    code: Code,
    message: &str,
) {
    match redis.cmd(conn, args) {
        Ok(v) => panic!("{args:?} should fail with {code}, got {v:?}"),
        Err(e) => assert_eq!(error_text(&e), format!("{code} {message}"), "{args:?}"),
    }
}

#[test]
fn presence_and_membership_happy_path() {
    let redis = Redis::start(&[]);
    let mut c = redis.conn();
    assert_eq!(
        int(&redis
            .cmd(&mut c, &["RC.NODE.LEASE", "lobby", "n1", "10000"])
            .unwrap()),
        1
    );
    assert_eq!(
        int(&redis
            .cmd(&mut c, &["RC.NODE.LEASE", "lobby", "n1", "10000"])
            .unwrap()),
        0
    );
    redis
        .cmd(&mut c, &["RC.NODE.LEASE", "ann", "n1", "10000"])
        .unwrap();
    redis
        .cmd(&mut c, &["RC.NODE.LEASE", "bob", "n1", "10000"])
        .unwrap();

    assert_eq!(
        int(&redis
            .cmd(&mut c, &["RC.CONNECT", "ann", "n1", "c1"])
            .unwrap()),
        1
    );
    let meta = r#"{"device":"phone"}"#;
    assert_eq!(
        int(&redis
            .cmd(&mut c, &["RC.CONNECT", "ann", "n1", "c2", "META", meta])
            .unwrap()),
        2
    );
    // Connecting again is idempotent.
    assert_eq!(
        int(&redis
            .cmd(&mut c, &["RC.CONNECT", "ann", "n1", "c1"])
            .unwrap()),
        2
    );
    redis
        .cmd(&mut c, &["RC.CONNECT", "bob", "n1", "c3"])
        .unwrap();

    let conns = redis.cmd(&mut c, &["RC.CONNS", "ann"]).unwrap();
    let conns = array(&conns);
    assert_eq!(conns.len(), 2);
    let first = array(&conns[0]);
    assert_eq!(
        (text(&first[0]), text(&first[1])),
        ("c1".into(), "n1".into())
    );
    assert_eq!(first[2], redis::Value::Nil);
    assert_eq!(text(&array(&conns[1])[2]), meta);

    assert_eq!(
        int(&redis
            .cmd(&mut c, &["RC.JOIN", "lobby", "n1", "c1", "ann"])
            .unwrap()),
        1
    );
    assert_eq!(
        int(&redis
            .cmd(&mut c, &["RC.JOIN", "lobby", "n1", "c1", "ann"])
            .unwrap()),
        0
    );
    redis
        .cmd(&mut c, &["RC.JOIN", "lobby", "n1", "c2", "ann"])
        .unwrap();
    redis
        .cmd(&mut c, &["RC.JOIN", "lobby", "n1", "c3", "bob"])
        .unwrap();
    assert_eq!(
        strings(&redis.cmd(&mut c, &["RC.MEMBERS", "lobby"]).unwrap()),
        ["c1", "c2", "c3"]
    );
    assert_eq!(
        strings(&redis.cmd(&mut c, &["RC.PRESENCE", "lobby"]).unwrap()),
        ["ann", "bob"]
    );

    assert_eq!(
        int(&redis
            .cmd(&mut c, &["RC.LEAVE", "lobby", "n1", "c1"])
            .unwrap()),
        1
    );
    assert_eq!(
        int(&redis
            .cmd(&mut c, &["RC.LEAVE", "lobby", "n1", "c1"])
            .unwrap()),
        0
    );
    assert_eq!(
        strings(&redis.cmd(&mut c, &["RC.PRESENCE", "lobby"]).unwrap()),
        ["ann", "bob"]
    );
    redis
        .cmd(&mut c, &["RC.LEAVE", "lobby", "n1", "c2"])
        .unwrap();
    assert_eq!(
        strings(&redis.cmd(&mut c, &["RC.PRESENCE", "lobby"]).unwrap()),
        ["bob"]
    );

    assert_eq!(
        int(&redis
            .cmd(&mut c, &["RC.DISCONNECT", "ann", "n1", "c1"])
            .unwrap()),
        1
    );
    assert_eq!(
        int(&redis
            .cmd(&mut c, &["RC.DISCONNECT", "ann", "n1", "c1"])
            .unwrap()),
        0
    );
    assert_eq!(
        array(&redis.cmd(&mut c, &["RC.CONNS", "ann"]).unwrap()).len(),
        1
    );

    // An unknown room is simply empty.
    assert!(strings(&redis.cmd(&mut c, &["RC.MEMBERS", "nowhere"]).unwrap()).is_empty());
}

#[test]
fn tagged_and_plain_names_address_the_same_room() {
    let redis = Redis::start(&[]);
    let mut c = redis.conn();
    let tagged = layout(16).tagged("lobby");
    redis
        .cmd(&mut c, &["RC.NODE.LEASE", &tagged, "n1", "10000"])
        .unwrap();
    redis
        .cmd(&mut c, &["RC.JOIN", &tagged, "n1", "c1", "ann"])
        .unwrap();
    assert_eq!(
        strings(&redis.cmd(&mut c, &["RC.MEMBERS", "lobby"]).unwrap()),
        ["c1"]
    );
    // A bare tag addresses the partition.
    let tag = format!("{{{}}}", layout(16).tag(layout(16).partition_of(b"lobby")));
    assert_eq!(
        int(&redis
            .cmd(&mut c, &["RC.NODE.LEASE", &tag, "n1", "10000"])
            .unwrap()),
        0
    );
    // The wrong tag is refused, naming the right one.
    let wrong = format!(
        "{{{}}}lobby",
        layout(16).tag((layout(16).partition_of(b"lobby") + 1) % 16)
    );
    expect_err(
        &redis,
        &mut c,
        &["RC.MEMBERS", &wrong],
        "wrong partition tag",
    );
}

#[test]
fn bad_arguments_get_useful_errors() {
    let redis = Redis::start(&[]);
    let mut c = redis.conn();
    redis
        .cmd(&mut c, &["RC.NODE.LEASE", "lobby", "n1", "10000"])
        .unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["RC.NODE.LEASE", "lobby"], "wrong number of arguments"),
        (
            &["RC.NODE.LEASE", "lobby", "n1", "10000", "x"],
            "wrong number of arguments",
        ),
        // Two arguments are the partition-less form: `node ttl_ms`.
        (
            &["RC.NODE.LEASE", "lobby", "n1"],
            "ttl_ms must be an integer",
        ),
        (&["RC.NODE.LEASE", "n:1", "100"], "invalid node id"),
        (&["RC.NODE.LEASE", "n1", "0"], "ttl_ms must be between"),
        (
            &["RC.NODE.LEASE", "lobby", "n1", "soon"],
            "ttl_ms must be an integer",
        ),
        (
            &["RC.NODE.LEASE", "lobby", "n1", "0"],
            "ttl_ms must be between",
        ),
        (
            &["RC.NODE.LEASE", "lobby", "n1", "-5"],
            "ttl_ms must be between",
        ),
        (&["RC.NODE.LEASE", "lobby", "n:1", "100"], "invalid node id"),
        (&["RC.NODE.LEASE", "", "n1", "100"], "invalid partition"),
        (
            &["RC.NODE.LEASE", "{nope}", "n1", "100"],
            "invalid partition",
        ),
        (&["RC.NODE.DOWN", "lobby"], "wrong number of arguments"),
        (
            &["RC.CONNECT", "", "n1", "c1"],
            "invalid user name: is empty",
        ),
        (&["RC.CONNECT", "ann", "n1", "c 1"], "invalid connection id"),
        (
            &["RC.CONNECT", "ann", "n1", "c1", "META", "{nope"],
            "META must be a valid JSON",
        ),
        (&["RC.CONNECT", "ann", "n1", "c1", "META"], "needs a value"),
        (
            &["RC.CONNECT", "ann", "n1", "c1", "COLOR", "red"],
            "unknown option",
        ),
        (
            &["RC.JOIN", "lobby", "n1", "c1"],
            "wrong number of arguments",
        ),
        (
            &["RC.JOIN", "lob\nby", "n1", "c1", "ann"],
            "invalid room name",
        ),
        (&["RC.JOIN", "{abc", "n1", "c1", "ann"], "no closing"),
        (&["RC.LEAVE", "lobby", "n1"], "wrong number of arguments"),
        (&["RC.PUBLISH", "lobby"], "wrong number of arguments"),
        (&["RC.PUBLISH", "lobby", "x", "FROM"], "needs a value"),
        (
            &["RC.PUBLISH", "lobby", "x", "FROM", "a", "FROM", "b"],
            "given twice",
        ),
        (
            &["RC.PUBLISH", "lobby", "x", "CONN", "bad id!"],
            "invalid connection id",
        ),
        (&["RC.SEND", "ann"], "wrong number of arguments"),
        (&["RC.SEND", "ann", "x", "CONN", "c1"], "unknown option"),
        (&["RC.MEMBERS"], "wrong number of arguments"),
        (&["RC.PRESENCE", "a", "b"], "wrong number of arguments"),
        (&["RC.KICK", "ann", "REASON"], "needs a value"),
        (
            &["RC.THROTTLE", "k", "15", "30"],
            "wrong number of arguments",
        ),
        (
            &["RC.THROTTLE", "k", "-1", "30", "60"],
            "max_burst must be between",
        ),
        (
            &["RC.THROTTLE", "k", "15", "0", "60"],
            "count must be between",
        ),
        (
            &["RC.THROTTLE", "k", "15", "30", "0"],
            "period must be between",
        ),
        (
            &["RC.THROTTLE", "k", "15", "30", "6x0"],
            "period must be an integer",
        ),
        (
            &["RC.THROTTLE", "k", "15", "30", "60", "-1"],
            "quantity must be between",
        ),
        (
            &["RC.THROTTLE", "k", "1", "99999999999", "1"],
            "rate is too high",
        ),
        (&["RC.INFO", "extra"], "wrong number of arguments"),
    ];
    for (args, needle) in cases {
        expect_err(&redis, &mut c, args, needle);
    }
    // A node without a lease in the partition: `NOLEASE`, with the same text as ever.
    expect_code(
        &redis,
        &mut c,
        &["RC.CONNECT", "ann", "n2", "c1"],
        Code::NoLease,
        &format!(
            "node n2 holds no lease in partition {}; call RC.NODE.LEASE first",
            keys_of("ann").prefix()
        ),
    );
    expect_code(
        &redis,
        &mut c,
        &["RC.JOIN", "lobby", "ghost", "c1", "ann"],
        Code::NoLease,
        &format!(
            "node ghost holds no lease in partition {}; call RC.NODE.LEASE first",
            keys_of("lobby").prefix()
        ),
    );
    let long = "r".repeat(300);
    expect_err(
        &redis,
        &mut c,
        &["RC.MEMBERS", &long],
        "longer than 256 bytes",
    );

    // Binary junk in names.
    let junk: redis::RedisResult<redis::Value> = redis::cmd("RC.MEMBERS")
        .arg(&[0xffu8, 0xfe][..])
        .query(&mut c);
    assert!(error_text(&junk.unwrap_err()).contains("not valid UTF-8"));

    // Oversized payloads.
    redis
        .cmd(
            &mut c,
            &["CONFIG", "SET", "roomcast.max-payload-bytes", "10"],
        )
        .unwrap();
    expect_code(
        &redis,
        &mut c,
        &["RC.PUBLISH", "lobby", "01234567890"],
        Code::TooLarge,
        "payload too large: 11 bytes, max-payload-bytes is 10",
    );
    expect_code(
        &redis,
        &mut c,
        &["RC.SEND", "ann", "01234567890"],
        Code::TooLarge,
        "payload too large: 11 bytes, max-payload-bytes is 10",
    );
    let reply = redis
        .cmd(&mut c, &["RC.PUBLISH", "lobby", "0123456789"])
        .unwrap();
    let reply = array(&reply);
    assert_eq!((int(&reply[0]), int(&reply[1])), (0, 0));
    assert_eq!(reply[2], redis::Value::Nil);
}

#[test]
fn connection_cap_is_enforced() {
    let redis = Redis::start(&["max-conns-per-user", "2"]);
    let mut c = redis.conn();
    redis
        .cmd(&mut c, &["RC.NODE.LEASE", "ann", "n1", "10000"])
        .unwrap();
    redis
        .cmd(&mut c, &["RC.CONNECT", "ann", "n1", "c1"])
        .unwrap();
    redis
        .cmd(&mut c, &["RC.CONNECT", "ann", "n1", "c2"])
        .unwrap();
    expect_code(
        &redis,
        &mut c,
        &["RC.CONNECT", "ann", "n1", "c3"],
        Code::TooMany,
        "user ann already has 2 connections (max-conns-per-user 2)",
    );
    // Re-registering an existing connection is not a new one.
    redis
        .cmd(&mut c, &["RC.CONNECT", "ann", "n1", "c2"])
        .unwrap();
    redis
        .cmd(&mut c, &["RC.DISCONNECT", "ann", "n1", "c1"])
        .unwrap();
    redis
        .cmd(&mut c, &["RC.CONNECT", "ann", "n1", "c3"])
        .unwrap();
    // A connection id is owned by one node.
    redis
        .cmd(&mut c, &["RC.NODE.LEASE", "ann", "n2", "10000"])
        .unwrap();
    expect_err(
        &redis,
        &mut c,
        &["RC.CONNECT", "ann", "n2", "c3"],
        "another node",
    );
    expect_err(
        &redis,
        &mut c,
        &["RC.DISCONNECT", "ann", "n2", "c3"],
        "belongs to node n1",
    );
}

#[test]
fn configs_are_native_and_validated() {
    let redis = Redis::start(&["partitions", "32", "publish-rate", "7"]);
    let mut c = redis.conn();
    let get = |c: &mut redis::Connection, name: &str| -> String {
        let v = redis
            .cmd(c, &["CONFIG", "GET", &format!("roomcast.{name}")])
            .unwrap();
        text(&array(&v)[1])
    };
    assert_eq!(get(&mut c, "partitions"), "32");
    assert_eq!(get(&mut c, "publish-rate"), "7");
    for (name, default) in [
        ("publish-burst", "20"),
        ("ban-after", "0"),
        ("ban-ms", "60000"),
        ("max-payload-bytes", "65536"),
        ("max-conns-per-user", "100"),
        ("inbox-maxlen", "10000"),
    ] {
        assert_eq!(get(&mut c, name), default, "{name}");
    }
    redis
        .cmd(&mut c, &["CONFIG", "SET", "roomcast.publish-rate", "100"])
        .unwrap();
    assert_eq!(get(&mut c, "publish-rate"), "100");
    assert!(redis
        .cmd(&mut c, &["CONFIG", "SET", "roomcast.publish-rate", "-1"])
        .is_err());
    assert!(redis
        .cmd(&mut c, &["CONFIG", "SET", "roomcast.inbox-maxlen", "abc"])
        .is_err());
    assert!(redis
        .cmd(&mut c, &["CONFIG", "SET", "roomcast.partitions", "8"])
        .is_err());

    let info = redis.cmd(&mut c, &["RC.INFO"]).unwrap();
    let info = array(&info);
    assert_eq!(text(&info[0]), "partitions");
    assert_eq!(int(&info[1]), 32);
    assert_eq!(strings(&info[3]), layout(32).tags());
}

#[test]
fn info_reports_gauges_and_counters() {
    let redis = Redis::start(&[]);
    let mut c = redis.conn();
    for name in ["lobby", "ann", "bob"] {
        redis
            .cmd(&mut c, &["RC.NODE.LEASE", name, "n1", "10000"])
            .unwrap();
        redis
            .cmd(&mut c, &["RC.NODE.LEASE", name, "n2", "10000"])
            .unwrap();
    }
    redis
        .cmd(&mut c, &["RC.CONNECT", "ann", "n1", "c1"])
        .unwrap();
    redis
        .cmd(&mut c, &["RC.CONNECT", "bob", "n2", "c2"])
        .unwrap();
    redis
        .cmd(&mut c, &["RC.JOIN", "lobby", "n1", "c1", "ann"])
        .unwrap();
    redis
        .cmd(&mut c, &["RC.JOIN", "lobby", "n2", "c2", "bob"])
        .unwrap();
    redis.cmd(&mut c, &["RC.PUBLISH", "lobby", "hi"]).unwrap();

    let info = rc_info_ints(&redis.cmd(&mut c, &["RC.INFO"]).unwrap());
    let field = |name: &str| -> i64 { info[name] };
    assert_eq!(field("nodes"), 2);
    assert_eq!(field("connections"), 2);
    assert_eq!(field("rooms"), 1);
    assert_eq!(field("published"), 1);
    // Two join events (ann → n1; bob → n1, n2) and one message to two nodes.
    assert_eq!(field("routed"), 5);

    // INFO roomcast refreshes its gauges from a timer (at most a second behind).
    std::thread::sleep(std::time::Duration::from_millis(1200));
    let section: String = redis::cmd("INFO").arg("roomcast").query(&mut c).unwrap();
    assert!(section.contains("# roomcast"), "{section}");
    assert!(section.contains("roomcast_connections:2"), "{section}");
    assert!(section.contains("roomcast_published:1"), "{section}");
}

#[test]
fn wrong_key_types_are_reported_not_crashed_on() {
    let redis = Redis::start(&[]);
    let mut c = redis.conn();
    let keys = roomcast_tests::roomcast::keys_of("lobby");
    redis
        .cmd(&mut c, &["SET", &keys.nodes(), "garbage"])
        .unwrap();
    expect_err(
        &redis,
        &mut c,
        &["RC.JOIN", "lobby", "n1", "c1", "ann"],
        "WRONGTYPE",
    );
    redis.cmd(&mut c, &["DEL", &keys.nodes()]).unwrap();
    redis
        .cmd(&mut c, &["RC.NODE.LEASE", "lobby", "n1", "10000"])
        .unwrap();
    redis
        .cmd(&mut c, &["RC.JOIN", "lobby", "n1", "c1", "ann"])
        .unwrap();
    redis
        .cmd(&mut c, &["DEL", &roomcast_tests::roomcast::inbox_key("n1")])
        .unwrap();
    redis
        .cmd(
            &mut c,
            &["SET", &roomcast_tests::roomcast::inbox_key("n1"), "garbage"],
        )
        .unwrap();
    expect_err(&redis, &mut c, &["RC.PUBLISH", "lobby", "x"], "WRONGTYPE");
    assert_eq!(
        redis.cmd(&mut c, &["PING"]).unwrap(),
        redis::Value::SimpleString("PONG".into())
    );
}
