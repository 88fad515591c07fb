//! The repair: policy, backends (PF on macOS, policy routing on Linux), verification.

use serde::{Deserialize, Serialize};

/// `[fallback]` section of the config.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FallbackConfig {}
