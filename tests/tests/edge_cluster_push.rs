//! Live push delivery under Redis Cluster, end to end: the module pushes every inbox
//! entry to the node's live shard channel of its partition, the edge delivers from its
//! shard subscriptions and reads the partition's inbox stream only to recover. Under
//! load (a publisher at a few hundred messages a second into rooms on all three
//! masters, with members on two edges), the edges' subscriber connections are killed
//! on every master (`CLIENT KILL TYPE pubsub`) or dropped by Redis's pub/sub
//! output-buffer limit, and every receiver must still get every message exactly once,
//! in order.
//!
//! Every test runs its own 3-master cluster (with the module) and its own edges on
//! loopback, and bounds every wait and the traffic (count and time).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, sleep};
use std::time::{Duration, Instant};

use redis::Value;
use roomcast_common::partition::Partitioner;
use roomcast_tests::cluster::Cluster;
use roomcast_tests::edge::{join, Edge};
use roomcast_tests::exactly_once::{assert_exactly_once_in_order, metric_sum, receive, Received};
use roomcast_tests::{redis_url, serial};
use serde_json::json;

/// Receivers per edge.
const RECEIVERS_PER_EDGE: usize = 2;
/// Lease of the edges (long enough that no pause in a loaded test costs a lease).
const LEASE_MS: u64 = 5_000;

fn layout() -> Partitioner {
    Partitioner::new(16).expect("layout")
}

/// One room per master, in the order of `cluster.masters()`.
fn rooms_on_every_master(cluster: &Cluster) -> Vec<String> {
    cluster.one_name_per_master(&layout(), "cp")
}

/// Runs `count` messages round-robin over `rooms` at `per_second` (every `big.0`-th
/// padded to `big.1` bytes; 0: none), with `fault` applied to every master every
/// `fault_every` while they flow. Returns the edges, what each receiver got, and how
/// many times the fault hit (what `fault` returned, summed).
fn run_with_fault(
    cluster: &Cluster,
    rooms: &[String],
    count: usize,
    per_second: u64,
    big: (usize, usize),
    fault_every: Duration,
    fault: impl Fn(&mut redis::Connection) -> u64 + Send + 'static,
) -> (Vec<Edge>, Vec<Received>, u64) {
    let flags = [
        "--allow-anonymous",
        // The receivers read on threads of their own: no slow-consumer closes.
        "--send-queue-bytes",
        "67108864",
    ];
    let masters = cluster.masters();
    let edges: Vec<Edge> = ["qa", "qb"]
        .iter()
        .zip(&masters)
        .map(|(node, port)| Edge::start_on(&redis_url(*port), node, LEASE_MS, &flags))
        .collect();
    let mut receivers = Vec::new();
    for (e, edge) in edges.iter().enumerate() {
        for r in 0..RECEIVERS_PER_EDGE {
            let (mut client, _) = edge.connect(&format!("u{e}{r}"));
            for (i, room) in rooms.iter().enumerate() {
                join(&mut client, room, i as u64 + 1);
            }
            receivers.push(receive(client, count, Duration::from_secs(60)));
        }
    }

    let stop = Arc::new(AtomicBool::new(false));
    let hits = Arc::new(AtomicU64::new(0));
    let faults = {
        let (stop, hits) = (stop.clone(), hits.clone());
        let mut conns: Vec<redis::Connection> = masters.iter().map(|p| cluster.conn(*p)).collect();
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                sleep(fault_every);
                for conn in conns.iter_mut() {
                    hits.fetch_add(fault(conn), Ordering::Relaxed);
                }
            }
        })
    };
    // The publisher: each room's messages on the master serving it.
    let p = layout();
    let mut targets: Vec<(String, redis::Connection)> = rooms
        .iter()
        .map(|room| {
            let tagged = p.tagged(room);
            let conn = cluster.conn(cluster.owner_of_key(&tagged));
            (tagged, conn)
        })
        .collect();
    let start = Instant::now();
    let mut seqs = vec![0u64; rooms.len()];
    for i in 0..count {
        let r = i % rooms.len();
        let pad = if big.0 > 0 && i % big.0 == big.0 - 1 {
            "x".repeat(big.1)
        } else {
            "x".repeat(100)
        };
        let data = json!({"seq": seqs[r], "pad": pad}).to_string();
        seqs[r] += 1;
        let (room, conn) = &mut targets[r];
        let reply: redis::RedisResult<Value> =
            redis::cmd("RC.PUBLISH").arg(&*room).arg(data).query(conn);
        assert!(reply.is_ok(), "publish {i}: {reply:?}");
        let due = start + Duration::from_micros(1_000_000 * (i as u64 + 1) / per_second);
        sleep(due.saturating_duration_since(Instant::now()));
    }
    stop.store(true, Ordering::Relaxed);
    faults.join().expect("fault thread");
    let received: Vec<Received> = receivers
        .into_iter()
        .map(|r| r.join().expect("receiver").0)
        .collect();
    (edges, received, hits.load(Ordering::Relaxed))
}

#[test]
fn killed_shard_subscriber_connections_lose_and_duplicate_nothing_under_load() {
    let _serial = serial();
    let cluster = Cluster::start(3, 0, &[]);
    let rooms = rooms_on_every_master(&cluster);
    let names: Vec<&str> = rooms.iter().map(String::as_str).collect();
    let count = 1_800;
    let (edges, received, kills) = run_with_fault(
        &cluster,
        &rooms,
        count,
        400,
        (0, 0),
        Duration::from_millis(300),
        |conn| {
            let killed: redis::RedisResult<u64> = redis::cmd("CLIENT")
                .arg("KILL")
                .arg("TYPE")
                .arg("pubsub")
                .query(conn);
            killed.unwrap_or(0)
        },
    );
    assert_exactly_once_in_order(&received, &names, (count / rooms.len()) as u64);
    let (gaps, recovered, resubscribes) = (
        metric_sum(&edges, "roomcast_edge_inbox_gaps_filled_total"),
        metric_sum(&edges, "roomcast_edge_inbox_entries_recovered_total"),
        metric_sum(&edges, "roomcast_edge_inbox_resubscribes_total"),
    );
    eprintln!(
        "CLIENT KILL on every master under load: {count} messages × {} receivers, {kills} \
         shard subscriber connections killed, {resubscribes} resubscribes, {gaps} gaps \
         filled from the streams ({recovered} entries), 0 lost, 0 duplicated",
        received.len()
    );
    assert!(kills >= 10, "only {kills} kills");
    assert!(resubscribes >= 5.0, "{resubscribes} resubscribes");
    assert!(recovered >= 1.0, "nothing was read back from the streams");
}

#[test]
fn a_shard_subscriber_over_the_pubsub_output_buffer_limit_loses_and_duplicates_nothing() {
    let _serial = serial();
    let cluster = Cluster::start(3, 0, &[]);
    for port in cluster.masters() {
        // A push that does not fit the client's 16 KiB reply buffer is queued; past
        // 32 KiB queued Redis disconnects the subscriber at once.
        let set: redis::RedisResult<Value> = redis::cmd("CONFIG")
            .arg("SET")
            .arg("client-output-buffer-limit")
            .arg("pubsub 32kb 16kb 1")
            .query(&mut cluster.conn(port));
        set.expect("CONFIG SET");
    }
    let rooms = rooms_on_every_master(&cluster);
    let names: Vec<&str> = rooms.iter().map(String::as_str).collect();
    let count = 1_200;
    // Every 10th message is 60 KB.
    let (edges, received, _) = run_with_fault(
        &cluster,
        &rooms,
        count,
        300,
        (10, 60_000),
        Duration::from_millis(100),
        |_| 0,
    );
    assert_exactly_once_in_order(&received, &names, (count / rooms.len()) as u64);
    // Redis logs each client it closes for going over its output-buffer limit.
    let over_limit = cluster
        .logs()
        .matches("overcoming of output buffer limits")
        .count();
    let (gaps, recovered, resubscribes) = (
        metric_sum(&edges, "roomcast_edge_inbox_gaps_filled_total"),
        metric_sum(&edges, "roomcast_edge_inbox_entries_recovered_total"),
        metric_sum(&edges, "roomcast_edge_inbox_resubscribes_total"),
    );
    eprintln!(
        "pub/sub output-buffer limit on every master under load: {count} messages × {} \
         receivers, {over_limit} shard subscriber disconnections by the limit, \
         {resubscribes} resubscribes, {gaps} gaps filled from the streams ({recovered} \
         entries), 0 lost, 0 duplicated",
        received.len()
    );
    assert!(
        over_limit >= 5,
        "the limit disconnected {over_limit} subscribers"
    );
    assert!(recovered >= 1.0, "nothing was read back from the streams");
}
