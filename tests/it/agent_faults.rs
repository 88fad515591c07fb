//! File faults under the running agent: the log deleted and recreated, replaced by a symlink,
//! unreadable; the checkpoint's disk full or read-only. Each time the agent keeps serving,
//! says what is wrong on `/health`, and once the fault clears has counted every line once.
//!
//! The checkpoint faults mount a small tmpfs and the unreadable-log test drops the agent's
//! permission-override capabilities: they need root, as CI runs them, and fail (not skip)
//! without it.

use crate::common;

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::agent::{Agent, lines_of};
use common::generate;
use serde_json::Value;

/// A generated log split in three parts, and the agent's files in a temporary folder.
struct Case {
    dir: tempfile::TempDir,
    log: PathBuf,
    lines: Vec<Vec<u8>>,
    expected: Value,
}

impl Case {
    fn new(seed: u32) -> Case {
        let dir = tempfile::tempdir().unwrap();
        let (source, expected) = generate(dir.path(), "mixed", 1_500, seed);
        let log = dir.path().join("transparent_proxy.log");
        Case {
            lines: lines_of(&source),
            log,
            expected,
            dir,
        }
    }

    /// Line index where part `k` of 3 starts.
    fn cut(&self, k: usize) -> usize {
        self.lines.len() * k / 3
    }

    fn part(&self, k: usize) -> Vec<u8> {
        self.lines[self.cut(k)..self.cut(k + 1)].concat()
    }

    fn start(&self, checkpoint: &Path, wrap: &[&str]) -> Agent {
        Agent::start_with(&self.log, checkpoint, &[], wrap)
    }

    fn append(&self, bytes: &[u8]) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        f.write_all(bytes).unwrap();
    }
}

fn require_root(what: &str) {
    assert!(
        unsafe { libc::geteuid() } == 0,
        "this test needs root to {what} (CI runs the tests as root)"
    );
}

#[test]
fn deleted_then_recreated_log_is_reported_and_read_from_its_start() {
    let case = Case::new(41);
    case.append(&[case.part(0), case.part(1)].concat());
    let agent = case.start(&case.dir.path().join("cp.json"), &[]);
    agent.wait_lines(case.cut(2) as u64);
    std::fs::remove_file(&case.log).unwrap();
    let reason = agent.wait_health("log", "failing");
    assert!(reason.contains("missing"), "{reason}");
    assert_eq!(
        agent
            .metrics()
            .value("pia_split_tunnel_log_file_present", &[]),
        0.0
    );
    case.append(&case.part(2));
    let m = agent.wait_lines(case.lines.len() as u64);
    m.assert_matches(&case.expected);
    assert_eq!(m.value("pia_split_tunnel_log_file_present", &[]), 1.0);
    agent.wait_health("log", "ok");
}

#[test]
fn log_replaced_by_a_symlink_follows_its_target() {
    let case = Case::new(42);
    case.append(&case.part(0));
    let agent = case.start(&case.dir.path().join("cp.json"), &[]);
    agent.wait_lines(case.cut(1) as u64);
    // The new file lives elsewhere; the log's name becomes a link to it, swapped in at once.
    let target = case.dir.path().join("elsewhere/proxy.log");
    std::fs::create_dir(target.parent().unwrap()).unwrap();
    std::fs::write(&target, case.part(1)).unwrap();
    let link = case.dir.path().join("link.tmp");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    std::fs::rename(&link, &case.log).unwrap();
    agent.wait_lines(case.cut(2) as u64);
    // Written through the link: the same file.
    case.append(&case.part(2));
    let m = agent.wait_lines(case.lines.len() as u64);
    m.assert_matches(&case.expected);
    assert_eq!(m.value("pia_split_tunnel_log_rotations_total", &[]), 1.0);
}

#[test]
fn unreadable_log_is_reported_and_read_in_full_once_readable() {
    let case = Case::new(43);
    case.append(&case.part(0));
    // Root reads any file: without these capabilities the agent is held to the file's mode,
    // as an agent running as a normal user would be.
    let wrap: &[&str] = if unsafe { libc::geteuid() } == 0 {
        &[
            "setpriv",
            "--inh-caps=-dac_override,-dac_read_search",
            "--bounding-set=-dac_override,-dac_read_search",
        ]
    } else {
        &[]
    };
    let agent = case.start(&case.dir.path().join("cp.json"), wrap);
    agent.wait_lines(case.cut(1) as u64);
    // Rotated into a new file that nobody may read (mode 000), then written to.
    std::fs::rename(&case.log, format!("{}.1", case.log.display())).unwrap();
    let mut f = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o000)
        .open(&case.log)
        .unwrap();
    f.write_all(&case.part(1)).unwrap();
    // The log is "missing" for the instant between the rename and the new file.
    let reason = agent.wait_health_for("log", "failing", "permission denied");
    assert!(reason.contains("permission denied"), "{reason}");
    let m = agent.metrics();
    assert_eq!(
        m.value("pia_split_tunnel_log_lines_total", &[]),
        case.cut(1) as f64,
        "nothing read from an unreadable file"
    );
    assert_eq!(m.value("pia_split_tunnel_log_file_present", &[]), 1.0);
    assert_eq!(agent.get("/-/healthy"), "OK\n", "still serving");
    std::fs::set_permissions(&case.log, std::fs::Permissions::from_mode(0o644)).unwrap();
    f.write_all(&case.part(2)).unwrap();
    let m = agent.wait_lines(case.lines.len() as u64);
    m.assert_matches(&case.expected);
    agent.wait_health("log", "ok");
}

/// A small tmpfs of the test's own, unmounted on drop (also when the test panics).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: PathBuf) -> Tmpfs {
        require_root("mount a small tmpfs for the checkpoint");
        std::fs::create_dir_all(&at).unwrap();
        run(
            &["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs"],
            &at,
        );
        Tmpfs(at)
    }

    /// Fills every free page with a file of its own.
    fn fill(&self) -> PathBuf {
        let filler = self.0.join("filler");
        let mut f = std::fs::File::create(&filler).unwrap();
        for chunk in [65_536, 4_096, 512, 1] {
            let buf = vec![0u8; chunk];
            while f.write_all(&buf).is_ok() {}
        }
        filler
    }

    /// Remounts read-only; retried, since a save in progress makes the remount busy.
    fn read_only(&self, ro: bool) {
        let opts = if ro { "remount,ro" } else { "remount,rw" };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = Command::new("mount")
                .args(["-o", opts])
                .arg(&self.0)
                .output()
                .unwrap();
            if out.status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "mount -o {opts}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn run(args: &[&str], path: &Path) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", args[0]));
    assert!(
        out.status.success(),
        "{args:?} {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The checkpoint's `pipeline.read.lines`: what the saved state had counted.
fn saved_lines(checkpoint: &Path) -> Option<u64> {
    let bytes = std::fs::read(checkpoint).ok()?;
    let cp: Value = serde_json::from_slice(&bytes).unwrap();
    cp["pipeline"]["read"]["lines"].as_u64()
}

/// Waits until the checkpoint holds `lines` (saves come about once a second).
fn wait_saved(checkpoint: &Path, lines: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while saved_lines(checkpoint) != Some(lines) {
        assert!(
            Instant::now() < deadline,
            "checkpoint holds {:?} lines, not {lines}",
            saved_lines(checkpoint)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Part 1 is read and saved; then `fault` strikes the checkpoint's disk while part 2 arrives:
/// part 2 is counted, `/health` says why saving fails. `clear` ends the fault: the checkpoint
/// catches up, and an agent killed then and restarted counts part 3 on top, exactly.
fn checkpoint_fault(seed: u32, fault: impl Fn(&Tmpfs), clear: impl Fn(&Tmpfs), says: &str) {
    let case = Case::new(seed);
    let state = Tmpfs::mount(case.dir.path().join("state"));
    let checkpoint = state.0.join("cp.json");
    case.append(&case.part(0));
    let agent = case.start(&checkpoint, &[]);
    agent.wait_lines(case.cut(1) as u64);
    wait_saved(&checkpoint, case.cut(1) as u64);
    fault(&state);
    case.append(&case.part(1));
    agent.wait_lines(case.cut(2) as u64);
    let reason = agent.wait_health("checkpoint", "degraded");
    assert!(reason.contains(says), "{reason}");
    assert_eq!(
        saved_lines(&checkpoint),
        Some(case.cut(1) as u64),
        "the last good save stays"
    );
    assert!(
        agent
            .metrics()
            .value("pia_split_tunnel_checkpoint_save_errors_total", &[])
            >= 1.0
    );
    clear(&state);
    agent.wait_health("checkpoint", "ok");
    wait_saved(&checkpoint, case.cut(2) as u64);
    agent.kill9();
    case.append(&case.part(2));
    let agent = case.start(&checkpoint, &[]);
    let m = agent.wait_lines(case.lines.len() as u64);
    m.assert_matches(&case.expected);
}

#[test]
fn checkpoint_disk_full_keeps_counting_and_recovers() {
    let filler = std::sync::Mutex::new(None);
    checkpoint_fault(
        44,
        |fs| *filler.lock().unwrap() = Some(fs.fill()),
        |_| std::fs::remove_file(filler.lock().unwrap().take().unwrap()).unwrap(),
        "No space left on device",
    );
}

#[test]
fn checkpoint_disk_read_only_keeps_counting_and_recovers() {
    checkpoint_fault(
        45,
        |fs| fs.read_only(true),
        |fs| fs.read_only(false),
        "Read-only file system",
    );
}
