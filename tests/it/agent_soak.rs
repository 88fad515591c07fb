//! Rotation soak with random `kill -9`: a writer appends at a high, steady rate and rotates
//! every 512,000 bytes like the proxy, while the agent is killed at random moments and
//! restarted. After each kill the checkpoint it left must be self-consistent (its cursor sits
//! exactly after the lines its counts include), and at the end every line is counted once.
//!
//! `SOAK_SECS` (default 20) sets the length, `SOAK_SEED` the random moments.

use crate::common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::agent::{Agent, ProxyWriter, lines_of, write_paced};
use common::generate;
use serde_json::Value;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn soak_with_random_kills_counts_every_line_once() {
    let secs: f64 = env_or("SOAK_SECS", 20.0);
    let seed: u64 = env_or("SOAK_SEED", 0x5eed_cafe);
    let dir = tempfile::tempdir().unwrap();
    let (source, expected) = generate(dir.path(), "mixed", 10_000, 51);
    let lines = lines_of(&source);
    let total = lines.len() as u64;
    let log = dir.path().join("transparent_proxy.log");
    let checkpoint = dir.path().join("state/cp.json");
    let start = || Agent::start(&log, &checkpoint);

    let writer = Arc::new(Mutex::new(ProxyWriter::new(&log)));
    let writing = std::thread::spawn({
        let writer = writer.clone();
        move || write_paced(&lines, secs, |line| writer.lock().unwrap().write(line))
    });

    let mut rng = fastrand::Rng::with_seed(seed);
    let (mut kills, mut checked) = (0, 0);
    let mut agent = start();
    while !writing.is_finished() {
        std::thread::sleep(Duration::from_millis(300 + rng.u64(0..1_200)));
        agent.kill9();
        kills += 1;
        if let Ok(bytes) = std::fs::read(&checkpoint) {
            let cp: Value = serde_json::from_slice(&bytes).expect("checkpoint is whole JSON");
            let cursor = &cp["cursors"]["debug"];
            if !cursor.is_null() {
                let counted = cp["pipeline"]["read"]["lines"].as_u64().unwrap();
                let (ino, offset) = (
                    cursor["ino"].as_u64().unwrap(),
                    cursor["offset"].as_u64().unwrap(),
                );
                let head = serde_json::from_value(cursor["fingerprint"].clone()).unwrap();
                let before = writer.lock().unwrap().lines_before(ino, head, offset);
                assert_eq!(
                    before, counted,
                    "kill {kills} (seed {seed}): the cursor is after {before} lines, the counts \
                     include {counted}"
                );
                checked += 1;
            }
        }
        // Down for a moment; the writer goes on (at most one rotation passes meanwhile).
        std::thread::sleep(Duration::from_millis(rng.u64(0..200)));
        agent = start();
    }
    writing.join().unwrap();
    let m = agent.wait_lines(total);
    m.assert_matches(&expected);
    let w = writer.lock().unwrap();
    assert_eq!(
        m.value("pia_split_tunnel_log_rotations_total", &[]),
        f64::from(w.rotations),
        "rotations counted once each"
    );
    eprintln!(
        "soak: {total} lines in {secs} s, {} rotations, {kills} kills, {checked} checkpoints \
         checked (seed {seed})",
        w.rotations
    );
    assert!(w.rotations >= 10, "the soak must rotate: {}", w.rotations);
    assert!(
        kills >= 5 && checked >= 5,
        "{kills} kills, {checked} checked"
    );
}
