//! `--bench-floor`, the benchmark reference R0: the real edge binary with no Redis at
//! all, rooms local to its worker, messages fanned out in-process.

use std::time::Duration;

use roomcast_tests::edge::{edge_binary, join, metric_value, request, Edge};
use roomcast_tests::procs::{our_children_with, parent_of};
use roomcast_tests::ws::{self, Message, WsClient};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(5);

/// Starts a floor edge with node id `node` (no `--redis`: that would be refused).
fn floor_edge(node: &str) -> Edge {
    let args = [
        "--bench-floor",
        "--allow-anonymous",
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "1",
        "--node-id",
        node,
    ];
    Edge::spawn(&args, node)
}

/// The next text message, skipping pings and pongs.
fn next_text(client: &mut WsClient, timeout: Duration) -> String {
    loop {
        match client.recv(timeout).expect("a message") {
            Message::Text(text) => return text,
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

/// Every process whose parent is `pid`.
fn children_of(pid: u32) -> Vec<String> {
    let mut children = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if parent_of(child) == Some(pid) {
            let comm = std::fs::read_to_string(format!("/proc/{child}/comm")).unwrap_or_default();
            children.push(format!("{child} {}", comm.trim()));
        }
    }
    children
}

#[test]
fn the_floor_fans_out_in_process_without_redis_and_drains_with_1012() {
    let mut edge = floor_edge("f");
    // No Redis anywhere: the banner says floor mode and names no Redis, and the edge
    // started no redis-server (no child process at all).
    assert!(
        edge.banner.contains("bench-floor"),
        "banner: {}",
        edge.banner
    );
    assert!(
        !edge.banner.to_lowercase().contains("redis"),
        "banner: {}",
        edge.banner
    );
    let pids = our_children_with(&["--bench-floor", "--node-id", "f"]);
    assert!(!pids.is_empty(), "the edge process was not found");
    for pid in pids {
        assert_eq!(
            children_of(pid),
            Vec::<String>::new(),
            "children of edge {pid}"
        );
    }

    let (mut ann, welcome) = edge.connect("ann");
    assert_eq!(welcome["node"], edge.node0());
    let (mut bob, _) = edge.connect("bob");
    let (mut cat, _) = edge.connect("cat");
    for (n, client) in [&mut ann, &mut bob, &mut cat].into_iter().enumerate() {
        let ack = request(client, json!({"op":"join","room":"lobby"}), n as u64 + 1);
        assert_eq!(ack, json!({"op":"ack","id":n + 1,"offset":null}));
    }

    let payload = r#"{"text":"héllo","n":[1,2.5,null],"nested":{"a":"\u00e9"}}"#;
    ann.send_text(&format!(
        r#"{{"op":"publish","room":"lobby","id":"p1","data":{payload}}}"#
    ))
    .unwrap();
    assert_eq!(
        next_text(&mut ann, T),
        r#"{"op":"ack","id":"p1","offset":null}"#
    );
    // Exact bytes, data untouched; no `joined` events came before it.
    let expected =
        format!(r#"{{"op":"message","room":"lobby","from":"ann","data":{payload},"offset":null}}"#);
    assert_eq!(next_text(&mut bob, T), expected);
    assert_eq!(next_text(&mut cat, T), expected);
    // The publishing connection does not get its own message.
    assert!(ann
        .recv_json_where(Duration::from_millis(300), |m| m["op"] == "message")
        .is_err());
    // One frame, two deliveries.
    let (status, body) = ws::http_get(edge.addr, "/metrics").expect("GET /metrics");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        metric_value(&body, "roomcast_edge_deliveries_total"),
        Some(2.0),
        "{body}"
    );

    edge.signal("TERM");
    for (name, client) in [("ann", &mut ann), ("bob", &mut bob), ("cat", &mut cat)] {
        let (code, reason) = client.expect_close(T).expect("a close frame");
        assert_eq!(code, Some(1012), "{name}: close code (reason {reason:?})");
    }
    let status = edge
        .wait_exit(T)
        .unwrap_or_else(|| panic!("no exit within 5 s of SIGTERM\nlog:\n{}", edge.log()));
    assert!(status.success(), "exit {status:?}\nlog:\n{}", edge.log());
}

#[test]
fn the_floor_answers_the_other_operations_from_local_state() {
    let edge = floor_edge("f2");
    let (mut ann, _) = edge.connect("ann");
    let (mut ann2, _) = edge.connect("ann");
    let (mut bob, _) = edge.connect("bob");
    join(&mut ann, "lobby", 1);
    join(&mut bob, "lobby", 2);

    // A join with `since` has nothing to replay.
    let ack = request(
        &mut ann2,
        json!({"op":"join","room":"lobby","since":"ab:1"}),
        3,
    );
    assert_eq!(
        ack,
        json!({"op":"ack","id":3,"offset":null,"recovered":false})
    );
    let presence = request(&mut bob, json!({"op":"presence","room":"lobby"}), 4);
    assert_eq!(presence["users"], json!(["ann", "bob"]), "{presence}");

    // The sender's other connection gets the message.
    let ack = request(
        &mut ann,
        json!({"op":"publish","room":"lobby","data":{"x":1}}),
        5,
    );
    assert_eq!(ack["offset"], Value::Null, "{ack}");
    for client in [&mut ann2, &mut bob] {
        let msg = client
            .recv_json_where(T, |m| m["op"] == "message")
            .expect("message");
        assert_eq!(
            msg,
            json!({"op":"message","room":"lobby","from":"ann","data":{"x":1},"offset":null})
        );
    }

    // Direct messages reach every local connection of the user.
    let ack = request(&mut bob, json!({"op":"send","user":"ann","data":"hi"}), 6);
    assert_eq!(ack["op"], "ack", "{ack}");
    for client in [&mut ann, &mut ann2] {
        let msg = client
            .recv_json_where(T, |m| m["op"] == "direct")
            .expect("direct");
        assert_eq!(msg, json!({"op":"direct","from":"bob","data":"hi"}));
    }

    let history = request(&mut bob, json!({"op":"history","room":"lobby"}), 7);
    assert_eq!(
        (history["op"].as_str(), history["code"].as_str()),
        (Some("error"), Some("bad_request")),
        "{history}"
    );
    assert_eq!(history["message"], "not available in --bench-floor mode");

    // After a leave, the room's messages stop.
    let ack = request(&mut bob, json!({"op":"leave","room":"lobby"}), 8);
    assert_eq!(ack, json!({"op":"ack","id":8}));
    let again = request(&mut bob, json!({"op":"leave","room":"lobby"}), 9);
    assert_eq!(again["code"], "not_member", "{again}");
    request(
        &mut ann,
        json!({"op":"publish","room":"lobby","data":2}),
        10,
    );
    ann2.recv_json_where(T, |m| m["op"] == "message" && m["data"] == 2)
        .expect("ann2 still gets messages");
    assert!(bob
        .recv_json_where(Duration::from_millis(300), |m| m["op"] == "message")
        .is_err());
}

#[test]
fn the_floor_refuses_a_redis_url() {
    let out = std::process::Command::new(edge_binary())
        .args([
            "--bench-floor",
            "--allow-anonymous",
            "--redis",
            "redis://127.0.0.1:1/",
        ])
        .output()
        .expect("run roomcast-edge");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let help = std::process::Command::new(edge_binary())
        .arg("--help")
        .output()
        .expect("run roomcast-edge --help");
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("Benchmark reference only: no Redis; rooms are local to each worker"),
        "{help}"
    );
    assert!(help.contains("ROOMCAST_BENCH_FLOOR"), "{help}");
}
