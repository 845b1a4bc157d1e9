//! Live push delivery on a standalone server, end to end: the module pushes every inbox
//! entry to the node's live channel, the edge delivers from its subscription and reads
//! the inbox stream only to recover. Under load (a publisher at a few hundred messages
//! a second into rooms with members on two edges), the edges' subscriber connections
//! are killed (`CLIENT KILL TYPE pubsub`) or dropped by Redis's pub/sub output-buffer
//! limit, and every receiver must still get every message exactly once, in order.
//!
//! Every test runs its own redis-server (with the module) and its own edges on
//! loopback, and bounds every wait and the traffic (count and time).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, sleep, JoinHandle};
use std::time::Duration;

use redis::Value;
use roomcast_tests::edge::{join, Edge};
use roomcast_tests::exactly_once::{
    assert_exactly_once_in_order, metric_sum, publish_paced, receive, Received,
};
use roomcast_tests::roomcast::{inbox_key, live_channel};
use roomcast_tests::ws::WsClient;
use roomcast_tests::{serial, wait, Redis};
use serde_json::json;

/// Rooms the traffic goes to; every receiver is in all of them.
const ROOMS: [&str; 4] = ["p0", "p1", "p2", "p3"];
/// Receivers per edge.
const RECEIVERS_PER_EDGE: usize = 2;
/// Lease of the edges (long enough that no pause in a loaded test costs a lease).
const LEASE_MS: u64 = 5_000;

/// Two edges, each with [`RECEIVERS_PER_EDGE`] clients in every room of [`ROOMS`].
fn edges_with_receivers(redis: &Redis) -> (Vec<Edge>, Vec<WsClient>) {
    let flags = [
        "--allow-anonymous",
        // The receivers read on threads of their own: no slow-consumer closes.
        "--send-queue-bytes",
        "67108864",
    ];
    let edges: Vec<Edge> = ["pa", "pb"]
        .iter()
        .map(|node| Edge::start_on(&redis.url(), node, LEASE_MS, &flags))
        .collect();
    let mut clients = Vec::new();
    for (e, edge) in edges.iter().enumerate() {
        for r in 0..RECEIVERS_PER_EDGE {
            let (mut client, _) = edge.connect(&format!("u{e}{r}"));
            for (i, room) in ROOMS.iter().enumerate() {
                join(&mut client, room, i as u64 + 1);
            }
            clients.push(client);
        }
    }
    (edges, clients)
}

/// Publishes `count` messages round-robin into [`ROOMS`] with `RC.PUBLISH` (a backend
/// publish: every member receives it) at `per_second`; message `n` of a room carries
/// `seq` n, and every `big_every`-th message (0: none) is padded to `big_bytes`.
fn publish(
    redis: &Redis,
    count: usize,
    per_second: u64,
    big_every: usize,
    big_bytes: usize,
) -> JoinHandle<()> {
    let mut conn = redis.conn();
    thread::spawn(move || {
        publish_paced(
            ROOMS.len(),
            count,
            per_second,
            (big_every, big_bytes),
            |r, i, data| {
                let reply: redis::RedisResult<Value> = redis::cmd("RC.PUBLISH")
                    .arg(ROOMS[r])
                    .arg(data)
                    .query(&mut conn);
                assert!(reply.is_ok(), "publish {i}: {reply:?}");
            },
        );
    })
}

/// Runs the traffic with `fault` applied every `fault_every` while it flows; returns
/// how many times the fault hit (what `fault` returned, summed).
fn run_with_fault(
    redis: &Redis,
    count: usize,
    per_second: u64,
    big: (usize, usize),
    fault_every: Duration,
    fault: impl Fn(&mut redis::Connection) -> u64 + Send + 'static,
) -> (Vec<Edge>, Vec<Received>, u64) {
    let (edges, clients) = edges_with_receivers(redis);
    let within = Duration::from_secs(60);
    let receivers: Vec<_> = clients
        .into_iter()
        .map(|c| receive(c, count, within))
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let hits = Arc::new(AtomicU64::new(0));
    let faults = {
        let (stop, hits) = (stop.clone(), hits.clone());
        let mut conn = redis.conn();
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                sleep(fault_every);
                hits.fetch_add(fault(&mut conn), Ordering::Relaxed);
            }
        })
    };
    publish(redis, count, per_second, big.0, big.1)
        .join()
        .expect("publisher");
    stop.store(true, Ordering::Relaxed);
    faults.join().expect("fault thread");
    let received: Vec<Received> = receivers
        .into_iter()
        .map(|r| r.join().expect("receiver").0)
        .collect();
    (edges, received, hits.load(Ordering::Relaxed))
}

#[test]
fn killed_push_connections_lose_and_duplicate_nothing_under_load() {
    let _serial = serial();
    let redis = Redis::start(&[]);
    let count = 2_000;
    let (edges, received, kills) = run_with_fault(
        &redis,
        count,
        400,
        (0, 0),
        Duration::from_millis(250),
        |conn| {
            let killed: redis::RedisResult<u64> = redis::cmd("CLIENT")
                .arg("KILL")
                .arg("TYPE")
                .arg("pubsub")
                .query(conn);
            killed.unwrap_or(0)
        },
    );
    assert_exactly_once_in_order(&received, &ROOMS, (count / ROOMS.len()) as u64);
    let (gaps, recovered, resubscribes) = (
        metric_sum(&edges, "roomcast_edge_inbox_gaps_filled_total"),
        metric_sum(&edges, "roomcast_edge_inbox_entries_recovered_total"),
        metric_sum(&edges, "roomcast_edge_inbox_resubscribes_total"),
    );
    eprintln!(
        "CLIENT KILL under load: {count} messages × {} receivers, {kills} subscriber \
         connections killed, {resubscribes} resubscribes, {gaps} gaps filled from the \
         stream ({recovered} entries), 0 lost, 0 duplicated",
        received.len()
    );
    assert!(kills >= 10, "only {kills} kills");
    assert!(gaps >= 1.0 && recovered >= 1.0, "no gap was filled");
}

#[test]
fn a_subscriber_over_the_pubsub_output_buffer_limit_loses_and_duplicates_nothing() {
    let _serial = serial();
    let redis = Redis::start(&[]);
    let mut c = redis.conn();
    // A push that does not fit the client's 16 KiB reply buffer is queued; past 32 KiB
    // queued Redis disconnects the subscriber at once. Every 10th message is 60 KB.
    redis
        .cmd(
            &mut c,
            &[
                "CONFIG",
                "SET",
                "client-output-buffer-limit",
                "pubsub 32kb 16kb 1",
            ],
        )
        .expect("CONFIG SET");
    let count = 1_200;
    let (edges, received, _) = run_with_fault(
        &redis,
        count,
        300,
        (10, 60_000),
        Duration::from_millis(100),
        |_| 0,
    );
    assert_exactly_once_in_order(&received, &ROOMS, (count / ROOMS.len()) as u64);
    // Redis logs each client it closes for going over its output-buffer limit.
    let over_limit = redis
        .log()
        .matches("overcoming of output buffer limits")
        .count();
    let (gaps, recovered, resubscribes) = (
        metric_sum(&edges, "roomcast_edge_inbox_gaps_filled_total"),
        metric_sum(&edges, "roomcast_edge_inbox_entries_recovered_total"),
        metric_sum(&edges, "roomcast_edge_inbox_resubscribes_total"),
    );
    eprintln!(
        "pub/sub output-buffer limit under load: {count} messages × {} receivers, {} \
         subscriber disconnections by the limit, {resubscribes} resubscribes, {gaps} gaps \
         filled from the stream ({recovered} entries), 0 lost, 0 duplicated",
        received.len(),
        over_limit
    );
    assert!(
        over_limit >= 5,
        "the limit disconnected {over_limit} subscribers"
    );
    assert!(gaps >= 1.0 && recovered >= 1.0, "no gap was filled");
}

/// `INFO section` as text.
fn info(redis: &Redis, section: &str) -> String {
    let mut c = redis.conn();
    let reply: String = redis::cmd("INFO").arg(section).query(&mut c).expect("INFO");
    reply
}

/// Calls of every command so far (`INFO commandstats`), by name (`xread`, `rc.publish`).
fn calls(redis: &Redis) -> BTreeMap<String, u64> {
    info(redis, "commandstats")
        .lines()
        .filter_map(|line| {
            let (name, stats) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = stats
                .split(',')
                .find_map(|kv| kv.strip_prefix("calls="))?
                .parse()
                .ok()?;
            Some((name.to_string(), calls))
        })
        .collect()
}

/// Calls of each command between two [`calls`], without the test's own `INFO`s.
fn calls_between(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    after
        .iter()
        .filter(|(name, _)| *name != "info")
        .map(|(name, n)| (name.clone(), n - before.get(name).copied().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

#[test]
fn entries_arrive_by_push_and_a_gap_on_a_live_connection_is_filled() {
    let redis = Redis::start(&[]);
    let (edges, mut clients) = edges_with_receivers(&redis);
    let mut c = redis.conn();

    // Every edge worker holds one subscriber on its live channel.
    for edge in &edges {
        let reply: Vec<Value> = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(live_channel(&edge.node0()))
            .query(&mut c)
            .expect("PUBSUB NUMSUB");
        assert_eq!(
            reply.get(1),
            Some(&Value::Int(1)),
            "{}: {reply:?}",
            edge.node0()
        );
    }

    // Steady traffic: no blocking XREAD per message any more, a few reads at most.
    let before = calls(&redis);
    let count = 400;
    let receivers: Vec<_> = clients
        .drain(..)
        .map(|c| receive(c, count, Duration::from_secs(30)))
        .collect();
    publish(&redis, count, 400, 0, 0).join().expect("publisher");
    let (received, _open): (Vec<Received>, Vec<WsClient>) =
        receivers.into_iter().map(|r| r.join().unwrap()).unzip();
    assert_exactly_once_in_order(&received, &ROOMS, (count / ROOMS.len()) as u64);
    let during = calls_between(&before, &calls(&redis));
    let of = |name: &str| during.get(name).copied().unwrap_or(0);
    let (xreads, xranges, publishes) = (of("xread"), of("xrange"), of("rc.publish"));
    let total: u64 = during.values().sum();
    eprintln!(
        "{publishes} RC.PUBLISH to 2 nodes (4 rooms, members on both): Redis ran {total} \
         commands, {:.2} per message ({during:?}); reads per message × node: {:.3}",
        total as f64 / publishes as f64,
        (xreads + xranges) as f64 / (2 * publishes) as f64
    );
    assert_eq!(xreads, 0, "the standalone edge still reads with XREAD");
    assert!(
        xranges <= 10,
        "{xranges} XRANGE for {publishes} messages: pushes are not used"
    );

    // An entry appended without a push (straight into the inbox) is a gap the next push
    // shows: the edge reads it from the stream, then delivers the push.
    let edge = &edges[0];
    let (mut client, _) = edge.connect("gap");
    join(&mut client, "gaproom", 1);
    let gaps0 = edge.metric("roomcast_edge_inbox_gaps_filled_total");
    let entry = |seq: u64| json!({"seq": seq}).to_string();
    let _: String = redis::cmd("XADD")
        .arg(inbox_key(&edge.node0()))
        .arg("*")
        .arg(
            &[
                "kind", "msg", "room", "gaproom", "from", "", "skip", "", "offset", "",
            ][..],
        )
        .arg("data")
        .arg(entry(0))
        .query(&mut c)
        .expect("XADD");
    let _: Value = redis::cmd("RC.PUBLISH")
        .arg("gaproom")
        .arg(entry(1))
        .query(&mut c)
        .expect("RC.PUBLISH");
    let (got, _open) = receive(client, 2, Duration::from_secs(10)).join().unwrap();
    assert_eq!(got.get("gaproom"), Some(&vec![0, 1]), "{got:?}");
    assert!(
        wait::until(Duration::from_secs(2), Duration::from_millis(20), || {
            edge.metric("roomcast_edge_inbox_gaps_filled_total") > gaps0
        }),
        "the gap was not counted"
    );
}
