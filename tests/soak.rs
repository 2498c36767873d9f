//! The soak: `harbor-pilot serve` (the binary this profile builds) answers admissions
//! over HTTP/2 at a steady rate, every answer is checked, and the server's resident
//! memory is sampled from /proc while it runs.
//!
//! CI runs 50,000 requests against the debug build. The long form, one million against
//! the release build (README, "Soak"):
//!
//! ```text
//! SOAK_REQUESTS=1000000 SOAK_RATE=5000 cargo test --release --test soak -- --nocapture
//! ```
//!
//! Pass: zero failed or wrong answers, and memory flat — after the first tenth of the
//! run (allocator and connection buffers warming up), resident memory never grows more
//! than 16 MiB or 50 % above where it was, whichever is more. A leak of 100 bytes per
//! request would add 95 MiB over a million. Rates and latencies are printed, not
//! asserted.

// Test code: a failed setup step should panic with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::certs::TestCa;
use common::client::{Client, Connection, Proto};
use common::process::Serve;
use serde_json::{Value, json};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Resident memory of `pid` in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// The request mix: pods to rewrite, an opted-out pod, an UPDATE that changes nothing,
/// a pod with an unparsable image, a real StatefulSet pod. `UID` marks the uid.
fn templates() -> Vec<String> {
    let mut rewrite = common::pod_review(
        "UID",
        &[
            "nginx:1.25",
            "quay.io/prometheus/node-exporter:v1.8.2",
            "ghcr.io/dexidp/dex:v2.45.1",
        ],
    );
    rewrite["request"]["object"]["metadata"]["annotations"] = json!({"team": "soak"});
    let mut opted_out = common::pod_review("UID", &["nginx:1.25"]);
    opted_out["request"]["object"]["metadata"]["labels"] =
        json!({"harbor-pilot.io/rewrite": "disabled"});
    let mut update = common::pod_review(
        "UID",
        &["harbor.example.com/docker-hub-proxy/library/nginx:1.25"],
    );
    update["request"]["operation"] = json!("UPDATE");
    update["request"]["oldObject"] = update["request"]["object"].clone();
    let bad_image = common::pod_review("UID", &["Not A Valid Image", "redis:7"]);
    let fixture = common::admission_fixtures()
        .into_iter()
        .find(|(file, _)| file.starts_with("001-"))
        .map(|(_, body)| {
            let mut v: Value = serde_json::from_slice(&body).unwrap();
            v["request"]["uid"] = json!("UID");
            v
        })
        .unwrap();
    [rewrite, opted_out, update, bad_image, fixture]
        .iter()
        .map(|v| serde_json::to_string(v).unwrap())
        .collect()
}

fn body_for(template: &str, uid: &str) -> Vec<u8> {
    template
        .replacen("\"uid\":\"UID\"", &format!("\"uid\":\"{uid}\""), 1)
        .into_bytes()
}

/// The answer with its uid blanked, for comparison with the first answer seen.
fn normalised(answer: &[u8]) -> Option<Value> {
    let mut v: Value = serde_json::from_slice(answer).ok()?;
    *v.pointer_mut("/response/uid")? = json!("UID");
    Some(v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_http2_admissions_all_answered_with_flat_memory() {
    let requests = env_or("SOAK_REQUESTS", 50_000);
    let rate = env_or("SOAK_RATE", 1_500);
    let connections = env_or("SOAK_CONNECTIONS", 4);
    let in_flight = env_or("SOAK_IN_FLIGHT", 256);

    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("soak CA");
    common::server::write_leaf(dir.path(), &ca.leaf("soak"));
    let cert = dir.path().join("tls.crt").display().to_string();
    let key = dir.path().join("tls.key").display().to_string();
    let mut serve = Serve::start(&["--tls-cert-file", &cert, "--tls-key-file", &key]);
    let addr = serve.addr("webhook listening");
    let pid = serve.pid();

    let client = Client::new(ca.pem.as_bytes(), Proto::H2);
    let mut conns: Vec<Connection> = Vec::new();
    for _ in 0..connections {
        conns.push(client.connect(addr).await.unwrap());
    }
    let templates = Arc::new(templates());
    // The expected answer to each template, from one request each before the run; the
    // admission fixture tests check these answers are right.
    let mut expected = Vec::new();
    for (i, template) in templates.iter().enumerate() {
        let reply = conns[0]
            .post("/mutate", body_for(template, &format!("expected-{i}")))
            .await
            .unwrap();
        assert_eq!(reply.status, 200);
        expected.push(normalised(&reply.body).unwrap());
    }
    assert!(expected[0]["response"]["patch"].is_string());
    assert!(expected[1]["response"].get("patch").is_none());
    let expected = Arc::new(expected);

    let done = Arc::new(AtomicU64::new(0));
    let sampler = {
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let mut samples = Vec::new();
            loop {
                let finished = done.load(Ordering::Relaxed);
                samples.push((finished, rss_kib(pid)));
                if finished >= requests {
                    return samples;
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        })
    };

    let permits = Arc::new(tokio::sync::Semaphore::new(
        usize::try_from(in_flight).unwrap(),
    ));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let latencies = Arc::new(std::sync::Mutex::new(Vec::<u32>::with_capacity(
        usize::try_from(requests).unwrap(),
    )));
    let started = Instant::now();
    let period = Duration::from_secs_f64(1.0 / rate as f64);
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..requests {
        tokio::time::sleep_until((started + period * u32::try_from(n).unwrap()).into()).await;
        let permit = Arc::clone(&permits).acquire_owned().await.unwrap();
        let mut conn = conns[usize::try_from(n % connections).unwrap()].h2_stream();
        let (templates, expected, failures, latencies, done) = (
            Arc::clone(&templates),
            Arc::clone(&expected),
            Arc::clone(&failures),
            Arc::clone(&latencies),
            Arc::clone(&done),
        );
        tasks.spawn(async move {
            let kind = usize::try_from(n).unwrap() % templates.len();
            let uid = format!("soak-{n}");
            let sent = Instant::now();
            let result = conn.post("/mutate", body_for(&templates[kind], &uid)).await;
            let micros = u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX);
            let verdict = match result {
                Ok(reply) if reply.status != 200 => Err(format!("{uid}: HTTP {}", reply.status)),
                Ok(reply) => {
                    let uid_ok = serde_json::from_slice::<Value>(&reply.body)
                        .is_ok_and(|v| v["response"]["uid"] == uid.as_str());
                    if uid_ok && normalised(&reply.body).as_ref() == Some(&expected[kind]) {
                        Ok(())
                    } else {
                        Err(format!(
                            "{uid}: unexpected answer {}",
                            String::from_utf8_lossy(&reply.body)
                        ))
                    }
                }
                Err(error) => Err(format!("{uid}: {error}")),
            };
            if let Err(failure) = verdict {
                failures.lock().unwrap().push(failure);
            }
            latencies.lock().unwrap().push(micros);
            done.fetch_add(1, Ordering::Relaxed);
            drop(permit);
        });
        // Reap finished tasks as we go so the set stays small.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = started.elapsed();
    let samples = sampler.join().unwrap();

    let mut latencies = latencies.lock().unwrap().clone();
    latencies.sort_unstable();
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize];
    let warm = requests / 10;
    let baseline = samples
        .iter()
        .find(|(finished, _)| *finished >= warm)
        .map_or(samples[0].1, |s| s.1);
    let after_warm: Vec<u64> = samples
        .iter()
        .filter(|(finished, _)| *finished >= warm)
        .map(|s| s.1)
        .collect();
    let peak = after_warm.iter().copied().max().unwrap_or(baseline);
    let end = samples.last().unwrap().1;
    let failures = failures.lock().unwrap().clone();
    println!(
        "soak: {requests} requests in {elapsed:.1?} ({:.0}/s, target {rate}/s) over {connections} HTTP/2 connections; \
         latency p50 {} µs, p99 {} µs, max {} µs; failures {}",
        requests as f64 / elapsed.as_secs_f64(),
        pct(0.50),
        pct(0.99),
        latencies.last().unwrap(),
        failures.len()
    );
    println!(
        "soak RSS: start {} KiB (before any request), after warm-up {baseline} KiB, peak {peak} KiB, end {end} KiB; {} samples",
        samples[0].1,
        samples.len()
    );
    assert!(
        failures.is_empty(),
        "{} failed, first: {:#?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    let allowed = baseline + (16 * 1024).max(baseline / 2);
    assert!(
        peak <= allowed,
        "resident memory grew from {baseline} KiB to {peak} KiB (allowed {allowed} KiB)"
    );

    // The server's own count agrees.
    let admin = serve.addr("admin port listening (/livez, /readyz, /metrics)");
    let (_, metrics) = common::server::admin_get(admin, "/metrics").await;
    let counted: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("harbor_pilot_admission_requests_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(counted as u64, requests + templates.len() as u64);
}
