//! Live push delivery under Redis Cluster, end to end: the module pushes every inbox
//! entry to the node's live shard channel of its partition, the edge delivers from its
//! shard subscriptions and reads the partition's inbox stream only to recover. Under
//! load (a publisher at a few hundred messages a second into rooms on all three
//! masters, with members on two edges), the edges' subscriber connections are killed
//! on every master (`CLIENT KILL TYPE pubsub`), dropped by Redis's pub/sub
//! output-buffer limit, or moved by a manual failover, and every receiver must still get
//! every message exactly once, in order.
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
use roomcast_tests::exactly_once::{
    assert_exactly_once_in_order, metric_sum, publish_paced, receive, Received,
};
use roomcast_tests::{redis_url, serial};

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
/// padded to `big.1` bytes; 0: none), with `fault` called every `fault_every` while
/// they flow. Returns the edges, what each receiver got, and how many times the fault
/// hit (what `fault` returned, summed).
fn run_with_fault(
    cluster: &Cluster,
    rooms: &[String],
    count: usize,
    per_second: u64,
    big: (usize, usize),
    fault_every: Duration,
    mut fault: impl FnMut() -> u64 + Send + 'static,
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
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                sleep(fault_every);
                hits.fetch_add(fault(), Ordering::Relaxed);
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
    publish_paced(rooms.len(), count, per_second, big, |r, i, data| {
        publish_following_the_slot(cluster, &mut targets[r], &data, i);
    });
    stop.store(true, Ordering::Relaxed);
    faults.join().expect("fault thread");
    let received: Vec<Received> = receivers
        .into_iter()
        .map(|r| r.join().expect("receiver").0)
        .collect();
    (edges, received, hits.load(Ordering::Relaxed))
}

/// `RC.PUBLISH` of `data` into `target`'s room on the master serving it; a refusal that
/// says the slot is served elsewhere or not at all yet (`MOVED`, `CLUSTERDOWN`,
/// `TRYAGAIN`, `READONLY`: nothing was executed) is retried on the master the slot map
/// names then, for up to 10 s.
fn publish_following_the_slot(
    cluster: &Cluster,
    target: &mut (String, redis::Connection),
    data: &str,
    i: usize,
) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (room, conn) = target;
        let reply: redis::RedisResult<Value> =
            redis::cmd("RC.PUBLISH").arg(&*room).arg(data).query(conn);
        let Err(e) = reply else { return };
        let moved = matches!(
            e.code(),
            Some("MOVED" | "CLUSTERDOWN" | "TRYAGAIN" | "READONLY")
        );
        assert!(moved && Instant::now() < deadline, "publish {i}: {e}");
        sleep(Duration::from_millis(50));
        let owner = cluster.owner_of_key(room);
        target.1 = cluster.conn(owner);
    }
}

/// A `CLIENT KILL TYPE pubsub` on every master, counting the clients killed.
fn kill_subscribers_on(mut masters: Vec<redis::Connection>) -> impl FnMut() -> u64 + Send {
    move || {
        masters
            .iter_mut()
            .map(|conn| {
                let killed: redis::RedisResult<u64> = redis::cmd("CLIENT")
                    .arg("KILL")
                    .arg("TYPE")
                    .arg("pubsub")
                    .query(conn);
                killed.unwrap_or(0)
            })
            .sum()
    }
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
        kill_subscribers_on(cluster.masters().iter().map(|p| cluster.conn(*p)).collect()),
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
        || 0,
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

/// A manual failover (`CLUSTER FAILOVER` on a replica) under load: the old master turns
/// replica and drops its shard subscribers, the slot map changes, the edges subscribe
/// on the new master and catch up from the stream; every message arrives exactly once,
/// in order.
#[test]
fn a_manual_failover_under_load_loses_and_duplicates_nothing() {
    let _serial = serial();
    let cluster = Cluster::start(3, 1, &[]);
    let rooms = rooms_on_every_master(&cluster);
    let names: Vec<&str> = rooms.iter().map(String::as_str).collect();
    let old_master = cluster.masters()[0];
    let replica = cluster.replicas_of(old_master)[0];
    let mut replica_conn = cluster.conn(replica);
    let mut ticks = 0;
    let count = 1_500;
    let (edges, received, failovers) = run_with_fault(
        &cluster,
        &rooms,
        count,
        300,
        (0, 0),
        Duration::from_millis(500),
        move || {
            ticks += 1;
            if ticks != 2 {
                return 0;
            }
            let done: redis::RedisResult<Value> = redis::cmd("CLUSTER")
                .arg("FAILOVER")
                .query(&mut replica_conn);
            u64::from(done.is_ok())
        },
    );
    assert_eq!(failovers, 1, "CLUSTER FAILOVER was refused");
    assert_ne!(cluster.masters()[0], old_master, "the replica took over");
    assert_exactly_once_in_order(&received, &names, (count / rooms.len()) as u64);
    let resubscribes = metric_sum(&edges, "roomcast_edge_inbox_resubscribes_total");
    eprintln!(
        "CLUSTER FAILOVER of {old_master} to {replica} under load: {count} messages × {} \
         receivers, {resubscribes} resubscribes, 0 lost, 0 duplicated",
        received.len()
    );
    assert!(resubscribes >= 1.0, "the edges never subscribed again");
}
