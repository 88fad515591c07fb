//! `cargo bench --bench probe_rate`: probe requests an hour to the what-is-my-IP endpoints,
//! healthy, with the bypass broken in `observe`, and broken in `auto` (the repair helping or
//! not), over one simulated hour.
//!
//! The agent's own parts, in simulated time: the round schedule
//! ([`Schedule`]), the fallback controller and policy (on a stand-in backend) and the rule
//! that asks for confirmation rounds ([`Controller::wants_confirmation`]), driven as the round
//! loop drives them (start, round, decide, finish). A round sends one request per path (4);
//! the controller's verification round after an apply is counted too. A round lasts 50 ms
//! when the bypass answers and 800 ms when it is cut short (the physical path answers in
//! milliseconds, the bypass gets 750 ms). No sessions verdict (the probes alone decide, as
//! in `lab/bench.sh`), no route changes: what a quiet Mac sends. `lab/probe-rate.sh` counts
//! the real agent's requests in the namespace lab over a real window for comparison.
//!
//! The "previous rule" row (confirmations after every "awaiting" or action decision, in
//! every mode) is printed beside the current one, to show what the change saves.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pia_split_tunnel_exporter::agent::schedule::{Followup, Schedule, ScheduleConfig};
use pia_split_tunnel_exporter::fallback::controller::Controller;
use pia_split_tunnel_exporter::fallback::metrics::FallbackMetrics;
use pia_split_tunnel_exporter::fallback::policy::{Decision, Reason};
use pia_split_tunnel_exporter::fallback::{
    Backend, BackendError, BackendKind, FallbackConfig, Loaded, Mode, Plan,
};
use pia_split_tunnel_exporter::probe::lab::{HOME_IP, VPN_EXIT_IP, interfaces};
use pia_split_tunnel_exporter::probe::{PathKind, PathResult, ProbeError, Round, Verdict};
use pia_split_tunnel_exporter::sessions::SessionsConfig;

const HOUR: Duration = Duration::from_secs(3600);
const REQUESTS_PER_ROUND: u64 = 4;

/// The bypass as the scenario has it.
#[derive(Clone, Copy, PartialEq)]
enum Bypass {
    Working,
    /// Broken; the repair, once installed, makes it work.
    BrokenRepairable,
    /// Broken whatever is installed (the repair's verification fails and it is rolled back).
    BrokenForGood,
}

/// The network: whether the repair is installed, and the requests sent.
struct World {
    bypass: Bypass,
    installed: AtomicBool,
    requests: AtomicU64,
}

impl World {
    fn bypass_works(&self) -> bool {
        match self.bypass {
            Bypass::Working => true,
            Bypass::BrokenRepairable => self.installed.load(Ordering::Relaxed),
            Bypass::BrokenForGood => false,
        }
    }

    /// One round of the four paths, counted.
    fn round(&self) -> Round {
        self.requests
            .fetch_add(REQUESTS_PER_ROUND, Ordering::Relaxed);
        let r = |path, outcome| PathResult {
            path,
            outcome,
            duration: Duration::from_millis(5),
        };
        let bypass = if self.bypass_works() {
            Ok(HOME_IP)
        } else {
            Err(ProbeError::Timeout)
        };
        Round {
            interfaces: interfaces(true),
            results: vec![
                r(PathKind::Physical, Ok(HOME_IP)),
                r(PathKind::Tunnel, Ok(VPN_EXIT_IP)),
                r(PathKind::Bypass, bypass),
                r(PathKind::Default, Ok(VPN_EXIT_IP)),
            ],
        }
    }
}

/// Installs by setting the world's flag.
struct StandIn(Arc<World>);

impl Backend for StandIn {
    fn kind(&self) -> BackendKind {
        BackendKind::PolicyRouting
    }
    fn render(&self, _plan: &Plan) -> String {
        String::new()
    }
    fn apply(&mut self, _plan: &Plan) -> Result<(), BackendError> {
        self.0.installed.store(true, Ordering::Relaxed);
        Ok(())
    }
    fn revert(&mut self) -> Result<(), BackendError> {
        self.0.installed.store(false, Ordering::Relaxed);
        Ok(())
    }
    fn status(&self) -> Result<Loaded, BackendError> {
        Ok(Loaded::default())
    }
}

/// Which rule asks for confirmation rounds.
#[derive(Clone, Copy, PartialEq)]
enum Rule {
    Current,
    Previous,
}

struct Figures {
    rounds: u64,
    requests: u64,
    /// Repairs tried (apply, reload or revert decisions carried out in `auto`).
    actions: u64,
}

/// One simulated hour of the round loop.
async fn hour(bypass: Bypass, mode: Mode, rule: Rule) -> Figures {
    let world = Arc::new(World {
        bypass,
        installed: AtomicBool::new(false),
        requests: AtomicU64::new(0),
    });
    let cfg = FallbackConfig {
        mode,
        ..FallbackConfig::default()
    };
    let source = {
        let w = world.clone();
        move || {
            let r = w.round();
            async move { r }
        }
    };
    let registry = prometheus::Registry::new();
    let mut controller = Controller::new(
        &cfg,
        Box::new(StandIn(world.clone())),
        Arc::new(source),
        FallbackMetrics::register(&registry).expect("metrics"),
    );
    let t0 = Instant::now();
    let no_sessions = SessionsConfig::default().window().verdict(t0);
    let mut schedule = Schedule::new(t0, ScheduleConfig::with_heartbeat(Duration::from_secs(300)));
    let (mut now, mut rounds, mut actions) = (t0, 0, 0);
    loop {
        now = now.max(schedule.next().0);
        if now >= t0 + HOUR {
            break;
        }
        schedule.start(now);
        rounds += 1;
        let round = world.round();
        now += if world.bypass_works() {
            Duration::from_millis(50)
        } else {
            Duration::from_millis(800)
        };
        let verdict = Verdict::of(&round);
        let d = controller
            .on_round(now, &round, &verdict, no_sessions.clone())
            .await;
        let confirm = match rule {
            Rule::Current => controller.wants_confirmation(&d),
            Rule::Previous => d.reason() == Reason::AwaitingConfirmation || d.action().is_some(),
        };
        if mode == Mode::Auto && !matches!(d, Decision::None(_)) {
            actions += 1;
        }
        schedule.finished(
            now,
            if confirm {
                Followup::Confirm
            } else {
                Followup::None
            },
        );
    }
    Figures {
        rounds,
        requests: world.requests.load(Ordering::Relaxed),
        actions,
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    println!("probe requests in the first hour (heartbeat 300 s, 4 requests a round)");
    println!(
        "  {:<44} {:>6} {:>9} {:>8}",
        "scenario", "rounds", "requests", "repairs"
    );
    for (name, bypass, mode) in [
        ("healthy, observe", Bypass::Working, Mode::Observe),
        ("healthy, auto", Bypass::Working, Mode::Auto),
        (
            "bypass broken, observe",
            Bypass::BrokenRepairable,
            Mode::Observe,
        ),
        (
            "bypass broken, auto, the repair helps",
            Bypass::BrokenRepairable,
            Mode::Auto,
        ),
        (
            "bypass broken, auto, the repair does not help",
            Bypass::BrokenForGood,
            Mode::Auto,
        ),
    ] {
        for rule in [Rule::Current, Rule::Previous] {
            let f = rt.block_on(hour(bypass, mode, rule));
            let label = match rule {
                Rule::Current => name.to_string(),
                Rule::Previous => "  (previous rule)".to_string(),
            };
            println!(
                "  {label:<44} {:>6} {:>9} {:>8}",
                f.rounds, f.requests, f.actions
            );
        }
    }
}
