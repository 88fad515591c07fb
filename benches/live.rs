//! `cargo bench --bench live`: the running agent, measured from outside.
//!
//! 1. Tailing lag: lines appended in random bursts, rotated like the proxy at 512,000 bytes;
//!    a scraper reads `/metrics` over one keep-alive connection as fast as it answers, and a
//!    line's lag is the time from its append to the first scrape that counts it.
//! 2. Idle: CPU time, wakeups and memory of an agent whose log receives nothing.
//! 3. Load: wrk on `/metrics` and `/health` with 64 apps and all four probe paths exported.
//!
//! Everything is on loopback. `LAG_LINES` (20000), `IDLE_SECS` (60) and `LOAD_SECS` (10)
//! shorten or lengthen the parts; `LIVE_PARTS=lag,idle,load` picks them.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use pia_split_tunnel_exporter::config::Config;

const BIN: &str = env!("CARGO_BIN_EXE_pia-split-tunnel-exporter");

/// The tests' agent harness: the binary on a free loopback port (probes off) and a writer
/// that rotates like the proxy.
#[path = "../tests/it/common/agent.rs"]
#[allow(dead_code)]
mod agent;

use agent::{Agent, ProxyWriter};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// GETs over one keep-alive connection.
struct Client {
    reader: BufReader<TcpStream>,
    stream: TcpStream,
}

impl Client {
    fn new(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        Client {
            reader: BufReader::new(stream.try_clone().expect("clone")),
            stream,
        }
    }

    fn get(&mut self, path: &str) -> String {
        write!(
            self.stream,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n"
        )
        .expect("request");
        let mut len = 0;
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).expect("response head");
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some(v) = line
                .to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().to_owned())
            {
                len = v.parse().expect("content length");
            }
        }
        let mut body = vec![0; len];
        self.reader.read_exact(&mut body).expect("response body");
        String::from_utf8(body).expect("UTF-8 body")
    }
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Lines of a generated log (mixed profile), made once and kept.
fn sample_lines(sessions: u64) -> Vec<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("target/bench-data");
    std::fs::create_dir_all(&dir).expect("bench data folder");
    let path = dir.join(format!("live-{sessions}.log"));
    if !path.exists() {
        let ok = Command::new("python3")
            .arg(root.join("tests/fixtures/gen_proxy_log.py"))
            .args(["--profile", "mixed", "--seed", "5", "--no-expected"])
            .args(["--sessions", &sessions.to_string(), "--out"])
            .arg(&path)
            .status()
            .expect("python3 runs the generator")
            .success();
        assert!(ok, "generator failed");
    }
    std::fs::read(&path)
        .expect("generated log")
        .split_inclusive(|&b| b == b'\n')
        .map(<[u8]>::to_vec)
        .collect()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn lag() -> Vec<String> {
    let n: usize = env_or("LAG_LINES", 20_000);
    let lines: Vec<Vec<u8>> = sample_lines(10_000).into_iter().take(n).collect();
    let n = lines.len();
    let dir = tempfile::tempdir().expect("temp folder");
    let log = dir.path().join("transparent_proxy.log");
    std::fs::write(&log, b"").expect("empty log");
    let agent = Agent::start(&log, &dir.path().join("cp.json"));
    let addr = agent.addr;
    let done = Arc::new(AtomicBool::new(false));
    // Scrapes: (time the response arrived, lines counted).
    let scraper = std::thread::spawn({
        let done = done.clone();
        move || {
            let mut c = Client::new(addr);
            let mut seen = Vec::new();
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let body = c.get("/metrics");
                let lines = metric(&body, "pia_split_tunnel_log_lines_total").unwrap_or(0.0);
                seen.push((Instant::now(), lines as usize));
            }
            seen
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    let mut w = ProxyWriter::new(&log);
    let mut rng = fastrand::Rng::with_seed(0x1a9_5eed);
    let mut appended = Vec::with_capacity(n);
    let mut i = 0;
    while i < n {
        let burst = rng.usize(1..=500).min(n - i);
        for line in &lines[i..i + burst] {
            w.write(line);
        }
        let t = Instant::now();
        appended.extend(std::iter::repeat_n(t, burst));
        i += burst;
        std::thread::sleep(Duration::from_millis(rng.u64(0..50)));
    }
    // Wait for the last line, then stop scraping.
    let mut c = Client::new(addr);
    let deadline = Instant::now() + Duration::from_secs(60);
    while metric(&c.get("/metrics"), "pia_split_tunnel_log_lines_total").unwrap_or(0.0) < n as f64 {
        assert!(Instant::now() < deadline, "the agent did not catch up");
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(50));
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen = scraper.join().expect("scraper");
    let total = seen.last().map_or(0, |s| s.1);
    assert_eq!(total, n, "lines counted at the end");
    let mut lags = Vec::with_capacity(n);
    let mut s = 0;
    for (k, t) in appended.iter().enumerate() {
        while seen[s].1 < k + 1 {
            s += 1;
        }
        lags.push(seen[s].0.saturating_duration_since(*t).as_secs_f64() * 1e3);
    }
    lags.sort_by(f64::total_cmp);
    let span = seen.last().unwrap().0 - seen[0].0;
    vec![
        format!(
            "tailing lag over {n} lines in bursts of 1-500, {} rotations: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            w.rotations,
            percentile(&lags, 0.5),
            percentile(&lags, 0.9),
            percentile(&lags, 0.99),
            lags[lags.len() - 1]
        ),
        format!(
            "  ({} scrapes, one every {:.2} ms on average: the granularity of these figures)",
            seen.len(),
            span.as_secs_f64() * 1e3 / seen.len() as f64
        ),
    ]
}

/// utime + stime (clock ticks), voluntary context switches per thread, VmRSS and VmHWM (KiB)
/// of `pid`.
fn proc_sample(pid: u32) -> (u64, std::collections::HashMap<String, u64>, u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // Fields after the command name, which may hold spaces: state is field 3.
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    // Threads' switches are in task/*/status; summed over threads they say how often the
    // process woke. Threads come and go (tokio's blocking pool), so they are kept apart.
    let wakeups = std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("tasks")
        .filter_map(|t| {
            let t = t.ok()?;
            let s = std::fs::read_to_string(t.path().join("status")).ok()?;
            let n = s
                .lines()
                .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
                .and_then(|v| v.trim().parse::<u64>().ok())?;
            Some((t.file_name().to_string_lossy().into_owned(), n))
        })
        .collect();
    (ticks, wakeups, field("VmRSS:"), field("VmHWM:"))
}

fn idle() -> Vec<String> {
    let secs: u64 = env_or("IDLE_SECS", 60);
    let dir = tempfile::tempdir().expect("temp folder");
    let log = dir.path().join("transparent_proxy.log");
    let lines = sample_lines(10_000);
    std::fs::write(&log, lines.concat()).expect("log");
    let agent = Agent::start(&log, &dir.path().join("cp.json"));
    let mut c = Client::new(agent.addr);
    while metric(&c.get("/metrics"), "pia_split_tunnel_log_lines_total").unwrap_or(0.0)
        < lines.len() as f64
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(c);
    std::thread::sleep(Duration::from_secs(5));
    let pid = agent.child.id();
    let (t0, mut last, _, _) = proc_sample(pid);
    // Sampled every 0.2 s: a thread that exits loses at most its last 0.2 s.
    let (mut woke, end) = (0, Instant::now() + Duration::from_secs(secs));
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(200));
        let (_, now, _, _) = proc_sample(pid);
        woke += now
            .iter()
            .map(|(t, n)| n - last.get(t).copied().unwrap_or(0))
            .sum::<u64>();
        last = now;
    }
    let (t1, _, rss, hwm) = proc_sample(pid);
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let cpu_ms = (t1 - t0) as f64 / hz * 1e3;
    vec![format!(
        "idle agent over {secs} s (process watch every 30 s, probes off): CPU {cpu_ms:.0} ms ({:.3} %), {:.1} wakeups/s, RSS {:.1} MB (peak {:.1} MB after reading {} lines)",
        cpu_ms / (secs as f64 * 1e3) * 100.0,
        woke as f64 / secs as f64,
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0,
        lines.len()
    )]
}

/// Runs wrk; returns (requests/s, p50, p99, non-2xx count) from its report.
fn wrk(url: &str, secs: u64) -> (String, String, String, String) {
    let out = Command::new("wrk")
        .args(["-t2", "-c32", &format!("-d{secs}s"), "--latency", url])
        .output()
        .expect("wrk (Debian package wrk) runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let find = |prefix: &str| -> String {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .map(|v| v.split_whitespace().next().unwrap_or("").to_owned())
            .unwrap_or_else(|| "0".into())
    };
    (
        find("Requests/sec:"),
        find("50%"),
        find("99%"),
        find("Non-2xx or 3xx responses:"),
    )
}

fn load() -> Vec<String> {
    let secs: u64 = env_or("LOAD_SECS", 10);
    let dir = tempfile::tempdir().expect("temp folder");
    let mut config = Config::default();
    config.log.path = dir.path().join("transparent_proxy.log");
    config.log.error_path = dir.path().join("STProxy.log");
    config.log.checkpoint = dir.path().join("cp.json");
    config.fallback.backend = pia_split_tunnel_exporter::fallback::BackendChoice::None;
    std::fs::write(&config.log.path, agent::apps_log(64)).expect("log");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("listener");
    let addr = listener.local_addr().expect("address");
    // The demo's stand-ins: a PIA process table and probe rounds with all four paths healthy.
    let mut sources = pia_split_tunnel_exporter::demo::sources(Arc::new(AtomicBool::new(false)));
    sources.interval = Duration::from_millis(500);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let agent = rt.spawn(pia_split_tunnel_exporter::agent::run(
        config,
        sources,
        listener,
        async move {
            let _ = stop_rx.await;
        },
    ));
    let mut c = Client::new(addr);
    let deadline = Instant::now() + Duration::from_secs(20);
    let (apps, paths, size) = loop {
        let body = c.get("/metrics");
        let apps: std::collections::BTreeSet<&str> = body
            .lines()
            .filter(|l| l.starts_with("pia_split_tunnel_sessions_opened_total{"))
            .filter_map(|l| l.split("app=\"").nth(1)?.split('"').next())
            .collect();
        let paths: std::collections::BTreeSet<&str> = body
            .lines()
            .filter(|l| l.starts_with("pia_split_tunnel_probe_"))
            .filter_map(|l| l.split("path=\"").nth(1)?.split('"').next())
            .collect();
        if apps.len() >= 64 && paths.len() >= 4 {
            break (apps.len(), paths.len(), body.len());
        }
        assert!(
            Instant::now() < deadline,
            "64 apps and 4 probe paths never showed: {} apps, paths {paths:?}",
            apps.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let health_status = {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.write_all(b"GET /health HTTP/1.0\r\n\r\n")
            .expect("request");
        let mut r = String::new();
        let _ = s.read_to_string(&mut r);
        r.lines().next().unwrap_or("").to_owned()
    };
    let mut out = vec![format!(
        "load: wrk -t2 -c32 -d{secs}s on the same 2-core machine as the agent; /metrics has {apps} apps, {paths} probe paths, {size} bytes; /health answers {health_status:?}"
    )];
    for path in ["/metrics", "/health"] {
        let (rps, p50, p99, non2xx) = wrk(&format!("http://{addr}{path}"), secs);
        out.push(format!(
            "  {path:<9} {rps:>10} requests/s, latency p50 {p50}, p99 {p99}, non-2xx {non2xx}"
        ));
    }
    let _ = stop_tx.send(());
    rt.block_on(agent)
        .expect("agent task")
        .expect("agent stops cleanly");
    out
}

fn main() {
    let parts = std::env::var("LIVE_PARTS").unwrap_or_else(|_| "lag,idle,load".into());
    let mut summary = Vec::new();
    for part in parts.split(',') {
        let lines = match part.trim() {
            "lag" => lag(),
            "idle" => idle(),
            "load" => load(),
            other => panic!("LIVE_PARTS: unknown part {other:?} (lag, idle, load)"),
        };
        for l in &lines {
            println!("{l}");
        }
        summary.extend(lines);
    }
    println!("\nsummary\n{}", summary.join("\n"));
}
