//! The demo chat page (`--demo`), embedded in the binary and served under `/demo/`.

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{
    HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE, LOCATION, X_CONTENT_TYPE_OPTIONS,
};
use hyper::{Method, Request, Response, StatusCode};

use crate::http::reply::{text, Reply};

/// The demo chat page's files (`--demo`), embedded in the binary: path under `/demo/`,
/// content type, body.
const DEMO_FILES: [(&str, &str, &str); 4] = [
    (
        "",
        "text/html; charset=utf-8",
        include_str!("../../../clients/demo/index.html"),
    ),
    (
        "demo.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../clients/demo/demo.js"),
    ),
    (
        "demo.css",
        "text/css; charset=utf-8",
        include_str!("../../../clients/demo/demo.css"),
    ),
    (
        "roomcast.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../clients/js/roomcast.js"),
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
pub fn demo(req: &Request<Incoming>) -> Option<Reply> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
