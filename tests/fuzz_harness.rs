//! The fuzz targets' invariants (`harbor_pilot_core::invariants`) on stable Rust, in every
//! test run: every input the fuzzers ever crashed on (tests/fixtures/fuzz-regressions),
//! then generated inputs — image strings, configuration files, and admission bodies
//! mutated both as bytes and as JSON trees (any field replaced by a value of another
//! type, removed, duplicated, nested deeply) starting from the real fixtures.
//!
//! `FUZZ_CASES` sets the number of generated cases per test (default 1500; the long
//! form in the README runs 200000). libFuzzer (`scripts/fuzz`) explores bytes with
//! coverage feedback; this harness adds structure: a libFuzzer mutation rarely keeps
//! JSON valid while changing a field's type.

// Test code: a failed setup step should panic with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use harbor_pilot_core::invariants::{check_config, check_reference, check_review};
use harbor_pilot_core::rules::CachedRules;
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use serde_json::{Value, json};

fn rules() -> &'static CachedRules {
    static RULES: std::sync::OnceLock<CachedRules> = std::sync::OnceLock::new();
    RULES.get_or_init(common::example_rules)
}

fn cases() -> u32 {
    std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1500)
}

fn runner() -> TestRunner {
    TestRunner::new(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    })
}

fn regressions(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = common::project_root()
        .join("tests/fixtures/fuzz-regressions")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect()
}

#[test]
fn every_input_the_fuzzers_crashed_on_is_now_handled() {
    let mut replayed = 0;
    for (name, body) in regressions("review") {
        check_review(&body, rules()).unwrap_or_else(|v| panic!("review/{name}: {v}"));
        replayed += 1;
    }
    for target in ["reference", "config"] {
        let dir = Path::new("tests/fixtures/fuzz-regressions").join(target);
        if !common::project_root().join(&dir).exists() {
            continue;
        }
        for (name, input) in regressions(target) {
            let text = String::from_utf8_lossy(&input);
            let result = if target == "reference" {
                check_reference(&text, rules())
            } else {
                check_config(&text)
            };
            result.unwrap_or_else(|v| panic!("{target}/{name}: {v}"));
            replayed += 1;
        }
    }
    assert!(replayed >= 3, "only {replayed} regression inputs found");
}

/// The fixture that must produce a patch: the found bug needed one to be visible.
#[test]
fn a_pod_without_metadata_is_patched_with_an_applicable_patch() {
    let body = std::fs::read(
        common::project_root()
            .join("tests/fixtures/fuzz-regressions/review/pod-without-metadata.json"),
    )
    .unwrap();
    let incoming = harbor_pilot_core::admission::parse_review(&body).unwrap();
    let reviewed = harbor_pilot_core::admission::review(
        &incoming,
        rules(),
        harbor_pilot_core::admission::Harbor::Available,
        &harbor_pilot_core::patch::all_served,
    );
    assert!(reviewed.response.patch.is_some(), "expected a rewrite");
    check_review(&body, rules()).unwrap();
}

fn image_text() -> impl Strategy<Value = String> {
    let corpus: Vec<String> =
        std::fs::read_to_string(common::project_root().join("tests/fixtures/image-refs.jsonl"))
            .unwrap()
            .lines()
            .map(|line| {
                serde_json::from_str::<Value>(line).unwrap()["input"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
    prop_oneof![
        // Any text, weighted towards the characters references are made of.
        "[a-zA-Z0-9:/@._\\-\\[\\]]{0,80}",
        any::<String>(),
        // A corpus entry with a splice of reference punctuation.
        (
            prop::sample::select(corpus),
            any::<prop::sample::Index>(),
            "[:/@._\\-A-Z]{0,4}"
        )
            .prop_map(|(base, at, insert)| {
                let mut cut = at.index(base.len() + 1);
                while !base.is_char_boundary(cut) {
                    cut -= 1;
                }
                format!("{}{insert}{}", &base[..cut], &base[cut..])
            }),
    ]
}

#[test]
fn image_strings_keep_their_promises() {
    runner()
        .run(&image_text(), |image| {
            check_reference(&image, rules()).map_err(|v| TestCaseError::fail(v.0))
        })
        .unwrap();
}

#[test]
fn configuration_files_keep_their_promises() {
    let example = std::fs::read_to_string(common::example_config_path()).unwrap();
    let lines: Vec<String> = example.lines().map(str::to_owned).collect();
    let strategy = (
        prop::collection::vec(any::<prop::sample::Index>(), 0..4),
        prop::collection::vec(
            prop_oneof![
                Just("  docker.io: x\n".to_owned()),
                Just("health:\n  url: https://h/v2/\n".to_owned()),
                Just("exclude: ['**']\n".to_owned()),
                Just("placeholders: []\n".to_owned()),
                "[ -~]{0,30}\n",
                any::<String>(),
            ],
            0..3,
        ),
    )
        .prop_map(move |(drops, inserts)| {
            let mut lines = lines.clone();
            for drop in drops {
                if !lines.is_empty() {
                    lines.remove(drop.index(lines.len()));
                }
            }
            let mut text = lines.join("\n");
            for insert in inserts {
                let mut at = text.len() / 2;
                while !text.is_char_boundary(at) {
                    at -= 1;
                }
                text.insert_str(at, &insert);
            }
            text
        });
    runner()
        .run(&strategy, |text| {
            check_config(&text).map_err(|v| TestCaseError::fail(v.0))
        })
        .unwrap();
}

/// One JSON value of some type, small.
fn any_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "[ -~]{0,20}".prop_map(Value::String),
        Just(json!("nginx:alpine")),
        Just(json!("A".repeat(70_000))),
        Just(json!([])),
        Just(json!({})),
        Just(json!([{"name": "x", "image": 5}])),
        Just(json!({"image": {"reference": []}})),
    ]
}

/// Every path (as pointer tokens) to a node of `value`.
fn paths(value: &Value, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    out.push(prefix.clone());
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                prefix.push(key.clone());
                paths(child, prefix, out);
                prefix.pop();
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                prefix.push(i.to_string());
                paths(child, prefix, out);
                prefix.pop();
            }
        }
        _ => {}
    }
}

fn node_mut<'v>(value: &'v mut Value, path: &[String]) -> Option<&'v mut Value> {
    path.iter().try_fold(value, |node, token| match node {
        Value::Object(map) => map.get_mut(token),
        Value::Array(items) => items.get_mut(token.parse::<usize>().ok()?),
        _ => None,
    })
}

#[derive(Debug, Clone)]
enum TreeEdit {
    Replace(Value),
    Remove,
    Nest(usize),
}

/// The fields the webhook reads, which the tree mutations aim at half of the time.
const READ_FIELDS: &[&str] = &[
    "",
    "/apiVersion",
    "/kind",
    "/request",
    "/request/uid",
    "/request/kind",
    "/request/resource",
    "/request/resource/resource",
    "/request/subResource",
    "/request/operation",
    "/request/namespace",
    "/request/name",
    "/request/dryRun",
    "/request/userInfo",
    "/request/object",
    "/request/object/apiVersion",
    "/request/object/kind",
    "/request/object/metadata",
    "/request/object/metadata/name",
    "/request/object/metadata/labels",
    "/request/object/metadata/annotations",
    "/request/object/spec",
    "/request/object/spec/containers",
    "/request/object/spec/containers/0",
    "/request/object/spec/containers/0/name",
    "/request/object/spec/containers/0/image",
    "/request/object/spec/initContainers",
    "/request/object/spec/ephemeralContainers",
    "/request/object/spec/volumes",
    "/request/oldObject",
    "/request/oldObject/spec/containers/0/image",
];

#[test]
fn admission_bodies_mutated_as_json_trees_keep_their_promises() {
    let fixtures: Vec<Value> = common::admission_fixtures()
        .into_iter()
        .filter_map(|(_, body)| serde_json::from_slice(&body).ok())
        .collect();
    let edit = prop_oneof![
        6 => any_value().prop_map(TreeEdit::Replace),
        2 => Just(TreeEdit::Remove),
        1 => (1usize..300).prop_map(TreeEdit::Nest),
    ];
    let strategy = (
        prop::sample::select(fixtures),
        prop::collection::vec((any::<bool>(), any::<prop::sample::Index>(), edit), 1..4),
    );
    let edited = std::sync::atomic::AtomicU32::new(0);
    runner()
        .run(&strategy, |(mut review, edits)| {
            for (aim_at_read, at, edit) in edits {
                let target: Vec<String> = if aim_at_read {
                    let pointer = READ_FIELDS[at.index(READ_FIELDS.len())];
                    pointer.split('/').skip(1).map(str::to_owned).collect()
                } else {
                    let mut all = Vec::new();
                    paths(&review, &mut Vec::new(), &mut all);
                    all.swap_remove(at.index(all.len()))
                };
                let Some((last, parent)) = target.split_last() else {
                    if let TreeEdit::Replace(value) = edit {
                        review = value;
                    }
                    continue;
                };
                let Some(Value::Object(map)) = node_mut(&mut review, parent) else {
                    if let (Some(node), TreeEdit::Replace(value)) =
                        (node_mut(&mut review, &target), edit)
                    {
                        *node = value;
                    }
                    continue;
                };
                match edit {
                    TreeEdit::Replace(value) => {
                        map.insert(last.clone(), value);
                    }
                    TreeEdit::Remove => {
                        map.remove(last);
                    }
                    TreeEdit::Nest(depth) => {
                        let mut value = map.remove(last).unwrap_or(Value::Null);
                        for _ in 0..depth {
                            value = json!([value]);
                        }
                        map.insert(last.clone(), value);
                    }
                }
                edited.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            let body = serde_json::to_vec(&review).unwrap();
            check_review(&body, rules()).map_err(|v| TestCaseError::fail(v.0))
        })
        .unwrap();
    assert!(edited.into_inner() > 0);
}

#[test]
fn admission_bodies_mutated_as_bytes_keep_their_promises() {
    let fixtures: Vec<Vec<u8>> = common::admission_fixtures()
        .into_iter()
        .map(|(_, body)| body)
        .filter(|body| body.len() < 64 * 1024)
        .collect();
    let edit = prop_oneof![
        // Truncate.
        any::<prop::sample::Index>().prop_map(|at| (at, 0usize, Vec::new())),
        // Overwrite a few bytes with anything, including invalid UTF-8.
        (
            any::<prop::sample::Index>(),
            prop::collection::vec(any::<u8>(), 1..8)
        )
            .prop_map(|(at, bytes)| (at, bytes.len(), bytes)),
        // Insert JSON punctuation or a duplicate key.
        (
            any::<prop::sample::Index>(),
            prop::sample::select(vec![
                b"\"image\":\"a\",".to_vec(),
                b"\"uid\":\"dup\",".to_vec(),
                b"\"metadata\":null,".to_vec(),
                b"[[[[[[[[".to_vec(),
                b"}".to_vec(),
                b"\\ud800".to_vec(),
                b"\x00".to_vec(),
                b"\xff\xfe".to_vec(),
            ])
        )
            .prop_map(|(at, bytes)| (at, 0usize, bytes)),
    ];
    let strategy = (
        prop::sample::select(fixtures),
        prop::collection::vec(edit, 1..4),
    );
    runner()
        .run(&strategy, |(mut body, edits)| {
            for (at, replace, bytes) in edits {
                let at = at.index(body.len() + 1);
                if replace == 0 && bytes.is_empty() {
                    body.truncate(at);
                } else {
                    let end = (at + replace).min(body.len());
                    body.splice(at..end, bytes);
                }
            }
            check_review(&body, rules()).map_err(|v| TestCaseError::fail(v.0))
        })
        .unwrap();
}
