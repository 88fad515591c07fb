//! What a release needs is there and agrees: licences, package metadata, the changelog, the
//! Homebrew formula, `--version`, and the README's table of config keys against
//! `check-config`.

mod common;

use std::path::Path;
use std::process::Command;

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(rel))
        .unwrap_or_else(|e| panic!("{rel}: {e}"))
}

#[test]
fn licences_metadata_and_changelog() {
    let manifest: toml::Table = read("Cargo.toml").parse().unwrap();
    let package = manifest["package"].as_table().unwrap();
    assert_eq!(package["license"].as_str(), Some("MIT OR Apache-2.0"));
    assert!(read("LICENSE-MIT").starts_with("MIT License"));
    assert!(read("LICENSE-APACHE").contains("Apache License\n                        Version 2.0"));
    for key in ["description", "repository", "readme", "rust-version"] {
        assert!(package.get(key).and_then(|v| v.as_str()).is_some(), "{key}");
    }
    for key in ["keywords", "categories"] {
        let list = package[key].as_array().unwrap();
        assert!(
            !list.is_empty() && list.len() <= 5,
            "crates.io allows 5 {key}"
        );
    }
    let changelog = read("CHANGELOG.md");
    assert!(changelog.contains("## [Unreleased]"));
    assert!(
        changelog.contains(&format!("## [{}]", env!("CARGO_PKG_VERSION"))),
        "the current version has a section"
    );
}

#[test]
fn homebrew_formula_builds_with_cargo_and_runs_as_a_root_service() {
    let f = read("Formula/pia-split-tunnel-exporter.rb");
    for needle in [
        "class PiaSplitTunnelExporter < Formula",
        "license any_of: [\"MIT\", \"Apache-2.0\"]",
        "depends_on \"rust\" => :build",
        "system \"cargo\", \"install\", *std_cargo_args",
        "service do",
        "require_root true",
        "keep_alive true",
        "log_path ",
        "error_log_path ",
        "test do",
        "\"demo\"",
        "/metrics",
    ] {
        assert!(f.contains(needle), "the formula lacks {needle}");
    }
    // What it installs exists.
    for rel in ["launchd/config.toml", "dashboards", "alerts"] {
        assert!(f.contains(rel) && Path::new(env!("CARGO_MANIFEST_DIR")).join(rel).exists());
    }
    let manifest: toml::Table = read("Cargo.toml").parse().unwrap();
    let repo = manifest["package"]["repository"].as_str().unwrap();
    assert!(
        f.contains(&format!("homepage \"{repo}\"")),
        "one repository address"
    );
}

#[test]
fn version_names_the_revision_and_the_compiler() {
    let out = Command::new(common::BIN).arg("--version").output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let git = |args: &[&str]| {
        let o = Command::new("git")
            .arg("-C")
            .arg(env!("CARGO_MANIFEST_DIR"))
            .args(args)
            .output()
            .expect("git");
        String::from_utf8(o.stdout).unwrap().trim().to_owned()
    };
    let rustc = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .arg("--version")
        .output()
        .unwrap();
    let rustc = String::from_utf8(rustc.stdout).unwrap().trim().to_owned();
    // Tests run from a git checkout: the build must have found its revision.
    let head = git(&["rev-parse", "--short=12", "HEAD"]);
    assert_eq!(head.len(), 12, "not a git checkout?");
    assert_eq!(
        text.trim(),
        format!(
            "pia-split-tunnel-exporter {} (revision {head}, {rustc})",
            env!("CARGO_PKG_VERSION")
        )
    );
}
