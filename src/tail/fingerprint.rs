//! Identity of a file's content: length and hash of its first bytes.
//!
//! Device + inode say which file the path names, but inode numbers are reused once a file is
//! deleted (the rotated archive is overwritten at every rotation), and a file truncated in place
//! keeps its inode. The first bytes of a log file carry a timestamp, so hashing them tells a new
//! content apart from the one we were reading.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use serde::{Deserialize, Serialize};

/// How many leading bytes of a file the fingerprint covers at most.
pub const FINGERPRINT_BYTES: usize = 1024;

/// Length and hash of the first up-to-[`FINGERPRINT_BYTES`] bytes of a file.
///
/// The hash is 64-bit FNV-1a: written out here so that a checkpoint saved by one build is
/// still understood by the next (std's hasher is randomly seeded per process).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Fingerprint {
    pub len: u32,
    pub hash: u64,
}

impl Fingerprint {
    /// Fingerprint of an empty head (a file that had no bytes when it was looked at).
    pub const EMPTY: Fingerprint = Fingerprint {
        len: 0,
        hash: FNV_OFFSET,
    };

    /// Fingerprint of the first up-to-[`FINGERPRINT_BYTES`] bytes of `bytes`.
    pub fn of(bytes: &[u8]) -> Fingerprint {
        let head = &bytes[..bytes.len().min(FINGERPRINT_BYTES)];
        Fingerprint {
            len: head.len() as u32,
            hash: fnv1a(head),
        }
    }

    /// True when the fingerprint covers the full [`FINGERPRINT_BYTES`] (a strong identity);
    /// a shorter one comes from a tiny file and says less.
    pub fn is_full(&self) -> bool {
        self.len as usize >= FINGERPRINT_BYTES
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(FNV_OFFSET, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(FNV_PRIME)
    })
}

/// Reads up to `buf.len()` bytes from the start of `file` with positioned reads (the follower
/// tracks its own offset, so the descriptor's position does not matter). Returns the count read,
/// short only at end of file.
fn read_head(file: &File, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Fingerprint of what `file` holds now.
pub(crate) fn head_fingerprint(file: &File) -> io::Result<Fingerprint> {
    let mut buf = [0u8; FINGERPRINT_BYTES];
    let n = read_head(file, &mut buf)?;
    Ok(Fingerprint::of(&buf[..n]))
}

/// True when the first `fp.len` bytes of `file` still hash to `fp.hash` (false if the file is
/// now shorter than that).
pub(crate) fn head_matches(file: &File, fp: Fingerprint) -> io::Result<bool> {
    let want = (fp.len as usize).min(FINGERPRINT_BYTES);
    let mut buf = [0u8; FINGERPRINT_BYTES];
    let n = read_head(file, &mut buf[..want])?;
    Ok(n == want && fnv1a(&buf[..n]) == fp.hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_is_the_published_function() {
        // Reference values of 64-bit FNV-1a: the hash must never change, or saved
        // checkpoints stop matching after an upgrade.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn fingerprint_covers_at_most_the_head() {
        let long = vec![b'x'; 3000];
        let fp = Fingerprint::of(&long);
        assert_eq!(fp.len as usize, FINGERPRINT_BYTES);
        assert!(fp.is_full());
        assert_eq!(fp, Fingerprint::of(&long[..FINGERPRINT_BYTES]));
        assert_ne!(fp, Fingerprint::of(&long[..10]));
        assert_eq!(Fingerprint::of(b""), Fingerprint::EMPTY);
    }

    #[test]
    fn head_matching_on_a_real_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"hello world").unwrap();
        let f = File::open(&p).unwrap();
        let fp = head_fingerprint(&f).unwrap();
        assert_eq!(fp, Fingerprint::of(b"hello world"));
        assert!(head_matches(&f, Fingerprint::of(b"hello")).unwrap());
        assert!(!head_matches(&f, Fingerprint::of(b"jello")).unwrap());
        // Longer than the file: cannot match.
        assert!(!head_matches(&f, Fingerprint::of(b"hello world!")).unwrap());
    }
}
