//! The `verify` section: check that Harbor can serve an image before rewriting it, within
//! a small budget per admission, remembering the answers.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::Invalid;
use super::health::positive_duration;

/// The `verify` section as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawVerify {
    /// The longest one admission waits for the checks it needs.
    #[serde(default = "default_budget")]
    pub budget: String,
    /// How long a success is trusted.
    #[serde(default = "default_ttl")]
    pub ttl: String,
    /// How long a failure is remembered.
    #[serde(default = "default_failure_ttl")]
    pub failure_ttl: String,
    /// PEM CA certificates for the Harbor pull host, besides the public roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

fn default_budget() -> String {
    "250ms".to_owned()
}
fn default_ttl() -> String {
    "1h".to_owned()
}
fn default_failure_ttl() -> String {
    "1m".to_owned()
}

/// The verification, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verify {
    /// The longest one admission waits for the checks it needs.
    pub budget: Duration,
    /// How long a success is trusted.
    pub ttl: Duration,
    /// How long a failure is remembered.
    pub failure_ttl: Duration,
    /// CA certificates for the Harbor pull host (read by the binary).
    pub ca_file: Option<PathBuf>,
}

/// An admission waits at most this long, whatever the file says: the webhook's own
/// `timeoutSeconds` is a few seconds, and every pod creation waits on it.
const MAX_BUDGET: Duration = Duration::from_secs(2);

/// Checks the section, adding every problem to `problems`.
pub(super) fn build(raw: RawVerify, problems: &mut Vec<Invalid>) -> Option<Verify> {
    let budget = positive_duration("verify.budget", &raw.budget, problems);
    if budget.is_some_and(|b| b > MAX_BUDGET) {
        problems.push(Invalid::new(
            "verify.budget",
            &raw.budget,
            "is longer than 2s: every pod creation in an opted-in namespace waits on it",
        ));
    }
    let ttl = positive_duration("verify.ttl", &raw.ttl, problems);
    let failure_ttl = positive_duration("verify.failureTtl", &raw.failure_ttl, problems);
    Some(Verify {
        budget: budget.filter(|b| *b <= MAX_BUDGET)?,
        ttl: ttl?,
        failure_ttl: failure_ttl?,
        ca_file: raw.ca_file,
    })
}
