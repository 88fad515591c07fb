//! A support bundle in memory: one text per file name of [`saved`], gathered from the running
//! system or read from a folder, and why each missing one is missing. `--save` writes it,
//! `--from` and `--report` judge it: the live report and the report of a saved folder are the
//! same function of the same files.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value, json};

use super::redact::Redactor;
use crate::config::Config;
use crate::os::command::run;
use crate::os::discovery::saved;
use crate::os::versions::{self, Sources};

/// Every file a bundle may hold, in the order they are gathered.
pub const NAMES: &[&str] = &[
    saved::NETSTAT,
    saved::IFCONFIG,
    saved::ROUTE_GET_DEFAULT,
    saved::PF_ANCHORS,
    saved::PF_RULES,
    saved::IP_ROUTE,
    saved::IP_ADDR,
    saved::IP_RULE,
    saved::SW_VERS,
    saved::UNAME_M,
    saved::PIA_VERSION,
    saved::PIA_SETTINGS,
    saved::PROXY_LOG,
    saved::PROBE_ROUND,
    saved::HEALTH,
];

/// The last part of the proxy's log that a bundle keeps.
pub const LOG_TAIL: u64 = 4 << 20;
/// Any other file: tools' outputs and JSON are far smaller.
const FILE_MAX: u64 = 1 << 20;
/// `ifconfig` (not among the configured tools: only a bundle needs it).
const IFCONFIG: &str = "/sbin/ifconfig";

/// PIA's daemon settings: `/Library/Preferences/com.privateinternetaccess.vpn` on macOS,
/// `/opt/piavpn/etc` on Linux (pia-foss/desktop, common/src/builtin/path.cpp,
/// `DaemonSettingsDir`; daemon/src/daemon.cpp reads `settings.json` there).
pub fn pia_settings_path() -> PathBuf {
    if cfg!(target_os = "macos") {
        "/Library/Preferences/com.privateinternetaccess.vpn/settings.json".into()
    } else {
        "/opt/piavpn/etc/settings.json".into()
    }
}

/// Which machine a bundle describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Mac,
    Linux,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Bundle {
    pub files: BTreeMap<&'static str, String>,
    pub missing: BTreeMap<&'static str, String>,
    pub redacted: bool,
}

impl Bundle {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.files.get(name).map(String::as_str)
    }

    /// A Mac's table (netstat) or a Linux one (`ip route`); `None`: neither was saved.
    pub fn kind(&self) -> Option<Kind> {
        if self.files.contains_key(saved::NETSTAT) {
            Some(Kind::Mac)
        } else if self.files.contains_key(saved::IP_ROUTE) {
            Some(Kind::Linux)
        } else {
            None
        }
    }

    fn put(&mut self, name: &'static str, r: Result<String, String>) {
        match r {
            Ok(text) => {
                self.files.insert(name, text);
            }
            Err(why) => {
                self.missing.insert(name, why);
            }
        }
    }

    /// Every text with public addresses, MAC addresses and home folders replaced, one mapping
    /// for all files.
    pub fn redact(&mut self) {
        let mut r = Redactor::default();
        for text in self.files.values_mut() {
            *text = r.text(text);
        }
        for why in self.missing.values_mut() {
            *why = r.text(why);
        }
        self.redacted = true;
    }

    /// `bundle.json`: what the bundle is and why files are missing.
    pub fn manifest(&self) -> String {
        let missing: Map<String, Value> = self
            .missing
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Value::String(v.clone())))
            .collect();
        let doc = json!({
            "tool": format!("pia-split-tunnel-exporter {}", env!("CARGO_PKG_VERSION")),
            "redacted": self.redacted,
            "files": self.files.keys().collect::<Vec<_>>(),
            "missing": missing,
        });
        serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n"
    }

    /// A saved folder: every known name (never through a link, only regular files, each
    /// capped); PIA's settings filtered again, whoever wrote them.
    pub fn read(dir: &Path) -> Bundle {
        let mut b = Bundle::default();
        for &name in NAMES {
            let cap = if name == saved::PROXY_LOG {
                LOG_TAIL
            } else {
                FILE_MAX
            };
            match read_no_follow(&dir.join(name), cap) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                r => b.put(name, r.map_err(|e| format!("{name}: {e}"))),
            }
        }
        if let Some(s) = b.files.get(saved::PIA_SETTINGS).cloned() {
            b.put(saved::PIA_SETTINGS, split_tunnel_settings(&s));
        }
        if let Ok(text) = read_no_follow(&dir.join(saved::BUNDLE), FILE_MAX) {
            let doc: Value = serde_json::from_str(&text).unwrap_or_default();
            b.redacted = doc["redacted"].as_bool().unwrap_or(false);
            for &name in NAMES {
                if let Some(why) = doc["missing"][name].as_str() {
                    b.missing.entry(name).or_insert_with(|| why.to_owned());
                }
            }
        }
        b
    }

    /// What this machine says now: its tools' outputs, versions, PIA's split-tunnel settings,
    /// the end of the proxy's log, one probe round (when probing is on) and the agent's
    /// `/health`.
    pub fn gather(config: &Config, pia_settings: &Path) -> Bundle {
        let mut b = Bundle::default();
        let tools = config.fallback.tools();
        if cfg!(target_os = "macos") {
            b.gather_mac(config);
        } else {
            let ip = |args: &[&str]| tool(&tools.ip, args, tools.timeout);
            b.put(saved::IP_ROUTE, ip(&["-4", "route"]));
            b.put(saved::IP_ADDR, ip(&["-4", "addr"]));
            b.put(saved::IP_RULE, ip(&["-4", "rule"]));
        }
        b.gather_versions(tools.timeout);
        let settings = read_no_follow(pia_settings, FILE_MAX)
            .map_err(|e| format!("{}: {e}", pia_settings.display()))
            .and_then(|t| split_tunnel_settings(&t));
        b.put(saved::PIA_SETTINGS, settings);
        b.put(saved::PROXY_LOG, log_tail(&config.log.path));
        b.put(saved::PROBE_ROUND, probe_round(config));
        b.put(saved::HEALTH, health(config, tools.timeout));
        b
    }

    fn gather_mac(&mut self, config: &Config) {
        let t = config.fallback.tools();
        let anchor = config.fallback.anchor.as_str();
        self.put(
            saved::NETSTAT,
            tool(&t.netstat, &["-rn", "-f", "inet"], t.timeout),
        );
        self.put(
            saved::IFCONFIG,
            tool(Path::new(IFCONFIG), &["-a"], t.timeout),
        );
        let route_get = tool(&t.route, &["-n", "get", "default"], t.timeout);
        self.put(saved::ROUTE_GET_DEFAULT, route_get);
        let anchors = tool(&t.pfctl, &["-v", "-s", "Anchors"], t.timeout);
        self.put(saved::PF_ANCHORS, anchors);
        let rules = tool(&t.pfctl, &["-a", anchor, "-s", "rules"], t.timeout);
        self.put(saved::PF_RULES, rules);
    }

    /// `sw_vers` and PIA's version on macOS, `uname -m` everywhere.
    fn gather_versions(&mut self, timeout: Duration) {
        let s = Sources::read(timeout);
        if let Some(sw) = s.sw_vers {
            self.put(saved::SW_VERS, sw);
        }
        self.put(saved::UNAME_M, s.uname_m);
        let pia = match s.info_plist {
            Some(plist) => plist.and_then(|t| versions::parse_info_plist_version(&t)),
            None => Err("PIA's version is read from its macOS app bundle only".into()),
        };
        self.put(saved::PIA_VERSION, pia.map(|v| v + "\n"));
    }
}

/// A tool's stdout, or why not.
fn tool(program: &Path, args: &[&str], timeout: Duration) -> Result<String, String> {
    run(program, args, None, timeout)
        .map(|o| o.stdout)
        .map_err(|e| e.to_string())
}

/// At most `cap` bytes at `path`'s end (all of a smaller file), never through a symlink,
/// only from a regular file; invalid UTF-8 replaced.
pub fn read_no_follow(path: &Path, cap: u64) -> std::io::Result<String> {
    use std::io::{Seek as _, SeekFrom};
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => std::io::Error::other("a symbolic link, not followed"),
            _ => e,
        })?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    if meta.len() > cap {
        f.seek(SeekFrom::Start(meta.len() - cap))?;
    }
    let mut bytes = Vec::new();
    f.take(cap).read_to_end(&mut bytes)?;
    let mut text = String::from_utf8_lossy(&bytes).into_owned();
    if meta.len() > cap {
        // Cut at a line start: no half line.
        let start = text.find('\n').map_or(text.len(), |i| i + 1);
        text.drain(..start);
    }
    Ok(text)
}

/// The end of the proxy's log, or why not.
fn log_tail(path: &Path) -> Result<String, String> {
    read_no_follow(path, LOG_TAIL).map_err(|e| format!("{}: {e}", path.display()))
}

/// The split-tunnel keys PIA's daemon keeps in settings.json (pia-foss/desktop,
/// common/src/settings/daemonsettings.h): the split tunnel itself, what it asks of DNS, the
/// kill switch, LAN and IPv6 rules, and the VPN protocol. An allow-list: account, proxy
/// (`proxyCustom` holds a password) and any key PIA adds later stay out.
const SETTINGS_KEYS: &[&str] = &[
    "splitTunnelEnabled",
    "splitTunnelRules",
    "bypassSubnets",
    "splitTunnelDNS",
    "overrideDNS",
    "defaultRoute",
    "killswitch",
    "allowLAN",
    "blockIPv6",
    "method",
    "protocol",
];

/// The fields of one rule (`SplitTunnelRule`: path, linkTarget, mode; `SplitTunnelSubnetRule`:
/// subnet, mode) kept, as strings.
const RULE_KEYS: &[&str] = &["path", "linkTarget", "mode", "subnet"];

/// PIA's settings.json reduced to [`SETTINGS_KEYS`], each value checked for its shape: a
/// bool, a short string, a list of short strings, or a list of rules of [`RULE_KEYS`].
pub fn split_tunnel_settings(text: &str) -> Result<String, String> {
    let doc: Value =
        serde_json::from_str(text).map_err(|e| format!("PIA's settings.json not read: {e}"))?;
    let obj = doc
        .as_object()
        .ok_or("PIA's settings.json is not a JSON object")?;
    let kept: Map<String, Value> = SETTINGS_KEYS
        .iter()
        .filter_map(|&k| Some((k.to_owned(), plain(obj.get(k)?)?)))
        .collect();
    Ok(serde_json::to_string_pretty(&Value::Object(kept)).unwrap_or_default() + "\n")
}

/// A settings value in one of the shapes the kept keys have, or `None`.
fn plain(v: &Value) -> Option<Value> {
    let short = |s: &str| s.len() <= 1024;
    match v {
        Value::Bool(_) => Some(v.clone()),
        Value::String(s) if short(s) => Some(v.clone()),
        Value::Array(items) if items.len() <= 1000 => Some(Value::Array(
            items
                .iter()
                .filter_map(|i| match i {
                    Value::String(s) if short(s) => Some(i.clone()),
                    Value::Object(rule) => Some(Value::Object(
                        RULE_KEYS
                            .iter()
                            .filter_map(|&k| match rule.get(k) {
                                Some(Value::String(s)) if short(s) => {
                                    Some((k.to_owned(), Value::String(s.clone())))
                                }
                                _ => None,
                            })
                            .collect(),
                    )),
                    _ => None,
                })
                .collect(),
        )),
        _ => None,
    }
}

/// One probe round as `probe --json` prints it; none when probing is off.
fn probe_round(config: &Config) -> Result<String, String> {
    if !config.probe.enabled {
        return Err("probe.enabled = false: not probed".into());
    }
    let round = super::super::probe::one_round(&config.probe).map_err(|e| e.to_string())?;
    let doc = super::super::probe::round_json(&round);
    Ok(serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n")
}

/// The running agent's `/health`, asked on loopback at its configured port.
fn health(config: &Config, timeout: Duration) -> Result<String, String> {
    if !config.http.web_config_file.as_os_str().is_empty() {
        return Err("http.web_config_file is set (TLS or passwords): /health not fetched".into());
    }
    let port = config.http.listen.port();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    http_get(addr, "/health", timeout).map_err(|e| format!("GET http://{addr}/health: {e}"))
}

/// A plain HTTP/1.1 GET on loopback: the body of a 200, at most [`FILE_MAX`] bytes.
fn http_get(addr: std::net::SocketAddr, path: &str, timeout: Duration) -> Result<String, String> {
    use std::io::Write as _;
    let mut s = std::net::TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.take(FILE_MAX)
        .read_to_end(&mut raw)
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no HTTP answer")?;
    let status = head.lines().next().unwrap_or_default();
    if !status.contains(" 200 ") {
        return Err(format!("answered {status:?}"));
    }
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Err("a chunked answer, not read".into());
    }
    Ok(body.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_keep_the_split_tunnel_keys_and_nothing_else() {
        let settings = r#"{
            "splitTunnelEnabled": true,
            "splitTunnelRules": [{"mode": "exclude", "path": "/Applications/Plex Media Server.app", "token": "t0k"}],
            "bypassSubnets": [{"mode": "exclude", "subnet": "10.0.15.0/24"}],
            "splitTunnelDNS": true, "killswitch": "on", "allowLAN": true, "blockIPv6": true,
            "overrideDNS": ["198.51.100.53"], "method": "wireguard",
            "proxyCustom": {"host": "proxy.example", "username": "u", "password": "hunter2"},
            "username": "p1234567", "password": "secret", "token": "abcdef0123456789",
            "lastUsedVersion": "3.7.0", "location": "panama"
        }"#;
        let kept: Value = serde_json::from_str(&split_tunnel_settings(settings).unwrap()).unwrap();
        let mut keys: Vec<&str> = kept
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "allowLAN",
                "blockIPv6",
                "bypassSubnets",
                "killswitch",
                "method",
                "overrideDNS",
                "splitTunnelDNS",
                "splitTunnelEnabled",
                "splitTunnelRules"
            ]
        );
        assert_eq!(
            kept["splitTunnelRules"],
            json!([{"mode": "exclude", "path": "/Applications/Plex Media Server.app"}])
        );
        let text = kept.to_string();
        for secret in [
            "hunter2",
            "secret",
            "p1234567",
            "abcdef0123456789",
            "t0k",
            "proxy.example",
        ] {
            assert!(!text.contains(secret), "{secret} kept: {text}");
        }
        // A key of the list with another shape (an object where a bool belongs) is dropped.
        let odd = split_tunnel_settings(r#"{"allowLAN": {"password": "x"}}"#).unwrap();
        assert_eq!(odd, "{}\n");
        assert!(split_tunnel_settings("[1]").is_err());
        assert!(split_tunnel_settings("not json").is_err());
    }

    #[test]
    fn a_big_log_keeps_its_end_from_a_line_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let line = "[2026-02-16 11:49:40:7270] [X.swift:1] debug: id: 1 something\n";
        let text = line.repeat((LOG_TAIL as usize / line.len()) + 10);
        std::fs::write(&path, &text).unwrap();
        let tail = read_no_follow(&path, LOG_TAIL).unwrap();
        assert!(
            tail.len() as u64 <= LOG_TAIL && tail.starts_with("[2026"),
            "{}",
            &tail[..40]
        );
        assert!(text.ends_with(&tail));
        std::os::unix::fs::symlink(&path, dir.path().join("link")).unwrap();
        let e = read_no_follow(&dir.path().join("link"), 10).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
    }
}
