//! The LaunchDaemon plist, its installer and the default macOS config agree with each other;
//! the scripts parse, and behave against a stand-in launchctl: an immediate reinstall waits
//! for the bootout, `--purge` removes the log and its archives.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)).unwrap()
}

/// `NAME=value` from a shell script, with `$VAR` of earlier assignments expanded.
fn shell_var(script: &str, name: &str) -> String {
    let mut vars: Vec<(String, String)> = Vec::new();
    for line in script.lines() {
        if let Some((k, v)) = line.split_once('=')
            && k.chars().all(|c| c.is_ascii_uppercase() || c == '_')
            && !k.is_empty()
        {
            // `${PIA_STE_ROOT:-}`: empty, as on a Mac.
            let mut v = if v.starts_with("${") && v.ends_with(":-}") {
                String::new()
            } else {
                v.to_owned()
            };
            for (pk, pv) in &vars {
                v = v.replace(&format!("${pk}"), pv);
            }
            vars.push((k.to_owned(), v));
        }
    }
    vars.into_iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("{name} not set"))
}

#[allow(clippy::too_many_lines, reason = "one scenario; the rule is for src/")]
#[test]
fn plist_installer_and_config_agree() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("launchd");
    let install = read("launchd/common.sh");
    let install_sh = read("launchd/install.sh");
    let uninstall = read("launchd/uninstall.sh");
    let label = shell_var(&install, "LABEL");
    for script in [&install_sh, &uninstall] {
        assert!(
            script.contains(". \"$here/common.sh\""),
            "one list of paths"
        );
    }
    assert!(label.split('.').count() >= 3, "reverse-DNS label: {label}");
    let plist = plist::Value::from_file(dir.join(format!("{label}.plist")))
        .expect("the plist is named after its label and parses");
    let d = plist.as_dictionary().unwrap();
    assert_eq!(
        d.get("Label").and_then(|v| v.as_string()),
        Some(label.as_str())
    );
    let args: Vec<&str> = d
        .get("ProgramArguments")
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_string().unwrap())
        .collect();
    let conf = format!("{}/config.toml", shell_var(&install, "CONF_DIR"));
    assert_eq!(
        args,
        vec![
            shell_var(&install, "BIN").as_str(),
            "--config",
            conf.as_str(),
            "run"
        ]
    );
    assert_eq!(d.get("RunAtLoad").and_then(|v| v.as_boolean()), Some(true));
    assert_eq!(d.get("KeepAlive").and_then(|v| v.as_boolean()), Some(true));
    let throttle = d
        .get("ThrottleInterval")
        .and_then(|v| v.as_unsigned_integer())
        .unwrap();
    assert!((5..=60).contains(&throttle), "ThrottleInterval {throttle}");
    assert!(
        d.get("ExitTimeOut")
            .and_then(|v| v.as_unsigned_integer())
            .unwrap()
            <= 20
    );
    assert_eq!(
        d.get("ProcessType").and_then(|v| v.as_string()),
        Some("Standard"),
        "Background is throttled"
    );
    for key in ["StandardOutPath", "StandardErrorPath"] {
        assert!(
            d.get(key)
                .and_then(|v| v.as_string())
                .unwrap()
                .starts_with("/var/log/"),
            "{key}"
        );
    }
    // The installer: root:wheel 0644 plist, bootstrap into the system domain; bootout to remove.
    assert_eq!(
        shell_var(&install, "PLIST"),
        format!("/Library/LaunchDaemons/{label}.plist")
    );
    for needle in [
        "chown root:wheel \"$PLIST\"",
        "chmod 644 \"$PLIST\"",
        "launchctl bootstrap system \"$PLIST\"",
    ] {
        assert!(install_sh.contains(needle), "install.sh lacks {needle}");
    }
    assert!(install.contains("launchctl bootout \"system/$LABEL\""));
    // Descriptors: well above the connection cap (launchd's default soft limit is 256).
    let max_connections = pia_split_tunnel_exporter::server::HttpConfig::default().max_connections;
    for key in ["SoftResourceLimits", "HardResourceLimits"] {
        let files = d
            .get(key)
            .and_then(|v| v.as_dictionary())
            .and_then(|l| l.get("NumberOfFiles"))
            .and_then(|v| v.as_unsigned_integer())
            .unwrap_or_else(|| panic!("{key}.NumberOfFiles"));
        assert!(
            files >= 4 * max_connections as u64,
            "{key}.NumberOfFiles {files} vs http.max_connections {max_connections}"
        );
    }
    // launchd holds the port (the name the agent asks launch_activate_socket for), at the
    // default config's address; the formula's service block says the same.
    let socket = d
        .get("Sockets")
        .and_then(|v| v.as_dictionary())
        .and_then(|s| s.get(pia_split_tunnel_exporter::server::activation::LAUNCHD_SOCKET))
        .and_then(|v| v.as_dictionary())
        .expect("Sockets.listeners");
    let field = |k: &str| {
        socket
            .get(k)
            .and_then(|v| v.as_string())
            .unwrap_or_default()
    };
    let listen = format!("{}:{}", field("SockNodeName"), field("SockServiceName"));
    assert_eq!(field("SockProtocol"), "TCP");
    assert!(
        read("launchd/config.toml").contains(&format!("listen = \"{listen}\"")),
        "the plist's socket {listen} is the config's http.listen"
    );
    assert!(
        read("Formula/pia-split-tunnel-exporter.rb")
            .contains(&format!("sockets \"tcp://{listen}\"")),
        "the formula's service holds the same socket"
    );
    // The log the plist names is the one newsyslog rotates and --purge removes.
    let log = shell_var(&install, "LOG");
    assert_eq!(
        d.get("StandardErrorPath").and_then(|v| v.as_string()),
        Some(log.as_str())
    );
    let rotation = read("launchd/pia-split-tunnel-exporter.newsyslog.conf");
    let entry: Vec<&str> = rotation
        .lines()
        .find(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .expect("a newsyslog entry")
        .split_whitespace()
        .collect();
    // logfilename owner:group mode count size when flags
    assert_eq!(entry.len(), 7, "{entry:?}");
    assert_eq!(entry[0], log);
    assert_eq!(entry[1], "root:wheel");
    assert!(entry[3].parse::<u32>().unwrap() >= 1 && entry[4].parse::<u32>().unwrap() >= 100);
    assert!(
        entry[6].contains('N'),
        "no process to signal (newsyslog would signal syslogd)"
    );
    assert!(
        !entry[6].contains('J') && !entry[6].contains('Z'),
        "the newest archive may still be written for a few seconds: no compression"
    );
    assert_eq!(
        shell_var(&install, "NEWSYSLOG"),
        "/etc/newsyslog.d/pia-split-tunnel-exporter.conf"
    );
    // The default config loads, and keeps its state where the installer made room for it.
    let out = Command::new(env!("CARGO_BIN_EXE_pia-split-tunnel-exporter"))
        .args(["--config"])
        .arg(dir.join("config.toml"))
        .arg("check-config")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let effective = String::from_utf8(out.stdout).unwrap();
    let state = shell_var(&install, "STATE_DIR");
    assert!(
        effective.contains(&format!("checkpoint = \"{state}/checkpoint.json\"")),
        "{effective}"
    );
    assert!(
        effective.contains(&format!("pf_token_file = \"{state}/pf-token\"")),
        "{effective}"
    );
    assert!(
        effective.contains("mode = \"observe\""),
        "the automatic repair is the user's choice"
    );
}

/// launchd/README.md, which a user reads beside the files, names what the scripts install: the
/// label, the binary, the config, the log and the state folder, as common.sh spells them.
#[test]
fn the_folders_readme_names_what_the_scripts_install() {
    let common = read("launchd/common.sh");
    let readme = read("launchd/README.md");
    for var in ["LABEL", "BIN", "CONF_DIR", "LOG", "STATE_DIR"] {
        let value = shell_var(&common, var);
        assert!(!value.is_empty(), "{var} in common.sh");
        assert!(
            readme.contains(&value),
            "launchd/README.md does not name {var} = {value}"
        );
    }
    for file in ["install.sh", "uninstall.sh", "config.toml", "common.sh"] {
        assert!(
            readme.contains(&format!("`{file}`")),
            "launchd/README.md: {file}"
        );
    }
}

#[test]
fn scripts_parse() {
    for script in ["common.sh", "install.sh", "uninstall.sh"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("launchd")
            .join(script);
        for shell in ["sh", "bash"] {
            let out = Command::new(shell).arg("-n").arg(&path).output().unwrap();
            assert!(
                out.status.success(),
                "{shell} -n {script}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// A fake filesystem root for the scripts (`PIA_STE_ROOT`), with launchctl, chown and the
/// agent binary played by `tests/fixtures/fake-tool`. Needs root like the scripts themselves.
struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        let tool = common::fixture("fake-tool");
        for d in ["bin", "state", "root", "src"] {
            std::fs::create_dir(dir.path().join(d)).unwrap();
        }
        // Links, not written files: no "text file busy" with parallel forks.
        for name in ["launchctl", "chown"] {
            std::os::unix::fs::symlink(&tool, dir.path().join("bin").join(name)).unwrap();
        }
        std::os::unix::fs::symlink(&tool, dir.path().join("src/pia-split-tunnel-exporter"))
            .unwrap();
        Sandbox { dir }
    }

    fn root(&self, rel: &str) -> PathBuf {
        self.dir
            .path()
            .join("root")
            .join(rel.trim_start_matches('/'))
    }

    fn run(&self, script: &str, args: &[&str]) {
        let path = std::env::var("PATH").unwrap_or_default();
        let out = Command::new("sh")
            .arg(
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("launchd")
                    .join(script),
            )
            .args(args)
            .env(
                "PATH",
                format!("{}:{path}", self.dir.path().join("bin").display()),
            )
            .env("PIA_STE_ROOT", self.dir.path().join("root"))
            .env("FAKE_STATE", self.dir.path().join("state"))
            .env("FAKE_BOOTOUT_SECS", "1")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{script} {args:?} failed (the scripts need root): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn install(&self) {
        let src = self.dir.path().join("src/pia-split-tunnel-exporter");
        self.run("install.sh", &[src.to_str().unwrap()]);
    }

    /// Calls to the stand-ins so far, and forgets them.
    fn take_calls(&self) -> Vec<String> {
        let p = self.dir.path().join("state/calls");
        let calls = std::fs::read_to_string(&p).unwrap_or_default();
        let _ = std::fs::remove_file(&p);
        calls.lines().map(str::to_owned).collect()
    }
}

const LABEL: &str = "system/io.github.pia-split-tunnel-exporter";

#[test]
fn an_immediate_reinstall_waits_for_the_bootout() {
    let s = Sandbox::new();
    s.install();
    let first = s.take_calls();
    let plist = s.root("/Library/LaunchDaemons/io.github.pia-split-tunnel-exporter.plist");
    assert!(plist.is_file() && s.root("/usr/local/bin/pia-split-tunnel-exporter").is_file());
    assert!(
        s.root("/etc/pia-split-tunnel-exporter/config.toml")
            .is_file()
    );
    assert!(
        s.root("/etc/newsyslog.d/pia-split-tunnel-exporter.conf")
            .is_file()
    );
    let bootstrap = format!("launchctl bootstrap system {}", plist.display());
    assert!(first.contains(&bootstrap), "{first:?}");
    assert!(
        !first.iter().any(|c| c.starts_with("launchctl bootout")),
        "nothing to boot out on a first install: {first:?}"
    );

    // Again at once: launchd still holds the job for a second after bootout returns.
    let started = std::time::Instant::now();
    s.install();
    let second = s.take_calls();
    let pos = |call: &str| {
        second
            .iter()
            .position(|c| c == call)
            .unwrap_or_else(|| panic!("no {call:?} in {second:?}"))
    };
    let bootout = pos(&format!("launchctl bootout {LABEL}"));
    let enable = pos(&format!("launchctl enable {LABEL}"));
    let boot = pos(&bootstrap);
    let prints_after = second[bootout..boot]
        .iter()
        .filter(|c| **c == format!("launchctl print {LABEL}"))
        .count();
    assert!(bootout < enable && enable < boot, "{second:?}");
    assert!(prints_after >= 2, "waits until print fails: {second:?}");
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(900),
        "the reinstall did not wait for the job to go"
    );
    // The config is checked with the new binary before the running daemon is stopped.
    let check = second
        .iter()
        .position(|c| c.ends_with("check-config"))
        .unwrap_or_else(|| panic!("no check-config in {second:?}"));
    assert!(check < bootout, "{second:?}");
}

#[test]
fn uninstall_keeps_the_log_and_purge_removes_it_with_its_archives() {
    let s = Sandbox::new();
    let log = s.root("/var/log/pia-split-tunnel-exporter.log");
    let archives = [log.with_extension("log.0"), log.with_extension("log.1")];
    let other = s.root("/var/log/system.log");
    let write_logs = || {
        for p in std::iter::once(&log).chain(&archives).chain([&other]) {
            std::fs::write(p, "line\n").unwrap();
        }
    };
    s.install();
    write_logs();
    s.run("uninstall.sh", &[]);
    let calls = s.take_calls();
    assert!(
        calls
            .iter()
            .any(|c| c.starts_with("pia-split-tunnel-exporter") && c.ends_with("fallback revert")),
        "the fallback is reverted: {calls:?}"
    );
    assert!(!s.root("/usr/local/bin/pia-split-tunnel-exporter").exists());
    assert!(
        !s.root("/etc/newsyslog.d/pia-split-tunnel-exporter.conf")
            .exists()
    );
    assert!(log.exists() && s.root("/etc/pia-split-tunnel-exporter").exists());

    s.install();
    write_logs();
    s.run("uninstall.sh", &["--purge"]);
    for p in std::iter::once(&log).chain(&archives) {
        assert!(!p.exists(), "{} left by --purge", p.display());
    }
    assert!(!s.root("/etc/pia-split-tunnel-exporter").exists());
    assert!(!s.root("/var/db/pia-split-tunnel-exporter").exists());
    assert!(other.exists(), "--purge touches only its own files");
}

/// The config moved from /usr/local/etc (Homebrew's user owns it on an Intel Mac, and a root
/// agent refuses a config another user can change) to /etc: an upgrade carries the old one
/// over once, root-owned, and never overwrites the one in place.
#[test]
fn an_earlier_config_is_carried_over_once_and_owned_by_root() {
    let s = Sandbox::new();
    let old = s.root("/usr/local/etc/pia-split-tunnel-exporter/config.toml");
    std::fs::create_dir_all(old.parent().unwrap()).unwrap();
    std::fs::write(&old, "# mine\n").unwrap();
    s.install();
    let new = s.root("/etc/pia-split-tunnel-exporter/config.toml");
    assert_eq!(std::fs::read_to_string(&new).unwrap(), "# mine\n");
    let calls = s.take_calls();
    let chown = format!(
        "chown -R root:wheel {}",
        s.root("/etc/pia-split-tunnel-exporter").display()
    );
    assert!(calls.contains(&chown), "{calls:?}");
    std::fs::write(&old, "# edited later\n").unwrap();
    s.install();
    assert_eq!(std::fs::read_to_string(&new).unwrap(), "# mine\n");
}
