//! Writing the answer: the `admission.k8s.io/v1` AdmissionReview, patch in base64.

use kube_core::admission::AdmissionResponse;
use serde::Serialize;

/// The only AdmissionReview version served; the webhook configuration declares it.
pub const API_VERSION: &str = "admission.k8s.io/v1";
pub(super) const KIND: &str = "AdmissionReview";

/// The AdmissionReview answer for `response`, as sent on the wire.
///
/// kube-core serialises `patch` (a `Vec<u8>`) as an array of numbers
/// (kube-rs/kube#1781); the API server decodes that too, but the documented form is a
/// base64 string, which is also a quarter of the size. This writes kube-core's fields
/// in kube-core's order, with the patch in base64 encoded straight into the answer (a
/// test holds it to the serde-derived form) by base64-simd, which uses the CPU's vector
/// instructions: the base64 crate's scalar encoder was ~5k of a 3-container admission's
/// 258k instructions, and ~45k of a 50-container one's 1.49M.
pub fn encode_review(response: &AdmissionResponse) -> Vec<u8> {
    let patch_len = response
        .patch
        .as_ref()
        .map_or(0, |p| base64_simd::STANDARD.encoded_length(p.len()));
    let mut out = Vec::with_capacity(192 + response.uid.len() + patch_len);
    out.extend_from_slice(b"{\"apiVersion\":\"");
    out.extend_from_slice(API_VERSION.as_bytes());
    out.extend_from_slice(b"\",\"kind\":\"");
    out.extend_from_slice(KIND.as_bytes());
    out.extend_from_slice(b"\",\"response\":{\"uid\":");
    write_json(&mut out, &response.uid);
    out.extend_from_slice(if response.allowed {
        b",\"allowed\":true"
    } else {
        b",\"allowed\":false"
    });
    if !response.allowed {
        out.extend_from_slice(b",\"status\":");
        write_json(&mut out, &response.result);
    }
    if let Some(patch) = &response.patch {
        out.extend_from_slice(b",\"patch\":\"");
        let start = out.len();
        out.resize(start + patch_len, 0);
        // The buffer was sized for exactly this; base64 needs no JSON escaping.
        let written = base64_simd::STANDARD
            .encode(patch, base64_simd::Out::from_slice(&mut out[start..]))
            .len();
        out.truncate(start + written);
        out.extend_from_slice(b"\",\"patchType\":\"JSONPatch\"");
    }
    if !response.audit_annotations.is_empty() {
        out.extend_from_slice(b",\"auditAnnotations\":");
        write_json(&mut out, &response.audit_annotations);
    }
    if let Some(warnings) = &response.warnings {
        out.extend_from_slice(b",\"warnings\":");
        write_json(&mut out, warnings);
    }
    out.extend_from_slice(b"}}");
    out
}

/// `value` as JSON at the end of `out`. Strings, bools and maps of strings into memory
/// cannot fail to serialise.
fn write_json<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    let _ = serde_json::to_writer(&mut *out, value);
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use kube_core::Status;
    use kube_core::admission::AdmissionResponse;
    use serde::Serialize;

    use base64::Engine as _;

    use super::*;

    /// The answer as serde derives it from the same fields: the reference the hand-
    /// written encoder is held to.
    fn derived(response: &AdmissionResponse) -> Vec<u8> {
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
        serde_json::to_vec(&WireReview {
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
        })
        .unwrap()
    }

    #[test]
    fn patches_of_every_length_are_standard_base64() {
        // base64-simd encodes in vector blocks: every tail length, and long patches.
        let mut response = AdmissionResponse::invalid("");
        response.allowed = true;
        let bytes: Vec<u8> = (0..9000_u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13).to_le_bytes()[0])
            .collect();
        for len in (0..=300).chain([4095, 4096, 4097, 8999, 9000]) {
            response.patch = Some(bytes[..len].to_vec());
            assert_eq!(
                String::from_utf8(encode_review(&response)).unwrap(),
                String::from_utf8(derived(&response)).unwrap(),
                "{len} bytes"
            );
        }
    }

    #[test]
    fn writes_what_serde_would_derive() {
        let mut plain = AdmissionResponse::invalid("");
        plain.allowed = true;
        plain.uid = "uid-\"quoted\"-\u{e9}".to_owned();
        let mut patched = plain.clone();
        for len in 0..7 {
            patched.patch = Some(br#"[{"op":"replace"}]"#.repeat(len));
            patched.warnings = Some(vec!["w \"1\"".to_owned(), "w\n2".to_owned()]);
            patched.audit_annotations =
                HashMap::from([("original-images".to_owned(), "{\"a\":\"b\"}".to_owned())]);
            assert_eq!(
                String::from_utf8(encode_review(&patched)).unwrap(),
                String::from_utf8(derived(&patched)).unwrap()
            );
        }
        let denied = AdmissionResponse::invalid("why \"not\"");
        for response in [plain, denied] {
            assert_eq!(
                String::from_utf8(encode_review(&response)).unwrap(),
                String::from_utf8(derived(&response)).unwrap()
            );
        }
    }
}
