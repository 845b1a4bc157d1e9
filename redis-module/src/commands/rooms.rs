//! `RC.JOIN`, `RC.LEAVE`, `RC.MEMBERS`, `RC.PRESENCE`: room membership.

use redis_module::{Context, RedisResult, RedisString, RedisValue};
use roomcast_common::command::{self, Join, Leave, Since};

use crate::args::check;
use crate::leases::require_lease;
use crate::room_membership;
use crate::state::layout;
use crate::{config, history, ops};

/// `RC.JOIN room node conn user [SINCE offset|$]` → 1 when the connection joined, 0 when
/// it already was a member. The user's first connection in the room sends a join event
/// to every node with members (the joining connection itself is skipped).
///
/// With `SINCE` the reply is `[joined, recovered, cut, [[offset, from, data], …]]`:
/// atomically with the join, the messages after `offset` up to the room's position
/// `cut` (every later message is routed live to the node). `recovered` is 0 when that
/// is impossible (history off, epoch changed, or trimmed past `offset`); `SINCE $` only
/// asks for the cut.
pub fn join(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    let layout = layout()?;
    let Join {
        room,
        node,
        conn,
        user,
        since,
    } = check(command::join(&layout.partitioner, &args))?;
    let keys = layout.routed(&args, room.partition)?;
    require_lease(ctx, keys, node)?;
    let joined = room_membership::join(ctx, keys, room.name, node, conn, user.name)?;
    let Some(since) = since else {
        return Ok(RedisValue::Integer(i64::from(joined)));
    };
    let replay = match since {
        Since::After(offset) => {
            let limit = config::get(&config::HISTORY_LEN).max(0) as usize;
            history::after(ctx, keys, room.name, &offset, limit)?
        }
        Since::Now => history::Replay {
            recovered: true,
            cut: history::current(ctx, keys, room.name)?,
            entries: Vec::new(),
        },
    };
    Ok(RedisValue::Array(vec![
        RedisValue::Integer(i64::from(joined)),
        RedisValue::Integer(i64::from(replay.recovered)),
        history::offset_value(replay.cut.as_ref()),
        history::entries_value(replay.entries),
    ]))
}

/// `RC.LEAVE room node conn` → 1 when the connection left, 0 when it was not a member.
/// The user's last connection leaving sends a leave event to the remaining nodes.
pub fn leave(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    let layout = layout()?;
    let Leave { room, node, conn } = check(command::leave(&layout.partitioner, &args))?;
    let left = room_membership::leave(
        ctx,
        layout.routed(&args, room.partition)?,
        room.name,
        node,
        conn,
    )?;
    Ok(RedisValue::Integer(i64::from(left)))
}

/// `RC.MEMBERS room` → the room's connection ids, sorted.
pub fn members(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    let layout = layout()?;
    let room = check(command::room(&layout.partitioner, &args))?;
    let key = layout.routed(&args, room.partition)?.room_conns(room.name);
    sorted_fields(ops::hgetall(ctx, &key)?)
}

/// `RC.PRESENCE room` → the distinct users in the room, sorted.
pub fn presence(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    let layout = layout()?;
    let room = check(command::room(&layout.partitioner, &args))?;
    let key = layout.routed(&args, room.partition)?.room_users(room.name);
    sorted_fields(ops::hgetall(ctx, &key)?)
}

fn sorted_fields(pairs: Vec<(String, String)>) -> RedisResult {
    let mut fields: Vec<String> = pairs.into_iter().map(|(field, _)| field).collect();
    fields.sort();
    Ok(RedisValue::Array(
        fields.into_iter().map(RedisValue::BulkString).collect(),
    ))
}
