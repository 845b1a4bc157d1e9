//! `RC.NODE.LEASE` and `RC.NODE.DOWN`: edge nodes announcing they are alive, or leaving.

use redis_module::{Context, RedisResult, RedisString, RedisValue};
use roomcast_common::command::{self, Lease, NodeDown, NodeLease, NodeLeaseAll};

use crate::args::{check, err};
use crate::state::layout;
use crate::{leases, node_removal, ops};

/// `RC.NODE.LEASE`, in either form:
///
/// - `partition node ttl_ms` → 1 when the lease is new (the node was not known in this
///   partition: it must register its connections again), 0 when renewed.
/// - `node ttl_ms` (standalone servers only) → the lease in every partition at once,
///   one command per renewal instead of one per partition: the array of the partitions
///   where it was new. Under Redis Cluster each partition lives on its own shard, so it
///   is refused there.
///
/// Each lease expires at the absolute time now + `ttl_ms`, replicated as such.
pub fn lease(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    let layout = layout()?;
    match check(command::node_lease_any(&layout.partitioner, &args))? {
        Lease::One(NodeLease {
            partition,
            node,
            ttl_ms,
        }) => {
            let keys = layout.routed(&args, partition)?;
            let expires = ops::now_ms().saturating_add(ttl_ms);
            let created = leases::renew(ctx, partition as usize, keys, node, expires)?;
            Ok(RedisValue::Integer(i64::from(created)))
        }
        Lease::All(NodeLeaseAll { node, ttl_ms }) => {
            if layout.cluster {
                return Err(err(
                    "under Redis Cluster renew each partition's lease on its shard: \
                     RC.NODE.LEASE <partition> <node> <ttl_ms>",
                ));
            }
            let expires = ops::now_ms().saturating_add(ttl_ms);
            let mut created = Vec::new();
            for (p, keys) in layout.keys.iter().enumerate() {
                if leases::renew(ctx, p, keys, node, expires)? {
                    created.push(RedisValue::Integer(p as i64));
                }
            }
            Ok(RedisValue::Array(created))
        }
    }
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
