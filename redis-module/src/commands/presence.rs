//! `RC.CONNECT`, `RC.DISCONNECT` and `RC.CONNS`: which connections a user has, where.

use redis_module::{Context, RedisError, RedisResult, RedisString, RedisValue};
use roomcast_common::json;

use crate::args::{self, arity, at, coded, err};
use crate::membership::{self, conn_value, require_lease, split_conn_value};
use crate::state::layout;
use crate::{config, ops};

/// Largest `META` document, in bytes.
const MAX_META_BYTES: usize = 4096;

/// `RC.CONNECT user node conn [META json]` → the user's number of connections.
pub fn connect(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    arity(&args, 4, 6)?;
    let layout = layout()?;
    let user = args::name(layout, at(&args, 1)?, "user")?;
    let node = args::id(at(&args, 2)?, "node")?;
    let conn = args::id(at(&args, 3)?, "connection")?;
    let [meta] = args::options(args.get(4..).unwrap_or_default(), ["META"])?;
    let meta = match meta {
        Some(meta) => Some(check_meta(meta.as_slice())?),
        None => None,
    };
    let keys = layout.keys(user.partition)?;
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

fn check_meta(meta: &[u8]) -> Result<&str, RedisError> {
    if meta.len() > MAX_META_BYTES {
        return Err(err(format!("META is larger than {MAX_META_BYTES} bytes")));
    }
    if !json::is_valid(meta) {
        return Err(err("META must be a valid JSON document"));
    }
    let text = std::str::from_utf8(meta).map_err(|_| err("META must be UTF-8"))?;
    Ok(text.trim())
}

/// `RC.DISCONNECT user node conn` → 1 when removed, 0 when it was not registered.
pub fn disconnect(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    arity(&args, 4, 4)?;
    let layout = layout()?;
    let user = args::name(layout, at(&args, 1)?, "user")?;
    let node = args::id(at(&args, 2)?, "node")?;
    let conn = args::id(at(&args, 3)?, "connection")?;
    let removed = membership::disconnect(ctx, layout.keys(user.partition)?, user.name, node, conn)?;
    Ok(RedisValue::Integer(i64::from(removed)))
}

/// `RC.CONNS user` → `[[conn, node, meta-or-nil], …]`, sorted by connection id.
pub fn conns(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    arity(&args, 2, 2)?;
    let layout = layout()?;
    let user = args::name(layout, at(&args, 1)?, "user")?;
    let mut list = membership::user_conns(ctx, layout.keys(user.partition)?, user.name)?;
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
