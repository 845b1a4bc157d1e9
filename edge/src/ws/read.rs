//! Reading client WebSocket frames (RFC 6455 §5) with a buffer that grows only as needed.
//!
//! A fixed read buffer per connection would cost kilobytes per idle connection, while
//! chat frames are tens of bytes and most connections are idle. So an idle connection
//! holds no read buffer at all: a reader without spare room reads into a per-thread
//! landing buffer and keeps only the bytes that came, a large frame reserves what its
//! header declares (up to a bound), and the buffer is dropped once a frame is consumed
//! with nothing left over. It enforces what the edge needs from the RFC: client frames masked, no
//! reserved bits or unknown opcodes, control frames final and ≤ 125 bytes, a per-frame
//! size cap, and UTF-8 for complete text frames. Fragment assembly, close codes and the
//! whole-message cap are [`super::message`]'s job.

use std::cell::RefCell;
use std::pin::Pin;
use std::task::Poll;

use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

/// Size of the per-thread landing buffer an empty reader reads into.
const SCRATCH_BYTES: usize = 16 * 1024;

thread_local! {
    /// Where a reader with no buffer of its own receives bytes, borrowed only within one
    /// poll: an idle connection waiting for its next frame then holds no buffer at all.
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH_BYTES].into_boxed_slice());
}

/// The opcodes a frame may carry (defined with the frame format).
pub use crate::ws::frame::{OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT};

/// Bytes asked of the socket per read (at least).
const READ_CHUNK: usize = 512;
/// Bytes read at a time while discarding what a closing peer still sends.
const DISCARD_CHUNK: usize = 4096;
/// Most bytes reserved ahead of what has arrived: a header may declare up to the cap,
/// and the buffer then grows with the bytes that actually come, not with the claim.
const MAX_RESERVE: usize = 1 << 20;

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
            if missing > READ_CHUNK {
                self.buf.reserve(missing.min(MAX_RESERVE));
            }
            let read = if self.buf.capacity() - self.buf.len() >= READ_CHUNK {
                self.io.read_buf(&mut self.buf).await.unwrap_or(0)
            } else {
                self.read_via_scratch().await
            };
            if read == 0 {
                return Err(ReadError::Closed);
            }
        }
        Ok(())
    }

    /// Reads into the thread's scratch buffer and appends what came to `buf`; 0 on EOF
    /// or error.
    async fn read_via_scratch(&mut self) -> usize {
        let (io, buf) = (&mut self.io, &mut self.buf);
        std::future::poll_fn(|cx| {
            SCRATCH.with(|scratch| {
                let mut scratch = scratch.borrow_mut();
                let mut landing = ReadBuf::new(&mut scratch[..]);
                match Pin::new(&mut *io).poll_read(cx, &mut landing) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(Err(_)) => Poll::Ready(0),
                    Poll::Ready(Ok(())) => {
                        buf.extend_from_slice(landing.filled());
                        Poll::Ready(landing.filled().len())
                    }
                }
            })
        })
        .await
    }

    /// Reads and throws away everything the peer still sends, until it closes (EOF) or
    /// the socket fails. Used once our close frame is out: closing a socket with unread
    /// input makes the kernel answer with a reset, and a peer that is still writing (the
    /// rest of an oversized message, say) would then lose our close frame. Raw bytes, not
    /// frames: what follows a refused frame header is its payload, not a frame, and
    /// nothing is buffered beyond one small chunk.
    pub async fn discard_until_eof(&mut self) {
        // The scratch space is the reader's own heap buffer: a local array held across
        // the await would sit in every connection's task, idle or not.
        self.start = 0;
        self.buf.clear();
        self.buf.reserve(DISCARD_CHUNK);
        loop {
            self.buf.clear();
            match self.io.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        self.buf = Vec::new();
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
        // Only a cap near `usize::MAX` lets this overflow; such a frame cannot be read.
        let total = header.checked_add(len).ok_or(ReadError::TooBig)?;
        self.fill(total).await?;
        let body = self.start + header;
        let mut payload = self.buf.get(body..body + len).unwrap_or_default().to_vec();
        for (i, byte) in payload.iter_mut().enumerate() {
            *byte ^= mask[i % 4];
        }
        self.start = body + len;
        if self.start == self.buf.len() {
            // Nothing left over: an idle connection keeps no buffer.
            self.buf = Vec::new();
            self.start = 0;
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

    /// Found while writing the fuzz harness: with a cap near `usize::MAX` (a huge
    /// `--max-message-bytes`), a header claiming 2^64 - 1 bytes overflowed the frame's end
    /// (a panic in debug builds), and one claiming 2^62 bytes made the reader reserve
    /// them before any arrived (an allocation failure aborts the process).
    #[tokio::test(flavor = "current_thread")]
    async fn absurd_claims_neither_overflow_nor_allocate() {
        for (claim, want) in [(u64::MAX, ReadError::TooBig), (1 << 62, ReadError::Closed)] {
            let mut bytes = vec![0x82, 0x80 | 127];
            bytes.extend_from_slice(&claim.to_be_bytes());
            bytes.extend_from_slice(&[0; 4]);
            bytes.extend_from_slice(b"a few bytes");
            assert_eq!(read_all(bytes, usize::MAX).await[0], Err(want));
        }
    }
}

/// Property tests: arbitrary, structured and mutated byte streams, delivered in arbitrary
/// chunks, against a reference decoder (`fuzz/` runs the same reader under libFuzzer).
#[cfg(test)]
mod props {
    use std::io;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use proptest::collection::vec;
    use proptest::prelude::*;
    use tokio::io::ReadBuf;

    use super::*;

    /// Hands out `data` in chunks whose sizes cycle through `sizes`, then EOF.
    struct Chunked {
        data: Vec<u8>,
        pos: usize,
        sizes: Vec<usize>,
        turn: usize,
    }

    impl AsyncRead for Chunked {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let this = &mut *self;
            let size = match this.sizes.len() {
                0 => usize::MAX,
                n => this.sizes[this.turn % n].max(1),
            };
            this.turn += 1;
            let rest = &this.data[this.pos..];
            let n = size.min(buf.remaining()).min(rest.len());
            buf.put_slice(&rest[..n]);
            this.pos += n;
            Poll::Ready(Ok(()))
        }
    }

    /// Every result until (and including) the first error.
    fn read_all(data: &[u8], sizes: &[usize], max: usize) -> Vec<Result<Frame, ReadError>> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut reader = FrameReader::new(Chunked {
                data: data.to_vec(),
                pos: 0,
                sizes: sizes.to_vec(),
                turn: 0,
            });
            let mut out = Vec::new();
            loop {
                let result = reader.next(max).await;
                let done = result.is_err();
                out.push(result);
                // Each frame consumes at least a 6-byte header.
                assert!(
                    out.len() <= data.len() / 6 + 1,
                    "the reader made no progress"
                );
                if done {
                    return out;
                }
            }
        })
    }

    /// The reference: RFC 6455 §5.2 decoding of a complete byte string, with the checks
    /// in the reader's order (a frame cut short by the end of the input is `Closed`).
    fn model(data: &[u8], max: usize) -> Vec<Result<Frame, ReadError>> {
        let mut rest = data;
        let mut out = Vec::new();
        loop {
            let result = model_one(&mut rest, max);
            let done = result.is_err();
            out.push(result);
            if done {
                return out;
            }
        }
    }

    fn model_one(rest: &mut &[u8], max: usize) -> Result<Frame, ReadError> {
        let (b0, b1) = match **rest {
            [b0, b1, ..] => (b0, b1),
            _ => return Err(ReadError::Closed),
        };
        let fin = b0 >> 7 == 1;
        if (b0 >> 4) & 0b111 != 0 {
            return Err(ReadError::Protocol("reserved bits set"));
        }
        let opcode = b0 & 0x0f;
        if ![0x0, 0x1, 0x2, 0x8, 0x9, 0xA].contains(&opcode) {
            return Err(ReadError::Protocol("unknown opcode"));
        }
        if b1 >> 7 == 0 {
            return Err(ReadError::Protocol("client frames must be masked"));
        }
        let (header, len) = match b1 & 0x7f {
            126 if rest.len() >= 8 => (8, (u64::from(rest[2]) << 8) | u64::from(rest[3])),
            127 if rest.len() >= 14 => (
                14,
                rest[2..10]
                    .iter()
                    .fold(0u64, |n, &b| (n << 8) | u64::from(b)),
            ),
            126 | 127 => return Err(ReadError::Closed),
            n => (6, u64::from(n)),
        };
        if rest.len() < header {
            return Err(ReadError::Closed);
        }
        let mask = &rest[header - 4..header];
        if opcode >= 0x8 && !fin {
            return Err(ReadError::Protocol("fragmented control frame"));
        }
        if opcode >= 0x8 && len > 125 {
            return Err(ReadError::Protocol("control frame too long"));
        }
        if len > max as u64 {
            return Err(ReadError::TooBig);
        }
        let Some(end) = header.checked_add(len as usize) else {
            return Err(ReadError::TooBig);
        };
        if rest.len() < end {
            return Err(ReadError::Closed);
        }
        let payload: Vec<u8> = rest[header..end]
            .iter()
            .zip(mask.iter().cycle())
            .map(|(b, m)| b ^ m)
            .collect();
        *rest = &rest[end..];
        if opcode == 0x1 && fin && std::str::from_utf8(&payload).is_err() {
            return Err(ReadError::NotUtf8);
        }
        Ok(Frame {
            fin,
            opcode,
            payload,
        })
    }

    /// What every frame the reader returns guarantees to the session.
    fn check_frames(results: &[Result<Frame, ReadError>], max: usize) {
        let (last, frames) = results.split_last().unwrap();
        assert!(last.is_err(), "reading stops only at an error");
        for frame in frames {
            let f = frame.as_ref().unwrap();
            assert!(f.payload.len() <= max);
            assert!(matches!(
                f.opcode,
                OP_CONTINUATION | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG
            ));
            if f.opcode >= OP_CLOSE {
                assert!(f.fin && f.payload.len() <= 125);
            }
            if f.opcode == OP_TEXT && f.fin {
                assert!(std::str::from_utf8(&f.payload).is_ok());
            }
        }
    }

    /// A frame to encode: `form` 0 = shortest length encoding, 1 = 16-bit, 2 = 64-bit.
    #[derive(Debug, Clone)]
    struct Spec {
        fin: bool,
        opcode: u8,
        payload: Vec<u8>,
        mask: [u8; 4],
        form: u8,
    }

    fn encode(spec: &Spec) -> Vec<u8> {
        let len = spec.payload.len();
        let mut out = vec![(u8::from(spec.fin) << 7) | spec.opcode];
        match (len, spec.form) {
            (n, 0) if n < 126 => out.push(0x80 | n as u8),
            (n, 0 | 1) if n <= 0xffff => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            (n, _) => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&spec.mask);
        out.extend(
            spec.payload
                .iter()
                .zip(spec.mask.iter().cycle())
                .map(|(b, m)| b ^ m),
        );
        out
    }

    /// Frames the reader must accept: control frames final and ≤ 125 bytes, final text
    /// frames UTF-8; now and then a payload past 64 KiB (the 64-bit length form).
    fn valid_spec() -> impl Strategy<Value = Spec> {
        let data = prop_oneof![
            40 => vec(any::<u8>(), 0..300),
            1 => (65_536usize..66_000).prop_map(|n| vec![0x5a; n]),
        ];
        let text = prop_oneof![
            any::<String>().prop_map(String::into_bytes),
            "[a-z ]{120,140}".prop_map(String::into_bytes),
        ];
        let kind = prop_oneof![
            (any::<bool>(), Just(OP_CONTINUATION), data.clone()),
            (Just(true), Just(OP_TEXT), text),
            (Just(false), Just(OP_TEXT), data.clone()),
            (any::<bool>(), Just(OP_BINARY), data),
            (
                Just(true),
                prop_oneof![Just(OP_CLOSE), Just(OP_PING), Just(OP_PONG)],
                vec(any::<u8>(), 0..=125)
            ),
        ];
        (kind, any::<[u8; 4]>(), 0u8..3).prop_map(|((fin, opcode, payload), mask, form)| Spec {
            fin,
            opcode,
            payload,
            mask,
            form,
        })
    }

    /// Frames with any header bits and any declared length, the payload possibly
    /// shorter or longer than declared.
    fn wild_frame() -> impl Strategy<Value = Vec<u8>> {
        (
            any::<u8>(),
            any::<bool>(),
            prop_oneof![
                (0u64..126),
                Just(126),
                Just(127),
                (126u64..70_000),
                Just(1 << 62),
                Just(u64::MAX),
                any::<u64>()
            ],
            any::<[u8; 4]>(),
            vec(any::<u8>(), 0..200),
        )
            .prop_map(|(b0, masked, len, mask, payload)| {
                let mut out = vec![b0];
                let bit = if masked { 0x80 } else { 0 };
                match len {
                    n if n < 126 => out.push(bit | n as u8),
                    n if n <= 0xffff => {
                        out.push(bit | 126);
                        out.extend_from_slice(&(n as u16).to_be_bytes());
                    }
                    n => {
                        out.push(bit | 127);
                        out.extend_from_slice(&n.to_be_bytes());
                    }
                }
                out.extend_from_slice(&mask);
                out.extend_from_slice(&payload);
                out
            })
    }

    /// Byte-level damage: (position, what, byte) with what 0 = xor, 1 = insert,
    /// 2 = delete, 3 = truncate.
    fn mutate(mut data: Vec<u8>, edits: &[(usize, u8, u8)]) -> Vec<u8> {
        for &(at, what, byte) in edits {
            if data.is_empty() {
                data.push(byte);
                continue;
            }
            let at = at % data.len();
            match what % 4 {
                0 => data[at] ^= byte.max(1),
                1 => data.insert(at, byte),
                2 => {
                    data.remove(at);
                }
                _ => data.truncate(at),
            }
        }
        data
    }

    fn chunk_sizes() -> impl Strategy<Value = Vec<usize>> {
        prop_oneof![
            Just(vec![usize::MAX]),
            vec(1usize..8, 1..6),
            vec(1usize..1024, 1..6),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        /// Arbitrary bytes, in arbitrary chunks: no panic, reading ends in a typed error,
        /// and the outcome is the reference decoder's whatever the chunking.
        #[test]
        fn arbitrary_bytes_end_in_a_typed_error(
            data in vec(any::<u8>(), 0..512),
            sizes in chunk_sizes(),
            max in 0usize..300,
        ) {
            let got = read_all(&data, &sizes, max);
            check_frames(&got, max);
            prop_assert_eq!(got, model(&data, max));
        }

        /// Streams of frames with arbitrary header bits and lengths (masked or not,
        /// lengths lying about the payload).
        #[test]
        fn wild_frames_end_in_a_typed_error(
            frames in vec(wild_frame(), 1..6),
            sizes in chunk_sizes(),
            max in prop_oneof![0usize..200, Just(65_536), Just(usize::MAX)],
        ) {
            let data = frames.concat();
            let got = read_all(&data, &sizes, max);
            check_frames(&got, max);
            prop_assert_eq!(got, model(&data, max));
        }

        /// Valid masked frames of every length form come back unmasked, with their fin
        /// bit and opcode, however the bytes are split; then the end is `Closed`.
        #[test]
        fn valid_frames_round_trip(
            specs in vec(valid_spec(), 0..8),
            sizes in chunk_sizes(),
        ) {
            let data: Vec<u8> = specs.iter().flat_map(encode).collect();
            let got = read_all(&data, &sizes, 70_000);
            prop_assert_eq!(got.len(), specs.len() + 1);
            for (result, spec) in got.iter().zip(&specs) {
                let frame = result.as_ref().unwrap();
                prop_assert_eq!(frame.fin, spec.fin);
                prop_assert_eq!(frame.opcode, spec.opcode);
                prop_assert_eq!(&frame.payload, &spec.payload);
            }
            prop_assert_eq!(got.last(), Some(&Err(ReadError::Closed)));
        }

        /// Valid streams with bytes flipped, inserted, deleted or cut off: no panic,
        /// typed errors, the reference decoder's outcome.
        #[test]
        fn mutated_valid_frames_end_in_a_typed_error(
            specs in vec(valid_spec(), 1..5),
            edits in vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..6),
            sizes in chunk_sizes(),
            max in prop_oneof![0usize..300, Just(70_000)],
        ) {
            let data = mutate(specs.iter().flat_map(encode).collect(), &edits);
            let got = read_all(&data, &sizes, max);
            check_frames(&got, max);
            prop_assert_eq!(got, model(&data, max));
        }

        /// The size cap: a data frame longer than the cap is `TooBig` as soon as its
        /// header is read (its payload need not even arrive); one within it is read.
        #[test]
        fn the_size_cap_is_respected(
            len in 0usize..400,
            max in 0usize..400,
            opcode in prop_oneof![Just(OP_CONTINUATION), Just(OP_BINARY)],
            form in 0u8..3,
            with_payload in any::<bool>(),
        ) {
            let spec = Spec { fin: true, opcode, payload: vec![7; len], mask: [9, 8, 7, 6], form };
            let mut data = encode(&spec);
            if !with_payload {
                data.truncate(data.len() - len);
            }
            let got = read_all(&data, &[usize::MAX], max);
            let first = got.first().unwrap();
            if len > max {
                prop_assert_eq!(first, &Err(ReadError::TooBig));
            } else if with_payload || len == 0 {
                prop_assert_eq!(first.as_ref().map(|f| f.payload.len()), Ok(len));
            } else {
                prop_assert_eq!(first, &Err(ReadError::Closed));
            }
        }
    }
}
