//! The fallback controller through a real API server: Pods rewritten by the webhook, their
//! status written as a kubelet would (`ErrImagePull`, then `ImagePullBackOff`), and what
//! the API server stores afterwards.
//!
//! Like `tests/apiserver.rs`, a test binary with its own main (`harness = false`): one
//! control plane for every scenario; each scenario starts the harbor-pilots it needs (the
//! controllers watch every namespace, so scenarios run one after another).
//! `cargo test --test fallback -- <filter>` runs those whose name contains a filter.

// Test code: a failed setup step should panic with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use common::cluster::{Cluster, Options};
use common::pilot::{ClusterEnv, Pilot, images, map, originals, pod};
use common::registry::HarborStandIn;
use common::scenarios::Runner;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::{Value, json};

const HARBOR: &str = "harbor.example.com";
const FALLBACK: &str = "harbor-pilot.io/fallback";
const LABEL: &str = "harbor-pilot.io/rewritten";

fn main() -> ExitCode {
    let all = scenarios![ClusterEnv;
        a_container_stuck_past_the_wait_goes_back_to_its_original,
        an_init_container_goes_back_too,
        what_is_not_harbor_pilots_to_change_is_left_alone,
        with_harbor_down_a_stuck_container_goes_back_at_once,
        two_controllers_send_a_container_back_once,
        the_controller_recovers_when_the_api_server_restarts,
    ];
    Runner {
        what: "fallback",
        start: || Box::pin(ClusterEnv::new(Cluster::start(Options::default()))),
        before_each: |_| Box::pin(async {}),
        after_all: |_| {},
    }
    .run(&all)
}

// === helpers ===

/// A harbor-pilot with a `fallback` section, talking to the test cluster through its
/// kubeconfig, registered as the webhook; `extra` config is appended (health, say).
async fn start_pilot(env: &mut ClusterEnv, after: &str, extra: &str) -> (Pilot, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), HARBOR, after, extra);
    let kubeconfig = env.cluster.kubeconfig.display().to_string();
    let pilot = Pilot::start(&config, &["--kubeconfig", &kubeconfig]);
    env.point_webhook_at(&pilot.url.clone(), &pilot.ca_pem.clone())
        .await;
    let prefix = format!("{HARBOR}/");
    env.wait_for_probe("the harbor-pilot under test", |image| {
        image.starts_with(&prefix)
    })
    .await;
    (pilot, dir)
}

fn write_config(dir: &Path, harbor: &str, after: &str, extra: &str) -> PathBuf {
    let path = dir.join("config.yaml");
    std::fs::write(
        &path,
        format!(
            "harbor: {harbor}\nproxies:\n  docker.io: docker-hub-proxy\n  gcr.io: gcr-proxy\n\
             fallback:\n  after: {after}\n{extra}"
        ),
    )
    .unwrap();
    path
}

/// Writes a container's status the way the kubelet does when it cannot pull.
async fn stuck(env: &ClusterEnv, namespace: &str, name: &str, states: &[(&str, &str, &str)]) {
    // (list, container, waiting reason or "running")
    let status = |list: &str| -> Vec<Value> {
        states
            .iter()
            .filter(|(l, _, _)| *l == list)
            .map(|(_, container, reason)| {
                let state = if *reason == "running" {
                    json!({"running": {"startedAt": "2026-12-01T00:00:00Z"}})
                } else {
                    json!({"waiting": {"reason": reason,
                        "message": format!("failed to pull and unpack image: {container}: 503 Service Unavailable")}})
                };
                json!({"name": container, "image": "", "imageID": "", "ready": false,
                       "restartCount": 0, "state": state})
            })
            .collect()
    };
    let body = json!({"status": {
        "phase": "Pending",
        "containerStatuses": status("containers"),
        "initContainerStatuses": status("initContainers"),
    }});
    env.pods(namespace)
        .patch_status(name, &PatchParams::default(), &Patch::Merge(body))
        .await
        .unwrap();
}

/// Polls until `done` holds for the stored pod (up to `limit`); the pod.
async fn wait_pod(
    env: &ClusterEnv,
    namespace: &str,
    name: &str,
    limit: Duration,
    what: &str,
    done: impl Fn(&Pod) -> bool,
) -> Pod {
    let deadline = Instant::now() + limit;
    loop {
        let pod = env.get(namespace, name).await;
        if done(&pod) {
            return pod;
        }
        assert!(
            Instant::now() < deadline,
            "waited {limit:?} for {what}; pod has {:?}",
            images(&pod)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn fallback_annotation(pod: &Pod) -> Option<std::collections::BTreeMap<String, String>> {
    let value = pod.metadata.annotations.as_ref()?.get(FALLBACK)?;
    Some(serde_json::from_str(value).unwrap())
}

/// The `HarborFallback` Events about `pod`.
async fn fallback_events(env: &ClusterEnv, namespace: &str, pod: &str) -> Vec<Event> {
    Api::<Event>::namespaced(env.client.clone(), namespace)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| {
            e.reason.as_deref() == Some("HarborFallback")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(pod)
        })
        .collect()
}

fn hub(path: &str) -> String {
    format!("{HARBOR}/docker-hub-proxy/{path}")
}

// === scenarios ===

/// A rewritten Pod whose container `web` the "kubelet" reports `ErrImagePull`, then
/// `ImagePullBackOff`: not sent back before `after`, sent back after it (only that
/// container), with the label and both annotations right, an Event, and no second
/// rewrite by the webhook.
async fn a_container_stuck_past_the_wait_goes_back_to_its_original(env: &mut ClusterEnv) {
    let after = Duration::from_secs(3);
    let (mut pilot, _dir) = start_pilot(env, "3s", "").await;
    env.namespace("fallback", &[("harbor-pilot.io/rewrite", "enabled")])
        .await;
    let created = env
        .create(
            "fallback",
            &pod(
                "stuck",
                &[("web", "nginx:1.25"), ("side", "redis:7")],
                &[("init", "busybox:1.36")],
            ),
        )
        .await;
    assert_eq!(images(&created)["web"], hub("library/nginx:1.25"));
    assert_eq!(created.metadata.labels.as_ref().unwrap()[LABEL], "true");
    let first = Instant::now();
    stuck(
        env,
        "fallback",
        "stuck",
        &[
            ("initContainers", "init", "running"),
            ("containers", "web", "ErrImagePull"),
            ("containers", "side", "running"),
        ],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stuck(
        env,
        "fallback",
        "stuck",
        &[
            ("initContainers", "init", "running"),
            ("containers", "web", "ImagePullBackOff"),
            ("containers", "side", "running"),
        ],
    )
    .await;
    // Well before `after`: still on Harbor.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        images(&env.get("fallback", "stuck").await)["web"],
        hub("library/nginx:1.25"),
        "sent back before fallback.after"
    );
    let reverted = wait_pod(
        env,
        "fallback",
        "stuck",
        Duration::from_secs(30),
        "the fallback",
        |p| images(p)["web"] == "nginx:1.25",
    )
    .await;
    let took = first.elapsed();
    assert!(took >= after, "sent back after {took:?}, before {after:?}");
    assert_eq!(
        images(&reverted),
        map(&[
            ("init", &hub("library/busybox:1.36")),
            ("web", "nginx:1.25"),
            ("side", &hub("library/redis:7")),
        ])
    );
    assert_eq!(reverted.metadata.labels.as_ref().unwrap()[LABEL], "true");
    assert_eq!(
        originals(&reverted).unwrap(),
        map(&[
            ("init", "busybox:1.36"),
            ("web", "nginx:1.25"),
            ("side", "redis:7")
        ])
    );
    assert_eq!(
        fallback_annotation(&reverted).unwrap(),
        map(&[("web", &hub("library/nginx:1.25"))])
    );
    let events = fallback_events(env, "fallback", "stuck").await;
    assert_eq!(events.len(), 1, "{events:?}");
    let event = &events[0];
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    let note = event.note.as_deref().unwrap_or_default();
    for part in [
        "container web",
        &hub("library/nginx:1.25"),
        "sent back to nginx:1.25",
        "ImagePullBackOff: failed to pull and unpack image: web: 503 Service Unavailable",
    ] {
        assert!(note.contains(part), "{note}");
    }
    // What `kubectl describe pod` shows.
    let described = env
        .cluster
        .kubectl_ok(&["describe", "pod", "-n", "fallback", "stuck"]);
    assert!(
        described.contains("HarborFallback") && described.contains("sent back to nginx:1.25"),
        "{described}"
    );
    // The webhook saw the controller's UPDATE and left the original alone.
    assert!(
        pilot
            .metric("harbor_pilot_images_skipped_total{reason=\"reverted_to_original\"}")
            .await
            >= 1.0
    );
    assert_eq!(
        pilot
            .metric("harbor_pilot_fallbacks_total{result=\"reverted\"}")
            .await,
        1.0
    );
    println!("    sent back {took:?} after the first pull failure (fallback.after {after:?})");
}

/// An init container stuck on its Harbor image goes back as well.
async fn an_init_container_goes_back_too(env: &mut ClusterEnv) {
    let (_pilot, _dir) = start_pilot(env, "1s", "").await;
    env.namespace("fallback-init", &[("harbor-pilot.io/rewrite", "enabled")])
        .await;
    env.create(
        "fallback-init",
        &pod(
            "init-stuck",
            &[("web", "nginx:1.25")],
            &[("init", "busybox:1.36")],
        ),
    )
    .await;
    stuck(
        env,
        "fallback-init",
        "init-stuck",
        &[
            ("initContainers", "init", "ImagePullBackOff"),
            ("containers", "web", "PodInitializing"),
        ],
    )
    .await;
    let reverted = wait_pod(
        env,
        "fallback-init",
        "init-stuck",
        Duration::from_secs(30),
        "the init container's fallback",
        |p| images(p)["init"] == "busybox:1.36",
    )
    .await;
    assert_eq!(images(&reverted)["web"], hub("library/nginx:1.25"));
    assert_eq!(
        fallback_annotation(&reverted).unwrap(),
        map(&[("init", &hub("library/busybox:1.36"))])
    );
}

/// Not sent back: a container whose image someone changed meanwhile, a container stuck
/// on an image that is not on Harbor, and a Pod without the label.
async fn what_is_not_harbor_pilots_to_change_is_left_alone(env: &mut ClusterEnv) {
    let (mut pilot, _dir) = start_pilot(env, "1s", "").await;
    env.namespace("fallback-not", &[("harbor-pilot.io/rewrite", "enabled")])
        .await;
    env.namespace("fallback-unlabelled", &[]).await;

    // Changed meanwhile: someone points `web` at another Harbor image by hand.
    env.create(
        "fallback-not",
        &pod("changed", &[("web", "nginx:1.25")], &[]),
    )
    .await;
    env.pods("fallback-not")
        .patch(
            "changed",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"containers": [
                {"name": "web", "image": hub("library/nginx:1.26")}]}})),
        )
        .await
        .unwrap();
    // Stuck on an image that is not on Harbor.
    env.create(
        "fallback-not",
        &pod("elsewhere", &[("web", "registry.internal:5000/app:1")], &[]),
    )
    .await;
    // Not labelled: written as a rewritten Pod would be, where the webhook is not called.
    let mut unlabelled = pod("unlabelled", &[("web", &hub("library/nginx:1.25"))], &[]);
    unlabelled.metadata.annotations = Some(map(&[(
        "harbor-pilot.io/original-images",
        r#"{"web":"nginx:1.25"}"#,
    )]));
    env.create("fallback-unlabelled", &unlabelled).await;
    for (namespace, name) in [
        ("fallback-not", "changed"),
        ("fallback-not", "elsewhere"),
        ("fallback-unlabelled", "unlabelled"),
    ] {
        stuck(
            env,
            namespace,
            name,
            &[("containers", "web", "ImagePullBackOff")],
        )
        .await;
    }
    // Well past `after` (1 s).
    tokio::time::sleep(Duration::from_secs(4)).await;
    let changed = env.get("fallback-not", "changed").await;
    assert_eq!(images(&changed)["web"], hub("library/nginx:1.26"));
    // The webhook dropped the stale record: an undo would have restored nginx:1.25.
    assert_eq!(originals(&changed), None);
    assert_eq!(
        images(&env.get("fallback-not", "elsewhere").await)["web"],
        "registry.internal:5000/app:1"
    );
    assert_eq!(
        images(&env.get("fallback-unlabelled", "unlabelled").await)["web"],
        hub("library/nginx:1.25")
    );
    assert_eq!(
        pilot
            .metric("harbor_pilot_fallbacks_total{result=\"reverted\"}")
            .await,
        0.0
    );
}

/// With the health gate down, a stuck container goes back at once (`after` is an hour).
async fn with_harbor_down_a_stuck_container_goes_back_at_once(env: &mut ClusterEnv) {
    let mut standin = HarborStandIn::start();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("harbor-ca.pem");
    std::fs::write(&ca, &standin.ca.pem).unwrap();
    let health = format!(
        "health:\n  url: {}\n  interval: 300ms\n  timeout: 300ms\n  failureThreshold: 1\n  caFile: {}\n",
        standin.url("/api/v2.0/health"),
        ca.display()
    );
    let harbor = standin.harbor();
    let config = write_config(dir.path(), &harbor, "1h", &health);
    let kubeconfig = env.cluster.kubeconfig.display().to_string();
    let pilot = Pilot::start(&config, &["--kubeconfig", &kubeconfig]);
    env.point_webhook_at(&pilot.url.clone(), &pilot.ca_pem.clone())
        .await;
    let rewritten = format!("{harbor}/docker-hub-proxy/library/nginx:1.25");
    env.wait_for_probe("the gated harbor-pilot to rewrite", |image| {
        image.starts_with(&harbor)
    })
    .await;
    env.namespace("fallback-down", &[("harbor-pilot.io/rewrite", "enabled")])
        .await;
    let created = env
        .create("fallback-down", &pod("down", &[("web", "nginx:1.25")], &[]))
        .await;
    assert_eq!(images(&created)["web"], rewritten);
    standin.stop();
    env.wait_for_probe("the gate to close", |image| image == "nginx:alpine")
        .await;
    let started = Instant::now();
    stuck(
        env,
        "fallback-down",
        "down",
        &[("containers", "web", "ErrImagePull")],
    )
    .await;
    wait_pod(
        env,
        "fallback-down",
        "down",
        Duration::from_secs(30),
        "the fallback while Harbor is down",
        |p| images(p)["web"] == "nginx:1.25",
    )
    .await;
    println!(
        "    sent back {:?} after the pull failure, Harbor down (fallback.after 1h)",
        started.elapsed()
    );
}

/// Two harbor-pilots (two replicas) both see the stuck container: it is sent back once;
/// the second patch fails its `test` and counts as a conflict.
async fn two_controllers_send_a_container_back_once(env: &mut ClusterEnv) {
    let (mut first, _first_dir) = start_pilot(env, "2s", "").await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), HARBOR, "2s", "");
    let kubeconfig = env.cluster.kubeconfig.display().to_string();
    let mut second = Pilot::start(&config, &["--kubeconfig", &kubeconfig]);
    env.namespace("fallback-two", &[("harbor-pilot.io/rewrite", "enabled")])
        .await;
    // Both controllers' timers fire within milliseconds of each other; once in a while
    // the second sees the first's patch before it acts (no conflict). Up to 3 pods.
    let mut seen_conflict = false;
    for attempt in 0..3 {
        let name = format!("twice-{attempt}");
        env.create("fallback-two", &pod(&name, &[("web", "nginx:1.25")], &[]))
            .await;
        // Both controllers must have the pod in their caches before it gets stuck.
        tokio::time::sleep(Duration::from_millis(500)).await;
        stuck(
            env,
            "fallback-two",
            &name,
            &[("containers", "web", "ImagePullBackOff")],
        )
        .await;
        wait_pod(
            env,
            "fallback-two",
            &name,
            Duration::from_secs(30),
            "the fallback",
            |p| images(p)["web"] == "nginx:1.25",
        )
        .await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(fallback_events(env, "fallback-two", &name).await.len(), 1);
        let reverted = first
            .metric("harbor_pilot_fallbacks_total{result=\"reverted\"}")
            .await
            + second
                .metric("harbor_pilot_fallbacks_total{result=\"reverted\"}")
                .await;
        let conflicts = first
            .metric("harbor_pilot_fallbacks_total{result=\"conflict\"}")
            .await
            + second
                .metric("harbor_pilot_fallbacks_total{result=\"conflict\"}")
                .await;
        let errors = first
            .metric("harbor_pilot_fallbacks_total{result=\"error\"}")
            .await
            + second
                .metric("harbor_pilot_fallbacks_total{result=\"error\"}")
                .await;
        #[allow(clippy::cast_precision_loss)]
        let pods = (attempt + 1) as f64;
        assert_eq!(reverted, pods, "one revert per pod");
        assert_eq!(errors, 0.0);
        println!("    attempt {attempt}: reverted {reverted}, conflicts {conflicts}");
        if conflicts >= 1.0 {
            assert!(conflicts <= pods);
            seen_conflict = true;
            break;
        }
    }
    assert!(
        seen_conflict,
        "the second controller never lost the race in 3 tries"
    );
}

/// The API server stops and comes back: the controller's watch fails and is
/// re-established, and a container stuck afterwards is still sent back.
async fn the_controller_recovers_when_the_api_server_restarts(env: &mut ClusterEnv) {
    let (mut pilot, _dir) = start_pilot(env, "1s", "").await;
    env.namespace(
        "fallback-restart",
        &[("harbor-pilot.io/rewrite", "enabled")],
    )
    .await;
    env.cluster.stop_apiserver();
    tokio::time::sleep(Duration::from_secs(3)).await;
    env.cluster.restart_apiserver();
    // The webhook works again once the API server has reloaded its configuration.
    env.wait_for_probe("the webhook after the restart", |image| {
        image.starts_with(HARBOR)
    })
    .await;
    env.create(
        "fallback-restart",
        &pod("after-restart", &[("web", "nginx:1.25")], &[]),
    )
    .await;
    stuck(
        env,
        "fallback-restart",
        "after-restart",
        &[("containers", "web", "ImagePullBackOff")],
    )
    .await;
    wait_pod(
        env,
        "fallback-restart",
        "after-restart",
        Duration::from_secs(60),
        "the fallback after the API server restart",
        |p| images(p)["web"] == "nginx:1.25",
    )
    .await;
    let restarts = pilot
        .metric("harbor_pilot_fallback_watch_restarts_total")
        .await;
    assert!(restarts >= 1.0, "watch restarts {restarts}");
    println!("    watch re-established after {restarts} failures");
}
