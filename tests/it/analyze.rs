//! `analyze` reports exactly the counts the generator wrote down.

use crate::common;

use std::process::Output;

use common::{assert_subset, fixture, generate, run_bin_exiting, sessions_of};
use serde_json::Value;

/// Runs `analyze`; it exits 0, or 1 when the sessions verdict says the bypass is broken.
fn run_bin(args: &[&str], env: &[(&str, &str)]) -> Output {
    run_bin_exiting(args, env, &[0, 1])
}

fn analyze_json(files: &[&std::path::Path], extra: &[&str]) -> Value {
    let mut args: Vec<&str> = vec!["analyze", "--json"];
    args.extend_from_slice(extra);
    let paths: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
    args.extend(paths.iter().map(String::as_str));
    serde_json::from_slice(&run_bin(&args, &[]).stdout).expect("analyze --json prints JSON")
}

#[test]
fn shipped_samples_match_their_expected_counts() {
    for profile in ["healthy", "broken", "mixed"] {
        let got = analyze_json(&[&fixture(&format!("{profile}.log"))], &[]);
        let expected: Value = serde_json::from_str(
            &std::fs::read_to_string(fixture(&format!("{profile}.expected.json"))).unwrap(),
        )
        .unwrap();
        assert_subset(&expected, &got, profile);
        assert_eq!(got["_summary"]["unrecognized_lines"], 0, "{profile}");
    }
}

#[test]
fn generated_logs_match_across_seeds() {
    let dir = tempfile::tempdir().unwrap();
    for profile in ["healthy", "broken", "mixed"] {
        for seed in [11, 12, 13] {
            let (log, expected) = generate(dir.path(), profile, 400, seed);
            let got = analyze_json(&[&log], &[]);
            assert_subset(&expected, &got, &format!("{profile}/{seed}"));
        }
    }
}

#[test]
fn verdict_names_the_failure() {
    let broken = analyze_json(&[&fixture("broken.log")], &[]);
    assert_eq!(
        broken["_summary"]["verdict"],
        "broken: 100% of 80 sessions got no reply; 100% of 80 closed with zero bytes both ways"
    );
    let healthy = analyze_json(&[&fixture("healthy.log")], &[]);
    assert_eq!(
        healthy["_summary"]["verdict"],
        "working: 5% of 80 sessions got no reply; 5% of 80 closed with zero bytes both ways"
    );
    // Half the sessions fail in every app: read "bypass working" before sessions were judged
    // by what they received; never working now.
    let mixed = analyze_json(&[&fixture("mixed.log")], &[]);
    let said = mixed["_summary"]["verdict"].as_str().unwrap();
    assert!(
        said.starts_with("inconclusive: 50% of 80 sessions got no reply (")
            && said.contains("com.plexapp.plexmediaserver 48% of 25"),
        "{said}"
    );
    let out = run_bin(
        &["analyze", &fixture("broken.log").display().to_string()],
        &[],
    );
    // Like `probe`: exit 1 on "broken", 0 otherwise.
    assert_eq!(out.status.code(), Some(1));
    let table = String::from_utf8(out.stdout).unwrap();
    for other in ["healthy.log", "mixed.log"] {
        let out = run_bin(&["analyze", &fixture(other).display().to_string()], &[]);
        assert_eq!(out.status.code(), Some(0), "{other}");
    }
    assert!(
        table.contains("verdict: broken: 100% of 80 sessions"),
        "{table}"
    );
    assert!(table.contains("com.plexapp.plexmediaserver"), "{table}");
}

fn analyze_text(text: &str) -> (Value, Option<i32>) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("transparent_proxy.log");
    std::fs::write(&log, text).unwrap();
    let json = analyze_json(&[&log], &[]);
    let code = run_bin(&["analyze", &log.display().to_string()], &[])
        .status
        .code();
    (json, code)
}

/// PIA's own report (#93): creation, ioOnClosedChannel, `rxBytes=0 MB txBytes=0 MB`. Forty
/// such sessions read "bypass working: 0% of 40 closed with zero bytes" and exited 0.
#[test]
fn forty_sessions_as_in_pias_report_are_broken() {
    let (json, code) = analyze_text(&sessions_of("pia-desktop-93.txt", 40));
    let s = &json["_summary"];
    assert_eq!(
        s["verdict"],
        "broken: 100% of 40 sessions got no reply; 0% of 40 closed with zero bytes both ways"
    );
    assert_eq!(code, Some(1));
    // Byte accounting stays exact: `0 MB` is not zero bytes.
    let plex = &json["com.plexapp.plexmediaserver"]["tcp"];
    assert_eq!(
        (
            plex["zero_byte_closures"].as_u64(),
            plex["no_reply_closures"].as_u64()
        ),
        (Some(0), Some(40))
    );
    assert_eq!(s["sessions"]["state"], "broken");
    assert_eq!(s["unrecognized_lines"], 0);
}

/// The seed's three shapes together: every session received nothing, but a fifth of the
/// closes print `0 MB` (80% zero bytes both ways read "bypass working" before).
#[test]
fn the_seeds_failure_shapes_are_broken_and_attributed() {
    let (json, code) = analyze_text(&sessions_of("seed-failure-shapes.txt", 8));
    let s = &json["_summary"];
    assert_eq!(
        s["verdict"],
        "broken: 100% of 40 sessions got no reply; 80% of 40 closed with zero bytes both ways"
    );
    assert_eq!(code, Some(1));
    // The connect timeouts' creation lines are missing: their destructor names Plex.
    assert!(json.get("unknown").is_none(), "{json}");
    let plex = &json["com.plexapp.plexmediaserver"]["tcp"];
    assert_eq!(plex["errors"]["connect_timeout"], 8);
    assert_eq!(plex["no_reply_closures"], 24);
}

/// A third to a half of the sessions fail: inconclusive or partial, naming the failing app,
/// never working.
#[test]
fn a_log_where_a_third_to_half_fail_is_never_working() {
    let healthy = std::fs::read_to_string(fixture("healthy.log")).unwrap();
    for (copies, want) in [
        (
            40,
            "inconclusive: 37% of 120 sessions got no reply; no reply: \
             com.plexapp.plexmediaserver 67% of 60, com.apple.Safari.SafeBrowsing 29% of 14; \
             working: com.apple.Safari, com.backblaze.bzserv, com.noip.DUC",
        ),
        (
            60,
            "partial: 46% of 140 sessions got no reply; no reply: com.plexapp.plexmediaserver \
             75% of 80; working: com.apple.Safari, com.backblaze.bzserv, com.noip.DUC",
        ),
    ] {
        let (json, code) =
            analyze_text(&(healthy.clone() + &sessions_of("pia-desktop-93.txt", copies)));
        let said = json["_summary"]["verdict"].as_str().unwrap();
        assert!(said.starts_with(want), "{said}");
        assert_eq!(code, Some(0), "{said}");
    }
}

/// A rotation mid-session: the archive `.1` holds the start, the live file the rest. Given in
/// either order, the archive is read first and every session is whole again.
#[test]
fn archive_and_live_file_make_one_log() {
    let dir = tempfile::tempdir().unwrap();
    let (log, expected) = generate(dir.path(), "mixed", 600, 5);
    let text = std::fs::read(&log).unwrap();
    let mut cut = text.len() / 2;
    while text[cut - 1] != b'\n' {
        cut += 1;
    }
    let live = dir.path().join("transparent_proxy.log");
    let archive = dir.path().join("transparent_proxy.log.1");
    std::fs::write(&archive, &text[..cut]).unwrap();
    std::fs::write(&live, &text[cut..]).unwrap();
    let got = analyze_json(&[&live, &archive], &[]);
    assert_subset(&expected, &got, "rotated");
    // The live file alone starts mid-session: closes without their creation line still count,
    // under the app the destructor line names.
    let alone = analyze_json(&[&live], &[]);
    let closed: u64 = expected
        .as_object()
        .unwrap()
        .values()
        .flat_map(|p| p.as_object().unwrap().values())
        .map(|c| c["sessions_closed"].as_u64().unwrap())
        .sum();
    let closed_alone: u64 = alone
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| !k.starts_with('_'))
        .flat_map(|(_, p)| p.as_object().unwrap().values())
        .map(|c| c["sessions_closed"].as_u64().unwrap())
        .sum();
    assert!(
        closed_alone > closed / 3 && closed_alone < closed,
        "{closed_alone} of {closed}"
    );
}

#[test]
fn app_flood_is_capped() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("flood.log");
    let mut text = String::new();
    for id in 1..=200 {
        text.push_str(&format!(
            "[2026-02-16 11:49:31:4330] [ChannelCreatorTCP.swift:50] debug: id: {id} com.flood.app{id} Creating, binding and connecting a new TCP socket - endpoint: 203.0.113.5:443 with bindIp: 10.0.15.15\r\n\
[2026-02-16 11:49:31:5330] [ProxySessionTCP.swift:31] debug: id: {id} Destructor: ProxySession closed. rxBytes=Zero KB txBytes=Zero KB com.flood.app{id}\r\n"
        ));
    }
    std::fs::write(&log, text).unwrap();
    let got = analyze_json(&[&log], &["--set", "log.max_apps=64"]);
    let apps: Vec<&String> = got
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| !k.starts_with('_'))
        .collect();
    assert_eq!(apps.len(), 65, "64 apps and `other`: {apps:?}");
    assert_eq!(got["other"]["tcp"]["sessions_opened"], 136);
    assert_eq!(got["other"]["tcp"]["zero_byte_closures"], 136);
    let prom = String::from_utf8(
        run_bin(
            &[
                "analyze",
                "--prom",
                "--set",
                "log.max_apps=64",
                &log.display().to_string(),
            ],
            &[],
        )
        .stdout,
    )
    .unwrap();
    assert!(
        prom.contains("pia_split_tunnel_apps_folded_total 136\n"),
        "{prom}"
    );
}

/// The whole text of the metrics after the mixed sample, compared with a reviewed copy.
#[test]
fn metrics_text_matches_golden() {
    let out = run_bin(
        &[
            "analyze",
            "--prom",
            &fixture("mixed.log").display().to_string(),
        ],
        &[("TZ", "UTC")],
    );
    let got = String::from_utf8(out.stdout).unwrap();
    let golden_path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/metrics_mixed.prom");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden_path, &got).unwrap();
    }
    let golden =
        std::fs::read_to_string(&golden_path).expect("golden file (UPDATE_GOLDEN=1 writes it)");
    assert_eq!(
        got, golden,
        "metrics text changed; review and run with UPDATE_GOLDEN=1"
    );
}

/// A 10 MB line (NULs and invalid UTF-8 in it) in the middle and another without a newline at
/// the end: both are skipped and counted, every other line is read, memory stays small.
#[test]
fn ten_megabyte_lines_are_skipped_and_the_stream_resynchronizes() {
    let dir = tempfile::tempdir().unwrap();
    let sample = std::fs::read(fixture("healthy.log")).unwrap();
    let mid = sample.len() / 2
        + sample[sample.len() / 2..]
            .iter()
            .position(|&b| b == b'\n')
            .unwrap()
        + 1;
    let junk: Vec<u8> = (0..10_000_000u32)
        .map(|i| [b'x', 0, 0xff, b'\r'][(i % 4) as usize])
        .collect();
    let log = dir.path().join("long.log");
    std::fs::write(
        &log,
        [&sample[..mid], &junk, b"\n", &sample[mid..], &junk].concat(),
    )
    .unwrap();
    let out = run_bin(
        &["analyze", "--json", "--stats", &log.display().to_string()],
        &[],
    );
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("healthy.expected.json")).unwrap())
            .unwrap();
    assert_subset(&expected, &got, "healthy with long lines");
    assert_eq!(got["_summary"]["lines_too_long"], 2);
    assert_eq!(got["_summary"]["unrecognized_lines"], 0);
    let peak_rss = |stderr: Vec<u8>| -> f64 {
        let stats = String::from_utf8(stderr).unwrap();
        stats
            .split("peak RSS ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no peak RSS in {stats}"))
    };
    let rss = peak_rss(out.stderr);
    // The same lines without the two 10 MB ones: the binary's own footprint, which grows with
    // the agent's code. Holding either long line would add 10 MB over it.
    let short = dir.path().join("short.log");
    std::fs::write(&short, &sample).unwrap();
    let baseline = peak_rss(
        run_bin(
            &["analyze", "--json", "--stats", &short.display().to_string()],
            &[],
        )
        .stderr,
    );
    assert!(
        rss < baseline + 4.0,
        "peak RSS {rss} MB for a 20 MB file of long lines, {baseline} MB without them"
    );
}
