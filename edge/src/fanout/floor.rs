//! `--bench-floor`: the benchmark reference R0 (`BENCHMARKING.md` §5) — the same edge,
//! fed by an in-process broadcaster instead of the module. Benchmark use only.
//!
//! Everything up to the operation is the normal edge: HTTP upgrade with auth and Origin
//! checks, the session read loop, JSON parsing, limits, pings, drain (1012), metrics.
//! Everything after it is too: one encoded frame shared by all recipients, the outbox,
//! one write per batch. What is missing is Redis — no redis-server, `RC.INFO`, leases,
//! inbox reader or module commands — so rooms are local to each worker:
//!
//! | op | under `--bench-floor` |
//! |---|---|
//! | `join` / `leave` | the worker's index only; `ack` (`"offset":null`, and `"recovered":false` with `since`); no `joined` / `left` events |
//! | `publish` | a `message` (`"offset":null`) to the room's members on this worker except the publishing connection, then the `ack` with `"offset":null`; no module rate limit or ban (the local `--conn-rate` still applies) |
//! | `send` | `direct` to the user's connections on this worker; `ack` |
//! | `presence` | the users with a connection in the room on this worker |
//! | `history` | `bad_request` "not available in --bench-floor mode" |
//!
//! Delivery goes through the inbox reader's own [`fan_out`], with an entry built
//! here instead of read from a stream, so the fan-out measured is the production one.

use roomcast_common::entry::{Entry, Kind};

use crate::context::Context;
use crate::fanout::fan_out;

/// The error message of operations the floor does not have.
pub const NOT_AVAILABLE: &str = "not available in --bench-floor mode";

/// Delivers one entry as the inbox reader would, as a fan-out round of its own.
fn deliver(ctx: &Context, entry: &Entry<'_>) {
    ctx.next_round();
    fan_out(ctx, entry);
}

/// Publishes `data` (raw JSON) to `room` as `from`: one `message` frame, to the room's
/// local members except connection `conn` (the publisher).
pub fn publish(ctx: &Context, room: &str, from: &str, conn: &str, data: &[u8]) {
    deliver(
        ctx,
        &Entry {
            kind: Some(Kind::Message),
            room,
            from,
            skip: conn,
            data,
            ..Entry::default()
        },
    );
}

/// Sends `data` (raw JSON) from `from` to every local connection of `user`.
pub fn direct(ctx: &Context, user: &str, from: &str, data: &[u8]) {
    deliver(
        ctx,
        &Entry {
            kind: Some(Kind::Direct),
            user,
            from,
            data,
            ..Entry::default()
        },
    );
}

/// The users with a connection in `room` on this worker, sorted, each once.
pub fn presence(ctx: &Context, room: &str) -> Vec<String> {
    let local = ctx.local.borrow();
    let mut users: Vec<String> = local
        .rooms
        .get(room)
        .into_iter()
        .flatten()
        .filter_map(|seq| local.conns.get(seq))
        .map(|conn| conn.user.to_string())
        .collect();
    users.sort_unstable();
    users.dedup();
    users
}
