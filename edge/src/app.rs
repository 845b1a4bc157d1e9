//! The process: configuration in, worker threads started, signals waited for, drain.
//!
//! # Layout
//!
//! - this file: [`run`] — listeners, the shared state, one thread per worker, the start
//!   banner, and the drain on SIGTERM/SIGINT.
//! - [`backing`](mod@backing): where Redis is and what it says at start (`RC.INFO`).
//! - [`embedded`]: the embedded redis-server used when no `--redis` is given.
//! - [`worker`]: one worker thread — runtime, context, its tasks, the accept loop.
//! - [`drain`]: closing a worker's connections (1012) and removing its node.

pub mod backing;
pub mod drain;
pub mod embedded;
pub mod worker;

use std::hash::BuildHasher;
use std::io::Write;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::app::backing::{backing, Backing};
use crate::auth::Verifier;
use crate::config::Config;
use crate::context::capacity::Capacity;
use crate::context::Shared;
use crate::metrics::WorkerMetrics;

/// A node id for this process when none is given.
fn generated_node_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let hash = std::collections::hash_map::RandomState::new().hash_one((std::process::id(), nanos));
    format!("edge-{:08x}", hash as u32)
}

/// Runs the edge until SIGTERM or SIGINT, then drains.
pub fn run(config: Config) -> Result<(), String> {
    let workers = config.worker_count()?;
    let Backing {
        embedded,
        target,
        layout,
        shared_inbox,
        cluster,
        banner,
    } = backing(&config)?;
    let base = config.node_id.clone().unwrap_or_else(generated_node_id);

    let first = worker::bind(config.listen)
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let addr = first.local_addr().map_err(|e| e.to_string())?;
    let mut listeners = vec![first];
    for _ in 1..workers {
        listeners.push(worker::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?);
    }

    let shared = Arc::new(Shared {
        verifier: config
            .jwt_secret
            .as_deref()
            .map(|s| Verifier::new(s.as_bytes())),
        config: config.clone(),
        layout,
        shared_inbox,
        cluster,
        target,
        capacity: Capacity::new(config.connection_cap()),
        all_metrics: (0..workers)
            .map(|_| Arc::new(WorkerMetrics::new()))
            .collect(),
        ready: (0..workers)
            .map(|_| Arc::new(AtomicBool::new(false)))
            .collect(),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut threads = Vec::new();
    for (index, listener) in listeners.into_iter().enumerate() {
        let node = format!("{base}-w{index}");
        let shared = shared.clone();
        let stop = stop_rx.clone();
        let handle = std::thread::Builder::new()
            .name(format!("worker-{index}"))
            .spawn(move || {
                if let Err(e) = worker::run(index, node, shared, listener, stop) {
                    tracing::error!(error = %e, "worker failed");
                }
            })
            .map_err(|e| format!("cannot start a worker thread: {e}"))?;
        threads.push(handle);
    }

    println!("roomcast-edge listening on http://{addr} (WebSocket: ws://{addr}/ws), {workers} workers, node {base}, {banner}");
    let _ = std::io::stdout().flush();

    wait_for_signal()?;
    tracing::info!("draining");
    let _ = stop_tx.send(true);
    let deadline = Instant::now() + Duration::from_millis(config.drain_ms);
    for handle in threads {
        while !handle.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if handle.is_finished() {
            let _ = handle.join();
        }
    }
    drop(embedded);
    tracing::info!("stopped");
    Ok(())
}

/// Blocks until SIGTERM or SIGINT.
fn wait_for_signal() -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
        let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        Ok(())
    })
}
