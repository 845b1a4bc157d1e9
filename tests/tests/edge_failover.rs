//! Redis failover end to end — rows 21 and 23 of the reliability plan (B5).
//!
//! A primary with the module, a replica, three Sentinels and two edges that find the
//! primary through them (`--redis redis+sentinel://…`), all on loopback. Subscribers on
//! both edges check every room offset they receive; a publisher on one edge publishes
//! steadily through the whole run. Phase 1 demotes the primary with `SENTINEL FAILOVER`
//! (row 23a: the old primary turns replica under the edges' blocked reads); phase 2
//! SIGKILLs the new primary (row 21). The figures: lost-acknowledged messages L
//! (reported), undetected gaps U (must be 0: every subscriber has every seq of an epoch,
//! or saw the epoch change and knows to resync), the time until delivery resumes, and
//! presence intact (no `left` event, every user still present).
//!
//! Row 23b (a reader starved without any error) runs the edge behind a proxy that
//! silently blackholes the inbox reader's connection: the liveness probe must restart
//! the reader within 5 s, and nothing published meanwhile may be lost.
//!
//! Each test prints its figures (`row N: …`, visible with `--nocapture`).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use roomcast_tests::edge::{join, Edge, ANONYMOUS_UNLIMITED};
use roomcast_tests::offsets;
use roomcast_tests::proxy::Proxy;
use roomcast_tests::sentinel::Sentinels;
use roomcast_tests::traffic::{publish_steadily, subscribe, Pace, Seen};
use roomcast_tests::wait;
use roomcast_tests::ws::WsClient;
use roomcast_tests::Redis;

const ROOM: &str = "feed";
const MODULE: &[&str] = &["history-len", "100000"];
/// Sentinel's `down-after-milliseconds`.
const DOWN_AFTER_MS: u64 = 1000;

/// The lease of the failover tests' edges: long enough to ride out a failover.
const LEASE_MS: u64 = 3000;

/// An anonymous client of `edge` as `user`, joined to the room.
fn member(edge: &Edge, user: &str) -> WsClient {
    let (mut client, welcome) = edge.connect(user);
    assert_eq!(welcome["op"], "welcome", "{welcome}");
    join(&mut client, ROOM, 1);
    client
}

/// The checker's verdict on one subscriber (see `offsets::gaps`).
fn gaps(seen: &Seen) -> (usize, usize) {
    offsets::gaps(seen.room(ROOM))
}

/// The publisher's pace: a publish every 4 ms, each answered within 10 s.
const PACE: Pace = Pace {
    every: Duration::from_millis(4),
    answer_within: Duration::from_secs(10),
    first_id: 100,
};

/// Waits until every sentinel lists `count` replicas of the primary (they learn them
/// from its INFO), so a failover has a candidate.
fn wait_for_replicas(sentinels: &Sentinels, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let enough = |reply: &redis::RedisResult<redis::Value>| matches!(reply, Ok(redis::Value::Array(r)) if r.len() >= count);
    for &port in &sentinels.ports {
        let reply = wait::poll(
            deadline.saturating_duration_since(Instant::now()),
            Duration::from_millis(100),
            || sentinels.ask(port, &["SENTINEL", "REPLICAS", &sentinels.master]),
            enough,
        );
        assert!(
            enough(&reply),
            "sentinel {port} never saw {count} replicas: {reply:?}\n{}",
            sentinels.logs()
        );
    }
}

/// The first message each subscriber received at or after `from` in an epoch other
/// than `old`: the longest wait (none: some subscriber never got one).
fn resumed_after(seen: &[Seen], from: Instant, old: &str) -> Option<Duration> {
    seen.iter()
        .map(|s| {
            s.room(ROOM)
                .iter()
                .find(|(e, _, at)| *at >= from && e != old)
                .map(|(_, _, at)| at.duration_since(from))
        })
        .collect::<Option<Vec<_>>>()?
        .into_iter()
        .max()
}

/// The first epoch other than `old` an acknowledgement carried after `from`. (Right
/// after a switch the old primary may still acknowledge a few publishes: it is writable
/// until the sentinels turn it into a replica, or until it is gone.)
fn epoch_after(
    published: &[(String, u64, Instant)],
    from: Instant,
    old: &[&str],
) -> Option<String> {
    published
        .iter()
        .find(|(e, _, at)| *at >= from && !old.contains(&e.as_str()))
        .map(|(e, _, _)| e.clone())
}

#[test]
fn row21_23a_sentinel_failovers_under_traffic_leave_no_undetected_gap() {
    let _turn = roomcast_tests::serial();
    let mut first = Redis::start(MODULE);
    let mut second = Redis::replica_of(&first, MODULE);
    let sentinels = Sentinels::start(3, "roomcast", first.port, DOWN_AFTER_MS);
    wait_for_replicas(&sentinels, 1);
    let url = sentinels.url();
    let edges = [
        Edge::start_on(&url, "fa", LEASE_MS, ANONYMOUS_UNLIMITED),
        Edge::start_on(&url, "fb", LEASE_MS, ANONYMOUS_UNLIMITED),
    ];

    let stop = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    let mut users = BTreeSet::new();
    for i in 0..16 {
        let user = format!("sub{i}");
        readers.push(subscribe(member(&edges[i % 2], &user), stop.clone()));
        users.insert(user);
    }
    users.insert("pub".to_string());
    let stop_publishing = Arc::new(AtomicBool::new(false));
    let publisher = publish_steadily(
        member(&edges[0], "pub"),
        vec![ROOM.to_string()],
        PACE,
        stop_publishing.clone(),
    );
    thread::sleep(Duration::from_secs(2));

    // Phase 1 (row 23a): a graceful failover demotes the primary under the edges'
    // blocked reads; they must look the primary up again and go on.
    let demoted_at = Instant::now();
    sentinels
        .ask(sentinels.ports[0], &["SENTINEL", "FAILOVER", "roomcast"])
        .expect("SENTINEL FAILOVER");
    let promoted = sentinels.wait_for_new_primary(first.port, Duration::from_secs(20));
    assert_eq!(promoted, second.port);
    let switched_at = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(20);
    while first.info_field("replication", "role") != "slave" {
        assert!(
            Instant::now() < deadline,
            "the old primary never turned replica"
        );
        thread::sleep(Duration::from_millis(50));
    }
    thread::sleep(Duration::from_secs(4));
    wait_for_replicas(&sentinels, 1);

    // Phase 2 (row 21): SIGKILL the primary under traffic.
    let killed_at = Instant::now();
    second.kill();
    let promoted = sentinels.wait_for_new_primary(second.port, Duration::from_secs(30));
    assert_eq!(promoted, first.port);
    let failed_over_at = Instant::now();
    thread::sleep(Duration::from_secs(6));
    stop_publishing.store(true, Ordering::Relaxed);
    let (published, _publisher_conn) = publisher.join().expect("publisher");
    let acked = published.acked_in(ROOM);
    // The last messages still reach the subscribers; everyone is still present.
    thread::sleep(Duration::from_millis(500));
    let present: BTreeSet<String> = roomcast_tests::roomcast::presence(&first, ROOM)
        .into_iter()
        .collect();
    stop.store(true, Ordering::Relaxed);
    let (seen, _open): (Vec<Seen>, Vec<WsClient>) = readers
        .into_iter()
        .map(|r| r.join().expect("subscriber"))
        .unzip();

    let logs = || format!("{}\n----\n{}", edges[0].log(), edges[1].log());
    // The epochs: one per primary run.
    let epoch0 = acked.first().expect("acks before the failovers").0.clone();
    let epoch1 = epoch_after(&acked, switched_at, &[&epoch0])
        .unwrap_or_else(|| panic!("no new epoch after phase 1\n{}", logs()));
    // Each new primary starts a new epoch for the room.
    epoch_after(&acked, failed_over_at, &[&epoch0, &epoch1])
        .unwrap_or_else(|| panic!("no new epoch after phase 2\n{}", logs()));

    // U = 0: within an epoch every subscriber has every seq, in order.
    let mut undetected = 0;
    let mut resyncs = 0;
    for s in &seen {
        let (u, r) = gaps(s);
        undetected += u;
        resyncs += r;
    }
    // L: acknowledged messages no subscriber ever received.
    let received: BTreeSet<(String, u64)> = seen
        .iter()
        .flat_map(|s| s.room(ROOM).iter().map(|(e, q, _)| (e.clone(), *q)))
        .collect();
    let lost: Vec<&(String, u64, Instant)> = acked
        .iter()
        .filter(|(e, q, _)| !received.contains(&(e.clone(), *q)))
        .collect();
    let lost_in_demotion = lost.iter().filter(|(_, _, at)| *at < killed_at).count();
    let resumed_23a = resumed_after(&seen, switched_at, &epoch0);
    let resumed_21 = resumed_after(&seen, killed_at, &epoch1);
    let lookups: f64 = edges
        .iter()
        .map(|e| e.metric("roomcast_edge_primary_lookups_total"))
        .sum();
    println!(
        "row 21/23a: {} acknowledged, refused {:?}; L = {} lost-acknowledged ({lost_in_demotion} \
         acknowledged by the demoted primary before the edges moved, the rest around the \
         SIGKILL); U = {undetected} \
         undetected gaps, {resyncs} epoch changes seen by {} subscribers; demotion: sentinels \
         switched {:.1} s after SENTINEL FAILOVER, delivery resumed {:.2} s after the switch; \
         SIGKILL: sentinels switched {:.1} s after the kill (down-after {DOWN_AFTER_MS} ms), \
         delivery resumed {:.2} s after the kill; {lookups} primary lookups",
        acked.len(),
        published.refused,
        lost.len(),
        seen.len(),
        switched_at.duration_since(demoted_at).as_secs_f64(),
        resumed_23a.map_or(f64::NAN, |d| d.as_secs_f64()),
        failed_over_at.duration_since(killed_at).as_secs_f64(),
        resumed_21.map_or(f64::NAN, |d| d.as_secs_f64()),
    );
    assert_eq!(undetected, 0, "undetected gaps\n{}", logs());
    assert!(
        seen.iter().all(|s| gaps(s).1 >= 2),
        "every subscriber saw both epoch changes: {:?}",
        seen.iter().map(gaps).collect::<Vec<_>>()
    );
    let resumed_23a = resumed_23a.expect("delivery resumed after the demotion");
    assert!(
        resumed_23a <= Duration::from_secs(2),
        "row 23a: delivery resumed {resumed_23a:?} after the switch\n{}",
        logs()
    );
    let resumed_21 = resumed_21.expect("delivery resumed after the SIGKILL");
    assert!(
        resumed_21
            <= Duration::from_millis(DOWN_AFTER_MS)
                + Duration::from_secs(5)
                + failed_over_at
                    .duration_since(killed_at)
                    .saturating_sub(Duration::from_millis(DOWN_AFTER_MS)),
        "row 21: delivery resumed {resumed_21:?} after the kill\n{}",
        logs()
    );
    assert!(lookups >= 2.0, "the edges looked the primary up again");
    // Presence intact: nobody left, everybody is still there on the last primary.
    assert!(
        seen.iter().all(|s| s.left.is_empty()),
        "left events: {:?}",
        seen.iter().map(|s| &s.left).collect::<Vec<_>>()
    );
    assert_eq!(present, users, "presence after both failovers");
    drop(edges);
    first.kill();
}

#[test]
fn row23b_a_silently_starved_reader_is_restarted_by_its_probe_and_loses_nothing() {
    let _turn = roomcast_tests::serial();
    let redis = Redis::start(MODULE);
    let upstream: SocketAddr = format!("127.0.0.1:{}", redis.port).parse().expect("addr");
    // The inbox reader's subscriber connection (the one the live pushes arrive on).
    let proxy = Proxy::start(upstream, b"SUBSCRIBE");
    let edge = Edge::start_on(
        &format!("redis://{}/", proxy.addr),
        "fz",
        LEASE_MS,
        ANONYMOUS_UNLIMITED,
    );
    let stop = Arc::new(AtomicBool::new(false));
    let reader = subscribe(member(&edge, "sub"), stop.clone());
    let deadline = Instant::now() + Duration::from_secs(10);
    while proxy.marked() == 0 {
        assert!(
            Instant::now() < deadline,
            "the inbox reader never sent SUBSCRIBE"
        );
        thread::sleep(Duration::from_millis(20));
    }
    let mut backend = redis.conn();
    let mut publish = |n: u64| {
        let _: redis::Value = redis::cmd("RC.PUBLISH")
            .arg(ROOM)
            .arg(format!("{{\"n\":{n}}}"))
            .query(&mut backend)
            .expect("RC.PUBLISH");
    };
    for n in 0..5 {
        publish(n);
    }
    thread::sleep(Duration::from_millis(300));
    assert_eq!(proxy.freeze(), 1, "one reader connection");
    let frozen_at = Instant::now();
    // 8 s of messages, 10 per second, while the reader hangs on a dead connection.
    for n in 5..85 {
        publish(n);
        thread::sleep(Duration::from_millis(100));
    }
    thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    let (seen, _open) = reader.join().expect("subscriber");
    let resumed = seen
        .room(ROOM)
        .iter()
        .find(|(_, seq, at)| *at > frozen_at && *seq > 5)
        .map(|(_, _, at)| at.duration_since(frozen_at));
    let seqs: Vec<u64> = seen.room(ROOM).iter().map(|(_, s, _)| *s).collect();
    let restarts = edge.metric("roomcast_edge_reader_restarts_total");
    println!(
        "row 23b: reader blackholed; delivery resumed {:.2} s later after {restarts} reader \
         restart(s); {} of 85 messages delivered, undetected gaps {}",
        resumed.map_or(f64::NAN, |d| d.as_secs_f64()),
        seqs.len(),
        gaps(&seen).0
    );
    let resumed = resumed.unwrap_or_else(|| panic!("delivery never resumed\n{}", edge.log()));
    assert!(
        resumed <= Duration::from_secs(5),
        "resumed after {resumed:?}"
    );
    assert!(restarts >= 1.0);
    assert!(edge.log().contains("restarting it"), "{}", edge.log());
    assert_eq!(
        seqs,
        (1..=85).collect::<Vec<u64>>(),
        "every message, once, in order"
    );
}

/// Row 22: a primary cut off from its replica keeps acknowledging writes only for
/// `min-replicas-max-lag`; then it refuses them (`NOREPLICAS`, which clients see as
/// `unavailable`), so at most that much acknowledged traffic is at risk should a failover
/// follow. The cut is a proxy between replica and primary that silently stops
/// forwarding; when the replica's link times out, it reconnects and writes resume.
#[test]
fn row22_a_primary_cut_off_from_its_replica_stops_acknowledging_after_the_max_lag() {
    let _turn = roomcast_tests::serial();
    const MAX_LAG_S: u64 = 2;
    let lag = MAX_LAG_S.to_string();
    let primary = Redis::start_with(
        MODULE,
        &[
            "--min-replicas-to-write",
            "1",
            "--min-replicas-max-lag",
            &lag,
            "--repl-timeout",
            "4",
        ],
    );
    let upstream: SocketAddr = format!("127.0.0.1:{}", primary.port).parse().expect("addr");
    let link = Proxy::start(upstream, b"REPLCONF");
    let replica = Redis::start_with(
        MODULE,
        &[
            "--replicaof",
            "127.0.0.1",
            &link.addr.port().to_string(),
            "--repl-timeout",
            "4",
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while replica.info_field("replication", "master_link_status") != "up" {
        assert!(Instant::now() < deadline, "replica never synced");
        thread::sleep(Duration::from_millis(50));
    }
    let sentinels = Sentinels::start(3, "roomcast", primary.port, DOWN_AFTER_MS);
    let edge = Edge::start_on(&sentinels.url(), "fp", LEASE_MS, ANONYMOUS_UNLIMITED);
    let stop = Arc::new(AtomicBool::new(false));
    let reader = subscribe(member(&edge, "sub"), stop.clone());
    let stop_publishing = Arc::new(AtomicBool::new(false));
    let publisher = publish_steadily(
        member(&edge, "pub"),
        vec![ROOM.to_string()],
        PACE,
        stop_publishing.clone(),
    );
    thread::sleep(Duration::from_secs(2));
    assert!(link.freeze() >= 1, "the replication link is cut");
    let cut_at = Instant::now();
    thread::sleep(Duration::from_secs(12));
    stop_publishing.store(true, Ordering::Relaxed);
    let (published, _conn) = publisher.join().expect("publisher");
    let acked = published.acked_in(ROOM);
    thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let (seen, _open) = reader.join().expect("subscriber");

    // The acknowledgements after the cut: those before the primary started refusing are
    // the ones a failover at that point would lose.
    let acked_after: Vec<Instant> = acked
        .iter()
        .map(|(_, _, at)| *at)
        .filter(|at| *at > cut_at)
        .collect();
    let refusing_from = acked_after
        .windows(2)
        .find(|w| w[1].duration_since(w[0]) > Duration::from_millis(500))
        .map(|w| w[0]);
    let at_risk = refusing_from.map_or(acked_after.len(), |last| {
        acked_after.iter().filter(|at| **at <= last).count()
    });
    let window = refusing_from.map(|last| last.duration_since(cut_at));
    let resumed = refusing_from.and_then(|last| {
        acked_after
            .iter()
            .find(|at| **at > last)
            .map(|at| at.duration_since(cut_at))
    });
    println!(
        "row 22: cut off from its replica, the primary acknowledged {at_risk} messages for \
         {:.2} s (min-replicas-max-lag {MAX_LAG_S} s), then refused ({:?}); writes resumed \
         {:.1} s after the cut once the replica reconnected; undetected gaps {}",
        window.map_or(f64::NAN, |d| d.as_secs_f64()),
        published.refused,
        resumed.map_or(f64::NAN, |d| d.as_secs_f64()),
        gaps(&seen).0,
    );
    let window = window.unwrap_or_else(|| panic!("the primary never refused\n{}", edge.log()));
    assert!(
        window <= Duration::from_secs(MAX_LAG_S + 2),
        "acknowledged for {window:?} after the cut"
    );
    assert!(published.refused.get("unavailable").is_some_and(|n| *n > 0));
    assert!(resumed.is_some(), "writes resumed after the link healed");
    assert_eq!(gaps(&seen).0, 0);
    let received: BTreeSet<u64> = seen.room(ROOM).iter().map(|(_, q, _)| *q).collect();
    assert!(
        acked.iter().all(|(_, q, _)| received.contains(q)),
        "without a failover every acknowledged message is delivered"
    );
}
