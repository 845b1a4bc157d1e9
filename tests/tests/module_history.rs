//! Room history: offsets, retention, `RC.HISTORY` paging, gapless `RC.JOIN … SINCE`,
//! and new epochs when history is lost.

use redis::Value;
use roomcast_tests::reply::{array, error_text, int, strings, text};
use roomcast_tests::Redis;

fn publish(redis: &Redis, c: &mut redis::Connection, room: &str, data: &str) -> String {
    let reply = redis.cmd(c, &["RC.PUBLISH", room, data]).unwrap();
    text(&array(&reply)[2])
}

/// `(epoch, seq)` of an offset.
fn split(offset: &str) -> (String, u64) {
    let (epoch, seq) = offset.split_once(':').expect("epoch:seq");
    (epoch.to_string(), seq.parse().expect("seq"))
}

/// `[offset, from, data]` entries as (offset, data) pairs.
fn entries(v: &Value) -> Vec<(String, String)> {
    array(v)
        .iter()
        .map(|e| {
            let parts = array(e);
            (text(&parts[0]), text(&parts[2]))
        })
        .collect()
}

#[test]
fn offsets_count_messages_per_room_and_history_pages() {
    let redis = Redis::start(&["history-len", "1000"]);
    let mut c = redis.conn();
    let offsets: Vec<String> = (1..=5)
        .map(|i| publish(&redis, &mut c, "lobby", &i.to_string()))
        .collect();
    let (epoch, first) = split(&offsets[0]);
    assert_eq!(first, 1);
    for (i, o) in offsets.iter().enumerate() {
        assert_eq!(split(o), (epoch.clone(), i as u64 + 1));
    }
    // Another room has its own sequence.
    assert_eq!(split(&publish(&redis, &mut c, "other", "x")).1, 1);
    // Messages from a sender keep it.
    let reply = redis
        .cmd(&mut c, &["RC.PUBLISH", "lobby", "6", "FROM", "ann"])
        .unwrap();
    assert_eq!(split(&text(&array(&reply)[2])).1, 6);

    // Newest COUNT without SINCE.
    let h = redis
        .cmd(&mut c, &["RC.HISTORY", "lobby", "COUNT", "2"])
        .unwrap();
    let h = array(&h);
    assert_eq!(text(&h[0]), format!("{epoch}:6"));
    assert_eq!(int(&h[1]), 1);
    assert_eq!(
        entries(&h[2]),
        [
            (format!("{epoch}:5"), "5".into()),
            (format!("{epoch}:6"), "6".into())
        ]
    );
    assert_eq!(text(&array(&array(&h[2])[1])[1]), "ann");

    // Paging forward with SINCE.
    let since = format!("{epoch}:2");
    let h = redis
        .cmd(
            &mut c,
            &["RC.HISTORY", "lobby", "SINCE", &since, "COUNT", "3"],
        )
        .unwrap();
    let h = array(&h);
    assert_eq!(int(&h[1]), 1);
    let got: Vec<String> = entries(&h[2]).into_iter().map(|(_, d)| d).collect();
    assert_eq!(got, ["3", "4", "5"]);
    // Another epoch is not a continuation: the oldest retained come back, recovered = 0.
    let h = redis
        .cmd(
            &mut c,
            &["RC.HISTORY", "lobby", "SINCE", "zzz:1", "COUNT", "2"],
        )
        .unwrap();
    let h = array(&h);
    assert_eq!(int(&h[1]), 0);
    assert_eq!(entries(&h[2]).len(), 2);
    // Errors.
    for bad in [
        &["RC.HISTORY", "lobby", "SINCE", "nope"][..],
        &["RC.HISTORY", "lobby", "COUNT", "0"],
    ] {
        assert!(error_text(&redis.cmd(&mut c, bad).unwrap_err()).starts_with("ERR"));
    }
    // An empty room has no position.
    let h = redis.cmd(&mut c, &["RC.HISTORY", "empty"]).unwrap();
    assert_eq!(array(&h)[0], Value::Nil);
}

#[test]
fn history_off_means_nil_offsets() {
    let redis = Redis::start(&[]);
    let mut c = redis.conn();
    let reply = redis.cmd(&mut c, &["RC.PUBLISH", "lobby", "x"]).unwrap();
    assert_eq!(array(&reply)[2], Value::Nil);
    redis
        .cmd(&mut c, &["RC.NODE.LEASE", "lobby", "n1", "60000"])
        .unwrap();
    let reply = redis
        .cmd(
            &mut c,
            &["RC.JOIN", "lobby", "n1", "c1", "ann", "SINCE", "abc:1"],
        )
        .unwrap();
    let reply = array(&reply);
    assert_eq!(
        (int(&reply[0]), int(&reply[1])),
        (1, 0),
        "nothing to recover from"
    );
    // Turned on at run time, history starts with the next message.
    redis
        .cmd(&mut c, &["CONFIG", "SET", "roomcast.history-len", "10"])
        .unwrap();
    assert_eq!(split(&publish(&redis, &mut c, "lobby", "y")).1, 1);
}

#[test]
fn a_join_since_an_offset_replays_exactly_what_was_missed() {
    let redis = Redis::start(&["history-len", "1000"]);
    let mut c = redis.conn();
    redis
        .cmd(&mut c, &["RC.NODE.LEASE", "lobby", "n1", "60000"])
        .unwrap();
    let offsets: Vec<String> = (1..=10)
        .map(|i| publish(&redis, &mut c, "lobby", &i.to_string()))
        .collect();
    let reply = redis
        .cmd(
            &mut c,
            &["RC.JOIN", "lobby", "n1", "c1", "ann", "SINCE", &offsets[6]],
        )
        .unwrap();
    let reply = array(&reply);
    assert_eq!(int(&reply[0]), 1);
    assert_eq!(int(&reply[1]), 1, "recovered");
    assert_eq!(
        text(&reply[2]),
        offsets[9],
        "cut = the position at the join"
    );
    let data: Vec<String> = entries(&reply[3]).into_iter().map(|(_, d)| d).collect();
    assert_eq!(data, ["8", "9", "10"]);
    // Every message after the cut is routed live to the node.
    publish(&redis, &mut c, "lobby", "11");
    let inbox = roomcast_tests::roomcast::inbox(&mut c, "lobby", "n1");
    let last = inbox.last().unwrap();
    assert_eq!(
        (last.get("data"), last.get("offset")),
        ("11".to_string(), split_join(&offsets[0], 11))
    );

    // SINCE $ only asks for the cut; SINCE the cut recovers nothing more.
    let reply = redis
        .cmd(
            &mut c,
            &["RC.JOIN", "lobby", "n1", "c2", "bob", "SINCE", "$"],
        )
        .unwrap();
    let reply = array(&reply);
    assert_eq!(
        (int(&reply[1]), text(&reply[2])),
        (1, split_join(&offsets[0], 11))
    );
    assert!(array(&reply[3]).is_empty());
    // The plain form still answers an integer.
    assert_eq!(
        int(&redis
            .cmd(&mut c, &["RC.JOIN", "lobby", "n1", "c3", "cat"])
            .unwrap()),
        1
    );
    let err = redis
        .cmd(
            &mut c,
            &["RC.JOIN", "lobby", "n1", "c4", "dan", "SINCE", "bad"],
        )
        .unwrap_err();
    assert!(error_text(&err).contains("SINCE must be an offset"));
}

fn split_join(offset: &str, seq: u64) -> String {
    format!("{}:{seq}", split(offset).0)
}

#[test]
fn trimmed_or_lost_history_cannot_be_recovered() {
    let redis = Redis::start(&["history-len", "16"]);
    let mut c = redis.conn();
    redis
        .cmd(&mut c, &["RC.NODE.LEASE", "lobby", "n1", "60000"])
        .unwrap();
    let first = publish(&redis, &mut c, "lobby", "0");
    for i in 1..400 {
        publish(&redis, &mut c, "lobby", &i.to_string());
    }
    // Trimmed (approximately to 16): message 2 is long gone.
    let reply = redis
        .cmd(
            &mut c,
            &["RC.JOIN", "lobby", "n1", "c1", "ann", "SINCE", &first],
        )
        .unwrap();
    let reply = array(&reply);
    assert_eq!(int(&reply[1]), 0);
    assert!(array(&reply[3]).is_empty());

    // FLUSHALL loses the history: the next message starts a new epoch, and offsets of
    // the old epoch are never taken for the new one.
    let old = publish(&redis, &mut c, "lobby", "last");
    redis.cmd(&mut c, &["FLUSHALL"]).unwrap();
    let new = publish(&redis, &mut c, "lobby", "new");
    assert_ne!(split(&new).0, split(&old).0);
    assert_eq!(split(&new).1, 1);
    redis
        .cmd(&mut c, &["RC.NODE.LEASE", "lobby", "n1", "60000"])
        .unwrap();
    let reply = redis
        .cmd(
            &mut c,
            &["RC.JOIN", "lobby", "n1", "c2", "bob", "SINCE", &old],
        )
        .unwrap();
    assert_eq!(int(&array(&reply)[1]), 0);
}

#[test]
fn history_expires_after_its_ttl_and_starts_a_new_epoch() {
    let redis = Redis::start(&["history-len", "100", "history-ttl-ms", "300"]);
    let mut c = redis.conn();
    let old = publish(&redis, &mut c, "lobby", "a");
    let pttl: i64 = redis::cmd("PTTL")
        .arg(roomcast_tests::roomcast::keys_of("lobby").room_hist("lobby"))
        .query(&mut c)
        .unwrap();
    assert!(pttl > 0 && pttl <= 300, "{pttl}");
    std::thread::sleep(std::time::Duration::from_millis(450));
    let new = publish(&redis, &mut c, "lobby", "b");
    assert_ne!(split(&new).0, split(&old).0);
    let h = redis.cmd(&mut c, &["RC.HISTORY", "lobby"]).unwrap();
    assert_eq!(strings(&array(&array(&h)[2])[0])[2], "b");
}

/// `RC.JOIN room n1 conn user SINCE since` → (recovered, cut, replayed data).
fn join_since(
    redis: &Redis,
    c: &mut redis::Connection,
    conn: &str,
    since: &str,
) -> (i64, String, Vec<String>) {
    let reply = redis
        .cmd(c, &["RC.JOIN", "lobby", "n1", conn, conn, "SINCE", since])
        .unwrap();
    let reply = array(&reply);
    let data = entries(&reply[3]).into_iter().map(|(_, d)| d).collect();
    (int(&reply[1]), text(&reply[2]), data)
}

/// A promoted replica may lack the last messages the old primary acknowledged, so it
/// must not hand their seqs to new messages: its first message starts a new epoch. What
/// it does hold of the old epoch is still recoverable up to its position.
#[test]
fn a_promoted_replica_starts_a_new_epoch_and_never_reuses_seqs() {
    let primary = Redis::start(&["history-len", "100"]);
    let replica = Redis::replica_of(&primary, &["history-len", "100"]);
    let (mut p, mut r) = (primary.conn(), replica.conn());
    let old: Vec<String> = (1..=3)
        .map(|i| publish(&primary, &mut p, "lobby", &i.to_string()))
        .collect();
    roomcast_tests::roomcast::wait_replicas(&mut p, 1);
    // The replica is cut off and promoted; the old primary still acknowledges message 4.
    replica.cmd(&mut r, &["REPLICAOF", "NO", "ONE"]).unwrap();
    let lost = publish(&primary, &mut p, "lobby", "4");
    assert_eq!(split(&lost), (split(&old[0]).0, 4));

    replica
        .cmd(&mut r, &["RC.NODE.LEASE", "lobby", "n1", "60000"])
        .unwrap();
    // Behind the new primary's position: recovered from what it holds.
    assert_eq!(
        join_since(&replica, &mut r, "c1", &old[1]),
        (1, old[2].clone(), vec!["3".to_string()])
    );
    // A client that saw the lost message cannot resume from it.
    assert_eq!(join_since(&replica, &mut r, "c2", &lost).0, 0);

    // The first message on the new primary starts a new epoch; the count goes on in it.
    let first = publish(&replica, &mut r, "lobby", "new 1");
    assert_ne!(split(&first).0, split(&old[0]).0, "a new epoch");
    assert_eq!(split(&first).1, 1);
    let second = publish(&replica, &mut r, "lobby", "new 2");
    assert_eq!(split(&second), (split(&first).0, 2));
    // Offsets of the old epoch are never taken for the new one.
    for since in [&old[2], &lost] {
        assert_eq!(join_since(&replica, &mut r, "c3", since).0, 0, "{since}");
    }
    assert!(
        replica.log().contains("became a primary: new era"),
        "{}",
        replica.log()
    );
}

/// A restart (here from an AOF written with `appendfsync always`) starts a new era too:
/// the retained messages stay recoverable, and the next message starts a new epoch, since
/// with `everysec` the last acknowledged second could be missing.
#[test]
fn a_restarted_primary_keeps_history_readable_and_starts_a_new_epoch() {
    let mut redis = Redis::start_with(
        &["history-len", "100"],
        &["--appendonly", "yes", "--appendfsync", "always"],
    );
    let mut c = redis.conn();
    let old: Vec<String> = (1..=2)
        .map(|i| publish(&redis, &mut c, "lobby", &i.to_string()))
        .collect();
    // Without a restart the count goes on in the same epoch.
    redis.cmd(&mut c, &["DEBUG", "RELOAD"]).unwrap();
    let third = publish(&redis, &mut c, "lobby", "3");
    assert_eq!(split(&third), (split(&old[0]).0, 3));
    drop(c);
    redis.restart_with(&[]);
    let mut c = redis.conn();
    redis
        .cmd(&mut c, &["RC.NODE.LEASE", "lobby", "n1", "60000"])
        .unwrap();
    assert_eq!(
        join_since(&redis, &mut c, "c1", &old[0]),
        (1, third.clone(), vec!["2".to_string(), "3".to_string()])
    );
    let next = publish(&redis, &mut c, "lobby", "4");
    assert_ne!(split(&next).0, split(&old[0]).0);
    assert_eq!(split(&next).1, 1);
}
