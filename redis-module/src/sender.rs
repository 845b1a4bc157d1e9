//! The publish policy, enforced atomically inside `RC.PUBLISH` / `RC.SEND … FROM`.
//!
//! Each sender has one small state string: its GCRA theoretical arrival time, the
//! number of limited attempts in a row ("strikes") and the end of any ban. A sender
//! over `publish-rate`/`publish-burst` gets `LIMITED retry_after_ms=N`; after
//! `ban-after` strikes it is banned for `ban-ms` (`BANNED retry_after_ms=N`) and a kick
//! for all of its connections is routed to the nodes that hold them.
//!
//! Where the state lives: standalone, in the sender's own partition, so the limit is
//! exact per sender across all rooms. Under Redis Cluster a command may only touch the
//! slot of its first argument, so the state lives in the partition of the room (or
//! direct-message recipient) and the limit applies per sender per partition.

use redis_module::{Context, RedisError};
use roomcast_common::codes::Code;
use roomcast_common::entry::Kind;
use roomcast_common::gcra::{self, ceil_millis, Quota, TatStore};
use roomcast_common::keys::PartitionKeys;

use crate::args::{code_error, err};
use crate::connections;
use crate::inbox::Entry;
use crate::state::{layout, BANNED, LIMITED};
use crate::{config, ops};

/// Close reason sent with the kick that follows a ban.
pub const BAN_REASON: &str = "banned: publishing too fast";

/// A sender's policy state, as stored: `tat_us strikes ban_until_ms`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SenderState {
    /// GCRA theoretical arrival time, Unix µs (0: none).
    pub tat_us: i64,
    /// Limited attempts in a row.
    pub strikes: i64,
    /// End of the current ban, Unix ms (0: not banned).
    pub ban_until_ms: i64,
}

impl SenderState {
    /// Parses the stored form; anything malformed counts as a fresh sender.
    pub fn parse(bytes: &[u8]) -> Self {
        let text = std::str::from_utf8(bytes).unwrap_or("");
        let mut parts = text.split(' ').map(|p| p.parse::<i64>().unwrap_or(0));
        Self {
            tat_us: parts.next().unwrap_or(0),
            strikes: parts.next().unwrap_or(0),
            ban_until_ms: parts.next().unwrap_or(0),
        }
    }

    /// The stored form.
    pub fn encode(&self) -> String {
        format!("{} {} {}", self.tat_us, self.strikes, self.ban_until_ms)
    }

    /// When the state can be forgotten: the later of the TAT and the ban end.
    fn expires_at_ms(&self, now_ms: i64) -> i64 {
        ceil_millis(self.tat_us)
            .max(self.ban_until_ms)
            .max(now_ms + 1)
    }
}

/// The GCRA view of a sender state at a given time.
struct Clocked<'a> {
    now_us: i64,
    state: &'a mut SenderState,
}

impl TatStore for Clocked<'_> {
    fn now_us(&self) -> i64 {
        self.now_us
    }
    fn tat_us(&self) -> Option<i64> {
        (self.state.tat_us > 0).then_some(self.state.tat_us)
    }
    fn set_tat_us(&mut self, tat_us: i64) {
        self.state.tat_us = tat_us;
    }
}

/// What the policy decided for one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Go ahead.
    Allowed,
    /// Over the rate: try again after this many ms.
    Limited(i64),
    /// Banned (now or already): the ban ends in this many ms. `new` is true for the
    /// attempt that imposed the ban.
    Banned { retry_after_ms: i64, new: bool },
}

/// The pure policy: applies one attempt at `now_ms` to `state`.
pub fn decide(
    state: &mut SenderState,
    now_ms: i64,
    quota: Option<&Quota>,
    ban_after: i64,
    ban_ms: i64,
) -> Verdict {
    if state.ban_until_ms > now_ms {
        return Verdict::Banned {
            retry_after_ms: state.ban_until_ms - now_ms,
            new: false,
        };
    }
    let Some(quota) = quota else {
        return Verdict::Allowed;
    };
    let decision = gcra::throttle(
        &mut Clocked {
            now_us: now_ms.saturating_mul(1000),
            state,
        },
        quota,
        1,
    );
    if !decision.limited {
        state.strikes = 0;
        return Verdict::Allowed;
    }
    state.strikes += 1;
    if ban_after > 0 && state.strikes >= ban_after && ban_ms > 0 {
        state.strikes = 0;
        state.ban_until_ms = now_ms.saturating_add(ban_ms);
        return Verdict::Banned {
            retry_after_ms: ban_ms,
            new: true,
        };
    }
    Verdict::Limited(ceil_millis(decision.retry_after_us.unwrap_or(1000)).max(1))
}

/// Checks one message from `sender`; `routing_partition` is the partition the command
/// routes by (room or recipient). Errors are the replies to send back.
pub fn check(ctx: &Context, sender: &str, routing_partition: u32) -> Result<(), RedisError> {
    let layout = layout()?;
    let rate = config::get(&config::PUBLISH_RATE);
    let partition = if layout.cluster {
        routing_partition
    } else {
        layout.partitioner.partition_of(sender.as_bytes())
    };
    let keys = layout.keys(partition)?;
    let key = keys.sender(sender);
    let stored = ops::get_string(ctx, &key)?;
    if rate == 0 && stored.is_none() {
        return Ok(());
    }
    let mut state = stored
        .as_deref()
        .map(SenderState::parse)
        .unwrap_or_default();
    let before = state;
    let quota = if rate > 0 {
        Some(Quota::per_second(rate, config::get(&config::PUBLISH_BURST)).map_err(err)?)
    } else {
        None
    };
    let now = ops::now_ms();
    let verdict = decide(
        &mut state,
        now,
        quota.as_ref(),
        config::get(&config::BAN_AFTER),
        config::get(&config::BAN_MS),
    );
    if state != before {
        ops::set_string(
            ctx,
            &key,
            state.encode().as_bytes(),
            Some(state.expires_at_ms(now)),
        )?;
    }
    match verdict {
        Verdict::Allowed => Ok(()),
        Verdict::Limited(retry) => {
            LIMITED.add(1);
            Err(code_error(Code::Limited, format!("retry_after_ms={retry}")))
        }
        Verdict::Banned {
            retry_after_ms,
            new,
        } => {
            if new {
                BANNED.add(1);
                kick_everywhere(ctx, keys, sender, layout.cluster)?;
            }
            Err(code_error(
                Code::Banned,
                format!("retry_after_ms={retry_after_ms}"),
            ))
        }
    }
}

/// Routes a kick for every connection of `user`. Standalone: to the nodes holding its
/// connections. Cluster: the user's connections live in another slot, so the kick goes
/// to every node leased in `keys`' partition (each edge closes whatever it holds).
fn kick_everywhere(
    ctx: &Context,
    keys: &PartitionKeys,
    user: &str,
    cluster: bool,
) -> Result<(), RedisError> {
    let layout = layout()?;
    let entry = Entry::new(
        ctx,
        Kind::Kick,
        &[user.as_bytes(), b"", BAN_REASON.as_bytes()],
    )?;
    let (keys, nodes): (&PartitionKeys, Vec<String>) = if cluster {
        let nodes = ops::hgetall(ctx, &keys.nodes())?
            .into_iter()
            .map(|(node, _)| node)
            .collect();
        (keys, nodes)
    } else {
        let user_keys = layout.keys(layout.partitioner.partition_of(user.as_bytes()))?;
        (user_keys, connections::user_nodes(ctx, user_keys, user)?.1)
    };
    for node in nodes {
        entry.route_to(ctx, keys, &node, 1)?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_000;

    #[test]
    fn state_round_trips_and_tolerates_junk() {
        let s = SenderState {
            tat_us: 5,
            strikes: 2,
            ban_until_ms: 9,
        };
        assert_eq!(SenderState::parse(s.encode().as_bytes()), s);
        assert_eq!(SenderState::parse(b"\xff junk"), SenderState::default());
    }

    #[test]
    fn limited_then_banned_after_strikes_in_a_row() {
        let quota = Quota::per_second(1, 0).unwrap();
        let mut state = SenderState::default();
        assert_eq!(
            decide(&mut state, NOW, Some(&quota), 3, 5000),
            Verdict::Allowed
        );
        assert!(matches!(
            decide(&mut state, NOW, Some(&quota), 3, 5000),
            Verdict::Limited(_)
        ));
        assert!(matches!(
            decide(&mut state, NOW, Some(&quota), 3, 5000),
            Verdict::Limited(_)
        ));
        assert_eq!(
            decide(&mut state, NOW, Some(&quota), 3, 5000),
            Verdict::Banned {
                retry_after_ms: 5000,
                new: true
            }
        );
        assert_eq!(
            decide(&mut state, NOW + 1000, Some(&quota), 3, 5000),
            Verdict::Banned {
                retry_after_ms: 4000,
                new: false
            }
        );
        assert_eq!(
            decide(&mut state, NOW + 5000, Some(&quota), 3, 5000),
            Verdict::Allowed
        );
    }

    #[test]
    fn an_allowed_message_resets_the_strikes() {
        let quota = Quota::per_second(1, 0).unwrap();
        let mut state = SenderState::default();
        decide(&mut state, NOW, Some(&quota), 2, 5000);
        assert_eq!(
            decide(&mut state, NOW, Some(&quota), 2, 5000),
            Verdict::Limited(1000)
        );
        assert_eq!(state.strikes, 1);
        assert_eq!(
            decide(&mut state, NOW + 1000, Some(&quota), 2, 5000),
            Verdict::Allowed
        );
        assert_eq!(state.strikes, 0);
    }

    #[test]
    fn no_rate_means_no_limit_but_bans_still_hold() {
        let mut state = SenderState {
            ban_until_ms: NOW + 10,
            ..Default::default()
        };
        assert!(matches!(
            decide(&mut state, NOW, None, 0, 0),
            Verdict::Banned { .. }
        ));
        assert_eq!(decide(&mut state, NOW + 10, None, 0, 0), Verdict::Allowed);
    }
}
