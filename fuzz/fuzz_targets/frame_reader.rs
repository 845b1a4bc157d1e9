//! The edge's client frame reader (`roomcast_edge::ws::read`) on arbitrary byte streams.
//!
//! Input: `[cap][n][n chunk sizes][stream…]`. The stream is read whole, and again handed
//! out in chunks of the given sizes; both reads must give the same frames and the same
//! final error (chunking never changes the outcome), reading must end in a typed
//! `ReadError`, and every frame must satisfy what the session relies on: payload within
//! the cap, a known opcode, control frames final and ≤ 125 bytes, final text frames UTF-8.

#![no_main]

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncRead, ReadBuf};

use roomcast_edge::ws::read::{
    Frame, FrameReader, ReadError, OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT,
};

/// Hands out `data` in chunks whose sizes cycle through `sizes` (each + 1), then EOF.
struct Chunked<'a> {
    data: &'a [u8],
    sizes: &'a [u8],
    turn: usize,
}

impl AsyncRead for Chunked<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let size = match this.sizes.len() {
            0 => usize::MAX,
            n => usize::from(this.sizes[this.turn % n]) + 1,
        };
        this.turn += 1;
        let n = size.min(buf.remaining()).min(this.data.len());
        let (head, rest) = this.data.split_at(n);
        buf.put_slice(head);
        this.data = rest;
        Poll::Ready(Ok(()))
    }
}

/// Runs a future whose I/O is always ready (no runtime needed).
fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..1_000_000 {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
    }
    panic!("a reader over in-memory bytes never became ready");
}

fn read_all<R: AsyncRead + Unpin>(io: R, max: usize, len: usize) -> Vec<Result<Frame, ReadError>> {
    block_on(async {
        let mut reader = FrameReader::new(io);
        let mut out = Vec::new();
        loop {
            let result = reader.next(max).await;
            let done = result.is_err();
            out.push(result);
            assert!(
                out.len() <= len / 6 + 1,
                "a frame consumed less than its header"
            );
            if done {
                return out;
            }
        }
    })
}

fuzz_target!(|input: &[u8]| {
    let Some((&cap, rest)) = input.split_first() else {
        return;
    };
    let max = match cap % 4 {
        0 => usize::from(cap / 4),
        1 => 125,
        2 => 65_536,
        _ => usize::MAX,
    };
    let Some((&n, rest)) = rest.split_first() else {
        return;
    };
    let n = usize::from(n % 8).min(rest.len());
    let (sizes, stream) = rest.split_at(n);

    let whole = read_all(stream, max, stream.len());
    let chunked = read_all(
        Chunked {
            data: stream,
            sizes,
            turn: 0,
        },
        max,
        stream.len(),
    );
    assert_eq!(whole, chunked, "chunking changed the outcome");

    let Some((last, frames)) = whole.split_last() else {
        unreachable!("at least one result");
    };
    assert!(last.is_err());
    for frame in frames {
        let Ok(f) = frame else {
            unreachable!("only the last result is an error");
        };
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
});
