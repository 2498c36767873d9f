//! Reading a request body: an AdmissionReview, with the Pod read as [`PodImages`].

use kube_core::admission::{AdmissionRequest, AdmissionReview, Operation};

use crate::pod::{PodImages, Unread};
use crate::redact;

use super::encode::{API_VERSION, KIND};

/// The subresource `kubectl debug` updates to add an ephemeral container.
pub const EPHEMERAL_SUBRESOURCE: &str = "ephemeralcontainers";

/// Why a body gets HTTP 400 instead of an AdmissionReview answer: it is not one, so
/// there is no uid to answer under.
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
}

impl ReviewError {
    /// The message with its causes, on one line: what an HTTP 400 body says. Values
    /// quoted from the body are hidden (`redact::serde_message`).
    pub fn detail(&self) -> String {
        redact::serde_message(&crate::chain::one_line(self))
    }
}

/// A request body that is an AdmissionReview.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// The request. Its object and oldObject are `None` when they did not read as a
    /// Pod (see `object_error`).
    pub request: Box<AdmissionRequest<PodImages>>,
    /// Why the object (or oldObject) did not read as a Pod: a resource the webhook
    /// should not have been sent, or a malformed Pod. Those objects were skipped.
    pub object_error: Option<String>,
}

impl Incoming {
    /// The request's uid.
    pub fn uid(&self) -> &str {
        &self.request.uid
    }

    /// The request's operation.
    pub fn operation(&self) -> &Operation {
        &self.request.operation
    }

    /// Whether the request is a dry run.
    pub fn dry_run(&self) -> bool {
        self.request.dry_run
    }

    /// `(namespace, name)` of the object, for logs. Pods created by controllers have no
    /// name yet, only a `generateName` prefix, which is returned instead.
    pub fn namespace_and_name(&self) -> (&str, &str) {
        let request = &self.request;
        let name = if request.name.is_empty() {
            request
                .object
                .as_ref()
                .and_then(|o| {
                    o.metadata
                        .name
                        .as_deref()
                        .or(o.metadata.generate_name.as_deref())
                })
                .unwrap_or_default()
        } else {
            &request.name
        };
        (request.namespace.as_deref().unwrap_or_default(), name)
    }

    /// Whether this is a pod, or `pods/ephemeralcontainers`, being written.
    pub fn is_pod_write(&self) -> bool {
        is_pod_write(&self.request)
    }
}

/// Reads a request body. Everything the API server can send for a valid AdmissionReview
/// is `Ok`; only what is no AdmissionReview (no uid to answer under) is an error.
pub fn parse_review(body: &[u8]) -> Result<Incoming, ReviewError> {
    match serde_json::from_slice::<AdmissionReview<PodImages>>(body) {
        Ok(review) => {
            check_version(&review.types)?;
            let request: AdmissionRequest<PodImages> =
                review.try_into().map_err(|_| ReviewError::NoRequest)?;
            Ok(Incoming {
                request: Box::new(request),
                object_error: None,
            })
        }
        // Rare: decode again without reading the objects, to tell a review of something
        // else (allowed) from a body that is no review at all (400).
        Err(pod_error) => {
            let review = serde_json::from_slice::<AdmissionReview<Unread>>(body)
                .map_err(ReviewError::Decode)?;
            check_version(&review.types)?;
            let request: AdmissionRequest<Unread> =
                review.try_into().map_err(|_| ReviewError::NoRequest)?;
            Ok(Incoming {
                request: Box::new(without_objects(request)),
                object_error: Some(redact::serde_message(&pod_error.to_string())),
            })
        }
    }
}

/// The same request envelope, its (unread) objects dropped.
fn without_objects(request: AdmissionRequest<Unread>) -> AdmissionRequest<PodImages> {
    let AdmissionRequest {
        types,
        uid,
        kind,
        resource,
        sub_resource,
        request_kind,
        request_resource,
        request_sub_resource,
        name,
        namespace,
        operation,
        user_info,
        object: _,
        old_object: _,
        dry_run,
        options,
    } = request;
    AdmissionRequest {
        types,
        uid,
        kind,
        resource,
        sub_resource,
        request_kind,
        request_resource,
        request_sub_resource,
        name,
        namespace,
        operation,
        user_info,
        object: None,
        old_object: None,
        dry_run,
        options,
    }
}

fn check_version(types: &kube_core::TypeMeta) -> Result<(), ReviewError> {
    if types.api_version == API_VERSION && types.kind == KIND {
        Ok(())
    } else {
        Err(ReviewError::UnsupportedVersion {
            api_version: types.api_version.clone(),
            kind: types.kind.clone(),
        })
    }
}

/// A CREATE or UPDATE of a pod or of its ephemeral containers: these carry the pod.
fn is_pod_write<T: kube_core::Resource>(request: &AdmissionRequest<T>) -> bool {
    request.resource.group.is_empty()
        && request.resource.resource == "pods"
        && matches!(request.operation, Operation::Create | Operation::Update)
        && matches!(
            request.sub_resource.as_deref(),
            None | Some(EPHEMERAL_SUBRESOURCE)
        )
}
