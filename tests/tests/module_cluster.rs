//! The module under Redis Cluster 7.0: 3 masters + 3 replicas on loopback, the module
//! loaded on every node. Every command lands on the shard owning its partition (Redis
//! routes by argv[1] and answers `MOVED` elsewhere; partition-tagged names route to the
//! partition's slot), inboxes are per partition, lease sweeps run on each shard, kicks
//! reach every node, writes reach each master's replica, and a failover keeps members
//! and starts a new history epoch.
//!
//! Commands go over plain connections (`redis::cmd(…).query`), so redirections come back
//! as `MOVED` errors the tests check themselves. Run with `--nocapture` for the figures.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use redis::{Connection, RedisResult, Value};
use roomcast_common::crc16::key_slot;
use roomcast_common::keys::PartitionKeys;
use roomcast_common::partition::Partitioner;
use roomcast_common::push;
use roomcast_common::stream_id::StreamId;
use roomcast_tests::cluster::{master_of, Cluster, SlotRange};
use roomcast_tests::reply::{array, counts, error_text, int, strings, text};
use roomcast_tests::roomcast::{layout, rc_info, stream, InboxEntry};
use roomcast_tests::{info_value, run};

/// Runs a command that must succeed.
fn ok(conn: &mut Connection, port: u16, args: &[&str]) -> Value {
    run(conn, args).unwrap_or_else(|e| panic!("{args:?} on node {port}: {}", error_text(&e)))
}

/// The 16-partition layout the module uses by default.
fn parts() -> Partitioner {
    layout(16)
}

/// The partition tag of a plain name.
fn tag_of(p: &Partitioner, name: &str) -> String {
    p.tag(p.partition_of(name.as_bytes())).to_string()
}

/// The key builder of a plain name's partition.
fn keys_of(p: &Partitioner, name: &str) -> PartitionKeys {
    PartitionKeys::new(&tag_of(p, name))
}

/// The slot of a plain name's partition (its tag's slot).
fn partition_slot(p: &Partitioner, name: &str) -> u16 {
    key_slot(tag_of(p, name).as_bytes())
}

/// A name `prefix<i>` whose partition is served by `master`; with `plain_there`, the
/// plain name's own slot is served by `master` too (so Redis accepts the plain name
/// there), else by another master.
fn pick(
    map: &[SlotRange],
    p: &Partitioner,
    master: u16,
    prefix: &str,
    plain_there: bool,
) -> String {
    (0..100_000)
        .map(|i| format!("{prefix}{i}"))
        .find(|name| {
            master_of(map, partition_slot(p, name)) == master
                && (master_of(map, key_slot(name.as_bytes())) == master) == plain_there
        })
        .unwrap_or_else(|| panic!("no name {prefix}… in a partition of master {master}"))
}

/// Asserts a `MOVED <slot> 127.0.0.1:<port>` error and returns it.
fn expect_moved(result: RedisResult<Value>, slot: u16, to: u16, what: &str) -> String {
    let err = match result {
        Err(e) => error_text(&e),
        Ok(v) => panic!("{what}: expected MOVED {slot} to {to}, the command ran: {v:?}"),
    };
    assert_eq!(
        err,
        format!("MOVED {slot} 127.0.0.1:{to}"),
        "{what}: wrong redirect"
    );
    err
}

/// Entries of `kind` in a stream.
fn of_kind(entries: &[InboxEntry], kind: &str) -> Vec<InboxEntry> {
    entries
        .iter()
        .filter(|e| e.get("kind") == kind)
        .cloned()
        .collect()
}

/// A node's inbox in the partition of `name` (read on the partition's owner).
fn inbox(conn: &mut Connection, p: &Partitioner, name: &str, node: &str) -> Vec<InboxEntry> {
    stream(conn, &keys_of(p, name).inbox(node))
}

/// `MODULE LIST` names of a node.
fn modules(conn: &mut Connection) -> Vec<String> {
    let reply: Value = redis::cmd("MODULE")
        .arg("LIST")
        .query(conn)
        .expect("MODULE LIST");
    array(&reply)
        .iter()
        .filter_map(|m| {
            let parts = array(m);
            parts
                .chunks(2)
                .find(|kv| text(&kv[0]) == "name")
                .map(|kv| text(&kv[1]))
        })
        .collect()
}

#[test]
fn every_node_loads_the_module_and_partitions_spread_over_the_masters() {
    let cluster = Cluster::start(3, 1, &[]);
    println!(
        "cluster of {} nodes created and settled in {:?}",
        cluster.ports().len(),
        cluster.startup_time()
    );
    let map = cluster.slots();
    let masters = cluster.masters();
    assert_eq!(masters.len(), 3);
    assert_eq!(cluster.ports().len(), 6);
    let p = parts();
    for port in cluster.ports() {
        let mut c = cluster.conn(port);
        assert!(
            modules(&mut c).contains(&"roomcast".to_string()),
            "node {port} lacks the module:\n{}",
            cluster.log(port)
        );
        let info = rc_info(&ok(&mut c, port, &["RC.INFO"]));
        let role = info_value(&text(&ok(&mut c, port, &["INFO", "replication"])), "role");
        assert_eq!(text(&info["inbox"]), "per-partition", "node {port}");
        assert_eq!(int(&info["partitions"]), 16, "node {port}");
        assert_eq!(strings(&info["tags"]), p.tags(), "node {port}");
        println!(
            "node {port} ({role}): roomcast loaded, inbox {}, {} partitions",
            text(&info["inbox"]),
            int(&info["partitions"])
        );
    }

    // Each tag's slot, as the cluster computes it, and the master serving it.
    let mut per_master: BTreeMap<u16, Vec<String>> = masters.iter().map(|m| (*m, vec![])).collect();
    for tag in p.tags() {
        let slot = cluster.key_slot(&format!("{{{tag}}}"));
        assert_eq!(slot, key_slot(tag.as_bytes()), "tag {tag}");
        per_master
            .entry(master_of(&map, slot))
            .or_default()
            .push(format!("{tag}@{slot}"));
    }
    for (master, tags) in &per_master {
        let range: Vec<String> = map
            .iter()
            .filter(|r| r.master == *master)
            .map(|r| format!("{}-{}", r.start, r.end))
            .collect();
        println!(
            "master {master} (slots {}): {} partitions: {}",
            range.join(","),
            tags.len(),
            tags.join(" ")
        );
        assert!(
            (4..=7).contains(&tags.len()),
            "partitions are not spread evenly: master {master} has {}",
            tags.len()
        );
    }
}

#[test]
fn commands_route_to_the_shard_owning_the_partition() {
    let cluster = Cluster::start(3, 1, &[]);
    let map = cluster.slots();
    let masters = cluster.masters();
    let p = parts();
    let owner_port = masters[0];
    // A room whose plain name's slot is on the partition's owner too (so Redis runs the
    // plain name there without a redirect).
    let room = pick(&map, &p, owner_port, "room", true);
    let tagged = p.tagged(&room);
    let slot = partition_slot(&p, &room);
    let plain_slot = key_slot(room.as_bytes());
    let tag_only = format!("{{{}}}", tag_of(&p, &room));
    println!(
        "room {room}: partition {} tag {tag_only} slot {slot} (plain name slot {plain_slot}) \
         on master {owner_port}; tagged name {tagged}",
        p.partition_of(room.as_bytes())
    );

    // Elsewhere: MOVED to the owner, for every form of the routing argument.
    for &other in masters.iter().filter(|m| **m != owner_port) {
        let mut c = cluster.conn(other);
        let cases: [(&[&str], u16); 7] = [
            (&["RC.NODE.LEASE", &tagged, "n1", "60000"], slot),
            (&["RC.NODE.LEASE", &tag_only, "n1", "60000"], slot),
            (&["RC.NODE.LEASE", &room, "n1", "60000"], plain_slot),
            (&["RC.JOIN", &tagged, "n1", "c1", "ann"], slot),
            (&["RC.JOIN", &room, "n1", "c1", "ann"], plain_slot),
            (&["RC.PUBLISH", &tagged, "hello"], slot),
            (&["RC.PUBLISH", &room, "hello"], plain_slot),
        ];
        for (args, want_slot) in cases {
            let moved = expect_moved(
                run(&mut c, args),
                want_slot,
                owner_port,
                &format!("{args:?} on {other}"),
            );
            println!("node {other}: {} → {moved}", args.join(" "));
        }
        // Nothing was written there.
        let stray = int(&ok(
            &mut c,
            other,
            &["CLUSTER", "COUNTKEYSINSLOT", &slot.to_string()],
        ));
        assert_eq!(stray, 0, "node {other} holds keys of slot {slot}");
    }

    // On the owner: the tagged name and the bare tag are the same partition; the plain
    // name is refused even there (its own slot is not the partition's), with the name
    // to use — under Cluster a plain name may reach a shard without its partition.
    let mut c = cluster.conn(owner_port);
    let lease = |c: &mut Connection, name: &str, node: &str| {
        int(&ok(c, owner_port, &["RC.NODE.LEASE", name, node, "60000"]))
    };
    assert_eq!(lease(&mut c, &tagged, "n1"), 1, "a new lease");
    assert_eq!(
        lease(&mut c, &tag_only, "n1"),
        0,
        "the tag renews the same lease"
    );
    assert_eq!(lease(&mut c, &tag_only, "n2"), 1);
    for args in [
        &["RC.NODE.LEASE", &room, "n1", "60000"][..],
        &["RC.JOIN", &room, "n1", "c1", "ann"],
        &["RC.MEMBERS", &room],
        &["RC.PUBLISH", &room, "p0"],
    ] {
        let err = run(&mut c, args).expect_err("plain name under Cluster");
        assert!(
            error_text(&err).contains(&format!("partition-tagged name '{tagged}'")),
            "{args:?}: {}",
            error_text(&err)
        );
    }
    let join = |c: &mut Connection, name: &str, node: &str, conn: &str, user: &str| {
        int(&ok(c, owner_port, &["RC.JOIN", name, node, conn, user]))
    };
    assert_eq!(join(&mut c, &tagged, "n1", "c1", "ann"), 1);
    assert_eq!(join(&mut c, &tagged, "n2", "c2", "bob"), 1);
    assert_eq!(
        join(&mut c, &tagged, "n1", "c1", "ann"),
        0,
        "already a member"
    );
    assert_eq!(
        strings(&ok(&mut c, owner_port, &["RC.MEMBERS", &tagged])),
        ["c1", "c2"]
    );
    assert_eq!(
        strings(&ok(&mut c, owner_port, &["RC.PRESENCE", &tagged])),
        ["ann", "bob"]
    );
    let to_all = ok(&mut c, owner_port, &["RC.PUBLISH", &tagged, "p1"]);
    let by_ann = ok(
        &mut c,
        owner_port,
        &["RC.PUBLISH", &tagged, "p2", "FROM", "ann", "CONN", "c1"],
    );
    println!(
        "on owner {owner_port}: RC.PUBLISH {tagged} → {:?}, … CONN c1 → {:?}",
        counts(&to_all),
        counts(&by_ann)
    );
    assert_eq!(counts(&to_all), (2, 2));
    assert_eq!(counts(&by_ann), (1, 1));
    let n2 = of_kind(&inbox(&mut c, &p, &room, "n2"), "msg");
    assert_eq!(
        n2.iter()
            .map(|e| (e.get("room"), e.get("data")))
            .collect::<Vec<_>>(),
        [
            (room.clone(), "p1".to_string()),
            (room.clone(), "p2".to_string())
        ],
        "the entries name the plain room"
    );
    // Every key the commands wrote is in the partition's slot.
    let keys = int(&ok(
        &mut c,
        owner_port,
        &["CLUSTER", "COUNTKEYSINSLOT", &slot.to_string()],
    ));
    let total = int(&ok(&mut c, owner_port, &["DBSIZE"]));
    println!("owner {owner_port}: {keys} keys in slot {slot}, {total} keys in all");
    assert_eq!(keys, total, "keys outside the partition's slot");
}

/// A plain name whose own slot is served by a different master than its partition: Redis
/// sends it to the plain name's shard, which does not hold the partition. The module
/// must refuse it there (the tagged name is required in cluster mode) — never run on the
/// wrong shard, write stray keys, or answer as if the room were empty.
#[test]
fn a_plain_name_on_a_shard_without_its_partition_is_refused() {
    let cluster = Cluster::start(3, 1, &[]);
    let map = cluster.slots();
    let masters = cluster.masters();
    let p = parts();
    let owner_port = masters[1];
    let room = pick(&map, &p, owner_port, "room", false);
    let tagged = p.tagged(&room);
    let slot = partition_slot(&p, &room);
    let plain_slot = key_slot(room.as_bytes());
    let plain_port = master_of(&map, plain_slot);
    println!(
        "room {room}: partition slot {slot} on master {owner_port}, plain name slot \
         {plain_slot} on master {plain_port}"
    );

    // The real room, addressed by its tagged name on its owner.
    let mut o = cluster.conn(owner_port);
    ok(
        &mut o,
        owner_port,
        &["RC.NODE.LEASE", &tagged, "n1", "60000"],
    );
    ok(&mut o, owner_port, &["RC.JOIN", &tagged, "n1", "c1", "ann"]);
    // The plain name on the owner: Redis redirects it to the plain name's slot.
    expect_moved(
        run(&mut o, &["RC.PUBLISH", &room, "x"]),
        plain_slot,
        plain_port,
        "plain name on the partition owner",
    );

    let mut c = cluster.conn(plain_port);
    let mut failures = Vec::new();
    // The name as a room and as a user (same partition): every command.
    let cases: [&[&str]; 16] = [
        &["RC.NODE.LEASE", &room, "n1", "60000"],
        &["RC.JOIN", &room, "n1", "c2", "bob"],
        &["RC.PUBLISH", &room, "hello"],
        &["RC.MEMBERS", &room],
        &["RC.PRESENCE", &room],
        &["RC.HISTORY", &room],
        &["RC.LEAVE", &room, "n1", "c1"],
        &["RC.CONNECT", &room, "n1", "c3"],
        &["RC.CONNS", &room],
        &["RC.SEND", &room, "hi"],
        &["RC.KICK", &room],
        &["RC.DISCONNECT", &room, "n1", "c1"],
        &["RC.THROTTLE", &room, "1", "1", "1"],
        &["RC.NODE.DOWN", &room, "n1"],
        &["RC.PUBLISH", &room, "hello", "FROM", "ann"],
        &["RC.SEND", &room, "hi", "FROM", "ann"],
    ];
    for args in cases {
        let reply = run(&mut c, args);
        println!(
            "node {plain_port}: {} → {:?}",
            args.join(" "),
            reply.as_ref().map_err(error_text)
        );
        if let Ok(v) = reply {
            failures.push(format!(
                "{} on node {plain_port} (not the partition's owner {owner_port}) answered {v:?} \
                 instead of an error",
                args.join(" ")
            ));
        }
    }
    let stray = int(&ok(
        &mut c,
        plain_port,
        &["CLUSTER", "COUNTKEYSINSLOT", &slot.to_string()],
    ));
    if stray != 0 {
        failures.push(format!(
            "node {plain_port} wrote {stray} keys of slot {slot}, which it does not serve"
        ));
    }
    let pong = text(&ok(&mut c, plain_port, &["PING"]));
    assert_eq!(pong, "PONG", "node {plain_port} survived");
    // The room on its owner is untouched.
    assert_eq!(
        strings(&ok(&mut o, owner_port, &["RC.MEMBERS", &tagged])),
        ["c1"]
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn publish_routes_into_per_partition_inboxes_on_each_shard() {
    let cluster = Cluster::start(3, 1, &[]);
    let map = cluster.slots();
    let p = parts();
    for (i, master) in cluster.masters().into_iter().enumerate() {
        let room = p.tagged(&pick(&map, &p, master, &format!("chat{i}-"), true));
        let plain = room.split_once('}').map(|(_, r)| r.to_string()).unwrap();
        let mut c = cluster.conn(master);
        for node in ["n1", "n2"] {
            assert_eq!(
                int(&ok(
                    &mut c,
                    master,
                    &["RC.NODE.LEASE", &room, node, "60000"]
                )),
                1
            );
        }
        ok(&mut c, master, &["RC.JOIN", &room, "n1", "a1", "ann"]);
        ok(&mut c, master, &["RC.JOIN", &room, "n2", "b1", "bob"]);
        ok(&mut c, master, &["RC.JOIN", &room, "n2", "b2", "bob"]);
        let all = counts(&ok(&mut c, master, &["RC.PUBLISH", &room, "{\"n\":1}"]));
        let from_ann = counts(&ok(
            &mut c,
            master,
            &[
                "RC.PUBLISH",
                &room,
                "{\"n\":2}",
                "FROM",
                "ann",
                "CONN",
                "a1",
            ],
        ));
        assert_eq!(all, (3, 2), "room {room} on {master}");
        assert_eq!(
            from_ann,
            (2, 1),
            "room {room} on {master}: the sender's node gets nothing"
        );

        let n1 = inbox(&mut c, &p, &plain, "n1");
        let n2 = inbox(&mut c, &p, &plain, "n2");
        let data = |entries: &[InboxEntry]| -> Vec<String> {
            of_kind(entries, "msg")
                .iter()
                .map(|e| e.get("data"))
                .collect()
        };
        assert_eq!(data(&n1), ["{\"n\":1}"], "n1's inbox {n1:?}");
        assert_eq!(data(&n2), ["{\"n\":1}", "{\"n\":2}"], "n2's inbox {n2:?}");
        let last = of_kind(&n2, "msg").pop().unwrap();
        assert_eq!(
            (last.get("room"), last.get("from"), last.get("skip")),
            (plain.clone(), "ann".to_string(), "a1".to_string())
        );
        // Join events, once per user (first connection), to every node with members then,
        // the joining connection skipped: n1 heard ann (skip a1) and bob, n2 only bob.
        let joins = |entries: &[InboxEntry]| -> Vec<(String, String)> {
            of_kind(entries, "join")
                .iter()
                .map(|e| (e.get("user"), e.get("skip")))
                .collect()
        };
        assert_eq!(
            joins(&n1),
            [
                ("ann".to_string(), "a1".to_string()),
                ("bob".to_string(), "b1".to_string())
            ]
        );
        assert_eq!(joins(&n2), [("bob".to_string(), "b1".to_string())]);
        let key = keys_of(&p, &plain).inbox("n2");
        println!(
            "master {master}: room {room} (slot {}): publish → {all:?}, with CONN → {from_ann:?}; \
             {key}: {} entries, n1's: {}",
            partition_slot(&p, &plain),
            n2.len(),
            n1.len()
        );
        // A batch carries the rooms of its partition; a room of another partition is
        // refused on its own. n2 gets both of the batch's messages as one `batch` entry.
        let foreign = (0..)
            .map(|i| format!("elsewhere{i}"))
            .find(|r| p.partition_of(r.as_bytes()) != p.partition_of(plain.as_bytes()))
            .unwrap();
        let reply = {
            use redis::ConnectionLike;
            let mut cmd = redis::cmd("RC.PUBLISHM");
            cmd.arg(&room).arg(3);
            for (r, data) in [(&plain, "b1"), (&foreign, "b2"), (&plain, "b3")] {
                cmd.arg(r).arg(data).arg("").arg("");
            }
            c.req_command(&cmd).unwrap()
        };
        let replies = roomcast_tests::reply::array(&reply);
        assert_eq!(counts(&replies[0]), (3, 2), "{reply:?}");
        assert!(
            matches!(&replies[1], Value::ServerError(e) if e.details().unwrap_or("").contains("not in the command's partition")),
            "{reply:?}"
        );
        assert_eq!(counts(&replies[2]), (3, 2), "{reply:?}");
        let batched = of_kind(&inbox(&mut c, &p, &plain, "n2"), "batch");
        let packed: Vec<String> = batched
            .iter()
            .flat_map(|e| {
                roomcast_common::batch::entries(&e.bytes("data"))
                    .map(|m| String::from_utf8_lossy(m.data).into_owned())
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(packed, ["b1", "b3"], "n2's batch entry");

        // The inbox lives on the owner only.
        for other in cluster.masters().into_iter().filter(|m| *m != master) {
            let mut o = cluster.conn(other);
            expect_moved(
                run(&mut o, &["XLEN", &key]),
                partition_slot(&p, &plain),
                master,
                "the inbox on another master",
            );
        }
    }
    for master in cluster.masters() {
        let info = rc_info(&ok(&mut cluster.conn(master), master, &["RC.INFO"]));
        println!(
            "master {master}: published {} routed {} nodes {} connections {} rooms {}",
            int(&info["published"]),
            int(&info["routed"]),
            int(&info["nodes"]),
            int(&info["connections"]),
            int(&info["rooms"])
        );
        assert_eq!(int(&info["published"]), 4, "master {master}");
        assert_eq!(int(&info["rooms"]), 1, "master {master}");
    }
}

/// Under Redis Cluster every inbox append is pushed, in the same command, on the node's
/// live shard channel of the partition (`SSUBSCRIBE`, held by the master serving it),
/// with the entry's id, the inbox's previous id and the entry's fields as the stream
/// holds them; a subscriber of another partition's channel gets none of it.
#[test]
fn every_inbox_append_is_pushed_on_the_partitions_shard_channel() {
    let cluster = Cluster::start(3, 0, &[]);
    let map = cluster.slots();
    let p = parts();
    for (i, master) in cluster.masters().into_iter().enumerate() {
        let room = p.tagged(&pick(&map, &p, master, &format!("live{i}-"), true));
        let plain = room.split_once('}').map(|(_, r)| r.to_string()).unwrap();
        let channel = keys_of(&p, &plain).live("n1");
        let mut sub = cluster.conn(master);
        let confirmed: Value = redis::cmd("SSUBSCRIBE")
            .arg(&channel)
            .query(&mut sub)
            .expect("SSUBSCRIBE");
        assert_eq!(text(&array(&confirmed)[0]), "ssubscribe", "{confirmed:?}");
        sub.set_read_timeout(Some(Duration::from_secs(5))).unwrap();

        let mut c = cluster.conn(master);
        ok(&mut c, master, &["RC.NODE.LEASE", &room, "n1", "60000"]);
        ok(&mut c, master, &["RC.JOIN", &room, "n1", "a1", "ann"]);
        ok(&mut c, master, &["RC.PUBLISH", &room, "{\"n\":1}"]);
        ok(&mut c, master, &["RC.PUBLISH", &room, "not json \u{1}"]);
        ok(&mut c, master, &["RC.PROBE", &room, "n1", "7"]);

        let entries = inbox(&mut c, &p, &plain, "n1");
        assert!(entries.len() >= 3, "{entries:?}");
        let mut prev = StreamId::default();
        for entry in &entries {
            let message = sub.recv_response().expect("a push for every entry");
            let parts = array(&message);
            assert_eq!(text(&parts[0]), "smessage");
            assert_eq!(text(&parts[1]), channel);
            let payload = match &parts[2] {
                Value::BulkString(b) => b.clone(),
                other => panic!("payload {other:?}"),
            };
            let pushed = push::decode(&payload).expect("a well-formed push");
            assert_eq!(pushed.id.to_string(), entry.id);
            assert_eq!(pushed.prev, prev, "previous id of {}", entry.id);
            let fields: Vec<&[u8]> = pushed.fields().collect();
            let want: Vec<&[u8]> = entry
                .fields
                .iter()
                .flat_map(|(f, v)| [f.as_bytes(), v.as_slice()])
                .collect();
            assert_eq!(fields, want);
            prev = pushed.id;
        }
        sub.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        assert!(sub.recv_response().is_err(), "one push per entry");
    }
}

#[test]
fn expired_leases_are_swept_on_each_shard() {
    let cluster = Cluster::start(3, 1, &[]);
    let map = cluster.slots();
    let masters = cluster.masters();
    let p = parts();
    let shards: Vec<(u16, String)> = masters[..2]
        .iter()
        .enumerate()
        .map(|(i, m)| {
            (
                *m,
                p.tagged(&pick(&map, &p, *m, &format!("sweep{i}-"), true)),
            )
        })
        .collect();
    // The lease in every partition at once needs every partition on one server:
    // refused under Cluster, where each partition's lease goes to its own shard.
    let owner = cluster.owner_of_key("n3");
    let refused = run(&mut cluster.conn(owner), &["RC.NODE.LEASE", "n3", "300"])
        .expect_err("the partition-less lease under Cluster");
    assert!(
        error_text(&refused).contains("under Redis Cluster renew each partition"),
        "{}",
        error_text(&refused)
    );
    let mut leased_at = BTreeMap::new();
    for (master, room) in &shards {
        let mut c = cluster.conn(*master);
        ok(&mut c, *master, &["RC.NODE.LEASE", room, "n1", "60000"]);
        ok(&mut c, *master, &["RC.NODE.LEASE", room, "n3", "300"]);
        leased_at.insert(*master, Instant::now());
        ok(&mut c, *master, &["RC.JOIN", room, "n1", "a1", "ann"]);
        ok(&mut c, *master, &["RC.JOIN", room, "n3", "c1", "cat"]);
        ok(&mut c, *master, &["RC.JOIN", room, "n3", "c2", "cat"]);
        assert_eq!(
            strings(&ok(&mut c, *master, &["RC.PRESENCE", room])),
            ["ann", "cat"]
        );
    }

    // n3 never renews: each owner sweeps it on its own.
    let mut swept_after = BTreeMap::new();
    let deadline = leased_at[&shards[0].0] + Duration::from_millis(1500);
    while swept_after.len() < shards.len() {
        for (master, room) in &shards {
            if swept_after.contains_key(master) {
                continue;
            }
            let mut c = cluster.conn(*master);
            let members = strings(&ok(&mut c, *master, &["RC.MEMBERS", room]));
            let presence = strings(&ok(&mut c, *master, &["RC.PRESENCE", room]));
            if members == ["a1"] && presence == ["ann"] {
                swept_after.insert(*master, leased_at[master].elapsed());
            }
        }
        assert!(
            Instant::now() < deadline || swept_after.len() == shards.len(),
            "n3 (lease 300 ms) not swept within 1.5 s on every shard: swept on {swept_after:?}\n{}",
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    for (master, room) in &shards {
        let plain = room.split_once('}').map(|(_, r)| r.to_string()).unwrap();
        let mut c = cluster.conn(*master);
        let leaves: Vec<(String, String)> = of_kind(&inbox(&mut c, &p, &plain, "n1"), "leave")
            .iter()
            .map(|e| (e.get("room"), e.get("user")))
            .collect();
        assert_eq!(
            leaves,
            [(plain.clone(), "cat".to_string())],
            "n1's leave events on {master}"
        );
        let info = rc_info(&ok(&mut c, *master, &["RC.INFO"]));
        assert_eq!(int(&info["swept_nodes"]), 1, "master {master}");
        // n3 is unknown there now: a lease is new again.
        assert_eq!(
            int(&ok(
                &mut c,
                *master,
                &["RC.NODE.LEASE", room, "n3", "60000"]
            )),
            1
        );
        println!(
            "master {master}: n3 swept from {room} {:?} after its lease, n1 got {leaves:?}",
            swept_after[master]
        );
    }
    let third = masters[2];
    let info = rc_info(&ok(&mut cluster.conn(third), third, &["RC.INFO"]));
    assert_eq!(
        int(&info["swept_nodes"]),
        0,
        "master {third} had nothing to sweep"
    );
}

#[test]
fn a_kick_reaches_every_node_holding_the_user() {
    let cluster = Cluster::start(3, 1, &[]);
    let map = cluster.slots();
    let masters = cluster.masters();
    let p = parts();
    for (i, &master) in masters[..2].iter().enumerate() {
        let plain = pick(&map, &p, master, &format!("user{i}-"), true);
        let user = p.tagged(&plain);
        let slot = partition_slot(&p, &plain);
        let mut c = cluster.conn(master);
        for node in ["n1", "n2", "n3"] {
            ok(&mut c, master, &["RC.NODE.LEASE", &user, node, "60000"]);
        }
        ok(&mut c, master, &["RC.CONNECT", &user, "n1", "c1"]);
        ok(&mut c, master, &["RC.CONNECT", &user, "n2", "c2"]);
        ok(&mut c, master, &["RC.CONNECT", &user, "n2", "c3"]);
        // A room elsewhere does not matter: kicks follow the user's connections.
        let other = masters[(i + 1) % masters.len()];
        expect_moved(
            run(
                &mut cluster.conn(other),
                &["RC.KICK", &user, "REASON", "bye"],
            ),
            slot,
            master,
            "RC.KICK on another master",
        );
        let reply = counts(&ok(&mut c, master, &["RC.KICK", &user, "REASON", "bye"]));
        assert_eq!(reply, (3, 2), "RC.KICK {user} on {master}");
        for node in ["n1", "n2"] {
            let kicks: Vec<(String, String, String)> =
                of_kind(&inbox(&mut c, &p, &plain, node), "kick")
                    .iter()
                    .map(|e| (e.get("user"), e.get("conn"), e.get("reason")))
                    .collect();
            assert_eq!(
                kicks,
                [(plain.clone(), String::new(), "bye".to_string())],
                "{node}'s inbox in {}",
                keys_of(&p, &plain).prefix()
            );
        }
        assert!(
            of_kind(&inbox(&mut c, &p, &plain, "n3"), "kick").is_empty(),
            "n3 holds no connection of {user}"
        );
        println!(
            "master {master}: RC.KICK {user} → {reply:?}; kick entries in {} and {}",
            keys_of(&p, &plain).inbox("n1"),
            keys_of(&p, &plain).inbox("n2")
        );
    }
}

#[test]
fn writes_reach_the_replica_of_their_shard() {
    let cluster = Cluster::start(3, 1, &[]);
    let map = cluster.slots();
    let p = parts();
    for (i, master) in cluster.masters().into_iter().enumerate() {
        let room = p.tagged(&pick(&map, &p, master, &format!("repl{i}-"), true));
        let plain = room.split_once('}').map(|(_, r)| r.to_string()).unwrap();
        let mut c = cluster.conn(master);
        for node in ["n1", "n2"] {
            ok(&mut c, master, &["RC.NODE.LEASE", &room, node, "60000"]);
        }
        ok(&mut c, master, &["RC.CONNECT", &room, "n1", "a1"]);
        for (node, conn, user) in [
            ("n1", "a1", "ann"),
            ("n2", "b1", "bob"),
            ("n2", "b2", "cat"),
        ] {
            ok(&mut c, master, &["RC.JOIN", &room, node, conn, user]);
        }
        ok(&mut c, master, &["RC.LEAVE", &room, "n2", "b2"]);
        ok(
            &mut c,
            master,
            &["RC.PUBLISH", &room, "hello", "FROM", "ann", "CONN", "a1"],
        );
        let acked = int(&ok(&mut c, master, &["WAIT", "1", "1000"]));
        assert_eq!(acked, 1, "WAIT on master {master}");

        let replicas = cluster.replicas_of(master);
        assert_eq!(replicas.len(), 1, "replicas of {master}");
        let replica = replicas[0];
        let mut r = cluster.conn(replica);
        // Without READONLY a replica redirects to its master.
        expect_moved(
            run(&mut r, &["RC.MEMBERS", &room]),
            partition_slot(&p, &plain),
            master,
            "RC.MEMBERS on a replica without READONLY",
        );
        ok(&mut r, replica, &["READONLY"]);
        for cmd in ["RC.MEMBERS", "RC.PRESENCE"] {
            let on_master = strings(&ok(&mut c, master, &[cmd, &room]));
            let on_replica = strings(&ok(&mut r, replica, &[cmd, &room]));
            assert_eq!(
                on_replica, on_master,
                "{cmd} {room}: replica {replica} vs master {master}"
            );
        }
        assert_eq!(
            strings(&ok(&mut r, replica, &["RC.MEMBERS", &room])),
            ["a1", "b1"]
        );
        let key = keys_of(&p, &plain).inbox("n2");
        let ids = |c: &mut Connection| {
            stream(c, &key)
                .iter()
                .map(|e| e.id.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(&mut r), ids(&mut c), "{key} on the replica");
        let digest = |c: &mut Connection, port| text(&ok(c, port, &["DEBUG", "DIGEST"]));
        let (dm, dr) = (digest(&mut c, master), digest(&mut r, replica));
        assert_eq!(
            dr, dm,
            "DEBUG DIGEST of replica {replica} vs master {master}"
        );
        println!(
            "master {master} → replica {replica}: WAIT → {acked}, RC.MEMBERS {room} = {:?} on both, \
             {key}: {} entries on both, digest {dm}",
            strings(&ok(&mut r, replica, &["RC.MEMBERS", &room])),
            ids(&mut r).len()
        );
    }
}

/// `(epoch, seq)` of an offset `<epoch>:<seq>`.
fn split_offset(v: &Value) -> (String, u64) {
    let offset = text(v);
    let (epoch, seq) = offset
        .split_once(':')
        .unwrap_or_else(|| panic!("offset {offset}"));
    (epoch.to_string(), seq.parse().expect("seq"))
}

#[test]
fn a_failover_keeps_members_and_starts_a_new_epoch() {
    let args = ["history-len", "100"];
    let mut cluster = Cluster::start(3, 1, &args);
    let map = cluster.slots();
    let masters = cluster.masters();
    let p = parts();
    let master = masters[0];
    let replica = cluster.replicas_of(master)[0];
    let plain = pick(&map, &p, master, "fail", true);
    let room = p.tagged(&plain);
    let slot = partition_slot(&p, &plain);

    let mut c = cluster.conn(master);
    for node in ["n1", "n2"] {
        ok(&mut c, master, &["RC.NODE.LEASE", &room, node, "60000"]);
    }
    ok(&mut c, master, &["RC.JOIN", &room, "n1", "a1", "ann"]);
    ok(&mut c, master, &["RC.JOIN", &room, "n2", "b1", "bob"]);
    let old: Vec<(String, u64)> = (1..=2)
        .map(|i| {
            let reply = ok(&mut c, master, &["RC.PUBLISH", &room, &format!("old {i}")]);
            split_offset(&array(&reply)[2])
        })
        .collect();
    assert_eq!(old[1], (old[0].0.clone(), old[0].1 + 1));
    assert_eq!(int(&ok(&mut c, master, &["WAIT", "1", "1000"])), 1);
    let members = strings(&ok(&mut c, master, &["RC.MEMBERS", &room]));
    drop(c);

    let killed_at = Instant::now();
    cluster.kill_node(master);
    let settled = cluster.wait_ok(Duration::from_secs(10), |map| {
        if map.iter().any(|r| r.master == master) {
            return Err(format!("the dead master {master} still serves slots"));
        }
        match master_of(map, slot) {
            o if o == replica => Ok(()),
            o => Err(format!(
                "slot {slot} is served by {o}, not the replica {replica}"
            )),
        }
    });
    let took = killed_at.elapsed();
    if let Err(why) = settled {
        panic!("no failover within 10 s: {why}\n{}", cluster.logs());
    }
    println!("SIGKILL of master {master}: replica {replica} serves its slots, cluster_state:ok everywhere after {took:?}");

    let mut r = cluster.conn(replica);
    assert_eq!(
        info_value(
            &text(&ok(&mut r, replica, &["INFO", "replication"])),
            "role"
        ),
        "master"
    );
    assert_eq!(
        strings(&ok(&mut r, replica, &["RC.MEMBERS", &room])),
        members,
        "members after the failover"
    );
    assert_eq!(
        strings(&ok(&mut r, replica, &["RC.PRESENCE", &room])),
        ["ann", "bob"]
    );
    // The edges' leases survived: renewing is not a new lease.
    assert_eq!(
        int(&ok(
            &mut r,
            replica,
            &["RC.NODE.LEASE", &room, "n1", "60000"]
        )),
        0
    );
    // Other masters now send the room to the promoted replica.
    expect_moved(
        run(&mut cluster.conn(masters[1]), &["RC.PUBLISH", &room, "x"]),
        slot,
        replica,
        "RC.PUBLISH on another master after the failover",
    );
    // What it holds of the old epoch is still replayed.
    let since = format!("{}:{}", old[0].0, old[0].1);
    let replay = ok(
        &mut r,
        replica,
        &["RC.JOIN", &room, "n2", "b2", "bob", "SINCE", &since],
    );
    let replay = array(&replay);
    assert_eq!(
        int(&replay[1]),
        1,
        "recovered from the old epoch: {replay:?}"
    );
    assert_eq!(split_offset(&replay[2]), old[1], "cut at the old position");

    let reply = ok(
        &mut r,
        replica,
        &["RC.PUBLISH", &room, "new 1", "FROM", "ann", "CONN", "a1"],
    );
    let new = split_offset(&array(&reply)[2]);
    println!(
        "before: offsets {:?}; after the failover RC.PUBLISH on {replica} → {:?}, offset {new:?}",
        old,
        counts(&reply)
    );
    assert_eq!(
        counts(&reply),
        (2, 1),
        "routed to bob's two connections on n2"
    );
    assert_ne!(new.0, old[0].0, "a promoted replica starts a new epoch");
    assert_eq!(new.1, 1, "the new epoch counts from 1");
    let last = of_kind(&inbox(&mut r, &p, &plain, "n2"), "msg")
        .pop()
        .expect("a msg entry");
    assert_eq!(
        (last.get("data"), last.get("offset")),
        ("new 1".to_string(), format!("{}:{}", new.0, new.1))
    );
    assert!(
        cluster.log(replica).contains("became a primary: new era"),
        "{}",
        cluster.log(replica)
    );
}
