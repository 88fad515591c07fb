# Shared by install.sh and uninstall.sh: where things go, and launchctl helpers.
# PIA_STE_ROOT prefixes every path (tests install into a temporary folder; empty on a Mac).
LABEL=io.github.pia-split-tunnel-exporter
ROOT=${PIA_STE_ROOT:-}
BIN=$ROOT/usr/local/bin/pia-split-tunnel-exporter
# Root trusts only what root can change: not /usr/local/etc, which Homebrew gives its user.
CONF_DIR=$ROOT/etc/pia-split-tunnel-exporter
# Where earlier versions put it; install.sh copies a config from there once.
OLD_CONF_DIR=$ROOT/usr/local/etc/pia-split-tunnel-exporter
STATE_DIR=$ROOT/var/db/pia-split-tunnel-exporter
PLIST=$ROOT/Library/LaunchDaemons/$LABEL.plist
LOG=$ROOT/var/log/pia-split-tunnel-exporter.log
NEWSYSLOG=$ROOT/etc/newsyslog.d/pia-split-tunnel-exporter.conf
# The agent has launchd's ExitTimeOut (20 s) to stop; a little more before giving up.
UNLOAD_WAIT_TENTHS=300

# Stops the daemon if loaded and waits until launchd has forgotten it: bootout returns
# before the job is gone, and a bootstrap meanwhile fails ("Input/output error").
unload() {
  launchctl print "system/$LABEL" >/dev/null 2>&1 || return 0
  launchctl bootout "system/$LABEL" 2>/dev/null || true
  i=0
  while launchctl print "system/$LABEL" >/dev/null 2>&1; do
    i=$((i + 1))
    if [ "$i" -gt "$UNLOAD_WAIT_TENTHS" ]; then
      echo "$LABEL is still loaded 30 s after bootout" >&2
      return 1
    fi
    sleep 0.1
  done
}
