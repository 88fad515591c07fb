//! Process presence: roles by the executable path of root's processes (never a name), and the `process_running` family, over
//! a process table set by hand.

use pia_split_tunnel_exporter::demo::ProcessTable;
use pia_split_tunnel_exporter::metrics;
use pia_split_tunnel_exporter::presence::{
    Presence, PresenceCollector, PresenceTracker, ProcInfo, ProcessConfig,
};

const APP: &str = "/Applications/Private Internet Access.app/Contents/MacOS/";

/// A process of root's with this executable path (its name is the file name).
fn proc(exe: &str) -> ProcInfo {
    ProcInfo {
        name: exe.rsplit('/').next().unwrap().into(),
        exe: Some(exe.into()),
        uid: Some(0),
    }
}

#[test]
fn roles_by_executable_path_of_roots_processes() {
    let table = vec![
        proc(
            "/Library/SystemExtensions/0D6E/com.privateinternetaccess.vpn.splittunnel.systemextension/Contents/MacOS/com.privateinternetaccess.vpn.splittunnel",
        ),
        proc(&format!("{APP}pia-daemon")),
        proc("/sbin/launchd"),
        // Named like PIA's, but by anyone: a name, a user's process, an unknown path.
        ProcInfo {
            name: "pia-daemon".into(),
            exe: Some("/bin/sleep".into()),
            uid: Some(0),
        },
        ProcInfo {
            uid: Some(65534),
            ..proc(&format!("{APP}pia-wireguard-go"))
        },
        ProcInfo {
            exe: None,
            ..proc("pia-openvpn")
        },
        // A file name that only contains the pattern.
        proc("/tmp/not-pia-daemon"),
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
    source.set(vec![proc(&format!("{APP}pia-wireguard-go"))]);
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
    let source = ProcessTable::new(vec![proc(&format!("{APP}pia-daemon"))]);
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
