//! `roomcast-bench-socketioxide`: the R3 peer of roomcast's fan-out benchmark
//! (`benches/compare.sh`): socketioxide 0.18 with the socketioxide-redis adapter (plain
//! `redis` driver), speaking exactly the event contract of `benches/socketio/server.js`
//! (R2) so that the same load generator (`roomcast-fanout --protocol socketio`) drives it.
//!
//! ```text
//! roomcast-bench-socketioxide --port 0 --redis redis://127.0.0.1:6379 --adapter redis
//! ```
//!
//! Options: `--port P` (0 = a free one; default 0), `--host H` (default 127.0.0.1),
//! `--redis URL` (needed unless `--adapter none`), `--adapter redis|none`,
//! `--ping-interval MS` / `--ping-timeout MS` (Engine.IO heartbeat, 25000 / 20000).
//!
//! Once connected to Redis and listening it prints one line on stdout:
//! `socketioxide listening on http://127.0.0.1:PORT (adapter redis, pid N)`.
//! `GET /healthz` answers 200 "ok" from then on; `GET /metrics` gives the same unlabelled
//! `socketio_*` counters as R2 (plus `socketio_send_buffer_full_total`), and the
//! process's CPU time and RSS. WebSocket transport only (no polling, no upgrade), no
//! compression. SIGTERM / SIGINT close every socket and exit 0.
//!
//! One `current_thread` tokio runtime: the system under test is N such processes, as R2
//! is N node processes.
//!
//! # Layout
//! - `cli`: the command line, parsed like `server.js` parses it; the RESP3 Redis URL.
//! - `events`: the connect, `join` and `publish` handlers (the event contract).
//! - `http`: the fallback service for `/healthz`, `/metrics` and 404.
//! - `metrics`: the counters and their Prometheus text.

mod cli;
mod events;
mod http;
mod metrics;

use std::error::Error;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use socketioxide::adapter::Adapter;
use socketioxide::service::SocketIoService;
use socketioxide::{SocketIo, SocketIoBuilder, TransportType};
use socketioxide_redis::drivers::redis::redis_client as redis;
use socketioxide_redis::{RedisAdapter, RedisAdapterCtr};
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};

use crate::cli::{AdapterKind, Command, Opts};
use crate::http::Plain;

type BoxError = Box<dyn Error>;

fn main() -> ExitCode {
    let opts = match cli::parse(std::env::args().skip(1)) {
        Ok(Command::Run(opts)) => opts,
        Ok(Command::Help) => {
            print!("{}", cli::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(msg) => {
            eprintln!("socketioxide: {msg}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("socketioxide: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(opts)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("socketioxide: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The Socket.IO configuration shared by both adapters: the settings of `server.js`.
fn builder(opts: &Opts) -> SocketIoBuilder {
    SocketIo::builder()
        .transports([TransportType::Websocket])
        .ping_interval(opts.ping_interval)
        .ping_timeout(opts.ping_timeout)
}

/// Connects the adapter, registers namespace `/`, then serves until a signal.
async fn run(opts: Opts) -> Result<(), BoxError> {
    match opts.adapter {
        AdapterKind::None => {
            let (svc, io) = builder(&opts).build_with_inner_svc(Plain);
            io.ns("/", events::on_connect);
            serve(&opts, svc, io).await
        }
        AdapterKind::Redis => {
            let redis_err = |e: redis::RedisError| format!("redis {}: {e}", opts.redis);
            let client = redis::Client::open(cli::resp3_url(&opts.redis)).map_err(redis_err)?;
            let ctr = RedisAdapterCtr::new_with_redis(&client)
                .await
                .map_err(redis_err)?;
            let (svc, io) = builder(&opts)
                .with_adapter::<RedisAdapter<_>>(ctr)
                .build_with_inner_svc(Plain);
            // Subscribes this server to the namespace's request and response channels.
            io.ns("/", events::on_connect)
                .await
                .map_err(|e| format!("redis adapter: {e}"))?;
            serve(&opts, svc, io).await
        }
    }
}

/// Listens, prints the ready line, accepts until SIGTERM / SIGINT, then closes the
/// server (every socket, then the adapter's subscriptions).
async fn serve<A: Adapter>(
    opts: &Opts,
    svc: SocketIoService<Plain, A>,
    io: SocketIo<A>,
) -> Result<(), BoxError> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let listener = TcpListener::bind((opts.host, opts.port)).await?;
    let addr = listener.local_addr()?;
    metrics::READY.store(true, Ordering::Relaxed);
    println!(
        "socketioxide listening on http://{addr} (adapter {}, pid {})",
        opts.adapter.name(),
        std::process::id()
    );
    let acceptor = tokio::spawn(accept(listener, svc));
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    metrics::READY.store(false, Ordering::Relaxed);
    acceptor.abort();
    if tokio::time::timeout(Duration::from_secs(5), io.close())
        .await
        .is_err()
    {
        eprintln!("socketioxide: close took over 5 s; exiting anyway");
    }
    Ok(())
}

/// Accepts connections forever, one task per connection (HTTP/1.1 with upgrades, so
/// that the WebSocket handshake can take the stream over).
async fn accept<A: Adapter>(listener: TcpListener, svc: SocketIoService<Plain, A>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                // As Node's HTTP server does by default.
                let _ = stream.set_nodelay(true);
                let svc = svc.clone();
                tokio::spawn(async move {
                    // Errors here are clients going away mid-request: nothing to report.
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .with_upgrades()
                        .await;
                });
            }
            Err(e) => {
                // Out of file descriptors, typically: back off instead of spinning.
                eprintln!("socketioxide: accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
