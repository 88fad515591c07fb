//! `demo`: a newcomer without PIA sees the real agent at work.
//!
//! Two sample logs are embedded: a healthy stretch, then the field failure (every session
//! closes with zero bytes). A writer replays them into a temporary `transparent_proxy.log` at
//! their own pace (times rewritten to now), rotating at 512,000 bytes like the proxy, and the
//! real agent tails that file and serves its metrics. The failure repeats until Ctrl-C.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;

use crate::agent::Sources;
use std::os::unix::fs::DirBuilderExt;

use crate::config::Config;
use crate::presence::ProcInfo;
use crate::probe::lab::{self, HOME_IP, VPN_EXIT_IP};
use crate::probe::{PathKind, PathResult, ProbeError, Round, RoundSource};

mod processes;
pub use processes::ProcessTable;

// One copy of the replayed logs: the tests' fixtures.
const HEALTHY: &str = include_str!("../../tests/fixtures/healthy.log");
const BROKEN: &str = include_str!("../../tests/fixtures/broken.log");
/// The proxy's rotation threshold.
pub const ROTATE_AT: u64 = 512_000;
/// Longest pause between two replayed lines, whatever the sample says.
const MAX_GAP: Duration = Duration::from_secs(2);

pub fn run_blocking(mut config: Config, speed: f64) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        speed > 0.0 && speed.is_finite(),
        "--speed must be a positive number"
    );
    let dir = std::env::temp_dir().join(format!("pia-split-tunnel-demo-{}", std::process::id()));
    // A new private folder: one someone else made in advance (the temp folder is shared)
    // is an error, not a place to write.
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    config.log.path = dir.join("transparent_proxy.log");
    config.log.checkpoint = dir.join("checkpoint.json");
    // Only the replayed log: never this machine's error log (/tmp/STProxy.log).
    config.log.error_path = std::path::PathBuf::new();
    // The demo decides and reports, and never touches this machine's network.
    config.fallback.backend = crate::fallback::BackendChoice::None;
    // Its addresses are documentation ranges: show them, as the dashboard's egress panel does.
    config.probe.export_addresses = true;
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let result = rt.block_on(async {
        let listener = crate::server::bind(&config.http.listen)
            .await
            .with_context(|| {
                format!(
                    "cannot listen on {} (use --listen ADDR:PORT)",
                    config.http.listen
                )
            })?;
        let addr = listener.local_addr()?;
        // The page first: it is what a newcomer opens.
        println!("demo: status page at http://{addr}/");
        println!(
            "demo: replaying a healthy stretch, then the split-tunnel failure, into {}",
            config.log.path.display()
        );
        println!("demo: live metrics at http://{addr}/metrics  (Ctrl-C to stop)");
        let broken = Arc::new(AtomicBool::new(false));
        let writer = tokio::spawn(replay(config.log.path.clone(), speed, broken.clone()));
        let run = crate::agent::run(
            config,
            sources(broken),
            listener,
            crate::agent::shutdown_signal(),
        )
        .await;
        writer.abort();
        run
    });
    let _ = std::fs::remove_dir_all(&dir);
    result.map(|()| ExitCode::SUCCESS)
}

/// What the demo probes and watches: a Mac on PIA whose bypass works while the log is healthy
/// and times out once it shows the failure. Replayed, like the log: nothing leaves this machine.
pub fn sources(broken: Arc<AtomicBool>) -> Sources {
    let pia = |name: &str, exe: &str| ProcInfo {
        name: name.into(),
        exe: Some(exe.into()),
        uid: Some(0),
    };
    let processes = ProcessTable::new(vec![
        pia(
            "com.privateinternetaccess.vpn.splittunnel",
            "/Library/SystemExtensions/0D6E/com.privateinternetaccess.vpn.splittunnel.systemextension/Contents/MacOS/com.privateinternetaccess.vpn.splittunnel",
        ),
        pia(
            "pia-daemon",
            "/Applications/Private Internet Access.app/Contents/MacOS/pia-daemon",
        ),
        pia(
            "pia-wireguard-go",
            "/Applications/Private Internet Access.app/Contents/MacOS/pia-wireguard-go",
        ),
    ]);
    Sources {
        rounds: Some(Arc::new(ReplayRounds { broken })),
        processes: Box::new(processes),
        interval: Duration::from_secs(5),
        // Replayed rounds: the demo machine's own routes play no part.
        watch_routes: false,
        platform: None,
    }
}

/// Probe rounds of the lab's topology (`probe::lab`): home IP, VPN exit.
pub struct ReplayRounds {
    broken: Arc<AtomicBool>,
}

impl ReplayRounds {
    /// Rounds as the demo replays them, the bypass broken or not.
    pub fn new(broken: bool) -> Self {
        ReplayRounds {
            broken: Arc::new(AtomicBool::new(broken)),
        }
    }

    pub fn round_now(&self) -> Round {
        let broken = self.broken.load(Ordering::Relaxed);
        let ok = |path, ip, ms| PathResult {
            path,
            outcome: Ok(ip),
            duration: Duration::from_millis(ms),
        };
        let bypass = if broken {
            PathResult {
                path: PathKind::Bypass,
                outcome: Err(ProbeError::Timeout),
                duration: Duration::from_secs(5),
            }
        } else {
            ok(PathKind::Bypass, HOME_IP, 38)
        };
        Round {
            interfaces: lab::interfaces(true),
            results: vec![
                ok(PathKind::Physical, HOME_IP, 35),
                ok(PathKind::Tunnel, VPN_EXIT_IP, 81),
                bypass,
                ok(PathKind::Default, VPN_EXIT_IP, 79),
            ],
        }
    }
}

impl RoundSource for ReplayRounds {
    fn round(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = Round> + Send + '_>> {
        Box::pin(async move { self.round_now() })
    }
}

/// Writes the healthy sample once, then the broken one again and again; `broken` says which
/// part is being written.
pub async fn replay(path: PathBuf, speed: f64, broken: Arc<AtomicBool>) -> anyhow::Result<()> {
    let mut out = RotatingWriter::open(&path)?;
    let mut id_offset = 0;
    write_sample(&mut out, HEALTHY, speed, 0, true).await?;
    broken.store(true, Ordering::Relaxed);
    for round in 0u64.. {
        // Later rounds continue the same proxy run: no start-up block, ids keep growing.
        id_offset += 1000;
        write_sample(&mut out, BROKEN, speed, id_offset, round == 0).await?;
    }
    Ok(())
}

async fn write_sample(
    out: &mut RotatingWriter,
    sample: &str,
    speed: f64,
    id_offset: u64,
    with_startup: bool,
) -> anyhow::Result<()> {
    let body = if with_startup {
        sample
    } else {
        sample
            .split_once("Proxy started!\r\n")
            .map_or(sample, |(_, rest)| rest)
    };
    let mut previous: Option<f64> = None;
    for line in body.split_inclusive('\n') {
        let at = sample_seconds(line);
        if let (Some(prev), Some(now)) = (previous, at) {
            let gap = Duration::from_secs_f64(((now - prev) / speed).max(0.0)).min(MAX_GAP);
            tokio::time::sleep(gap).await;
        }
        previous = at.or(previous);
        out.write_line(&restamp(line, id_offset))?;
    }
    Ok(())
}

/// Seconds of the day of a sample line (`[2026-02-16 11:49:31:2040] ...`).
fn sample_seconds(line: &str) -> Option<f64> {
    let t = line.get(12..25)?;
    let h: f64 = t.get(0..2)?.parse().ok()?;
    let m: f64 = t.get(3..5)?.parse().ok()?;
    let s: f64 = t.get(6..8)?.parse().ok()?;
    let frac: f64 = t.get(9..13)?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s + frac / 10_000.0)
}

/// The line with the current local time and its session id shifted by `id_offset`.
fn restamp(line: &str, id_offset: u64) -> String {
    let now = chrono::Local::now();
    let stamp = format!(
        "[{}{}0]",
        now.format("%Y-%m-%d %H:%M:%S:"),
        now.format("%3f")
    );
    let rest = line.get(26..).unwrap_or(line);
    let rest = match rest.split_once(" id: ") {
        Some((head, tail)) if id_offset > 0 => {
            let digits = tail.bytes().take_while(u8::is_ascii_digit).count();
            match tail[..digits].parse::<u64>() {
                Ok(id) => format!("{head} id: {}{}", id + id_offset, &tail[digits..]),
                Err(_) => rest.to_owned(),
            }
        }
        _ => rest.to_owned(),
    };
    format!("{stamp}{rest}")
}

/// Appends whole lines and rotates like the proxy: rename to `.1`, start a new file.
pub struct RotatingWriter {
    path: PathBuf,
    file: std::fs::File,
    size: u64,
}

impl RotatingWriter {
    pub fn open(path: &Path) -> anyhow::Result<RotatingWriter> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        let size = file.metadata()?.len();
        Ok(RotatingWriter {
            path: path.to_path_buf(),
            file,
            size,
        })
    }

    pub fn write_line(&mut self, line: &str) -> anyhow::Result<()> {
        if self.size + line.len() as u64 > ROTATE_AT {
            let archive = PathBuf::from(format!("{}.1", self.path.display()));
            std::fs::rename(&self.path, &archive)
                .with_context(|| format!("rotating {}", self.path.display()))?;
            *self = RotatingWriter::open(&self.path)?;
        }
        self.file
            .write_all(line.as_bytes())
            .with_context(|| format!("writing {}", self.path.display()))?;
        self.size += line.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restamp_keeps_the_line_and_shifts_ids() {
        let line = "[2026-02-16 11:49:31:4330] [ChannelCreatorTCP.swift:50] debug: id: 7 com.a Creating\r\n";
        let out = restamp(line, 1000);
        assert!(
            out.ends_with("] [ChannelCreatorTCP.swift:50] debug: id: 1007 com.a Creating\r\n"),
            "{out}"
        );
        assert!(
            crate::proxy_log::parse_line(out.trim_end().as_bytes())
                .time
                .is_some(),
            "{out}"
        );
        assert_eq!(
            sample_seconds(line),
            Some(11.0 * 3600.0 + 49.0 * 60.0 + 31.433)
        );
    }

    #[test]
    fn samples_parse_without_unrecognized_lines() {
        for sample in [HEALTHY, BROKEN] {
            let mut p = crate::log_state::LogState::new(Default::default());
            p.feed(sample.as_bytes());
            assert_eq!((p.read().unrecognized, p.read().lines > 300), (0, true));
        }
    }

    #[test]
    fn writer_rotates_at_the_proxys_threshold() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.log");
        let mut w = RotatingWriter::open(&path).unwrap();
        let line = format!("{}\r\n", "x".repeat(998));
        for _ in 0..600 {
            w.write_line(&line).unwrap();
        }
        let archive = std::fs::metadata(dir.path().join("t.log.1")).unwrap().len();
        assert_eq!(
            (archive, std::fs::metadata(&path).unwrap().len()),
            (512_000, 88_000)
        );
    }
}
