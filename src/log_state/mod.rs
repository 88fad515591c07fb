//! log → parse → sessions: everything the agent knows from the log, in one value.
//!
//! The log state is fed complete lines (from the tailer, or from files for `analyze`) and is
//! serializable as a whole, so the checkpoint stores the file offset together with the state
//! that the lines before it produced: after a crash the agent resumes from both, and no line
//! is counted twice or skipped.
//!
//! Every line is untrusted (the error log sits in `/tmp`): a string from it becomes a label
//! only within the bounds of [`crate::sessions::apps`] and [`valid_interface`], a time later
//! than now (plus [`FUTURE_SKEW_MS`]) is not believed, and what is refused is counted.

use serde::{Deserialize, Serialize};

pub mod metrics;
pub use metrics::LogCollector;

use crate::proxy_log::{Event, Level, LocalMillis, parse_line};
use crate::sessions::{Closed, SessionTracker};
use crate::tail::Lines;

/// What the proxy said about itself.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProxyState {
    /// Proxy start lines (`Proxy started!`, and the newer branch's `Transparent Proxy
    /// started!` and `DNS Proxy started!`).
    pub restarts: u64,
    /// Proxy stop lines, of either provider.
    #[serde(default)]
    pub stops: u64,
    /// Last `isConnected:` value.
    pub connected: Option<bool>,
    /// Last `dnsFollowAppRules:` value (newer proxy branch).
    #[serde(default)]
    pub dns_follow_app_rules: Option<bool>,
    /// Last `bindInterface:` value.
    pub bind_interface: Option<String>,
    /// Last `bindIp:` of a creation line.
    pub bind_ip: Option<String>,
    /// Level named by `Logger initialized ... with log level: X`.
    pub logger_level: Option<Level>,
    /// Most verbose level seen since the last proxy start.
    pub most_verbose: Option<Level>,
    /// Newest line time (local wall clock).
    pub last_event: Option<LocalMillis>,
}

impl ProxyState {
    /// The level the proxy logs at, as far as the log shows it.
    pub fn level(&self) -> Option<Level> {
        self.logger_level.or(self.most_verbose)
    }
}

/// Counters about reading, for the agent's own health.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReadStats {
    pub lines: u64,
    pub unrecognized: u64,
    pub bytes: u64,
    pub rotations: u64,
    pub truncations: u64,
    pub lines_too_long: u64,
    /// The log file exists (as of the last read; whether it can be read, health says).
    #[serde(default)]
    pub file_present: bool,
    /// The error-level log (`log.error_path`) exists: PIA's debug logging is off.
    #[serde(default)]
    pub error_file_present: bool,
    /// Files refused at a log's name (a FIFO, a link, a foreign owner: see `os::trusted`).
    #[serde(default)]
    pub files_refused: u64,
    /// `bindInterface:` values that are not an interface name (kept out of the label).
    #[serde(default)]
    pub invalid_interfaces: u64,
    /// Stretches of a log the agent could not read: the file being read was rotated away
    /// twice while the agent was stopped.
    #[serde(default)]
    pub gaps: u64,
    /// Lines dated after now (beyond [`FUTURE_SKEW_MS`]): not taken as the newest line's time.
    #[serde(default)]
    pub future_timestamps: u64,
}

/// How far ahead of this machine's clock a line's time may be and still be believed.
pub const FUTURE_SKEW_MS: i64 = 5 * 60 * 1000;

/// An interface name as the OS makes them (`en0`, `utun4`, `bridge100`): short, plain.
pub fn valid_interface(b: &[u8]) -> bool {
    // IFNAMSIZ is 16 with the terminating NUL on Linux and macOS.
    (1..=15).contains(&b.len())
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'_'))
}

/// Now on the local wall clock, in the proxy's timestamp form, plus the allowed skew.
fn latest_believable() -> LocalMillis {
    LocalMillis(
        chrono::Local::now()
            .naive_local()
            .and_utc()
            .timestamp_millis()
            + FUTURE_SKEW_MS,
    )
}

/// How much the log state keeps (`log.max_open_sessions`, `log.max_apps`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_open_sessions: usize,
    pub max_apps: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_open_sessions: 65_536,
            max_apps: 64,
        }
    }
}

/// Which of the proxy's two logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFile {
    /// The debug-level log (`log.path`).
    #[default]
    Debug,
    /// The error-level log (`log.error_path`), written while debug logging is off.
    Error,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LogState {
    sessions: SessionTracker,
    proxy: ProxyState,
    read: ReadStats,
    /// [`latest_believable`], refreshed once per batch fed (not per line).
    #[serde(skip)]
    time_limit: Option<LocalMillis>,
}

impl LogState {
    pub fn new(limits: Limits) -> LogState {
        LogState {
            sessions: SessionTracker::new(limits.max_open_sessions, limits.max_apps),
            proxy: ProxyState::default(),
            read: ReadStats::default(),
            time_limit: None,
        }
    }

    pub fn sessions(&self) -> &SessionTracker {
        &self.sessions
    }

    pub fn proxy(&self) -> &ProxyState {
        &self.proxy
    }

    pub fn read(&self) -> &ReadStats {
        &self.read
    }

    /// Whether restored state holds together (a checkpoint is a file: it may have been
    /// edited, or written by another version); `Err` says what does not fit.
    pub fn check(&self) -> Result<(), String> {
        self.sessions.check()
    }

    /// The config's caps, on every start (a restored checkpoint may come from another
    /// config, or have been filled by junk while a smaller cap was set).
    pub fn set_limits(&mut self, limits: Limits) {
        self.sessions
            .set_limits(limits.max_open_sessions, limits.max_apps);
    }

    /// Counts the errors of sessions still waiting for a line naming their app (under
    /// `unknown`): the end of a finished set of files.
    pub fn flush_pending(&mut self) {
        self.sessions.flush_pending();
        self.sessions.swap_logs();
        self.sessions.flush_pending();
        self.sessions.swap_logs();
    }

    /// A restored log state under the checks live lines pass (a checkpoint may come from a
    /// version that checked less): app ids refolded into `other` (invalid ones, and those past
    /// the cap set by [`LogState::set_limits`]), times after now (plus [`FUTURE_SKEW_MS`])
    /// forgotten. What is refused is counted as a live line's would be.
    /// Returns how many values were refused.
    pub fn recheck(&mut self) -> u64 {
        let refused = |p: &Self| {
            let apps = p.sessions.apps();
            apps.invalid() + apps.folded() + p.read.future_timestamps + p.read.invalid_interfaces
        };
        let before = refused(self);
        let limit = latest_believable();
        let mut future = self.sessions.recheck(limit);
        if self.proxy.last_event.is_some_and(|t| t > limit) {
            self.proxy.last_event = None;
            future += 1;
        }
        self.read.future_timestamps += future;
        if self
            .proxy
            .bind_interface
            .as_deref()
            .is_some_and(|i| !valid_interface(i.as_bytes()))
        {
            self.proxy.bind_interface = None;
            self.read.invalid_interfaces += 1;
        }
        if self
            .proxy
            .bind_ip
            .as_deref()
            .is_some_and(|ip| ip.parse::<std::net::IpAddr>().is_err())
        {
            self.proxy.bind_ip = None;
        }
        refused(self) - before
    }

    /// Keeps closed sessions for [`LogState::drain_closed`] (off by default).
    pub fn record_closed(&mut self, on: bool) {
        self.sessions.record_closed(on);
    }

    /// Sessions closed since the last call, when recording.
    pub fn drain_closed(&mut self) -> Vec<Closed> {
        self.sessions.drain_closed()
    }

    /// What the reader met besides lines: rotations, truncations, lines skipped as too long.
    pub fn count_file_events(&mut self, rotations: u64, truncations: u64, lines_too_long: u64) {
        self.read.rotations += rotations;
        self.read.truncations += truncations;
        self.read.lines_too_long += lines_too_long;
    }

    /// A stretch of a log that could not be read (see [`ReadStats::gaps`]).
    pub fn count_gap(&mut self) {
        self.read.gaps += 1;
    }

    /// Files refused at a log's name (see `os::trusted`).
    pub fn count_refused(&mut self, files: u64) {
        self.read.files_refused += files;
    }

    /// Whether `file` exists, as of the last read.
    pub fn set_file_present(&mut self, file: LogFile, present: bool) {
        match file {
            LogFile::Debug => self.read.file_present = present,
            LogFile::Error => self.read.error_file_present = present,
        }
    }

    /// Feeds every complete line of `buf`, as lines of the debug log, and returns how many
    /// bytes that consumed; the rest (a partial last line) is the caller's to keep.
    pub fn feed(&mut self, buf: &[u8]) -> usize {
        self.feed_file(LogFile::Debug, buf)
    }

    /// Feeds `buf` as [`feed`](Self::feed) does, as lines of `file`: the error log's sessions
    /// are kept apart from the debug log's (see [`crate::sessions`]).
    pub fn feed_file(&mut self, file: LogFile, buf: &[u8]) -> usize {
        self.time_limit = Some(latest_believable());
        let mut start = 0;
        for end in memchr::memchr_iter(b'\n', buf) {
            self.line(file, &buf[start..end]);
            start = end + 1;
        }
        self.read.bytes += start as u64;
        start
    }

    /// Feeds a batch of lines of `file` as the tailer split them (they are not searched for
    /// newlines again).
    pub fn feed_lines(&mut self, file: LogFile, lines: &Lines) {
        self.time_limit = Some(latest_believable());
        for line in lines.iter() {
            self.line(file, line);
        }
        self.read.bytes += lines.as_bytes().len() as u64;
    }

    /// The last line of a finished file, which has no `\n`.
    pub fn feed_last(&mut self, line: &[u8]) {
        self.read.bytes += line.len() as u64;
        self.feed_line(line);
    }

    /// One line of the debug log, without its `\n`.
    pub fn feed_line(&mut self, line: &[u8]) {
        self.line(LogFile::Debug, line);
    }

    /// One line of `stream`, without its `\n`.
    fn line(&mut self, stream: LogFile, line: &[u8]) {
        self.read.lines += 1;
        let parsed = parse_line(line);
        if let Some(t) = parsed.time {
            let limit = *self.time_limit.get_or_insert_with(latest_believable);
            if t > limit {
                // A 2099 line would pin the newest-line time and silence the stale-log alert.
                self.read.future_timestamps += 1;
            } else if self.proxy.last_event.is_none_or(|last| t > last) {
                self.proxy.last_event = Some(t);
            }
        }
        if let Some(level) = parsed.level
            && self.proxy.most_verbose.is_none_or(|v| level < v)
        {
            self.proxy.most_verbose = Some(level);
        }
        match &parsed.event {
            Event::Unrecognized => self.read.unrecognized += 1,
            // Kept only when it is an address (it is shown by `analyze` and `diagnose`).
            // The proxy's binding steers discovery: believed from the root-owned debug log
            // only, never from the error log in a folder others can write.
            Event::SessionOpened { bind_ip, .. }
                if stream == LogFile::Debug
                    && self.proxy.bind_ip.as_deref().map(str::as_bytes)
                        != Some(bind_ip.bytes())
                    && bind_ip
                        .as_str()
                        .is_some_and(|s| s.parse::<std::net::IpAddr>().is_ok()) =>
            {
                self.proxy.bind_ip = Some(bind_ip.lossy().into_owned());
            }
            Event::ProxyStarted | Event::DnsProxyStarted => {
                self.proxy.restarts += 1;
                self.proxy.most_verbose = parsed.level;
            }
            Event::ProxyStopped | Event::DnsProxyStopped => self.proxy.stops += 1,
            Event::DnsFollowAppRules(on) => self.proxy.dns_follow_app_rules = Some(*on),
            Event::BindInterface(name)
                if stream == LogFile::Debug && valid_interface(name.bytes()) =>
            {
                self.proxy.bind_interface = Some(name.lossy().into_owned())
            }
            // Malformed, or from the error log: refused, counted.
            Event::BindInterface(_) => self.read.invalid_interfaces += 1,
            Event::IsConnected(c) => self.proxy.connected = Some(*c),
            Event::LoggerLevel(level) => self.proxy.logger_level = Some(*level),
            _ => {}
        }
        match (stream, &parsed.event) {
            // PIA's own list, from the root-owned debug log only: never from /tmp.
            (LogFile::Debug, Event::BypassApps(list)) => self.sessions.reserve_apps(*list),
            (LogFile::Debug, e) => self.sessions.apply(e, parsed.time),
            (LogFile::Error, e) => self.sessions.apply_error(e, parsed.time),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feed_keeps_partial_line_and_tracks_proxy_state() {
        let mut p = LogState::new(Limits::default());
        let text = b"[2026-02-16 11:49:31:2040] [VpnState.swift:37] info: bindInterface: en0\r\n\
[2026-02-16 11:49:31:2040] [VpnState.swift:58] info: isConnected: true\r\n\
[2026-02-16 11:49:31:2040] [SplitTunnelProxyProvider.swift:60] info: Proxy started!\r\n\
garbage\r\n[2026-02-16 11:49:31:4330] [ChannelCreatorTCP.swift:50] debug: id: 1 com.a Creating";
        let used = p.feed(text);
        assert_eq!(
            &text[used..],
            b"[2026-02-16 11:49:31:4330] [ChannelCreatorTCP.swift:50] debug: id: 1 com.a Creating"
        );
        assert_eq!(
            (p.read.lines, p.read.unrecognized, p.read.bytes),
            (4, 1, used as u64)
        );
        assert_eq!(p.proxy.bind_interface.as_deref(), Some("en0"));
        assert_eq!(
            (p.proxy.connected, p.proxy.restarts, p.proxy.level()),
            (Some(true), 1, Some(Level::Info))
        );
    }

    /// A local user can write the error log (`/tmp/STProxy.log`): its lines never name the
    /// interface or address discovery takes from the proxy.
    #[test]
    fn the_error_log_never_names_the_proxys_binding() {
        let mut p = LogState::new(Limits::default());
        p.feed(b"[2026-02-16 11:49:31:2040] [VpnState.swift:37] info: bindInterface: en0\r\n\
[2026-02-16 11:49:31:4330] [ChannelCreatorTCP.swift:50] debug: id: 1 com.a Creating, binding and connecting a new TCP socket - endpoint: 192.0.2.7:443 with bindIp: 10.0.15.15\r\n");
        let forged = b"[2026-02-16 11:49:32:2040] [VpnState.swift:37] info: bindInterface: en1\r\n\
[2026-02-16 11:49:32:4330] [ChannelCreatorTCP.swift:50] debug: id: 2 com.a Creating, binding and connecting a new TCP socket - endpoint: 192.0.2.7:443 with bindIp: 10.0.15.99\r\n";
        p.feed_file(LogFile::Error, forged);
        assert_eq!(
            (
                p.proxy.bind_interface.as_deref(),
                p.proxy.bind_ip.as_deref()
            ),
            (Some("en0"), Some("10.0.15.15"))
        );
        assert_eq!(
            p.read.invalid_interfaces, 1,
            "the forged interface is counted"
        );
    }

    /// Lines as the tail splits them, fed without a second search for newlines, leave the
    /// state the same bytes fed raw leave, on either stream.
    #[test]
    fn lines_split_by_the_tail_count_as_the_raw_bytes() {
        let log = include_bytes!("../../tests/fixtures/mixed.log");
        for stream in [LogFile::Debug, LogFile::Error] {
            let mut raw = LogState::new(Limits::default());
            raw.feed_file(stream, log);
            let mut split = LogState::new(Limits::default());
            let mut splitter = crate::tail::lines::LineSplitter::new(1 << 20);
            let mut lines = Lines::default();
            for chunk in log.chunks(4096) {
                splitter.feed(chunk, &mut lines);
                split.feed_lines(stream, &lines);
                lines.clear();
            }
            assert!(split.read.lines > 100, "{:?}", split.read);
            assert_eq!(
                serde_json::to_value(&split).unwrap(),
                serde_json::to_value(&raw).unwrap(),
                "{stream:?}"
            );
        }
    }

    #[test]
    fn forged_values_are_counted_not_believed() {
        let mut p = LogState::new(Limits::default());
        let long = "e".repeat(16);
        let text = format!(
            "[2026-02-16 11:49:31:2040] [VpnState.swift:37] info: bindInterface: en0\r\n\
[2026-02-16 11:49:32:2040] [VpnState.swift:37] info: bindInterface: {long}\r\n\
[2026-02-16 11:49:33:2040] [VpnState.swift:37] info: bindInterface: en\"0\r\n\
[2099-01-01 00:00:00:0000] [VpnState.swift:58] info: isConnected: true\r\n"
        );
        p.feed(text.as_bytes());
        assert_eq!(p.proxy.bind_interface.as_deref(), Some("en0"));
        assert_eq!(
            (p.read.invalid_interfaces, p.read.future_timestamps),
            (2, 1)
        );
        // The newest believable line's time, not 2099's.
        let t = chrono::NaiveDate::from_ymd_opt(2026, 2, 16)
            .unwrap()
            .and_hms_milli_opt(11, 49, 33, 204)
            .unwrap()
            .and_utc()
            .timestamp_millis();
        assert_eq!(p.proxy.last_event, Some(LocalMillis(t)));
    }
}
