//! Atomic JSON file for the reading position (and whatever else must survive a restart).

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Write};
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
            | CheckpointError::Encode { path, .. } => path,
        }
    }
}

/// One JSON document at `path`, replaced atomically: a crash leaves either the old or the new
/// content, never a mix. Not meant for several concurrent savers of the same path.
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
        let json = serde_json::to_vec_pretty(value).map_err(|source| CheckpointError::Encode {
            path: self.path.clone(),
            source,
        })?;
        let tmp = self.temp_path();
        let written = (|| {
            let mut f = File::create(&tmp)?;
            f.write_all(&json)?;
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
