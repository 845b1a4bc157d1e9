//! Engine.IO v4 / Socket.IO v4 framing over the same WebSocket client, for the R2
//! "industry" reference (`benches/socketio/server.js`, `--protocol socketio`).
//!
//! Only what the benchmark needs, on the `websocket` transport (no polling, no upgrade),
//! namespace `/`, text packets only, one packet per WebSocket frame (Engine.IO v4 never
//! batches packets on this transport):
//!
//! - Engine.IO: `0{...}` open (server), `2` ping (server) → `3` pong (client), `1` close,
//!   `6` noop, `4…` message (a Socket.IO packet follows).
//! - Socket.IO: `40` connect (client) → `40{"sid":…}` (server), `44{…}` connect error,
//!   `41` disconnect, `42[id]["event",args…]` event, `43id[args…]` ack.
//!
//! The server speaks roomcast's semantics (see `server.js`): `join` and `publish` are
//! emitted with acks, members receive `42["message",{"room":R,"from":U,"data":D}]`.

use std::net::{IpAddr, SocketAddr};

use anyhow::{bail, Context, Result};
use fastwebsockets::{Frame, Payload};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::ws::{self, Ws};

/// The Engine.IO pong, the answer to the server's ping `2`.
pub const PONG: &[u8] = b"3";

/// The request target of the WebSocket upgrade for user `user`.
pub fn target(user: &str) -> String {
    format!("/socket.io/?EIO=4&transport=websocket&user={user}")
}

/// A `pong` text frame.
pub fn pong_frame() -> Frame<'static> {
    Frame::text(Payload::Owned(PONG.to_vec()))
}

/// The body of a `message` event: what the roomcast edge puts in its `message` op.
#[derive(Deserialize)]
pub struct MessageBody<'a> {
    #[serde(default, borrow)]
    pub room: Option<&'a str>,
    #[serde(default, borrow)]
    #[allow(dead_code)] // parsed like the roomcast path parses it; not checked
    pub from: Option<&'a str>,
    #[serde(default, borrow)]
    pub data: Option<&'a RawValue>,
}

/// The first argument of an ack: `{"ok":true}` or `{"ok":false,"error":"…"}`.
#[derive(Deserialize)]
struct AckBody {
    #[serde(default)]
    ok: Option<bool>,
}

/// One received text frame, classified.
pub enum Packet<'a> {
    /// Engine.IO ping (`2`): answer with [`PONG`].
    Ping,
    /// Engine.IO open (`0{…}`), with its JSON.
    Open(&'a [u8]),
    /// Socket.IO connect confirmation (`40{"sid":…}`).
    Connected,
    /// Socket.IO connect error (`44{…}`) or disconnect (`41`), Engine.IO close (`1`).
    Closed(String),
    /// `42["message",{…}]`.
    Message(MessageBody<'a>),
    /// Another event, by name.
    Event(String),
    /// `43<id>[…]`; `ok` is the first argument's `ok` field, when there is one.
    Ack { id: u64, ok: Option<bool> },
    /// Engine.IO pong or noop, or a packet type the generator does not use.
    Other(&'static str),
    /// Not parseable.
    Bad,
}

/// Splits `[/nsp,][id]json` (the rest of a Socket.IO packet after its type digit).
fn split_id(rest: &[u8]) -> (Option<u64>, &[u8]) {
    let mut rest = rest;
    if rest.first() == Some(&b'/') {
        // A namespace other than "/"; the benchmark uses "/" only, skip it anyway.
        rest = rest
            .iter()
            .position(|&b| b == b',')
            .map_or(&[][..], |i| &rest[i + 1..]);
    }
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let id = std::str::from_utf8(&rest[..digits])
        .ok()
        .and_then(|d| d.parse().ok());
    (id, &rest[digits..])
}

/// Classifies one text frame.
pub fn parse(frame: &[u8]) -> Packet<'_> {
    match frame {
        [b'2', ..] => Packet::Ping,
        [b'0', json @ ..] => Packet::Open(json),
        [b'1', ..] => Packet::Closed("engine.io close".into()),
        [b'3', ..] => Packet::Other("pong"),
        [b'6', ..] => Packet::Other("noop"),
        [b'4', b'0', ..] => Packet::Connected,
        [b'4', b'1', ..] => Packet::Closed("socket.io disconnect".into()),
        [b'4', b'4', rest @ ..] => Packet::Closed(format!(
            "socket.io connect error: {}",
            String::from_utf8_lossy(rest)
        )),
        [b'4', b'2', rest @ ..] => {
            let (_, json) = split_id(rest);
            // The hot path: exactly ["message", {…}], parsed in one pass.
            if let Ok((name, body)) = serde_json::from_slice::<(&str, MessageBody)>(json) {
                if name == "message" {
                    return Packet::Message(body);
                }
                return Packet::Event(name.to_string());
            }
            match serde_json::from_slice::<Vec<&RawValue>>(json) {
                Ok(args) => match args
                    .first()
                    .map(|a| serde_json::from_str::<String>(a.get()))
                {
                    Some(Ok(name)) => Packet::Event(name),
                    _ => Packet::Bad,
                },
                Err(_) => Packet::Bad,
            }
        }
        [b'4', b'3', rest @ ..] => {
            let (Some(id), json) = split_id(rest) else {
                return Packet::Bad;
            };
            let ok = serde_json::from_slice::<Vec<&RawValue>>(json)
                .ok()
                .and_then(|args| {
                    args.first()
                        .and_then(|a| serde_json::from_str::<AckBody>(a.get()).ok())
                })
                .and_then(|b| b.ok);
            Packet::Ack { id, ok }
        }
        [b'4', ..] => Packet::Other("socket.io other"),
        _ => Packet::Bad,
    }
}

/// Reads text frames, answering pings, until `f` returns `Some`.
async fn until<T>(ws: &mut Ws, mut f: impl FnMut(Packet<'_>) -> Result<Option<T>>) -> Result<T> {
    loop {
        let text = ws::next_text(ws).await?;
        let p = parse(&text);
        if let Packet::Ping = p {
            ws::send_text(ws, PONG.to_vec()).await?;
            continue;
        }
        if let Some(v) = f(p)? {
            return Ok(v);
        }
    }
}

/// The fields of the Engine.IO open packet the generator checks.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Open {
    #[allow(dead_code)] // must be there; its value is not used
    sid: String,
    #[allow(dead_code)]
    ping_interval: u64,
}

/// Connects to `ws://addr/socket.io/?EIO=4&transport=websocket&user=NAME`, reads the
/// Engine.IO open packet, connects to namespace `/` and waits for the confirmation.
pub async fn connect(addr: SocketAddr, src: Option<IpAddr>, user: &str) -> Result<Ws> {
    let mut c = ws::connect_to(addr, src, &target(user)).await?;
    until(&mut c, |p| match p {
        Packet::Open(json) => {
            serde_json::from_slice::<Open>(json).with_context(|| {
                format!("engine.io open packet: {}", String::from_utf8_lossy(json))
            })?;
            Ok(Some(()))
        }
        Packet::Closed(why) => bail!("{addr}: {why}"),
        _ => Ok(None),
    })
    .await
    .context("engine.io open")?;
    ws::send_text(&mut c, b"40".to_vec()).await?;
    until(&mut c, |p| match p {
        Packet::Connected => Ok(Some(())),
        Packet::Closed(why) => bail!("{addr}: {why}"),
        _ => Ok(None),
    })
    .await
    .context("socket.io connect")?;
    Ok(c)
}

/// Emits `join` with ack id `id` and waits for the ack (`{"ok":true}`).
pub async fn join(ws: &mut Ws, room: &str, id: u64) -> Result<()> {
    let req = format!(r#"42{id}["join",{}]"#, serde_json::to_string(room)?);
    ws::send_text(ws, req.into_bytes()).await?;
    until(ws, |p| match p {
        Packet::Ack { id: got, ok } if got == id => match ok {
            Some(true) => Ok(Some(())),
            _ => bail!("join {room} refused"),
        },
        Packet::Closed(why) => bail!("join {room}: {why}"),
        _ => Ok(None),
    })
    .await
}

/// The `publish` emit for room `room` (a plain name: not escaped) with the JSON `data`
/// and ack id `id`.
pub fn publish_text(room: &str, data: &str, id: u64) -> String {
    format!(r#"42{id}["publish",{{"room":"{room}","data":{data}}}]"#)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_packets() {
        assert!(matches!(parse(b"2"), Packet::Ping));
        assert!(matches!(parse(br#"40{"sid":"x"}"#), Packet::Connected));
        assert!(matches!(parse(b"41"), Packet::Closed(_)));
        assert!(matches!(
            parse(br#"4317[{"ok":true}]"#),
            Packet::Ack {
                id: 17,
                ok: Some(true)
            }
        ));
        assert!(matches!(
            parse(br#"430[{"ok":false,"error":"not_member"}]"#),
            Packet::Ack {
                id: 0,
                ok: Some(false)
            }
        ));
        assert!(matches!(parse(b"435[]"), Packet::Ack { id: 5, ok: None }));
        match parse(br#"42["message",{"room":"r1","from":"u","data":{"s":3,"t":9,"p":"x"}}]"#) {
            Packet::Message(m) => {
                assert_eq!(m.room, Some("r1"));
                assert_eq!(m.data.map(|d| d.get()), Some(r#"{"s":3,"t":9,"p":"x"}"#));
            }
            _ => panic!("not a message"),
        }
        match parse(br#"42["joined","a","b"]"#) {
            Packet::Event(name) => assert_eq!(name, "joined"),
            _ => panic!("not an event"),
        }
        assert!(matches!(parse(b"42nonsense"), Packet::Bad));
    }

    #[test]
    fn publish_text_is_an_event_with_ack() {
        let t = publish_text("r1", r#"{"s":1}"#, 42);
        assert_eq!(t, r#"4242["publish",{"room":"r1","data":{"s":1}}]"#);
        match parse(t.as_bytes()) {
            Packet::Event(name) => assert_eq!(name, "publish"),
            _ => panic!("not an event"),
        }
    }
}
