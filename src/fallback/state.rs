//! What the fallback keeps on disk for a later process: the pf enable token
//! (`fallback.pf_token_file`, one number) and the record of what a backend installed
//! (`fallback.state_file`), so that a run with a changed `route_table`, `rule_priority` or
//! `anchor` still finds and removes an earlier install.
//!
//! Both steer what root removes or releases, so both are trusted only as root's own files:
//! - written through [`CheckpointStore`]: a temp file created exclusively (`O_EXCL`,
//!   `O_NOFOLLOW`, mode 0600) and renamed over the name (a link planted at the name is
//!   replaced, its target never written), in a folder others cannot write;
//! - read only when the folder is not writable by others and the file is a regular file (not
//!   a link: `O_NOFOLLOW`, checked on the opened file) of the agent's user (root), with one
//!   name and no access for group or others. Anything else is refused with a warning and
//!   read as absent: the agent then does what the config says, nothing more.

use std::io::{self, Read as _};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::recheck::{Retirement, Versions};
use crate::os::store::CheckpointStore;
use crate::os::trusted::{Opened, Refusal, Trust, folder_is_shared, open_log};

/// Both files hold a few dozen bytes; more is not ours.
const MAX_BYTES: u64 = 4096;

/// The one owner these files may have: the agent's user (root when it runs as a daemon).
fn trust() -> Trust {
    // SAFETY: geteuid cannot fail and touches no memory.
    Trust {
        owner: unsafe { libc::geteuid() },
    }
}

/// Reads `path` as JSON under the rules of the module doc. `Ok(None)`: no file. `Err`: a file
/// that is refused or unreadable, with why.
pub fn read_private<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, String> {
    let (file, meta) = match open_log(path, true, trust()) {
        Ok(Opened::File(f, m)) => (f, m),
        Ok(Opened::Refused(r)) => return Err(refusal(r)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    if folder_is_shared(path, trust()) {
        return Err("its folder can be written by other users".into());
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "mode {mode:o}: group or others can read or write it"
        ));
    }
    let mut bytes = Vec::new();
    file.take(MAX_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_BYTES {
        return Err(format!("longer than {MAX_BYTES} bytes"));
    }
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| format!("not what the agent writes: {e}"))
}

/// [`open_log`]'s refusals, worded for a file in a folder of root's.
fn refusal(r: Refusal) -> String {
    match r {
        Refusal::Symlink => "a symbolic link".into(),
        Refusal::Owner { uid, want } => format!("owned by uid {uid}, not {want}"),
        Refusal::HardLink => "a file with several names (hard link)".into(),
        other => other.to_string(),
    }
}

/// Replaces `path` with `value` as JSON, under the rules of the module doc (creating the
/// folder, mode 0755, if it is missing).
pub fn write_private<T: Serialize>(path: &Path, value: &T) -> Result<(), String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    CheckpointStore::new(path)
        .save(value)
        .map_err(|e| e.to_string())
}

/// Removes `path`; a missing file is not an error.
pub fn remove(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// What a backend installed, as it was configured then. A field that is absent (an older
/// file, or the other backend's) means "the configured value".
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Installed {
    /// Policy routing: the table holding the routes, and the rules' priority.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route_table: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule_priority: Option<u32>,
    /// pf: the anchor holding the rules.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anchor: Option<String>,
}

/// What the fallback remembers beside the install, for a later process: the versions the
/// rules were last found needed under (so a restart after an upgrade still sees the change)
/// and a retirement (so a restart under the same versions does not bring the rules back on
/// the sessions it saw before the fix).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Memory {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub needed_under: Option<Versions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retired: Option<Retirement>,
}

/// Format 2: format 1's install and the [`Memory`].
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct V2 {
    installed: Installed,
    memory: Memory,
}

/// The state file, by format version (the checkpoint's scheme: a later format adds a
/// variant and still reads every earlier one).
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "version")]
enum StateFile {
    #[serde(rename = "1")]
    V1(Installed),
    #[serde(rename = "2")]
    V2(V2),
}

impl StateFile {
    fn into_v2(self) -> V2 {
        match self {
            StateFile::V1(installed) => V2 {
                installed,
                memory: Memory::default(),
            },
            StateFile::V2(v) => v,
        }
    }
}

/// The record of what was installed, at `fallback.state_file`; none kept without a path.
#[derive(Clone, Debug)]
pub struct Record {
    path: Option<PathBuf>,
}

impl Record {
    pub fn new(path: Option<PathBuf>) -> Record {
        Record { path }
    }

    /// What an earlier run recorded; nothing when there is no record or it is refused (with
    /// a warning) or names values the config could not hold (`check` says why).
    pub fn load(&self, check: impl FnOnce(&Installed) -> Result<(), String>) -> Installed {
        let read = self.read().and_then(|v| {
            check(&v.installed)?;
            Ok(v.installed)
        });
        self.refused(read).unwrap_or_default()
    }

    /// What the fallback remembers; nothing without a record or when it is refused.
    pub fn memory(&self) -> Memory {
        let read = self.read().map(|v| v.memory);
        self.refused(read).unwrap_or_default()
    }

    /// Records what is about to be installed (before it is, so a crash halfway is found too),
    /// keeping the memory.
    pub fn save(&self, installed: &Installed) {
        self.update(|v| v.installed = installed.clone());
    }

    /// Nothing is installed any more (the memory stays).
    pub fn clear(&self) {
        self.update(|v| v.installed = Installed::default());
    }

    /// Replaces the memory, keeping what is installed.
    pub fn remember(&self, memory: &Memory) {
        self.update(|v| v.memory = memory.clone());
    }

    /// The file as format 2; `Ok` default without a path or a file.
    fn read(&self) -> Result<V2, String> {
        let Some(path) = &self.path else {
            return Ok(V2::default());
        };
        Ok(read_private::<StateFile>(path)?
            .map(StateFile::into_v2)
            .unwrap_or_default())
    }

    fn refused<T>(&self, read: Result<T, String>) -> Option<T> {
        read.map_err(|why| {
            if let Some(path) = &self.path {
                tracing::warn!(file = %path.display(), reason = %why,
                    "fallback state file refused; only what the config names is looked for");
            }
        })
        .ok()
    }

    /// Reads, changes and writes the record; a record with nothing in it is removed.
    fn update(&self, change: impl FnOnce(&mut V2)) {
        let Some(path) = &self.path else { return };
        // A refused file is not carried over: only what this process knows is written.
        let mut v = self.read().unwrap_or_default();
        change(&mut v);
        let result = if v.installed == Installed::default() && v.memory == Memory::default() {
            remove(path).map_err(|e| e.to_string())
        } else {
            write_private(path, &StateFile::V2(v))
        };
        if let Err(e) = result {
            tracing::warn!(file = %path.display(), error = %e,
                "cannot record the fallback's state; after a change of its settings a later run \
                 will not find what it installed, nor remember a recheck");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn round_trip_is_private_and_an_older_record_means_the_config() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/fallback.json");
        let r = Record::new(Some(path.clone()));
        assert_eq!(r.load(|_| Ok(())), Installed::default(), "no file yet");
        let i = Installed {
            route_table: Some(200),
            rule_priority: Some(300),
            anchor: None,
        };
        r.save(&i);
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        assert_eq!(r.load(|_| Ok(())), i);
        // A record that names none of the fields (an older writer) means "as configured".
        std::fs::write(&path, br#"{"version": "1"}"#).unwrap();
        assert_eq!(r.load(|_| Ok(())), Installed::default());
        // Values the config could not hold are not acted on.
        r.save(&i);
        assert_eq!(r.load(|_| Err("no".into())), Installed::default());
        r.clear();
        assert!(!path.exists());
        r.clear();
    }

    #[test]
    fn the_memory_outlives_the_install_and_format_1_still_reads() {
        use crate::fallback::recheck::{RetireReason, Retirement, Versions};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fallback.json");
        let r = Record::new(Some(path.clone()));
        // An earlier agent's record (format 1) reads as an install without memory.
        std::fs::write(&path, br#"{"version": "1", "route_table": 200}"#).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(r.load(|_| Ok(())).route_table, Some(200));
        assert_eq!(r.memory(), Memory::default());
        let memory = Memory {
            needed_under: None,
            retired: Some(Retirement {
                reason: RetireReason::BypassWorksWithout,
                versions: Versions::new(Some("3.7.0"), Some("15.3"), Some("24D60")),
                at_unix: 1_800_000_000,
            }),
        };
        r.remember(&memory);
        assert_eq!(r.load(|_| Ok(())).route_table, Some(200), "install kept");
        // Reverted: the install goes, the retirement stays (a restart must still know it).
        r.clear();
        assert_eq!(r.load(|_| Ok(())), Installed::default());
        assert_eq!(r.memory(), memory);
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(v["version"], "2", "{v}");
        // Applied again: a new install beside the memory; nothing left: no file.
        r.save(&Installed {
            anchor: Some("com.apple/x".into()),
            ..Installed::default()
        });
        assert_eq!(r.memory(), memory);
        r.remember(&Memory::default());
        r.clear();
        assert!(!path.exists());
        // A record without a path keeps nothing and says nothing.
        let none = Record::new(None);
        none.remember(&memory);
        assert_eq!(none.memory(), Memory::default());
    }

    #[test]
    fn hostile_files_are_refused_and_their_targets_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "7").unwrap();
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
        let path = dir.path().join("token");
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        let err = read_private::<u64>(&path).unwrap_err();
        assert!(err.contains("symbolic link"), "{err}");

        // Writing replaces the link itself; the file it pointed at keeps its content.
        write_private(&path, &9u64).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "7");
        assert!(std::fs::symlink_metadata(&path).unwrap().is_file());
        assert_eq!(read_private::<u64>(&path).unwrap(), Some(9));

        // Readable by others: refused.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = read_private::<u64>(&path).unwrap_err();
        assert!(err.contains("644"), "{err}");

        // A FIFO does not hang the read.
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid C string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(read_private::<u64>(&fifo).unwrap_err().contains("FIFO"));

        // Oversized: refused, not read whole.
        std::fs::write(&path, vec![b' '; 5000]).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(read_private::<u64>(&path).unwrap_err().contains("longer"));

        // In a folder others can write, nothing is believed.
        let shared = dir.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let planted = shared.join("token");
        std::fs::write(&planted, "5").unwrap();
        std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(
            read_private::<u64>(&planted)
                .unwrap_err()
                .contains("other users")
        );
        assert!(write_private(&planted, &6u64).is_err());
        assert_eq!(std::fs::read_to_string(&planted).unwrap(), "5");
    }

    #[test]
    fn a_foreign_owner_is_refused() {
        // Needs root to give a file away; the suite runs as root (CI).
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "run as root: this test chowns a file"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        write_private(&path, &5u64).unwrap();
        std::os::unix::fs::chown(&path, Some(65534), None).unwrap();
        let err = read_private::<u64>(&path).unwrap_err();
        assert!(err.contains("uid 65534"), "{err}");
    }
}
