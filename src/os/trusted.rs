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

/// Who besides root may write the files root acts on (config, token, tools): see
/// [`check_writers`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Writers {
    /// A trusted user beside root; 0: root only.
    pub user: u32,
    /// A group whose write access is trusted beside root's (gid 0); 0: none.
    pub group: u32,
}

impl Writers {
    /// The agent's writers when it runs as root: root, plus the user and group who can already
    /// replace its executable (the binary's owner, and a group that can write a folder above
    /// it: Homebrew's `admin`), for they are root-equivalent anyway. `None` when not root:
    /// such an agent can do nothing its user could not.
    pub fn of_root_process() -> Option<Writers> {
        // SAFETY: geteuid cannot fail and touches no memory.
        if unsafe { libc::geteuid() } != 0 {
            return None;
        }
        let Ok(exe) = std::env::current_exe().and_then(std::fs::canonicalize) else {
            return Some(Writers::default());
        };
        let user = std::fs::metadata(&exe).map_or(0, |m| m.uid());
        let group = exe
            .ancestors()
            .filter_map(|p| std::fs::metadata(p).ok())
            // A sticky folder lets the group add names, not replace the binary's.
            .find(|m| m.mode() & 0o020 != 0 && m.mode() & 0o1000 == 0 && m.gid() != 0)
            .map_or(0, |m| m.gid());
        Some(Writers { user, group })
    }

    fn trusts_user(self, uid: u32) -> bool {
        uid == 0 || uid == self.user
    }
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

/// Why a file root acts on could be changed by someone it does not trust.
#[derive(Debug, PartialEq, Eq)]
pub struct Exposed {
    /// The file, or the folder or link on its way, that others control.
    pub at: std::path::PathBuf,
    pub why: Exposure,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Exposure {
    /// Owned by another user (who can change its mode, or replace what it holds).
    Owner(u32),
    /// Writable by a group other than root's (or the trusted one).
    Group(u32),
    /// Writable by every user (and, for a folder, without the sticky bit).
    World,
    /// Missing in a folder others can write: anyone may create it.
    Creatable,
    /// Cannot be checked: more than 40 symbolic links on the way, or a name that cannot be
    /// read (not a folder, no access).
    Links,
}

impl std::fmt::Display for Exposed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let at = self.at.display();
        match self.why {
            Exposure::Owner(uid) => write!(
                f,
                "{at} belongs to uid {uid}, who could change it; run `chown root {at}` or keep \
                 the file under folders only root can write"
            ),
            Exposure::Group(gid) => write!(
                f,
                "{at} is writable by group {gid}; run `chmod g-w {at}` or keep the file under \
                 folders only root can write"
            ),
            Exposure::World => write!(
                f,
                "{at} is writable by every user; run `chmod o-w {at}` or keep the file under \
                 folders only root can write"
            ),
            Exposure::Creatable => write!(
                f,
                "{at} is missing in a folder others can write, so anyone could create it; keep \
                 the file under folders only root can write"
            ),
            Exposure::Links => write!(
                f,
                "{at} cannot be checked (more than 40 symbolic links, or not readable)"
            ),
        }
    }
}

/// Checks that only `trust` (and root) can change what `path` names: the file itself and every
/// folder and link on the way from `/` (sshd's `StrictModes`, links followed as the kernel
/// does). Each entry must belong to a trusted user and not be writable by others. A sticky
/// folder others can write (`/tmp`) is passed only towards an entry of a trusted user (the
/// sticky bit keeps others from renaming or removing it); a missing name is safe only in a
/// folder no one else can write. A relative path is taken from the current folder.
pub fn check_writers(path: &Path, trust: Writers) -> Result<(), Exposed> {
    let abs = std::path::absolute(path).map_err(|_| Exposed {
        at: path.to_owned(),
        why: Exposure::Links,
    })?;
    walk(&abs, trust, &mut 0).map(|_| ())
}

/// Where [`walk`] stands: a real path, and whether others can create names in it (a sticky
/// folder they can write).
struct At {
    path: std::path::PathBuf,
    sticky_shared: bool,
}

impl At {
    fn enter(path: std::path::PathBuf, trust: Writers) -> Result<At, Exposed> {
        let meta = std::fs::metadata(&path).map_err(|_| Exposed {
            at: path.clone(),
            why: Exposure::Links,
        })?;
        let sticky_shared = meta.mode() & 0o1000 != 0 && writable_by_others(&meta, trust);
        Ok(At {
            path,
            sticky_shared,
        })
    }
}

/// Writable by someone untrusted through its mode bits.
fn writable_by_others(meta: &Metadata, trust: Writers) -> bool {
    let mode = meta.mode();
    mode & 0o002 != 0 || (mode & 0o020 != 0 && meta.gid() != 0 && meta.gid() != trust.group)
}

/// The checks of an entry that is not a link.
fn judge_entry(at: &Path, meta: &Metadata, trust: Writers) -> Result<(), Exposed> {
    let why = if !trust.trusts_user(meta.uid()) {
        Exposure::Owner(meta.uid())
    } else if meta.is_dir() && meta.mode() & 0o1000 != 0 {
        // A sticky folder: others may add names, never replace a trusted user's.
        return Ok(());
    } else if meta.mode() & 0o002 != 0 {
        Exposure::World
    } else if writable_by_others(meta, trust) {
        Exposure::Group(meta.gid())
    } else {
        return Ok(());
    };
    Err(Exposed {
        at: at.to_owned(),
        why,
    })
}

/// Resolves `path` from `/`, checking as it goes; the real path, or `None` when a name is
/// missing (and no one else can create it).
fn walk(
    path: &Path,
    trust: Writers,
    links: &mut u32,
) -> Result<Option<std::path::PathBuf>, Exposed> {
    use std::path::Component;
    let root = Path::new("/");
    let meta = std::fs::metadata(root).map_err(|_| Exposed {
        at: root.into(),
        why: Exposure::Links,
    })?;
    judge_entry(root, &meta, trust)?;
    let mut at = At::enter(root.into(), trust)?;
    for part in path.components() {
        let name = match part {
            Component::Normal(n) => n,
            // The folder above a real folder was checked on the way down.
            Component::ParentDir => {
                let up = at.path.parent().unwrap_or(root).to_owned();
                at = At::enter(up, trust)?;
                continue;
            }
            _ => continue,
        };
        let next = at.path.join(name);
        let meta = match std::fs::symlink_metadata(&next) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if !at.sticky_shared {
                    return Ok(None);
                }
                return Err(Exposed {
                    at: next,
                    why: Exposure::Creatable,
                });
            }
            Err(_) => {
                return Err(Exposed {
                    at: next,
                    why: Exposure::Links,
                });
            }
        };
        if at.sticky_shared && !trust.trusts_user(meta.uid()) {
            return Err(Exposed {
                at: next,
                why: Exposure::Owner(meta.uid()),
            });
        }
        if !meta.file_type().is_symlink() {
            judge_entry(&next, &meta, trust)?;
            at = At::enter(next, trust)?;
            continue;
        }
        *links += 1;
        let target = std::fs::read_link(&next).map_err(|_| Exposed {
            at: next.clone(),
            why: Exposure::Links,
        })?;
        if *links > 40 {
            return Err(Exposed {
                at: next,
                why: Exposure::Links,
            });
        }
        match walk(&at.path.join(target), trust, links)? {
            Some(real) => at = At::enter(real, trust)?,
            None => return Ok(None),
        }
    }
    Ok(Some(at.path))
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

/// Opens the agent's own log (its stderr file, reopened after a rotation) for appending, under
/// the rules of [`open_log`]: never through a link (the path is the one stderr was opened at,
/// already resolved), only a regular file, created (mode 0644) only in a folder no one else can
/// write; in a folder others can write, an existing file must belong to `trust.owner` and have
/// one name.
pub fn open_append(path: &Path, trust: Trust) -> io::Result<File> {
    let shared = folder_is_shared(path, trust);
    let mut opts = OpenOptions::new();
    opts.append(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY);
    if !shared {
        opts.create(true).mode(0o644);
    }
    let refused = |why: String| io::Error::other(format!("{}: {why}", path.display()));
    let file = match opts.open(path) {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(refused("a symbolic link, not followed".into()));
        }
        Err(e) if shared && e.kind() == io::ErrorKind::NotFound => {
            return Err(refused(
                "missing, and not created in a folder others can write".into(),
            ));
        }
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    if let Some(r) = judge(&meta, shared, trust) {
        return Err(refused(r.to_string()));
    }
    clear_nonblock(&file)?;
    Ok(file)
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

    fn exposed(path: &Path, w: Writers) -> Option<(std::path::PathBuf, Exposure)> {
        check_writers(path, w).err().map(|e| (e.at, e.why))
    }

    #[test]
    fn writers_are_checked_on_every_folder_and_link_up_to_the_root() {
        use std::os::unix::fs::{chown, lchown, symlink};
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "run as root: this test chowns"
        );
        let set = |p: &Path, mode| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap()
        };
        let root = Writers::default();
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("c.toml");
        std::fs::write(&f, "").unwrap();
        assert_eq!(exposed(&f, root), None);
        // Missing in a folder only root can write: no one else can create it.
        assert_eq!(exposed(&d.path().join("no/such"), root), None);
        // Another user's file; trusted when that user owns the executable.
        chown(&f, Some(65534), None).unwrap();
        assert_eq!(exposed(&f, root), Some((f.clone(), Exposure::Owner(65534))));
        let brew = Writers {
            user: 65534,
            group: 0,
        };
        assert_eq!(exposed(&f, brew), None);
        chown(&f, Some(0), Some(65534)).unwrap();
        set(&f, 0o664);
        assert_eq!(exposed(&f, root), Some((f.clone(), Exposure::Group(65534))));
        let admin = Writers {
            user: 0,
            group: 65534,
        };
        assert_eq!(exposed(&f, admin), None);
        set(&f, 0o646);
        assert_eq!(exposed(&f, admin), Some((f.clone(), Exposure::World)));
        set(&f, 0o644);
        // A folder above, of another user: they can swap the file.
        let etc = d.path().join("etc");
        std::fs::create_dir(&etc).unwrap();
        let inner = etc.join("c.toml");
        std::fs::write(&inner, "").unwrap();
        chown(&etc, Some(65534), None).unwrap();
        assert_eq!(
            exposed(&inner, root),
            Some((etc.clone(), Exposure::Owner(65534)))
        );
        // Reached through a link in a root folder: the link's target is walked too.
        let link = d.path().join("link.toml");
        symlink(&inner, &link).unwrap();
        assert_eq!(
            exposed(&link, root),
            Some((etc.clone(), Exposure::Owner(65534)))
        );
        chown(&etc, Some(0), None).unwrap();
        assert_eq!(exposed(&link, root), None);
        // A sticky folder anyone can write: root's names in it hold, others' do not, and a
        // missing name could be created by anyone.
        let tmp = d.path().join("tmp");
        std::fs::create_dir(&tmp).unwrap();
        set(&tmp, 0o1777);
        let mine = tmp.join("mine");
        std::fs::write(&mine, "").unwrap();
        assert_eq!(exposed(&mine, root), None);
        let theirs = tmp.join("theirs");
        symlink(&inner, &theirs).unwrap();
        lchown(&theirs, Some(65534), None).unwrap();
        assert_eq!(
            exposed(&theirs, root),
            Some((theirs.clone(), Exposure::Owner(65534)))
        );
        let missing = tmp.join("missing");
        assert_eq!(
            exposed(&missing, root),
            Some((missing, Exposure::Creatable))
        );
        // Without the sticky bit, anyone can replace anything in it.
        set(&tmp, 0o777);
        assert_eq!(exposed(&mine, root), Some((tmp.clone(), Exposure::World)));
        // A link loop ends.
        let a = d.path().join("a");
        symlink(d.path().join("b"), &a).unwrap();
        symlink(&a, d.path().join("b")).unwrap();
        assert_eq!(exposed(&a, root).map(|e| e.1), Some(Exposure::Links));
    }

    #[test]
    fn own_log_is_never_opened_through_a_link_nor_created_where_others_write() {
        use std::io::Write as _;
        let me = Trust {
            owner: unsafe { libc::geteuid() },
        };
        let private = tempfile::tempdir().unwrap();
        let victim = private.path().join("victim");
        std::fs::write(&victim, "root only\n").unwrap();
        let d = shared_dir();
        let p = d.path().join("agent.log");
        let e = open_append(&p, me).unwrap_err().to_string();
        assert!(e.contains("not created"), "{e}");
        assert!(!p.exists());
        std::os::unix::fs::symlink(&victim, &p).unwrap();
        let e = open_append(&p, me).unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
        // A link to a new name is not followed either.
        std::fs::remove_file(&p).unwrap();
        let new = private.path().join("new");
        std::os::unix::fs::symlink(&new, &p).unwrap();
        assert!(open_append(&p, me).is_err());
        assert!(!new.exists());
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "root only\n");
        // A FIFO: refused without waiting for a reader.
        std::fs::remove_file(&p).unwrap();
        nix_mkfifo(&p);
        assert!(open_append(&p, me).is_err());
        // In a private folder the log is created, and appended to.
        let own = private.path().join("agent.log");
        open_append(&own, me).unwrap().write_all(b"a\n").unwrap();
        open_append(&own, me).unwrap().write_all(b"b\n").unwrap();
        assert_eq!(std::fs::read_to_string(&own).unwrap(), "a\nb\n");
        assert_eq!(std::fs::metadata(&own).unwrap().mode() & 0o777, 0o644);
    }

    fn nix_mkfifo(p: &Path) {
        let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid C string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    }
}
