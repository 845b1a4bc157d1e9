//! Reading client WebSocket frames (RFC 6455 §5) with a buffer that grows only as needed.
//!
//! A general-purpose reader keeps a fixed read buffer per connection (fastwebsockets
//! allocates 8 KiB up front); chat frames are tens of bytes and most connections are idle,
//! so this one starts empty, reads in small chunks, and gives large buffers back after a
//! big frame. It enforces what the edge needs from the RFC: client frames masked, no
//! reserved bits or unknown opcodes, control frames final and ≤ 125 bytes, a per-frame
//! size cap, and UTF-8 for complete text frames. Fragment assembly, close codes and the
//! whole-message cap are the session's job.

use tokio::io::{AsyncRead, AsyncReadExt};

/// Continuation frame.
pub const OP_CONTINUATION: u8 = 0x0;
/// Text frame.
pub const OP_TEXT: u8 = 0x1;
/// Binary frame.
pub const OP_BINARY: u8 = 0x2;
/// Close frame.
pub const OP_CLOSE: u8 = 0x8;
/// Ping frame.
pub const OP_PING: u8 = 0x9;
/// Pong frame.
pub const OP_PONG: u8 = 0xA;

/// Bytes asked of the socket per read (at least).
const READ_CHUNK: usize = 512;
/// A buffer grown past this by a large frame is released once that frame is consumed.
const KEEP_CAPACITY: usize = 16 * 1024;

/// One frame, unmasked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Final fragment of its message.
    pub fin: bool,
    /// Opcode (`OP_*`).
    pub opcode: u8,
    /// Unmasked payload.
    pub payload: Vec<u8>,
}

/// Why no frame could be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadError {
    /// The peer closed the connection, or the socket failed.
    Closed,
    /// A protocol violation (close 1002), with the reason.
    Protocol(&'static str),
    /// A frame larger than allowed (close 1009).
    TooBig,
    /// A text frame that is not UTF-8 (close 1007).
    NotUtf8,
}

/// Reads frames from one connection.
pub struct FrameReader<R> {
    /// The socket's read half.
    io: R,
    /// Bytes read and not yet consumed start at `start`.
    buf: Vec<u8>,
    /// Offset of the first unconsumed byte in `buf`.
    start: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// A reader with an empty buffer.
    pub fn new(io: R) -> Self {
        Self {
            io,
            buf: Vec::new(),
            start: 0,
        }
    }

    fn available(&self) -> &[u8] {
        self.buf.get(self.start..).unwrap_or_default()
    }

    /// Reads until at least `need` unconsumed bytes are buffered.
    async fn fill(&mut self, need: usize) -> Result<(), ReadError> {
        while self.available().len() < need {
            if self.start > 0 {
                self.buf.drain(..self.start);
                self.start = 0;
            }
            let missing = need - self.buf.len();
            self.buf.reserve(missing.max(READ_CHUNK));
            match self.io.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return Err(ReadError::Closed),
                Ok(_) => {}
            }
        }
        Ok(())
    }

    /// Reads the next frame; frames with a payload over `max_payload` are refused.
    pub async fn next(&mut self, max_payload: usize) -> Result<Frame, ReadError> {
        self.fill(2).await?;
        let (b0, b1) = match self.available() {
            [b0, b1, ..] => (*b0, *b1),
            _ => return Err(ReadError::Closed),
        };
        let fin = b0 & 0x80 != 0;
        if b0 & 0x70 != 0 {
            return Err(ReadError::Protocol("reserved bits set"));
        }
        let opcode = b0 & 0x0f;
        if !matches!(
            opcode,
            OP_CONTINUATION | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG
        ) {
            return Err(ReadError::Protocol("unknown opcode"));
        }
        if b1 & 0x80 == 0 {
            return Err(ReadError::Protocol("client frames must be masked"));
        }
        let extra = match b1 & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let header = 2 + extra + 4;
        self.fill(header).await?;
        let head = self.available().get(..header).ok_or(ReadError::Closed)?;
        let len: u64 = match extra {
            2 => u64::from(u16::from_be_bytes([head[2], head[3]])),
            8 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&head[2..10]);
                u64::from_be_bytes(b)
            }
            _ => u64::from(b1 & 0x7f),
        };
        let mut mask = [0u8; 4];
        mask.copy_from_slice(&head[header - 4..header]);
        let control = opcode >= OP_CLOSE;
        if control && !fin {
            return Err(ReadError::Protocol("fragmented control frame"));
        }
        if control && len > 125 {
            return Err(ReadError::Protocol("control frame too long"));
        }
        if len > max_payload as u64 {
            return Err(ReadError::TooBig);
        }
        let len = len as usize;
        self.fill(header + len).await?;
        let body = self.start + header;
        let mut payload = self.buf.get(body..body + len).unwrap_or_default().to_vec();
        for (i, byte) in payload.iter_mut().enumerate() {
            *byte ^= mask[i % 4];
        }
        self.start = body + len;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
            if self.buf.capacity() > KEEP_CAPACITY {
                self.buf = Vec::new();
            }
        }
        if opcode == OP_TEXT && fin && std::str::from_utf8(&payload).is_err() {
            return Err(ReadError::NotUtf8);
        }
        Ok(Frame {
            fin,
            opcode,
            payload,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame.
    fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [1u8, 2, 3, 4];
        let mut out = vec![(u8::from(fin) << 7) | opcode];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 0xffff => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    async fn read_all(bytes: Vec<u8>, max: usize) -> Vec<Result<Frame, ReadError>> {
        let mut reader = FrameReader::new(&bytes[..]);
        let mut out = Vec::new();
        loop {
            let r = reader.next(max).await;
            let done = r.is_err();
            out.push(r);
            if done {
                return out;
            }
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn frames_of_every_length_form_are_unmasked() {
        let big = vec![7u8; 70_000];
        let mut bytes = frame(true, OP_TEXT, b"hi");
        bytes.extend(frame(false, OP_BINARY, &[1; 300]));
        bytes.extend(frame(true, OP_CONTINUATION, &big));
        bytes.extend(frame(true, OP_PING, b""));
        let got = read_all(bytes, 100_000).await;
        assert_eq!(got[0].as_ref().unwrap().payload, b"hi");
        assert_eq!(got[1].as_ref().unwrap().payload.len(), 300);
        assert!(!got[1].as_ref().unwrap().fin);
        assert_eq!(got[2].as_ref().unwrap().payload, big);
        assert_eq!(got[3].as_ref().unwrap().opcode, OP_PING);
        assert_eq!(got[4], Err(ReadError::Closed));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn violations_are_reported() {
        let mut unmasked = frame(true, OP_TEXT, b"x");
        unmasked[1] &= 0x7f;
        let mut rsv = frame(true, OP_TEXT, b"x");
        rsv[0] |= 0x40;
        let cases = [
            (
                unmasked,
                ReadError::Protocol("client frames must be masked"),
            ),
            (rsv, ReadError::Protocol("reserved bits set")),
            (frame(true, 0x3, b""), ReadError::Protocol("unknown opcode")),
            (
                frame(false, OP_PING, b""),
                ReadError::Protocol("fragmented control frame"),
            ),
            (
                frame(true, OP_PING, &[0; 126]),
                ReadError::Protocol("control frame too long"),
            ),
            (frame(true, OP_TEXT, &[0; 11]), ReadError::TooBig),
            (frame(true, OP_TEXT, &[0xff, 0xfe]), ReadError::NotUtf8),
        ];
        for (bytes, want) in cases {
            assert_eq!(read_all(bytes, 10).await[0], Err(want));
        }
        // A header claiming 2^63 bytes is refused before anything is read or allocated.
        let mut huge = vec![0x82, 0x80 | 127];
        huge.extend_from_slice(&(1u64 << 63).to_be_bytes());
        huge.extend_from_slice(&[0; 4]);
        assert_eq!(read_all(huge, 1 << 20).await[0], Err(ReadError::TooBig));
    }
}
