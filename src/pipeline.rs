//! log → parse → sessions: everything the agent knows from the log, in one value.
//!
//! The pipeline is fed complete lines (from the tailer, or from files for `analyze`) and is
//! serializable as a whole, so the checkpoint stores the file offset together with the state
//! that the lines before it produced: after a crash the agent resumes from both, and no line
//! is counted twice or skipped.

use serde::{Deserialize, Serialize};

use crate::proxy_log::{Event, Level, LocalMillis, parse_line};
use crate::sessions::{Closed, SessionTracker};

/// What the proxy said about itself.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProxyState {
    /// `Proxy started!` lines.
    pub restarts: u64,
    /// Last `isConnected:` value.
    pub connected: Option<bool>,
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
}

/// How much state the pipeline keeps (`log.max_open_sessions`, `log.max_apps`).
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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFile {
    /// The debug-level log (`log.path`).
    Debug,
    /// The error-level log (`log.error_path`), written while debug logging is off.
    Error,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Pipeline {
    sessions: SessionTracker,
    proxy: ProxyState,
    read: ReadStats,
}

impl Pipeline {
    pub fn new(limits: Limits) -> Pipeline {
        Pipeline {
            sessions: SessionTracker::new(limits.max_open_sessions, limits.max_apps),
            proxy: ProxyState::default(),
            read: ReadStats::default(),
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

    /// A new cap on open sessions (after a restore: the config may have changed).
    pub fn set_limits(&mut self, max_open_sessions: usize) {
        self.sessions.set_limits(max_open_sessions);
    }

    /// Keeps closed sessions for [`Pipeline::drain_closed`] (off by default).
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

    /// Whether `file` exists, as of the last read.
    pub fn set_file_present(&mut self, file: LogFile, present: bool) {
        match file {
            LogFile::Debug => self.read.file_present = present,
            LogFile::Error => self.read.error_file_present = present,
        }
    }

    /// Feeds every complete line of `buf` and returns how many bytes that consumed; the rest
    /// (a partial last line) is the caller's to keep.
    pub fn feed(&mut self, buf: &[u8]) -> usize {
        let mut start = 0;
        for end in memchr::memchr_iter(b'\n', buf) {
            self.feed_line(&buf[start..end]);
            start = end + 1;
        }
        self.read.bytes += start as u64;
        start
    }

    /// The last line of a finished file, which has no `\n`.
    pub fn feed_last(&mut self, line: &[u8]) {
        self.read.bytes += line.len() as u64;
        self.feed_line(line);
    }

    /// One line, without its `\n`.
    pub fn feed_line(&mut self, line: &[u8]) {
        self.read.lines += 1;
        let parsed = parse_line(line);
        if let Some(t) = parsed.time
            && self.proxy.last_event.is_none_or(|last| t > last)
        {
            self.proxy.last_event = Some(t);
        }
        if let Some(level) = parsed.level
            && self.proxy.most_verbose.is_none_or(|v| level < v)
        {
            self.proxy.most_verbose = Some(level);
        }
        match &parsed.event {
            Event::Unrecognized => self.read.unrecognized += 1,
            Event::SessionOpened { bind_ip, .. }
                if self.proxy.bind_ip.as_deref().map(str::as_bytes) != Some(bind_ip.bytes()) =>
            {
                self.proxy.bind_ip = Some(bind_ip.lossy().into_owned());
            }
            Event::ProxyStarted => {
                self.proxy.restarts += 1;
                self.proxy.most_verbose = parsed.level;
            }
            Event::BindInterface(name) => {
                self.proxy.bind_interface = Some(name.lossy().into_owned())
            }
            Event::IsConnected(c) => self.proxy.connected = Some(*c),
            Event::LoggerLevel(level) => self.proxy.logger_level = Some(*level),
            _ => {}
        }
        self.sessions.apply(&parsed.event, parsed.time);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feed_keeps_partial_line_and_tracks_proxy_state() {
        let mut p = Pipeline::new(Limits::default());
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
}
