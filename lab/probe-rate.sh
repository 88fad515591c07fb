#!/usr/bin/env bash
# Probe requests the real agent sends, counted in the lab (lab.sh's namespaces; nothing leaves
# them): healthy, bypass broken in observe, bypass broken in auto. Needs root, iproute2,
# nftables, python3.
#
#   cargo build --release && sudo lab/probe-rate.sh      (BIN=... another binary)
#
# Each scenario starts the agent on its defaults (heartbeat 300 s) except the lab's endpoint,
# its listen address, the fallback mode and the policy-routing backend, and counts for
# WINDOW seconds (default 330: the start round and one heartbeat) the TCP connections (SYNs)
# leaving the Mac's namespace for the endpoint: every probe request, whether it is answered
# or (the broken bypass) dropped by the VPN. Each figure is printed beside the agent's own
# round count. `cargo bench --bench probe_rate` gives the hour through the same schedule and
# policy in simulated time.
#   healthy        the VPN's routes and the manual repair (lab.sh repair): the bypass works
#   broken-observe the VPN's routes, no repair, fallback.mode = "observe" (the default)
#   broken-auto    the VPN's routes, no repair, fallback.mode = "auto": the agent repairs
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
BIN=${BIN:-$root/target/release/pia-split-tunnel-exporter}
WINDOW=${WINDOW:-330}
SCENARIOS=${SCENARIOS:-healthy broken-observe broken-auto}
prefix=rate$$
prefix=${prefix:0:8}
mac=${prefix}mac

[ -x "$BIN" ] || { echo "probe-rate: no agent binary at $BIN (cargo build --release, or BIN=...)" >&2; exit 1; }
work=$(mktemp -d)
agent_pid=
cleanup() {
  [ -n "$agent_pid" ] && kill "$agent_pid" 2>/dev/null && wait "$agent_pid" 2>/dev/null
  bash "$here/lab.sh" down "$prefix" || true
  rm -rf "$work"
}
trap cleanup EXIT

# The requests leaving the Mac for the endpoint, on every path.
count_requests() {
  ip netns exec "$mac" nft -f - <<'EOF'
table ip rate {
  chain output { type filter hook output priority filter; ip daddr 203.0.113.10 tcp dport 80 tcp flags syn counter; }
}
EOF
}
requests() { ip netns exec "$mac" nft list table ip rate | sed -n 's/.*packets \([0-9]*\).*/\1/p'; }
rounds() {
  ip netns exec "$mac" python3 -c '
import urllib.request
body = urllib.request.urlopen("http://10.0.15.15:9847/metrics", timeout=5).read().decode()
print(next((l.split()[1] for l in body.splitlines() if l.startswith("pia_split_tunnel_probe_rounds_total ")), "?"))'
}

run() {
  local scenario=$1 mode=observe
  bash "$here/lab.sh" up "$prefix"
  case "$scenario" in
    healthy) bash "$here/lab.sh" repair "$prefix" ;;
    broken-observe) ;;
    broken-auto) mode=auto ;;
    *) echo "probe-rate: unknown scenario '$scenario'" >&2; exit 1 ;;
  esac
  count_requests
  : > "$work/proxy.log"
  rm -f "$work/cp.json" "$work/state.json"
  cat > "$work/agent.toml" <<EOF
[log]
path = "$work/proxy.log"
error_path = ""
checkpoint = "$work/cp.json"
[http]
listen = "10.0.15.15:9847"
[probe]
endpoints = ["http://203.0.113.10/"]
[fallback]
mode = "$mode"
backend = "policy-routing"
state_file = "$work/state.json"
on_shutdown = "remove"
EOF
  ip netns exec "$mac" "$BIN" --config "$work/agent.toml" run 2>>"$work/agent-$scenario.log" &
  agent_pid=$!
  sleep "$WINDOW"
  local n r
  n=$(requests)
  r=$(rounds)
  kill -TERM "$agent_pid"
  wait "$agent_pid" || true
  agent_pid=
  printf '%-15s %4s requests, %3s rounds in %s s (load average %s)\n' \
    "$scenario" "$n" "$r" "$WINDOW" "$(cut -d' ' -f1-3 /proc/loadavg)"
  bash "$here/lab.sh" down "$prefix"
}

for s in $SCENARIOS; do run "$s"; done
