//! `RC.PROBE`: the edge's liveness probe, appended to its own inbox the way the module
//! appends every entry — so on a standalone server it is pushed too, and reading it
//! back proves the whole delivery path (append, push, subscription) works.

use redis_module::{Context, RedisResult, RedisString, RedisValue};
use roomcast_common::command::{self, Probe};
use roomcast_common::entry::Kind;

use crate::args::check;
use crate::inbox::Entry;
use crate::state::layout;

/// `RC.PROBE partition node token` → `OK`: appends a `probe` entry whose data is
/// `token` to `node`'s inbox of `partition` (trimmed to `roomcast.inbox-maxlen` like
/// every inbox append) and, on a standalone server, pushes it to the node's live
/// channel. Not counted as routed; needs no lease (an edge probes while it starts).
pub fn probe(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    let layout = layout()?;
    let Probe {
        partition,
        node,
        token,
    } = check(command::probe(&layout.partitioner, &args))?;
    let keys = layout.routed(&args, partition)?;
    Entry::new(ctx, Kind::Probe, &[token])?.write_inbox(ctx, keys, node)?;
    Ok(RedisValue::SimpleStringStatic("OK"))
}
