//! Platforms other than Linux and macOS: no default routes, no routing facts. The agent still
//! builds there; discovery then needs configured interface names.

use super::command::Tools;
use super::{Interfaces, RouteEntry, RoutingFacts};

pub fn table(_tools: &Tools) -> Result<Vec<RouteEntry>, String> {
    Err("no routing-table reader on this OS".into())
}

pub fn routing_facts(_tools: &Tools, _ifs: &Interfaces) -> RoutingFacts {
    RoutingFacts::default()
}
