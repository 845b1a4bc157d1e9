//! The plain HTTP side of the server: every request that is not under `/socket.io/`
//! falls through the Socket.IO service to [`Plain`], which answers `GET /healthz` and
//! `GET /metrics` like `benches/socketio/server.js` does, and 404 to anything else.

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{header, Request, Response, StatusCode};

use crate::metrics::{self, ProcessFigures, READY, STATS};

/// The inner (fallback) service of the Socket.IO service.
#[derive(Clone, Copy, Debug, Default)]
pub struct Plain;

impl<B> hyper::service::Service<Request<B>> for Plain {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn call(&self, req: Request<B>) -> Self::Future {
        ready(Ok(answer(req.uri().path())))
    }
}

/// The response to a plain request for `path` (the query string is ignored).
fn answer(path: &str) -> Response<Full<Bytes>> {
    match path {
        "/healthz" if READY.load(Ordering::Relaxed) => text(StatusCode::OK, "text/plain", "ok\n"),
        "/healthz" => text(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "starting\n"),
        "/metrics" => {
            let body = metrics::render(&metrics::snapshot(&STATS), ProcessFigures::read());
            text(StatusCode::OK, "text/plain; version=0.0.4", body)
        }
        _ => text(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    }
}

fn text(status: StatusCode, kind: &'static str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(body.into()));
    *res.status_mut() = status;
    res.headers_mut()
        .insert(header::CONTENT_TYPE, header::HeaderValue::from_static(kind));
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_plain_paths() {
        assert_eq!(answer("/nope").status(), StatusCode::NOT_FOUND);
        let m = answer("/metrics");
        assert_eq!(m.status(), StatusCode::OK);
        assert_eq!(
            m.headers()[header::CONTENT_TYPE],
            "text/plain; version=0.0.4"
        );
        READY.store(false, Ordering::Relaxed);
        assert_eq!(answer("/healthz").status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}
