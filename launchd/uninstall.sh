#!/bin/sh
# Removes the LaunchDaemon and the binary: sudo launchd/uninstall.sh [--purge]
# The fallback is reverted first; --purge also removes the config and the checkpoint.
set -eu
LABEL=io.github.pia-split-tunnel-exporter
BIN=/usr/local/bin/pia-split-tunnel-exporter
CONF_DIR=/usr/local/etc/pia-split-tunnel-exporter
STATE_DIR=/var/db/pia-split-tunnel-exporter
PLIST=/Library/LaunchDaemons/$LABEL.plist

[ "$(id -u)" -eq 0 ] || { echo "uninstall.sh: run with sudo" >&2; exit 1; }
launchctl bootout "system/$LABEL" 2>/dev/null || true
if [ -x "$BIN" ]; then
  "$BIN" --config "$CONF_DIR/config.toml" fallback revert || true
fi
rm -f "$PLIST" "$BIN"
if [ "${1:-}" = "--purge" ]; then
  rm -rf "$CONF_DIR" "$STATE_DIR"
fi
echo "uninstalled"
