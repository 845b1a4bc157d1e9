//! Redis stream entry ids (`ms-seq`): parsed strictly, as `XREAD` reads them, and
//! compared — by the module's `RC.READ` and by the edge lining its readers up with a
//! stream's end.

/// A stream entry id, `ms-seq`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct StreamId {
    /// Milliseconds part.
    pub ms: u64,
    /// Sequence part.
    pub seq: u64,
}

impl StreamId {
    /// Parses `ms-seq`, or `ms` alone (sequence 0), as `XREAD` does; `None` for anything
    /// else (`$`, `+`, `-`, `>`, signs, spaces, overflow).
    pub fn parse(arg: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(arg).ok()?;
        let (ms, seq) = match text.split_once('-') {
            Some((ms, seq)) => (ms, Some(seq)),
            None => (text, None),
        };
        let number = |s: &str| -> Option<u64> {
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            s.parse().ok()
        };
        Some(Self {
            ms: number(ms)?,
            seq: match seq {
                Some(seq) => number(seq)?,
                None => 0,
            },
        })
    }

    /// The most bytes an id takes as text: two 20-digit numbers and a dash.
    pub const MAX_TEXT: usize = 41;

    /// Writes the id as `ms-seq` into `buf` and returns the bytes written: the text of
    /// an id without an allocation (the module writes one per inbox append).
    pub fn write_to(self, buf: &mut [u8; Self::MAX_TEXT]) -> &[u8] {
        use std::io::Write;
        let mut rest: &mut [u8] = &mut buf[..];
        // Cannot fail: the buffer holds the longest id.
        let _ = write!(rest, "{}-{}", self.ms, self.seq);
        let written = Self::MAX_TEXT - rest.len();
        buf.get(..written).unwrap_or_default()
    }

    /// The smallest id greater than this one; `None` after the largest id.
    pub fn next(self) -> Option<Self> {
        match self.seq.checked_add(1) {
            Some(seq) => Some(Self { ms: self.ms, seq }),
            None => self.ms.checked_add(1).map(|ms| Self { ms, seq: 0 }),
        }
    }
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_parse_like_xread() {
        assert_eq!(StreamId::parse(b"0"), Some(StreamId { ms: 0, seq: 0 }));
        assert_eq!(
            StreamId::parse(b"1700000000000-5"),
            Some(StreamId {
                ms: 1_700_000_000_000,
                seq: 5
            })
        );
        assert_eq!(StreamId::parse(b"12"), Some(StreamId { ms: 12, seq: 0 }));
        let max = format!("{}-{}", u64::MAX, u64::MAX);
        assert_eq!(
            StreamId::parse(max.as_bytes()),
            Some(StreamId {
                ms: u64::MAX,
                seq: u64::MAX
            })
        );
        for bad in [
            "$",
            "+",
            "-",
            ">",
            "",
            "1-",
            "-1",
            "1-2-3",
            "+1",
            "1 ",
            "a-1",
            "1-x",
            "18446744073709551616",
            "0x10",
            "1.5",
        ] {
            assert_eq!(StreamId::parse(bad.as_bytes()), None, "{bad:?}");
        }
        assert_eq!(StreamId::parse(&[0xff]), None);
    }

    #[test]
    fn next_ids_are_strictly_greater() {
        let id = |ms, seq| StreamId { ms, seq };
        assert_eq!(id(0, 0).next(), Some(id(0, 1)));
        assert_eq!(id(5, u64::MAX).next(), Some(id(6, 0)));
        assert_eq!(id(u64::MAX, u64::MAX).next(), None);
        assert_eq!(id(7, 3).to_string(), "7-3");
    }

    #[test]
    fn ids_are_written_as_text_without_allocating() {
        let mut buf = [0u8; StreamId::MAX_TEXT];
        for id in [
            StreamId { ms: 0, seq: 0 },
            StreamId {
                ms: 1_700_000_000_123,
                seq: 7,
            },
            StreamId {
                ms: u64::MAX,
                seq: u64::MAX,
            },
        ] {
            assert_eq!(id.write_to(&mut buf), id.to_string().as_bytes());
        }
    }
}
