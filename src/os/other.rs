//! Platforms other than Linux and macOS: no default routes, no routing facts. The agent still
//! builds there; discovery then needs configured interface names.

use super::command::Tools;
use super::{DefaultRoute, Interfaces, RoutingFacts};

pub fn default_routes(_tools: &Tools) -> Vec<DefaultRoute> {
    Vec::new()
}

pub fn routing_facts(_tools: &Tools, _ifs: &Interfaces) -> RoutingFacts {
    RoutingFacts::default()
}
