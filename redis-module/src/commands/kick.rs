//! `RC.KICK`: close every connection of a user, on every edge.

use redis_module::{Context, RedisResult, RedisString, RedisValue};
use roomcast_common::entry::Kind;

use crate::args::{self, arity, at, err};
use crate::inbox::Entry;
use crate::membership;
use crate::state::layout;

/// A WebSocket close reason may hold at most 123 bytes.
const MAX_REASON_BYTES: usize = 123;
/// Reason sent when none is given.
const DEFAULT_REASON: &str = "kicked";

/// `RC.KICK user [REASON text]` → `[connections, nodes]`: routes a kick to every node
/// holding a connection of the user; each edge closes them with 1008 and the reason,
/// then reports the disconnects as usual.
pub fn kick(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    arity(&args, 2, 4)?;
    let layout = layout()?;
    let user = args::name(layout, at(&args, 1)?, "user")?;
    let [reason] = args::options(args.get(2..).unwrap_or_default(), ["REASON"])?;
    let reason = match reason {
        Some(reason) => {
            let text =
                std::str::from_utf8(reason.as_slice()).map_err(|_| err("REASON must be UTF-8"))?;
            if text.len() > MAX_REASON_BYTES || text.chars().any(char::is_control) {
                return Err(err(format!(
                    "REASON must be at most {MAX_REASON_BYTES} bytes without control characters"
                )));
            }
            text
        }
        None => DEFAULT_REASON,
    };
    let keys = layout.keys(user.partition)?;
    let entry = Entry::new(
        ctx,
        Kind::Kick,
        &[user.name.as_bytes(), b"", reason.as_bytes()],
    )?;
    let (connections, nodes) = membership::tell_user(ctx, keys, user.name, &entry)?;
    Ok(RedisValue::Array(vec![
        RedisValue::Integer(connections as i64),
        RedisValue::Integer(nodes as i64),
    ]))
}
