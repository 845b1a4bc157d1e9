//! Encoding server→client WebSocket frames.
//!
//! Server frames are never masked, so a frame is just a 2–10 byte header and the
//! payload. The edge encodes each outgoing frame once into a shared `Bytes` and hands
//! the same bytes to every recipient; a connection's writer then sends everything it
//! has queued in one write.

use bytes::{BufMut, Bytes, BytesMut};

/// Continuation frame opcode (received only: the edge sends whole messages).
pub const OP_CONTINUATION: u8 = 0x0;
/// Text frame opcode.
pub const OP_TEXT: u8 = 0x1;
/// Binary frame opcode (sent only by `--echo`).
pub const OP_BINARY: u8 = 0x2;
/// Close frame opcode.
pub const OP_CLOSE: u8 = 0x8;
/// Ping frame opcode.
pub const OP_PING: u8 = 0x9;
/// Pong frame opcode.
pub const OP_PONG: u8 = 0xA;

/// Close codes the edge sends.
pub mod close {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// Protocol error (e.g. an unmasked client frame).
    pub const PROTOCOL: u16 = 1002;
    /// Text that is not UTF-8.
    pub const INVALID_DATA: u16 = 1007;
    /// Policy violation: ban, kick, token expiry, slow consumer, too many connections.
    pub const POLICY: u16 = 1008;
    /// Message too big (counted across fragments).
    pub const TOO_BIG: u16 = 1009;
    /// Never sent: stands for "no close frame" (the socket just ended) in logs.
    pub const ABNORMAL: u16 = 1006;
    /// Internal error (e.g. Redis unreachable while connecting).
    pub const INTERNAL: u16 = 1011;
    /// Server draining: reconnect elsewhere.
    pub const RESTART: u16 = 1012;
}

/// Writes the header of an unmasked, final frame.
fn put_header(buf: &mut BytesMut, opcode: u8, len: usize) {
    buf.put_u8(0x80 | opcode);
    if len < 126 {
        buf.put_u8(len as u8);
    } else if len <= usize::from(u16::MAX) {
        buf.put_u8(126);
        buf.put_u16(len as u16);
    } else {
        buf.put_u8(127);
        buf.put_u64(len as u64);
    }
}

/// A complete frame with `payload`.
pub fn encode(opcode: u8, payload: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(payload.len() + 10);
    put_header(&mut buf, opcode, payload.len());
    buf.put_slice(payload);
    buf.freeze()
}

/// A text frame whose payload is built in place by `write` (no second copy).
pub fn text_with(estimate: usize, write: impl FnOnce(&mut Vec<u8>)) -> Bytes {
    let mut payload = Vec::with_capacity(estimate);
    write(&mut payload);
    encode(OP_TEXT, &payload)
}

/// A close frame; the reason is cut to the 123 bytes a close frame may carry, on a
/// character boundary.
pub fn close_frame(code: u16, reason: &str) -> Bytes {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = Vec::with_capacity(2 + end);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(reason.as_bytes().get(..end).unwrap_or_default());
    encode(OP_CLOSE, &payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_use_the_shortest_length_form() {
        assert_eq!(encode(OP_TEXT, b"hi").as_ref(), b"\x81\x02hi");
        assert_eq!(encode(OP_TEXT, &[0; 125]).len(), 127);
        let mid = encode(OP_TEXT, &[0; 126]);
        assert_eq!(&mid[..4], &[0x81, 126, 0, 126]);
        let big = encode(OP_TEXT, &[0; 70_000]);
        assert_eq!(big[1], 127);
        assert_eq!(big.len(), 70_010);
    }

    #[test]
    fn close_frames_carry_code_and_a_bounded_reason() {
        assert_eq!(
            close_frame(1008, "slow consumer").as_ref(),
            b"\x88\x0f\x03\xf0slow consumer"
        );
        let long = "é".repeat(100);
        let frame = close_frame(1000, &long);
        assert!(frame.len() <= 2 + 125);
        assert!(std::str::from_utf8(&frame[4..]).is_ok());
    }
}
