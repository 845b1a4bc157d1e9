//! Gapless recovery across reconnects: clients that drop and rejoin with their last
//! offset, hundreds of times, across two edges, while messages keep flowing, see every
//! message exactly once and in order; when Redis loses the history, every resuming
//! client is told `recovered: false`.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use roomcast_tests::edge::{join_since, request, Edge};
use roomcast_tests::offsets::parts;
use roomcast_tests::ws::WsClient;
use roomcast_tests::Redis;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(5);

/// One message as a client saw it.
#[derive(Debug)]
struct Got {
    /// Offset epoch.
    epoch: String,
    /// Offset sequence number.
    seq: u64,
    /// The publisher's counter in the payload.
    n: u64,
    /// How it arrived: `replay<round>` or `live<round>` (read through `Debug` in
    /// failure messages only).
    #[allow(dead_code)]
    via: String,
}

/// What one client saw, in arrival order.
type Seen = Vec<Got>;

/// `(epoch, seq)` of a frame's offset.
fn offset_parts(offset: &Value) -> (String, u64) {
    parts(offset.as_str().expect("offset string")).expect("epoch:seq")
}

/// Joins `room` (with `since` when given); returns the replayed messages and the ack.
fn join(client: &mut WsClient, room: &str, since: Option<&str>, id: u64) -> (Vec<Value>, Value) {
    join_since(client, room, since, id).unwrap_or_else(|e| panic!("join failed: {e}"))
}

#[test]
fn rejoining_with_the_last_offset_hundreds_of_times_loses_and_repeats_nothing() {
    let redis = Redis::start(&["history-len", "100000"]);
    let edges = [
        Edge::start(&redis, "ra", &["--conn-rate", "0"]),
        Edge::start(&redis, "rb", &["--conn-rate", "0"]),
    ];
    let addrs: Vec<_> = edges.iter().map(|e| e.addr).collect();

    // A backend keeps publishing numbered messages, about 4,000 per second.
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let stop = stop.clone();
        let mut conn = redis.conn();
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let mut pipe = redis::pipe();
                for _ in 0..8 {
                    pipe.cmd("RC.PUBLISH")
                        .arg("live")
                        .arg(format!(r#"{{"n":{n}}}"#))
                        .ignore();
                    n += 1;
                }
                pipe.query::<()>(&mut conn).expect("publish");
                std::thread::sleep(Duration::from_millis(2));
            }
            n
        })
    };

    // Four clients, each dropping its socket and rejoining 60 times, alternating edges.
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let addrs = addrs.clone();
            std::thread::spawn(move || -> (Seen, usize) {
                let mut seen: Seen = Vec::new();
                let mut last: Option<String> = None;
                let mut rejoins = 0;
                for round in 0..60u64 {
                    let addr = addrs[((c + round) % 2) as usize];
                    let path = format!("/ws?user=c{c}");
                    let mut ws = roomcast_tests::ws::connect(addr, &path, &[])
                        .expect("connect")
                        .unwrap_open();
                    let (replay, ack) = join(&mut ws, "live", last.as_deref(), round);
                    if last.is_some() {
                        assert_eq!(ack["recovered"], true, "client {c} round {round}: {ack}");
                        rejoins += 1;
                    }
                    let record =
                        |m: &Value, via: String, seen: &mut Seen, last: &mut Option<String>| {
                            let (epoch, seq) = offset_parts(&m["offset"]);
                            let n = m["data"]["n"].as_u64().expect("n");
                            seen.push(Got { epoch, seq, n, via });
                            *last = m["offset"].as_str().map(str::to_string);
                        };
                    for m in &replay {
                        record(m, format!("replay{round}"), &mut seen, &mut last);
                    }
                    if last.is_none() && ack["offset"].is_string() {
                        // Nothing seen yet: resume from the position at the first join.
                        last = ack["offset"].as_str().map(str::to_string);
                    }
                    // Read live for a few milliseconds, then drop the socket mid-stream.
                    let until = Instant::now() + Duration::from_millis(5 + (round * 7 + c) % 30);
                    while Instant::now() < until {
                        match ws.recv_json(Duration::from_millis(5)) {
                            Ok(m) if m["op"] == "message" => {
                                record(&m, format!("live{round}"), &mut seen, &mut last)
                            }
                            Ok(_) => {}
                            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                            Err(e) => panic!("client {c}: {e}"),
                        }
                    }
                    drop(ws);
                }
                (seen, rejoins)
            })
        })
        .collect();

    let mut total_rejoins = 0;
    let results: Vec<(Seen, usize)> = clients
        .into_iter()
        .map(|h| h.join().expect("client"))
        .collect();
    stop.store(true, Ordering::Relaxed);
    let published = publisher.join().expect("publisher");
    for (c, (seen, rejoins)) in results.iter().enumerate() {
        total_rejoins += rejoins;
        assert!(
            seen.len() > 100,
            "client {c} saw only {} messages",
            seen.len()
        );
        let mut unique = HashSet::new();
        for (i, pair) in seen.windows(2).enumerate() {
            let (a, b) = (&pair[0], &pair[1]);
            let context = &seen[i.saturating_sub(5)..(i + 6).min(seen.len())];
            assert_eq!(
                a.epoch, b.epoch,
                "client {c}: one epoch expected: {context:?}"
            );
            assert_eq!(b.seq, a.seq + 1, "client {c}: gap or repeat: {context:?}");
            assert_eq!(
                b.n,
                a.n + 1,
                "client {c}: gap or repeat in the payloads: {context:?}"
            );
        }
        for got in seen {
            assert!(
                unique.insert(got.seq),
                "client {c}: duplicate seq {}",
                got.seq
            );
        }
    }
    assert!(total_rejoins >= 200, "{total_rejoins} rejoins");
    assert!(published > 1000, "{published} published");
}

/// Connects as `user` once the edge's own Redis connection is back: until then a
/// connection is closed 1011 "unavailable: retry later", and a client retries.
fn connect_when_back(edge: &Edge, user: &str) -> WsClient {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut ws = edge
            .try_connect(&format!("/ws?user={user}"), &[])
            .unwrap_open();
        match ws.recv_json(T) {
            Ok(welcome) if welcome["op"] == "welcome" => return ws,
            Ok(other) => panic!("{user}: expected a welcome, got {other}"),
            Err(e) => {
                assert!(Instant::now() < deadline, "{user}: never welcomed: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

#[test]
fn clients_resuming_after_redis_lost_its_data_are_told_to_resync() {
    let mut redis = Redis::start(&["history-len", "1000"]);
    let edge = Edge::start(&redis, "wipe", &[]);
    let mut offsets = Vec::new();
    for user in ["ann", "bob", "cat"] {
        let (mut ws, _) = edge.connect(user);
        request(&mut ws, json!({"op":"join","room":"lobby"}), 1);
        let ack = request(
            &mut ws,
            json!({"op":"publish","room":"lobby","data":user}),
            2,
        );
        offsets.push((user, ack["offset"].as_str().expect("offset").to_string()));
    }
    redis.restart_with(&[]);
    // The edge re-registers itself; messages after the wipe start a new epoch.
    let deadline = Instant::now() + Duration::from_secs(10);
    let new_offset = loop {
        let reply: redis::RedisResult<Vec<redis::Value>> = redis::cmd("RC.PUBLISH")
            .arg("lobby")
            .arg("1")
            .query(&mut redis.conn());
        if let Ok(reply) = reply {
            break roomcast_tests::reply::text(&reply[2]);
        }
        assert!(Instant::now() < deadline, "Redis never came back");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        new_offset.ends_with(":1"),
        "a new epoch starts at 1: {new_offset}"
    );
    for (user, offset) in offsets {
        let mut ws = connect_when_back(&edge, user);
        let (replay, ack) = join(&mut ws, "lobby", Some(&offset), 9);
        assert_eq!(ack["recovered"], false, "{user}: {ack}");
        assert!(replay.is_empty(), "{user}: no replay across epochs");
        let (old_epoch, _) = offset_parts(&json!(offset));
        let (new_epoch, _) = offset_parts(&ack["offset"]);
        assert_ne!(old_epoch, new_epoch);
    }
}
