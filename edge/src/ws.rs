//! The WebSocket connection below the session: frames in and out, whole messages, and
//! the close handshake.
//!
//! # Layout
//!
//! - [`read`]: reading client frames with a buffer that grows only as needed.
//! - [`message`]: assembling fragments into messages (whole-message cap, fragment cap,
//!   UTF-8), answering pings and close frames, and the close code of a read error.
//! - [`frame`]: server frame encoding (once per message, shared by all recipients) and
//!   the close codes the edge sends.
//! - [`outbox`]: the bounded per-connection send queue and its one-write-per-batch
//!   writer.

pub mod frame;
pub mod message;
pub mod outbox;
pub mod read;
