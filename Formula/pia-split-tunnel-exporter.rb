# Homebrew formula: this repository is its own tap.
#   brew tap pia-split-tunnel-exporter/pia-split-tunnel-exporter \
#     https://github.com/pia-split-tunnel-exporter/pia-split-tunnel-exporter
#   brew install --HEAD pia-split-tunnel-exporter
#   sudo brew services start pia-split-tunnel-exporter
# There is no tagged release yet, so the formula builds the main branch (--HEAD); the first
# release adds `url` and `sha256` of its tarball here.
class PiaSplitTunnelExporter < Formula
  desc "Prometheus exporter and repair agent for PIA's split tunnel on macOS"
  homepage "https://github.com/pia-split-tunnel-exporter/pia-split-tunnel-exporter"
  license any_of: ["MIT", "Apache-2.0"]
  head "https://github.com/pia-split-tunnel-exporter/pia-split-tunnel-exporter.git", branch: "main"

  depends_on "rust" => :build
  depends_on :macos

  def install
    # The build script reads the revision from git; the staged sources may have no .git.
    ENV["PIA_STE_GIT_REVISION"] = Utils.git_short_head(cached_download, length: 12) if build.head?
    system "cargo", "install", *std_cargo_args
    (etc/"pia-split-tunnel-exporter").install "launchd/config.toml"
    pkgshare.install "dashboards", "alerts", "prometheus"
  end

  def caveats
    <<~EOS
      The config is #{etc}/pia-split-tunnel-exporter/config.toml; the agent keeps its state in
      /var/db/pia-split-tunnel-exporter/. It runs as root (it reads PIA's log and may load a pf
      anchor): start it with
        sudo brew services start pia-split-tunnel-exporter
      PIA's debug logging (Settings > Help) must be on for sessions to be counted.
      Metrics: http://127.0.0.1:9847/metrics. Dashboard, alert rules and the fleet examples (Prometheus agent mode,
      Alertmanager): #{opt_pkgshare}.
      Reload after editing the config:
        sudo launchctl kill SIGHUP system/homebrew.mxcl.pia-split-tunnel-exporter
      The log is #{var}/log/pia-split-tunnel-exporter.log, not rotated by this formula (a
      newsyslog line for it: docs/operations.md). Its level and format are the config's
      [agent_log] keys (brew services passes no flags).
      brew uninstall leaves the config, the log and /var/db/pia-split-tunnel-exporter/:
      docs/operations.md#uninstall removes them.
      The agent runs as root and trusts its config only because no one but root, the owner of
      #{HOMEBREW_PREFIX} and the admin group (who can replace its binary, so already are root)
      can change it: keep it so, or it refuses to start and names the file.
    EOS
  end

  service do
    run [opt_bin/"pia-split-tunnel-exporter", "--config", etc/"pia-split-tunnel-exporter/config.toml", "run"]
    require_root true
    keep_alive true
    process_type :standard
    # launchd holds the port across the agent's restarts (Sockets "listeners"); the agent
    # serves on it, so http.listen is then not used.
    sockets "tcp://127.0.0.1:9847"
    log_path var/"log/pia-split-tunnel-exporter.log"
    error_log_path var/"log/pia-split-tunnel-exporter.log"
  end

  test do
    assert_match "revision", shell_output("#{bin}/pia-split-tunnel-exporter --version")
    port = free_port
    pid = spawn bin/"pia-split-tunnel-exporter", "demo", "--listen", "127.0.0.1:#{port}", "--speed", "20"
    begin
      metrics = ""
      30.times do
        sleep 1
        metrics = shell_output("curl -s http://127.0.0.1:#{port}/metrics", nil)
        break if metrics.include?("pia_split_tunnel_sessions_opened_total")
      end
      assert_match "pia_split_tunnel_build_info", metrics
      assert_match "pia_split_tunnel_sessions_opened_total", metrics
    ensure
      Process.kill("TERM", pid)
      Process.wait(pid)
    end
  end
end
