//! Properties that must hold for every image string and every pod, not just the
//! fixtures: rewriting is idempotent, tag and digest survive, only proxied registries are
//! touched, and the patch always applies and changes nothing but image fields and the
//! annotation.

// Test code: a failed setup step should panic with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use harbor_pilot_core::admission::{Harbor, encode_review, parse_review, review};
use harbor_pilot_core::reference::ImageRef;
use harbor_pilot_core::rules::{CachedRules, Decision, Keep};
use proptest::prelude::*;
use serde_json::{Value, json};

fn rules() -> &'static CachedRules {
    static RULES: std::sync::OnceLock<CachedRules> = std::sync::OnceLock::new();
    RULES.get_or_init(common::example_rules)
}

/// Registries, proxied or not, including the kubelet's odd cases.
fn domain() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        prop::sample::select(vec![
            "docker.io",
            "index.docker.io",
            "quay.io",
            "ghcr.io",
            "registry.k8s.io",
            "registry-1.docker.io",
            "gcr.io",
            "host:5000",
            "localhost",
            "localhost:5000",
            "[::1]:5000",
            "harbor.example.com",
            "Foo",
            "foo_bar.com",
        ])
        .prop_map(|d| Some(d.to_owned())),
    ]
}

fn image() -> impl Strategy<Value = String> {
    let component = "[a-z0-9]{1,8}([._-][a-z0-9]{1,6}){0,2}";
    let path = prop::collection::vec(component, 1..4).prop_map(|c| c.join("/"));
    let tag = prop::option::of("[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}");
    let digest = prop::option::of("[a-f0-9]{64}".prop_map(|hex| format!("sha256:{hex}")));
    (domain(), path, tag, digest).prop_map(|(domain, path, tag, digest)| {
        let mut image = domain.map(|d| format!("{d}/")).unwrap_or_default();
        image.push_str(&path);
        if let Some(tag) = tag {
            image.push(':');
            image.push_str(&tag);
        }
        if let Some(digest) = digest {
            image.push('@');
            image.push_str(&digest);
        }
        image
    })
}

/// Well-formed images most of the time, anything at all some of the time.
fn any_image() -> impl Strategy<Value = String> {
    prop_oneof![8 => image(), 1 => "\\PC{0,40}", 1 => Just("auto".to_owned())]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn rewriting_is_idempotent(image in any_image()) {
        if let Decision::Rewrite(once) = rules().decide(&image) {
            prop_assert_eq!(rules().decide(&once.image), Decision::Keep(Keep::AlreadyOnHarbor));
        }
    }

    #[test]
    fn remembered_decisions_equal_fresh_ones(image in any_image()) {
        let first = rules().decide(&image);
        prop_assert_eq!(&first, &rules().rule_set().decide(&image));
        prop_assert_eq!(rules().decide(&image), first);
    }

    #[test]
    fn tag_and_digest_survive(image in image()) {
        let Ok(original) = ImageRef::parse(&image) else { return Ok(()) };
        if let Decision::Rewrite(rewrite) = rules().decide(&image) {
            let rewritten = ImageRef::parse(&rewrite.image).expect("a rewrite is a valid reference");
            prop_assert_eq!(rewritten.tag(), original.tag());
            prop_assert_eq!(rewritten.digest(), original.digest());
            prop_assert_eq!(rewritten.domain(), "harbor.example.com");
            let expected_path = format!("{}/{}", rewrite.project, original.path());
            prop_assert_eq!(rewritten.path(), expected_path.as_str());
            prop_assert!(rewrite.image.ends_with(&image[image.len() - suffix_len(&image)..]));
        }
    }

    #[test]
    fn images_outside_the_proxied_registries_are_untouched(image in any_image()) {
        let proxied = ImageRef::parse(&image).is_ok_and(|r| {
            common::EXAMPLE_PROXIES.iter().any(|(upstream, _)| *upstream == r.domain())
        });
        if !proxied || image == "auto" {
            prop_assert!(matches!(rules().decide(&image), Decision::Keep(_)), "{image}");
        }
    }

    #[test]
    fn the_patch_applies_and_touches_only_images_the_annotation_and_the_label(
        containers in prop::collection::vec(any_image(), 1..6),
        init in prop::collection::vec(any_image(), 0..3),
        volume in prop::option::of(image()),
        annotated in any::<bool>(),
    ) {
        let name = |prefix: &str, i: usize| format!("{prefix}{i}");
        let mut pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {
                "containers": containers.iter().enumerate()
                    .map(|(i, image)| json!({"name": name("c", i), "image": image}))
                    .collect::<Vec<_>>(),
                "initContainers": init.iter().enumerate()
                    .map(|(i, image)| json!({"name": name("i", i), "image": image}))
                    .collect::<Vec<_>>(),
            }
        });
        if let Some(reference) = &volume {
            pod["spec"]["volumes"] = json!([{"name": "v", "image": {"reference": reference}}]);
        }
        if annotated {
            pod["metadata"]["annotations"] = json!({"team": "a"});
        }
        let body = serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "prop", "operation": "CREATE",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "userInfo": {}, "object": pod,
            }
        })).unwrap();
        let incoming = parse_review(&body).expect("a valid review");
        let reviewed = review(&incoming, rules(), Harbor::Available, &harbor_pilot_core::patch::all_served);
        let answer: Value = serde_json::from_slice(&encode_review(&reviewed.response)).unwrap();
        // The generated images are not in images.jsonl, so check against the rules
        // directly here; the fixtures test covers the independent oracle.
        let response = &answer["response"];
        prop_assert_eq!(&response["allowed"], &json!(true));
        let mut patched = pod.clone();
        if let Some(patch) = &reviewed.response.patch {
            let patch: json_patch::Patch = serde_json::from_slice(patch).unwrap();
            json_patch::patch(&mut patched, &patch).expect("the patch applies");
        }
        for slot in common::json_slots(&pod) {
            let now = patched.pointer(&slot.pointer()).and_then(Value::as_str).unwrap().to_owned();
            let expected = match rules().decide(&slot.image) {
                Decision::Rewrite(r) => r.image.to_string(),
                Decision::Keep(_) => slot.image.clone(),
            };
            prop_assert_eq!(now, expected);
        }
        for changed in common::json_diff(&pod, &patched) {
            let is_image = changed.ends_with("/image") || changed.ends_with("/image/reference");
            let is_metadata = changed == "/metadata/annotations/harbor-pilot.io~1original-images"
                || changed == "/metadata/labels/harbor-pilot.io~1rewritten";
            prop_assert!(is_image || is_metadata, "changed {}", changed);
        }
        if annotated {
            prop_assert_eq!(&patched["metadata"]["annotations"]["team"], "a");
        }
    }
}

/// Length of the `[:tag][@digest]` part of a generated image.
fn suffix_len(image: &str) -> usize {
    let name_end = image.find('@').unwrap_or(image.len());
    let last_slash = image[..name_end].rfind('/').map_or(0, |i| i + 1);
    match image[last_slash..name_end].find(':') {
        Some(colon) => image.len() - (last_slash + colon),
        None => image.len() - name_end,
    }
}
