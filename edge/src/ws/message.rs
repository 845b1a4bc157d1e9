//! From frames to messages: fragment assembly, control frames, and what each protocol
//! violation closes the connection with.
//!
//! The frame reader ([`super::read`]) checks single frames; here the whole message is
//! counted across fragments (close 1009), the number of fragments is capped (1008),
//! continuation order is enforced (1002) and an assembled text message must be UTF-8
//! (1007). A close frame is answered by echoing a valid code (1002 for an invalid one).

use crate::ws::frame::close;
use crate::ws::read::{Frame, ReadError, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT};

/// What one frame means for the connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// A complete message.
    Message {
        /// A text message (else binary).
        text: bool,
        /// Its bytes, all fragments joined.
        payload: Vec<u8>,
    },
    /// A fragment was kept, or a pong arrived: nothing to do yet.
    Nothing,
    /// A ping: answer with a pong carrying this payload.
    Ping(Vec<u8>),
    /// Close the connection with this code and reason: the peer's close frame is
    /// answered, or the peer broke the protocol. Reading ends.
    Close(u16, &'static str),
}

/// A fragmented message being assembled.
struct Partial {
    /// Text (else binary).
    text: bool,
    /// Bytes so far.
    bytes: Vec<u8>,
    /// Frames so far.
    fragments: usize,
}

/// Turns one connection's frames into messages.
pub struct Assembler {
    /// The whole-message cap (`--max-message-bytes`).
    max_bytes: usize,
    /// The fragment cap (`--max-fragments`).
    max_fragments: usize,
    /// The message being assembled, if any.
    partial: Option<Partial>,
}

impl Assembler {
    /// An assembler for messages of at most `max_bytes` in at most `max_fragments` frames.
    pub fn new(max_bytes: usize, max_fragments: usize) -> Self {
        Self {
            max_bytes,
            max_fragments,
            partial: None,
        }
    }

    /// Handles one frame.
    pub fn push(&mut self, frame: Frame) -> Step {
        match frame.opcode {
            OP_CLOSE => answer_close(&frame.payload),
            OP_PING => Step::Ping(frame.payload),
            OP_PONG => Step::Nothing,
            OP_TEXT | OP_BINARY => {
                if self.partial.is_some() {
                    return Step::Close(close::PROTOCOL, "expected a continuation frame");
                }
                let text = frame.opcode == OP_TEXT;
                if frame.fin {
                    Step::Message {
                        text,
                        payload: frame.payload,
                    }
                } else {
                    self.partial = Some(Partial {
                        text,
                        bytes: frame.payload,
                        fragments: 1,
                    });
                    Step::Nothing
                }
            }
            // Continuation (the reader lets no other opcode through).
            _ => {
                let Some(mut partial) = self.partial.take() else {
                    return Step::Close(close::PROTOCOL, "unexpected continuation frame");
                };
                if partial.bytes.len() + frame.payload.len() > self.max_bytes {
                    return Step::Close(close::TOO_BIG, "message too big");
                }
                if partial.fragments >= self.max_fragments {
                    return Step::Close(close::POLICY, "too many fragments");
                }
                partial.bytes.extend_from_slice(&frame.payload);
                if !frame.fin {
                    partial.fragments += 1;
                    self.partial = Some(partial);
                    return Step::Nothing;
                }
                if partial.text && std::str::from_utf8(&partial.bytes).is_err() {
                    return Step::Close(close::INVALID_DATA, "text is not UTF-8");
                }
                Step::Message {
                    text: partial.text,
                    payload: partial.bytes,
                }
            }
        }
    }
}

/// The close code and reason a read error calls for (`None`: the socket just ended).
pub fn read_error_close(e: ReadError) -> Option<(u16, &'static str)> {
    match e {
        ReadError::Closed => None,
        ReadError::TooBig => Some((close::TOO_BIG, "message too big")),
        ReadError::NotUtf8 => Some((close::INVALID_DATA, "text is not UTF-8")),
        ReadError::Protocol(reason) => Some((close::PROTOCOL, reason)),
    }
}

/// Answers a close frame: echo a valid code, 1002 for an invalid one.
fn answer_close(payload: &[u8]) -> Step {
    match payload {
        [] => Step::Close(close::NORMAL, ""),
        [_] => Step::Close(close::PROTOCOL, "invalid close frame"),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            let valid_code = matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999);
            if !valid_code {
                Step::Close(close::PROTOCOL, "invalid close code")
            } else if std::str::from_utf8(reason).is_err() {
                Step::Close(close::INVALID_DATA, "close reason is not UTF-8")
            } else {
                Step::Close(code, "")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::read::OP_CONTINUATION;

    fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Frame {
        Frame {
            fin,
            opcode,
            payload: payload.to_vec(),
        }
    }

    #[test]
    fn fragments_are_joined_and_capped() {
        let mut a = Assembler::new(8, 3);
        assert_eq!(a.push(frame(false, OP_TEXT, b"ab")), Step::Nothing);
        assert_eq!(a.push(frame(false, OP_CONTINUATION, b"cd")), Step::Nothing);
        let whole = a.push(frame(true, OP_CONTINUATION, b"ef"));
        let payload = b"abcdef".to_vec();
        assert_eq!(
            whole,
            Step::Message {
                text: true,
                payload
            }
        );
        assert_eq!(a.push(frame(false, OP_BINARY, b"12345")), Step::Nothing);
        let too_big = a.push(frame(true, OP_CONTINUATION, b"6789"));
        assert_eq!(too_big, Step::Close(close::TOO_BIG, "message too big"));
        let mut a = Assembler::new(100, 2);
        a.push(frame(false, OP_TEXT, b"a"));
        a.push(frame(false, OP_CONTINUATION, b"b"));
        let many = a.push(frame(true, OP_CONTINUATION, b"c"));
        assert_eq!(many, Step::Close(close::POLICY, "too many fragments"));
    }

    #[test]
    fn continuation_order_and_utf8_are_enforced() {
        let mut a = Assembler::new(100, 10);
        let stray = a.push(frame(true, OP_CONTINUATION, b"x"));
        let want = Step::Close(close::PROTOCOL, "unexpected continuation frame");
        assert_eq!(stray, want);
        a.push(frame(false, OP_TEXT, b"a"));
        let interleaved = a.push(frame(true, OP_TEXT, b"b"));
        let want = Step::Close(close::PROTOCOL, "expected a continuation frame");
        assert_eq!(interleaved, want);
        let mut a = Assembler::new(100, 10);
        a.push(frame(false, OP_TEXT, &[0xe2, 0x82]));
        let bad = a.push(frame(true, OP_CONTINUATION, &[0x28]));
        assert_eq!(bad, Step::Close(close::INVALID_DATA, "text is not UTF-8"));
        // Control frames may come between fragments.
        let mut a = Assembler::new(100, 10);
        a.push(frame(false, OP_TEXT, &[0xe2, 0x82]));
        assert_eq!(
            a.push(frame(true, OP_PING, b"p")),
            Step::Ping(b"p".to_vec())
        );
        let euro = a.push(frame(true, OP_CONTINUATION, &[0xac]));
        let payload = "€".as_bytes().to_vec();
        assert_eq!(
            euro,
            Step::Message {
                text: true,
                payload
            }
        );
    }

    #[test]
    fn close_frames_are_answered() {
        let close_with = |payload: &[u8]| answer_close(payload);
        assert_eq!(close_with(b""), Step::Close(close::NORMAL, ""));
        assert_eq!(
            close_with(&[3]),
            Step::Close(close::PROTOCOL, "invalid close frame")
        );
        assert_eq!(close_with(&[0x03, 0xe9, b'x']), Step::Close(1001, ""));
        let invalid = Step::Close(close::PROTOCOL, "invalid close code");
        assert_eq!(close_with(&[0x03, 0xed]), invalid);
        let not_utf8 = Step::Close(close::INVALID_DATA, "close reason is not UTF-8");
        assert_eq!(close_with(&[0x03, 0xe8, 0xff]), not_utf8);
        assert_eq!(read_error_close(ReadError::Closed), None);
        let too_big = Some((close::TOO_BIG, "message too big"));
        assert_eq!(read_error_close(ReadError::TooBig), too_big);
    }
}
