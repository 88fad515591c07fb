//! Atomic JSON file for the reading position (and whatever else must survive a restart).

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("checkpoint {path} is corrupt: {source}")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error(
        "checkpoint {path} is in use by another agent (its lock file is held); one agent per checkpoint"
    )]
    Locked { path: PathBuf },
    #[error(
        "checkpoint {path}: its folder can be written by other users; use a folder of root's (mode 0755 or stricter)"
    )]
    SharedFolder { path: PathBuf },
    #[error("checkpoint {path}: cannot encode: {source}")]
    Encode {
        path: PathBuf,
        source: serde_json::Error,
    },
}

impl CheckpointError {
    pub fn path(&self) -> &Path {
        match self {
            CheckpointError::Io { path, .. }
            | CheckpointError::Corrupt { path, .. }
            | CheckpointError::Encode { path, .. }
            | CheckpointError::Locked { path }
            | CheckpointError::SharedFolder { path } => path,
        }
    }
}

/// Held while an agent owns a checkpoint ([`CheckpointStore::lock`]); the kernel releases the
/// lock when the process ends, however it ends.
#[derive(Debug)]
pub struct StoreLock {
    _file: File,
}

/// One JSON document at `path`, replaced atomically: a crash leaves either the old or the new
/// content, never a mix. One saver per path: [`CheckpointStore::lock`] makes sure of it. The
/// folder must not be writable by others; the temp file is created exclusively, mode 0600,
/// without following links.
#[derive(Clone, Debug)]
pub struct CheckpointStore {
    path: PathBuf,
}

impl CheckpointStore {
    pub fn new(path: impl Into<PathBuf>) -> CheckpointStore {
        CheckpointStore { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The saved value; `None` if nothing was saved yet.
    pub fn load<T: DeserializeOwned>(&self) -> Result<Option<T>, CheckpointError> {
        self.load_with(|bytes| serde_json::from_slice(bytes))
    }

    /// The saved value as `decode` reads the file's bytes (for formats that look before they
    /// parse, e.g. at a version field); `None` if nothing was saved yet.
    pub fn load_with<T>(
        &self,
        decode: impl FnOnce(&[u8]) -> serde_json::Result<T>,
    ) -> Result<Option<T>, CheckpointError> {
        self.check_folder()?;
        let bytes = match fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io(e)),
        };
        decode(&bytes)
            .map(Some)
            .map_err(|source| CheckpointError::Corrupt {
                path: self.path.clone(),
                source,
            })
    }

    /// Writes a temporary file next to the target, syncs it, renames it over the target and
    /// syncs the folder so the rename itself survives a power loss.
    pub fn save<T: Serialize>(&self, value: &T) -> Result<(), CheckpointError> {
        self.write(&self.encode(value)?)
    }

    /// The document [`save`](CheckpointStore::save) would write for `value`.
    pub fn encode<T: Serialize>(&self, value: &T) -> Result<Vec<u8>, CheckpointError> {
        serde_json::to_vec_pretty(value).map_err(|source| CheckpointError::Encode {
            path: self.path.clone(),
            source,
        })
    }

    /// Replaces the checkpoint with `json` (from [`encode`](CheckpointStore::encode)), so
    /// the slow part (writing, fsync) can run apart from the state it was taken from.
    pub fn write(&self, json: &[u8]) -> Result<(), CheckpointError> {
        self.check_folder()?;
        let tmp = self.temp_path();
        let written = (|| {
            // A stale temp file of a crashed save goes first; then the name is created anew,
            // never opened through a link someone left there.
            match fs::remove_file(&tmp) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&tmp)?;
            f.write_all(json)?;
            f.write_all(b"\n")?;
            f.sync_all()
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(self.io(e));
        }
        if let Err(e) = fs::rename(&tmp, &self.path) {
            let _ = fs::remove_file(&tmp);
            return Err(self.io(e));
        }
        File::open(self.dir())
            .and_then(|d| d.sync_all())
            .map_err(|e| self.io(e))
    }

    /// Takes the store for this process: an exclusive `flock` on `PATH.lock`, held while the
    /// returned guard lives. A second agent on the same checkpoint gets an error naming it.
    pub fn lock(&self) -> Result<StoreLock, CheckpointError> {
        self.check_folder()?;
        let mut name = self.path.clone().into_os_string();
        name.push(".lock");
        // Read-only (created through the raw flag): a file open for writing would keep its
        // filesystem from being remounted read-only.
        let file = fs::OpenOptions::new()
            .read(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CREAT)
            .open(&name)
            .map_err(|e| self.io(e))?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = io::Error::last_os_error();
            return Err(if e.kind() == io::ErrorKind::WouldBlock {
                CheckpointError::Locked {
                    path: self.path.clone(),
                }
            } else {
                self.io(e)
            });
        }
        Ok(StoreLock { _file: file })
    }

    /// Sets a checkpoint that cannot be used aside as `PATH.bad` (replacing an older one), so
    /// the agent starts clean and the file stays for a look.
    pub fn set_aside(&self) -> Result<PathBuf, CheckpointError> {
        let mut bad = self.path.clone().into_os_string();
        bad.push(".bad");
        let bad = PathBuf::from(bad);
        fs::rename(&self.path, &bad).map_err(|e| self.io(e))?;
        Ok(bad)
    }

    /// The folder must be writable by root (and the agent's user) only: anyone else could put
    /// a forged checkpoint or a link in the agent's way.
    fn check_folder(&self) -> Result<(), CheckpointError> {
        let meta = fs::metadata(self.dir()).map_err(|e| self.io(e))?;
        // SAFETY: geteuid cannot fail and touches no memory.
        let owner = unsafe { libc::geteuid() };
        if super::trusted::folder_meta_is_shared(&meta, super::trusted::Trust { owner }) {
            return Err(CheckpointError::SharedFolder {
                path: self.path.clone(),
            });
        }
        Ok(())
    }

    fn dir(&self) -> &Path {
        match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        }
    }

    /// Fixed name in the same folder (rename is only atomic within a filesystem); reused, so a
    /// crash mid-save leaves at most one stale temp file, overwritten by the next save.
    fn temp_path(&self) -> PathBuf {
        let mut name = OsString::from(".");
        name.push(self.path.file_name().unwrap_or_default());
        name.push(".tmp");
        self.dir().join(name)
    }

    fn io(&self, source: io::Error) -> CheckpointError {
        CheckpointError::Io {
            path: self.path.clone(),
            source,
        }
    }
}
