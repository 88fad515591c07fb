//! Helpers shared by the integration tests: the agent binary and generated logs; scripted
//! probe rounds and the stand-in pfctl for the fallback.

pub mod agent;
pub mod attacker;
pub mod lab;
pub mod netns;
pub mod prom_server;
pub mod tls;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pia_split_tunnel_exporter::fallback::FallbackConfig;
use pia_split_tunnel_exporter::fallback::controller::Controller;
use pia_split_tunnel_exporter::fallback::policy::{Decision, Policy};
use pia_split_tunnel_exporter::os::Interfaces;
use pia_split_tunnel_exporter::probe::lab::interfaces as lab_interfaces;
use pia_split_tunnel_exporter::probe::{PathKind, PathResult, ProbeError, Round, Verdict};
use pia_split_tunnel_exporter::proxy_log::Proto;
use pia_split_tunnel_exporter::sessions::Reply;
use pia_split_tunnel_exporter::sessions::SessionsConfig;
use pia_split_tunnel_exporter::sessions::window::{Ratio, SessionsState, SessionsVerdict};

pub use pia_split_tunnel_exporter::probe::lab::{
    GATEWAY, HOME_IP as PHYS_EGRESS, PHYSICAL_IP as PHYS_IP, TUNNEL_IP,
    VPN_EXIT_IP as TUNNEL_EGRESS,
};

/// The lab's interfaces (`probe::lab`), the physical address replaced by `phys_ip`.
pub fn interfaces(tunnel: bool, phys_ip: Ipv4Addr) -> Interfaces {
    let mut interfaces = lab_interfaces(tunnel);
    if let Some(physical) = &mut interfaces.physical {
        physical.ipv4 = phys_ip;
    }
    interfaces
}

/// What the bypass probe did in a scripted round.
#[derive(Clone, Copy, Debug)]
pub enum Bypass {
    /// Egresses as the physical path: healthy (or repaired).
    Physical,
    /// Egresses as the tunnel: broken.
    Tunnel,
    /// Times out: broken.
    Timeout,
}

pub fn round_with(tunnel: bool, physical_ok: bool, bypass: Bypass, phys_ip: Ipv4Addr) -> Round {
    let r = |path, outcome| PathResult {
        path,
        outcome,
        duration: Duration::from_millis(20),
    };
    let physical = if physical_ok {
        Ok(PHYS_EGRESS)
    } else {
        Err(ProbeError::Timeout)
    };
    let tunnel_out = if tunnel {
        Ok(TUNNEL_EGRESS)
    } else {
        Err(ProbeError::NoInterface)
    };
    let bypass_out = match bypass {
        Bypass::Physical => physical,
        Bypass::Tunnel if tunnel => Ok(TUNNEL_EGRESS),
        Bypass::Tunnel => physical,
        Bypass::Timeout => Err(ProbeError::Timeout),
    };
    let default_out = if tunnel { tunnel_out } else { physical };
    Round {
        interfaces: interfaces(tunnel, phys_ip),
        results: vec![
            r(PathKind::Physical, physical),
            r(PathKind::Tunnel, tunnel_out),
            r(PathKind::Bypass, bypass_out),
            r(PathKind::Default, default_out),
        ],
    }
}

pub fn round(tunnel: bool, bypass: Bypass) -> Round {
    round_with(tunnel, true, bypass, PHYS_IP)
}

/// No session closed: the sessions verdict "too few".
pub const NO_SESSIONS: SessionsVerdict = SessionsVerdict {
    state: SessionsState::TooFew,
    ratio: Ratio {
        no_reply: 0,
        total: 0,
    },
    window_seconds: 300,
    min_sessions: 5,
    failing: Vec::new(),
    working: Vec::new(),
};

/// The sessions verdict of the default thresholds over `total` closes, `zero` of them
/// without a reply.
pub fn sessions(zero: u64, total: u64) -> SessionsVerdict {
    let now = std::time::Instant::now();
    let mut w = SessionsConfig::default().window();
    for i in 0..total {
        let reply = if i < zero {
            Reply::NoReply
        } else {
            Reply::Received
        };
        w.record_close("app", Some(Proto::Tcp), now, reply);
    }
    w.verdict(now)
}

/// Feeds a round with its verdict, as the agent does.
pub trait Judge {
    fn judge(
        &mut self,
        now: std::time::Instant,
        round: &Round,
        sessions: SessionsVerdict,
    ) -> Decision;
}

impl Judge for Policy {
    fn judge(
        &mut self,
        now: std::time::Instant,
        round: &Round,
        sessions: SessionsVerdict,
    ) -> Decision {
        self.evaluate(now, round, &Verdict::of(round), sessions)
    }
}

/// The controller's round, with the round's verdict, as the agent feeds it.
pub async fn on_round(
    c: &mut Controller,
    now: std::time::Instant,
    round: &Round,
    sessions: SessionsVerdict,
) -> Decision {
    c.on_round(now, round, &Verdict::of(round), sessions).await
}

/// A directory with a `pfctl` that runs the stand-in with its state kept there.
pub struct StandIn {
    pub dir: tempfile::TempDir,
}

impl StandIn {
    pub fn new() -> StandIn {
        let dir = tempfile::tempdir().expect("tempdir");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pfctl");
        // A link, not a written script: exec of a file just written can fail with "text file
        // busy" when a parallel test forks while the file is still open for writing.
        std::os::unix::fs::symlink(&script, dir.path().join("pfctl")).unwrap();
        StandIn { dir }
    }

    pub fn pfctl(&self) -> PathBuf {
        self.dir.path().join("pfctl")
    }

    pub fn token_file(&self) -> PathBuf {
        self.dir.path().join("state/pf-token")
    }

    pub fn config(&self) -> FallbackConfig {
        FallbackConfig {
            backend: pia_split_tunnel_exporter::fallback::BackendChoice::Pf,
            pfctl_path: self.pfctl(),
            pf_token_file: self.token_file(),
            state_file: self.dir.path().join("state/fallback-state.json"),
            ..FallbackConfig::default()
        }
    }

    /// Make the next calls of `op` fail (`-f`, `-E`, `-X`, `-F`, `-k`, `-s`, `readback-empty`).
    pub fn fail(&self, op: &str) {
        std::fs::write(self.dir.path().join("fail"), format!("{op}\n")).unwrap();
    }

    pub fn heal(&self) {
        let _ = std::fs::remove_file(self.dir.path().join("fail"));
    }

    /// Every call so far: (args, stdin).
    pub fn calls(&self) -> Vec<(Vec<String>, Option<String>)> {
        let text = std::fs::read_to_string(self.dir.path().join("calls.jsonl")).unwrap_or_default();
        text.lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                let args = v["args"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| a.as_str().unwrap().to_owned())
                    .collect();
                (args, v["stdin"].as_str().map(str::to_owned))
            })
            .collect()
    }

    /// Calls as single strings, e.g. `-a com.apple/x -f -`.
    pub fn call_lines(&self) -> Vec<String> {
        self.calls().into_iter().map(|(a, _)| a.join(" ")).collect()
    }

    /// A verifier that sees what the stand-in holds, as real probes would: the bypass times
    /// out until the fallback is enabled (a pf reference held), then egresses as the physical
    /// path.
    pub fn verifier(&self) -> std::sync::Arc<dyn pia_split_tunnel_exporter::probe::RoundSource> {
        let tokens = self.dir.path().join("tokens");
        std::sync::Arc::new(move || {
            let held = std::fs::read_to_string(&tokens).is_ok_and(|t| !t.trim().is_empty());
            let r = round(
                true,
                if held {
                    Bypass::Physical
                } else {
                    Bypass::Timeout
                },
            );
            async move { r }
        })
    }

    /// Enable references handed out and not released.
    pub fn held_tokens(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("tokens"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

// --- the agent binary and generated logs ---

use std::process::{Command, Output};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_pia-split-tunnel-exporter");

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// `copies` of a fixture's sessions (its `#` header dropped), each copy's ids moved past the
/// others' and past any id of the samples, so they stay apart within one proxy start.
pub fn sessions_of(fixture_name: &str, copies: u64) -> String {
    let text = std::fs::read_to_string(fixture(fixture_name)).unwrap();
    let mut out = String::new();
    for k in 0..copies {
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let at = line.find("id: ").expect("a session line") + 4;
            let digits = line[at..].find(' ').unwrap();
            let id: u64 = line[at..at + digits].parse().unwrap();
            out.push_str(&format!(
                "{}{}{}\r\n",
                &line[..at],
                10_000 + 1000 * k + id,
                &line[at + digits..]
            ));
        }
    }
    out
}

/// Writes `secret` to a new file of mode 0600 (as token files must be).
pub fn write_secret(path: &Path, secret: &str) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .unwrap()
        .write_all(secret.as_bytes())
        .unwrap();
}

/// Runs the agent binary; panics with its stderr when it fails.
pub fn run_bin(args: &[&str], env: &[(&str, &str)]) -> Output {
    run_bin_exiting(args, env, &[0])
}

/// Runs the agent binary; panics with its stderr unless it exits with one of `codes`.
pub fn run_bin_exiting(args: &[&str], env: &[(&str, &str)], codes: &[i32]) -> Output {
    let out = Command::new(BIN)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("agent binary runs");
    assert!(
        out.status.code().is_some_and(|c| codes.contains(&c)),
        "{args:?} failed ({}): {}",
        out.status,
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

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens.
pub fn markdown_anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The headings' anchors of a Markdown file, as GitHub makes them (fenced code left out).
pub fn markdown_anchors(text: &str) -> Vec<String> {
    let mut fenced = false;
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with("```") {
            fenced = !fenced;
        } else if !fenced && line.starts_with('#') {
            out.push(markdown_anchor(line.trim_start_matches('#')));
        }
    }
    out
}
