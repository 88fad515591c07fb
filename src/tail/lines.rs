//! Splitting a byte stream into complete lines with a bounded memory footprint.

use memchr::memchr;

/// Above this, an emptied partial-line buffer gives its memory back: one huge line must not
/// pin megabytes for the rest of the process's life.
const KEEP_CAPACITY: usize = 64 * 1024;

/// Where complete lines go: raw bytes (each line with its `\n`), or [`Lines`], which also
/// keeps where each line ends so that its reader never looks for the newlines again.
pub trait LineSink {
    /// Appends one complete line: `head` (the start of the line, kept from earlier reads),
    /// then `tail`, which ends with the `\n`.
    fn push_line(&mut self, head: &[u8], tail: &[u8]);
}

impl LineSink for Vec<u8> {
    fn push_line(&mut self, head: &[u8], tail: &[u8]) {
        self.extend_from_slice(head);
        self.extend_from_slice(tail);
    }
}

/// A batch of complete lines, split once: their bytes (each line with its `\n`) and where
/// each ends.
#[derive(Debug, Default)]
pub struct Lines {
    bytes: Vec<u8>,
    /// Offset just after each line's `\n`. A batch stays far below 4 GiB (a read budget plus
    /// one line of at most `log.max_line_bytes`).
    ends: Vec<u32>,
}

impl Lines {
    pub fn with_capacity(bytes: usize) -> Lines {
        Lines {
            bytes: Vec::with_capacity(bytes),
            ends: Vec::new(),
        }
    }

    /// Each line without its `\n` (a `\r` before it is left in place).
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().map(|&e| e as usize));
        starts
            .zip(&self.ends)
            .map(|(start, &end)| &self.bytes[start..end as usize - 1])
    }

    /// The lines' bytes, `\n`s included.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// How many lines.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
    }
}

impl LineSink for Lines {
    fn push_line(&mut self, head: &[u8], tail: &[u8]) {
        self.bytes.push_line(head, tail);
        self.ends.push(self.bytes.len() as u32);
    }
}

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
    pub fn feed(&mut self, data: &[u8], out: &mut impl LineSink) -> Fed {
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
                out.push_line(&self.pending, line);
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
    pub fn finish(&mut self, out: &mut impl LineSink) -> u64 {
        let mut handed = 0;
        if !self.skipping && !self.pending.is_empty() {
            out.push_line(&self.pending, b"\n");
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

    /// Lines keep where each ends: read back without searching, as the bytes would split.
    #[test]
    fn lines_are_read_back_as_they_were_split() {
        let mut s = LineSplitter::new(100);
        let mut lines = Lines::default();
        s.feed(b"ab\r\n\ncd", &mut lines);
        s.feed(b"e\nf", &mut lines);
        assert_eq!(s.finish(&mut lines), 2);
        let got: Vec<&[u8]> = lines.iter().collect();
        assert_eq!(got, [&b"ab\r"[..], b"", b"cde", b"f"]);
        assert_eq!(lines.as_bytes(), b"ab\r\n\ncde\nf\n");
        assert_eq!(lines.len(), 4);
        lines.clear();
        assert!(lines.is_empty() && lines.iter().next().is_none());
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
