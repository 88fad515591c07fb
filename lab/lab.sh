#!/usr/bin/env bash
# The split-tunnel failure, for real, in network namespaces this script creates and removes.
#
#   lab.sh up PREFIX       build the topology (namespaces PREFIXmac, PREFIXrouter, PREFIXvpn, PREFIXinternet)
#   lab.sh down PREFIX     remove it (also the what-is-my-IP server)
#   lab.sh repair PREFIX   the manual fix: ip rule from 10.0.15.15 lookup 100 + default via 10.0.15.1 in table 100
#   lab.sh unrepair PREFIX undo it
#   lab.sh pia-fix PREFIX  a "fixed PIA": the tunnel side routes the bound address out of en0
#                          itself (ip rule from 10.0.15.15 lookup 200, after the agent's 100)
#   lab.sh pia-unfix PREFIX  undo it
#   lab.sh exec PREFIX CMD...  run CMD inside the "mac" namespace
#
#  mac:  en0 10.0.15.15/24 ── router: 10.0.15.1, masquerades to 198.51.100.47 ──┐
#        utun4 10.16.11.143/16 ── vpn: 10.16.0.1, drops sources outside         ├─ internet: 203.0.113.10:80
#        routes: default via 10.0.15.1,   10.16.0.0/16, masquerades to 192.0.2.18 ┘   (answers the caller's IP)
#                0/1 and 128/1 via 10.16.0.1 (the VPN's routes)
#
# In it the default path egresses as 192.0.2.18, the physical interface as 198.51.100.47, and a
# socket bound only to 10.0.15.15 (what PIA's proxy does) follows 0/1 into utun4 and times out.
# Everything runs through `ip -n NS` or `ip netns exec NS`: the default namespace's routes and
# rules are never touched. Only documentation and lab ranges are used.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cmd=${1:-}
prefix=${2:-}

die() { echo "lab: $*" >&2; exit 1; }
[ -n "$cmd" ] || die "usage: lab.sh up|down|repair|unrepair|pia-fix|pia-unfix|exec PREFIX [CMD...]"
# A prefix keeps parallel labs apart and makes sure no name is the default namespace.
[[ "$prefix" =~ ^[a-z][a-z0-9]{0,7}$ ]] || die "PREFIX must be 1-8 lower-case letters or digits (got '$prefix')"
[ "$(id -u)" -eq 0 ] || die "needs root (network namespaces); run as root or with sudo"
command -v ip >/dev/null || die "needs iproute2 (apt-get install iproute2)"

mac=${prefix}mac router=${prefix}router vpn=${prefix}vpn internet=${prefix}internet
pidfile=/run/pia-split-tunnel-lab-${prefix}.pid

down() {
  if [ -f "$pidfile" ]; then
    kill "$(cat "$pidfile")" 2>/dev/null || true
    rm -f "$pidfile"
  fi
  for ns in "$mac" "$router" "$vpn" "$internet"; do
    ip netns del "$ns" 2>/dev/null || true
  done
}

up() {
  command -v nft >/dev/null || die "needs nftables (apt-get install nftables)"
  command -v python3 >/dev/null || die "needs python3 for the what-is-my-IP server"
  down
  trap 'down' ERR
  for ns in "$mac" "$router" "$vpn" "$internet"; do ip netns add "$ns"; done
  for ns in "$mac" "$router" "$vpn" "$internet"; do ip -n "$ns" link set lo up; done

  # Links are created inside the namespaces, so no name ever exists in the default one.
  ip -n "$mac" link add en0 type veth peer name lan netns "$router"
  ip -n "$mac" link add utun4 type veth peer name tun netns "$vpn"
  ip -n "$router" link add wan type veth peer name home netns "$internet"
  ip -n "$vpn" link add wan type veth peer name exit netns "$internet"

  ip -n "$mac" addr add 10.0.15.15/24 dev en0
  ip -n "$mac" addr add 10.16.11.143/16 dev utun4
  ip -n "$router" addr add 10.0.15.1/24 dev lan
  ip -n "$router" addr add 198.51.100.47/24 dev wan
  ip -n "$vpn" addr add 10.16.0.1/16 dev tun
  ip -n "$vpn" addr add 192.0.2.18/24 dev wan
  ip -n "$internet" addr add 198.51.100.1/24 dev home
  ip -n "$internet" addr add 192.0.2.1/24 dev exit
  ip -n "$internet" addr add 203.0.113.10/32 dev lo
  for pair in "$mac en0" "$mac utun4" "$router lan" "$router wan" "$vpn tun" "$vpn wan" "$internet home" "$internet exit"; do
    set -- $pair
    ip -n "$1" link set "$2" up
  done

  ip -n "$mac" route add default via 10.0.15.1 dev en0
  ip -n "$mac" route add 0.0.0.0/1 via 10.16.0.1 dev utun4
  ip -n "$mac" route add 128.0.0.0/1 via 10.16.0.1 dev utun4
  ip -n "$router" route add default via 198.51.100.1 dev wan
  ip -n "$vpn" route add default via 192.0.2.1 dev wan

  for ns in "$router" "$vpn"; do ip netns exec "$ns" sysctl -qw net.ipv4.ip_forward=1; done
  # Replies to the bound-but-misrouted packets must not be rescued by a lax reverse-path check.
  ip netns exec "$mac" sysctl -qw net.ipv4.conf.all.rp_filter=0

  ip netns exec "$router" nft -f - <<'EOF'
table ip lab {
  chain nat_post { type nat hook postrouting priority srcnat; oifname "wan" masquerade; }
}
EOF
  # Like a real VPN server: only the tunnel's own addresses get through.
  ip netns exec "$vpn" nft -f - <<'EOF'
table ip lab {
  chain filter_forward { type filter hook forward priority filter; iifname "tun" ip saddr != 10.16.0.0/16 drop; }
  chain nat_post { type nat hook postrouting priority srcnat; oifname "wan" masquerade; }
}
EOF

  ip netns exec "$internet" python3 "$here/whoami.py" 203.0.113.10 80 >/dev/null 2>&1 &
  echo $! > "$pidfile"
  for _ in $(seq 50); do
    if ip netns exec "$router" python3 -c 'import socket,sys; socket.create_connection(("203.0.113.10", 80), 0.2)' 2>/dev/null; then
      trap - ERR
      return 0
    fi
    sleep 0.1
  done
  die "the what-is-my-IP server did not start"
}

case "$cmd" in
  up) up ;;
  down) down ;;
  repair)
    ip -n "$mac" rule add from 10.0.15.15 lookup 100 priority 100
    ip -n "$mac" route add default via 10.0.15.1 dev en0 table 100
    ;;
  unrepair)
    ip -n "$mac" rule del from 10.0.15.15 lookup 100 priority 100 2>/dev/null || true
    ip -n "$mac" route flush table 100 2>/dev/null || true
    ;;
  pia-fix)
    # What a PIA that fixed the bug does: the bound source leaves by the physical interface
    # without anyone's repair. Its own table and a lower priority than the agent's rule, so
    # it works exactly when the agent's rule is lifted.
    ip -n "$mac" rule add from 10.0.15.15 lookup 200 priority 200
    ip -n "$mac" route add default via 10.0.15.1 dev en0 table 200
    ;;
  pia-unfix)
    ip -n "$mac" rule del from 10.0.15.15 lookup 200 priority 200 2>/dev/null || true
    ip -n "$mac" route flush table 200 2>/dev/null || true
    ;;
  exec)
    shift 2
    exec ip netns exec "$mac" "$@"
    ;;
  *) die "unknown command '$cmd'" ;;
esac
