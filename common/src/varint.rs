//! Unsigned LEB128 varints: the length and id prefixes of the binary layouts the module
//! writes and the edge reads ([`crate::push`], [`crate::batch`]).

/// Appends `n` as an unsigned LEB128 varint (1 to 10 bytes).
pub fn put(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// Reads an unsigned LEB128 varint from the front of `input`, advancing it; `None` when
/// it is truncated or does not fit in 64 bits.
pub fn take(input: &mut &[u8]) -> Option<u64> {
    let mut n: u64 = 0;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = input.split_first()?;
        *input = rest;
        let bits = u64::from(byte & 0x7f);
        if shift == 63 && bits > 1 {
            return None;
        }
        n |= bits << shift;
        if byte & 0x80 == 0 {
            return Some(n);
        }
    }
    None
}

/// Reads a varint length from the front of `input` and splits that many bytes off it;
/// `None` when the length is malformed or longer than what is left.
pub fn take_bytes<'a>(input: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = usize::try_from(take(input)?).ok()?;
    if len > input.len() {
        return None;
    }
    let (bytes, rest) = input.split_at(len);
    *input = rest;
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_cover_the_whole_u64_range() {
        for n in [
            0,
            1,
            127,
            128,
            300,
            u64::from(u32::MAX),
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put(&mut out, n);
            assert!(out.len() <= 10);
            let mut input = out.as_slice();
            assert_eq!(take(&mut input), Some(n));
            assert!(input.is_empty());
        }
        // An 11th byte, or high bits past 64, do not fit.
        assert_eq!(take(&mut &[0xff; 11][..]), None);
        let mut too_big = vec![0xff; 9];
        too_big.push(0x02);
        assert_eq!(take(&mut too_big.as_slice()), None);
    }

    #[test]
    fn length_prefixed_bytes_must_fit() {
        let mut out = Vec::new();
        put(&mut out, 3);
        out.extend_from_slice(b"abcd");
        let mut input = out.as_slice();
        assert_eq!(take_bytes(&mut input), Some(&b"abc"[..]));
        assert_eq!(input, b"d");
        assert_eq!(take_bytes(&mut &[5u8, b'a'][..]), None);
    }
}
