//! The counters behind `GET /metrics`: the same unlabelled `socketio_*` series as
//! `benches/socketio/server.js` (the load generator and `compare.sh` read them by name),
//! plus `socketio_send_buffer_full_total` (socketioxide bounds each socket's send queue;
//! Node does not) and the process's CPU time and RSS from /proc.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

/// Process-wide counters, updated by the event handlers. All monotonic except the
/// connection gauge.
pub struct Stats {
    pub connections: AtomicI64,
    pub connects_total: AtomicU64,
    pub disconnects_total: AtomicU64,
    pub joins_total: AtomicU64,
    pub publishes_total: AtomicU64,
    pub publish_rejected_total: AtomicU64,
    pub bad_requests_total: AtomicU64,
    pub redis_errors_total: AtomicU64,
    /// Members of this server that a publish made here could not be queued to (their
    /// send buffer of `max_buffer_size` packets was full, so socketioxide dropped it).
    /// Drops on the other servers happen inside the adapter and are not counted here;
    /// the load generator counts every lost message.
    pub send_buffer_full_total: AtomicU64,
}

/// The one set of counters of this process.
pub static STATS: Stats = Stats {
    connections: AtomicI64::new(0),
    connects_total: AtomicU64::new(0),
    disconnects_total: AtomicU64::new(0),
    joins_total: AtomicU64::new(0),
    publishes_total: AtomicU64::new(0),
    publish_rejected_total: AtomicU64::new(0),
    bad_requests_total: AtomicU64::new(0),
    redis_errors_total: AtomicU64::new(0),
    send_buffer_full_total: AtomicU64::new(0),
};

/// True from the ready line until shutdown begins: `GET /healthz` answers 200 then.
pub static READY: AtomicBool = AtomicBool::new(false);

/// Adds one to a counter (relaxed: the values are only read for reporting).
pub fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Figures read from /proc for the `process_*` series; `None` where unreadable.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProcessFigures {
    pub cpu_seconds: Option<f64>,
    pub rss_bytes: Option<u64>,
}

impl ProcessFigures {
    /// Reads this process's CPU time (utime + stime) and resident set size.
    pub fn read() -> Self {
        let cpu_seconds = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|s| cpu_ticks(&s))
            .map(|t| t as f64 / clock_ticks_per_second());
        let rss_bytes = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| rss_kib(&s))
            .map(|kib| kib * 1024);
        ProcessFigures {
            cpu_seconds,
            rss_bytes,
        }
    }
}

/// utime + stime (clock ticks) from the text of `/proc/PID/stat`. The command name may
/// hold spaces and parentheses, so the fields are counted from the last `)`.
pub fn cpu_ticks(stat: &str) -> Option<u64> {
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let mut fields = rest.split_whitespace().skip(11); // state is field 0 here; utime is 11
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// `VmRSS` in KiB from the text of `/proc/PID/status`.
pub fn rss_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a configuration value; it has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as f64
    } else {
        100.0
    }
}

/// A point-in-time copy of [`STATS`], in the order the text lists them.
pub fn snapshot(s: &Stats) -> Vec<(&'static str, i64)> {
    let u = |c: &AtomicU64| i64::try_from(c.load(Ordering::Relaxed)).unwrap_or(i64::MAX);
    vec![
        ("connections", s.connections.load(Ordering::Relaxed)),
        ("connects_total", u(&s.connects_total)),
        ("disconnects_total", u(&s.disconnects_total)),
        ("joins_total", u(&s.joins_total)),
        ("publishes_total", u(&s.publishes_total)),
        ("publish_rejected_total", u(&s.publish_rejected_total)),
        ("bad_requests_total", u(&s.bad_requests_total)),
        ("redis_errors_total", u(&s.redis_errors_total)),
        ("send_buffer_full_total", u(&s.send_buffer_full_total)),
    ]
}

/// The Prometheus text of `/metrics`: `socketio_<name>` per counter (type `counter` for
/// names ending in `_total`, else `gauge`), then the process figures that could be read.
pub fn render(counters: &[(&'static str, i64)], process: ProcessFigures) -> String {
    let mut out = String::with_capacity(1024);
    for (name, v) in counters {
        let kind = if name.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        };
        let _ = writeln!(out, "# TYPE socketio_{name} {kind}\nsocketio_{name} {v}");
    }
    if let Some(cpu) = process.cpu_seconds {
        let _ = writeln!(
            out,
            "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total {cpu}"
        );
    }
    if let Some(rss) = process.rss_bytes {
        let _ = writeln!(
            out,
            "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes {rss}"
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_proc_texts() {
        let stat = "1234 (a b) c) S 1 2 3 4 5 6 7 8 9 10 250 70 0 0 20 0 1 0";
        assert_eq!(cpu_ticks(stat), Some(320));
        assert_eq!(cpu_ticks("garbage"), None);
        let status = "Name:\tx\nVmPeak:\t 9 kB\nVmRSS:\t   5120 kB\nThreads: 1\n";
        assert_eq!(rss_kib(status), Some(5120));
        assert_eq!(rss_kib("Name: x\n"), None);
    }

    #[test]
    fn renders_the_series_the_generator_reads() {
        let s = Stats {
            connections: AtomicI64::new(3),
            connects_total: AtomicU64::new(5),
            disconnects_total: AtomicU64::new(2),
            joins_total: AtomicU64::new(4),
            publishes_total: AtomicU64::new(7),
            publish_rejected_total: AtomicU64::new(1),
            bad_requests_total: AtomicU64::new(0),
            redis_errors_total: AtomicU64::new(0),
            send_buffer_full_total: AtomicU64::new(2),
        };
        let text = render(
            &snapshot(&s),
            ProcessFigures {
                cpu_seconds: Some(1.5),
                rss_bytes: None,
            },
        );
        assert!(text.starts_with("# TYPE socketio_connections gauge\nsocketio_connections 3\n"));
        assert!(
            text.contains("# TYPE socketio_publishes_total counter\nsocketio_publishes_total 7\n")
        );
        assert!(text.contains("socketio_publish_rejected_total 1\n"));
        assert!(text.contains("socketio_send_buffer_full_total 2\n"));
        assert!(text.ends_with("process_cpu_seconds_total 1.5\n"));
        assert!(!text.contains("process_resident_memory_bytes"));
    }
}
