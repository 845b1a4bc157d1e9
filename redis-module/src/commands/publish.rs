//! `RC.PUBLISH` and `RC.SEND`: routing a message into the inbox of exactly the nodes
//! that hold a recipient — O(nodes), never O(members). [`address`] is the per-message
//! step `RC.PUBLISHM` ([`super::publish_batch`]) shares.

use redis_module::{Context, RedisError, RedisResult, RedisString, RedisValue};
use roomcast_common::command::{self, Direct, Publish};
use roomcast_common::entry::Kind;
use roomcast_common::keys::{split_pair, PartitionKeys};
use roomcast_common::offset::Offset;

use crate::args::check;
use crate::inbox::Entry;
use crate::state::{layout, PUBLISHED, SENT};
use crate::{config, connections, history, ops, room_membership, sender};

/// Refuses payloads over `max-payload-bytes` (`TOOLARGE`).
fn check_payload(data: &[u8]) -> Result<(), RedisError> {
    check(command::payload(
        data,
        config::get(&config::MAX_PAYLOAD_BYTES),
    ))
}

/// One message checked, recorded in the room's history and addressed: what
/// `RC.PUBLISH` and each message of `RC.PUBLISHM` do before writing inboxes.
pub struct Addressed {
    /// The nodes whose inbox gets the message (those with a recipient), in the room's
    /// order.
    pub nodes: Vec<String>,
    /// The member connections it goes to (the sending `CONN` excluded).
    pub connections: i64,
    /// Its place in the room's history (`None` while history is off).
    pub offset: Option<Offset>,
}

impl Addressed {
    /// The message's reply: `[connections, nodes, offset]`.
    pub fn reply(&self) -> RedisValue {
        RedisValue::Array(vec![
            RedisValue::Integer(self.connections),
            RedisValue::Integer(self.nodes.len() as i64),
            history::offset_value(self.offset.as_ref()),
        ])
    }

    /// The offset as an entry field (empty while history is off).
    pub fn offset_text(&self) -> String {
        self.offset
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default()
    }
}

/// Checks message `m` (its payload size and its sender's policy), records it in the
/// room's history and finds the nodes holding a recipient. Writes no inbox.
pub fn address(
    ctx: &Context,
    keys: &PartitionKeys,
    m: &Publish<'_>,
) -> Result<Addressed, RedisError> {
    check_payload(m.data)?;
    if let Some(from) = &m.from {
        sender::check(ctx, from.name, m.room.partition)?;
    }
    let room_nodes = room_membership::room_nodes(ctx, keys, m.room.name)?;
    let skip_node = match m.conn {
        Some(conn) => ops::hget(ctx, &keys.room_conns(m.room.name), conn)?
            .and_then(|v| split_pair(&v).map(|(node, _)| node.to_string())),
        None => None,
    };
    let offset = if history::enabled() {
        let from = m.from.as_ref().map_or("", |f| f.name);
        Some(history::record(
            ctx,
            keys,
            m.room.name,
            from.as_bytes(),
            m.data,
        )?)
    } else {
        None
    };
    let mut nodes = Vec::with_capacity(room_nodes.len());
    let mut connections = 0i64;
    for (node, count) in room_nodes {
        let recipients = if skip_node.as_deref() == Some(node.as_str()) {
            count - 1
        } else {
            count
        };
        if recipients > 0 {
            connections += recipients;
            nodes.push(node);
        }
    }
    Ok(Addressed {
        nodes,
        connections,
        offset,
    })
}

/// The values of message `m`'s inbox entry ([`Kind::Message`]'s fields, in order).
pub fn message_values<'a>(m: &Publish<'a>, offset_text: &'a str) -> [&'a [u8]; 5] {
    [
        m.room.name.as_bytes(),
        m.from.as_ref().map_or("", |f| f.name).as_bytes(),
        m.conn.unwrap_or("").as_bytes(),
        offset_text.as_bytes(),
        m.data,
    ]
}

/// `RC.PUBLISH room data [FROM user] [CONN conn]` → `[connections, nodes, offset]`.
///
/// `connections` counts the member connections the message is routed to (the sending
/// `CONN` excluded), `nodes` the inboxes written, `offset` the message's place in the
/// room's history (`<epoch>:<seq>`; nil while `history-len` is 0).
pub fn publish(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    let layout = layout()?;
    let message = check(command::publish(&layout.partitioner, &args))?;
    let keys = layout.routed(&args, message.room.partition)?;
    let addressed = address(ctx, keys, &message)?;
    let offset_text = addressed.offset_text();
    let entry = Entry::new(ctx, Kind::Message, &message_values(&message, &offset_text))?;
    for node in &addressed.nodes {
        entry.route_to(ctx, keys, node, 1)?;
    }
    PUBLISHED.add(1);
    Ok(addressed.reply())
}

/// `RC.SEND user data [FROM user]` → `[connections, nodes]`: a direct message to every
/// connection of a user. `FROM` is subject to the same policy as `RC.PUBLISH`.
pub fn send(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    let layout = layout()?;
    let Direct { user, data, from } = check(command::send(&layout.partitioner, &args))?;
    check_payload(data)?;
    if let Some(from) = &from {
        sender::check(ctx, from.name, user.partition)?;
    }

    let keys = layout.routed(&args, user.partition)?;
    let from_name = from.map_or("", |f| f.name);
    let entry = Entry::new(
        ctx,
        Kind::Direct,
        &[user.name.as_bytes(), from_name.as_bytes(), data],
    )?;
    let (connections, nodes) = connections::tell_user(ctx, keys, user.name, &entry)?;
    SENT.add(1);
    Ok(RedisValue::Array(vec![
        RedisValue::Integer(connections as i64),
        RedisValue::Integer(nodes as i64),
    ]))
}
