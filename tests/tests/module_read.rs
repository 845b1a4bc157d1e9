//! `RC.READ`: the blocking read over a node's inboxes in several partitions, on a real
//! redis-server and on a real 3-master Redis Cluster.
//!
//! Its reply is compared with `XREAD`'s / `XRANGE`'s for the same streams, byte for byte
//! where it matters (the null array `*-1`), so an `XREAD` parser reads it unchanged.
//! Every wait is bounded; everything runs on loopback.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use redis::{Connection, RedisResult, Value};
use roomcast_common::codes::Code;
use roomcast_common::keys::PartitionKeys;
use roomcast_common::partition::Partitioner;
use roomcast_tests::cluster::{master_of, Cluster};
use roomcast_tests::reply::{array, error_text, expect_error, int, text};
use roomcast_tests::roomcast::{inbox_key, layout, stream, InboxEntry};
use roomcast_tests::{run, Redis};

/// Runs a command that must succeed.
fn ok(conn: &mut Connection, args: &[&str]) -> Value {
    run(conn, args).unwrap_or_else(|e| panic!("{args:?}: {}", error_text(&e)))
}

/// Runs a command that must fail with an error containing `needle`; returns the error.
fn expect_err(conn: &mut Connection, args: &[&str], needle: &str) -> String {
    expect_error(run(conn, args), args, needle)
}

/// RESP encoding of one command.
fn resp(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Sends `commands` over a fresh raw connection and returns the first `want.len()`
/// bytes of the replies (fewer if the server stops answering within `timeout`), so
/// replies can be checked byte for byte (`*-1` versus `$-1`).
fn raw_replies(port: u16, commands: &[&[&str]], want: &[u8], timeout: Duration) -> Vec<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(timeout)).expect("read timeout");
    for c in commands {
        s.write_all(&resp(c)).expect("write");
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got.len() < want.len() {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    got
}

/// Reads from `s` until it has been idle for `idle` (or 5 s passed).
fn read_until_idle(s: &mut TcpStream, idle: Duration) -> Vec<u8> {
    s.set_read_timeout(Some(idle)).expect("read timeout");
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    got
}

/// The raw bytes of one command's reply on a fresh connection speaking RESP2, or RESP3
/// after `HELLO 3` (whose own reply is dropped).
fn raw_reply(port: u16, resp3: bool, args: &[&str]) -> Vec<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let idle = Duration::from_millis(200);
    if resp3 {
        s.write_all(&resp(&["HELLO", "3"])).expect("write");
        let hello = read_until_idle(&mut s, idle);
        assert!(hello.starts_with(b"%"), "HELLO 3: {hello:?}");
    }
    s.write_all(&resp(args)).expect("write");
    read_until_idle(&mut s, idle)
}

/// `RC.READ`'s reply as `(key, entries)` pairs, each entry parsed like `XRANGE`'s.
fn streams_of(reply: &Value) -> Vec<(String, Vec<InboxEntry>)> {
    array(reply)
        .iter()
        .map(|item| {
            let pair = array(item);
            assert_eq!(pair.len(), 2, "[key, entries]: {item:?}");
            let entries = array(&pair[1])
                .iter()
                .map(|entry| {
                    let parts = array(entry);
                    let fields = array(&parts[1])
                        .chunks(2)
                        .map(|kv| {
                            let value = match &kv[1] {
                                Value::BulkString(b) => b.clone(),
                                other => text(other).into_bytes(),
                            };
                            (text(&kv[0]), value)
                        })
                        .collect();
                    InboxEntry {
                        id: text(&parts[0]),
                        fields,
                    }
                })
                .collect();
            (text(&pair[0]), entries)
        })
        .collect()
}

/// A standalone server with node `n1` leased and `ann` (conn `c1` on `n1`) in `lobby`.
fn standalone_with_member() -> (Redis, Connection) {
    let redis = Redis::start(&[]);
    let mut c = redis.conn();
    for name in ["lobby", "ann", "quiet"] {
        ok(&mut c, &["RC.NODE.LEASE", name, "n1", "60000"]);
    }
    ok(&mut c, &["RC.CONNECT", "ann", "n1", "c1"]);
    assert_eq!(
        int(&ok(&mut c, &["RC.JOIN", "lobby", "n1", "c1", "ann"])),
        1
    );
    (redis, c)
}

#[test]
fn bad_arguments_get_useful_errors() {
    let (redis, mut c) = standalone_with_member();
    let cases: &[(&[&str], &str)] = &[
        (
            &["RC.READ", "lobby", "n1", "STREAMS", "lobby"],
            "wrong number of arguments",
        ),
        (
            &["RC.READ", "lobby", "n:1", "STREAMS", "lobby", "0"],
            "ERR invalid node id: contains a character that is not allowed",
        ),
        (
            &["RC.READ", "", "n1", "STREAMS", "lobby", "0"],
            "ERR invalid partition: is empty",
        ),
        (
            &["RC.READ", "lobby", "n1", "COUNT", "5", "BLOCK", "0"],
            "ERR STREAMS is missing",
        ),
        (
            &[
                "RC.READ", "lobby", "n1", "LIMIT", "5", "STREAMS", "lobby", "0",
            ],
            "ERR unknown option 'LIMIT' (expected COUNT, BLOCK or STREAMS)",
        ),
        (
            &[
                "RC.READ", "lobby", "n1", "COUNT", "0", "STREAMS", "lobby", "0",
            ],
            "ERR COUNT must be between 1 and 10000",
        ),
        (
            &[
                "RC.READ", "lobby", "n1", "COUNT", "1", "COUNT", "1", "STREAMS", "lobby", "0",
            ],
            "ERR option COUNT given twice",
        ),
        (
            &[
                "RC.READ", "lobby", "n1", "BLOCK", "soon", "STREAMS", "lobby", "0",
            ],
            "ERR BLOCK must be an integer",
        ),
        (
            &["RC.READ", "lobby", "n1", "STREAMS", "lobby", "ann", "0"],
            "ERR STREAMS needs one id per partition: got 3 arguments",
        ),
        (
            &["RC.READ", "lobby", "n1", "STREAMS", "{nope}", "0"],
            "ERR invalid partition '{nope}' in STREAMS",
        ),
        (
            &["RC.READ", "lobby", "n1", "STREAMS", "lobby", "$"],
            "ERR invalid stream id '$' for partition",
        ),
        (
            &["RC.READ", "lobby", "n1", "STREAMS", "lobby", "+"],
            "ERR invalid stream id '+'",
        ),
        (
            &["RC.READ", "lobby", "n1", "STREAMS", "lobby", "12-ab"],
            "expected <ms>-<seq> or <ms>",
        ),
        (
            &[
                "RC.READ", "lobby", "n1", "STREAMS", "lobby", "lobby", "0", "0",
            ],
            "is named twice in STREAMS",
        ),
    ];
    for (args, needle) in cases {
        let text = expect_err(&mut c, args, needle);
        println!("{} → {text}", args.join(" "));
    }

    // The same partition by name and by tag is a duplicate too.
    let p = layout(16);
    let lobby_tag = format!("{{{}}}", p.tag(p.partition_of(b"lobby")));
    expect_err(
        &mut c,
        &[
            "RC.READ", "lobby", "n1", "STREAMS", "lobby", &lobby_tag, "0", "0",
        ],
        "named twice",
    );
    // Standalone: every partition of a node shares one inbox, so two partitions name the
    // same stream.
    let shared = expect_err(
        &mut c,
        &[
            "RC.READ", "lobby", "n1", "STREAMS", "lobby", "quiet", "0", "0",
        ],
        "share the inbox",
    );
    println!("two partitions on a standalone server → {shared}");
    // An inbox key holding something else.
    ok(&mut c, &["SET", &inbox_key("n9"), "oops"]);
    expect_err(
        &mut c,
        &["RC.READ", "lobby", "n9", "STREAMS", "lobby", "0"],
        "WRONGTYPE inbox key",
    );
    // More partitions than the dataset has.
    let small = Redis::start(&["partitions", "2"]);
    let mut s = small.conn();
    let two = layout(2);
    let (a, b) = (format!("{{{}}}", two.tag(0)), format!("{{{}}}", two.tag(1)));
    expect_err(
        &mut s,
        &[
            "RC.READ", &a, "n1", "STREAMS", &a, &b, "lobby", "0", "0", "0",
        ],
        "ERR STREAMS names 3 partitions, but there are only 2",
    );
    assert_eq!(text(&ok(&mut c, &["PING"])), "PONG");
    drop(redis);
}

#[test]
fn a_read_returns_routed_entries_in_xread_shape() {
    let (redis, mut c) = standalone_with_member();
    for i in 0..5 {
        let data = format!("{{\"n\":{i}}}");
        ok(&mut c, &["RC.PUBLISH", "lobby", &data, "FROM", "bob"]);
    }
    let key = inbox_key("n1");

    // Everything: the join event and five messages, exactly what XREAD returns.
    let all = ok(&mut c, &["RC.READ", "lobby", "n1", "STREAMS", "lobby", "0"]);
    let xread = ok(&mut c, &["XREAD", "COUNT", "256", "STREAMS", &key, "0"]);
    assert_eq!(all, xread, "RC.READ and XREAD differ");
    let streams = streams_of(&all);
    assert_eq!(streams.len(), 1);
    let (read_key, entries) = &streams[0];
    assert_eq!(read_key, &key);
    let kinds: Vec<String> = entries.iter().map(|e| e.get("kind")).collect();
    assert_eq!(kinds, ["join", "msg", "msg", "msg", "msg", "msg"]);
    assert_eq!(entries[1].get("data"), "{\"n\":0}");
    assert_eq!(entries[1].get("from"), "bob");
    assert_eq!(entries.to_vec(), stream(&mut c, &key));
    println!(
        "RC.READ lobby n1 STREAMS lobby 0 → {} entries of {key}, equal to XREAD's reply",
        entries.len()
    );

    // COUNT caps the entries; the id is exclusive; the tag and the user name are the
    // same partition argument; `ms` alone means `ms-0`.
    let two = ok(
        &mut c,
        &[
            "RC.READ", "ann", "n1", "COUNT", "2", "STREAMS", "lobby", "0",
        ],
    );
    assert_eq!(
        two,
        ok(&mut c, &["XREAD", "COUNT", "2", "STREAMS", &key, "0"])
    );
    let second = entries[1].id.clone();
    let after = ok(
        &mut c,
        &[
            "RC.READ", "lobby", "n1", "COUNT", "3", "STREAMS", "ann", &second,
        ],
    );
    let after = streams_of(&after);
    let ids: Vec<&str> = after[0].1.iter().map(|e| e.id.as_str()).collect();
    let want: Vec<&str> = entries[2..5].iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, want, "entries strictly after {second}");
    let ms = entries[0].id.split('-').next().unwrap().to_string();
    let from_ms = ok(&mut c, &["RC.READ", "lobby", "n1", "STREAMS", "lobby", &ms]);
    assert_eq!(
        from_ms,
        ok(&mut c, &["XREAD", "COUNT", "256", "STREAMS", &key, &ms])
    );

    // Byte for byte XREAD's reply, in RESP2 (pairs) and RESP3 (a map).
    for resp3 in [false, true] {
        let ours = raw_reply(
            redis.port,
            resp3,
            &[
                "RC.READ", "lobby", "n1", "COUNT", "4", "STREAMS", "lobby", "0",
            ],
        );
        let theirs = raw_reply(
            redis.port,
            resp3,
            &["XREAD", "COUNT", "4", "STREAMS", &key, "0"],
        );
        assert!(!ours.is_empty());
        assert_eq!(
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(&theirs),
            "RESP{}",
            if resp3 { 3 } else { 2 }
        );
        let last = &entries[5].id;
        let none = raw_reply(
            redis.port,
            resp3,
            &["RC.READ", "lobby", "n1", "STREAMS", "lobby", last],
        );
        let xread_none = raw_reply(redis.port, resp3, &["XREAD", "STREAMS", &key, last]);
        assert_eq!(none, xread_none);
        assert_eq!(
            none,
            if resp3 {
                &b"_\r\n"[..]
            } else {
                &b"*-1\r\n"[..]
            }
        );
    }
    println!("RC.READ's reply is byte for byte XREAD's in RESP2 and RESP3 (entries and null)");

    // Nothing after the last id: a null array, as XREAD answers.
    let last = entries[5].id.clone();
    let none = ok(
        &mut c,
        &["RC.READ", "lobby", "n1", "STREAMS", "lobby", &last],
    );
    assert_eq!(none, Value::Nil);
    let raw = raw_replies(
        redis.port,
        &[&["RC.READ", "lobby", "n1", "STREAMS", "lobby", &last]],
        b"*-1\r\n",
        Duration::from_secs(5),
    );
    assert_eq!(raw, b"*-1\r\n", "{}", String::from_utf8_lossy(&raw));
    // A node with no inbox at all.
    let raw = raw_replies(
        redis.port,
        &[&["RC.READ", "lobby", "nobody", "STREAMS", "lobby", "0"]],
        b"*-1\r\n",
        Duration::from_secs(5),
    );
    assert_eq!(raw, b"*-1\r\n");
}

#[test]
fn block_with_nothing_times_out_with_a_null_array() {
    let (redis, _c) = standalone_with_member();
    let started = Instant::now();
    let raw = raw_replies(
        redis.port,
        &[&[
            "RC.READ",
            "lobby",
            "quiet-node",
            "BLOCK",
            "200",
            "STREAMS",
            "lobby",
            "0",
        ]],
        b"*-1\r\n",
        Duration::from_secs(5),
    );
    let waited = started.elapsed();
    assert_eq!(raw, b"*-1\r\n", "{}", String::from_utf8_lossy(&raw));
    println!("RC.READ … BLOCK 200 with nothing → *-1 after {waited:?}");
    assert!(
        waited >= Duration::from_millis(190) && waited < Duration::from_secs(3),
        "waited {waited:?}"
    );
}

#[test]
fn a_blocked_read_wakes_on_a_publish_from_another_connection() {
    let (redis, mut c) = standalone_with_member();
    let key = inbox_key("n1");
    let last = stream(&mut c, &key)
        .last()
        .expect("the join event")
        .id
        .clone();

    let mut reader = redis.conn();
    let from = last.clone();
    let started = Instant::now();
    let blocked = thread::spawn(move || {
        let reply = run(
            &mut reader,
            &[
                "RC.READ", "lobby", "n1", "BLOCK", "0", "STREAMS", "lobby", &from,
            ],
        );
        (reply, Instant::now())
    });
    thread::sleep(Duration::from_millis(300));
    assert!(!blocked.is_finished(), "RC.READ BLOCK 0 returned at once");
    // A publish to a room without members on n1 writes nothing to n1's inbox.
    ok(&mut c, &["RC.NODE.LEASE", "elsewhere", "n2", "60000"]);
    ok(&mut c, &["RC.JOIN", "elsewhere", "n2", "c9", "zed"]);
    ok(&mut c, &["RC.PUBLISH", "elsewhere", "not-for-n1"]);
    thread::sleep(Duration::from_millis(200));
    assert!(!blocked.is_finished(), "woken by a write to another inbox");

    let published = Instant::now();
    ok(
        &mut c,
        &["RC.PUBLISH", "lobby", "\"wake up\"", "FROM", "bob"],
    );
    let (reply, returned) = blocked.join().expect("reader thread");
    let reply = reply.unwrap_or_else(|e| panic!("blocked RC.READ: {}", error_text(&e)));
    let streams = streams_of(&reply);
    assert_eq!(streams.len(), 1);
    assert_eq!(streams[0].0, key);
    let entries = &streams[0].1;
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0].get("kind"), "msg");
    assert_eq!(entries[0].get("data"), "\"wake up\"");
    assert!(entries[0].id > last);
    let latency = returned.duration_since(published);
    println!(
        "blocked RC.READ woken by RC.PUBLISH after {:?} blocked, {latency:?} after the publish",
        published.duration_since(started)
    );
    assert!(latency < Duration::from_secs(2), "{latency:?}");

    // Woken by a write that leaves nothing after its id (a reader whose id is ahead of
    // the stream): it stays blocked until its timeout, then a null array.
    let far = "99999999999999-0";
    let mut ahead = redis.conn();
    let started = Instant::now();
    let blocked = thread::spawn(move || {
        run(
            &mut ahead,
            &[
                "RC.READ", "lobby", "n1", "BLOCK", "600", "STREAMS", "lobby", far,
            ],
        )
    });
    thread::sleep(Duration::from_millis(150));
    ok(&mut c, &["RC.PUBLISH", "lobby", "again"]);
    let reply = blocked.join().expect("reader thread").expect("RC.READ");
    assert_eq!(reply, Value::Nil);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(590),
        "returned after {waited:?}"
    );
}

#[test]
fn inside_multi_or_a_script_it_never_blocks() {
    let (redis, _c) = standalone_with_member();
    let started = Instant::now();
    let want = b"+OK\r\n+QUEUED\r\n*1\r\n*-1\r\n";
    let raw = raw_replies(
        redis.port,
        &[
            &["MULTI"],
            &[
                "RC.READ",
                "lobby",
                "n1",
                "BLOCK",
                "0",
                "STREAMS",
                "lobby",
                "99999999999999",
            ],
            &["EXEC"],
        ],
        want,
        Duration::from_secs(5),
    );
    assert_eq!(raw, want, "{}", String::from_utf8_lossy(&raw));
    // Lua turns the null array into false, which RESP2 sends as a null bulk string.
    let want = b"$-1\r\n";
    let script = "return redis.call('RC.READ', 'lobby', 'n1', 'BLOCK', '0', 'STREAMS', \
                  'lobby', '99999999999999')";
    let raw = raw_replies(
        redis.port,
        &[&["EVAL", script, "0"]],
        want,
        Duration::from_secs(5),
    );
    assert_eq!(raw, want, "{}", String::from_utf8_lossy(&raw));
    assert!(started.elapsed() < Duration::from_secs(3));
    // With entries, MULTI gets them like any read.
    let mut c = redis.conn();
    let (reply,): (Value,) = redis::pipe()
        .atomic()
        .cmd("RC.READ")
        .arg(&["lobby", "n1", "BLOCK", "0", "STREAMS", "lobby", "0"])
        .query(&mut c)
        .expect("MULTI/EXEC");
    assert_eq!(streams_of(&reply)[0].1[0].get("kind"), "join");
}

#[test]
fn random_arguments_never_crash_or_hang_redis() {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    let (redis, mut c) = standalone_with_member();
    ok(&mut c, &["RC.PUBLISH", "lobby", "x"]);
    let run_id = redis.run_id();
    let p = layout(16);
    let tags: Vec<String> = (0..16).map(|part| bare(&p, part)).collect();
    let pool: Vec<Vec<u8>> = [
        "STREAMS",
        "streams",
        "COUNT",
        "BLOCK",
        "0",
        "1",
        "5",
        "10000",
        "10001",
        "-1",
        "$",
        "+",
        "-",
        ">",
        "0-0",
        "1-1",
        "18446744073709551615-18446744073709551615",
        "18446744073709551616",
        "lobby",
        "ann",
        "quiet",
        "{nope}",
        "{",
        "",
        "n1",
        "n:1",
        "nobody",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .chain(tags.iter().map(|t| t.as_bytes().to_vec()))
    .chain([
        vec![0xff, 0xfe],
        vec![0],
        b"a\r\nb".to_vec(),
        vec![b'x'; 300],
    ])
    .collect();
    let mut rng = StdRng::seed_from_u64(0x5eed_2ead);
    let total = 20_000;
    let (mut replies, mut errors) = (0usize, 0usize);
    let started = Instant::now();
    for _ in 0..total / 500 {
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for _ in 0..500 {
            let cmd = pipe.cmd("RC.READ");
            if rng.random_bool(0.5) {
                // Mostly well formed: partition node [options] STREAMS names ids, with
                // one argument now and then drawn from the whole pool.
                let any = |rng: &mut StdRng, good: &[&str]| -> Vec<u8> {
                    if rng.random_bool(0.85) {
                        good[rng.random_range(0..good.len())].as_bytes().to_vec()
                    } else {
                        pool[rng.random_range(0..pool.len())].clone()
                    }
                };
                let names = ["lobby", "ann", tags[0].as_str(), tags[6].as_str()];
                let ids = ["0", "0-0", "1-1", "99999999999999", "1", "5-0"];
                cmd.arg(any(&mut rng, &names));
                cmd.arg(any(&mut rng, &["n1", "n1", "nobody"]));
                if rng.random_bool(0.5) {
                    cmd.arg("COUNT").arg(any(&mut rng, &["1", "2", "10000"]));
                }
                if rng.random_bool(0.003) {
                    // Short and rare blocks only: the pipeline waits behind a blocked read
                    // (timeouts are checked about every 100 ms).
                    cmd.arg("BLOCK").arg("1");
                }
                cmd.arg("STREAMS");
                let k = if rng.random_bool(0.7) {
                    1
                } else {
                    rng.random_range(0..4)
                };
                for _ in 0..k {
                    cmd.arg(any(&mut rng, &names));
                }
                for _ in 0..k + usize::from(rng.random_bool(0.1)) {
                    cmd.arg(any(&mut rng, &ids));
                }
            } else {
                for _ in 0..rng.random_range(0..12) {
                    cmd.arg(&pool[rng.random_range(0..pool.len())]);
                }
            }
        }
        let results: Vec<RedisResult<Value>> = pipe
            .query(&mut c)
            .unwrap_or_else(|e| panic!("pipeline failed ({e}):\n{}", redis.log()));
        for r in results {
            match r {
                Ok(_) => replies += 1,
                Err(e) => {
                    errors += 1;
                    let text = error_text(&e);
                    assert!(
                        text.starts_with("ERR ") || text.starts_with("WRONGTYPE "),
                        "unexpected error {text:?}"
                    );
                }
            }
        }
    }
    assert_eq!(redis.run_id(), run_id, "Redis restarted:\n{}", redis.log());
    println!(
        "{total} random RC.READ argv in {:?}: {replies} replies, {errors} errors, run_id unchanged",
        started.elapsed()
    );
    assert!(replies > 0 && errors > 0);
}

// ------------------------------------------------------------------------------------
// Redis Cluster.

/// `{tag}` of partition `part`.
fn bare(p: &Partitioner, part: u32) -> String {
    format!("{{{}}}", p.tag(part))
}

/// A room name in partition `part`, partition-tagged.
fn room_in(p: &Partitioner, part: u32) -> String {
    let plain = (0..100_000)
        .map(|i| format!("room{i}"))
        .find(|name| p.partition_of(name.as_bytes()) == part)
        .expect("a room name in every partition");
    p.tagged(&plain)
}

#[test]
fn under_cluster_one_read_covers_the_partitions_of_a_shard() {
    let cluster = Cluster::start(3, 1, &[]);
    let map = cluster.slots();
    let masters = cluster.masters();
    let p = layout(16);
    let home = masters[0];
    let slot_of = |part: u32| roomcast_common::crc16::key_slot(p.tag(part).as_bytes());
    let mine: Vec<u32> = (0..p.count())
        .filter(|part| master_of(&map, slot_of(*part)) == home)
        .collect();
    let theirs: Vec<u32> = (0..p.count())
        .filter(|part| master_of(&map, slot_of(*part)) != home)
        .collect();
    assert!(mine.len() >= 3, "master {home} holds partitions {mine:?}");
    println!("master {home} serves partitions {mine:?}");

    // n1 has a member in one room of every partition of the shard, and gets a message
    // in each (plus the join event).
    let mut c = cluster.conn(home);
    for (i, part) in mine.iter().enumerate() {
        let room = room_in(&p, *part);
        let conn_id = format!("c{i}");
        ok(&mut c, &["RC.NODE.LEASE", &bare(&p, *part), "n1", "60000"]);
        ok(&mut c, &["RC.CONNECT", &room, "n1", &conn_id]);
        ok(&mut c, &["RC.JOIN", &room, "n1", &conn_id, &room]);
        let data = format!("to partition {part}");
        ok(&mut c, &["RC.PUBLISH", &room, &data, "FROM", "bob"]);
    }

    // One read over every partition of the shard, routed by the first one's tag.
    let first = bare(&p, mine[0]);
    let mut args: Vec<String> = ["RC.READ", &first, "n1", "COUNT", "100", "STREAMS"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(mine.iter().map(|part| bare(&p, *part)));
    args.extend(mine.iter().map(|_| "0".to_string()));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let reply = ok(&mut c, &argv);
    let streams = streams_of(&reply);
    assert_eq!(
        streams.len(),
        mine.len(),
        "one element per partition with entries"
    );
    for ((key, entries), part) in streams.iter().zip(&mine) {
        let want_key = PartitionKeys::new(p.tag(*part)).inbox("n1");
        assert_eq!(key, &want_key, "in the order given");
        assert_eq!(
            entries,
            &stream(&mut c, &want_key),
            "{key} as XRANGE reads it"
        );
        let kinds: Vec<String> = entries.iter().map(|e| e.get("kind")).collect();
        assert_eq!(kinds, ["join", "msg"], "{key}");
        assert_eq!(entries[1].get("data"), format!("to partition {part}"));
    }
    println!(
        "RC.READ {first} n1 STREAMS <{} partitions of master {home}> → {} streams in one \
         reply: {:?}",
        mine.len(),
        streams.len(),
        streams
            .iter()
            .map(|(k, e)| (k.as_str(), e.len()))
            .collect::<Vec<_>>()
    );
    // Each element equals XREAD over that one key (XREAD itself refuses several slots).
    for (key, _) in &streams {
        let single = ok(&mut c, &["XREAD", "COUNT", "100", "STREAMS", key, "0"]);
        let ours: Vec<&Value> = array(&reply)
            .iter()
            .filter(|item| text(&array(item)[0]) == *key)
            .collect();
        assert_eq!(array(&single)[0], *ours[0]);
    }
    let crossslot = run(
        &mut c,
        &[
            "XREAD",
            "STREAMS",
            &PartitionKeys::new(p.tag(mine[0])).inbox("n1"),
            &PartitionKeys::new(p.tag(mine[1])).inbox("n1"),
            "0",
            "0",
        ],
    );
    println!(
        "XREAD over two partitions of the same shard → {:?}",
        crossslot.as_ref().map_err(error_text)
    );
    assert!(error_text(&crossslot.expect_err("XREAD across slots")).starts_with("CROSSSLOT"));

    // A partition served by another shard: the inner XRANGE is refused by RM_Call.
    let other = theirs[0];
    let other_tag = bare(&p, other);
    let refused = expect_err(
        &mut c,
        &[
            "RC.READ", &first, "n1", "STREAMS", &first, &other_tag, "0", "0",
        ],
        &format!(
            "{} partition {other_tag} is not served by this shard; refresh the cluster topology",
            Code::NotServed
        ),
    );
    assert!(refused.starts_with("NOTSERVED "), "{refused}");
    println!(
        "RC.READ naming partition {other_tag} (master {}) on {home} → {refused}",
        master_of(&map, slot_of(other))
    );
    // The routing argument elsewhere: Redis redirects.
    let moved = run(
        &mut c,
        &["RC.READ", &other_tag, "n1", "STREAMS", &first, "0"],
    );
    let moved = error_text(&moved.expect_err("MOVED"));
    assert_eq!(
        moved,
        format!(
            "MOVED {} 127.0.0.1:{}",
            slot_of(other),
            master_of(&map, slot_of(other))
        )
    );

    // A blocked read over the shard's partitions wakes on a publish into any of them,
    // not only the routing argument's slot.
    let last = mine.len() - 1;
    let target = room_in(&p, mine[last]);
    let mut block_args = args.clone();
    block_args.splice(3..5, ["BLOCK".to_string(), "5000".to_string()]);
    let n = mine.len();
    for (i, (_, entries)) in streams.iter().enumerate() {
        block_args[6 + n + i] = entries.last().expect("entries").id.clone();
    }
    let mut reader = cluster.conn(home);
    let started = Instant::now();
    let blocked = thread::spawn(move || {
        let argv: Vec<&str> = block_args.iter().map(String::as_str).collect();
        (run(&mut reader, &argv), Instant::now())
    });
    thread::sleep(Duration::from_millis(300));
    assert!(!blocked.is_finished(), "the blocked read returned at once");
    let published = Instant::now();
    ok(&mut c, &["RC.PUBLISH", &target, "late", "FROM", "bob"]);
    let (reply, returned) = blocked.join().expect("reader thread");
    let reply = reply.unwrap_or_else(|e| panic!("blocked RC.READ: {}", error_text(&e)));
    let woke = streams_of(&reply);
    assert_eq!(woke.len(), 1, "{woke:?}");
    assert_eq!(woke[0].0, PartitionKeys::new(p.tag(mine[last])).inbox("n1"));
    assert_eq!(woke[0].1[0].get("data"), "late");
    println!(
        "blocked RC.READ on {home} (routed by {first}) woken by RC.PUBLISH into partition \
         {} after {:?}, {:?} after the publish",
        mine[last],
        published.duration_since(started),
        returned.duration_since(published)
    );
    assert!(returned.duration_since(published) < Duration::from_secs(2));

    // On the shard's replica (READONLY): the same read, and a blocked read woken by the
    // replicated entries.
    let replica = cluster.replicas_of(home)[0];
    let mut r = cluster.conn(replica);
    let moved = run(&mut r, &argv);
    assert!(
        error_text(&moved.expect_err("MOVED without READONLY")).starts_with("MOVED"),
        "a replica redirects unless READONLY"
    );
    ok(&mut r, &["READONLY"]);
    let _: i64 = redis::cmd("WAIT")
        .arg(1)
        .arg(5000)
        .query(&mut c)
        .expect("WAIT");
    let on_replica = streams_of(&ok(&mut r, &argv));
    assert_eq!(on_replica.len(), mine.len());
    assert_eq!(
        on_replica[last].1.len(),
        3,
        "join, msg and the late message"
    );
    let from = on_replica[last].1[2].id.clone();
    let replica_args: Vec<String> = vec![
        "RC.READ".into(),
        first.clone(),
        "n1".into(),
        "BLOCK".into(),
        "5000".into(),
        "STREAMS".into(),
        bare(&p, mine[last]),
        from,
    ];
    let blocked = thread::spawn(move || {
        let argv: Vec<&str> = replica_args.iter().map(String::as_str).collect();
        run(&mut r, &argv)
    });
    thread::sleep(Duration::from_millis(300));
    ok(
        &mut c,
        &["RC.PUBLISH", &target, "to the replica", "FROM", "bob"],
    );
    let reply = blocked
        .join()
        .expect("replica reader")
        .unwrap_or_else(|e| panic!("blocked RC.READ on the replica: {}", error_text(&e)));
    assert_eq!(streams_of(&reply)[0].1[0].get("data"), "to the replica");
    println!("replica {replica} (READONLY): RC.READ reads the shard, a blocked read wakes on replicated entries");
}
