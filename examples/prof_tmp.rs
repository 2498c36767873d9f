#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
#[path = "../benches/support/mod.rs"]
mod support;
use harbor_pilot::admission::{encode_review, parse_review, review};
use std::time::Instant;
fn t<F: FnMut()>(iters: u32, mut f: F) -> std::time::Duration {
    for _ in 0..iters / 10 {
        f()
    }
    let s = Instant::now();
    for _ in 0..iters {
        f()
    }
    s.elapsed() / iters
}
fn main() {
    let rules = harbor_pilot::config::load(std::path::Path::new("config/example.yaml"))
        .unwrap()
        .rules;
    let metrics = harbor_pilot::metrics::Metrics::new().unwrap();
    for n in [3usize, 50] {
        let body = support::review_body(n);
        let iters = 100000 / n as u32;
        let p = t(iters, || {
            std::hint::black_box(parse_review(&body).unwrap());
        });
        let inc = parse_review(&body).unwrap();
        let r = t(iters, || {
            std::hint::black_box(review(&inc, &rules));
        });
        let rv = review(&inc, &rules);
        let e = t(iters, || {
            std::hint::black_box(encode_review(&rv.response));
        });
        let m = t(iters, || {
            metrics.observe_review(
                "CREATE",
                rv.outcome,
                std::time::Duration::from_micros(5),
                &rv.changes,
            );
        });
        #[derive(serde::Deserialize)]
        struct R {
            request: U,
        }
        #[derive(serde::Deserialize)]
        struct U {
            uid: String,
        }
        let u = t(iters, || {
            let x: R = serde_json::from_slice(&body).unwrap();
            std::hint::black_box(x.request.uid);
        });
        let v = t(iters, || {
            let x: serde_json::Value = serde_json::from_slice(&body).unwrap();
            std::hint::black_box(x);
        });
        println!(
            "{n} ctr {}B: parse {p:?} review {r:?} encode {e:?} metrics {m:?} | uid-only {u:?} Value {v:?}",
            body.len()
        );
    }
}
