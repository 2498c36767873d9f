//! Request bodies shared by the benches: a real pod from the fixtures, widened to any
//! number of containers.

// Test code: a failed setup step should panic with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Value, json};

const BASE: &str = include_str!("../../tests/fixtures/admission/004-argo-cd-statefulset.json");

/// Images cycled through the containers: proxied, not proxied, tag+digest, already
/// rewritten, so every rule path is exercised.
const IMAGES: [&str; 6] = [
    "nginx:1.25-alpine",
    "quay.io/prometheus/node-exporter:v1.8.2",
    "registry.k8s.io/ingress-nginx/controller:v1.11.2@sha256:d5f8217feeac4887cb1ed21f27c2674e58be06bd8f5184cacea2a69abaf78dce",
    "gcr.io/google-samples/microservices-demo/frontend:v0.10.1",
    "ghcr.io/dexidp/dex:v2.45.1",
    "harbor.example.com/docker-hub-proxy/library/redis:7.2",
];

/// An AdmissionReview (pod CREATE) with `containers` containers, each a copy of a real
/// StatefulSet container (env, probes, mounts) with its own name and image.
pub fn review_body(containers: usize) -> Vec<u8> {
    review_body_tagged(containers, None)
}

/// [`review_body`] with `-<tag_suffix>` added to every image's tag: images a server has
/// not seen before (it remembers what it decided per image string), to time an
/// admission that decides its images afresh.
#[allow(dead_code)] // Only load_bodies uses it; the benches include this module too.
pub fn review_body_tagged(containers: usize, tag_suffix: Option<&str>) -> Vec<u8> {
    let mut review: Value = serde_json::from_str(BASE).expect("fixture is JSON");
    let object = &mut review["request"]["object"];
    let template = object["spec"]["containers"][0].clone();
    let list: Vec<Value> = (0..containers)
        .map(|i| {
            let mut c = template.clone();
            c["name"] = json!(format!("container-{i}"));
            let image = IMAGES[i % IMAGES.len()];
            c["image"] = json!(match tag_suffix {
                // Every image above has a tag; the digest, if any, follows it.
                Some(suffix) => match image.split_once('@') {
                    Some((name, digest)) => format!("{name}-{suffix}@{digest}"),
                    None => format!("{image}-{suffix}"),
                },
                None => image.to_owned(),
            });
            c
        })
        .collect();
    object["spec"]["containers"] = Value::Array(list);
    object["spec"]["initContainers"] = json!([]);
    serde_json::to_vec(&review).expect("serialises")
}
