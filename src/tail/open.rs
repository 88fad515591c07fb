//! Opening a log without trusting its folder.
//!
//! The agent runs as root and one of its logs (`/tmp/STProxy.log`) lives in a folder every
//! local user can write. What a file there can do is bounded here, before a byte is read:
//!
//! - it is opened with `O_NONBLOCK` (cleared once it is known to be a regular file), so a FIFO
//!   or a device at the name cannot hang `open()`;
//! - in a folder others can write, with `O_NOFOLLOW`, so a symlink cannot make root read a
//!   file its creator could not (checked with `lstat`, not `stat`, for the same reason);
//! - anything that is not a regular file is refused;
//! - in such a folder the file must belong to the trusted owner (root), as sshd's
//!   `StrictModes` asks of `authorized_keys`: in a sticky folder only its owner (and root) can
//!   replace or write it, so root's file there is the proxy's;
//! - in such a folder a file with several names (a hard link) is refused: on macOS anyone may
//!   link a file of root's into `/tmp`, and root would read it;
//! - a file that is the other log (same device and inode, e.g. a hard link) is refused, so
//!   nothing is counted twice.
//!
//! A refusal is data ([`Refusal`]), not an error: the follower reports it (health shows it,
//! a counter counts it) and tries again at the next poll.

use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;

/// Why a file at a log's name was not read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A symbolic link in a folder others can write.
    Symlink,
    /// Not a regular file (a FIFO, a socket, a device, a folder).
    NotRegular(&'static str),
    /// In a folder others can write, owned by someone other than the trusted owner.
    Owner { uid: u32, want: u32 },
    /// In a folder others can write, a file with more than one name: a hard link to a file of
    /// root's elsewhere (possible on macOS, where links to others' files are allowed).
    HardLink,
    /// The same file as the other log (a hard link or the same path).
    SameAsOther,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Symlink => f.write_str("a symbolic link in a folder others can write"),
            Refusal::NotRegular(kind) => write!(f, "a {kind}, not a regular file"),
            Refusal::Owner { uid, want } => write!(
                f,
                "owned by uid {uid} in a folder others can write (only uid {want} is trusted there)"
            ),
            Refusal::HardLink => {
                f.write_str("a file with several names (hard link) in a folder others can write")
            }
            Refusal::SameAsOther => f.write_str("the same file as the other log"),
        }
    }
}

/// Who may own a log in a folder others can write. Root in the agent; tests running as root
/// name another uid to see root's own files refused.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Trust {
    /// uid; 0 (root) by default.
    pub owner: u32,
}

/// Outcome of [`open_log`].
pub enum Opened {
    File(File, Metadata),
    Refused(Refusal),
}

/// The folder holding `path` can be written by someone other than root and the trusted
/// owner: world-writable, group-writable by a group other than root's, or owned by another
/// user. Unknown (cannot stat) counts as shared: the strict rules cost nothing to a good file.
pub fn folder_is_shared(path: &Path, trust: Trust) -> bool {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    match std::fs::metadata(dir) {
        Ok(m) => folder_meta_is_shared(&m, trust),
        Err(_) => true,
    }
}

/// [`folder_is_shared`] on a folder's metadata already read.
pub fn folder_meta_is_shared(folder: &Metadata, trust: Trust) -> bool {
    let mode = folder.mode();
    mode & 0o002 != 0
        || (mode & 0o020 != 0 && folder.gid() != 0)
        || (folder.uid() != 0 && folder.uid() != trust.owner)
}

/// Identity of what is at `path` now, without following a link in a shared folder.
pub fn stat_at(path: &Path, shared: bool) -> io::Result<Metadata> {
    if shared {
        std::fs::symlink_metadata(path)
    } else {
        std::fs::metadata(path)
    }
}

/// Opens `path` for reading under the rules of the module doc. `Err` is an ordinary failure
/// (missing, permission denied); [`Opened::Refused`] a file the agent will not read.
pub fn open_log(path: &Path, shared: bool, trust: Trust) -> io::Result<Opened> {
    let mut flags = libc::O_NONBLOCK | libc::O_NOCTTY;
    if shared {
        flags |= libc::O_NOFOLLOW;
    }
    let file = match OpenOptions::new().read(true).custom_flags(flags).open(path) {
        Ok(f) => f,
        // O_NOFOLLOW on a link: ELOOP (Linux, macOS).
        Err(e) if shared && e.raw_os_error() == Some(libc::ELOOP) => {
            return Ok(Opened::Refused(Refusal::Symlink));
        }
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    if let Some(r) = judge(&meta, shared, trust) {
        return Ok(Opened::Refused(r));
    }
    clear_nonblock(&file)?;
    Ok(Opened::File(file, meta))
}

/// The checks on an opened file's own metadata (`fstat`: what was opened, not what the name
/// points at by now).
fn judge(meta: &Metadata, shared: bool, trust: Trust) -> Option<Refusal> {
    let t = meta.file_type();
    if !t.is_file() {
        let kind = if t.is_fifo() {
            "FIFO"
        } else if t.is_socket() {
            "socket"
        } else if t.is_char_device() || t.is_block_device() {
            "device"
        } else if t.is_dir() {
            "folder"
        } else {
            "special file"
        };
        return Some(Refusal::NotRegular(kind));
    }
    if shared && meta.uid() != trust.owner {
        return Some(Refusal::Owner {
            uid: meta.uid(),
            want: trust.owner,
        });
    }
    if shared && meta.nlink() > 1 {
        return Some(Refusal::HardLink);
    }
    None
}

/// Reads block on a regular file anyway, but a descriptor left non-blocking is a surprise
/// for whoever reads it next.
fn clear_nonblock(file: &File) -> io::Result<()> {
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a descriptor we own, with integer arguments only.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Checks every config section uses (they sit at the bottom layer so each section can).
///
/// Every numeric key has a range: a value past it is an error naming the key, the range and
/// the default, never a panic later (a duration that overflows a clock, a table that cannot
/// fit in memory).
pub fn in_range<T: PartialOrd + std::fmt::Display>(
    key: &str,
    value: T,
    range: std::ops::RangeInclusive<T>,
    default: &str,
) -> Result<(), String> {
    if range.contains(&value) {
        Ok(())
    } else {
        Err(format!(
            "{key} = {value}: use {}..={} (default {default})",
            range.start(),
            range.end()
        ))
    }
}

/// Same file (by name, or by identity when both exist).
pub fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    if a == b {
        return true;
    }
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => (x.dev(), x.ino()) == (y.dev(), y.ino()),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn shared_dir() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
        d
    }

    fn refusal(path: &Path, shared: bool, trust: Trust) -> Option<Refusal> {
        match open_log(path, shared, trust).unwrap() {
            Opened::File(f, _) => {
                // Blocking again: the flag was cleared.
                let fl = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETFL) };
                assert_eq!(fl & libc::O_NONBLOCK, 0);
                None
            }
            Opened::Refused(r) => Some(r),
        }
    }

    #[test]
    fn a_fifo_is_refused_without_blocking_anywhere() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("log");
        nix_mkfifo(&p);
        assert!(!folder_is_shared(&p, Trust::default()));
        // Without O_NONBLOCK this open would wait for a writer forever.
        assert_eq!(
            refusal(&p, false, Trust::default()),
            Some(Refusal::NotRegular("FIFO"))
        );
    }

    #[test]
    fn shared_folder_refuses_links_and_foreign_owners() {
        let d = shared_dir();
        let p = d.path().join("log");
        std::fs::write(&p, "x\n").unwrap();
        assert!(folder_is_shared(&p, Trust::default()));
        let me = unsafe { libc::geteuid() };
        assert_eq!(refusal(&p, true, Trust { owner: me }), None);
        // A file of anyone but the trusted owner is refused.
        assert_eq!(
            refusal(&p, true, Trust { owner: me + 1 }),
            Some(Refusal::Owner {
                uid: me,
                want: me + 1
            })
        );
        let link = d.path().join("link");
        std::os::unix::fs::symlink(&p, &link).unwrap();
        assert_eq!(
            refusal(&link, true, Trust { owner: me }),
            Some(Refusal::Symlink)
        );
        let hard = d.path().join("hard");
        std::fs::hard_link(&p, &hard).unwrap();
        assert_eq!(
            refusal(&hard, true, Trust { owner: me }),
            Some(Refusal::HardLink)
        );
        // The same link in a private folder is followed.
        assert_eq!(refusal(&link, false, Trust { owner: me }), None);
        assert!(stat_at(&link, true).unwrap().file_type().is_symlink());
    }

    fn nix_mkfifo(p: &Path) {
        let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid C string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    }
}
