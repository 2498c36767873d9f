//! The security pass, against the real server: TLS versions and cipher suites as
//! OpenSSL's `s_client` sees them, client-certificate verification
//! (`--client-ca-file`), and no secret from a request in any log line (at `trace`, every
//! crate) or answer.

// Test code: a failed setup step should panic with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};

use common::certs::TestCa;
use common::client::{Client, Proto, roots};
use common::process::Serve;
use common::server;
use serde_json::{Value, json};

/// One `openssl s_client` handshake: (succeeded, what it printed).
fn s_client(addr: SocketAddr, ca: &Path, args: &[&str]) -> (bool, String) {
    let openssl = common::tools::require("openssl", "Debian package openssl");
    let output = Command::new(openssl)
        .args(["s_client", "-brief", "-connect"])
        .arg(addr.to_string())
        .args([
            "-servername",
            "localhost",
            "-verify_return_error",
            "-CAfile",
        ])
        .arg(ca)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_1_0_and_1_1_are_refused_1_2_and_1_3_accepted() {
    let server = server::start(|_| {}).await;
    let addr = server.webhook_addr;
    let ca = server.dir.path().join("ca.pem");
    std::fs::write(&ca, &server.ca.pem).unwrap();
    let results = blocking(move || {
        // SECLEVEL=0 lets this OpenSSL offer TLS 1.0/1.1 at all, so a refusal is the
        // server's.
        ["-tls1", "-tls1_1", "-tls1_2", "-tls1_3"].map(|version| {
            (
                version,
                s_client(addr, &ca, &[version, "-cipher", "DEFAULT@SECLEVEL=0"]),
            )
        })
    })
    .await;
    for (version, (ok, text)) in &results {
        match *version {
            "-tls1" | "-tls1_1" => {
                assert!(!ok, "{version} was accepted:\n{text}");
                assert!(
                    text.contains("alert handshake failure")
                        || text.contains("alert protocol version"),
                    "{version}: no alert from the server:\n{text}"
                );
            }
            _ => {
                assert!(ok, "{version} was refused:\n{text}");
                let expected = if *version == "-tls1_2" {
                    "TLSv1.2"
                } else {
                    "TLSv1.3"
                };
                assert!(
                    text.contains(&format!("Protocol version: {expected}")),
                    "{text}"
                );
                assert!(text.contains("Verification: OK"), "{text}");
            }
        }
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_forward_secret_aead_cipher_suites_are_accepted() {
    let server = server::start(|_| {}).await;
    let addr = server.webhook_addr;
    let ca = server.dir.path().join("ca.pem");
    std::fs::write(&ca, &server.ca.pem).unwrap();
    let (tls12, tls13) = blocking(move || {
        let openssl = common::tools::require("openssl", "Debian package openssl");
        let listed = Command::new(openssl)
            .args(["ciphers", "-tls1_2", "ALL:COMPLEMENTOFALL:@SECLEVEL=0"])
            .output()
            .unwrap();
        let all = String::from_utf8(listed.stdout).unwrap();
        let tls12: Vec<(String, bool)> = all
            .trim()
            .split(':')
            .filter(|name| !name.starts_with("TLS_"))
            .map(|name| {
                let cipher = format!("{name}:@SECLEVEL=0");
                let (ok, _) = s_client(addr, &ca, &["-tls1_2", "-cipher", &cipher]);
                (name.to_owned(), ok)
            })
            .collect();
        let tls13: Vec<(String, bool)> = [
            "TLS_AES_128_GCM_SHA256",
            "TLS_AES_256_GCM_SHA384",
            "TLS_CHACHA20_POLY1305_SHA256",
            "TLS_AES_128_CCM_SHA256",
            "TLS_AES_128_CCM_8_SHA256",
        ]
        .iter()
        .map(|suite| {
            let (ok, _) = s_client(addr, &ca, &["-tls1_3", "-ciphersuites", suite]);
            ((*suite).to_owned(), ok)
        })
        .collect();
        (tls12, tls13)
    })
    .await;
    // Sorted: the order is OpenSSL's listing order, which differs between versions.
    let accepted = |list: &[(String, bool)]| -> Vec<String> {
        let mut names: Vec<String> = list
            .iter()
            .filter(|(_, ok)| *ok)
            .map(|(n, _)| n.clone())
            .collect();
        names.sort();
        names
    };
    println!(
        "TLS 1.2: {} of {} suites OpenSSL offers accepted: {:?}",
        accepted(&tls12).len(),
        tls12.len(),
        accepted(&tls12)
    );
    println!("TLS 1.3 accepted: {:?}", accepted(&tls13));
    assert!(
        tls12.len() > 30,
        "OpenSSL listed only {} suites",
        tls12.len()
    );
    // The serving key is ECDSA: ECDHE key exchange, AES-GCM or ChaCha20-Poly1305.
    assert_eq!(
        accepted(&tls12),
        [
            "ECDHE-ECDSA-AES128-GCM-SHA256",
            "ECDHE-ECDSA-AES256-GCM-SHA384",
            "ECDHE-ECDSA-CHACHA20-POLY1305",
        ]
    );
    assert_eq!(
        accepted(&tls13),
        [
            "TLS_AES_128_GCM_SHA256",
            "TLS_AES_256_GCM_SHA384",
            "TLS_CHACHA20_POLY1305_SHA256",
        ]
    );
    server.stop().await;
}

fn small_review(uid: &str) -> Vec<u8> {
    serde_json::to_vec(&common::pod_review(uid, &["nginx:1.25"])).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_client_ca_only_clients_with_its_certificates_get_in() {
    let api_server_ca = TestCa::new("API server client CA");
    let other_ca = TestCa::new("some other CA");
    let ca_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(ca_file.path(), &api_server_ca.pem).unwrap();
    let ca_path = ca_file.path().to_owned();
    let server = server::start(move |settings| settings.client_ca_file = Some(ca_path)).await;
    let trust = || roots(server.ca.pem.as_bytes());

    for proto in [Proto::H2, Proto::H1] {
        // The API server's certificate: answered.
        let api_server = api_server_ca.client("kube-apiserver");
        let client = Client::with_identity(
            trust(),
            proto,
            Some((&api_server.cert_pem, &api_server.key_pem)),
        );
        let reply = client
            .post(server.webhook_addr, "/mutate", small_review("ok"))
            .await
            .unwrap();
        assert_eq!(reply.status, 200);
        assert_eq!(reply.json()["response"]["allowed"], true);

        // No certificate, or one from another CA: no HTTP at all. In TLS 1.3 the
        // client learns of the refusal on its first read, so the request fails.
        let stranger = other_ca.client("kube-apiserver");
        for identity in [
            None,
            Some((stranger.cert_pem.as_str(), stranger.key_pem.as_str())),
        ] {
            let client = Client::with_identity(trust(), proto, identity);
            let result = client
                .post(server.webhook_addr, "/mutate", small_review("no"))
                .await;
            assert!(
                result.is_err(),
                "{proto:?} with {} was answered: {result:?}",
                if identity.is_some() {
                    "a foreign certificate"
                } else {
                    "no certificate"
                }
            );
        }
    }

    let (_, metrics) = server::admin_get(server.admin_addr, "/metrics").await;
    let refused: f64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("harbor_pilot_tls_handshake_failures_total{reason=\"error\"} ")?
                .parse()
                .ok()
        })
        .unwrap();
    assert!(refused >= 4.0, "{refused} handshake failures counted");
    server.stop().await;
}

#[test]
fn an_unusable_client_ca_file_stops_start_up_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let not_a_ca = dir.path().join("client-ca.pem");
    std::fs::write(&not_a_ca, "not a certificate\n").unwrap();
    for path in [not_a_ca.clone(), dir.path().join("missing.pem")] {
        let dev = dir.path().join("dev");
        let output = common::harbor_pilot(&[
            "serve",
            "--config",
            common::example_config_path().to_str().unwrap(),
            "--webhook-addr",
            "127.0.0.1:0",
            "--admin-addr",
            "127.0.0.1:0",
            "--dev-cert-dir",
            dev.to_str().unwrap(),
            "--client-ca-file",
            path.to_str().unwrap(),
        ]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(&path.display().to_string()), "{stderr}");
    }
}

/// A pod as the API server would send it, with secrets where pods keep them.
fn pod_with_secrets() -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "secrets-1",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "operation": "CREATE",
            "namespace": "default",
            "userInfo": {
                "username": "alice",
                "extra": {"example.com/token": ["SECRET-EXTRA-1"]}
            },
            "object": {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {
                    "name": "web",
                    "namespace": "default",
                    "annotations": {
                        "kubectl.kubernetes.io/last-applied-configuration":
                            "{\"spec\":{\"containers\":[{\"env\":[{\"name\":\"DB_PASSWORD\",\"value\":\"SECRET-APPLIED-2\"}]}]}}",
                        "example.com/tls-key":
                            "-----BEGIN PRIVATE KEY-----\nSECRET-KEY-3MIGHAgEAMBMGByqGSM49AgEGCCqGSM49\n-----END PRIVATE KEY-----\n"
                    }
                },
                "spec": {
                    "initContainers": [
                        {"name": "fetch", "image": "user:SECRET-CRED-4@registry.example.com/tools"}
                    ],
                    "containers": [{
                        "name": "app",
                        "image": "nginx:1.25",
                        "args": ["--password=SECRET-ARG-5"],
                        "env": [{"name": "DB_PASSWORD", "value": "SECRET-ENV-6"}]
                    }]
                }
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_from_a_request_reaches_a_log_line_or_an_answer() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("log CA");
    common::server::write_leaf(dir.path(), &ca.leaf("logs"));
    let key_pem = std::fs::read_to_string(dir.path().join("tls.key")).unwrap();
    let cert = dir.path().join("tls.crt").display().to_string();
    let key = dir.path().join("tls.key").display().to_string();
    // Everything every crate can log: hyper, h2 and rustls included.
    let mut serve = Serve::start_with_env(
        &common::example_config_path(),
        &["--tls-cert-file", &cert, "--tls-key-file", &key],
        &[("RUST_LOG", "trace")],
    );
    let addr = serve.addr("webhook listening");

    let secrets = pod_with_secrets();
    let mut labels_are_a_string = secrets.clone();
    labels_are_a_string["request"]["uid"] = json!("secrets-2");
    labels_are_a_string["request"]["object"]["metadata"]["labels"] = json!("SECRET-LABEL-7");
    let mut operation_unknown = secrets.clone();
    operation_unknown["request"]["operation"] = json!("SECRET-OPERATION-8");
    let mut extra_not_a_list = secrets.clone();
    extra_not_a_list["request"]["userInfo"]["extra"] = json!({"token": "SECRET-EXTRA-9"});
    let bodies: Vec<Vec<u8>> = vec![
        serde_json::to_vec(&secrets).unwrap(),
        serde_json::to_vec(&labels_are_a_string).unwrap(),
        serde_json::to_vec(&operation_unknown).unwrap(),
        serde_json::to_vec(&extra_not_a_list).unwrap(),
        b"SECRET-NOT-JSON-10 {".to_vec(),
    ];

    let mut answers = Vec::new();
    for proto in [Proto::H2, Proto::H1] {
        let mut conn = Client::new(ca.pem.as_bytes(), proto)
            .connect(addr)
            .await
            .unwrap();
        for body in &bodies {
            let reply = conn
                .send_with(
                    "POST",
                    "/mutate",
                    &[
                        ("content-type", "application/json"),
                        ("authorization", "Bearer SECRET-BEARER-11"),
                    ],
                    http_body_util::Either::Left(http_body_util::Full::new(body.clone().into())),
                )
                .await
                .unwrap();
            answers.push((
                reply.status.as_u16(),
                String::from_utf8_lossy(&reply.body).into_owned(),
            ));
        }
    }
    // A last request whose log line shows that everything before it was written.
    let reply = Client::new(ca.pem.as_bytes(), Proto::H2)
        .post(addr, "/mutate", small_review("last"))
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !serve
        .drain_logs()
        .iter()
        .any(|l| l["uid"] == "last" && l["message"] == "images rewritten")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no log line for the last request"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let lines: Vec<String> = serve.drain_logs().iter().map(Value::to_string).collect();

    // What was answered: the pods allowed (the one with a string for labels with a
    // warning), the envelope errors refused with 400, secrets in neither.
    let statuses: Vec<u16> = answers.iter().map(|(s, _)| *s).collect();
    assert_eq!(statuses, [200, 200, 400, 400, 400, 200, 200, 400, 400, 400]);
    assert!(
        answers[0].1.contains("***@registry.example.com/tools"),
        "{}",
        answers[0].1
    );
    assert!(
        answers[1].1.contains("could not read the pod"),
        "{}",
        answers[1].1
    );
    let leaks: Vec<&String> = lines
        .iter()
        .chain(answers.iter().map(|(_, body)| body))
        .filter(|text| text.contains("SECRET-"))
        .collect();
    assert!(leaks.is_empty(), "secrets leaked:\n{leaks:#?}");
    // Nor the serving key (its base64 body, not its header line).
    let key_body: String = key_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    assert!(lines.iter().all(|l| !l.contains(&key_body[..40])));

    // And the log was really at trace, from every crate that logs (hyper logs only
    // with an unstable feature), with the image decisions.
    let has = |needle: &str| lines.iter().any(|l| l.contains(needle));
    assert!(has("\"admission review received\""), "no debug lines");
    assert!(has("\"target\":\"h2"), "no h2 trace lines");
    assert!(has("\"target\":\"rustls"), "no rustls trace lines");
    assert!(
        has("***@registry.example.com/tools"),
        "no line for the credential image"
    );
    assert!(
        has("\"allowed unchanged\""),
        "no warning for the unreadable pod"
    );
    assert!(
        has("\"not an AdmissionReview\""),
        "no warning for the bad envelopes"
    );
    println!("{} log lines checked", lines.len());
}
