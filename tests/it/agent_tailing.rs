//! The running agent: what it serves on /metrics after tailing a log that is written,
//! rotated, truncated, created late, and read across restarts.

use crate::common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::agent::{Agent, ProxyWriter, lines_of, write_paced};
use common::{fixture, generate};
use pia_split_tunnel_exporter::build_info;
use serde_json::Value;

#[test]
fn metrics_after_tailing_equal_the_expected_counts() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("transparent_proxy.log");
    std::fs::copy(fixture("mixed.log"), &log).unwrap();
    let agent = Agent::start(&log, &dir.path().join("cp.json"));
    let m = agent.wait_lines(lines_of(&fixture("mixed.log")).len() as u64);
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("mixed.expected.json")).unwrap())
            .unwrap();
    m.assert_matches(&expected);
    assert_eq!(m.value("pia_split_tunnel_log_file_present", &[]), 1.0);
    assert_eq!(m.value("pia_split_tunnel_proxy_restarts_total", &[]), 2.0);
    assert_eq!(
        m.value(
            "pia_split_tunnel_build_info",
            &[
                ("version", env!("CARGO_PKG_VERSION")),
                ("revision", build_info::REVISION),
                ("rustc_version", build_info::RUSTC_VERSION)
            ]
        ),
        1.0
    );
    assert_eq!(agent.get("/-/healthy"), "OK\n");
    assert!(agent.get("/").contains("/metrics"));
}

#[test]
fn rotation_under_continuous_writing_loses_and_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (source, expected) = generate(dir.path(), "mixed", 12_000, 21);
    let log = dir.path().join("transparent_proxy.log");
    let agent = Agent::start(&log, &dir.path().join("cp.json"));
    let lines = lines_of(&source);
    let mut w = ProxyWriter::new(&log);
    // About 10,000 lines/s, a rotation every 0.35 s: far above the proxy's pace (a rotation
    // every few minutes at debug level), within what a debug build of the agent follows on a
    // loaded machine.
    for (i, line) in lines.iter().enumerate() {
        w.write(line);
        if i % 50 == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    assert!(
        w.rotations >= 3,
        "the test must rotate: {} rotations",
        w.rotations
    );
    let m = agent.wait_lines(lines.len() as u64);
    m.assert_matches(&expected);
    assert_eq!(
        m.value("pia_split_tunnel_log_rotations_total", &[]),
        f64::from(w.rotations)
    );
    assert_eq!(
        m.value("pia_split_tunnel_log_unrecognized_lines_total", &[]),
        0.0
    );
}

/// Five rotations a second for 6 s while the agent runs (the proxy rotates every few minutes):
/// every line is counted once, every rotation once, and no gap.
#[test]
fn five_rotations_a_second_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (source, expected) = generate(dir.path(), "mixed", 4_000, 33);
    let log = dir.path().join("transparent_proxy.log");
    let agent = Agent::start(&log, &dir.path().join("cp.json"));
    let lines = lines_of(&source);
    let bytes: usize = lines.iter().map(Vec::len).sum();
    let secs = 6.0;
    let mut w = ProxyWriter::new(&log);
    w.rotate_at = (bytes as f64 / (5.0 * secs)) as usize;
    let t0 = Instant::now();
    write_paced(&lines, secs, |line| w.write(line));
    let per_s = f64::from(w.rotations) / t0.elapsed().as_secs_f64();
    eprintln!(
        "{} lines, {} rotations in {:.1} s ({per_s:.1} a second)",
        lines.len(),
        w.rotations,
        t0.elapsed().as_secs_f64()
    );
    assert!(per_s >= 4.0, "{per_s} rotations a second");
    let m = agent.wait_lines(lines.len() as u64);
    m.assert_matches(&expected);
    assert_eq!(
        m.value("pia_split_tunnel_log_rotations_total", &[]),
        f64::from(w.rotations)
    );
    assert_eq!(m.value("pia_split_tunnel_log_gaps_total", &[]), 0.0);
}

#[test]
fn truncation_in_place_restarts_at_zero() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("transparent_proxy.log");
    let lines = lines_of(&fixture("healthy.log"));
    std::fs::write(&log, lines[..200].concat()).unwrap();
    let agent = Agent::start(&log, &dir.path().join("cp.json"));
    agent.wait_lines(200);
    std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&log)
        .unwrap();
    std::thread::sleep(Duration::from_millis(600));
    let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    f.write_all(&lines[200..].concat()).unwrap();
    let m = agent.wait_lines(lines.len() as u64);
    assert_eq!(m.value("pia_split_tunnel_log_truncations_total", &[]), 1.0);
}

#[test]
fn a_log_created_late_is_read_from_its_start() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("not-yet");
    let log = folder.join("transparent_proxy.log");
    let agent = Agent::start(&log, &dir.path().join("cp.json"));
    assert_eq!(
        agent
            .metrics()
            .value("pia_split_tunnel_log_file_present", &[]),
        0.0
    );
    std::thread::sleep(Duration::from_millis(300));
    std::fs::create_dir(&folder).unwrap();
    std::fs::copy(fixture("broken.log"), &log).unwrap();
    let m = agent.wait_lines(lines_of(&fixture("broken.log")).len() as u64);
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("broken.expected.json")).unwrap())
            .unwrap();
    m.assert_matches(&expected);
    assert_eq!(m.value("pia_split_tunnel_log_file_present", &[]), 1.0);
}

/// How many of the first `lines` fit in fewer than `bytes` bytes.
fn lines_within(lines: &[Vec<u8>], bytes: usize) -> usize {
    let mut size = 0;
    lines
        .iter()
        .take_while(|l| {
            size += l.len();
            size < bytes
        })
        .count()
}

/// Stopped (SIGTERM) and killed (SIGKILL) agents resume from their checkpoint, across a
/// rotation that happened while they were down; the final counts are exact. While an agent is
/// down at most one rotation happens: the proxy keeps one archive, so a file rotated twice
/// past a stopped reader is gone for anyone.
#[test]
fn restarts_resume_from_the_checkpoint_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let (source, expected) = generate(dir.path(), "mixed", 6_000, 8);
    let log = dir.path().join("transparent_proxy.log");
    // In a folder that does not exist yet: the agent makes it.
    let checkpoint = dir.path().join("state/cp.json");
    let lines = lines_of(&source);
    let upto = |bytes| lines_within(&lines, bytes);
    let (a, b, c, d) = (
        upto(400_000),
        upto(900_000),
        upto(1_000_000),
        upto(1_400_000),
    );
    let mut w = ProxyWriter::new(&log);
    let write = |w: &mut ProxyWriter, range: std::ops::Range<usize>| {
        for (i, line) in lines[range].iter().enumerate() {
            w.write(line);
            if i % 100 == 0 {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    };
    write(&mut w, 0..a);
    let agent = Agent::start(&log, &checkpoint);
    agent.wait_lines(a as u64);
    agent.stop();
    assert!(
        checkpoint.is_file(),
        "a stopped agent leaves its checkpoint"
    );
    write(&mut w, a..b);
    assert_eq!(w.rotations, 1, "one rotation while the agent is stopped");
    let agent = Agent::start(&log, &checkpoint);
    agent.wait_lines(b as u64);
    // kill -9 while lines are arriving: the checkpoint is up to a second old.
    write(&mut w, b..c);
    agent.kill9();
    write(&mut w, c..d);
    assert_eq!(w.rotations, 2, "one more rotation while the agent is dead");
    let agent = Agent::start(&log, &checkpoint);
    // Caught up from the checkpoint first: more rotations before it reads would destroy the
    // archive it resumes from, which no reader can survive.
    agent.wait_lines(d as u64);
    write(&mut w, d..lines.len());
    let m = agent.wait_lines(lines.len() as u64);
    m.assert_matches(&expected);
}

/// Killed right after its first read, then the file rotates while it is down: the checkpoint
/// written when it first opened the file (at once, not on the one-second timer) finds the rest
/// in the archive, and nothing is lost or counted twice. Without that save a kill in the
/// first second left no checkpoint, and the restart began at the live file.
#[test]
fn killed_right_after_its_first_read_then_rotated_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (source, expected) = generate(dir.path(), "mixed", 3_000, 9);
    let log = dir.path().join("transparent_proxy.log");
    let checkpoint = dir.path().join("cp.json");
    let lines = lines_of(&source);
    let upto = |bytes| lines_within(&lines, bytes);
    let (a, b) = (upto(300_000), upto(900_000));
    let mut w = ProxyWriter::new(&log);
    for line in &lines[..a] {
        w.write(line);
    }
    let agent = Agent::start(&log, &checkpoint);
    agent.wait_lines(a as u64);
    // The save follows the read in the same step: wait for it rather than race it.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !checkpoint.is_file() {
        assert!(std::time::Instant::now() < deadline, "no checkpoint");
        std::thread::sleep(Duration::from_millis(5));
    }
    agent.kill9();
    for line in &lines[a..b] {
        w.write(line);
    }
    assert_eq!(w.rotations, 1, "one rotation while the agent is dead");
    let agent = Agent::start(&log, &checkpoint);
    agent.wait_lines(b as u64);
    for line in &lines[b..] {
        w.write(line);
    }
    let m = agent.wait_lines(lines.len() as u64);
    m.assert_matches(&expected);
}
