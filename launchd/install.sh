#!/bin/sh
# Installs the agent as a LaunchDaemon: sudo launchd/install.sh [path/to/pia-split-tunnel-exporter]
# (default: the release build of this checkout). An existing config is kept. Running it again
# (an upgrade) replaces the binary and restarts the daemon.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
. "$here/common.sh"
src=${1:-$here/../target/release/pia-split-tunnel-exporter}
[ "$(id -u)" -eq 0 ] || { echo "install.sh: run with sudo" >&2; exit 1; }
[ -x "$src" ] || { echo "install.sh: no binary at $src (cargo build --release first)" >&2; exit 1; }

install -d -m 755 "$(dirname "$BIN")" "$CONF_DIR" "$(dirname "$PLIST")" "$(dirname "$LOG")" "$(dirname "$NEWSYSLOG")"
install -d -m 700 "$STATE_DIR"
if [ ! -f "$CONF_DIR/config.toml" ] && [ -f "$OLD_CONF_DIR/config.toml" ]; then
  install -m 644 "$OLD_CONF_DIR/config.toml" "$CONF_DIR/config.toml"
  echo "install.sh: copied $OLD_CONF_DIR/config.toml to $CONF_DIR/ (review it; the old one is unused now)"
fi
[ -f "$CONF_DIR/config.toml" ] || install -m 644 "$here/config.toml" "$CONF_DIR/config.toml"
chown -R root:wheel "$CONF_DIR"
# A config error stops the install here, with the key named, not in a crash loop.
"$src" --config "$CONF_DIR/config.toml" check-config >/dev/null

unload
install -m 755 "$src" "$BIN"
install -m 644 "$here/$LABEL.plist" "$PLIST"
chown root:wheel "$PLIST"
chmod 644 "$PLIST"
# Rotation of the daemon's log (newsyslog reads /etc/newsyslog.d/*.conf).
install -m 644 "$here/pia-split-tunnel-exporter.newsyslog.conf" "$NEWSYSLOG"
chown root:wheel "$NEWSYSLOG"
# A label disabled earlier (launchctl disable) would make bootstrap fail.
launchctl enable "system/$LABEL"
launchctl bootstrap system "$PLIST"
echo "installed: metrics at http://127.0.0.1:9847/metrics, log in /var/log/pia-split-tunnel-exporter.log"
