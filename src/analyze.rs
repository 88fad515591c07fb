//! `analyze FILE...`: the offline report (per-app table, verdict, JSON).
//!
//! Files stream through the same [`LogState`] the agent uses, in bounded chunks, so memory
//! stays flat whatever the file size.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::{Value, json};
use strum::IntoEnumIterator;

use crate::ingest::LogConfig;
use crate::log_state::{LogFile, LogState};
use crate::proxy_log::{ErrorKind, Level};
use crate::sessions::verdict::{SessionsState, SessionsVerdict, Tally, Thresholds, judge, percent};
use crate::sessions::{AppCounts, CloseOutcome, Reply, proto_label};
use crate::tail::Lines;
use crate::tail::lines::LineSplitter;

const CHUNK: usize = 1 << 20;

/// The log's story: counts per app and transport, and what they mean.
pub struct Report {
    pub pipeline: LogState,
    /// The sessions verdict's thresholds (`sessions.no_reply_ratio`, `healthy_no_reply_ratio`,
    /// `min_sessions`), given when the report is built.
    thresholds: Thresholds,
}

impl Report {
    /// Reads `paths` in order, except that an archive `X.1` is read before `X` (it is older);
    /// the sessions verdict over them is judged with `thresholds`.
    pub fn from_files(
        paths: &[PathBuf],
        cfg: &LogConfig,
        thresholds: Thresholds,
    ) -> anyhow::Result<Report> {
        let mut pipeline = LogState::new(cfg.limits());
        for path in chronological(paths) {
            let file =
                File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
            read_into(&mut pipeline, file, cfg.max_line_bytes)
                .with_context(|| format!("cannot read {}", path.display()))?;
        }
        // The files are over: no later line can name the app of a session still pending.
        pipeline.flush_pending();
        Ok(Report {
            pipeline,
            thresholds,
        })
    }

    /// The report of a log already in memory (a support bundle's), as [`Report::from_files`].
    pub fn from_text(
        text: &[u8],
        cfg: &LogConfig,
        thresholds: Thresholds,
    ) -> anyhow::Result<Report> {
        let mut pipeline = LogState::new(cfg.limits());
        read_into(&mut pipeline, text, cfg.max_line_bytes).context("cannot read the log")?;
        pipeline.flush_pending();
        Ok(Report {
            pipeline,
            thresholds,
        })
    }

    fn rows(&self) -> impl Iterator<Item = (&str, &'static str, &AppCounts)> {
        let apps = self.pipeline.sessions().apps();
        self.pipeline
            .sessions()
            .counts()
            .iter()
            .map(move |(a, p, c)| (apps.name(a), proto_label(p), c))
    }

    pub fn total_sessions_closed(&self) -> u64 {
        self.rows().map(|(_, _, c)| c.sessions_closed()).sum()
    }

    pub fn zero_byte_closures(&self) -> u64 {
        self.rows()
            .map(|(_, _, c)| c.closed(CloseOutcome::ZeroBytes))
            .sum()
    }

    pub fn errors_by_kind(&self) -> BTreeMap<ErrorKind, u64> {
        let mut out = BTreeMap::new();
        for (_, _, c) in self.rows() {
            for kind in ErrorKind::iter() {
                if c.errors(kind) > 0 {
                    *out.entry(kind).or_default() += c.errors(kind);
                }
            }
        }
        out
    }

    /// Source IPs the proxy bound its sockets to (the last one seen).
    pub fn bind_ips(&self) -> Vec<String> {
        self.pipeline.proxy().bind_ip.iter().cloned().collect()
    }

    /// Sessions that got no reply (see [`Reply`]).
    pub fn no_reply_closures(&self) -> u64 {
        self.rows().map(|(_, _, c)| c.replies(Reply::NoReply)).sum()
    }

    /// The sessions verdict over the whole log, with the agent's thresholds: the one entry
    /// point for anything that judges saved logs (`analyze`, `diagnose`).
    pub fn sessions_verdict(&self) -> SessionsVerdict {
        let mut tally = Tally::default();
        let apps = self.pipeline.sessions().apps();
        for (a, p, c) in self.pipeline.sessions().counts().iter() {
            tally.add(apps.name(a), p, c.reply_ratio());
        }
        judge(self.thresholds, &tally, 0)
    }

    /// The state of [`Report::sessions_verdict`].
    pub fn sessions(&self) -> SessionsState {
        self.sessions_verdict().state
    }

    /// One line: is the bypass working, as far as the log shows?
    pub fn verdict(&self) -> String {
        if self.total_sessions_closed() == 0 {
            return match self.pipeline.proxy().level() {
                Some(Level::Error | Level::Warning) => {
                    "no verdict: the log is at error level (debug logging off), so sessions are not visible".into()
                }
                _ => "no verdict: no session closed in the log".into(),
            };
        }
        let v = self.sessions_verdict();
        let closed = self.total_sessions_closed();
        format!(
            "{}; {}% of {closed} closed with zero bytes both ways",
            v.sentence(),
            percent(self.zero_byte_closures(), closed)
        )
    }

    /// `{app: {proto: {sessions_opened, sessions_closed, zero_byte_closures, rx_bytes, tx_bytes,
    /// errors: {kind: n}, ...}}, "_summary": {...}}`.
    pub fn to_json(&self) -> Value {
        let mut apps = serde_json::Map::new();
        for (app, proto, c) in self.rows() {
            let errors: serde_json::Map<String, Value> = ErrorKind::iter()
                .filter(|k| c.errors(*k) > 0)
                .map(|k| (k.to_string(), json!(c.errors(k))))
                .collect();
            let outcomes: serde_json::Map<String, Value> = CloseOutcome::iter()
                .map(|o| (o.to_string(), json!(c.closed(o))))
                .collect();
            let entry = apps.entry(app.to_owned()).or_insert_with(|| json!({}));
            entry[proto] = json!({
                "sessions_opened": c.opened,
                "sessions_closed": c.sessions_closed(),
                "zero_byte_closures": c.closed(CloseOutcome::ZeroBytes),
                "no_reply_closures": c.replies(Reply::NoReply),
                "rx_bytes": c.rx_bytes,
                "tx_bytes": c.tx_bytes,
                "errors": errors,
                "outcomes": outcomes,
                "open_sessions": c.open,
            });
        }
        let p = &self.pipeline;
        apps.insert(
            "_summary".into(),
            json!({
                "verdict": self.verdict(),
                "sessions": self.sessions_verdict(),
                "sessions_closed": self.total_sessions_closed(),
                "zero_byte_closures": self.zero_byte_closures(),
                "no_reply_closures": self.no_reply_closures(),
                "lines": p.read().lines,
                "unrecognized_lines": p.read().unrecognized,
                "lines_too_long": p.read().lines_too_long,
                "bytes": p.read().bytes,
                "proxy_restarts": p.proxy().restarts,
                "log_level": p.proxy().level().map(<&str>::from),
                "bind_interface": p.proxy().bind_interface,
                "bind_ip": p.proxy().bind_ip,
                "is_connected": p.proxy().connected,
                "evictions": p.sessions().evictions(),
            }),
        );
        Value::Object(apps)
    }

    /// The log-side metrics of the agent after reading the same lines.
    pub fn to_prometheus(&self) -> String {
        let mut families = crate::log_state::metrics::render(&self.pipeline);
        families.sort_by(|a, b| a.name().cmp(b.name()));
        let mut buf = Vec::new();
        prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &families, &mut buf)
            .expect("valid families");
        String::from_utf8(buf).expect("text format is UTF-8")
    }

    /// The per-app table and the verdict, for a terminal.
    pub fn to_table(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<34} {:<5} {:>8} {:>8} {:>8} {:>6} {:>12} {:>12}  errors",
            "app", "proto", "sessions", "zero-B", "no-reply", "ratio", "rx bytes", "tx bytes"
        );
        for (app, proto, c) in self.rows() {
            let closed = c.sessions_closed();
            let ratio = if closed == 0 {
                "-".to_owned()
            } else {
                format!("{}%", percent(c.replies(Reply::NoReply), closed))
            };
            let errors: Vec<String> = ErrorKind::iter()
                .filter(|k| c.errors(*k) > 0)
                .map(|k| format!("{k}={}", c.errors(k)))
                .collect();
            let _ = writeln!(
                out,
                "{:<34} {:<5} {:>8} {:>8} {:>8} {:>6} {:>12} {:>12}  {}",
                app,
                proto,
                closed,
                c.closed(CloseOutcome::ZeroBytes),
                c.replies(Reply::NoReply),
                ratio,
                c.rx_bytes,
                c.tx_bytes,
                errors.join(" ")
            );
        }
        let r = &self.pipeline.read();
        let _ = writeln!(
            out,
            "\n{} lines read, {} unrecognized",
            r.lines, r.unrecognized
        );
        let _ = writeln!(out, "verdict: {}", self.verdict());
        out
    }
}

/// `X.1` before `X`: the archive holds the older lines.
fn chronological(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = paths.to_vec();
    let is_archive_of =
        |a: &Path, b: &Path| a.as_os_str().to_string_lossy() == format!("{}.1", b.display());
    let mut i = 0;
    while i < out.len() {
        if let Some(j) = (0..i).find(|&j| is_archive_of(&out[i], &out[j])) {
            let archive = out.remove(i);
            out.insert(j, archive);
        }
        i += 1;
    }
    out
}

/// Streams `reader` into the log state in bounded chunks, split into lines as the agent's
/// tailer splits them: a line longer than `max_line` is skipped up to its newline and counted;
/// a last line without a newline is fed as it is (the file is finished).
pub fn read_into(
    pipeline: &mut LogState,
    mut reader: impl Read,
    max_line: usize,
) -> std::io::Result<()> {
    let mut chunk = vec![0u8; CHUNK];
    let mut lines = Lines::with_capacity(CHUNK);
    let mut splitter = LineSplitter::new(max_line);
    loop {
        let n = reader.read(&mut chunk)?;
        if n == 0 {
            let mut last = Vec::new();
            if splitter.finish(&mut last) > 0 {
                // `finish` ends the line with a `\n` the file does not have.
                last.pop();
                pipeline.feed_last(&last);
            }
            return Ok(());
        }
        let fed = splitter.feed(&chunk[..n], &mut lines);
        pipeline.feed_lines(LogFile::Debug, &lines);
        pipeline.count_file_events(0, 0, fed.too_long);
        lines.clear();
    }
}

/// Peak resident set size of this process, in bytes.
pub fn peak_rss_bytes() -> u64 {
    // On Linux, getrusage's maxrss survives execve: a process started by a big parent reports
    // the parent's peak. VmHWM belongs to this process's own memory map.
    if let Some(kib) = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
    {
        return kib * 1024;
    }
    // SAFETY: getrusage only writes into the struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let max = usage.ru_maxrss as u64;
    // Linux reports KiB, macOS bytes.
    if cfg!(target_os = "macos") {
        max
    } else {
        max * 1024
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archives_come_first() {
        let p = |s: &str| PathBuf::from(s);
        assert_eq!(
            chronological(&[p("a.log"), p("b"), p("a.log.1")]),
            vec![p("a.log.1"), p("a.log"), p("b")]
        );
    }

    #[test]
    fn long_lines_are_skipped_and_the_stream_resyncs() {
        let mut p = LogState::new(crate::log_state::Limits::default());
        let mut data = vec![b'x'; 3 * CHUNK];
        data.extend_from_slice(b"\n[t] [x.swift:1] info: Proxy started!\ntail-without-newline");
        read_into(&mut p, &data[..], 1000).unwrap();
        assert_eq!(
            (
                p.read().lines_too_long,
                p.read().lines,
                p.proxy().restarts,
                p.read().unrecognized
            ),
            (1, 2, 1, 1)
        );
    }
}
