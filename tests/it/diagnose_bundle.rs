//! `diagnose --save` and `diagnose --report`: a bundle saved reads back the same judgement
//! (every Mac of `tests/fixtures/macs/`, and a live Linux namespace), the report of a Mac's
//! bundle is the golden file, `--redact` leaves no public address, and the folder is written
//! without following a link a local user planted (the attacker runs as `nobody`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::common::netns::Netns;

const NOBODY: &str = "65534";

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pia-split-tunnel-exporter"));
    c.env_remove("PIA_STE_CONFIG");
    c
}

fn run(c: &mut Command) -> Output {
    let out = c.output().unwrap();
    assert!(
        out.status.code().is_some(),
        "{c:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn mac_bundle() -> PathBuf {
    fixtures().join("bundles/mac-mini-bypass-broken")
}

fn from_json(dir: &Path) -> (Option<i32>, Value) {
    let out = run(bin().args(["diagnose", "--json", "--from"]).arg(dir));
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{}: {e}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), json)
}

fn save(from: &Path, to: &Path, redact: bool) {
    let mut c = bin();
    c.args(["diagnose", "--from"])
        .arg(from)
        .arg("--save")
        .arg(to);
    if redact {
        c.arg("--redact");
    }
    let out = run(&mut c);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn report(dir: &Path, extra: &[&str]) -> String {
    let out = run(bin()
        .args(["diagnose", "--report", "--from"])
        .arg(dir)
        .args(extra));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The judgement of `--from --json`, without what names the folder.
fn judgement(mut v: Value) -> Value {
    let obj = v.as_object_mut().unwrap();
    obj.remove("sentences");
    v
}

#[test]
fn every_mac_of_the_matrix_reads_back_the_same_after_save() {
    let tmp = tempfile::tempdir().unwrap();
    let macs = fixtures().join("macs");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&macs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.push(mac_bundle());
    dirs.sort();
    assert!(dirs.len() >= 9, "{dirs:?}");
    for (i, dir) in dirs.iter().enumerate() {
        let (code, before) = from_json(dir);
        let out = tmp.path().join(format!("plain-{i}"));
        save(dir, &out, false);
        let (code_after, after) = from_json(&out);
        assert_eq!(code, code_after, "{}", dir.display());
        assert_eq!(
            judgement(before.clone()),
            judgement(after),
            "{}",
            dir.display()
        );
        // Redacted: the same interfaces and certainty, only addresses differ.
        let red = tmp.path().join(format!("redacted-{i}"));
        save(dir, &red, true);
        let (code_red, redacted) = from_json(&red);
        assert_eq!(code, code_red, "{}", dir.display());
        for key in ["vpn_routes_everything", "certain"] {
            assert_eq!(before[key], redacted[key], "{}: {key}", dir.display());
        }
        assert_eq!(
            before["physical"]["interface"],
            redacted["physical"]["interface"]
        );
        assert_eq!(
            before["tunnel"]["interface"],
            redacted["tunnel"]["interface"]
        );
    }
}

/// Every address in `text` that `--redact` must not leave.
fn public_addresses(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for word in text.split(|c: char| !(c.is_ascii_digit() || c == '.')) {
        if let Ok(a) = word.parse::<std::net::Ipv4Addr>() {
            let o = a.octets();
            let bits = a.to_bits();
            let netmask = bits.leading_ones() + bits.trailing_zeros() == 32;
            let kept = a.is_private()
                || a.is_loopback()
                || a.is_link_local()
                || o[0] == 0
                || o[0] >= 224
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
                || netmask;
            if !kept {
                found.push(word.to_owned());
            }
        }
    }
    found
}

#[test]
fn redacted_bundles_and_reports_keep_no_public_address_and_stay_consistent() {
    let tmp = tempfile::tempdir().unwrap();
    let red = tmp.path().join("red");
    save(&mac_bundle(), &red, true);
    let mut all = String::new();
    for entry in std::fs::read_dir(&red).unwrap() {
        all.push_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap());
    }
    assert_eq!(public_addresses(&all), Vec::<String>::new());
    assert!(all.contains("\"redacted\": true"), "bundle.json says so");
    // The same address, the same placeholder in every file: the log's endpoint and the
    // probe's VPN exit each keep one name across the report.
    let text = report(&red, &[]);
    assert_eq!(public_addresses(&text), Vec::<String>::new(), "{text}");
    let exit = text
        .split("egresses as the VPN's exit (")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .unwrap()
        .to_owned();
    assert!(exit.starts_with("240.0.0."), "{exit}");
    assert!(text.contains(&format!(
        "A socket bound to the tunnel, `utun6`: egresses as {exit}"
    )));
    assert!(text.contains("public addresses are replaced by 240.0.0.N"));
    // --redact on the report itself, from the plain bundle: the same text.
    assert_eq!(report(&mac_bundle(), &["--redact"]), text);
}

#[test]
fn the_report_of_a_macs_bundle_is_the_golden_file() {
    let got = report(&mac_bundle(), &[]);
    let golden = fixtures().join("bundles/mac-mini-bypass-broken.report.md");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &got).unwrap();
    }
    let want = std::fs::read_to_string(&golden).unwrap();
    assert_eq!(
        got, want,
        "set UPDATE_GOLDEN=1 to rewrite it after a deliberate change"
    );
    // What a bug report for PIA must say, checked apart from the golden's wording.
    for needle in [
        "PIA 3.7.0, macOS 26.3 (25D125), arm64",
        "- Architecture: arm64 (Apple Silicon)",
        "- VPN protocol: WireGuard",
        "\"splitTunnelEnabled\": true",
        "| `com.plexapp.plexmediaserver` | TCP | 3 | 2 | Empty buffer ×1, ioOnClosedChannel ×1, connectTimeout ×1 |",
        "| `com.apple.Safari.SafeBrowsing` | UDP | 1 | 1 | Empty buffer ×1 |",
        "error: id: 133 ioOnClosedChannel while sending a TCP datagram through the socket com.plexapp.plexmediaserver",
        "error: id: 152 Unable to create channel: connectTimeout(",
        "| 54.172.39.248:443 | `com.plexapp.plexmediaserver` | 1 | ioOnClosedChannel |",
        "0/1                utun6              UScg                utun6",
        "128.0/1            utun6              USc                 utun6",
        "- The physical interface is en1 (10.0.15.15, gateway 10.0.15.1)",
        "egresses as the VPN's exit (192.0.2.18), not as the physical path (198.51.100.47)",
        "pass out quick route-to (en1 10.0.15.1) inet from 10.0.15.15 to ! <rfc1918>",
        "- Loaded now: no (anchor `com.apple/250.PiaSplitTunnelFallback` is empty)",
    ] {
        assert!(got.contains(needle), "the report lacks {needle:?}:\n{got}");
    }
}

#[test]
fn the_report_says_when_the_rules_are_loaded_and_what_the_agent_saw() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("active");
    std::fs::create_dir(&dir).unwrap();
    for e in std::fs::read_dir(mac_bundle()).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
    }
    // pf's read-back of the two rules (normalised as pfctl prints them: see SOURCE.md).
    std::fs::write(
        dir.join("pfctl-rules.txt"),
        "pass in quick on en1 proto tcp from any to any port = 32400 flags S/SA keep state\n\
         pass out quick route-to (en1 10.0.15.1) inet from 10.0.15.15 to ! <rfc1918> flags S/SA keep state\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("health.json"),
        r#"{"status": "ok", "components": {"fallback": {"status": "ok", "reason": "active (pf): 10.0.15.15 leaves via en1 gateway 10.0.15.1"}}}"#,
    )
    .unwrap();
    let text = report(&dir, &[]);
    assert!(
        text.contains("- Loaded now: yes, `pfctl -a com.apple/250.PiaSplitTunnelFallback -s rules` lists `pass in quick on en1"),
        "{text}"
    );
    assert!(
        text.contains("its /health says of the fallback: active (pf): 10.0.15.15 leaves via en1 gateway 10.0.15.1 (ok)"),
        "{text}"
    );
    std::fs::remove_file(dir.join("health.json")).unwrap();
    assert!(report(&dir, &[]).contains("unknown: the agent's /health is not in the bundle"));
}

/// `ip netns exec NS` the agent.
fn in_ns(ns: &Netns) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", &ns.0])
        .arg(env!("CARGO_BIN_EXE_pia-split-tunnel-exporter"))
        .env_remove("PIA_STE_CONFIG");
    c
}

/// A Linux bundle's files: private, complete, PIA's settings without a secret.
fn assert_saved_linux_bundle(dir: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    for name in [
        "ip-route.txt",
        "ip-addr.txt",
        "ip-rule.txt",
        "uname-m.txt",
        "bundle.json",
    ] {
        assert!(dir.join(name).is_file(), "{name} not saved");
    }
    let kept = std::fs::read_to_string(dir.join("pia-split-tunnel-settings.json")).unwrap();
    assert!(kept.contains("\"method\": \"openvpn\""), "{kept}");
    for secret in ["hunter2", "abcdef0123456789", "proxy.example", "username"] {
        assert!(!kept.contains(secret), "{secret} in {kept}");
    }
    let manifest = std::fs::read_to_string(dir.join("bundle.json")).unwrap();
    assert!(
        manifest.contains("probe.enabled = false: not probed"),
        "{manifest}"
    );
}

#[test]
fn a_linux_machine_saved_live_reads_back_the_same_judgement() {
    let ns = Netns::new();
    let tmp = tempfile::tempdir().unwrap();
    let settings = tmp.path().join("settings.json");
    std::fs::write(
        &settings,
        r#"{"splitTunnelEnabled": true, "bypassSubnets": [], "allowLAN": true,
            "proxyCustom": {"host": "proxy.example", "username": "u", "password": "hunter2"},
            "token": "abcdef0123456789", "method": "openvpn", "protocol": "udp"}"#,
    )
    .unwrap();
    let dir = tmp.path().join("bundle");
    let off = [
        "--set",
        "probe.enabled=false",
        "--set",
        "log.path=\"/nonexistent/log\"",
    ];
    let out = run(in_ns(&ns)
        .args(off)
        .args(["diagnose", "--save"])
        .arg(&dir)
        .arg("--pia-settings")
        .arg(&settings));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_saved_linux_bundle(&dir);
    // The saved folder, judged anywhere, says what the namespace's own discovery says.
    let (code, got) = from_json(&dir);
    assert_eq!(code, Some(0), "{got}");
    assert_eq!(got["physical"]["interface"], "phys0");
    assert_eq!(
        got["physical"]["gateway"],
        crate::common::GATEWAY.to_string()
    );
    assert_eq!(got["tunnel"]["interface"], "utun0");
    assert_eq!(got["vpn_routes_everything"], true);
    let live = run(in_ns(&ns).args(off).arg("diagnose"));
    let live = String::from_utf8_lossy(&live.stdout);
    let measured = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.contains("the physical interface is") || l.contains("tunnel is"))
            .map(|l| l.trim_start_matches("Measured: ").to_owned())
            .collect()
    };
    let saved: Vec<String> = got["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(measured(&live), measured(&saved.join("\n")), "live: {live}");
    assert_eq!(measured(&live).len(), 2, "{live}");
    // And its report names the Linux facts.
    let text = report(&dir, &[]);
    assert!(text.starts_with("# Linux split tunnel: "), "{text}");
    assert!(text.contains("- VPN protocol: OpenVPN (UDP)"), "{text}");
    assert!(text.contains("0.0.0.0/1 via 10.16.0.1 dev utun0"), "{text}");
}

fn as_nobody(script: &str) {
    let out = Command::new("setpriv")
        .args([
            "--reuid",
            NOBODY,
            "--regid",
            NOBODY,
            "--clear-groups",
            "sh",
            "-c",
            script,
        ])
        .output()
        .unwrap_or_else(|e| panic!("this test needs setpriv (util-linux): {e}"));
    assert!(
        out.status.success(),
        "as nobody: {script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn links_a_local_user_plants_in_tmp_are_never_followed() {
    assert!(
        unsafe { libc::geteuid() } == 0,
        "this test runs the agent as root against a user `nobody` (run the tests as root)"
    );
    // A sticky world-writable folder standing for /tmp, and a folder of root's the attacker
    // would like root to write into.
    let tmp = tempfile::tempdir().unwrap();
    let shared = tmp.path().join("tmp");
    std::fs::create_dir(&shared).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let victim = tmp.path().join("root-only");
    std::fs::create_dir(&victim).unwrap();
    let s = shared.display();
    let v = victim.display();
    as_nobody(&format!(
        "ln -s {v} {s}/bundle && mkdir {s}/mine && ln -s {v}/x {s}/mine/sw_vers.txt && ln -s {v} {s}/up"
    ));
    let attempts = [
        (shared.join("bundle"), "symbolic link"),
        (shared.join("mine"), "owned by uid 65534"),
        (shared.join("up/bundle"), "a symbolic link of uid 65534"),
    ];
    for (target, why) in attempts {
        let out = run(bin()
            .args(["diagnose", "--from"])
            .arg(mac_bundle())
            .arg("--save")
            .arg(&target));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "{}: saved", target.display());
        assert!(stderr.contains(why), "{}: {stderr}", target.display());
    }
    assert_eq!(
        std::fs::read_dir(&victim).unwrap().count(),
        0,
        "nothing written through a link"
    );
}
