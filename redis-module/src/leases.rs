//! Node leases (`{T}:nodes`, node → expiry): taking or renewing one, and whether a node
//! holds one.
//!
//! A node registers connections and memberships in a partition only while it holds a
//! lease there, so that the lease sweep can remove them if the node dies; a node's
//! shared inbox lives as long as it holds a lease anywhere.

use std::os::raw::c_int;

use redis_module::raw::{self, KeyType};
use redis_module::{Context, RedisError};
use roomcast_common::codes::Code;
use roomcast_common::keys::PartitionKeys;

use crate::args::{code_error, coded, err};
use crate::ops::{self, RawKey};
use crate::state::layout;
use crate::sweep_memory;

/// Sets `node`'s lease in partition `p` (keys `keys`) to expire at `expires_ms`
/// (absolute Unix ms); true when the lease is new (the node was unknown there).
///
/// It writes `{T}:nodes` with the low-level hash API (no `RM_Call`) and replicates the
/// effect as `HSET {T}:nodes node expires_ms`, so replicas and the AOF get the same
/// absolute expiry; the sweep's memory learns the expiry, and the sweep's timer is
/// re-armed when it is the earliest ([`sweep_memory::lease_write`]).
pub fn renew(
    ctx: &Context,
    p: usize,
    keys: &PartitionKeys,
    node: &str,
    expires_ms: i64,
) -> Result<bool, RedisError> {
    let table = keys.nodes();
    let name = ops::string(ctx, table.as_str());
    let key = RawKey::open(ctx, &name, true)?;
    if !matches!(key.key_type(), KeyType::Empty | KeyType::Hash) {
        return Err(coded(
            "WRONGTYPE",
            format!("roomcast key {table} holds the wrong kind of value"),
        ));
    }
    // SAFETY: function pointers are set by Redis at module load and never change.
    let hash_set = unsafe { raw::RedisModule_HashSet }
        .ok_or_else(|| err("internal: RM_HashSet is not available"))?;
    let expires = expires_ms.to_string();
    let field = ops::string(ctx, node);
    let value = ops::string(ctx, expires.as_str());
    // RM_HashSet without flags counts the fields it *updated*: 0 means a new node.
    let updated = sweep_memory::lease_write(ctx, p, expires_ms, || {
        // SAFETY: the key is open for writing and holds a hash or nothing; field and
        // value live until after the call; the argument list ends with NULL.
        unsafe {
            hash_set(
                key.as_ptr(),
                raw::REDISMODULE_HASH_NONE as c_int,
                field.inner,
                value.inner,
                std::ptr::null_mut::<raw::RedisModuleString>(),
            )
        }
    });
    drop(key);
    ctx.replicate("HSET", &[&name, &field, &value][..]);
    let created = updated == 0;
    if created {
        // A new field fires no keyspace event (a new table fires `new`, ignored as the
        // lease path's own write).
        sweep_memory::dataset_changed(ctx);
    }
    Ok(created)
}

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
