//! What must hold for any input at all, checked by the fuzz targets (`fuzz/`) and by the
//! stable harness (`tests/fuzz_harness.rs`) on generated and mutated inputs.
//!
//! Each check runs the real code on one input and returns the first broken promise.
//! Returning rather than panicking lets a harness print the input with the reason; a
//! panic inside the code under test is caught by the fuzzer itself.

use json_patch::Patch;
use serde_json::Value;

use crate::admission::{self, Harbor};
use crate::config::Config;
use crate::reference::ImageRef;
use crate::rules::{CachedRules, Decision, Keep};

/// A promise an input broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Violation(pub String);

fn fail<T>(message: impl Into<String>) -> Result<T, Violation> {
    Err(Violation(message.into()))
}

/// An image string: parsing never panics; what parses prints back to itself when
/// parsed again; the memoised decision equals a fresh one; a rewritten image keeps its
/// tag and digest and is never rewritten a second time.
pub fn check_reference(input: &str, rules: &CachedRules) -> Result<(), Violation> {
    let parsed = ImageRef::parse(input);
    if let Ok(reference) = &parsed {
        if reference.path().is_empty() {
            return fail(format!("{input:?} parsed with an empty path"));
        }
        let printed = reference.to_string();
        match ImageRef::parse(&printed) {
            Ok(again) if again == *reference => {}
            Ok(again) => {
                return fail(format!(
                    "{input:?} prints as {printed:?}, which parses differently: {again:?} vs {reference:?}"
                ));
            }
            Err(error) => {
                return fail(format!(
                    "{input:?} prints as {printed:?}, which does not parse: {error}"
                ));
            }
        }
    }
    let memo = rules.decide(input);
    let fresh = rules.rule_set().decide(input);
    if memo != fresh {
        return fail(format!(
            "{input:?}: memoised decision {memo:?} differs from a fresh one {fresh:?}"
        ));
    }
    match (&fresh, &parsed) {
        (Decision::Rewrite(rewrite), Ok(reference)) => {
            let target = match ImageRef::parse(&rewrite.image) {
                Ok(target) => target,
                Err(error) => {
                    return fail(format!(
                        "{input:?} was rewritten to {:?}, which does not parse: {error}",
                        rewrite.image
                    ));
                }
            };
            if target.tag() != reference.tag() || target.digest() != reference.digest() {
                return fail(format!(
                    "{input:?} → {:?} lost its tag or digest",
                    rewrite.image
                ));
            }
            if let Decision::Rewrite(twice) = rules.rule_set().decide(&rewrite.image) {
                return fail(format!(
                    "{input:?} → {:?} → {:?}: rewritten twice",
                    rewrite.image, twice.image
                ));
            }
        }
        (Decision::Rewrite(rewrite), Err(error)) => {
            return fail(format!(
                "{input:?} does not parse ({error}) yet was rewritten to {:?}",
                rewrite.image
            ));
        }
        (Decision::Keep(Keep::Unparsable(_)), Ok(_)) => {
            return fail(format!("{input:?} parses, yet was kept as unparsable"));
        }
        _ => {}
    }
    Ok(())
}

/// A configuration file: reading never panics, and a configuration that validates
/// decides images without panicking.
pub fn check_config(input: &str) -> Result<(), Violation> {
    if let Ok(config) = Config::from_yaml(input) {
        for image in [
            "nginx",
            "quay.io/a/b:1",
            "ghcr.io/o/r@sha256:0000000000000000000000000000000000000000000000000000000000000000",
            "registry.k8s.io/pause:3.10",
            "localhost:5000/x",
        ] {
            check_reference(image, &config.rules)?;
        }
    }
    Ok(())
}

/// A request body, through the same three steps the webhook runs: parsing refuses it
/// with a message or accepts it; an accepted one is always allowed, answered under its
/// own uid, as JSON; its patch, if any, applies to the object that was sent and touches
/// only image fields and the annotation; with Harbor unavailable nothing is patched.
pub fn check_review(body: &[u8], rules: &CachedRules) -> Result<(), Violation> {
    if let Some(disagreement) = admission::decode::fast_path_disagreement(body) {
        return fail(disagreement);
    }
    let incoming = match admission::parse_review(body) {
        Ok(incoming) => incoming,
        Err(error) => {
            if error.detail().is_empty() {
                return fail("a refused body got an empty message");
            }
            return Ok(());
        }
    };
    for harbor in [Harbor::Available, Harbor::Unavailable] {
        let reviewed = admission::review(&incoming, rules, harbor, &crate::patch::all_served);
        let response = &reviewed.response;
        if !response.allowed {
            return fail(format!("denied: {:?}", response.result));
        }
        if response.uid != incoming.uid() {
            return fail("answered under another uid");
        }
        let wire = admission::encode_review(response);
        let answer: Value = match serde_json::from_slice(&wire) {
            Ok(answer) => answer,
            Err(error) => return fail(format!("answer is not JSON: {error}")),
        };
        if answer["response"]["allowed"] != Value::Bool(true) {
            return fail(format!("answer on the wire is not allowed: {answer}"));
        }
        let Some(patch) = &response.patch else {
            continue;
        };
        check_patch(body, patch, harbor)?;
    }
    Ok(())
}

/// The patch applies to the object as sent, and what it changes is an image (never
/// while Harbor is unavailable), the `harbor-pilot.io/original-images` annotation or the
/// `harbor-pilot.io/rewritten` label.
fn check_patch(body: &[u8], patch: &[u8], harbor: Harbor) -> Result<(), Violation> {
    let patch: Patch = match serde_json::from_slice(patch) {
        Ok(patch) => patch,
        Err(error) => return fail(format!("patch is not a JSON Patch: {error}")),
    };
    // Fields the webhook skips are skipped unchecked, as Go's decoder in the API server
    // would accept them (it replaces bad UTF-8 with U+FFFD): a body with invalid UTF-8
    // or a lone surrogate escape in, say, `status` is still reviewed. Such a body cannot
    // be read into a `Value` to apply the patch to, so it is repaired the same way first,
    // and one that still does not read (a bad escape) is not checked further.
    let Ok(sent) = serde_json::from_str::<Value>(&String::from_utf8_lossy(body)) else {
        return Ok(());
    };
    let original = sent["request"]["object"].clone();
    let mut object = original.clone();
    if let Err(error) = json_patch::patch(&mut object, &patch) {
        return fail(format!("patch does not apply: {error}"));
    }
    for operation in &patch.0 {
        let path = operation.path().to_string();
        let image = path.ends_with("/image") || path.ends_with("/image/reference");
        if image && harbor == Harbor::Unavailable {
            return fail(format!("{path} patched while Harbor is unavailable"));
        }
        let allowed = image
            || path == "/metadata/annotations"
            || path == "/metadata/labels"
            || (path == "/metadata" && !original["metadata"].is_object())
            || path == "/metadata/annotations/harbor-pilot.io~1original-images"
            || path == "/metadata/labels/harbor-pilot.io~1rewritten";
        if !allowed {
            return fail(format!("patch touches {path}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> CachedRules {
        Config::from_yaml(
            "harbor: harbor.example.com\nproxies:\n  docker.io: docker-hub-proxy\n  ghcr.io: ghcr-proxy\n",
        )
        .map(|c| c.rules)
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn images_hold_their_promises() {
        let rules = rules();
        for image in [
            "nginx",
            "nginx:alpine",
            "library/nginx:1@sha256:0123456789012345678901234567890123456789012345678901234567890123",
            "ghcr.io/o/r",
            "host:5000/app",
            "",
            "UPPER",
            "a//b",
            "[::1]:5000/x",
            "harbor.example.com/docker-hub-proxy/library/nginx",
        ] {
            assert_eq!(check_reference(image, &rules), Ok(()), "{image}");
        }
    }

    #[test]
    fn a_denied_or_unappliable_answer_is_caught() {
        let body = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","kind":{"group":"","version":"v1","kind":"Pod"},"resource":{"group":"","version":"v1","resource":"pods"},"operation":"CREATE","userInfo":{},"object":{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"a","image":"nginx"}]}}}}"#;
        assert_eq!(check_review(body, &rules()), Ok(()));
        // A patch that points at a container that is not there must be reported.
        let wrong = br#"[{"op":"replace","path":"/spec/containers/3/image","value":"x"}]"#;
        assert!(check_patch(body, wrong, Harbor::Available).is_err());
        let elsewhere = br#"[{"op":"replace","path":"/metadata/name","value":"x"}]"#;
        assert!(check_patch(body, elsewhere, Harbor::Available).is_err());
        assert_eq!(check_review(b"{", &rules()), Ok(()));
    }

    #[test]
    fn configs_never_panic() {
        for text in [
            "",
            "harbor: [",
            "harbor: h.example.com\nproxies: {}\n",
            "\u{0}",
        ] {
            assert_eq!(check_config(text), Ok(()));
        }
    }
}
