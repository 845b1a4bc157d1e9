//! `RC.JOIN`, `RC.LEAVE`, `RC.MEMBERS`, `RC.PRESENCE`: room membership.

use redis_module::{Context, RedisResult, RedisString, RedisValue};

use crate::args::{self, arity, at};
use crate::membership::{self, require_lease};
use crate::ops;
use crate::state::layout;

/// `RC.JOIN room node conn user` → 1 when the connection joined, 0 when it already was
/// a member. The user's first connection in the room sends a join event to every node
/// with members (the joining connection itself is skipped).
pub fn join(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    arity(&args, 5, 5)?;
    let layout = layout()?;
    let room = args::name(layout, at(&args, 1)?, "room")?;
    let node = args::id(at(&args, 2)?, "node")?;
    let conn = args::id(at(&args, 3)?, "connection")?;
    let user = args::name(layout, at(&args, 4)?, "user")?;
    let keys = layout.keys(room.partition)?;
    require_lease(ctx, keys, node)?;
    let joined = membership::join(ctx, keys, room.name, node, conn, user.name)?;
    Ok(RedisValue::Integer(i64::from(joined)))
}

/// `RC.LEAVE room node conn` → 1 when the connection left, 0 when it was not a member.
/// The user's last connection leaving sends a leave event to the remaining nodes.
pub fn leave(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    arity(&args, 4, 4)?;
    let layout = layout()?;
    let room = args::name(layout, at(&args, 1)?, "room")?;
    let node = args::id(at(&args, 2)?, "node")?;
    let conn = args::id(at(&args, 3)?, "connection")?;
    let left = membership::leave(ctx, layout.keys(room.partition)?, room.name, node, conn)?;
    Ok(RedisValue::Integer(i64::from(left)))
}

/// `RC.MEMBERS room` → the room's connection ids, sorted.
pub fn members(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    arity(&args, 2, 2)?;
    let layout = layout()?;
    let room = args::name(layout, at(&args, 1)?, "room")?;
    let key = layout.keys(room.partition)?.room_conns(room.name);
    sorted_fields(ops::hgetall(ctx, &key)?)
}

/// `RC.PRESENCE room` → the distinct users in the room, sorted.
pub fn presence(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    arity(&args, 2, 2)?;
    let layout = layout()?;
    let room = args::name(layout, at(&args, 1)?, "room")?;
    let key = layout.keys(room.partition)?.room_users(room.name);
    sorted_fields(ops::hgetall(ctx, &key)?)
}

fn sorted_fields(pairs: Vec<(String, String)>) -> RedisResult {
    let mut fields: Vec<String> = pairs.into_iter().map(|(field, _)| field).collect();
    fields.sort();
    Ok(RedisValue::Array(
        fields.into_iter().map(RedisValue::BulkString).collect(),
    ))
}
