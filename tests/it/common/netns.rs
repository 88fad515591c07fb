//! A network namespace of the test's own, with a physical side and a PIA-like tunnel.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use pia_split_tunnel_exporter::fallback::policy_routing::{PolicyRouting, PolicyRoutingOptions};
use pia_split_tunnel_exporter::probe::lab::{TUNNEL_GATEWAY, TUNNEL_IP};

use super::{GATEWAY, PHYS_IP};

pub const TABLE: u32 = 100;
pub const PRIORITY: u32 = 100;

/// A namespace deleted on drop, also when the test panics.
pub struct Netns(pub String);

impl Netns {
    pub fn new() -> Netns {
        static N: AtomicU32 = AtomicU32::new(0);
        assert!(
            unsafe { libc::geteuid() } == 0,
            "this test needs root to create network namespaces (run the tests as root)"
        );
        let name = format!(
            "pste-pr-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .unwrap_or_else(|e| panic!("this test needs iproute2's `ip` on PATH: {e}"));
        assert!(
            out.status.success(),
            "ip netns add {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ns = Netns(name);
        // The lab's physical side (address and gateway) and a tunnel side with the VPN's
        // 0/1 + 128/1 routes, as PIA installs them.
        for cmd in [
            "link add phys0 type veth peer name physpeer0".to_string(),
            "link add utun0 type veth peer name utunpeer0".into(),
            "link set lo up".into(),
            "link set phys0 up".into(),
            "link set physpeer0 up".into(),
            "link set utun0 up".into(),
            "link set utunpeer0 up".into(),
            format!("addr add {PHYS_IP}/24 dev phys0"),
            format!("addr add {TUNNEL_IP}/16 dev utun0"),
            format!("route add default via {GATEWAY} dev phys0"),
            format!("route add 0.0.0.0/1 via {TUNNEL_GATEWAY} dev utun0"),
            format!("route add 128.0.0.0/1 via {TUNNEL_GATEWAY} dev utun0"),
        ] {
            ns.ip(&cmd);
        }
        ns
    }

    pub fn ip(&self, args: &str) -> String {
        let out = Command::new("ip")
            .arg("-n")
            .arg(&self.0)
            .args(args.split_whitespace())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ip -n {} {args}: {}",
            self.0,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The kernel's choice for a packet from the bypass source.
    pub fn route_from_source(&self, dst: impl std::fmt::Display) -> String {
        self.ip(&format!("-4 route get {dst} from {PHYS_IP}"))
    }

    pub fn rules(&self) -> String {
        self.ip("-4 rule list")
    }

    pub fn backend(&self) -> PolicyRouting {
        PolicyRouting::new(PolicyRoutingOptions {
            ip: "ip".into(),
            table: TABLE,
            priority: PRIORITY,
            netns: Some(self.0.clone()),
            state_file: None,
        })
    }

    /// The backend with other settings, recording what it installs in `state_file`.
    pub fn backend_with(
        &self,
        table: u32,
        priority: u32,
        state_file: &std::path::Path,
    ) -> PolicyRouting {
        PolicyRouting::new(PolicyRoutingOptions {
            ip: "ip".into(),
            table,
            priority,
            netns: Some(self.0.clone()),
            state_file: Some(state_file.to_owned()),
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

impl Netns {
    /// Whether the tunnel interface exists.
    pub fn has_tunnel(&self) -> bool {
        self.ip("-o link show").contains("utun0")
    }
}
