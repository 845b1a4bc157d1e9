//! A worker's context: what every part of one worker reaches for — its node id, the
//! process-wide settings, the module client, the metrics and the local index of
//! connections and rooms. It knows nothing of the tasks that use it (those are started
//! by `app::worker`), so every layer above can depend on it.
//!
//! # Layout
//!
//! - this file: [`Shared`] (the process, read-only after start), [`Mode`] and
//!   [`Context`] (one worker).
//! - [`local`]: the worker's index of connections, rooms and users, with the holds and
//!   floors of joins in flight.
//! - [`cut`]: the gapless-join rule (which room messages a join's replay covered).
//! - [`capacity`]: the process-wide cap on open connections (`--max-conns`).

pub mod capacity;
pub mod cut;
pub mod local;

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use roomcast_common::keys::PartitionKeys;
use roomcast_common::partition::Partitioner;

use crate::auth::Verifier;
use crate::backend::module::Module;
use crate::backend::target::Target;
use crate::config::Config;
use crate::context::capacity::Capacity;
use crate::context::local::Local;
use crate::metrics::WorkerMetrics;

/// What the edge's rooms run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The module in Redis (the product).
    Redis,
    /// `--bench-floor`: the benchmark reference without Redis — rooms local to each
    /// worker, fed in-process through the same fan-out (see `fanout::floor`).
    BenchFloor,
    /// `--echo`: conformance testing only; every client message is echoed back.
    Echo,
}

impl Mode {
    /// The mode the flags ask for.
    pub fn of(config: &Config) -> Mode {
        if config.echo {
            Mode::Echo
        } else if config.bench_floor {
            Mode::BenchFloor
        } else {
            Mode::Redis
        }
    }

    /// Whether there is a Redis with the module: leases, inbox readers, module
    /// commands. Without one (`--bench-floor`, `--echo`), rooms are the in-process floor.
    pub fn has_redis(self) -> bool {
        self == Mode::Redis
    }
}

/// What every worker shares (read-only after start).
pub struct Shared {
    /// Configuration.
    pub config: Config,
    /// Partition layout of the dataset (from `RC.INFO`).
    pub layout: Partitioner,
    /// Each node has one inbox stream for all partitions (partition 0's key), as the
    /// module does on a standalone server; else one per partition (Redis Cluster).
    pub shared_inbox: bool,
    /// Redis is a Redis Cluster: names are sent partition-tagged, and the inboxes are
    /// read by one reader per shard (`inbox::cluster`).
    pub cluster: bool,
    /// Where Redis is (a fixed address or Sentinel); `None` under `--bench-floor` and
    /// `--echo`.
    pub target: Option<Arc<Target>>,
    /// Open WebSocket connections of the whole process and their cap (`--max-conns`).
    pub capacity: Arc<Capacity>,
    /// Token verifier, when a secret is configured.
    pub verifier: Option<Verifier>,
    /// Metrics of every worker, for `/metrics`.
    pub all_metrics: Vec<Arc<WorkerMetrics>>,
    /// Readiness of every worker (lease held and inbox reader connected; at once under
    /// `--bench-floor`).
    pub ready: Vec<Arc<AtomicBool>>,
}

impl Shared {
    /// What the flags ask the rooms to run on.
    pub fn mode(&self) -> Mode {
        Mode::of(&self.config)
    }

    /// Worker `index`'s metrics.
    pub fn metrics_of(&self, index: usize) -> Arc<WorkerMetrics> {
        self.all_metrics.get(index).cloned().unwrap_or_default()
    }
}

/// One worker's context, owned by its thread.
pub struct Context {
    /// Node id registered in the module.
    node: String,
    /// Index of this worker.
    index: usize,
    /// Shared configuration and layout.
    shared: Arc<Shared>,
    /// What the rooms run on.
    mode: Mode,
    /// Module commands (every one fails without Redis: see [`Mode::has_redis`]).
    pub module: Module,
    /// Local connections and memberships.
    pub local: RefCell<Local>,
    /// This worker's metrics (only this thread writes them).
    pub metrics: Arc<WorkerMetrics>,
    /// Next connection sequence number.
    next_seq: Cell<u64>,
    /// Set while draining: new connections are refused.
    draining: Cell<bool>,
    /// Current fan-out round (see `ws::outbox`): advanced by the inbox reader between
    /// chunks of delivery, so a queue can tell a burst from a consumer that is behind.
    round: Cell<u64>,
}

impl Context {
    /// The context of worker `index`, node `node`, sending module commands with
    /// `module`.
    pub fn new(index: usize, node: String, shared: Arc<Shared>, module: Module) -> Self {
        let metrics = shared.metrics_of(index);
        Self {
            node,
            index,
            mode: shared.mode(),
            shared,
            module,
            local: RefCell::new(Local::default()),
            metrics,
            next_seq: Cell::new(0),
            draining: Cell::new(false),
            round: Cell::new(0),
        }
    }

    /// Node id registered in the module.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// What every worker shares.
    pub fn shared(&self) -> &Shared {
        &self.shared
    }

    /// Configuration.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// Partition layout of the dataset.
    pub fn layout(&self) -> &Partitioner {
        &self.shared.layout
    }

    /// What the rooms run on.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The node's inbox streams: one on a standalone server, one per partition under
    /// Redis Cluster.
    pub fn inbox_keys(&self) -> Vec<String> {
        let layout = &self.shared.layout;
        let partitions = if self.shared.shared_inbox {
            1
        } else {
            layout.count()
        };
        (0..partitions)
            .map(|p| PartitionKeys::new(layout.tag(p)).inbox(&self.node))
            .collect()
    }

    /// The channel the module pushes the node's new inbox entries to on a standalone
    /// server (next to its inbox: partition 0's).
    pub fn live_channel(&self) -> String {
        PartitionKeys::new(self.shared.layout.tag(0)).live(&self.node)
    }

    /// Under Redis Cluster: the live shard channel of each partition's inbox, in the
    /// order of [`Context::inbox_keys`].
    pub fn live_channels(&self) -> Vec<String> {
        let layout = &self.shared.layout;
        (0..layout.count())
            .map(|p| PartitionKeys::new(layout.tag(p)).live(&self.node))
            .collect()
    }

    /// A fresh connection sequence number and its id (`<node>.<seq>`).
    pub fn next_conn(&self) -> (u64, String) {
        let seq = self.next_seq.get() + 1;
        self.next_seq.set(seq);
        (seq, format!("{}.{seq}", self.node))
    }

    /// The sequence number inside a local connection id, if it is one of ours.
    pub fn seq_of(&self, conn_id: &str) -> Option<u64> {
        conn_id
            .strip_prefix(self.node.as_str())?
            .strip_prefix('.')?
            .parse()
            .ok()
    }

    /// Marks this worker ready or not for `/readyz`.
    pub fn set_ready(&self, ready: bool) {
        if let Some(flag) = self.shared.ready.get(self.index) {
            flag.store(ready, Ordering::Relaxed);
        }
    }

    /// Whether the worker is draining (new connections are refused).
    pub fn is_draining(&self) -> bool {
        self.draining.get()
    }

    /// Starts draining.
    pub fn start_draining(&self) {
        self.draining.set(true);
    }

    /// The current fan-out round.
    pub fn round(&self) -> u64 {
        self.round.get()
    }

    /// Starts a new fan-out round (see `ws::outbox`).
    pub fn next_round(&self) {
        self.round.set(self.round.get() + 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_ids_carry_the_node_and_a_sequence_number() {
        let config = <Config as clap::Parser>::parse_from(["roomcast-edge", "--bench-floor"]);
        let layout = Partitioner::new(1).unwrap();
        let shared = Arc::new(Shared {
            config,
            layout: layout.clone(),
            shared_inbox: true,
            cluster: false,
            target: None,
            capacity: Capacity::new(10),
            verifier: None,
            all_metrics: Vec::new(),
            ready: Vec::new(),
        });
        let module = Module::new(
            crate::backend::Backend::new(None, Arc::default()),
            "n1".into(),
            layout,
            false,
            crate::backend::publisher::BatchPolicy::OFF,
        );
        let ctx = Context::new(0, "n1".into(), shared, module);
        assert_eq!(ctx.mode(), Mode::BenchFloor);
        assert_eq!(ctx.next_conn(), (1, "n1.1".to_string()));
        assert_eq!(ctx.next_conn(), (2, "n1.2".to_string()));
        assert_eq!(ctx.seq_of("n1.2"), Some(2));
        assert_eq!(ctx.seq_of("n10.2"), None);
        assert_eq!(ctx.seq_of("n1.x"), None);
    }
}
