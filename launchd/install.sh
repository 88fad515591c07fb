#!/bin/sh
# Installs the agent as a LaunchDaemon: sudo launchd/install.sh [path/to/pia-split-tunnel-exporter]
# (default: the release build of this checkout). An existing config is kept.
set -eu
LABEL=io.github.pia-split-tunnel-exporter
BIN=/usr/local/bin/pia-split-tunnel-exporter
CONF_DIR=/usr/local/etc/pia-split-tunnel-exporter
STATE_DIR=/var/db/pia-split-tunnel-exporter
PLIST=/Library/LaunchDaemons/$LABEL.plist

here=$(cd "$(dirname "$0")" && pwd)
src=${1:-$here/../target/release/pia-split-tunnel-exporter}
[ "$(id -u)" -eq 0 ] || { echo "install.sh: run with sudo" >&2; exit 1; }
[ -x "$src" ] || { echo "install.sh: no binary at $src (cargo build --release first)" >&2; exit 1; }

install -d -m 755 /usr/local/bin "$CONF_DIR"
install -d -m 700 "$STATE_DIR"
install -m 755 "$src" "$BIN"
[ -f "$CONF_DIR/config.toml" ] || install -m 644 "$here/config.toml" "$CONF_DIR/config.toml"
# A config error stops the install here, with the key named, not in a crash loop.
"$BIN" --config "$CONF_DIR/config.toml" check-config >/dev/null

install -m 644 "$here/$LABEL.plist" "$PLIST"
chown root:wheel "$PLIST"
chmod 644 "$PLIST"
launchctl bootout "system/$LABEL" 2>/dev/null || true
launchctl bootstrap system "$PLIST"
echo "installed: metrics at http://127.0.0.1:9847/metrics, log in /var/log/pia-split-tunnel-exporter.log"
