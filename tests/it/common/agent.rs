//! The agent binary as a child process on a free loopback port, its metrics, and a writer
//! that appends and rotates like the proxy.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use pia_split_tunnel_exporter::tail::{FINGERPRINT_BYTES, Fingerprint};

use super::BIN;

/// A running agent on a free loopback port, killed on drop.
pub struct Agent {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Agent {
    pub fn start(log: &Path, checkpoint: &Path) -> Agent {
        Agent::start_with(log, checkpoint, &[], &[])
    }

    /// Probes off, and the error-level log beside the log (so a file elsewhere on the machine
    /// plays no part); with more arguments for the agent, run through `wrap` (a program and its arguments,
    /// e.g. `setpriv ...`) when it is not empty.
    pub fn start_with(log: &Path, checkpoint: &Path, args: &[&str], wrap: &[&str]) -> Agent {
        Agent::spawn(log, checkpoint, args, wrap, Stdio::inherit())
    }

    /// As [`Agent::start_with`] (no wrapper), its log (stderr) written to `stderr`.
    pub fn start_logged(log: &Path, checkpoint: &Path, args: &[&str], stderr: &Path) -> Agent {
        let file = std::fs::File::create(stderr).expect("the agent's log file");
        Agent::spawn(log, checkpoint, args, &[], file.into())
    }

    fn spawn(log: &Path, checkpoint: &Path, args: &[&str], wrap: &[&str], stderr: Stdio) -> Agent {
        let addr = free_port();
        let error_path = log.with_file_name("STProxy.log");
        let mut cmd = match wrap.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(BIN);
                c
            }
            None => Command::new(BIN),
        };
        let child = cmd
            .args(["run", "--listen", &addr.to_string(), "--log-path"])
            .arg(log)
            .arg("--checkpoint")
            .arg(checkpoint)
            // Tests talk to loopback only: no probes of the public egress endpoints.
            .args(["--set", "probe.enabled=false", "--set"])
            .arg(format!("log.error_path={error_path:?}"))
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("agent starts");
        let agent = Agent { child, addr };
        wait_listening(addr, "agent");
        agent
    }

    pub fn get(&self, path: &str) -> String {
        http_get(self.addr, path)
    }

    /// `/health` as JSON (its body is JSON whatever the status code).
    pub fn health(&self) -> Value {
        let body = self.get("/health");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("/health is not JSON ({e}): {body}"))
    }

    /// Waits until `/health` shows `component` with `status`; returns its reason.
    pub fn wait_health(&self, component: &str, status: &str) -> String {
        self.wait_health_for(component, status, "")
    }

    /// As [`Self::wait_health`], until the reason also contains `why`: a state on the way
    /// (a log missing for the instant between a rename and the new file) is passed over.
    pub fn wait_health_for(&self, component: &str, status: &str, why: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let h = self.health();
            let c = &h["components"][component];
            let reason = c["reason"].as_str().unwrap_or_default();
            if c["status"] == status && reason.contains(why) {
                return reason.to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "{component} is not {status} ({why:?}) after 30 s: {h:#}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn metrics(&self) -> Metrics {
        Metrics::parse(&self.get("/metrics"))
    }

    /// Waits until `log_lines_total` reaches `lines`; returns the metrics then.
    pub fn wait_lines(&self, lines: u64) -> Metrics {
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

    /// Scrapes until `name{labels}` reads `want` (or fails after 30 s); that scrape. A
    /// scrape gathers the families in no fixed order, so one can count a poll's lines (the
    /// log's family) before the sessions verdict (the window's) shows what they closed; the
    /// next one shows both.
    pub fn wait_metric(&self, name: &str, labels: &[(&str, &str)], want: f64) -> Metrics {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let m = self.metrics();
            let got = m.value(name, labels);
            if got == want {
                return m;
            }
            assert!(
                Instant::now() < deadline,
                "{name}{labels:?} is {got}, not {want}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn stop(mut self) {
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

    pub fn kill9(mut self) {
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

/// `demo --speed 8` on a free loopback port (replayed logs and probes), killed on drop.
pub struct Demo {
    child: Child,
    pub addr: SocketAddr,
}

impl Demo {
    pub fn start() -> Demo {
        let addr = free_port();
        let child = Command::new(BIN)
            .args(["demo", "--speed", "8", "--listen", &addr.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("demo starts");
        let demo = Demo { child, addr };
        wait_listening(addr, "demo");
        demo
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits (20 s at most) until something accepts connections on `addr`.
pub fn wait_listening(addr: SocketAddr, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {addr}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

pub fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default()
}

/// Samples of a metrics text, keyed by name and sorted labels.
pub struct Metrics(pub BTreeMap<String, f64>);

impl Metrics {
    pub fn parse(text: &str) -> Metrics {
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

    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let key = if labels.is_empty() {
            name.to_owned()
        } else {
            let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
            format!("{name}{{{}}}", l.join(","))
        };
        *self.0.get(&key).unwrap_or(&0.0)
    }

    /// The expected.json counts as the agent exports them: sessions per app and protocol;
    /// bytes and error kinds per app, summed over its protocols.
    pub fn assert_matches(&self, expected: &Value) {
        for (app, protos) in expected.as_object().unwrap() {
            let mut per_app: BTreeMap<String, u64> = BTreeMap::new();
            for (proto, c) in protos.as_object().unwrap() {
                let l = [("app", app.as_str()), ("proto", proto.as_str())];
                let n = |k: &str| c[k].as_u64().unwrap() as f64;
                let m = |name: &str| self.value(&format!("pia_split_tunnel_{name}"), &l);
                assert_eq!(
                    m("sessions_opened_total"),
                    n("sessions_opened"),
                    "{app}/{proto} opened"
                );
                let closed = |o: &str| {
                    self.value(
                        "pia_split_tunnel_sessions_closed_total",
                        &[l[0], l[1], ("outcome", o)],
                    )
                };
                assert_eq!(
                    closed("zero_bytes"),
                    n("zero_byte_closures"),
                    "{app}/{proto} zero"
                );
                let all: f64 = ["transferred", "zero_bytes", "unknown"]
                    .iter()
                    .map(|o| closed(o))
                    .sum();
                assert_eq!(all, n("sessions_closed"), "{app}/{proto} closed");
                if c.get("no_reply_closures").is_some() {
                    let no_reply = self.value(
                        "pia_split_tunnel_sessions_replies_total",
                        &[l[0], l[1], ("reply", "no_reply")],
                    );
                    assert_eq!(no_reply, n("no_reply_closures"), "{app}/{proto} no reply");
                }
                for k in ["rx_bytes", "tx_bytes"] {
                    *per_app.entry(k.into()).or_default() += c[k].as_u64().unwrap();
                }
                for (kind, count) in c["errors"].as_object().unwrap() {
                    *per_app.entry(format!("kind:{kind}")).or_default() += count.as_u64().unwrap();
                }
            }
            for (key, want) in per_app {
                let got = match key.strip_prefix("kind:") {
                    Some(kind) => self.value(
                        "pia_split_tunnel_flow_errors_total",
                        &[("app", app), ("kind", kind)],
                    ),
                    None => self.value(&format!("pia_split_tunnel_{key}_total"), &[("app", app)]),
                };
                assert_eq!(got, want as f64, "{app} {key}");
            }
        }
    }
}

/// A log with `apps` apps, TCP and UDP, transferred and zero-byte sessions and errors (the
/// benches' load).
#[allow(
    dead_code,
    reason = "used by benches/live.rs and benches/metrics_render.rs only"
)]
pub fn apps_log(apps: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut id = 0;
    for round in 0..4 {
        for app in 0..apps {
            id += 1;
            let app = format!("com.bench.app{app:02}");
            let (proto, file, open) = if round % 2 == 0 {
                (
                    "TCP",
                    "ChannelCreatorTCP.swift:50",
                    format!(
                        "{app} Creating, binding and connecting a new TCP socket - endpoint: 203.0.113.5:443 with bindIp: 10.0.15.15"
                    ),
                )
            } else {
                (
                    "UDP",
                    "ChannelCreatorUDP.swift:53",
                    format!(
                        "{app} Creating and binding a new UDP socket with bindIp: 10.0.15.15 and localEndpoint: N/A"
                    ),
                )
            };
            let size = if round < 2 { "1.5 MB" } else { "Zero KB" };
            writeln!(
                out,
                "[2026-02-16 11:49:31:4330] [{file}] debug: id: {id} {open}\r"
            )
            .unwrap();
            writeln!(out, "[2026-02-16 11:49:31:5330] [FlowForwarder{proto}.swift:32] error: id: {id} Empty buffer occurred during {proto} flow.readData() {app}\r").unwrap();
            writeln!(out, "[2026-02-16 11:49:32:5330] [ProxySession{proto}.swift:31] debug: id: {id} Destructor: ProxySession closed. rxBytes={size} txBytes={size} {app}\r").unwrap();
        }
    }
    out
}

pub fn lines_of(path: &Path) -> Vec<Vec<u8>> {
    std::fs::read(path)
        .unwrap()
        .split_inclusive(|&b| b == b'\n')
        .map(<[u8]>::to_vec)
        .collect()
}

/// Hands `lines` to `write` at a steady pace over `secs`: line i is due at i / rate, whatever
/// the scheduling hiccups.
pub fn write_paced(lines: &[Vec<u8>], secs: f64, mut write: impl FnMut(&[u8])) {
    let t0 = Instant::now();
    let rate = lines.len() as f64 / secs;
    for (i, line) in lines.iter().enumerate() {
        let due = Duration::from_secs_f64(i as f64 / rate);
        if let Some(wait) = due.checked_sub(t0.elapsed()) {
            std::thread::sleep(wait);
        }
        write(line);
    }
}

/// Appends lines like the proxy: rename to `.1` and start a new file at 512,000 bytes.
/// Remembers where every line ended in which file, to check a saved cursor against.
pub struct ProxyWriter {
    pub path: PathBuf,
    file: std::fs::File,
    size: usize,
    pub rotations: u32,
    /// Size at which the file is rotated (the proxy's 512,000 bytes unless a test says).
    pub rotate_at: usize,
    /// Lines written so far.
    pub lines: u64,
    pub files: Vec<Written>,
}

/// One file the writer wrote to.
pub struct Written {
    pub ino: u64,
    /// Lines written before this file.
    pub first_line: u64,
    /// Offset after each of its lines.
    pub ends: Vec<u64>,
    /// Its first bytes, to tell it from another file given the same inode.
    pub head: Vec<u8>,
}

impl ProxyWriter {
    pub fn new(path: &Path) -> ProxyWriter {
        let mut w = ProxyWriter {
            path: path.to_owned(),
            file: tempfile::tempfile().unwrap(),
            size: 0,
            rotations: 0,
            rotate_at: 512_000,
            lines: 0,
            files: vec![],
        };
        w.open();
        w
    }

    fn open(&mut self) {
        self.file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .unwrap();
        let meta = self.file.metadata().unwrap();
        self.size = meta.len() as usize;
        self.files.push(Written {
            ino: std::os::unix::fs::MetadataExt::ino(&meta),
            first_line: self.lines,
            ends: vec![],
            head: vec![],
        });
    }

    pub fn write(&mut self, line: &[u8]) {
        if self.size + line.len() > self.rotate_at {
            std::fs::rename(&self.path, format!("{}.1", self.path.display())).unwrap();
            self.open();
            self.rotations += 1;
        }
        self.file.write_all(line).unwrap();
        self.size += line.len();
        self.lines += 1;
        let size = self.size as u64;
        let f = self.files.last_mut().unwrap();
        f.ends.push(size);
        let room = FINGERPRINT_BYTES.saturating_sub(f.head.len());
        f.head.extend_from_slice(&line[..room.min(line.len())]);
    }

    /// Lines before `offset` in the newest file with inode `ino` and first bytes `head`
    /// (file systems reuse inodes); panics when the offset is not at a line's end (a cursor
    /// must never point into a line).
    pub fn lines_before(&self, ino: u64, head: Fingerprint, offset: u64) -> u64 {
        let f = self
            .files
            .iter()
            .rev()
            .find(|f| {
                f.ino == ino
                    && f.head
                        .get(..head.len as usize)
                        .is_some_and(|h| Fingerprint::of(h) == head)
            })
            .unwrap_or_else(|| panic!("no written file has inode {ino} and head {head:?}"));
        if offset == 0 {
            return f.first_line;
        }
        let n = f
            .ends
            .binary_search(&offset)
            .unwrap_or_else(|_| panic!("offset {offset} of inode {ino} is not at a line's end"));
        f.first_line + n as u64 + 1
    }
}
