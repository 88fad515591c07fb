//! What a release needs is there and agrees: licences, package metadata, the changelog, the
//! Homebrew formula, `--version`, docs/configuration.md's table of config keys against
//! `check-config`, and a short README whose links, like every doc's, lead somewhere.

use crate::common;

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

/// Splits a table cell's list at the commas outside backticks and brackets.
fn items(cell: &str) -> Vec<String> {
    let (mut out, mut cur, mut tick, mut depth) = (Vec::new(), String::new(), false, 0i32);
    for c in cell.chars() {
        match c {
            '`' => tick = !tick,
            '[' if !tick => depth += 1,
            ']' if !tick => depth -= 1,
            ',' if !tick && depth == 0 => {
                out.push(cur.trim().to_owned());
                cur.clear();
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push(cur.trim().to_owned());
    out
}

/// docs/configuration.md's table as (`section.key`, default as written).
fn documented_defaults() -> Vec<(String, String)> {
    let readme = read("docs/configuration.md");
    let table = &readme[readme.find("\n| key |").expect("a table of keys")..];
    let mut rows = Vec::new();
    for line in table.lines().skip_while(|l| !l.starts_with('|')) {
        if !line.starts_with('|') {
            break;
        }
        let cells: Vec<&str> = line.split(" | ").collect();
        let key_cell = cells[0].trim_start_matches('|').trim();
        if !key_cell.starts_with('`') {
            continue; // the header and its rule
        }
        let keys = items(key_cell);
        let defaults = items(cells[1]);
        let section = keys[0]
            .trim_matches('`')
            .split_once('.')
            .unwrap()
            .0
            .to_owned();
        for (i, key) in keys.iter().enumerate() {
            let key = key.trim_matches('`');
            let full = if key.contains('.') {
                key.to_owned()
            } else {
                format!("{section}.{key}")
            };
            // One word for several keys ("discovered") applies to each.
            let default = defaults.get(i).or(defaults.first()).unwrap().clone();
            assert!(
                defaults.len() == keys.len() || defaults.len() == 1,
                "{line}: {} keys, {} defaults",
                keys.len(),
                defaults.len()
            );
            rows.push((full, default));
        }
    }
    rows
}

#[test]
fn documented_config_table_matches_check_config() {
    let out = common::run_bin(&["check-config"], &[]);
    let effective: toml::Table = String::from_utf8(out.stdout).unwrap().parse().unwrap();
    let rows = documented_defaults();
    assert!(rows.len() > 30, "the table was found: {rows:?}");
    for (key, written) in &rows {
        let (section, name) = key.split_once('.').unwrap();
        let actual = effective.get(section).and_then(|s| s.get(name));
        match written.strip_prefix('`').and_then(|w| w.strip_suffix('`')) {
            // A literal: TOML syntax, or a bare string (paths, addresses).
            Some(literal) => {
                let actual = actual.unwrap_or_else(|| panic!("{key} = {written} is not set"));
                let value = format!("v = {literal}")
                    .parse::<toml::Table>()
                    .map(|mut t| t.remove("v").unwrap())
                    .unwrap_or_else(|_| toml::Value::String(literal.to_owned()));
                let same = match (&value, actual) {
                    (toml::Value::Integer(_) | toml::Value::Float(_), _) => {
                        let f = |v: &toml::Value| {
                            v.as_float().or_else(|| v.as_integer().map(|i| i as f64))
                        };
                        f(&value) == f(actual)
                    }
                    _ => value == *actual,
                };
                assert!(
                    same,
                    "docs/configuration.md says {key} = {literal}, check-config says {actual}"
                );
            }
            // A word ("none", "discovered"): the key has no value of its own.
            None => assert!(
                actual.is_none(),
                "docs/configuration.md says {key} is {written}, check-config says {}",
                actual.unwrap()
            ),
        }
    }
    // And every key check-config prints is in the table.
    for (section, keys) in &effective {
        for name in keys.as_table().unwrap().keys() {
            let key = format!("{section}.{name}");
            assert!(
                rows.iter().any(|(k, _)| *k == key),
                "{key} is missing from docs/configuration.md's table"
            );
        }
    }
}

/// The sessions verdict's keys moved from `[fallback]` to `[sessions]`: a config written for
/// the old section still loads, `check-config` shows the keys where they are now, and the
/// agent's log says which key to move.
#[test]
fn sessions_keys_written_in_fallback_still_load_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.toml");
    std::fs::write(
        &file,
        "[fallback]\nmin_sessions = 9\nzero_byte_ratio = 0.6\n",
    )
    .unwrap();
    let out = common::run_bin(&["--config", file.to_str().unwrap(), "check-config"], &[]);
    let effective: toml::Table = String::from_utf8(out.stdout).unwrap().parse().unwrap();
    assert_eq!(effective["sessions"]["min_sessions"].as_integer(), Some(9));
    assert_eq!(
        effective["sessions"]["no_reply_ratio"].as_float(),
        Some(0.6)
    );
    assert!(effective["fallback"].get("min_sessions").is_none());
    let log = String::from_utf8_lossy(&out.stderr);
    for key in ["min_sessions", "no_reply_ratio"] {
        assert!(
            log.contains(&format!("sessions.{key}: move it to [sessions]")),
            "{log}"
        );
    }
}

/// The front door is for a Mac user: short, the demo and test commands first, and every
/// relative link of it and of the docs behind it leads to a file and heading that exist.
#[test]
fn the_readme_is_short_and_every_docs_link_resolves() {
    let readme = read("README.md");
    assert!(
        readme.lines().count() <= 250,
        "README: {} lines",
        readme.lines().count()
    );
    let head: Vec<&str> = readme.lines().take(6).collect();
    assert!(
        head.iter()
            .any(|l| l.starts_with("cargo run --release -- demo"))
    );
    assert!(head.iter().any(|l| l.starts_with("cargo test")));
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec!["README.md".to_owned(), "launchd/README.md".to_owned()];
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".md") {
            files.push(format!("docs/{name}"));
        }
    }
    let mut checked = 0;
    for file in &files {
        let text = read(file);
        let dir = Path::new(file).parent().unwrap();
        for (i, _) in text.match_indices("](") {
            let target: String = text[i + 2..].chars().take_while(|c| *c != ')').collect();
            if target.starts_with("http") || target.starts_with("mailto:") {
                continue;
            }
            let (path, frag) = target.split_once('#').unwrap_or((&target, ""));
            let linked = if path.is_empty() {
                file.clone()
            } else {
                let p = dir.join(path);
                assert!(
                    root.join(&p).exists(),
                    "{file}: link to {target}: no such file"
                );
                p.to_string_lossy().into_owned()
            };
            if !frag.is_empty() && linked.ends_with(".md") {
                let heads = common::markdown_anchors(&read(&linked));
                assert!(
                    heads.iter().any(|a| a == frag),
                    "{file}: link to {target}: no such heading"
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 20, "{checked} links checked");
}

/// What the command line says about a config it refuses: the flag that brought a wrong key
/// (not "config file (defaults)"), a missing file once; and `check-config` shows the keys
/// without a value as unset instead of hiding them.
#[test]
fn config_errors_name_their_source_once_and_check_config_shows_unset_keys() {
    let out = common::run_bin_exiting(&["--set", "log.max_appz=3", "check-config"], &[], &[2]);
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.starts_with("error: --set log.max_appz=3: unknown field `max_appz`"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    let out = common::run_bin_exiting(
        &["--config", "/nonexistent/config.toml", "check-config"],
        &[],
        &[2],
    );
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        err,
        "error: cannot read config file /nonexistent/config.toml: No such file or directory (os error 2)\n"
    );
    let out = common::run_bin(&["check-config"], &[("RUST_LOG", "")]);
    let text = String::from_utf8(out.stdout).unwrap();
    let fallback = &text[text.find("[fallback]\n").unwrap()..];
    let fallback = &fallback[..fallback.find("\n\n").unwrap_or(fallback.len())];
    for key in ["token_file", "instance"] {
        assert!(fallback.contains(&format!("\n# {key}: unset")), "{text}");
    }
    let effective: toml::Table = text.parse().unwrap();
    assert!(effective["fallback"].get("token_file").is_none());
}

/// Homebrew users are not second-class: wherever the runbooks or the operations guide's
/// "Logs, reload and stop" name the launchd script's label or log, the same paragraph (or
/// table) gives the Homebrew form, whose label and log are the formula's own.
#[test]
fn every_reload_restart_and_log_instruction_has_its_homebrew_form() {
    let formula = read("Formula/pia-split-tunnel-exporter.rb");
    assert!(formula.contains("log_path var/\"log/pia-split-tunnel-exporter.log\""));
    assert!(formula.contains("etc/\"pia-split-tunnel-exporter/config.toml\""));
    // brew services names a formula's job homebrew.mxcl.<formula>.
    let brew_label = "system/homebrew.mxcl.pia-split-tunnel-exporter";
    let brew_log = "$(brew --prefix)/var/log/pia-split-tunnel-exporter.log";
    let ops = read("docs/operations.md");
    let section = &ops[ops.find("## Logs, reload and stop").unwrap()..];
    let section = &section[..section[3..].find("\n## ").unwrap()];
    let runbooks = read("docs/runbooks.md");
    for (doc, text) in [
        ("operations.md", section),
        ("runbooks.md", runbooks.as_str()),
    ] {
        assert!(
            text.contains(brew_label) && text.contains(brew_log),
            "{doc}"
        );
        for block in text.split("\n\n") {
            let launchd = block.contains("system/io.github.pia-split-tunnel-exporter")
                || block.contains("`/var/log/pia-split-tunnel-exporter.log`");
            let brew = block.contains("homebrew.mxcl.pia-split-tunnel-exporter")
                || block.contains("brew services");
            assert!(!launchd || brew, "{doc}: no Homebrew form in: {block}");
        }
    }
}
