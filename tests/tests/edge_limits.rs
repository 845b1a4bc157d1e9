//! The edge's limits end to end: message size (across fragments), frame-level protocol
//! violations, the closing handshake, publish floods (module rate limit and ban), the
//! local per-connection rate limit, slow consumers, and server pings.
//!
//! Every test starts its own redis-server (with the module) and edge processes on
//! loopback, and every wait is bounded.

use std::io;
use std::time::{Duration, Instant};

use roomcast_tests::edge::{padded_ping, read_seqs, request, Edge};
use roomcast_tests::roomcast::presence;
use roomcast_tests::ws::{self, Message, WsClient, OP_CONTINUATION, OP_PING, OP_TEXT};
use roomcast_tests::Redis;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(5);

/// Waits for the close frame and returns its code and reason, with context on failure.
fn close_of(client: &mut WsClient, what: &str) -> (Option<u16>, String) {
    match client.expect_close(T) {
        Ok(close) => close,
        Err(e) => panic!("{what}: expected a close frame, got {:?}: {e}", e.kind()),
    }
}

/// Asserts that the edge closes `client` with `code`; returns the reason.
fn assert_closed_with(client: &mut WsClient, code: u16, what: &str) -> String {
    let (got, reason) = close_of(client, what);
    assert_eq!(got, Some(code), "{what}: close reason {reason:?}");
    reason
}

#[test]
fn oversized_single_frame_is_closed_with_1009() {
    let redis = Redis::start(&[]);
    let edge = Edge::start(&redis, "big1", &["--max-message-bytes", "1024"]);
    let (mut client, _) = edge.connect("ann");
    // At the limit is fine.
    let ok = padded_ping(1, 1024);
    client.send_frame(true, OP_TEXT, &ok, true).unwrap();
    let pong = client.recv_json_where(T, |m| m["id"] == 1).unwrap();
    assert_eq!(pong["op"], "pong", "{pong}");
    // Over it is not.
    client
        .send_frame(true, OP_TEXT, &vec![b'a'; 2000], true)
        .unwrap();
    let reason = assert_closed_with(&mut client, 1009, "2000-byte frame over a 1024 limit");
    assert!(reason.contains("too big"), "{reason:?}");
}

#[test]
fn oversized_fragmented_message_is_closed_with_1009_and_small_ones_reassemble() {
    let redis = Redis::start(&[]);
    let edge = Edge::start(&redis, "big2", &["--max-message-bytes", "1024"]);

    // Under the limit: one ping op in three fragments is one message.
    let (mut small, _) = edge.connect("ann");
    let msg = padded_ping(7, 600);
    small.send_frame(false, OP_TEXT, &msg[..200], true).unwrap();
    small
        .send_frame(false, OP_CONTINUATION, &msg[200..400], true)
        .unwrap();
    small
        .send_frame(true, OP_CONTINUATION, &msg[400..], true)
        .unwrap();
    let pong = small.recv_json(T).expect("a pong for the fragmented ping");
    assert_eq!(pong, json!({"op":"pong","id":7}));
    // A control frame between fragments is allowed and answered.
    small.send_frame(false, OP_TEXT, &msg[..300], true).unwrap();
    small.send_ping(b"mid").unwrap();
    small
        .send_frame(true, OP_CONTINUATION, &msg[300..], true)
        .unwrap();
    assert_eq!(small.recv(T).unwrap(), Message::Pong(b"mid".to_vec()));
    assert_eq!(small.recv_json(T).unwrap(), json!({"op":"pong","id":7}));

    // Over the limit in total, each fragment under it.
    let (mut big, _) = edge.connect("bob");
    let chunk = vec![b'a'; 600];
    big.send_frame(false, OP_TEXT, &chunk, true).unwrap();
    big.send_frame(false, OP_CONTINUATION, &chunk, true)
        .unwrap();
    // The edge may already have closed (and reset) by now: the last write may fail.
    let _ = big.send_frame(true, OP_CONTINUATION, &chunk, true);
    assert_closed_with(&mut big, 1009, "3 x 600-byte fragments over a 1024 limit");

    // The other connection is unaffected.
    let pong = request(&mut small, json!({"op":"ping"}), 8);
    assert_eq!(pong["op"], "pong", "{pong}");
}

#[test]
fn unmasked_client_frame_is_closed_with_1002() {
    let redis = Redis::start(&[]);
    let edge = Edge::start(&redis, "mask", &[]);
    let (mut client, _) = edge.connect("ann");
    client
        .send_frame(true, OP_TEXT, br#"{"op":"ping","id":1}"#, false)
        .unwrap();
    assert_closed_with(&mut client, 1002, "unmasked text frame");
}

#[test]
fn malformed_frames_are_closed_with_1002_and_bad_utf8_with_1007() {
    let redis = Redis::start(&[]);
    let edge = Edge::start(&redis, "bad", &[]);

    // RSV1 set on a masked text frame (no extension negotiated).
    let (mut rsv, _) = edge.connect("ann");
    let mut frame = ws::encode_frame(true, OP_TEXT, br#"{"op":"ping"}"#, Some([1, 2, 3, 4]));
    frame[0] |= 0x40;
    rsv.send_raw(&frame).unwrap();
    assert_closed_with(&mut rsv, 1002, "RSV1 set");

    // A continuation frame with no message to continue.
    let (mut cont, _) = edge.connect("ann");
    cont.send_frame(true, OP_CONTINUATION, b"{}", true).unwrap();
    assert_closed_with(&mut cont, 1002, "continuation without a start");

    // A new data frame while a fragmented message is unfinished.
    let (mut interleaved, _) = edge.connect("ann");
    interleaved
        .send_frame(false, OP_TEXT, b"{\"op\":", true)
        .unwrap();
    interleaved
        .send_frame(true, OP_TEXT, br#"{"op":"ping"}"#, true)
        .unwrap();
    assert_closed_with(
        &mut interleaved,
        1002,
        "text frame inside a fragmented message",
    );

    // A ping with more than 125 bytes of payload.
    let (mut ping, _) = edge.connect("ann");
    ping.send_frame(true, OP_PING, &[b'p'; 126], true).unwrap();
    assert_closed_with(&mut ping, 1002, "126-byte ping");

    // Text that is not UTF-8, in one frame…
    let (mut utf8, _) = edge.connect("ann");
    utf8.send_frame(true, OP_TEXT, b"{\"op\":\"\xff\xfe\"}", true)
        .unwrap();
    assert_closed_with(&mut utf8, 1007, "invalid UTF-8 text frame");

    // …and split over fragments (valid prefix, invalid continuation).
    let (mut utf8_frag, _) = edge.connect("ann");
    utf8_frag
        .send_frame(false, OP_TEXT, b"{\"op\":\"", true)
        .unwrap();
    utf8_frag
        .send_frame(true, OP_CONTINUATION, b"\xc3\x28\"}", true)
        .unwrap();
    assert_closed_with(&mut utf8_frag, 1007, "invalid UTF-8 across fragments");

    // None of this disturbed a well-behaved connection.
    let (mut good, _) = edge.connect("bob");
    assert_eq!(request(&mut good, json!({"op":"ping"}), 1)["op"], "pong");
}

#[test]
fn client_close_is_answered_and_presence_is_cleared() {
    let redis = Redis::start(&[]);
    let edge = Edge::start(&redis, "bye", &[]);
    let (mut ann, _) = edge.connect("ann");
    let ack = request(&mut ann, json!({"op":"join","room":"r5"}), 1);
    assert_eq!(ack["op"], "ack", "{ack}");
    assert_eq!(presence(&redis, "r5"), vec!["ann".to_string()]);

    ann.send_close(1000, "bye").unwrap();
    let (code, _) = close_of(&mut ann, "closing handshake");
    assert_eq!(code, Some(1000));

    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let users = presence(&redis, "r5");
        if users.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "ann still present 3 s after closing: {users:?}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// What came back for a request: its reply, or the connection's close.
#[derive(Debug)]
enum Outcome {
    Reply(Value),
    Closed(Option<u16>, String),
}

/// Reads until the reply with `id` or a close frame (answering pings).
fn reply_or_close(client: &mut WsClient, id: u64) -> Outcome {
    let deadline = Instant::now() + T;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match client.recv(left) {
            Ok(Message::Text(text)) => {
                let v: Value = serde_json::from_str(&text).expect("JSON");
                if v["id"] == json!(id) {
                    return Outcome::Reply(v);
                }
            }
            Ok(Message::Ping(p)) => {
                let _ = client.send_pong(&p);
            }
            Ok(Message::Close(code, reason)) => return Outcome::Closed(code, reason),
            Ok(_) => {}
            Err(e) => panic!("waiting for reply {id}: {:?}: {e}", e.kind()),
        }
    }
}

#[test]
fn publish_flood_is_rate_limited_then_banned_on_every_edge() {
    let redis = Redis::start(&[
        "publish-rate",
        "5",
        "publish-burst",
        "0",
        "ban-after",
        "3",
        "ban-ms",
        "60000",
    ]);
    let a = Edge::start(&redis, "flood-a", &["--conn-rate", "0"]);
    let b = Edge::start(&redis, "flood-b", &["--conn-rate", "0"]);
    let (mut ann, _) = a.connect("ann");
    let (mut ann_elsewhere, _) = b.connect("ann");
    let (mut bob, _) = b.connect("bob");
    assert_eq!(
        request(&mut ann, json!({"op":"join","room":"flood"}), 1)["op"],
        "ack"
    );

    let mut outcomes = Vec::new();
    let mut closed = None;
    for id in 10..30u64 {
        ann.send_json(&json!({"op":"publish","room":"flood","data":{"n":id},"id":id}))
            .expect("send publish");
        match reply_or_close(&mut ann, id) {
            Outcome::Reply(v) => outcomes.push(v),
            Outcome::Closed(code, reason) => {
                closed = Some((code, reason));
                break;
            }
        }
    }
    assert!(
        !outcomes.is_empty(),
        "no reply before the close: {closed:?}"
    );
    assert_eq!(outcomes[0]["op"], "ack", "first publish: {}", outcomes[0]);
    let limited: Vec<&Value> = outcomes[1..].iter().collect();
    assert!(!limited.is_empty(), "no rate_limited reply before the ban");
    for v in &limited {
        assert_eq!(v["op"], "error", "{v}");
        assert_eq!(v["code"], "rate_limited", "{v}");
        let retry = v["retry_after_ms"].as_u64().unwrap_or(0);
        assert!(retry > 0, "retry_after_ms must be positive: {v}");
    }
    let (code, reason) = closed.expect("the flooding connection was never closed");
    assert_eq!(code, Some(1008), "close reason {reason:?}");
    assert!(reason.contains("banned"), "close reason {reason:?}");

    // The module kicks the banned user's other connection, on the other edge.
    let reason = assert_closed_with(&mut ann_elsewhere, 1008, "ann's connection on edge b");
    assert!(reason.contains("banned"), "close reason {reason:?}");
    // Other users are unaffected.
    assert_eq!(request(&mut bob, json!({"op":"ping"}), 2)["op"], "pong");
}

#[test]
fn local_connection_rate_limit_refuses_without_closing() {
    let redis = Redis::start(&[]);
    let edge = Edge::start(&redis, "local", &["--conn-rate", "5"]);
    let (mut ann, _) = edge.connect("ann");
    for id in 1..=30u64 {
        ann.send_json(&json!({"op":"presence","room":"lobby","id":id}))
            .unwrap();
    }
    let (mut acks, mut limited) = (0, 0);
    for id in 1..=30u64 {
        let v = ann
            .recv_json_where(T, |m| m["id"] == json!(id))
            .unwrap_or_else(|e| panic!("reply {id}: {e}"));
        match v["op"].as_str() {
            Some("ack") => acks += 1,
            Some("error") => {
                assert_eq!(v["code"], "rate_limited", "{v}");
                let retry = v["retry_after_ms"].as_u64().unwrap_or(0);
                assert!(retry > 0 && retry <= 1000, "retry_after_ms: {v}");
                limited += 1;
            }
            _ => panic!("unexpected reply {v}"),
        }
    }
    assert!(acks >= 5, "{acks} acks, {limited} limited");
    assert!(limited >= 10, "{acks} acks, {limited} limited");
    assert!(edge.metric("roomcast_edge_rate_limited_total") >= limited as f64);

    // Still open: pings are never limited, and after a pause requests pass again.
    assert_eq!(request(&mut ann, json!({"op":"ping"}), 100)["op"], "pong");
    std::thread::sleep(Duration::from_millis(400));
    let v = request(&mut ann, json!({"op":"presence","room":"lobby"}), 101);
    assert_eq!(v["op"], "ack", "{v}");
}

#[test]
fn slow_consumer_is_closed_and_healthy_listener_gets_everything_in_order() {
    const COUNT: u64 = 3000;
    let redis = Redis::start(&[]);
    let edge = Edge::start(&redis, "slow", &["--send-queue-bytes", "65536"]);
    let (mut healthy, _) = edge.connect("hal");
    let (mut slow, _) = edge.connect("sid");
    for (client, id) in [(&mut healthy, 1), (&mut slow, 2)] {
        let ack = request(client, json!({"op":"join","room":"firehose"}), id);
        assert_eq!(ack["op"], "ack", "{ack}");
    }

    // The healthy listener reads everything on its own thread.
    let reader =
        std::thread::spawn(move || read_seqs(&mut healthy, COUNT, Duration::from_secs(60)));

    // Published at a rate the healthy listener (a test thread) keeps up with — about
    // 3,000 messages (12 MB) per second — so only the listener that never reads falls
    // behind. (Bursts far beyond what a client can read make any client a slow consumer.)
    const BATCH: u64 = 10;
    let pad = "x".repeat(4000);
    let mut conn = redis.conn();
    for batch in 0..COUNT / BATCH {
        let mut pipe = redis::pipe();
        for seq in batch * BATCH..(batch + 1) * BATCH {
            let data = format!(r#"{{"seq":{seq},"pad":"{pad}"}}"#);
            pipe.cmd("RC.PUBLISH").arg("firehose").arg(data).ignore();
        }
        pipe.query::<()>(&mut conn).expect("RC.PUBLISH batch");
        std::thread::sleep(Duration::from_millis(3));
    }

    let seqs = reader
        .join()
        .expect("reader thread")
        .unwrap_or_else(|e| panic!("healthy listener: {e}"));
    let expected: Vec<u64> = (0..COUNT).collect();
    if seqs != expected {
        let first_bad = seqs.iter().zip(&expected).position(|(a, b)| a != b);
        panic!(
            "healthy listener got {} messages, first out of order at {first_bad:?}",
            seqs.len()
        );
    }

    assert!(
        edge.metric("roomcast_edge_slow_consumer_closes_total") >= 1.0,
        "no slow consumer was closed"
    );
    // Reading now drains what the kernel buffered, then the close (or the TCP end).
    match slow.expect_close(Duration::from_secs(20)) {
        Ok((code, reason)) => {
            assert_eq!(code, Some(1008), "slow consumer close reason {reason:?}");
            assert_eq!(reason, "slow consumer");
        }
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {}
        Err(e) => panic!("slow consumer still open: {:?}: {e}", e.kind()),
    }
}

#[test]
fn server_pings_and_silent_peers_are_closed() {
    let redis = Redis::start(&[]);
    let edge = Edge::start(
        &redis,
        "pings",
        &["--ping-interval-ms", "200", "--ping-timeout-ms", "1000"],
    );
    let (mut lively, welcome) = edge.connect("ann");
    assert_eq!(welcome["heartbeat_ms"], 200, "{welcome}");
    let (mut silent, _) = edge.connect("bob");
    // The silent one never sends anything, not even pongs.
    let silent_since = Instant::now();
    let silent_end = std::thread::spawn(move || {
        let result = silent.expect_close(Duration::from_secs(4));
        (result, silent_since.elapsed())
    });

    // The lively client answers every ping and stays open well past the timeout.
    let until = Instant::now() + Duration::from_millis(2500);
    let mut pings = 0;
    while Instant::now() < until {
        let left = until.saturating_duration_since(Instant::now());
        match lively.recv(left) {
            Ok(Message::Ping(payload)) => {
                pings += 1;
                lively.send_pong(&payload).unwrap();
            }
            Ok(Message::Close(code, reason)) => {
                panic!("a client that answers pings was closed: {code:?} {reason:?}")
            }
            Ok(other) => panic!("unexpected {other:?}"),
            Err(e) if e.kind() == io::ErrorKind::TimedOut => break,
            Err(e) => panic!("lively client: {e}"),
        }
    }
    assert!(
        pings >= 5,
        "only {pings} pings in 2.5 s at a 200 ms interval"
    );
    assert_eq!(request(&mut lively, json!({"op":"ping"}), 1)["op"], "pong");

    let (result, waited) = silent_end.join().expect("silent client thread");
    match result {
        Ok((code, reason)) => {
            assert_eq!(code, Some(1008), "silent client close reason {reason:?}");
            assert!(reason.contains("ping timeout"), "{reason:?}");
        }
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {}
        Err(e) => panic!("silent client not closed: {:?}: {e}", e.kind()),
    }
    assert!(
        waited >= Duration::from_millis(900) && waited <= Duration::from_secs(3),
        "silent client closed after {waited:?} (ping timeout 1 s)"
    );
}
