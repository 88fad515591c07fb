//! Splitting a byte stream into complete lines with a bounded memory footprint.

use memchr::memchr;

/// Above this, an emptied partial-line buffer gives its memory back: one huge line must not
/// pin megabytes for the rest of the process's life.
const KEEP_CAPACITY: usize = 64 * 1024;

/// Counts from one [`LineSplitter::feed`] call.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fed {
    /// Bytes of complete lines appended to `out`.
    pub handed: u64,
    /// Lines dropped for being longer than the limit.
    pub too_long: u64,
    /// Offset within the fed slice just after its last `\n`, if it had one.
    pub last_newline_end: Option<usize>,
}

/// Holds the partial last line until its newline arrives; skips over-long lines.
#[derive(Debug)]
pub(crate) struct LineSplitter {
    pending: Vec<u8>,
    /// Inside an over-long line that was already counted: drop bytes up to its next `\n`.
    skipping: bool,
    /// Longest line handed on, `\n` included.
    max_line: usize,
}

impl LineSplitter {
    pub fn new(max_line: usize) -> LineSplitter {
        LineSplitter {
            pending: Vec::new(),
            skipping: false,
            max_line: max_line.max(1),
        }
    }

    /// Appends each complete line of `pending + data` to `out`; keeps the unterminated rest.
    pub fn feed(&mut self, data: &[u8], out: &mut Vec<u8>) -> Fed {
        let mut fed = Fed::default();
        let mut rest = data;
        let mut at = 0;
        while let Some(i) = memchr(b'\n', rest) {
            let line = &rest[..=i];
            if self.skipping {
                // The over-long line ends here; it was counted when it crossed the limit.
                self.skipping = false;
            } else if self.pending.len() + line.len() > self.max_line {
                fed.too_long += 1;
                self.clear_pending();
            } else {
                out.extend_from_slice(&self.pending);
                out.extend_from_slice(line);
                fed.handed += (self.pending.len() + line.len()) as u64;
                self.clear_pending();
            }
            rest = &rest[i + 1..];
            at += i + 1;
            fed.last_newline_end = Some(at);
        }
        if !rest.is_empty() && !self.skipping {
            // `>=`: a partial line already at the limit cannot fit once its `\n` arrives.
            if self.pending.len() + rest.len() >= self.max_line {
                fed.too_long += 1;
                self.skipping = true;
                self.clear_pending();
            } else {
                self.pending.extend_from_slice(rest);
            }
        }
        fed
    }

    /// Hands on the unterminated rest as a final line (with a `\n` added), for a file that
    /// will not be written any more. Returns the bytes appended.
    pub fn finish(&mut self, out: &mut Vec<u8>) -> u64 {
        let mut handed = 0;
        if !self.skipping && !self.pending.is_empty() {
            out.extend_from_slice(&self.pending);
            out.push(b'\n');
            handed = self.pending.len() as u64 + 1;
        }
        self.reset();
        handed
    }

    /// Forgets the partial line (its bytes are gone from the file).
    pub fn reset(&mut self) {
        self.skipping = false;
        self.clear_pending();
    }

    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    pub fn capacity(&self) -> usize {
        self.pending.capacity()
    }

    fn clear_pending(&mut self) {
        if self.pending.capacity() > KEEP_CAPACITY {
            self.pending = Vec::new();
        } else {
            self.pending.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_line_waits_for_its_newline() {
        let mut s = LineSplitter::new(100);
        let mut out = Vec::new();
        let f = s.feed(b"ab\r\ncd", &mut out);
        assert_eq!(out, b"ab\r\n");
        assert_eq!(f.handed, 4);
        assert_eq!(f.last_newline_end, Some(4));
        let f = s.feed(b"e", &mut out);
        assert_eq!(f, Fed::default());
        let f = s.feed(b"f\r\ng", &mut out);
        assert_eq!(out, b"ab\r\ncdef\r\n");
        assert_eq!(f.handed, 6);
        assert_eq!(f.last_newline_end, Some(3));
        assert_eq!(s.pending_len(), 1);
        assert_eq!(s.finish(&mut out), 2);
        assert_eq!(out, b"ab\r\ncdef\r\ng\n");
    }

    #[test]
    fn over_long_lines_are_skipped_and_counted_once() {
        let mut s = LineSplitter::new(5);
        let mut out = Vec::new();
        // Exactly the limit, newline included, passes.
        let f = s.feed(b"abcd\n", &mut out);
        assert_eq!((f.handed, f.too_long), (5, 0));
        // One more within a single chunk: dropped.
        let f = s.feed(b"abcde\nok\n", &mut out);
        assert_eq!((f.handed, f.too_long), (3, 1));
        // Spread over chunks: counted when it crosses the limit, then skipped to the newline.
        assert_eq!(s.feed(b"xxx", &mut out).too_long, 0);
        assert_eq!(s.feed(b"xx", &mut out).too_long, 1);
        assert_eq!(s.feed(b"xxxxxxxx", &mut out).too_long, 0);
        let f = s.feed(b"x\nyy\n", &mut out);
        assert_eq!((f.handed, f.too_long), (3, 0));
        assert_eq!(out, b"abcd\nok\nyy\n");
    }
}
