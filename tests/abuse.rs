//! The malformed-input and abuse battery, through the real server on 127.0.0.1 with a
//! real TLS client, while a canary client keeps sending ordinary admissions: every one
//! of the canary's requests must be answered correctly, whatever else is going on.
//!
//! Each kind of abuse gets a bounded, documented answer (README, "Abuse and limits"):
//!
//! | input | answer |
//! |---|---|
//! | not JSON, truncated, duplicate envelope keys, wrong envelope types, too deep | 400 v1.Status naming the problem |
//! | a pod whose fields have the wrong types, duplicate keys, bad UTF-8 | 200 allowed, unchanged, warning |
//! | a 64 KiB image, 200 containers | 200, the others rewritten, warning for the bad one |
//! | body over --max-body-bytes | 413 |
//! | body slower than --body-read-timeout | 408 |
//! | headers slower than --header-read-timeout, silence after the handshake | connection closed |
//! | idle longer than --idle-timeout | connection closed |
//! | headers over 64 KiB | 431 (HTTP/1.1), stream refused (HTTP/2) |
//! | HTTP/2: streams over --max-concurrent-streams | RST_STREAM REFUSED_STREAM |
//! | HTTP/2: rapid reset, CONTINUATION flood | GOAWAY, connection closed |
//!
//! The server runs with short timeouts here (1-2 s) so the battery is quick; durations
//! are printed, never asserted: only that things end, and in the order promised.

// Test code: a failed setup step should panic with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::client::Proto;
use common::h2raw::{self, RawH2};
use common::pod_review as review;
use common::server::{self, TestServer};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// A generous bound for "it ends": far above any timeout configured here, far below
/// "forever".
const ENDS_WITHIN: Duration = Duration::from_secs(20);

async fn abuse_server() -> TestServer {
    server::start(|settings| {
        settings.limits.handshake_timeout = Duration::from_secs(1);
        settings.limits.header_read_timeout = Duration::from_secs(1);
        settings.limits.idle_timeout = Duration::from_secs(2);
        settings.body_read_timeout = Duration::from_secs(1);
    })
    .await
}

/// Ordinary admissions every 20 ms, alternating a kept HTTP/2 connection and a new
/// HTTP/1.1 connection each time; every answer is checked.
struct Canary {
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<(u64, Vec<String>, Duration)>,
}

impl Canary {
    fn start(server: &TestServer) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let addr = server.webhook_addr;
        let h2 = server.client(Proto::H2);
        let h1 = server.client(Proto::H1);
        let flag = Arc::clone(&stop);
        let answered = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&answered);
        let task = tokio::spawn(async move {
            let mut ok = 0u64;
            let mut failures = Vec::new();
            let mut slowest = Duration::ZERO;
            let mut kept = None;
            let mut n = 0u64;
            while !flag.load(Ordering::Relaxed) {
                n += 1;
                let uid = format!("canary-{n}");
                let body = serde_json::to_vec(&review(&uid, &["nginx:1.25"])).unwrap();
                let started = Instant::now();
                let result = if n.is_multiple_of(2) {
                    if kept.is_none() {
                        kept = h2.connect(addr).await.ok();
                    }
                    match kept.as_mut() {
                        Some(conn) => conn.post("/mutate", body).await,
                        None => Err(std::io::Error::other("cannot connect")),
                    }
                } else {
                    h1.post(addr, "/mutate", body).await
                };
                slowest = slowest.max(started.elapsed());
                match result {
                    Ok(reply)
                        if reply.status == 200
                            && reply.json()["response"]["uid"] == uid.as_str()
                            && reply.json()["response"]["patch"].is_string() =>
                    {
                        ok += 1;
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(reply) => failures.push(format!("{uid}: {} {:?}", reply.status, reply.body)),
                    Err(error) => {
                        // The kept connection may be closed by the idle timeout between
                        // two requests, as any server may; only a fresh one is a failure.
                        if n.is_multiple_of(2) && kept.is_some() {
                            kept = None;
                            n -= 1;
                            continue;
                        }
                        failures.push(format!("{uid}: {error}"));
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (ok, failures, slowest)
        });
        Self {
            stop,
            answered,
            task,
        }
    }

    /// Stops, and checks that every request was answered correctly.
    async fn check(self, during: &str) {
        // At least ten answers, even when the abuse was over quickly.
        let deadline = Instant::now() + ENDS_WITHIN;
        while self.answered.load(Ordering::Relaxed) < 10 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.stop.store(true, Ordering::Relaxed);
        let (ok, failures, slowest) = self.task.await.unwrap();
        println!("canary during {during}: {ok} answered, slowest {slowest:?}");
        assert!(
            failures.is_empty(),
            "canary failed during {during}: {failures:#?}"
        );
        assert!(ok >= 10, "canary sent only {ok} requests during {during}");
    }
}

async fn post_raw(server: &TestServer, proto: Proto, body: Vec<u8>) -> (u16, Value) {
    let reply = server
        .client(proto)
        .post(server.webhook_addr, "/mutate", body)
        .await
        .unwrap();
    (reply.status.as_u16(), reply.json())
}

/// Sets the field at `pointer` (whose parent exists), adding it if absent.
fn set(v: &mut Value, pointer: &str, value: Value) {
    let (parent, last) = pointer.rsplit_once('/').unwrap();
    let parent = v.pointer_mut(parent).unwrap();
    match parent {
        Value::Array(items) => items[last.parse::<usize>().unwrap()] = value,
        _ => {
            parent
                .as_object_mut()
                .unwrap()
                .insert(last.to_owned(), value);
        }
    }
}

/// `(name, body)` of bodies that are not an AdmissionReview: 400 with a message.
fn not_reviews() -> Vec<(String, Vec<u8>, &'static str)> {
    let good = serde_json::to_vec(&review("bad", &["nginx"])).unwrap();
    let mut cases: Vec<(String, Vec<u8>, &'static str)> = vec![
        ("empty".into(), Vec::new(), "EOF while parsing"),
        ("null".into(), b"null".to_vec(), "invalid type: null"),
        ("text".into(), b"hello".to_vec(), "expected value"),
        (
            "non-UTF-8 in the uid".into(),
            String::from_utf8(good.clone())
                .unwrap()
                .replace("\"bad\"", "\"b\u{fffd}d\"")
                .replace('\u{fffd}', "\u{1}")
                .into_bytes()
                .into_iter()
                .map(|b| if b == 1 { 0xff } else { b })
                .collect(),
            "invalid unicode code point",
        ),
        (
            "duplicate apiVersion".into(),
            format!(
                "{{\"apiVersion\":\"admission.k8s.io/v1\",{}",
                &String::from_utf8(good.clone()).unwrap()[1..]
            )
            .into_bytes(),
            "duplicate field `apiVersion`",
        ),
    ];
    for cut in [1, 10, 100, good.len() / 2, good.len() - 1] {
        cases.push((
            format!("truncated at {cut}"),
            good[..cut].to_vec(),
            "EOF while parsing",
        ));
    }
    // Wrong types in every envelope field the webhook reads.
    for (pointer, value) in [
        ("/apiVersion", json!(5)),
        ("/kind", json!([])),
        ("/request", json!("x")),
        ("/request/uid", json!(7)),
        ("/request/operation", json!(5)),
        ("/request/operation", json!("EXPLODE")),
        ("/request/kind", json!("Pod")),
        ("/request/resource", json!(5)),
        ("/request/subResource", json!(5)),
        ("/request/namespace", json!({})),
        ("/request/dryRun", json!("yes")),
        ("/request/userInfo", json!(5)),
    ] {
        let mut v = review("bad", &["nginx"]);
        set(&mut v, pointer, value.clone());
        cases.push((
            format!("{pointer} = {value}"),
            serde_json::to_vec(&v).unwrap(),
            "body is not an AdmissionReview",
        ));
    }
    cases
}

/// JSON nested 100000 deep, as arrays and as objects, where the webhook skips it (an
/// unknown envelope field, an unread pod field) and where it reads (labels).
fn deeply_nested() -> Vec<(String, Vec<u8>)> {
    let arrays = format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000));
    let objects = format!("{}1{}", "{\"a\":".repeat(100_000), "}".repeat(100_000));
    let mut cases = Vec::new();
    for (shape, nested) in [("arrays", &arrays), ("objects", &objects)] {
        for pointer in [
            "/x",
            "/request/object/spec/affinity",
            "/request/object/metadata/labels",
        ] {
            let mut v = review("deep", &["nginx"]);
            set(&mut v, pointer, json!("PLACEHOLDER"));
            let body = serde_json::to_string(&v)
                .unwrap()
                .replace("\"PLACEHOLDER\"", nested);
            cases.push((
                format!("{shape} 100000 deep at {pointer}"),
                body.into_bytes(),
            ));
        }
    }
    cases
}

/// Pods with fields of the wrong type: allowed, unchanged, with a warning.
fn broken_pods() -> Vec<(String, Vec<u8>)> {
    let mut cases = Vec::new();
    for (pointer, value) in [
        ("/request/object", json!("a string")),
        ("/request/object", json!([1, 2])),
        ("/request/object/metadata", json!(5)),
        ("/request/object/metadata/labels", json!("x")),
        ("/request/object/metadata/annotations", json!({"a": 5})),
        ("/request/object/metadata/name", json!(["p"])),
        ("/request/object/spec", json!(3)),
        ("/request/object/spec/containers", json!({})),
        ("/request/object/spec/containers/0", json!("nginx")),
        ("/request/object/spec/containers/0", json!(["c0", "nginx"])),
        ("/request/object/spec/containers/0/name", json!(5)),
        ("/request/object/spec/containers/0/image", json!(5)),
        (
            "/request/object/spec/containers/0/image",
            json!({"ref": "nginx"}),
        ),
        ("/request/object/spec/containers/0/image", json!(["nginx"])),
    ] {
        let mut v = review("pod", &["nginx"]);
        set(&mut v, pointer, value.clone());
        cases.push((
            format!("{pointer} = {value}"),
            serde_json::to_vec(&v).unwrap(),
        ));
    }
    for (field, value) in [
        ("initContainers", json!(5)),
        ("ephemeralContainers", json!("x")),
        ("volumes", json!([{"name": "v", "image": "x"}])),
        ("volumes", json!([{"name": "v", "image": {"reference": 5}}])),
    ] {
        let mut v = review("pod", &["nginx"]);
        v["request"]["object"]["spec"][field] = value.clone();
        cases.push((
            format!("spec.{field} = {value}"),
            serde_json::to_vec(&v).unwrap(),
        ));
    }
    let good = String::from_utf8(serde_json::to_vec(&review("pod", &["nginx"])).unwrap()).unwrap();
    cases.push((
        "duplicate image key".into(),
        good.replace(
            "\"image\":\"nginx\"",
            "\"image\":\"nginx\",\"image\":\"redis\"",
        )
        .into_bytes(),
    ));
    let mut bad_utf8 = good
        .replace("\"image\":\"nginx\"", "\"image\":\"ngi\u{1}nx\"")
        .into_bytes();
    for b in &mut bad_utf8 {
        if *b == 1 {
            *b = 0xff;
        }
    }
    cases.push(("non-UTF-8 in an image".into(), bad_utf8));
    let mut update = review("pod", &["nginx"]);
    update["request"]["operation"] = json!("UPDATE");
    update["request"]["oldObject"] = json!(5);
    cases.push((
        "UPDATE with oldObject = 5".into(),
        serde_json::to_vec(&update).unwrap(),
    ));
    cases
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bodies_get_documented_answers_while_others_are_served() {
    let server = abuse_server().await;
    let canary = Canary::start(&server);
    for proto in [Proto::H1, Proto::H2] {
        for (name, body, message) in not_reviews() {
            let (status, answer) = post_raw(&server, proto, body).await;
            assert_eq!(status, 400, "{name} over {proto:?}: {answer}");
            assert_eq!(answer["kind"], "Status", "{name}");
            let text = answer["message"].as_str().unwrap();
            assert!(text.contains(message), "{name}: {text}");
        }
        // Deep nesting never overflows the stack: serde_json stops at 128 levels where
        // it builds values (400, "recursion limit exceeded") and skips unread ones.
        for (name, body) in deeply_nested() {
            let (status, answer) = post_raw(&server, proto, body).await;
            match status {
                400 => assert!(
                    answer["message"]
                        .as_str()
                        .unwrap()
                        .contains("recursion limit exceeded"),
                    "{name}: {answer}"
                ),
                200 => assert_eq!(answer["response"]["allowed"], true, "{name}"),
                _ => panic!("{name}: {status} {answer}"),
            }
            if proto == Proto::H1 {
                println!("{name}: {status}");
            }
        }
        for (name, body) in broken_pods() {
            let (status, answer) = post_raw(&server, proto, body).await;
            assert_eq!(status, 200, "{name} over {proto:?}: {answer}");
            let response = &answer["response"];
            assert_eq!(response["allowed"], true, "{name}");
            assert_eq!(response["uid"], "pod", "{name}");
            assert!(response.get("patch").is_none(), "{name}: {response}");
            let warning = response["warnings"][0].as_str().unwrap_or_default();
            assert!(warning.starts_with("harbor-pilot: "), "{name}: {response}");
        }

        // A 64 KiB image: the pod is admitted, the other image rewritten, the huge one
        // quoted in the warning cut to 80 bytes.
        let huge = format!("registry.example.com/{}", "a".repeat(64 * 1024));
        let body = serde_json::to_vec(&review("huge", &[&huge, "nginx:1.25"])).unwrap();
        let (status, answer) = post_raw(&server, proto, body).await;
        assert_eq!(status, 200);
        let warnings = answer["response"]["warnings"].as_array().unwrap();
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].as_str().unwrap().len() < 300, "{warnings:?}");
        assert!(answer["response"]["patch"].is_string());

        // 200 containers (fixture 225), each checked by the independent oracle.
        let (file, body) = common::admission_fixtures()
            .into_iter()
            .find(|(file, _)| file.starts_with("225-"))
            .unwrap();
        let (status, answer) = post_raw(&server, proto, body.clone()).await;
        assert_eq!(status, 200);
        let verified = common::verify_answer(&file, &body, &answer).unwrap();
        assert!(verified.rewritten > 100, "{}", verified.rewritten);

        // Over the body limit.
        let (status, answer) = post_raw(&server, proto, vec![b' '; (4 << 20) + 1]).await;
        assert_eq!(status, 413, "{answer}");
    }
    canary.check("malformed bodies").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_are_refused_and_the_connection_survives_on_http2() {
    let server = abuse_server().await;
    let canary = Canary::start(&server);
    // HTTP/1.1: 431 past 64 KiB of head, and the connection closed after it. Both heads
    // fit hyper's read buffer (~400 KiB), so the answer is our bound's, not hyper's; a
    // head past the buffer is not sent here: hyper closes with the rest unread, and the
    // kernel's reset can overtake its 431.
    for pad in [70 * 1024, 300 * 1024] {
        let big = "a".repeat(pad);
        let mut conn = server
            .client(Proto::H1)
            .connect(server.webhook_addr)
            .await
            .unwrap();
        let reply = conn
            .send_with(
                "POST",
                "/mutate",
                &[("x-pad", &big)],
                http_body_util::Either::Left(http_body_util::Full::new(bytes::Bytes::from_static(
                    b"{}",
                ))),
            )
            .await;
        match reply {
            Ok(reply) => assert_eq!(reply.status, 431, "{pad} bytes of header"),
            Err(error) => panic!("no 431 over HTTP/1.1 for {pad} bytes of header: {error}"),
        }
        let again = conn
            .send_with(
                "POST",
                "/mutate",
                &[],
                http_body_util::Either::Left(http_body_util::Full::new(bytes::Bytes::from_static(
                    b"{}",
                ))),
            )
            .await;
        assert!(
            again.is_err(),
            "the connection stays open after a 431: {again:?}"
        );
    }
    // Just under the bound: admitted and rewritten.
    let pad = "a".repeat(60 * 1024);
    let mut conn = server
        .client(Proto::H1)
        .connect(server.webhook_addr)
        .await
        .unwrap();
    let body = serde_json::to_vec(&review("big-head", &["nginx"])).unwrap();
    let reply = conn
        .send_with(
            "POST",
            "/mutate",
            &[("content-type", "application/json"), ("x-pad", &pad)],
            http_body_util::Either::Left(http_body_util::Full::new(bytes::Bytes::from(body))),
        )
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["response"]["uid"], "big-head");
    assert!(
        reply.json()["response"]["patch"].is_string(),
        "{:?}",
        reply.json()
    );
    // HTTP/2: the header block is refused (a 431 or a reset stream), and the same
    // connection then answers a normal request.
    let mut raw = RawH2::connect(server.webhook_addr, server.ca.pem.as_bytes())
        .await
        .unwrap();
    let mut block = h2raw::post_mutate();
    block.extend(h2raw::padding_header(70 * 1024));
    let (first, rest) = block.split_at(16_000);
    let mut bytes = h2raw::frame(h2raw::HEADERS, 0, 1, first);
    for (i, chunk) in rest.chunks(16_000).enumerate() {
        let last = (i + 1) * 16_000 >= rest.len();
        bytes.extend(h2raw::frame(
            h2raw::CONTINUATION,
            if last { h2raw::END_HEADERS } else { 0 },
            1,
            chunk,
        ));
    }
    raw.send(&bytes).await.unwrap();
    raw.send(&h2raw::frame(h2raw::DATA, h2raw::END_STREAM, 1, b"{}"))
        .await
        .unwrap();
    let mut answer = None;
    let deadline = tokio::time::Instant::now() + ENDS_WITHIN;
    while answer.is_none() {
        let frame = tokio::time::timeout_at(deadline, raw.frames.recv())
            .await
            .expect("no answer to the oversized header block")
            .expect("connection closed");
        if frame.stream == 1 && matches!(frame.kind, h2raw::HEADERS | h2raw::RST_STREAM) {
            answer = Some(frame);
        }
    }
    let answer = answer.unwrap();
    println!(
        "oversized HTTP/2 header block answered with frame type {}",
        answer.kind
    );
    if answer.kind == h2raw::HEADERS {
        // `:status: 431`: a literal with name index 8 and the value "431" in HPACK's
        // Huffman code (011010 011001 00001, padded with ones).
        assert!(
            answer.payload.starts_with(&[0x48, 0x83, 0x69, 0x90, 0xff]),
            "{answer:?}"
        );
    }
    let ok = h2raw::post_mutate();
    let body = serde_json::to_vec(&review("after", &["nginx"])).unwrap();
    raw.send(&h2raw::frame(h2raw::HEADERS, h2raw::END_HEADERS, 3, &ok))
        .await
        .unwrap();
    raw.send(&h2raw::frame(h2raw::DATA, h2raw::END_STREAM, 3, &body))
        .await
        .unwrap();
    let mut answered = false;
    while !answered {
        let frame = tokio::time::timeout_at(deadline, raw.frames.recv())
            .await
            .expect("no answer on the same connection")
            .expect("connection closed");
        answered = frame.stream == 3 && frame.kind == h2raw::DATA;
    }
    canary.check("oversized headers").await;
    server.stop().await;
}

/// Connects TLS (h1) and returns the stream.
async fn tls_h1(server: &TestServer) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    server
        .client(Proto::H1)
        .connect_tls(server.webhook_addr)
        .await
        .unwrap()
}

/// Reads until the server closes; what it sent.
async fn read_to_close<R: tokio::io::AsyncRead + Unpin>(reader: &mut R) -> Vec<u8> {
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => return all,
            Ok(n) => all.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_while_others_are_served() {
    let server = abuse_server().await;
    let canary = Canary::start(&server);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    // Slowloris: 40 connections trickling request headers, one byte every 100 ms.
    for _ in 0..40 {
        let stream = tls_h1(&server).await;
        tasks.spawn(async move {
            let (mut reader, mut writer) = tokio::io::split(stream);
            let trickle = tokio::spawn(async move {
                for byte in b"POST /mutate HTTP/1.1\r\nhost: localhost\r\nx-slow: "
                    .iter()
                    .cycle()
                {
                    if writer.write_all(&[*byte]).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            });
            let answer = read_to_close(&mut reader).await;
            trickle.abort();
            ("trickled headers", answer)
        });
    }
    // Headers complete, body trickled: 408 after --body-read-timeout.
    for _ in 0..10 {
        let stream = tls_h1(&server).await;
        tasks.spawn(async move {
            let (mut reader, mut writer) = tokio::io::split(stream);
            writer
                .write_all(
                    b"POST /mutate HTTP/1.1\r\nhost: localhost\r\ncontent-length: 100000\r\n\r\n",
                )
                .await
                .unwrap();
            let trickle = tokio::spawn(async move {
                loop {
                    if writer.write_all(b" ").await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            });
            let answer = read_to_close(&mut reader).await;
            trickle.abort();
            ("trickled body", answer)
        });
    }
    // Pipelined requests whose answers are never read: once the socket buffers are full
    // our write is stuck, and after --idle-timeout the server gives up on the client.
    for _ in 0..2 {
        let stream = tls_h1(&server).await;
        let body = serde_json::to_vec(&review("unread", &["nginx"])).unwrap();
        tasks.spawn(async move {
            let (_reader, mut writer) = tokio::io::split(stream);
            let mut request = format!(
                "POST /mutate HTTP/1.1\r\nhost: localhost\r\ncontent-length: {}\r\n\r\n",
                body.len()
            )
            .into_bytes();
            request.extend_from_slice(&body);
            let mut sent = 0usize;
            while writer.write_all(&request).await.is_ok() {
                sent += 1;
            }
            assert!(sent > 100, "cut off after {sent} requests");
            ("answers never read", Vec::new())
        });
    }
    // TCP only, never a ClientHello; TLS done, never a byte; half a ClientHello.
    for what in ["no ClientHello", "silent after TLS", "half a ClientHello"] {
        for _ in 0..10 {
            let addr = server.webhook_addr;
            let stream = if what == "silent after TLS" {
                Some(tls_h1(&server).await)
            } else {
                None
            };
            tasks.spawn(async move {
                let answer = match stream {
                    Some(mut tls) => read_to_close(&mut tls).await,
                    None => {
                        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
                        if what == "half a ClientHello" {
                            tcp.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
                                .await
                                .unwrap();
                        }
                        read_to_close(&mut tcp).await
                    }
                };
                (what, answer)
            });
        }
    }
    let mut closed = std::collections::BTreeMap::<&str, (usize, Duration)>::new();
    while let Some(result) = tokio::time::timeout(ENDS_WITHIN, tasks.join_next())
        .await
        .expect("a slow client was never cut off")
    {
        let (what, answer) = result.unwrap();
        if what == "trickled body" {
            let text = String::from_utf8_lossy(&answer);
            assert!(text.starts_with("HTTP/1.1 408"), "{text}");
            assert!(text.contains("--body-read-timeout"), "{text}");
        } else if what == "trickled headers" {
            // hyper answers 408 or just closes.
            let text = String::from_utf8_lossy(&answer);
            assert!(
                text.is_empty() || text.starts_with("HTTP/1.1 408"),
                "{text}"
            );
        }
        let entry = closed.entry(what).or_default();
        entry.0 += 1;
        entry.1 = entry.1.max(started.elapsed());
    }
    for (what, (count, last)) in &closed {
        println!("{count} × {what}: all cut off within {last:?}");
    }
    assert_eq!(closed.values().map(|(n, _)| n).sum::<usize>(), 82);
    canary.check("slow clients").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_idle_connections_are_closed_and_do_not_block_others() {
    let server = abuse_server().await;
    let canary = Canary::start(&server);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    // 300 TCP connections that never speak, 200 TLS connections that never speak, and
    // 100 + 100 kept-alive connections that made one request and then fell silent.
    for _ in 0..300 {
        let mut tcp = tokio::net::TcpStream::connect(server.webhook_addr)
            .await
            .unwrap();
        tasks.spawn(async move { ("TCP, silent", read_to_close(&mut tcp).await.len()) });
    }
    for _ in 0..200 {
        let mut tls = tls_h1(&server).await;
        tasks.spawn(async move { ("TLS, silent", read_to_close(&mut tls).await.len()) });
    }
    let body = serde_json::to_vec(&review("idle", &["nginx"])).unwrap();
    for proto in [Proto::H1, Proto::H2] {
        for _ in 0..100 {
            let mut conn = server
                .client(proto)
                .connect(server.webhook_addr)
                .await
                .unwrap();
            assert_eq!(
                conn.post("/mutate", body.clone()).await.unwrap().status,
                200
            );
            let label = if proto == Proto::H1 {
                "HTTP/1.1, idle after a request"
            } else {
                "HTTP/2, idle after a request"
            };
            tasks.spawn(async move {
                // Wait for the server to close: the next request fails.
                let mut waited = Duration::ZERO;
                loop {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    waited += Duration::from_millis(250);
                    if conn.is_closed() {
                        return (label, 0);
                    }
                    assert!(waited < ENDS_WITHIN, "{label} never closed");
                }
            });
        }
    }
    let mut closed = std::collections::BTreeMap::<&str, (usize, Duration)>::new();
    while let Some(result) = tokio::time::timeout(ENDS_WITHIN, tasks.join_next())
        .await
        .expect("an idle connection was never closed")
    {
        let (what, _) = result.unwrap();
        let entry = closed.entry(what).or_default();
        entry.0 += 1;
        entry.1 = entry.1.max(started.elapsed());
    }
    for (what, (count, last)) in &closed {
        println!("{count} × {what}: all closed within {last:?}");
    }
    assert_eq!(closed.values().map(|(n, _)| n).sum::<usize>(), 700);
    canary.check("idle connections").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_connections_clients_wait_and_are_served_when_a_slot_frees() {
    let server = server::start(|settings| {
        settings.limits.max_connections = 8;
        settings.limits.header_read_timeout = Duration::from_secs(1);
    })
    .await;
    // Eight silent TLS connections take every slot...
    let mut silent = Vec::new();
    for _ in 0..8 {
        silent.push(tls_h1(&server).await);
    }
    // ...so a ninth client's handshake waits in the accept queue until the silent ones
    // are cut off (1 s), and is then answered.
    let cut_off = Arc::new(AtomicU64::new(0));
    let mut watchers = Vec::new();
    for mut tls in silent {
        let cut_off = Arc::clone(&cut_off);
        watchers.push(tokio::spawn(async move {
            read_to_close(&mut tls).await;
            cut_off.fetch_add(1, Ordering::SeqCst);
        }));
    }
    let body = serde_json::to_vec(&review("ninth", &["nginx"])).unwrap();
    let reply = tokio::time::timeout(
        ENDS_WITHIN,
        server
            .client(Proto::H2)
            .post(server.webhook_addr, "/mutate", body),
    )
    .await
    .expect("the ninth client was never served")
    .unwrap();
    assert_eq!(reply.status, 200);
    let before = cut_off.load(Ordering::SeqCst);
    assert!(before >= 1, "served before any slot was free");
    for watcher in watchers {
        watcher.await.unwrap();
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_floods_end_the_flooding_connection_only() {
    let server = abuse_server().await;
    let canary = Canary::start(&server);
    let block = h2raw::post_mutate();

    // Stream flood: 1000 requests opened at once, bodies never sent. Streams past
    // --max-concurrent-streams (128) are refused; the open ones get 408 when the body
    // timeout passes.
    let mut raw = RawH2::connect(server.webhook_addr, server.ca.pem.as_bytes())
        .await
        .unwrap();
    let mut bytes = Vec::new();
    for i in 0..1000u32 {
        bytes.extend(h2raw::frame(
            h2raw::HEADERS,
            h2raw::END_HEADERS,
            2 * i + 1,
            &block,
        ));
    }
    raw.send(&bytes).await.unwrap();
    let (frames, closed) = raw.frames_until_closed(Duration::from_secs(6)).await;
    let refused = frames
        .iter()
        .filter(|f| f.kind == h2raw::RST_STREAM && f.error_code() == Some(h2raw::REFUSED_STREAM))
        .count();
    let answered = frames.iter().filter(|f| f.kind == h2raw::HEADERS).count();
    let goaway = frames.iter().find(|f| f.kind == h2raw::GOAWAY);
    println!(
        "stream flood: {refused} refused, {answered} answered, goaway {:?}, closed {closed}",
        goaway.and_then(h2raw::Frame::error_code)
    );
    assert!(
        refused + answered > 0 || goaway.is_some(),
        "no answer to a stream flood"
    );
    assert!(answered <= 128, "{answered} streams answered at once");

    // Rapid reset (CVE-2023-44487): open and cancel 20000 streams.
    let mut raw = RawH2::connect(server.webhook_addr, server.ca.pem.as_bytes())
        .await
        .unwrap();
    let mut bytes = Vec::new();
    for i in 0..20_000u32 {
        bytes.extend(h2raw::frame(
            h2raw::HEADERS,
            h2raw::END_HEADERS,
            2 * i + 1,
            &block,
        ));
        bytes.extend(h2raw::frame(
            h2raw::RST_STREAM,
            0,
            2 * i + 1,
            &h2raw::CANCEL.to_be_bytes(),
        ));
    }
    let sent = raw.send(&bytes).await;
    let (frames, closed) = raw.frames_until_closed(ENDS_WITHIN).await;
    let goaway = frames.iter().find(|f| f.kind == h2raw::GOAWAY).cloned();
    println!(
        "rapid reset: send {}, goaway {:?}, closed {closed}",
        if sent.is_ok() { "completed" } else { "cut off" },
        goaway.as_ref().and_then(h2raw::Frame::error_code)
    );
    assert!(closed, "the rapid-reset connection was not closed");
    assert_eq!(
        goaway.and_then(|g| g.error_code()),
        Some(h2raw::ENHANCE_YOUR_CALM),
        "expected GOAWAY ENHANCE_YOUR_CALM"
    );

    // CONTINUATION flood: one header block that never ends.
    let mut raw = RawH2::connect(server.webhook_addr, server.ca.pem.as_bytes())
        .await
        .unwrap();
    raw.send(&h2raw::frame(h2raw::HEADERS, 0, 1, &block))
        .await
        .unwrap();
    let pad = h2raw::padding_header(16_000);
    let mut sent_bytes = 0usize;
    let mut cut = false;
    for _ in 0..2000 {
        if raw
            .send(&h2raw::frame(h2raw::CONTINUATION, 0, 1, &pad))
            .await
            .is_err()
        {
            cut = true;
            break;
        }
        sent_bytes += pad.len();
    }
    let (frames, closed) = raw.frames_until_closed(ENDS_WITHIN).await;
    let ended = frames
        .iter()
        .find(|f| f.kind == h2raw::GOAWAY || (f.kind == h2raw::RST_STREAM && f.stream == 1))
        .cloned();
    println!(
        "CONTINUATION flood: {} KiB sent before the end (cut off: {cut}), {:?} code {:?}, closed {closed}",
        sent_bytes / 1024,
        ended.as_ref().map(|f| f.kind),
        ended.as_ref().and_then(h2raw::Frame::error_code)
    );
    assert!(
        closed || ended.is_some(),
        "an endless header block was accepted"
    );
    assert!(
        sent_bytes < 32 << 20,
        "read {sent_bytes} bytes of one header block"
    );

    canary.check("HTTP/2 floods").await;
    server.stop().await;
}
