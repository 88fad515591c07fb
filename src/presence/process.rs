//! The process table behind a small trait (sysinfo for real; the demo's table in
//! `crate::demo::ProcessTable`), and the
//! agent's own `process_*` metrics.

use std::sync::Mutex;

use prometheus::core::Desc;
use prometheus::proto::MetricFamily;
use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System, UpdateKind};

use crate::metrics::{Counter, Family, Gauge, Scrape};

/// What presence needs to know of a process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcInfo {
    /// What the process calls itself: anyone can choose it, so it is shown, never matched.
    pub name: String,
    /// Executable path, when the OS tells (not for every process of another user).
    pub exe: Option<String>,
    /// Real user id, when the OS tells.
    pub uid: Option<u32>,
}

pub trait ProcessSource {
    fn processes(&mut self) -> Vec<ProcInfo>;
}

impl<S: ProcessSource + ?Sized> ProcessSource for Box<S> {
    fn processes(&mut self) -> Vec<ProcInfo> {
        (**self).processes()
    }
}

/// sysinfo, refreshing only names and executable paths.
pub struct SysinfoSource {
    system: System,
}

impl SysinfoSource {
    pub fn new() -> anyhow::Result<Self> {
        Ok(SysinfoSource {
            system: System::new()
                .map_err(|e| anyhow::anyhow!("cannot read the process table: {e:?}"))?,
        })
    }
}

impl ProcessSource for SysinfoSource {
    fn processes(&mut self) -> Vec<ProcInfo> {
        self.system.refresh_processes_specifics(
            ProcessesToUpdate::All,
            true,
            // Threads are not processes here; listing them (sysinfo's default on Linux) read
            // every process's task folder: half of an idle agent's CPU.
            ProcessRefreshKind::nothing()
                .without_tasks()
                .with_exe(UpdateKind::OnlyIfNotSet)
                .with_user(UpdateKind::OnlyIfNotSet),
        );
        self.system
            .processes()
            .values()
            .map(|p| ProcInfo {
                name: p.name().to_string_lossy().into_owned(),
                exe: p.exe().map(|e| e.display().to_string()),
                uid: p.user_id().map(|u| **u),
            })
            .collect()
    }
}

/// The agent's own CPU, memory, open files and start time, read from the OS at each scrape,
/// under the standard names (`process_cpu_seconds_total`, `process_resident_memory_bytes`...).
pub struct SelfCollector {
    system: Mutex<System>,
    pid: Pid,
}

const CPU: Family<Counter, 0> = Family::standard(
    "process_cpu_seconds_total",
    "Total user and system CPU time spent in seconds.",
    [],
);
const RESIDENT: Family<Gauge, 0> = Family::standard(
    "process_resident_memory_bytes",
    "Resident memory size in bytes.",
    [],
);
const VIRTUAL: Family<Gauge, 0> = Family::standard(
    "process_virtual_memory_bytes",
    "Virtual memory size in bytes.",
    [],
);
const START: Family<Gauge, 0> = Family::standard(
    "process_start_time_seconds",
    "Start time of the process since unix epoch in seconds.",
    [],
);
const OPEN_FDS: Family<Gauge, 0> =
    Family::standard("process_open_fds", "Number of open file descriptors.", []);
const MAX_FDS: Family<Gauge, 0> = Family::standard(
    "process_max_fds",
    "Maximum number of open file descriptors.",
    [],
);

impl SelfCollector {
    pub fn new() -> anyhow::Result<Self> {
        let pid = sysinfo::get_current_pid()
            .map_err(|e| anyhow::anyhow!("cannot know our own pid: {e}"))?;
        let system =
            System::new().map_err(|e| anyhow::anyhow!("cannot read the process table: {e:?}"))?;
        Ok(SelfCollector {
            system: Mutex::new(system),
            pid,
        })
    }
}

impl Scrape for SelfCollector {
    fn descs(&self) -> Vec<Desc> {
        vec![
            CPU.desc(),
            RESIDENT.desc(),
            VIRTUAL.desc(),
            START.desc(),
            OPEN_FDS.desc(),
            MAX_FDS.desc(),
        ]
    }

    fn scrape(&self) -> Vec<MetricFamily> {
        let mut system = self.system.lock().unwrap_or_else(|e| e.into_inner());
        system.refresh_processes_specifics(
            ProcessesToUpdate::Some(&[self.pid]),
            true,
            ProcessRefreshKind::nothing().with_cpu().with_memory(),
        );
        let Some(p) = system.process(self.pid) else {
            return vec![];
        };
        let mut out = vec![
            CPU.single(p.accumulated_cpu_time() as f64 / 1000.0),
            RESIDENT.single(p.memory() as f64),
            VIRTUAL.single(p.virtual_memory() as f64),
            START.single(p.start_time() as f64),
        ];
        out.extend(p.open_files().map(|n| OPEN_FDS.single(n as f64)));
        out.extend(p.open_files_limit().map(|n| MAX_FDS.single(n as f64)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(text: &str, name: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} in {text}"))
    }

    #[test]
    fn own_process_metrics_are_plausible() {
        let registry = prometheus::Registry::new();
        crate::metrics::register(&registry, SelfCollector::new().unwrap()).unwrap();
        // Burn a little CPU so the counter cannot be zero.
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let text = crate::metrics::encode(&registry);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let start = sample(&text, "process_start_time_seconds");
        assert!(
            start > now - 3600.0 && start <= now + 1.0,
            "start {start} vs now {now}"
        );
        assert!(
            sample(&text, "process_resident_memory_bytes") > 1e6,
            "{text}"
        );
        assert!(
            sample(&text, "process_virtual_memory_bytes")
                >= sample(&text, "process_resident_memory_bytes")
        );
        assert!(sample(&text, "process_cpu_seconds_total") > 0.0, "{text}");
        let open = sample(&text, "process_open_fds");
        assert!(
            open >= 3.0 && open <= sample(&text, "process_max_fds"),
            "{text}"
        );
    }

    #[test]
    fn the_real_table_contains_this_process() {
        let mut s = SysinfoSource::new().unwrap();
        let me = std::env::current_exe().unwrap().display().to_string();
        assert!(
            s.processes()
                .iter()
                .any(|p| p.exe.as_deref() == Some(me.as_str())),
            "{me} not found"
        );
    }
}
