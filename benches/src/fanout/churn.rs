//! The `churn` mode: a steady population of room members; at a fixed rate one of them
//! closes its connection (the server leaves its room for it) and a fresh connection
//! takes its place (connect + join). Reports joins and leaves per second, the
//! connect+join latency from the scheduled time, and CPU per join/leave of every
//! watched process.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use fastwebsockets::{Frame, OpCode};
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use tokio::sync::oneshot;

use crate::fanout::{connect_all, quantiles_us};
use crate::procfs;
use crate::socketio;
use crate::ws::Ws;
use crate::{ChurnArgs, Protocol};

#[derive(Default)]
struct Counts {
    /// Connect + join completed, by scheduled time inside the window.
    joins_window: u64,
    /// Closes sent, by scheduled time inside the window.
    leaves_window: u64,
    joins_total: u64,
    leaves_total: u64,
    in_flight: usize,
    skipped: u64,
    errors: u64,
    first_error: Option<String>,
    /// Population members closed by the server (not by us).
    closed_by_server: u64,
}

/// Holds one member's connection: reads (and drops) what the server sends, answers
/// Engine.IO pings, until told to leave: then sends a close frame and drops the socket.
async fn hold(
    mut c: Ws,
    proto: Protocol,
    mut stop: oneshot::Receiver<()>,
    st: Rc<RefCell<Counts>>,
) {
    loop {
        tokio::select! {
            _ = &mut stop => {
                let _ = c.write_frame(Frame::close(1000, b"churn")).await;
                return;
            }
            f = c.read_frame() => {
                let ping = match f {
                    Ok(f) if f.opcode == OpCode::Close => {
                        st.borrow_mut().closed_by_server += 1;
                        return;
                    }
                    Ok(f) => {
                        proto == Protocol::Socketio
                            && f.opcode == OpCode::Text
                            && matches!(socketio::parse(&f.payload), socketio::Packet::Ping)
                    }
                    Err(_) => {
                        st.borrow_mut().closed_by_server += 1;
                        return;
                    }
                };
                if ping && c.write_frame(socketio::pong_frame()).await.is_err() {
                    return;
                }
            }
        }
    }
}

pub async fn run(a: ChurnArgs) -> Result<Value> {
    let c = &a.common;
    if a.conns == 0 || a.rooms == 0 || a.rate <= 0.0 {
        bail!("--conns, --rooms and --rate must be positive");
    }
    let hz = procfs::clk_tck();
    let e = c.edges.len();
    let proto = c.protocol;
    let room = |i: usize| format!("{}r{}", a.prefix, i % a.rooms);
    // Generation g of slot i is user `{prefix}u{i}g{g}`; every slot keeps its edge,
    // source address and room.
    let spec = |i: usize, g: u64| {
        (
            c.edges[i % e],
            c.src(i),
            format!("{}u{i}g{g}", a.prefix),
            room(i),
        )
    };

    eprintln!(
        "churn: connecting {} members in {} rooms over {e} edges",
        a.conns, a.rooms
    );
    let t0 = Instant::now();
    let first = connect_all(
        (0..a.conns).map(|i| spec(i, 0)).collect(),
        c.concurrency,
        proto,
    )
    .await?;
    let setup_s = t0.elapsed().as_secs_f64();
    let st = Rc::new(RefCell::new(Counts::default()));
    let stops: Rc<RefCell<Vec<Option<oneshot::Sender<()>>>>> = Rc::new(RefCell::new(Vec::new()));
    for conn in first {
        let (tx, rx) = oneshot::channel();
        stops.borrow_mut().push(Some(tx));
        tokio::task::spawn_local(hold(conn, proto, rx, st.clone()));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let base = Instant::now();
    let period = Duration::from_secs_f64(1.0 / a.rate);
    let win_start = base + Duration::from_secs_f64(a.warmup);
    let end = win_start + Duration::from_secs_f64(a.seconds);
    let lat = Rc::new(RefCell::new(Histogram::<u64>::new_with_max(
        600_000_000_000,
        3,
    )?));

    let stp = st.clone();
    let progress = tokio::task::spawn_local(async move {
        let mut iv = tokio::time::interval(Duration::from_secs(1));
        iv.tick().await;
        loop {
            iv.tick().await;
            let s = stp.borrow();
            eprintln!(
                "[churn] t={:5.1}s joins={} leaves={} in_flight={} skipped={} errors={}",
                base.elapsed().as_secs_f64(),
                s.joins_total,
                s.leaves_total,
                s.in_flight,
                s.skipped,
                s.errors
            );
        }
    });

    let load_start = procfs::loadavg();
    let mut snap_a = None;
    let mut ta = base;
    let mut k = 0u64;
    let mut generation = vec![0u64; a.conns];
    loop {
        let due = base + period.mul_f64(k as f64);
        if due >= end {
            break;
        }
        if snap_a.is_none() && due >= win_start {
            tokio::time::sleep_until(tokio::time::Instant::from_std(win_start)).await;
            snap_a = Some(procfs::snapshot(&c.watch, &c.edges).await);
            ta = Instant::now();
        }
        tokio::time::sleep_until(tokio::time::Instant::from_std(due)).await;
        let in_window = due >= win_start;
        let slot = (k % a.conns as u64) as usize;
        k += 1;
        if st.borrow().in_flight >= a.max_in_flight {
            st.borrow_mut().skipped += 1;
            continue;
        }
        // Leave: close the slot's current connection (if it is connected).
        if let Some(tx) = stops.borrow_mut()[slot].take() {
            let _ = tx.send(());
            let mut s = st.borrow_mut();
            s.leaves_total += 1;
            if in_window {
                s.leaves_window += 1;
            }
        }
        // Join: a fresh connection in its place.
        generation[slot] += 1;
        let (edge, src, user, room) = spec(slot, generation[slot]);
        let (st, stops, lat) = (st.clone(), stops.clone(), lat.clone());
        st.borrow_mut().in_flight += 1;
        tokio::task::spawn_local(async move {
            let res = async {
                let mut conn = proto.open(edge, src, &user).await?;
                proto.join(&mut conn, &room, 1).await?;
                anyhow::Ok(conn)
            }
            .await;
            let took = due.elapsed();
            let mut s = st.borrow_mut();
            s.in_flight -= 1;
            match res {
                Ok(conn) => {
                    s.joins_total += 1;
                    if in_window {
                        s.joins_window += 1;
                        lat.borrow_mut()
                            .saturating_record((took.as_nanos() as u64).max(1));
                    }
                    let (tx, rx) = oneshot::channel();
                    stops.borrow_mut()[slot] = Some(tx);
                    tokio::task::spawn_local(hold(conn, proto, rx, st.clone()));
                }
                Err(err) => {
                    s.errors += 1;
                    if s.first_error.is_none() {
                        s.first_error = Some(format!("{err:#}"));
                    }
                }
            }
        });
    }
    tokio::time::sleep_until(tokio::time::Instant::from_std(end)).await;
    let snap_a = match snap_a {
        Some(s) => s,
        None => bail!("the measured window never started"),
    };
    let snap_b = procfs::snapshot(&c.watch, &c.edges).await;
    let window_s = ta.elapsed().as_secs_f64();
    let load_end = procfs::loadavg();
    // Let the cycles in flight finish (they are outside the window by then).
    let drain_until = Instant::now() + Duration::from_secs(2);
    while st.borrow().in_flight > 0 && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    progress.abort();

    let s = st.borrow();
    let cpu = procfs::cpu_seconds(&snap_a, &snap_b, hz);
    let ops = (s.joins_window + s.leaves_window).max(1) as f64;
    let sum_cpu = |prefix: &str| -> Option<f64> {
        let v: Vec<f64> = cpu
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .filter_map(|(_, v)| *v)
            .collect();
        (!v.is_empty()).then(|| v.iter().sum())
    };
    let per_op = |x: Option<f64>| x.map(|cpu| cpu * 1e6 / ops);
    let watched_s: f64 = cpu.values().filter_map(|v| *v).sum();
    let lat = lat.borrow();
    eprintln!(
        "[churn] done: {:.0} joins/s, {:.0} leaves/s, connect+join p99 {:.2} ms, errors {}, skipped {}",
        s.joins_window as f64 / a.seconds,
        s.leaves_window as f64 / a.seconds,
        lat.value_at_quantile(0.99) as f64 / 1e6,
        s.errors,
        s.skipped
    );
    Ok(json!({
        "mode": "churn",
        "protocol": proto.name(),
        "label": c.label,
        "edges": c.edges.iter().map(|x| x.to_string()).collect::<Vec<_>>(),
        "conns": a.conns,
        "rooms": a.rooms,
        "rate": a.rate,
        "seconds": a.seconds,
        "warmup": a.warmup,
        "setup_s": setup_s,
        "joins_window": s.joins_window,
        "leaves_window": s.leaves_window,
        "joins_per_s": s.joins_window as f64 / a.seconds,
        "leaves_per_s": s.leaves_window as f64 / a.seconds,
        "joins_leaves_per_s": (s.joins_window + s.leaves_window) as f64 / a.seconds,
        "connect_join_us": quantiles_us(&lat),
        "skipped": s.skipped,
        "errors": s.errors,
        "first_error": s.first_error,
        "closed_by_server": s.closed_by_server,
        "window_s": window_s,
        "cpu_s": cpu,
        "cpu_us_per_join_leave": {
            "edges": per_op(sum_cpu("edge")),
            "redis": per_op(sum_cpu("redis")),
            "generator": per_op(sum_cpu("generator")),
        },
        "box": procfs::box_usage(&snap_a, &snap_b, watched_s, hz),
        "loadavg_start": load_start,
        "loadavg_end": load_end,
        "edge_metrics_delta": procfs::metrics_delta(&snap_a, &snap_b),
    }))
}
