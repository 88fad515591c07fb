//! `process_running{process}`: 1 when at least one PIA process of the role runs (tested in
//! tests/it/presence.rs).

use std::sync::{Arc, Mutex};

use prometheus::core::Desc;
use prometheus::proto::MetricFamily;
use strum::IntoEnumIterator;

use super::{Presence, ProcessRole};
use crate::metrics::{Family, Gauge, Scrape};

const RUNNING: Family<Gauge, 1> = Family::new(
    "process_running",
    "1 when a PIA process of this role runs (extension: the split-tunnel proxy), else 0.",
    ["process"],
);

/// Renders the watch's last look at the process table.
pub struct PresenceCollector {
    last: Arc<Mutex<Presence>>,
}

impl PresenceCollector {
    pub fn new(last: Arc<Mutex<Presence>>) -> Self {
        PresenceCollector { last }
    }
}

impl Scrape for PresenceCollector {
    fn descs(&self) -> Vec<Desc> {
        vec![RUNNING.desc()]
    }

    fn scrape(&self) -> Vec<MetricFamily> {
        let p = self.last.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if !p.checked {
            return vec![];
        }
        let mut f = RUNNING.samples();
        for role in ProcessRole::iter() {
            f.set([role.into()], f64::from(u8::from(p.count(role) > 0)));
        }
        vec![f.done()]
    }
}
