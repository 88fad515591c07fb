//! Configuration: a TOML file with a section per stage, every key overridable by a flag.
//! Each stage owns its section's type (`probe::ProbeConfig`, `fallback::FallbackConfig`, ...).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub log: crate::ingest::LogConfig,
    pub sessions: crate::sessions::SessionsConfig,
    pub http: crate::server::HttpConfig,
    pub probe: crate::probe::ProbeConfig,
    pub fallback: crate::fallback::FallbackConfig,
    pub processes: crate::presence::ProcessConfig,
    pub health: crate::health::HealthConfig,
    pub agent_log: crate::logging::AgentLogConfig,
}

/// A config that could not be loaded: the message names the key and the fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    // The cause is in the message, not a `source`: `{:#}` would print it twice.
    #[error("cannot read config file {path}: {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
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
        let (config, warnings) = Config::load_quietly(path, overrides)?;
        for warning in warnings {
            tracing::warn!("{warning}");
        }
        Ok(config)
    }

    /// [`Config::load`], returning its warnings (keys read under their former names) instead
    /// of logging them: the log's own settings come from the config.
    pub fn load_quietly(
        path: Option<&std::path::Path>,
        overrides: &[String],
    ) -> Result<(Config, Vec<String>), ConfigError> {
        let file = match path {
            Some(p) => read_table(p)?,
            None => toml::Table::new(),
        };
        let mut table = file.clone();
        for arg in overrides {
            apply_override(&mut table, arg)?;
        }
        let (config, warnings) = match from_table(table) {
            Ok(parsed) => parsed,
            Err(e) => return Err(blame(path, file, overrides, e)),
        };
        config.validate().map_err(ConfigError::Invalid)?;
        if let Some(writers) = crate::os::trusted::Writers::of_root_process() {
            config
                .check_writers(path, writers)
                .map_err(ConfigError::Invalid)?;
        }
        Ok((config, warnings))
    }

    /// As root: the config file, the web config and its TLS files, and every tool the agent
    /// runs can be changed only by root or `writers` (the token file is checked where it is
    /// read, [`crate::fallback`]'s `token_file_is_private`). The message names the key, the
    /// path and the fix.
    pub fn check_writers(
        &self,
        file: Option<&std::path::Path>,
        writers: crate::os::trusted::Writers,
    ) -> Result<(), String> {
        let mut named: Vec<(String, PathBuf)> = Vec::new();
        if let Some(f) = file {
            named.push(("config file".into(), f.into()));
        }
        let web = &self.http.web_config_file;
        if !web.as_os_str().is_empty() {
            named.push(("http.web_config_file".into(), web.clone()));
            named.extend(crate::server::WebConfig::named_files(web)?);
        }
        let tools = self.fallback.tools();
        named.extend([
            ("fallback.pfctl_path".into(), tools.pfctl),
            ("fallback.ip_path".into(), tools.ip),
            ("the system tool".into(), tools.route),
            ("the system tool".into(), tools.netstat),
            ("the system tool".into(), tools.sysctl),
        ]);
        for (key, path) in named {
            crate::os::trusted::check_writers(&path, writers).map_err(|e| {
                format!(
                    "{key} {}: the agent runs as root and trusts only what root (or the owner \
                     of its executable) can change: {e}",
                    path.display()
                )
            })?;
        }
        Ok(())
    }

    /// Checks values serde cannot; each message names the key and what to do.
    pub fn validate(&self) -> Result<(), String> {
        self.log.validate()?;
        self.sessions.validate()?;
        self.http.validate()?;
        self.processes.validate()?;
        self.probe.validate()?;
        self.fallback.validate()?;
        self.health.validate()
    }

    /// The effective config as TOML, for `check-config`; a key without a value (TOML has no
    /// null) is shown as a comment at the end of its section, `# token_file: unset`, so every
    /// key is seen.
    pub fn to_toml(&self) -> String {
        let text =
            toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"));
        let unset = self.unset_keys();
        let blocks: Vec<String> = text
            .trim_end()
            .split("\n\n")
            .map(|block| {
                let section = block
                    .lines()
                    .next()
                    .and_then(|l| l.strip_prefix('[')?.strip_suffix(']'));
                let mut block = block.to_owned();
                for (_, key) in unset.iter().filter(|(s, _)| Some(s.as_str()) == section) {
                    block.push_str(&format!("\n# {key}: unset"));
                }
                block
            })
            .collect();
        blocks.join("\n\n") + "\n"
    }

    /// (section, key) of every key that has no value.
    fn unset_keys(&self) -> Vec<(String, String)> {
        let Ok(serde_json::Value::Object(sections)) = serde_json::to_value(self) else {
            return Vec::new();
        };
        let mut unset = Vec::new();
        for (section, keys) in sections {
            if let serde_json::Value::Object(keys) = keys {
                unset.extend(
                    keys.into_iter()
                        .filter(|(_, v)| v.is_null())
                        .map(|(k, _)| (section.clone(), k)),
                );
            }
        }
        unset
    }
}

fn read_table(path: &std::path::Path) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Read {
        path: path.into(),
        cause,
    })?;
    text.parse()
        .map_err(|e: toml::de::Error| ConfigError::Parse {
            path: path.into(),
            message: e.to_string(),
        })
}

/// The config a table spells, and the warnings of keys read under their former names.
fn from_table(mut table: toml::Table) -> Result<(Config, Vec<String>), ConfigError> {
    let warnings = move_sessions_keys(&mut table)?;
    let config = Config::deserialize(toml::Value::Table(table))
        .map_err(|e| ConfigError::Invalid(e.to_string().trim_end().replace('\n', " ")))?;
    Ok((config, warnings))
}

/// Who a config that does not parse is the fault of: the file, when it fails alone, else the
/// first `--set` after which it fails (an unknown key or a wrong type in a flag names the
/// flag, not the file).
fn blame(
    path: Option<&std::path::Path>,
    file: toml::Table,
    overrides: &[String],
    error: ConfigError,
) -> ConfigError {
    let message = |e: ConfigError| match e {
        ConfigError::Invalid(m) => m,
        other => other.to_string(),
    };
    if let Err(e) = from_table(file.clone()) {
        return match path {
            Some(p) => ConfigError::Parse {
                path: p.into(),
                message: message(e),
            },
            None => e,
        };
    }
    let mut table = file;
    for arg in overrides {
        if apply_override(&mut table, arg).is_ok()
            && let Err(e) = from_table(table.clone())
        {
            return ConfigError::Override {
                arg: arg.clone(),
                message: message(e),
            };
        }
    }
    error
}

/// The sessions verdict's keys, once in `[fallback]`, are `[sessions]`'s: a `[fallback]` key
/// (or `--set fallback.key=...`) is still read there, and each one read says its new name.
/// The same key in both sections is an error: which one is meant cannot be guessed.
fn move_sessions_keys(table: &mut toml::Table) -> Result<Vec<String>, ConfigError> {
    use crate::sessions::config::{KEYS, OLD_NO_REPLY_RATIO};
    let Some(toml::Value::Table(fallback)) = table.get_mut("fallback") else {
        return Ok(Vec::new());
    };
    let mut moved = Vec::new();
    for old in KEYS.iter().copied().chain([OLD_NO_REPLY_RATIO]) {
        if let Some(value) = fallback.remove(old) {
            let new = if old == OLD_NO_REPLY_RATIO {
                KEYS[0]
            } else {
                old
            };
            moved.push((old, new, value));
        }
    }
    let mut warnings = Vec::new();
    for (old, new, value) in moved {
        let sessions = table
            .entry("sessions")
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let toml::Value::Table(sessions) = sessions else {
            return Err(ConfigError::Invalid("sessions: expected a table".into()));
        };
        let taken = sessions.contains_key(new)
            || (new == KEYS[0] && sessions.contains_key(OLD_NO_REPLY_RATIO));
        if taken {
            return Err(ConfigError::Invalid(format!(
                "fallback.{old} and sessions.{new} are both set: keep sessions.{new} only"
            )));
        }
        sessions.insert(new.to_owned(), value);
        warnings.push(format!(
            "fallback.{old} is read as sessions.{new}: move it to [sessions]"
        ));
    }
    Ok(warnings)
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
        assert!(
            e.starts_with("--set log.max_appz=3: unknown field `max_appz`"),
            "the flag, not a file: {e}"
        );
        let e = Config::load(None, &["log.max_apps=lots".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_apps") && e.contains("invalid type"), "{e}");
        let e = Config::load(None, &["nonsense".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("section.key=value"), "{e}");
    }

    /// The sessions verdict's keys moved to `[sessions]`: their `[fallback]` spellings (and the
    /// former `zero_byte_ratio`) are still read, each with a warning naming the new key.
    #[test]
    fn sessions_keys_are_still_read_from_fallback_with_a_warning() {
        let mut table: toml::Table = "[fallback]\nmode = \"auto\"\nzero_byte_ratio = 0.6\n\
                                      min_sessions = 9\nwindow_secs = 60\n"
            .parse()
            .unwrap();
        let warnings = move_sessions_keys(&mut table).unwrap();
        assert_eq!(
            warnings,
            [
                "fallback.window_secs is read as sessions.window_secs: move it to [sessions]",
                "fallback.min_sessions is read as sessions.min_sessions: move it to [sessions]",
                "fallback.zero_byte_ratio is read as sessions.no_reply_ratio: move it to [sessions]",
            ]
        );
        let c = Config::deserialize(toml::Value::Table(table)).unwrap();
        assert_eq!(c.fallback.mode, crate::fallback::Mode::Auto);
        assert_eq!(
            (c.sessions.no_reply_ratio, c.sessions.min_sessions),
            (0.6, 9)
        );
        assert_eq!(c.sessions.window_secs, 60);
        // As a flag too, and a value out of range names the key it is read as.
        let c = Config::load(None, &["fallback.healthy_no_reply_ratio=0.1".into()]).unwrap();
        assert_eq!(c.sessions.healthy_no_reply_ratio, 0.1);
        let e = Config::load(None, &["fallback.window_secs=0".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("sessions.window_secs"), "{e}");
        // Both spellings at once: which one is meant cannot be guessed.
        let e = Config::load(
            None,
            &[
                "fallback.min_sessions=3".into(),
                "sessions.min_sessions=4".into(),
            ],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("keep sessions.min_sessions only"), "{e}");
        // Nothing to move: no warning.
        let mut table: toml::Table = "[sessions]\nmin_sessions = 3\n".parse().unwrap();
        assert_eq!(
            move_sessions_keys(&mut table).unwrap(),
            Vec::<String>::new()
        );
    }

    /// Each value here passed `check-config` once and then hurt the agent (a panic at every
    /// request, a table too big for memory) or contradicted another key.
    #[test]
    fn out_of_range_and_contradictory_keys_name_the_key() {
        for (set, key) in [
            (
                "http.header_timeout_secs=18446744073709551615",
                "http.header_timeout_secs",
            ),
            ("http.max_connections=10000000", "http.max_connections"),
            ("log.max_open_sessions=100000000", "log.max_open_sessions"),
            ("log.max_apps=100000", "log.max_apps"),
            ("log.max_line_bytes=4294967296", "log.max_line_bytes"),
            (
                "probe.interval_secs=18446744073709551615",
                "probe.interval_secs",
            ),
            ("probe.timeout_secs=1e300", "probe.timeout_secs"),
            (
                "sessions.window_secs=18446744073709551615",
                "sessions.window_secs",
            ),
            (
                "fallback.cooldown_secs=18446744073709551615",
                "fallback.cooldown_secs",
            ),
            (
                "fallback.backoff_max_secs=18446744073709551615",
                "fallback.backoff_max_secs",
            ),
            (
                "fallback.consecutive_rounds=4294967295",
                "fallback.consecutive_rounds",
            ),
            (
                "fallback.max_body_bytes=18446744073709551615",
                "fallback.max_body_bytes",
            ),
            (
                "health.log_stale_secs=18446744073709551615",
                "health.log_stale_secs",
            ),
            ("log.error_path=/var/log/x.log", "log.error_path"),
            ("log.checkpoint=/var/log/x.log", "log.checkpoint"),
            (
                "fallback.bypass_subnets=[\"0.0.0.0/0\"]",
                "fallback.bypass_subnets",
            ),
        ] {
            let e = Config::load(None, &["log.path=/var/log/x.log".into(), set.into()])
                .expect_err(set)
                .to_string();
            assert!(e.contains(key), "{set}: {e}");
        }
    }

    #[test]
    fn an_error_log_that_is_the_log_under_another_name_names_the_key() {
        // A hard link is the same file under another name.
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.log"), dir.path().join("b.log"));
        std::fs::write(&a, "").unwrap();
        std::fs::hard_link(&a, &b).unwrap();
        let e = Config::load(
            None,
            &[
                format!("log.path={}", a.display()),
                format!("log.error_path={}", b.display()),
            ],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("log.error_path"), "{e}");
    }

    #[test]
    fn a_token_file_others_can_read_names_the_key_and_the_fix() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "0123456789abcdef0123").unwrap();
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
        let set = format!("fallback.token_file={}", token.display());
        let e = Config::load(None, std::slice::from_ref(&set))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("fallback.token_file") && e.contains("chmod 600"),
            "{e}"
        );
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
        Config::load(None, &[set]).unwrap();
    }

    /// A config that does not parse names who wrote the wrong key: the file, or the `--set`
    /// that brought it (the first one after which it fails).
    #[test]
    fn a_bad_key_names_the_file_or_the_flag_that_brought_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "[log]\nmax_apps = 10\n").unwrap();
        let e = Config::load(
            Some(&p),
            &["log.max_apps=20".into(), "http.listn=\":1\"".into()],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("--set http.listn=\":1\": unknown field `listn`"),
            "{e}"
        );
        let e = Config::load(Some(&p), &["log.max_apps=many".into()])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("--set log.max_apps=many: invalid type"),
            "{e}"
        );
        std::fs::write(&p, "[log]\nmax_appz = 10\n").unwrap();
        let e = Config::load(Some(&p), &["log.max_apps=20".into()])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(&format!(
                "config file {}: unknown field `max_appz`",
                p.display()
            )),
            "{e}"
        );
        // A flag can still mend the file's wrong type.
        std::fs::write(&p, "[log]\nmax_apps = \"many\"\n").unwrap();
        let c = Config::load(Some(&p), &["log.max_apps=20".into()]).unwrap();
        assert_eq!(c.log.max_apps, 20);
    }

    /// The cause is said once, also through anyhow's `{:#}` (which prints the source chain).
    #[test]
    fn a_missing_file_is_said_once() {
        let e = Config::load(Some(std::path::Path::new("/nonexistent/c.toml")), &[]).unwrap_err();
        let chain = format!("{:#}", anyhow::Error::from(e));
        assert_eq!(
            chain.matches("No such file or directory").count(),
            1,
            "{chain}"
        );
        assert!(chain.starts_with("cannot read config file /nonexistent/c.toml: "));
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
        // Keys without a value are shown as such, in their section, and read back as unset.
        let fallback = &back[back.find("[fallback]").unwrap()..];
        let fallback = &fallback[..fallback.find("\n\n").unwrap_or(fallback.len())];
        for key in ["token_file", "instance"] {
            assert!(fallback.contains(&format!("\n# {key}: unset")), "{back}");
        }
        std::fs::write(&p, back).unwrap();
        assert_eq!(Config::load(Some(&p), &[]).unwrap(), Config::default());
    }
}
