//! Edge fault handling end to end: a killed edge, a draining edge, Redis restarted
//! without its data under running edges, Redis unreachable at start, and kicks.
//!
//! Every test runs its own redis-server (with the module) and its own edge processes
//! on loopback, with a 1 s lease, and bounds every wait.

use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use roomcast_tests::edge::{base_args, collect_lines, edge_binary, join, Edge};
use roomcast_tests::roomcast::{members, presence};
use roomcast_tests::wait;
use roomcast_tests::ws::WsClient;
use roomcast_tests::{free_port, redis_url, Redis};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(5);

/// Pace of every wait for a condition.
const POLL: Duration = Duration::from_millis(25);

/// The connection id from a welcome message.
fn conn_id(welcome: &Value) -> String {
    welcome["conn"].as_str().expect("welcome.conn").to_string()
}

/// A ping with an id must come back as a pong with that id.
fn assert_alive(client: &mut WsClient, id: u64, who: &str) {
    client
        .send_json(&json!({"op":"ping","id":id}))
        .unwrap_or_else(|e| panic!("{who}: cannot send a ping: {e}"));
    let pong = client
        .recv_json_where(T, |m| m["id"] == json!(id))
        .unwrap_or_else(|e| panic!("{who}: no pong: {e}"));
    assert_eq!(pong["op"], "pong", "{who}: {pong}");
}

#[test]
fn sigkill_of_an_edge_is_swept_within_a_lease() {
    let redis = Redis::start(&[]);
    let a = Edge::start(&redis, "ea", &[]);
    let mut b = Edge::start(&redis, "eb", &[]);
    let (mut ann, ann_welcome) = a.connect("ann");
    let (mut bob, _) = b.connect("bob");
    join(&mut ann, "lobby", 1);
    join(&mut bob, "lobby", 2);
    ann.recv_json_where(T, |m| m["op"] == "joined" && m["user"] == "bob")
        .expect("ann sees bob join");
    assert_eq!(presence(&redis, "lobby"), ["ann", "bob"]);

    let killed = Instant::now();
    b.signal("KILL");
    let left = ann
        .recv_json_where(Duration::from_secs(3), |m| m["op"] == "left")
        .unwrap_or_else(|e| {
            panic!(
                "no leave event within lease + 2 s of SIGKILL: {e}\nedge A log:\n{}",
                a.log()
            )
        });
    let took = killed.elapsed();
    assert_eq!(left, json!({"op":"left","room":"lobby","user":"bob"}));
    assert!(took < Duration::from_secs(3), "leave took {took:?}");
    assert!(
        b.wait_exit(T).is_some(),
        "edge B survived SIGKILL (impossible)"
    );

    assert_eq!(
        wait::until_eq(
            Duration::from_secs(1),
            POLL,
            &vec!["ann".to_string()],
            || { presence(&redis, "lobby") }
        ),
        ["ann"]
    );
    assert_eq!(members(&redis, "lobby"), [conn_id(&ann_welcome)]);
    // The surviving edge is unaffected.
    assert_alive(&mut ann, 3, "ann");
}

#[test]
fn sigterm_drains_with_1012_and_removes_the_node_at_once() {
    let redis = Redis::start(&[]);
    let a = Edge::start(&redis, "ea", &[]);
    let mut b = Edge::start(&redis, "eb", &[]);
    let (mut ann, ann_welcome) = a.connect("ann");
    let (mut bob, _) = b.connect("bob");
    let (mut cat, _) = b.connect("cat");
    join(&mut ann, "lobby", 1);
    join(&mut bob, "lobby", 2);
    join(&mut cat, "lobby", 3);
    for user in ["bob", "cat"] {
        ann.recv_json_where(T, |m| m["op"] == "joined" && m["user"] == user)
            .unwrap_or_else(|e| panic!("ann never saw {user} join: {e}"));
    }
    assert_eq!(presence(&redis, "lobby"), ["ann", "bob", "cat"]);

    let term = Instant::now();
    b.signal("TERM");
    let (code, reason) = bob.expect_close(T).expect("bob gets a close frame");
    let closed = Instant::now();
    assert_eq!(code, Some(1012), "bob: close code (reason {reason:?})");
    let (code, reason) = cat.expect_close(T).expect("cat gets a close frame");
    assert_eq!(code, Some(1012), "cat: close code (reason {reason:?})");

    // RC.NODE.DOWN removes B's connections at once: well under the 1 s lease.
    let mut left = Vec::new();
    while left.len() < 2 {
        let remaining = Duration::from_secs(1).saturating_sub(closed.elapsed());
        match ann.recv_json_where(remaining, |m| m["op"] == "left") {
            Ok(msg) => {
                assert_eq!(msg["room"], "lobby", "{msg}");
                left.push(msg["user"].as_str().unwrap_or_default().to_string());
            }
            Err(e) => panic!(
                "ann got only {left:?} as left within 1 s of the drain close: {e}\n\
                 edge B log:\n{}",
                b.log()
            ),
        }
    }
    left.sort();
    assert_eq!(left, ["bob", "cat"]);
    assert_eq!(presence(&redis, "lobby"), ["ann"]);
    assert_eq!(members(&redis, "lobby"), [conn_id(&ann_welcome)]);

    let status = b.wait_exit(T.saturating_sub(term.elapsed()));
    let status = status.unwrap_or_else(|| {
        panic!(
            "edge B did not exit within 5 s of SIGTERM\nlog:\n{}",
            b.log()
        )
    });
    assert!(
        status.success(),
        "edge B exited with {status:?}\nlog:\n{}",
        b.log()
    );
    assert_alive(&mut ann, 4, "ann");
}

/// Sends a publish from `client` and returns its reply, which must come within 5 s and
/// be an ack or an `unavailable` error.
fn publish_reply(client: &mut WsClient, room: &str, n: u64) -> Value {
    let sent = Instant::now();
    client
        .send_json(&json!({"op":"publish","room":room,"id":n,"data":{"n":n}}))
        .expect("send publish (the socket must stay open)");
    let reply = client
        .recv_json_where(T, |m| m["id"] == json!(n))
        .unwrap_or_else(|e| panic!("publish {n}: no reply within 5 s: {e}"));
    assert!(sent.elapsed() <= T, "publish {n} took {:?}", sent.elapsed());
    let ok = reply["op"] == "ack" || (reply["op"] == "error" && reply["code"] == "unavailable");
    assert!(
        ok,
        "publish {n}: expected an ack or unavailable, got {reply}"
    );
    reply
}

#[test]
fn redis_restart_without_data_is_repaired_by_the_edges() {
    let mut redis = Redis::start(&[]);
    let a = Edge::start(&redis, "ea", &[]);
    let b = Edge::start(&redis, "eb", &[]);
    let (mut ann, ann_welcome) = a.connect("ann");
    let (mut bob, bob_welcome) = b.connect("bob");
    join(&mut ann, "lobby", 1);
    join(&mut bob, "lobby", 2);
    ann.recv_json_where(T, |m| m["op"] == "joined" && m["user"] == "bob")
        .expect("ann sees bob join");
    let mut want = vec![conn_id(&ann_welcome), conn_id(&bob_welcome)];
    want.sort();
    assert_eq!(members(&redis, "lobby"), want);
    assert_eq!(publish_reply(&mut ann, "lobby", 10)["op"], "ack");
    bob.recv_json_where(T, |m| m["op"] == "message" && m["data"]["n"] == 10)
        .expect("bob gets the first message");

    // Redis down: a request gets an answer (ack impossible, so `unavailable`), no hang.
    let run_id = redis.run_id();
    redis.kill();
    let down = publish_reply(&mut ann, "lobby", 11);
    assert_eq!(down["code"], "unavailable", "{down}");
    // Back, empty.
    redis.restart_with(&[]);
    let back = Instant::now();
    assert_ne!(redis.run_id(), run_id);
    let early = publish_reply(&mut ann, "lobby", 12);
    eprintln!("first publish after the restart: {early}");

    // The edges register their connections and memberships again on their own.
    let got = wait::until_eq(Duration::from_secs(5), POLL, &want, || {
        members(&redis, "lobby")
    });
    assert_eq!(
        got,
        want,
        "RC.MEMBERS lobby {:?} after Redis came back\nedge A log:\n{}\nedge B log:\n{}",
        back.elapsed(),
        a.log(),
        b.log()
    );
    assert_eq!(presence(&redis, "lobby"), ["ann", "bob"]);

    // A publish from ann reaches bob again (same sockets all along).
    let deadline = Instant::now() + Duration::from_secs(8);
    let mut n = 100;
    let mut replies = Vec::new();
    loop {
        n += 1;
        let reply = publish_reply(&mut ann, "lobby", n);
        replies.push(reply.to_string());
        if reply["op"] == "ack" {
            let want_n = n;
            match bob.recv_json_where(Duration::from_millis(500), |m| {
                m["op"] == "message" && m["data"]["n"] == json!(want_n)
            }) {
                Ok(msg) => {
                    assert_eq!(msg["from"], "ann", "{msg}");
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(e) => panic!("bob's socket failed: {e}"),
            }
        } else {
            sleep(Duration::from_millis(200));
        }
        assert!(
            Instant::now() < deadline,
            "no publish from ann reached bob within 8 s of the restart; replies: {replies:?}\n\
             edge A log:\n{}\nedge B log:\n{}",
            a.log(),
            b.log()
        );
    }
    assert_alive(&mut ann, 1000, "ann");
    assert_alive(&mut bob, 1001, "bob");
}

/// Kills the child on drop, so a failed assertion leaves no process behind.
struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn unreachable_redis_at_start_keeps_the_edge_running_and_logging() {
    let port = free_port();
    let url = redis_url(port);
    let mut child = Command::new(edge_binary())
        .args(base_args(&url, "lonely"))
        .arg("--allow-anonymous")
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run roomcast-edge");
    let stderr = child.stderr.take().expect("stderr");
    let mut child = Reap(child);
    let log = collect_lines(stderr);
    let log = move || log.lock().map(|l| l.clone()).unwrap_or_default();

    let started = Instant::now();
    let deadline = started + Duration::from_secs(3);
    let mut logged = false;
    while Instant::now() < deadline {
        if let Some(status) = child.0.try_wait().expect("try_wait") {
            panic!(
                "the edge exited with {status:?} instead of retrying\nlog:\n{}",
                log()
            );
        }
        logged = logged || log().contains("Redis");
        sleep(Duration::from_millis(50));
    }
    assert!(
        logged || log().contains("Redis"),
        "no error about Redis on stderr within 3 s\nlog:\n{}",
        log()
    );
    assert!(
        child.0.try_wait().expect("try_wait").is_none(),
        "the edge exited\nlog:\n{}",
        log()
    );
}

#[test]
fn kick_closes_every_connection_of_the_user_on_every_edge() {
    let redis = Redis::start(&[]);
    let a = Edge::start(&redis, "ea", &[]);
    let b = Edge::start(&redis, "eb", &[]);
    let (mut ann_a, _) = a.connect("ann");
    let (mut ann_b, _) = b.connect("ann");
    let (mut bob, bob_welcome) = a.connect("bob");
    join(&mut ann_a, "lobby", 1);
    join(&mut ann_b, "lobby", 2);
    join(&mut bob, "lobby", 3);

    let mut conn = redis.conn();
    let reply = redis
        .cmd(&mut conn, &["RC.KICK", "ann", "REASON", "bye now"])
        .expect("RC.KICK");
    assert_eq!(roomcast_tests::reply::counts(&reply), (2, 2), "{reply:?}");
    for (who, client) in [("ann on A", &mut ann_a), ("ann on B", &mut ann_b)] {
        let closed = client
            .expect_close(T)
            .unwrap_or_else(|e| panic!("{who}: no close frame: {e}"));
        assert_eq!(closed, (Some(1008), "bye now".to_string()), "{who}");
    }

    // Bob stays, and sees ann leave once her last connection is gone.
    let left = bob
        .recv_json_where(T, |m| m["op"] == "left")
        .expect("bob sees ann leave");
    assert_eq!(left, json!({"op":"left","room":"lobby","user":"ann"}));
    assert_eq!(presence(&redis, "lobby"), ["bob"]);
    assert_eq!(members(&redis, "lobby"), [conn_id(&bob_welcome)]);
    assert_alive(&mut bob, 5, "bob");
}
