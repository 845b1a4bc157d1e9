//! HTTP on the edge's port: the WebSocket upgrade at `/ws` (authentication and Origin
//! checks happen here, before any upgrade), plus `/metrics`, `/healthz` and `/readyz`,
//! and with `--demo` the demo chat page under `/demo/`.

use std::convert::Infallible;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{
    HeaderValue, ALLOW, CACHE_CONTROL, CONNECTION, CONTENT_TYPE, LOCATION, ORIGIN,
    SEC_WEBSOCKET_EXTENSIONS, X_CONTENT_TYPE_OPTIONS,
};
use hyper::{Method, Request, Response, StatusCode};
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

/// The demo chat page's files (`--demo`), embedded in the binary: path under `/demo/`,
/// content type, body.
const DEMO_FILES: [(&str, &str, &str); 4] = [
    (
        "",
        "text/html; charset=utf-8",
        include_str!("../../clients/demo/index.html"),
    ),
    (
        "demo.js",
        "text/javascript; charset=utf-8",
        include_str!("../../clients/demo/demo.js"),
    ),
    (
        "demo.css",
        "text/css; charset=utf-8",
        include_str!("../../clients/demo/demo.css"),
    ),
    (
        "roomcast.js",
        "text/javascript; charset=utf-8",
        include_str!("../../clients/js/roomcast.js"),
    ),
];

/// The content type and body of the demo file at `path` (`/demo/`, `/demo/index.html`,
/// `/demo/demo.js`, …), if there is one.
fn demo_file(path: &str) -> Option<(&'static str, &'static str)> {
    let name = path.strip_prefix("/demo/")?;
    let name = if name == "index.html" { "" } else { name };
    DEMO_FILES
        .iter()
        .find(|(file, _, _)| *file == name)
        .map(|&(_, content_type, body)| (content_type, body))
}

/// Serves `/demo`, `/demo/` and the files under it; None for any other path.
fn demo(req: &Request<Incoming>) -> Option<Reply> {
    let path = req.uri().path();
    if path == "/demo" {
        // Relative URLs in the page (demo.js, roomcast.js) need the trailing slash.
        let location = match req.uri().query() {
            Some(query) => format!("/demo/?{query}"),
            None => "/demo/".to_string(),
        };
        let mut response = text(StatusCode::FOUND, "see /demo/\n");
        if let Ok(value) = HeaderValue::from_str(&location) {
            response.headers_mut().insert(LOCATION, value);
        }
        return Some(response);
    }
    if !path.starts_with("/demo/") {
        return None;
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return Some(response);
    }
    let Some((content_type, body)) = demo_file(path) else {
        return Some(text(StatusCode::NOT_FOUND, "not found\n"));
    };
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    Some(response)
}

fn route(worker: &Rc<Worker>, req: Request<Incoming>) -> Reply {
    if worker.shared.config.demo {
        if let Some(reply) = demo(&req) {
            return reply;
        }
    }
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

/// Whether an upgrade request with this `Origin` header (if any) may go on: an exact,
/// byte-for-byte match with an allow-list entry (no wildcard, prefix or suffix
/// matching), any origin when the list is empty, and no header at all (non-browser
/// clients) unless `require` says every client must send one.
fn origin_allowed(origin: Option<&[u8]>, allowed: &[String], require: bool) -> bool {
    match origin {
        None => !require,
        Some(origin) => allowed.is_empty() || allowed.iter().any(|o| o.as_bytes() == origin),
    }
}

/// A refused upgrade request, with `Connection: close`: the socket is closed once the
/// answer is written, instead of idling until the header timeout (a client refused for
/// its origin, its token or the connection cap has nothing more to ask on it).
fn refuse(status: StatusCode, body: &str) -> Reply {
    let mut response = text(status, body);
    response
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

fn upgrade(worker: &Rc<Worker>, mut req: Request<Incoming>) -> Reply {
    if worker.draining.get() {
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "draining\n");
    }
    let config = &worker.shared.config;
    if !origin_allowed(
        req.headers().get(ORIGIN).map(HeaderValue::as_bytes),
        &config.allowed_origins,
        config.require_origin,
    ) {
        tracing::info!(
            origin = ?req.headers().get(ORIGIN),
            "upgrade refused: origin not allowed"
        );
        return refuse(StatusCode::FORBIDDEN, "origin not allowed\n");
    }
    let query = req.uri().query().unwrap_or("").to_string();
    let identity = match identify(worker, &query) {
        Ok(identity) => identity,
        Err(reason) => {
            WorkerMetrics::inc(&worker.metrics.auth_failures);
            return refuse(StatusCode::UNAUTHORIZED, &format!("{reason}\n"));
        }
    };
    let Some(slot) = worker.shared.capacity.try_acquire() else {
        WorkerMetrics::inc(&worker.metrics.connections_refused);
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "too many connections\n");
    };
    // No extension is ever negotiated (no permessage-deflate).
    req.headers_mut().remove(SEC_WEBSOCKET_EXTENSIONS);
    match fastwebsockets::upgrade::upgrade(&mut req) {
        Ok((response, fut)) => {
            tokio::task::spawn_local(session::run(worker.clone(), fut, identity, slot));
            let (parts, _) = response.into_parts();
            Response::from_parts(parts, Full::new(Bytes::new()))
        }
        Err(e) => refuse(
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

    #[test]
    fn origins_match_exactly_and_a_missing_one_only_when_allowed() {
        let allowed = vec!["https://app.example.com".to_string()];
        let ok = |origin: Option<&str>, require| {
            origin_allowed(origin.map(str::as_bytes), &allowed, require)
        };
        assert!(ok(Some("https://app.example.com"), false));
        for refused in [
            "https://evil.com",
            "null",
            "https://APP.example.com",
            "https://app.example.com:443",
            "https://app.example.com:8443",
            "http://app.example.com",
            "https://app.example.com.evil.com",
            "https://evil.app.example.com",
            "https://app.example.com/",
            "",
        ] {
            assert!(!ok(Some(refused), false), "{refused:?}");
        }
        assert!(ok(None, false));
        assert!(!ok(None, true));
        assert!(origin_allowed(Some(b"https://any.example"), &[], false));
        assert!(!origin_allowed(None, &[], true));
    }

    #[test]
    fn demo_files_are_embedded_with_their_types() {
        let (html, index) = demo_file("/demo/").expect("index");
        assert!(html.starts_with("text/html"));
        assert!(index.contains("demo.js"));
        assert_eq!(demo_file("/demo/index.html").map(|f| f.1), Some(index));
        for name in ["demo.js", "roomcast.js"] {
            let (js, body) = demo_file(&format!("/demo/{name}")).expect(name);
            assert!(js.starts_with("text/javascript"), "{name}: {js}");
            assert!(!body.is_empty());
        }
        assert!(demo_file("/demo/demo.css").is_some_and(|f| f.0.starts_with("text/css")));
        for missing in [
            "/demo",
            "/demo/x",
            "/demo/../Cargo.toml",
            "/demox/demo.js",
            "/",
        ] {
            assert!(demo_file(missing).is_none(), "{missing}");
        }
    }
}
