#!/usr/bin/env bash
# What writes to an unrelated file in the error log's folder (`/tmp` on a Mac) cost the agent:
# its CPU share while another process appends one byte at a time to `unrelated.txt` beside
# `STProxy.log` as fast as it can. Linux only (inotify; /proc for the CPU time). Needs
# python3 for the writer.
#
#   cargo build && lab/unrelated-writes.sh        (BIN=... for another binary, SECS=10)
#
# Prints the agent's CPU share of one core over SECS, and how many writes the writer made.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
BIN=${BIN:-$root/target/debug/pia-split-tunnel-exporter}
SECS=${SECS:-10}
dir=$(mktemp -d)
shared=$dir/tmp
mkdir -p "$shared"
trap 'kill "$agent" "$writer" 2>/dev/null || true; rm -rf "$dir"' EXIT

printf '' >"$dir/transparent_proxy.log"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$BIN" run --listen "127.0.0.1:$port" --log-path "$dir/transparent_proxy.log" \
    --checkpoint "$dir/cp.json" --set probe.enabled=false \
    --set "log.error_path=\"$shared/STProxy.log\"" 2>"$dir/agent.err" &
agent=$!
for _ in $(seq 50); do
    curl -fsS "http://127.0.0.1:$port/-/healthy" >/dev/null 2>&1 && break
    sleep 0.1
done
sleep 2

ticks() { awk '{print $14 + $15}' "/proc/$agent/stat"; }
python3 - "$shared/unrelated.txt" "$SECS" >"$dir/writes" <<'PY' &
import os, sys, time
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
end, n = time.time() + float(sys.argv[2]), 0
while time.time() < end:
    for _ in range(1000):
        os.write(fd, b"x")
    n += 1000
print(n)
PY
writer=$!
t0=$(ticks)
start=$(date +%s.%N)
wait "$writer"
t1=$(ticks)
end=$(date +%s.%N)
hz=$(getconf CLK_TCK)
python3 -c "
ticks, hz, secs, writes = $t1 - $t0, $hz, $end - $start, $(cat "$dir/writes")
print(f'agent CPU while another process appended to an unrelated file in its error log folder: '
      f'{ticks / hz / secs * 100:.1f} % of a core over {secs:.1f} s ({writes / secs:,.0f} writes/s)')
"
