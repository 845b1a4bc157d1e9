//! `RC.CONNECT`, `RC.DISCONNECT` and `RC.CONNS`: which connections a user has, where.

use redis_module::{Context, RedisResult, RedisString, RedisValue};
use roomcast_common::command::{self, Connect, Disconnect};

use crate::args::{check, coded, err};
use crate::membership::{self, conn_value, require_lease, split_conn_value};
use crate::state::layout;
use crate::{config, ops};

/// `RC.CONNECT user node conn [META json]` → the user's number of connections.
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

    let conns_key = keys.user_conns(user.name);
    let value = conn_value(node, meta);
    match ops::hget(ctx, &conns_key, conn)? {
        Some(existing) if split_conn_value(&existing).0 != node => {
            return Err(err(format!(
                "connection {conn} of user {} is registered on another node",
                user.name
            )));
        }
        Some(_) => {}
        None => {
            let max = config::get(&config::MAX_CONNS_PER_USER);
            let count = ops::count(ctx, &conns_key)?;
            if max > 0 && count >= max as u64 {
                return Err(coded(
                    "TOOMANY",
                    format!(
                        "user {} already has {count} connections (max-conns-per-user {max})",
                        user.name
                    ),
                ));
            }
        }
    }
    ops::write(
        ctx,
        "HSET",
        &[conns_key.as_bytes(), conn.as_bytes(), value.as_bytes()],
    )?;
    ops::write(
        ctx,
        "SADD",
        &[
            keys.node_users(node).as_bytes(),
            roomcast_common::keys::pair(conn, user.name).as_bytes(),
        ],
    )?;
    let total = ops::count(ctx, &conns_key)?;
    Ok(RedisValue::Integer(
        i64::try_from(total).unwrap_or(i64::MAX),
    ))
}

/// `RC.DISCONNECT user node conn` → 1 when removed, 0 when it was not registered.
pub fn disconnect(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    let layout = layout()?;
    let Disconnect { user, node, conn } = check(command::disconnect(&layout.partitioner, &args))?;
    let removed = membership::disconnect(
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
    let mut list = membership::user_conns(ctx, layout.routed(&args, user.partition)?, user.name)?;
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
