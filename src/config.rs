//! Configuration: a TOML file with a section per stage, every key overridable by a flag.
//! Each stage owns its section's type (`probe::ProbeConfig`, `fallback::FallbackConfig`, ...).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub log: LogConfig,
    pub http: HttpConfig,
    pub probe: crate::probe::ProbeConfig,
    pub fallback: crate::fallback::FallbackConfig,
}

/// `[log]`: where the proxy writes and how much state the agent keeps.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub path: PathBuf,
    pub checkpoint: PathBuf,
    pub max_open_sessions: usize,
    pub max_apps: usize,
    pub max_line_bytes: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            path: PathBuf::from(
                "/Library/Application Support/com.privateinternetaccess.vpn/transparent_proxy.log",
            ),
            checkpoint: PathBuf::from("/var/db/pia-split-tunnel-exporter/checkpoint.json"),
            max_open_sessions: 65_536,
            max_apps: 64,
            max_line_bytes: 1 << 20,
        }
    }
}

/// `[http]`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    pub listen: std::net::SocketAddr,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: ([127, 0, 0, 1], 9847).into(),
        }
    }
}
