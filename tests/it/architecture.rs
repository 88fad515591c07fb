//! The import graph of `src/`: no cycle among top-level modules, and every `crate::X` reference
//! goes down the layers below, never up or sideways.
//!
//! The layers follow the data flow (README, "Architecture"): commands → agent → ingest →
//! health → fallback → probe → presence → metrics → pipeline → sessions → proxy_log / tail /
//! os. The modules that are not stages sit where their imports put them:
//! - `cli` on top: it parses and dispatches to `commands`;
//! - `daemon` and `demo` between `commands` and `agent`: each runs the real agent (under the
//!   admin's signals, or on replayed logs);
//! - `config` below `agent`: the file holds every stage's section, so it sits above them all;
//! - `status` (the page at `/`) below `config`, over the stages it shows;
//! - `http` below `config` (which holds `[http]`): the agent's server, over `metrics`;
//! - `analyze`, the offline twin of `ingest`, just above it (it reads `[log]`);
//! - `logging` (the agent's own stderr, and the throttle of warnings every stage may use) and
//!   `build_info` at the bottom: they import nothing;
//! - `labels` (how fixed label sets are declared) below them all: every stage with a label set,
//!   `proxy_log` included, imports it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top to bottom; a module may reference only modules of lower layers.
const LAYERS: &[&[&str]] = &[
    &["cli"],
    &["commands"],
    &["daemon", "demo"],
    &["agent"],
    &["config"],
    &["status"],
    &["http"],
    &["analyze"],
    &["ingest"],
    &["health"],
    &["fallback"],
    &["probe"],
    &["presence", "netwatch"],
    &["metrics"],
    &["pipeline"],
    &["sessions"],
    &["proxy_log", "tail", "os", "build_info"],
    &["logging"],
    &["labels"],
];

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

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
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
fn every_module_has_a_layer() {
    let graph = graph();
    let unplaced: Vec<&String> = graph.keys().filter(|m| layer_of(m).is_none()).collect();
    assert!(unplaced.is_empty(), "modules without a layer: {unplaced:?}");
    // The list names no module that is gone.
    for m in LAYERS.iter().flat_map(|l| l.iter()) {
        assert!(graph.contains_key(*m), "{m} is in LAYERS but not in src/");
    }
}

#[test]
fn no_import_cycle() {
    let graph = graph();
    assert_eq!(find_cycle(&graph), None);
}

#[test]
fn imports_only_go_down_the_layers() {
    let mut against = Vec::new();
    for (from, refs) in graph() {
        let Some(from_layer) = layer_of(&from) else {
            continue;
        };
        for to in refs {
            match layer_of(&to) {
                Some(to_layer) if to_layer > from_layer => {}
                _ => against.push(format!("{from} -> {to}")),
            }
        }
    }
    assert!(
        against.is_empty(),
        "imports against the layering: {against:#?}"
    );
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
}
