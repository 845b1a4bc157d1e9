//! Leases: the module timer sweeps nodes that stop renewing, with no edge alive.

use std::time::{Duration, Instant};

use roomcast_tests::reply::{int, ints, strings};
use roomcast_tests::roomcast::{inbox, keys_of};
use roomcast_tests::Redis;

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
