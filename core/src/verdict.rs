//! What happens to one image of a request, and why.
//!
//! The rules decide from the image alone ([`crate::rules::Decision`]); the request can
//! still take an image out of consideration: an UPDATE that leaves it as it was, an
//! ephemeral container that already exists, a pod that opts out ([`crate::patch`]), or
//! Harbor being unavailable ([`crate::admission`]). Every layer's reasons live here, in
//! one enum, because one metric label (`images_skipped_total{reason}`) and one
//! `--explain` column cover them all; each layer produces only its own.
//!
//! Pure: types only.

use std::fmt;

use crate::rules::{Decision, Keep, Rewrite};

/// The outcome for one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict<'r> {
    /// Pull it through Harbor.
    Rewrite(Rewrite<'r>),
    /// Leave it as written.
    Keep(Reason<'r>),
}

/// Why an image is left as written. [`Reason::as_str`] gives the metric label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason<'r> {
    /// The rules say so.
    Rule(Keep<'r>),
    /// Pod UPDATE: same image as in the running pod; rewriting it would restart the
    /// container.
    UnchangedOnUpdate,
    /// `pods/ephemeralcontainers`: an ephemeral container that already exists (they are
    /// immutable once added).
    ExistingEphemeral,
    /// The pod is labelled `harbor-pilot.io/rewrite: disabled`.
    PodOptedOut,
    /// Pod UPDATE: set back to the original recorded in `harbor-pilot.io/original-images`
    /// (by the fallback controller, or by hand); it stays upstream.
    RevertedToOriginal,
    /// It would be rewritten, but Harbor is down (or not probed yet): fail open.
    HarborUnavailable,
    /// It would be rewritten, but Harbor answered that it cannot serve the rewrite.
    NotServedByHarbor {
        /// What Harbor answered (`HTTP 404`, a connection error).
        answer: String,
    },
    /// It would be rewritten, but Harbor's answer for it did not come within
    /// `verify.budget`; the check goes on and the next pod knows.
    Unverified,
}

/// What is known about whether Harbor can serve a rewritten image (`verify`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Served {
    /// Yes (or nothing is verified): rewrite.
    Yes,
    /// No, and what Harbor answered.
    No(String),
    /// Not known within the budget.
    Unknown,
}

impl Reason<'_> {
    /// A stable, bounded label value for metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            Reason::Rule(keep) => keep.as_str(),
            Reason::UnchangedOnUpdate => "unchanged_on_update",
            Reason::ExistingEphemeral => "existing_ephemeral",
            Reason::PodOptedOut => "pod_opted_out",
            Reason::RevertedToOriginal => "reverted_to_original",
            Reason::HarborUnavailable => "harbor_unavailable",
            Reason::NotServedByHarbor { .. } => "not_served_by_harbor",
            Reason::Unverified => "unverified",
        }
    }

    /// Every label value [`Reason::as_str`] can return: the rules' own, then the
    /// request's (a test checks the list is complete and has no duplicates).
    pub const LABELS: [&'static str; Keep::LABELS.len() + 7] = {
        let mut out = [""; Keep::LABELS.len() + 7];
        let mut i = 0;
        while i < Keep::LABELS.len() {
            out[i] = Keep::LABELS[i];
            i += 1;
        }
        out[i] = "unchanged_on_update";
        out[i + 1] = "existing_ephemeral";
        out[i + 2] = "pod_opted_out";
        out[i + 3] = "reverted_to_original";
        out[i + 4] = "harbor_unavailable";
        out[i + 5] = "not_served_by_harbor";
        out[i + 6] = "unverified";
        out
    };
}

impl fmt::Display for Reason<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Rule(keep) => keep.fmt(f),
            Reason::UnchangedOnUpdate => {
                f.write_str("unchanged by this update (rewriting would restart the container)")
            }
            Reason::ExistingEphemeral => f.write_str("existing ephemeral container (immutable)"),
            Reason::PodOptedOut => f.write_str("pod labelled harbor-pilot.io/rewrite: disabled"),
            Reason::RevertedToOriginal => f.write_str(
                "set back to its recorded original (a fallback, or by hand): stays upstream",
            ),
            Reason::HarborUnavailable => {
                f.write_str("Harbor is unavailable: left upstream (fail open)")
            }
            Reason::NotServedByHarbor { answer } => {
                write!(
                    f,
                    "Harbor cannot serve the rewrite ({answer}): left upstream"
                )
            }
            Reason::Unverified => f.write_str(
                "Harbor's answer did not come within verify.budget: left upstream this time",
            ),
        }
    }
}

impl fmt::Display for Verdict<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Rewrite(r) => Decision::Rewrite(r.clone()).fmt(f),
            Verdict::Keep(reason) => reason.fmt(f),
        }
    }
}

impl<'r> From<Decision<'r>> for Verdict<'r> {
    fn from(decision: Decision<'r>) -> Self {
        match decision {
            Decision::Rewrite(rewrite) => Verdict::Rewrite(rewrite),
            Decision::Keep(keep) => Verdict::Keep(Reason::Rule(keep)),
        }
    }
}

impl Verdict<'_> {
    /// The rewrite, if it is one.
    pub fn rewrite(&self) -> Option<&Rewrite<'_>> {
        match self {
            Verdict::Rewrite(rewrite) => Some(rewrite),
            Verdict::Keep(_) => None,
        }
    }

    /// The reason, if the image stays.
    pub fn reason(&self) -> Option<&Reason<'_>> {
        match self {
            Verdict::Rewrite(_) => None,
            Verdict::Keep(reason) => Some(reason),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::ParseError;

    #[test]
    fn labels_cover_every_reason_once() {
        let reasons = [
            Reason::Rule(Keep::Placeholder),
            Reason::Rule(Keep::Unparsable(ParseError::InvalidFormat)),
            Reason::Rule(Keep::AlreadyOnHarbor),
            Reason::Rule(Keep::NotProxied {
                registry: "".into(),
            }),
            Reason::Rule(Keep::Excluded { pattern: "" }),
            Reason::Rule(Keep::NameTooLong),
            Reason::UnchangedOnUpdate,
            Reason::ExistingEphemeral,
            Reason::PodOptedOut,
            Reason::RevertedToOriginal,
            Reason::HarborUnavailable,
            Reason::NotServedByHarbor {
                answer: String::new(),
            },
            Reason::Unverified,
        ];
        let labels: Vec<_> = reasons.iter().map(Reason::as_str).collect();
        assert_eq!(labels, Reason::LABELS);
        let unique: std::collections::BTreeSet<_> = labels.iter().collect();
        assert_eq!(unique.len(), labels.len());
    }
}
