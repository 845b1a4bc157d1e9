//! Policies as native module configs (`CONFIG GET/SET roomcast.<name>`, or
//! `loadmodule libroomcast.so <name> <value> …` at load time).
//!
//! Each value lives in an atomic so command code reads it without locking; Redis
//! validates ranges before storing.

use std::sync::atomic::{AtomicI64, Ordering};

/// `partitions`: number of partitions of the dataset (immutable after load).
pub static PARTITIONS: AtomicI64 = AtomicI64::new(16);
/// `publish-rate`: messages per second per sender; 0 = unlimited.
pub static PUBLISH_RATE: AtomicI64 = AtomicI64::new(0);
/// `publish-burst`: extra messages a sender may send at once above the rate.
pub static PUBLISH_BURST: AtomicI64 = AtomicI64::new(0);
/// `ban-after`: limited attempts in a row before a ban; 0 = never ban.
pub static BAN_AFTER: AtomicI64 = AtomicI64::new(0);
/// `ban-ms`: how long a ban lasts.
pub static BAN_MS: AtomicI64 = AtomicI64::new(0);
/// `max-payload-bytes`: largest `data` accepted by `RC.PUBLISH` / `RC.SEND`.
pub static MAX_PAYLOAD_BYTES: AtomicI64 = AtomicI64::new(0);
/// `max-conns-per-user`: connections one user may hold at once; 0 = unlimited.
pub static MAX_CONNS_PER_USER: AtomicI64 = AtomicI64::new(0);
/// `inbox-maxlen`: approximate cap on each inbox stream's length.
pub static INBOX_MAXLEN: AtomicI64 = AtomicI64::new(0);

/// `history-len`: messages each room keeps for recovery and `RC.HISTORY`; 0 = off.
pub static HISTORY_LEN: AtomicI64 = AtomicI64::new(0);
/// `history-ttl-ms`: a room's history is dropped after this long without a message
/// (its next message starts a new epoch); 0 = never.
pub static HISTORY_TTL_MS: AtomicI64 = AtomicI64::new(0);

/// Reads a config value.
pub fn get(value: &AtomicI64) -> i64 {
    value.load(Ordering::Relaxed)
}

/// Defaults and bounds, used by the registration table in `lib.rs` and by the README.
pub mod defaults {
    /// Default `partitions`.
    pub const PARTITIONS: i64 = 16;
    /// Default `publish-rate` (messages per second per sender).
    pub const PUBLISH_RATE: i64 = 0;
    /// Default `publish-burst`.
    pub const PUBLISH_BURST: i64 = 20;
    /// Default `ban-after`.
    pub const BAN_AFTER: i64 = 0;
    /// Default `ban-ms`.
    pub const BAN_MS: i64 = 60_000;
    /// Default `max-payload-bytes` (64 KiB).
    pub const MAX_PAYLOAD_BYTES: i64 = 65_536;
    /// Default `max-conns-per-user`.
    pub const MAX_CONNS_PER_USER: i64 = 100;
    /// Default `inbox-maxlen`.
    pub const INBOX_MAXLEN: i64 = 10_000;
    /// Default `history-len` (off).
    pub const HISTORY_LEN: i64 = 0;
    /// Default `history-ttl-ms` (one day).
    pub const HISTORY_TTL_MS: i64 = 86_400_000;
}
