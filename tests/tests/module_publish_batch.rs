//! `RC.PUBLISHM`: many publishes in one command. Each message is checked, limited,
//! recorded and routed as `RC.PUBLISH` would, and gets its own reply or error; every node
//! reached gets one inbox entry (and one push) per batch: the plain `msg` entry when it
//! gets one message, a `batch` entry packing its messages in order when it gets several.

use std::time::Duration;

use redis::Value;
use roomcast_common::batch;
use roomcast_common::entry::{self, Kind};
use roomcast_common::push;
use roomcast_tests::reply::{array, expect_error, int, text};
use roomcast_tests::roomcast::{inbox_key, live_channel, stream, InboxEntry};
use roomcast_tests::Redis;

/// `(room, from, skip, data)` of each message an inbox entry delivers.
fn delivered(e: &InboxEntry) -> Vec<(String, String, String, String)> {
    let one = |m: &entry::Entry<'_>| {
        (
            m.room.to_string(),
            m.from.to_string(),
            m.skip.to_string(),
            String::from_utf8_lossy(m.data).into_owned(),
        )
    };
    match e.get("kind").as_str() {
        "batch" => batch::entries(&e.bytes("data")).map(|m| one(&m)).collect(),
        "msg" => {
            let data = e.bytes("data");
            let m = entry::Entry {
                kind: Some(Kind::Message),
                room: &e.get("room"),
                from: &e.get("from"),
                skip: &e.get("skip"),
                data: &data,
                ..Default::default()
            };
            vec![one(&m)]
        }
        _ => Vec::new(),
    }
}

fn entries_after(c: &mut redis::Connection, node: &str, skip: usize) -> Vec<InboxEntry> {
    stream(c, &inbox_key(node)).into_iter().skip(skip).collect()
}

fn setup(redis: &Redis, c: &mut redis::Connection) {
    for step in [
        &["RC.NODE.LEASE", "n1", "60000"][..],
        &["RC.NODE.LEASE", "n2", "60000"],
        &["RC.JOIN", "lobby", "n1", "c1", "ann"],
        &["RC.JOIN", "lobby", "n2", "c2", "bob"],
        &["RC.JOIN", "game", "n1", "c3", "cat"],
    ] {
        redis.cmd(c, step).unwrap();
    }
}

#[test]
fn each_message_gets_its_reply_and_each_node_one_entry_in_order() {
    let redis = Redis::start(&[]);
    let mut c = redis.conn();
    setup(&redis, &mut c);
    let before = |c: &mut redis::Connection, node: &str| stream(c, &inbox_key(node)).len();
    let (n1, n2) = (before(&mut c, "n1"), before(&mut c, "n2"));

    let reply = redis
        .cmd(
            &mut c,
            &[
                "RC.PUBLISHM",
                "lobby",
                "3",
                "lobby",
                "m1",
                "ann",
                "c1",
                "game",
                "m2",
                "",
                "",
                "lobby",
                "m3",
                "",
                "",
            ],
        )
        .unwrap();
    let replies = array(&reply);
    let counts = |v: &Value| {
        let r = array(v);
        (int(&r[0]), int(&r[1]), r[2].clone())
    };
    // m1 skips ann's own connection: only bob on n2. m2: cat on n1. m3: both.
    assert_eq!(counts(&replies[0]), (1, 1, Value::Nil));
    assert_eq!(counts(&replies[1]), (1, 1, Value::Nil));
    assert_eq!(counts(&replies[2]), (2, 2, Value::Nil));

    let n1_new = entries_after(&mut c, "n1", n1);
    let n2_new = entries_after(&mut c, "n2", n2);
    assert_eq!((n1_new.len(), n2_new.len()), (1, 1), "one entry per node");
    let msg = |room: &str, from: &str, skip: &str, data: &str| {
        (room.into(), from.into(), skip.into(), data.into())
    };
    assert_eq!(
        delivered(&n1_new[0]),
        [msg("game", "", "", "m2"), msg("lobby", "", "", "m3")]
    );
    assert_eq!(
        delivered(&n2_new[0]),
        [msg("lobby", "ann", "c1", "m1"), msg("lobby", "", "", "m3")]
    );
    assert_eq!(n1_new[0].get("kind"), "batch");

    // A node that gets one message of the batch gets the plain entry.
    redis
        .cmd(
            &mut c,
            &[
                "RC.PUBLISHM",
                "game",
                "2",
                "game",
                "m4",
                "",
                "",
                "lobby",
                "m5",
                "bob",
                "c2",
            ],
        )
        .unwrap();
    let n2_last = entries_after(&mut c, "n2", n2 + 1);
    assert_eq!(
        n2_last.len(),
        0,
        "m5 skips bob's connection, the only one on n2"
    );
    let n1_last = entries_after(&mut c, "n1", n1 + 1);
    assert_eq!(n1_last.len(), 1);
    assert_eq!(n1_last[0].get("kind"), "batch");

    let one = redis
        .cmd(&mut c, &["RC.PUBLISHM", "x", "1", "lobby", "m6", "", ""])
        .unwrap();
    assert_eq!(counts(&array(&one)[0]), (2, 2, Value::Nil));
    let last = entries_after(&mut c, "n2", n2 + 1);
    assert_eq!(last.len(), 1);
    assert_eq!(last[0].get("kind"), "msg");
    assert_eq!(delivered(&last[0]), [msg("lobby", "", "", "m6")]);

    // Counted like RC.PUBLISH: 6 messages published, 8 message × node routes.
    let info: Value = redis::cmd("RC.INFO").query(&mut c).unwrap();
    let field = |name: &str| {
        let items = array(&info);
        let i = items
            .iter()
            .position(|v| matches!(v, Value::SimpleString(s) if s == name))
            .unwrap();
        int(&items[i + 1])
    };
    assert_eq!(field("published"), 6);
}

#[test]
fn one_push_per_node_per_batch_carries_the_stream_entry() {
    let redis = Redis::start(&[]);
    let mut c = redis.conn();
    setup(&redis, &mut c);
    let mut sub_conn = redis.conn();
    let mut sub = sub_conn.as_pubsub();
    sub.subscribe(live_channel("n2")).unwrap();
    sub.set_read_timeout(Some(Duration::from_secs(5))).unwrap();

    let mut argv = vec!["RC.PUBLISHM".to_string(), "lobby".into(), "20".into()];
    for i in 0..20 {
        argv.extend([
            "lobby".into(),
            format!("{{\"i\":{i}}}"),
            String::new(),
            String::new(),
        ]);
    }
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    redis.cmd(&mut c, &argv).unwrap();

    let msg = sub.get_message().expect("a push");
    let payload = msg.get_payload_bytes().to_vec();
    let pushed = push::decode(&payload).expect("a well-formed push");
    let fields: Vec<&[u8]> = pushed.fields().collect();
    let e = entry::decode(fields.iter().copied());
    assert_eq!(e.kind, Some(Kind::Batch));
    let data: Vec<String> = batch::entries(e.data)
        .map(|m| String::from_utf8_lossy(m.data).into_owned())
        .collect();
    let want: Vec<String> = (0..20).map(|i| format!("{{\"i\":{i}}}")).collect();
    assert_eq!(data, want, "all 20, in order, in one push");
    let stored = stream(&mut c, &inbox_key("n2"));
    let last = stored.last().unwrap();
    assert_eq!(
        last.id,
        pushed.id.to_string(),
        "the push is the stream's last entry"
    );
    sub.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    assert!(sub.get_message().is_err(), "one push for the whole batch");
}

#[test]
fn refusals_are_per_message_and_a_bad_shape_refuses_the_command() {
    let redis = Redis::start(&[
        "publish-rate",
        "1",
        "publish-burst",
        "0",
        "max-payload-bytes",
        "8",
        "history-len",
        "10",
    ]);
    let mut c = redis.conn();
    setup(&redis, &mut c);
    // Read raw: a client library may turn an error inside an array into an error of the
    // whole reply.
    let reply = raw(
        &mut c,
        &[
            "RC.PUBLISHM",
            "lobby",
            "5",
            "lobby",
            "a",
            "dan",
            "",
            "lobby",
            "b",
            "dan",
            "",
            "lobby",
            "far too large",
            "",
            "",
            "",
            "x",
            "",
            "",
            "lobby",
            "c",
            "",
            "bad conn!",
        ],
    );
    let replies = array(&reply);
    assert_eq!(replies.len(), 5, "{reply:?}");
    let error = |v: &Value| match v {
        Value::ServerError(e) => format!("{} {}", e.code(), e.details().unwrap_or("")),
        other => panic!("expected an error, got {other:?}"),
    };
    // dan's first message passes, his second is over the rate (exact, in order).
    assert!(
        text(&array(&replies[0])[2]).ends_with(":1"),
        "{:?}",
        replies[0]
    );
    assert!(
        error(&replies[1]).starts_with("LIMITED"),
        "{:?}",
        replies[1]
    );
    assert!(
        error(&replies[2]).starts_with("TOOLARGE"),
        "{:?}",
        replies[2]
    );
    assert!(
        error(&replies[3]).contains("invalid room name"),
        "{:?}",
        replies[3]
    );
    assert!(
        error(&replies[4]).contains("invalid connection id"),
        "{:?}",
        replies[4]
    );

    // Only the accepted message is in the room's history.
    let history = redis.cmd(&mut c, &["RC.HISTORY", "lobby"]).unwrap();
    assert_eq!(array(&array(&history)[2]).len(), 1);

    for (bad, needle) in [
        (
            &["RC.PUBLISHM", "lobby", "2", "lobby", "a", "", ""][..],
            "count is 2",
        ),
        (
            &["RC.PUBLISHM", "lobby", "0", "lobby", "a", "", ""],
            "count must be between",
        ),
        (
            &["RC.PUBLISHM", "lobby", "x", "lobby", "a", "", ""],
            "count must be an integer",
        ),
        (
            &["RC.PUBLISHM", "", "1", "lobby", "a", "", ""],
            "invalid partition",
        ),
        (
            &["RC.PUBLISHM", "lobby", "1", "lobby"],
            "wrong number of arguments",
        ),
    ] {
        expect_error(redis.cmd(&mut c, bad), bad, needle);
    }
}

/// A command's reply as the server sent it, errors inside arrays kept as values.
fn raw(c: &mut redis::Connection, args: &[&str]) -> Value {
    use redis::ConnectionLike;
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    c.req_command(&cmd).expect("a reply")
}

#[test]
fn history_offsets_follow_the_batch_order() {
    let redis = Redis::start(&["history-len", "100"]);
    let mut c = redis.conn();
    setup(&redis, &mut c);
    redis
        .cmd(&mut c, &["RC.PUBLISH", "lobby", "first"])
        .unwrap();
    let reply = redis
        .cmd(
            &mut c,
            &[
                "RC.PUBLISHM",
                "lobby",
                "3",
                "lobby",
                "a",
                "",
                "",
                "game",
                "b",
                "",
                "",
                "lobby",
                "c",
                "",
                "",
            ],
        )
        .unwrap();
    let offsets: Vec<String> = array(&reply).iter().map(|r| text(&array(r)[2])).collect();
    let seq = |o: &str| o.split(':').nth(1).unwrap().parse::<u64>().unwrap();
    assert_eq!(seq(&offsets[0]), 2, "after lobby's first message");
    assert_eq!(seq(&offsets[1]), 1, "game's first");
    assert_eq!(seq(&offsets[2]), 3);
    let history = redis.cmd(&mut c, &["RC.HISTORY", "lobby"]).unwrap();
    let data: Vec<String> = array(&array(&history)[2])
        .iter()
        .map(|m| text(&array(m)[2]))
        .collect();
    assert_eq!(data, ["first", "a", "c"]);
}
