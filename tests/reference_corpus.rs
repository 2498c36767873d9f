//! Every line of `fixtures/image-refs.jsonl` holds an image string and the answer of the Go
//! library the kubelet uses (`distribution/reference` v0.6.0). `ImageRef` must agree on
//! each: validity, domain, path, tag and digest as written, the fully qualified name, and
//! the error message. (`tests/reference_oracle.rs` asks the library itself, live.)

// Test code: a failed setup step should panic with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/refs.rs"]
mod refs;

#[test]
fn agrees_with_the_go_library_on_every_line() {
    let corpus = refs::recorded();
    assert_eq!(corpus.len(), 540, "the fixture lost lines");
    let (failed, shown) = refs::report(&corpus, usize::MAX);
    assert!(
        failed == 0,
        "{failed} of {} references disagree with the Go library:\n{shown}",
        corpus.len(),
    );
}

#[test]
fn corpus_covers_both_valid_and_invalid_references() {
    // Guards the test above against a fixture that silently became one-sided.
    let corpus = refs::recorded();
    let valid = corpus.iter().filter(|c| c.valid).count();
    assert!(valid > 300 && corpus.len() - valid > 150, "valid {valid}");
}
