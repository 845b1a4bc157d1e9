//! One worker: a thread with its own single-threaded runtime, node id, listener
//! (sharing the port through `SO_REUSEPORT`), Redis connections, inbox reader and local
//! index. Nothing on the hot path is shared with other workers.
//!
//! This is where a worker's tasks are started, each given only what it needs: the
//! publish batcher, the inbox reader, the lease keeper, the liveness prober and the Sentinel watcher (with
//! Redis only), and one HTTP task per accepted connection.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, LocalSet};

use crate::app::drain::drain;
use crate::backend::module::Module;
use crate::backend::publisher::BatchPolicy;
use crate::backend::Backend;
use crate::context::{Context, Shared};
use crate::http;
use crate::inbox::{self, liveness, liveness::Liveness};
use crate::node::{failover, lease};

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

/// The worker's context: its module client over a command connection of its own.
fn context(index: usize, node: String, shared: Arc<Shared>) -> Context {
    let backend = Backend::new(shared.target.clone(), shared.metrics_of(index));
    let config = &shared.config;
    let batch = BatchPolicy {
        max: config.publish_batch_max as usize,
        delay: Duration::from_micros(config.publish_batch_delay_us),
    };
    let module = Module::new(
        backend,
        node.clone(),
        shared.layout.clone(),
        shared.cluster,
        batch,
    );
    Context::new(index, node, shared, module)
}

/// Takes the node's leases, then starts the tasks that keep it in Redis and read its
/// inbox: publish batcher, reader, lease renewal, liveness prober, Sentinel watcher.
async fn start_background(ctx: &Rc<Context>) -> Vec<JoinHandle<()>> {
    // First, so it is stopped last: sessions draining still get their publishes out.
    let publisher = tokio::task::spawn_local({
        let module = ctx.module.clone();
        async move { module.run_publisher().await }
    });
    lease::start(ctx).await;
    let liveness = Rc::new(Liveness::default());
    let reader = tokio::task::spawn_local(inbox::run(ctx.clone(), liveness.clone()));
    let renewer = tokio::task::spawn_local({
        let ctx = ctx.clone();
        async move { lease::run(&ctx).await }
    });
    let prober = tokio::task::spawn_local(liveness::run(ctx.clone(), liveness.clone()));
    let watcher = tokio::task::spawn_local({
        let ctx = ctx.clone();
        async move { failover::watch(&ctx, || liveness.restart.notify_one()).await }
    });
    // Stopped in reverse order.
    vec![publisher, reader, renewer, prober, watcher]
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
        let ctx = Rc::new(context(index, node, shared));
        let listener = TcpListener::from_std(listener)?;

        // Without Redis there is nothing to register with and nothing to read.
        let background = if ctx.mode().has_redis() {
            start_background(&ctx).await
        } else {
            ctx.set_ready(true);
            Vec::new()
        };
        tracing::info!(node = %ctx.node(), "worker ready");

        let mut last_accept_warning: Option<std::time::Instant> = None;
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let _ = stream.set_nodelay(true);
                        tokio::task::spawn_local(http::serve(ctx.clone(), stream));
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
        drain(&ctx).await;
        for task in background.iter().rev() {
            task.abort();
        }
        Ok::<(), std::io::Error>(())
    })
}
