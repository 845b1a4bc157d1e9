//! Delivering pushed inbox entries, with the inbox streams as the recovery log: what the
//! standalone reader (one inbox) and the Redis Cluster reader (one per partition)
//! share — [`follow`], over any subscriber ([`Pushes`]).
//!
//! Each push carries its entry's id and the id of the entry before it in its inbox
//! (`roomcast_common::push`). Against the id of the last entry delivered from that
//! inbox, a push is a duplicate (already read from the stream: dropped), the next entry
//! (delivered), or shows a gap (the entries in between are read from the stream first,
//! up to and including the push). So delivery stays in order, gapless and without
//! duplicates whatever pushes were lost.

use std::future::Future;

use redis::{RedisResult, Value};
use roomcast_common::entry;
use roomcast_common::push;
use roomcast_common::stream_id::StreamId;

use crate::backend::shard_subscriber::ShardSubscriber;
use crate::backend::streams::{decode, COUNT};
use crate::backend::subscriber::{entries, Event, Subscriber};
use crate::context::Context;
use crate::inbox::delivery::Round;
use crate::inbox::liveness::Liveness;
use crate::metrics::WorkerMetrics;

/// Where a reader reads inbox ranges from (`XRANGE`, see `Subscriber::range`).
pub trait Ranges {
    /// Up to `COUNT` entries of stream `key` after `after` (exclusive) up to `end`
    /// (inclusive; `None`: the stream's end).
    fn range(
        &mut self,
        key: &str,
        after: StreamId,
        end: Option<StreamId>,
    ) -> impl Future<Output = RedisResult<Value>>;
}

impl Ranges for Subscriber {
    fn range(
        &mut self,
        key: &str,
        after: StreamId,
        end: Option<StreamId>,
    ) -> impl Future<Output = RedisResult<Value>> {
        Subscriber::range(self, key, after, end)
    }
}

impl Ranges for ShardSubscriber {
    fn range(
        &mut self,
        key: &str,
        after: StreamId,
        end: Option<StreamId>,
    ) -> impl Future<Output = RedisResult<Value>> {
        ShardSubscriber::range(self, key, after, end)
    }
}

/// A subscriber: pushes of the node's inbox entries, and ranges of its inboxes.
pub trait Pushes: Ranges {
    /// The next push or the end of the subscriber.
    fn next(&mut self) -> impl Future<Output = Event>;
    /// The next push or end already received, if any (without waiting).
    fn try_next(&mut self) -> Option<Event>;
}

impl Pushes for Subscriber {
    fn next(&mut self) -> impl Future<Output = Event> {
        Subscriber::next(self)
    }

    fn try_next(&mut self) -> Option<Event> {
        Subscriber::try_next(self)
    }
}

impl Pushes for ShardSubscriber {
    fn next(&mut self) -> impl Future<Output = Event> {
        ShardSubscriber::next(self)
    }

    fn try_next(&mut self) -> Option<Event> {
        ShardSubscriber::try_next(self)
    }
}

/// Catches every inbox (`keys`, with the last id delivered from each in `last`) up
/// from its last id — counting what it reads as missed pushes when `recovering` — then
/// delivers pushes until pushes may have been lost (an error). Cancel-safe: `last`
/// holds the id of the last entry fanned out of each inbox.
pub async fn follow(
    ctx: &Context,
    liveness: &Liveness,
    sub: &mut impl Pushes,
    keys: &[String],
    last: &mut [StreamId],
    recovering: bool,
) -> RedisResult<()> {
    let mut round = Round::start(ctx, liveness);
    let mut caught_up = 0;
    for (stream, (key, last)) in keys.iter().zip(last.iter_mut()).enumerate() {
        let inbox = Inbox { stream, key, last };
        caught_up += read_range(&mut round, sub, inbox, None).await?;
    }
    if recovering && caught_up > 0 {
        recovered(ctx, caught_up);
    }
    loop {
        let mut event = sub.next().await;
        let mut round = Round::start(ctx, liveness);
        loop {
            let Event::Push(stream, payload) = event else {
                return Err(closed());
            };
            if let (Some(key), Some(last)) = (keys.get(stream), last.get_mut(stream)) {
                let inbox = Inbox { stream, key, last };
                on_push(ctx, &mut round, sub, inbox, &payload).await?;
            }
            if round.count() >= COUNT {
                break;
            }
            match sub.try_next() {
                Some(next) => event = next,
                None => break,
            }
        }
    }
}

/// The error of a subscriber that ended.
fn closed() -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Io, "the subscriber connection closed"))
}

/// One inbox a reader delivers from: its stream index (for the liveness probe), its
/// key, and the id of the last entry delivered from it.
struct Inbox<'a> {
    stream: usize,
    key: &'a str,
    last: &'a mut StreamId,
}

/// Delivers one push of `inbox`: drops a duplicate, fills a gap from the stream first.
async fn on_push(
    ctx: &Context,
    round: &mut Round<'_>,
    reads: &mut impl Ranges,
    inbox: Inbox<'_>,
    payload: &[u8],
) -> RedisResult<()> {
    let Some(pushed) = push::decode(payload) else {
        // Its entry is in the stream: the next push (or probe) shows the gap.
        tracing::warn!(node = %ctx.node(), "malformed inbox push ignored");
        return Ok(());
    };
    let Inbox { stream, key, last } = inbox;
    match next_step(*last, pushed.id, pushed.prev) {
        Step::Drop => {}
        Step::Deliver => {
            *last = pushed.id;
            round.entry(stream, &entry::decode(pushed.fields())).await;
        }
        Step::Fill => {
            let inbox = Inbox { stream, key, last };
            let filled = read_range(round, reads, inbox, Some(pushed.id)).await?;
            // The push's own entry, when the range read it, was not missed.
            recovered(ctx, filled.saturating_sub(usize::from(*last == pushed.id)));
            if *last < pushed.id {
                // Not in the stream (trimmed, or the server lost it): the push itself
                // is all there is of it.
                *last = pushed.id;
                round.entry(stream, &entry::decode(pushed.fields())).await;
            }
        }
    }
    Ok(())
}

/// What to do with a push of entry `id` whose inbox's previous entry is `prev`, when
/// the last entry delivered is `last`.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Delivered already (read from the stream): drop it.
    Drop,
    /// The next entry: deliver it.
    Deliver,
    /// Entries between `last` and it were missed: read them from the stream first.
    Fill,
}

fn next_step(last: StreamId, id: StreamId, prev: StreamId) -> Step {
    if id <= last {
        Step::Drop
    } else if prev == last {
        Step::Deliver
    } else {
        Step::Fill
    }
}

/// Counts a gap filled with `entries` entries read from the stream.
fn recovered(ctx: &Context, entries: usize) {
    WorkerMetrics::inc(&ctx.metrics.inbox_gaps_filled);
    WorkerMetrics::add(&ctx.metrics.inbox_entries_recovered, entries as u64);
}

/// Delivers the entries of `inbox` after its last id up to `end` (inclusive; `None`:
/// the stream's end), page by page, advancing the last id. Returns how many it
/// delivered.
async fn read_range(
    round: &mut Round<'_>,
    reads: &mut impl Ranges,
    inbox: Inbox<'_>,
    end: Option<StreamId>,
) -> RedisResult<usize> {
    let Inbox { stream, key, last } = inbox;
    let mut delivered = 0;
    loop {
        if end.is_some_and(|end| *last >= end) {
            return Ok(delivered);
        }
        let reply = reads.range(key, *last, end).await?;
        let mut read = 0;
        for (id, fields) in entries(&reply) {
            read += 1;
            if id <= *last {
                continue;
            }
            *last = id;
            delivered += 1;
            round.entry(stream, &decode(fields)).await;
        }
        if read < COUNT {
            return Ok(delivered);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(ms: u64, seq: u64) -> StreamId {
        StreamId { ms, seq }
    }

    #[test]
    fn pushes_are_dropped_delivered_or_fill_a_gap() {
        let last = id(100, 3);
        // Read from the stream already (during a catch-up or a fill).
        assert_eq!(next_step(last, id(100, 3), id(100, 2)), Step::Drop);
        assert_eq!(next_step(last, id(99, 0), id(0, 0)), Step::Drop);
        // The next one.
        assert_eq!(next_step(last, id(101, 0), id(100, 3)), Step::Deliver);
        // One (or more) missed in between.
        assert_eq!(next_step(last, id(102, 0), id(101, 0)), Step::Fill);
        // A previous id that is not the last delivered, even an older one (this
        // server's stream differs from what was read): the stream decides.
        assert_eq!(next_step(last, id(102, 0), id(100, 1)), Step::Fill);
        // The first entry of an empty inbox.
        assert_eq!(next_step(id(0, 0), id(5, 0), id(0, 0)), Step::Deliver);
    }
}
