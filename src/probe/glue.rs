//! Temporary glue until the prober lands: no real source, no probe metrics.
use std::sync::Arc;
use std::time::Duration;

use super::{ProbeConfig, Round, RoundSource};

pub fn real_source(_cfg: &ProbeConfig) -> Option<Arc<dyn RoundSource>> {
    None
}
pub fn interval(_cfg: &ProbeConfig) -> Duration {
    Duration::from_secs(30)
}
pub fn register_metrics(_r: &prometheus::Registry) -> prometheus::Result<()> {
    Ok(())
}
pub fn record_round(_round: &Round) {}
