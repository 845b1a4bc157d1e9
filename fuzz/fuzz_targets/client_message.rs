//! The edge's client protocol decoder (`roomcast_edge::protocol::ClientMessage`, read
//! with `serde_json::from_slice` exactly as the session does, then typed as a
//! `Request`) on arbitrary bytes.
//!
//! Whatever is accepted must be safe to relay: `data` is JSON the inbox reader splices
//! back unchanged, and frames echoing the `id` or carrying the `data` stay JSON.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;

use roomcast_edge::protocol::{self, ClientMessage, ErrorCode, Request};

#[derive(serde::Deserialize)]
struct Delivered<'a> {
    #[serde(borrow)]
    data: &'a RawValue,
}

fuzz_target!(|bytes: &[u8]| {
    let Ok(m) = serde_json::from_slice::<ClientMessage>(bytes) else {
        return;
    };
    let id = m.id();
    // Every message is one request; an op that is not known is `Unknown` with that op.
    match m.request() {
        Request::Unknown(op) => assert_eq!(op, m.op.as_ref(), "unknown op changed"),
        request => assert!(!matches!(request, Request::Unknown(_))),
    }
    let mut out = Vec::new();
    protocol::error(&mut out, id, ErrorCode::BadRequest, &m.op, Some(1));
    assert!(
        serde_json::from_slice::<IgnoredAny>(&out).is_ok(),
        "error frame is not JSON"
    );
    out.clear();
    protocol::ack(&mut out, id, &[("offset", b"null")]);
    assert!(
        serde_json::from_slice::<IgnoredAny>(&out).is_ok(),
        "ack frame is not JSON"
    );

    if let Some(data) = m.data {
        let data = data.get().as_bytes();
        assert!(
            roomcast_common::json::is_valid(data),
            "data the reader would not splice"
        );
        let room = m.room.as_deref().unwrap_or("");
        let from = m.user.as_deref().unwrap_or("");
        let since = m.since.as_deref().unwrap_or("");
        out.clear();
        protocol::message(&mut out, room, from, data, since);
        let delivered: Delivered = match serde_json::from_slice(&out) {
            Ok(d) => d,
            Err(e) => panic!("message frame is not JSON: {e}"),
        };
        assert_eq!(
            delivered.data.get().as_bytes(),
            data,
            "data was not relayed as sent"
        );
        out.clear();
        protocol::direct(&mut out, from, data);
        assert!(
            serde_json::from_slice::<IgnoredAny>(&out).is_ok(),
            "direct frame is not JSON"
        );
    }
});
