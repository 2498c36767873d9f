//! AdmissionReview in, AdmissionReview out: the webhook's decision, as a pure function.
//!
//! [`parse_review`] reads a request body into kube-core's admission types (the Pod object
//! as a [`PodImages`]); [`review`] decides, and always allows; [`encode_review`] writes
//! the `admission.k8s.io/v1` response. A body that is not an AdmissionReview, or a Pod
//! CREATE/UPDATE without an object, is a [`ReviewError`] the caller answers with HTTP 400;
//! everything else gets `allowed: true`, with a patch only when an image is rewritten.
//!
//! Pure: no I/O, no tokio, no metrics. The [`Outcome`] and per-image decisions let the
//! caller log and count.
//! API: <https://kubernetes.io/docs/reference/config-api/apiserver-admission.v1/>.

use std::collections::HashMap;

use base64::Engine as _;
use kube::core::Status;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use serde::Serialize;

use crate::patch::{self, Change, PodRewrite, Scope};
use crate::pod::{PodImages, Unread};
use crate::redact;
use crate::reference::shorten;
use crate::rules::{Decision, Keep, RuleSet};

/// The only AdmissionReview version served; the webhook configuration declares it.
pub const API_VERSION: &str = "admission.k8s.io/v1";
const KIND: &str = "AdmissionReview";
/// The subresource `kubectl debug` updates to add an ephemeral container.
pub const EPHEMERAL_SUBRESOURCE: &str = "ephemeralcontainers";
/// Warnings beyond this many are summarised in one more line: the API server passes
/// them all to the client, and a pod with hundreds of bad images helps nobody.
const MAX_WARNINGS: usize = 10;
/// Images quoted in warnings are cut to this many bytes.
const MAX_QUOTED_IMAGE: usize = 80;
/// The parser's message, which quotes the repository name whole as Go does, is cut to
/// this many bytes in a warning.
const MAX_QUOTED_ERROR: usize = 160;

/// Why a body gets HTTP 400 instead of an AdmissionReview answer.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    /// Not JSON, or JSON that is not an AdmissionReview.
    #[error("body is not an AdmissionReview")]
    Decode(#[source] serde_json::Error),
    /// An AdmissionReview of a version this webhook does not serve.
    #[error(
        "unsupported {kind} version {api_version:?}: harbor-pilot serves {API_VERSION} \
         (set admissionReviewVersions: [v1] in the webhook configuration)"
    )]
    UnsupportedVersion {
        /// `apiVersion` as sent.
        api_version: String,
        /// `kind` as sent.
        kind: String,
    },
    /// An AdmissionReview without `request`.
    #[error("AdmissionReview has no request")]
    NoRequest,
    /// A Pod CREATE or UPDATE without `request.object`.
    #[error("{operation} of a pod without request.object")]
    NoObject {
        /// `CREATE` or `UPDATE`.
        operation: &'static str,
    },
}

impl ReviewError {
    /// The message with its causes, on one line: what an HTTP 400 body says. Values
    /// quoted from the body are hidden ([`redact::serde_message`]).
    pub fn detail(&self) -> String {
        let mut message = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        redact::serde_message(&message)
    }
}

/// A request body that is an AdmissionReview.
#[derive(Debug, Clone)]
pub enum Incoming {
    /// The object (if any) was read as a Pod.
    Pod(Box<AdmissionRequest<PodImages>>),
    /// A valid AdmissionReview whose object does not read as a Pod (a resource the
    /// webhook should not have been sent, or a malformed Pod).
    Other {
        /// The request; its object and oldObject are skipped, not read.
        request: Box<AdmissionRequest<Unread>>,
        /// Why the object did not read as a Pod.
        error: String,
    },
}

impl Incoming {
    /// The request's uid.
    pub fn uid(&self) -> &str {
        match self {
            Incoming::Pod(r) => &r.uid,
            Incoming::Other { request, .. } => &request.uid,
        }
    }

    /// The request's operation.
    pub fn operation(&self) -> &Operation {
        match self {
            Incoming::Pod(r) => &r.operation,
            Incoming::Other { request, .. } => &request.operation,
        }
    }

    /// `(namespace, name)` of the object, for logs. Pods created by controllers have no
    /// name yet, only a `generateName` prefix, which is returned instead.
    pub fn namespace_and_name(&self) -> (&str, &str) {
        let (namespace, name, object_name) = match self {
            Incoming::Pod(r) => (
                r.namespace.as_deref(),
                r.name.as_str(),
                r.object.as_ref().and_then(|o| {
                    o.metadata
                        .name
                        .as_deref()
                        .or(o.metadata.generate_name.as_deref())
                }),
            ),
            Incoming::Other { request, .. } => {
                (request.namespace.as_deref(), request.name.as_str(), None)
            }
        };
        let name = if name.is_empty() {
            object_name.unwrap_or_default()
        } else {
            name
        };
        (namespace.unwrap_or_default(), name)
    }

    /// Whether the request is a dry run.
    pub fn dry_run(&self) -> bool {
        match self {
            Incoming::Pod(r) => r.dry_run,
            Incoming::Other { request, .. } => request.dry_run,
        }
    }
}

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

    /// Every value of [`Outcome::as_str`].
    pub const LABELS: [&'static str; 7] = [
        "rewritten",
        "unchanged",
        "opted_out",
        "ignored",
        "invalid_object",
        "error",
        "fail_open",
    ];
}

/// The upper-case operation name the API uses, as a bounded label value.
pub fn operation_label(operation: &Operation) -> &'static str {
    match operation {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
        Operation::Connect => "CONNECT",
    }
}

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

/// Reads a request body. Everything the API server can send for a valid AdmissionReview
/// is `Ok`; only what no API server sends is an error.
pub fn parse_review(body: &[u8]) -> Result<Incoming, ReviewError> {
    let incoming = match serde_json::from_slice::<AdmissionReview<PodImages>>(body) {
        Ok(review) => {
            check_version(&review.types)?;
            let request: AdmissionRequest<PodImages> =
                review.try_into().map_err(|_| ReviewError::NoRequest)?;
            if request.object.is_none() && is_pod_write(&request) {
                return Err(ReviewError::NoObject {
                    operation: operation_label(&request.operation),
                });
            }
            Incoming::Pod(Box::new(request))
        }
        // Rare: decode again without reading the object as a Pod, to tell a review of
        // something else (allowed) from a body that is no review at all (400).
        Err(pod_error) => {
            let review = serde_json::from_slice::<AdmissionReview<Unread>>(body)
                .map_err(ReviewError::Decode)?;
            check_version(&review.types)?;
            let request: AdmissionRequest<Unread> =
                review.try_into().map_err(|_| ReviewError::NoRequest)?;
            Incoming::Other {
                request: Box::new(request),
                error: redact::serde_message(&pod_error.to_string()),
            }
        }
    };
    Ok(incoming)
}

fn check_version(types: &kube::core::TypeMeta) -> Result<(), ReviewError> {
    if types.api_version == API_VERSION && types.kind == KIND {
        Ok(())
    } else {
        Err(ReviewError::UnsupportedVersion {
            api_version: types.api_version.clone(),
            kind: types.kind.clone(),
        })
    }
}

fn is_pods<T: kube::Resource>(request: &AdmissionRequest<T>) -> bool {
    request.resource.group.is_empty() && request.resource.resource == "pods"
}

/// A CREATE or UPDATE of a pod or of its ephemeral containers: these carry the pod.
fn is_pod_write<T: kube::Resource>(request: &AdmissionRequest<T>) -> bool {
    is_pods(request)
        && matches!(request.operation, Operation::Create | Operation::Update)
        && matches!(
            request.sub_resource.as_deref(),
            None | Some(EPHEMERAL_SUBRESOURCE)
        )
}

/// Decides a request. Always allows; patches only to rewrite images, and only while
/// Harbor is available.
pub fn review<'a>(incoming: &'a Incoming, rules: &'a RuleSet, harbor: Harbor) -> Reviewed<'a> {
    match incoming {
        Incoming::Pod(request) => review_pod(request, rules, harbor),
        Incoming::Other { request, error } => {
            let request = request.as_ref();
            let mut response = AdmissionResponse::from(request);
            let outcome = if is_pod_write(request) {
                response.warnings = Some(vec![format!(
                    "harbor-pilot: could not read the pod ({error}); images left unchanged"
                )]);
                Outcome::InvalidObject
            } else {
                Outcome::Ignored
            };
            Reviewed {
                response,
                outcome,
                changes: Vec::new(),
            }
        }
    }
}

fn review_pod<'a>(
    request: &'a AdmissionRequest<PodImages>,
    rules: &'a RuleSet,
    harbor: Harbor,
) -> Reviewed<'a> {
    let response = AdmissionResponse::from(request);
    let ignored = |response| Reviewed {
        response,
        outcome: Outcome::Ignored,
        changes: Vec::new(),
    };
    let (Some(object), true) = (request.object.as_ref(), is_pod_write(request)) else {
        return ignored(response);
    };
    if object.is_other_kind() {
        return unchanged_with_warning(
            response,
            Outcome::InvalidObject,
            format!(
                "harbor-pilot: the request is for pods but its object is {}; left unchanged",
                object.stated_kind()
            ),
        );
    }
    let old = request.old_object.as_ref();
    let scope = match (&request.operation, request.sub_resource.as_deref(), old) {
        (Operation::Create, None, _) => Scope::Create,
        (Operation::Update, None, Some(old)) => Scope::Update { old },
        (Operation::Update, Some(EPHEMERAL_SUBRESOURCE), Some(old)) => Scope::NewEphemeral { old },
        // Without the old pod, an unchanged image cannot be told from a new one, and
        // rewriting a running container's image would restart it.
        (Operation::Update, _, None) => {
            return unchanged_with_warning(
                response,
                Outcome::InvalidObject,
                "harbor-pilot: UPDATE without oldObject; images left unchanged".to_owned(),
            );
        }
        _ => return ignored(response),
    };
    let plan = patch::plan(object, scope, rules);
    if harbor == Harbor::Unavailable && plan.rewritten() > 0 {
        return fail_open(response, plan);
    }
    finish(response, plan, matches!(scope, Scope::NewEphemeral { .. }))
}

/// Harbor is down: no patch, every image that would have moved stays upstream.
fn fail_open<'a>(mut response: AdmissionResponse, mut plan: PodRewrite<'a, 'a>) -> Reviewed<'a> {
    let mut warnings = unparsable_warnings(&plan.changes);
    warnings.push(format!(
        "harbor-pilot: Harbor is unavailable; {} images left on their upstream registries (fail open)",
        plan.rewritten()
    ));
    response.warnings = Some(warnings);
    for change in &mut plan.changes {
        if matches!(change.decision, Decision::Rewrite(_)) {
            change.decision = Decision::Keep(Keep::HarborUnavailable);
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
    let warnings = unparsable_warnings(&plan.changes);
    if !warnings.is_empty() {
        response.warnings = Some(warnings);
    }
    let opted_out = plan
        .changes
        .first()
        .is_some_and(|c| c.decision == Decision::Keep(Keep::PodOptedOut));
    let outcome = if plan.patch.is_empty() {
        if opted_out {
            Outcome::OptedOut
        } else {
            Outcome::Unchanged
        }
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
        match response.clone().with_patch(json_patch::Patch(plan.patch)) {
            Ok(patched) => {
                response = patched;
                Outcome::Rewritten
            }
            Err(error) => {
                response.warnings.get_or_insert_with(Vec::new).push(format!(
                    "harbor-pilot: internal error ({error}); images left unchanged"
                ));
                Outcome::Error
            }
        }
    };
    Reviewed {
        response,
        outcome,
        changes: plan.changes,
    }
}

fn unchanged_with_warning(
    mut response: AdmissionResponse,
    outcome: Outcome,
    warning: String,
) -> Reviewed<'static> {
    response.warnings = Some(vec![warning]);
    Reviewed {
        response,
        outcome,
        changes: Vec::new(),
    }
}

/// One warning per image that does not parse, naming the container and the image.
fn unparsable_warnings(changes: &[Change<'_, '_>]) -> Vec<String> {
    let bad: Vec<_> = changes
        .iter()
        .filter_map(|c| match &c.decision {
            Decision::Keep(Keep::Unparsable(error)) => Some((c, error)),
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

/// The AdmissionReview answer for `response`, as sent on the wire.
///
/// kube-core serialises `patch` (a `Vec<u8>`) as an array of numbers
/// (kube-rs/kube#1781); the API server decodes that too, but the documented form is a
/// base64 string, which is also a quarter of the size. This writes the same fields,
/// with the patch in base64.
pub fn encode_review(response: &AdmissionResponse) -> Vec<u8> {
    let review = WireReview {
        api_version: API_VERSION,
        kind: KIND,
        response: WireResponse {
            uid: &response.uid,
            allowed: response.allowed,
            status: (!response.allowed).then_some(&response.result),
            patch_type: response.patch.as_ref().map(|_| "JSONPatch"),
            patch: response
                .patch
                .as_ref()
                .map(|p| base64::engine::general_purpose::STANDARD.encode(p)),
            audit_annotations: &response.audit_annotations,
            warnings: response.warnings.as_ref(),
        },
    };
    // Serialising strings, bools and maps of strings into memory cannot fail.
    serde_json::to_vec(&review).unwrap_or_default()
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireReview<'a> {
    api_version: &'static str,
    kind: &'static str,
    response: WireResponse<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireResponse<'a> {
    uid: &'a str,
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'a Status>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    #[serde(skip_serializing_if = "HashMap::is_empty")]
    audit_annotations: &'a HashMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    warnings: Option<&'a Vec<String>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use serde_json::{Value, json};

    fn rules() -> RuleSet {
        Config::from_yaml("harbor: harbor.example.com\nproxies: {docker.io: hub}\n")
            .unwrap()
            .rules
    }

    fn body(request: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({"apiVersion": API_VERSION, "kind": KIND, "request": request}))
            .unwrap()
    }

    fn pod_request(operation: &str, sub: Option<&str>, object: Value, old: Value) -> Value {
        json!({
            "uid": "u-1",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "subResource": sub,
            "operation": operation,
            "userInfo": {"username": "admin"},
            "object": object,
            "oldObject": old,
        })
    }

    fn answer(body: &[u8]) -> (Value, Outcome) {
        let incoming = parse_review(body).unwrap();
        let rules = rules();
        let reviewed = review(&incoming, &rules, Harbor::Available);
        let wire: Value = serde_json::from_slice(&encode_review(&reviewed.response)).unwrap();
        (wire, reviewed.outcome)
    }

    fn nginx_pod() -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
               "spec": {"containers": [{"name": "c", "image": "nginx"}]}})
    }

    #[test]
    fn answers_a_create_with_a_base64_json_patch() {
        let (wire, outcome) = answer(&body(pod_request("CREATE", None, nginx_pod(), Value::Null)));
        assert_eq!(outcome, Outcome::Rewritten);
        assert_eq!(wire["apiVersion"], API_VERSION);
        assert_eq!(wire["kind"], KIND);
        assert_eq!(wire["response"]["uid"], "u-1");
        assert_eq!(wire["response"]["allowed"], true);
        assert_eq!(wire["response"]["patchType"], "JSONPatch");
        let patch = base64::engine::general_purpose::STANDARD
            .decode(wire["response"]["patch"].as_str().unwrap())
            .unwrap();
        let patch: json_patch::Patch = serde_json::from_slice(&patch).unwrap();
        let mut pod = nginx_pod();
        json_patch::patch(&mut pod, &patch).unwrap();
        assert_eq!(
            pod["spec"]["containers"][0]["image"],
            "harbor.example.com/hub/library/nginx"
        );
    }

    #[test]
    fn sends_no_patch_type_without_a_patch() {
        let pod = json!({"spec": {"containers": [{"name": "c", "image": "gcr.io/a/b"}]}});
        let (wire, outcome) = answer(&body(pod_request("CREATE", None, pod, Value::Null)));
        assert_eq!(outcome, Outcome::Unchanged);
        assert!(wire["response"].get("patch").is_none());
        assert!(wire["response"].get("patchType").is_none());
        assert_eq!(wire["response"]["allowed"], true);
    }

    #[test]
    fn warns_about_each_unparsable_image() {
        let pod = json!({"spec": {"containers": [
            {"name": "a", "image": "Nginx"}, {"name": "b", "image": "nginx"}]}});
        let (wire, outcome) = answer(&body(pod_request("CREATE", None, pod, Value::Null)));
        assert_eq!(outcome, Outcome::Rewritten);
        let warnings = wire["response"]["warnings"].as_array().unwrap();
        assert_eq!(warnings.len(), 1);
        let warning = warnings[0].as_str().unwrap();
        assert!(warning.contains("a image \"Nginx\""), "{warning}");
        assert!(warning.contains("must be lowercase"), "{warning}");
    }

    #[test]
    fn summarises_warnings_beyond_ten() {
        let containers: Vec<Value> = (0..25)
            .map(|i| json!({"name": format!("c{i}"), "image": "BAD"}))
            .collect();
        let pod = json!({"spec": {"containers": containers}});
        let (wire, _) = answer(&body(pod_request("CREATE", None, pod, Value::Null)));
        let warnings = wire["response"]["warnings"].as_array().unwrap();
        assert_eq!(warnings.len(), 11);
        assert!(warnings[10].as_str().unwrap().contains("15 more images"));
    }

    #[test]
    fn cuts_huge_images_in_warnings() {
        let image = format!("X{}", "a".repeat(65_536));
        let pod = json!({"spec": {"containers": [{"name": "c", "image": image}]}});
        let (wire, _) = answer(&body(pod_request("CREATE", None, pod, Value::Null)));
        let warning = wire["response"]["warnings"][0].as_str().unwrap();
        assert!(warning.len() < 400, "{} bytes", warning.len());
    }

    #[rstest::rstest]
    #[case::delete("DELETE", None)]
    #[case::connect("CONNECT", Some("exec"))]
    #[case::status("UPDATE", Some("status"))]
    #[case::binding("CREATE", Some("binding"))]
    fn ignores_operations_and_subresources_it_does_not_handle(
        #[case] operation: &str,
        #[case] sub: Option<&str>,
    ) {
        let (wire, outcome) = answer(&body(pod_request(operation, sub, nginx_pod(), nginx_pod())));
        assert_eq!(outcome, Outcome::Ignored);
        assert!(wire["response"].get("patch").is_none());
        assert_eq!(wire["response"]["allowed"], true);
    }

    #[test]
    fn delete_without_object_is_allowed() {
        let (_, outcome) = answer(&body(pod_request("DELETE", None, Value::Null, nginx_pod())));
        assert_eq!(outcome, Outcome::Ignored);
    }

    #[test]
    fn ignores_other_resources() {
        let mut request = pod_request(
            "CREATE",
            None,
            json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "x"}, "data": {"image": "nginx"}}),
            Value::Null,
        );
        request["resource"] = json!({"group": "", "version": "v1", "resource": "configmaps"});
        request["kind"] = json!({"group": "", "version": "v1", "kind": "ConfigMap"});
        let (wire, outcome) = answer(&body(request));
        assert_eq!(outcome, Outcome::Ignored);
        assert!(wire["response"].get("warnings").is_none());
    }

    #[test]
    fn a_pod_request_carrying_another_kind_is_left_alone_with_a_warning() {
        let object = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "nginx"}]}}}});
        let (wire, outcome) = answer(&body(pod_request("CREATE", None, object, Value::Null)));
        assert_eq!(outcome, Outcome::InvalidObject);
        assert!(wire["response"].get("patch").is_none());
        assert!(
            wire["response"]["warnings"][0]
                .as_str()
                .unwrap()
                .contains("apps/v1/Deployment")
        );
    }

    #[test]
    fn a_malformed_pod_is_allowed_unchanged_with_a_warning() {
        let object = json!({"spec": {"containers": {"name": "c", "image": "nginx"}}});
        let (wire, outcome) = answer(&body(pod_request("CREATE", None, object, Value::Null)));
        assert_eq!(outcome, Outcome::InvalidObject);
        assert_eq!(wire["response"]["uid"], "u-1");
        assert!(wire["response"].get("patch").is_none());
        assert!(
            wire["response"]["warnings"][0]
                .as_str()
                .unwrap()
                .contains("could not read the pod")
        );
    }

    #[test]
    fn update_without_old_object_leaves_images() {
        let (wire, outcome) = answer(&body(pod_request("UPDATE", None, nginx_pod(), Value::Null)));
        assert_eq!(outcome, Outcome::InvalidObject);
        assert!(wire["response"].get("patch").is_none());
    }

    #[test]
    fn ephemeral_rewrite_records_originals_in_the_audit_annotation() {
        let old = nginx_pod();
        let mut new = nginx_pod();
        new["spec"]["ephemeralContainers"] = json!([{"name": "dbg", "image": "busybox:1.28"}]);
        let (wire, outcome) = answer(&body(pod_request(
            "UPDATE",
            Some("ephemeralcontainers"),
            new,
            old,
        )));
        assert_eq!(outcome, Outcome::Rewritten);
        assert_eq!(
            wire["response"]["auditAnnotations"]["original-images"],
            r#"{"dbg":"busybox:1.28"}"#
        );
    }

    #[test]
    fn fails_open_while_harbor_is_unavailable() {
        let mut pod = nginx_pod();
        pod["spec"]["containers"] = json!([
            {"name": "a", "image": "nginx"}, {"name": "b", "image": "gcr.io/x/y"}, {"name": "c", "image": "BAD"}]);
        let incoming = parse_review(&body(pod_request("CREATE", None, pod, Value::Null))).unwrap();
        let rules = rules();
        let reviewed = review(&incoming, &rules, Harbor::Unavailable);
        assert_eq!(reviewed.outcome, Outcome::FailOpen);
        assert!(reviewed.response.patch.is_none());
        let warnings = reviewed.response.warnings.clone().unwrap();
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(
            warnings[1].contains("Harbor is unavailable; 1 images left"),
            "{warnings:?}"
        );
        let reasons: Vec<_> = reviewed
            .changes
            .iter()
            .map(|c| match &c.decision {
                Decision::Keep(k) => k.as_str(),
                Decision::Rewrite(_) => "rewrite",
            })
            .collect();
        assert_eq!(reasons, ["harbor_unavailable", "not_proxied", "unparsable"]);
    }

    #[test]
    fn harbor_being_down_does_not_matter_when_nothing_would_move() {
        let mut pod = nginx_pod();
        pod["spec"]["containers"] = json!([{"name": "b", "image": "gcr.io/x/y"}]);
        let incoming = parse_review(&body(pod_request("CREATE", None, pod, Value::Null))).unwrap();
        let rules = rules();
        let reviewed = review(&incoming, &rules, Harbor::Unavailable);
        assert_eq!(reviewed.outcome, Outcome::Unchanged);
        assert!(reviewed.response.warnings.is_none());
    }

    #[test]
    fn opted_out_pod_is_reported_as_such() {
        let mut pod = nginx_pod();
        pod["metadata"]["labels"] = json!({"harbor-pilot.io/rewrite": "disabled"});
        let (_, outcome) = answer(&body(pod_request("CREATE", None, pod, Value::Null)));
        assert_eq!(outcome, Outcome::OptedOut);
    }

    #[rstest::rstest]
    #[case::not_json(b"{\"apiVersion\":".as_slice(), "body is not an AdmissionReview")]
    #[case::empty_object(b"{}".as_slice(), "body is not an AdmissionReview")]
    #[case::array(b"[]".as_slice(), "body is not an AdmissionReview")]
    #[case::no_request(br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#.as_slice(), "has no request")]
    #[case::v1beta1(br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"x","kind":{"group":"","version":"v1","kind":"Pod"},"resource":{"group":"","version":"v1","resource":"pods"},"operation":"CREATE","userInfo":{},"object":{}}}"#.as_slice(), "unsupported AdmissionReview version \"admission.k8s.io/v1beta1\"")]
    fn refuses_bodies_that_are_not_v1_admission_reviews(
        #[case] body: &[u8],
        #[case] message: &str,
    ) {
        let error = parse_review(body).unwrap_err().detail();
        assert!(error.contains(message), "{error}");
    }

    #[test]
    fn refuses_a_pod_create_without_object() {
        let error = parse_review(&body(pod_request("CREATE", None, Value::Null, Value::Null)))
            .unwrap_err()
            .to_string();
        assert_eq!(error, "CREATE of a pod without request.object");
    }

    #[test]
    fn names_pods_by_generate_name_before_they_have_a_name() {
        let pod = json!({"metadata": {"generateName": "web-7d9f-"}, "spec": {}});
        let mut request = pod_request("CREATE", None, pod, Value::Null);
        request["namespace"] = json!("shop");
        let incoming = parse_review(&body(request)).unwrap();
        assert_eq!(incoming.namespace_and_name(), ("shop", "web-7d9f-"));
    }
}
