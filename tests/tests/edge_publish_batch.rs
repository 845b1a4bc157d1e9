//! Batched publishes end to end: an edge worker coalesces its clients' publishes into
//! `RC.PUBLISHM`, yet every client gets its own ack or error, rate limits stay exact per
//! sender, and every member receives every message once, in each publisher's order.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};

use roomcast_tests::edge::{join, request, Edge};
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
