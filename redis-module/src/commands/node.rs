//! `RC.NODE.LEASE` and `RC.NODE.DOWN`: edge nodes announcing they are alive, or leaving.

use redis_module::{Context, RedisResult, RedisString, RedisValue};
use roomcast_common::command::{self, NodeDown, NodeLease};

use crate::args::check;
use crate::state::layout;
use crate::{node_removal, ops};

/// `RC.NODE.LEASE partition node ttl_ms` → 1 when the lease is new (the node was not
/// known in this partition: it must register its connections again), 0 when renewed.
pub fn lease(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    let layout = layout()?;
    let NodeLease {
        partition,
        node,
        ttl_ms: ttl,
    } = check(command::node_lease(&layout.partitioner, &args))?;
    let keys = layout.routed(&args, partition)?;
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
    let layout = layout()?;
    let NodeDown { partition, node } = check(command::node_down(&layout.partitioner, &args))?;
    let removed = node_removal::remove_node(ctx, layout.routed(&args, partition)?, node)?;
    Ok(RedisValue::Array(vec![
        RedisValue::Integer(removed.connections),
        RedisValue::Integer(removed.memberships),
    ]))
}
