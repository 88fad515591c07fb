//! Process presence: roles by name or executable path, and the `process_running` family, over
//! a process table set by hand.

use pia_split_tunnel_exporter::demo::ProcessTable;
use pia_split_tunnel_exporter::metrics;
use pia_split_tunnel_exporter::presence::{
    Presence, PresenceCollector, PresenceTracker, ProcInfo, ProcessConfig,
};

fn proc(name: &str, exe: Option<&str>) -> ProcInfo {
    ProcInfo {
        name: name.into(),
        exe: exe.map(Into::into),
    }
}

#[test]
fn roles_by_name_or_executable_path() {
    let table = vec![
        proc(
            "com.privateinternetaccess.vpn.splittunnel",
            Some(
                "/Library/SystemExtensions/0D6E/com.privateinternetaccess.vpn.splittunnel.systemextension/Contents/MacOS/com.privateinternetaccess.vpn.splittunnel",
            ),
        ),
        proc("pia-daemon", None),
        proc("launchd", Some("/sbin/launchd")),
    ];
    let source = ProcessTable::new(table);
    let mut watch = PresenceTracker::new(source.clone(), ProcessConfig::default());
    assert_eq!(
        watch.refresh(),
        Presence {
            extension: 1,
            daemon: 1,
            vpn: 0,
            checked: true
        }
    );
    source.set(vec![proc("pia-wireguard-go", None)]);
    assert_eq!(
        watch.refresh(),
        Presence {
            extension: 0,
            daemon: 0,
            vpn: 1,
            checked: true
        }
    );
    assert_eq!(
        *watch.shared().lock().unwrap(),
        Presence {
            extension: 0,
            daemon: 0,
            vpn: 1,
            checked: true
        }
    );
}

#[test]
fn presence_metric_appears_after_the_first_look() {
    let source = ProcessTable::new(vec![proc("pia-daemon", None)]);
    let mut watch = PresenceTracker::new(source, ProcessConfig::default());
    let registry = prometheus::Registry::new();
    metrics::register(&registry, PresenceCollector::new(watch.shared())).unwrap();
    assert!(!metrics::encode(&registry).contains("process_running"));
    watch.refresh();
    let text = metrics::encode(&registry);
    assert!(
        text.contains("pia_split_tunnel_process_running{process=\"daemon\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("pia_split_tunnel_process_running{process=\"extension\"} 0\n"),
        "{text}"
    );
}
