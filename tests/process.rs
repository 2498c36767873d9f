//! `harbor-pilot serve` as a process: what the kubelet and a developer see. Ports are
//! chosen by the kernel (port 0) and read back from the JSON log.

// Test code: a failed setup step should panic with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::certs::TestCa;
use common::client::{ChannelBody, Client, Proto};
use common::process::Serve;
use common::server::admin_get;
use nix::sys::signal::Signal;
use serde_json::Value;

fn write_pair(dir: &std::path::Path, ca: &TestCa) -> [String; 4] {
    common::server::write_leaf(dir, &ca.leaf("process"));
    [
        "--tls-cert-file".to_owned(),
        dir.join("tls.crt").display().to_string(),
        "--tls-key-file".to_owned(),
        dir.join("tls.key").display().to_string(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_requests_in_flight_finish_then_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("drain CA");
    let pair = write_pair(dir.path(), &ca);
    let mut args: Vec<&str> = pair.iter().map(String::as_str).collect();
    args.extend(["--drain-timeout", "20s"]);
    let mut serve = Serve::start(&args);
    let webhook = serve.addr("webhook listening");
    let admin = serve.addr("admin port listening (/livez, /readyz, /metrics)");
    assert_eq!(admin_get(admin, "/readyz").await.0, 200);

    // Two requests in flight, one per protocol: headers and half the body sent.
    let fixtures = common::admission_fixtures();
    let mut in_flight = Vec::new();
    for (proto, (file, body)) in [
        (Proto::H1, fixtures[20].clone()),
        (Proto::H2, fixtures[30].clone()),
    ] {
        let mut conn = Client::new(ca.pem.as_bytes(), proto)
            .connect(webhook)
            .await
            .unwrap();
        let (tx, stream) = ChannelBody::new();
        let (head, tail) = body.split_at(body.len() / 2);
        tx.send(Bytes::copy_from_slice(head)).await.unwrap();
        let reply = tokio::spawn(async move {
            conn.send("POST", "/mutate", http_body_util::Either::Right(stream))
                .await
        });
        in_flight.push((file, body.clone(), Bytes::copy_from_slice(tail), tx, reply));
    }
    // Let the server read the headers: a request it has not seen yet is not in flight.
    tokio::time::sleep(Duration::from_millis(500)).await;

    serve.signal(Signal::SIGTERM);
    serve.wait_log("stopped accepting; draining");
    assert_eq!(
        admin_get(admin, "/readyz").await.0,
        503,
        "still ready while draining"
    );
    let refused = tokio::net::TcpStream::connect(webhook).await;
    assert!(
        refused.is_err(),
        "a new connection was accepted after SIGTERM"
    );

    for (file, body, tail, tx, reply) in in_flight {
        tx.send(tail).await.unwrap();
        drop(tx);
        let reply = reply.await.unwrap().unwrap();
        assert_eq!(reply.status, 200, "{file}");
        common::verify_answer(&file, &body, &reply.json()).unwrap();
    }
    let status = tokio::task::spawn_blocking(move || {
        let status = serve.wait_exit();
        serve.wait_log("drained");
        status
    })
    .await
    .unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_certificate_serves_a_development_one_and_stops_on_sigint() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("dev");
    let mut serve = Serve::start(&["--dev-cert-dir", certs.to_str().unwrap()]);
    let warning = serve.wait_log(
        "no --tls-cert-file: serving a self-signed DEVELOPMENT certificate for localhost; \
         clients must trust the CA file (curl --cacert); never use this in a cluster",
    );
    assert_eq!(warning["level"], "WARN");
    assert_eq!(warning["ca"], certs.join("ca.crt").display().to_string());
    let webhook = serve.addr("webhook listening");

    let ca = std::fs::read(certs.join("ca.crt")).unwrap();
    let (file, body) = common::admission_fixtures().swap_remove(13);
    let reply = Client::new(&ca, Proto::H2)
        .post(webhook, "/mutate", body.clone())
        .await
        .unwrap();
    common::verify_answer(&file, &body, &reply.json()).unwrap();

    serve.signal(Signal::SIGINT);
    let (status, logs) = tokio::task::spawn_blocking(move || {
        let status = serve.wait_exit();
        serve.wait_log("stopped");
        (status, serve.drain_logs().to_vec())
    })
    .await
    .unwrap();
    assert_eq!(status.code(), Some(0));
    // The admission the server rehearses before it is ready (over its own loopback
    // port) leaves no line: the one admission logged is ours, and the two servers that
    // drained are the webhook port and the admin port.
    let uids: Vec<&Value> = logs.iter().filter_map(|l| l.get("uid")).collect();
    assert_eq!(uids, [&body_uid(&body)], "{logs:#?}");
    let drains = logs
        .iter()
        .filter(|l| l["message"] == "stopped accepting; draining")
        .count();
    assert_eq!(drains, 2, "{logs:#?}");
    assert!(
        !logs.iter().any(
            |l| l["level"] == "WARN" && l["message"].as_str().unwrap_or("").contains("warm-up")
        ),
        "{logs:#?}"
    );
}

fn body_uid(body: &[u8]) -> Value {
    serde_json::from_slice::<Value>(body).unwrap()["request"]["uid"].clone()
}

/// The plain `error: …` line `serve` prints on stderr after its JSON log.
fn error_line(serve: &mut Serve) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut lines = Vec::new();
    while let Ok(line) = serve
        .logs
        .recv_timeout(deadline.saturating_duration_since(Instant::now()))
    {
        lines.push(line);
    }
    lines
        .iter()
        .find_map(|l| l.as_str().filter(|s| s.starts_with("error: ")))
        .unwrap_or_else(|| panic!("no error line in {lines:#?}"))
        .to_owned()
}

#[test]
fn a_bad_certificate_or_configuration_exits_1_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tls.crt"), "garbage").unwrap();
    std::fs::write(dir.path().join("tls.key"), "garbage").unwrap();
    let cert = dir.path().join("tls.crt").display().to_string();
    let key = dir.path().join("tls.key").display().to_string();
    let mut serve = Serve::start(&["--tls-cert-file", &cert, "--tls-key-file", &key]);
    assert_eq!(serve.wait_exit().code(), Some(1));
    assert_eq!(
        error_line(&mut serve),
        format!("error: {cert}: no PEM certificate found")
    );

    let missing = dir.path().join("missing.yaml");
    let mut serve = Serve::start_with_config(&missing, &[]);
    assert_eq!(serve.wait_exit().code(), Some(1));
    let line = error_line(&mut serve);
    assert!(
        line.starts_with(&format!(
            "error: cannot read config file {}: ",
            missing.display()
        )),
        "{line}"
    );
}
