//! Reading a request body: an AdmissionReview, with the Pod read as [`PodImages`].

use std::borrow::Cow;

use kube_core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};

#[cfg(any(test, feature = "fuzzing"))]
use crate::json::Reader;
use crate::pod::{PodImages, Unread};
use crate::redact;

use super::encode::{API_VERSION, KIND};
use super::envelope;

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
pub struct Incoming<'a> {
    /// The request. Its object and oldObject are `None` when they did not read as a
    /// Pod (see `object_error`).
    pub request: Box<Request<'a>>,
    /// Why the object (or oldObject) did not read as a Pod: a resource the webhook
    /// should not have been sent, or a malformed Pod. Those objects were skipped.
    pub object_error: Option<String>,
}

/// The fields of kube-core's `AdmissionRequest` the webhook uses, under the same names.
/// kube-core's type stays the reference reading ([`read_with_serde`] reads into it and
/// keeps these fields); the fast path reads them straight from the body, checking the
/// rest of the request as kube-core's types would, without building it (user info,
/// options and the kinds were two thirds of the cost of reading the envelope).
#[derive(Debug, Clone, PartialEq)]
pub struct Request<'a> {
    /// Identifies this request; the answer carries it back.
    pub uid: String,
    /// The resource's API group (`""` for pods).
    pub group: String,
    /// The resource (`pods`).
    pub resource: String,
    /// `ephemeralcontainers` for `kubectl debug`, `status`, …
    pub sub_resource: Option<String>,
    /// The object's name (empty when the API server generates it).
    pub name: String,
    /// The object's namespace.
    pub namespace: Option<String>,
    /// CREATE, UPDATE, …
    pub operation: Operation,
    /// A dry run: nothing will be stored.
    pub dry_run: bool,
    /// The pod as it will be. Boxed, as is `old_object`: a `PodImages` is 512 bytes
    /// (kube's `ObjectMeta` alone 360), and the request moves from reader to caller
    /// several times — moving the boxes instead of the pods saved ~160 first-level
    /// data-cache write misses per admission (callgrind, 3 containers).
    pub object: Option<Box<PodImages<'a>>>,
    /// The pod as it is (UPDATE).
    pub old_object: Option<Box<PodImages<'a>>>,
}

impl<T: kube_core::Resource> From<AdmissionRequest<T>> for Request<'_> {
    /// kube-core's request, its objects dropped.
    fn from(request: AdmissionRequest<T>) -> Self {
        Self {
            uid: request.uid,
            group: request.resource.group,
            resource: request.resource.resource,
            sub_resource: request.sub_resource,
            name: request.name,
            namespace: request.namespace,
            operation: request.operation,
            dry_run: request.dry_run,
            object: None,
            old_object: None,
        }
    }
}

impl Request<'_> {
    /// An allowed answer to this request, without a patch.
    pub fn allowed(&self) -> AdmissionResponse {
        let mut response = AdmissionResponse::invalid("");
        response.uid.clone_from(&self.uid);
        response.allowed = true;
        response.result = kube_core::Status::default();
        response
    }
}

impl Incoming<'_> {
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
        let request = &self.request;
        request.group.is_empty()
            && request.resource == "pods"
            && matches!(request.operation, Operation::Create | Operation::Update)
            && matches!(
                request.sub_resource.as_deref(),
                None | Some(EPHEMERAL_SUBRESOURCE)
            )
    }
}

/// Reads a request body. Everything the API server can send for a valid AdmissionReview
/// is `Ok`; only what is no AdmissionReview (no uid to answer under) is an error.
pub fn parse_review(body: &[u8]) -> Result<Incoming<'_>, ReviewError> {
    match read_fast(body) {
        Some(incoming) => Ok(incoming),
        None => read_with_serde(body),
    }
}

/// The hot path: the whole review read by the borrowing reader ([`envelope`]), which
/// skips the bulk of a pod far faster than serde_json and builds none of kube-core's
/// types. `None` whenever it declines or the review lacks what kube-core requires:
/// then [`read_with_serde`] reads the body and gives the exact answer or error, so this
/// path changes speed, never results.
fn read_fast(body: &[u8]) -> Option<Incoming<'_>> {
    let review = envelope::read_review(body).ok()?;
    if review.api_version.as_deref() != Some(API_VERSION) || review.kind.as_deref() != Some(KIND) {
        return None;
    }
    let request = review.request?;
    if !request.has_checked_members() {
        return None;
    }
    let (group, resource) = request.resource?;
    Some(Incoming {
        request: Box::new(Request {
            uid: request.uid?.into_owned(),
            group: group.into_owned(),
            resource: resource.into_owned(),
            sub_resource: request.sub_resource.map(Cow::into_owned),
            name: request.name.map(Cow::into_owned).unwrap_or_default(),
            namespace: request.namespace.map(Cow::into_owned),
            operation: request.operation?,
            dry_run: request.dry_run,
            object: request.object,
            old_object: request.old_object,
        }),
        object_error: None,
    })
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

/// The whole body through serde_json: the reference reading, and the one for bodies
/// the fast path declines (malformed pods, objects of other kinds, rare escapes).
fn read_with_serde(body: &[u8]) -> Result<Incoming<'static>, ReviewError> {
    match serde_json::from_slice::<AdmissionReview<PodImages>>(body) {
        Ok(review) => {
            check_version(&review.types)?;
            let mut request: AdmissionRequest<PodImages> =
                review.try_into().map_err(|_| ReviewError::NoRequest)?;
            let (object, old_object) = (
                request.object.take().map(Box::new),
                request.old_object.take().map(Box::new),
            );
            Ok(Incoming {
                request: Box::new(Request {
                    object,
                    old_object,
                    ..Request::from(request)
                }),
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
                request: Box::new(Request::from(request)),
                object_error: Some(redact::serde_message(&pod_error.to_string())),
            })
        }
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
        assert!(
            envelope::read_review(request.as_bytes()).is_err(),
            "{request}"
        );
    }

    /// Envelopes where reading without `#[serde(flatten)]` could part ways with
    /// kube-core's reading: each is read the same, or declined and left to serde_json.
    #[rstest::rstest]
    #[case::response_present(r#""response":{"uid":"x","allowed":"no"},"#, false)]
    #[case::response_null(r#""response":null,"#, true)]
    #[case::unknown_member(r#""extra":[1,{"a":null}],"#, true)]
    #[case::duplicate_kind(r#""kind":"AdmissionReview","#, false)]
    #[case::duplicate_api_version(r#""apiVersion":"admission.k8s.io/v1beta1","#, false)]
    #[case::unknown_member_lone_surrogate(r#""extra":{"k":"\ud800"},"#, false)]
    #[case::unknown_member_escapes(r#""extra":{"k":"\u00e9\"\ud83d\ude00"},"#, true)]
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

    /// Request fields the fast path checks without keeping: wherever kube-core's types
    /// refuse them, the fast path refuses too (and serde_json gives the 400). `valid`:
    /// whether kube-core reads the request.
    #[rstest::rstest]
    #[case::groups_not_strings(r#""userInfo":{"groups":[1]}"#, false)]
    #[case::extra_not_lists(r#""userInfo":{"extra":{"k":"v"}}"#, false)]
    #[case::extra_lists(r#""userInfo":{"extra":{"k":["v","w"],"l":[]},"groups":null}"#, true)]
    #[case::user_info_null(r#""userInfo":null"#, false)]
    #[case::user_info_array(r#""userInfo":[]"#, false)]
    #[case::user_info_repeated_key(r#""userInfo":{"username":"a","username":"b"}"#, true)]
    #[case::user_info_unknown_member(r#""userInfo":{"username":"a","x":[{}]}"#, true)]
    #[case::kind_without_version(r#""userInfo":{},"kind":{"group":"","kind":"Pod"}"#, false)]
    #[case::resource_api_version_null(r#""userInfo":{},"resource":{"group":"","version":"v1","resource":"pods","apiVersion":null}"#, true)]
    #[case::resource_api_version(r#""userInfo":{},"resource":{"group":"","version":"v1","resource":"pods","apiVersion":"v1"}"#, true)]
    // kube-core names it `api_version` (a field it computes); `apiVersion` is unknown.
    #[case::resource_api_version_number(
        r#""userInfo":{},"resource":{"group":"","version":"v1","resource":"pods","api_version":5}"#,
        false
    )]
    #[case::resource_api_version_snake(r#""userInfo":{},"resource":{"group":"","version":"v1","resource":"pods","api_version":"v1"}"#, true)]
    #[case::resource_repeated(
        r#""userInfo":{},"resource":{"group":"","group":"","version":"v1","resource":"pods"}"#,
        false
    )]
    #[case::request_kind_null(r#""userInfo":{},"requestKind":null,"requestResource":null,"requestSubResource":null,"subResource":null"#, true)]
    #[case::request_kind(r#""userInfo":{},"requestKind":{"kind":"Pod","group":"apps","version":"v1"},"requestResource":{"resource":"pods","group":"","version":"v1"},"requestSubResource":"","subResource":"ephemeralcontainers""#, true)]
    #[case::kind_not_a_string(
        r#""userInfo":{},"kind":{"group":"","version":1,"kind":"Pod"}"#,
        false
    )]
    #[case::operation_repeated(r#""userInfo":{},"operation":"CREATE","operation":"UPDATE""#, false)]
    #[case::uid_null(r#""userInfo":{},"uid":null"#, false)]
    #[case::unknown_request_member(r#""userInfo":{},"x":{"\ud800":[1e999]}"#, true)]
    #[case::dry_run_null(r#""userInfo":{},"dryRun":null"#, false)]
    #[case::dry_run(r#""userInfo":{},"dryRun":true"#, true)]
    #[case::extra_null_list(r#""userInfo":{"extra":{"k":null}}"#, false)]
    #[case::user_info_strings_null(r#""userInfo":{"uid":null,"extra":null,"username":null}"#, true)]
    #[case::options_surrogate_pair(
        r#""userInfo":{},"options":{"k\ud83d\ude00":"\ud83d\ude00"}"#,
        true
    )]
    #[case::options_huge_number(r#""userInfo":{},"options":[1e400]"#, false)]
    #[case::options_any_value(r#""userInfo":{},"options":[5,"x",{"k":[null,true,-1.5e3]}]"#, true)]
    #[case::options_lone_surrogate(r#""userInfo":{},"options":{"\ud800kind":"x"}"#, false)]
    #[case::user_info_unknown_lone_surrogate(r#""userInfo":{"x":"\ud800"}"#, true)]
    #[case::name_null(r#""userInfo":{},"name":null"#, false)]
    #[case::namespace_null(r#""userInfo":{},"namespace":null"#, true)]
    #[case::escaped_strings(
        r##""userInfo":{"username":"\u0061\n"},"name":"p\u00e9","uid":"\"u\"""##,
        true
    )]
    #[case::operation_unknown(r#""userInfo":{},"operation":"PATCH""#, false)]
    #[case::dry_run_not_bool(r#""userInfo":{},"dryRun":"yes""#, false)]
    #[case::request_sub_resource_number(r#""userInfo":{},"requestSubResource":1"#, false)]
    fn the_request_is_checked_as_kube_core_checks_it(#[case] members: &str, #[case] valid: bool) {
        // The case's members, and the required ones it does not give.
        let defaults = [
            ("uid", r#""u""#),
            ("kind", r#"{"group":"","version":"v1","kind":"Pod"}"#),
            (
                "resource",
                r#"{"group":"","version":"v1","resource":"pods"}"#,
            ),
            ("operation", r#""CREATE""#),
        ];
        let mut request = members.to_owned();
        for (key, value) in defaults {
            if !members.contains(&format!(r#","{key}":"#))
                && !members.starts_with(&format!(r#""{key}":"#))
            {
                request.push_str(&format!(r#","{key}":{value}"#));
            }
        }
        let body = format!(
            r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{{"object":{{"spec":{{"containers":[{{"name":"c","image":"nginx"}}]}}}},{request}}}}}"#
        );
        assert_eq!(fast_path_disagreement(body.as_bytes()), None, "{body}");
        assert_eq!(read_with_serde(body.as_bytes()).is_ok(), valid, "{body}");
        assert_eq!(read_fast(body.as_bytes()).is_some(), valid, "{body}");
    }

    #[test]
    fn the_fast_path_keeps_the_request_members_and_both_pods() {
        let body = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","kind":{"group":"","version":"v1","kind":"Pod"},"resource":{"group":"","version":"v1","resource":"pods"},"operation":"UPDATE","userInfo":{"username":"a"},"object": {"metadata":{"labels":{"harbor-pilot.io/x":"y\u0026z","other":"o"}}},"oldObject":{"spec":{"volumes":[{"name":"v","image":{"reference":"r","reference":"s"}}]}},"dryRun":true}}"#;
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

    /// The containers' names and images are the body's own bytes, not copies, unless an
    /// escape had to be decoded.
    #[test]
    fn the_fast_path_borrows_container_strings_without_escapes() {
        let body = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","kind":{"group":"","version":"v1","kind":"Pod"},"resource":{"group":"","version":"v1","resource":"pods"},"operation":"CREATE","userInfo":{},"object":{"spec":{"initContainers":[{"name":"i","image":"busybox"}],"containers":[{"name":"app","image":"nginx:1.27"},{"name":"s\u0069de","image":"quay.io/a/b\/c"},{"name":"none"}],"ephemeralContainers":[{"name":"debug","image":"alpine"}]}}}}"#;
        let incoming = read_fast(body).unwrap();
        let spec = &incoming.request.object.as_ref().unwrap().spec;
        // Borrowed, and from the body: a `&'static str` would be borrowed too.
        let from_body = |text: &Cow<'_, str>| match text {
            Cow::Borrowed(text) => body.as_ptr_range().contains(&text.as_ptr()),
            Cow::Owned(_) => false,
        };
        let read: Vec<_> = [
            &spec.init_containers,
            &spec.containers,
            &spec.ephemeral_containers,
        ]
        .into_iter()
        .flat_map(|list| list.as_deref().unwrap())
        .map(|c| {
            (
                (c.name.as_ref(), from_body(&c.name)),
                c.image.as_ref().map(|i| (i.as_ref(), from_body(i))),
            )
        })
        .collect();
        assert_eq!(
            read,
            [
                (("i", true), Some(("busybox", true))),
                (("app", true), Some(("nginx:1.27", true))),
                (("side", false), Some(("quay.io/a/b/c", false))),
                (("none", true), None),
                (("debug", true), Some(("alpine", true))),
            ]
        );
        assert_eq!(fast_path_disagreement(body), None);
    }
}
