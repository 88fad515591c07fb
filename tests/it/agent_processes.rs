//! A real process named like PIA's daemon comes and goes, and the agent's /metrics follows;
//! the agent's own process_* metrics are there and plausible.

use crate::common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::BIN;

fn get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[allow(clippy::too_many_lines, reason = "one scenario; the rule is for src/")]
#[test]
fn a_daemon_process_comes_and_goes_on_metrics() {
    let dir = tempfile::tempdir().unwrap();
    // `sleep` under the name the config looks for. PIA's processes are recognised by their
    // executable's path (a symlink would resolve to `sleep`), so a hard link where the file
    // system allows it, else a copy (running a file just written can fail with "text file
    // busy" while a parallel fork still holds it open: spawn retries below).
    let fake = dir.path().join("fakepiadaemon");
    let sleep = std::fs::canonicalize("/bin/sleep").unwrap();
    if std::fs::hard_link(&sleep, &fake).is_err() {
        std::fs::copy(&sleep, &fake).unwrap();
    }
    let log = dir.path().join("transparent_proxy.log");
    std::fs::write(&log, b"").unwrap();
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut agent = Command::new(BIN)
        .args(["run", "--listen", &addr.to_string(), "--log-path"])
        .arg(&log)
        .arg("--checkpoint")
        .arg(dir.path().join("cp.json"))
        .args([
            "--set",
            "probe.enabled=false",
            "--set",
            "probe.interval_secs=1",
            "--set",
            "probe.timeout_secs=0.5",
        ])
        .args([
            "--set",
            "processes.daemon=[\"fakepiadaemon\"]",
            "--set",
            "log.error_path=\"\"",
        ])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let wait = |what: &str, want: f64| -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(s) = TcpStream::connect(addr) {
                drop(s);
                let m = get(addr, "/metrics");
                if value(&m, "pia_split_tunnel_process_running{process=\"daemon\"}") == Some(want) {
                    return m;
                }
                assert!(Instant::now() < deadline, "{what}: {m}");
            }
            assert!(Instant::now() < deadline, "{what}: agent not listening");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait("no daemon yet", 0.0);
    let mut daemon = (0..50)
        .find_map(|_| match Command::new(&fake).arg("60").spawn() {
            Ok(c) => Some(c),
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {
                std::thread::sleep(Duration::from_millis(20));
                None
            }
            Err(e) => panic!("{e}"),
        })
        .expect("the fake daemon starts");
    let m = wait("the daemon appears", 1.0);
    assert_eq!(
        value(
            &m,
            "pia_split_tunnel_process_running{process=\"extension\"}"
        ),
        Some(0.0)
    );
    // The agent's own resources, under the standard names.
    assert!(
        value(&m, "process_resident_memory_bytes").unwrap() > 1e6,
        "{m}"
    );
    assert!(value(&m, "process_open_fds").unwrap() >= 3.0, "{m}");
    let start = value(&m, "process_start_time_seconds").unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        now - start < 120.0 && now - start >= -1.0,
        "started {start}, now {now}"
    );
    daemon.kill().unwrap();
    daemon.wait().unwrap();
    wait("the daemon is gone", 0.0);
    let _ = agent.kill();
    let _ = agent.wait();
}
