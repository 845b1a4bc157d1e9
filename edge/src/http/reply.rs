//! The plain HTTP answers the edge gives.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONNECTION, CONTENT_TYPE};
use hyper::{Response, StatusCode};

/// An HTTP answer with a body in memory.
pub type Reply = Response<Full<Bytes>>;

/// A plain-text answer.
pub fn text(status: StatusCode, body: &str) -> Reply {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// A refused upgrade request, with `Connection: close`: the socket is closed once the
/// answer is written, instead of idling until the header timeout (a client refused for
/// its origin, its token or the connection cap has nothing more to ask on it).
pub fn refuse(status: StatusCode, body: &str) -> Reply {
    let mut response = text(status, body);
    response
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    response
}
