//! Node leases: whether a node holds one (`{T}:nodes`, node → expiry).
//!
//! A node registers connections and memberships in a partition only while it holds a
//! lease there, so that the lease sweep can remove them if the node dies; a node's
//! shared inbox lives as long as it holds a lease anywhere.

use redis_module::{Context, RedisError};
use roomcast_common::codes::Code;
use roomcast_common::keys::PartitionKeys;

use crate::args::code_error;
use crate::ops;
use crate::state::layout;

/// Whether `node` holds a lease in the partition of `keys`.
pub fn holds_lease(ctx: &Context, keys: &PartitionKeys, node: &str) -> Result<bool, RedisError> {
    Ok(ops::hget(ctx, &keys.nodes(), node)?.is_some())
}

/// Fails with `NOLEASE` unless `node` holds a lease in the partition: connections of a
/// node without a lease could never be swept if the node died.
pub fn require_lease(ctx: &Context, keys: &PartitionKeys, node: &str) -> Result<(), RedisError> {
    if !holds_lease(ctx, keys, node)? {
        return Err(code_error(
            Code::NoLease,
            format!(
                "node {node} holds no lease in partition {}; call RC.NODE.LEASE first",
                keys.prefix()
            ),
        ));
    }
    Ok(())
}

/// Whether `node` holds a lease in any partition.
pub fn holds_any_lease(ctx: &Context, node: &str) -> Result<bool, RedisError> {
    for keys in &layout()?.keys {
        if holds_lease(ctx, keys, node)? {
            return Ok(true);
        }
    }
    Ok(false)
}
