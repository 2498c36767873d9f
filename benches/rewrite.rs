//! Parse + decide for one image: the per-image cost inside every admission.

// A bench with a broken setup should stop loudly.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use harbor_pilot_core::config::Config;
use harbor_pilot_core::reference::ImageRef;
use harbor_pilot_core::rules::CachedRules;

const DIGEST: &str = "sha256:d5f8217feeac4887cb1ed21f27c2674e58be06bd8f5184cacea2a69abaf78dce";

fn cases() -> Vec<(&'static str, String)> {
    vec![
        ("short_name", "nginx:alpine".to_owned()),
        (
            "fully_qualified",
            "quay.io/prometheus/node-exporter:v1.8.2".to_owned(),
        ),
        ("digest", format!("ghcr.io/dexidp/dex@{DIGEST}")),
        (
            "tag_and_digest",
            format!("registry.k8s.io/ingress-nginx/controller:v1.11.2@{DIGEST}"),
        ),
        (
            "not_proxied",
            "gcr.io/google-samples/microservices-demo/frontend:v0.10.1".to_owned(),
        ),
        ("unparsable", "Nginx:latest".to_owned()),
    ]
}

/// A rule set with `n` upstreams (the example's four first, then made-up ones).
fn rules_with(n: usize) -> CachedRules {
    let mut yaml = String::from(
        "harbor: harbor.example.com\nproxies:\n  docker.io: docker-hub-proxy\n  ghcr.io: ghcr-proxy\n  quay.io: quay-proxy\n  registry.k8s.io: registry-k8s-proxy\n",
    );
    for i in 4..n {
        yaml.push_str(&format!("  registry{i}.example.net: proxy-{i}\n"));
    }
    Config::from_yaml(&yaml).expect("valid").rules
}

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse");
    for (name, image) in cases() {
        group.bench_function(name, |b| b.iter(|| ImageRef::parse(black_box(&image))));
    }
    group.finish();
}

/// Without the memo: the cost of the first pod that carries an image.
fn decide_afresh(c: &mut Criterion) {
    let mut group = c.benchmark_group("decide_afresh");
    for rule_count in [4, 10, 100] {
        let rules = rules_with(rule_count);
        for (name, image) in cases() {
            group.bench_with_input(BenchmarkId::new(name, rule_count), &image, |b, image| {
                b.iter(|| rules.rule_set().decide(black_box(image)))
            });
        }
    }
    group.finish();
}

/// With the memo warm: every later pod with the same image.
fn decide_remembered(c: &mut Criterion) {
    let mut group = c.benchmark_group("decide_remembered");
    let rules = rules_with(10);
    for (name, image) in cases() {
        rules.decide(&image);
        group.bench_with_input(name, &image, |b, image| {
            b.iter(|| rules.decide(black_box(image)))
        });
    }
    group.finish();
}

criterion_group!(benches, parse, decide_afresh, decide_remembered);
criterion_main!(benches);
