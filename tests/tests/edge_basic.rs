//! The edge end to end: real redis-server + module, two edge processes with different
//! node ids, real WebSocket clients.

use std::time::Duration;

use roomcast_tests::edge::{request, Edge};
use roomcast_tests::Redis;
use serde_json::json;

const T: Duration = Duration::from_secs(5);

#[test]
fn rooms_span_edges_with_exact_bytes_and_sender_exclusion() {
    let redis = Redis::start(&[]);
    let a = Edge::start(&redis, "ea", &[]);
    let b = Edge::start(&redis, "eb", &[]);
    let (mut ann, welcome) = a.connect("ann");
    assert_eq!(welcome["user"], "ann");
    assert_eq!(welcome["node"], a.node0());
    let (mut bob, _) = b.connect("bob");
    assert_eq!(
        request(&mut ann, json!({"op":"join","room":"lobby"}), 1)["op"],
        "ack"
    );
    assert_eq!(
        request(&mut bob, json!({"op":"join","room":"lobby"}), 2)["op"],
        "ack"
    );
    let joined = ann.recv_json_where(T, |m| m["op"] == "joined").unwrap();
    assert_eq!(joined, json!({"op":"joined","room":"lobby","user":"bob"}));

    let payload = r#"{"text":"héllo","n":[1,2.5,null],"nested":{"a":"\u00e9"}}"#;
    ann.send_text(&format!(
        r#"{{"op":"publish","room":"lobby","id":3,"data":{payload}}}"#
    ))
    .unwrap();
    let ack = ann.recv_json_where(T, |m| m["id"] == 3).unwrap();
    assert_eq!(ack["op"], "ack", "{ack}");
    let raw = loop {
        match bob.recv(T).unwrap() {
            roomcast_tests::ws::Message::Text(t) if t.contains("\"message\"") => break t,
            _ => continue,
        }
    };
    assert!(
        raw.contains(&format!(r#""data":{payload}"#)),
        "payload bytes changed: {raw}"
    );
    let msg: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(
        (msg["room"].as_str(), msg["from"].as_str()),
        (Some("lobby"), Some("ann"))
    );
    // The sender's own connection does not get its message.
    assert!(ann
        .recv_json_where(Duration::from_millis(300), |m| m["op"] == "message")
        .is_err());
}
