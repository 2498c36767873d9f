//! Deciding a request: which images of the pod to rewrite, the patch, the warnings. It
//! always allows.

use kube_core::admission::{AdmissionResponse, Operation};

use crate::patch::{self, Change, PodRewrite, Scope};
use crate::pod::PodImages;
use crate::redact;
use crate::reference::shorten;
use crate::rules::{CachedRules, Keep};
use crate::verdict::{Reason, Served, Verdict};

use super::decode::{EPHEMERAL_SUBRESOURCE, Incoming};
use super::outcome::{Outcome, operation_label};

/// Warnings beyond this many are summarised in one more line: the API server passes
/// them all to the client, and a pod with hundreds of bad images helps nobody.
const MAX_WARNINGS: usize = 10;
/// Images quoted in warnings are cut to this many bytes.
const MAX_QUOTED_IMAGE: usize = 80;
/// The parser's message, which quotes the repository name whole as Go does, is cut to
/// this many bytes in a warning.
const MAX_QUOTED_ERROR: usize = 160;

/// Whether images may go to Harbor now, as the health gate says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Harbor {
    /// Healthy, or no health check configured: rewrite.
    Available,
    /// Down or not yet probed: leave every image upstream.
    Unavailable,
}

/// The decision on one request.
#[derive(Debug, Clone)]
pub struct Reviewed<'a> {
    /// The response to send (always `allowed: true`).
    pub response: AdmissionResponse,
    /// How it ended.
    pub outcome: Outcome,
    /// One entry per image considered; empty unless a pod was examined.
    pub changes: Vec<Change<'a, 'a>>,
}

impl Reviewed<'_> {
    fn unchanged(response: AdmissionResponse, outcome: Outcome) -> Self {
        Self {
            response,
            outcome,
            changes: Vec::new(),
        }
    }

    fn with_warning(mut response: AdmissionResponse, outcome: Outcome, warning: String) -> Self {
        response.warnings = Some(vec![warning]);
        Self::unchanged(response, outcome)
    }
}

/// Decides a request. Always allows; patches only to rewrite images, and only while
/// Harbor is available and (with `verify`) `served` says it can serve the rewrite.
pub fn review<'a>(
    incoming: &'a Incoming<'_>,
    rules: &'a CachedRules,
    harbor: Harbor,
    served: &dyn Fn(&str) -> Served,
) -> Reviewed<'a> {
    let response = incoming.request.allowed();
    let (object, scope) = match pod_and_scope(incoming) {
        Ok(found) => found,
        Err((outcome, warning)) => {
            return match warning {
                Some(warning) => Reviewed::with_warning(response, outcome, warning),
                None => Reviewed::unchanged(response, outcome),
            };
        }
    };
    let plan = patch::plan(object, scope, rules, served);
    if harbor == Harbor::Unavailable && plan.rewritten() > 0 {
        return fail_open(response, plan);
    }
    finish(response, plan, matches!(scope, Scope::NewEphemeral { .. }))
}

/// The images the request's pod would be rewritten to, for `verify` to check before
/// [`review`] decides; empty when nothing would be.
pub fn rewrite_targets(incoming: &Incoming<'_>, rules: &CachedRules) -> Vec<String> {
    match pod_and_scope(incoming) {
        Ok((object, scope)) => patch::rewrite_targets(object, scope, rules),
        Err(_) => Vec::new(),
    }
}

/// The pod to look at and which of its images count, or how the request ends without
/// looking (with a warning where one helps).
fn pod_and_scope<'i>(
    incoming: &'i Incoming<'_>,
) -> Result<(&'i PodImages<'i>, Scope<'i>), (Outcome, Option<String>)> {
    let request = incoming.request.as_ref();
    if !incoming.is_pod_write() {
        return Err((Outcome::Ignored, None));
    }
    if let Some(error) = &incoming.object_error {
        return Err((
            Outcome::InvalidObject,
            Some(format!(
                "harbor-pilot: could not read the pod ({error}); images left unchanged"
            )),
        ));
    }
    let Some(object) = request.object.as_deref() else {
        return Err((
            Outcome::InvalidObject,
            Some(format!(
                "harbor-pilot: {} of a pod without request.object; images left unchanged",
                operation_label(&request.operation)
            )),
        ));
    };
    if object.is_other_kind() {
        return Err((
            Outcome::InvalidObject,
            Some(format!(
                "harbor-pilot: the request is for pods but its object is {}; left unchanged",
                object.stated_kind()
            )),
        ));
    }
    let old = request.old_object.as_deref();
    let scope = match (&request.operation, request.sub_resource.as_deref(), old) {
        (Operation::Create, None, _) => Scope::Create,
        (Operation::Update, None, Some(old)) => Scope::Update { old },
        (Operation::Update, Some(EPHEMERAL_SUBRESOURCE), Some(old)) => Scope::NewEphemeral { old },
        // Without the old pod, an unchanged image cannot be told from a new one, and
        // rewriting a running container's image would restart it.
        (Operation::Update, _, None) => {
            return Err((
                Outcome::InvalidObject,
                Some("harbor-pilot: UPDATE without oldObject; images left unchanged".to_owned()),
            ));
        }
        _ => return Err((Outcome::Ignored, None)),
    };
    Ok((object, scope))
}

/// Harbor is down: no patch, every image that would have moved stays upstream.
fn fail_open<'a>(mut response: AdmissionResponse, mut plan: PodRewrite<'a, 'a>) -> Reviewed<'a> {
    let mut warnings = unparsable_warnings(&plan.changes);
    let left = plan.rewritten();
    warnings.push(format!(
        "harbor-pilot: Harbor is unavailable; {left} {} left on {} upstream {} (fail open)",
        if left == 1 { "image" } else { "images" },
        if left == 1 { "its" } else { "their" },
        if left == 1 { "registry" } else { "registries" },
    ));
    response.warnings = Some(warnings);
    for change in &mut plan.changes {
        if matches!(change.verdict, Verdict::Rewrite(_)) {
            change.verdict = Verdict::Keep(Reason::HarborUnavailable);
        }
    }
    Reviewed {
        response,
        outcome: Outcome::FailOpen,
        changes: plan.changes,
    }
}

fn finish<'a>(
    mut response: AdmissionResponse,
    plan: PodRewrite<'a, 'a>,
    ephemeral: bool,
) -> Reviewed<'a> {
    let mut warnings = unparsable_warnings(&plan.changes);
    warnings.extend(verify_warnings(&plan.changes));
    if !warnings.is_empty() {
        response.warnings = Some(warnings);
    }
    let opted_out = plan
        .changes
        .first()
        .is_some_and(|c| c.verdict == Verdict::Keep(Reason::PodOptedOut));
    let quiet = if opted_out {
        Outcome::OptedOut
    } else {
        Outcome::Unchanged
    };
    let outcome = if plan.patch.is_empty() {
        quiet
    } else {
        if ephemeral {
            // The API server keeps only spec.ephemeralContainers from this subresource,
            // so the originals go to the audit log instead of the pod annotation.
            if let Ok(originals) = serde_json::to_string(&plan.originals) {
                response
                    .audit_annotations
                    .insert("original-images".to_owned(), originals);
            }
        }
        // A patch without a rewrite only mends the annotation.
        let rewritten = plan.rewritten() > 0;
        response.patch = Some(plan.patch);
        if rewritten { Outcome::Rewritten } else { quiet }
    };
    Reviewed {
        response,
        outcome,
        changes: plan.changes,
    }
}

/// What `verify` kept upstream: one warning per image Harbor cannot serve (with its
/// answer), one line for those whose check did not finish within the budget.
fn verify_warnings(changes: &[Change<'_, '_>]) -> Vec<String> {
    let mut warnings: Vec<String> = changes
        .iter()
        .filter_map(|c| match &c.verdict {
            Verdict::Keep(Reason::NotServedByHarbor { answer }) => Some(format!(
                "harbor-pilot: {} image {:?} stays upstream: Harbor cannot serve it ({})",
                c.slot,
                shorten(&redact::credentials(c.slot.image), MAX_QUOTED_IMAGE),
                shorten(answer, MAX_QUOTED_ERROR)
            )),
            _ => None,
        })
        .take(MAX_WARNINGS)
        .collect();
    let pending = changes
        .iter()
        .filter(|c| c.verdict == Verdict::Keep(Reason::Unverified))
        .count();
    if pending > 0 {
        warnings.push(format!(
            "harbor-pilot: {pending} {} upstream this time: Harbor's answer did not come \
             within verify.budget (the next pod will know)",
            if pending == 1 {
                "image stays"
            } else {
                "images stay"
            }
        ));
    }
    warnings
}

/// One warning per image that does not parse, naming the container and the image.
fn unparsable_warnings(changes: &[Change<'_, '_>]) -> Vec<String> {
    let bad: Vec<_> = changes
        .iter()
        .filter_map(|c| match &c.verdict {
            Verdict::Keep(Reason::Rule(Keep::Unparsable(error))) => Some((c, error)),
            _ => None,
        })
        .collect();
    let mut warnings: Vec<String> = bad
        .iter()
        .take(MAX_WARNINGS)
        .map(|(change, error)| {
            format!(
                "harbor-pilot: {} image {:?} is not a valid image reference ({}); left unchanged",
                change.slot,
                shorten(&redact::credentials(change.slot.image), MAX_QUOTED_IMAGE),
                shorten(&error.to_string(), MAX_QUOTED_ERROR)
            )
        })
        .collect();
    if bad.len() > MAX_WARNINGS {
        warnings.push(format!(
            "harbor-pilot: {} more images are not valid image references; left unchanged",
            bad.len() - MAX_WARNINGS
        ));
    }
    warnings
}
