//! Checking what subscribers received against room offsets (`<epoch>:<seq>`): within an
//! epoch every seq must follow the previous one; a new epoch tells a client to resync.

use std::time::Instant;

/// `(epoch, seq)` of an offset.
pub fn parts(offset: &str) -> Option<(String, u64)> {
    let (epoch, seq) = offset.split_once(':')?;
    Some((epoch.to_string(), seq.parse().ok()?))
}

/// The verdict on the messages one subscriber received in one room, in order, as
/// (epoch, seq, when received): undetected gaps (a seq skipped or repeated within an
/// epoch) and detected ones (the epoch changed: the client knows to resync).
pub fn gaps(messages: &[(String, u64, Instant)]) -> (usize, usize) {
    let (mut undetected, mut resyncs) = (0, 0);
    let mut last: Option<(&str, u64)> = None;
    for (epoch, seq, _) in messages {
        match last {
            Some((e, s)) if e == epoch && *seq != s + 1 => undetected += 1,
            Some((e, _)) if e != epoch => resyncs += 1,
            _ => {}
        }
        last = Some((epoch, *seq));
    }
    (undetected, resyncs)
}
