//! `/`: the status page for the Mac's own user (no Prometheus, no Grafana).
//!
//! [`render`] is a pure function of a [`StatusView`] (plain data in words: the adapter has
//! already turned every label into a phrase); [`adapter`] builds the view from the agent's
//! health, session window, last probe round and fallback. The page is rendered by maud, which
//! escapes every interpolated string, with its CSS inline and no script or external asset (it
//! must work with no internet, and in a browser that is itself a bypass app, so the remedy is
//! on the page, not only behind the runbook link). It refreshes itself every 5 s and holds no
//! secret and no control.

pub mod adapter;

use std::borrow::Cow;

use maud::{DOCTYPE, Markup, PreEscaped, html};

use crate::health::Status;
use crate::sessions::verdict::percent;

/// The one-sentence state of the split tunnel, with its colour, runbook and remedy; its
/// snake_case name is the page's `data-tone`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::Display, strum::EnumIter)]
#[strum(serialize_all = "snake_case")]
pub enum Tone {
    Working,
    /// Broken, and the fallback's rules make it work.
    Repaired,
    Broken,
    /// Unbound traffic leaves outside the tunnel: the opposite emergency of `Broken`.
    VpnLeak,
    /// No probe round, and the sessions say partial or inconclusive.
    Failing,
    VpnDown,
    NoNetwork,
    /// The probe paths contradict each other.
    Undetermined,
    NotMeasured,
}

/// A remedy: prose and commands, in order; a command is shown as code to copy.
pub enum Part {
    Text(&'static str),
    Code(&'static str),
}

const APPLY: Part = Part::Code("sudo pia-split-tunnel-exporter fallback apply");
const RELOAD: Part = Part::Code("sudo pkill -HUP -x pia-split-tunnel-exporter");
const DIAGNOSE: Part = Part::Code("pia-split-tunnel-exporter diagnose");

impl Tone {
    /// A word or two, shown large.
    pub fn title(self) -> &'static str {
        match self {
            Tone::Working => "Working",
            Tone::Repaired => "Repaired",
            Tone::Broken => "Broken",
            Tone::VpnLeak => "VPN leak",
            Tone::Failing => "Some sessions fail",
            Tone::VpnDown => "VPN off",
            Tone::NoNetwork => "No network",
            Tone::Undetermined => "Undetermined",
            Tone::NotMeasured => "Not measured yet",
        }
    }

    pub fn sentence(self) -> &'static str {
        match self {
            Tone::Working => {
                "The split tunnel is working: bypass apps reach the internet directly, outside \
                 the VPN."
            }
            Tone::Repaired => {
                "The split tunnel was broken; the agent's repair (its fallback rules) makes \
                 bypass apps work again."
            }
            Tone::Broken => {
                "The split tunnel is broken: bypass apps' connections go into the VPN tunnel \
                 and get no reply."
            }
            Tone::VpnLeak => {
                "VPN leak: traffic that should go through the VPN leaves directly from this \
                 Mac's own address. The VPN's routes are missing; the split tunnel is not the \
                 cause."
            }
            Tone::Failing => {
                "Some bypass sessions get no reply (see the apps below); no probe has \
                 confirmed yet whether the split tunnel works."
            }
            Tone::VpnDown => {
                "The VPN is off: there is no tunnel to bypass, every app goes out directly."
            }
            Tone::NoNetwork => {
                "No network: no probe got out by any path (Wi-Fi off, a captive portal, or the \
                 network is down)."
            }
            Tone::Undetermined => {
                "Undetermined: the probes contradict each other, so the agent cannot tell \
                 whether the split tunnel works."
            }
            Tone::NotMeasured => {
                "Not measured yet: no probe round has run and too few bypass sessions have \
                 closed to judge."
            }
        }
    }

    fn colour(self) -> &'static str {
        match self {
            Tone::Working => "#1b7f3b",
            Tone::Repaired => "#1c6e80",
            Tone::Broken => "#b3261e",
            Tone::VpnLeak => "#7a1f6e",
            Tone::Failing | Tone::Undetermined => "#9a5a00",
            Tone::VpnDown => "#5f6368",
            Tone::NoNetwork => "#4a4a4a",
            Tone::NotMeasured => "#6b6b6b",
        }
    }

    /// The anchor of its section in `docs/runbooks.md`; `None` when all is well.
    pub fn runbook(self) -> Option<&'static str> {
        match self {
            Tone::Working => None,
            Tone::Repaired | Tone::Broken => Some("runbook-piasplittunnelbypassbroken"),
            Tone::VpnLeak => Some("runbook-piasplittunnelvpnleak"),
            Tone::Failing => Some("runbook-piasplittunnelsessionsfailing"),
            Tone::VpnDown => Some("status-page-vpn-off"),
            Tone::NoNetwork => Some("status-page-no-network"),
            Tone::Undetermined => Some("status-page-undetermined"),
            Tone::NotMeasured => Some("status-page-not-measured-yet"),
        }
    }

    /// What to do, on the page itself: the runbook's link may not load.
    pub fn remedy(self) -> &'static [Part] {
        match self {
            Tone::Working => &[],
            Tone::Repaired => &[
                Part::Text("Nothing to do. To remove the repair's rules by hand: "),
                Part::Code("sudo pia-split-tunnel-exporter fallback revert"),
            ],
            Tone::Broken => &[
                Part::Text("Repair it now: "),
                APPLY,
                Part::Text(". Or let the agent repair it by itself: set "),
                Part::Code("fallback.mode = \"auto\""),
                Part::Text(" in its config file, then reload it: "),
                RELOAD,
            ],
            Tone::VpnLeak => &[
                Part::Text(
                    "Disconnect and reconnect PIA, then check that the VPN's routes 0/1 and \
                     128/1 go through the tunnel (utun): ",
                ),
                Part::Code("netstat -rn -f inet"),
                Part::Text(". The repair (fallback) does not fix a leak."),
            ],
            Tone::Failing => &[
                Part::Text("See where bound traffic leaves: "),
                DIAGNOSE,
                Part::Text(". One app alone failing is often that app's servers."),
            ],
            Tone::VpnDown => &[Part::Text("Nothing to do: connect PIA to use the VPN.")],
            Tone::NoNetwork => &[Part::Text(
                "Check Wi-Fi or the cable. The agent probes again when the routes change.",
            )],
            Tone::Undetermined => &[Part::Text("See which path bound traffic takes: "), DIAGNOSE],
            Tone::NotMeasured => &[Part::Text(
                "Wait a few seconds for the first probe round; with probes off, open a bypass \
                 app so that its sessions can be judged.",
            )],
        }
    }
}

/// One health component, in words.
#[derive(Clone, Debug, PartialEq)]
pub struct HealthRow {
    pub name: String,
    pub status: Status,
    pub reason: String,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct AppRow {
    pub app: String,
    /// Proxied sessions closed in the last window, and those that got no reply.
    pub window_sessions: u64,
    pub window_zero: u64,
    /// Since the agent started (the numbers `analyze` gives).
    pub total_sessions: u64,
    /// Of them, those that got no reply.
    pub total_zero: u64,
    /// Bytes as the proxy logs them (`rxBytes`, `txBytes`), since start.
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// The most frequent error kinds, e.g. "timeout 12, refused 3".
    pub top_errors: String,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProbeRow {
    pub path: String,
    pub bound_to: String,
    pub egress: String,
    pub millis: u64,
    pub error: String,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct FallbackView {
    /// The mode and the backend, in words.
    pub mode: String,
    pub backend: String,
    pub active: bool,
    /// The rules in place (as `rules` prints them), empty when none.
    pub rules: String,
    /// Last decision and last action, one sentence each.
    pub last: Vec<String>,
}

/// When the verdict last changed: "14:02" today, "3 Dec, 14:02" before; and the same instant
/// in RFC 3339 for the `<time>` element.
#[derive(Clone, Debug, PartialEq)]
pub struct Since {
    pub words: String,
    pub rfc3339: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct StatusView {
    pub version: String,
    pub tone: Tone,
    pub since: Option<Since>,
    /// Worst first.
    pub components: Vec<HealthRow>,
    pub window_seconds: u64,
    pub apps: Vec<AppRow>,
    pub probe: Vec<ProbeRow>,
    pub fallback: Option<FallbackView>,
}

/// Longest string shown from a log or the OS; the rest is cut (an app id of 1 MB must not make
/// a page of 1 MB every 5 s).
pub const MAX_TEXT: usize = 200;

/// `s` cut to [`MAX_TEXT`] characters, marked with "…" when cut. Escaping is maud's.
pub fn cut(s: &str) -> Cow<'_, str> {
    match s.char_indices().nth(MAX_TEXT) {
        None => Cow::Borrowed(s),
        Some((end, _)) => Cow::Owned(format!("{}…", &s[..end])),
    }
}

/// Apps shown at most, worst first; the rest are counted.
pub const MAX_APPS: usize = 50;

/// Rules text lines shown at most.
const MAX_RULE_LINES: usize = 100;

/// Bytes in decimal units, as macOS (and the proxy's own log) counts them.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KB", "MB", "GB", "TB"];
    // A no-break space: a figure never wraps away from its unit.
    if n < 1000 {
        return format!("{n}\u{a0}B");
    }
    let mut value = n as f64 / 1000.0;
    let mut unit = 0;
    while value >= 999.5 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    if value < 10.0 {
        format!("{value:.1}\u{a0}{}", UNITS[unit])
    } else {
        format!("{value:.0}\u{a0}{}", UNITS[unit])
    }
}

/// Why: ids, reasons and commands may hold long tokens, which break anywhere rather than
/// widen the page past a phone's screen (`.id`, `.why`, `code`); headers and the short cells
/// (`.k`) break only between words. A table still too wide scrolls sideways in its own box.
const CSS: &str = "body{font-family:-apple-system,system-ui,sans-serif;margin:0;padding:1em;\
max-width:60em;color:#222;line-height:1.4}h1{font-size:1.2em;margin:0 0 .6em}\
h1 small{display:block;font-size:.7em;font-weight:normal;color:#666}\
h2{font-size:1.05em;margin-top:1.5em}\
.verdict{color:#fff;padding:.8em 1em;border-radius:.4em}.verdict b{font-size:1.3em;display:block}\
.remedy{border-left:.3em solid #999;padding:.2em .8em;margin:1em 0}\
code{background:#f0f0f0;color:#111;padding:0 .2em;border-radius:.2em;overflow-wrap:anywhere}\
.scroll{overflow-x:auto}table{border-collapse:collapse;width:100%;font-size:.9em}\
td,th{text-align:left;vertical-align:top;padding:.25em .4em;border-bottom:1px solid #ddd}\
th{font-weight:600}.id,.why{overflow-wrap:anywhere}tr.app td{border-bottom:0;padding-top:.6em}\
pre{background:#f4f4f4;padding:.5em;overflow-x:auto;font-size:.8em}\
.ok{color:#1b7f3b}.degraded{color:#9a5a00}.failing{color:#b3261e;font-weight:600}";

/// The whole page: head, verdict and remedy, then one section per source, then the links.
pub fn render(view: &StatusView) -> String {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta http-equiv="refresh" content="5";
                title { "PIA split tunnel: " (view.tone.title()) }
                style { (PreEscaped(CSS)) }
            }
            body {
                h1 { "PIA split tunnel" small { "pia-split-tunnel-exporter " (cut(&view.version)) } }
                (verdict(view))
                (health_table(&view.components))
                (apps_table(view.window_seconds, &view.apps))
                (probe_table(&view.probe))
                (fallback_section(view.fallback.as_ref()))
                (links(view.tone))
            }
        }
    }
    .into_string()
}

fn verdict(view: &StatusView) -> Markup {
    let tone = view.tone;
    html! {
        p.verdict #verdict data-tone=(tone) style={ "background:" (tone.colour()) } {
            b { (tone.title()) }
            (tone.sentence())
            @if let Some(since) = &view.since {
                " " small #since { "Since " time datetime=(since.rfc3339) { (since.words) } "." }
            }
        }
        @if !tone.remedy().is_empty() {
            p.remedy #remedy {
                @for part in tone.remedy() {
                    @match part {
                        Part::Text(t) => (t),
                        Part::Code(c) => code { (c) },
                    }
                }
            }
        }
    }
}

fn status_words(s: Status) -> &'static str {
    match s {
        Status::Ok => "ok",
        Status::Degraded => "degraded",
        Status::Failing => "failing",
    }
}

fn health_table(components: &[HealthRow]) -> Markup {
    html! {
        h2 { "Health" }
        div.scroll { table #health {
            tr { th { "part" } th { "status" } th { "why" } }
            @for c in components {
                tr {
                    td.k { (cut(&c.name)) }
                    td class={ "k " (status_words(c.status)) } { (status_words(c.status)) }
                    td.why { (cut(&c.reason)) }
                }
            }
        } }
    }
}

/// One row with the app's id and errors across the table, then one with its figures.
fn apps_table(window_seconds: u64, apps: &[AppRow]) -> Markup {
    let apps = worst_first(apps);
    html! {
        h2 { "Bypass apps, worst first" }
        div.scroll { table #apps {
            tr {
                th { "no reply, last " (minutes(window_seconds)) }
                th { "no reply, since start" }
                th { "received" }
                th { "sent" }
            }
            @for a in apps.iter().take(MAX_APPS) {
                tr.app {
                    td.id colspan="4" {
                        b { (cut(&a.app)) }
                        @if !a.top_errors.is_empty() { " · errors: " (cut(&a.top_errors)) }
                    }
                }
                tr {
                    td.k { (no_reply(a.window_sessions, a.window_zero)) }
                    td.k { (no_reply(a.total_sessions, a.total_zero)) }
                    td.k { (human_bytes(a.rx_bytes)) }
                    td.k { (human_bytes(a.tx_bytes)) }
                }
            }
            @if apps.len() > MAX_APPS {
                tr { td colspan="4" { "and " (apps.len() - MAX_APPS) " more" } }
            }
            @if apps.is_empty() {
                tr { td colspan="4" { "no proxied session closed yet" } }
            }
        } }
        p { small { "Sessions that got no reply, of those closed; bytes received and sent \
            since start, as the proxy's log counts them." } }
    }
}

/// "9 of 10 (90 %)"; "no session" when none closed.
fn no_reply(total: u64, zero: u64) -> String {
    if total == 0 {
        "no session".into()
    } else {
        format!("{zero} of {total} ({}\u{a0}%)", percent(zero, total))
    }
}

fn minutes(seconds: u64) -> String {
    if seconds.is_multiple_of(60) && seconds >= 60 {
        format!("{} min", seconds / 60)
    } else {
        format!("{seconds} s")
    }
}

/// Worst first: most sessions without a reply, then the highest share.
fn worst_first(apps: &[AppRow]) -> Vec<&AppRow> {
    let mut apps: Vec<&AppRow> = apps.iter().collect();
    apps.sort_by(|a, b| {
        b.window_zero
            .cmp(&a.window_zero)
            .then(share(b).total_cmp(&share(a)))
            .then(b.total_zero.cmp(&a.total_zero))
            .then(a.app.cmp(&b.app))
    });
    apps
}

fn probe_table(probe: &[ProbeRow]) -> Markup {
    html! {
        h2 { "Last probe round" }
        div.scroll { table #probe {
            tr { th { "path" } th { "bound to" } th { "leaves as" } th { "time" } }
            @for p in probe {
                tr {
                    td.k { (cut(&p.path)) }
                    td.why { (cut(&p.bound_to)) }
                    td.why {
                        (cut(&p.egress))
                        @if !p.error.is_empty() { (cut(&p.error)) }
                    }
                    td.k { (p.millis) " ms" }
                }
            }
            @if probe.is_empty() {
                tr { td colspan="4" { "no round yet (or probing is off)" } }
            }
        } }
    }
}

fn fallback_section(fallback: Option<&FallbackView>) -> Markup {
    html! {
        h2 { "Repair (fallback)" }
        @if let Some(f) = fallback {
            p #fallback {
                "Mode " b { (cut(&f.mode)) } ", backend " b { (cut(&f.backend)) } ": "
                @if f.active { b { "active" } ", its rules are in place." }
                @else { "not active." }
            }
            @if !f.rules.is_empty() {
                pre { @for line in f.rules.lines().take(MAX_RULE_LINES) { (cut(line)) "\n" } }
            }
            @if !f.last.is_empty() {
                ul { @for l in &f.last { li { (cut(l)) } } }
            }
        } @else {
            p { "not configured" }
        }
    }
}

fn links(tone: Tone) -> Markup {
    html! {
        h2 { "More" }
        ul {
            li { a href="/metrics" { "/metrics" } ": Prometheus metrics" }
            li { a href="/health" { "/health" } ": health as JSON" }
            @if let Some(anchor) = tone.runbook() {
                li {
                    a #runbook href={ (env!("CARGO_PKG_REPOSITORY")) "/blob/main/docs/runbooks.md#" (anchor) } {
                        "What this means and what to do"
                    }
                    " (the project's runbooks, on GitHub)"
                }
            }
        }
    }
}

/// The window's share without a reply, for sorting.
fn share(a: &AppRow) -> f64 {
    if a.window_sessions == 0 {
        0.0
    } else {
        a.window_zero as f64 / a.window_sessions as f64
    }
}

#[cfg(test)]
mod tests {
    use strum::IntoEnumIterator;

    use super::*;

    fn view(apps: Vec<AppRow>) -> StatusView {
        StatusView {
            version: "0.0.0".into(),
            tone: Tone::Broken,
            since: Some(Since {
                words: "14:02".into(),
                rfc3339: "2026-12-04T14:02:30+01:00".into(),
            }),
            components: vec![HealthRow {
                name: "bypass sessions".into(),
                status: Status::Failing,
                reason: "90 % zero".into(),
            }],
            window_seconds: 300,
            apps,
            probe: vec![ProbeRow {
                path: "default route".into(),
                bound_to: "en0 <b>".into(),
                egress: String::new(),
                millis: 3000,
                error: "no answer (timed out)".into(),
            }],
            fallback: Some(FallbackView {
                mode: "auto".into(),
                backend: "pf".into(),
                active: true,
                rules: "pass out route-to (en0 10.0.15.1) from 10.0.15.15 to ! <x>".into(),
                last: vec!["14:02: applying the repair: done".into()],
            }),
        }
    }

    fn row(app: &str, sessions: u64, zero: u64) -> AppRow {
        AppRow {
            app: app.into(),
            window_sessions: sessions,
            window_zero: zero,
            top_errors: "connect timeout 3".into(),
            ..AppRow::default()
        }
    }

    #[test]
    fn shows_verdict_since_remedy_apps_worst_first_probe_and_fallback() {
        let page = render(&view(vec![row("com.good", 10, 0), row("com.plex", 10, 9)]));
        assert!(page.contains("The split tunnel is broken"));
        assert!(page.contains("data-tone=\"broken\""));
        assert!(page.contains("Since <time datetime=\"2026-12-04T14:02:30+01:00\">14:02</time>"));
        // The remedy is on the page, not only behind the link.
        assert!(page.contains("<code>sudo pia-split-tunnel-exporter fallback apply</code>"));
        assert!(page.contains("<code>fallback.mode = &quot;auto&quot;</code>"));
        assert!(page.contains("http-equiv=\"refresh\" content=\"5\""));
        assert!(page.contains("name=\"viewport\""));
        assert!(page.find("com.plex").unwrap() < page.find("com.good").unwrap());
        assert!(page.contains("9 of 10 (90\u{a0}%)"));
        assert!(page.contains("<td class=\"k failing\">failing</td>"));
        let eighth = render(&view(vec![row("com.a", 8, 1)]));
        assert!(
            eighth.contains("1 of 8 (13\u{a0}%)"),
            "12.5 % rounds half up"
        );
        assert!(page.contains("en0 &lt;b&gt;"));
        assert!(page.contains("to ! &lt;x&gt;"));
        assert!(page.contains("/blob/main/docs/runbooks.md#runbook-piasplittunnelbypassbroken"));
        assert!(!page.contains("break-all"));
        // No external asset, no script, no form.
        assert!(!page.contains("<script"));
        assert!(!page.contains("<form"));
        assert!(!page.contains("src="));
    }

    #[test]
    fn every_tone_has_its_own_sentence_colour_and_runbook() {
        let tones: Vec<Tone> = Tone::iter().collect();
        for (i, a) in tones.iter().enumerate() {
            for b in &tones[i + 1..] {
                assert_ne!(a.sentence(), b.sentence(), "{a:?} and {b:?}");
                assert_ne!(a.title(), b.title(), "{a:?} and {b:?}");
            }
            let page = render(&StatusView {
                tone: *a,
                ..view(Vec::new())
            });
            assert!(page.contains(&format!("data-tone=\"{a}\"")));
            assert!(page.contains(a.sentence().split(':').next().unwrap()));
            assert_eq!(page.contains("id=\"runbook\""), a.runbook().is_some());
            assert_eq!(page.contains("id=\"remedy\""), !a.remedy().is_empty());
        }
        // A leak is the opposite emergency of broken: its own colour, words and runbook.
        assert_ne!(Tone::VpnLeak.colour(), Tone::Broken.colour());
        assert_ne!(Tone::VpnLeak.runbook(), Tone::Broken.runbook());
        assert_ne!(Tone::NoNetwork.runbook(), Tone::NotMeasured.runbook());
        assert_eq!(Tone::Working.runbook(), None);
    }

    #[test]
    fn every_runbook_anchor_is_a_section_of_the_runbooks() {
        let doc = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/runbooks.md"),
        )
        .unwrap();
        // GitHub's anchor of a heading: lowercase, spaces to '-', punctuation dropped.
        let anchors: Vec<String> = doc
            .lines()
            .filter_map(|l| l.strip_prefix("## "))
            .map(|h| {
                h.to_lowercase()
                    .chars()
                    .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-')
                    .map(|c| if c == ' ' { '-' } else { c })
                    .collect()
            })
            .collect();
        for tone in Tone::iter() {
            if let Some(anchor) = tone.runbook() {
                assert!(
                    anchors.iter().any(|a| a == anchor),
                    "{tone:?}: no section #{anchor} in docs/runbooks.md"
                );
            }
        }
    }

    #[test]
    fn bytes_read_in_units() {
        let shown: Vec<String> = [
            0,
            999,
            1000,
            1_234,
            56_700,
            999_949,
            1_200_000,
            12_300_000_000,
        ]
        .into_iter()
        .map(human_bytes)
        .collect();
        // Shown with a no-break space ("_" here) between figure and unit.
        assert_eq!(
            shown.join(" | ").replace('\u{a0}', "_"),
            "0_B | 999_B | 1.0_KB | 1.2_KB | 57_KB | 1.0_MB | 1.2_MB | 12_GB"
        );
        assert_eq!(human_bytes(u64::MAX), "18446744\u{a0}TB");
        let mut a = row("com.a", 1, 0);
        (a.rx_bytes, a.tx_bytes) = (1_200_000, 3_400);
        let page = render(&view(vec![a]));
        assert!(page.contains(">1.2\u{a0}MB<") && page.contains(">3.4\u{a0}KB<"));
    }

    #[test]
    fn hostile_ids_are_escaped_and_bounded() {
        let huge = "<".repeat(1 << 20);
        let hostile = [
            "<script>alert(1)</script>",
            "\"><img onerror=x>",
            "a&b'c",
            huge.as_str(),
        ];
        let apps = hostile.iter().map(|id| row(id, 1, 1)).collect();
        let mut v = view(apps);
        v.components.push(HealthRow {
            name: "<i>".into(),
            status: Status::Ok,
            reason: huge.clone(),
        });
        v.fallback.as_mut().unwrap().rules = format!("{huge}\n").repeat(1000);
        v.version = "\"><script>".into();
        let page = render(&v);
        assert!(!page.contains("<script"));
        assert!(!page.contains("<img"));
        assert!(page.contains("&quot;&gt;&lt;img onerror=x&gt;"));
        assert!(!page.contains("<i>"));
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(page.contains("a&amp;b'c"));
        // Bounded: the 1 MB id (and 1000 lines of it) take at most MAX_TEXT characters each.
        assert!(page.len() < 200_000, "page of {} bytes", page.len());
        assert_eq!(cut(&huge).chars().count(), MAX_TEXT + 1);
        assert_eq!(cut("é".repeat(MAX_TEXT).as_str()), "é".repeat(MAX_TEXT));
    }

    #[test]
    fn many_apps_are_cut_with_a_count() {
        let apps = (0..(MAX_APPS + 7))
            .map(|i| row(&format!("app{i}"), 1, 0))
            .collect();
        let page = render(&view(apps));
        assert!(page.contains("and 7 more"));
    }
}
