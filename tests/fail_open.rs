//! Fail open, against a real registry stack standing in for Harbor (`common::registry`):
//! rewriting while it is up (and the rewritten image really resolves through it), leaving
//! images upstream while it is down, hanging, half-healthy or not there yet, coming back
//! after `successThreshold` probes, and not flapping below the thresholds.
//!
//! Times are printed, not asserted: the machines are shared. Waits have generous
//! deadlines; what is asserted is what happened and in which order.

// Test code: a failed setup step should panic with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::certs::TestCa;
use common::client::{Client, Connection, Proto};
use common::registry::{HarborStandIn, PROJECT, healthy_except};
use common::server::admin_get;
use harbor_pilot::app::{Admin, Webhook};
use harbor_pilot_core::reference::ImageRef;
use serde_json::{Value, json};

const DEADLINE: Duration = Duration::from_secs(30);

struct Pilot {
    admin: Admin,
    webhook: Webhook,
    client: Client,
    _dir: tempfile::TempDir,
}

fn config_yaml(standin: &HarborStandIn, health: &str) -> String {
    format!(
        "harbor: {harbor}\nproxies:\n  docker.io: {PROJECT}\nhealth:\n  url: {url}\n  caFile: {ca}\n{health}",
        harbor = standin.harbor(),
        url = standin.url("/api/v2.0/health"),
        ca = standin.dir.path().join("ca.crt").display(),
    )
}

/// harbor-pilot in-process, pointed at the stand-in; `health` adds keys to the
/// `health` section (two-space indented lines).
async fn start_pilot(standin: &HarborStandIn, health: &str) -> Pilot {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("webhook CA");
    common::server::write_leaf(dir.path(), &ca.leaf("webhook"));
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, config_yaml(standin, health)).unwrap();
    let mut settings = common::server::settings(dir.path());
    settings.config = config;
    let admin = Admin::start(settings.admin_addr, settings.limits, settings.drain_timeout)
        .await
        .unwrap();
    let webhook = Webhook::start(&settings, &admin).await.unwrap();
    Pilot {
        client: Client::new(ca.pem.as_bytes(), Proto::H2),
        admin,
        webhook,
        _dir: dir,
    }
}

impl Pilot {
    async fn metric(&self, series: &str) -> f64 {
        metric_at(self.admin.addr(), series).await
    }

    async fn connect(&self) -> Connection {
        self.client.connect(self.webhook.addr()).await.unwrap()
    }

    async fn stop(self) {
        self.webhook.shutdown().await;
        self.admin.stop().await;
    }
}

async fn metric_at(admin: SocketAddr, series: &str) -> f64 {
    common::server::metric(admin, series)
        .await
        .unwrap_or_else(|| panic!("no series {series}"))
}

/// What the webhook made of a one-container pod CREATE.
#[derive(Debug)]
struct Admitted {
    image: Option<String>,
    warnings: Vec<String>,
}

impl Admitted {
    fn failed_open(&self) -> bool {
        self.image.is_none()
            && self
                .warnings
                .iter()
                .any(|w| w.contains("Harbor is unavailable"))
    }
}

async fn admit(conn: &mut Connection, image: &str) -> Admitted {
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "ns"},
                     "spec": {"containers": [{"name": "c", "image": image}]}});
    let review = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "u", "operation": "CREATE", "userInfo": {},
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"}, "object": pod}});
    let reply = conn
        .post("/mutate", serde_json::to_vec(&review).unwrap())
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    let response = &reply.json()["response"];
    assert_eq!(response["allowed"], true);
    let image = response["patch"].as_str().map(|patch| {
        let patch = base64::engine::general_purpose::STANDARD
            .decode(patch)
            .unwrap();
        let patch: Value = serde_json::from_slice(&patch).unwrap();
        patch[0]["value"].as_str().unwrap().to_owned()
    });
    let warnings = response["warnings"]
        .as_array()
        .map(|w| w.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default();
    Admitted { image, warnings }
}

/// Admits `image` every 20 ms until `done` says so; returns the time it took.
async fn admit_until(
    conn: &mut Connection,
    image: &str,
    done: impl Fn(&Admitted) -> bool,
) -> Duration {
    let started = Instant::now();
    loop {
        let admitted = admit(conn, image).await;
        if done(&admitted) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < DEADLINE,
            "still {admitted:?} after {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_for(what: &str, mut condition: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while !condition().await {
        assert!(
            started.elapsed() < DEADLINE,
            "{what}: not within {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const UP: &str = "harbor_pilot_harbor_up";
const TO_DOWN: &str = "harbor_pilot_harbor_transitions_total{to=\"down\"}";
const TO_UP: &str = "harbor_pilot_harbor_transitions_total{to=\"up\"}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewrites_while_harbor_is_up_and_the_image_resolves_through_it() {
    let standin = HarborStandIn::start();
    let digest = standin.push_image("library/alpine", "3.19").await;
    let pilot = start_pilot(&standin, "  interval: 200ms\n  timeout: 200ms\n").await;
    wait_for("harbor up", async || pilot.metric(UP).await == 1.0).await;
    let mut conn = pilot.connect().await;

    for (written, reference) in [
        ("alpine:3.19", "3.19".to_owned()),
        (&*format!("alpine@{digest}"), digest.clone()),
    ] {
        let admitted = admit(&mut conn, written).await;
        let rewritten = admitted
            .image
            .unwrap_or_else(|| panic!("{written} not rewritten: {:?}", admitted.warnings));
        let parsed = ImageRef::parse(&rewritten).unwrap();
        assert_eq!(parsed.domain(), standin.harbor());
        assert_eq!(parsed.path(), format!("{PROJECT}/library/alpine"));
        // What the kubelet would ask for: the manifest, through the proxy-cache project.
        let (status, served) = standin.head_manifest(parsed.path(), &reference).await;
        assert_eq!(status, 200, "{rewritten}");
        assert_eq!(served.as_deref(), Some(digest.as_str()), "{rewritten}");
    }
    // An image the upstream does not have is not found through the cache either.
    let (status, _) = standin
        .head_manifest(&format!("{PROJECT}/library/alpine"), "nope")
        .await;
    assert_eq!(status, 404);
    pilot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fails_open_when_harbor_stops_and_resumes_after_success_threshold() {
    let mut standin = HarborStandIn::start();
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("webhook CA");
    common::server::write_leaf(dir.path(), &ca.leaf("webhook"));
    let config = dir.path().join("config.yaml");
    let (interval, timeout, failures, successes) = (250, 250, 2, 2);
    std::fs::write(
        &config,
        config_yaml(
            &standin,
            &format!(
                "  interval: {interval}ms\n  timeout: {timeout}ms\n  failureThreshold: {failures}\n  successThreshold: {successes}\n"
            ),
        ),
    )
    .unwrap();
    let cert = dir.path().join("tls.crt").display().to_string();
    let key = dir.path().join("tls.key").display().to_string();
    // The real binary, so its log shows what an operator sees.
    let mut serve = common::process::Serve::start_with_config(
        &config,
        &["--tls-cert-file", &cert, "--tls-key-file", &key],
    );
    let webhook = serve.addr("webhook listening");
    let admin = serve.addr("admin port listening (/livez, /readyz, /metrics)");
    wait_for("harbor up", async || metric_at(admin, UP).await == 1.0).await;
    let mut conn = Client::new(ca.pem.as_bytes(), Proto::H2)
        .connect(webhook)
        .await
        .unwrap();
    assert!(admit(&mut conn, "nginx:1.27").await.image.is_some());

    standin.stop();
    let took = admit_until(&mut conn, "nginx:1.27", Admitted::failed_open).await;
    println!(
        "fail open {} ms after Harbor stopped (interval x failureThreshold + timeout = {} ms)",
        took.as_millis(),
        interval * failures + timeout
    );
    let admitted = admit(&mut conn, "nginx:1.27").await;
    assert_eq!(
        admitted.warnings,
        ["harbor-pilot: Harbor is unavailable; 1 image left on its upstream registry (fail open)"]
    );
    assert_eq!(metric_at(admin, UP).await, 0.0);
    assert!(metric_at(admin, "harbor_pilot_fail_open_admissions_total").await >= 2.0);
    assert!(
        metric_at(
            admin,
            "harbor_pilot_admission_requests_total{operation=\"CREATE\",outcome=\"fail_open\"}"
        )
        .await
            >= 2.0
    );
    assert!(
        metric_at(
            admin,
            "harbor_pilot_images_skipped_total{reason=\"harbor_unavailable\"}"
        )
        .await
            >= 2.0
    );
    // Harbor's outage does not take the webhook out of its Service.
    assert_eq!(admin_get(admin, "/readyz").await.0, 200);
    // Images that would not move anyway get no warning.
    assert!(admit(&mut conn, "gcr.io/a/b:1").await.warnings.is_empty());

    let probes_before = standin.health_requests();
    standin.restart();
    let took = admit_until(&mut conn, "nginx:1.27", |a| a.image.is_some()).await;
    println!(
        "rewriting again {} ms after Harbor returned (successThreshold x interval = {} ms)",
        took.as_millis(),
        successes * interval
    );
    let probes = standin.health_requests() - probes_before;
    assert!(
        probes >= successes as usize,
        "up again after {probes} successful probes"
    );
    assert_eq!(metric_at(admin, TO_DOWN).await, 1.0);
    assert_eq!(metric_at(admin, TO_UP).await, 2.0);

    // One log line per change of state, however many admissions failed open.
    let logs = serve.drain_logs();
    // The start-up warm-up review goes through the logging path without a line.
    assert!(logs.iter().all(|l| l["uid"] != "warm-up"), "{logs:?}");
    assert!(logs.iter().any(|l| l["message"] == "images rewritten"));
    let count = |message: &str| logs.iter().filter(|l| l["message"] == message).count();
    assert_eq!(count("Harbor is available; rewriting images"), 2);
    assert_eq!(
        count("Harbor is unavailable; images stay on their upstream registries (fail open)"),
        1
    );
    let down = logs
        .iter()
        .find(|l| {
            l["message"]
                == "Harbor is unavailable; images stay on their upstream registries (fail open)"
        })
        .unwrap();
    assert_eq!(down["level"], "WARN");
    assert!(
        down["error"].as_str().unwrap().contains("cannot connect"),
        "{down}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fails_open_when_harbor_hangs_and_admissions_never_wait_for_the_probe() {
    let mut standin = HarborStandIn::start();
    // A probe that hangs holds its connection for the whole timeout.
    let pilot = start_pilot(
        &standin,
        "  interval: 4s\n  timeout: 4s\n  failureThreshold: 1\n",
    )
    .await;
    wait_for("harbor up", async || pilot.metric(UP).await == 1.0).await;
    let mut conn = pilot.connect().await;

    let mut before = Vec::new();
    for _ in 0..200 {
        let started = Instant::now();
        assert!(admit(&mut conn, "nginx:1.27").await.image.is_some());
        before.push(started.elapsed());
    }

    let hang = standin.hang();
    wait_for("a probe stuck on the hanging Harbor", async || {
        hang.open() >= 1
    })
    .await;
    let mut during = Vec::new();
    for _ in 0..200 {
        let started = Instant::now();
        // Still up: the probe has not timed out yet, so images are still rewritten.
        assert!(admit(&mut conn, "nginx:1.27").await.image.is_some());
        during.push(started.elapsed());
    }
    // All 200 were answered while the probe was still waiting: none waited for it.
    assert!(
        hang.open() >= 1,
        "the probe ended before the admissions did"
    );
    let p50 = |v: &mut Vec<Duration>| {
        v.sort();
        (v[v.len() / 2], v[v.len() * 99 / 100])
    };
    let ((b50, b99), (d50, d99)) = (p50(&mut before), p50(&mut during));
    println!(
        "admission latency before the hang p50 {b50:?} p99 {b99:?}; during a hanging probe p50 {d50:?} p99 {d99:?}"
    );

    let took = admit_until(&mut conn, "nginx:1.27", Admitted::failed_open).await;
    println!(
        "fail open {} ms after the probe started hanging (timeout 4000 ms)",
        took.as_millis()
    );
    assert_eq!(pilot.metric(UP).await, 0.0);
    assert!(
        pilot
            .metric("harbor_pilot_harbor_probes_total{result=\"failure\"}")
            .await
            >= 1.0
    );
    hang.stop();
    pilot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unhealthy_trivy_keeps_rewriting_an_unhealthy_registry_does_not() {
    let standin = HarborStandIn::start();
    standin.set_health(Some(&healthy_except(&["trivy", "jobservice"])));
    let pilot = start_pilot(&standin, "  interval: 200ms\n  timeout: 200ms\n").await;
    wait_for("harbor up", async || pilot.metric(UP).await == 1.0).await;
    let seen = standin.health_requests();
    wait_for("five more probes", async || {
        standin.health_requests() >= seen + 5
    })
    .await;
    assert_eq!(pilot.metric(UP).await, 1.0);
    assert_eq!(pilot.metric(TO_DOWN).await, 0.0);
    let mut conn = pilot.connect().await;
    assert!(admit(&mut conn, "redis:7").await.image.is_some());

    standin.set_health(Some(&healthy_except(&["registry"])));
    admit_until(&mut conn, "redis:7", Admitted::failed_open).await;
    assert_eq!(pilot.metric(TO_DOWN).await, 1.0);
    pilot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flapping_below_the_thresholds_changes_nothing() {
    let standin = HarborStandIn::start();
    let pilot = start_pilot(
        &standin,
        "  interval: 250ms\n  timeout: 250ms\n  failureThreshold: 3\n  successThreshold: 3\n",
    )
    .await;
    wait_for("harbor up", async || pilot.metric(UP).await == 1.0).await;
    let healthy = healthy_except(&[]);

    // Each answer is set right after a probe was served, so the next probe gets it.
    let mut seen = standin.health_requests();
    let mut serve = async |answer: Option<&str>| {
        standin.set_health(answer);
        wait_for("the next probe", async || standin.health_requests() > seen).await;
        seen = standin.health_requests();
    };
    serve(Some(&healthy)).await;
    for _ in 0..6 {
        serve(None).await; // 503
        serve(Some(&healthy)).await;
    }
    assert_eq!(
        pilot.metric(TO_DOWN).await,
        0.0,
        "went down while flapping below failureThreshold"
    );
    assert_eq!(pilot.metric(UP).await, 1.0);

    for _ in 0..3 {
        serve(None).await;
    }
    wait_for("down after three failures", async || {
        pilot.metric(UP).await == 0.0
    })
    .await;
    for _ in 0..6 {
        serve(Some(&healthy)).await;
        serve(None).await;
    }
    assert_eq!(
        pilot.metric(TO_UP).await,
        1.0,
        "came back while flapping below successThreshold"
    );
    for _ in 0..3 {
        serve(Some(&healthy)).await;
    }
    wait_for("up after three successes", async || {
        pilot.metric(UP).await == 1.0
    })
    .await;
    assert_eq!(pilot.metric(TO_DOWN).await, 1.0);
    assert_eq!(pilot.metric(TO_UP).await, 2.0);
    pilot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fails_open_during_bootstrap_until_harbor_first_answers() {
    let mut standin = HarborStandIn::start();
    standin.stop(); // A fresh cluster: Harbor is not deployed yet.
    let pilot = start_pilot(&standin, "  interval: 200ms\n  timeout: 200ms\n").await;
    let mut conn = pilot.connect().await;
    let admitted = admit(&mut conn, "bitnami/redis:7.4").await;
    assert!(admitted.failed_open(), "{admitted:?}");
    assert_eq!(pilot.metric(UP).await, 0.0);
    // Not ready to rewrite, but ready to serve: the pods of Harbor itself must start.
    let (status, _) = admin_get(pilot.admin.addr(), "/readyz").await;
    assert_eq!(status, 200);

    standin.restart();
    admit_until(&mut conn, "docker.io/library/nginx:1.27", |a| {
        a.image.is_some()
    })
    .await;
    assert_eq!(pilot.metric(UP).await, 1.0);
    pilot.stop().await;
}
