//! Room history offsets: `<epoch>:<seq>`.
//!
//! `seq` counts a room's messages (1, 2, 3, …) within an *epoch*. The epoch is chosen
//! when a room's history starts — from the Redis clock, in base 36 — and changes whenever
//! the history was lost (Redis restarted without data, `FLUSHALL`, the history expired),
//! so an offset from before the loss can never be mistaken for one after it.

use std::fmt;

/// A position in a room's history.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Offset {
    /// Identifies one continuous history of the room.
    pub epoch: String,
    /// Message number within the epoch (the first message is 1).
    pub seq: u64,
}

/// Longest epoch accepted when parsing.
const MAX_EPOCH: usize = 16;

impl Offset {
    /// Parses `<epoch>:<seq>`; the epoch is 1–16 characters of `[0-9a-z]`.
    pub fn parse(text: &str) -> Option<Offset> {
        let (epoch, seq) = text.split_once(':')?;
        let epoch_ok = !epoch.is_empty()
            && epoch.len() <= MAX_EPOCH
            && epoch
                .bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase());
        if !epoch_ok || seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(Offset {
            epoch: epoch.to_string(),
            seq: seq.parse().ok()?,
        })
    }

    /// A new epoch from a clock reading in milliseconds.
    pub fn epoch_from_millis(ms: u64) -> String {
        base36(ms)
    }

    /// The offset that follows this one in the same epoch.
    pub fn next(&self) -> Offset {
        Offset {
            epoch: self.epoch.clone(),
            seq: self.seq.saturating_add(1),
        }
    }
}

/// `n` in base 36 (`[0-9a-z]`, most significant digit first): how epochs and eras are
/// written.
pub fn base36(n: u64) -> String {
    let mut n = n;
    let mut digits = Vec::new();
    loop {
        let d = (n % 36) as u8;
        digits.push(if d < 10 { b'0' + d } else { b'a' + d - 10 });
        n /= 36;
        if n == 0 {
            break;
        }
    }
    digits.reverse();
    String::from_utf8(digits).unwrap_or_default()
}

/// A room's stored position: its last offset and the era of the primary that wrote it.
///
/// Stored as `<epoch> <seq> <era>`; positions written before eras existed have no third
/// field and read as belonging to no era (so the next message starts a new epoch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// The room's last offset.
    pub offset: Offset,
    /// The era that wrote it (empty when unknown).
    pub era: String,
}

impl Position {
    /// Parses the stored form `<epoch> <seq> [<era>]`.
    pub fn parse(text: &str) -> Option<Position> {
        let mut words = text.split(' ');
        let (epoch, seq) = (words.next()?, words.next()?);
        let era = words.next().unwrap_or("");
        if words.next().is_some() {
            return None;
        }
        Some(Position {
            offset: Offset::parse(&format!("{epoch}:{seq}"))?,
            era: era.to_string(),
        })
    }

    /// The stored form.
    pub fn encode(&self) -> String {
        format!("{} {} {}", self.offset.epoch, self.offset.seq, self.era)
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.epoch, self.seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_round_trip() {
        let o = Offset {
            epoch: Offset::epoch_from_millis(1_700_000_000_000),
            seq: 42,
        };
        assert_eq!(Offset::parse(&o.to_string()), Some(o.clone()));
        assert_eq!(o.next().seq, 43);
        assert_eq!(Offset::epoch_from_millis(0), "0");
        assert_eq!(base36(u64::MAX), "3w5e11264sgsf");
        assert_eq!(Offset::epoch_from_millis(35), "z");
        assert_eq!(Offset::epoch_from_millis(36), "10");
    }

    #[test]
    fn positions_carry_their_era() {
        let p = Position::parse("kx1 7 3f9").unwrap();
        assert_eq!(p.offset.to_string(), "kx1:7");
        assert_eq!(p.era, "3f9");
        assert_eq!(Position::parse(&p.encode()), Some(p));
        // Written before eras existed: no era.
        assert_eq!(Position::parse("kx1 7").unwrap().era, "");
        for bad in ["", "kx1", "kx1 x", "kx1 7 a b", "KX 7 a"] {
            assert_eq!(Position::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn malformed_offsets_are_refused() {
        for bad in [
            "",
            ":",
            "abc",
            "a:",
            ":1",
            "A:1",
            "a:-1",
            "a:1x",
            "a b:1",
            "12345678901234567:1",
        ] {
            assert_eq!(Offset::parse(bad), None, "{bad}");
        }
        assert_eq!(Offset::parse("a:99999999999999999999"), None);
    }
}
