//! A real Prometheus server (Debian's `prometheus` package, 2.42) on a free loopback port,
//! killed on drop, and its query API.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

pub struct Prometheus {
    child: Child,
    pub addr: SocketAddr,
    /// Set when the server itself runs with a web config: the client and `Authorization`.
    tls: Option<(Arc<rustls::ClientConfig>, String)>,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Starts `prometheus` with `config` (YAML) under `dir/name`, plus `args`; waits until ready.
    pub fn start(dir: &Path, name: &str, config: &str, args: &[&str]) -> Prometheus {
        Self::start_with(dir, name, config, args, None)
    }

    /// As [`Prometheus::start`], for a server that serves HTTPS with basic auth (`tls`: the
    /// client trusting its CA and the `Authorization` value).
    pub fn start_with(
        dir: &Path,
        name: &str,
        config: &str,
        args: &[&str],
        tls: Option<(Arc<rustls::ClientConfig>, String)>,
    ) -> Prometheus {
        let found = Command::new("sh")
            .args(["-c", "command -v prometheus"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        assert!(
            found,
            "the prometheus server is needed: sudo bash .ci/setup (Debian's prometheus package)"
        );
        let home = dir.join(name);
        std::fs::create_dir_all(&home).unwrap();
        let file = home.join("prometheus.yml");
        std::fs::write(&file, config).unwrap();
        let addr = super::agent::free_port();
        let agent_mode = args.contains(&"--enable-feature=agent");
        let storage = if agent_mode {
            "--storage.agent.path"
        } else {
            "--storage.tsdb.path"
        };
        let log = std::fs::File::create(home.join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", file.display()))
            .arg(format!("{storage}={}", home.join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .args(args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut p = Prometheus { child, addr, tls };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !p.get("/-/ready").is_some_and(|b| b.contains("Ready")) {
            assert!(
                Instant::now() < deadline && p.child.try_wait().unwrap().is_none(),
                "prometheus {name} exited or not ready after 30 s: {}",
                std::fs::read_to_string(home.join("prometheus.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        p
    }

    pub fn get(&self, path: &str) -> Option<String> {
        if let Some((client, auth)) = &self.tls {
            let (_, text) = super::tls::request(
                self.addr,
                client.clone(),
                "GET",
                path,
                &[("Authorization", auth)],
            )
            .ok()?;
            return Some(text.split_once("\r\n\r\n")?.1.to_owned());
        }
        let mut s = TcpStream::connect(self.addr).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        Some(out.split_once("\r\n\r\n")?.1.to_owned())
    }

    /// The whole answer of an instant query (`Null` when there is none).
    pub fn query_json(&self, expr: &str) -> Value {
        let body = self
            .get(&format!("/api/v1/query?query={}", encode(expr)))
            .unwrap_or_default();
        serde_json::from_str(&body).unwrap_or(Value::Null)
    }

    /// The result vector of an instant query (empty when it fails).
    pub fn query(&self, expr: &str) -> Vec<Value> {
        self.query_json(expr)["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Polls `expr` until `done` holds for its result; panics after `within`.
    pub fn wait_for(
        &self,
        expr: &str,
        within: Duration,
        done: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let deadline = Instant::now() + within;
        loop {
            let r = self.query(expr);
            if done(&r) {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "{expr}: not as expected after {within:?}: {r:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// The value of one sample of a query result.
pub fn value(sample: &Value) -> f64 {
    sample["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

pub fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
