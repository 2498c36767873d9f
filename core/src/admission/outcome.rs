//! How a review ended, and the operation it was for, as bounded metric label values.

use kube_core::admission::Operation;

/// How a review ended, for logs and the `outcome` metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// At least one image was rewritten.
    Rewritten,
    /// A pod was examined; no image needed rewriting.
    Unchanged,
    /// The pod is labelled `harbor-pilot.io/rewrite: disabled`.
    OptedOut,
    /// Not something this webhook handles: another resource, operation or subresource.
    Ignored,
    /// A pod request whose object could not be read; allowed unchanged with a warning.
    InvalidObject,
    /// An internal failure; allowed unchanged with a warning.
    Error,
    /// Images would have been rewritten, but Harbor is unavailable; allowed unchanged
    /// with a warning.
    FailOpen,
}

impl Outcome {
    /// Every outcome, in label order.
    pub const ALL: [Outcome; 7] = [
        Outcome::Rewritten,
        Outcome::Unchanged,
        Outcome::OptedOut,
        Outcome::Ignored,
        Outcome::InvalidObject,
        Outcome::Error,
        Outcome::FailOpen,
    ];

    /// A stable, bounded label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Rewritten => "rewritten",
            Outcome::Unchanged => "unchanged",
            Outcome::OptedOut => "opted_out",
            Outcome::Ignored => "ignored",
            Outcome::InvalidObject => "invalid_object",
            Outcome::Error => "error",
            Outcome::FailOpen => "fail_open",
        }
    }
}

/// Every value of [`operation_label`].
pub const OPERATION_LABELS: [&str; 4] = ["CREATE", "UPDATE", "DELETE", "CONNECT"];

/// The upper-case operation name the API uses, as a bounded label value.
pub fn operation_label(operation: &Operation) -> &'static str {
    match operation {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
        Operation::Connect => "CONNECT",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_is_listed_once() {
        // A new variant fails to compile here until it is added to ALL.
        let listed = |outcome: Outcome| match outcome {
            Outcome::Rewritten
            | Outcome::Unchanged
            | Outcome::OptedOut
            | Outcome::Ignored
            | Outcome::InvalidObject
            | Outcome::Error
            | Outcome::FailOpen => Outcome::ALL.contains(&outcome),
        };
        assert!(Outcome::ALL.into_iter().all(listed));
        let labels: std::collections::BTreeSet<_> =
            Outcome::ALL.iter().map(|o| o.as_str()).collect();
        assert_eq!(labels.len(), Outcome::ALL.len());
    }

    #[test]
    fn operation_labels_are_complete() {
        for operation in [
            Operation::Create,
            Operation::Update,
            Operation::Delete,
            Operation::Connect,
        ] {
            assert!(OPERATION_LABELS.contains(&operation_label(&operation)));
        }
    }
}
