//! The agent as a daemon under the signals an admin sends: SIGHUP applies a changed config in
//! the same process (a new listen port; the counters and the fallback carry over), SIGHUP
//! with a broken config keeps the running one and says which key is wrong, SIGTERM still
//! removes the fallback (`on_shutdown = "remove"`).

use crate::common;

use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
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

/// `config_last_reload_successful` and its timestamp, as a fleet reads them.
fn reload_status(addr: SocketAddr) -> (f64, f64) {
    let m = Metrics::parse(&http_get(addr, "/metrics"));
    (
        m.value("pia_split_tunnel_config_last_reload_successful", &[]),
        m.value(
            "pia_split_tunnel_config_last_reload_success_timestamp_seconds",
            &[],
        ),
    )
}

/// A refused reload is seen in `/metrics` (0, the last success's time kept), not only in this
/// Mac's log; the next good one reads 1 with its own time.
#[test]
fn a_refused_reload_shows_0_in_metrics_and_a_good_one_1() {
    let dir = tempfile::tempdir().unwrap();
    let pf = StandIn::new();
    let addr = free_port();
    let (mut agent, stderr) = start_idle(dir.path(), &pf, addr);
    wait_until("the port", || TcpStream::connect(addr).is_ok());
    let (ok, started) = reload_status(addr);
    assert_eq!(ok, 1.0, "the config it started with loaded");
    let config = dir.path().join("config.toml");

    std::fs::write(&config, config_text(dir.path(), &pf, addr, "max_apps = 0")).unwrap();
    signal(&agent, libc::SIGHUP);
    wait_for_line(&stderr, "not valid", 1);
    assert_eq!(reload_status(addr), (0.0, started), "refused: 0, time kept");
    assert!(alive(&mut agent));

    std::thread::sleep(Duration::from_millis(1100));
    std::fs::write(&config, config_text(dir.path(), &pf, addr, "max_apps = 99")).unwrap();
    signal(&agent, libc::SIGHUP);
    wait_for_line(&stderr, "the new config is applied", 1);
    wait_until("the new agent serving", || {
        try_get(addr, "/metrics").is_some()
    });
    let (ok, applied) = reload_status(addr);
    assert_eq!(ok, 1.0, "applied: 1");
    assert!(applied >= started + 1.0, "{applied} after {started}");
    signal(&agent, libc::SIGTERM);
    assert!(agent.wait().unwrap().success());
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

/// The status code of one request (`HTTP/1.0`, so the agent closes after answering).
fn status_of(addr: SocketAddr, request: &str) -> u16 {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {out:?}"))
}

/// One `GET` and its whole answer; `None` when the connection fails.
fn try_get(addr: SocketAddr, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

fn wait_for_line(stderr: &Path, text: &str, count: usize) {
    wait_until(&format!("{count} × {text:?} in the log"), || {
        std::fs::read_to_string(stderr)
            .unwrap()
            .matches(text)
            .count()
            >= count
    });
}

#[test]
fn a_reload_to_a_port_in_use_is_refused_and_the_old_port_serves_on() {
    let dir = tempfile::tempdir().unwrap();
    let pf = StandIn::new();
    let first = free_port();
    let (mut agent, stderr) = start_idle(dir.path(), &pf, first);
    wait_until("the first port", || TcpStream::connect(first).is_ok());
    // Someone else holds the port the new config asks for.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let second = taken.local_addr().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, config_text(dir.path(), &pf, second, "")).unwrap();
    signal(&agent, libc::SIGHUP);
    wait_for_line(&stderr, "reload refused", 1);
    let log = std::fs::read_to_string(&stderr).unwrap();
    assert!(
        log.contains(&format!("cannot listen on {second}")),
        "names the address: {log}"
    );
    assert!(alive(&mut agent));
    assert!(
        lines_read(first) == 0.0 && http_get(first, "/-/healthy") == "OK\n",
        "the old agent serves on"
    );
    assert!(!log.contains("the new config is applied"), "{log}");

    // Once the port is free, the same config applies.
    drop(taken);
    signal(&agent, libc::SIGHUP);
    wait_for_line(&stderr, "the new config is applied", 1);
    wait_until("the new port", || TcpStream::connect(second).is_ok());
    wait_until("the old port closed", || TcpStream::connect(first).is_err());
    signal(&agent, libc::SIGTERM);
    assert!(agent.wait().unwrap().success());
}

/// The inode of a socket, as `/proc/PID/fd` links name it (`socket:[N]`).
fn socket_inode(fd: i32) -> u64 {
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::fstat(fd, &mut st) }, 0);
    st.st_ino
}

/// The inodes of the listening TCP sockets that process `pid` holds (one socket may be held
/// at several descriptors: the daemon keeps one, the agent serves on a copy).
fn listening_inodes(pid: u32) -> std::collections::BTreeSet<u64> {
    let mut listening = std::collections::BTreeSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        for line in std::fs::read_to_string(table)
            .unwrap_or_default()
            .lines()
            .skip(1)
        {
            let f: Vec<&str> = line.split_whitespace().collect();
            // st 0A: LISTEN; the inode is the tenth field.
            if f.get(3) == Some(&"0A") {
                listening.insert(f[9].parse::<u64>().unwrap());
            }
        }
    }
    let mut held = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap() {
        let target = std::fs::read_link(entry.unwrap().path()).unwrap_or_default();
        let name = target.to_string_lossy().into_owned();
        if let Some(n) = name
            .strip_prefix("socket:[")
            .and_then(|s| s.strip_suffix(']'))
            && let Ok(n) = n.parse::<u64>()
            && listening.contains(&n)
        {
            held.insert(n);
        }
    }
    held
}

/// `GET /-/healthy` over TLS is answered 200.
fn healthy_over_tls(addr: SocketAddr, pki: &common::tls::Pki) -> bool {
    common::tls::request(addr, pki.client(None), "GET", "/-/healthy", &[])
        .is_ok_and(|(status, _)| status == 200)
}

#[test]
fn a_socket_passed_by_systemd_is_served_with_tls_and_nothing_is_bound() {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let pf = StandIn::new();
    std::fs::write(dir.path().join("transparent_proxy.log"), b"").unwrap();
    // http.listen names a port that is taken: a bind would fail and stop the agent.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let config = dir.path().join("config.toml");
    // TLS on the passed socket, as on one the agent bound.
    let pki = common::tls::Pki::new(dir.path(), "pki");
    let web = dir.path().join("web.yml");
    std::fs::write(
        &web,
        format!(
            "tls_server_config:\n  cert_file: {:?}\n  key_file: {:?}\n",
            pki.path("server.pem"),
            pki.path("server.key")
        ),
    )
    .unwrap();
    let with_tls = |listen: SocketAddr| {
        config_text(dir.path(), &pf, listen, "")
            .replace("[http]\n", &format!("[http]\nweb_config_file = {web:?}\n"))
    };
    std::fs::write(&config, with_tls(taken.local_addr().unwrap())).unwrap();
    let passed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = passed.local_addr().unwrap();
    let (fd, inode) = (passed.as_raw_fd(), socket_inode(passed.as_raw_fd()));
    let stderr = dir.path().join("agent.log");
    let mut cmd = Command::new("sh");
    // As systemd does: the socket at fd 3, LISTEN_PID naming the agent's own pid.
    cmd.args([
        "-c",
        "export LISTEN_PID=$$ LISTEN_FDS=1; exec \"$0\" \"$@\"",
        BIN,
        "--config",
    ])
    .arg(&config)
    .arg("run")
    .env_remove("RUST_LOG")
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(&stderr).unwrap());
    unsafe {
        cmd.pre_exec(move || {
            // dup2 clears close-on-exec on fd 3; when it is fd 3 already, clear it by hand.
            if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0);
            } else if libc::dup2(fd, 3) != 3 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut agent = cmd.spawn().unwrap();
    drop(passed);
    let log = || std::fs::read_to_string(&stderr).unwrap();
    wait_until("the agent answering on the passed socket", || {
        healthy_over_tls(addr, &pki)
    });
    assert!(alive(&mut agent), "{}", log());
    assert_eq!(
        listening_inodes(agent.id()),
        [inode].into(),
        "the agent listens on the passed socket and nothing else"
    );
    assert!(log().contains("systemd (LISTEN_FDS)"), "{}", log());
    assert!(log().contains("http.listen is not used"), "{}", log());

    // A reload, even one that changes http.listen, keeps the passed socket.
    std::fs::write(&config, with_tls(free_port())).unwrap();
    signal(&agent, libc::SIGHUP);
    wait_for_line(&stderr, "the new config is applied", 1);
    assert!(healthy_over_tls(addr, &pki));
    assert_eq!(listening_inodes(agent.id()), [inode].into());
    signal(&agent, libc::SIGTERM);
    assert!(agent.wait().unwrap().success(), "{}", log());
}

/// A user spinning on `bind()` of a port: every second-chance option a squatter has
/// (`SO_REUSEADDR`, `SO_REUSEPORT`, the loopback or every address), until `STOP` exists (or,
/// with a third argument `once`, until it first gets the port). Prints how often it tried and
/// how often it got the port.
const SQUATTER: &str = r#"
import os, socket, sys, time
port, stop = int(sys.argv[1]), sys.argv[2]
once = sys.argv[3:] == ["once"]
tries = got = 0
opts = [(), (socket.SO_REUSEADDR,), (socket.SO_REUSEPORT,), (socket.SO_REUSEADDR, socket.SO_REUSEPORT)]
deadline = time.time() + 120
while not os.path.exists(stop) and time.time() < deadline and not (once and got):
    for o in opts:
        for host in ("127.0.0.1", "0.0.0.0"):
            s = socket.socket()
            for opt in o:
                s.setsockopt(socket.SOL_SOCKET, opt, 1)
            try:
                s.bind((host, port))
                s.listen(16)
                got += 1
            except OSError:
                pass
            tries += 1
            s.close()
print(tries, got)
"#;

fn need_root() {
    assert!(
        unsafe { libc::geteuid() } == 0,
        "this test needs root: the agent runs as root, the attacker as nobody"
    );
}

/// The squatter as `nobody` on `port` until `stop` exists (or, `once`, until it gets the
/// port); returns (tries, got).
fn squat(port: u16, stop: &Path, once: bool) -> std::thread::JoinHandle<(u64, u64)> {
    let stop = stop.to_owned();
    std::thread::spawn(move || {
        let out = Command::new("setpriv")
            .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
            .args(["/usr/bin/python3", "-c", SQUATTER, &port.to_string()])
            .arg(&stop)
            .args(once.then_some("once"))
            .current_dir("/")
            .output()
            .expect("setpriv and python3 (sudo bash .ci/setup)");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "squatter: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut n = text.split_whitespace().map(|n| n.parse::<u64>().unwrap());
        (n.next().unwrap(), n.next().unwrap())
    })
}

#[test]
fn a_squatter_spinning_on_bind_never_gets_the_port_across_three_reloads() {
    need_root();
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // The attacker is real: on a free port it gets it (its first success ends this run, so a
    // slow start under load is waited for rather than raced).
    let stop = dir.path().join("stop");
    let free = free_port();
    let (_, got) = squat(free.port(), &stop, true).join().unwrap();
    assert!(
        got > 0,
        "the squatter never got a free port: not a real attack"
    );

    let pf = StandIn::new();
    let addr = free_port();
    let (mut agent, stderr) = start_idle(dir.path(), &pf, addr);
    wait_until("the port", || TcpStream::connect(addr).is_ok());
    let squatter = squat(addr.port(), &stop, false);
    // Prometheus scraping all along: how long the longest scrape took, and how many failed.
    let scraping = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let scraper = {
        let scraping = scraping.clone();
        std::thread::spawn(move || {
            let (mut n, mut failed, mut longest) = (0u32, 0u32, Duration::ZERO);
            while scraping.load(std::sync::atomic::Ordering::Relaxed) {
                let t = Instant::now();
                let ok = try_get(addr, "/metrics")
                    .is_some_and(|b| b.contains("pia_split_tunnel_build_info"));
                longest = longest.max(t.elapsed());
                n += 1;
                failed += u32::from(!ok);
                std::thread::sleep(Duration::from_millis(20));
            }
            (n, failed, longest)
        })
    };
    let config = dir.path().join("config.toml");
    let t = Instant::now();
    for i in 1..=3 {
        // A change anywhere in the config: the agent restarts, the socket stays.
        let extra = format!("max_apps = {}", 100 + i);
        std::fs::write(&config, config_text(dir.path(), &pf, addr, &extra)).unwrap();
        signal(&agent, libc::SIGHUP);
        wait_for_line(&stderr, "the new config is applied", i);
        assert!(alive(&mut agent));
        assert!(http_get(addr, "/metrics").contains("pia_split_tunnel_build_info"));
        // Scrapes between reloads too, the squatter spinning all along.
        std::thread::sleep(Duration::from_millis(300));
    }
    let reloads = t.elapsed();
    std::fs::write(&stop, b"").unwrap();
    let (tries, got) = squatter.join().unwrap();
    scraping.store(false, std::sync::atomic::Ordering::Relaxed);
    let (scrapes, failed, longest) = scraper.join().unwrap();
    assert_eq!(got, 0, "the squatter got the port in {tries} tries");
    assert_eq!(
        failed, 0,
        "{failed} of {scrapes} scrapes failed during the reloads"
    );
    let status = std::fs::read_to_string(format!("/proc/{}/status", agent.id())).unwrap();
    let peak = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .unwrap()
        .trim()
        .to_owned();
    println!(
        "FIGURES squatter: {tries} bind() tries as nobody over 3 reloads ({} ms), 0 got the port; \
         {scrapes} scrapes, 0 failed, longest {} ms; peak RSS {peak}, /metrics {} bytes",
        reloads.as_millis(),
        longest.as_millis(),
        http_get(addr, "/metrics").len()
    );
    signal(&agent, libc::SIGTERM);
    assert!(agent.wait().unwrap().success());
}

/// `POST /alertmanager` with a body that is not JSON: 400 past the token check, 401 before.
fn alertmanager_status(addr: SocketAddr, token: &str) -> u16 {
    status_of(
        addr,
        &format!(
            "POST /alertmanager HTTP/1.0\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\
             Content-Length: 8\r\n\r\nnot json"
        ),
    )
}

fn metrics_status(addr: SocketAddr, user: &str, password: &str) -> u16 {
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    status_of(
        addr,
        &format!(
            "GET /metrics HTTP/1.0\r\nHost: localhost\r\nAuthorization: Basic {basic}\r\n\r\n"
        ),
    )
}

/// Writes `text` beside `path` (mode 0600) and renames it into place, as a rotation does.
fn replace_secret(path: &Path, text: &str) {
    let new = path.with_extension("new");
    common::write_secret(&new, text);
    std::fs::rename(&new, path).unwrap();
}

#[test]
fn sighup_rereads_a_rotated_token_and_web_config_with_the_same_config() {
    let dir = tempfile::tempdir().unwrap();
    let pf = StandIn::new();
    let addr = free_port();
    std::fs::write(dir.path().join("transparent_proxy.log"), b"").unwrap();
    let (token, web) = (dir.path().join("token"), dir.path().join("web.yml"));
    let (old, new) = ("old-token-0123456789abcdef", "new-token-0123456789abcdef");
    common::write_secret(&token, old);
    // Cost 4: the lowest bcrypt allows; the test is about the reload, not the cost.
    let users = |password: &str| {
        format!(
            "basic_auth_users:\n  prom: '{}'\n",
            bcrypt::hash(password, 4).unwrap()
        )
    };
    replace_secret(&web, &users("old-password"));
    let text = config_text(dir.path(), &pf, addr, "")
        .replace("[http]\n", &format!("[http]\nweb_config_file = {web:?}\n"))
        + &format!("token_file = {token:?}\n");
    let config = dir.path().join("config.toml");
    std::fs::write(&config, text).unwrap();
    let stderr = dir.path().join("agent.log");
    let mut agent = start(&config, &stderr);
    wait_until("the port", || TcpStream::connect(addr).is_ok());
    assert_eq!(alertmanager_status(addr, old), 400);
    assert_eq!(alertmanager_status(addr, new), 401);
    assert_eq!(metrics_status(addr, "prom", "old-password"), 200);
    assert_eq!(metrics_status(addr, "prom", "new-password"), 401);

    // The token leaked: a new one, the same config file, SIGHUP.
    replace_secret(&token, new);
    replace_secret(&web, &users("new-password"));
    signal(&agent, libc::SIGHUP);
    wait_for_line(&stderr, "the token file or the web config changed", 1);
    wait_for_line(&stderr, "the new config is applied", 1);
    assert!(alive(&mut agent));
    assert_eq!(
        alertmanager_status(addr, old),
        401,
        "the old token is refused"
    );
    assert_eq!(alertmanager_status(addr, new), 400, "the new token works");
    assert_eq!(metrics_status(addr, "prom", "old-password"), 401);
    assert_eq!(metrics_status(addr, "prom", "new-password"), 200);

    // Nothing changed: no restart.
    signal(&agent, libc::SIGHUP);
    wait_for_line(&stderr, "the config is unchanged", 1);
    let log = std::fs::read_to_string(&stderr).unwrap();
    assert_eq!(log.matches("the new config is applied").count(), 1, "{log}");
    signal(&agent, libc::SIGTERM);
    assert!(agent.wait().unwrap().success());
}
