#!/usr/bin/env bash
# Time to repair, probe requests when healthy and idle wake-ups, measured in the lab
# (lab.sh's namespaces; nothing leaves them). Needs root, iproute2, nftables, python3.
#
#   cargo build --release && sudo lab/bench.sh      (BIN=... to measure another binary)
#
# The agent runs inside the lab's "mac" namespace on its defaults except the lab's endpoint,
# its listen address, fallback.mode = "auto" with the policy-routing backend,
# on_shutdown = "remove" (so each run starts clean) and no error log (error_path = "": the
# default, /tmp/STProxy.log, would follow this machine's /tmp); its stderr goes to a file,
# as under launchd.
# - time to repair, RUNS times (default 5): the agent starts on a healthy lab (no 0/1 or
#   128/1), finishes its first round; then the VPN's two routes are added and a socket bound
#   to 10.0.15.15 (what the proxy does) polls every 20 ms (250 ms timeout) until it egresses
#   as the home IP again. Measured from just before `ip route add` to that answer.
# - healthy: after the first round, IDLE_SECS (default 310, one heartbeat) of nothing; the
#   endpoint counts the TCP connections it receives, /proc counts the agent's wake-ups
#   (voluntary context switches of all its threads: each is a thread that blocked and was
#   woken again; preemptions, which the machine's load causes, are not counted; the split by
#   thread name goes to stderr) and CPU time (utime + stime of /proc/PID/stat).
# Each figure is printed with the load average at that moment: on a shared machine a load
# above the core count stretches the repair times (not the request count or the CPU time).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
BIN=${BIN:-$root/target/release/pia-split-tunnel-exporter}
RUNS=${RUNS:-5}
IDLE_SECS=${IDLE_SECS:-310}
prefix=bench$$
prefix=${prefix:0:8}
mac=${prefix}mac internet=${prefix}internet

[ -x "$BIN" ] || { echo "bench: no agent binary at $BIN (cargo build --release, or BIN=...)" >&2; exit 1; }
work=$(mktemp -d)
agent_pid=
cleanup() {
  [ -n "$agent_pid" ] && kill "$agent_pid" 2>/dev/null && wait "$agent_pid" 2>/dev/null
  bash "$here/lab.sh" down "$prefix" || true
  rm -rf "$work"
}
trap cleanup EXIT

bash "$here/lab.sh" up "$prefix"
halves() { for h in 0.0.0.0/1 128.0.0.0/1; do ip -n "$mac" route "$1" "$h" via 10.16.0.1 dev utun4; done; }
halves del
# Connections (SYNs) reaching the what-is-my-IP server.
ip netns exec "$internet" nft -f - <<'EOF'
table ip bench {
  chain input { type filter hook input priority filter; tcp dport 80 tcp flags syn counter; }
}
EOF
syns() { ip netns exec "$internet" nft list table ip bench | sed -n 's/.*packets \([0-9]*\).*/\1/p'; }

: > "$work/proxy.log"
cat > "$work/agent.toml" <<EOF
[log]
path = "$work/proxy.log"
error_path = ""
checkpoint = "$work/cp.json"
[http]
listen = "10.0.15.15:9847"
[probe]
endpoints = ["http://203.0.113.10/"]
[processes]
extension = ["pia-split-tunnel"]
daemon = ["pia-split-tunnel"]
vpn = ["pia-split-tunnel"]
[fallback]
mode = "auto"
backend = "policy-routing"
on_shutdown = "remove"
EOF

in_mac() { ip netns exec "$mac" "$@"; }

start_agent() {
  rm -f "$work/cp.json"
  ip netns exec "$mac" "$BIN" --config "$work/agent.toml" run 2>>"$work/agent.log" &
  agent_pid=$!
  # Until the first round is done.
  in_mac python3 - <<'EOF'
import time, urllib.request
deadline = time.time() + 60
while time.time() < deadline:
    try:
        body = urllib.request.urlopen("http://10.0.15.15:9847/metrics", timeout=1).read().decode()
        # Without the VPN's halves the unbound path leaves outside the tunnel: a leak verdict.
        if '\npia_split_tunnel_verdict{state="vpn_leak"} 1\n' in body:
            raise SystemExit(0)
    except OSError:
        pass
    time.sleep(0.1)
raise SystemExit("bench: the agent's first round did not find the bypass working")
EOF
}

stop_agent() {
  kill -TERM "$agent_pid"
  wait "$agent_pid" || true
  agent_pid=
}

# Adds the VPN's routes and returns the seconds until a source-bound request gets out.
repair_time() {
  in_mac python3 - <<'EOF'
import socket, subprocess, time
t0 = time.monotonic()
for half in ("0.0.0.0/1", "128.0.0.0/1"):
    subprocess.run(["ip", "route", "add", half, "via", "10.16.0.1", "dev", "utun4"], check=True)
while time.monotonic() - t0 < 120:
    s = socket.socket()
    s.settimeout(0.25)
    try:
        s.bind(("10.0.15.15", 0))
        s.connect(("203.0.113.10", 80))
        s.sendall(b"GET / HTTP/1.0\r\nHost: 203.0.113.10\r\n\r\n")
        if b"198.51.100.47" in s.recv(4096):
            print(f"{time.monotonic() - t0:.3f}")
            raise SystemExit(0)
    except OSError:
        pass
    finally:
        s.close()
    time.sleep(0.02)
raise SystemExit("bench: no repair within 120 s")
EOF
}

times=()
for run in $(seq "$RUNS"); do
  start_agent
  t=$(repair_time)
  times+=("$t")
  echo "run $run: repaired in $t s (load average $(cut -d' ' -f1-3 /proc/loadavg))"
  stop_agent
  halves del
  if ip -n "$mac" rule | grep -q 'lookup 100'; then echo "bench: a rule was left behind" >&2; exit 1; fi
done

# Healthy and idle: one heartbeat's worth of time after the first round.
start_agent
sleep 2
pid=$agent_pid
r0=$(syns)
t0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
# Threads come and go (tokio's blocking pool): each thread's switches are summed as seen every
# 0.2 s, so one that exits loses at most its last 0.2 s.
w=$(python3 - "$pid" "$IDLE_SECS" <<'EOF'
import collections, os, sys, time
pid, secs = sys.argv[1], float(sys.argv[2])
def counts():
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            name = open(f"/proc/{pid}/task/{tid}/comm").read().strip()
            for line in open(f"/proc/{pid}/task/{tid}/status"):
                if line.startswith("voluntary_ctxt_switches:"):
                    out[tid] = (name, int(line.split()[1]))
        except OSError:
            pass
    return out
last, per_name, end = counts(), collections.Counter(), time.monotonic() + secs
while time.monotonic() < end:
    time.sleep(0.2)
    now = counts()
    for t, (name, n) in now.items():
        per_name[name] += n - last.get(t, (name, 0))[1]
    last = now
# Which threads woke, by name: where to look to make the agent quieter.
print("wake-ups by thread:", ", ".join(f"{k} {v}" for k, v in per_name.most_common()), file=sys.stderr)
print(sum(per_name.values()))
EOF
)
t1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
r1=$(syns)
idle_load=$(cut -d' ' -f1-3 /proc/loadavg)
stop_agent
hz=$(getconf CLK_TCK)

printf '%s\n' "${times[@]}" | sort -n | awk -v runs="$RUNS" '
  { t[NR] = $1 }
  END {
    median = (NR % 2) ? t[(NR + 1) / 2] : (t[NR / 2] + t[NR / 2 + 1]) / 2
    printf "time to repair over %d runs: median %.2f s, max %.2f s (min %.2f s)\n", runs, median, t[NR], t[1]
  }'
awk -v r="$((r1 - r0))" -v s="$IDLE_SECS" -v w="$w" -v t="$((t1 - t0))" -v hz="$hz" -v load="$idle_load" 'BEGIN {
  printf "healthy, nothing changing, over %d s: %d probe requests (%.0f per hour at this rate), %.2f wake-ups/s, CPU %.0f ms per minute (load average at the end %s)\n",
    s, r, r * 3600 / s, w / s, t * 1000 / hz * 60 / s, load
}'
