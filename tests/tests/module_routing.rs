//! Targeted routing: each message reaches the inbox of exactly the nodes that hold a
//! recipient, with exact counts, in the documented entry format.

use std::time::Duration;

use roomcast_tests::reply::{array, counts, int};
use roomcast_tests::roomcast::{inbox, rc_info};
use roomcast_tests::Redis;

/// Leases `nodes` in the partitions of `names`.
fn lease(redis: &Redis, c: &mut redis::Connection, names: &[&str], nodes: &[&str]) {
    for name in names {
        for node in nodes {
            redis
                .cmd(c, &["RC.NODE.LEASE", name, node, "60000"])
                .unwrap();
        }
    }
}

fn join(redis: &Redis, c: &mut redis::Connection, room: &str, node: &str, conn: &str, user: &str) {
    assert_eq!(
        int(&redis.cmd(c, &["RC.JOIN", room, node, conn, user]).unwrap()),
        1
    );
}

#[test]
fn publish_reaches_exactly_the_nodes_with_members() {
    let redis = Redis::start(&[]);
    let mut c = redis.conn();
    lease(
        &redis,
        &mut c,
        &["lobby", "other"],
        &["n1", "n2", "n3", "idle"],
    );
    join(&redis, &mut c, "lobby", "n1", "c1", "ann");
    join(&redis, &mut c, "lobby", "n2", "c2", "bob");
    join(&redis, &mut c, "lobby", "n2", "c3", "cat");
    join(&redis, &mut c, "lobby", "n3", "c4", "ann");
    join(&redis, &mut c, "other", "idle", "c9", "zed");
    let before_n1 = inbox(&mut c, "lobby", "n1").len();

    // From ann's connection c1: n1 holds only the sender, so it gets nothing.
    let reply = redis
        .cmd(
            &mut c,
            &[
                "RC.PUBLISH",
                "lobby",
                r#"{"text":"hi"}"#,
                "FROM",
                "ann",
                "CONN",
                "c1",
            ],
        )
        .unwrap();
    let reply = array(&reply);
    assert_eq!((int(&reply[0]), int(&reply[1])), (3, 2));
    assert_eq!(
        reply[2],
        redis::Value::Nil,
        "offset stays nil while history is off"
    );

    assert_eq!(inbox(&mut c, "lobby", "n1").len(), before_n1);
    for node in ["n2", "n3"] {
        let entries = inbox(&mut c, "lobby", node);
        let last = entries.last().unwrap();
        assert_eq!(
            last.names(),
            ["kind", "room", "from", "skip", "offset", "data"]
        );
        assert_eq!(last.get("kind"), "msg");
        assert_eq!(last.get("room"), "lobby");
        assert_eq!(last.get("from"), "ann");
        assert_eq!(last.get("skip"), "c1");
        assert_eq!(last.get("offset"), "");
        assert_eq!(last.get("data"), r#"{"text":"hi"}"#);
    }
    assert!(
        inbox(&mut c, "lobby", "idle").is_empty(),
        "no members, no entries"
    );

    // A backend publish (no FROM/CONN) reaches every member connection.
    let reply = redis.cmd(&mut c, &["RC.PUBLISH", "lobby", "1"]).unwrap();
    assert_eq!(counts(&reply), (4, 3));
    // A sender connection that is not a member excludes nobody.
    let reply = redis
        .cmd(&mut c, &["RC.PUBLISH", "lobby", "2", "CONN", "stranger"])
        .unwrap();
    assert_eq!(counts(&reply), (4, 3));
    // An empty room routes nowhere.
    let reply = redis.cmd(&mut c, &["RC.PUBLISH", "empty", "3"]).unwrap();
    assert_eq!(counts(&reply), (0, 0));
}

#[test]
fn payload_bytes_pass_through_unchanged() {
    let redis = Redis::start(&[]);
    let mut c = redis.conn();
    lease(&redis, &mut c, &["lobby"], &["n1"]);
    join(&redis, &mut c, "lobby", "n1", "c1", "ann");
    let payload: Vec<u8> = (0u8..=255).chain([0, b'\r', b'\n', 0xff]).collect();
    let reply: redis::Value = redis::cmd("RC.PUBLISH")
        .arg("lobby")
        .arg(&payload)
        .query(&mut c)
        .unwrap();
    assert_eq!(counts(&reply), (1, 1));
    let entries = inbox(&mut c, "lobby", "n1");
    assert_eq!(entries.last().unwrap().bytes("data"), payload);
}

#[test]
fn join_and_leave_events_go_out_once_per_user() {
    let redis = Redis::start(&[]);
    let mut c = redis.conn();
    lease(&redis, &mut c, &["lobby"], &["n1", "n2"]);
    join(&redis, &mut c, "lobby", "n1", "a1", "ann");
    // ann's first connection: one join event, to n1 only (the only node with members).
    let n1 = inbox(&mut c, "lobby", "n1");
    assert_eq!(n1.len(), 1);
    assert_eq!(n1[0].names(), ["kind", "room", "user", "skip"]);
    assert_eq!(
        (n1[0].get("kind"), n1[0].get("user"), n1[0].get("skip")),
        ("join".into(), "ann".into(), "a1".into())
    );

    join(&redis, &mut c, "lobby", "n2", "b1", "bob");
    assert_eq!(inbox(&mut c, "lobby", "n1").len(), 2);
    assert_eq!(inbox(&mut c, "lobby", "n2").len(), 1);

    // ann's second connection (on n2): no event.
    join(&redis, &mut c, "lobby", "n2", "a2", "ann");
    assert_eq!(inbox(&mut c, "lobby", "n1").len(), 2);
    assert_eq!(inbox(&mut c, "lobby", "n2").len(), 1);

    // ann's first connection leaves: she is still there through a2, no event.
    redis
        .cmd(&mut c, &["RC.LEAVE", "lobby", "n1", "a1"])
        .unwrap();
    assert_eq!(inbox(&mut c, "lobby", "n1").len(), 2);
    assert_eq!(inbox(&mut c, "lobby", "n2").len(), 1);

    // Her last connection leaves: one leave event to the node still holding members.
    redis
        .cmd(&mut c, &["RC.LEAVE", "lobby", "n2", "a2"])
        .unwrap();
    let n2 = inbox(&mut c, "lobby", "n2");
    assert_eq!(n2.len(), 2);
    let last = n2.last().unwrap();
    assert_eq!(last.names(), ["kind", "room", "user"]);
    assert_eq!(
        (last.get("kind"), last.get("user")),
        ("leave".into(), "ann".into())
    );
    // n1 has no members left, so it hears nothing more.
    assert_eq!(inbox(&mut c, "lobby", "n1").len(), 2);

    // A leave must name the node the connection joined from.
    let err = redis
        .cmd(&mut c, &["RC.LEAVE", "lobby", "n1", "b1"])
        .unwrap_err();
    assert!(roomcast_tests::reply::error_text(&err).contains("belongs to node n2"));
}

#[test]
fn send_and_kick_reach_every_node_of_the_user() {
    let redis = Redis::start(&[]);
    let mut c = redis.conn();
    lease(&redis, &mut c, &["ann"], &["n1", "n2", "n3"]);
    for (node, conn) in [("n1", "c1"), ("n2", "c2"), ("n2", "c3")] {
        redis
            .cmd(&mut c, &["RC.CONNECT", "ann", node, conn])
            .unwrap();
    }
    let reply = redis
        .cmd(&mut c, &["RC.SEND", "ann", "psst", "FROM", "bob"])
        .unwrap();
    assert_eq!(counts(&reply), (3, 2));
    for node in ["n1", "n2"] {
        let entries = inbox(&mut c, "ann", node);
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].names(), ["kind", "user", "from", "data"]);
        assert_eq!(entries[0].get("kind"), "direct");
        assert_eq!(entries[0].get("user"), "ann");
        assert_eq!(entries[0].get("from"), "bob");
        assert_eq!(entries[0].get("data"), "psst");
    }
    assert!(inbox(&mut c, "ann", "n3").is_empty());
    assert_eq!(
        counts(&redis.cmd(&mut c, &["RC.SEND", "nobody", "x"]).unwrap()),
        (0, 0)
    );

    let reply = redis
        .cmd(&mut c, &["RC.KICK", "ann", "REASON", "account closed"])
        .unwrap();
    assert_eq!(counts(&reply), (3, 2));
    for node in ["n1", "n2"] {
        let last = inbox(&mut c, "ann", node).pop().unwrap();
        assert_eq!(last.names(), ["kind", "user", "conn", "reason"]);
        assert_eq!(last.get("kind"), "kick");
        assert_eq!(last.get("conn"), "");
        assert_eq!(last.get("reason"), "account closed");
    }
    redis.cmd(&mut c, &["RC.KICK", "ann"]).unwrap();
    assert_eq!(
        inbox(&mut c, "ann", "n1").pop().unwrap().get("reason"),
        "kicked"
    );
}

#[test]
fn a_blocked_inbox_reader_wakes_up_on_publish() {
    let redis = Redis::start(&[]);
    let mut c = redis.conn();
    lease(&redis, &mut c, &["lobby"], &["n1"]);
    join(&redis, &mut c, "lobby", "n1", "c1", "ann");
    let key = roomcast_tests::roomcast::inbox_key("n1");
    let mut reader = redis.conn();
    let waiting = std::thread::spawn(move || {
        let reply: redis::Value = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(100)
            .arg("BLOCK")
            .arg(10_000)
            .arg("STREAMS")
            .arg(&key)
            .arg("$")
            .query(&mut reader)
            .unwrap();
        reply
    });
    std::thread::sleep(Duration::from_millis(300));
    redis.cmd(&mut c, &["RC.PUBLISH", "lobby", "wake"]).unwrap();
    let started = std::time::Instant::now();
    let reply = waiting.join().unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_ne!(
        reply,
        redis::Value::Nil,
        "the blocked XREAD must return the entry"
    );
    assert!(format!("{reply:?}").contains("wake"));
}

#[test]
fn inboxes_stay_bounded() {
    let redis = Redis::start(&["inbox-maxlen", "50"]);
    let mut c = redis.conn();
    lease(&redis, &mut c, &["lobby"], &["n1"]);
    join(&redis, &mut c, "lobby", "n1", "c1", "ann");
    let mut pipe = redis::pipe();
    for i in 0..2000 {
        pipe.cmd("RC.PUBLISH").arg("lobby").arg(i);
    }
    let _: Vec<redis::Value> = pipe.query(&mut c).unwrap();
    let len: i64 = redis::cmd("XLEN")
        .arg(roomcast_tests::roomcast::inbox_key("n1"))
        .query(&mut c)
        .unwrap();
    // Approximate trimming removes whole stream nodes (100 entries by default).
    assert!((50..=150).contains(&len), "inbox length {len}");
    let last = inbox(&mut c, "lobby", "n1").pop().unwrap();
    assert_eq!(last.get("data"), "1999", "the newest entries are kept");
}

#[test]
fn a_standalone_server_gives_each_node_one_inbox_for_all_partitions() {
    let redis = Redis::start(&[]);
    let mut c = redis.conn();
    let info = rc_info(&redis.cmd(&mut c, &["RC.INFO"]).unwrap());
    let inboxes = info.get("inbox").expect("RC.INFO names the inbox layout");
    assert_eq!(roomcast_tests::reply::text(inboxes), "shared");
    // Two rooms in different partitions route into the same stream.
    let layout = roomcast_tests::roomcast::layout(16);
    let other = (0..100)
        .map(|i| format!("room{i}"))
        .find(|r| layout.partition_of(r.as_bytes()) != layout.partition_of(b"lobby"))
        .unwrap();
    lease(&redis, &mut c, &["lobby", &other], &["n1"]);
    join(&redis, &mut c, "lobby", "n1", "c1", "ann");
    join(&redis, &mut c, &other, "n1", "c2", "bob");
    redis.cmd(&mut c, &["RC.PUBLISH", "lobby", "a"]).unwrap();
    redis.cmd(&mut c, &["RC.PUBLISH", &other, "b"]).unwrap();
    let all = inbox(&mut c, "", "n1");
    let data: Vec<String> = all
        .iter()
        .filter(|e| e.get("kind") == "msg")
        .map(|e| e.get("data"))
        .collect();
    assert_eq!(data, ["a", "b"]);
}
