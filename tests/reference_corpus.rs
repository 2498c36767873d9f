//! Every line of `fixtures/image-refs.jsonl` holds an image string and the answer of the Go
//! library the kubelet uses (`distribution/reference` v0.6.0). `ImageRef` must agree on
//! each: validity, domain, path, tag and digest as written, the fully qualified name, and
//! the error message.

// Test code: a failed setup step should panic with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use harbor_pilot::reference::ImageRef;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Expected {
    input: String,
    valid: bool,
    error: Option<String>,
    named: Option<String>,
    domain: Option<String>,
    path: Option<String>,
    tag: Option<String>,
    digest: Option<String>,
}

fn corpus() -> Vec<Expected> {
    let text = include_str!("fixtures/image-refs.jsonl");
    text.lines()
        .enumerate()
        .map(|(n, line)| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("image-refs.jsonl line {}: {e}", n + 1))
        })
        .collect()
}

fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.is_empty())
}

/// Describes every way `ImageRef` disagrees with the Go library on `case`.
fn disagreements(case: &Expected) -> Vec<String> {
    let mut out = Vec::new();
    match (ImageRef::parse(&case.input), case.valid) {
        (Ok(r), true) => {
            let checks = [
                ("domain", Some(r.domain()), case.domain.as_deref()),
                ("path", Some(r.path()), case.path.as_deref()),
                ("tag", r.tag(), non_empty(&case.tag)),
                ("digest", r.digest(), non_empty(&case.digest)),
            ];
            for (field, ours, theirs) in checks {
                if ours != theirs {
                    out.push(format!("{field}: ours {ours:?}, Go {theirs:?}"));
                }
            }
            let named = r.to_string();
            if Some(named.as_str()) != case.named.as_deref() {
                out.push(format!("named: ours {named:?}, Go {:?}", case.named));
            }
        }
        (Err(e), false) => {
            let ours = e.to_string();
            if Some(ours.as_str()) != case.error.as_deref() {
                out.push(format!("error: ours {ours:?}, Go {:?}", case.error));
            }
        }
        (Ok(r), false) => out.push(format!("ours valid ({r}), Go invalid: {:?}", case.error)),
        (Err(e), true) => out.push(format!("ours invalid ({e}), Go valid: {:?}", case.named)),
    }
    out
}

#[test]
fn agrees_with_the_go_library_on_every_line() {
    let corpus = corpus();
    assert_eq!(corpus.len(), 540, "the fixture lost lines");
    let failures: Vec<String> = corpus
        .iter()
        .filter_map(|case| {
            let d = disagreements(case);
            (!d.is_empty()).then(|| format!("{:?}: {}", case.input, d.join("; ")))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} references disagree with the Go library:\n{}",
        failures.len(),
        corpus.len(),
        failures.join("\n")
    );
}

#[test]
fn corpus_covers_both_valid_and_invalid_references() {
    // Guards the test above against a fixture that silently became one-sided.
    let corpus = corpus();
    let valid = corpus.iter().filter(|c| c.valid).count();
    assert!(valid > 300 && corpus.len() - valid > 150, "valid {valid}");
}
