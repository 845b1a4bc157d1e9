//! The gapless-join rule: which room messages a join's replay already covers.
//!
//! A join with `since` gets the messages after `since` up to the room's position at
//! the join — the cut — in the module's reply. Room frames that reach the worker while
//! the join is in flight are held, and messages that arrive after it may still be ones
//! the replay covered (routed before the join, delivered after the reply). Each is sent
//! only if it comes after the cut, so the client sees every message once and in order.

use roomcast_common::offset::Offset;

/// Whether a room frame with history offset `offset` comes after a join's `cut`.
///
/// Presence events carry no offset (`None`) and always come after. A message of another
/// epoch than the cut's (the room's history was reset since) comes after; one of the
/// same epoch does when its sequence number is past the cut's.
pub fn after_cut(offset: Option<&Offset>, cut: &Offset) -> bool {
    match offset {
        None => true,
        Some(offset) => offset.epoch != cut.epoch || offset.seq > cut.seq,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offset(text: &str) -> Offset {
        Offset::parse(text).expect(text)
    }

    #[test]
    fn messages_past_the_cut_come_after_it() {
        let cut = offset("ab:10");
        assert!(after_cut(Some(&offset("ab:11")), &cut));
        assert!(after_cut(Some(&offset("ab:1000")), &cut));
    }

    #[test]
    fn messages_up_to_the_cut_are_covered() {
        let cut = offset("ab:10");
        assert!(!after_cut(Some(&offset("ab:10")), &cut));
        assert!(!after_cut(Some(&offset("ab:3")), &cut));
        assert!(!after_cut(Some(&offset("ab:0")), &cut));
    }

    #[test]
    fn presence_events_without_an_offset_always_come_after() {
        assert!(after_cut(None, &offset("ab:10")));
    }

    #[test]
    fn a_new_epoch_comes_after_whatever_its_sequence_number() {
        let cut = offset("ab:10");
        assert!(after_cut(Some(&offset("cd:1")), &cut));
        assert!(after_cut(Some(&offset("cd:10")), &cut));
        assert!(after_cut(Some(&offset("a:3")), &cut));
    }
}
