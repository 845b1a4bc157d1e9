//! The live push on a standalone server: every inbox append is published, in the same
//! command, to the node's live channel with the entry's id, the inbox's previous id and
//! the entry's fields exactly as in the stream; `RC.PROBE` travels the same path; the
//! publish is not replicated.

use std::time::Duration;

use redis::Value;
use roomcast_common::push;
use roomcast_common::stream_id::StreamId;
use roomcast_tests::reply::int;
use roomcast_tests::roomcast::{digest, inbox_key, live_channel, wait_replicas};
use roomcast_tests::Redis;

/// Every entry of stream `key`: id and flat fields.
fn entries(c: &mut redis::Connection, key: &str) -> Vec<(StreamId, Vec<Vec<u8>>)> {
    let reply: Vec<(String, Vec<Vec<u8>>)> = redis::cmd("XRANGE")
        .arg(key)
        .arg("-")
        .arg("+")
        .query(c)
        .unwrap();
    reply
        .into_iter()
        .map(|(id, fields)| (StreamId::parse(id.as_bytes()).unwrap(), fields))
        .collect()
}

#[test]
fn every_inbox_append_is_pushed_with_its_id_previous_id_and_fields() {
    let redis = Redis::start(&[]);
    let mut c = redis.conn();
    let mut sub_conn = redis.conn();
    let mut sub = sub_conn.as_pubsub();
    sub.subscribe(live_channel("n1")).unwrap();
    sub.subscribe(live_channel("n2")).unwrap();
    sub.set_read_timeout(Some(Duration::from_secs(5))).unwrap();

    for node in ["n1", "n2"] {
        redis
            .cmd(&mut c, &["RC.NODE.LEASE", node, "60000"])
            .unwrap();
    }
    let cmds: [&[&str]; 6] = [
        &["RC.JOIN", "lobby", "n1", "c1", "ann"],
        &["RC.JOIN", "lobby", "n2", "c2", "bob"],
        &["RC.PUBLISH", "lobby", r#"{"x":1}"#],
        &[
            "RC.PUBLISH",
            "lobby",
            "not json \u{1}",
            "FROM",
            "ann",
            "CONN",
            "c1",
        ],
        &["RC.PROBE", "lobby", "n1", "7"],
        &["RC.LEAVE", "lobby", "n2", "c2"],
    ];
    for cmd in cmds {
        redis.cmd(&mut c, cmd).unwrap();
    }

    let mut pushes: Vec<(String, Vec<u8>)> = Vec::new();
    for node in ["n1", "n2"] {
        let want = entries(&mut c, &inbox_key(node)).len();
        let mut got = pushes
            .iter()
            .filter(|(ch, _)| *ch == live_channel(node))
            .count();
        while got < want {
            let msg = sub.get_message().expect("a push for every entry");
            if msg.get_channel_name() == live_channel(node) {
                got += 1;
            }
            pushes.push((
                msg.get_channel_name().to_string(),
                msg.get_payload_bytes().to_vec(),
            ));
        }
    }
    for node in ["n1", "n2"] {
        let stream = entries(&mut c, &inbox_key(node));
        let mine: Vec<_> = pushes
            .iter()
            .filter(|(ch, _)| *ch == live_channel(node))
            .map(|(_, p)| p)
            .collect();
        assert_eq!(mine.len(), stream.len(), "{node}: one push per entry");
        let mut prev = StreamId::default();
        for ((id, fields), payload) in stream.iter().zip(mine) {
            let p = push::decode(payload).expect("a well-formed push");
            assert_eq!(
                (p.id, p.prev),
                (*id, prev),
                "{node}: ids chain like the stream"
            );
            let pushed: Vec<&[u8]> = p.fields().collect();
            let stored: Vec<&[u8]> = fields.iter().map(Vec::as_slice).collect();
            assert_eq!(pushed, stored, "{node}: fields exactly as in the stream");
            prev = *id;
        }
    }
    // n1 got the join of bob, two messages, the probe; n2 got the ones it was in for.
    let n1 = entries(&mut c, &inbox_key("n1"));
    assert!(n1
        .iter()
        .any(|(_, f)| f.get(1).map(Vec::as_slice) == Some(&b"probe"[..])));
    // RC.PROBE is not routed traffic.
    let info: Vec<Value> = redis::cmd("RC.INFO").query(&mut c).unwrap();
    let routed = info
        .iter()
        .position(|v| matches!(v, Value::SimpleString(s) if s == "routed"))
        .and_then(|i| info.get(i + 1))
        .map(int);
    let total: usize = ["n1", "n2"]
        .iter()
        .map(|n| entries(&mut c, &inbox_key(n)).len())
        .sum();
    assert_eq!(
        routed,
        Some(total as i64 - 1),
        "the probe is not counted as routed"
    );
}

#[test]
fn rc_probe_checks_its_arguments() {
    let redis = Redis::start(&[]);
    let mut c = redis.conn();
    for bad in [
        &["RC.PROBE", "lobby", "n1"][..],
        &["RC.PROBE", "lobby", "bad node", "1"],
        &["RC.PROBE", "lobby", "n1", "-1"],
        &["RC.PROBE", "lobby", "n1", "x"],
    ] {
        assert!(redis.cmd(&mut c, bad).is_err(), "{bad:?} accepted");
    }
    assert_eq!(
        redis
            .cmd(&mut c, &["RC.PROBE", "lobby", "n1", "1"])
            .unwrap(),
        Value::Okay
    );
}

#[test]
fn pushes_are_not_replicated_and_the_replica_holds_the_same_inboxes() {
    let primary = Redis::start(&[]);
    let replica = Redis::replica_of(&primary, &[]);
    let mut c = primary.conn();
    wait_replicas(&mut c, 1);
    let mut r = replica.conn();
    let mut sub = r.as_pubsub();
    sub.subscribe(live_channel("n1")).unwrap();
    sub.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();

    primary
        .cmd(&mut c, &["RC.NODE.LEASE", "n1", "60000"])
        .unwrap();
    primary
        .cmd(&mut c, &["RC.JOIN", "lobby", "n1", "c1", "ann"])
        .unwrap();
    for i in 0..20 {
        primary
            .cmd(&mut c, &["RC.PUBLISH", "lobby", &format!("{{\"i\":{i}}}")])
            .unwrap();
    }
    primary
        .cmd(&mut c, &["RC.PROBE", "lobby", "n1", "1"])
        .unwrap();
    wait_replicas(&mut c, 1);
    assert!(
        sub.get_message().is_err(),
        "a push reached a subscriber of the replica"
    );
    drop(sub);
    let mut r = replica.conn();
    assert_eq!(digest(&mut c), digest(&mut r), "primary and replica differ");
}
