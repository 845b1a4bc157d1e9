//! Edges on Redis Cluster end to end: a real 3-master cluster (with the module on every
//! node), edges given one node's address (`--redis redis://…`), real WebSocket clients.
//!
//! The core scenarios of the edge suite rerun with rooms and users spread over all three
//! shards: cross-edge delivery with exact bytes and sender exclusion, join/leave events,
//! presence, direct messages, history, kicks, a drained edge and a crashed edge. Each
//! edge worker follows its inboxes through their live shard channels (one subscribed
//! client per master). Then a master is
//! SIGKILLed under traffic: its replica is promoted, the edges follow, presence stays
//! intact and no subscriber has an undetected gap (U = 0).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use redis::Value;
use roomcast_common::partition::Partitioner;
use roomcast_tests::cluster::Cluster;
use roomcast_tests::edge::{join, request, Edge, ANONYMOUS_UNLIMITED};
use roomcast_tests::offsets::gaps;
use roomcast_tests::redis_url;
use roomcast_tests::reply::strings;
use roomcast_tests::traffic::{publish_steadily, subscribe, Pace, Seen};
use roomcast_tests::ws::WsClient;
use serde_json::json;

const T: Duration = Duration::from_secs(5);
const MODULE: &[&str] = &["history-len", "100000"];

fn layout() -> Partitioner {
    Partitioner::new(16).expect("layout")
}

/// One name per master (see [`Cluster::one_name_per_master`]).
fn one_per_master(cluster: &Cluster, prefix: &str) -> Vec<String> {
    cluster.one_name_per_master(&layout(), prefix)
}

/// `RC.PRESENCE` of `room`, asked on the master serving it.
fn presence(cluster: &Cluster, room: &str) -> Vec<String> {
    let tagged = layout().tagged(room);
    let owner = cluster.owner_of_key(&tagged);
    let reply: Value = redis::cmd("RC.PRESENCE")
        .arg(&tagged)
        .query(&mut cluster.conn(owner))
        .unwrap_or_else(|e| panic!("RC.PRESENCE {tagged} on {owner}: {e}"));
    let mut users = strings(&reply);
    users.sort();
    users
}

/// How many clients of the node on `port` hold shard channel subscriptions
/// (`CLIENT LIST`'s `ssub`).
fn subscribers_on(cluster: &Cluster, port: u16) -> usize {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query(&mut cluster.conn(port))
        .expect("CLIENT LIST");
    list.lines()
        .filter(|l| {
            l.split(' ')
                .find_map(|field| field.strip_prefix("ssub="))
                .and_then(|n| n.parse::<u32>().ok())
                .is_some_and(|n| n > 0)
        })
        .count()
}

fn next_event(client: &mut WsClient, op: &str) -> serde_json::Value {
    client
        .recv_json_where(T, |m| m["op"] == op)
        .unwrap_or_else(|e| panic!("no {op} within {T:?}: {e}"))
}

#[test]
fn edges_on_a_cluster_run_the_core_scenarios_across_all_shards() {
    let cluster = Cluster::start(3, 0, MODULE);
    let ports = cluster.masters();
    // Each edge knows a different node; the cluster tells them the rest.
    let a = Edge::start_on(&redis_url(ports[0]), "ca", 1000, ANONYMOUS_UNLIMITED);
    let b = Edge::start_on(&redis_url(ports[2]), "cb", 1000, ANONYMOUS_UNLIMITED);
    assert!(a.banner.contains("redis cluster via"), "{}", a.banner);

    // One subscriber per worker, holding the live shard channels of its partitions on
    // the masters serving them: every master has one shard-subscribed client from each
    // edge.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let counts: Vec<usize> = ports.iter().map(|p| subscribers_on(&cluster, *p)).collect();
        if counts.iter().all(|c| *c == 2) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "shard-subscribed clients per master: {counts:?} (want 2 each)\n{}",
            a.log()
        );
        thread::sleep(Duration::from_millis(100));
    }

    let rooms = one_per_master(&cluster, "room");
    let users = one_per_master(&cluster, "user");
    let (ann_name, bob_name) = (&users[0], &users[1]);
    let (mut ann, welcome) = a.connect(ann_name);
    assert_eq!(welcome["op"], "welcome", "{welcome}");
    let (mut bob, _) = b.connect(bob_name);
    for (i, room) in rooms.iter().enumerate() {
        join(&mut ann, room, 10 + i as u64);
        join(&mut bob, room, 20 + i as u64);
        let joined = next_event(&mut ann, "joined");
        assert_eq!(joined, json!({"op":"joined","room":room,"user":bob_name}));
        assert_eq!(presence(&cluster, room), {
            let mut v = vec![ann_name.clone(), bob_name.clone()];
            v.sort();
            v
        });
    }

    // Messages in rooms on every shard reach the other edge with their exact bytes; the
    // sender's own connection gets none.
    let mut offsets = Vec::new();
    for (i, room) in rooms.iter().enumerate() {
        let payload = format!(r#"{{"text":"héllo","shard":{i},"n":[1,2.5,null]}}"#);
        ann.send_text(&format!(
            r#"{{"op":"publish","room":"{room}","id":{},"data":{payload}}}"#,
            30 + i
        ))
        .unwrap();
        let ack = ann.recv_json_where(T, |m| m["id"] == 30 + i).unwrap();
        assert_eq!(ack["op"], "ack", "{ack}");
        offsets.push(ack["offset"].as_str().expect("offset").to_string());
        let raw = loop {
            match bob.recv(T).expect("message") {
                roomcast_tests::ws::Message::Text(t) if t.contains("\"message\"") => break t,
                _ => continue,
            }
        };
        assert!(raw.contains(&format!(r#""data":{payload}"#)), "{raw}");
        let msg: serde_json::Value = serde_json::from_str(&raw).unwrap();
        assert_eq!(
            (msg["room"].as_str(), msg["from"].as_str()),
            (Some(room.as_str()), Some(ann_name.as_str()))
        );
        assert_eq!(msg["offset"], ack["offset"]);
    }
    assert!(ann
        .recv_json_where(Duration::from_millis(300), |m| m["op"] == "message")
        .is_err());

    // A direct message to a user whose partition is on another shard than the sender's.
    let reply = request(
        &mut bob,
        json!({"op":"send","user":ann_name,"data":{"hi":1}}),
        40,
    );
    assert_eq!(reply["op"], "ack", "{reply}");
    let direct = next_event(&mut ann, "direct");
    assert_eq!(
        direct,
        json!({"op":"direct","from":bob_name,"data":{"hi":1}})
    );

    // History of each room, from the shard that holds it.
    for (i, room) in rooms.iter().enumerate() {
        let reply = request(&mut bob, json!({"op":"history","room":room}), 50 + i as u64);
        assert_eq!(reply["op"], "ack", "{reply}");
        let messages = reply["messages"].as_array().expect("messages");
        assert_eq!(messages.len(), 1, "{reply}");
        assert_eq!(messages[0]["offset"], json!(offsets[i]));
        let reply = request(
            &mut ann,
            json!({"op":"presence","room":room}),
            60 + i as u64,
        );
        let mut present: Vec<String> = reply["users"]
            .as_array()
            .expect("users")
            .iter()
            .filter_map(|u| u.as_str().map(String::from))
            .collect();
        present.sort();
        assert_eq!(present.len(), 2, "{reply}");
    }

    // A third user on a third edge; a backend kicks it (RC.KICK on its partition's shard).
    let c = Edge::start_on(&redis_url(ports[1]), "cc", 1000, ANONYMOUS_UNLIMITED);
    let carl_name = &users[2];
    let (mut carl, _) = c.connect(carl_name);
    join(&mut carl, &rooms[2], 70);
    next_event(&mut ann, "joined");
    let tagged = layout().tagged(carl_name);
    let owner = cluster.owner_of_key(&tagged);
    let _: Value = redis::cmd("RC.KICK")
        .arg(&tagged)
        .arg("REASON")
        .arg("bye")
        .query(&mut cluster.conn(owner))
        .expect("RC.KICK");
    let (code, reason) = carl.expect_close(T).expect("kicked");
    assert_eq!((code, reason.as_str()), (Some(1008), "bye"));
    let left = next_event(&mut ann, "left");
    assert_eq!(left, json!({"op":"left","room":rooms[2],"user":carl_name}));
    drop(c);

    // An edge drained with SIGTERM: its user leaves every room at once.
    let mut b = b;
    b.signal("TERM");
    let (code, _) = bob.expect_close(T).expect("drained");
    assert_eq!(code, Some(1012));
    let mut left_rooms = BTreeSet::new();
    for _ in &rooms {
        let left = next_event(&mut ann, "left");
        assert_eq!(left["user"], json!(bob_name));
        left_rooms.insert(left["room"].as_str().unwrap_or_default().to_string());
    }
    assert_eq!(left_rooms, rooms.iter().cloned().collect::<BTreeSet<_>>());
    assert!(b.wait_exit(T).is_some_and(|s| s.success()));

    // A crashed edge: each shard's sweep removes its user within about a lease.
    let d = Edge::start_on(&redis_url(ports[1]), "cd", 1000, ANONYMOUS_UNLIMITED);
    let (mut dan, _) = d.connect("dan");
    for (i, room) in rooms.iter().enumerate() {
        join(&mut dan, room, 80 + i as u64);
        next_event(&mut ann, "joined");
    }
    let mut d = d;
    d.kill();
    let mut left_rooms = BTreeSet::new();
    for _ in &rooms {
        let left = ann
            .recv_json_where(Duration::from_secs(10), |m| m["op"] == "left")
            .expect("left after the crash");
        assert_eq!(left["user"], "dan");
        left_rooms.insert(left["room"].as_str().unwrap_or_default().to_string());
    }
    assert_eq!(left_rooms, rooms.iter().cloned().collect::<BTreeSet<_>>());
    for room in &rooms {
        assert_eq!(presence(&cluster, room), vec![ann_name.clone()]);
    }
}

#[test]
fn a_master_killed_under_traffic_is_followed_with_presence_intact_and_no_undetected_gap() {
    let mut cluster = Cluster::start(3, 1, MODULE);
    let masters = cluster.masters();
    let edges = [
        Edge::start_on(&redis_url(masters[0]), "ka", 3000, ANONYMOUS_UNLIMITED),
        Edge::start_on(&redis_url(masters[1]), "kb", 3000, ANONYMOUS_UNLIMITED),
    ];
    let rooms = one_per_master(&cluster, "feed");
    let victim = masters[0];
    let promoted = cluster.replicas_of(victim)[0];

    let stop = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    let mut users = BTreeSet::new();
    for i in 0..12 {
        let user = format!("sub{i}");
        let (mut client, _) = edges[i % 2].connect(&user);
        for (r, room) in rooms.iter().enumerate() {
            join(&mut client, room, 1 + r as u64);
        }
        readers.push(subscribe(client, stop.clone()));
        users.insert(user);
    }
    let (mut publisher, _) = edges[1].connect("pub");
    for (r, room) in rooms.iter().enumerate() {
        join(&mut publisher, room, 1 + r as u64);
    }
    users.insert("pub".to_string());
    let stop_publishing = Arc::new(AtomicBool::new(false));
    let pace = Pace {
        every: Duration::from_millis(5),
        answer_within: Duration::from_secs(15),
        first_id: 1000,
    };
    let publisher = publish_steadily(publisher, rooms.clone(), pace, stop_publishing.clone());
    thread::sleep(Duration::from_secs(2));

    let killed_at = Instant::now();
    cluster.kill_node(victim);
    let settled = cluster.wait_ok(Duration::from_secs(15), |map| {
        if map.iter().any(|r| r.master == victim) {
            return Err(format!("the dead master {victim} still serves slots"));
        }
        Ok(())
    });
    if let Err(why) = settled {
        panic!("no failover within 15 s: {why}\n{}", cluster.logs());
    }
    let failed_over_at = Instant::now();
    thread::sleep(Duration::from_secs(6));
    stop_publishing.store(true, Ordering::Relaxed);
    let (published, _publisher_conn) = publisher.join().expect("publisher");
    thread::sleep(Duration::from_millis(500));
    let present: Vec<BTreeSet<String>> = rooms
        .iter()
        .map(|room| presence(&cluster, room).into_iter().collect())
        .collect();
    stop.store(true, Ordering::Relaxed);
    let (seen, _open): (Vec<Seen>, Vec<WsClient>) = readers
        .into_iter()
        .map(|r| r.join().expect("subscriber"))
        .unzip();
    let logs = || format!("{}\n----\n{}", edges[0].log(), edges[1].log());

    // U = 0 in every room, for every subscriber.
    let mut undetected = 0;
    let mut resyncs_in_victim_room = Vec::new();
    for s in &seen {
        for (room, messages) in &s.messages {
            let (u, r) = gaps(messages);
            undetected += u;
            if *room == rooms[0] {
                resyncs_in_victim_room.push(r);
            }
        }
    }
    // L: acknowledged messages no subscriber received.
    let received: BTreeSet<(String, String, u64)> = seen
        .iter()
        .flat_map(|s| {
            s.messages
                .iter()
                .flat_map(|(room, m)| m.iter().map(move |(e, q, _)| (room.clone(), e.clone(), *q)))
        })
        .collect();
    let lost = published
        .acked
        .iter()
        .filter(|(room, e, q, _)| !received.contains(&(room.clone(), e.clone(), *q)))
        .count();
    // Delivery resumed in the victim's room: the first message received after the kill
    // in an epoch acknowledged after the failover, for every subscriber.
    let old_epoch = published
        .acked
        .iter()
        .find(|(room, ..)| *room == rooms[0])
        .map(|(_, e, ..)| e.clone())
        .expect("acks in the victim's room before the kill");
    let resumed = seen
        .iter()
        .map(|s| {
            s.messages
                .get(&rooms[0])
                .and_then(|m| {
                    m.iter()
                        .find(|(e, _, at)| *at >= killed_at && *e != old_epoch)
                })
                .map(|(_, _, at)| at.duration_since(killed_at))
        })
        .collect::<Option<Vec<_>>>()
        .and_then(|v| v.into_iter().max());
    // The other shards' rooms kept flowing.
    let per_room: Vec<usize> = rooms
        .iter()
        .map(|room| published.acked.iter().filter(|(r, ..)| r == room).count())
        .collect();
    println!(
        "cluster master SIGKILL: {} acknowledged {per_room:?} per room, refused {:?}; L = {lost} \
         lost-acknowledged; U = {undetected} undetected gaps; failover {:.1} s after the kill \
         (node timeout 2 s); delivery in the victim's room resumed {:.2} s after the kill; \
         epoch changes seen there: {resyncs_in_victim_room:?}",
        published.acked.len(),
        published.refused,
        failed_over_at.duration_since(killed_at).as_secs_f64(),
        resumed.map_or(f64::NAN, |d| d.as_secs_f64()),
    );
    assert_eq!(undetected, 0, "undetected gaps\n{}", logs());
    assert!(
        resyncs_in_victim_room.iter().all(|r| *r >= 1),
        "every subscriber saw the victim room's epoch change: {resyncs_in_victim_room:?}\n{}",
        logs()
    );
    let resumed = resumed
        .unwrap_or_else(|| panic!("delivery never resumed in the victim's room\n{}", logs()));
    assert!(
        resumed <= failed_over_at.duration_since(killed_at) + Duration::from_secs(5),
        "delivery resumed {resumed:?} after the kill\n{}",
        logs()
    );
    assert!(
        seen.iter().all(|s| s.left.is_empty()),
        "left events: {:?}",
        seen.iter().map(|s| &s.left).collect::<Vec<_>>()
    );
    for (room, present) in rooms.iter().zip(&present) {
        assert_eq!(present, &users, "presence in {room} after the failover");
    }
    let owner = cluster.owner_of_key(&layout().tagged(&rooms[0]));
    assert_eq!(owner, promoted, "the replica serves the victim's partition");
}

/// Moves `slot` from the master on `from` to the master on `to` the way
/// `redis-cli --cluster reshard` does: IMPORTING / MIGRATING, MIGRATE of every key in
/// it, then `SETSLOT … NODE` on every master.
fn move_slot(cluster: &Cluster, slot: u16, from: u16, to: u16) {
    let id = |port: u16| -> String {
        redis::cmd("CLUSTER")
            .arg("MYID")
            .query(&mut cluster.conn(port))
            .expect("CLUSTER MYID")
    };
    let (from_id, to_id) = (id(from), id(to));
    let mut src = cluster.conn(from);
    let mut dst = cluster.conn(to);
    let _: () = redis::cmd("CLUSTER")
        .arg("SETSLOT")
        .arg(slot)
        .arg("IMPORTING")
        .arg(&from_id)
        .query(&mut dst)
        .expect("IMPORTING");
    let _: () = redis::cmd("CLUSTER")
        .arg("SETSLOT")
        .arg(slot)
        .arg("MIGRATING")
        .arg(&to_id)
        .query(&mut src)
        .expect("MIGRATING");
    loop {
        let keys: Vec<String> = redis::cmd("CLUSTER")
            .arg("GETKEYSINSLOT")
            .arg(slot)
            .arg(100)
            .query(&mut src)
            .expect("GETKEYSINSLOT");
        if keys.is_empty() {
            break;
        }
        let _: Value = redis::cmd("MIGRATE")
            .arg("127.0.0.1")
            .arg(to)
            .arg("")
            .arg(0)
            .arg(5000)
            .arg("KEYS")
            .arg(&keys)
            .query(&mut src)
            .expect("MIGRATE");
    }
    for port in [to, from] {
        let _: () = redis::cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(slot)
            .arg("NODE")
            .arg(&to_id)
            .query(&mut cluster.conn(port))
            .expect("SETSLOT NODE");
    }
    for port in cluster.masters() {
        if port != to && port != from {
            let _: () = redis::cmd("CLUSTER")
                .arg("SETSLOT")
                .arg(slot)
                .arg("NODE")
                .arg(&to_id)
                .query(&mut cluster.conn(port))
                .expect("SETSLOT NODE");
        }
    }
}

#[test]
fn a_partition_moved_to_another_shard_keeps_its_members_and_its_traffic() {
    let cluster = Cluster::start(3, 0, MODULE);
    let masters = cluster.masters();
    let a = Edge::start_on(&redis_url(masters[0]), "ra", 1000, ANONYMOUS_UNLIMITED);
    let b = Edge::start_on(&redis_url(masters[1]), "rb", 1000, ANONYMOUS_UNLIMITED);
    let rooms = one_per_master(&cluster, "moving");
    let room = &rooms[0];
    let (mut ann, _) = a.connect("ann");
    let (mut bob, _) = b.connect("bob");
    join(&mut ann, room, 1);
    join(&mut bob, room, 2);
    next_event(&mut ann, "joined");
    let first = request(&mut ann, json!({"op":"publish","room":room,"data":1}), 3);
    assert_eq!(first["op"], "ack", "{first}");
    assert_eq!(next_event(&mut bob, "message")["data"], 1);

    let slot = cluster.key_slot(&layout().tagged(room));
    let (from, to) = (masters[0], masters[1]);
    assert_eq!(cluster.owner_of_slot(slot), from);
    move_slot(&cluster, slot, from, to);
    cluster
        .wait_ok(Duration::from_secs(10), |map| {
            match map.iter().find(|r| (r.start..=r.end).contains(&slot)) {
                Some(r) if r.master == to => Ok(()),
                other => Err(format!("slot {slot} served by {other:?}")),
            }
        })
        .unwrap_or_else(|why| panic!("the move did not settle: {why}"));

    // Members moved with the partition; both edges follow (MOVED for commands, a new
    // slot map for the readers) and the room's traffic goes on.
    assert_eq!(presence(&cluster, room), ["ann", "bob"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut n = 10;
    loop {
        n += 1;
        let reply = request(&mut ann, json!({"op":"publish","room":room,"data":n}), n);
        if reply["op"] == "ack" {
            if let Ok(msg) = bob.recv_json_where(Duration::from_millis(500), |m| {
                m["op"] == "message" && m["data"] == n
            }) {
                assert_eq!(msg["room"], json!(room));
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no delivery in {room} after its partition moved: {reply}\n{}\n----\n{}",
            a.log(),
            b.log()
        );
    }
    // And the readers now wait on two shards' primaries, not the one that gave it up
    // for that partition: a message published straight on the new owner arrives.
    let mut direct = cluster.conn(to);
    let _: Value = redis::cmd("RC.PUBLISH")
        .arg(layout().tagged(room))
        .arg("\"backend\"")
        .query(&mut direct)
        .expect("RC.PUBLISH on the new owner");
    for client in [&mut ann, &mut bob] {
        let msg = client
            .recv_json_where(T, |m| m["op"] == "message" && m["data"] == "backend")
            .expect("the backend's message");
        assert_eq!(msg["room"], json!(room));
    }
    assert!(
        ann.recv_json_where(Duration::from_millis(300), |m| m["op"] == "left")
            .is_err(),
        "nobody left"
    );
}
