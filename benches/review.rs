//! A whole admission: request bytes → parse → decide → patch → response bytes, for a
//! 1-container and a 50-container pod. JSON decoding dominates; this is the number to
//! watch.

// A bench with a broken setup should stop loudly.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use harbor_pilot_core::admission::{Harbor, encode_review, parse_review, review};
use harbor_pilot_core::config::Config;

fn full_review(c: &mut Criterion) {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/example.yaml"))
        .expect("example config");
    let rules = Config::from_yaml(&text).expect("valid").rules;
    let mut group = c.benchmark_group("review");
    for containers in [1, 3, 50] {
        let body = support::review_body(containers);
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(
            BenchmarkId::new("containers", containers),
            &body,
            |b, body| {
                b.iter(|| {
                    let incoming = parse_review(black_box(body)).expect("valid review");
                    let reviewed = review(
                        &incoming,
                        &rules,
                        Harbor::Available,
                        &harbor_pilot_core::patch::all_served,
                    );
                    encode_review(&reviewed.response)
                })
            },
        );
    }
    group.finish();
}

/// The stages of the 3- and 50-container reviews apart, next to what the load
/// benchmark's minimal webhook does with the same body (read all of it for the uid,
/// answer `allowed`): where the difference between the two servers comes from.
fn stages(c: &mut Criterion) {
    for containers in [3, 50] {
        stages_of(c, containers);
    }
}

fn stages_of(c: &mut Criterion, containers: usize) {
    #[derive(serde::Deserialize)]
    struct Minimal {
        request: MinimalUid,
    }
    #[derive(serde::Deserialize)]
    struct MinimalUid {
        uid: String,
    }
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/example.yaml"))
        .expect("example config");
    let rules = Config::from_yaml(&text).expect("valid").rules;
    let body = support::review_body(containers);
    let incoming = parse_review(&body).expect("valid review");
    let reviewed = review(
        &incoming,
        &rules,
        Harbor::Available,
        &harbor_pilot_core::patch::all_served,
    );
    let mut group = c.benchmark_group(format!("stages-{containers}"));
    group.bench_function("minimal-webhook", |b| {
        b.iter(|| {
            let review: Minimal = serde_json::from_slice(black_box(&body)).expect("valid");
            serde_json::to_vec(&serde_json::json!({
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "response": {"uid": review.request.uid, "allowed": true},
            }))
        })
    });
    group.bench_function("parse", |b| {
        b.iter(|| parse_review(black_box(&body)).expect("valid review"))
    });
    group.bench_function("decide", |b| {
        b.iter(|| {
            review(
                black_box(&incoming),
                &rules,
                Harbor::Available,
                &harbor_pilot_core::patch::all_served,
            )
        })
    });
    group.bench_function("encode", |b| {
        b.iter(|| encode_review(black_box(&reviewed.response)))
    });
    group.finish();
}

criterion_group!(benches, full_review, stages);
criterion_main!(benches);
