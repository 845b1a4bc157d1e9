//! roomcast-edge: thin, fast WebSocket servers that terminate client sockets, forward
//! each client action to the roomcast module as one command, and fan out what the module
//! routes into their inbox streams.
//!
//! # Layout
//!
//! - [`config`]: command line flags (with environment equivalents).
//! - [`embedded`]: the embedded redis-server used when no `--redis` is given.
//! - [`worker`]: one thread per worker — runtime, listener (`SO_REUSEPORT`), drain.
//! - [`capacity`]: the process-wide cap on open connections (`--max-conns`).
//! - [`http`]: `/ws` upgrade with authentication and Origin checks; `/metrics`,
//!   `/healthz`, `/readyz`.
//! - [`auth`]: HS256 tokens and room allow-lists.
//! - [`session`]: one client connection: frames → operations → module commands.
//! - [`wsread`]: reading client frames with a buffer that grows only as needed.
//! - [`protocol`]: client message parsing and server message encoding.
//! - [`frame`]: server frame encoding (once per message, shared by all recipients).
//! - [`outbox`]: bounded per-connection send queue and its one-write-per-batch writer.
//! - [`local`]: the worker's index of connections, rooms and users.
//! - [`reader`]: `XREAD BLOCK` over the node's inboxes and fan-out.
//! - [`shard_reader`]: under Redis Cluster, one blocking `RC.READ` per shard.
//! - [`floor`]: `--bench-floor`, the benchmark reference without Redis (rooms local to
//!   each worker, fed in-process through the same fan-out).
//! - [`lease`]: lease renewal and re-registration after Redis lost the node's state.
//! - [`backend`]: the command connection and the meaning of module errors.
//! - [`target`]: where the Redis primary is (a fixed address, found through Sentinel, or
//!   a Redis Cluster).
//! - [`cluster`]: Redis Cluster slot map → which shard serves which partition.
//! - [`failover`]: asks Sentinel every second which server is the primary, and moves.
//! - [`liveness`]: the probe that proves the inbox reader still receives what is routed.
//! - [`ratelimit`]: the local per-connection token bucket.
//! - [`metrics`]: per-worker counters and the Prometheus rendering.

mod auth;
mod backend;
mod capacity;
mod cluster;
mod config;
mod embedded;
mod failover;
mod floor;
mod frame;
mod http;
mod lease;
mod liveness;
mod local;
mod metrics;
mod outbox;
mod protocol;
mod ratelimit;
mod reader;
mod session;
mod shard_reader;
mod target;
mod worker;
mod wsread;

use std::hash::BuildHasher;
use std::io::Write;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use roomcast_common::partition::Partitioner;
use tokio::sync::watch;

use crate::auth::Verifier;
use crate::capacity::Capacity;
use crate::config::Config;
use crate::metrics::WorkerMetrics;
use crate::target::Target;
use crate::worker::Shared;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let config = Config::parse();
    if let Some(config::Command::Token {
        secret,
        sub,
        ttl,
        rooms,
    }) = &config.command
    {
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            + ttl;
        let mut claims = serde_json::json!({ "sub": sub, "exp": exp });
        if !rooms.is_empty() {
            claims["rooms"] = serde_json::json!(rooms);
        }
        println!("{}", auth::sign(secret.as_bytes(), &claims));
        return;
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = config.validate() {
        eprintln!("roomcast-edge: {e}");
        std::process::exit(2);
    }
    match run(config) {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("roomcast-edge: {e}");
            std::process::exit(1);
        }
    }
}

/// A node id for this process when none is given.
fn generated_node_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let hash = std::collections::hash_map::RandomState::new().hash_one((std::process::id(), nanos));
    format!("edge-{:08x}", hash as u32)
}

/// What the edge learns from Redis at start.
struct Dataset {
    /// The partition layout (`RC.INFO` partitions).
    layout: Partitioner,
    /// Each node has one inbox for all partitions (`RC.INFO` inbox shared).
    shared_inbox: bool,
    /// The server is a Redis Cluster node (`INFO cluster`).
    cluster: bool,
}

/// Reads the dataset's partition count and inbox layout from `RC.INFO`, and whether the
/// server is a Redis Cluster node, retrying until Redis answers.
fn fetch_layout(target: &Target) -> Result<Dataset, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(2)));
    let mut delay = Duration::from_millis(200);
    loop {
        let attempt = runtime.block_on(async {
            let client = target.resolve().await?;
            let mut conn = client
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            let info = redis::cmd("RC.INFO")
                .query_async::<Vec<redis::Value>>(&mut conn)
                .await?;
            let cluster_info: String = redis::cmd("INFO")
                .arg("cluster")
                .query_async(&mut conn)
                .await?;
            Ok::<_, redis::RedisError>((info, cluster_info.contains("cluster_enabled:1")))
        });
        match attempt {
            Ok((info, cluster)) => {
                let partitions = info.chunks(2).find_map(|pair| match pair {
                    [redis::Value::SimpleString(name), redis::Value::Int(n)]
                        if name == "partitions" =>
                    {
                        u32::try_from(*n).ok()
                    }
                    _ => None,
                });
                let shared_inbox = info.chunks(2).any(|pair| {
                    matches!(pair, [redis::Value::SimpleString(name), redis::Value::SimpleString(v)]
                        if name == "inbox" && v == "shared")
                });
                match partitions.map(Partitioner::new) {
                    Some(Ok(layout)) => {
                        return Ok(Dataset {
                            layout,
                            shared_inbox,
                            cluster,
                        })
                    }
                    _ => {
                        tracing::error!("RC.INFO did not report a usable partition count; retrying")
                    }
                }
            }
            Err(e) => tracing::error!(
                error = %e,
                "cannot reach Redis with the roomcast module (is it running and is libroomcast.so loaded?); retrying"
            ),
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// Where the edge's Redis comes from: `--redis`, the embedded one, or none at all
/// (`--bench-floor`).
struct Backing {
    /// The embedded redis-server, stopped when dropped.
    embedded: Option<embedded::Embedded>,
    /// Where the Redis in use is (`None` under `--bench-floor` and `--echo`).
    target: Option<Arc<Target>>,
    /// Partition layout (from `RC.INFO`; one partition under `--bench-floor`, where it
    /// only checks room names).
    layout: Partitioner,
    /// One inbox per node for all partitions (standalone Redis), per `RC.INFO`.
    shared_inbox: bool,
    /// Redis is a Redis Cluster.
    cluster: bool,
    /// What the start banner says about it.
    banner: String,
}

fn backing(config: &Config) -> Result<Backing, String> {
    if config.echo || config.bench_floor {
        let banner = if config.echo {
            "echo mode (conformance testing only: every message is echoed back)"
        } else {
            "bench-floor mode (benchmark reference only: rooms are local to each worker)"
        };
        return Ok(Backing {
            embedded: None,
            target: None,
            layout: Partitioner::new(1)?,
            shared_inbox: true,
            cluster: false,
            banner: banner.into(),
        });
    }
    let embedded = match &config.redis {
        Some(_) => None,
        None => Some(embedded::Embedded::start(
            config.module.as_deref(),
            &config.embedded_module_args,
        )?),
    };
    let url = match (&config.redis, &embedded) {
        (Some(url), _) => url.clone(),
        (None, Some(e)) => e.url.clone(),
        (None, None) => return Err("no Redis".into()),
    };
    let mut target = Target::parse(&url)?;
    let Dataset {
        layout,
        shared_inbox,
        cluster,
    } = fetch_layout(&target)?;
    if cluster {
        // A Redis Cluster node: from now on, the cluster it belongs to.
        target = match target {
            Target::Direct(seed) => Target::Cluster(cluster::ClusterTarget { seed }),
            _ => {
                return Err(format!(
                    "{url} names a Redis Cluster node through Sentinel; give --redis redis://<any cluster node> instead"
                ))
            }
        };
    }
    Ok(Backing {
        embedded,
        banner: target.describe(),
        target: Some(Arc::new(target)),
        layout,
        shared_inbox,
        cluster,
    })
}

fn run(config: Config) -> Result<(), String> {
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
