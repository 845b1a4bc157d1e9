//! Steady traffic through edges, for the failover tests (Sentinel and Cluster):
//! subscribers that record the offset of every room message they receive, and a
//! publisher that publishes at a steady pace and records what was acknowledged or
//! refused. `offsets::gaps` then judges what each subscriber saw.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::offsets::parts;
use crate::ws::WsClient;

/// One room message as received or acknowledged: (epoch, seq, when).
pub type Stamp = (String, u64, Instant);

/// What one subscriber saw.
#[derive(Default, Debug)]
pub struct Seen {
    /// Per room, every message in arrival order.
    pub messages: BTreeMap<String, Vec<Stamp>>,
    /// `left` events received (none while presence stays intact).
    pub left: Vec<Value>,
}

impl Seen {
    /// The messages received in `room`, in arrival order.
    pub fn room(&self, room: &str) -> &[Stamp] {
        self.messages.get(room).map_or(&[], Vec::as_slice)
    }
}

/// A subscriber reading on its own thread until `stop`; hands its connection back still
/// open, so that subscribers ending one after the other send no `left` events to those
/// still reading.
pub fn subscribe(mut client: WsClient, stop: Arc<AtomicBool>) -> JoinHandle<(Seen, WsClient)> {
    thread::spawn(move || {
        let mut seen = Seen::default();
        while !stop.load(Ordering::Relaxed) {
            let Ok(msg) = client.recv_json(Duration::from_millis(100)) else {
                continue;
            };
            match msg["op"].as_str() {
                Some("message") => {
                    if let Some((epoch, seq)) = msg["offset"].as_str().and_then(parts) {
                        let room = msg["room"].as_str().unwrap_or_default().to_string();
                        seen.messages
                            .entry(room)
                            .or_default()
                            .push((epoch, seq, Instant::now()));
                    }
                }
                Some("left") => seen.left.push(msg),
                _ => {}
            }
        }
        (seen, client)
    })
}

/// What the publisher got back.
#[derive(Default, Debug)]
pub struct Published {
    /// Acknowledged publishes: (room, epoch, seq, when acknowledged).
    pub acked: Vec<(String, String, u64, Instant)>,
    /// Publishes answered with an error (not acknowledged), by code.
    pub refused: HashMap<String, usize>,
}

impl Published {
    /// The acknowledged publishes to `room`, in order.
    pub fn acked_in(&self, room: &str) -> Vec<Stamp> {
        self.acked
            .iter()
            .filter(|(r, ..)| r == room)
            .map(|(_, epoch, seq, at)| (epoch.clone(), *seq, *at))
            .collect()
    }
}

/// How the publisher paces itself.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// One publish every this long.
    pub every: Duration,
    /// The longest wait for an answer before the test fails.
    pub answer_within: Duration,
    /// The request id (and `data.n`) before the first publish's.
    pub first_id: u64,
}

/// Publishes to `rooms` in turn (by request id), one every `pace.every`, waiting for
/// each answer, until `stop`; hands the connection back (still open, so its close is no
/// `left` event during the run).
pub fn publish_steadily(
    mut client: WsClient,
    rooms: Vec<String>,
    pace: Pace,
    stop: Arc<AtomicBool>,
) -> JoinHandle<(Published, WsClient)> {
    thread::spawn(move || {
        let mut out = Published::default();
        let mut id = pace.first_id;
        let mut next = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            id += 1;
            let room = &rooms[id as usize % rooms.len()];
            let msg = json!({"op":"publish","room":room,"data":{"n":id},"id":id});
            client
                .send_json(&msg)
                .expect("the publisher's connection broke");
            match client.recv_json_where(pace.answer_within, |m| m["id"] == json!(id)) {
                Ok(reply) if reply["op"] == "ack" => {
                    if let Some((epoch, seq)) = reply["offset"].as_str().and_then(parts) {
                        out.acked.push((room.clone(), epoch, seq, Instant::now()));
                    }
                }
                Ok(reply) => {
                    let code = reply["code"].as_str().unwrap_or("?").to_string();
                    *out.refused.entry(code).or_default() += 1;
                }
                Err(e) => panic!(
                    "publish {id} got no answer in {:?}: {e}",
                    pace.answer_within
                ),
            }
            next += pace.every;
            if let Some(wait) = next.checked_duration_since(Instant::now()) {
                thread::sleep(wait);
            }
        }
        (out, client)
    })
}
