//! The WebSocket upgrade at `/ws`: draining, Origin, authentication and the connection
//! cap are checked here, before any upgrade; then the connection is a session's.

use std::rc::Rc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ORIGIN, SEC_WEBSOCKET_EXTENSIONS};
use hyper::{Request, Response, StatusCode};
use roomcast_common::names::check_name;

use crate::context::Context;
use crate::http::reply::{refuse, Reply};
use crate::metrics::WorkerMetrics;
use crate::session::{self, Identity};

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
fn identify(ctx: &Context, query: &str) -> Result<Identity, &'static str> {
    let config = ctx.config();
    if let Some(token) = query_param(query, "token") {
        let verifier = ctx
            .shared()
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

pub fn upgrade(ctx: &Rc<Context>, mut req: Request<Incoming>) -> Reply {
    if ctx.is_draining() {
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "draining\n");
    }
    let config = ctx.config();
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
    let identity = match identify(ctx, &query) {
        Ok(identity) => identity,
        Err(reason) => {
            WorkerMetrics::inc(&ctx.metrics.auth_failures);
            return refuse(StatusCode::UNAUTHORIZED, &format!("{reason}\n"));
        }
    };
    let Some(slot) = ctx.shared().capacity.try_acquire() else {
        WorkerMetrics::inc(&ctx.metrics.connections_refused);
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "too many connections\n");
    };
    // No extension is ever negotiated (no permessage-deflate).
    req.headers_mut().remove(SEC_WEBSOCKET_EXTENSIONS);
    match fastwebsockets::upgrade::upgrade(&mut req) {
        Ok((response, fut)) => {
            tokio::task::spawn_local(session::run(ctx.clone(), fut, identity, slot));
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
}
