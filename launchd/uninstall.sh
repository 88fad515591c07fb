#!/bin/sh
# Removes the LaunchDaemon, its log rotation entry and the binary:
#   sudo launchd/uninstall.sh [--purge]
# The fallback is reverted first; --purge also removes the config, the checkpoint and the log
# (with its rotated archives).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
. "$here/common.sh"
[ "$(id -u)" -eq 0 ] || { echo "uninstall.sh: run with sudo" >&2; exit 1; }
unload
if [ -x "$BIN" ]; then
  "$BIN" --config "$CONF_DIR/config.toml" fallback revert || true
fi
rm -f "$PLIST" "$BIN" "$NEWSYSLOG"
if [ "${1:-}" = "--purge" ]; then
  rm -rf "$CONF_DIR" "$STATE_DIR"
  rm -f "$LOG" "$LOG".[0-9]*
fi
echo "uninstalled"
