//! The edge's client protocol end to end: presence, direct messages, backend publishes,
//! per-room order across edges, malformed input, tokens, Origin checks and the HTTP
//! endpoints. Every test runs its own redis-server (with the module) and its own edge
//! processes on loopback.

use std::collections::HashMap;
use std::thread;
use std::time::{Duration, Instant};

use roomcast_tests::edge::{join, metric_value, request, token, Edge};
use roomcast_tests::ws::{self, WsClient};
use roomcast_tests::Redis;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(5);
/// How long to wait before concluding that a message is not coming.
const QUIET: Duration = Duration::from_millis(500);

/// Asserts that no message satisfying `pred` arrives within [`QUIET`].
fn assert_none(client: &mut WsClient, what: &str, pred: impl Fn(&Value) -> bool) {
    if let Ok(m) = client.recv_json_where(QUIET, pred) {
        panic!("unexpected {what}: {m}");
    }
}

/// The users of `room` as the presence ack lists them.
fn presence(client: &mut WsClient, room: &str, id: u64) -> Value {
    let reply = request(client, json!({"op":"presence","room":room}), id);
    assert_eq!(reply["op"], "ack", "presence {room}: {reply}");
    reply["users"].clone()
}

#[test]
fn presence_joins_and_leaves_once_per_user() {
    let redis = Redis::start(&[]);
    let a = Edge::start(&redis, "pa", &[]);
    let b = Edge::start(&redis, "pb", &[]);
    let (mut ann, _) = a.connect("ann");
    let (mut bob, _) = b.connect("bob");
    join(&mut ann, "lobby", 1);
    join(&mut bob, "lobby", 2);
    let joined = ann.recv_json_where(T, |m| m["op"] == "joined").unwrap();
    assert_eq!(joined, json!({"op":"joined","room":"lobby","user":"bob"}));
    assert_eq!(presence(&mut ann, "lobby", 3), json!(["ann", "bob"]));
    assert_eq!(presence(&mut bob, "lobby", 4), json!(["ann", "bob"]));

    // A second connection of ann (on the other edge) joining is not a new join.
    let (mut ann2, _) = b.connect("ann");
    join(&mut ann2, "lobby", 5);
    assert_none(&mut bob, "joined for a second connection", |m| {
        m["op"] == "joined"
    });
    assert_none(&mut ann, "joined for a second connection", |m| {
        m["op"] == "joined"
    });
    assert_eq!(presence(&mut ann2, "lobby", 6), json!(["ann", "bob"]));

    // bob leaves: every other member hears it exactly once.
    let reply = request(&mut bob, json!({"op":"leave","room":"lobby"}), 7);
    assert_eq!(reply["op"], "ack", "{reply}");
    let left = json!({"op":"left","room":"lobby","user":"bob"});
    for client in [&mut ann, &mut ann2] {
        assert_eq!(
            client.recv_json_where(T, |m| m["op"] == "left").unwrap(),
            left
        );
        assert_none(client, "second left", |m| m["op"] == "left");
    }
    assert_eq!(presence(&mut ann, "lobby", 8), json!(["ann"]));
    // Leaving again: not a member.
    let reply = request(&mut bob, json!({"op":"leave","room":"lobby"}), 9);
    assert_eq!(
        (&reply["op"], &reply["code"]),
        (&json!("error"), &json!("not_member"))
    );

    // bob comes back, then his socket goes away while he is a member.
    join(&mut bob, "lobby", 10);
    let joined = ann.recv_json_where(T, |m| m["op"] == "joined").unwrap();
    assert_eq!(joined, json!({"op":"joined","room":"lobby","user":"bob"}));
    drop(bob);
    for client in [&mut ann, &mut ann2] {
        assert_eq!(
            client.recv_json_where(T, |m| m["op"] == "left").unwrap(),
            left
        );
    }
    assert_none(&mut ann, "second left", |m| m["op"] == "left");
    assert_eq!(presence(&mut ann, "lobby", 11), json!(["ann"]));

    // ann's second connection closing leaves ann in the room: no left for ann.
    let (mut carl, _) = a.connect("carl");
    join(&mut carl, "lobby", 12);
    drop(ann2);
    assert_none(&mut carl, "left while another connection remains", |m| {
        m["op"] == "left"
    });
    assert_eq!(presence(&mut carl, "lobby", 13), json!(["ann", "carl"]));
}

#[test]
fn direct_send_reaches_every_connection_of_the_user() {
    let redis = Redis::start(&[]);
    let a = Edge::start(&redis, "da", &[]);
    let b = Edge::start(&redis, "db", &[]);
    let (mut ann, _) = a.connect("ann");
    let (mut bob_a, _) = a.connect("bob");
    let (mut bob_b, _) = b.connect("bob");
    let (mut carl, _) = b.connect("carl");

    let data = json!({"text":"hi bob","n":[1,2]});
    let reply = request(&mut ann, json!({"op":"send","user":"bob","data":data}), 1);
    assert_eq!(reply["op"], "ack", "{reply}");
    let expected = json!({"op":"direct","from":"ann","data":data});
    for bob in [&mut bob_a, &mut bob_b] {
        assert_eq!(
            bob.recv_json_where(T, |m| m["op"] == "direct").unwrap(),
            expected
        );
        assert_none(bob, "second direct", |m| m["op"] == "direct");
    }
    assert_none(&mut carl, "direct for someone else", |m| {
        m["op"] == "direct"
    });
    assert_none(&mut ann, "direct echoed to the sender", |m| {
        m["op"] == "direct"
    });

    // A user with no connection: still acknowledged, nobody gets it.
    let reply = request(&mut ann, json!({"op":"send","user":"nobody","data":1}), 2);
    assert_eq!(reply["op"], "ack", "{reply}");
    // Missing user / data are bad requests.
    let reply = request(&mut ann, json!({"op":"send","data":1}), 3);
    assert_eq!(reply["code"], "bad_request", "{reply}");
    let reply = request(&mut ann, json!({"op":"send","user":"bob"}), 4);
    assert_eq!(reply["code"], "bad_request", "{reply}");
}

#[test]
fn backend_publish_reaches_members_on_every_edge() {
    let redis = Redis::start(&[]);
    let a = Edge::start(&redis, "ba", &[]);
    let b = Edge::start(&redis, "bb", &[]);
    let (mut ann, _) = a.connect("ann");
    let (mut bob, _) = b.connect("bob");
    let (mut carl, _) = b.connect("carl");
    join(&mut ann, "lobby", 1);
    join(&mut bob, "lobby", 1);
    join(&mut carl, "other", 1);

    let mut conn = redis.conn();
    let reply: redis::Value = redis::cmd("RC.PUBLISH")
        .arg("lobby")
        .arg(r#"{"x":1}"#)
        .query(&mut conn)
        .expect("RC.PUBLISH");
    let expected = json!({"op":"message","room":"lobby","from":null,"data":{"x":1},"offset":null});
    for client in [&mut ann, &mut bob] {
        let msg = client.recv_json_where(T, |m| m["op"] == "message").unwrap();
        assert_eq!(msg, expected, "after RC.PUBLISH replied {reply:?}");
    }
    assert_none(&mut carl, "message of another room", |m| {
        m["op"] == "message"
    });
}

#[test]
fn room_order_is_the_same_everywhere_under_concurrent_publishers() {
    const N: u64 = 300;
    let redis = Redis::start(&[]);
    let a = Edge::start(&redis, "oa", &["--conn-rate", "0"]);
    let b = Edge::start(&redis, "ob", &["--conn-rate", "0"]);
    let (mut la, _) = a.connect("listen-a");
    let (mut lb, _) = b.connect("listen-b");
    let (mut pa, _) = a.connect("pub-a");
    let (mut pb, _) = b.connect("pub-b");
    for (i, c) in [&mut la, &mut lb, &mut pa, &mut pb].into_iter().enumerate() {
        join(c, "race", 1000 + i as u64);
    }

    let listener = |mut client: WsClient| {
        thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut got = Vec::new();
            while got.len() < 2 * N as usize {
                let left = deadline.saturating_duration_since(Instant::now());
                match client.recv_json_where(left, |m| m["op"] == "message") {
                    Ok(m) => got.push(m["data"].clone()),
                    Err(e) => panic!("after {} messages: {e}", got.len()),
                }
            }
            assert_none(&mut client, "extra message", |m| m["op"] == "message");
            got
        })
    };
    let publisher = |mut client: WsClient, p: &'static str| {
        thread::spawn(move || {
            for i in 0..N {
                let id = i + 1;
                client
                    .send_text(&format!(
                        r#"{{"op":"publish","room":"race","id":{id},"data":{{"p":"{p}","n":{i}}}}}"#
                    ))
                    .expect("send");
                let reply = client
                    .recv_json_where(Duration::from_secs(10), |m| m["id"] == json!(id))
                    .unwrap_or_else(|e| panic!("{p}: no reply to publish {i}: {e}"));
                assert_eq!(reply["op"], "ack", "{p}: publish {i}: {reply}");
            }
            client
        })
    };
    let listen_a = listener(la);
    let listen_b = listener(lb);
    let pub_a = publisher(pa, "A");
    let pub_b = publisher(pb, "B");
    let _pa = pub_a.join().expect("publisher A");
    let _pb = pub_b.join().expect("publisher B");
    let seen_a = listen_a.join().expect("listener A");
    let seen_b = listen_b.join().expect("listener B");

    for (name, seen) in [("listener A", &seen_a), ("listener B", &seen_b)] {
        assert_eq!(seen.len(), 2 * N as usize, "{name}");
        let mut next: HashMap<&str, u64> = HashMap::new();
        for m in seen.iter() {
            let p = m["p"].as_str().unwrap_or_else(|| panic!("{name}: {m}"));
            let n = m["n"].as_u64().unwrap_or_else(|| panic!("{name}: {m}"));
            let expected = next.entry(p).or_insert(0);
            assert_eq!(n, *expected, "{name}: publisher {p} out of order");
            *expected += 1;
        }
        assert_eq!(next.get("A"), Some(&N), "{name}");
        assert_eq!(next.get("B"), Some(&N), "{name}");
    }
    if seen_a != seen_b {
        let first = seen_a.iter().zip(&seen_b).position(|(x, y)| x != y);
        panic!("the two listeners saw different interleavings (first difference at {first:?})");
    }
}

#[test]
fn malformed_input_gets_errors_and_the_connection_stays_open() {
    let redis = Redis::start(&[]);
    let a = Edge::start(&redis, "ma", &[]);
    let (mut ann, _) = a.connect("ann");

    ann.send_text("{not json").unwrap();
    let e = ann.recv_json(T).unwrap();
    assert_eq!(
        (&e["op"], &e["code"]),
        (&json!("error"), &json!("bad_request")),
        "{e}"
    );

    let e = request(&mut ann, json!({"op":"dance"}), 41);
    assert_eq!(
        (&e["op"], &e["code"], &e["id"]),
        (&json!("error"), &json!("bad_request"), &json!(41)),
        "{e}"
    );

    ann.send_binary(br#"{"op":"ping"}"#).unwrap();
    let e = ann.recv_json(T).unwrap();
    assert_eq!(
        (&e["op"], &e["code"]),
        (&json!("error"), &json!("bad_request")),
        "{e}"
    );

    let e = request(
        &mut ann,
        json!({"op":"publish","room":"lobby","data":1}),
        42,
    );
    assert_eq!(
        (&e["op"], &e["code"], &e["id"]),
        (&json!("error"), &json!("not_member"), &json!(42)),
        "{e}"
    );

    let e = request(&mut ann, json!({"op":"join"}), 43);
    assert_eq!(
        (&e["op"], &e["code"], &e["id"]),
        (&json!("error"), &json!("bad_request"), &json!(43)),
        "{e}"
    );

    // A string id is echoed as given.
    ann.send_text(r#"{"op":"nope","id":"x-1"}"#).unwrap();
    let e = ann.recv_json(T).unwrap();
    assert_eq!(
        (&e["code"], &e["id"]),
        (&json!("bad_request"), &json!("x-1")),
        "{e}"
    );

    ann.send_text(r#"{"op":"ping"}"#).unwrap();
    assert_eq!(ann.recv_json(T).unwrap(), json!({"op":"pong"}));
    // And the connection still works for real operations.
    join(&mut ann, "lobby", 44);
}

#[test]
fn tokens_are_checked_before_the_upgrade_and_enforced_after() {
    let redis = Redis::start(&[]);
    let edge = Edge::start_token_only(&redis, "ta", &[]);

    // No token (and anonymous users are off).
    let (status, _) = edge.try_connect("/ws", &[]).unwrap_refused();
    assert_eq!(status, 401);
    let (status, _) = edge.try_connect("/ws?user=ann", &[]).unwrap_refused();
    assert_eq!(
        status, 401,
        "anonymous connection without --allow-anonymous"
    );

    // Forged: ann's header and claims with the signature of another token.
    let good = token("ann", 60, None);
    let other = token("mallory", 60, None);
    let parts: Vec<&str> = good.split('.').collect();
    let other_sig = other.rsplit('.').next().unwrap();
    assert_eq!(parts.len(), 3, "{good}");
    assert_ne!(parts[2], other_sig);
    let forged = format!("{}.{}.{}", parts[0], parts[1], other_sig);
    let (status, _) = edge
        .try_connect(&format!("/ws?token={forged}"), &[])
        .unwrap_refused();
    assert_eq!(status, 401, "forged token");

    // Expired.
    let expired = token("ann", 0, None);
    thread::sleep(Duration::from_millis(1100));
    let (status, _) = edge
        .try_connect(&format!("/ws?token={expired}"), &[])
        .unwrap_refused();
    assert_eq!(status, 401, "expired token");

    // Valid.
    let mut ann = edge
        .try_connect(&format!("/ws?token={good}"), &[])
        .unwrap_open();
    let welcome = ann.recv_json(T).unwrap();
    assert_eq!(welcome["op"], "welcome", "{welcome}");
    assert_eq!(welcome["user"], "ann", "{welcome}");
    join(&mut ann, "lobby", 1);

    // Room allow-list.
    let team = token("ann", 60, Some(&["team-*"]));
    let mut ann_team = edge
        .try_connect(&format!("/ws?token={team}"), &[])
        .unwrap_open();
    let welcome = ann_team.recv_json(T).unwrap();
    assert_eq!(welcome["user"], "ann", "{welcome}");
    join(&mut ann_team, "team-red", 2);
    let e = request(&mut ann_team, json!({"op":"join","room":"lobby"}), 3);
    assert_eq!(
        (&e["op"], &e["code"], &e["id"]),
        (&json!("error"), &json!("forbidden"), &json!(3)),
        "{e}"
    );
    let e = request(
        &mut ann_team,
        json!({"op":"publish","room":"lobby","data":1}),
        4,
    );
    assert_eq!(e["op"], "error", "{e}");

    // A token that expires while connected: closed with 1008.
    let short = token("ann", 2, None);
    let mut brief = edge
        .try_connect(&format!("/ws?token={short}"), &[])
        .unwrap_open();
    let welcome = brief.recv_json(T).unwrap();
    assert_eq!(welcome["op"], "welcome", "{welcome}");
    let started = Instant::now();
    let (code, reason) = brief.expect_close(Duration::from_secs(5)).unwrap();
    assert_eq!(code, Some(1008), "reason {reason:?}");
    assert!(
        started.elapsed() <= Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // The long-lived connection is untouched.
    ann.send_text(r#"{"op":"ping"}"#).unwrap();
    assert_eq!(ann.recv_json(T).unwrap(), json!({"op":"pong"}));
}

#[test]
fn origin_allow_list() {
    let redis = Redis::start(&[]);
    let edge = Edge::start(&redis, "oe", &["--allowed-origin", "https://good.example"]);
    let (status, _) = edge
        .try_connect("/ws?user=ann", &[("Origin", "https://evil.example")])
        .unwrap_refused();
    assert_eq!(status, 403);
    let mut good = edge
        .try_connect("/ws?user=ann", &[("Origin", "https://good.example")])
        .unwrap_open();
    assert_eq!(good.recv_json(T).unwrap()["op"], "welcome");
    let mut none = edge.try_connect("/ws?user=bob", &[]).unwrap_open();
    assert_eq!(none.recv_json(T).unwrap()["op"], "welcome");
}

#[test]
fn metrics_health_and_readiness() {
    let redis = Redis::start(&[]);
    let a = Edge::start(&redis, "me", &[]);
    assert_eq!(ws::http_get(a.addr, "/healthz").unwrap().0, 200);
    assert_eq!(ws::http_get(a.addr, "/readyz").unwrap().0, 200);
    assert_eq!(ws::http_get(a.addr, "/nope").unwrap().0, 404);

    let (mut ann, _) = a.connect("ann");
    let (mut bob, _) = a.connect("bob");
    let (carl, _) = a.connect("carl");
    join(&mut ann, "lobby", 1);
    join(&mut bob, "lobby", 1);
    for i in 0..5 {
        let reply = request(
            &mut ann,
            json!({"op":"publish","room":"lobby","data":{"i":i}}),
            10 + i,
        );
        assert_eq!(reply["op"], "ack", "{reply}");
    }
    for _ in 0..5 {
        bob.recv_json_where(T, |m| m["op"] == "message").unwrap();
    }
    drop(carl);

    // carl's close is accounted for asynchronously: wait for the gauge to settle.
    let deadline = Instant::now() + T;
    let body = loop {
        let (status, body) = ws::http_get(a.addr, "/metrics").unwrap();
        assert_eq!(status, 200);
        if metric_value(&body, "roomcast_edge_connections") == Some(2.0)
            || Instant::now() > deadline
        {
            break body;
        }
        thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        metric_value(&body, "roomcast_edge_connections"),
        Some(2.0),
        "{body}"
    );
    let positive = |name: &str| {
        let v = metric_value(&body, name).unwrap_or_else(|| panic!("{name} missing:\n{body}"));
        assert!(v > 0.0, "{name} = {v}");
    };
    positive("roomcast_edge_messages_in_total");
    positive("roomcast_edge_deliveries_total");
    positive("roomcast_edge_redis_rtt_seconds_count");
    assert!(
        metric_value(&body, "roomcast_edge_messages_in_total").unwrap() >= 7.0,
        "{body}"
    );
    assert!(
        metric_value(&body, "roomcast_edge_deliveries_total").unwrap() >= 5.0,
        "{body}"
    );
}
