//! `RC.KICK`: close every connection of a user, on every edge.

use redis_module::{Context, RedisResult, RedisString, RedisValue};
use roomcast_common::entry::Kind;

use roomcast_common::command::{self, Kick};

use crate::args::check;
use crate::connections;
use crate::inbox::Entry;
use crate::state::layout;

/// `RC.KICK user [REASON text]` → `[connections, nodes]`: routes a kick to every node
/// holding a connection of the user; each edge closes them with 1008 and the reason,
/// then reports the disconnects as usual.
pub fn kick(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    let layout = layout()?;
    let Kick { user, reason } = check(command::kick(&layout.partitioner, &args))?;
    let keys = layout.routed(&args, user.partition)?;
    let entry = Entry::new(
        ctx,
        Kind::Kick,
        &[user.name.as_bytes(), b"", reason.as_bytes()],
    )?;
    let (connections, nodes) = connections::tell_user(ctx, keys, user.name, &entry)?;
    Ok(RedisValue::Array(vec![
        RedisValue::Integer(connections as i64),
        RedisValue::Integer(nodes as i64),
    ]))
}
