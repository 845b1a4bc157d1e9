//! Per-worker Prometheus metrics with no locks on the hot path.
//!
//! Each worker thread owns one [`WorkerMetrics`] (behind an `Arc`) and is its only
//! writer, so every update is an uncontended `Relaxed` atomic add on a cache line no other
//! thread writes. The `/metrics` handler, on whichever worker serves it, reads all of
//! them and [`render`]s the sums. Reads are not a consistent snapshot across counters;
//! Prometheus only needs each counter to be monotonic, which it is.

use std::fmt::{Display, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Prefix of every metric name this server exports.
const PREFIX: &str = "roomcast_edge_";

/// The counters of one worker thread; that thread is the only writer.
#[derive(Debug, Default)]
pub struct WorkerMetrics {
    /// Client WebSocket connections accepted.
    pub connections_opened: AtomicU64,
    /// Client WebSocket connections finished, for any reason.
    pub connections_closed: AtomicU64,
    /// Frames received from clients.
    pub messages_in: AtomicU64,
    /// Frames queued to clients.
    pub messages_out: AtomicU64,
    /// Inbox entries times the local recipients each was fanned out to.
    pub deliveries: AtomicU64,
    /// Payload bytes queued to clients.
    pub bytes_out: AtomicU64,
    /// Frames dropped instead of sent (e.g. to sockets already closed).
    pub dropped: AtomicU64,
    /// Connections closed because their send queue stayed full.
    pub slow_consumer_closes: AtomicU64,
    /// Client actions refused by a rate limit, local or in the module.
    pub rate_limited: AtomicU64,
    /// Redis commands that failed (connection or reply errors).
    pub redis_errors: AtomicU64,
    /// Connection attempts refused for a missing or invalid token.
    pub auth_failures: AtomicU64,
    /// Upgrade requests refused because the process was at `--max-conns`.
    pub connections_refused: AtomicU64,
    /// Lookups of the Redis primary through Sentinel after the previous one failed them.
    pub primary_lookups: AtomicU64,
    /// Inbox reader restarts because its liveness probe did not come back in time.
    pub reader_restarts: AtomicU64,
    /// Gaps in the live push of the inbox filled from the inbox stream: a push whose
    /// previous entry was not the last one delivered, or a reconnect that found entries
    /// appended while the subscriber was away.
    pub inbox_gaps_filled: AtomicU64,
    /// Inbox entries delivered from the stream because their push was missed (read on
    /// a reconnect or to fill a gap).
    pub inbox_entries_recovered: AtomicU64,
    /// Times the inbox subscriber connection ended and was opened again.
    pub inbox_resubscribes: AtomicU64,
    /// `RC.PUBLISHM` commands sent (batches of client publishes).
    pub publish_batches: AtomicU64,
    /// Client publishes sent in those batches.
    pub publish_batched: AtomicU64,
    /// Round-trip time of Redis commands.
    pub redis_rtt: Histogram,
}

impl WorkerMetrics {
    /// All counters at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one to `counter` (one of this struct's fields).
    #[inline]
    pub fn inc(counter: &AtomicU64) {
        Self::add(counter, 1);
    }

    /// Adds `n` to `counter` (one of this struct's fields).
    ///
    /// `Relaxed` is enough: counters order nothing else, they only need to add up.
    #[inline]
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// Reads one counter of a [`WorkerMetrics`].
type CounterField = fn(&WorkerMetrics) -> &AtomicU64;

/// The plain counters: exported name (without prefix and `_total`), help text and field,
/// in output order. One table so a new counter cannot be half-exported.
const COUNTERS: [(&str, &str, CounterField); 19] = [
    ("connections_opened", "Client connections accepted.", |m| {
        &m.connections_opened
    }),
    ("connections_closed", "Client connections closed.", |m| {
        &m.connections_closed
    }),
    ("messages_in", "Frames received from clients.", |m| {
        &m.messages_in
    }),
    ("messages_out", "Frames queued to clients.", |m| {
        &m.messages_out
    }),
    ("deliveries", "Inbox entries times local recipients.", |m| {
        &m.deliveries
    }),
    ("bytes_out", "Payload bytes queued to clients.", |m| {
        &m.bytes_out
    }),
    ("dropped", "Frames dropped instead of sent.", |m| &m.dropped),
    (
        "slow_consumer_closes",
        "Connections closed for not reading fast enough.",
        |m| &m.slow_consumer_closes,
    ),
    (
        "rate_limited",
        "Client actions refused by a rate limit.",
        |m| &m.rate_limited,
    ),
    ("redis_errors", "Redis commands that failed.", |m| {
        &m.redis_errors
    }),
    (
        "auth_failures",
        "Connections refused for a missing or invalid token.",
        |m| &m.auth_failures,
    ),
    (
        "connections_refused",
        "Upgrade requests refused at the connection cap.",
        |m| &m.connections_refused,
    ),
    (
        "primary_lookups",
        "Lookups of the Redis primary through Sentinel after a failure.",
        |m| &m.primary_lookups,
    ),
    (
        "reader_restarts",
        "Inbox reader restarts after a liveness probe did not come back.",
        |m| &m.reader_restarts,
    ),
    (
        "inbox_gaps_filled",
        "Gaps in the live inbox push (missed pushes) filled from the inbox stream.",
        |m| &m.inbox_gaps_filled,
    ),
    (
        "inbox_entries_recovered",
        "Inbox entries read from the stream because their push was missed.",
        |m| &m.inbox_entries_recovered,
    ),
    (
        "inbox_resubscribes",
        "Inbox subscriber connections ended and opened again.",
        |m| &m.inbox_resubscribes,
    ),
    (
        "publish_batches",
        "RC.PUBLISHM commands sent (client publishes coalesced into one command).",
        |m| &m.publish_batches,
    ),
    (
        "publish_batched",
        "Client publishes sent inside RC.PUBLISHM commands.",
        |m| &m.publish_batched,
    ),
];

/// Upper bounds of the histogram buckets, in seconds, as exported in `le`.
const BUCKET_LABELS: [&str; 14] = [
    "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1",
    "0.25", "0.5", "1", "2.5",
];

/// The same bounds in nanoseconds, so observing compares integers exactly.
const BUCKET_BOUNDS_NS: [u64; 14] = [
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
];

/// A latency histogram with fixed buckets from 100 µs to 2.5 s, plus +Inf.
///
/// Each bucket counts only its own observations; [`render`] makes them cumulative.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations per bucket; the last one is the +Inf overflow bucket.
    buckets: [AtomicU64; BUCKET_BOUNDS_NS.len() + 1],
    /// Sum of all observations, in microseconds (an integer so it can be atomic).
    sum_us: AtomicU64,
    /// Number of observations.
    count: AtomicU64,
}

impl Histogram {
    /// Records one duration.
    pub fn observe(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        // First bucket whose bound is >= ns (Prometheus buckets are `le`); past the
        // last bound this is the +Inf bucket.
        let index = BUCKET_BOUNDS_NS.partition_point(|&bound| bound < ns);
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        WorkerMetrics::inc(&self.buckets[index]);
        WorkerMetrics::add(&self.sum_us, us);
        WorkerMetrics::inc(&self.count);
    }

    /// Number of observations so far.
    #[cfg(test)]
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

/// Writes the Prometheus text exposition (format 0.0.4) of the sum over `workers`,
/// followed by `extra_gauges` as `(name, help, value)`, into `out`.
///
/// Extra gauge names get the same `roomcast_edge_` prefix and must be valid metric name
/// characters (`[a-z0-9_]`); they come from code, not from clients.
pub fn render(
    workers: &[Arc<WorkerMetrics>],
    extra_gauges: &[(&str, &str, i64)],
    out: &mut String,
) {
    // Closed is read before opened: a connection is counted opened before closed, so this
    // order keeps the gauge from dipping below zero under concurrent updates (clamped
    // anyway, as `Relaxed` gives no cross-counter guarantee).
    let closed = sum(workers, |w| &w.connections_closed);
    let opened = sum(workers, |w| &w.connections_opened);
    write_metric(
        out,
        "connections",
        "gauge",
        "Client connections open now.",
        opened.saturating_sub(closed),
    );

    for (name, help, field) in COUNTERS {
        write_metric(
            out,
            &format!("{name}_total"),
            "counter",
            help,
            sum(workers, field),
        );
    }

    render_histogram(
        out,
        "redis_rtt_seconds",
        "Round-trip time of Redis commands.",
        workers.iter().map(|w| &w.redis_rtt),
    );

    for (name, help, value) in extra_gauges {
        write_metric(out, name, "gauge", help, value);
    }
}

/// Sums one counter over all workers.
fn sum(workers: &[Arc<WorkerMetrics>], counter: CounterField) -> u64 {
    workers.iter().fold(0, |acc, w| {
        acc.wrapping_add(counter(w).load(Ordering::Relaxed))
    })
}

/// Writes the HELP/TYPE header and one sample line.
fn write_metric(out: &mut String, name: &str, kind: &str, help: &str, value: impl Display) {
    write_header(out, name, kind, help);
    // Writing into a String cannot fail.
    let _ = writeln!(out, "{PREFIX}{name} {value}");
}

/// Writes the `# HELP` and `# TYPE` lines of a metric family.
fn write_header(out: &mut String, name: &str, kind: &str, help: &str) {
    // HELP text must escape backslash and newline.
    let help = help.replace('\\', r"\\").replace('\n', r"\n");
    let _ = writeln!(out, "# HELP {PREFIX}{name} {help}");
    let _ = writeln!(out, "# TYPE {PREFIX}{name} {kind}");
}

/// Writes a histogram family summed over several per-worker histograms.
///
/// `_count` is the total of the buckets rather than the `count` atomics, so it always
/// equals the `+Inf` bucket even while workers are observing.
fn render_histogram<'a>(
    out: &mut String,
    name: &str,
    help: &str,
    histograms: impl Iterator<Item = &'a Histogram>,
) {
    let mut buckets = [0u64; BUCKET_BOUNDS_NS.len() + 1];
    let mut sum_us = 0u64;
    for h in histograms {
        for (total, bucket) in buckets.iter_mut().zip(&h.buckets) {
            *total = total.wrapping_add(bucket.load(Ordering::Relaxed));
        }
        sum_us = sum_us.wrapping_add(h.sum_us.load(Ordering::Relaxed));
    }

    write_header(out, name, "histogram", help);
    let mut cumulative = 0u64;
    let labels = BUCKET_LABELS.iter().copied().chain(["+Inf"]);
    for (count, le) in buckets.iter().zip(labels) {
        cumulative = cumulative.wrapping_add(*count);
        let _ = writeln!(out, "{PREFIX}{name}_bucket{{le=\"{le}\"}} {cumulative}");
    }
    // Microseconds to seconds; f64 is exact for sums below 2^53 µs (285 years).
    let sum_s = sum_us as f64 / 1e6;
    let _ = writeln!(out, "{PREFIX}{name}_sum {sum_s}");
    let _ = writeln!(out, "{PREFIX}{name}_count {cumulative}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Renders and parses into `name{labels}` → value, checking every line's syntax.
    fn render_parsed(
        workers: &[Arc<WorkerMetrics>],
        extra: &[(&str, &str, i64)],
    ) -> HashMap<String, f64> {
        let mut out = String::new();
        render(workers, extra, &mut out);
        parse(&out)
    }

    fn is_name(s: &str) -> bool {
        let mut chars = s.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }

    fn parse(text: &str) -> HashMap<String, f64> {
        let mut samples = HashMap::new();
        let mut typed = Vec::new();
        assert!(text.ends_with('\n'));
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# ") {
                let mut words = rest.splitn(3, ' ');
                let keyword = words.next().unwrap();
                let name = words.next().unwrap();
                assert!(is_name(name), "{line}");
                assert!(name.starts_with(PREFIX), "{line}");
                match keyword {
                    "HELP" => assert!(words.next().is_some_and(|h| !h.is_empty())),
                    "TYPE" => {
                        let kind = words.next().unwrap();
                        assert!(["counter", "gauge", "histogram"].contains(&kind));
                        typed.push(name.to_string());
                    }
                    _ => panic!("unexpected comment {line}"),
                }
                continue;
            }
            let (key, value) = line.rsplit_once(' ').unwrap();
            let name = match key.split_once('{') {
                Some((name, labels)) => {
                    let labels = labels.strip_suffix('}').expect(line);
                    for label in labels.split(',') {
                        let (k, v) = label.split_once('=').expect(line);
                        assert!(is_name(k), "{line}");
                        assert!(v.len() >= 2 && v.starts_with('"') && v.ends_with('"'));
                    }
                    name
                }
                None => key,
            };
            assert!(is_name(name), "{line}");
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .filter(|f| typed.iter().any(|t| t == f))
                .unwrap_or(name);
            assert!(typed.iter().any(|t| t == family), "untyped sample {line}");
            let value: f64 = value.parse().expect(line);
            assert!(
                samples.insert(key.to_string(), value).is_none(),
                "dup {line}"
            );
        }
        samples
    }

    #[test]
    fn counts_add_up_over_workers() {
        let a = Arc::new(WorkerMetrics::new());
        let b = Arc::new(WorkerMetrics::new());
        WorkerMetrics::add(&a.connections_opened, 5);
        WorkerMetrics::inc(&a.connections_closed);
        WorkerMetrics::add(&b.connections_opened, 3);
        WorkerMetrics::add(&b.connections_closed, 2);
        WorkerMetrics::add(&a.messages_in, 10);
        WorkerMetrics::add(&b.messages_in, 7);
        WorkerMetrics::add(&b.bytes_out, 1000);
        WorkerMetrics::inc(&a.auth_failures);
        WorkerMetrics::inc(&b.auth_failures);
        WorkerMetrics::inc(&b.rate_limited);

        let m = render_parsed(
            &[a, b],
            &[
                ("workers", "Worker threads.", 2),
                ("ready", "1 when ready.", 1),
            ],
        );
        assert_eq!(m["roomcast_edge_connections"], 5.0);
        assert_eq!(m["roomcast_edge_connections_opened_total"], 8.0);
        assert_eq!(m["roomcast_edge_connections_closed_total"], 3.0);
        assert_eq!(m["roomcast_edge_messages_in_total"], 17.0);
        assert_eq!(m["roomcast_edge_bytes_out_total"], 1000.0);
        assert_eq!(m["roomcast_edge_auth_failures_total"], 2.0);
        assert_eq!(m["roomcast_edge_rate_limited_total"], 1.0);
        assert_eq!(m["roomcast_edge_messages_out_total"], 0.0);
        assert_eq!(m["roomcast_edge_workers"], 2.0);
        assert_eq!(m["roomcast_edge_ready"], 1.0);
    }

    #[test]
    fn connections_gauge_never_negative() {
        let a = Arc::new(WorkerMetrics::new());
        WorkerMetrics::inc(&a.connections_closed);
        let m = render_parsed(&[a], &[]);
        assert_eq!(m["roomcast_edge_connections"], 0.0);
    }

    #[test]
    fn histogram_is_cumulative() {
        let a = Arc::new(WorkerMetrics::new());
        let b = Arc::new(WorkerMetrics::new());
        a.redis_rtt.observe(Duration::from_micros(50)); // <= 0.0001
        a.redis_rtt.observe(Duration::from_micros(100)); // <= 0.0001 (bounds inclusive)
        a.redis_rtt.observe(Duration::from_nanos(100_001)); // <= 0.00025
        b.redis_rtt.observe(Duration::from_millis(3)); // <= 0.005
        b.redis_rtt.observe(Duration::from_secs(10)); // +Inf only
        assert_eq!(a.redis_rtt.count(), 3);

        let m = render_parsed(&[a, b], &[]);
        let bucket =
            |le: &str| m[&format!("roomcast_edge_redis_rtt_seconds_bucket{{le=\"{le}\"}}")];
        assert_eq!(bucket("0.0001"), 2.0);
        assert_eq!(bucket("0.00025"), 3.0);
        assert_eq!(bucket("0.0025"), 3.0);
        assert_eq!(bucket("0.005"), 4.0);
        assert_eq!(bucket("2.5"), 4.0);
        assert_eq!(bucket("+Inf"), 5.0);
        assert_eq!(m["roomcast_edge_redis_rtt_seconds_count"], 5.0);
        let sum = m["roomcast_edge_redis_rtt_seconds_sum"];
        assert!((sum - 10.003_25).abs() < 1e-9, "{sum}");

        let mut previous = 0.0;
        for le in BUCKET_LABELS.iter().chain(&["+Inf"]) {
            assert!(bucket(le) >= previous);
            previous = bucket(le);
        }
    }

    #[test]
    fn empty_render_parses() {
        let m = render_parsed(&[], &[]);
        assert_eq!(m["roomcast_edge_connections"], 0.0);
        assert_eq!(m["roomcast_edge_redis_rtt_seconds_count"], 0.0);
        assert_eq!(m["roomcast_edge_redis_rtt_seconds_sum"], 0.0);
    }

    #[test]
    fn bounds_and_labels_agree() {
        for (label, ns) in BUCKET_LABELS.iter().zip(BUCKET_BOUNDS_NS) {
            let seconds: f64 = label.parse().unwrap();
            assert_eq!((seconds * 1e9).round() as u64, ns);
        }
    }

    #[test]
    fn help_is_escaped() {
        let mut out = String::new();
        render(&[], &[("odd", "line\nbreak \\ here", -1)], &mut out);
        assert!(out.contains("# HELP roomcast_edge_odd line\\nbreak \\\\ here\n"));
        assert!(out.contains("roomcast_edge_odd -1\n"));
    }
}
