//! HTTP on the edge's port: the WebSocket upgrade at `/ws`, plus `/metrics`,
//! `/healthz` and `/readyz`, and with `--demo` the demo chat page under `/demo/`.
//!
//! # Layout
//!
//! - this file: [`serve`] (one TCP connection, HTTP/1.1 with upgrades) and the routes.
//! - [`upgrade`]: `/ws` — draining, Origin and authentication checks, the connection
//!   cap, then the session.
//! - [`demo`]: the embedded demo chat page.
//! - [`reply`]: plain-text answers.

pub mod demo;
pub mod reply;
pub mod upgrade;

use std::convert::Infallible;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Request, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;

use crate::context::Context;
use crate::http::reply::{text, Reply};
use crate::metrics;

/// Serves one TCP connection (HTTP/1.1, with upgrades).
pub async fn serve(ctx: Rc<Context>, stream: TcpStream) {
    let timeout = Duration::from_millis(ctx.config().handshake_timeout_ms);
    let service = hyper::service::service_fn(move |req| {
        let ctx = ctx.clone();
        async move { Ok::<_, Infallible>(route(&ctx, req)) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(timeout)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "http connection ended with an error");
    }
}

fn route(ctx: &Rc<Context>, req: Request<Incoming>) -> Reply {
    if ctx.config().demo {
        if let Some(reply) = demo::demo(&req) {
            return reply;
        }
    }
    match req.uri().path() {
        "/ws" => upgrade::upgrade(ctx, req),
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => {
            let ready = ctx.shared().ready.iter().all(|r| r.load(Ordering::Relaxed));
            if ready && !ctx.is_draining() {
                text(StatusCode::OK, "ready\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
            }
        }
        "/metrics" => {
            let shared = ctx.shared();
            let ready = shared
                .ready
                .iter()
                .filter(|r| r.load(Ordering::Relaxed))
                .count();
            let mut body = String::with_capacity(4096);
            metrics::render(
                &shared.all_metrics,
                &[
                    (
                        "workers",
                        "Worker threads.",
                        shared.all_metrics.len() as i64,
                    ),
                    (
                        "workers_ready",
                        "Workers holding their leases.",
                        ready as i64,
                    ),
                    (
                        "connections_open",
                        "WebSocket connections open now, all workers.",
                        shared.capacity.open() as i64,
                    ),
                    (
                        "connections_max",
                        "The connection cap (--max-conns).",
                        shared.capacity.cap() as i64,
                    ),
                ],
                &mut body,
            );
            let mut response = text(StatusCode::OK, &body);
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}
