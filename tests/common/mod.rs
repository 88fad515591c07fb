//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_pia-split-tunnel-exporter");

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Runs the agent binary; panics with its stderr when it fails.
pub fn run_bin(args: &[&str], env: &[(&str, &str)]) -> Output {
    let out = Command::new(BIN)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("agent binary runs");
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Writes a log with the generator; returns (log path, expected counts).
pub fn generate(dir: &Path, profile: &str, sessions: u32, seed: u32) -> (PathBuf, Value) {
    let log = dir.join(format!("{profile}-{seed}.log"));
    let status = Command::new("python3")
        .arg(fixture("gen_proxy_log.py"))
        .args([
            "--profile",
            profile,
            "--sessions",
            &sessions.to_string(),
            "--seed",
            &seed.to_string(),
            "--out",
        ])
        .arg(&log)
        .status()
        .expect("python3 is needed to generate test logs (apt-get install python3)");
    assert!(status.success(), "generator failed");
    let expected =
        std::fs::read_to_string(dir.join(format!("{profile}-{seed}.expected.json"))).unwrap();
    (log, serde_json::from_str(&expected).unwrap())
}

/// Every key of `expected` is in `got` with the same value (extra keys in `got` are fine).
pub fn assert_subset(expected: &Value, got: &Value, path: &str) {
    match expected {
        Value::Object(map) => {
            for (k, v) in map {
                let g = got
                    .get(k)
                    .unwrap_or_else(|| panic!("{path}/{k} missing in {got}"));
                assert_subset(v, g, &format!("{path}/{k}"));
            }
        }
        _ => assert_eq!(expected, got, "at {path}"),
    }
}
