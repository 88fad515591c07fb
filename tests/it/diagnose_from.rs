//! `diagnose --from DIR --json` on the matrix of whole Macs under `tests/fixtures/macs/`: each
//! folder holds what `netstat -rn -f inet` and `ifconfig -a` printed (sources in its
//! `SOURCE.md`) and the choice discovery must make (`expected.json`).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn macs() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/macs");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

fn diagnose(dir: &Path) -> (Option<i32>, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_pia-split-tunnel-exporter"))
        .args(["diagnose", "--from"])
        .arg(dir)
        .arg("--json")
        .env_remove("PIA_STE_CONFIG")
        .output()
        .unwrap();
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{}: {e}\nstdout: {}\nstderr: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), json)
}

#[test]
fn every_mac_in_the_matrix_is_judged_right() {
    let dirs = macs();
    assert!(dirs.len() >= 8, "the matrix has {} Macs", dirs.len());
    let mut wrong = Vec::new();
    for dir in &dirs {
        let expected: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap())
                .unwrap();
        assert!(
            dir.join("SOURCE.md").is_file(),
            "{}: no SOURCE.md",
            dir.display()
        );
        let (code, got) = diagnose(dir);
        let physical = got["physical"]
            .as_object()
            .map(|p| serde_json::json!({"interface": p["interface"], "gateway": p["gateway"]}));
        let seen = serde_json::json!({
            "physical": physical,
            "tunnel": got["tunnel"].as_object().map(|t| serde_json::json!({"interface": t["interface"]})),
            "vpn_routes_everything": got["vpn_routes_everything"],
            "certain": got["certain"],
        });
        if seen != expected {
            wrong.push(format!(
                "{}: expected {expected}, got {seen}",
                dir.display()
            ));
        }
        let certain = expected["certain"].as_bool().unwrap();
        assert_eq!(code, Some(if certain { 0 } else { 3 }), "{}", dir.display());
        let sentences: Vec<&str> = got["sentences"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap())
            .collect();
        assert_eq!(
            sentences.iter().any(|s| s.contains("uncertain")),
            !certain,
            "{}: {sentences:?}",
            dir.display()
        );
        assert!(got["sessions_verdict"].is_string(), "{got}");
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn a_headerless_table_is_an_error_not_a_misread() {
    let dir = std::env::temp_dir().join(format!("diagnose-from-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = macs().into_iter().find(|d| d.ends_with("vpn-off")).unwrap();
    std::fs::copy(src.join("ifconfig.txt"), dir.join("ifconfig.txt")).unwrap();
    // The Refs/Use layout without its header (bettercap/bettercap#23's rows): Netif is the
    // sixth column there, so reading it as the default layout would take `48` for Netif.
    std::fs::write(
        dir.join("netstat-rn.txt"),
        "default            10.0.15.1          UGSc           48        0     en0\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pia-split-tunnel-exporter"))
        .args(["diagnose", "--from"])
        .arg(&dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("before any header"), "{stderr}");
}
