//! The real HTTPS server on 127.0.0.1 (port 0) with a real TLS client: every admission
//! fixture over HTTP/2 and HTTP/1.1, the error answers, readiness and metrics.

// Test code: a failed setup step should panic with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::client::{ChannelBody, Proto};
use common::server::{self, admin_get};
use harbor_pilot::app::{Admin, Webhook};

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no series {series} in\n{text}"))
}

/// One fixture of each kind of answer: the transport is under test here, the decisions
/// are `admission_fixtures`'s (all 237 fixtures, in-process).
const TRANSPORT_FIXTURES: [&str; 7] = [
    "048-microservices-demo-deployment.json", // CREATE, rewritten
    "205-k8s-examples-pod-update-setimage.json", // UPDATE, rewritten
    "209-k8s-website-pod-ephemeral.json",     // pods/ephemeralcontainers, rewritten
    "217-synthetic-configmap-notpod.json",    // not a pod
    "233-synthetic-malformed-containers-object.json", // allowed with a warning
    "226-synthetic-malformed-empty.json",     // 400
    "236-synthetic-malformed-truncated.json", // 400
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_each_kind_of_review_over_http2_and_http1() {
    let server = server::start(|_| {}).await;
    let mut rewritten = 0;
    for proto in [Proto::H2, Proto::H1] {
        // One connection per protocol, as the API server keeps its connections open.
        let mut conn = server
            .client(proto)
            .connect(server.webhook_addr)
            .await
            .unwrap();
        for (file, body) in common::admission_fixtures()
            .into_iter()
            .filter(|(file, _)| TRANSPORT_FIXTURES.contains(&file.as_str()))
        {
            let reply = conn.post("/mutate", body.clone()).await.unwrap();
            assert_eq!(
                reply.content_type.as_deref(),
                Some("application/json"),
                "{file}"
            );
            if common::REJECTED.contains(&file.as_str()) {
                assert_eq!(reply.status, 400, "{file} over {proto:?}");
                let status = reply.json();
                assert_eq!(status["kind"], "Status", "{file}");
                assert_eq!(status["code"], 400, "{file}");
                assert!(!status["message"].as_str().unwrap().is_empty(), "{file}");
            } else {
                assert_eq!(reply.status, 200, "{file} over {proto:?}");
                let verified = common::verify_answer(&file, &body, &reply.json())
                    .unwrap_or_else(|e| panic!("over {proto:?}: {e}"));
                rewritten += usize::from(verified.patched);
            }
        }
    }
    assert_eq!(
        rewritten,
        2 * 3,
        "three rewriting fixtures over two protocols"
    );

    // The counters moved by exactly what was sent.
    let (_, text) = admin_get(server.admin_addr, "/metrics").await;
    let counted = metric(
        &text,
        "harbor_pilot_admission_requests_total{operation=\"CREATE\",outcome=\"rewritten\"}",
    ) + metric(
        &text,
        "harbor_pilot_admission_requests_total{operation=\"UPDATE\",outcome=\"rewritten\"}",
    );
    #[allow(clippy::cast_precision_loss)]
    let expected = rewritten as f64;
    assert_eq!(counted, expected);
    let rejected = metric(
        &text,
        "harbor_pilot_admission_requests_total{operation=\"unknown\",outcome=\"bad_request\"}",
    );
    #[allow(clippy::cast_precision_loss)]
    let expected_rejected = (2 * 2) as f64;
    assert_eq!(rejected, expected_rejected);
    assert!(
        metric(
            &text,
            "harbor_pilot_images_rewritten_total{upstream=\"docker.io\"}"
        ) > 0.0
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_http2_streams_on_one_connection() {
    let server = server::start(|_| {}).await;
    let conn = server
        .client(Proto::H2)
        .connect(server.webhook_addr)
        .await
        .unwrap();
    let fixtures: Vec<_> = common::admission_fixtures().into_iter().take(64).collect();
    let mut tasks = Vec::new();
    for (file, body) in fixtures {
        let mut stream = conn.h2_stream();
        tasks.push(tokio::spawn(async move {
            let reply = stream.post("/mutate", body.clone()).await.unwrap();
            common::verify_answer(&file, &body, &reply.json()).unwrap();
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_oversized_and_misdirected_requests_get_their_status() {
    let server = server::start(|s| s.max_body_bytes = 64 << 10).await;
    for proto in [Proto::H1, Proto::H2] {
        let client = server.client(proto);

        let reply = client
            .post(
                server.webhook_addr,
                "/mutate",
                b"{\"apiVersion\":\"admission.k8s".to_vec(),
            )
            .await
            .unwrap();
        assert_eq!(reply.status, 400);
        let message = reply.json()["message"].as_str().unwrap().to_owned();
        assert!(
            message.starts_with("body is not an AdmissionReview: EOF while parsing"),
            "{message}"
        );

        let reply = client
            .post(server.webhook_addr, "/mutate", vec![b' '; 100 << 10])
            .await
            .unwrap();
        assert_eq!(reply.status, 413, "{proto:?}");
        assert_eq!(reply.json()["reason"], "RequestEntityTooLarge");
        assert_eq!(reply.json()["code"], 413);

        // Without a Content-Length (chunked, or HTTP/2 DATA frames) the limit still holds.
        let mut conn = client.connect(server.webhook_addr).await.unwrap();
        let (tx, body) = ChannelBody::new();
        let feeder = tokio::spawn(async move {
            for _ in 0..10 {
                if tx.send(Bytes::from(vec![b' '; 16 << 10])).await.is_err() {
                    break;
                }
            }
        });
        let reply = conn
            .send("POST", "/mutate", http_body_util::Either::Right(body))
            .await
            .unwrap();
        assert_eq!(reply.status, 413, "{proto:?} streamed");
        feeder.abort();

        let mut conn = client.connect(server.webhook_addr).await.unwrap();
        let empty = || http_body_util::Either::Left(http_body_util::Full::new(Bytes::new()));
        let reply = conn.send("GET", "/mutate", empty()).await.unwrap();
        assert_eq!(reply.status, 405);
        assert_eq!(reply.json()["reason"], "MethodNotAllowed");
        let reply = conn.send("PUT", "/mutate", empty()).await.unwrap();
        assert_eq!(reply.status, 405);
        assert_eq!(reply.json()["reason"], "MethodNotAllowed");
        let reply = conn.send("POST", "/validate", empty()).await.unwrap();
        assert_eq!(reply.status, 404);
        assert_eq!(reply.json()["reason"], "NotFound");
        let reply = conn.send("POST", "/mutate/", empty()).await.unwrap();
        assert_eq!(
            reply.status, 404,
            "{proto:?}: only the exact path is the webhook"
        );

        // The API server adds its timeout as a query: still the webhook.
        let review = common::pod_review("with-query", &["nginx:1.27"]);
        let reply = client
            .post(
                server.webhook_addr,
                "/mutate?timeout=10s",
                serde_json::to_vec(&review).unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(reply.status, 200, "{proto:?}");
        assert_eq!(reply.json()["response"]["uid"], "with-query");
        assert!(reply.json()["response"]["patch"].is_string(), "{proto:?}");
    }
    let (_, text) = admin_get(server.admin_addr, "/metrics").await;
    assert_eq!(
        metric(
            &text,
            "harbor_pilot_admission_requests_total{operation=\"unknown\",outcome=\"payload_too_large\"}"
        ),
        4.0
    );
    assert_eq!(
        metric(
            &text,
            "harbor_pilot_admission_requests_total{operation=\"unknown\",outcome=\"bad_request\"}"
        ),
        2.0
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_port_speaks_only_tls() {
    let server = server::start(|_| {}).await;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut tcp = tokio::net::TcpStream::connect(server.webhook_addr)
        .await
        .unwrap();
    tcp.write_all(b"POST /mutate HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut buf)).await;
    // The server closes the connection without an HTTP answer.
    assert!(
        !String::from_utf8_lossy(&buf).starts_with("HTTP/"),
        "{read:?}"
    );
    let (_, text) = admin_get(server.admin_addr, "/metrics").await;
    assert_eq!(
        metric(
            &text,
            "harbor_pilot_tls_handshake_failures_total{reason=\"error\"}"
        ),
        1.0
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_false_until_loaded_and_false_again_while_draining() {
    let dir = tempfile::tempdir().unwrap();
    let ca = common::certs::TestCa::new("ready CA");
    server::write_leaf(dir.path(), &ca.leaf("ready"));
    let settings = server::settings(dir.path());

    let admin = Admin::start(settings.admin_addr, settings.limits, settings.drain_timeout)
        .await
        .unwrap();
    assert_eq!(
        admin_get(admin.addr(), "/livez").await,
        (200, "ok\n".to_owned())
    );
    assert_eq!(
        admin_get(admin.addr(), "/readyz").await.0,
        503,
        "ready before the webhook loaded"
    );

    let webhook = Webhook::start(&settings, &admin).await.unwrap();
    assert_eq!(
        admin_get(admin.addr(), "/readyz").await,
        (200, "ok\n".to_owned())
    );

    // A request in flight keeps the drain going while we look at /readyz.
    let client = common::client::Client::new(ca.pem.as_bytes(), Proto::H1);
    let mut conn = client.connect(webhook.addr()).await.unwrap();
    let (tx, body) = ChannelBody::new();
    let (file, review) = common::admission_fixtures().swap_remove(12);
    let (head, tail) = review.split_at(review.len() / 2);
    tx.send(Bytes::copy_from_slice(head)).await.unwrap();
    let in_flight = tokio::spawn(async move {
        conn.send("POST", "/mutate", http_body_util::Either::Right(body))
            .await
    });
    // Let the server read the headers: a request it has not seen yet is not in flight.
    tokio::time::sleep(Duration::from_millis(500)).await;

    admin.readiness().set(false);
    let draining = tokio::spawn(webhook.shutdown());
    assert_eq!(
        admin_get(admin.addr(), "/readyz").await.0,
        503,
        "ready while draining"
    );
    assert!(
        !draining.is_finished(),
        "drain did not wait for the request in flight"
    );
    tx.send(Bytes::copy_from_slice(tail)).await.unwrap();
    drop(tx);
    let reply = in_flight.await.unwrap().unwrap();
    assert_eq!(reply.status, 200);
    common::verify_answer(&file, &review, &reply.json()).unwrap();
    draining.await.unwrap();
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_metrics_pass_promtool() {
    let server = server::start(|_| {}).await;
    let (file, body) = common::admission_fixtures().swap_remove(0);
    let reply = server
        .client(Proto::H2)
        .post(server.webhook_addr, "/mutate", body)
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{file}");
    let (status, text) = admin_get(server.admin_addr, "/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(
        metric(
            &text,
            "harbor_pilot_admission_requests_total{operation=\"CREATE\",outcome=\"rewritten\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "harbor_pilot_images_rewritten_total{upstream=\"quay.io\"}"
        ),
        1.0
    );
    assert!(metric(&text, "harbor_pilot_tls_cert_not_after_timestamp_seconds") > 1.7e9);

    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("promtool not found ({e}): install Debian's `prometheus` package (scripts/test does)")
        });
    use std::io::Write as _;
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = promtool.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "promtool check metrics: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_port_closes_silent_connections_like_the_webhook_port() {
    use tokio::io::AsyncReadExt as _;
    let server = server::start(|settings| {
        settings.limits.header_read_timeout = std::time::Duration::from_millis(300);
    })
    .await;
    let started = std::time::Instant::now();
    let mut silent = tokio::net::TcpStream::connect(server.admin_addr)
        .await
        .unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(std::time::Duration::from_secs(10), silent.read(&mut buf))
        .await
        .expect("the admin port kept a silent connection open");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    println!(
        "silent admin connection closed after {:?}",
        started.elapsed()
    );
    // And it still serves.
    assert_eq!(admin_get(server.admin_addr, "/livez").await.0, 200);
    server.stop().await;
}
