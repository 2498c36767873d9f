//! Every AdmissionReview fixture through `parse_review` → `review` → `encode_review`,
//! each answer checked independently (see `common::verify_answer`), plus the answers the
//! fixture index spells out for the special cases.

// Test code: a failed setup step should panic with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::sync::OnceLock;

use common::{REJECTED, Verified, admission_fixtures, example_rules, verify_answer};
use harbor_pilot_core::admission::{Harbor, Outcome, encode_review, parse_review, review};
use serde_json::Value;

#[derive(Clone)]
struct Answered {
    outcome: Outcome,
    verified: Verified,
}

/// Every fixture answered once, shared by the tests below.
fn answer_all() -> &'static HashMap<String, Result<Answered, String>> {
    static ANSWERS: OnceLock<HashMap<String, Result<Answered, String>>> = OnceLock::new();
    ANSWERS.get_or_init(answer_each)
}

fn answer_each() -> HashMap<String, Result<Answered, String>> {
    let rules = example_rules();
    admission_fixtures()
        .into_iter()
        .map(|(file, body)| {
            let result = parse_review(&body)
                .map_err(|e| e.detail())
                .and_then(|incoming| {
                    let reviewed = review(
                        &incoming,
                        &rules,
                        Harbor::Available,
                        &harbor_pilot_core::patch::all_served,
                    );
                    let wire: Value = serde_json::from_slice(&encode_review(&reviewed.response))
                        .map_err(|e| format!("{file}: answer is not JSON: {e}"))?;
                    let verified = verify_answer(&file, &body, &wire)?;
                    Ok(Answered {
                        outcome: reviewed.outcome,
                        verified,
                    })
                });
            (file, result)
        })
        .collect()
}

#[test]
fn every_fixture_gets_a_correct_answer_or_a_clear_rejection() {
    let answers = answer_all();
    let mut failures = Vec::new();
    for (file, result) in answers {
        let rejected = REJECTED.contains(&file.as_str());
        match (result, rejected) {
            (Ok(_), false) => {}
            (Err(message), true) if !message.contains(".json:") => {} // a parse error: 400
            (Ok(_), true) => failures.push(format!("{file}: accepted, should be rejected")),
            (Err(message), _) => failures.push(message.clone()),
        }
    }
    failures.sort();
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // The check above must have had real work to do.
    let rewritten_pods = answers
        .values()
        .filter(|r| r.as_ref().is_ok_and(|a| a.verified.patched))
        .count();
    let images: usize = answers
        .values()
        .filter_map(|r| r.as_ref().ok())
        .map(|a| a.verified.rewritten)
        .sum();
    assert!(rewritten_pods > 150, "only {rewritten_pods} pods rewritten");
    assert!(images > 350, "only {images} images rewritten");
}

fn answered(file: &str) -> Answered {
    answer_all()
        .get(file)
        .unwrap_or_else(|| panic!("no fixture {file}"))
        .clone()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn new_images(file: &str) -> Vec<(String, String)> {
    answered(file).verified.new_images.into_iter().collect()
}

const BUSYBOX_DIGEST: &str =
    "sha256:fd8d9aa63ba2f0982b5304e1ee8d3b90a210bc1ffb5314d980eb6962f1a9715d";

#[test]
fn rewrites_a_statefulset_pod_from_docker_hub() {
    assert_eq!(
        new_images("013-aks-store-demo-statefulset.json"),
        [(
            "/spec/containers/0/image".to_owned(),
            "harbor.example.com/docker-hub-proxy/library/rabbitmq:4.3.2-management-alpine"
                .to_owned()
        )]
    );
}

#[test]
fn keeps_tag_and_digest_of_an_init_container() {
    assert_eq!(
        new_images("053-microservices-demo-deployment.json"),
        [(
            "/spec/initContainers/0/image".to_owned(),
            format!("harbor.example.com/docker-hub-proxy/library/busybox:1.38.0@{BUSYBOX_DIGEST}")
        )]
    );
}

#[test]
fn leaves_istio_auto_placeholder() {
    let a = answered("054-istio-deployment.json");
    assert_eq!(a.outcome, Outcome::Unchanged);
    assert!(!a.verified.patched);
}

#[test]
fn rewrites_image_volumes() {
    assert_eq!(
        new_images("136-k8s-website-pod.json"),
        [
            (
                "/spec/containers/0/image".to_owned(),
                "harbor.example.com/docker-hub-proxy/library/debian".to_owned()
            ),
            (
                "/spec/volumes/0/image/reference".to_owned(),
                "harbor.example.com/quay-proxy/crio/artifact:v2".to_owned()
            ),
        ]
    );
}

#[test]
fn rewrites_dry_run_creates_like_creates() {
    assert_eq!(
        answered("201-k8s-dashboard-pod-dryrun.json")
            .verified
            .rewritten,
        3
    );
    assert_eq!(
        answered("202-k8s-examples-pod-dryrun.json")
            .verified
            .rewritten,
        1
    );
}

#[test]
fn update_of_a_running_pod_touches_no_image() {
    for file in [
        "203-microservices-demo-pod-update-label.json",
        "204-argo-cd-pod-update-idempotent.json",
        "207-ingress-nginx-pod-update-finalizer.json",
    ] {
        let a = answered(file);
        assert!(!a.verified.patched, "{file}");
        assert_eq!(a.outcome, Outcome::Unchanged, "{file}");
    }
}

#[test]
fn update_rewrites_only_the_image_it_changes() {
    assert_eq!(
        new_images("205-k8s-examples-pod-update-setimage.json"),
        [(
            "/spec/containers/0/image".to_owned(),
            "harbor.example.com/docker-hub-proxy/library/redis:7.2.4".to_owned()
        )]
    );
    assert_eq!(
        new_images("206-k8s-dashboard-pod-update-setimage.json"),
        [(
            "/spec/containers/0/image".to_owned(),
            format!("harbor.example.com/docker-hub-proxy/library/busybox:1.38.0@{BUSYBOX_DIGEST}")
        )]
    );
}

#[test]
fn status_updates_are_ignored() {
    let a = answered("208-kube-prometheus-pod-status-update.json");
    assert_eq!(a.outcome, Outcome::Ignored);
    assert!(!a.verified.patched);
}

#[test]
fn kubectl_debug_rewrites_only_the_new_ephemeral_container() {
    assert_eq!(
        new_images("209-k8s-website-pod-ephemeral.json"),
        [(
            "/spec/ephemeralContainers/0/image".to_owned(),
            "harbor.example.com/docker-hub-proxy/library/busybox:1.28".to_owned()
        )]
    );
    assert_eq!(
        new_images("210-microservices-demo-pod-ephemeral.json"),
        [(
            "/spec/ephemeralContainers/0/image".to_owned(),
            "harbor.example.com/docker-hub-proxy/nicolaka/netshoot".to_owned()
        )]
    );
    assert_eq!(
        new_images("211-microservices-demo-pod-ephemeral.json"),
        [(
            "/spec/ephemeralContainers/1/image".to_owned(),
            "harbor.example.com/docker-hub-proxy/nicolaka/netshoot".to_owned()
        )]
    );
    assert!(!answered("212-kyverno-pod-ephemeral.json").verified.patched);
}

#[test]
fn kubectl_debug_keeps_tag_and_digest() {
    // containerd pulls by digest either way; the tag stays for people reading the pod.
    let [(path, image)] = new_images("213-k8s-website-pod-ephemeral.json")
        .try_into()
        .unwrap();
    assert_eq!(path, "/spec/ephemeralContainers/0/image");
    assert_eq!(
        image,
        "harbor.example.com/registry-k8s-proxy/ingress-nginx/kube-webhook-certgen:v1.6.9\
         @sha256:01038e7de14b78d702d2849c3aad72fd25903c4765af63cf16aa3398f5d5f2dd"
    );
}

#[test]
fn debug_copy_rewrites_every_proxied_image() {
    assert_eq!(
        new_images("214-k8s-examples-pod-debug-copy.json"),
        [(
            "/spec/containers/1/image".to_owned(),
            "harbor.example.com/docker-hub-proxy/library/ubuntu".to_owned()
        )]
    );
}

#[test]
fn other_objects_and_operations_are_allowed_without_a_patch() {
    for (file, outcome) in [
        ("215-argo-cd-deployment-notpod.json", Outcome::Ignored),
        ("216-argo-cd-pod-kind-mismatch.json", Outcome::InvalidObject),
        ("217-synthetic-configmap-notpod.json", Outcome::Ignored),
        ("218-k8s-examples-pod-delete.json", Outcome::Ignored),
        (
            "219-microservices-demo-pod-exec-connect.json",
            Outcome::Ignored,
        ),
        ("220-microservices-demo-pod-binding.json", Outcome::Ignored),
        ("221-external-dns-podtemplate-notpod.json", Outcome::Ignored),
    ] {
        let a = answered(file);
        assert_eq!(a.outcome, outcome, "{file}");
        assert!(!a.verified.patched, "{file}");
    }
}

#[test]
fn whitespace_images_are_left_with_a_warning_each() {
    let a = answered("222-synthetic-pod-odd-image.json");
    assert!(!a.verified.patched);
    assert_eq!(a.verified.warnings.len(), 2, "{:?}", a.verified.warnings);
}

#[test]
fn odd_images_each_get_the_kubelets_answer() {
    let a = answered("223-synthetic-pod-odd-image.json");
    assert_eq!(
        a.verified.new_images.into_iter().collect::<Vec<_>>(),
        [
            (
                "/spec/containers/2/image".to_owned(),
                "harbor.example.com/docker-hub-proxy/library/nginx:latest\
                 @sha256:859ab6768a6f26a79bc42b231664111317d095a4f04e4b6fe79ce37b3d199097"
                    .to_owned()
            ),
            (
                "/spec/containers/7/image".to_owned(),
                "harbor.example.com/docker-hub-proxy/library/nginx".to_owned()
            ),
        ]
    );
    // "", Nginx:latest, the 64-hex id and the short digest do not parse.
    assert_eq!(a.verified.warnings.len(), 4, "{:?}", a.verified.warnings);
}

#[test]
fn a_huge_image_does_not_stop_the_others() {
    let a = answered("224-synthetic-pod-huge-image.json");
    assert_eq!(a.verified.rewritten, 1);
    assert_eq!(a.verified.warnings.len(), 1);
}

#[test]
fn rewrites_a_pod_with_200_containers() {
    let a = answered("225-synthetic-pod-200-containers.json");
    assert!(a.verified.rewritten > 100, "{}", a.verified.rewritten);
}

#[test]
fn malformed_pods_are_allowed_unchanged() {
    for (file, outcome) in [
        // An object that is not one at all, like any other malformed pod: the
        // envelope is fine, so the answer is under its uid, allowed, with a warning.
        (
            "229-synthetic-malformed-object-string.json",
            Outcome::InvalidObject,
        ),
        (
            "230-synthetic-malformed-object-array.json",
            Outcome::InvalidObject,
        ),
        (
            "233-synthetic-malformed-containers-object.json",
            Outcome::InvalidObject,
        ),
        (
            "234-synthetic-malformed-image-number.json",
            Outcome::InvalidObject,
        ),
        (
            "237-synthetic-malformed-nocontainers.json",
            Outcome::Unchanged,
        ),
    ] {
        let a = answered(file);
        assert_eq!(a.outcome, outcome, "{file}");
        assert!(!a.verified.patched, "{file}");
    }
}

#[test]
fn rejections_say_what_is_wrong() {
    let expected = [
        (
            "226-synthetic-malformed-empty.json",
            "body is not an AdmissionReview: missing field `apiVersion`",
        ),
        (
            "227-synthetic-malformed-norequest.json",
            "AdmissionReview has no request",
        ),
        (
            "232-synthetic-malformed-nouid.json",
            "body is not an AdmissionReview: missing field `uid`",
        ),
        (
            "235-synthetic-malformed-v1beta1.json",
            "unsupported AdmissionReview version \"admission.k8s.io/v1beta1\"",
        ),
        (
            "236-synthetic-malformed-truncated.json",
            "body is not an AdmissionReview: EOF while parsing",
        ),
    ];
    let fixtures: HashMap<_, _> = admission_fixtures().into_iter().collect();
    for (file, message) in expected {
        let error = parse_review(&fixtures[file]).unwrap_err().detail();
        assert!(error.starts_with(message), "{file}: {error}");
    }
}

#[test]
fn a_pod_create_without_object_is_allowed_with_a_warning_under_its_uid() {
    let fixtures: HashMap<_, _> = admission_fixtures().into_iter().collect();
    let rules = example_rules();
    for file in [
        "228-synthetic-malformed-noobject.json",
        "231-synthetic-malformed-object-null.json",
    ] {
        let body = &fixtures[file];
        let sent: Value = serde_json::from_slice(body).unwrap();
        let incoming = parse_review(body).unwrap();
        let reviewed = review(
            &incoming,
            &rules,
            Harbor::Available,
            &harbor_pilot_core::patch::all_served,
        );
        let wire: Value = serde_json::from_slice(&encode_review(&reviewed.response)).unwrap();
        assert_eq!(
            wire["response"],
            serde_json::json!({
                "uid": sent["request"]["uid"],
                "allowed": true,
                "warnings": ["harbor-pilot: CREATE of a pod without request.object; images left unchanged"],
            }),
            "{file}"
        );
    }
}

#[test]
fn the_oracle_proxy_table_is_the_example_config() {
    let rules = example_rules();
    let mut configured: Vec<_> = rules.proxies().collect();
    configured.sort();
    assert_eq!(configured, common::EXAMPLE_PROXIES);
    assert_eq!(rules.harbor(), common::HARBOR);
}

#[test]
fn a_second_review_of_the_patched_pod_changes_nothing() {
    // reinvocationPolicy: IfNeeded sends the patched pod again.
    let rules = example_rules();
    for (file, body) in admission_fixtures().into_iter().take(200) {
        let incoming = parse_review(&body).unwrap();
        let reviewed = review(
            &incoming,
            &rules,
            Harbor::Available,
            &harbor_pilot_core::patch::all_served,
        );
        let Some(patch) = &reviewed.response.patch else {
            continue;
        };
        let patch: json_patch::Patch = serde_json::from_slice(patch).unwrap();
        let mut review_json: Value = serde_json::from_slice(&body).unwrap();
        json_patch::patch(&mut review_json["request"]["object"], &patch).unwrap();
        let again_body = serde_json::to_vec(&review_json).unwrap();
        let again = parse_review(&again_body).unwrap();
        let second = review(
            &again,
            &rules,
            Harbor::Available,
            &harbor_pilot_core::patch::all_served,
        );
        assert!(
            second.response.patch.is_none(),
            "{file}: second pass patched again"
        );
    }
}
