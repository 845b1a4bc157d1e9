//! The `idle` mode: open N connections, hold them, report connect rate and memory.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use fastwebsockets::OpCode;
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use crate::procfs;
use crate::socketio;
use crate::{IdleArgs, Protocol};

fn rss_all(watch: &[procfs::Watch]) -> BTreeMap<String, Option<u64>> {
    let mut m: BTreeMap<String, Option<u64>> = watch
        .iter()
        .map(|w| (w.name.clone(), procfs::rss_kb(&w.pid)))
        .collect();
    m.insert("generator".into(), procfs::rss_kb("self"));
    m
}

pub async fn run(a: IdleArgs) -> Result<Value> {
    let c = &a.common;
    let hz = procfs::clk_tck();
    let e = c.edges.len();
    let proto = c.protocol;
    let rss_before = rss_all(&c.watch);
    let slab_before = procfs::slab_kb();
    let load_start = procfs::loadavg();

    let sem = Arc::new(Semaphore::new(c.concurrency.max(1)));
    let open = Rc::new(Cell::new(0usize));
    let closed = Rc::new(Cell::new(0usize));
    let t0 = Instant::now();
    let mut handles = Vec::with_capacity(a.conns);
    for i in 0..a.conns {
        let (sem, open, closed) = (sem.clone(), open.clone(), closed.clone());
        let (edge, src, user) = (c.edges[i % e], c.src(i), format!("{}{i}", a.prefix));
        handles.push(tokio::task::spawn_local(async move {
            let permit = sem.acquire_owned().await?;
            let t = Instant::now();
            let mut conn = proto.open(edge, src, &user).await?;
            let took = t.elapsed();
            drop(permit);
            open.set(open.get() + 1);
            // Hold: read (and answer pings) until the end of the run. WebSocket pings
            // are answered by fastwebsockets, Engine.IO pings (`2`) here.
            tokio::task::spawn_local(async move {
                loop {
                    let ping = match conn.read_frame().await {
                        Ok(f) if f.opcode == OpCode::Close => break,
                        Ok(f) => {
                            proto == Protocol::Socketio
                                && f.opcode == OpCode::Text
                                && matches!(socketio::parse(&f.payload), socketio::Packet::Ping)
                        }
                        Err(_) => break,
                    };
                    if ping && conn.write_frame(socketio::pong_frame()).await.is_err() {
                        break;
                    }
                }
                closed.set(closed.get() + 1);
            });
            anyhow::Ok(took)
        }));
    }
    let stp = (open.clone(), closed.clone());
    let n = a.conns;
    let progress = tokio::task::spawn_local(async move {
        let mut iv = tokio::time::interval(Duration::from_secs(1));
        iv.tick().await;
        let mut last = 0;
        loop {
            iv.tick().await;
            let o = stp.0.get();
            eprintln!(
                "[idle {n}] t={:5.1}s open={o} ({}/s) closed={}",
                t0.elapsed().as_secs_f64(),
                o - last,
                stp.1.get()
            );
            last = o;
        }
    });
    let mut handshake = Histogram::<u64>::new_with_max(600_000_000, 3)?;
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for h in handles {
        match h.await? {
            Ok(d) => handshake.saturating_record((d.as_micros() as u64).max(1)),
            Err(err) => *errors.entry(format!("{err:#}")).or_default() += 1,
        }
    }
    let connect_s = t0.elapsed().as_secs_f64();
    let connected = handshake.len();
    eprintln!(
        "idle: {connected} connected in {connect_s:.2} s ({:.0}/s), {} failed",
        connected as f64 / connect_s,
        a.conns as u64 - connected
    );

    tokio::time::sleep(Duration::from_secs_f64(a.settle)).await;
    let rss_after = rss_all(&c.watch);
    let slab_after = procfs::slab_kb();
    let snap_a = procfs::snapshot(&c.watch, &c.edges).await;
    let ta = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(a.hold)).await;
    let snap_b = procfs::snapshot(&c.watch, &c.edges).await;
    let hold_s = ta.elapsed().as_secs_f64();
    let rss_end = rss_all(&c.watch);
    progress.abort();

    let delta = |name: &str| -> Option<f64> {
        let d: Vec<f64> = rss_before
            .iter()
            .filter(|(k, _)| k.starts_with(name))
            .filter_map(|(k, b)| Some(rss_after.get(k).copied()?? as f64 - (*b)? as f64))
            .collect();
        (!d.is_empty()).then(|| d.iter().sum())
    };
    let per_conn = |x: Option<f64>| x.map(|kb| kb / (connected.max(1) as f64));
    let cpu = procfs::cpu_seconds(&snap_a, &snap_b, hz);
    let edge_cpu: f64 = cpu
        .iter()
        .filter(|(k, _)| k.starts_with("edge"))
        .filter_map(|(_, v)| *v)
        .sum();
    let q = |x: f64| handshake.value_at_quantile(x) as f64 / 1000.0;
    Ok(json!({
        "mode": "idle",
        "protocol": proto.name(),
        "label": c.label,
        "edges": c.edges.iter().map(|x| x.to_string()).collect::<Vec<_>>(),
        "src_ips": c.src_ips,
        "conns": a.conns,
        "connected": connected,
        "failed": errors,
        "closed_during_hold": closed.get(),
        "connect_s": connect_s,
        "connect_per_s": connected as f64 / connect_s,
        "handshake_ms": {"p50": q(0.5), "p99": q(0.99), "max": handshake.max() as f64 / 1000.0},
        "rss_kb_before": rss_before,
        "rss_kb_after": rss_after,
        "rss_kb_end_of_hold": rss_end,
        "edge_rss_kb_per_conn": per_conn(delta("edge")),
        "redis_rss_kb_per_conn": per_conn(delta("redis")),
        "slab_kb_per_conn": match (slab_before, slab_after) {
            (Some(b), Some(a)) => Some((a as f64 - b as f64) / connected.max(1) as f64),
            _ => None,
        },
        "hold_s": hold_s,
        "cpu_s_during_hold": cpu,
        "edge_cpu_us_per_s_per_conn": edge_cpu * 1e6 / hold_s / connected.max(1) as f64,
        "loadavg_start": load_start,
        "loadavg_end": procfs::loadavg(),
    }))
}
