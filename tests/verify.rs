//! `verify` against real registries: the Harbor stand-in with token authentication
//! (Debian's docker-registry as upstream and as pull-through cache behind nginx with
//! Harbor's project prefix, and a token server playing Harbor's core), and the real
//! `harbor-pilot serve` answering AdmissionReviews.

// Test code: a failed setup step should panic with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::client::{Client, Proto};
use common::pilot::Pilot;
use common::registry::{HarborStandIn, PROJECT};
use serde_json::Value;

/// A harbor-pilot whose Harbor is the stand-in at `harbor` (the stand-in's own address,
/// or a slow way to it), verifying with `budget`.
fn start(standin: &HarborStandIn, harbor: &str, budget: &str, dir: &Path) -> Pilot {
    let ca = dir.join("harbor-ca.pem");
    std::fs::write(&ca, &standin.ca.pem).unwrap();
    let config: PathBuf = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "harbor: {harbor}\nproxies:\n  docker.io: {PROJECT}\n  ghcr.io: ghcr-proxy\n\
             verify:\n  budget: {budget}\n  caFile: {}\n",
            ca.display()
        ),
    )
    .unwrap();
    Pilot::start(&config, &[])
}

/// Posts a Pod CREATE with `images`; (answer, time it took).
async fn admit(pilot: &Pilot, uid: &str, images: &[&str]) -> (Value, Duration) {
    let addr: SocketAddr = pilot
        .url
        .trim_start_matches("https://")
        .trim_end_matches("/mutate")
        .parse()
        .unwrap();
    let client = Client::new(pilot.ca_pem.as_bytes(), Proto::H2);
    let body = serde_json::to_vec(&common::pod_review(uid, images)).unwrap();
    let started = Instant::now();
    let reply = client.post(addr, "/mutate", body).await.unwrap();
    let took = started.elapsed();
    assert_eq!(reply.status, 200);
    (reply.json()["response"].clone(), took)
}

/// The images after the answer's patch, in container order.
fn images_after(response: &Value, images: &[&str]) -> Vec<String> {
    let mut pod = common::pod_review("x", images)["request"]["object"].clone();
    if let Some(patch) = response["patch"].as_str() {
        let patch: json_patch::Patch = serde_json::from_slice(
            &base64::engine::general_purpose::STANDARD
                .decode(patch)
                .unwrap(),
        )
        .unwrap();
        json_patch::patch(&mut pod, &patch).unwrap();
    }
    pod["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["image"].as_str().unwrap().to_owned())
        .collect()
}

fn warnings(response: &Value) -> Vec<String> {
    response["warnings"]
        .as_array()
        .map(|w| w.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

/// nginx access log lines for `HEAD <path>` with `status`.
fn heads(standin: &HarborStandIn, path: &str, status: u16) -> usize {
    std::fs::read_to_string(standin.dir.path().join("nginx/access.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&format!("\"HEAD {path} ")) && l.contains(&format!("\" {status} ")))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewrites_what_harbor_serves_and_keeps_what_it_does_not() {
    let standin = HarborStandIn::start_with_token_auth();
    standin.push_image("library/nginx", "1.25").await;
    let dir = tempfile::tempdir().unwrap();
    let mut pilot = start(&standin, &standin.harbor(), "2s", dir.path());
    let harbor = standin.harbor();
    let images = ["nginx:1.25", "nginx:nope", "ghcr.io/org/app:1"];
    let (response, _) = admit(&pilot, "first", &images).await;
    assert_eq!(
        images_after(&response, &images),
        [
            format!("{harbor}/{PROJECT}/library/nginx:1.25"),
            "nginx:nope".to_owned(),
            "ghcr.io/org/app:1".to_owned(),
        ]
    );
    assert_eq!(
        warnings(&response),
        [
            // A HEAD answer has no body, so no registry error code.
            "harbor-pilot: c1 image \"nginx:nope\" stays upstream: Harbor cannot serve it (HTTP 404)",
            // A project the front does not serve: the token does not grant it.
            "harbor-pilot: c2 image \"ghcr.io/org/app:1\" stays upstream: Harbor cannot serve it (HTTP 401)",
        ]
    );
    let token_requests = standin.token.as_ref().unwrap().requests();
    assert!(token_requests >= 1, "the token flow was not used");
    // A second pod with the same images: answered from memory, nothing asked again.
    let (again, _) = admit(&pilot, "second", &images).await;
    assert_eq!(
        images_after(&again, &images),
        images_after(&response, &images)
    );
    assert_eq!(
        pilot
            .metric("harbor_pilot_verify_checks_total{result=\"served\"}")
            .await,
        1.0
    );
    assert_eq!(
        pilot
            .metric("harbor_pilot_verify_checks_total{result=\"not_served\"}")
            .await,
        2.0
    );
    assert_eq!(
        pilot.metric("harbor_pilot_verify_cache_hits_total").await,
        3.0
    );
    assert_eq!(
        pilot
            .metric("harbor_pilot_images_skipped_total{reason=\"not_served_by_harbor\"}")
            .await,
        4.0
    );
    assert_eq!(
        heads(
            &standin,
            &format!("/v2/{PROJECT}/library/nginx/manifests/1.25"),
            200
        ),
        1
    );
}

/// A TCP relay to `target` that holds every new connection for `delay` before passing
/// bytes on: a Harbor that is slow to answer.
async fn slow_relay(target: SocketAddr, delay: Duration) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_harbor_costs_an_admission_the_budget_and_the_next_pod_knows() {
    let standin = HarborStandIn::start_with_token_auth();
    standin.push_image("library/nginx", "1.25").await;
    let slow = slow_relay(
        standin.harbor().parse().unwrap(),
        Duration::from_millis(1500),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut pilot = start(&standin, &slow.to_string(), "250ms", dir.path());
    let (response, took) = admit(&pilot, "slow", &["nginx:1.25"]).await;
    assert_eq!(images_after(&response, &["nginx:1.25"]), ["nginx:1.25"]);
    assert_eq!(
        warnings(&response),
        [
            "harbor-pilot: 1 image stays upstream this time: Harbor's answer did not come within \
          verify.budget (the next pod will know)"
        ]
    );
    // Behaviour, not speed: the admission did not wait for Harbor's answer (1.5 s).
    assert!(
        took < Duration::from_millis(1500),
        "answered after {took:?}"
    );
    assert_eq!(
        pilot
            .metric("harbor_pilot_verify_budget_exceeded_total")
            .await,
        1.0
    );
    // The check goes on; once it is done, the next pod is rewritten.
    let deadline = Instant::now() + Duration::from_secs(30);
    while pilot
        .metric("harbor_pilot_verify_checks_total{result=\"served\"}")
        .await
        < 1.0
    {
        assert!(Instant::now() < deadline, "the check never finished");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (next, _) = admit(&pilot, "next", &["nginx:1.25"]).await;
    assert_eq!(
        images_after(&next, &["nginx:1.25"]),
        [format!("{slow}/{PROJECT}/library/nginx:1.25")]
    );
    println!("admission with a slow Harbor answered in {took:?} (budget 250ms)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_admissions_of_a_new_image_make_one_check() {
    let standin = HarborStandIn::start_with_token_auth();
    standin.push_image("library/redis", "7").await;
    let dir = tempfile::tempdir().unwrap();
    let mut pilot = start(&standin, &standin.harbor(), "2s", dir.path());
    let pilot_ref = &pilot;
    let answers = futures::future::join_all(
        (0..100).map(|i| async move { admit(pilot_ref, &format!("u{i}"), &["redis:7"]).await.0 }),
    )
    .await;
    let harbor = standin.harbor();
    for response in &answers {
        assert_eq!(
            images_after(response, &["redis:7"]),
            [format!("{harbor}/{PROJECT}/library/redis:7")]
        );
    }
    let path = format!("/v2/{PROJECT}/library/redis/manifests/7");
    // One check: one HEAD answered 401 (the token challenge) and one answered 200.
    assert_eq!(heads(&standin, &path, 200), 1);
    assert_eq!(heads(&standin, &path, 401), 1);
    assert_eq!(
        pilot
            .metric("harbor_pilot_verify_checks_total{result=\"served\"}")
            .await,
        1.0
    );
}
