//! Abuse and fault tests of the edge over real sockets (RELIABILITY.md B5, rows 2–11):
//! unmasked frames, oversized messages, fragment bombs, slowloris, connection floods and
//! EMFILE, sockets that never authenticate, dead peers, slow consumers, and the Origin
//! matrix. Each test prints its measured figure (`row N: …`) and asserts the row's pass
//! figure, scaled where the row's counts do not fit a 2-core CI machine (the scale is
//! in each test's comment).
//!
//! Row 5 (no permessage-deflate) is tested in `edge_basic.rs`
//! (`compression_is_never_negotiated_and_origins_match_exactly`); row 10's base case is
//! `slow_consumer_is_closed_and_healthy_listener_gets_everything_in_order` in
//! `edge_limits.rs` (this file adds the never-reading, small-`SO_RCVBUF` offender). Row 1
//! (Autobahn and mutated frames) and rows 12–27 live elsewhere.
//!
//! Run: `cargo build --release -p roomcast-module -p roomcast-edge && cargo test -p
//! roomcast-tests --test edge_abuse -- --nocapture` (the figures are printed).
//!
//! The tests take a process-wide lock and run one at a time: their timing figures (close
//! within a deadline, connect p99) must not measure each other's load.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use roomcast_tests::edge::{join, padded_ping, read_seqs, request, Edge};
use roomcast_tests::procs::edge_pid;
use roomcast_tests::roomcast::{members, rc_info_field};
use roomcast_tests::ws::{self, Connect, Message, WsClient, OP_CONTINUATION, OP_TEXT};
use roomcast_tests::{serial, wait, Redis};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(5);
/// The default whole-message cap (`--max-message-bytes`).
const CAP: usize = 65_536;

/// Pace of every wait for a condition.
const POLL: Duration = Duration::from_millis(20);

// ---------------------------------------------------------------------------------------
// Process and module probes
// ---------------------------------------------------------------------------------------

/// Open file descriptors of `pid`.
fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Resident set size of `pid` in KiB (`VmRSS`).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS for pid {pid}"))
}

/// Whether `pid` is alive (not gone, not a zombie).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let (_, after) = s.rsplit_once(')')?;
            after.split_whitespace().next().map(|st| st != "Z")
        })
        .unwrap_or(false)
}

/// Asserts the edge logged no panic.
fn assert_no_panic(edge: &Edge) {
    let log = edge.log();
    assert!(!log.contains("panicked"), "the edge panicked:\n{log}");
}

/// The `p`-quantile (0..=1) of `samples` (sorted here).
fn quantile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    if samples.is_empty() {
        return Duration::ZERO;
    }
    let at = ((samples.len() as f64 * p).ceil() as usize).clamp(1, samples.len()) - 1;
    samples[at]
}

// ---------------------------------------------------------------------------------------
// Raw HTTP and WebSocket pieces (for sockets the blocking client cannot model)
// ---------------------------------------------------------------------------------------

/// A WebSocket upgrade request for `path` with extra header lines.
fn upgrade_request(addr: SocketAddr, path: &str, extra: &[(&str, &str)]) -> String {
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    );
    for (name, value) in extra {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request
}

/// Reads one HTTP response (head, and a `Content-Length` body if any) within `timeout`:
/// its status and whatever followed the head (the body, or the first frames after a 101).
fn read_response(stream: &mut TcpStream, timeout: Duration) -> io::Result<(u16, Vec<u8>)> {
    let deadline = Instant::now() + timeout;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut read_more = |stream: &mut TcpStream, buf: &mut Vec<u8>| -> io::Result<()> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no response in time",
            ));
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut chunk)? {
            0 => Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed")),
            n => {
                buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
        }
    };
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        read_more(stream, &mut buf)?;
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, head.clone()))?;
    let length: usize = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        read_more(stream, &mut buf)?;
    }
    Ok((status, buf.split_off(head_end)))
}

/// On a non-blocking socket: true once the peer closed (EOF or reset); data is drained.
fn closed_by_peer(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 2048];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return true,
        }
    }
}

/// A publish to `room` padded to exactly `len` bytes.
fn padded_publish(room: &str, len: usize) -> Vec<u8> {
    let head = format!(r#"{{"op":"publish","room":"{room}","data":""#);
    let tail = r#""}"#;
    let text = format!("{head}{}{tail}", "x".repeat(len - head.len() - tail.len()));
    assert_eq!(text.len(), len);
    text.into_bytes()
}

/// Reads everything `client` receives until it is quiet for `quiet`; counts the JSON
/// messages by `op`. Pings are not answered.
fn drain_ops(client: &mut WsClient, quiet: Duration) -> HashMap<String, usize> {
    let mut ops = HashMap::new();
    while let Ok(message) = client.recv(quiet) {
        if let Message::Text(text) = message {
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            let op = v["op"].as_str().unwrap_or("?").to_string();
            *ops.entry(op).or_insert(0) += 1;
        }
    }
    ops
}

/// Reads until the reply with `id`, skipping everything else and answering no ping.
fn reply_without_pongs(client: &mut WsClient, id: u64) -> Value {
    let deadline = Instant::now() + T;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match client.recv(left) {
            Ok(Message::Text(text)) => {
                let v: Value = serde_json::from_str(&text).expect("JSON");
                if v["id"] == json!(id) {
                    return v;
                }
            }
            Ok(_) => {}
            Err(e) => panic!("waiting for reply {id}: {e}"),
        }
    }
}

/// Whether a close or EOF arrived on `client` within `wait`; `Some(code)` for a close.
fn poll_close(client: &mut WsClient, wait: Duration) -> Option<Option<u16>> {
    loop {
        match client.recv(wait) {
            Ok(Message::Close(code, _)) => return Some(code),
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::TimedOut => return None,
            Err(_) => return Some(None),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Row 2: unmasked client frames
// ---------------------------------------------------------------------------------------

/// Row 2, at full scale: 1,000 connections each send one unmasked publish (to a room
/// they joined, which a listener also joined). Every one is closed with 1002 and none
/// reaches the module: `RC.INFO published` does not move and the listener gets no
/// message. (Publishers are spread over 100 rooms of 10 so that join/leave fan-out stays
/// small; the listener is in all 100.)
#[test]
fn row2_unmasked_frames_are_closed_1002_and_never_routed() {
    let _serial = serial();
    const CONNS: usize = 1000;
    const ROOMS: usize = 100;
    let redis = Redis::start(&[]);
    let edge = Edge::start(&redis, "abuse2", &[]);
    let (mut listener, _) = edge.connect("listener");
    for r in 0..ROOMS {
        join(&mut listener, &format!("r2-{r}"), r as u64 + 1);
    }
    let mut clients = Vec::with_capacity(CONNS);
    for i in 0..CONNS {
        let (mut client, _) = edge.connect(&format!("p{i}"));
        let room = format!("r2-{}", i % ROOMS);
        client
            .send_json(&json!({"op":"join","room":room,"id":1}))
            .expect("send join");
        clients.push(client);
    }
    for (i, client) in clients.iter_mut().enumerate() {
        let ack = client
            .recv_json_where(T, |m| m["id"] == 1)
            .unwrap_or_else(|e| panic!("join of p{i}: {e}"));
        assert_eq!(ack["op"], "ack", "p{i}: {ack}");
    }
    let published_before = rc_info_field(&mut redis.conn(), "published");

    let started = Instant::now();
    for (i, client) in clients.iter_mut().enumerate() {
        let room = format!("r2-{}", i % ROOMS);
        let body = json!({"op":"publish","room":room,"data":{"i":i}}).to_string();
        client
            .send_raw(&ws::encode_frame(true, OP_TEXT, body.as_bytes(), None))
            .expect("send an unmasked frame");
    }
    let mut codes: HashMap<Option<u16>, usize> = HashMap::new();
    for client in clients.iter_mut() {
        let code = match client.expect_close(T) {
            Ok((code, _)) => code,
            Err(_) => Some(0),
        };
        *codes.entry(code).or_insert(0) += 1;
    }
    let elapsed = started.elapsed();
    drop(clients);
    assert!(
        wait::until(T, POLL, || rc_info_field(&mut redis.conn(), "connections")
            == 1),
        "the closed publishers are still present"
    );
    let ops = drain_ops(&mut listener, Duration::from_millis(300));
    let published_after = rc_info_field(&mut redis.conn(), "published");
    let closed_1002 = codes.get(&Some(1002)).copied().unwrap_or(0);
    let messages = ops.get("message").copied().unwrap_or(0);
    println!(
        "row 2: {CONNS} unmasked frames on {CONNS} connections: {closed_1002} closed 1002 \
         ({:.1}%) in {elapsed:.2?} (all codes {codes:?}); RC.INFO published {published_before} \
         -> {published_after}; messages the room listener got: {messages}",
        100.0 * closed_1002 as f64 / CONNS as f64
    );
    assert_eq!(closed_1002, CONNS, "close codes: {codes:?}");
    assert_eq!(
        published_after, published_before,
        "an unmasked frame was routed"
    );
    assert_eq!(messages, 0, "the listener got messages: {ops:?}");
    assert_no_panic(&edge);
}

// ---------------------------------------------------------------------------------------
// Row 3: oversized single frame
// ---------------------------------------------------------------------------------------

/// Row 3: a message of exactly 64 KiB passes; 50 offenders each send one 64 KiB + 1 B
/// publish frame: all closed 1009, nothing published, and the edge's RSS grows by less
/// than 1 MiB per offender (measured once all 50 are gone).
#[test]
fn row3_oversized_frame_is_closed_1009_without_routing_or_memory_growth() {
    let _serial = serial();
    const OFFENDERS: usize = 50;
    let redis = Redis::start(&[]);
    let edge = Edge::start(&redis, "abuse3", &[]);
    let pid = edge_pid("abuse3");
    let (mut listener, _) = edge.connect("listener");
    join(&mut listener, "r3", 1);

    // At the cap: one message, answered.
    let (mut at_cap, _) = edge.connect("atcap");
    at_cap
        .send_frame(true, OP_TEXT, &padded_ping(7, CAP), true)
        .unwrap();
    let pong = at_cap.recv_json_where(T, |m| m["id"] == 7).unwrap();
    assert_eq!(pong["op"], "pong", "{pong}");

    let rss_before = rss_kib(pid);
    let mut offenders = Vec::new();
    for i in 0..OFFENDERS {
        let (mut client, _) = edge.connect(&format!("big{i}"));
        join(&mut client, "r3", 1);
        offenders.push(client);
    }
    let published_before = rc_info_field(&mut redis.conn(), "published");
    let big = padded_publish("r3", CAP + 1);
    let started = Instant::now();
    for client in offenders.iter_mut() {
        // The edge refuses at the header and may reset before the payload is all sent.
        let _ = client.send_frame(true, OP_TEXT, &big, true);
    }
    let mut codes: HashMap<Option<u16>, usize> = HashMap::new();
    for client in offenders.iter_mut() {
        let code = client.expect_close(T).map_or(Some(0), |(code, _)| code);
        *codes.entry(code).or_insert(0) += 1;
    }
    let elapsed = started.elapsed();
    drop(offenders);
    assert!(
        wait::until(T, POLL, || rc_info_field(&mut redis.conn(), "connections")
            == 2),
        "offenders still present"
    );
    thread::sleep(Duration::from_millis(200));
    let rss_after = rss_kib(pid);
    let ops = drain_ops(&mut listener, Duration::from_millis(300));
    let published_after = rc_info_field(&mut redis.conn(), "published");
    let closed_1009 = codes.get(&Some(1009)).copied().unwrap_or(0);
    let growth = rss_after.saturating_sub(rss_before);
    let per_offender = growth as f64 / OFFENDERS as f64;
    println!(
        "row 3: {OFFENDERS} frames of 64 KiB + 1 B: {closed_1009} closed 1009 in {elapsed:.2?} \
         (codes {codes:?}); published {published_before} -> {published_after}; listener \
         messages {}; edge RSS {rss_before} -> {rss_after} KiB = {per_offender:.1} KiB per \
         offender; a 64 KiB message passes",
        ops.get("message").copied().unwrap_or(0)
    );
    assert_eq!(closed_1009, OFFENDERS, "codes {codes:?}");
    assert_eq!(published_after, published_before);
    assert_eq!(ops.get("message"), None, "{ops:?}");
    assert!(per_offender < 1024.0, "{per_offender} KiB per offender");
    assert_no_panic(&edge);
}

// ---------------------------------------------------------------------------------------
// Row 4: fragment bombs
// ---------------------------------------------------------------------------------------

/// Row 4. (a) The whole-message cap counts across fragments, exactly: 64 KiB in two
/// fragments passes, 64 KiB + 1 B is closed 1009. (b) 20 connections each stream up to
/// 1,000 non-FIN 60 KiB frames: closed 1009 as soon as the total passes 64 KiB (the
/// second frame); the figure is how many frames each client got out before it saw the
/// close. (c) 5 connections each start a message and stream up to 10^6 empty
/// continuation frames: closed 1008 "too many fragments" at the 128-fragment cap; the
/// figure is how many they sent before they noticed. (d) 100 connections each hold a
/// partial message just under the cap: the edge's RSS per connection < 2 × cap.
#[test]
fn row4_fragment_bombs_are_closed_at_the_size_and_fragment_caps() {
    let _serial = serial();
    let redis = Redis::start(&[]);
    let edge = Edge::start(&redis, "abuse4", &[]);
    let pid = edge_pid("abuse4");

    // (a) The boundary.
    let (mut exact, _) = edge.connect("exact");
    let msg = padded_ping(3, CAP);
    exact
        .send_frame(false, OP_TEXT, &msg[..CAP / 2], true)
        .unwrap();
    exact
        .send_frame(true, OP_CONTINUATION, &msg[CAP / 2..], true)
        .unwrap();
    let pong = exact.recv_json_where(T, |m| m["id"] == 3).unwrap();
    assert_eq!(pong["op"], "pong", "{pong}");
    let over = padded_ping(4, CAP + 1);
    exact
        .send_frame(false, OP_TEXT, &over[..CAP / 2], true)
        .unwrap();
    let _ = exact.send_frame(true, OP_CONTINUATION, &over[CAP / 2..], true);
    let (code, _) = exact.expect_close(T).expect("close after 64 KiB + 1 B");
    assert_eq!(code, Some(1009));

    // (b) Streams of 60 KiB non-FIN frames.
    const STREAMERS: usize = 20;
    let chunk = vec![b'a'; 60 * 1024];
    let mut sent_counts = Vec::new();
    let mut codes: HashMap<Option<u16>, usize> = HashMap::new();
    for i in 0..STREAMERS {
        let (mut client, _) = edge.connect(&format!("stream{i}"));
        let mut sent = 0usize;
        let mut code = None;
        while sent < 1000 {
            let opcode = if sent == 0 { OP_TEXT } else { OP_CONTINUATION };
            if client.send_frame(false, opcode, &chunk, true).is_err() {
                break;
            }
            sent += 1;
            if let Some(c) = poll_close(&mut client, Duration::from_millis(1)) {
                code = Some(c);
                break;
            }
        }
        let code = code.unwrap_or_else(|| client.expect_close(T).map_or(Some(0), |c| c.0));
        *codes.entry(code).or_insert(0) += 1;
        sent_counts.push(sent);
    }
    let most = sent_counts.iter().copied().max().unwrap_or(0);
    println!(
        "row 4: {STREAMERS} streams of 60 KiB non-FIN frames: codes {codes:?}; frames sent \
         before the close was seen: max {most} (of 1,000), all {sent_counts:?}"
    );
    assert_eq!(codes.get(&Some(1009)), Some(&STREAMERS), "codes {codes:?}");
    assert!(
        most < 100,
        "a client streamed {most} frames before the close"
    );

    // (c) Empty continuation frames.
    const BOMBERS: usize = 5;
    const BATCH: usize = 1000;
    let mut batch = Vec::with_capacity(BATCH * 6);
    for _ in 0..BATCH {
        batch.extend(ws::encode_frame(
            false,
            OP_CONTINUATION,
            b"",
            Some([1, 2, 3, 4]),
        ));
    }
    let mut bomb_sent = Vec::new();
    let mut bomb_codes: HashMap<Option<u16>, usize> = HashMap::new();
    let mut reasons = Vec::new();
    for i in 0..BOMBERS {
        let (mut client, _) = edge.connect(&format!("bomb{i}"));
        client.send_frame(false, OP_TEXT, b"{", true).unwrap();
        let mut sent = 1usize;
        let mut seen: Option<(Option<u16>, String)> = None;
        while sent < 1_000_000 {
            if client.send_raw(&batch).is_err() {
                break;
            }
            sent += BATCH;
            match client.recv(Duration::from_millis(1)) {
                Ok(Message::Close(code, reason)) => {
                    seen = Some((code, reason));
                    break;
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {}
                Err(_) => break,
            }
        }
        let (code, reason) = seen.unwrap_or_else(|| {
            client
                .expect_close(T)
                .unwrap_or((Some(0), "no close frame".into()))
        });
        *bomb_codes.entry(code).or_insert(0) += 1;
        reasons.push(reason);
        bomb_sent.push(sent);
    }
    let most_frames = bomb_sent.iter().copied().max().unwrap_or(0);
    println!(
        "row 4: {BOMBERS} empty-continuation bombs (up to 10^6 frames each): codes \
         {bomb_codes:?}, reasons {:?}; frames sent before the close was seen: {bomb_sent:?}",
        reasons.first()
    );
    assert_eq!(
        bomb_codes.get(&Some(1008)),
        Some(&BOMBERS),
        "{bomb_codes:?}"
    );
    assert!(
        reasons.iter().all(|r| r == "too many fragments"),
        "{reasons:?}"
    );
    assert!(
        most_frames < 100_000,
        "{most_frames} frames sent before the close"
    );

    // (d) Memory per connection holding a partial message just under the cap.
    const HOLDERS: usize = 100;
    thread::sleep(Duration::from_millis(300));
    let rss_before = rss_kib(pid);
    let first = vec![b'a'; CAP / 2];
    let second = vec![b'b'; CAP / 2 - 1024];
    let mut holders = Vec::new();
    for i in 0..HOLDERS {
        let (mut client, _) = edge.connect(&format!("hold{i}"));
        client.send_frame(false, OP_TEXT, &first, true).unwrap();
        client
            .send_frame(false, OP_CONTINUATION, &second, true)
            .unwrap();
        // A ping after the fragments: its pong proves the edge has read them.
        client.send_ping(b"held").unwrap();
        holders.push(client);
    }
    for client in holders.iter_mut() {
        loop {
            match client.recv(T).expect("the pong after the fragments") {
                Message::Pong(_) => break,
                Message::Close(code, reason) => panic!("holder closed: {code:?} {reason}"),
                _ => {}
            }
        }
    }
    let rss_held = rss_kib(pid);
    let per_conn = rss_held.saturating_sub(rss_before) as f64 / HOLDERS as f64;
    println!(
        "row 4: {HOLDERS} connections each holding a {} B partial message: edge RSS \
         {rss_before} -> {rss_held} KiB = {per_conn:.1} KiB per connection (cap {} KiB, bar \
         < {} KiB)",
        first.len() + second.len(),
        CAP / 1024,
        2 * CAP / 1024
    );
    assert!(
        per_conn < (2 * CAP / 1024) as f64,
        "{per_conn} KiB per connection"
    );
    drop(holders);
    assert_no_panic(&edge);
}

// ---------------------------------------------------------------------------------------
// Row 6: slowloris and idle sockets before the upgrade
// ---------------------------------------------------------------------------------------

/// One socket under watch: when its deadline clock started, and when it was seen closed.
struct Watched {
    stream: TcpStream,
    since: Instant,
    closed: Option<Instant>,
    /// Trickle interval (`None`: sends nothing more).
    trickle: Option<Duration>,
    next_byte: usize,
    next_at: Instant,
}

/// Row 6, scaled to fit one test process's file limit next to the edge's: 4,000 sockets
/// trickle an upgrade request at 1 B per 2 s, 500 at 1 B per 200 ms (progress must not
/// extend the deadline), 1,000 connect and send nothing, and 20 keep an HTTP connection
/// idle after one `/healthz`; the header timeout is 2 s (`--handshake-timeout-ms 2000`).
/// Every socket is closed within timeout + 1 s (≤ 3 s), the edge's open files return to
/// the baseline ±1%, and a fresh client's connect (TCP connect + upgrade to its 101)
/// p99 < 50 ms meanwhile.
#[test]
fn row6_slowloris_and_idle_sockets_are_closed_at_the_header_timeout() {
    let _serial = serial();
    const SLOW: usize = 4000;
    const FAST: usize = 500;
    const SILENT: usize = 1000;
    const KEEPALIVE: usize = 20;
    let timeout = Duration::from_millis(2000);
    let bar = timeout + Duration::from_secs(1);
    let redis = Redis::start(&[]);
    let edge = Edge::start(&redis, "abuse6", &["--handshake-timeout-ms", "2000"]);
    let pid = edge_pid("abuse6");
    let addr = edge.addr;
    let base_fds = fd_count(pid);
    let request = upgrade_request(addr, "/ws?user=loris", &[]).into_bytes();

    // A fresh client connects every 20 ms, for a baseline second and while the storm
    // lasts: (when it started, how long its connect took: TCP connect + upgrade to the
    // 101). Its welcome must follow (not timed: that is a Redis round trip).
    let stop = Arc::new(AtomicBool::new(false));
    let prober = thread::spawn({
        let stop = stop.clone();
        move || {
            let mut samples = Vec::new();
            let mut failures = Vec::new();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let started = Instant::now();
                match ws::connect(addr, &format!("/ws?user=probe{n}"), &[]) {
                    Ok(Connect::Open(mut client)) => {
                        let took = started.elapsed();
                        match client.recv_json(T) {
                            Ok(v) if v["op"] == "welcome" => samples.push((started, took)),
                            other => failures.push(format!("{other:?}")),
                        }
                    }
                    other => failures.push(format!("{other:?}")),
                }
                thread::sleep(Duration::from_millis(20));
            }
            (samples, failures)
        }
    });
    thread::sleep(Duration::from_secs(1));

    let mut watched: Vec<Watched> = Vec::new();
    let open = |trickle: Option<Duration>| -> Watched {
        let mut stream = TcpStream::connect(addr).expect("connect");
        let now = Instant::now();
        let mut next_byte = 0;
        if trickle.is_some() {
            stream.write_all(&request[..1]).expect("first byte");
            next_byte = 1;
        }
        stream.set_nonblocking(true).expect("non-blocking");
        Watched {
            stream,
            since: now,
            closed: None,
            trickle,
            next_byte,
            next_at: now + trickle.unwrap_or(Duration::ZERO),
        }
    };
    let started = Instant::now();
    for i in 0..SLOW + FAST + SILENT {
        let kind = if i % 11 < 2 {
            None
        } else if i % 11 == 2 {
            Some(Duration::from_millis(200))
        } else {
            Some(Duration::from_secs(2))
        };
        watched.push(open(kind));
        // About 5,000 connects a second: a ramp the listen backlog absorbs (somaxconn is
        // 4,096 here), so what is measured is the edge, not SYN drops.
        if i % 100 == 99 {
            thread::sleep(Duration::from_millis(20));
        }
    }
    // Keep-alive connections left idle after one request.
    for _ in 0..KEEPALIVE {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream
            .write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
            .unwrap();
        let (status, _) = read_response(&mut stream, T).expect("/healthz");
        assert_eq!(status, 200);
        let since = Instant::now();
        stream.set_nonblocking(true).unwrap();
        watched.push(Watched {
            stream,
            since,
            closed: None,
            trickle: None,
            next_byte: 0,
            next_at: since,
        });
    }
    let ramp = started.elapsed();
    let peak_fds = fd_count(pid);

    // Watch: trickle on schedule, note when each socket is closed.
    let give_up = Instant::now() + bar + Duration::from_secs(3);
    while watched.iter().any(|w| w.closed.is_none()) && Instant::now() < give_up {
        let now = Instant::now();
        for w in watched.iter_mut().filter(|w| w.closed.is_none()) {
            if let Some(every) = w.trickle {
                if now >= w.next_at && w.next_byte < request.len() {
                    let _ = w.stream.write(&request[w.next_byte..w.next_byte + 1]);
                    w.next_byte += 1;
                    w.next_at = now + every;
                }
            }
            if closed_by_peer(&mut w.stream) {
                w.closed = Some(Instant::now());
            }
        }
        thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    let (samples, failures) = prober.join().expect("prober");
    let (mut baseline, mut during): (Vec<_>, Vec<_>) = (Vec::new(), Vec::new());
    for (at, took) in samples {
        if at < started {
            baseline.push(took);
        } else {
            during.push(took);
        }
    }

    let lifetimes: Vec<Option<Duration>> = watched
        .iter()
        .map(|w| w.closed.map(|c| c.duration_since(w.since)))
        .collect();
    let still_open = lifetimes.iter().filter(|l| l.is_none()).count();
    let mut closed: Vec<Duration> = lifetimes.iter().flatten().copied().collect();
    closed.sort();
    let (min, max) = (
        closed.first().copied().unwrap_or_default(),
        closed.last().copied().unwrap_or_default(),
    );
    let trickled_bytes: usize = watched.iter().map(|w| w.next_byte).max().unwrap_or(0);
    drop(watched);
    let mut fds_after = fd_count(pid);
    let tolerance = (base_fds / 100).max(1);
    wait::until(T, POLL, || {
        fds_after = fd_count(pid);
        fds_after.abs_diff(base_fds) <= tolerance
    });
    let probes = during.len();
    let p50 = quantile(&mut during, 0.50);
    let p99 = quantile(&mut during, 0.99);
    let base_p99 = quantile(&mut baseline, 0.99);
    println!(
        "row 6: {} sockets ({SLOW} at 1 B/2 s, {FAST} at 1 B/200 ms, {SILENT} silent, \
         {KEEPALIVE} idle keep-alive) opened in {ramp:.2?}; closed after {min:.2?}..{max:.2?} \
         (bar {bar:?}), {still_open} still open; most request bytes sent by one socket: \
         {trickled_bytes}; edge fds {base_fds} -> {peak_fds} (peak) -> {fds_after}; fresh \
         client connect p50 {p50:.2?} p99 {p99:.2?} over {probes} probes during the storm \
         (p99 {base_p99:.2?} before it), {} failed",
        SLOW + FAST + SILENT + KEEPALIVE,
        failures.len()
    );
    assert_eq!(still_open, 0, "sockets never closed");
    assert!(max <= bar, "a socket lived {max:?}");
    assert!(
        min >= timeout - Duration::from_millis(500),
        "a socket was closed after {min:?}: before the header timeout"
    );
    assert!(
        peak_fds >= base_fds + SLOW,
        "the edge never held the sockets"
    );
    assert!(
        fds_after.abs_diff(base_fds) <= tolerance,
        "edge fds {base_fds} -> {fds_after}"
    );
    assert!(failures.is_empty(), "fresh clients failed: {failures:?}");
    assert!(probes >= 50, "only {probes} probes");
    assert!(p99 < Duration::from_millis(50), "connect p99 {p99:?}");
    assert_no_panic(&edge);
}

// ---------------------------------------------------------------------------------------
// Row 7: connection flood, EMFILE, per-user cap
// ---------------------------------------------------------------------------------------

/// Row 7, at full scale: `--max-conns 500`, then 1,500 upgrade requests from 4 source
/// addresses: exactly 500 upgraded (each gets its welcome), 1,000 refused with 503, the
/// gauges and counter in `/metrics` agree, no panic; after 100 close, a new client is
/// accepted within 1 s.
#[test]
fn row7_connection_flood_is_capped_at_max_conns() {
    let _serial = serial();
    const MAX: usize = 500;
    const TOTAL: usize = 1500;
    let redis = Redis::start(&[]);
    let edge = Edge::start(&redis, "abuse7", &["--max-conns", "500"]);
    let mut open = Vec::new();
    let mut refused: HashMap<(u16, String), usize> = HashMap::new();
    let started = Instant::now();
    for i in 0..TOTAL {
        let source = Ipv4Addr::new(127, 0, 0, 2 + (i % 4) as u8);
        match ws::connect_from(source, edge.addr, &format!("/ws?user=f{i}"), &[]) {
            Ok(Connect::Open(client)) => open.push(client),
            Ok(Connect::Refused { status, body }) => {
                *refused
                    .entry((status, body.trim().to_string()))
                    .or_insert(0) += 1
            }
            Err(e) => panic!("connect {i}: {e}"),
        }
    }
    let elapsed = started.elapsed();
    for client in open.iter_mut() {
        let welcome = client.recv_json(T).expect("welcome");
        assert_eq!(welcome["op"], "welcome", "{welcome}");
    }
    let gauge_open = edge.metric("roomcast_edge_connections_open");
    let gauge_max = edge.metric("roomcast_edge_connections_max");
    let refused_total = edge.metric("roomcast_edge_connections_refused_total");
    let present = rc_info_field(&mut redis.conn(), "connections");

    // Room again: close 100, then a newcomer gets in within 1 s.
    open.truncate(MAX - 100);
    let closed_at = Instant::now();
    let mut attempts = 0;
    let recovered = loop {
        attempts += 1;
        match ws::connect(edge.addr, "/ws?user=newcomer", &[]).expect("connect") {
            Connect::Open(mut client) => {
                let welcome = client.recv_json(T).expect("welcome");
                assert_eq!(welcome["op"], "welcome");
                break closed_at.elapsed();
            }
            Connect::Refused { status, .. } => {
                assert_eq!(status, 503);
                assert!(
                    closed_at.elapsed() < Duration::from_secs(5),
                    "never recovered"
                );
                thread::sleep(Duration::from_millis(10));
            }
        }
    };
    let n_open = open.len() + 100;
    println!(
        "row 7: --max-conns {MAX}, {TOTAL} upgrade requests in {elapsed:.2?}: {n_open} \
         upgraded, refused {refused:?}; /metrics connections_open {gauge_open}, \
         connections_max {gauge_max}, connections_refused_total {refused_total}; RC.INFO \
         connections {present}; after 100 closed a newcomer got in after {recovered:.2?} \
         ({attempts} attempts)"
    );
    assert_eq!(n_open, MAX);
    assert_eq!(
        refused.get(&(503, "too many connections".to_string())),
        Some(&(TOTAL - MAX)),
        "{refused:?}"
    );
    assert_eq!(gauge_open, MAX as f64);
    assert_eq!(gauge_max, MAX as f64);
    assert_eq!(refused_total, (TOTAL - MAX) as f64);
    assert_eq!(present, MAX as i64);
    assert!(recovered < Duration::from_secs(1), "{recovered:?}");
    assert_no_panic(&edge);
}

/// Row 7, EMFILE: the edge's open-file limit is lowered (prlimit) to its current use +
/// 60, so `accept` fails with EMFILE while clients keep arriving. It must neither panic
/// nor exit, keep the waiting clients in the backlog, and serve them within 1 s of
/// connections closing.
#[test]
fn row7_emfile_backs_off_and_recovers_when_files_free_up() {
    let _serial = serial();
    let redis = Redis::start(&[]);
    let edge = Edge::start(&redis, "abuse7e", &[]);
    let pid = edge_pid("abuse7e");
    let addr = edge.addr;
    let files = fd_count(pid);
    let limit = files + 60;
    let set_limit = |soft: usize| {
        let status = std::process::Command::new("prlimit")
            .arg("--pid")
            .arg(pid.to_string())
            .arg(format!("--nofile={soft}:"))
            .status()
            .expect("run prlimit");
        assert!(status.success(), "prlimit failed");
    };
    set_limit(limit);

    // Upgrade until the edge stops answering: from then on, requests wait in the backlog.
    let mut upgraded = Vec::new();
    let mut waiting = Vec::new();
    for i in 0..200 {
        let mut stream = TcpStream::connect(addr).expect("connect (the kernel accepts it)");
        stream
            .write_all(upgrade_request(addr, &format!("/ws?user=e{i}"), &[]).as_bytes())
            .unwrap();
        match read_response(&mut stream, Duration::from_millis(300)) {
            Ok((101, _)) => upgraded.push(stream),
            Ok((status, body)) => panic!("{status}: {}", String::from_utf8_lossy(&body)),
            Err(_) => {
                waiting.push(stream);
                if waiting.len() == 20 {
                    break;
                }
            }
        }
    }
    assert_eq!(waiting.len(), 20, "the edge never ran out of files");
    thread::sleep(Duration::from_millis(300));
    assert!(alive(pid), "the edge died at EMFILE:\n{}", edge.log());
    let at_emfile = upgraded.len();

    // Free 40 files: every waiting client must be upgraded within 1 s.
    upgraded.truncate(at_emfile - 40);
    let freed = Instant::now();
    let mut served = Vec::new();
    for stream in waiting.iter_mut() {
        let left = (freed + Duration::from_secs(3)).saturating_duration_since(Instant::now());
        let (status, _) = read_response(stream, left).expect("a waiting client was never served");
        assert_eq!(status, 101);
        served.push(freed.elapsed());
    }
    let slowest = served.iter().copied().max().unwrap_or_default();
    set_limit(20_000);
    let log = edge.log();
    let warnings = log.matches("accept failed").count();
    println!(
        "row 7 (EMFILE): open-file limit {limit}; {at_emfile} upgraded before accept failed, \
         20 waited in the backlog; after 40 closed all 20 were upgraded within {slowest:.2?}; \
         edge alive, {warnings} rate-limited accept warnings, no panic"
    );
    assert!(warnings >= 1, "no accept failure was logged:\n{log}");
    assert!(slowest < Duration::from_secs(1), "{slowest:?}");
    assert!(alive(pid));
    assert_eq!(ws::http_get(addr, "/healthz").expect("/healthz").0, 200);
    assert_no_panic(&edge);
}

/// Row 7, per user: with `max-conns-per-user 3` the 4th connection of a user is closed
/// with 1008 "too many connections" (app close, after the upgrade: the module decides),
/// others are unaffected, and a slot freed by a close is usable again.
#[test]
fn row7_per_user_connection_cap_closes_the_extra_one_with_1008() {
    let _serial = serial();
    let redis = Redis::start(&["max-conns-per-user", "3"]);
    let edge = Edge::start(&redis, "abuse7u", &[]);
    let mut ann: Vec<WsClient> = (0..3).map(|_| edge.connect("ann").0).collect();
    let mut fourth = edge.try_connect("/ws?user=ann", &[]).unwrap_open();
    let (code, reason) = fourth.expect_close(T).expect("the 4th is closed");
    let (mut bob, _) = edge.connect("bob");
    assert_eq!(request(&mut bob, json!({"op":"ping"}), 1)["op"], "pong");
    let present = rc_info_field(&mut redis.conn(), "connections");
    ann.truncate(2);
    let reopened = wait::until(T, POLL, || {
        let mut c = edge.try_connect("/ws?user=ann", &[]).unwrap_open();
        matches!(c.recv_json(T), Ok(v) if v["op"] == "welcome")
    });
    println!(
        "row 7 (per user): cap 3, the 4th connection got close {code:?} {reason:?}; RC.INFO \
         connections {present} (3 ann + bob); after one closed a new one was welcomed: {reopened}"
    );
    assert_eq!(code, Some(1008));
    assert_eq!(reason, "too many connections");
    assert_eq!(present, 4);
    assert!(reopened);
    for client in ann.iter_mut() {
        assert_eq!(request(client, json!({"op":"ping"}), 2)["op"], "pong");
    }
    assert_no_panic(&edge);
}

// ---------------------------------------------------------------------------------------
// Row 8: sockets that never authenticate
// ---------------------------------------------------------------------------------------

/// Row 8. Authentication happens at the handshake, so "idle before auth" means a socket
/// that never gets upgraded: 1,000 upgrade requests without a token (half with an
/// anonymous `?user=`, refused without `--allow-anonymous`) all get 401, none is
/// upgraded or registered (RC.INFO connections 0), and each refused socket is closed
/// right after its 401 (`Connection: close`, well within the 2 s header timeout here);
/// 1,000 TCP sockets that never send a request are closed at the header timeout + ≤ 1 s
/// (row 6 measures these at a larger scale).
#[test]
fn row8_unauthenticated_sockets_are_never_upgraded_and_time_out() {
    let _serial = serial();
    const N: usize = 1000;
    let timeout = Duration::from_millis(2000);
    let bar = timeout + Duration::from_secs(1);
    let redis = Redis::start(&[]);
    let edge = Edge::start_token_only(&redis, "abuse8", &["--handshake-timeout-ms", "2000"]);
    let addr = edge.addr;
    let mut statuses: HashMap<u16, usize> = HashMap::new();
    let mut watched: Vec<(TcpStream, Instant, Option<Instant>)> = Vec::new();
    for i in 0..N {
        let path = if i % 2 == 0 {
            "/ws".to_string()
        } else {
            format!("/ws?user=anon{i}")
        };
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream
            .write_all(upgrade_request(addr, &path, &[]).as_bytes())
            .unwrap();
        let (status, _) = read_response(&mut stream, T).expect("a response");
        *statuses.entry(status).or_insert(0) += 1;
        // The refusal closes the socket: EOF (or a reset) follows the 401 at once.
        let answered = Instant::now();
        stream.set_read_timeout(Some(bar)).unwrap();
        let mut byte = [0u8; 1];
        let closed = match stream.read(&mut byte) {
            Ok(0) => Some(Instant::now()),
            Err(e)
                if !matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Some(Instant::now())
            }
            _ => None,
        };
        watched.push((stream, answered, closed));
    }
    for _ in 0..N {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_nonblocking(true).unwrap();
        watched.push((stream, Instant::now(), None));
    }
    let give_up = Instant::now() + bar + Duration::from_secs(2);
    while watched.iter().any(|w| w.2.is_none()) && Instant::now() < give_up {
        for w in watched.iter_mut().filter(|w| w.2.is_none()) {
            if closed_by_peer(&mut w.0) {
                w.2 = Some(Instant::now());
            }
        }
        thread::sleep(Duration::from_millis(40));
    }
    let lifetime = |w: &(TcpStream, Instant, Option<Instant>)| w.2.map(|c| c.duration_since(w.1));
    let refused_max = watched[..N].iter().filter_map(lifetime).max();
    let silent_max = watched[N..].iter().filter_map(lifetime).max();
    let still_open = watched.iter().filter(|w| w.2.is_none()).count();
    let opened = edge.metric("roomcast_edge_connections_opened_total");
    let slots = edge.metric("roomcast_edge_connections_open");
    let auth_failures = edge.metric("roomcast_edge_auth_failures_total");
    let present = rc_info_field(&mut redis.conn(), "connections");
    println!(
        "row 8: {N} upgrade requests without a token: statuses {statuses:?}; upgraded \
         {slots}, registered {opened}, RC.INFO connections {present}, auth failures \
         {auth_failures}; refused sockets closed after <= {refused_max:.2?}, {N} silent \
         sockets after <= {silent_max:.2?} (bar {bar:?}); {still_open} still open"
    );
    assert_eq!(statuses.get(&401), Some(&N), "{statuses:?}");
    assert_eq!((opened, slots, present), (0.0, 0.0, 0));
    assert_eq!(auth_failures, N as f64);
    assert_eq!(still_open, 0);
    assert!(
        refused_max.is_some_and(|m| m < Duration::from_secs(1)),
        "refused sockets were left open: {refused_max:?}"
    );
    assert!(silent_max.is_some_and(|m| m <= bar), "{silent_max:?}");
    assert_no_panic(&edge);
}

// ---------------------------------------------------------------------------------------
// Row 9: dead peers
// ---------------------------------------------------------------------------------------

/// Row 9, at full scale with short timers (`--ping-interval-ms 1000 --ping-timeout-ms
/// 1000`): 1,000 upgraded connections (in 100 rooms of 10) that stop answering right
/// after joining — they never read again, so never pong. Each one leaves its room (and
/// presence) within ping interval + timeout + 1 s (≤ 3 s) of its welcome, and each was
/// sent close 1008 "ping timeout".
#[test]
fn row9_dead_peers_are_reaped_within_ping_plus_timeout() {
    let _serial = serial();
    const CONNS: usize = 1000;
    const ROOMS: usize = 100;
    let bar = Duration::from_secs(3);
    let redis = Redis::start(&[]);
    let edge = Edge::start(
        &redis,
        "abuse9",
        &["--ping-interval-ms", "1000", "--ping-timeout-ms", "1000"],
    );

    // Watches the rooms' members: when each connection was last seen in its room.
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = thread::spawn({
        let stop = stop.clone();
        let port = redis.port;
        move || {
            let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
            let mut conn = client.get_connection().unwrap();
            let mut seen: HashMap<String, (Instant, Option<Instant>)> = HashMap::new();
            while !stop.load(Ordering::Relaxed) {
                let mut pipe = redis::pipe();
                for r in 0..ROOMS {
                    pipe.cmd("RC.MEMBERS").arg(format!("r9-{r}"));
                }
                let rooms: Vec<Vec<String>> = pipe.query(&mut conn).unwrap();
                let now = Instant::now();
                let present: std::collections::HashSet<&String> = rooms.iter().flatten().collect();
                for conn_id in &present {
                    seen.entry((*conn_id).clone()).or_insert((now, None));
                }
                for (conn_id, (_, gone)) in seen.iter_mut() {
                    if gone.is_none() && !present.contains(conn_id) {
                        *gone = Some(now);
                    }
                }
                thread::sleep(Duration::from_millis(25));
            }
            seen
        }
    });

    let mut clients = Vec::with_capacity(CONNS);
    let mut welcomed: HashMap<String, Instant> = HashMap::new();
    let started = Instant::now();
    for i in 0..CONNS {
        let (mut client, welcome) = edge.connect(&format!("d{i}"));
        welcomed.insert(
            welcome["conn"].as_str().expect("conn id").to_string(),
            Instant::now(),
        );
        client
            .send_json(&json!({"op":"join","room":format!("r9-{}", i % ROOMS),"id":1}))
            .expect("join");
        clients.push(client);
    }
    let ramp = started.elapsed();
    assert!(
        wait::until(Duration::from_secs(10), POLL, || rc_info_field(
            &mut redis.conn(),
            "connections"
        ) == 0),
        "dead peers still present 10 s later"
    );
    let empty_after = started.elapsed();
    thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::Relaxed);
    let seen = watcher.join().expect("watcher");

    let mut reaped: Vec<Duration> = Vec::new();
    let mut never_seen = 0;
    for (conn_id, at) in &welcomed {
        match seen.get(conn_id) {
            Some((_, Some(gone))) => reaped.push(gone.duration_since(*at)),
            _ => never_seen += 1,
        }
    }
    let mut codes: HashMap<(Option<u16>, String), usize> = HashMap::new();
    for client in clients.iter_mut() {
        let ack = reply_without_pongs(client, 1);
        assert_eq!(ack["op"], "ack", "{ack}");
        let close = client
            .expect_close(T)
            .unwrap_or((Some(0), "no close frame".into()));
        *codes.entry(close).or_insert(0) += 1;
    }
    let p50 = quantile(&mut reaped, 0.5);
    let max = reaped.last().copied().unwrap_or_default();
    println!(
        "row 9: {CONNS} dead peers (ping 1 s + timeout 1 s), welcomed over {ramp:.2?}: left \
         their rooms {p50:.2?} (p50) / {max:.2?} (max) after their welcome (bar {bar:?}); \
         presence empty {empty_after:.2?} after the first connect; close frames {codes:?}"
    );
    assert_eq!(never_seen, 0, "connections never seen in their rooms");
    assert!(max <= bar, "a dead peer was reaped after {max:?}");
    assert_eq!(
        codes.get(&(Some(1008), "ping timeout".to_string())),
        Some(&CONNS),
        "{codes:?}"
    );
    assert_no_panic(&edge);
}

// ---------------------------------------------------------------------------------------
// Row 10: slow consumer that never reads
// ---------------------------------------------------------------------------------------

/// Row 10, scaled: one offender with `SO_RCVBUF` 4 KiB that never reads after joining,
/// 10 healthy members reading on their own threads, and 8,000 messages of 1 KiB published
/// at about 4,000/s (`--send-queue-bytes 65536`). The offender is disconnected (gone from
/// the room — its socket is never read, so no close frame can reach it) within 2 s of the
/// edge marking it a slow consumer; every healthy member gets all 8,000 in order (0 seq
/// gaps); the edge's RSS peak is reported.
#[test]
fn row10_a_slow_consumer_that_never_reads_is_disconnected_and_others_get_everything() {
    let _serial = serial();
    const HEALTHY: usize = 10;
    const COUNT: u64 = 8000;
    let redis = Redis::start(&[]);
    let edge = Edge::start(&redis, "abuse10", &["--send-queue-bytes", "65536"]);
    let pid = edge_pid("abuse10");
    let addr = edge.addr;

    // The offender: a small receive buffer, a join, then no reads at all.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&addr.into()).unwrap();
    let mut offender: TcpStream = socket.into();
    offender
        .write_all(upgrade_request(addr, "/ws?user=offender", &[]).as_bytes())
        .unwrap();
    let (status, mut buf) = read_response(&mut offender, T).unwrap();
    assert_eq!(status, 101);
    let read_until = |stream: &mut TcpStream, buf: &mut Vec<u8>, want: &dyn Fn(&Value) -> bool| {
        let deadline = Instant::now() + T;
        loop {
            while let Some((frame, used)) = ws::parse_frame(buf).unwrap() {
                buf.drain(..used);
                if let Ok(v) = serde_json::from_slice::<Value>(&frame.payload) {
                    if want(&v) {
                        return v;
                    }
                }
            }
            let mut chunk = [0u8; 4096];
            let left = deadline.saturating_duration_since(Instant::now());
            stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            let n = stream.read(&mut chunk).expect("offender read");
            assert!(n > 0, "offender closed early");
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    let welcome = read_until(&mut offender, &mut buf, &|v| v["op"] == "welcome");
    let offender_conn = welcome["conn"].as_str().unwrap().to_string();
    let join_frame = ws::encode_frame(
        true,
        OP_TEXT,
        br#"{"op":"join","room":"firehose","id":1}"#,
        Some([7, 7, 7, 7]),
    );
    offender.write_all(&join_frame).unwrap();
    read_until(&mut offender, &mut buf, &|v| v["id"] == 1);
    assert!(members(&redis, "firehose").contains(&offender_conn));

    let mut readers = Vec::new();
    for i in 0..HEALTHY {
        let (mut client, _) = edge.connect(&format!("healthy{i}"));
        join(&mut client, "firehose", 1);
        readers.push(thread::spawn(move || {
            read_seqs(&mut client, COUNT, Duration::from_secs(60))
        }));
    }

    // Watches the edge: when it marks the offender, when the offender leaves the room,
    // and the peak RSS.
    let rss_before = rss_kib(pid);
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = thread::spawn({
        let stop = stop.clone();
        let port = redis.port;
        let offender_conn = offender_conn.clone();
        move || {
            let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
            let mut conn = client.get_connection().unwrap();
            let (mut marked, mut gone, mut peak) = (None, None, 0u64);
            while !stop.load(Ordering::Relaxed) && gone.is_none() {
                peak = peak.max(rss_kib(pid));
                if marked.is_none() {
                    if let Ok((200, body)) = ws::http_get(addr, "/metrics") {
                        let n = roomcast_tests::edge::metric_value(
                            &body,
                            "roomcast_edge_slow_consumer_closes_total",
                        );
                        if n.unwrap_or(0.0) >= 1.0 {
                            marked = Some(Instant::now());
                        }
                    }
                }
                if marked.is_some() {
                    let members: Vec<String> = redis::cmd("RC.MEMBERS")
                        .arg("firehose")
                        .query(&mut conn)
                        .unwrap_or_default();
                    if !members.contains(&offender_conn) {
                        gone = Some(Instant::now());
                    }
                }
                thread::sleep(Duration::from_millis(10));
            }
            (marked, gone, peak)
        }
    });

    let pad = "x".repeat(1000);
    let mut conn = redis.conn();
    let publishing = Instant::now();
    const BATCH: u64 = 20;
    for batch in 0..COUNT / BATCH {
        let mut pipe = redis::pipe();
        for seq in batch * BATCH..(batch + 1) * BATCH {
            let data = format!(r#"{{"seq":{seq},"pad":"{pad}"}}"#);
            pipe.cmd("RC.PUBLISH").arg("firehose").arg(data).ignore();
        }
        pipe.query::<()>(&mut conn).expect("RC.PUBLISH batch");
        thread::sleep(Duration::from_millis(5));
    }
    let publish_time = publishing.elapsed();

    let mut gaps = 0usize;
    let mut received = Vec::new();
    for reader in readers {
        let seqs = reader
            .join()
            .expect("reader thread")
            .unwrap_or_else(|e| panic!("a healthy member: {e}"));
        received.push(seqs.len());
        gaps += seqs
            .iter()
            .enumerate()
            .filter(|(i, s)| **s != *i as u64)
            .count();
    }
    wait::until(Duration::from_secs(5), POLL, || {
        !members(&redis, "firehose").contains(&offender_conn)
    });
    thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::Relaxed);
    let (marked, gone, peak) = watcher.join().expect("watcher");
    let slow_closes = edge.metric("roomcast_edge_slow_consumer_closes_total");
    let disconnect = match (marked, gone) {
        (Some(m), Some(g)) => Some(g.saturating_duration_since(m)),
        _ => None,
    };
    println!(
        "row 10: {COUNT} x 1 KiB in {publish_time:.2?} to {HEALTHY} healthy members + 1 \
         never-reading offender (SO_RCVBUF 4 KiB, queue cap 64 KiB): slow-consumer closes \
         {slow_closes}; offender gone from the room {disconnect:.2?} after it was marked (bar \
         2 s); healthy members received {received:?}, seq gaps/out of order {gaps}; edge \
         RSS {rss_before} -> peak {peak} KiB"
    );
    assert_eq!(slow_closes, 1.0, "only the offender is a slow consumer");
    let disconnect = disconnect.expect("the offender was never disconnected");
    assert!(disconnect <= Duration::from_secs(2), "{disconnect:?}");
    assert!(received.iter().all(|n| *n as u64 == COUNT));
    assert_eq!(gaps, 0);
    drop(offender);
    assert_no_panic(&edge);
}

// ---------------------------------------------------------------------------------------
// Row 11: Origin matrix
// ---------------------------------------------------------------------------------------

/// Row 11: `--allowed-origin https://app.example.com --require-origin`: only the exact
/// allowed origin gets 101; look-alikes and a missing Origin get 403 and nothing is
/// upgraded or registered.
#[test]
fn row11_origin_matrix_upgrades_only_the_exact_allowed_origin() {
    let _serial = serial();
    let redis = Redis::start(&[]);
    let edge = Edge::start(
        &redis,
        "abuse11",
        &[
            "--allowed-origin",
            "https://app.example.com",
            "--require-origin",
        ],
    );
    let mut allowed = edge
        .try_connect("/ws?user=ann", &[("Origin", "https://app.example.com")])
        .unwrap_open();
    assert_eq!(allowed.recv_json(T).unwrap()["op"], "welcome");
    let refused_origins: [Option<&str>; 9] = [
        Some("https://evil.com"),
        Some("null"),
        Some("https://APP.example.com"),
        Some("https://app.example.com:443"),
        Some("https://app.example.com.evil.com"),
        Some("http://app.example.com"),
        Some("https://app.example.com/"),
        Some(""),
        None,
    ];
    let mut results = Vec::new();
    for origin in refused_origins {
        let headers: Vec<(&str, &str)> = origin.map(|o| ("Origin", o)).into_iter().collect();
        let status = match edge.try_connect("/ws?user=mallory", &headers) {
            Connect::Open(_) => 101,
            Connect::Refused { status, .. } => status,
        };
        results.push((origin, status));
    }
    let opened = edge.metric("roomcast_edge_connections_opened_total");
    let slots = edge.metric("roomcast_edge_connections_open");
    let present = rc_info_field(&mut redis.conn(), "connections");
    println!(
        "row 11: https://app.example.com -> 101; refused: {results:?}; upgrades {slots} \
         (the allowed one), registered {opened}, RC.INFO connections {present}"
    );
    for (origin, status) in &results {
        assert_eq!(*status, 403, "Origin {origin:?}");
    }
    assert_eq!((opened, slots, present), (1.0, 1.0, 1));
    assert_no_panic(&edge);
}
