//! The atomic JSON checkpoint file.

use std::fs;

use pia_split_tunnel_exporter::os::store::{CheckpointError, CheckpointStore};
use pia_split_tunnel_exporter::tail::{Before, Cursor, Fingerprint};
use serde::{Deserialize, Serialize};

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct State {
    cursor: Option<Cursor>,
    sessions: Vec<String>,
}

fn state(offset: u64) -> State {
    State {
        cursor: Some(Cursor {
            dev: 1,
            ino: 2,
            offset,
            fingerprint: Fingerprint::of(b"2024-05-01 first line"),
            before: Before::Unknown,
        }),
        sessions: vec!["a".into(), "b".into()],
    }
}

fn names(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

#[test]
fn missing_file_loads_as_none() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::new(dir.path().join("checkpoint.json"));
    assert_eq!(store.load::<State>().unwrap(), None);
}

#[test]
fn save_then_load_round_trips_and_leaves_no_temp_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::new(dir.path().join("checkpoint.json"));
    store.save(&state(10)).unwrap();
    assert_eq!(store.load::<State>().unwrap(), Some(state(10)));
    // Replacing keeps exactly one file: the temp file was renamed over the target.
    store.save(&state(20)).unwrap();
    assert_eq!(store.load::<State>().unwrap(), Some(state(20)));
    assert_eq!(names(dir.path()), ["checkpoint.json"]);
}

#[test]
fn stale_temp_file_from_a_crash_does_not_matter() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::new(dir.path().join("checkpoint.json"));
    store.save(&state(1)).unwrap();
    // A save interrupted after writing part of its temp file.
    fs::write(
        dir.path().join(".checkpoint.json.tmp"),
        b"{\"cursor\": {\"de",
    )
    .unwrap();
    assert_eq!(store.load::<State>().unwrap(), Some(state(1)));
    store.save(&state(2)).unwrap();
    assert_eq!(store.load::<State>().unwrap(), Some(state(2)));
    assert_eq!(names(dir.path()), ["checkpoint.json"]);
}

#[test]
fn corrupt_file_is_an_error_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("checkpoint.json");
    fs::write(&path, b"{\"cursor\": nul").unwrap();
    let err = CheckpointStore::new(&path).load::<State>().unwrap_err();
    assert!(matches!(err, CheckpointError::Corrupt { .. }), "{err:?}");
    assert_eq!(err.path(), path);
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
}

#[test]
fn unwritable_folder_is_an_error_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-such-folder").join("checkpoint.json");
    let err = CheckpointStore::new(&path).save(&state(1)).unwrap_err();
    assert!(matches!(err, CheckpointError::Io { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
}

#[test]
fn cursor_json_is_stable() {
    // The saved format outlives a build: field names and the hash must not drift.
    let c = Cursor {
        dev: 7,
        ino: 8,
        offset: 9,
        fingerprint: Fingerprint::of(b"abc"),
        before: Before::Unknown,
    };
    assert_eq!(
        serde_json::to_string(&c).unwrap(),
        r#"{"dev":7,"ino":8,"offset":9,"fingerprint":{"len":3,"hash":16654208175385433931}}"#
    );
}

/// One agent per checkpoint; a folder others can write is refused; a link planted at the temp
/// name is replaced, never written through; a bad file is set aside.
#[test]
fn lock_folder_temp_file_and_set_aside() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::new(dir.path().join("cp.json"));
    let held = store.lock().unwrap();
    let again = CheckpointStore::new(dir.path().join("cp.json")).lock();
    assert!(
        matches!(again, Err(CheckpointError::Locked { .. })),
        "{again:?}"
    );
    drop(held);
    store.lock().unwrap();

    let victim = dir.path().join("victim");
    fs::write(&victim, "root's file\n").unwrap();
    std::os::unix::fs::symlink(&victim, dir.path().join(".cp.json.tmp")).unwrap();
    store.save(&state(7)).unwrap();
    assert_eq!(fs::read_to_string(&victim).unwrap(), "root's file\n");
    let mode = fs::metadata(store.path()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    fs::write(store.path(), "{not json").unwrap();
    let bad = store.set_aside().unwrap();
    assert_eq!(fs::read_to_string(bad).unwrap(), "{not json");
    assert!(store.load::<State>().unwrap().is_none());

    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o1777)).unwrap();
    let e = store.save(&state(8)).unwrap_err();
    assert!(matches!(e, CheckpointError::SharedFolder { .. }), "{e}");
    assert!(e.to_string().contains("other users"), "{e}");
    assert!(matches!(
        store.load::<State>(),
        Err(CheckpointError::SharedFolder { .. })
    ));
}
