//! The Go library's answer about one image string (a line of `fixtures/image-refs.jsonl`,
//! or of the live oracle's output), and every way `ImageRef` disagrees with it.

use harbor_pilot_core::reference::ImageRef;
use serde::Deserialize;

/// What `github.com/distribution/reference` says about `input`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct GoAnswer {
    pub input: String,
    pub valid: bool,
    pub error: Option<String>,
    pub named: Option<String>,
    pub domain: Option<String>,
    pub path: Option<String>,
    pub tag: Option<String>,
    pub digest: Option<String>,
    pub normalized: Option<String>,
    pub familiar_named: Option<String>,
}

/// The recorded answers in `fixtures/image-refs.jsonl`.
pub fn recorded() -> Vec<GoAnswer> {
    let text = include_str!("../fixtures/image-refs.jsonl");
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

/// Describes every way `ImageRef` disagrees with the Go library on `case`: validity,
/// domain, path, tag and digest as written, the fully qualified name, the error text.
pub fn disagreements(case: &GoAnswer) -> Vec<String> {
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

/// `"input": disagreement; …` for every case that disagrees, at most `limit` of them.
pub fn report(cases: &[GoAnswer], limit: usize) -> (usize, String) {
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|case| {
            let d = disagreements(case);
            (!d.is_empty()).then(|| format!("{:?}: {}", case.input, d.join("; ")))
        })
        .collect();
    let shown = failures
        .iter()
        .take(limit)
        .cloned()
        .collect::<Vec<_>>()
        .join("\n");
    (failures.len(), shown)
}
