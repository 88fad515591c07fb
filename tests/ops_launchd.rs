//! The LaunchDaemon plist, its installer and the default macOS config agree with each other.

use std::path::Path;
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
            let mut v = v.to_owned();
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

#[test]
fn plist_installer_and_config_agree() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("launchd");
    let install = read("launchd/install.sh");
    let uninstall = read("launchd/uninstall.sh");
    let label = shell_var(&install, "LABEL");
    assert_eq!(label, shell_var(&uninstall, "LABEL"));
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
        assert!(install.contains(needle), "install.sh lacks {needle}");
    }
    assert!(uninstall.contains("launchctl bootout \"system/$LABEL\""));
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
