//! Leases: the module timer sweeps nodes that stop renewing, with no edge alive.

use std::time::{Duration, Instant};

use redis::Connection;
use roomcast_common::keys::PartitionKeys;
use roomcast_tests::reply::{int, ints, strings};
use roomcast_tests::roomcast::{inbox, keys_of, layout, wait_replicas};
use roomcast_tests::{info_value, Redis};

#[test]
fn an_expired_node_is_swept_with_leave_events() {
    let redis = Redis::start(&[]);
    let mut c = redis.conn();
    for name in ["lobby", "bob"] {
        redis
            .cmd(&mut c, &["RC.NODE.LEASE", name, "n1", "60000"])
            .unwrap();
        redis
            .cmd(&mut c, &["RC.NODE.LEASE", name, "n2", "1000"])
            .unwrap();
    }
    redis
        .cmd(&mut c, &["RC.CONNECT", "bob", "n2", "b1"])
        .unwrap();
    redis
        .cmd(&mut c, &["RC.JOIN", "lobby", "n1", "a1", "ann"])
        .unwrap();
    redis
        .cmd(&mut c, &["RC.JOIN", "lobby", "n2", "b1", "bob"])
        .unwrap();
    redis
        .cmd(&mut c, &["RC.JOIN", "lobby", "n2", "b2", "bob"])
        .unwrap();
    let started = Instant::now();

    // n2 stops renewing: within 2.5 s its connections are gone.
    loop {
        let members = strings(&redis.cmd(&mut c, &["RC.MEMBERS", "lobby"]).unwrap());
        if members == ["a1"] {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_millis(2500),
            "still {members:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        strings(&redis.cmd(&mut c, &["RC.PRESENCE", "lobby"]).unwrap()),
        ["ann"]
    );
    assert!(
        redis
            .cmd(&mut c, &["RC.CONNS", "bob"])
            .map(|v| strings_len(&v))
            .unwrap()
            == 0
    );

    // ann's node got exactly one leave event for bob (two connections, one user).
    let leaves: Vec<_> = inbox(&mut c, "lobby", "n1")
        .into_iter()
        .filter(|e| e.get("kind") == "leave")
        .collect();
    assert_eq!(leaves.len(), 1);
    assert_eq!(leaves[0].get("user"), "bob");
    // The dead node's keys are gone: lease, inbox, indexes.
    let keys = keys_of("lobby");
    for key in [
        roomcast_tests::roomcast::inbox_key("n2"),
        keys.node_rooms("n2"),
    ] {
        let exists: i64 = redis::cmd("EXISTS").arg(&key).query(&mut c).unwrap();
        assert_eq!(exists, 0, "{key}");
    }
    let lease: Option<String> = redis::cmd("HGET")
        .arg(keys.nodes())
        .arg("n2")
        .query(&mut c)
        .unwrap();
    assert_eq!(lease, None);
    // n1 kept its lease.
    let lease: Option<String> = redis::cmd("HGET")
        .arg(keys.nodes())
        .arg("n1")
        .query(&mut c)
        .unwrap();
    assert!(lease.is_some());
}

fn strings_len(v: &redis::Value) -> usize {
    roomcast_tests::reply::array(v).len()
}

#[test]
fn renewing_keeps_a_node_alive() {
    let redis = Redis::start(&[]);
    let mut c = redis.conn();
    redis
        .cmd(&mut c, &["RC.NODE.LEASE", "lobby", "n1", "300"])
        .unwrap();
    redis
        .cmd(&mut c, &["RC.JOIN", "lobby", "n1", "a1", "ann"])
        .unwrap();
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(
            int(&redis
                .cmd(&mut c, &["RC.NODE.LEASE", "lobby", "n1", "300"])
                .unwrap()),
            0
        );
    }
    assert_eq!(
        strings(&redis.cmd(&mut c, &["RC.MEMBERS", "lobby"]).unwrap()),
        ["a1"]
    );
}

#[test]
fn node_down_removes_a_node_at_once() {
    let redis = Redis::start(&[]);
    let mut c = redis.conn();
    for name in ["lobby", "ann"] {
        redis
            .cmd(&mut c, &["RC.NODE.LEASE", name, "n1", "60000"])
            .unwrap();
        redis
            .cmd(&mut c, &["RC.NODE.LEASE", name, "n2", "60000"])
            .unwrap();
    }
    redis
        .cmd(&mut c, &["RC.CONNECT", "ann", "n2", "a2"])
        .unwrap();
    redis
        .cmd(&mut c, &["RC.JOIN", "lobby", "n1", "b1", "bob"])
        .unwrap();
    redis
        .cmd(&mut c, &["RC.JOIN", "lobby", "n2", "a2", "ann"])
        .unwrap();

    // Reply: [connections, memberships] removed in that one partition.
    let same_partition = keys_of("ann") == keys_of("lobby");
    let room_partition = redis.cmd(&mut c, &["RC.NODE.DOWN", "lobby", "n2"]).unwrap();
    let user_partition = redis.cmd(&mut c, &["RC.NODE.DOWN", "ann", "n2"]).unwrap();
    if same_partition {
        assert_eq!(
            (ints(&room_partition), ints(&user_partition)),
            (vec![1, 1], vec![0, 0])
        );
    } else {
        assert_eq!(
            (ints(&room_partition), ints(&user_partition)),
            (vec![0, 1], vec![1, 0])
        );
    }
    assert!(strings_len(&redis.cmd(&mut c, &["RC.CONNS", "ann"]).unwrap()) == 0);
    assert_eq!(
        strings(&redis.cmd(&mut c, &["RC.MEMBERS", "lobby"]).unwrap()),
        ["b1"]
    );
    let last = inbox(&mut c, "lobby", "n1").pop().unwrap();
    assert_eq!(
        (last.get("kind"), last.get("user")),
        ("leave".into(), "ann".into())
    );
    // Joining again needs a new lease.
    assert!(redis
        .cmd(&mut c, &["RC.JOIN", "lobby", "n2", "a3", "ann"])
        .is_err());
    assert_eq!(
        int(&redis
            .cmd(&mut c, &["RC.NODE.LEASE", "lobby", "n2", "60000"])
            .unwrap()),
        1
    );
}

/// Redis's clock, in Unix ms.
fn server_ms(c: &mut Connection) -> i64 {
    let (secs, micros): (i64, i64) = redis::cmd("TIME").query(c).unwrap();
    secs * 1000 + micros / 1000
}

/// `n1`'s lease expiry in every partition, in partition order.
fn expiries(c: &mut Connection, node: &str) -> Vec<i64> {
    let p = layout(16);
    (0..p.count())
        .map(|i| {
            let at: String = redis::cmd("HGET")
                .arg(PartitionKeys::new(p.tag(i)).nodes())
                .arg(node)
                .query(c)
                .unwrap();
            at.parse().unwrap()
        })
        .collect()
}

#[test]
fn one_command_leases_every_partition() {
    let redis = Redis::start(&[]);
    let mut c = redis.conn();
    let before = server_ms(&mut c);
    // New everywhere: every partition is named.
    assert_eq!(
        ints(
            &redis
                .cmd(&mut c, &["RC.NODE.LEASE", "n1", "60000"])
                .unwrap()
        ),
        (0..16).collect::<Vec<i64>>()
    );
    let after = server_ms(&mut c);
    // One absolute expiry, the same in every partition.
    let at = expiries(&mut c, "n1");
    assert!(at.windows(2).all(|w| w[0] == w[1]), "{at:?}");
    assert!(
        (before + 60_000..=after + 60_000).contains(&at[0]),
        "{at:?} not in {before}..{after} + 60000"
    );
    // Renewed everywhere: nothing new, later expiries.
    std::thread::sleep(Duration::from_millis(20));
    assert!(ints(
        &redis
            .cmd(&mut c, &["RC.NODE.LEASE", "n1", "60000"])
            .unwrap()
    )
    .is_empty());
    assert!(expiries(&mut c, "n1").iter().all(|&later| later > at[0]));
    // The node may register in any partition.
    redis
        .cmd(&mut c, &["RC.CONNECT", "ann", "n1", "a1"])
        .unwrap();
    redis
        .cmd(&mut c, &["RC.JOIN", "lobby", "n1", "a1", "ann"])
        .unwrap();
    // Lost in one partition: only that one comes back as new.
    redis.cmd(&mut c, &["RC.NODE.DOWN", "lobby", "n1"]).unwrap();
    let lobby = i64::from(layout(16).partition_of(b"lobby"));
    assert_eq!(
        ints(
            &redis
                .cmd(&mut c, &["RC.NODE.LEASE", "n1", "60000"])
                .unwrap()
        ),
        [lobby]
    );
    // And a renewal of a partition by the one-partition form still answers 0.
    assert_eq!(
        int(&redis
            .cmd(&mut c, &["RC.NODE.LEASE", "lobby", "n1", "60000"])
            .unwrap()),
        0
    );
}

/// Waits until `n2` is swept from `room` (its member `c2` gone, its lease deleted) and
/// returns how long after `expires` (server ms) that was seen; fails past `limit`.
fn swept_after(c: &mut Connection, room: &str, expires: i64, limit: Duration) -> i64 {
    let keys = keys_of(room);
    loop {
        let members = strings(&roomcast_tests::run(c, &["RC.MEMBERS", room]).unwrap());
        let leased: bool = redis::cmd("HEXISTS")
            .arg(keys.nodes())
            .arg("n2")
            .query(c)
            .unwrap();
        let late = server_ms(c) - expires;
        if !leased && !members.iter().any(|m| m == "c2") {
            return late;
        }
        assert!(
            late < limit.as_millis() as i64,
            "{room}: n2 not swept {late} ms after its expiry: {members:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Gives `n2` a member in `room`, with `lease` (which returns the expiry it set), and
/// checks the sweep removes it within a few ticks of that expiry — well before the
/// sweep's 10 s full rescan, so only the memory's own rules can have caught it.
fn expires_on_time(c: &mut Connection, room: &str, lease: impl FnOnce(&mut Connection) -> i64) {
    let keys = keys_of(room);
    roomcast_tests::run(c, &["RC.NODE.LEASE", room, "n2", "3600000"]).unwrap();
    roomcast_tests::run(c, &["RC.JOIN", room, "n2", "c2", "cat"]).unwrap();
    // Let the sweep learn the far expiry first.
    std::thread::sleep(Duration::from_millis(300));
    let expires = lease(c);
    let late = swept_after(c, room, expires, Duration::from_millis(2000));
    assert!(late >= 0, "{room}: swept {late} ms before its expiry");
    let kept: bool = redis::cmd("HEXISTS")
        .arg(keys.nodes())
        .arg("n1")
        .query(c)
        .unwrap();
    assert!(kept, "{room}: n1's lease must stay");
}

#[test]
fn an_expiry_is_never_missed_whatever_wrote_the_lease() {
    let redis = Redis::start(&[]);
    let mut c = redis.conn();
    redis
        .cmd(&mut c, &["RC.NODE.LEASE", "n1", "3600000"])
        .unwrap();

    // A shorter lease through the module.
    expires_on_time(&mut c, "r1", |c| {
        let at = server_ms(c) + 300;
        roomcast_tests::run(c, &["RC.NODE.LEASE", "r1", "n2", "300"]).unwrap();
        at
    });
    // The lease table written by another client (`HSET`), in a transaction.
    expires_on_time(&mut c, "r2", |c| {
        let at = server_ms(c) + 300;
        redis::pipe()
            .atomic()
            .hset(keys_of("r2").nodes(), "n2", at)
            .query::<()>(c)
            .unwrap();
        at
    });
    // Deleted and rebuilt by another client, through a script.
    expires_on_time(&mut c, "r3", |c| {
        let at = server_ms(c) + 300;
        redis::cmd("EVAL")
            .arg(
                "local far = redis.call('HGET', KEYS[1], 'n1') \
                 redis.call('DEL', KEYS[1]) \
                 redis.call('HSET', KEYS[1], 'n1', far, 'n2', ARGV[1])",
            )
            .arg(1)
            .arg(keys_of("r3").nodes())
            .arg(at)
            .query::<()>(c)
            .unwrap();
        at
    });
    // Replaced whole by `RENAME`.
    expires_on_time(&mut c, "r4", |c| {
        let at = server_ms(c) + 300;
        let table = keys_of("r4").nodes();
        let far: String = redis::cmd("HGET").arg(&table).arg("n1").query(c).unwrap();
        redis::cmd("HSET")
            .arg("scratch")
            .arg("n1")
            .arg(far)
            .arg("n2")
            .arg(at)
            .query::<()>(c)
            .unwrap();
        redis::cmd("RENAME")
            .arg("scratch")
            .arg(&table)
            .query::<()>(c)
            .unwrap();
        at
    });
    // Through a reload from disk (`DEBUG RELOAD`: the memory is forgotten).
    expires_on_time(&mut c, "r5", |c| {
        let at = server_ms(c) + 500;
        roomcast_tests::run(c, &["RC.NODE.LEASE", "r5", "n2", "500"]).unwrap();
        redis::cmd("DEBUG").arg("RELOAD").query::<()>(c).unwrap();
        at
    });
    // After `FLUSHALL`, leases taken again.
    redis.cmd(&mut c, &["FLUSHALL"]).unwrap();
    redis
        .cmd(&mut c, &["RC.NODE.LEASE", "n1", "3600000"])
        .unwrap();
    expires_on_time(&mut c, "r6", |c| {
        let at = server_ms(c) + 300;
        roomcast_tests::run(c, &["RC.NODE.LEASE", "r6", "n2", "300"]).unwrap();
        at
    });
}

/// Keyspace lookups so far (`keyspace_hits` + `keyspace_misses`): the module's reads
/// count there, client commands aside.
fn lookups(c: &mut Connection) -> u64 {
    let info: String = redis::cmd("INFO").arg("stats").query(c).unwrap();
    ["keyspace_hits", "keyspace_misses"]
        .iter()
        .map(|name| info_value(&info, name).parse::<u64>().unwrap())
        .sum()
}

#[test]
fn an_idle_sweep_reads_no_key() {
    let redis = Redis::start(&[]);
    let mut c = redis.conn();
    for node in ["n1", "n2"] {
        redis
            .cmd(&mut c, &["RC.NODE.LEASE", node, "3600000"])
            .unwrap();
    }
    redis
        .cmd(&mut c, &["RC.CONNECT", "ann", "n1", "a1"])
        .unwrap();
    redis
        .cmd(&mut c, &["RC.JOIN", "lobby", "n1", "a1", "ann"])
        .unwrap();
    // The first ticks scan every partition and count the gauges; then nothing is due.
    std::thread::sleep(Duration::from_millis(2200));
    let before = lookups(&mut c);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        lookups(&mut c),
        before,
        "the sweep read keys while nothing was due"
    );
    // The gauges were counted once the dataset changed.
    let info: String = redis::cmd("INFO").arg("roomcast").query(&mut c).unwrap();
    assert_eq!(info_value(&info, "roomcast_nodes"), "2");
    assert_eq!(info_value(&info, "roomcast_connections"), "1");
}

/// How many times the sweep's timer has fired on this server (`INFO roomcast`).
fn sweep_ticks(c: &mut Connection) -> u64 {
    let info: String = redis::cmd("INFO").arg("roomcast").query(c).unwrap();
    info_value(&info, "roomcast_sweep_ticks").parse().unwrap()
}

/// Lets the server settle (the sweep checks, drains and counts what the last commands
/// changed), then idles `idle` and checks the sweep's timer barely fired meanwhile: a
/// timer firing every 100 ms would fire 20 times in 2 s. What may fire is the net's
/// rescan (every 10 s: its tick, and one more if a check had just run).
fn idles(c: &mut Connection, idle: Duration) {
    std::thread::sleep(Duration::from_millis(1500));
    let before = sweep_ticks(c);
    std::thread::sleep(idle);
    let woke = sweep_ticks(c) - before;
    assert!(
        woke <= 3,
        "the sweep woke {woke} times in {idle:?} with nothing due"
    );
}

#[test]
fn an_idle_module_sleeps_and_a_short_lease_still_expires_on_time() {
    let redis = Redis::start(&[]);
    let mut c = redis.conn();
    redis
        .cmd(&mut c, &["RC.NODE.LEASE", "n1", "3600000"])
        .unwrap();
    let idle = Duration::from_secs(2);

    // A lease renewed through the module (one partition) with a short TTL, after a long
    // idle period: the timer, armed for the net, is re-armed for the new expiry.
    redis
        .cmd(&mut c, &["RC.NODE.LEASE", "r1", "n2", "3600000"])
        .unwrap();
    redis
        .cmd(&mut c, &["RC.JOIN", "r1", "n2", "c2", "cat"])
        .unwrap();
    idles(&mut c, idle);
    let expires = server_ms(&mut c) + 1000;
    redis
        .cmd(&mut c, &["RC.NODE.LEASE", "r1", "n2", "1000"])
        .unwrap();
    let late = swept_after(&mut c, "r1", expires, Duration::from_millis(2000));
    assert!(late >= 0, "r1: swept {late} ms before its expiry");

    // The same through the every-partition form.
    redis
        .cmd(&mut c, &["RC.NODE.LEASE", "n2", "3600000"])
        .unwrap();
    redis
        .cmd(&mut c, &["RC.JOIN", "r2", "n2", "c2", "cat"])
        .unwrap();
    idles(&mut c, idle);
    let expires = server_ms(&mut c) + 800;
    redis.cmd(&mut c, &["RC.NODE.LEASE", "n2", "800"]).unwrap();
    let late = swept_after(&mut c, "r2", expires, Duration::from_millis(2000));
    assert!(late >= 0, "r2: swept {late} ms before its expiry");

    // Written by another client (`HSET`): the keyspace event re-arms the timer.
    redis
        .cmd(&mut c, &["RC.NODE.LEASE", "r3", "n2", "3600000"])
        .unwrap();
    redis
        .cmd(&mut c, &["RC.JOIN", "r3", "n2", "c2", "cat"])
        .unwrap();
    idles(&mut c, idle);
    let expires = server_ms(&mut c) + 500;
    redis::cmd("HSET")
        .arg(keys_of("r3").nodes())
        .arg("n2")
        .arg(expires)
        .query::<()>(&mut c)
        .unwrap();
    let late = swept_after(&mut c, "r3", expires, Duration::from_millis(2000));
    assert!(late >= 0, "r3: swept {late} ms before its expiry");

    // n1 kept its lease all along, and the module's gauges followed.
    let keys = keys_of("r1");
    let kept: bool = redis::cmd("HEXISTS")
        .arg(keys.nodes())
        .arg("n1")
        .query(&mut c)
        .unwrap();
    assert!(kept);
    idles(&mut c, idle);
    let info: String = redis::cmd("INFO").arg("roomcast").query(&mut c).unwrap();
    assert_eq!(info_value(&info, "roomcast_nodes"), "1");
    assert_eq!(info_value(&info, "roomcast_rooms"), "0");
}

#[test]
fn a_promoted_replica_expires_leases_after_its_grace_without_polling() {
    let primary = Redis::start(&[]);
    let replica = Redis::replica_of(&primary, &[]);
    let (mut p, mut r) = (primary.conn(), replica.conn());
    primary
        .cmd(&mut p, &["RC.NODE.LEASE", "n1", "3600000"])
        .unwrap();
    primary
        .cmd(&mut p, &["RC.NODE.LEASE", "r1", "n2", "1500"])
        .unwrap();
    primary
        .cmd(&mut p, &["RC.JOIN", "r1", "n2", "c2", "cat"])
        .unwrap();
    wait_replicas(&mut p, 1);

    // Promoted before n2's lease runs out on the old primary, which no longer reaches it.
    let promoted = server_ms(&mut r);
    redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query::<()>(&mut r)
        .unwrap();
    // Past n2's expiry, the grace keeps it (no edge could renew during a failover), and
    // the timer sleeps through the grace.
    idles(&mut r, Duration::from_secs(2));
    assert_eq!(
        strings(&replica.cmd(&mut r, &["RC.MEMBERS", "r1"]).unwrap()),
        ["c2"]
    );
    // Once the grace is over it is swept, no sooner.
    let grace_ends = promoted + 10_000;
    let late = swept_after(&mut r, "r1", grace_ends, Duration::from_millis(2500));
    assert!(late >= 0, "swept {late} ms before the grace ended");
    let kept: bool = redis::cmd("HEXISTS")
        .arg(keys_of("r1").nodes())
        .arg("n1")
        .query(&mut r)
        .unwrap();
    assert!(kept, "n1's lease must stay");
}
