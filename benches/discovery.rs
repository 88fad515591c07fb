//! `cargo bench --bench discovery`: the cost of one discovery judgement (longest-prefix match
//! of the public space over the whole table) for tables of growing size, the VPN's halves
//! plus cloned host routes as macOS keeps them. `BENCH_ROUTES=100,1000,5000` changes the sizes.

use std::net::Ipv4Addr;
use std::time::Instant;

use pia_split_tunnel_exporter::os::IfaceInfo;
use pia_split_tunnel_exporter::os::discovery::{Evidence, ProxyBinding, RouteEntry, judge};

fn table(n: u32) -> Vec<RouteEntry> {
    let route = |dst: Ipv4Addr, prefix, dev: &str, scoped| RouteEntry {
        dst,
        prefix,
        gateway: None,
        interface: dev.into(),
        scoped,
        metric: 0,
    };
    let mut rows = vec![
        RouteEntry {
            gateway: Some(Ipv4Addr::new(10, 0, 15, 1)),
            ..route(Ipv4Addr::UNSPECIFIED, 0, "en0", false)
        },
        route(Ipv4Addr::UNSPECIFIED, 1, "utun4", false),
        route(Ipv4Addr::new(128, 0, 0, 0), 1, "utun4", false),
    ];
    // Host routes spread over the space, half of them scoped (cloned `UHWIig` entries).
    for i in 0..n {
        let addr = Ipv4Addr::from(i.wrapping_mul(2_654_435_761));
        rows.push(route(addr, 32, "utun4", i % 2 == 0));
    }
    rows
}

fn main() {
    let sizes: Vec<u32> = std::env::var("BENCH_ROUTES")
        .unwrap_or_else(|_| "100,1000,5000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let ifaces = [
        ("en0", [10, 0, 15, 15], false),
        ("utun4", [10, 16, 11, 143], true),
    ]
    .iter()
    .enumerate()
    .map(|(i, (name, ip, p2p))| IfaceInfo {
        name: (*name).into(),
        index: i as u32 + 1,
        up: true,
        point_to_point: *p2p,
        loopback: false,
        ipv4: vec![Ipv4Addr::from(*ip)],
    })
    .collect::<Vec<_>>();
    let proxy = ProxyBinding::default();
    for n in sizes {
        let rows = table(n);
        let ev = Evidence {
            interfaces: &ifaces,
            routes: Ok(&rows),
            physical_name: None,
            tunnel_name: None,
            proxy: &proxy,
        };
        let runs = (200_000 / (n + 100)).max(3);
        let started = Instant::now();
        let mut tunnel = None;
        for _ in 0..runs {
            tunnel = judge(&ev).interfaces.tunnel.map(|t| t.name);
        }
        let each = started.elapsed() / runs;
        assert_eq!(tunnel.as_deref(), Some("utun4"));
        println!(
            "{:>6} routes: {:>10.3} ms per judgement ({runs} runs)",
            rows.len(),
            each.as_secs_f64() * 1e3
        );
    }
}
