//! What a bug report quotes from the proxy's log: a few real lines of each error kind, and the
//! destinations whose sessions failed. One pass with the agent's own line grammar; counting
//! stays with `analyze::Report`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::proxy_log::{ErrorKind, Event, Proto, Size, parse_line};

/// Lines quoted per error kind.
pub const SAMPLES: usize = 3;
/// Destinations listed at most (the worst first).
pub const DESTINATIONS: usize = 20;

/// One destination's failed sessions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Destination {
    pub apps: BTreeSet<String>,
    pub sessions: BTreeSet<u64>,
    pub kinds: BTreeSet<ErrorKind>,
    /// Sessions that closed having received nothing (`rxBytes=Zero KB`).
    pub received_nothing: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogEvidence {
    /// Up to [`SAMPLES`] lines of each kind, as the log wrote them, preferring distinct apps.
    pub samples: BTreeMap<ErrorKind, Vec<String>>,
    /// By `HOST:PORT`.
    pub destinations: BTreeMap<String, Destination>,
}

/// Kinds that say a session's traffic did not get through; a refusal (a remote answered) and
/// a pending read are not.
fn is_failure(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::IoOnClosedChannel
            | ErrorKind::ConnectTimeout
            | ErrorKind::ConnectionReset
            | ErrorKind::Unreachable
            | ErrorKind::EmptyBuffer
    )
}

/// A session as its creation line says.
struct Opened {
    app: String,
    endpoint: Option<String>,
}

impl LogEvidence {
    pub fn of(log: &str) -> LogEvidence {
        let mut ev = LogEvidence::default();
        let mut sessions: HashMap<u64, Opened> = HashMap::new();
        let mut sampled_apps: BTreeMap<ErrorKind, BTreeSet<String>> = BTreeMap::new();
        for raw in log.lines() {
            match parse_line(raw.as_bytes()).event {
                Event::ProxyStarted => sessions.clear(),
                Event::SessionOpened {
                    id, app, endpoint, ..
                } => {
                    let opened = Opened {
                        app: app.lossy().into_owned(),
                        endpoint: endpoint.map(|e| e.lossy().into_owned()),
                    };
                    sessions.insert(id, opened);
                }
                Event::FlowError { id, kind, app, .. } => {
                    let app = app
                        .map(|a| a.lossy().into_owned())
                        .or_else(|| sessions.get(&id).map(|s| s.app.clone()));
                    ev.sample(kind, raw, app.as_deref(), &mut sampled_apps);
                    if is_failure(kind) {
                        ev.failed(&sessions, id, app, |d| {
                            d.kinds.insert(kind);
                        });
                    }
                }
                Event::SessionClosed {
                    id,
                    rx: Size::Zero,
                    app,
                    ..
                } => {
                    let app = app.map(|a| a.lossy().into_owned());
                    ev.failed(&sessions, id, app, |d| d.received_nothing += 1);
                }
                _ => {}
            }
        }
        ev
    }

    /// Keeps `line` among its kind's samples: the first of each app, then any, up to
    /// [`SAMPLES`].
    fn sample(
        &mut self,
        kind: ErrorKind,
        line: &str,
        app: Option<&str>,
        seen: &mut BTreeMap<ErrorKind, BTreeSet<String>>,
    ) {
        let lines = self.samples.entry(kind).or_default();
        let apps = seen.entry(kind).or_default();
        let new_app = app.is_some_and(|a| !apps.contains(a));
        if lines.len() < SAMPLES && (new_app || lines.len() + 1 < SAMPLES) {
            lines.push(line.to_owned());
            apps.extend(app.map(str::to_owned));
        }
    }

    /// Counts a failure of session `id` against its destination, when its creation line named one.
    fn failed(
        &mut self,
        sessions: &HashMap<u64, Opened>,
        id: u64,
        app: Option<String>,
        mark: impl FnOnce(&mut Destination),
    ) {
        let Some(opened) = sessions.get(&id) else {
            return;
        };
        let Some(endpoint) = &opened.endpoint else {
            return;
        };
        let d = self.destinations.entry(endpoint.clone()).or_default();
        d.apps.insert(app.unwrap_or_else(|| opened.app.clone()));
        d.sessions.insert(id);
        mark(d);
    }

    /// The destinations with the most failed sessions first, at most [`DESTINATIONS`].
    pub fn worst_destinations(&self) -> Vec<(&str, &Destination)> {
        let mut all: Vec<(&str, &Destination)> = self
            .destinations
            .iter()
            .map(|(k, v)| (k.as_str(), v))
            .collect();
        all.sort_by(|a, b| {
            b.1.sessions
                .len()
                .cmp(&a.1.sessions.len())
                .then(a.0.cmp(b.0))
        });
        all.truncate(DESTINATIONS);
        all
    }
}

/// `tcp` / `udp` as a report spells the transport.
pub fn transport(p: Proto) -> &'static str {
    match p {
        Proto::Tcp => "TCP",
        Proto::Udp => "UDP",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed() -> String {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/seed-failure-shapes.txt"
        );
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect()
    }

    #[test]
    fn samples_are_real_lines_of_each_kind_and_prefer_other_apps() {
        let ev = LogEvidence::of(&seed());
        let kinds: Vec<ErrorKind> = ev.samples.keys().copied().collect();
        assert_eq!(
            kinds,
            [
                ErrorKind::EmptyBuffer,
                ErrorKind::IoOnClosedChannel,
                ErrorKind::ConnectTimeout
            ]
        );
        let empty = &ev.samples[&ErrorKind::EmptyBuffer];
        assert_eq!(empty.len(), 3);
        assert!(empty[2].ends_with("flow.readDatagrams() com.apple.Safari.SafeBrowsing"));
        for lines in ev.samples.values() {
            for l in lines {
                assert!(seed().contains(l.as_str()), "{l}");
            }
        }
    }

    #[test]
    fn destinations_are_those_whose_sessions_failed() {
        let ev = LogEvidence::of(&seed());
        // Only session 133 has a creation line (with its endpoint) in the posted lines.
        let worst = ev.worst_destinations();
        assert_eq!(worst.len(), 1);
        let (endpoint, d) = worst[0];
        assert_eq!(endpoint, "54.172.39.248:443");
        assert_eq!(
            d.apps.iter().collect::<Vec<_>>(),
            ["com.plexapp.plexmediaserver"]
        );
        assert_eq!(
            d.kinds.iter().copied().collect::<Vec<_>>(),
            [ErrorKind::IoOnClosedChannel]
        );
        // `rxBytes=0 MB`: not provably nothing, so not counted as "received nothing".
        assert_eq!(d.received_nothing, 0);
    }
}
