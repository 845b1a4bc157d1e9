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

#[test]
fn the_embedded_default_runs_its_own_redis_and_stops_it() {
    let module = roomcast_tests::module_path().display().to_string();
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "2",
        "--allow-anonymous",
        "--node-id",
        "emb",
        "--module",
        &module,
    ];
    let mut edge = Edge::spawn(&args, "emb");
    let redis_url = edge
        .banner
        .split("redis ")
        .nth(1)
        .expect("the banner names the Redis it uses")
        .to_string();
    let redis_addr: std::net::SocketAddr = redis_url
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .parse()
        .expect("embedded Redis address");

    // Two workers share the port; clients land on either and still meet in a room.
    let mut clients: Vec<_> = (0..4).map(|i| edge.connect(&format!("u{i}")).0).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(
            request(c, json!({"op":"join","room":"lobby"}), i as u64)["op"],
            "ack"
        );
    }
    assert_eq!(
        request(
            &mut clients[0],
            json!({"op":"publish","room":"lobby","data":7}),
            9
        )["op"],
        "ack"
    );
    for c in clients.iter_mut().skip(1) {
        let m = c.recv_json_where(T, |m| m["op"] == "message").unwrap();
        assert_eq!(m["data"], 7);
    }

    edge.signal("TERM");
    for c in clients.iter_mut() {
        assert_eq!(c.expect_close(T).unwrap().0, Some(1012));
    }
    let status = edge
        .wait_exit(Duration::from_secs(10))
        .expect("the edge exits");
    assert!(status.success(), "{status}");
    assert!(
        std::net::TcpStream::connect_timeout(&redis_addr, Duration::from_millis(500)).is_err(),
        "the embedded redis-server is still running"
    );
}

#[test]
fn tagged_room_names_and_a_strict_upgrade_response() {
    let redis = Redis::start(&[]);
    let edge = Edge::start(&redis, "tg", &[]);
    let (mut ann, _) = edge.connect("ann");
    let (mut bob, _) = edge.connect("bob");
    // Strict clients (undici, …) require exactly `Connection: upgrade`.
    assert_eq!(ann.response_header("connection"), Some("upgrade"));
    let tagged = roomcast_tests::roomcast::layout(16).tagged("lobby");
    assert_eq!(
        request(&mut ann, json!({"op":"join","room":tagged}), 1)["op"],
        "ack"
    );
    assert_eq!(
        request(&mut bob, json!({"op":"join","room":"lobby"}), 2)["op"],
        "ack"
    );
    let ack = request(&mut bob, json!({"op":"publish","room":"lobby","data":1}), 3);
    assert_eq!(ack["op"], "ack", "{ack}");
    let m = ann.recv_json_where(T, |m| m["op"] == "message").unwrap();
    assert_eq!(
        (m["room"].as_str(), m["data"].as_i64()),
        (Some("lobby"), Some(1))
    );
    let wrong = format!("{{0.13}}{}", "lobby");
    let reply = request(&mut ann, json!({"op":"join","room":wrong}), 4);
    if roomcast_tests::roomcast::layout(16).tagged("lobby") != wrong {
        assert_eq!(reply["code"], "bad_request", "{reply}");
    }
}

#[test]
fn compression_is_never_negotiated_and_origins_match_exactly() {
    let redis = Redis::start(&[]);
    let edge = Edge::start(
        &redis,
        "og",
        &["--allowed-origin", "https://app.example.com"],
    );
    let offer = (
        "Sec-WebSocket-Extensions",
        "permessage-deflate; client_max_window_bits",
    );
    let ok = edge.try_connect(
        "/ws?user=ann",
        &[offer, ("Origin", "https://app.example.com")],
    );
    let ws = ok.unwrap_open();
    assert_eq!(ws.response_header("sec-websocket-extensions"), None);
    for origin in [
        "https://evil.com",
        "null",
        "https://APP.example.com",
        "https://app.example.com:8443",
        "http://app.example.com",
        "https://app.example.com.evil.com",
        "https://app.example.com/",
    ] {
        let (status, _) = edge
            .try_connect("/ws?user=ann", &[("Origin", origin)])
            .unwrap_refused();
        assert_eq!(status, 403, "{origin}");
    }
}
