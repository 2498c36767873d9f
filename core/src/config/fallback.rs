//! The `fallback` section: after how long a container stuck pulling its Harbor image is
//! sent back to the original upstream image. Absent, the fallback controller does not
//! run and harbor-pilot never talks to the API server.

use std::time::Duration;

use serde::Deserialize;

use super::Invalid;
use super::health::positive_duration;

/// The `fallback` section as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawFallback {
    /// How long a rewritten container may stay in `ErrImagePull`/`ImagePullBackOff`.
    #[serde(default = "default_after")]
    pub after: String,
}

fn default_after() -> String {
    "30s".to_owned()
}

/// The fallback, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fallback {
    /// How long a rewritten container may fail to pull from Harbor before it is sent
    /// back (at once while Harbor is known to be down).
    pub after: Duration,
}

/// Checks the section, adding every problem to `problems`.
pub(super) fn build(raw: RawFallback, problems: &mut Vec<Invalid>) -> Option<Fallback> {
    positive_duration("fallback.after", &raw.after, problems).map(|after| Fallback { after })
}
