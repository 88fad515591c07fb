//! Configuration: a TOML file with a section per stage, every key overridable by a flag.
//! Each stage owns its section's type (`probe::ProbeConfig`, `fallback::FallbackConfig`, ...).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub log: crate::ingest::LogConfig,
    pub http: crate::http::HttpConfig,
    pub probe: crate::probe::ProbeConfig,
    pub fallback: crate::fallback::FallbackConfig,
    pub processes: crate::presence::ProcessConfig,
    pub health: crate::health::HealthConfig,
}

/// A config that could not be loaded: the message names the key and the fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("--set {arg}: {message}")]
    Override { arg: String, message: String },
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// Loads `path` (if any), applies `overrides` (`section.key=value`, value in TOML syntax or a
    /// bare string), fills defaults and validates.
    pub fn load(
        path: Option<&std::path::Path>,
        overrides: &[String],
    ) -> Result<Config, ConfigError> {
        let (mut table, origin) = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.into(),
                    source,
                })?;
                let table: toml::Table =
                    text.parse()
                        .map_err(|e: toml::de::Error| ConfigError::Parse {
                            path: p.into(),
                            message: e.to_string(),
                        })?;
                (table, p.to_path_buf())
            }
            None => (toml::Table::new(), PathBuf::from("(defaults)")),
        };
        for arg in overrides {
            apply_override(&mut table, arg)?;
        }
        let config =
            Config::deserialize(toml::Value::Table(table)).map_err(|e| ConfigError::Parse {
                path: origin,
                message: e.to_string().trim_end().replace('\n', " "),
            })?;
        config.validate().map_err(ConfigError::Invalid)?;
        Ok(config)
    }

    /// Checks values serde cannot; each message names the key and what to do.
    pub fn validate(&self) -> Result<(), String> {
        self.log.validate()?;
        self.http.validate()?;
        self.processes.validate()?;
        self.probe.validate()?;
        self.fallback.validate()?;
        self.health.validate()
    }

    /// The effective config as TOML, for `check-config`.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

fn apply_override(table: &mut toml::Table, arg: &str) -> Result<(), ConfigError> {
    let err = |message: &str| ConfigError::Override {
        arg: arg.to_owned(),
        message: message.to_owned(),
    };
    let (key, raw) = arg
        .split_once('=')
        .ok_or_else(|| err("expected section.key=value"))?;
    let parts: Vec<&str> = key.trim().split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(err("expected section.key=value"));
    }
    // A value in TOML syntax (numbers, booleans, arrays, quoted strings), else a bare string.
    let value = format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()));
    let (last, sections) = parts.split_last().expect("non-empty");
    let mut node = table;
    for section in sections {
        node = node
            .entry(section.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .ok_or_else(|| err(&format!("{section} is not a section")))?;
    }
    node.insert(last.to_string(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_and_errors_name_the_key() {
        let c = Config::load(
            None,
            &[
                "log.max_apps=128".into(),
                "http.listen=127.0.0.1:9999".into(),
                "log.path=/tmp/x.log".into(),
            ],
        )
        .unwrap();
        assert_eq!((c.log.max_apps, c.http.listen.port()), (128, 9999));
        assert_eq!(c.log.path, PathBuf::from("/tmp/x.log"));
        let e = Config::load(None, &["log.max_apps=0".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("log.max_apps"), "{e}");
        let e = Config::load(None, &["log.max_appz=3".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_appz"), "{e}");
        let e = Config::load(None, &["log.max_apps=lots".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_apps") && e.contains("invalid type"), "{e}");
        let e = Config::load(None, &["nonsense".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("section.key=value"), "{e}");
    }

    #[test]
    fn file_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "[log]\nmax_open_sessions = \"many\"\n").unwrap();
        let e = Config::load(Some(&p), &[]).unwrap_err().to_string();
        assert!(
            e.contains("c.toml") && e.contains("max_open_sessions"),
            "{e}"
        );
        let back = Config::load(None, &[]).unwrap().to_toml();
        std::fs::write(&p, back).unwrap();
        assert_eq!(Config::load(Some(&p), &[]).unwrap(), Config::default());
    }
}
