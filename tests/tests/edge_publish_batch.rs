//! Batched publishes end to end: an edge worker coalesces its clients' publishes into
//! `RC.PUBLISHM`, yet every client gets its own ack or error, rate limits stay exact per
//! sender, and every member receives every message once, in each publisher's order.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};

use roomcast_tests::edge::{join, request, Edge};
use roomcast_tests::ws::{Message, WsClient};
use roomcast_tests::Redis;

/// Publishers in the room, and publishes each sends.
const PUBLISHERS: usize = 20;
const EACH: u64 = 15;

#[test]
fn concurrent_publishes_share_batches_and_each_gets_its_own_ack() {
    let redis = Redis::start(&[]);
    // A long batching delay, so the publishes of different clients surely meet in one
    // batch whatever the machine's speed.
    let args = ["--conn-rate", "0", "--publish-batch-delay-us", "20000"];
    let a = Edge::start(&redis, "batch-a", &args);
    let b = Edge::start(&redis, "batch-b", &args);

    let mut publishers: Vec<_> = (0..PUBLISHERS)
        .map(|i| {
            let edge = if i % 2 == 0 { &a } else { &b };
            let (mut client, _) = edge.connect(&format!("p{i}"));
            join(&mut client, "batched", 1);
            client
        })
        .collect();
    let (mut listener, _) = b.connect("listener");
    join(&mut listener, "batched", 1);

    // Every publisher sends its next publish before any reads its ack: the worker has
    // many publishes queued at once.
    for n in 0..EACH {
        for (i, client) in publishers.iter_mut().enumerate() {
            let id = 100 + n;
            client
                .send_json(&json!({"op":"publish","room":"batched","data":{"p":i,"n":n},"id":id}))
                .expect("send publish");
        }
        for client in publishers.iter_mut() {
            let id = 100 + n;
            let reply = client
                .recv_json_where(Duration::from_secs(10), |m| m["id"] == json!(id))
                .expect("an answer to every publish");
            assert_eq!(reply["op"], "ack", "{reply}");
        }
    }

    // The listener gets all of them once, each publisher's in its order.
    let total = PUBLISHERS as u64 * EACH;
    let mut next: BTreeMap<u64, u64> = BTreeMap::new();
    for _ in 0..total {
        let m = listener
            .recv_json_where(Duration::from_secs(10), |m| m["op"] == "message")
            .expect("every message");
        let (p, n) = (
            m["data"]["p"].as_u64().unwrap(),
            m["data"]["n"].as_u64().unwrap(),
        );
        let want = next.entry(p).or_default();
        assert_eq!(n, *want, "publisher {p}: out of order or duplicated");
        *want += 1;
    }
    assert!(next.values().all(|n| *n == EACH), "{next:?}");
    assert!(
        listener.recv_json(Duration::from_millis(300)).is_err(),
        "nothing more arrives"
    );

    // The publishes went in batches of several.
    let batches = a.metric("roomcast_edge_publish_batches_total")
        + b.metric("roomcast_edge_publish_batches_total");
    let batched = a.metric("roomcast_edge_publish_batched_total")
        + b.metric("roomcast_edge_publish_batched_total");
    assert_eq!(batched as u64, total, "every publish went in a batch");
    assert!(
        batches > 0.0 && batched / batches >= 2.0,
        "{batched} publishes in {batches} batches"
    );
}

#[test]
fn a_senders_rate_limit_is_exact_inside_one_batch() {
    let redis = Redis::start(&["publish-rate", "1", "publish-burst", "2", "ban-after", "0"]);
    let edge = Edge::start(
        &redis,
        "limit-a",
        &["--conn-rate", "0", "--publish-batch-delay-us", "20000"],
    );
    // Six connections of one user publish at once: burst 2 lets three through.
    let mut conns: Vec<_> = (0..6)
        .map(|_| {
            let (mut c, _) = edge.connect("dan");
            join(&mut c, "limited", 1);
            c
        })
        .collect();
    for c in conns.iter_mut() {
        c.send_json(&json!({"op":"publish","room":"limited","data":1,"id":7}))
            .expect("send");
    }
    let replies: Vec<Value> = conns
        .iter_mut()
        .map(|c| {
            c.recv_json_where(Duration::from_secs(10), |m| m["id"] == json!(7))
                .expect("an answer")
        })
        .collect();
    let acks = replies.iter().filter(|r| r["op"] == "ack").count();
    let limited = replies
        .iter()
        .filter(|r| r["op"] == "error" && r["code"] == "rate_limited")
        .count();
    assert_eq!((acks, limited), (3, 3), "{replies:?}");
    assert!(
        edge.metric("roomcast_edge_publish_batches_total") < 6.0,
        "the six publishes did not share a batch"
    );
    // The connections stay open and usable.
    assert_eq!(
        request(&mut conns[0], json!({"op":"ping"}), 8)["op"],
        "pong"
    );
}

/// Reads a client's frames until `want` answers (`ack` or `error`) came, answering
/// nothing else; returns them in the order they arrived.
fn answers(client: &mut WsClient, want: usize) -> Vec<Value> {
    let mut got = Vec::new();
    while got.len() < want {
        let m = client
            .recv_json_where(Duration::from_secs(10), |m| {
                m["op"] == "ack" || m["op"] == "error" || m["op"] == "pong"
            })
            .unwrap_or_else(|e| panic!("answer {} of {want}: {e}", got.len() + 1));
        got.push(m);
    }
    got
}

#[test]
fn one_connections_publishes_go_out_before_their_acks_and_are_answered_in_order() {
    let redis = Redis::start(&["history-len", "100"]);
    // A long pacing delay: a connection that waited for each ack would need a batch
    // window per publish; with publishes in flight its 40 go in a few batches.
    let args = ["--conn-rate", "0", "--publish-batch-delay-us", "20000"];
    let edge = Edge::start(&redis, "flight-a", &args);
    let other = Edge::start(&redis, "flight-b", &args);
    let (mut sender, _) = edge.connect("sam");
    join(&mut sender, "flight", 1);
    let (mut listener, _) = other.connect("lee");
    join(&mut listener, "flight", 1);

    // 40 publishes back to back; among them requests that are answered at once (a
    // publish to a room not joined, a malformed one) or that are not publishes
    // (presence, ping): every answer comes in the order of the requests.
    let mut expected = Vec::new();
    for n in 0..40u64 {
        let id = 1000 + n;
        let msg = match n {
            10 => json!({"op":"publish","room":"elsewhere","data":n,"id":id}),
            20 => json!({"op":"presence","room":"flight","id":id}),
            30 => json!({"op":"publish","room":"flight","id":id}),
            35 => json!({"op":"ping","id":id}),
            _ => json!({"op":"publish","room":"flight","data":{"n":n},"id":id}),
        };
        sender.send_json(&msg).expect("send");
        expected.push(id);
    }
    let got = answers(&mut sender, expected.len());
    let ids: Vec<u64> = got.iter().map(|m| m["id"].as_u64().unwrap_or(0)).collect();
    assert_eq!(ids, expected, "answers in request order");
    let by_id = |id: u64| &got[(id - 1000) as usize];
    assert_eq!(by_id(1010)["code"], "not_member", "{}", by_id(1010));
    assert_eq!(by_id(1020)["op"], "ack");
    assert_eq!(by_id(1030)["code"], "bad_request", "{}", by_id(1030));
    assert_eq!(by_id(1035)["op"], "pong");
    // The acks' offsets grow in publish order.
    let offsets: Vec<String> = got
        .iter()
        .filter(|m| m["op"] == "ack" && m["offset"].is_string())
        .map(|m| m["offset"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(offsets.len(), 36, "{got:?}");
    let seqs: Vec<u64> = offsets
        .iter()
        .map(|o| {
            o.rsplit(':')
                .next()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0)
        })
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{offsets:?}");

    // The listener gets the 36 published, in order, once.
    let wanted: Vec<u64> = (0..40).filter(|n| ![10, 20, 30, 35].contains(n)).collect();
    let mut heard = Vec::new();
    while heard.len() < wanted.len() {
        let m = listener
            .recv_json_where(Duration::from_secs(10), |m| m["op"] == "message")
            .expect("every message");
        heard.push(m["data"]["n"].as_u64().unwrap_or(u64::MAX));
    }
    assert_eq!(heard, wanted);
    assert!(
        listener.recv_json(Duration::from_millis(300)).is_err(),
        "nothing more arrives"
    );
    let batches = edge.metric("roomcast_edge_publish_batches_total");
    assert!(
        batches <= 8.0,
        "36 publishes of one connection took {batches} batches: not in flight together"
    );
}

/// Kicks a connection while it has publishes in flight; returns the ids acked to it
/// before its close frame, the close, and the ids that reached the room.
fn kick_with_publishes_in_flight(
    redis: &Redis,
    edge: &Edge,
    listener: &mut WsClient,
    user: &str,
) -> (Vec<u64>, (Option<u16>, String), Vec<u64>) {
    let (mut sender, _) = edge.connect(user);
    join(&mut sender, "kicks", 1);
    // Redis sleeps while the publishes arrive, and the kick comes while they are in
    // flight: when it wakes, the edge gets their replies and the kick together.
    let sleeper = {
        let mut conn = redis.conn();
        std::thread::spawn(move || {
            let _ = redis::cmd("DEBUG")
                .arg("SLEEP")
                .arg("0.3")
                .query::<redis::Value>(&mut conn);
        })
    };
    std::thread::sleep(Duration::from_millis(50));
    for n in 0..30u64 {
        let msg = json!({"op":"publish","room":"kicks","data":{"n":n},"id":n});
        sender.send_json(&msg).expect("send");
    }
    std::thread::sleep(Duration::from_millis(50));
    let mut conn = redis.conn();
    redis.cmd(&mut conn, &["RC.KICK", user]).expect("RC.KICK");
    sleeper.join().expect("sleeper");

    // The sender: its acks, then the close frame.
    let mut acked = Vec::new();
    let close = loop {
        match sender
            .recv(Duration::from_secs(10))
            .expect("a frame or the close")
        {
            Message::Text(text) => {
                let m: Value = serde_json::from_str(&text).expect("JSON");
                if m["op"] == "ack" {
                    acked.push(m["id"].as_u64().unwrap_or(u64::MAX));
                }
            }
            Message::Close(code, reason) => break (code, reason),
            _ => {}
        }
    };
    let mut heard = Vec::new();
    while let Ok(m) = listener.recv_json_where(Duration::from_millis(500), |m| m["op"] == "message")
    {
        heard.push(m["data"]["n"].as_u64().unwrap_or(u64::MAX));
    }
    (acked, close, heard)
}

/// A kick (as a ban, or a drain) that comes while a connection has publishes in flight
/// waits for their answers: every message that reached the room was acked to its
/// sender before the close frame. Three rounds: which arrives first at the edge, the
/// replies or the kick, is up to the scheduler.
#[test]
fn a_kick_answers_the_publishes_already_sent_before_closing() {
    let redis = Redis::start(&[]);
    let args = ["--conn-rate", "0"];
    let edge = Edge::start(&redis, "kick-a", &args);
    let other = Edge::start(&redis, "kick-b", &args);
    let (mut listener, _) = other.connect("lou");
    join(&mut listener, "kicks", 1);
    for round in 0..3 {
        let user = format!("kim{round}");
        let (acked, close, heard) =
            kick_with_publishes_in_flight(&redis, &edge, &mut listener, &user);
        assert_eq!(close, (Some(1008), "kicked".to_string()), "round {round}");
        assert!(!heard.is_empty(), "round {round}: nothing was routed");
        assert_eq!(
            heard, acked,
            "round {round}: delivered vs acked before the close"
        );
    }
}
