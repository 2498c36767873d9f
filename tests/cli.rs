//! The `harbor-pilot` binary, run as a user runs it.

// Test code: a failed setup step should panic with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write as _;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn harbor_pilot(args: &[&str]) -> Output {
    run(args, None, &[])
}

fn run(args: &[&str], stdin: Option<&[u8]>, env: &[(&str, &str)]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_harbor-pilot"))
        .args(args)
        .env_remove("HARBOR_PILOT_CONFIG")
        .envs(env.iter().copied())
        .current_dir(common::project_root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run harbor-pilot");
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input).unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

const CONFIG: &str = "config/example.yaml";

#[test]
fn rewrite_prints_one_line_per_image() {
    let output = harbor_pilot(&[
        "rewrite",
        "--config",
        CONFIG,
        "nginx:alpine",
        "host:5000/app",
        "Nginx",
        "ghcr.io/dexidp/dex:v2.45.1",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        "harbor.example.com/docker-hub-proxy/library/nginx:alpine\n\
         host:5000/app\n\
         Nginx\n\
         harbor.example.com/ghcr-proxy/dexidp/dex:v2.45.1\n"
    );
}

#[test]
fn rewrite_explain_adds_the_reason() {
    let output = harbor_pilot(&[
        "rewrite",
        "--config",
        CONFIG,
        "--explain",
        "host:5000/app",
        "auto",
    ]);
    assert_eq!(
        stdout(&output),
        "host:5000/app\tregistry host:5000 has no proxy project\n\
         auto\tlisted in placeholders: another webhook replaces it\n"
    );
}

#[test]
fn config_comes_from_the_environment_too() {
    let output = run(
        &["rewrite", "nginx"],
        None,
        &[("HARBOR_PILOT_CONFIG", CONFIG)],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        "harbor.example.com/docker-hub-proxy/library/nginx\n"
    );
}

#[test]
fn review_answers_a_file_like_the_webhook() {
    let file = "tests/fixtures/admission/048-microservices-demo-deployment.json";
    let output = harbor_pilot(&["review", "--config", CONFIG, file]);
    assert!(output.status.success(), "{}", stderr(&output));
    let answer: Value = serde_json::from_str(&stdout(&output)).unwrap();
    let body = std::fs::read(common::project_root().join(file)).unwrap();
    let verified = common::verify_answer(file, &body, &answer).unwrap();
    assert_eq!(
        verified.new_images.values().collect::<Vec<_>>(),
        ["harbor.example.com/docker-hub-proxy/library/redis:alpine"]
    );
}

#[test]
fn review_reads_standard_input_and_explains_on_stderr() {
    let body = std::fs::read(
        common::project_root()
            .join("tests/fixtures/admission/205-k8s-examples-pod-update-setimage.json"),
    )
    .unwrap();
    let output = run(
        &["review", "--config", CONFIG, "--explain", "-"],
        Some(&body),
        &[],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let answer: Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(answer["response"]["patchType"], "JSONPatch");
    let explained = stderr(&output);
    assert!(explained.starts_with("outcome: rewritten\n"), "{explained}");
    assert!(
        explained
            .contains("sentinel\tregistry.k8s.io/redis:v1\t(unchanged)\tunchanged by this update"),
        "{explained}"
    );
}

#[test]
fn review_shows_the_fail_open_answer_when_asked() {
    let file = "tests/fixtures/admission/048-microservices-demo-deployment.json";
    let output = harbor_pilot(&["review", "--config", CONFIG, "--harbor-unavailable", file]);
    assert!(output.status.success(), "{}", stderr(&output));
    let answer: Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(answer["response"]["allowed"], true);
    assert!(answer["response"].get("patch").is_none());
    assert_eq!(
        answer["response"]["warnings"][0],
        "harbor-pilot: Harbor is unavailable; 1 image left on its upstream registry (fail open)"
    );
}

#[test]
fn review_of_a_malformed_body_fails_with_a_message() {
    let output = run(
        &["review", "--config", CONFIG],
        Some(b"{\"apiVersion\": 1}"),
        &[],
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(stdout(&output).is_empty());
    let message = stderr(&output);
    assert!(
        message.starts_with("error: -: body is not an AdmissionReview: invalid type: integer `1`"),
        "{message}"
    );
}

#[test]
fn scan_previews_a_helm_style_manifest() {
    // --wide: whole images (the default table cuts long ones to fit a terminal).
    let output = harbor_pilot(&[
        "scan",
        "--config",
        CONFIG,
        "--wide",
        "tests/fixtures/manifests/shop.yaml",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let table = stdout(&output);
    let expected_rows = [
        (
            "StatefulSet/db",
            "postgres",
            "harbor.example.com/docker-hub-proxy/library/postgres:16@sha256:",
        ),
        (
            "Deployment/frontend",
            "init/wait-for-db",
            "harbor.example.com/docker-hub-proxy/library/busybox:1.36",
        ),
        (
            "Deployment/frontend",
            "exporter",
            "harbor.example.com/quay-proxy/prometheus/nginx-exporter:v1.1.0",
        ),
        ("Job/migrate", "migrate", "(unchanged)"),
        ("CronJob/report", "report", "(unchanged)"),
        (
            "DaemonSet/node-agent",
            "agent",
            "harbor.example.com/registry-k8s-proxy/pause:3.10",
        ),
    ];
    for (workload, container, becomes) in expected_rows {
        assert!(
            table
                .lines()
                .any(|l| l.contains(workload) && l.contains(container) && l.contains(becomes)),
            "no row {workload} {container} {becomes} in\n{table}"
        );
    }
    assert!(
        table.ends_with("7 images in 5 workloads: 5 rewritten, 2 unchanged\n"),
        "{table}"
    );
}

#[test]
fn scan_reads_stdin_and_prints_json() {
    let manifest =
        b"kind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, image: nginx}]}\n";
    let output = run(
        &["scan", "--config", CONFIG, "--output", "json", "-"],
        Some(manifest),
        &[],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let rows: Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(rows[0]["workload"], "Pod/p");
    assert_eq!(
        rows[0]["rewritten"],
        "harbor.example.com/docker-hub-proxy/library/nginx"
    );
}

#[test]
fn scan_names_the_file_and_document_that_is_broken() {
    let output = run(
        &["scan", "--config", CONFIG, "-"],
        Some(b"kind: Pod\n---\nkind: [\n"),
        &[],
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).starts_with("error: -: document 2: not valid YAML"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn check_config_accepts_the_example() {
    let output = harbor_pilot(&["check-config", "--config", CONFIG]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("docker.io -> harbor.example.com/docker-hub-proxy"));
}

#[test]
fn check_config_names_the_file_field_and_value() {
    let dir = std::env::temp_dir().join(format!("harbor-pilot-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "harbor: harbor.example.com\nproxies:\n  docker.io: Docker_Hub\n",
    )
    .unwrap();
    let output = harbor_pilot(&["check-config", "--config", bad.to_str().unwrap()]);
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(message.contains("bad.yaml"), "{message}");
    assert!(
        message.contains(
            "proxies[\"docker.io\"]: \"Docker_Hub\" is not a project name Harbor accepts"
        ),
        "{message}"
    );
}

#[test]
fn a_missing_config_file_is_named() {
    let output = harbor_pilot(&["rewrite", "--config", "no/such.yaml", "nginx"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).starts_with("error: cannot read config file no/such.yaml: "),
        "{}",
        stderr(&output)
    );
}

/// The caBundle in `webhook-ca-bundle.yaml`, decoded.
fn ca_bundle(dir: &std::path::Path) -> String {
    use base64::Engine as _;
    let text = std::fs::read_to_string(dir.join("webhook-ca-bundle.yaml")).unwrap();
    let patch: Value = yaml_serde::from_str(&text).unwrap();
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(patch[0]["value"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap()
}

#[test]
fn certs_renews_with_the_same_ca_and_rotates_the_ca_with_an_overlap() {
    // The API server checks the serving certificate against caBundle on every new
    // connection: a caBundle that changes before the Secret reaches the pods would make
    // it fail open until then. Renewal keeps the CA; a CA rotation bundles both.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("generated");
    let certs = |extra: &[&str]| {
        let mut args = vec!["certs", "--out", out.to_str().unwrap()];
        args.extend_from_slice(extra);
        let output = harbor_pilot(&args);
        assert!(output.status.success(), "{}", stderr(&output));
        stdout(&output)
    };
    let first = certs(&[]);
    assert!(first.contains("made a new CA"), "{first}");
    let ca = std::fs::read_to_string(out.join("ca.crt")).unwrap();
    let leaf = std::fs::read_to_string(out.join("tls.crt")).unwrap();
    assert_eq!(ca_bundle(&out), ca);
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(out.join("ca.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    let renewed = certs(&[]);
    assert!(renewed.contains("reused the CA"), "{renewed}");
    assert_eq!(std::fs::read_to_string(out.join("ca.crt")).unwrap(), ca);
    assert_eq!(ca_bundle(&out), ca);
    assert_ne!(std::fs::read_to_string(out.join("tls.crt")).unwrap(), leaf);

    let rotated = certs(&["--new-ca"]);
    assert!(rotated.contains("trusts the previous CA too"), "{rotated}");
    let new_ca = std::fs::read_to_string(out.join("ca.crt")).unwrap();
    assert_ne!(new_ca, ca);
    assert_eq!(ca_bundle(&out), format!("{new_ca}{ca}"));

    let settled = certs(&[]);
    assert!(settled.contains("reused the CA"), "{settled}");
    assert_eq!(ca_bundle(&out), new_ca);
}

#[test]
fn scan_into_a_closed_pipe_ends_quietly() {
    use std::io::Read as _;
    // `scan … | head -1`: enough output that the pipe closes while it is written.
    let manifest =
        "---\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, image: nginx}]}\n"
            .repeat(20_000);
    let mut child = Command::new(env!("CARGO_BIN_EXE_harbor-pilot"))
        .args(["scan", "--config", CONFIG, "-"])
        .current_dir(common::project_root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(manifest.as_bytes()));
    let mut first = [0u8; 64];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    // stdout is dropped here: the reader went away.
    writer.join().unwrap().unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(stderr(&output), "");
    assert!(output.status.success(), "{:?}", output.status);
}

#[test]
fn rewrite_never_prints_credentials() {
    let output = harbor_pilot(&[
        "rewrite",
        "--config",
        CONFIG,
        "--explain",
        "user:hunter2@registry.example.com/app:1",
    ]);
    let printed = format!("{}{}", stdout(&output), stderr(&output));
    assert!(!printed.contains("hunter2"), "{printed}");
    assert!(
        printed.contains("***@registry.example.com/app:1"),
        "{printed}"
    );
}

#[test]
fn review_explain_prints_the_patch_decoded() {
    let output = harbor_pilot(&[
        "review",
        "--config",
        CONFIG,
        "--explain",
        "tests/fixtures/admission/048-microservices-demo-deployment.json",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let explained = stderr(&output);
    let patch = explained
        .split_once("patch:\n")
        .unwrap_or_else(|| panic!("no patch in {explained}"))
        .1;
    let patch: Value = serde_json::from_str(patch).unwrap();
    assert_eq!(patch[0]["op"], "replace");
    assert!(
        patch[0]["value"]
            .as_str()
            .unwrap()
            .starts_with("harbor.example.com/")
    );
}
