//! Checking that every receiver got every message exactly once and in order, under
//! faults: what the push-delivery tests (standalone and Redis Cluster) share.
//!
//! Messages carry `{"seq": n, …}` in their data, counted per room from 0 ([`publish_paced`]
//! makes them); a receiver records, per room, the `seq` of every message in arrival
//! order.

use std::collections::BTreeMap;
use std::thread::{self, sleep, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::edge::Edge;
use crate::ws::WsClient;

/// What a receiver got: per room, the `seq` of every message in arrival order.
pub type Received = BTreeMap<String, Vec<u64>>;

/// Reads `message` frames until `expected` arrived or `within` passed; hands the
/// connection back still open (so no leave follows the last message at once).
pub fn receive(
    mut client: WsClient,
    expected: usize,
    within: Duration,
) -> JoinHandle<(Received, WsClient)> {
    thread::spawn(move || {
        let deadline = Instant::now() + within;
        let mut got = Received::new();
        let mut count = 0;
        while count < expected && Instant::now() < deadline {
            let Ok(msg) = client.recv_json(Duration::from_millis(200)) else {
                continue;
            };
            if msg["op"] != "message" {
                continue;
            }
            let room = msg["room"].as_str().unwrap_or_default().to_string();
            let seq = msg["data"]["seq"].as_u64().expect("seq in data");
            got.entry(room).or_default().push(seq);
            count += 1;
        }
        (got, client)
    })
}

/// Asserts that every receiver got the messages `0..per_room` of every room of `rooms`
/// exactly once, in order.
pub fn assert_exactly_once_in_order(received: &[Received], rooms: &[&str], per_room: u64) {
    for (i, got) in received.iter().enumerate() {
        for room in rooms {
            let seqs = got.get(*room).map_or(&[][..], Vec::as_slice);
            let want: Vec<u64> = (0..per_room).collect();
            if seqs != want.as_slice() {
                let lost = want.iter().filter(|s| !seqs.contains(s)).count();
                let extra = seqs.len() as i64 - (per_room as i64 - lost as i64);
                panic!(
                    "receiver {i} room {room}: {} messages, {lost} lost, {extra} duplicated \
                     or out of order; first differences: {:?}",
                    seqs.len(),
                    seqs.iter()
                        .zip(&want)
                        .enumerate()
                        .filter(|(_, (a, b))| a != b)
                        .take(5)
                        .collect::<Vec<_>>()
                );
            }
        }
    }
}

/// The sum of an unlabelled metric over the edges.
pub fn metric_sum(edges: &[Edge], name: &str) -> f64 {
    edges.iter().map(|e| e.metric(name)).sum()
}

/// Makes `count` messages round-robin over `rooms` rooms at `per_second` and hands each
/// to `publish(room index, message index, data)`: message `i` goes to room `i % rooms`
/// with data `{"seq": n, "pad": …}`, `n` counted per room, every `big.0`-th padded to
/// `big.1` bytes (0: none) and the others to 100.
pub fn publish_paced(
    rooms: usize,
    count: usize,
    per_second: u64,
    big: (usize, usize),
    mut publish: impl FnMut(usize, usize, String),
) {
    let start = Instant::now();
    let mut seqs = vec![0u64; rooms];
    for i in 0..count {
        let r = i % rooms;
        let pad = if big.0 > 0 && i % big.0 == big.0 - 1 {
            "x".repeat(big.1)
        } else {
            "x".repeat(100)
        };
        publish(r, i, json!({"seq": seqs[r], "pad": pad}).to_string());
        seqs[r] += 1;
        let due = start + Duration::from_micros(1_000_000 * (i as u64 + 1) / per_second);
        sleep(due.saturating_duration_since(Instant::now()));
    }
}
