//! A small blocking WebSocket client (and plain HTTP GET) for end-to-end tests of the edge.
//!
//! It is written directly on [`std::net::TcpStream`] — blocking I/O with read timeouts,
//! no async runtime — and implements the client side of RFC 6455 by hand, so tests can
//! also send deliberately malformed traffic: unmasked frames, bad fragment sequences,
//! oversized frames, or arbitrary bytes.
//!
//! # Layout
//!
//! - [`connect`] / [`connect_from`]: TCP connect plus the HTTP/1.1 upgrade; the result
//!   is a [`Connect`]: an open [`WsClient`] or the refusal (status and body).
//! - [`WsClient`]: sends frames (well-formed or not) and receives [`Message`]s with a
//!   deadline; [`WsClient::recv_json`] and friends for the JSON protocol.
//! - [`http_get`]: a plain GET (`/metrics`, `/healthz`, `/readyz`); [`await_ok`] polls one
//!   until it answers 200.
//! - [`encode_frame`], [`parse_frame`], [`apply_mask`], [`accept_key`]: the pure pieces
//!   (also usable by tests that play the server side).
//!
//! # Errors
//!
//! Receiving maps "nothing arrived in time" to [`io::ErrorKind::TimedOut`] and "the
//! peer closed (or reset) the TCP connection" to [`io::ErrorKind::UnexpectedEof`];
//! protocol violations by the server (masked frames, bad UTF-8, bad fragments, …) are
//! [`io::ErrorKind::InvalidData`].

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use sha1::{Digest, Sha1};

use crate::wait;

/// Opcode of a continuation frame.
pub const OP_CONTINUATION: u8 = 0x0;
/// Opcode of a text frame.
pub const OP_TEXT: u8 = 0x1;
/// Opcode of a binary frame.
pub const OP_BINARY: u8 = 0x2;
/// Opcode of a close frame.
pub const OP_CLOSE: u8 = 0x8;
/// Opcode of a ping frame.
pub const OP_PING: u8 = 0x9;
/// Opcode of a pong frame.
pub const OP_PONG: u8 = 0xA;

/// The GUID RFC 6455 appends to the key to compute `Sec-WebSocket-Accept`.
const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// How long the TCP connect and the upgrade response (or an HTTP response head) may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a blocked write may take before it fails (so a test never hangs on a
/// server that stopped reading).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long reading a refusal's or an HTTP response's body may take.
const BODY_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest HTTP response head accepted.
const MAX_HEAD: usize = 16 * 1024;

/// Largest refusal body kept (the rest is not read).
const MAX_REFUSAL_BODY: usize = 64 * 1024;

/// Largest [`http_get`] body kept (the rest is not read).
const MAX_GET_BODY: usize = 8 << 20;

/// Largest frame or reassembled message accepted from the server (a guard against a
/// garbage length field).
pub const MAX_PAYLOAD: u64 = 64 << 20;

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`: base64 of SHA-1 of key + GUID.
pub fn accept_key(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(WS_GUID.as_bytes());
    BASE64.encode(sha.finalize())
}

/// XORs `payload` with the 4-byte `mask` in place (masking and unmasking are the same).
pub fn apply_mask(payload: &mut [u8], mask: [u8; 4]) {
    for (i, b) in payload.iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
}

/// One frame on the wire: `fin` flag, `opcode` and payload, masked with `mask` if given.
///
/// No validation: any opcode (the low 4 bits are used) and any payload length, so
/// tests can build invalid frames (oversized control frames, reserved opcodes, …).
pub fn encode_frame(fin: bool, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(if fin { 0x80 } else { 0 } | (opcode & 0x0f));
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let len = payload.len();
    if len < 126 {
        out.push(mask_bit | len as u8);
    } else if len <= 0xffff {
        out.push(mask_bit | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(mask_bit | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    match mask {
        Some(mask) => {
            out.extend_from_slice(&mask);
            let start = out.len();
            out.extend_from_slice(payload);
            apply_mask(&mut out[start..], mask);
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// FIN bit: the last frame of a message.
    pub fin: bool,
    /// Opcode (one of the `OP_*` constants).
    pub opcode: u8,
    /// Whether the frame was masked on the wire (server frames must not be).
    pub masked: bool,
    /// Payload, already unmasked.
    pub payload: Vec<u8>,
}

/// Decodes the frame at the start of `buf`: `Ok(None)` if `buf` does not hold a whole
/// frame yet, otherwise the frame and how many bytes it used.
///
/// Rejects (`InvalidData`) reserved bits (no extension is negotiated), reserved
/// opcodes, fragmented or over-125-byte control frames, a 64-bit length with its top
/// bit set, and payloads over [`MAX_PAYLOAD`]. Masked frames are decoded; whether they
/// are allowed is the caller's decision.
pub fn parse_frame(buf: &[u8]) -> io::Result<Option<(Frame, usize)>> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    let fin = b0 & 0x80 != 0;
    let opcode = b0 & 0x0f;
    if b0 & 0x70 != 0 {
        return Err(invalid(format!("frame with reserved bits set: {b0:#04x}")));
    }
    if !matches!(
        opcode,
        OP_CONTINUATION | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG
    ) {
        return Err(invalid(format!("frame with reserved opcode {opcode:#x}")));
    }
    let masked = b1 & 0x80 != 0;
    let (len, mut pos) = match b1 & 0x7f {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (u16::from_be_bytes([buf[2], buf[3]]) as u64, 4)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            let mut be = [0u8; 8];
            be.copy_from_slice(&buf[2..10]);
            let len = u64::from_be_bytes(be);
            if len >> 63 != 0 {
                return Err(invalid("64-bit frame length with the top bit set"));
            }
            (len, 10)
        }
        n => (n as u64, 2),
    };
    if opcode >= 0x8 && (!fin || len > 125) {
        return Err(invalid(format!(
            "control frame (opcode {opcode:#x}) fragmented or over 125 bytes ({len})"
        )));
    }
    if len > MAX_PAYLOAD {
        return Err(invalid(format!(
            "frame payload of {len} bytes is too large"
        )));
    }
    let mask = if masked {
        if buf.len() < pos + 4 {
            return Ok(None);
        }
        let mask = [buf[pos], buf[pos + 1], buf[pos + 2], buf[pos + 3]];
        pos += 4;
        Some(mask)
    } else {
        None
    };
    let end = pos + len as usize;
    if buf.len() < end {
        return Ok(None);
    }
    let mut payload = buf[pos..end].to_vec();
    if let Some(mask) = mask {
        apply_mask(&mut payload, mask);
    }
    let frame = Frame {
        fin,
        opcode,
        masked,
        payload,
    };
    Ok(Some((frame, end)))
}

/// Splits a close frame's payload into its status code and reason.
fn parse_close(payload: &[u8]) -> io::Result<(Option<u16>, String)> {
    match payload {
        [] => Ok((None, String::new())),
        [_] => Err(invalid("close frame with a 1-byte payload")),
        [hi, lo, reason @ ..] => {
            let reason = String::from_utf8(reason.to_vec())
                .map_err(|_| invalid("close frame reason is not UTF-8"))?;
            Ok((Some(u16::from_be_bytes([*hi, *lo])), reason))
        }
    }
}

/// An `InvalidData` error.
fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// One message received from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A text message (fragments reassembled), valid UTF-8.
    Text(String),
    /// A binary message (fragments reassembled).
    Binary(Vec<u8>),
    /// A ping frame with its payload (not answered automatically by [`WsClient::recv`]).
    Ping(Vec<u8>),
    /// A pong frame with its payload.
    Pong(Vec<u8>),
    /// A close frame: status code (absent for an empty payload) and reason.
    Close(Option<u16>, String),
}

/// The outcome of the upgrade request.
#[derive(Debug)]
pub enum Connect {
    /// `101 Switching Protocols` with a valid `Sec-WebSocket-Accept`.
    Open(WsClient),
    /// Any other status, with the response body (at most 64 KiB, lossily decoded).
    Refused {
        /// HTTP status code.
        status: u16,
        /// Response body.
        body: String,
    },
}

impl Connect {
    /// The open client; panics with the status and body if the upgrade was refused.
    pub fn unwrap_open(self) -> WsClient {
        match self {
            Connect::Open(client) => client,
            Connect::Refused { status, body } => {
                panic!("WebSocket upgrade refused: HTTP {status}: {body}")
            }
        }
    }

    /// The refusal's status and body; panics if the upgrade succeeded.
    pub fn unwrap_refused(self) -> (u16, String) {
        match self {
            Connect::Refused { status, body } => (status, body),
            Connect::Open(_) => panic!("WebSocket upgrade unexpectedly succeeded"),
        }
    }
}

/// Opens a WebSocket to `addr`: `GET path_and_query` with the upgrade headers (`Host`,
/// `Upgrade`, `Connection`, a random `Sec-WebSocket-Key`, `Sec-WebSocket-Version: 13`)
/// plus `headers` (e.g. `("Origin", "https://a.example")`).
///
/// A header in `headers` with the name of a default one (case-insensitive) replaces
/// it, so tests can send a wrong version or their own key (the accept check then uses
/// that key). On 101 the response must carry `Upgrade: websocket`, `Connection:
/// Upgrade` and the right `Sec-WebSocket-Accept` (else `InvalidData`); any other status
/// is [`Connect::Refused`].
pub fn connect(
    addr: SocketAddr,
    path_and_query: &str,
    headers: &[(&str, &str)],
) -> io::Result<Connect> {
    let stream = TcpStream::connect_timeout(&addr, HANDSHAKE_TIMEOUT)?;
    handshake(stream, addr, path_and_query, headers)
}

/// Like [`connect`], from the source address `source_ip` (any port), e.g.
/// `127.0.0.7`, so tests can look like distinct client IPs on loopback. `addr` must be
/// IPv4.
pub fn connect_from(
    source_ip: Ipv4Addr,
    addr: SocketAddr,
    path_and_query: &str,
    headers: &[(&str, &str)],
) -> io::Result<Connect> {
    if !addr.is_ipv4() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("connect_from needs an IPv4 destination, got {addr}"),
        ));
    }
    let socket = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.bind(&SocketAddr::V4(SocketAddrV4::new(source_ip, 0)).into())?;
    socket.connect_timeout(&addr.into(), HANDSHAKE_TIMEOUT)?;
    handshake(socket.into(), addr, path_and_query, headers)
}

/// Sends the upgrade request on `stream` and reads the response.
fn handshake(
    mut stream: TcpStream,
    addr: SocketAddr,
    path_and_query: &str,
    headers: &[(&str, &str)],
) -> io::Result<Connect> {
    stream.set_nodelay(true)?;
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let overridden = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    let key = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("Sec-WebSocket-Key"))
        .map(|(_, v)| v.to_string())
        .unwrap_or_else(|| BASE64.encode(rand::random::<[u8; 16]>()));
    let host = addr.to_string();
    let defaults = [
        ("Host", host.as_str()),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", key.as_str()),
        ("Sec-WebSocket-Version", "13"),
    ];
    let mut request = format!("GET {path_and_query} HTTP/1.1\r\n");
    for (name, value) in defaults.iter().filter(|(n, _)| !overridden(n)) {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes())?;

    let mut buf = Vec::new();
    let head = read_head(&mut stream, &mut buf, Instant::now() + HANDSHAKE_TIMEOUT)?;
    if head.status != 101 {
        let deadline = Instant::now() + BODY_TIMEOUT;
        let body = read_body(&mut stream, buf, &head, MAX_REFUSAL_BODY, deadline)?;
        return Ok(Connect::Refused {
            status: head.status,
            body,
        });
    }
    let upgrade = head.header("upgrade").unwrap_or_default();
    let connection = head.header("connection").unwrap_or_default();
    if !upgrade.eq_ignore_ascii_case("websocket")
        || !connection
            .split(',')
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
    {
        return Err(invalid(format!(
            "101 without Upgrade: websocket / Connection: Upgrade: {:?}",
            head.headers
        )));
    }
    let expected = accept_key(&key);
    match head.header("sec-websocket-accept") {
        Some(accept) if accept == expected => {}
        other => {
            return Err(invalid(format!(
                "Sec-WebSocket-Accept is {other:?}, expected {expected:?}"
            )))
        }
    }
    Ok(Connect::Open(WsClient {
        stream,
        buf,
        partial: None,
        headers: head.headers,
    }))
}

/// Polls `GET path` until it answers 200; false if it has not within `timeout`.
pub fn await_ok(addr: SocketAddr, path: &str, timeout: Duration) -> bool {
    wait::until(timeout, Duration::from_millis(20), || {
        matches!(http_get(addr, path), Ok((200, _)))
    })
}

/// A plain `GET path` (HTTP/1.1, `Connection: close`): the status and the body (lossily
/// decoded, at most 8 MiB). Handles `Content-Length`, chunked, and read-to-EOF bodies.
pub fn http_get(addr: SocketAddr, path: &str) -> io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, HANDSHAKE_TIMEOUT)?;
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: */*\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes())?;
    let mut buf = Vec::new();
    let head = read_head(&mut stream, &mut buf, Instant::now() + HANDSHAKE_TIMEOUT)?;
    let deadline = Instant::now() + BODY_TIMEOUT;
    let body = read_body(&mut stream, buf, &head, MAX_GET_BODY, deadline)?;
    Ok((head.status, body))
}

/// Reads once from `stream` into `buf`, waiting at most until `deadline`.
///
/// `TimedOut` when nothing arrives in time; `UnexpectedEof` when the peer closed or
/// reset the connection.
fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>, deadline: Instant) -> io::Result<()> {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "timed out waiting for data from the server",
            ));
        }
        let left = (deadline - now).max(Duration::from_millis(1));
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut chunk) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection",
                ))
            }
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                return Ok(());
            }
            Err(e) => match e.kind() {
                // Timeouts show up as either kind; loop to re-check the deadline.
                io::ErrorKind::WouldBlock
                | io::ErrorKind::TimedOut
                | io::ErrorKind::Interrupted => {}
                io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("the server reset the connection: {e}"),
                    ))
                }
                _ => return Err(e),
            },
        }
    }
}

/// A parsed HTTP response head.
struct Head {
    /// Status code.
    status: u16,
    /// Header fields in order, names lower-cased, values trimmed.
    headers: Vec<(String, String)>,
}

impl Head {
    /// The first value of header `name` (lower-case).
    fn header(&self, name: &str) -> Option<&str> {
        header_of(&self.headers, name)
    }
}

/// The first value of header `name` (case-insensitive) in `headers`.
fn header_of<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Reads a response head from `stream`, leaving whatever follows it in `buf`.
fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>, deadline: Instant) -> io::Result<Head> {
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_HEAD {
            return Err(invalid("HTTP response head over 16 KiB"));
        }
        fill(stream, buf, deadline)?;
    };
    let text = String::from_utf8_lossy(&buf[..end]).into_owned();
    buf.drain(..end);
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let status = match (parts.next(), parts.next().map(str::parse::<u16>)) {
        (Some(v), Some(Ok(status))) if v.starts_with("HTTP/1.") => status,
        _ => return Err(invalid(format!("bad HTTP status line {status_line:?}"))),
    };
    let headers = lines
        .filter(|l| !l.is_empty())
        .map(|l| match l.split_once(':') {
            Some((n, v)) => Ok((n.trim().to_ascii_lowercase(), v.trim().to_string())),
            None => Err(invalid(format!("bad HTTP header line {l:?}"))),
        })
        .collect::<io::Result<_>>()?;
    Ok(Head { status, headers })
}

/// Reads the body that follows `head` (`buf` holds what was already read), keeping at
/// most `limit` bytes. Without a length it reads until EOF, or until `deadline`.
fn read_body(
    stream: &mut TcpStream,
    mut buf: Vec<u8>,
    head: &Head,
    limit: usize,
    deadline: Instant,
) -> io::Result<String> {
    if matches!(head.status, 100..=199 | 204 | 304) {
        return Ok(String::new());
    }
    let chunked = head
        .header("transfer-encoding")
        .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
    let body = if chunked {
        loop {
            let (body, complete) = decode_chunked(&buf);
            if complete || body.len() >= limit {
                break body;
            }
            match fill(stream, &mut buf, deadline) {
                Ok(()) => {}
                Err(e) if is_end(&e) => break body,
                Err(e) => return Err(e),
            }
        }
    } else if let Some(len) = head.header("content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| invalid(format!("bad Content-Length {len:?}")))?;
        let want = len.min(limit);
        while buf.len() < want {
            fill(stream, &mut buf, deadline)?;
        }
        buf.truncate(want);
        buf
    } else {
        while buf.len() < limit {
            match fill(stream, &mut buf, deadline) {
                Ok(()) => {}
                Err(e) if is_end(&e) => break,
                Err(e) => return Err(e),
            }
        }
        buf
    };
    let body = &body[..body.len().min(limit)];
    Ok(String::from_utf8_lossy(body).into_owned())
}

/// Whether `e` is the end of a read-until-close body (EOF or the deadline).
fn is_end(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof | io::ErrorKind::TimedOut
    )
}

/// Decodes a chunked body: what is decodable so far and whether the last chunk came.
fn decode_chunked(mut buf: &[u8]) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    loop {
        let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") else {
            return (out, false);
        };
        let line = String::from_utf8_lossy(&buf[..eol]);
        let size = line.split(';').next().unwrap_or_default().trim();
        let Ok(size) = usize::from_str_radix(size, 16) else {
            return (out, false);
        };
        if size == 0 {
            return (out, true);
        }
        let data = &buf[eol + 2..];
        if data.len() < size + 2 {
            return (out, false);
        }
        out.extend_from_slice(&data[..size]);
        buf = &data[size + 2..];
    }
}

/// A blocking WebSocket client connection (see [`connect`]).
#[derive(Debug)]
pub struct WsClient {
    /// The TCP connection to the server.
    stream: TcpStream,
    /// Bytes read from the socket but not yet decoded (may end in a partial frame).
    buf: Vec<u8>,
    /// A fragmented data message being reassembled: its opcode and the payload so far.
    partial: Option<(u8, Vec<u8>)>,
    /// The 101 response's header fields (names lower-cased).
    headers: Vec<(String, String)>,
}

impl WsClient {
    /// Sends one frame as given: `fin`, `opcode` (any value, even reserved ones), and
    /// masked with a random key if `masked` (clients must mask; pass `false` to test
    /// that the server rejects unmasked frames).
    pub fn send_frame(
        &mut self,
        fin: bool,
        opcode: u8,
        payload: &[u8],
        masked: bool,
    ) -> io::Result<()> {
        let mask = masked.then(rand::random::<[u8; 4]>);
        self.stream
            .write_all(&encode_frame(fin, opcode, payload, mask))
    }

    /// Writes arbitrary bytes to the socket.
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Sends a text message as one masked frame.
    pub fn send_text(&mut self, s: &str) -> io::Result<()> {
        self.send_frame(true, OP_TEXT, s.as_bytes(), true)
    }

    /// Sends `v` serialized as a text message (one masked frame).
    pub fn send_json(&mut self, v: &serde_json::Value) -> io::Result<()> {
        self.send_text(&v.to_string())
    }

    /// Sends a binary message as one masked frame.
    pub fn send_binary(&mut self, data: &[u8]) -> io::Result<()> {
        self.send_frame(true, OP_BINARY, data, true)
    }

    /// Sends a masked ping frame.
    pub fn send_ping(&mut self, payload: &[u8]) -> io::Result<()> {
        self.send_frame(true, OP_PING, payload, true)
    }

    /// Sends a masked pong frame (e.g. to answer a [`Message::Ping`] by hand).
    pub fn send_pong(&mut self, payload: &[u8]) -> io::Result<()> {
        self.send_frame(true, OP_PONG, payload, true)
    }

    /// Sends a masked close frame with `code` and `reason`.
    pub fn send_close(&mut self, code: u16, reason: &str) -> io::Result<()> {
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(reason.as_bytes());
        self.send_frame(true, OP_CLOSE, &payload, true)
    }

    /// Receives one message within `timeout`: a control frame, or a whole data message
    /// (fragments reassembled; control frames between fragments are returned as they
    /// come and reassembly resumes on the next call). Pings are not answered.
    ///
    /// Errors: `TimedOut` if nothing complete arrives in time (bytes received so far
    /// stay buffered); `UnexpectedEof` if the server closed or reset TCP;
    /// `InvalidData` for a masked server frame, non-UTF-8 text, a bad fragment
    /// sequence, or a malformed frame.
    pub fn recv(&mut self, timeout: Duration) -> io::Result<Message> {
        self.recv_until(Instant::now() + timeout)
    }

    /// [`WsClient::recv`] with an absolute deadline.
    fn recv_until(&mut self, deadline: Instant) -> io::Result<Message> {
        loop {
            let frame = self.read_frame(deadline)?;
            match frame.opcode {
                OP_PING => return Ok(Message::Ping(frame.payload)),
                OP_PONG => return Ok(Message::Pong(frame.payload)),
                OP_CLOSE => {
                    let (code, reason) = parse_close(&frame.payload)?;
                    return Ok(Message::Close(code, reason));
                }
                OP_TEXT | OP_BINARY => {
                    if self.partial.is_some() {
                        return Err(invalid(
                            "new data frame while a fragmented message is unfinished",
                        ));
                    }
                    if frame.fin {
                        return data_message(frame.opcode, frame.payload);
                    }
                    self.partial = Some((frame.opcode, frame.payload));
                }
                _ => {
                    let Some((opcode, mut data)) = self.partial.take() else {
                        return Err(invalid("continuation frame without a message to continue"));
                    };
                    data.extend_from_slice(&frame.payload);
                    if data.len() as u64 > MAX_PAYLOAD {
                        return Err(invalid("fragmented message is too large"));
                    }
                    if frame.fin {
                        return data_message(opcode, data);
                    }
                    self.partial = Some((opcode, data));
                }
            }
        }
    }

    /// Reads one unmasked frame before `deadline`.
    fn read_frame(&mut self, deadline: Instant) -> io::Result<Frame> {
        loop {
            if let Some((frame, used)) = parse_frame(&self.buf)? {
                self.buf.drain(..used);
                if frame.masked {
                    return Err(invalid("the server sent a masked frame"));
                }
                return Ok(frame);
            }
            fill(&mut self.stream, &mut self.buf, deadline)?;
        }
    }

    /// Receives the next text message as JSON within `timeout`, answering pings with
    /// pongs and skipping pongs on the way.
    ///
    /// `InvalidData` if the text is not JSON, a binary message arrives, or a close frame
    /// arrives (its code and reason are in the error message); otherwise as
    /// [`WsClient::recv`].
    pub fn recv_json(&mut self, timeout: Duration) -> io::Result<serde_json::Value> {
        self.recv_json_until(Instant::now() + timeout)
    }

    /// [`WsClient::recv_json`] with an absolute deadline.
    fn recv_json_until(&mut self, deadline: Instant) -> io::Result<serde_json::Value> {
        loop {
            match self.recv_until(deadline)? {
                Message::Ping(payload) => self.send_pong(&payload)?,
                Message::Pong(_) => {}
                Message::Text(text) => {
                    return serde_json::from_str(&text)
                        .map_err(|e| invalid(format!("text message is not JSON ({e}): {text}")))
                }
                Message::Binary(data) => {
                    return Err(invalid(format!(
                        "expected a JSON text message, got a {}-byte binary message",
                        data.len()
                    )))
                }
                Message::Close(code, reason) => {
                    return Err(invalid(format!(
                        "expected a JSON text message, got a close frame: code {code:?}, \
                         reason {reason:?}"
                    )))
                }
            }
        }
    }

    /// Reads JSON messages (as [`WsClient::recv_json`]) until one satisfies `pred`,
    /// discarding the others; `TimedOut` (listing the last few discarded messages) if
    /// none does within `timeout` overall.
    pub fn recv_json_where(
        &mut self,
        timeout: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> io::Result<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        let mut skipped = 0usize;
        let mut recent: Vec<String> = Vec::new();
        loop {
            match self.recv_json_until(deadline) {
                Ok(v) if pred(&v) => return Ok(v),
                Ok(v) => {
                    skipped += 1;
                    if recent.len() == 5 {
                        recent.remove(0);
                    }
                    recent.push(v.to_string());
                }
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "no matching JSON message within {timeout:?} ({skipped} others; \
                             last: {recent:?})"
                        ),
                    ))
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads until a close frame (skipping, and not answering, everything else) and
    /// returns its code and reason. `UnexpectedEof` if TCP closes without a close
    /// frame, `TimedOut` if nothing closes within `timeout`.
    pub fn expect_close(&mut self, timeout: Duration) -> io::Result<(Option<u16>, String)> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.recv_until(deadline) {
                Ok(Message::Close(code, reason)) => return Ok((code, reason)),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("TCP closed without a close frame ({e})"),
                    ))
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Sets the socket's read timeout (for direct reads; `recv*` set their own per
    /// call from their deadline).
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.stream.set_read_timeout(timeout)
    }

    /// The local (client) address of the connection.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.stream.local_addr()
    }

    /// A header of the 101 response (case-insensitive name), e.g. to check that no
    /// `sec-websocket-extensions` was negotiated.
    pub fn response_header(&self, name: &str) -> Option<&str> {
        header_of(&self.headers, name)
    }
}

/// A complete data message from its opcode and payload.
fn data_message(opcode: u8, payload: Vec<u8>) -> io::Result<Message> {
    if opcode == OP_TEXT {
        String::from_utf8(payload)
            .map(Message::Text)
            .map_err(|_| invalid("text message is not valid UTF-8"))
    } else {
        Ok(Message::Binary(payload))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::thread;

    #[test]
    fn frame_header_sizes() {
        let mask = [1, 2, 3, 4];
        for (len, header) in [(0, 2), (125, 2), (126, 4), (65535, 4), (65536, 10)] {
            let payload = vec![0xab; len];
            let masked = encode_frame(true, OP_BINARY, &payload, Some(mask));
            assert_eq!(masked.len(), header + 4 + len, "masked, payload {len}");
            assert_eq!(masked[0], 0x82);
            assert_eq!(masked[1] & 0x80, 0x80);
            let plain = encode_frame(true, OP_BINARY, &payload, None);
            assert_eq!(plain.len(), header + len, "unmasked, payload {len}");
            assert_eq!(plain[1] & 0x80, 0);
            let (frame, used) = parse_frame(&masked).unwrap().unwrap();
            assert_eq!(used, masked.len());
            assert!(frame.masked && frame.fin);
            assert_eq!(frame.payload, payload);
            // Every strict prefix is incomplete, not an error.
            for cut in [0, 1, header - 1, header + 3, masked.len() - 1] {
                assert!(parse_frame(&masked[..cut.min(masked.len() - 1)])
                    .unwrap()
                    .is_none());
            }
        }
        assert_eq!(
            encode_frame(true, OP_TEXT, &[0; 126], None)[1..4],
            [126, 0, 126]
        );
        assert_eq!(
            encode_frame(false, OP_TEXT, &[0; 65536], None)[..10],
            [0x01, 127, 0, 0, 0, 0, 0, 1, 0, 0]
        );
    }

    #[test]
    fn masking_round_trip() {
        let data = b"Hello, roomcast! \xf0\x9f\x91\x8b".to_vec();
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut masked = data.clone();
        apply_mask(&mut masked, mask);
        assert_ne!(masked, data);
        apply_mask(&mut masked, mask);
        assert_eq!(masked, data);
        // RFC 6455 5.7: a masked "Hello".
        let frame = encode_frame(true, OP_TEXT, b"Hello", Some(mask));
        assert_eq!(
            frame,
            [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]
        );
    }

    #[test]
    fn accept_key_rfc_example() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn parse_rejects_bad_frames() {
        assert!(parse_frame(&[0xc1, 0x00]).is_err(), "RSV1 set");
        assert!(parse_frame(&[0x83, 0x00]).is_err(), "reserved opcode");
        assert!(parse_frame(&[0x09, 0x00]).is_err(), "fragmented ping");
        assert!(parse_frame(&[0x89, 126, 0, 126]).is_err(), "126-byte ping");
        assert_eq!(
            parse_close(&[0x03, 0xe8, b'o', b'k']).unwrap(),
            (Some(1000), "ok".into())
        );
        assert_eq!(parse_close(&[]).unwrap(), (None, String::new()));
        assert!(parse_close(&[3]).is_err());
        assert_eq!(
            decode_chunked(b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n"),
            (b"abcde".to_vec(), true)
        );
        assert_eq!(
            decode_chunked(b"3\r\nabc\r\n2\r\nd"),
            (b"abc".to_vec(), false)
        );
    }

    /// Accepts one connection on a loopback listener and runs `serve` on it.
    fn server(
        serve: impl FnOnce(TcpStream) + Send + 'static,
    ) -> (SocketAddr, thread::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            serve(stream);
        });
        (addr, handle)
    }

    /// Reads the request head; returns it as text.
    fn read_request(stream: &mut TcpStream) -> String {
        let mut buf = Vec::new();
        while !buf.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8];
            stream.read_exact(&mut byte).unwrap();
            buf.push(byte[0]);
        }
        String::from_utf8(buf).unwrap()
    }

    /// Reads one client frame (which must be masked).
    fn read_client_frame(stream: &mut TcpStream) -> Frame {
        let mut buf = Vec::new();
        loop {
            if let Some((frame, _)) = parse_frame(&buf).unwrap() {
                assert!(frame.masked, "client frames are masked");
                return frame;
            }
            let mut chunk = [0u8; 1024];
            let n = stream.read(&mut chunk).unwrap();
            assert!(n > 0, "client closed early");
            buf.extend_from_slice(&chunk[..n]);
        }
    }

    #[test]
    fn loopback_round_trip() {
        let (addr, handle) = server(|mut stream| {
            let request = read_request(&mut stream);
            assert!(
                request.starts_with("GET /ws?user=ann HTTP/1.1\r\n"),
                "{request}"
            );
            assert!(
                request.contains("\r\nOrigin: http://o.example\r\n"),
                "{request}"
            );
            assert!(
                request.contains("\r\nSec-WebSocket-Version: 13\r\n"),
                "{request}"
            );
            let key = request
                .lines()
                .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
                .unwrap();
            assert_eq!(BASE64.decode(key).unwrap().len(), 16);
            // The head and a first frame in one write: the client keeps the extra bytes.
            let mut out = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                accept_key(key)
            )
            .into_bytes();
            out.extend(encode_frame(true, OP_TEXT, br#"{"op":"welcome"}"#, None));
            stream.write_all(&out).unwrap();
            // Echo one text frame back, fragmented, with a ping in between.
            let frame = read_client_frame(&mut stream);
            assert_eq!((frame.fin, frame.opcode), (true, OP_TEXT));
            let (a, b) = frame.payload.split_at(3);
            let mut out = encode_frame(false, OP_TEXT, a, None);
            out.extend(encode_frame(true, OP_PING, b"p", None));
            out.extend(encode_frame(true, OP_CONTINUATION, b, None));
            stream.write_all(&out).unwrap();
            // recv_json answers the ping.
            let pong = read_client_frame(&mut stream);
            assert_eq!((pong.opcode, pong.payload.as_slice()), (OP_PONG, &b"p"[..]));
            let mut close = 1000u16.to_be_bytes().to_vec();
            close.extend_from_slice(b"bye");
            stream
                .write_all(&encode_frame(true, OP_CLOSE, &close, None))
                .unwrap();
            let reply = read_client_frame(&mut stream);
            assert_eq!(reply.opcode, OP_CLOSE);
        });
        let t = Duration::from_secs(5);
        let mut ws = connect(addr, "/ws?user=ann", &[("Origin", "http://o.example")])
            .unwrap()
            .unwrap_open();
        assert_eq!(ws.response_header("upgrade"), Some("websocket"));
        assert_eq!(
            ws.recv_json(t).unwrap(),
            serde_json::json!({"op": "welcome"})
        );
        let err = ws.recv(Duration::from_millis(50)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        ws.send_json(&serde_json::json!({"op": "ping", "id": 7}))
            .unwrap();
        let echoed = ws.recv_json_where(t, |v| v["id"] == 7).unwrap();
        assert_eq!(echoed["op"], "ping");
        assert_eq!(ws.expect_close(t).unwrap(), (Some(1000), "bye".to_string()));
        ws.send_close(1000, "").unwrap();
        handle.join().unwrap();
        let err = ws.recv(t).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err}");
    }

    #[test]
    fn recv_keeps_pings_and_rejects_masked_frames() {
        let (addr, handle) = server(|mut stream| {
            let request = read_request(&mut stream);
            let key = request
                .lines()
                .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
                .unwrap();
            let mut out = format!(
                "HTTP/1.1 101 Switching Protocols\r\nupgrade: WebSocket\r\n\
                 connection: keep-alive, Upgrade\r\nsec-websocket-accept: {}\r\n\r\n",
                accept_key(key)
            )
            .into_bytes();
            out.extend(encode_frame(true, OP_PING, b"hb", None));
            out.extend(encode_frame(true, OP_BINARY, b"\x00\x01", None));
            out.extend(encode_frame(true, OP_TEXT, b"masked", Some([9, 9, 9, 9])));
            stream.write_all(&out).unwrap();
            let _ = read_client_frame(&mut stream);
        });
        let t = Duration::from_secs(5);
        let mut ws = connect(addr, "/ws", &[]).unwrap().unwrap_open();
        assert_eq!(ws.recv(t).unwrap(), Message::Ping(b"hb".to_vec()));
        assert_eq!(ws.recv(t).unwrap(), Message::Binary(vec![0, 1]));
        let err = ws.recv(t).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        ws.send_close(1002, "masked").unwrap();
        handle.join().unwrap();
    }

    #[test]
    fn refused_and_http_get() {
        let (addr, handle) = server(|mut stream| {
            let request = read_request(&mut stream);
            assert!(
                request.contains("Sec-WebSocket-Version: 8\r\n"),
                "{request}"
            );
            assert!(!request.contains("Sec-WebSocket-Version: 13"), "{request}");
            stream
                .write_all(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 12\r\n\r\nbad token!!!")
                .unwrap();
        });
        let refused = connect(addr, "/ws", &[("Sec-WebSocket-Version", "8")]).unwrap();
        assert_eq!(refused.unwrap_refused(), (401, "bad token!!!".to_string()));
        handle.join().unwrap();

        let (addr, handle) = server(|mut stream| {
            let request = read_request(&mut stream);
            assert!(
                request.starts_with("GET /metrics HTTP/1.1\r\n"),
                "{request}"
            );
            assert!(request.contains("Connection: close\r\n"), "{request}");
            stream
                .write_all(
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nup 1\r\n0\r\n\r\n",
                )
                .unwrap();
        });
        assert_eq!(
            http_get(addr, "/metrics").unwrap(),
            (200, "up 1".to_string())
        );
        handle.join().unwrap();

        let (addr, handle) = server(|mut stream| {
            read_request(&mut stream);
            stream
                .write_all(b"HTTP/1.0 503 Service Unavailable\r\n\r\ndraining")
                .unwrap();
        });
        assert_eq!(
            http_get(addr, "/readyz").unwrap(),
            (503, "draining".to_string())
        );
        handle.join().unwrap();
    }

    #[test]
    fn connect_from_source_address() {
        let (addr, handle) = server(|mut stream| {
            let peer = stream.peer_addr().unwrap();
            read_request(&mut stream);
            let body = peer.ip().to_string();
            let response = format!(
                "HTTP/1.1 403 Forbidden\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(response.as_bytes()).unwrap();
        });
        let source = Ipv4Addr::new(127, 0, 0, 7);
        let refused = connect_from(source, addr, "/ws", &[]).unwrap();
        assert_eq!(refused.unwrap_refused(), (403, "127.0.0.7".to_string()));
        handle.join().unwrap();
    }
}
