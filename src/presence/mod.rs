//! Who is there to write the log: PIA's processes, and the agent itself.
//!
//! A quiet log means nothing if the split-tunnel extension is not running (macOS can drop its
//! approval after a reboot) or the daemon is down. This module reports their presence, by role,
//! and the agent's own resource use as the standard `process_*` metrics on macOS and Linux
//! alike (the prometheus crate's process collector covers Linux only).

pub mod metrics;
pub mod process;

use std::sync::{Arc, Mutex};

use macro_rules_attribute::apply;
use serde::{Deserialize, Serialize};
use strum::IntoEnumIterator;

use crate::labels::label_set;
pub use metrics::PresenceCollector;
pub use process::{ProcInfo, ProcessSource, SelfCollector, SysinfoSource};

/// What each PIA process is, for the `process` label.
#[apply(label_set!)]
#[derive(PartialOrd, Ord)]
pub enum ProcessRole {
    /// The split-tunnel network extension (the transparent proxy).
    Extension,
    /// `pia-daemon`.
    Daemon,
    /// The VPN's own process (OpenVPN or WireGuard).
    Vpn,
}

/// `[processes]`: how to recognize PIA's processes.
///
/// A process name is whatever its starter chose (a `sleep` renamed `pia-daemon` and run by
/// `nobody` would do), so it is never matched. A process plays a role when it runs as root
/// and its executable path matches a pattern: a pattern without `/` is the executable's file
/// name (`pia-daemon`), one with `/` the whole path (`/Applications/Private Internet
/// Access.app/Contents/MacOS/pia-daemon`) or, ending in `/`, the folder it is in.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ProcessConfig {
    pub extension: Vec<String>,
    pub daemon: Vec<String>,
    pub vpn: Vec<String>,
}

impl Default for ProcessConfig {
    fn default() -> Self {
        ProcessConfig {
            extension: vec!["com.privateinternetaccess.vpn.splittunnel".into()],
            daemon: vec!["pia-daemon".into()],
            vpn: vec![
                "pia-openvpn".into(),
                "openvpn".into(),
                "pia-wireguard-go".into(),
            ],
        }
    }
}

impl ProcessConfig {
    pub fn validate(&self) -> Result<(), String> {
        for (key, patterns) in [
            ("extension", &self.extension),
            ("daemon", &self.daemon),
            ("vpn", &self.vpn),
        ] {
            if patterns.iter().any(|p| p.trim().is_empty()) {
                return Err(format!(
                    "processes.{key} has an empty pattern; remove it or name the process"
                ));
            }
        }
        Ok(())
    }

    fn patterns(&self, role: ProcessRole) -> &[String] {
        match role {
            ProcessRole::Extension => &self.extension,
            ProcessRole::Daemon => &self.daemon,
            ProcessRole::Vpn => &self.vpn,
        }
    }

    /// Roles `p` plays: none unless it runs as root with a known executable path.
    pub fn roles_of(&self, p: &ProcInfo) -> impl Iterator<Item = ProcessRole> + '_ {
        let exe = p.exe.clone().filter(|_| p.uid == Some(0));
        ProcessRole::iter().filter(move |r| {
            exe.as_deref()
                .is_some_and(|e| self.patterns(*r).iter().any(|pat| exe_matches(e, pat)))
        })
    }
}

/// `pattern` names the executable `exe` (see [`ProcessConfig`]).
fn exe_matches(exe: &str, pattern: &str) -> bool {
    if pattern.ends_with('/') {
        exe.starts_with(pattern) && !exe[pattern.len()..].contains('/')
    } else if pattern.contains('/') {
        exe == pattern
    } else {
        exe.rsplit('/').next() == Some(pattern)
    }
}

/// How many processes of each role run now.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Presence {
    pub extension: u32,
    pub daemon: u32,
    pub vpn: u32,
    /// False until the first look at the process table.
    pub checked: bool,
}

impl Presence {
    pub fn count(&self, role: ProcessRole) -> u32 {
        match role {
            ProcessRole::Extension => self.extension,
            ProcessRole::Daemon => self.daemon,
            ProcessRole::Vpn => self.vpn,
        }
    }
}

/// Looks at the process table on demand and keeps the last answer for `/metrics` and health.
pub struct PresenceTracker<S: ProcessSource> {
    source: S,
    config: ProcessConfig,
    last: Arc<Mutex<Presence>>,
}

impl<S: ProcessSource> PresenceTracker<S> {
    pub fn new(source: S, config: ProcessConfig) -> Self {
        PresenceTracker {
            source,
            config,
            last: Arc::default(),
        }
    }

    /// Refreshes the process table (names and executable paths only) and counts roles.
    pub fn refresh(&mut self) -> Presence {
        let mut presence = Presence {
            checked: true,
            ..Presence::default()
        };
        for p in self.source.processes() {
            for role in self.config.roles_of(&p) {
                match role {
                    ProcessRole::Extension => presence.extension += 1,
                    ProcessRole::Daemon => presence.daemon += 1,
                    ProcessRole::Vpn => presence.vpn += 1,
                }
            }
        }
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = presence.clone();
        presence
    }

    /// The last presence, shared with collectors and health.
    pub fn shared(&self) -> Arc<Mutex<Presence>> {
        self.last.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const APP: &str = "/Applications/Private Internet Access.app/Contents/MacOS/";

    #[test]
    fn patterns_name_a_file_a_path_or_a_folder() {
        let exe = format!("{APP}pia-daemon");
        assert!(exe_matches(&exe, "pia-daemon"));
        assert!(exe_matches(&exe, &exe));
        assert!(exe_matches(&exe, APP));
        assert!(!exe_matches(&exe, "daemon"));
        assert!(!exe_matches(&exe, "/Applications/"));
        assert!(!exe_matches(
            &exe,
            "/Applications/Private Internet Access.app"
        ));
    }

    #[test]
    fn empty_pattern_is_a_config_error() {
        let c = ProcessConfig {
            daemon: vec![" ".into()],
            ..ProcessConfig::default()
        };
        assert!(c.validate().unwrap_err().contains("processes.daemon"));
    }
}
