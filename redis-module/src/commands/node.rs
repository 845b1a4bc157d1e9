//! `RC.NODE.LEASE` and `RC.NODE.DOWN`: edge nodes announcing they are alive, or leaving.

use redis_module::{Context, RedisResult, RedisString, RedisValue};

use crate::args::{self, arity, at};
use crate::state::layout;
use crate::{membership, ops};

/// Longest lease: one day.
const MAX_LEASE_MS: i64 = 86_400_000;

/// `RC.NODE.LEASE partition node ttl_ms` → 1 when the lease is new (the node was not
/// known in this partition: it must register its connections again), 0 when renewed.
pub fn lease(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    arity(&args, 4, 4)?;
    let layout = layout()?;
    let partition = args::partition(layout, at(&args, 1)?)?;
    let node = args::id(at(&args, 2)?, "node")?;
    let ttl = args::int(at(&args, 3)?, "ttl_ms", 1, MAX_LEASE_MS)?;
    let keys = layout.keys(partition)?;
    let expires = ops::now_ms().saturating_add(ttl).to_string();
    let created = ops::write(
        ctx,
        "HSET",
        &[keys.nodes().as_bytes(), node.as_bytes(), expires.as_bytes()],
    )?;
    Ok(RedisValue::Integer(created))
}

/// `RC.NODE.DOWN partition node` → `[connections, memberships]` removed. Leave events
/// go to the nodes of the remaining members.
pub fn down(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    arity(&args, 3, 3)?;
    let layout = layout()?;
    let partition = args::partition(layout, at(&args, 1)?)?;
    let node = args::id(at(&args, 2)?, "node")?;
    let removed = membership::remove_node(ctx, layout.keys(partition)?, node)?;
    Ok(RedisValue::Array(vec![
        RedisValue::Integer(removed.connections),
        RedisValue::Integer(removed.memberships),
    ]))
}
