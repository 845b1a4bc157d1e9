//! HTTP on the edge's port: the WebSocket upgrade at `/ws` (authentication and Origin
//! checks happen here, before any upgrade), plus `/metrics`, `/healthz` and `/readyz`.

use std::convert::Infallible;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE, ORIGIN, SEC_WEBSOCKET_EXTENSIONS};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use roomcast_common::names::check_name;
use tokio::net::TcpStream;

use crate::metrics::{self, WorkerMetrics};
use crate::session::{self, Identity};
use crate::worker::Worker;

type Reply = Response<Full<Bytes>>;

/// Serves one TCP connection (HTTP/1.1, with upgrades).
pub async fn serve(worker: Rc<Worker>, stream: TcpStream) {
    let timeout = Duration::from_millis(worker.shared.config.handshake_timeout_ms);
    let service = hyper::service::service_fn(move |req| {
        let worker = worker.clone();
        async move { Ok::<_, Infallible>(route(&worker, req)) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(timeout)
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "http connection ended with an error");
    }
}

fn text(status: StatusCode, body: &str) -> Reply {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn route(worker: &Rc<Worker>, req: Request<Incoming>) -> Reply {
    match req.uri().path() {
        "/ws" => upgrade(worker, req),
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => {
            let ready = worker
                .shared
                .ready
                .iter()
                .all(|r| r.load(Ordering::Relaxed));
            if ready && !worker.draining.get() {
                text(StatusCode::OK, "ready\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
            }
        }
        "/metrics" => {
            let shared = &worker.shared;
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

/// Decodes `%XX` and `+` in a query value.
fn percent_decode(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The value of `name` in a query string.
fn query_param(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .and_then(|(_, value)| percent_decode(value))
}

/// Authenticates the request: a token, or an anonymous user where allowed.
fn identify(worker: &Worker, query: &str) -> Result<Identity, &'static str> {
    let config = &worker.shared.config;
    if let Some(token) = query_param(query, "token") {
        let verifier = worker
            .shared
            .verifier
            .as_ref()
            .ok_or("tokens are not configured")?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        return match verifier.verify(&token, now) {
            Ok(claims) => Ok(Identity {
                user: claims.sub,
                rooms: claims.rooms,
                expires_at: Some(claims.exp),
            }),
            Err(e) => {
                tracing::info!(reason = %e, "token refused");
                Err("invalid token")
            }
        };
    }
    if config.allow_anonymous {
        if let Some(user) = query_param(query, "user") {
            if check_name(user.as_bytes()).is_err() || user.starts_with('{') {
                return Err("invalid user name");
            }
            return Ok(Identity {
                user,
                rooms: None,
                expires_at: None,
            });
        }
        return Err("missing token or user");
    }
    Err("missing token")
}

fn upgrade(worker: &Rc<Worker>, mut req: Request<Incoming>) -> Reply {
    if worker.draining.get() {
        return text(StatusCode::SERVICE_UNAVAILABLE, "draining\n");
    }
    let origins = &worker.shared.config.allowed_origins;
    if let Some(origin) = req.headers().get(ORIGIN) {
        let allowed =
            origins.is_empty() || origins.iter().any(|o| o.as_bytes() == origin.as_bytes());
        if !allowed {
            return text(StatusCode::FORBIDDEN, "origin not allowed\n");
        }
    }
    let query = req.uri().query().unwrap_or("").to_string();
    let identity = match identify(worker, &query) {
        Ok(identity) => identity,
        Err(reason) => {
            WorkerMetrics::inc(&worker.metrics.auth_failures);
            return text(StatusCode::UNAUTHORIZED, &format!("{reason}\n"));
        }
    };
    // No extension is ever negotiated (no permessage-deflate).
    req.headers_mut().remove(SEC_WEBSOCKET_EXTENSIONS);
    match fastwebsockets::upgrade::upgrade(&mut req) {
        Ok((response, fut)) => {
            tokio::task::spawn_local(session::run(worker.clone(), fut, identity));
            let (parts, _) = response.into_parts();
            Response::from_parts(parts, Full::new(Bytes::new()))
        }
        Err(e) => text(
            StatusCode::BAD_REQUEST,
            &format!("bad upgrade request: {e}\n"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_decoded() {
        assert_eq!(
            query_param("a=1&user=ann%20b&x", "user").as_deref(),
            Some("ann b")
        );
        assert_eq!(
            query_param("token=a.b.c", "token").as_deref(),
            Some("a.b.c")
        );
        assert_eq!(query_param("user=%zz", "user"), None);
        assert_eq!(query_param("user=%e2%82%ac", "user").as_deref(), Some("€"));
        assert_eq!(query_param("", "user"), None);
    }
}
