//! The Redis key layout of a partition: every key name roomcast uses, in one place.
//!
//! All keys of partition `p` start with `{tag}` (its hash tag), so they share one
//! cluster slot. `T` below is the tag; `R` a room, `U` a user, `N` a node, `C` a
//! connection. No room-key suffix is a suffix of another, so two rooms' keys never
//! collide (whatever `:` their names contain).
//!
//! | key | type | contents |
//! |---|---|---|
//! | `{T}:nodes` | hash | node → lease expiry (absolute Unix ms) |
//! | `{T}:inbox:N` | stream | entries routed to node `N` (see [`crate::entry`]); on a standalone server only partition 0's is used, for all partitions |
//! | `{T}:live:N` | channel | not a key: the pub/sub channel the module pushes node `N`'s new inbox entries to (see [`crate::push`]); on a standalone server only partition 0's is used, like the inbox |
//! | `{T}:rooms` | set | rooms of the partition with at least one member |
//! | `{T}:room:R:conns` | hash | connection → `node:user` |
//! | `{T}:room:R:users` | hash | user → number of its connections in the room |
//! | `{T}:room:R:nodes` | hash | node → number of the room's connections on it (routing) |
//! | `{T}:room:R:seq` | string | `epoch seq`: the room's history position (see [`crate::offset`]) |
//! | `{T}:room:R:hist` | stream | retained messages, id `0-<seq>`, fields `from`, `data` |
//! | `{T}:user:U:conns` | hash | connection → `node` or `node meta-json` |
//! | `{T}:node:N:rooms` | set | `conn:room` memberships held by node `N` (for sweeps) |
//! | `{T}:node:N:users` | set | `conn:user` connections held by node `N` (for sweeps) |
//! | `{T}:node:N:rooms:drain` | set | memberships of a removed node still to remove (removal runs in slices) |
//! | `{T}:node:N:users:drain` | set | connections of a removed node still to remove |
//! | `{T}:draining` | set | nodes whose removal from the partition is not finished |
//! | `{T}:sender:U` | string | publish-policy state of sender `U` (rate, strikes, ban) |
//! | `{T}:throttle:K` | string | `RC.THROTTLE` state of key `K` (theoretical arrival time) |

/// Key builder for one partition, holding its `{tag}` prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionKeys {
    /// `{tag}`, braces included.
    prefix: String,
}

impl PartitionKeys {
    /// Keys of the partition whose hash tag is `tag` (without braces).
    pub fn new(tag: &str) -> Self {
        Self {
            prefix: format!("{{{tag}}}"),
        }
    }

    /// The `{tag}` prefix itself.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Lease table of the partition.
    pub fn nodes(&self) -> String {
        format!("{}:nodes", self.prefix)
    }

    /// Inbox stream of `node` in this partition.
    pub fn inbox(&self, node: &str) -> String {
        format!("{}:inbox:{node}", self.prefix)
    }

    /// The pub/sub channel `node`'s new inbox entries are pushed to (next to its inbox).
    pub fn live(&self, node: &str) -> String {
        format!("{}:live:{node}", self.prefix)
    }

    /// Set of rooms with members.
    pub fn rooms(&self) -> String {
        format!("{}:rooms", self.prefix)
    }

    /// Connections of a room.
    pub fn room_conns(&self, room: &str) -> String {
        format!("{}:room:{room}:conns", self.prefix)
    }

    /// Per-user connection counts of a room.
    pub fn room_users(&self, room: &str) -> String {
        format!("{}:room:{room}:users", self.prefix)
    }

    /// Per-node connection counts of a room (the routing table).
    pub fn room_nodes(&self, room: &str) -> String {
        format!("{}:room:{room}:nodes", self.prefix)
    }

    /// History position of a room (`epoch seq`).
    pub fn room_seq(&self, room: &str) -> String {
        format!("{}:room:{room}:seq", self.prefix)
    }

    /// Retained messages of a room.
    pub fn room_hist(&self, room: &str) -> String {
        format!("{}:room:{room}:hist", self.prefix)
    }

    /// Connections of a user.
    pub fn user_conns(&self, user: &str) -> String {
        format!("{}:user:{user}:conns", self.prefix)
    }

    /// Room memberships held by a node.
    pub fn node_rooms(&self, node: &str) -> String {
        format!("{}:node:{node}:rooms", self.prefix)
    }

    /// User connections held by a node.
    pub fn node_users(&self, node: &str) -> String {
        format!("{}:node:{node}:users", self.prefix)
    }

    /// Drain set of a removed node's memberships: `conn:room` pairs still to remove.
    pub fn drain_rooms(&self, node: &str) -> String {
        format!("{}:drain", self.node_rooms(node))
    }

    /// Drain set of a removed node's connections: `conn:user` pairs still to remove.
    pub fn drain_users(&self, node: &str) -> String {
        format!("{}:drain", self.node_users(node))
    }

    /// Nodes whose removal from the partition is not finished.
    pub fn draining(&self) -> String {
        format!("{}:draining", self.prefix)
    }

    /// Publish-policy state of a sender.
    pub fn sender(&self, user: &str) -> String {
        format!("{}:sender:{user}", self.prefix)
    }

    /// `RC.THROTTLE` state of a key.
    pub fn throttle(&self, key: &str) -> String {
        format!("{}:throttle:{key}", self.prefix)
    }
}

/// Joins a connection id and a name into one set member or hash value (`conn:name`).
/// Ids never contain `:`, so [`split_pair`] recovers both parts.
pub fn pair(id: &str, name: &str) -> String {
    let mut out = String::with_capacity(id.len() + 1 + name.len());
    out.push_str(id);
    out.push(':');
    out.push_str(name);
    out
}

/// Splits a `conn:name` / `node:user` value at its first `:`.
pub fn split_pair(value: &str) -> Option<(&str, &str)> {
    value.split_once(':')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_the_partition_tag() {
        let k = PartitionKeys::new("3.17");
        assert_eq!(k.nodes(), "{3.17}:nodes");
        assert_eq!(k.inbox("edge-1"), "{3.17}:inbox:edge-1");
        assert_eq!(k.live("edge-1"), "{3.17}:live:edge-1");
        assert_eq!(k.room_conns("lobby"), "{3.17}:room:lobby:conns");
        assert_eq!(k.user_conns("ann"), "{3.17}:user:ann:conns");
        for key in [k.rooms(), k.node_rooms("n"), k.sender("u"), k.throttle("t")] {
            assert!(key.starts_with("{3.17}:"));
        }
    }

    #[test]
    fn drain_keys_sit_next_to_the_node_indexes() {
        let keys = PartitionKeys::new("3.17");
        assert_eq!(keys.drain_rooms("n1"), "{3.17}:node:n1:rooms:drain");
        assert_eq!(keys.drain_users("n1"), "{3.17}:node:n1:users:drain");
        assert_eq!(keys.draining(), "{3.17}:draining");
    }

    #[test]
    fn room_keys_never_collide_across_rooms() {
        let k = PartitionKeys::new("t");
        let a = [
            k.room_conns("x:users"),
            k.room_users("x:users"),
            k.room_seq("x:hist"),
            k.room_hist("x:seq"),
        ];
        let b = [
            k.room_conns("x"),
            k.room_users("x"),
            k.room_nodes("x"),
            k.room_seq("x"),
            k.room_hist("x"),
        ];
        for key in &a {
            assert!(!b.contains(key));
        }
    }

    #[test]
    fn pairs_round_trip_even_when_the_name_has_colons() {
        let joined = pair("c1", "room:with:colons");
        assert_eq!(split_pair(&joined), Some(("c1", "room:with:colons")));
    }
}
