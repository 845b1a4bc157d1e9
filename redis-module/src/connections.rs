//! Presence: which connections a user has, on which node — the state changes behind
//! `RC.CONNECT` and `RC.DISCONNECT`, the reads behind `RC.CONNS`, and the routing of
//! entries to every node holding one of a user's connections (`RC.SEND`, `RC.KICK`).
//!
//! A user's connections are the hash `{T}:user:U:conns` (conn → `node [meta]`); each
//! node indexes its own in `{T}:node:N:users` (`conn:user`), which is what the lease
//! sweep removes when the node dies. Every function here works inside one partition.

use redis_module::{Context, RedisError};
use roomcast_common::codes::Code;
use roomcast_common::keys::{pair, PartitionKeys};

use crate::args::{code_error, err};
use crate::inbox::Entry;
use crate::ops;

/// Stored value of a user's connection: `node`, or `node meta-json`.
pub fn conn_value(node: &str, meta: Option<&str>) -> String {
    match meta {
        Some(meta) => format!("{node} {meta}"),
        None => node.to_string(),
    }
}

/// Splits a stored connection value into node and metadata.
pub fn split_conn_value(value: &str) -> (&str, Option<&str>) {
    match value.split_once(' ') {
        Some((node, meta)) => (node, Some(meta)),
        None => (value, None),
    }
}

/// Registers connection `conn` of `user` on `node` (idempotent for the same node, which
/// updates `meta`). A new connection past `max_conns` (0 = unlimited) is refused with
/// `TOOMANY`. Returns the user's number of connections.
pub fn connect(
    ctx: &Context,
    keys: &PartitionKeys,
    user: &str,
    node: &str,
    conn: &str,
    meta: Option<&str>,
    max_conns: i64,
) -> Result<u64, RedisError> {
    let conns_key = keys.user_conns(user);
    match ops::hget(ctx, &conns_key, conn)? {
        Some(existing) if split_conn_value(&existing).0 != node => {
            return Err(err(format!(
                "connection {conn} of user {user} is registered on another node"
            )));
        }
        Some(_) => {}
        None => {
            let count = ops::count(ctx, &conns_key)?;
            if max_conns > 0 && count >= max_conns as u64 {
                return Err(code_error(
                    Code::TooMany,
                    format!(
                        "user {user} already has {count} connections \
                         (max-conns-per-user {max_conns})"
                    ),
                ));
            }
        }
    }
    let value = conn_value(node, meta);
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
            pair(conn, user).as_bytes(),
        ],
    )?;
    ops::count(ctx, &conns_key)
}

/// Removes connection `conn` (on `node`) from a user's presence. Returns false when
/// it was not registered.
pub fn disconnect(
    ctx: &Context,
    keys: &PartitionKeys,
    user: &str,
    node: &str,
    conn: &str,
) -> Result<bool, RedisError> {
    let conns_key = keys.user_conns(user);
    let Some(existing) = ops::hget(ctx, &conns_key, conn)? else {
        return Ok(false);
    };
    let (owner, _) = split_conn_value(&existing);
    if owner != node {
        return Err(err(format!(
            "connection {conn} of user {user} belongs to node {owner}, not {node}"
        )));
    }
    ops::write(ctx, "HDEL", &[conns_key.as_bytes(), conn.as_bytes()])?;
    ops::write(
        ctx,
        "SREM",
        &[
            keys.node_users(node).as_bytes(),
            pair(conn, user).as_bytes(),
        ],
    )?;
    Ok(true)
}

/// The connections of a user: `(conn, node, meta)`.
pub fn user_conns(
    ctx: &Context,
    keys: &PartitionKeys,
    user: &str,
) -> Result<Vec<(String, String, Option<String>)>, RedisError> {
    Ok(ops::hgetall(ctx, &keys.user_conns(user))?
        .into_iter()
        .map(|(conn, value)| {
            let (node, meta) = split_conn_value(&value);
            (conn.clone(), node.to_string(), meta.map(str::to_string))
        })
        .collect())
}

/// The distinct nodes holding connections of `user`, sorted, and the number of its
/// connections.
pub fn user_nodes(
    ctx: &Context,
    keys: &PartitionKeys,
    user: &str,
) -> Result<(usize, Vec<String>), RedisError> {
    let conns = user_conns(ctx, keys, user)?;
    let count = conns.len();
    let mut nodes: Vec<String> = conns.into_iter().map(|(_, node, _)| node).collect();
    nodes.sort_unstable();
    nodes.dedup();
    Ok((count, nodes))
}

/// Writes `entry` into the inbox of every node holding a connection of `user`; returns
/// `(connections, nodes)`.
pub fn tell_user(
    ctx: &Context,
    keys: &PartitionKeys,
    user: &str,
    entry: &Entry,
) -> Result<(usize, usize), RedisError> {
    let (connections, nodes) = user_nodes(ctx, keys, user)?;
    for node in &nodes {
        entry.route_to(ctx, keys, node, 1)?;
    }
    Ok((connections, nodes.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_values_round_trip_with_and_without_meta() {
        assert_eq!(conn_value("n1", None), "n1");
        assert_eq!(split_conn_value("n1"), ("n1", None));
        let value = conn_value("n1", Some("{\"app\": \"web ui\"}"));
        assert_eq!(value, "n1 {\"app\": \"web ui\"}");
        // Node ids never contain a space, so the metadata comes back whole.
        assert_eq!(
            split_conn_value(&value),
            ("n1", Some("{\"app\": \"web ui\"}"))
        );
    }
}
