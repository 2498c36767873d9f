//! `PodImages` reads a handful of Pod fields instead of the whole k8s-openapi `Pod`
//! (see `src/pod.rs` for why). This decodes every fixture's pods both ways and checks the
//! projection reads exactly what k8s-openapi reads, so a misspelt field cannot hide.

// Test code: a failed setup step should panic with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use harbor_pilot_core::pod::{ContainerImage, OWN_KEY_PREFIX, PodImages};
use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;

fn containers_of(
    list: Option<&Vec<k8s_openapi::api::core::v1::Container>>,
) -> Vec<ContainerImage<'static>> {
    list.into_iter()
        .flatten()
        .map(|c| ContainerImage {
            name: c.name.clone().into(),
            image: c.image.clone().map(Into::into),
        })
        .collect()
}

#[test]
fn reads_the_same_fields_as_k8s_openapi_on_every_fixture_pod() {
    let mut compared = 0;
    for (file, body) in common::admission_fixtures() {
        let Ok(review) = serde_json::from_slice::<Value>(&body) else {
            continue;
        };
        for key in ["object", "oldObject"] {
            let object = &review["request"][key];
            // Only objects k8s-openapi reads as a Pod are comparable.
            let Ok(pod) = serde_json::from_value::<Pod>(object.clone()) else {
                continue;
            };
            if object.is_null() {
                continue;
            }
            let images: PodImages<'static> = serde_json::from_value(object.clone())
                .unwrap_or_else(|e| panic!("{file} {key}: PodImages cannot read a valid Pod: {e}"));
            let spec = pod.spec.clone().unwrap_or_default();
            assert_eq!(images.metadata.name, pod.metadata.name, "{file} {key}");
            assert_eq!(
                images.metadata.generate_name, pod.metadata.generate_name,
                "{file} {key}"
            );
            assert_eq!(
                images.metadata.namespace, pod.metadata.namespace,
                "{file} {key}"
            );
            // Of labels and annotations only harbor-pilot's own are kept; the maps are
            // there exactly when the pod has them.
            let own = |map: &Option<std::collections::BTreeMap<String, String>>| {
                map.as_ref().map(|m| {
                    m.iter()
                        .filter(|(k, _)| k.starts_with(OWN_KEY_PREFIX))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect::<std::collections::BTreeMap<_, _>>()
                })
            };
            assert_eq!(
                images.metadata.labels,
                own(&pod.metadata.labels),
                "{file} {key}"
            );
            assert_eq!(
                images.metadata.annotations,
                own(&pod.metadata.annotations),
                "{file} {key}"
            );
            assert_eq!(
                images.spec.containers.clone().unwrap_or_default(),
                containers_of(Some(&spec.containers)),
                "{file} {key}"
            );
            assert_eq!(
                images.spec.init_containers.clone().unwrap_or_default(),
                containers_of(spec.init_containers.as_ref()),
                "{file} {key}"
            );
            let ephemeral: Vec<ContainerImage<'static>> = spec
                .ephemeral_containers
                .iter()
                .flatten()
                .map(|c| ContainerImage {
                    name: c.name.clone().into(),
                    image: c.image.clone().map(Into::into),
                })
                .collect();
            assert_eq!(
                images.spec.ephemeral_containers.clone().unwrap_or_default(),
                ephemeral,
                "{file} {key}"
            );
            let volumes: Vec<_> = spec
                .volumes
                .iter()
                .flatten()
                .map(|v| (v.name.clone(), v.image.clone()))
                .collect();
            let projected: Vec<_> = images
                .spec
                .volumes
                .iter()
                .flatten()
                .map(|v| (v.name.clone(), v.image.clone()))
                .collect();
            assert_eq!(projected, volumes, "{file} {key}");
            compared += 1;
        }
    }
    assert!(compared > 220, "only {compared} pods compared");
}
