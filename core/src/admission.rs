//! AdmissionReview in, AdmissionReview out: the webhook's decision, as pure functions.
//!
//! - `decode`: [`parse_review`] reads a request body into kube-core's admission types
//!   (the Pod object as a [`PodImages`](crate::pod::PodImages)). Only a body that is no
//!   AdmissionReview at all is an error ([`ReviewError`], HTTP 400).
//! - `decide`: [`review`] decides, and always allows; a patch only when an image is
//!   rewritten.
//! - `encode`: [`encode_review`] writes the `admission.k8s.io/v1` response.
//! - `outcome`: how a review ended, as bounded metric labels.
//!
//! Pure: no I/O, no metrics, no logging. The [`Outcome`] and the per-image
//! [`Change`](crate::patch::Change)s let the caller log and count.
//! API: <https://kubernetes.io/docs/reference/config-api/apiserver-admission.v1/>.

mod decide;
pub(crate) mod decode;
mod encode;
mod envelope;
mod outcome;

pub use decide::{Harbor, Reviewed, review, rewrite_targets};
pub use decode::{EPHEMERAL_SUBRESOURCE, Incoming, ReviewError, parse_review};
pub use encode::{API_VERSION, encode_review};
pub use outcome::{OPERATION_LABELS, Outcome, operation_label};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::rules::CachedRules;
    use crate::verdict::Verdict;
    use base64::Engine as _;
    use serde_json::{Value, json};

    const KIND: &str = "AdmissionReview";

    fn rules() -> CachedRules {
        Config::from_yaml("harbor: harbor.example.com\nproxies: {docker.io: hub}\n")
            .unwrap()
            .rules
    }

    /// Each image's reason label, or `rewrite`.
    fn reasons(reviewed: &Reviewed) -> Vec<&'static str> {
        reviewed
            .changes
            .iter()
            .map(|c| match &c.verdict {
                Verdict::Keep(reason) => reason.as_str(),
                Verdict::Rewrite(_) => "rewrite",
            })
            .collect()
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
        let reviewed = review(
            &incoming,
            &rules,
            Harbor::Available,
            &crate::patch::all_served,
        );
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
            pod,
            json!({"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": "p", "annotations": {
                       "harbor-pilot.io/original-images": r#"{"c":"nginx"}"#},
                       "labels": {"harbor-pilot.io/rewritten": "true"}},
                   "spec": {"containers": [{"name": "c", "image": "harbor.example.com/hub/library/nginx"}]}})
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
        assert_eq!(
            wire["response"]["warnings"],
            json!([
                "harbor-pilot: a image \"Nginx\" is not a valid image reference \
                    (invalid reference format: repository name (library/Nginx) must be lowercase); \
                    left unchanged"
            ])
        );
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
        assert_eq!(
            warnings[10],
            "harbor-pilot: 15 more images are not valid image references; left unchanged"
        );
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
        assert_eq!(
            wire["response"]["warnings"],
            json!([
                "harbor-pilot: the request is for pods but its object is apps/v1/Deployment; left unchanged"
            ])
        );
    }

    #[test]
    fn a_malformed_pod_is_allowed_unchanged_with_a_warning() {
        let object = json!({"spec": {"containers": {"name": "c", "image": "nginx"}}});
        let (wire, outcome) = answer(&body(pod_request("CREATE", None, object, Value::Null)));
        assert_eq!(outcome, Outcome::InvalidObject);
        assert_eq!(wire["response"]["uid"], "u-1");
        assert!(wire["response"].get("patch").is_none());
        assert_eq!(
            wire["response"]["warnings"],
            json!([
                "harbor-pilot: could not read the pod (invalid type: map, expected a sequence \
                    at line 1 column 151); images left unchanged"
            ])
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
        let request_body = body(pod_request("CREATE", None, pod, Value::Null));
        let incoming = parse_review(&request_body).unwrap();
        let rules = rules();
        let reviewed = review(
            &incoming,
            &rules,
            Harbor::Unavailable,
            &crate::patch::all_served,
        );
        assert_eq!(reviewed.outcome, Outcome::FailOpen);
        assert!(reviewed.response.patch.is_none());
        let warnings = reviewed.response.warnings.clone().unwrap();
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert_eq!(
            warnings,
            [
                "harbor-pilot: c image \"BAD\" is not a valid image reference (invalid reference \
                 format: repository name (library/BAD) must be lowercase); left unchanged",
                "harbor-pilot: Harbor is unavailable; 1 image left on its upstream registry (fail open)"
            ]
        );
        assert_eq!(
            reasons(&reviewed),
            ["harbor_unavailable", "not_proxied", "unparsable"]
        );
    }

    #[test]
    fn harbor_being_down_does_not_matter_when_nothing_would_move() {
        let mut pod = nginx_pod();
        pod["spec"]["containers"] = json!([{"name": "b", "image": "gcr.io/x/y"}]);
        let request_body = body(pod_request("CREATE", None, pod, Value::Null));
        let incoming = parse_review(&request_body).unwrap();
        let rules = rules();
        let reviewed = review(
            &incoming,
            &rules,
            Harbor::Unavailable,
            &crate::patch::all_served,
        );
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

    #[rstest::rstest]
    #[case::create_without_object("CREATE", Value::Null)]
    #[case::update_without_object("UPDATE", Value::Null)]
    fn allows_a_pod_write_without_object_with_a_warning(
        #[case] operation: &str,
        #[case] object: Value,
    ) {
        // The uid is known, so the answer is an allowed review, never a 400.
        let (wire, outcome) = answer(&body(pod_request(operation, None, object, nginx_pod())));
        assert_eq!(outcome, Outcome::InvalidObject);
        assert_eq!(wire["response"]["allowed"], true);
        assert_eq!(wire["response"]["uid"], "u-1");
        assert_eq!(
            wire["response"]["warnings"],
            json!([format!(
                "harbor-pilot: {operation} of a pod without request.object; images left unchanged"
            )])
        );
    }

    #[test]
    fn names_pods_by_generate_name_before_they_have_a_name() {
        let pod = json!({"metadata": {"generateName": "web-7d9f-"}, "spec": {}});
        let mut request = pod_request("CREATE", None, pod, Value::Null);
        request["namespace"] = json!("shop");
        let request_body = body(request);
        let incoming = parse_review(&request_body).unwrap();
        assert_eq!(incoming.namespace_and_name(), ("shop", "web-7d9f-"));
    }

    #[test]
    fn verify_keeps_what_harbor_cannot_serve_and_what_it_has_not_answered() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "a", "image": "nginx"}, {"name": "b", "image": "redis"},
                                    {"name": "c", "image": "busybox"}]}});
        let request_body = body(pod_request("CREATE", None, pod, Value::Null));
        let incoming = parse_review(&request_body).unwrap();
        let rules = rules();
        let mut targets = rewrite_targets(&incoming, &rules);
        targets.sort();
        assert_eq!(
            targets,
            [
                "harbor.example.com/hub/library/busybox",
                "harbor.example.com/hub/library/nginx",
                "harbor.example.com/hub/library/redis"
            ]
        );
        let served = |image: &str| match image {
            "harbor.example.com/hub/library/nginx" => crate::verdict::Served::Yes,
            "harbor.example.com/hub/library/redis" => {
                crate::verdict::Served::No("HTTP 404".to_owned())
            }
            _ => crate::verdict::Served::Unknown,
        };
        let reviewed = review(&incoming, &rules, Harbor::Available, &served);
        assert_eq!(reviewed.outcome, Outcome::Rewritten);
        assert_eq!(
            reasons(&reviewed),
            ["rewrite", "not_served_by_harbor", "unverified"]
        );
        assert_eq!(
            reviewed.response.warnings.unwrap(),
            [
                "harbor-pilot: b image \"redis\" stays upstream: Harbor cannot serve it (HTTP 404)",
                "harbor-pilot: 1 image stays upstream this time: Harbor's answer did not come \
                 within verify.budget (the next pod will know)"
            ]
        );
    }
}
