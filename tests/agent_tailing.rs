//! The running agent: what it serves on /metrics after tailing a log that is written,
//! rotated, truncated, created late, and read across restarts.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, fixture, generate};
use serde_json::Value;

/// A running agent on a free loopback port, killed on drop.
struct Agent {
    child: Child,
    addr: SocketAddr,
}

impl Agent {
    fn start(log: &Path, checkpoint: &Path) -> Agent {
        let addr = free_port();
        let child = Command::new(BIN)
            .args(["run", "--listen", &addr.to_string(), "--log-path"])
            .arg(log)
            .arg("--checkpoint")
            .arg(checkpoint)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("agent starts");
        let agent = Agent { child, addr };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "agent did not listen on {addr}");
            std::thread::sleep(Duration::from_millis(20));
        }
        agent
    }

    fn get(&self, path: &str) -> String {
        http_get(self.addr, path)
    }

    fn metrics(&self) -> Metrics {
        Metrics::parse(&self.get("/metrics"))
    }

    /// Waits until `log_lines_total` reaches `lines`; returns the metrics then.
    fn wait_lines(&self, lines: u64) -> Metrics {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let m = self.metrics();
            let seen = m.value("pia_split_tunnel_log_lines_total", &[]) as u64;
            if seen >= lines {
                assert_eq!(seen, lines, "more lines than written: duplicates");
                return m;
            }
            assert!(
                Instant::now() < deadline,
                "agent read {seen} of {lines} lines"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(mut self) {
        // SIGTERM: graceful shutdown saves the checkpoint.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.child.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "agent did not stop on SIGTERM within 20 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default()
}

/// Samples of a metrics text, keyed by name and sorted labels.
struct Metrics(BTreeMap<String, f64>);

impl Metrics {
    fn parse(text: &str) -> Metrics {
        let mut map = BTreeMap::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let (series, value) = line.rsplit_once(' ').unwrap();
            map.insert(series.to_owned(), value.parse().unwrap());
        }
        Metrics(map)
    }

    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let key = if labels.is_empty() {
            name.to_owned()
        } else {
            let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
            format!("{name}{{{}}}", l.join(","))
        };
        *self.0.get(&key).unwrap_or(&0.0)
    }

    /// The expected.json counts as the agent exports them.
    fn assert_matches(&self, expected: &Value) {
        for (app, protos) in expected.as_object().unwrap() {
            for (proto, c) in protos.as_object().unwrap() {
                let l = [("app", app.as_str()), ("proto", proto.as_str())];
                let n = |k: &str| c[k].as_u64().unwrap() as f64;
                let m = |name: &str| self.value(&format!("pia_split_tunnel_{name}"), &l);
                assert_eq!(
                    m("sessions_opened_total"),
                    n("sessions_opened"),
                    "{app}/{proto} opened"
                );
                assert_eq!(
                    m("zero_byte_closures_total"),
                    n("zero_byte_closures"),
                    "{app}/{proto} zero"
                );
                assert_eq!(m("rx_bytes_total"), n("rx_bytes"), "{app}/{proto} rx");
                assert_eq!(m("tx_bytes_total"), n("tx_bytes"), "{app}/{proto} tx");
                let closed: f64 = ["transferred", "zero_bytes", "unknown"]
                    .iter()
                    .map(|o| {
                        self.value(
                            "pia_split_tunnel_sessions_closed_total",
                            &[l[0], l[1], ("outcome", o)],
                        )
                    })
                    .sum();
                assert_eq!(closed, n("sessions_closed"), "{app}/{proto} closed");
                for (kind, count) in c["errors"].as_object().unwrap() {
                    let got = self.value(
                        "pia_split_tunnel_flow_errors_total",
                        &[l[0], l[1], ("kind", kind)],
                    );
                    assert_eq!(got, count.as_u64().unwrap() as f64, "{app}/{proto} {kind}");
                }
            }
        }
    }
}

fn lines_of(path: &Path) -> Vec<Vec<u8>> {
    std::fs::read(path)
        .unwrap()
        .split_inclusive(|&b| b == b'\n')
        .map(<[u8]>::to_vec)
        .collect()
}

/// Appends lines like the proxy: rename to `.1` and start a new file at 512,000 bytes.
struct ProxyWriter {
    path: PathBuf,
    file: std::fs::File,
    size: usize,
    rotations: u32,
}

impl ProxyWriter {
    fn new(path: &Path) -> ProxyWriter {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        let size = file.metadata().unwrap().len() as usize;
        ProxyWriter {
            path: path.to_owned(),
            file,
            size,
            rotations: 0,
        }
    }
    fn write(&mut self, line: &[u8]) {
        if self.size + line.len() > 512_000 {
            std::fs::rename(&self.path, format!("{}.1", self.path.display())).unwrap();
            self.file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .unwrap();
            self.size = 0;
            self.rotations += 1;
        }
        self.file.write_all(line).unwrap();
        self.size += line.len();
    }
}

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
            &[("version", env!("CARGO_PKG_VERSION"))]
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
    let upto = |bytes: usize| {
        let (mut n, mut size) = (0, 0);
        while n < lines.len() && size + lines[n].len() < bytes {
            size += lines[n].len();
            n += 1;
        }
        n
    };
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
