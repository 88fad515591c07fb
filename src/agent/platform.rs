//! Which PIA and which macOS the agent runs beside: read through the `Os` seam
//! ([`crate::os::Os::platform`]) at each probe round, exported as `pia_info{version}` and
//! `macos_info{version,build}`, and handed to the fallback, whose recheck a change starts.
//!
//! Read at each probe round rather than on a timer of its own: a PIA upgrade restarts its
//! tunnel (a route change, so a round), a macOS update reboots (the start round), and the
//! heartbeat bounds the rest. A scrape renders the last read and runs no command.

use std::sync::{Arc, Mutex};

use prometheus::core::Desc;
use prometheus::proto::MetricFamily;

use crate::fallback::recheck::Versions;
use crate::metrics::{Family, Gauge, Scrape};
use crate::os::{Os, Platform};

const PIA_INFO: Family<Gauge, 1> = Family::new(
    "pia_info",
    "1 for PIA's version (its app bundle's CFBundleShortVersionString); absent when unknown.",
    ["version"],
);
const MACOS_INFO: Family<Gauge, 2> = Family::new(
    "macos_info",
    "1 for the macOS version and build (sw_vers); absent when not a Mac.",
    ["version", "build"],
);

/// The platform as last read, shared by the round loop (writer) and the collector.
#[derive(Clone)]
pub struct PlatformWatch {
    os: Arc<dyn Os>,
    last: Arc<Mutex<Option<Platform>>>,
}

impl PlatformWatch {
    pub fn new(os: Arc<dyn Os>) -> Self {
        PlatformWatch {
            os,
            last: Arc::new(Mutex::new(None)),
        }
    }

    /// Reads the platform now (a few short commands: call from a blocking context) and keeps
    /// it for the metrics; the versions the fallback compares.
    pub fn read(&self) -> Versions {
        let p = self.os.platform();
        let v = versions(&p);
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(p);
        v
    }
}

/// The fallback's view of a platform.
pub fn versions(p: &Platform) -> Versions {
    Versions::new(
        p.pia_version.as_deref(),
        p.macos.as_ref().map(|m| m.version.as_str()),
        p.macos.as_ref().map(|m| m.build.as_str()),
    )
}

impl Scrape for PlatformWatch {
    fn descs(&self) -> Vec<Desc> {
        vec![PIA_INFO.desc(), MACOS_INFO.desc()]
    }

    fn scrape(&self) -> Vec<MetricFamily> {
        let last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let Some(p) = last.as_ref() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        if let Some(v) = &p.pia_version {
            let mut s = PIA_INFO.samples();
            s.set([v], 1.0);
            out.push(s.done());
        }
        if let Some(m) = &p.macos {
            let mut s = MACOS_INFO.samples();
            s.set([&m.version, &m.build], 1.0);
            out.push(s.done());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::os::{Interfaces, MacosVersion, RouteEntry, RoutingFacts};

    /// A Mac whose versions the test sets.
    struct Mac(Mutex<Platform>);

    impl Os for Mac {
        fn interfaces(&self) -> Vec<crate::os::IfaceInfo> {
            Vec::new()
        }
        fn route_table(&self) -> Result<Vec<RouteEntry>, String> {
            Ok(Vec::new())
        }
        fn routing_facts(&self, _ifs: &Interfaces) -> RoutingFacts {
            RoutingFacts::default()
        }
        fn platform(&self) -> Platform {
            self.0.lock().unwrap().clone()
        }
    }

    #[test]
    fn versions_are_exported_as_read_and_only_when_known() {
        let mac = Arc::new(Mac(Mutex::new(Platform {
            macos: Some(MacosVersion {
                version: "15.3".into(),
                build: "24D60".into(),
            }),
            pia_version: Some("3.6.1".into()),
            arch: Some("arm64".into()),
            unavailable: Vec::new(),
        })));
        let watch = PlatformWatch::new(mac.clone());
        let registry = prometheus::Registry::new();
        crate::metrics::register(&registry, watch.clone()).unwrap();
        assert!(
            !crate::metrics::encode(&registry).contains("_info{"),
            "nothing before the first read"
        );
        let v = watch.read();
        assert_eq!(v.describe(), "PIA 3.6.1, macOS 15.3 (24D60)");
        let text = crate::metrics::encode(&registry);
        assert!(
            text.contains("pia_split_tunnel_pia_info{version=\"3.6.1\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("pia_split_tunnel_macos_info{version=\"15.3\",build=\"24D60\"} 1"),
            "{text}"
        );
        // PIA removed: its series goes, macOS's stays.
        mac.0.lock().unwrap().pia_version = None;
        watch.read();
        let text = crate::metrics::encode(&registry);
        assert!(!text.contains("pia_info{"), "{text}");
        assert!(text.contains("macos_info{"), "{text}");
    }
}
