//! Reading a request body: an AdmissionReview, with the Pod read as [`PodImages`].

use std::ops::Range;

use kube_core::admission::{AdmissionRequest, AdmissionReview, Operation};

use crate::json::{Decline, Read, Reader};
use crate::pod::fast_read::read_pod;
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
    match read_fast(body) {
        Some(incoming) => Ok(incoming),
        None => read_with_serde(body),
    }
}

/// The hot path: the pods (`object`, `oldObject`) read by the borrowing reader, which
/// skips the bulk of a pod far faster than serde_json; the small rest of the review —
/// the body with the pods replaced by `null` — read by serde_json as an [`Envelope`].
/// `None` whenever either part declines or fails: then [`read_with_serde`] reads the
/// body and gives the exact answer or error, so this path changes speed, never results.
fn read_fast(body: &[u8]) -> Option<Incoming> {
    let pods = read_pods(body).ok()?;
    let removed: usize = pods.spans.iter().map(Range::len).sum();
    let mut envelope = Vec::with_capacity(body.len() - removed + 4 * pods.spans.len());
    let mut copied = 0;
    for span in &pods.spans {
        envelope.extend_from_slice(body.get(copied..span.start)?);
        envelope.extend_from_slice(b"null");
        copied = span.end;
    }
    envelope.extend_from_slice(body.get(copied..)?);
    let Envelope {
        api_version,
        kind,
        request,
        response,
    } = serde_json::from_slice(&envelope).ok()?;
    if response.is_some() {
        // kube-core would read it as an AdmissionResponse, and may refuse it.
        return None;
    }
    let types = kube_core::TypeMeta { api_version, kind };
    check_version(&types).ok()?;
    let mut request = request?;
    request.types = types;
    request.object = pods.object;
    request.old_object = pods.old_object;
    Some(Incoming {
        request: Box::new(request),
        object_error: None,
    })
}

/// kube-core's `AdmissionReview` as serde_json reads it, without `#[serde(flatten)]`:
/// a flattened field makes serde buffer the whole document into an intermediate tree
/// first (measured: two thirds of the envelope's cost). What this reads, kube-core
/// reads the same (the differential tests below hold it); what it refuses — a
/// duplicate key, a `response` — goes to [`read_with_serde`].
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    api_version: String,
    kind: String,
    request: Option<AdmissionRequest<PodImages>>,
    #[serde(default)]
    response: Option<serde::de::IgnoredAny>,
}

/// Where the fast path and serde_json part ways on `body`, if they do: the fast path
/// may decline anything, but what it reads serde_json must read, to the same request.
/// JSON the borrowing reader skips must be JSON serde_json accepts.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn fast_path_disagreement(body: &[u8]) -> Option<String> {
    if Reader::new(body)
        .and_then(|mut reader| reader.skip().and_then(|()| reader.end()))
        .is_ok()
        && serde_json::from_slice::<serde::de::IgnoredAny>(body).is_err()
    {
        return Some("the reader skipped what serde_json refuses".to_owned());
    }
    let fast = read_fast(body)?;
    match read_with_serde(body) {
        Err(error) => Some(format!("fast path read what serde_json refuses: {error}")),
        Ok(slow) => {
            let (fast, slow) = (format!("{fast:?}"), format!("{slow:?}"));
            (fast != slow).then(|| format!("fast path read {fast}\nserde_json read {slow}"))
        }
    }
}

/// `request.object` and `request.oldObject` of a review, and where they are in it.
#[derive(Default)]
struct Pods {
    object: Option<PodImages>,
    old_object: Option<PodImages>,
    /// In order of appearance.
    spans: Vec<Range<usize>>,
}

fn read_pods(body: &[u8]) -> Read<Pods> {
    let mut reader = Reader::new(body)?;
    let mut pods = Pods::default();
    let mut seen_request = false;
    let mut review = reader.object()?;
    while let Some(key) = review.next_key(&mut reader)? {
        if key != "request" {
            reader.skip()?;
            continue;
        }
        if std::mem::replace(&mut seen_request, true) {
            return Err(Decline);
        }
        let (mut seen_object, mut seen_old_object) = (false, false);
        let mut request = reader.object()?;
        while let Some(key) = request.next_key(&mut reader)? {
            let (seen, slot) = match &*key {
                "object" => (&mut seen_object, &mut pods.object),
                "oldObject" => (&mut seen_old_object, &mut pods.old_object),
                _ => {
                    reader.skip()?;
                    continue;
                }
            };
            if std::mem::replace(seen, true) {
                return Err(Decline);
            }
            reader.peek();
            let start = reader.position();
            *slot = read_pod(&mut reader)?;
            pods.spans.push(start..reader.position());
        }
    }
    reader.end()?;
    Ok(pods)
}

/// The whole body through serde_json: the reference reading, and the one for bodies
/// the fast path declines (malformed pods, objects of other kinds, rare escapes).
fn read_with_serde(body: &[u8]) -> Result<Incoming, ReviewError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn fixtures() -> Vec<(String, Vec<u8>)> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/admission");
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        files
            .into_iter()
            .map(|p| {
                (
                    p.file_name().unwrap().to_string_lossy().into_owned(),
                    std::fs::read(&p).unwrap(),
                )
            })
            .collect()
    }

    /// The fast path reads every fixture serde_json reads as a pod review (and agrees);
    /// it declines exactly the malformed ones, which serde_json then answers.
    #[test]
    fn the_fast_path_reads_every_well_formed_fixture_as_serde_json_does() {
        let mut declined = Vec::new();
        for (name, body) in fixtures() {
            assert_eq!(fast_path_disagreement(&body), None, "{name}");
            if read_fast(&body).is_none() {
                declined.push(name);
            }
        }
        assert_eq!(
            declined,
            [
                "226-synthetic-malformed-empty.json",
                "227-synthetic-malformed-norequest.json",
                "229-synthetic-malformed-object-string.json",
                "230-synthetic-malformed-object-array.json",
                "232-synthetic-malformed-nouid.json",
                "233-synthetic-malformed-containers-object.json",
                "234-synthetic-malformed-image-number.json",
                "235-synthetic-malformed-v1beta1.json",
                "236-synthetic-malformed-truncated.json",
            ]
        );
    }

    #[rstest::rstest]
    #[case::duplicate_request(r#"{"request":{},"request":{}}"#)]
    #[case::duplicate_object(r#"{"request":{"object":null,"object":null}}"#)]
    #[case::duplicate_pod_field(r#"{"request":{"object":{"kind":"Pod","kind":"Pod"}}}"#)]
    #[case::duplicate_container_field(
        r#"{"request":{"object":{"spec":{"containers":[{"image":"a","image":"b"}]}}}}"#
    )]
    #[case::null_container_name(
        r#"{"request":{"object":{"spec":{"containers":[{"name":null}]}}}}"#
    )]
    #[case::null_container(r#"{"request":{"object":{"spec":{"containers":[null]}}}}"#)]
    #[case::label_not_a_string(r#"{"request":{"object":{"metadata":{"labels":{"a":1}}}}}"#)]
    #[case::surrogate_in_image(
        r#"{"request":{"object":{"spec":{"containers":[{"image":"\ud83d\ude00"}]}}}}"#
    )]
    #[case::deep_nesting_in_a_skipped_field(&format!(
        r#"{{"request":{{"object":{{"status":{}{}}}}}}}"#,
        "[".repeat(120),
        "]".repeat(120)
    ))]
    fn the_fast_path_declines_what_it_cannot_vouch_for(#[case] request: &str) {
        assert!(read_pods(request.as_bytes()).is_err(), "{request}");
    }

    /// Envelopes where reading without `#[serde(flatten)]` could part ways with
    /// kube-core's reading: each is read the same, or declined and left to serde_json.
    #[rstest::rstest]
    #[case::response_present(r#""response":{"uid":"x","allowed":"no"},"#, false)]
    #[case::response_null(r#""response":null,"#, true)]
    #[case::unknown_member(r#""extra":[1,{"a":null}],"#, true)]
    #[case::duplicate_kind(r#""kind":"AdmissionReview","#, false)]
    #[case::duplicate_api_version(r#""apiVersion":"admission.k8s.io/v1beta1","#, false)]
    #[case::nothing_more("", true)]
    fn the_envelope_reads_as_kube_core_reads_it(#[case] extra: &str, #[case] fast: bool) {
        let request = r#""request":{"uid":"u","kind":{"group":"","version":"v1","kind":"Pod"},"resource":{"group":"","version":"v1","resource":"pods"},"operation":"CREATE","userInfo":{"username":"a","groups":["g"],"extra":{"k":["v"]}},"options":{"kind":"CreateOptions","fieldManager":"kubectl"},"object":{"spec":{"containers":[{"name":"c","image":"nginx"}]}}}"#;
        for body in [
            format!(
                r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview",{extra}{request}}}"#
            ),
            format!(
                r#"{{{extra}"apiVersion":"admission.k8s.io/v1",{request},"kind":"AdmissionReview"}}"#
            ),
            format!(r#"{{{extra}{request}}}"#),
            format!(
                r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview",{extra}"request":null}}"#
            ),
        ] {
            assert_eq!(fast_path_disagreement(body.as_bytes()), None, "{body}");
        }
        let plain = format!(
            r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview",{extra}{request}}}"#
        );
        assert_eq!(read_fast(plain.as_bytes()).is_some(), fast, "{plain}");
    }

    #[test]
    fn the_envelope_keeps_everything_but_the_pods() {
        let body = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","kind":{"group":"","version":"v1","kind":"Pod"},"resource":{"group":"","version":"v1","resource":"pods"},"operation":"UPDATE","userInfo":{"username":"a"},"object": {"metadata":{"labels":{"harbor-pilot.io/x":"y\u0026z","other":"o"}}},"oldObject":{"spec":{"volumes":[{"name":"v","image":{"reference":"r","reference":"s"}}]}},"dryRun":true}}"#;
        let pods = read_pods(body).unwrap();
        assert_eq!(pods.spans.len(), 2);
        assert_eq!(&body[pods.spans[0].clone()][..13], br#"{"metadata":{"#);
        let incoming = read_fast(body).unwrap();
        assert_eq!(incoming.uid(), "u");
        assert!(incoming.dry_run());
        let object = incoming.request.object.as_ref().unwrap();
        assert_eq!(object.labels()["harbor-pilot.io/x"], "y&z");
        assert_eq!(object.labels().len(), 1);
        let old = incoming.request.old_object.as_ref().unwrap();
        let volumes = old.spec.volumes.as_deref().unwrap();
        assert_eq!(
            volumes[0].image.as_ref().unwrap().reference.as_deref(),
            Some("s")
        );
        assert_eq!(fast_path_disagreement(body), None);
    }
}
