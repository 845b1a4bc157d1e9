//! Readings from /proc (CPU time, RSS, whole-box CPU, load) and from an edge's
//! `/metrics`, taken at the edges of a measured window.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Clock ticks per second for /proc/PID/stat (`getconf CLK_TCK`, 100 on Linux).
pub fn clk_tck() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// utime + stime of a process (all threads), in ticks. `pid` may be `"self"`.
pub fn cpu_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime is field 14, stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// VmRSS of a process in KiB.
pub fn rss_kb(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    field_kb(&status, "VmRSS:")
}

/// `Slab:` of /proc/meminfo in KiB (kernel objects, sockets included).
pub fn slab_kb() -> Option<u64> {
    field_kb(&std::fs::read_to_string("/proc/meminfo").ok()?, "Slab:")
}

fn field_kb(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with(name))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The first three fields of /proc/loadavg.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Whole-box jiffies from /proc/stat's `cpu` line.
#[derive(Clone, Copy, Default, Serialize)]
pub struct BoxCpu {
    /// user + nice + system + irq + softirq + steal.
    pub busy: u64,
    pub steal: u64,
    pub softirq: u64,
    /// Everything, idle and iowait included.
    pub total: u64,
}

pub fn box_cpu() -> BoxCpu {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return BoxCpu::default();
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let g = |i: usize| v.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal
    BoxCpu {
        busy: g(0) + g(1) + g(2) + g(5) + g(6) + g(7),
        steal: g(7),
        softirq: g(6),
        total: (0..8).map(g).sum(),
    }
}

/// The whole box between two snapshots, in % of all its CPU time: busy, background
/// (busy minus the watched processes' `watched_s` CPU-seconds), steal and softirq —
/// what decides whether a trial was measured on a quiet box.
pub fn box_usage(a: &Snapshot, b: &Snapshot, watched_s: f64, hz: f64) -> serde_json::Value {
    let (x, y) = (a.box_cpu, b.box_cpu);
    let total = (y.total - x.total).max(1) as f64;
    let busy = (y.busy - x.busy) as f64;
    serde_json::json!({
        "busy_pct": 100.0 * busy / total,
        "background_pct": 100.0 * (busy - watched_s * hz).max(0.0) / total,
        "steal_pct": 100.0 * (y.steal - x.steal) as f64 / total,
        "softirq_pct": 100.0 * (y.softirq - x.softirq) as f64 / total,
    })
}

/// One snapshot of everything watched.
pub struct Snapshot {
    pub ticks: BTreeMap<String, Option<u64>>,
    pub box_cpu: BoxCpu,
    pub metrics: BTreeMap<String, BTreeMap<String, f64>>,
}

/// A process to watch: a label and a pid.
#[derive(Clone)]
pub struct Watch {
    pub name: String,
    pub pid: String,
}

pub fn parse_watch(s: &str) -> Result<Watch, String> {
    let (name, pid) = s
        .split_once('=')
        .ok_or_else(|| format!("--watch wants NAME=PID, got {s:?}"))?;
    pid.parse::<u32>()
        .map_err(|_| format!("--watch {s:?}: not a pid"))?;
    Ok(Watch {
        name: name.to_string(),
        pid: pid.to_string(),
    })
}

/// Takes a snapshot: CPU ticks of every watched process and of this one, the box, and
/// the `/metrics` counters of every edge.
pub async fn snapshot(watch: &[Watch], edges: &[SocketAddr]) -> Snapshot {
    let mut ticks = BTreeMap::new();
    for w in watch {
        ticks.insert(w.name.clone(), cpu_ticks(&w.pid));
    }
    ticks.insert("generator".to_string(), cpu_ticks("self"));
    let box_cpu = box_cpu();
    let mut metrics = BTreeMap::new();
    for (i, e) in edges.iter().enumerate() {
        if let Some(m) = edge_metrics(*e).await {
            metrics.insert(format!("edge{i}"), m);
        }
    }
    Snapshot {
        ticks,
        box_cpu,
        metrics,
    }
}

/// CPU seconds used by each watched process between two snapshots.
pub fn cpu_seconds(a: &Snapshot, b: &Snapshot, hz: f64) -> BTreeMap<String, Option<f64>> {
    a.ticks
        .iter()
        .map(|(k, va)| {
            let d = match (va, b.ticks.get(k).copied().flatten()) {
                (Some(x), Some(y)) => Some(y.saturating_sub(*x) as f64 / hz),
                _ => None,
            };
            (k.clone(), d)
        })
        .collect()
}

/// Counter deltas of each edge's `/metrics` between two snapshots (unlabelled series).
pub fn metrics_delta(a: &Snapshot, b: &Snapshot) -> BTreeMap<String, BTreeMap<String, f64>> {
    let mut out = BTreeMap::new();
    for (edge, ma) in &a.metrics {
        let Some(mb) = b.metrics.get(edge) else {
            continue;
        };
        let d: BTreeMap<String, f64> = ma
            .iter()
            .filter(|(k, _)| k.ends_with("_total"))
            .filter_map(|(k, va)| mb.get(k).map(|vb| (k.clone(), vb - va)))
            .collect();
        out.insert(edge.clone(), d);
    }
    out
}

/// GET /metrics of an edge; unlabelled series only. `None` when it does not answer in 1 s.
pub async fn edge_metrics(addr: SocketAddr) -> Option<BTreeMap<String, f64>> {
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        let req = format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut body = Vec::new();
        s.read_to_end(&mut body).await.ok()?;
        Some(body)
    };
    let body = tokio::time::timeout(Duration::from_secs(1), fetch)
        .await
        .ok()??;
    let text = String::from_utf8_lossy(&body);
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with('#') || line.contains('{') {
            continue;
        }
        let mut it = line.split_whitespace();
        if let (Some(k), Some(v)) = (it.next(), it.next()) {
            if let Ok(v) = v.parse::<f64>() {
                out.insert(k.to_string(), v);
            }
        }
    }
    Some(out)
}
