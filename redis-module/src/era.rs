//! The serving era: one uninterrupted stretch during which this server is the primary
//! writing room histories.
//!
//! A room's offsets (`<epoch>:<seq>`) are only trustworthy while one primary keeps
//! counting them. When another server takes over — a replica promoted by Sentinel or by
//! `REPLICAOF NO ONE`, or a primary restarted from its AOF/RDB — the data it starts from
//! may lack the last messages the previous primary acknowledged (replication and
//! `appendfsync everysec` are asynchronous). Continuing the old count would hand those
//! seqs to *different* messages, and a client that saw the lost ones would take the new
//! ones for duplicates, or resume past them: an undetected gap.
//!
//! So every room position records the era that wrote it, and the first message of a room
//! in a new era starts a new epoch. The era is picked when the module loads and again
//! whenever this server becomes a primary; it lives in memory only, never in the
//! dataset, so a replica or a reload from disk can never inherit it. What the new primary
//! still holds of the old epoch stays readable (a client that is behind it recovers up to
//! the old position, then sees the epoch change and resyncs).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use redis_module::server_events::ServerRole;
use redis_module::Context;
use redis_module_macros::role_changed_event_handler;
use roomcast_common::offset::base36;

use crate::ops;

/// The current era (0 until the module has picked one).
static ERA: AtomicU64 = AtomicU64::new(0);
/// When this server last became a primary (Redis clock, ms; 0 = never while loaded).
static PROMOTED_AT: AtomicI64 = AtomicI64::new(0);

/// How long a promoted server waits before it removes nodes whose lease expired.
///
/// The leases it holds were written by the old primary; during the failover no edge
/// could renew them, so most have run out by the time it takes over. Sweeping them at
/// once would drop every live edge's presence and send leave (then join) events for
/// everyone. Within this grace the live edges find the new primary and renew (they
/// renew every third of a lease); nodes still expired after it are really gone.
pub const TAKEOVER_GRACE_MS: i64 = 10_000;

/// Whether this server became a primary less than [`TAKEOVER_GRACE_MS`] ago.
pub fn in_takeover_grace(now_ms: i64) -> bool {
    now_ms < takeover_grace_ends()
}

/// When the takeover grace ends or ended (Unix ms; `i64::MIN` when this server was never
/// promoted while the module was loaded): the sweep expires no lease before.
pub fn takeover_grace_ends() -> i64 {
    match PROMOTED_AT.load(Ordering::Relaxed) {
        at if at > 0 => at.saturating_add(TAKEOVER_GRACE_MS),
        _ => i64::MIN,
    }
}

/// A new era id: unlike any other server's or any earlier one of this server's (time,
/// process and a per-process random seed, hashed).
fn fresh() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_i64(ops::now_ms());
    hasher.write_u32(std::process::id());
    hasher.write_u64(ERA.load(Ordering::Relaxed));
    // 0 means "none picked yet".
    hasher.finish().max(1)
}

/// Starts a new era (at load, and when this server becomes a primary).
pub fn renew() -> u64 {
    let era = fresh();
    ERA.store(era, Ordering::Relaxed);
    era
}

/// The current era as it is written into room positions (base 36).
pub fn current() -> String {
    let era = match ERA.load(Ordering::Relaxed) {
        0 => renew(),
        era => era,
    };
    base36(era)
}

/// A promoted server starts a new era, so every room's next message starts a new epoch.
#[role_changed_event_handler]
fn on_role_changed(ctx: &Context, role: ServerRole) {
    if role == ServerRole::Primary {
        PROMOTED_AT.store(ops::now_ms().max(1), Ordering::Relaxed);
        let era = renew();
        ctx.log_notice(&format!(
            "roomcast: this server became a primary: new era {}; each room's next message \
             starts a new history epoch; expired leases are kept {} ms for the edges to renew",
            base36(era),
            TAKEOVER_GRACE_MS
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eras_differ_and_are_never_zero() {
        let a = renew();
        let b = renew();
        assert_ne!(a, 0);
        assert_ne!(a, b);
        assert_eq!(current(), base36(b));
    }
}
