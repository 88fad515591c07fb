//! temporary stub
use std::process::ExitCode;
pub fn run_blocking(_config: crate::config::Config) -> anyhow::Result<ExitCode> {
    anyhow::bail!("stub")
}
pub fn init_tracing() {}
pub async fn shutdown_signal() {}
pub async fn run(
    _c: crate::config::Config,
    _l: tokio::net::TcpListener,
    _s: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    Ok(())
}
