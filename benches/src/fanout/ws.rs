//! A minimal WebSocket client for the edge: a hand-written HTTP/1.1 upgrade on a
//! `TcpStream` (optionally bound to a source address), then fastwebsockets in the
//! client role (it masks what it sends).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use fastwebsockets::{Frame, OpCode, Payload, Role, WebSocket};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

pub type Ws = WebSocket<TcpStream>;

/// The server messages the generator looks at. `data` stays raw so that a `message`
/// is parsed once, by [`Stamp`].
#[derive(Deserialize)]
pub struct ServerMsg<'a> {
    pub op: &'a str,
    #[serde(default)]
    pub id: Option<u64>,
    #[serde(default, borrow)]
    pub room: Option<&'a str>,
    #[serde(default, borrow)]
    pub data: Option<&'a serde_json::value::RawValue>,
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
}

/// What the publisher embeds in `data`: the scheduled send time (ns since the run's
/// base instant) and the per-room sequence number. Other fields (padding) are ignored.
#[derive(Deserialize)]
pub struct Stamp {
    pub t: u64,
    pub s: u64,
}

/// Connects to `ws://addr/ws?user=NAME` and completes the upgrade. The response head is
/// consumed exactly (peeked first), so a frame the edge sends right after the 101
/// (`welcome`) stays in the socket for fastwebsockets.
pub async fn connect(addr: SocketAddr, src: Option<IpAddr>, user: &str) -> Result<Ws> {
    connect_to(addr, src, &format!("/ws?user={user}")).await
}

/// Connects to `ws://addr{target}` (`target`: path and query) and completes the upgrade,
/// as [`connect`] does.
pub async fn connect_to(addr: SocketAddr, src: Option<IpAddr>, target: &str) -> Result<Ws> {
    let sock = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if let Some(ip) = src {
        sock.bind(SocketAddr::new(ip, 0))
            .with_context(|| format!("bind {ip}"))?;
    }
    let mut stream = sock
        .connect(addr)
        .await
        .with_context(|| format!("connect {addr}"))?;
    stream.set_nodelay(true)?;
    let req = format!(
        "GET {target} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(req.as_bytes()).await?;
    let mut buf = [0u8; 2048];
    loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 {
            bail!("{addr}: connection closed during the upgrade");
        }
        if let Some(end) = buf[..n].windows(4).position(|w| w == b"\r\n\r\n") {
            let head = &buf[..end];
            if !head.starts_with(b"HTTP/1.1 101") {
                let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
                bail!("{addr}: upgrade refused: {}", String::from_utf8_lossy(line));
            }
            let mut sink = vec![0u8; end + 4];
            stream.read_exact(&mut sink).await?;
            break;
        }
        if n == buf.len() {
            bail!("{addr}: upgrade response head too large");
        }
        // Part of the head is there; the rest is on its way.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(WebSocket::after_handshake(stream, Role::Client))
}

/// Reads frames until a text frame arrives; returns its bytes. Pings are answered by
/// fastwebsockets; a close frame is an error.
pub async fn next_text(ws: &mut Ws) -> Result<Vec<u8>> {
    loop {
        let frame = ws.read_frame().await?;
        match frame.opcode {
            OpCode::Text | OpCode::Binary => return Ok(frame.payload.to_vec()),
            OpCode::Close => bail!("closed by the edge: {}", close_reason(&frame.payload)),
            _ => {}
        }
    }
}

/// Close code and reason of a close frame's payload, for messages.
pub fn close_reason(payload: &[u8]) -> String {
    if payload.len() >= 2 {
        let code = u16::from_be_bytes([payload[0], payload[1]]);
        format!("{code} {}", String::from_utf8_lossy(&payload[2..]))
    } else {
        "no code".to_string()
    }
}

/// Waits for `welcome`.
pub async fn welcome(ws: &mut Ws) -> Result<()> {
    let text = next_text(ws).await?;
    let msg: ServerMsg = serde_json::from_slice(&text)?;
    if msg.op != "welcome" {
        bail!("expected welcome, got {}", String::from_utf8_lossy(&text));
    }
    Ok(())
}

/// Sends one text frame.
pub async fn send_text(ws: &mut Ws, text: Vec<u8>) -> Result<()> {
    ws.write_frame(Frame::text(Payload::Owned(text))).await?;
    Ok(())
}

/// Joins `room` and waits for its ack (frames before it, e.g. `joined`, are skipped).
pub async fn join(ws: &mut Ws, room: &str, id: u64) -> Result<()> {
    let req = format!(r#"{{"op":"join","room":"{room}","id":{id}}}"#);
    send_text(ws, req.into_bytes()).await?;
    loop {
        let text = next_text(ws).await?;
        let msg: ServerMsg = serde_json::from_slice(&text)?;
        match msg.op {
            "ack" if msg.id == Some(id) => return Ok(()),
            "error" if msg.id == Some(id) => bail!(
                "join {room} refused: {} {}",
                msg.code.unwrap_or_default(),
                msg.message.unwrap_or_default()
            ),
            _ => {}
        }
    }
}
