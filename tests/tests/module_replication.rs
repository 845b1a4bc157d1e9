//! Replication and persistence: every write reaches a replica and the AOF as effects,
//! and the state survives `DEBUG RELOAD` and an AOF restart.

use std::time::Duration;

use redis::Connection;
use roomcast_tests::reply::strings;
use roomcast_tests::roomcast::{digest, inbox, wait_replicas, write_commands};
use roomcast_tests::Redis;

const POLICY: &[&str] = &[
    "publish-rate",
    "1",
    "publish-burst",
    "1",
    "ban-after",
    "2",
    "ban-ms",
    "60000",
    "history-len",
    "100",
];

/// One call to every write command the module registers (and some error paths).
const WRITES: &[&[&str]] = &[
    &["RC.NODE.LEASE", "lobby", "n1", "60000"],
    &["RC.NODE.LEASE", "lobby", "n2", "60000"],
    &["RC.NODE.LEASE", "ann", "n1", "60000"],
    &["RC.NODE.LEASE", "bob", "n2", "60000"],
    &["RC.CONNECT", "ann", "n1", "a1", "META", "{\"app\":\"web\"}"],
    &["RC.CONNECT", "bob", "n2", "b1"],
    &["RC.JOIN", "lobby", "n1", "a1", "ann"],
    &["RC.JOIN", "lobby", "n2", "b1", "bob"],
    &["RC.JOIN", "lobby", "n2", "b2", "bob"],
    &[
        "RC.PUBLISH",
        "lobby",
        "{\"n\":1}",
        "FROM",
        "ann",
        "CONN",
        "a1",
    ],
    &["RC.PUBLISH", "lobby", "{\"n\":2}"],
    // A batch: one entry per node (a `batch` entry where a node gets several), rooms of
    // any partition on a standalone server, a refused message among them.
    &[
        "RC.PUBLISHM",
        "lobby",
        "3",
        "lobby",
        "{\"n\":3}",
        "ann",
        "a1",
        "lobby",
        "{\"n\":4}",
        "",
        "",
        "",
        "x",
        "",
        "",
    ],
    &["RC.JOIN", "lobby", "n1", "a2", "ann", "SINCE", "$"],
    &["RC.SEND", "bob", "psst", "FROM", "cat"],
    &["RC.THROTTLE", "api:ann", "5", "1", "3600"],
    &["RC.THROTTLE", "api:ann", "5", "1", "3600", "3"],
    &["RC.PUBLISH", "lobby", "x", "FROM", "dan"],
    &["RC.PUBLISH", "lobby", "x", "FROM", "dan"],
    &["RC.PUBLISH", "lobby", "x", "FROM", "dan"],
    &["RC.PUBLISH", "lobby", "x", "FROM", "dan"],
    &["RC.KICK", "bob", "REASON", "bye"],
    // The edge's liveness probe: appended (and pushed) like any inbox entry.
    &["RC.PROBE", "lobby", "n2", "1"],
    &["RC.LEAVE", "lobby", "n2", "b2"],
    &["RC.LEAVE", "lobby", "n2", "b1"],
    &["RC.DISCONNECT", "bob", "n2", "b1"],
    &["RC.NODE.DOWN", "lobby", "n1"],
    // The lease in every partition at once: new in lobby's partition (n1 just went
    // down there), renewed in the others, each as an absolute expiry.
    &["RC.NODE.LEASE", "n1", "60000"],
    &["RC.NODE.LEASE", "n9", "60000"],
];

/// What an edge or backend can observe: members, presence, history and inbox contents.
fn observable(conn: &mut Connection) -> Vec<String> {
    let mut out = Vec::new();
    for cmd in ["RC.MEMBERS", "RC.PRESENCE", "RC.HISTORY"] {
        let v: redis::Value = redis::cmd(cmd).arg("lobby").query(conn).unwrap();
        out.push(format!("{cmd} {v:?}"));
    }
    for (name, node) in [
        ("lobby", "n1"),
        ("lobby", "n2"),
        ("ann", "n1"),
        ("bob", "n2"),
    ] {
        out.push(format!("{name}/{node} {:?}", inbox(conn, name, node)));
    }
    out
}

#[test]
fn a_replica_equals_its_primary_after_every_write_command() {
    let primary = Redis::start(POLICY);
    let replica = Redis::replica_of(&primary, POLICY);
    let (mut p, mut r) = (primary.conn(), replica.conn());
    for step in WRITES {
        let _ = primary.cmd(&mut p, step);
        wait_replicas(&mut p, 1);
        assert_eq!(
            digest(&mut p),
            digest(&mut r),
            "dataset differs after {step:?}"
        );
        assert_eq!(observable(&mut p), observable(&mut r), "after {step:?}");
    }

    // The lease sweep's effects replicate too.
    primary
        .cmd(&mut p, &["RC.NODE.LEASE", "lobby", "n3", "200"])
        .unwrap();
    primary
        .cmd(&mut p, &["RC.JOIN", "lobby", "n3", "c3", "cat"])
        .unwrap();
    std::thread::sleep(Duration::from_millis(600));
    assert!(strings(&primary.cmd(&mut p, &["RC.MEMBERS", "lobby"]).unwrap()).is_empty());
    wait_replicas(&mut p, 1);
    assert_eq!(
        digest(&mut p),
        digest(&mut r),
        "dataset differs after the sweep"
    );
    assert_eq!(observable(&mut p), observable(&mut r));
    // Reads work on the replica; writes are refused there.
    assert!(replica.cmd(&mut r, &["RC.MEMBERS", "lobby"]).is_ok());
    assert!(replica
        .cmd(&mut r, &["RC.NODE.LEASE", "lobby", "n9", "1000"])
        .is_err());
}

#[test]
fn state_survives_debug_reload() {
    let redis = Redis::start(POLICY);
    let mut c = redis.conn();
    for step in WRITES.iter().take(19) {
        let _ = redis.cmd(&mut c, step);
    }
    let (before, seen) = (digest(&mut c), observable(&mut c));
    redis.cmd(&mut c, &["DEBUG", "RELOAD"]).unwrap();
    assert_eq!(digest(&mut c), before);
    assert_eq!(observable(&mut c), seen);
}

#[test]
fn state_survives_an_aof_restart() {
    let mut redis = Redis::start_with(POLICY, &["--appendonly", "yes", "--appendfsync", "always"]);
    let mut c = redis.conn();
    for step in WRITES.iter().take(19) {
        let _ = redis.cmd(&mut c, step);
    }
    let (before, seen) = (digest(&mut c), observable(&mut c));
    drop(c);
    redis.restart_with(&[]);
    let mut c = redis.conn();
    assert_eq!(
        digest(&mut c),
        before,
        "AOF replay differs:\n{}",
        redis.log()
    );
    assert_eq!(observable(&mut c), seen);
    // The restarted server keeps routing.
    redis
        .cmd(&mut c, &["RC.PUBLISH", "lobby", "after"])
        .unwrap();
}

#[test]
fn every_write_command_the_module_registers_is_covered_above() {
    let redis = Redis::start(&[]);
    let mut c = redis.conn();
    let covered: std::collections::HashSet<String> =
        WRITES.iter().map(|step| step[0].to_lowercase()).collect();
    let writes = write_commands(&mut c);
    // lease, down, connect, disconnect, join, leave, publish, publishm, send, kick,
    // throttle, probe.
    assert_eq!(writes.len(), 12, "{writes:?}");
    let uncovered: Vec<_> = writes.iter().filter(|w| !covered.contains(*w)).collect();
    assert!(
        uncovered.is_empty(),
        "write commands not covered by the replica test: {uncovered:?}"
    );
}
