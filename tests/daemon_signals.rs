//! The agent as a daemon under the signals an admin sends: SIGHUP applies a changed config in
//! the same process (a new listen port; the counters and the fallback carry over), SIGHUP
//! with a broken config keeps the running one and says which key is wrong, SIGTERM still
//! removes the fallback (`on_shutdown = "remove"`).

mod common;

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::agent::{Metrics, free_port, http_get};
use common::{BIN, StandIn, fixture};

const ANCHOR_FILE: &str = "anchors/com.apple%250.PiaSplitTunnelFallback";

fn config_text(dir: &Path, pf: &StandIn, listen: SocketAddr, extra: &str) -> String {
    format!(
        "[log]\npath = {:?}\ncheckpoint = {:?}\nerror_path = \"\"\n{extra}\n\
         [http]\nlisten = \"{listen}\"\n\
         [probe]\nenabled = false\n\
         [fallback]\nbackend = \"pf\"\npfctl_path = {:?}\npf_token_file = {:?}\nstate_file = {:?}\n",
        dir.join("transparent_proxy.log"),
        dir.join("checkpoint.json"),
        pf.pfctl(),
        pf.token_file(),
        pf.config().state_file,
    )
}

/// The agent on `config`, its stderr in `stderr`.
fn start(config: &Path, stderr: &Path) -> Child {
    Command::new(BIN)
        .arg("--config")
        .arg(config)
        .arg("run")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(stderr).unwrap())
        .spawn()
        .unwrap()
}

/// An agent on an empty log, its config and stderr in `dir`.
fn start_idle(dir: &Path, pf: &StandIn, addr: SocketAddr) -> (Child, std::path::PathBuf) {
    std::fs::write(dir.join("transparent_proxy.log"), b"").unwrap();
    let config = dir.join("config.toml");
    std::fs::write(&config, config_text(dir, pf, addr, "")).unwrap();
    let stderr = dir.join("agent.log");
    (start(&config, &stderr), stderr)
}

fn wait_until(what: &str, ok: impl FnMut() -> bool) {
    wait_up_to(Duration::from_secs(30), what, ok)
}

fn wait_up_to(limit: Duration, what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn lines_read(addr: SocketAddr) -> f64 {
    Metrics::parse(&http_get(addr, "/metrics")).value("pia_split_tunnel_log_lines_total", &[])
}

fn signal(child: &Child, sig: i32) {
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
}

fn alive(child: &mut Child) -> bool {
    child.try_wait().unwrap().is_none()
}

#[test]
fn sighup_reloads_a_valid_config_keeps_on_a_broken_one_and_sigterm_still_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let pf = StandIn::new();
    // A fallback left installed: adopted at start, kept over a reload, removed at SIGTERM.
    std::fs::create_dir_all(pf.dir.path().join("anchors")).unwrap();
    std::fs::write(
        pf.dir.path().join(ANCHOR_FILE),
        "pass out quick route-to (en0 10.0.15.1) inet from 10.0.15.15 to ! <rfc1918>\n",
    )
    .unwrap();
    let log_text = std::fs::read_to_string(fixture("healthy.log")).unwrap();
    let lines = log_text.lines().count() as f64;
    std::fs::write(dir.path().join("transparent_proxy.log"), &log_text).unwrap();
    let config = dir.path().join("config.toml");
    let (first, second) = (free_port(), free_port());
    std::fs::write(&config, config_text(dir.path(), &pf, first, "")).unwrap();
    let stderr = dir.path().join("agent.log");
    let mut agent = start(&config, &stderr);
    let log = || std::fs::read_to_string(&stderr).unwrap();
    wait_until("the first port", || TcpStream::connect(first).is_ok());
    wait_until("the log read", || lines_read(first) == lines);

    // A valid change: the new port serves, the old one is closed, the counts carried over.
    std::fs::write(&config, config_text(dir.path(), &pf, second, "")).unwrap();
    signal(&agent, libc::SIGHUP);
    wait_until("the new port", || TcpStream::connect(second).is_ok());
    assert!(alive(&mut agent), "SIGHUP must not stop the agent");
    wait_until("the old port closed", || TcpStream::connect(first).is_err());
    assert_eq!(lines_read(second), lines, "the counters survive a reload");
    assert!(
        log().contains("SIGHUP: the new config is applied"),
        "{}",
        log()
    );
    assert!(
        pf.dir.path().join(ANCHOR_FILE).exists(),
        "the fallback survives a reload"
    );
    assert!(
        !pf.call_lines()
            .iter()
            .any(|c| c.starts_with("-a") && c.contains("-F")),
        "no flush on reload: {:?}",
        pf.call_lines()
    );

    // A broken config: logged with its key, the running config stays.
    std::fs::write(&config, config_text(dir.path(), &pf, first, "max_apps = 0")).unwrap();
    signal(&agent, libc::SIGHUP);
    wait_until("the refusal in the log", || log().contains("not valid"));
    let refusal = log()
        .lines()
        .find(|l| l.contains("not valid"))
        .unwrap()
        .to_owned();
    assert!(refusal.contains("log.max_apps"), "names the key: {refusal}");
    assert!(alive(&mut agent));
    assert_eq!(
        lines_read(second),
        lines,
        "still serving the running config"
    );
    assert!(
        TcpStream::connect(first).is_err(),
        "the broken config's port is not used"
    );

    // SIGTERM: a clean exit that removes the fallback.
    signal(&agent, libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = agent.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "no exit within 20 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}: {}", log());
    assert!(
        !pf.dir.path().join(ANCHOR_FILE).exists(),
        "on_shutdown = \"remove\" ran: {:?}",
        pf.call_lines()
    );
}

#[test]
fn sighup_right_after_start_never_kills_the_agent() {
    // The handlers are in place before the port is bound: a SIGHUP as soon as it listens is
    // a reload of an unchanged config, not the default action (death).
    let dir = tempfile::tempdir().unwrap();
    let pf = StandIn::new();
    let addr = free_port();
    let (mut agent, stderr) = start_idle(dir.path(), &pf, addr);
    wait_until("the port", || TcpStream::connect(addr).is_ok());
    signal(&agent, libc::SIGHUP);
    wait_until("the reload's answer", || {
        std::fs::read_to_string(&stderr)
            .unwrap()
            .contains("the config is unchanged")
    });
    assert!(alive(&mut agent));
    assert!(TcpStream::connect(addr).is_ok());
    signal(&agent, libc::SIGTERM);
    assert!(agent.wait().unwrap().success());
}

#[test]
fn a_log_rotated_by_newsyslog_is_reopened() {
    // launchd opens stderr once; newsyslog renames the file and creates a new one. The agent
    // notices (at SIGHUP, and on its own within 30 s) and writes to the new file.
    let dir = tempfile::tempdir().unwrap();
    let pf = StandIn::new();
    let (mut agent, log) = start_idle(dir.path(), &pf, free_port());
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    wait_until("the start line", || read(&log).contains("agent started"));
    let rotate = |n: u32| {
        std::fs::rename(&log, log.with_extension(format!("log.{n}"))).unwrap();
        std::fs::write(&log, b"").unwrap();
    };

    rotate(0);
    signal(&agent, libc::SIGHUP);
    wait_until("the reopen at SIGHUP", || {
        read(&log).contains("the log was rotated")
    });
    assert!(read(&log.with_extension("log.0")).contains("agent started"));

    // No signal: the periodic check (every 30 s) finds it.
    rotate(1);
    wait_up_to(Duration::from_secs(60), "the periodic reopen", || {
        read(&log).contains("the log was rotated")
    });
    assert!(alive(&mut agent));
    signal(&agent, libc::SIGTERM);
    assert!(agent.wait().unwrap().success());
    assert!(read(&log).contains("agent stopped"), "{}", read(&log));
    assert!(!read(&log.with_extension("log.1")).contains("agent stopped"));
}
