//! One worker: a thread with its own single-threaded runtime, node id, listener
//! (sharing the port through `SO_REUSEPORT`), Redis connections, inbox reader and local
//! index. Nothing on the hot path is shared with other workers.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use roomcast_common::partition::Partitioner;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::LocalSet;

use crate::auth::Verifier;
use crate::backend::Backend;
use crate::capacity::Capacity;
use crate::config::Config;
use crate::frame::close;
use crate::local::Local;
use crate::metrics::WorkerMetrics;
use crate::{failover, http, lease, liveness, reader};

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
    /// read by one reader per shard (`shard_reader`).
    pub cluster: bool,
    /// Where Redis is (a fixed address or Sentinel); `None` under `--bench-floor` and
    /// `--echo`.
    pub target: Option<Arc<crate::target::Target>>,
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

/// One worker's state, owned by its thread.
pub struct Worker {
    /// Node id registered in the module.
    pub node: String,
    /// Index of this worker.
    pub index: usize,
    /// Shared configuration and layout.
    pub shared: Arc<Shared>,
    /// Module commands (without a connection under `--bench-floor`: see
    /// [`Worker::floor`]).
    pub backend: Backend,
    /// Local connections and memberships.
    pub local: RefCell<Local>,
    /// This worker's metrics (only this thread writes them).
    pub metrics: Arc<WorkerMetrics>,
    /// Next connection sequence number.
    next_seq: Cell<u64>,
    /// Set while draining: new connections are refused.
    pub draining: Cell<bool>,
    /// The inbox reader's liveness probe (see `liveness`).
    pub liveness: crate::liveness::Liveness,
    /// Current fan-out round (see `outbox`): advanced by the inbox reader between
    /// chunks of delivery, so a queue can tell a burst from a consumer that is behind.
    pub round: Cell<u64>,
}

impl Worker {
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

    /// A room or user name as a command's first argument: partition-tagged
    /// (`{tag}name`) under Redis Cluster, so the command is routed to the shard serving
    /// the name's partition; plain on a standalone server.
    pub fn routed_name<'a>(&self, name: &'a str) -> std::borrow::Cow<'a, str> {
        if self.shared.cluster {
            std::borrow::Cow::Owned(self.shared.layout.tagged(name))
        } else {
            std::borrow::Cow::Borrowed(name)
        }
    }

    /// The partition tag argument (`{tag}`) of partition `p`.
    pub fn partition_arg(&self, p: u32) -> String {
        format!("{{{}}}", self.shared.layout.tag(p))
    }

    /// True under `--bench-floor` or `--echo`: no Redis; sessions use [`crate::floor`]
    /// instead of module commands, and there is no lease or inbox reader.
    pub fn floor(&self) -> bool {
        self.shared.target.is_none()
    }

    /// True under `--echo`: client messages are echoed back instead of handled.
    pub fn echo(&self) -> bool {
        self.shared.config.echo
    }

    /// Marks this worker ready or not for `/readyz`.
    pub fn set_ready(&self, ready: bool) {
        if let Some(flag) = self.shared.ready.get(self.index) {
            flag.store(ready, Ordering::Relaxed);
        }
    }
}

/// Binds a listener on `addr` with `SO_REUSEPORT`, so every worker can bind the same port.
pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Runs worker `index` on the current thread until `shutdown` turns true, then drains.
pub fn run(
    index: usize,
    node: String,
    shared: Arc<Shared>,
    listener: std::net::TcpListener,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local_set = LocalSet::new();
    local_set.block_on(&runtime, async move {
        let metrics = shared.all_metrics.get(index).cloned().unwrap_or_default();
        let backend = Backend::new(shared.target.clone(), metrics.clone());
        let worker = Rc::new(Worker {
            node,
            index,
            shared,
            backend,
            local: RefCell::new(Local::default()),
            metrics,
            next_seq: Cell::new(0),
            draining: Cell::new(false),
            liveness: Default::default(),
            round: Cell::new(0),
        });
        let listener = TcpListener::from_std(listener)?;

        // Under --bench-floor there is nothing to register with and nothing to read.
        let background = if worker.floor() {
            worker.set_ready(true);
            None
        } else {
            lease::start(&worker).await;
            let reader = tokio::task::spawn_local(reader::run(worker.clone()));
            let renewer = tokio::task::spawn_local(lease::run(worker.clone()));
            let prober = tokio::task::spawn_local(liveness::run(worker.clone()));
            let watcher = tokio::task::spawn_local(failover::watch(worker.clone()));
            Some((reader, renewer, prober, watcher))
        };
        tracing::info!(node = %worker.node, "worker ready");

        let mut last_accept_warning: Option<std::time::Instant> = None;
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let _ = stream.set_nodelay(true);
                        tokio::task::spawn_local(http::serve(worker.clone(), stream));
                    }
                    Err(e) => {
                        // EMFILE/ENFILE and the like: back off briefly (the surplus
                        // sockets stay in the backlog), and say so at most once a second.
                        let now = std::time::Instant::now();
                        if last_accept_warning.is_none_or(|at| now.duration_since(at) >= Duration::from_secs(1)) {
                            tracing::warn!(error = %e, "accept failed; backing off");
                            last_accept_warning = Some(now);
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                _ = shutdown.changed() => break,
            }
        }
        drop(listener);
        drain(&worker).await;
        if let Some((reader, renewer, prober, watcher)) = background {
            watcher.abort();
            prober.abort();
            renewer.abort();
            reader.abort();
        }
        Ok::<(), std::io::Error>(())
    })
}

/// Closes every socket with 1012 ("reconnect elsewhere"), removes the node from every
/// partition (`RC.NODE.DOWN`, so the others see leave events at once; not under
/// `--bench-floor`), and returns.
async fn drain(worker: &Rc<Worker>) {
    worker.draining.set(true);
    worker.set_ready(false);
    let outs: Vec<_> = worker
        .local
        .borrow()
        .conns
        .values()
        .map(|c| c.out.clone())
        .collect();
    for out in &outs {
        out.close(close::RESTART, "server draining");
    }
    let wait_writers = async {
        for out in &outs {
            out.finished().await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), wait_writers).await;
    if !worker.floor() {
        if let Err(e) = worker.backend.run_batch(lease::node_down(worker)).await {
            tracing::warn!(node = %worker.node, error = %e, "RC.NODE.DOWN failed while draining");
        }
    }
    // Let each session read its peer's close answer and log its close before the
    // runtime (and every socket with it) is dropped; a session waits at most 1 s.
    let sessions_done = async {
        while !worker.local.borrow().conns.is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(1500), sessions_done).await;
    tracing::info!(node = %worker.node, connections = outs.len(), "worker drained");
}
