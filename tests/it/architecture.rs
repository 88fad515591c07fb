//! The import graph of `src/`: no cycle among top-level modules, and every `crate::X` reference
//! goes down, never up or sideways (`docs/architecture.md` draws the same house).
//!
//! - The ground floor ([`GROUND`]): the OS seam with the trusted-file rules and the atomic
//!   store, the range checks, the metrics toolkit, labels, logging and the build's facts.
//!   Anything may import it; it imports nothing above it.
//! - Two columns on it, side by side: the log's ([`LOG_COLUMN`]: `tail` → `proxy_log` →
//!   `sessions` → `log_state` (with its collector) → `ingest`, and `analyze`, ingest's offline
//!   twin) and the network's ([`NETWORK_COLUMN`]: `netwatch`, `probe`, `presence`). A column
//!   imports its own lower floors and the ground floor, never the other column and never
//!   what stands above.
//! - Above both ([`ABOVE`]): what joins them (`health`, `fallback`, `status`, `agent`), the
//!   server and config they are served and set up by, and the surfaces (`daemon`, `demo`,
//!   `commands`, `cli`).
//!
//! `docs/architecture.md` names every module; [`the_map_names_every_module`] holds it to that.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Above the columns, top to bottom; each may import the floors below it, both columns and
/// the ground floor.
const ABOVE: &[&[&str]] = &[
    &["cli"],
    &["commands"],
    &["daemon", "demo"],
    &["agent"],
    &["config"],
    &["status"],
    &["health"],
    &["fallback"],
    &["server"],
];

/// The log column, top to bottom.
const LOG_COLUMN: &[&[&str]] = &[
    &["analyze"],
    &["ingest"],
    &["log_state"],
    &["sessions"],
    &["proxy_log", "tail"],
];

/// The network column, top to bottom: its three stages do not import each other.
const NETWORK_COLUMN: &[&[&str]] = &[&["netwatch", "presence", "probe"]];

/// The ground floor, top to bottom.
const GROUND: &[&[&str]] = &[
    &["metrics", "os"],
    &["build_info", "check", "logging"],
    &["labels"],
];

/// Where a module stands: its part of the house and its floor there (0 = top).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    Above,
    LogColumn,
    NetworkColumn,
    Ground,
}

const PARTS: [(Part, &[&[&str]]); 4] = [
    (Part::Above, ABOVE),
    (Part::LogColumn, LOG_COLUMN),
    (Part::NetworkColumn, NETWORK_COLUMN),
    (Part::Ground, GROUND),
];

fn place(module: &str) -> Option<(Part, usize)> {
    PARTS.iter().find_map(|(part, floors)| {
        floors
            .iter()
            .position(|f| f.contains(&module))
            .map(|floor| (*part, floor))
    })
}

/// May `from` import `to`? Down within its part, from a column to the ground floor, from
/// above to anything below; never between the columns, never up.
fn may_import(from: (Part, usize), to: (Part, usize)) -> bool {
    use Part::*;
    match (from.0, to.0) {
        (a, b) if a == b => to.1 > from.1,
        (Above, _) => true,
        (LogColumn | NetworkColumn, Ground) => true,
        _ => false,
    }
}

/// Modules referenced as `crate::X` or `crate::{X, ...}` outside comments.
fn references(text: &str) -> BTreeSet<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        for (i, _) in code.match_indices("crate::") {
            // `pia_split_tunnel_exporter::crate::` cannot occur; `$crate::` is a macro path.
            if code[..i].ends_with('$') {
                continue;
            }
            let rest = &code[i + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let group = group.split('}').next().unwrap_or("");
                out.extend(
                    group
                        .split(',')
                        .map(|item| ident(item.trim()))
                        .filter(|m| !m.is_empty()),
                );
            } else {
                let m = ident(rest);
                if !m.is_empty() {
                    out.insert(m);
                }
            }
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Top-level module → the top-level modules it references.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let rel = file.strip_prefix(&src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_str()
            .unwrap();
        let module = first.trim_end_matches(".rs").to_owned();
        if module == "lib" || module == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let refs = graph.entry(module.clone()).or_default();
        refs.extend(references(&text).into_iter().filter(|m| *m != module));
    }
    graph
}

/// A cycle through `graph`, if there is one, as the path that closes it.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        m: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        done: &mut BTreeSet<String>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == m) {
            let mut cycle = path[at..].to_vec();
            cycle.push(m.to_owned());
            return Some(cycle);
        }
        if done.contains(m) {
            return None;
        }
        path.push(m.to_owned());
        for next in graph.get(m).into_iter().flatten() {
            if let Some(c) = visit(next, graph, done, path) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(m.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|m| visit(m, graph, &mut done, &mut Vec::new()))
}

#[test]
fn every_module_has_a_place() {
    let graph = graph();
    let unplaced: Vec<&String> = graph.keys().filter(|m| place(m).is_none()).collect();
    assert!(unplaced.is_empty(), "modules without a place: {unplaced:?}");
    // The lists name no module that is gone, and each module once.
    let mut seen = BTreeSet::new();
    for m in PARTS
        .iter()
        .flat_map(|(_, floors)| floors.iter().flat_map(|f| f.iter()))
    {
        assert!(graph.contains_key(*m), "{m} is placed but not in src/");
        assert!(seen.insert(*m), "{m} is placed twice");
    }
}

#[test]
fn no_import_cycle() {
    let graph = graph();
    assert_eq!(find_cycle(&graph), None);
}

#[test]
fn imports_only_go_down_and_never_between_the_columns() {
    let mut against = Vec::new();
    for (from, refs) in graph() {
        let Some(from_place) = place(&from) else {
            continue;
        };
        for to in refs {
            match place(&to) {
                Some(to_place) if may_import(from_place, to_place) => {}
                _ => against.push(format!("{from} -> {to}")),
            }
        }
    }
    assert!(
        against.is_empty(),
        "imports against the house: {against:#?}"
    );
}

/// Every `src/` module (each file, each folder) is named in `docs/architecture.md`: a
/// top-level one by a code-map heading (`### `name``), a file below it by its path under
/// `src/` (`tail/follower.rs`).
#[test]
fn the_map_names_every_module() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/architecture.md")).unwrap();
    let src = root.join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut missing = Vec::new();
    for module in graph().keys() {
        if !doc.contains(&format!("### `{module}`")) {
            missing.push(format!("### `{module}`"));
        }
    }
    for file in files {
        let rel = file
            .strip_prefix(&src)
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        if rel.contains('/') && !doc.contains(&format!("`{rel}`")) {
            missing.push(rel);
        }
    }
    assert!(
        missing.is_empty(),
        "docs/architecture.md does not name: {missing:#?}"
    );
    // And `lib.rs` points to it.
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    assert!(lib.contains("docs/architecture.md"));
}

/// The checks themselves: a grouped import, a doc comment, a cycle.
#[test]
fn the_checks_see_what_they_must() {
    let refs = references(
        "use crate::{tail::Cursor, os};\n/// see crate::agent\nlet x = crate::probe::Round::default(); // crate::demo\n",
    );
    assert_eq!(
        refs.into_iter().collect::<Vec<_>>(),
        ["os", "probe", "tail"]
    );
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("c".into());
    g.entry("c".into()).or_default();
    assert_eq!(find_cycle(&g), None);
    g.entry("c".into()).or_default().insert("a".into());
    assert_eq!(
        find_cycle(&g),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
    // Probe may not import the log side, nor tail the network side, nor anything the agent.
    let p = |m| place(m).unwrap();
    assert!(!may_import(p("probe"), p("sessions")));
    assert!(!may_import(p("tail"), p("probe")));
    assert!(!may_import(p("ingest"), p("health")));
    assert!(!may_import(p("os"), p("tail")));
    assert!(!may_import(p("sessions"), p("log_state")));
    assert!(may_import(p("ingest"), p("sessions")));
    assert!(may_import(p("probe"), p("os")));
    assert!(may_import(p("health"), p("probe")) && may_import(p("health"), p("ingest")));
}
