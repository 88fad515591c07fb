//! `--save DIR`: a bundle written where only its caller can read it, without following a link
//! anywhere.
//!
//! - The folder is made with mode 0700 (`mkdir`, which never follows a link at its name); an
//!   existing one is taken only if it is an empty real folder of the caller's, and is then set
//!   to 0700. It is opened `O_DIRECTORY | O_NOFOLLOW` and checked again on the open handle
//!   (`fstat`), so a swap between the checks and the writes is seen.
//! - A link above it is followed only when it belongs to root or the caller (macOS's own
//!   `/tmp -> private/tmp`); another user's link there is refused, for it chooses where root
//!   writes.
//! - Each file is created under the folder's handle (`openat`) with
//!   `O_CREAT | O_EXCL | O_NOFOLLOW`, mode 0600: a name already there, a link above all, is an
//!   error, never written through.

use std::ffi::CString;
use std::fs::File;
use std::io::Write as _;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::Path;

use anyhow::{Context as _, bail};

use super::bundle::Bundle;
use crate::os::discovery::saved;

/// The caller's uid.
fn euid() -> u32 {
    // SAFETY: geteuid cannot fail and touches no memory.
    unsafe { libc::geteuid() }
}

/// Writes `bundle` (and its `bundle.json`) into a new folder `dir`.
pub fn write(dir: &Path, bundle: &Bundle) -> anyhow::Result<()> {
    let folder = create_folder(dir)?;
    for (name, text) in &bundle.files {
        write_file(&folder, name, text.as_bytes())
            .with_context(|| format!("{}: cannot write {name}", dir.display()))?;
    }
    write_file(&folder, saved::BUNDLE, bundle.manifest().as_bytes())
        .with_context(|| format!("{}: cannot write {}", dir.display(), saved::BUNDLE))?;
    Ok(())
}

/// The folder, new or empty and the caller's, mode 0700, open.
pub fn create_folder(dir: &Path) -> anyhow::Result<File> {
    check_ancestors(dir)?;
    let made = std::fs::DirBuilder::new().mode(0o700).create(dir);
    let fresh = match made {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
        Err(e) => return Err(e).with_context(|| format!("cannot create {}", dir.display())),
    };
    let folder = open_dir(dir)?;
    let meta = folder.metadata()?;
    if meta.uid() != euid() {
        bail!(
            "{}: owned by uid {}, not by the caller (uid {}): refused",
            dir.display(),
            meta.uid(),
            euid()
        );
    }
    if !fresh && std::fs::read_dir(dir)?.next().is_some() {
        bail!(
            "{}: not empty: refused (give a new or empty folder)",
            dir.display()
        );
    }
    folder
        .set_permissions(std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot set {} to mode 0700", dir.display()))?;
    Ok(folder)
}

/// `dir` opened as a folder, never through a link at its own name.
fn open_dir(dir: &Path) -> anyhow::Result<File> {
    let c = CString::new(dir.as_os_str().as_bytes())?;
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: `c` is a valid NUL-terminated path; the result is checked before use.
    let fd = unsafe { libc::open(c.as_ptr(), flags) };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)) {
            bail!(
                "{}: a symbolic link or not a folder: refused",
                dir.display()
            );
        }
        return Err(e).with_context(|| format!("cannot open {}", dir.display()));
    }
    // SAFETY: `fd` was just opened and is owned by nothing else.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// Every existing folder above `dir`: a symbolic link there must be root's or the caller's.
fn check_ancestors(dir: &Path) -> anyhow::Result<()> {
    let me = euid();
    for above in dir.ancestors().skip(1) {
        if above.as_os_str().is_empty() {
            continue;
        }
        let Ok(meta) = std::fs::symlink_metadata(above) else {
            continue;
        };
        if meta.file_type().is_symlink() && meta.uid() != 0 && meta.uid() != me {
            bail!(
                "{}: a symbolic link of uid {} above {}: refused",
                above.display(),
                meta.uid(),
                dir.display()
            );
        }
    }
    Ok(())
}

/// A new file `name` in `folder`, mode 0600: never an existing name, never through a link.
pub fn write_file(folder: &File, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    if name.contains('/') || name.starts_with('.') {
        return Err(std::io::Error::other("not a plain file name"));
    }
    let c = CString::new(name).map_err(std::io::Error::other)?;
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: the folder's fd is open for the call; `c` is NUL-terminated.
    let fd = unsafe { libc::openat(folder.as_raw_fd(), c.as_ptr(), flags, 0o600 as libc::c_uint) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nothing else.
    let mut file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_folder_is_private_and_its_files_too() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("bundle");
        let mut b = Bundle::default();
        b.files.insert(saved::UNAME_M, "arm64\n".into());
        write(&dir, &b).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(saved::UNAME_M)), 0o600);
        assert_eq!(
            std::fs::read_to_string(dir.join(saved::UNAME_M)).unwrap(),
            "arm64\n"
        );
        assert!(dir.join(saved::BUNDLE).is_file());
        // Not twice into the same folder: it is not empty any more.
        let again = write(&dir, &b).unwrap_err().to_string();
        assert!(again.contains("not empty"), "{again}");
    }

    #[test]
    fn a_link_at_a_file_name_is_not_written_through() {
        let base = tempfile::tempdir().unwrap();
        let victim = base.path().join("victim");
        std::fs::write(&victim, "untouched").unwrap();
        let dir = base.path().join("bundle");
        let folder = create_folder(&dir).unwrap();
        // Planted after the folder was checked: the create itself must refuse it.
        std::os::unix::fs::symlink(&victim, dir.join(saved::SW_VERS)).unwrap();
        let e = write_file(&folder, saved::SW_VERS, b"evil").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EEXIST), "{e}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
        // A dangling link too (O_EXCL refuses any name that exists).
        std::os::unix::fs::symlink(base.path().join("nowhere"), dir.join(saved::HEALTH)).unwrap();
        assert!(write_file(&folder, saved::HEALTH, b"x").is_err());
        assert!(!base.path().join("nowhere").exists());
        assert!(write_file(&folder, "../escape", b"x").is_err());
    }

    #[test]
    fn a_link_at_the_folder_is_refused() {
        let base = tempfile::tempdir().unwrap();
        let target = base.path().join("target");
        std::fs::create_dir(&target).unwrap();
        let link = base.path().join("bundle");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = create_folder(&link).unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
        assert_eq!(std::fs::read_dir(&target).unwrap().count(), 0);
    }
}
