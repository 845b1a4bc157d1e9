//! A small validating JSON scanner.
//!
//! roomcast passes JSON through as bytes and never builds a tree of it; it only needs
//! to know that a value is well-formed (RFC 8259) before storing or forwarding it.
//! Nesting is capped at [`MAX_DEPTH`] so hostile input cannot exhaust the stack.

/// Deepest nesting of arrays and objects accepted.
pub const MAX_DEPTH: usize = 64;

/// True when `bytes` is exactly one JSON value, optionally surrounded by whitespace.
pub fn is_valid(bytes: &[u8]) -> bool {
    let mut scanner = Scanner { bytes, pos: 0 };
    scanner.skip_ws();
    if !scanner.value(0) {
        return false;
    }
    scanner.skip_ws();
    scanner.pos == bytes.len()
}

/// Cursor over the input.
struct Scanner<'a> {
    /// The whole input.
    bytes: &'a [u8],
    /// Index of the next unread byte.
    pos: usize,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn bump(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.pos += 1;
        Some(b)
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn literal(&mut self, word: &[u8]) -> bool {
        let end = self.pos + word.len();
        if self.bytes.get(self.pos..end) == Some(word) {
            self.pos = end;
            true
        } else {
            false
        }
    }

    fn value(&mut self, depth: usize) -> bool {
        match self.peek() {
            Some(b'{') => depth < MAX_DEPTH && self.object(depth + 1),
            Some(b'[') => depth < MAX_DEPTH && self.array(depth + 1),
            Some(b'"') => self.string(),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => false,
        }
    }

    fn object(&mut self, depth: usize) -> bool {
        self.pos += 1; // '{'
        self.skip_ws();
        if self.eat(b'}') {
            return true;
        }
        loop {
            self.skip_ws();
            if !self.string() {
                return false;
            }
            self.skip_ws();
            if !self.eat(b':') {
                return false;
            }
            self.skip_ws();
            if !self.value(depth) {
                return false;
            }
            self.skip_ws();
            if self.eat(b'}') {
                return true;
            }
            if !self.eat(b',') {
                return false;
            }
        }
    }

    fn array(&mut self, depth: usize) -> bool {
        self.pos += 1; // '['
        self.skip_ws();
        if self.eat(b']') {
            return true;
        }
        loop {
            self.skip_ws();
            if !self.value(depth) {
                return false;
            }
            self.skip_ws();
            if self.eat(b']') {
                return true;
            }
            if !self.eat(b',') {
                return false;
            }
        }
    }

    fn string(&mut self) -> bool {
        if !self.eat(b'"') {
            return false;
        }
        let start = self.pos;
        loop {
            match self.bump() {
                None => return false,
                Some(b'"') => break,
                Some(b'\\') => match self.bump() {
                    Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {}
                    Some(b'u') => {
                        for _ in 0..4 {
                            if !self.bump().is_some_and(|h| h.is_ascii_hexdigit()) {
                                return false;
                            }
                        }
                    }
                    _ => return false,
                },
                Some(0x00..=0x1f) => return false,
                Some(_) => {}
            }
        }
        // The raw bytes between the quotes must be UTF-8.
        self.bytes
            .get(start..self.pos - 1)
            .is_some_and(|s| std::str::from_utf8(s).is_ok())
    }

    fn digits(&mut self) -> bool {
        let start = self.pos;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
        self.pos > start
    }

    fn number(&mut self) -> bool {
        self.eat(b'-');
        if self.eat(b'0') {
            if self.peek().is_some_and(|b| b.is_ascii_digit()) {
                return false;
            }
        } else if !self.digits() {
            return false;
        }
        if self.eat(b'.') && !self.digits() {
            return false;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            if !self.eat(b'+') {
                self.eat(b'-');
            }
            if !self.digits() {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::is_valid;

    #[test]
    fn accepts_well_formed_values() {
        for ok in [
            "null",
            " true ",
            "-0.5e+10",
            "\"h\\u00e9\\n\"",
            "[]",
            "{}",
            "{\"a\":[1,2,{\"b\":null}],\"c\":\"é\"}",
            "0",
        ] {
            assert!(is_valid(ok.as_bytes()), "{ok}");
        }
    }

    #[test]
    fn refuses_malformed_values() {
        for bad in [
            "",
            "nul",
            "01",
            "1.",
            "-",
            "[1,]",
            "{\"a\"}",
            "{a:1}",
            "\"\\x\"",
            "\"abc",
            "1 2",
            "[",
            "\"\n\"",
            "{\"a\":1,}",
            "tru",
            "1e",
        ] {
            assert!(!is_valid(bad.as_bytes()), "{bad}");
        }
        assert!(!is_valid(&[b'"', 0xff, b'"']));
    }

    #[test]
    fn nesting_is_capped() {
        let deep = "[".repeat(64) + &"]".repeat(64);
        assert!(is_valid(deep.as_bytes()));
        let too_deep = "[".repeat(65) + &"]".repeat(65);
        assert!(!is_valid(too_deep.as_bytes()));
    }
}
