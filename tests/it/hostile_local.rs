//! A hostile local user against the agent running as root.
//!
//! Each test is one attack of the trust-boundary issue. The attacker's steps run as `nobody`
//! (`setpriv --reuid 65534`) in a sticky world-writable folder standing for `/tmp`, where the
//! agent's error-level log lives; the agent runs as root (CI runs the tests as root; they fail,
//! not skip, without it). After each attack the agent must still read the main log exactly,
//! answer `/metrics` (non-empty) and `/health`, stay under 50 MB of resident memory, take no
//! action, say what it refused, and stop within 5 s of SIGTERM. Each test prints its figures
//! (peak RSS, `/metrics` size, checkpoint writes per second) for docs/security.md.

use crate::common;

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::agent::{Agent, Metrics};

const NOBODY: &str = "65534";
const MAX_RSS_KB: u64 = 50 * 1024;

/// The machine of one attack: the root-owned log folder and the shared folder.
struct Lab {
    root: tempfile::TempDir,
    shared: PathBuf,
    log: PathBuf,
    checkpoint: PathBuf,
    lines: u64,
}

impl Lab {
    fn new() -> Lab {
        assert!(
            unsafe { libc::geteuid() } == 0,
            "the hostile-user tests need root: the agent runs as root, the attacker as nobody"
        );
        let root = tempfile::tempdir().unwrap();
        // The attacker must be able to reach the shared folder, as /tmp.
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let shared = root.path().join("tmp");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let private = root.path().join("pia");
        std::fs::create_dir(&private).unwrap();
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
        let state = root.path().join("state");
        std::fs::create_dir(&state).unwrap();
        Lab {
            log: private.join("transparent_proxy.log"),
            checkpoint: state.join("checkpoint.json"),
            shared,
            root,
            lines: 0,
        }
    }

    fn error_log(&self) -> PathBuf {
        self.shared.join("STProxy.log")
    }

    fn start(&self) -> Agent {
        let set = format!("log.error_path={}", self.error_log().display());
        Agent::start_with(&self.log, &self.checkpoint, &["--set", &set], &[])
    }

    /// As [`Lab::start`], the agent's own log (stderr) written to `stderr`.
    fn start_logged(&self, stderr: &Path) -> Agent {
        let set = format!("log.error_path={}", self.error_log().display());
        Agent::start_logged(&self.log, &self.checkpoint, &["--set", &set], stderr)
    }

    /// PIA writing its own (root-owned) log: `n` sessions opened and closed with bytes.
    fn proxy_writes(&mut self, n: u64) {
        let mut text = String::new();
        for i in 0..n {
            let id = self.lines + i + 1;
            text.push_str(&open_line(id, "com.plexapp.plexmediaserver"));
            text.push_str(&format!(
                "[2026-02-16 11:49:32:0000] [ProxySessionTCP.swift:31] debug: id: {id} Destructor: ProxySession closed. rxBytes=1.2 MB txBytes=0.1 MB com.plexapp.plexmediaserver\r\n"
            ));
        }
        self.append_main(text.as_bytes(), 2 * n);
    }

    fn append_main(&mut self, bytes: &[u8], lines: u64) {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap()
            .write_all(bytes)
            .unwrap();
        self.lines += lines;
    }

    /// The attacker: a shell script run as nobody in the shared folder.
    fn as_nobody(&self, script: &str) {
        let out = nobody(&self.shared, script).output().unwrap();
        assert!(
            out.status.success(),
            "as nobody: {script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn nobody(dir: &Path, script: &str) -> Command {
    let mut c = Command::new("setpriv");
    c.args([
        "--reuid",
        NOBODY,
        "--regid",
        NOBODY,
        "--clear-groups",
        "sh",
        "-c",
        script,
    ])
    .current_dir(dir);
    c
}

fn open_line(id: u64, app: &str) -> String {
    format!(
        "[2026-02-16 11:49:31:4330] [ChannelCreatorTCP.swift:50] debug: id: {id} {app} Creating, binding and connecting a new TCP socket - endpoint: 198.51.100.24:443 with bindIp: 10.0.15.15\r\n"
    )
}

/// Peak resident memory of the agent (VmHWM), in KiB.
fn peak_rss_kb(agent: &Agent) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", agent.child.id())).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

/// What every attack must leave intact; prints the figures. Consumes the agent: the last
/// check is that it stops within 5 s of SIGTERM.
fn assert_unharmed(name: &str, lab: &mut Lab, agent: Agent, cp_writes_per_s: f64) -> Metrics {
    // Still reading the main log: new lines arrive and are counted exactly once.
    lab.proxy_writes(5);
    let m = agent.wait_lines(lab.lines);
    let body = agent.get("/metrics");
    assert!(body.len() > 1000, "/metrics is nearly empty: {body}");
    let h = agent.health();
    assert!(h["components"]["log"]["reason"].is_string(), "{h:#}");
    let actions: f64 =
        m.0.iter()
            .filter(|(k, _)| k.starts_with("pia_split_tunnel_fallback_actions_total"))
            .map(|(_, v)| v)
            .sum();
    assert_eq!(actions, 0.0, "the agent acted");
    let rss = peak_rss_kb(&agent);
    assert!(rss < MAX_RSS_KB, "peak RSS {rss} KiB");
    let t = Instant::now();
    unsafe { libc::kill(agent.child.id() as i32, libc::SIGTERM) };
    let mut agent = agent;
    while agent.child.try_wait().unwrap().is_none() {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "no exit within 5 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    println!(
        "FIGURES {name}: peak RSS {:.1} MB, /metrics {} bytes, checkpoint writes {:.1}/s, stopped in {} ms",
        rss as f64 / 1024.0,
        body.len(),
        cp_writes_per_s,
        t.elapsed().as_millis()
    );
    m
}

fn refused(m: &Metrics) -> f64 {
    m.value("pia_split_tunnel_log_files_refused_total", &[])
}

/// Waits until the log component's reason contains `text`.
fn wait_reason(agent: &Agent, text: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let h = agent.health();
        let reason = h["components"]["log"]["reason"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if reason.contains(text) {
            return reason;
        }
        assert!(Instant::now() < deadline, "no {text:?} on /health: {h:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Checkpoint saves per second over `window`: each save renames a new file into place, so
/// each new inode seen is one save (sampled far more often than the agent may save).
fn checkpoint_writes_per_s(path: &Path, window: Duration, during: impl FnOnce()) -> f64 {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (path, stop) = (path.to_path_buf(), stop.clone());
        std::thread::spawn(move || {
            let mut seen = std::collections::HashSet::new();
            let mut last = None;
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(m) = std::fs::metadata(&path) {
                    if last != Some(m.ino()) && seen.insert((m.ino(), m.mtime_nsec())) {
                        n += 1;
                    }
                    last = Some(m.ino());
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            n
        })
    };
    let t = Instant::now();
    during();
    let left = window.saturating_sub(t.elapsed());
    std::thread::sleep(left);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let n = watcher.join().unwrap();
    f64::from(n) / t.elapsed().as_secs_f64()
}

#[test]
fn a_fifo_at_the_error_log_and_its_archive_hangs_nothing() {
    let mut lab = Lab::new();
    lab.proxy_writes(10);
    lab.as_nobody("mkfifo STProxy.log STProxy.log.1");
    let agent = lab.start();
    agent.wait_lines(lab.lines);
    let reason = wait_reason(&agent, "FIFO");
    assert!(reason.contains("log.error_path"), "{reason}");
    let m = assert_unharmed("fifo", &mut lab, agent, 0.0);
    assert!(refused(&m) >= 1.0);
    assert_eq!(m.value("pia_split_tunnel_error_log_file_present", &[]), 0.0);
}

#[test]
fn a_symlink_to_a_root_only_file_is_not_read_through() {
    let mut lab = Lab::new();
    lab.proxy_writes(10);
    let secret = lab.root.path().join("pia/secret");
    std::fs::write(
        &secret,
        "[2026-02-16 11:49:31:2040] [VpnState.swift:37] info: bindInterface: SECRET0\r\n"
            .repeat(50),
    )
    .unwrap();
    lab.as_nobody(&format!("ln -s {} STProxy.log", secret.display()));
    let agent = lab.start();
    wait_reason(&agent, "symbolic link");
    let m = assert_unharmed("symlink", &mut lab, agent, 0.0);
    // Nothing of the secret: not its lines, not its content as a label.
    assert!(refused(&m) >= 1.0);
    assert!(!m.0.keys().any(|k| k.contains("SECRET0")));
}

#[test]
fn the_users_own_file_with_forged_lines_is_refused() {
    let mut lab = Lab::new();
    // A session of PIA's stays open in the main log.
    let open = open_line(1, "com.plexapp.plexmediaserver");
    lab.append_main(open.as_bytes(), 1);
    let agent = lab.start();
    agent.wait_lines(lab.lines);
    // Forged: a restart (would evict the open session), zero-byte closures (would look like
    // the failure), a date in 2099, and ids the size of a megabyte.
    let forged = lab.root.path().join("forged");
    std::fs::write(
        &forged,
        format!(
            "[2026-02-16 11:49:33:0000] [SplitTunnelProxyProvider.swift:60] info: Proxy started!\r\n\
             [2099-01-01 00:00:00:0000] [ProxySessionTCP.swift:31] debug: id: 1 Destructor: ProxySession closed. rxBytes=Zero KB txBytes=Zero KB com.plexapp.plexmediaserver\r\n{}",
            open_line(7, &"x".repeat(1 << 20))
        ),
    )
    .unwrap();
    lab.as_nobody(&format!("cat {} > STProxy.log", forged.display()));
    wait_reason(&agent, "owned by uid 65534");
    let m = assert_unharmed("forged-own-file", &mut lab, agent, 0.0);
    let l = [("app", "com.plexapp.plexmediaserver"), ("proto", "tcp")];
    assert_eq!(m.value("pia_split_tunnel_open_sessions", &l), 1.0);
    assert_eq!(m.value("pia_split_tunnel_proxy_restarts_total", &[]), 0.0);
    assert!(m.value("pia_split_tunnel_last_event_timestamp_seconds", &[]) < 4.0e9);
}

/// The error log when PIA wrote it (root's file) but its lines are forged, as through a mode
/// that lets others write: its restart touches only its own sessions, its ids are bounded,
/// its dates from the future are not believed.
#[test]
fn forged_lines_in_a_root_owned_error_log_are_bounded_and_kept_apart() {
    let mut lab = Lab::new();
    let open = open_line(1, "com.plexapp.plexmediaserver");
    lab.append_main(open.as_bytes(), 1);
    let agent = lab.start();
    agent.wait_lines(lab.lines);
    let mut forged = String::from(
        "[2026-02-16 11:49:33:0000] [SplitTunnelProxyProvider.swift:60] info: Proxy started!\r\n\
         [2099-01-01 00:00:00:0000] [VpnState.swift:37] info: bindInterface: en0\r\n",
    );
    for i in 0..64 {
        // 64 ids of 64 KiB (1 MB each was the report; the cap makes size irrelevant), then
        // the agent's own labels.
        let big = format!("{i}{}", "y".repeat(64 * 1024));
        forged.push_str(&open_line(100 + i, &big));
    }
    for (id, name) in [(1, "other"), (2, "unknown")] {
        forged.push_str(&open_line(id, name));
    }
    let n = forged.matches('\n').count() as u64;
    std::fs::write(lab.error_log(), &forged).unwrap();
    lab.lines += n;
    agent.wait_lines(lab.lines);
    let m = assert_unharmed("forged-root-file", &mut lab, agent, 0.0);
    let l = [("app", "com.plexapp.plexmediaserver"), ("proto", "tcp")];
    assert_eq!(
        m.value("pia_split_tunnel_open_sessions", &l),
        1.0,
        "evicted"
    );
    assert_eq!(
        m.value(
            "pia_split_tunnel_log_values_refused_total",
            &[("field", "app")]
        ),
        66.0
    );
    assert_eq!(
        m.value(
            "pia_split_tunnel_log_values_refused_total",
            &[("field", "timestamp")]
        ),
        1.0
    );
    assert!(m.value("pia_split_tunnel_last_event_timestamp_seconds", &[]) < 4.0e9);
    // One `other` series per proto, never a second one forged.
    assert_eq!(
        m.0.keys()
            .filter(|k| k.starts_with("pia_split_tunnel_sessions_opened_total{app=\"other\""))
            .count(),
        m.0.keys()
            .filter(|k| k
                .starts_with("pia_split_tunnel_sessions_opened_total{app=\"other\",proto=\"tcp\""))
            .count()
            + m.0
                .keys()
                .filter(|k| k.starts_with(
                    "pia_split_tunnel_sessions_opened_total{app=\"other\",proto=\"unknown\""
                ))
                .count()
    );
}

/// Refused flows name their app in the line, and the newer proxy's start lines: forged in the
/// error log, the apps stay under the app cap (64) and the label rules, and a start evicts
/// nothing of the main log.
#[test]
fn forged_refused_flows_and_starts_in_the_error_log_are_bounded() {
    let mut lab = Lab::new();
    let open = open_line(1, "com.plexapp.plexmediaserver");
    lab.append_main(open.as_bytes(), 1);
    let agent = lab.start();
    agent.wait_lines(lab.lines);
    let mut forged = String::from(
        "[2026-02-16 11:49:33:0000] [SplitTunnelProxyProvider.swift:56] info: Transparent Proxy started!\r\n\
         [2026-02-16 11:49:33:0000] [SplitTunnelDNSProxyProvider.swift:54] info: DNS Proxy started!\r\n",
    );
    for i in 0..500 {
        forged.push_str(&format!(
            "[2026-02-16 11:49:34:0000] [FlowHandler.swift:58] error: Cannot find ipv4 ip for interface: en0 - ignoring matched flow: com.forged.app{i}\r\n"
        ));
    }
    let big = "y".repeat(64 * 1024);
    forged.push_str(&format!(
        "[2026-02-16 11:49:34:0000] [FlowHandler.swift:44] info: blocking a vpnOnly flow from {big}\",app=\"x\r\n"
    ));
    let n = forged.matches('\n').count() as u64;
    std::fs::write(lab.error_log(), &forged).unwrap();
    lab.lines += n;
    agent.wait_lines(lab.lines);
    let m = assert_unharmed("forged-refused-flows", &mut lab, agent, 0.0);
    let l = [("app", "com.plexapp.plexmediaserver"), ("proto", "tcp")];
    assert_eq!(
        m.value("pia_split_tunnel_open_sessions", &l),
        1.0,
        "evicted"
    );
    let series: Vec<&String> =
        m.0.keys()
            .filter(|k| k.starts_with("pia_split_tunnel_flows_refused_total{"))
            .collect();
    // 63 forged apps beside Plex, then `other`, for one reason; one more for the other reason.
    assert_eq!(series.len(), 65, "{series:?}");
    assert!(!series.iter().any(|k| k.contains("yyyy")), "{series:?}");
    let other = |reason| {
        m.value(
            "pia_split_tunnel_flows_refused_total",
            &[("app", "other"), ("reason", reason)],
        )
    };
    assert_eq!(
        (other("no_bind_ip"), other("vpn_only_blocked")),
        (437.0, 1.0)
    );
    assert_eq!(
        m.value(
            "pia_split_tunnel_log_values_refused_total",
            &[("field", "app")]
        ),
        1.0
    );
}

#[test]
fn a_hard_link_of_the_main_log_is_not_counted_twice() {
    let mut lab = Lab::new();
    lab.proxy_writes(10);
    // On macOS anyone may link root's file into /tmp; Linux forbids it to nobody
    // (protected_hardlinks), so root makes the link the attacker would.
    // Made while the agent runs (at start, the config check already refuses it).
    let agent = lab.start();
    agent.wait_lines(lab.lines);
    std::fs::hard_link(&lab.log, lab.error_log()).unwrap();
    wait_reason(&agent, "hard link");
    assert_unharmed("hardlink", &mut lab, agent, 0.0);
}

#[test]
fn a_rename_storm_costs_at_most_a_save_a_second() {
    let mut lab = Lab::new();
    lab.proxy_writes(10);
    let agent_log = lab.root.path().join("agent.log");
    let agent = lab.start_logged(&agent_log);
    agent.wait_lines(lab.lines);
    // The attacker's own file renamed in a loop: refused (theirs), so it costs no save.
    let mut storm = nobody(
        &lab.shared,
        "i=0; while [ $i -lt 20000 ]; do echo x > a; mv a STProxy.log.1; i=$((i+1)); done",
    )
    .spawn()
    .unwrap();
    // A root-owned error log replaced as fast as root can (each a rotation, which asks for
    // a save at once): the worst a rename storm can do, bounded by the save rate.
    let (tmp, error_log) = (lab.shared.join(".new"), lab.error_log());
    let cp = lab.checkpoint.clone();
    let mut rotations = 0u32;
    let rate = checkpoint_writes_per_s(&cp, Duration::from_secs(5), || {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(5) {
            std::fs::File::create(&tmp).unwrap();
            std::fs::rename(&tmp, &error_log).unwrap();
            rotations += 1;
            std::thread::sleep(Duration::from_millis(1));
        }
    });
    println!("rename storm: {rotations} replacements of the error log in 5 s");
    let _ = storm.kill();
    let _ = storm.wait();
    assert!(rate <= 1.5, "{rate} checkpoint saves a second");
    // Each refusal of a new file is a warning site untrusted input reaches: throttled to a
    // burst a minute, then one line saying how many were left out.
    let text = std::fs::read_to_string(&agent_log).unwrap();
    let refused = text
        .lines()
        .filter(|l| l.contains("log file refused"))
        .count();
    println!(
        "FIGURES rename-storm log: {} bytes, {refused} 'log file refused' lines",
        text.len()
    );
    assert!(refused <= 11, "{refused} 'log file refused' lines in 5 s");
    assert!(text.len() < 64 * 1024, "{} bytes of agent log", text.len());
    assert_unharmed("rename-storm", &mut lab, agent, rate);
}

#[test]
fn a_renamed_sleep_run_by_nobody_is_not_pias_daemon() {
    let mut lab = Lab::new();
    lab.proxy_writes(2);
    lab.as_nobody("cp /bin/sleep pia-daemon && cp /bin/sleep pia-wireguard-go");
    // setpriv execs: each child is the renamed sleep itself, killed below.
    let mut fakes: Vec<_> = ["./pia-daemon", "./pia-wireguard-go"]
        .into_iter()
        .map(|exe| {
            nobody(&lab.shared, &format!("exec {exe} 60"))
                .spawn()
                .unwrap()
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let agent = lab.start();
    let deadline = Instant::now() + Duration::from_secs(15);
    let m = loop {
        let m = agent.metrics();
        if m.0.keys().any(|k| k.contains("process_running")) {
            break m;
        }
        assert!(Instant::now() < deadline, "no process_running");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        m.value("pia_split_tunnel_process_running", &[("process", "daemon")]),
        0.0
    );
    assert_eq!(
        m.value("pia_split_tunnel_process_running", &[("process", "vpn")]),
        0.0
    );
    for f in &mut fakes {
        let _ = f.kill();
        let _ = f.wait();
    }
    assert_unharmed("renamed-sleep", &mut lab, agent, 0.0);
}

#[test]
fn a_second_agent_on_the_same_checkpoint_exits_with_a_clear_error() {
    let mut lab = Lab::new();
    lab.proxy_writes(3);
    let agent = lab.start();
    agent.wait_lines(lab.lines);
    let out = Command::new(common::BIN)
        .args([
            "run",
            "--listen",
            &common::agent::free_port().to_string(),
            "--log-path",
            &lab.log.display().to_string(),
            "--checkpoint",
            &lab.checkpoint.display().to_string(),
            "--set",
            "probe.enabled=false",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("in use by another agent"), "{err}");
    assert_unharmed("second-agent", &mut lab, agent, 0.0);
}

#[test]
fn settings_that_would_panic_or_contradict_fail_check_config() {
    for (set, key) in [
        (
            "http.header_timeout_secs=18446744073709551615",
            "http.header_timeout_secs",
        ),
        ("log.error_path=/var/log/proxy.log", "log.error_path"),
        (
            "fallback.bypass_subnets=[\"0.0.0.0/0\"]",
            "fallback.bypass_subnets",
        ),
    ] {
        let out = Command::new(common::BIN)
            .args([
                "check-config",
                "--set",
                "log.path=/var/log/proxy.log",
                "--set",
                set,
            ])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{set} passed check-config");
        assert!(err.contains(key), "{set}: {err}");
    }
}

/// Two rotations while the agent is down: the unread rest of its file is gone. The agent
/// says so (`log_gaps_total`, `/health`) and reads the archive in between, then the new file.
#[test]
fn a_file_rotated_away_twice_while_stopped_is_a_reported_gap() {
    let mut lab = Lab::new();
    lab.proxy_writes(3);
    let agent = lab.start();
    agent.wait_lines(lab.lines);
    agent.stop();
    let archive = lab.log.with_extension("log.1");
    // Held open so the next file cannot take the saved file's inode.
    lab.proxy_writes(2);
    let lost_lines = 4;
    std::fs::rename(&lab.log, &archive).unwrap();
    let _held = std::fs::File::open(&archive).unwrap();
    lab.proxy_writes(2);
    std::fs::rename(&lab.log, &archive).unwrap();
    lab.proxy_writes(1);
    lab.lines -= lost_lines;
    let agent = lab.start();
    agent.wait_lines(lab.lines);
    let reason = wait_reason(&agent, "rotated away twice");
    assert!(reason.contains("1 gap"), "{reason}");
    let m = assert_unharmed("gap", &mut lab, agent, 0.0);
    assert_eq!(m.value("pia_split_tunnel_log_gaps_total", &[]), 1.0);
}

/// `BIN args...` as root; whether it exited 0, and its stderr. One still running after 10 s
/// (an agent that accepted what it should refuse) is killed and counts as a failure of the test.
fn run_root(args: &[&str]) -> (bool, String) {
    use std::io::Read as _;
    use wait_timeout::ChildExt as _;
    let mut child = Command::new(common::BIN)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status = child.wait_timeout(Duration::from_secs(10)).unwrap();
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{args:?} still runs after 10 s: it accepted what it should refuse");
    }
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status.unwrap().success(), err)
}

/// Root runs tools named in its config and believes its token: a config, token or tool that
/// nobody can change (the file itself, or a folder above it) stops `check-config` and `run`
/// with the path and the fix; the same files of root's pass.
#[test]
fn a_config_token_or_tool_nobody_can_change_stops_a_root_agent() {
    let lab = Lab::new();
    // nobody's own folder in the shared one, with a config and a "pfctl" of theirs.
    lab.as_nobody(
        "mkdir evil && printf '[probe]\\nenabled = false\\n' > evil/config.toml && \
         printf '#!/bin/sh\\nexit 0\\n' > evil/pfctl && chmod 755 evil/pfctl",
    );
    let evil = lab.shared.join("evil");
    let config = evil.join("config.toml");
    let port = common::agent::free_port().to_string();
    for cmd in [
        vec!["--config", config.to_str().unwrap(), "check-config"],
        vec![
            "--config",
            config.to_str().unwrap(),
            "run",
            "--listen",
            &port,
        ],
    ] {
        let (ok, err) = run_root(&cmd);
        assert!(!ok, "{cmd:?} accepted nobody's config");
        assert!(
            err.contains(&format!("config file {}", config.display()))
                && err.contains(&format!("{} belongs to uid 65534", evil.display()))
                && err.contains("chown root"),
            "{err}"
        );
        println!("FIGURES nobody's config: {}", err.trim());
    }
    // The same text in a root folder, as root's file, passes.
    let etc = lab.root.path().join("etc");
    std::fs::create_dir(&etc).unwrap();
    let good = etc.join("config.toml");
    std::fs::copy(&config, &good).unwrap();
    let (ok, err) = run_root(&["--config", good.to_str().unwrap(), "check-config"]);
    assert!(ok, "{err}");
    // A root-owned file in that folder that nobody may write.
    std::fs::set_permissions(&good, std::fs::Permissions::from_mode(0o666)).unwrap();
    let (ok, err) = run_root(&["--config", good.to_str().unwrap(), "check-config"]);
    assert!(!ok && err.contains("writable by every user"), "{err}");
    // A tool of nobody's, a tool looked up in $PATH, a token in nobody's folder.
    let tool = format!("fallback.pfctl_path={:?}", evil.join("pfctl"));
    let (ok, err) = run_root(&["check-config", "--set", &tool]);
    assert!(
        !ok && err.contains("fallback.pfctl_path") && err.contains("uid 65534"),
        "{err}"
    );
    let (ok, err) = run_root(&["check-config", "--set", "fallback.ip_path=\"ip\""]);
    assert!(
        !ok && err.contains("fallback.ip_path") && err.contains("absolute"),
        "{err}"
    );
    lab.as_nobody("printf 0123456789abcdef0123 > evil/token && chmod 600 evil/token");
    let token = format!("fallback.token_file={:?}", evil.join("token"));
    let (ok, err) = run_root(&["check-config", "--set", &token]);
    assert!(
        !ok && err.contains("fallback.token_file") && err.contains("uid 65534"),
        "{err}"
    );
    // A root web config in a root folder whose TLS key nobody can swap.
    let pki = common::tls::Pki::new(&etc, "web");
    let key = evil.join("server.key");
    std::fs::copy(pki.path("server.key"), &key).unwrap();
    std::os::unix::fs::chown(&key, Some(65534), None).unwrap();
    let web = etc.join("web.yml");
    let web_text = |key: &Path| {
        format!(
            "tls_server_config:\n  cert_file: {:?}\n  key_file: {key:?}\n",
            pki.path("server.pem")
        )
    };
    std::fs::write(&web, web_text(&key)).unwrap();
    let (ok, err) = run_root(&["check-config", "--web.config.file", web.to_str().unwrap()]);
    assert!(
        !ok && err.contains("tls_server_config.key_file") && err.contains("uid 65534"),
        "{err}"
    );
    std::fs::write(&web, web_text(&pki.path("server.key"))).unwrap();
    let (ok, err) = run_root(&["check-config", "--web.config.file", web.to_str().unwrap()]);
    assert!(ok, "{err}");
}

/// launchd's `StandardErrorPath` in a folder nobody owns (Homebrew's `var/log` belongs to its
/// user): after a "rotation" nobody plants a link to a root-only file, then a link to a new
/// name, then nothing. At each SIGHUP root refuses to reopen, says so in the log it still
/// writes, and neither appends to the linked file nor creates any.
#[test]
fn the_agents_own_log_is_not_reopened_through_a_planted_link() {
    let mut lab = Lab::new();
    lab.proxy_writes(3);
    let logs = lab.root.path().join("log");
    std::fs::create_dir(&logs).unwrap();
    std::os::unix::fs::chown(&logs, Some(65534), Some(65534)).unwrap();
    let own = logs.join("agent.log");
    let stderr = std::fs::File::create(&own).unwrap();
    let victim = lab.root.path().join("pia/secret");
    std::fs::write(&victim, "root only\n").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
    let created = lab.root.path().join("pia/created.log");
    let addr = common::agent::free_port();
    let child = Command::new(common::BIN)
        .args(["run", "--listen", &addr.to_string(), "--log-path"])
        .arg(&lab.log)
        .arg("--checkpoint")
        .arg(&lab.checkpoint)
        .args(["--set", "probe.enabled=false", "--set"])
        .arg(format!("log.error_path={:?}", lab.error_log()))
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let agent = Agent { child, addr };
    common::agent::wait_listening(addr, "agent");
    agent.wait_lines(lab.lines);
    let archive = logs.join("agent.log.0");
    let steps = [
        format!(
            "mv agent.log agent.log.0 && ln -s {} agent.log",
            victim.display()
        ),
        format!("rm agent.log && ln -s {} agent.log", created.display()),
        "rm agent.log".to_owned(),
    ];
    for (i, step) in steps.iter().enumerate() {
        let out = nobody(&logs, step).output().unwrap();
        assert!(out.status.success(), "{step}: {out:?}");
        unsafe { libc::kill(agent.child.id() as i32, libc::SIGHUP) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(&archive).unwrap_or_default();
            if text.matches("cannot open the log again").count() > i {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "step {step}: no refusal in {text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let text = std::fs::read_to_string(&archive).unwrap();
    println!("FIGURES own log: {}", text.trim());
    assert!(
        text.contains("symbolic link") && text.contains("not created"),
        "{text}"
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "root only\n");
    assert!(!created.exists(), "root created the link's target");
    assert!(!own.exists(), "root created a file in nobody's folder");
    assert_unharmed("own-log", &mut lab, agent, 0.0);
}

/// A checkpoint saved by an earlier version that believed more: 64 app ids of 100 KB with
/// counts, and a 2099 newest-line time. The restored state passes today's checks: the ids
/// fold into `other` (counted as refused), the time is forgotten (counted), `/metrics` stays
/// small, and `log.max_apps` (2 here) still has room for a real new app.
#[test]
fn an_earlier_versions_poisoned_checkpoint_does_not_come_back() {
    let mut lab = Lab::new();
    lab.proxy_writes(3);
    let start = |lab: &Lab| {
        let set = format!("log.error_path={}", lab.error_log().display());
        Agent::start_with(
            &lab.log,
            &lab.checkpoint,
            &["--set", &set, "--set", "log.max_apps=2"],
            &[],
        )
    };
    let agent = start(&lab);
    agent.wait_lines(lab.lines);
    agent.stop();
    let mut v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&lab.checkpoint).unwrap()).unwrap();
    let sessions = &mut v["pipeline"]["sessions"];
    let names = sessions["apps"]["names"].as_array().unwrap().clone();
    let plex = names
        .iter()
        .position(|n| n == "com.plexapp.plexmediaserver")
        .unwrap();
    let row = sessions["counts"]["rows"][plex * 3].clone();
    assert!(row.is_object(), "plex's TCP row: {row}");
    let mut names = names;
    let mut rows = sessions["counts"]["rows"].as_array().unwrap().clone();
    for i in 0..64 {
        names.push(format!("{i}.{}", "x".repeat(100 * 1024)).into());
        rows.resize((names.len() - 1) * 3 + 3, serde_json::Value::Null);
        rows[(names.len() - 1) * 3] = row.clone();
    }
    sessions["apps"]["names"] = names.into();
    sessions["counts"]["rows"] = rows.into();
    // 2099-01-01 local, in the checkpoint's milliseconds.
    v["pipeline"]["proxy"]["last_event"] = 4_070_908_800_000i64.into();
    std::fs::write(&lab.checkpoint, serde_json::to_vec(&v).unwrap()).unwrap();
    println!(
        "FIGURES poisoned checkpoint: {} bytes",
        std::fs::metadata(&lab.checkpoint).unwrap().len()
    );

    let agent = start(&lab);
    let m = agent.wait_lines(lab.lines);
    let body = agent.get("/metrics");
    println!(
        "FIGURES poisoned checkpoint: /metrics {} bytes after restore",
        body.len()
    );
    assert!(!body.contains("xxxxxxxx"), "a 100 KB id came back");
    assert!(body.len() < 100_000, "/metrics is {} bytes", body.len());
    let refused = |field| {
        m.value(
            "pia_split_tunnel_log_values_refused_total",
            &[("field", field)],
        )
    };
    assert_eq!(refused("app"), 64.0);
    assert!(refused("timestamp") >= 1.0);
    // Their sessions are not lost: they are other's now.
    let opened = |app| {
        m.value(
            "pia_split_tunnel_sessions_opened_total",
            &[("app", app), ("proto", "tcp")],
        )
    };
    assert_eq!(
        opened("other"),
        64.0 * opened("com.plexapp.plexmediaserver")
    );
    // A real new app still gets its label under log.max_apps = 2.
    let id = lab.lines + 1;
    let line = open_line(id, "com.example.newapp");
    lab.append_main(line.as_bytes(), 1);
    let m = agent.wait_lines(lab.lines);
    assert_eq!(
        m.value(
            "pia_split_tunnel_sessions_opened_total",
            &[("app", "com.example.newapp"), ("proto", "tcp")]
        ),
        1.0,
        "log.max_apps is full"
    );
    assert_unharmed("poisoned-checkpoint", &mut lab, agent, 0.0);
}
