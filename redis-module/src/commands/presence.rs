//! `RC.CONNECT`, `RC.DISCONNECT` and `RC.CONNS`: which connections a user has, where.

use redis_module::{Context, RedisResult, RedisString, RedisValue};
use roomcast_common::command::{self, Connect, Disconnect};

use crate::args::check;
use crate::config;
use crate::connections;
use crate::leases::require_lease;
use crate::state::layout;

/// `RC.CONNECT user node conn [META json]` → the user's number of connections. Needs
/// the node's lease in the user's partition (`NOLEASE`); over `max-conns-per-user`:
/// `TOOMANY`.
pub fn connect(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    let layout = layout()?;
    let Connect {
        user,
        node,
        conn,
        meta,
    } = check(command::connect(&layout.partitioner, &args))?;
    let keys = layout.routed(&args, user.partition)?;
    require_lease(ctx, keys, node)?;
    let max_conns = config::get(&config::MAX_CONNS_PER_USER);
    let total = connections::connect(ctx, keys, user.name, node, conn, meta, max_conns)?;
    Ok(RedisValue::Integer(
        i64::try_from(total).unwrap_or(i64::MAX),
    ))
}

/// `RC.DISCONNECT user node conn` → 1 when removed, 0 when it was not registered.
pub fn disconnect(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    let layout = layout()?;
    let Disconnect { user, node, conn } = check(command::disconnect(&layout.partitioner, &args))?;
    let removed = connections::disconnect(
        ctx,
        layout.routed(&args, user.partition)?,
        user.name,
        node,
        conn,
    )?;
    Ok(RedisValue::Integer(i64::from(removed)))
}

/// `RC.CONNS user` → `[[conn, node, meta-or-nil], …]`, sorted by connection id.
pub fn conns(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    let layout = layout()?;
    let user = check(command::conns(&layout.partitioner, &args))?;
    let mut list = connections::user_conns(ctx, layout.routed(&args, user.partition)?, user.name)?;
    list.sort();
    Ok(RedisValue::Array(
        list.into_iter()
            .map(|(conn, node, meta)| {
                RedisValue::Array(vec![
                    RedisValue::BulkString(conn),
                    RedisValue::BulkString(node),
                    meta.map_or(RedisValue::Null, RedisValue::BulkString),
                ])
            })
            .collect(),
    ))
}
