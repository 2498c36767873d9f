//! Writing the answer: the `admission.k8s.io/v1` AdmissionReview, patch in base64.

use std::collections::HashMap;

use base64::Engine as _;
use kube_core::Status;
use kube_core::admission::AdmissionResponse;
use serde::Serialize;

/// The only AdmissionReview version served; the webhook configuration declares it.
pub const API_VERSION: &str = "admission.k8s.io/v1";
pub(super) const KIND: &str = "AdmissionReview";

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
