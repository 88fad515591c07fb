//! Deterministic behaviour of the synchronous follower on real files.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use pia_split_tunnel_exporter::os::store::CheckpointStore;
use pia_split_tunnel_exporter::tail::{Cursor, FileState, FollowOptions, Follower, Poll, Resume};

struct Log {
    _dir: tempfile::TempDir,
    path: PathBuf,
    archive: PathBuf,
}

impl Log {
    fn new() -> Log {
        let dir = tempfile::tempdir().unwrap();
        Log {
            path: dir.path().join("transparent_proxy.log"),
            archive: dir.path().join("transparent_proxy.log.1"),
            _dir: dir,
        }
    }

    fn append(&self, bytes: &[u8]) {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .unwrap()
            .write_all(bytes)
            .unwrap();
    }

    /// As the proxy does it: rename over the old archive, then a new empty file.
    fn rotate(&self) {
        fs::rename(&self.path, &self.archive).unwrap();
        File::create_new(&self.path).unwrap();
    }

    fn follower(&self, start: Option<Cursor>) -> Follower {
        Follower::new(self.path.clone(), start, FollowOptions::default())
    }
}

fn poll_all(f: &mut Follower) -> (String, Poll) {
    let mut out = Vec::new();
    let p = f.poll(&mut out, usize::MAX).unwrap();
    assert!(!p.more);
    assert_eq!(p.bytes as usize, out.len());
    (String::from_utf8(out).unwrap(), p)
}

#[test]
fn existing_history_is_read_from_the_start() {
    let log = Log::new();
    log.append(b"a\r\nb\r\n");
    let mut f = log.follower(None);
    assert_eq!(f.cursor(), None);
    let (out, p) = poll_all(&mut f);
    assert_eq!(out, "a\r\nb\r\n");
    assert_eq!(p.file, FileState::Present);
    assert_eq!(p.resumed, None);
    assert_eq!(f.cursor().unwrap().offset, 6);
}

#[test]
fn partial_line_is_held_until_its_newline() {
    let log = Log::new();
    let mut f = log.follower(None);
    log.append(b"one\r\ntw");
    assert_eq!(poll_all(&mut f).0, "one\r\n");
    log.append(b"o\r");
    assert_eq!(poll_all(&mut f).0, "");
    // The cursor stays after the last complete line, not after the partial bytes.
    assert_eq!(f.cursor().unwrap().offset, 5);
    log.append(b"\nthree\r\n");
    assert_eq!(poll_all(&mut f).0, "two\r\nthree\r\n");
    assert_eq!(f.cursor().unwrap().offset, 17);
}

#[test]
fn rotation_reads_the_old_file_to_its_end_then_the_new_one() {
    let log = Log::new();
    let mut f = log.follower(None);
    log.append(b"1\r\n");
    assert_eq!(poll_all(&mut f).0, "1\r\n");
    // Written just before the rename, and a partial line the old file ends with.
    log.append(b"2\r\n3-partial");
    log.rotate();
    log.append(b"4\r\n");
    let (out, p) = poll_all(&mut f);
    assert_eq!(out, "2\r\n3-partial\n4\r\n");
    assert_eq!((p.rotations, p.truncations), (1, 0));
}

#[test]
fn two_rotations_between_polls_lose_nothing() {
    let log = Log::new();
    let mut f = log.follower(None);
    log.append(b"a\r\n");
    poll_all(&mut f);
    log.append(b"b\r\n");
    log.rotate();
    log.append(b"c\r\n");
    // Overwrites the archive holding a..b; we still hold that file open.
    log.rotate();
    log.append(b"d\r\n");
    let (out, p) = poll_all(&mut f);
    assert_eq!(out, "b\r\nc\r\nd\r\n");
    assert_eq!(p.rotations, 2);
}

#[test]
fn missing_file_between_rename_and_create() {
    let log = Log::new();
    let mut f = log.follower(None);
    log.append(b"a\r\n");
    poll_all(&mut f);
    log.append(b"b\r\n");
    fs::rename(&log.path, &log.archive).unwrap();
    let (out, p) = poll_all(&mut f);
    assert_eq!(
        (out.as_str(), p.file, p.rotations),
        ("b\r\n", FileState::Missing, 0)
    );
    log.append(b"c\r\n");
    let (out, p) = poll_all(&mut f);
    assert_eq!(
        (out.as_str(), p.file, p.rotations),
        ("c\r\n", FileState::Present, 1)
    );
}

#[test]
fn late_file_is_read_from_zero_when_it_appears() {
    let log = Log::new();
    let mut f = log.follower(None);
    let (out, p) = poll_all(&mut f);
    assert_eq!((out.as_str(), p.file), ("", FileState::Missing));
    assert_eq!(f.cursor(), None);
    log.append(b"first\r\n");
    let (out, p) = poll_all(&mut f);
    assert_eq!((out.as_str(), p.file), ("first\r\n", FileState::Present));
}

#[test]
fn truncation_in_place_restarts_at_zero() {
    let log = Log::new();
    let mut f = log.follower(None);
    log.append(b"aaaa\r\nbbbb\r\npart");
    assert_eq!(poll_all(&mut f).0, "aaaa\r\nbbbb\r\n");
    OpenOptions::new()
        .write(true)
        .open(&log.path)
        .unwrap()
        .set_len(0)
        .unwrap();
    log.append(b"new\r\n");
    let (out, p) = poll_all(&mut f);
    // The held partial line was destroyed with the file's content: not handed on.
    assert_eq!(out, "new\r\n");
    assert_eq!((p.truncations, p.rotations), (1, 0));
}

#[test]
fn truncate_then_regrow_past_the_offset_is_caught_by_the_first_bytes() {
    let log = Log::new();
    let mut f = log.follower(None);
    log.append(b"2024-01-01 old\r\n");
    poll_all(&mut f);
    let old_offset = f.cursor().unwrap().offset;
    OpenOptions::new()
        .write(true)
        .open(&log.path)
        .unwrap()
        .set_len(0)
        .unwrap();
    log.append(b"2024-01-02 new one\r\n2024-01-02 new two\r\n");
    assert!(fs::metadata(&log.path).unwrap().len() > old_offset);
    let (out, p) = poll_all(&mut f);
    assert_eq!(out, "2024-01-02 new one\r\n2024-01-02 new two\r\n");
    assert_eq!(p.truncations, 1);
}

#[test]
fn ten_megabyte_line_is_skipped_with_bounded_memory() {
    let log = Log::new();
    let max_line = 64 * 1024;
    let opts = FollowOptions {
        max_line_bytes: max_line,
        read_chunk: 16 * 1024,
        ..FollowOptions::default()
    };
    let mut f = Follower::new(log.path.clone(), None, opts);
    log.append(b"before\r\n");
    let chunk = vec![b'z'; 1024 * 1024];
    let mut out = Vec::new();
    let mut too_long = 0;
    for _ in 0..10 {
        log.append(&chunk);
        // Small batches: the line is crossed in many polls without ever being held whole.
        loop {
            let p = f.poll(&mut out, 100 * 1024).unwrap();
            too_long += p.lines_too_long;
            assert!(
                f.buffered_capacity() < 3 * max_line,
                "{}",
                f.buffered_capacity()
            );
            if !p.more {
                break;
            }
        }
    }
    assert_eq!(out, b"before\r\n");
    assert_eq!(too_long, 1);
    log.append(b"\r\nafter\r\n");
    let (rest, p) = poll_all(&mut f);
    assert_eq!(rest, "after\r\n");
    assert_eq!(
        p.lines_too_long, 0,
        "counted once, when it crossed the limit"
    );
    assert!(f.buffered_capacity() < 3 * max_line);
}

#[test]
fn backlog_comes_in_bounded_batches() {
    let log = Log::new();
    let line = "x".repeat(98) + "\r\n";
    log.append(line.repeat(1000).as_bytes());
    let mut f = log.follower(None);
    let (mut out, mut calls) = (Vec::new(), 0);
    loop {
        let before = out.len();
        let p = f.poll(&mut out, 10_000).unwrap();
        calls += 1;
        assert!(out.len() - before <= 10_000 + line.len());
        if !p.more {
            break;
        }
    }
    assert_eq!(out, line.repeat(1000).as_bytes());
    assert!(calls >= 10);
}

#[test]
fn stale_archive_is_never_read_even_if_the_file_is_replaced() {
    let log = Log::new();
    fs::write(&log.archive, b"old archive\r\n").unwrap();
    log.append(b"current\r\n");
    let mut f = log.follower(None);
    assert_eq!(poll_all(&mut f).0, "current\r\n");
    // Replaced by other means than a rotation: the archive is still the old one.
    fs::remove_file(&log.path).unwrap();
    fs::write(&log.path, b"replacement\r\n").unwrap();
    let (out, p) = poll_all(&mut f);
    assert_eq!(out, "replacement\r\n");
    assert_eq!(p.rotations, 1);
}

fn save_and_reload(store: &CheckpointStore, f: &Follower) -> Cursor {
    store.save(&f.cursor().unwrap()).unwrap();
    let c: Cursor = store.load().unwrap().unwrap();
    assert_eq!(Some(&c), f.cursor().as_ref());
    c
}

fn store_in(dir: &Path) -> CheckpointStore {
    CheckpointStore::new(dir.join("checkpoint.json"))
}

#[test]
fn restart_without_rotation_resumes_exactly() {
    let log = Log::new();
    let state = tempfile::tempdir().unwrap();
    let store = store_in(state.path());
    log.append(b"a\r\nb\r\npar");
    let mut f = log.follower(None);
    assert_eq!(poll_all(&mut f).0, "a\r\nb\r\n");
    let c = save_and_reload(&store, &f);
    drop(f);
    log.append(b"tial\r\nc\r\n");
    let mut f = log.follower(Some(c.clone()));
    // Before its first poll, a resumed follower reports the saved position, so a
    // checkpoint written then keeps it.
    assert_eq!(f.cursor(), Some(c));
    let (out, p) = poll_all(&mut f);
    assert_eq!(out, "partial\r\nc\r\n");
    assert_eq!(p.resumed, Some(Resume::Exact));
    // Reported once only.
    assert_eq!(poll_all(&mut f).1.resumed, None);
}

#[test]
fn restart_after_a_rotation_reads_the_archive_rest_then_the_new_file() {
    let log = Log::new();
    let state = tempfile::tempdir().unwrap();
    let store = store_in(state.path());
    log.append(b"a\r\n");
    let mut f = log.follower(None);
    poll_all(&mut f);
    let c = save_and_reload(&store, &f);
    drop(f);
    log.append(b"b\r\n");
    log.rotate();
    log.append(b"c\r\n");
    let mut f = log.follower(Some(c));
    let (out, p) = poll_all(&mut f);
    assert_eq!(out, "b\r\nc\r\n");
    assert_eq!(p.resumed, Some(Resume::FromArchive));
    assert_eq!(p.rotations, 1);
}

#[test]
fn restart_with_another_file_of_the_same_size_starts_over() {
    let log = Log::new();
    let state = tempfile::tempdir().unwrap();
    let store = store_in(state.path());
    log.append(b"2024-01-01 a\r\n2024-01-01 b\r\n");
    let mut f = log.follower(None);
    poll_all(&mut f);
    let c = save_and_reload(&store, &f);
    drop(f);
    // Same size, other first bytes, written in place (same inode).
    fs::write(&log.path, b"2024-01-02 c\r\n2024-01-02 d\r\n").unwrap();
    let mut f = log.follower(Some(c.clone()));
    let (out, p) = poll_all(&mut f);
    assert_eq!(out, "2024-01-02 c\r\n2024-01-02 d\r\n");
    assert_eq!(p.resumed, Some(Resume::NotFound));
    // And as a new file (another inode) with the same content length.
    drop(f);
    fs::remove_file(&log.path).unwrap();
    fs::write(&log.path, b"2024-01-03 e\r\n2024-01-03 f\r\n").unwrap();
    let mut f = log.follower(Some(c));
    let (out, p) = poll_all(&mut f);
    assert_eq!(out, "2024-01-03 e\r\n2024-01-03 f\r\n");
    assert_eq!(p.resumed, Some(Resume::NotFound));
}

#[test]
fn restart_after_two_rotations_reports_the_gap_and_reads_the_archive() {
    let log = Log::new();
    log.append(b"a\r\n");
    let mut f = log.follower(None);
    poll_all(&mut f);
    let c = f.cursor().unwrap();
    drop(f);
    // Two rotations: the saved file (and its unread "lost") is overwritten; the archive
    // holds b, newer than it, and is read before the current file.
    log.append(b"lost\r\n");
    log.rotate();
    // Held open so the file system cannot give its inode to the next file.
    let _saved = File::open(&log.archive).unwrap();
    log.append(b"b\r\n");
    log.rotate();
    log.append(b"c\r\n");
    let mut f = log.follower(Some(c));
    let (out, p) = poll_all(&mut f);
    assert_eq!(out, "b\r\nc\r\n");
    assert_eq!((p.resumed, p.rotations), (Some(Resume::Gap), 1));
}

/// Inodes are reused (ext4 gives a deleted file's inode to the next new file): after two
/// rotations the current file may have the saved file's inode, and an empty saved file's
/// fingerprint matches any head. Forced here with a link kept to the saved file, emptied,
/// rewritten and moved back into place. It is not the saved file: the gap is reported and
/// the archive read, never the current file alone with the archive silently skipped.
#[test]
fn restart_after_two_rotations_onto_the_saved_inode_reports_the_gap() {
    for (archive_then, saved) in [
        (false, &b"a\r\n"[..]),
        (true, &b"a\r\n"[..]),
        (false, &b""[..]),
        (true, &b""[..]),
    ] {
        let case = format!("archive before: {archive_then}, saved file: {saved:?}");
        let log = Log::new();
        if archive_then {
            fs::write(&log.archive, b"older\r\n").unwrap();
        }
        log.append(saved);
        let mut f = log.follower(None);
        poll_all(&mut f);
        let c = f.cursor().unwrap();
        drop(f);
        let keep = log.path.with_extension("keep");
        fs::hard_link(&log.path, &keep).unwrap();
        log.append(b"lost\r\n");
        log.rotate();
        log.append(b"b\r\n");
        log.rotate();
        fs::write(&keep, b"c\r\n").unwrap();
        fs::rename(&keep, &log.path).unwrap();
        let mut f = log.follower(Some(c));
        let (out, p) = poll_all(&mut f);
        assert_eq!(out, "b\r\nc\r\n", "{case}");
        assert_eq!((p.resumed, p.rotations), (Some(Resume::Gap), 1), "{case}");
    }
}

/// Rewritten in place while stopped (same inode, other content), the archive the one it
/// had: no gap, the file is read from its start and the old archive not again.
#[test]
fn restart_after_a_rewrite_in_place_reads_the_file_not_the_old_archive() {
    let log = Log::new();
    fs::write(&log.archive, b"older\r\n").unwrap();
    log.append(b"2024-01-01 a\r\n");
    let mut f = log.follower(None);
    assert_eq!(poll_all(&mut f).0, "2024-01-01 a\r\n");
    let c = f.cursor().unwrap();
    drop(f);
    fs::write(&log.path, b"2024-01-02 b\r\n").unwrap();
    let mut f = log.follower(Some(c));
    let (out, p) = poll_all(&mut f);
    assert_eq!(out, "2024-01-02 b\r\n");
    assert_eq!(p.resumed, Some(Resume::NotFound));
}

fn mkfifo(p: &Path) {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid C string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o666) }, 0, "mkfifo");
}

/// In a sticky world-writable folder (like /tmp): a FIFO, a link, a foreign owner and a hard
/// link are each refused once, counted once, and never block; a good file is then read.
#[test]
fn shared_folder_refuses_what_it_must_without_blocking() {
    use pia_split_tunnel_exporter::tail::{Refusal, Trust};
    use std::os::unix::fs::PermissionsExt;
    let log = Log::new();
    let dir = log.path.parent().unwrap();
    fs::set_permissions(dir, fs::Permissions::from_mode(0o1777)).unwrap();
    let me = unsafe { libc::geteuid() };
    let opts = |owner| FollowOptions {
        trust: Trust { owner },
        ..FollowOptions::default()
    };
    mkfifo(&log.path);
    let mut f = Follower::new(log.path.clone(), None, opts(me));
    let (out, p) = poll_all(&mut f);
    assert_eq!(
        (out.as_str(), p.file, p.refused),
        ("", FileState::Refused(Refusal::NotRegular("FIFO")), 1)
    );
    // The same file again: reported, not counted again.
    let (_, p) = poll_all(&mut f);
    assert_eq!(p.refused, 0);
    fs::remove_file(&log.path).unwrap();

    let elsewhere = dir.join("secret");
    fs::write(&elsewhere, "root only\r\n").unwrap();
    std::os::unix::fs::symlink(&elsewhere, &log.path).unwrap();
    let (out, p) = poll_all(&mut f);
    assert_eq!(
        (out.as_str(), p.file),
        ("", FileState::Refused(Refusal::Symlink))
    );
    fs::remove_file(&log.path).unwrap();

    fs::hard_link(&elsewhere, &log.path).unwrap();
    let (out, p) = poll_all(&mut f);
    assert_eq!(
        (out.as_str(), p.file),
        ("", FileState::Refused(Refusal::HardLink))
    );
    fs::remove_file(&log.path).unwrap();

    log.append(b"mine\r\n");
    let mut other = Follower::new(log.path.clone(), None, opts(me + 1));
    let (out, p) = poll_all(&mut other);
    assert_eq!(
        (out.as_str(), p.file),
        (
            "",
            FileState::Refused(Refusal::Owner {
                uid: me,
                want: me + 1
            })
        )
    );
    let (out, p) = poll_all(&mut f);
    assert_eq!(
        (out.as_str(), p.file, p.refused),
        ("mine\r\n", FileState::Present, 0)
    );
}

/// A name that is the other log (here a hard link in a private folder) is refused, so no line
/// is counted twice; the other log's archive too.
#[test]
fn the_other_log_is_not_read_twice() {
    use pia_split_tunnel_exporter::tail::Refusal;
    let main = Log::new();
    main.append(b"a\r\n");
    let err = Log::new();
    fs::hard_link(&main.path, &err.path).unwrap();
    let opts = FollowOptions {
        avoid: Some(main.path.clone()),
        ..FollowOptions::default()
    };
    let mut f = Follower::new(err.path.clone(), None, opts);
    let (out, p) = poll_all(&mut f);
    assert_eq!(
        (out.as_str(), p.file),
        ("", FileState::Refused(Refusal::SameAsOther))
    );
    main.rotate();
    let (out, p) = poll_all(&mut f);
    assert_eq!(
        (out.as_str(), p.file),
        ("", FileState::Refused(Refusal::SameAsOther))
    );
}
