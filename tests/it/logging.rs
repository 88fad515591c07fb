//! The agent's own log as a daemon's log file and a person's terminal see it: plain logfmt
//! when stderr is not a terminal, JSON lines that parse, colours only on a terminal and never
//! with `NO_COLOR`, `--log.level` over `RUST_LOG`, `RUST_LOG` when no flag is given, and
//! `[agent_log]` in the config (level and format; a reload changes the level) below both.

use crate::common;

use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::BIN;
use common::agent::{free_port, http_get};

/// The agent's arguments for a short run on a free port with an empty log, no probes.
fn agent_args(dir: &std::path::Path, listen: &str) -> Vec<String> {
    let log = dir.join("transparent_proxy.log");
    std::fs::write(&log, b"").unwrap();
    vec![
        "run".into(),
        "--listen".into(),
        listen.into(),
        "--log-path".into(),
        log.display().to_string(),
        "--checkpoint".into(),
        dir.join("checkpoint.json").display().to_string(),
        "--set".into(),
        "probe.enabled=false".into(),
        "--set".into(),
        "log.error_path=\"\"".into(),
    ]
}

/// Runs the agent with stderr on a pipe until it listens, stops it with SIGTERM, returns
/// its stderr.
fn stderr_of(flags: &[&str], env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_port();
    let mut cmd = Command::new(BIN);
    cmd.args(agent_args(dir.path(), &addr.to_string()))
        .args(flags)
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "agent did not listen on {addr}");
        std::thread::sleep(Duration::from_millis(20));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn logfmt_on_a_pipe_has_no_colour_codes() {
    let err = stderr_of(&[], &[]);
    assert!(err.contains("message=\"agent started\""), "{err}");
    assert!(err.contains("level=info"), "{err}");
    assert!(
        !err.contains('\x1b'),
        "ANSI escapes in a non-terminal log: {err:?}"
    );
    for line in err.lines() {
        assert!(line.starts_with("ts="), "a logfmt line: {line:?}");
    }
}

#[test]
fn json_lines_parse() {
    let err = stderr_of(&["--log.format", "json"], &[]);
    let lines: Vec<serde_json::Value> = err
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    let started = lines
        .iter()
        .find(|v| v["message"] == "agent started")
        .unwrap_or_else(|| panic!("no start line: {err}"));
    assert_eq!(started["level"], "INFO");
    assert!(started["timestamp"].is_string());
    assert!(
        started["listen"]
            .as_str()
            .is_some_and(|l| l.starts_with("127.0.0.1:")),
        "{started}"
    );
    assert!(lines.iter().any(|v| v["message"] == "agent stopped"));
}

#[test]
fn log_level_flag_over_rust_log_and_rust_log_without_it() {
    // RUST_LOG alone is honoured: at error, the info lines are gone.
    let err = stderr_of(&[], &[("RUST_LOG", "error")]);
    assert!(!err.contains("agent started"), "{err}");
    // The flag wins over RUST_LOG.
    let err = stderr_of(&["--log.level", "info"], &[("RUST_LOG", "error")]);
    assert!(err.contains("agent started"), "{err}");
    let err = stderr_of(&["--log.level", "warn"], &[]);
    assert!(!err.contains("agent started"), "{err}");
}

/// The agent with stderr on a pseudo-terminal (python3's pty module): what a person sees.
fn stderr_on_a_terminal(no_color: bool) -> String {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_port();
    // Forks the agent on a pty, reads until it has started, stops it, prints what it wrote.
    let script = r#"
import os, pty, signal, sys
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
def read_until(out, marker):
    while marker is None or marker not in out:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO once the child has closed the terminal
            return out
        if not chunk:
            return out
        out += chunk
    return out
out = read_until(b"", b"agent started")
os.kill(pid, signal.SIGTERM)
out = read_until(out, None)
os.waitpid(pid, 0)
sys.stdout.write(out.decode("utf-8", "replace"))
"#;
    let mut cmd = Command::new("python3");
    cmd.args(["-c", script, BIN])
        .args(agent_args(dir.path(), &addr.to_string()))
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null());
    if no_color {
        cmd.env("NO_COLOR", "1");
    }
    let out = cmd
        .output()
        .expect("python3 runs (the CI setup installs it)");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("agent started"), "{text:?}");
    text
}

#[test]
fn colours_on_a_terminal_unless_no_color() {
    assert!(
        stderr_on_a_terminal(false).contains("\x1b["),
        "a terminal gets colours"
    );
    let plain = stderr_on_a_terminal(true);
    assert!(!plain.contains('\x1b'), "NO_COLOR is honoured: {plain:?}");
}

/// The agent with `[agent_log]` in its config file and stderr in a file, as under
/// `brew services` (which passes no flags); returns it, its config and its stderr.
fn start_with_agent_log(
    dir: &std::path::Path,
    agent_log: &str,
    flags: &[&str],
) -> (std::process::Child, std::path::PathBuf, std::path::PathBuf) {
    let addr = free_port();
    let config = dir.join("config.toml");
    std::fs::write(&config, format!("[agent_log]\n{agent_log}\n")).unwrap();
    let stderr = dir.join("agent.log");
    let child = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .args(agent_args(dir, &addr.to_string()))
        .args(flags)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "agent did not listen on {addr}");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Answered: the agent has started (and said so, at info) before it serves.
    assert!(http_get(addr, "/-/healthy").contains("OK"));
    (child, config, stderr)
}

fn stop(mut child: std::process::Child) {
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
}

fn wait_for(stderr: &std::path::Path, text: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = std::fs::read_to_string(stderr).unwrap();
        if log.contains(text) {
            return log;
        }
        assert!(Instant::now() < deadline, "no {text:?} in: {log}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `agent_log.format` in the config file sets the format; `--log.format` wins over it.
#[test]
fn agent_log_format_from_the_config_and_the_flag_over_it() {
    let dir = tempfile::tempdir().unwrap();
    let (child, _, stderr) = start_with_agent_log(dir.path(), "format = \"json\"", &[]);
    let log = wait_for(&stderr, "agent started");
    stop(child);
    for line in log.lines() {
        serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    }
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--log.format", "logfmt"];
    let (child, _, stderr) = start_with_agent_log(dir.path(), "format = \"json\"", &flags);
    let log = wait_for(&stderr, "agent started");
    stop(child);
    assert!(
        log.contains(
            "level=info target=pia_split_tunnel_exporter::agent message=\"agent started\""
        ),
        "logfmt: {log}"
    );
}

/// `agent_log.level` from the config file, changed by a reload without a restart of the
/// process; a changed format is said to need a restart.
#[test]
fn agent_log_level_from_the_config_and_a_reload_changes_it() {
    let dir = tempfile::tempdir().unwrap();
    let (child, config, stderr) = start_with_agent_log(dir.path(), "level = \"warn\"", &[]);
    let log = std::fs::read_to_string(&stderr).unwrap();
    assert!(!log.contains("agent started"), "at warn: {log}");
    std::fs::write(&config, "[agent_log]\nlevel = \"info\"\n").unwrap();
    unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
    wait_for(&stderr, "SIGHUP: the new config is applied");
    std::fs::write(
        &config,
        "[agent_log]\nlevel = \"info\"\nformat = \"json\"\n",
    )
    .unwrap();
    unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
    wait_for(&stderr, "agent_log.format changes at the next start");
    stop(child);
}
