//! The `fanout` mode: K rooms × M receivers, one open-loop publisher per room.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use fastwebsockets::{Frame, OpCode, Payload};
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use tokio::sync::{mpsc, Semaphore};

use crate::procfs;
use crate::socketio::{self, Packet};
use crate::ws::{self, ServerMsg, Stamp, Ws};
use crate::{FanoutArgs, Protocol};

/// One receiving connection's view of its room's sequence.
#[derive(Default)]
struct Receiver {
    room: usize,
    /// Bitmap of the sequence numbers seen.
    seen: Vec<u64>,
    max_seq: Option<u64>,
    received: u64,
    dup: u64,
    ooo: u64,
    closed: Option<String>,
    /// A slow consumer (`--slow-pct`): never reads; left out of the checks and figures.
    slow: bool,
}

impl Receiver {
    /// Records sequence `s`; false when it is a duplicate.
    fn see(&mut self, s: u64) -> bool {
        self.received += 1;
        let (w, b) = ((s / 64) as usize, s % 64);
        if self.seen.len() <= w {
            self.seen.resize(w + 1, 0);
        }
        if self.seen[w] & (1 << b) != 0 {
            self.dup += 1;
            return false;
        }
        self.seen[w] |= 1 << b;
        if self.max_seq.is_some_and(|m| s < m) {
            self.ooo += 1;
        }
        self.max_seq = Some(self.max_seq.map_or(s, |m| m.max(s)));
        true
    }

    fn distinct(&self) -> u64 {
        self.received - self.dup
    }
}

struct State {
    base: Instant,
    /// Measured window, as scheduled send times in ns since `base`.
    win: (u64, u64),
    /// End-to-end latency (scheduled send → receive) of deliveries in the window, ns.
    latency: Histogram<u64>,
    /// Generator lateness (scheduled → frame written) of publishes in the window, ns.
    send_lag: Histogram<u64>,
    receivers: Vec<Receiver>,
    /// Publishes written per room.
    sent: Vec<u64>,
    sent_window: u64,
    delivered_window: u64,
    delivered_total: u64,
    acks: u64,
    publish_errors: u64,
    first_error: Option<String>,
    wrong_room: u64,
    bad_data: u64,
    other_ops: BTreeMap<String, u64>,
    publishers_closed: Vec<String>,
}

impl State {
    fn now_ns(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }
    fn in_window(&self, t: u64) -> bool {
        t >= self.win.0 && t < self.win.1
    }
}

type Shared = Rc<RefCell<State>>;

/// The padded `data` value: `{"s":SEQ,"t":NANOS,"p":"xxx"}`, `len` bytes when it fits.
fn data_json(s: u64, t: u64, len: usize) -> String {
    let mut d = format!(r#"{{"s":{s},"t":{t},"p":""#);
    let pad = len.saturating_sub(d.len() + 2);
    d.extend(std::iter::repeat_n('x', pad));
    d.push_str("\"}");
    d
}

/// Connects, waits for `welcome` (Socket.IO: the namespace connect) and joins, for
/// every (edge, source, user, room) in `specs`, with at most `concurrency` handshakes in
/// flight. Keeps the order.
pub(crate) async fn connect_all(
    specs: Vec<(SocketAddr, Option<IpAddr>, String, String)>,
    concurrency: usize,
    proto: Protocol,
) -> Result<Vec<Ws>> {
    let sem = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut handles = Vec::with_capacity(specs.len());
    for (edge, src, user, room) in specs {
        let sem = sem.clone();
        handles.push(tokio::task::spawn_local(async move {
            let _permit = sem.acquire().await?;
            let mut c = proto.open(edge, src, &user).await?;
            proto.join(&mut c, &room, 1).await?;
            anyhow::Ok(c)
        }));
    }
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await??);
    }
    Ok(out)
}

/// Accounts one `message` (its `room` and raw `data`) received by receiver `idx` at `now`.
fn deliver(
    s: &mut State,
    idx: usize,
    room: &str,
    now: u64,
    msg_room: Option<&str>,
    data: Option<&serde_json::value::RawValue>,
) {
    if msg_room != Some(room) {
        s.wrong_room += 1;
        return;
    }
    let Some(stamp) = data.and_then(|d| serde_json::from_str::<Stamp>(d.get()).ok()) else {
        s.bad_data += 1;
        return;
    };
    s.delivered_total += 1;
    if s.receivers[idx].see(stamp.s) && s.in_window(stamp.t) {
        s.delivered_window += 1;
        s.latency
            .saturating_record(now.saturating_sub(stamp.t).max(1));
    }
}

/// What a receiver does after a frame.
enum Next {
    Read,
    /// Answer an Engine.IO ping.
    Pong,
    Stop,
}

/// Accounts one frame received by receiver `idx` at `now`.
fn on_frame(
    s: &mut State,
    idx: usize,
    room: &str,
    proto: Protocol,
    frame: &Frame<'_>,
    now: u64,
) -> Next {
    match frame.opcode {
        OpCode::Text | OpCode::Binary => {}
        OpCode::Close => {
            s.receivers[idx].closed = Some(ws::close_reason(&frame.payload));
            return Next::Stop;
        }
        _ => return Next::Read,
    }
    if proto == Protocol::Socketio {
        match socketio::parse(&frame.payload) {
            Packet::Message(m) => deliver(s, idx, room, now, m.room, m.data),
            Packet::Ping => return Next::Pong,
            Packet::Closed(why) => {
                s.receivers[idx].closed = Some(why);
                return Next::Stop;
            }
            Packet::Event(name) => *s.other_ops.entry(name).or_default() += 1,
            Packet::Ack { .. } => *s.other_ops.entry("ack".into()).or_default() += 1,
            Packet::Open(_) | Packet::Connected => {
                *s.other_ops.entry("open".into()).or_default() += 1
            }
            Packet::Other(what) => *s.other_ops.entry(what.into()).or_default() += 1,
            Packet::Bad => s.bad_data += 1,
        }
        return Next::Read;
    }
    let Ok(msg) = serde_json::from_slice::<ServerMsg>(&frame.payload) else {
        s.bad_data += 1;
        return Next::Read;
    };
    if msg.op != "message" {
        *s.other_ops.entry(msg.op.to_string()).or_default() += 1;
        return Next::Read;
    }
    deliver(s, idx, room, now, msg.room, msg.data);
    Next::Read
}

/// Reads one receiver's frames until the connection ends.
async fn receive(mut c: Ws, idx: usize, room: Rc<str>, st: Shared, proto: Protocol) {
    loop {
        let next = match c.read_frame().await {
            Ok(frame) => {
                let mut s = st.borrow_mut();
                let now = s.now_ns();
                on_frame(&mut s, idx, &room, proto, &frame, now)
            }
            Err(e) => {
                st.borrow_mut().receivers[idx].closed = Some(e.to_string());
                return;
            }
        };
        match next {
            Next::Read => {}
            Next::Stop => return,
            Next::Pong => {
                if let Err(e) = c.write_frame(socketio::pong_frame()).await {
                    st.borrow_mut().receivers[idx].closed = Some(format!("pong: {e}"));
                    return;
                }
            }
        }
    }
}

/// The global publishing schedule: event `k` goes to room `k mod K` with sequence
/// `k div K`, at `start + k × gap` where `gap` = period / K (the rooms' schedules are
/// staggered evenly over one period).
#[derive(Clone, Copy)]
struct Schedule {
    start_ns: u64,
    end_ns: u64,
    gap_ns: f64,
    rooms: u64,
}

impl Schedule {
    fn at(&self, k: u64) -> u64 {
        self.start_ns + (k as f64 * self.gap_ns) as u64
    }
}

/// The clock of the open-loop schedule, on its own thread: tokio's timer has a 1 ms
/// granularity, `thread::sleep` a few tens of µs. Sleeps until the next event is due,
/// then hands every event due by now (a range of `k`) to the runtime.
fn clock(base: Instant, sch: Schedule, tx: mpsc::UnboundedSender<std::ops::Range<u64>>) {
    let mut k = 0u64;
    loop {
        let due = sch.at(k);
        if due >= sch.end_ns {
            return;
        }
        let now = base.elapsed().as_nanos() as u64;
        if due > now {
            std::thread::sleep(Duration::from_nanos(due - now));
        }
        let now = base.elapsed().as_nanos() as u64;
        let mut upto = k + 1;
        while sch.at(upto) <= now && sch.at(upto) < sch.end_ns {
            upto += 1;
        }
        if tx.send(k..upto).is_err() {
            return;
        }
        k = upto;
    }
}

type Writer = fastwebsockets::WebSocketWrite<tokio::net::tcp::OwnedWriteHalf>;

/// Reads a publisher's acks (and errors) until its connection ends. Pongs owed to
/// server pings (WebSocket pings; Socket.IO: Engine.IO pings) go to the dispatcher,
/// which owns the write halves.
async fn publisher_reader(
    mut rd: fastwebsockets::WebSocketRead<tokio::net::tcp::OwnedReadHalf>,
    r: usize,
    pongs: mpsc::UnboundedSender<(usize, Frame<'static>)>,
    st: Shared,
    proto: Protocol,
) {
    let pongs2 = pongs.clone();
    let mut obligated = |f: Frame<'_>| {
        if f.opcode == OpCode::Pong {
            let _ = pongs2.send((r, Frame::pong(Payload::Owned(f.payload.to_vec()))));
        }
        std::future::ready(Ok::<(), std::io::Error>(()))
    };
    loop {
        let frame = match rd.read_frame(&mut obligated).await {
            Ok(f) => f,
            Err(e) => {
                st.borrow_mut()
                    .publishers_closed
                    .push(format!("room {r}: {e}"));
                return;
            }
        };
        let mut s = st.borrow_mut();
        if frame.opcode == OpCode::Close {
            let why = ws::close_reason(&frame.payload);
            s.publishers_closed.push(format!("room {r}: {why}"));
            return;
        }
        if frame.opcode != OpCode::Text {
            continue;
        }
        if proto == Protocol::Socketio {
            match socketio::parse(&frame.payload) {
                Packet::Ack { ok: Some(true), .. } => s.acks += 1,
                Packet::Ack { .. } => {
                    s.publish_errors += 1;
                    if s.first_error.is_none() {
                        s.first_error = Some(String::from_utf8_lossy(&frame.payload).into());
                    }
                }
                Packet::Ping => {
                    let _ = pongs.send((r, socketio::pong_frame()));
                }
                Packet::Closed(why) => {
                    s.publishers_closed.push(format!("room {r}: {why}"));
                    return;
                }
                Packet::Message(_) => {
                    *s.other_ops.entry("publisher:message".into()).or_default() += 1
                }
                Packet::Event(name) => {
                    *s.other_ops.entry(format!("publisher:{name}")).or_default() += 1
                }
                Packet::Open(_) | Packet::Connected => {
                    *s.other_ops.entry("publisher:open".into()).or_default() += 1
                }
                Packet::Other(what) => {
                    *s.other_ops.entry(format!("publisher:{what}")).or_default() += 1
                }
                Packet::Bad => s.bad_data += 1,
            }
            continue;
        }
        match serde_json::from_slice::<ServerMsg>(&frame.payload) {
            Ok(m) if m.op == "ack" => s.acks += 1,
            Ok(m) if m.op == "error" => {
                s.publish_errors += 1;
                if s.first_error.is_none() {
                    s.first_error = Some(String::from_utf8_lossy(&frame.payload).into());
                }
            }
            Ok(m) => {
                *s.other_ops
                    .entry(format!("publisher:{}", m.op))
                    .or_default() += 1
            }
            Err(_) => s.bad_data += 1,
        }
    }
}

/// Writes every scheduled publish to its room's publisher, as the clock releases them.
/// Keeps the write halves open after the schedule ends (closing them would close the
/// connections while the drain is still reading).
#[allow(clippy::too_many_arguments)]
async fn dispatch(
    mut writers: Vec<Writer>,
    rooms: Vec<Rc<str>>,
    sch: Schedule,
    payload_bytes: usize,
    mut due: mpsc::UnboundedReceiver<std::ops::Range<u64>>,
    mut pongs: mpsc::UnboundedReceiver<(usize, Frame<'static>)>,
    st: Shared,
    proto: Protocol,
) {
    let mut dead = vec![false; writers.len()];
    loop {
        tokio::select! {
            biased;
            Some((r, f)) = pongs.recv() => {
                if !dead[r] && writers[r].write_frame(f).await.is_err() {
                    dead[r] = true;
                }
            }
            Some(range) = due.recv() => {
                for k in range {
                    let r = (k % sch.rooms) as usize;
                    if dead[r] {
                        continue;
                    }
                    let (seq, t) = (k / sch.rooms, sch.at(k));
                    let data = data_json(seq, t, payload_bytes);
                    let room = &rooms[r];
                    let text = match proto {
                        Protocol::Roomcast => format!(r#"{{"op":"publish","room":"{room}","data":{data},"id":{seq}}}"#),
                        Protocol::Socketio => socketio::publish_text(room, &data, seq),
                    };
                    let res = writers[r].write_frame(Frame::text(Payload::Owned(text.into_bytes()))).await;
                    let mut s = st.borrow_mut();
                    if let Err(e) = res {
                        s.publishers_closed.push(format!("room {r}: write: {e}"));
                        dead[r] = true;
                        continue;
                    }
                    let lag = s.now_ns().saturating_sub(t);
                    s.sent[r] += 1;
                    if s.in_window(t) {
                        s.sent_window += 1;
                        s.send_lag.saturating_record(lag.max(1));
                    }
                }
            }
            else => std::future::pending::<()>().await,
        }
    }
}

/// Whether receiver `g` is one of the `pct` % slow consumers (spread evenly: the
/// receivers at which the running count floor(g × pct / 100) steps up).
fn is_slow(g: usize, pct: f64) -> bool {
    pct > 0.0 && ((g + 1) as f64 * pct / 100.0).floor() > (g as f64 * pct / 100.0).floor()
}

pub(crate) fn quantiles_us(h: &Histogram<u64>) -> Value {
    let q = |x: f64| h.value_at_quantile(x) as f64 / 1000.0;
    json!({
        "count": h.len(),
        "p50": q(0.5),
        "p90": q(0.9),
        "p99": q(0.99),
        "p999": q(0.999),
        "max": h.max() as f64 / 1000.0,
        "mean": h.mean() / 1000.0,
    })
}

pub async fn run(a: FanoutArgs) -> Result<Value> {
    let c = &a.common;
    if a.rooms == 0 || a.members == 0 || a.rate <= 0.0 {
        bail!("--rooms, --members and --rate must be positive");
    }
    let base = Instant::now();
    let hz = procfs::clk_tck();
    let e = c.edges.len();
    let room_name = |i: usize| -> Rc<str> { format!("{}r{i}", a.prefix).into() };

    // Receivers: member j of room i is global member i*M+j, on edge (i*M+j) mod E.
    let mut specs = Vec::new();
    for i in 0..a.rooms {
        for j in 0..a.members {
            let g = i * a.members + j;
            specs.push((
                c.edges[g % e],
                c.src(g),
                format!("{}u{i}x{j}", a.prefix),
                room_name(i).to_string(),
            ));
        }
    }
    let n_recv = specs.len();
    eprintln!(
        "fanout: connecting {n_recv} receivers + {} publishers over {e} edges",
        a.rooms
    );
    let t0 = Instant::now();
    let proto = c.protocol;
    let receivers = connect_all(specs, c.concurrency, proto).await?;
    let pub_specs = (0..a.rooms)
        .map(|i| {
            (
                c.edges[0],
                c.src(n_recv + i),
                format!("{}p{i}", a.prefix),
                room_name(i).to_string(),
            )
        })
        .collect();
    let publishers = connect_all(pub_specs, c.concurrency, proto).await?;
    let setup_s = t0.elapsed().as_secs_f64();
    // Let the `joined` notices of the setup drain before the clock starts.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let period = Duration::from_secs_f64(1.0 / a.rate);
    let start = Instant::now() + Duration::from_millis(200);
    let win_start = start + Duration::from_secs_f64(a.warmup);
    let end = win_start + Duration::from_secs_f64(a.seconds);
    let ns = |t: Instant| t.duration_since(base).as_nanos() as u64;
    let st: Shared = Rc::new(RefCell::new(State {
        base,
        win: (ns(win_start), ns(end)),
        latency: Histogram::new_with_max(120_000_000_000, 3)?,
        send_lag: Histogram::new_with_max(120_000_000_000, 3)?,
        receivers: (0..n_recv)
            .map(|g| Receiver {
                room: g / a.members,
                ..Default::default()
            })
            .collect(),
        sent: vec![0; a.rooms],
        sent_window: 0,
        delivered_window: 0,
        delivered_total: 0,
        acks: 0,
        publish_errors: 0,
        first_error: None,
        wrong_room: 0,
        bad_data: 0,
        other_ops: BTreeMap::new(),
        publishers_closed: Vec::new(),
    }));
    let slow_pct = a.slow_pct.clamp(0.0, 100.0);
    for (g, r) in receivers.into_iter().enumerate() {
        if is_slow(g, slow_pct) {
            // Stops reading right away: holds the socket open and never reads from it,
            // so the server's send path backs up (its slow-consumer policy is what is
            // measured); the other receivers' figures must not move.
            st.borrow_mut().receivers[g].slow = true;
            tokio::task::spawn_local(async move {
                let _held = r;
                std::future::pending::<()>().await
            });
            continue;
        }
        tokio::task::spawn_local(receive(r, g, room_name(g / a.members), st.clone(), proto));
    }
    let tend = tokio::time::Instant::from_std(end);
    let sch = Schedule {
        start_ns: ns(start),
        end_ns: ns(end),
        gap_ns: period.as_nanos() as f64 / a.rooms as f64,
        rooms: a.rooms as u64,
    };
    let (pong_tx, pong_rx) = mpsc::unbounded_channel();
    let mut writers = Vec::with_capacity(a.rooms);
    for (i, p) in publishers.into_iter().enumerate() {
        let (rd, wr) = p.split(|s| s.into_split());
        writers.push(wr);
        tokio::task::spawn_local(publisher_reader(rd, i, pong_tx.clone(), st.clone(), proto));
    }
    let (due_tx, due_rx) = mpsc::unbounded_channel();
    tokio::task::spawn_local(dispatch(
        writers,
        (0..a.rooms).map(room_name).collect(),
        sch,
        a.payload_bytes,
        due_rx,
        pong_rx,
        st.clone(),
        proto,
    ));
    let clock_thread = std::thread::spawn(move || clock(base, sch, due_tx));

    // Progress, once a second, until the drain ends.
    let drain_end = end + Duration::from_secs_f64(a.drain);
    let label = format!("{}x{}@{}/s", a.rooms, a.members, a.rate);
    let stp = st.clone();
    let tag = label.clone();
    let progress = tokio::task::spawn_local(async move {
        let mut iv = tokio::time::interval(Duration::from_secs(1));
        iv.tick().await;
        let mut last = 0u64;
        loop {
            iv.tick().await;
            let s = stp.borrow();
            let now = Instant::now();
            let phase = if now < win_start {
                "warmup"
            } else if now < end {
                "measure"
            } else {
                "drain"
            };
            let sent: u64 = s.sent.iter().sum();
            eprintln!(
                "[{tag}] t={:5.1}s {phase:7} sent={sent} delivered={} ({}/s) p99={:.2}ms errors={} closed={}",
                now.saturating_duration_since(start).as_secs_f64(),
                s.delivered_total,
                s.delivered_total - last,
                s.latency.value_at_quantile(0.99) as f64 / 1e6,
                s.publish_errors,
                s.publishers_closed.len() + s.receivers.iter().filter(|r| r.closed.is_some()).count(),
            );
            last = s.delivered_total;
        }
    });

    let load_start = procfs::loadavg();
    tokio::time::sleep_until(tokio::time::Instant::from_std(win_start)).await;
    let snap_a = procfs::snapshot(&c.watch, &c.edges).await;
    let ta = Instant::now();
    tokio::time::sleep_until(tend).await;
    let snap_b = procfs::snapshot(&c.watch, &c.edges).await;
    let window_s = ta.elapsed().as_secs_f64();
    let load_end = procfs::loadavg();
    tokio::time::sleep_until(tokio::time::Instant::from_std(drain_end)).await;
    progress.abort();
    if clock_thread.join().is_err() {
        bail!("the schedule's clock thread panicked");
    }

    // After the drain: RSS of the watched processes (bounded memory with slow consumers)
    // and the edges' absolute counters (fresh edges: counts for the whole run).
    let rss_end: BTreeMap<String, Option<u64>> = c
        .watch
        .iter()
        .map(|w| (w.name.clone(), procfs::rss_kb(&w.pid)))
        .collect();
    let snap_end = procfs::snapshot(&c.watch, &c.edges).await;

    let s = st.borrow();
    let mut expected = 0u64;
    let mut slow_receivers = 0u64;
    let mut distinct = 0u64;
    let (mut dup, mut ooo, mut lossy_receivers) = (0u64, 0u64, 0u64);
    let mut closed = Vec::new();
    for r in &s.receivers {
        if r.slow {
            slow_receivers += 1;
            continue;
        }
        let want = s.sent[r.room];
        expected += want;
        distinct += r.distinct();
        if r.distinct() < want {
            lossy_receivers += 1;
        }
        dup += r.dup;
        ooo += r.ooo;
        if let Some(why) = &r.closed {
            closed.push(why.clone());
        }
    }
    let published: u64 = s.sent.iter().sum();
    let cpu = procfs::cpu_seconds(&snap_a, &snap_b, hz);
    let sum_cpu = |prefix: &str| -> Option<f64> {
        let v: Vec<f64> = cpu
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .filter_map(|(_, v)| *v)
            .collect();
        (!v.is_empty()).then(|| v.iter().sum())
    };
    let delivered = s.delivered_window as f64;
    let per_msg = |x: Option<f64>| x.map(|cpu| cpu * 1e6 / delivered.max(1.0));
    let (edge_cpu, redis_cpu, gen_cpu) = (sum_cpu("edge"), sum_cpu("redis"), sum_cpu("generator"));
    let watched_s: f64 = cpu.values().filter_map(|v| *v).sum();
    eprintln!(
        "[{label}] done: {:.0} deliveries/s, p50 {:.2} ms, p99 {:.2} ms, loss {}, dup {dup}, ooo {ooo}, errors {}",
        delivered / a.seconds,
        s.latency.value_at_quantile(0.5) as f64 / 1e6,
        s.latency.value_at_quantile(0.99) as f64 / 1e6,
        expected.saturating_sub(distinct),
        s.publish_errors
    );
    Ok(json!({
        "mode": "fanout",
        "protocol": proto.name(),
        "label": c.label,
        "edges": c.edges.iter().map(|x| x.to_string()).collect::<Vec<_>>(),
        "rooms": a.rooms,
        "members": a.members,
        "rate_per_room": a.rate,
        "payload_bytes": a.payload_bytes,
        "seconds": a.seconds,
        "warmup": a.warmup,
        "setup_s": setup_s,
        "offered_publishes_per_s": a.rate * a.rooms as f64,
        "offered_deliveries_per_s": a.rate * (a.rooms * a.members) as f64,
        "published_window": s.sent_window,
        "delivered_window": s.delivered_window,
        "published_per_s": s.sent_window as f64 / a.seconds,
        "delivered_per_s": delivered / a.seconds,
        "latency_us": quantiles_us(&s.latency),
        "send_lag_us": quantiles_us(&s.send_lag),
        "published_total": published,
        "expected_deliveries": expected,
        "delivered_total": s.delivered_total,
        "loss": expected.saturating_sub(distinct),
        "receivers_with_loss": lossy_receivers,
        "dup": dup,
        "ooo": ooo,
        "wrong_room": s.wrong_room,
        "bad_data": s.bad_data,
        "acks": s.acks,
        "publish_errors": s.publish_errors,
        "first_error": s.first_error,
        "receivers_closed": closed,
        "publishers_closed": s.publishers_closed,
        "other_ops": s.other_ops,
        "window_s": window_s,
        "cpu_s": cpu,
        "cpu_us_per_delivered": {
            "edges": per_msg(edge_cpu),
            "redis": per_msg(redis_cpu),
            "generator": per_msg(gen_cpu),
        },
        "generator_core_pct": gen_cpu.map(|g| 100.0 * g / window_s),
        "box": procfs::box_usage(&snap_a, &snap_b, watched_s, hz),
        "loadavg_start": load_start,
        "loadavg_end": load_end,
        "edge_metrics_delta": procfs::metrics_delta(&snap_a, &snap_b),
        "edge_metrics_end": snap_end.metrics,
        "rss_kb_end": rss_end,
        "slow_pct": slow_pct,
        "slow_receivers": slow_receivers,
    }))
}
