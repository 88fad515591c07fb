//! `cargo bench --bench vs_mtail`: the agent's `analyze` beside mtail doing the same counting
//! job (`benches/mtail/proxy_sessions.mtail`) on the same generated logs, in the same run.
//!
//! Both results are checked against the generator's expected counts, so the comparison is of
//! the same work. Prints seconds, lines/s, MB/s and peak RSS of each tool (from `wait4`), and
//! the ratio. Sizes are session counts: `BENCH_SESSIONS=10000,300000,2000000` (the default).
//! Needs `mtail` (Debian package) and python3 (the generator).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_pia-split-tunnel-exporter");

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The log of `sessions` sessions and its expected counts, generated once and kept.
fn log_for(sessions: u64) -> (PathBuf, Value) {
    let dir = root().join("target/bench-data");
    std::fs::create_dir_all(&dir).expect("bench data folder");
    let path = dir.join(format!("vs-mtail-{sessions}.log"));
    let expected = dir.join(format!("vs-mtail-{sessions}.expected.json"));
    if !path.exists() || !expected.exists() {
        let status = Command::new("python3")
            .arg(root().join("tests/fixtures/gen_proxy_log.py"))
            .args(["--profile", "mixed", "--seed", "3", "--sessions"])
            .arg(sessions.to_string())
            .arg("--out")
            .arg(&path)
            .status()
            .expect("python3 runs the log generator");
        assert!(status.success(), "generator failed");
    }
    let text = std::fs::read_to_string(&expected).expect("expected counts");
    (
        path,
        serde_json::from_str(&text).expect("expected counts are JSON"),
    )
}

/// A finished child: its standard output, wall time and peak resident set.
struct Run {
    stdout: Vec<u8>,
    seconds: f64,
    peak_rss_mb: f64,
}

/// Runs `cmd` and takes its peak RSS from `wait4` (Linux: KiB). The bench itself stays small,
/// so the peak a child inherits across fork and exec is not what is measured.
#[allow(
    clippy::zombie_processes,
    reason = "reaped by wait4 below, which also gives its rusage"
)]
fn measure(cmd: &mut Command) -> Run {
    let started = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let mut out = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        out.read_to_end(&mut v).expect("child output");
        v
    });
    let mut status = 0;
    // SAFETY: wait4 writes only into the status and rusage we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as i32, "wait4");
    let seconds = started.elapsed().as_secs_f64();
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{cmd:?} failed ({status})"
    );
    Run {
        stdout: reader.join().expect("reader"),
        seconds,
        peak_rss_mb: usage.ru_maxrss as f64 * 1024.0 / 1e6,
    }
}

/// (app, proto, field) → value, the fields compared per app and protocol.
type Counts = BTreeMap<(String, String, &'static str), u64>;

const FIELDS: [&str; 5] = [
    "sessions_opened",
    "sessions_closed",
    "zero_byte_closures",
    "rx_bytes",
    "tx_bytes",
];

/// Per app and protocol from analyze's JSON (or expected.json: the same shape), and errors
/// summed per kind.
fn from_report(v: &Value) -> (Counts, BTreeMap<String, u64>) {
    let (mut counts, mut errors) = (Counts::new(), BTreeMap::new());
    for (app, protos) in v.as_object().expect("object") {
        if app.starts_with('_') {
            continue;
        }
        for (proto, c) in protos.as_object().expect("protocols") {
            for f in FIELDS {
                let n = c[f].as_u64().unwrap_or(0);
                counts.insert((app.clone(), proto.clone(), f), n);
            }
            for (kind, n) in c["errors"].as_object().into_iter().flatten() {
                *errors.entry(kind.clone()).or_default() += n.as_u64().unwrap_or(0);
            }
        }
    }
    (counts, errors)
}

/// The same from mtail's one-shot JSON.
fn from_mtail(v: &Value) -> (Counts, BTreeMap<String, u64>) {
    let (mut counts, mut errors) = (Counts::new(), BTreeMap::new());
    let series = |name: &str| -> Vec<(Vec<String>, u64)> {
        v[name]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|m| m["LabelValues"].as_array().into_iter().flatten())
            .map(|lv| {
                let labels = lv["Labels"]
                    .as_array()
                    .expect("labels")
                    .iter()
                    .map(|l| l.as_str().unwrap_or_default().to_owned())
                    .collect();
                (labels, lv["Value"]["Value"].as_f64().unwrap_or(0.0) as u64)
            })
            .collect()
    };
    for f in FIELDS {
        for (labels, n) in series(f) {
            let key = (labels[0].clone(), labels[1].to_lowercase(), f);
            *counts.entry(key).or_default() += n;
        }
    }
    for (labels, n) in series("flow_errors_by_kind") {
        *errors.entry(labels[0].clone()).or_default() += n;
    }
    (counts, errors)
}

/// Differences between two count sets (zeros on one side equal absence on the other).
fn diff(
    want: &(Counts, BTreeMap<String, u64>),
    got: &(Counts, BTreeMap<String, u64>),
) -> Vec<String> {
    let mut out = Vec::new();
    let keys: std::collections::BTreeSet<_> = want.0.keys().chain(got.0.keys()).collect();
    for k in keys {
        let (w, g) = (
            want.0.get(k).copied().unwrap_or(0),
            got.0.get(k).copied().unwrap_or(0),
        );
        if w != g {
            out.push(format!("{}/{}/{}: want {w}, got {g}", k.0, k.1, k.2));
        }
    }
    let kinds: std::collections::BTreeSet<_> = want.1.keys().chain(got.1.keys()).collect();
    for k in kinds {
        let (w, g) = (
            want.1.get(k).copied().unwrap_or(0),
            got.1.get(k).copied().unwrap_or(0),
        );
        if w != g {
            out.push(format!("errors {k}: want {w}, got {g}"));
        }
    }
    out
}

fn main() -> ExitCode {
    let sizes: Vec<u64> = std::env::var("BENCH_SESSIONS")
        .unwrap_or_else(|_| "10000,300000,2000000".into())
        .split(',')
        .map(|s| s.trim().parse().expect("BENCH_SESSIONS: session counts"))
        .collect();
    let progs = root().join("benches/mtail");
    let glog = tempfile::tempdir().expect("folder for mtail's own logs");
    let mut ok = true;
    println!(
        "{:>9} {:>10} {:>8}  {:<8} {:>8} {:>11} {:>8} {:>12}  counts",
        "sessions", "lines", "MB", "tool", "seconds", "M lines/s", "MB/s", "peak RSS MB"
    );
    for sessions in sizes {
        let (log, expected) = log_for(sessions);
        let want = from_report(&expected);
        let mb = std::fs::metadata(&log).expect("log").len() as f64 / 1e6;
        // Best of three for analyze (a few seconds at most); mtail once (minutes at 2M).
        let analyze = (0..3)
            .map(|_| measure(Command::new(BIN).arg("analyze").arg("--json").arg(&log)))
            .min_by(|a, b| a.seconds.total_cmp(&b.seconds))
            .expect("three runs");
        let report: Value = serde_json::from_slice(&analyze.stdout).expect("analyze JSON");
        let lines = report["_summary"]["lines"].as_u64().expect("line count");
        let mtail = measure(
            Command::new("mtail")
                .args(["--one_shot", "--one_shot_format=json"])
                // One-shot mode still opens its HTTP listener: loopback, any free port.
                .args(["--address", "127.0.0.1", "--port", "0", "--log_dir"])
                .arg(glog.path())
                .arg("--progs")
                .arg(&progs)
                .arg("--logs")
                .arg(&log),
        );
        let mtail_json: Value = serde_json::from_slice(&mtail.stdout).expect("mtail JSON");
        for (tool, run, got) in [
            ("analyze", &analyze, from_report(&report)),
            ("mtail", &mtail, from_mtail(&mtail_json)),
        ] {
            let d = diff(&want, &got);
            println!(
                "{sessions:>9} {lines:>10} {mb:>8.1}  {tool:<8} {:>8.2} {:>11.3} {:>8.1} {:>12.1}  {}",
                run.seconds,
                lines as f64 / run.seconds / 1e6,
                mb / run.seconds,
                run.peak_rss_mb,
                if d.is_empty() {
                    "exact".to_owned()
                } else {
                    format!("{} differ: {}", d.len(), d[..d.len().min(3)].join("; "))
                }
            );
            ok &= d.is_empty();
        }
        println!(
            "{sessions:>9} analyze/mtail: {:.1}x the lines/s, {:.2}x the peak RSS",
            mtail.seconds / analyze.seconds,
            analyze.peak_rss_mb / mtail.peak_rss_mb
        );
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        eprintln!("counts differ from the generator's: the comparison is not of the same job");
        ExitCode::FAILURE
    }
}
