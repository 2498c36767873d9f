//! harbor-pilot under a real kube-apiserver: the webhook's one real client.
//!
//! Starts etcd, kube-apiserver and kube-controller-manager (built by
//! `scripts/cluster-tools`), runs `harbor-pilot serve` on loopback, and registers it with
//! the MutatingWebhookConfiguration rendered from `manifests/base`, replacing only
//! `clientConfig` (a `url` and the CA): the shipped rules, selectors, timeout, failure
//! policy and reinvocation policy are what is tested. Each scenario then asserts what the
//! API server stores and returns.
//!
//! One control plane serves every scenario, so this is a test binary with its own main
//! (`harness = false`): `cargo test --test apiserver` runs all scenarios in order,
//! `cargo test --test apiserver -- <filter>` those whose name contains a filter.

// Test code: a failed setup step should panic with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::certs::TestCa;
use common::cluster::{Cluster, Options};
use common::injector::Injector;
use common::pilot::{ClusterEnv, Pilot, dry_run, images, map, originals, pod};
use common::registry::HarborStandIn;
use common::scenarios::Runner;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

const HARBOR: &str = "harbor.example.com";
const ANNOTATION: &str = "harbor-pilot.io/original-images";
const DIGEST: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

fn main() -> ExitCode {
    let all = scenarios![Env;
        creates_rewritten_pods_in_opted_in_namespaces_only,
        server_dry_run_returns_the_rewritten_pod_and_stores_nothing,
        update_rewrites_only_the_changed_image,
        kubectl_debug_rewrites_the_new_ephemeral_container,
        reinvocation_rewrites_a_sidecar_added_by_a_later_webhook,
        image_volumes_are_rewritten,
        digests_ports_and_bad_images_are_stored_as_the_rules_say,
        fails_open_while_harbor_is_down_and_rewrites_when_it_is_back,
        a_stopped_or_hanging_webhook_delays_but_never_blocks_creation,
        certificate_rotation_under_load_loses_no_admission,
        manifests_pass_the_servers_own_validation,
        controllers_create_rewritten_pods,
        prewarm_from_cluster_pulls_the_images_of_opted_in_namespaces,
    ];
    Runner {
        what: "API server",
        start: || Box::pin(Env::start()),
        before_each: |env| Box::pin(env.reset()),
        after_all: |env| {
            for line in env.pilot.serve.drain_logs() {
                if line["level"] != "INFO" {
                    println!("    harbor-pilot: {line}");
                }
            }
        },
    }
    .run(&all)
}

/// The control plane and the webhook registration ([`ClusterEnv`]), and the main
/// harbor-pilot under test.
struct Env {
    kube: ClusterEnv,
    /// The main harbor-pilot (config/example.yaml, no health check).
    pilot: Pilot,
}

impl Env {
    async fn start() -> Self {
        let cluster = Cluster::start(Options {
            controller_manager: true,
        });
        let kube = ClusterEnv::new(cluster).await;
        let pilot = Pilot::start(&common::example_config_path(), &[]);
        let mut env = Self { kube, pilot };
        let (url, ca) = (env.pilot.url.clone(), env.pilot.ca_pem.clone());
        env.point_webhook_at(&url, &ca).await;
        env.wait_for_probe("harbor-pilot to rewrite", |image| {
            image == format!("{HARBOR}/docker-hub-proxy/library/nginx:alpine")
        })
        .await;
        env
    }

    /// Before each scenario: the webhook points at the main harbor-pilot again.
    async fn reset(&mut self) {
        if self.pointed_at != self.pilot.url {
            let (url, ca) = (self.pilot.url.clone(), self.pilot.ca_pem.clone());
            self.point_webhook_at(&url, &ca).await;
            self.wait_for_probe("harbor-pilot to rewrite again", |image| {
                image.starts_with(HARBOR)
            })
            .await;
        }
    }
}

impl std::ops::Deref for Env {
    type Target = ClusterEnv;

    fn deref(&self) -> &ClusterEnv {
        &self.kube
    }
}

impl std::ops::DerefMut for Env {
    fn deref_mut(&mut self) -> &mut ClusterEnv {
        &mut self.kube
    }
}

// === helpers ===

fn hub(path_and_tag: &str) -> String {
    format!("{HARBOR}/docker-hub-proxy/{path_and_tag}")
}

/// Pod JSON as stored, without the fields the server fills in per object (uid, times,
/// managedFields, name/namespace), for comparing two stored Pods.
fn comparable(pod: &Pod) -> Value {
    let mut value = serde_json::to_value(pod).unwrap();
    let metadata = value["metadata"].as_object_mut().unwrap();
    for key in [
        "uid",
        "creationTimestamp",
        "resourceVersion",
        "managedFields",
        "namespace",
        "generation",
    ] {
        metadata.remove(key);
    }
    value
}

/// A config for a harbor-pilot whose Harbor is the stand-in, probed every 200 ms.
fn standin_config(dir: &Path, standin: &HarborStandIn) -> PathBuf {
    let ca = dir.join("harbor-ca.pem");
    std::fs::write(&ca, &standin.ca.pem).unwrap();
    let path = dir.join("standin.yaml");
    std::fs::write(
        &path,
        format!(
            "harbor: {harbor}\nproxies:\n  docker.io: docker-hub-proxy\n\
             health:\n  url: {url}\n  interval: 300ms\n  timeout: 300ms\n  failureThreshold: 1\n  caFile: {ca}\n",
            harbor = standin.harbor(),
            url = standin.url("/api/v2.0/health"),
            ca = ca.display()
        ),
    )
    .unwrap();
    path
}

/// A listener that accepts connections and never answers: a hanging webhook.
struct Hanging {
    addr: std::net::SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<usize>>,
}

impl Hanging {
    fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => held.push(stream),
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            held.len()
        });
        Self {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    /// Stops and returns how many connections it accepted.
    fn finish(mut self) -> usize {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

/// `kubectl create -f -` with `manifest`; (stored object, stderr).
fn kubectl_create(cluster: &Cluster, namespace: &str, manifest: &Value) -> (Value, String) {
    let output = cluster.kubectl_with_input(
        &["create", "-n", namespace, "-o", "json", "-f", "-"],
        Some(manifest.to_string().as_bytes()),
    );
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "kubectl create: {stderr}");
    (serde_json::from_slice(&output.stdout).unwrap(), stderr)
}

// === scenarios ===

/// 1. Pod CREATE: every container and init container image as the rule says and the
///    annotation right, in a labelled namespace; nothing anywhere else.
async fn creates_rewritten_pods_in_opted_in_namespaces_only(env: &mut Env) {
    env.namespace("create-on", &[("harbor-pilot.io/rewrite", "enabled")])
        .await;
    env.namespace("create-off", &[]).await;
    let spec = pod(
        "app",
        &[
            ("web", "nginx:alpine"),
            ("dex", "ghcr.io/dexidp/dex:v2.45.1"),
            ("cilium", "quay.io/cilium/cilium:v1.16.0"),
            ("pause", "registry.k8s.io/pause:3.10"),
            ("local", "registry.internal:5000/team/app:1"),
        ],
        &[("init", "busybox:1.36")],
    );
    let stored = env.create("create-on", &spec).await;
    assert_eq!(
        images(&env.get("create-on", "app").await),
        map(&[
            ("web", &hub("library/nginx:alpine")),
            ("dex", &format!("{HARBOR}/ghcr-proxy/dexidp/dex:v2.45.1")),
            (
                "cilium",
                &format!("{HARBOR}/quay-proxy/cilium/cilium:v1.16.0")
            ),
            ("pause", &format!("{HARBOR}/registry-k8s-proxy/pause:3.10")),
            ("local", "registry.internal:5000/team/app:1"),
            ("init", &hub("library/busybox:1.36")),
        ])
    );
    assert_eq!(
        originals(&stored).unwrap(),
        map(&[
            ("web", "nginx:alpine"),
            ("dex", "ghcr.io/dexidp/dex:v2.45.1"),
            ("cilium", "quay.io/cilium/cilium:v1.16.0"),
            ("pause", "registry.k8s.io/pause:3.10"),
            ("init", "busybox:1.36"),
        ])
    );
    // The same Pod where the webhook is not called: stored exactly as sent, and the
    // rewritten one differs from it in the image fields and the annotation only.
    let untouched = env.create("create-off", &spec).await;
    assert_eq!(images(&untouched), images(&spec));
    assert!(originals(&untouched).is_none());
    let mut diff = common::json_diff(&comparable(&untouched), &comparable(&stored));
    diff.sort();
    assert_eq!(
        diff,
        [
            "/metadata/annotations/harbor-pilot.io~1original-images",
            "/metadata/labels/harbor-pilot.io~1rewritten",
            "/spec/containers/0/image",
            "/spec/containers/1/image",
            "/spec/containers/2/image",
            "/spec/containers/3/image",
            "/spec/initContainers/0/image",
        ]
    );
    // A Pod that opts out in an opted-in namespace.
    let mut opted_out = pod("opted-out", &[("web", "nginx:alpine")], &[]);
    opted_out.metadata.labels = Some(map(&[("harbor-pilot.io/rewrite", "disabled")]));
    let stored = env.create("create-on", &opted_out).await;
    assert_eq!(images(&stored), map(&[("web", "nginx:alpine")]));
    assert!(originals(&stored).is_none());
}

/// 2. `--dry-run=server` answers with the rewritten Pod and stores nothing.
async fn server_dry_run_returns_the_rewritten_pod_and_stores_nothing(env: &mut Env) {
    env.namespace("dry-run", &[("harbor-pilot.io/rewrite", "enabled")])
        .await;
    let answer = env
        .pods("dry-run")
        .create(&dry_run(), &pod("dry", &[("web", "nginx:1.27")], &[]))
        .await
        .unwrap();
    assert_eq!(images(&answer), map(&[("web", &hub("library/nginx:1.27"))]));
    assert_eq!(originals(&answer).unwrap(), map(&[("web", "nginx:1.27")]));
    assert!(env.pods("dry-run").get_opt("dry").await.unwrap().is_none());
    // kubectl's --dry-run=server prints the same.
    let output = env.cluster.kubectl_ok(&[
        "run",
        "kubectl-dry",
        "-n",
        "dry-run",
        "--image=redis:7",
        "--restart=Never",
        "--dry-run=server",
        "-o",
        "jsonpath={.spec.containers[0].image}",
    ]);
    assert_eq!(output, hub("library/redis:7"));
    assert!(
        env.pods("dry-run")
            .get_opt("kubectl-dry")
            .await
            .unwrap()
            .is_none()
    );
}

/// 3. UPDATE: only the changed image is rewritten, the annotation merged; an update
///    that changes no image changes nothing.
async fn update_rewrites_only_the_changed_image(env: &mut Env) {
    env.namespace("update", &[("harbor-pilot.io/rewrite", "enabled")])
        .await;
    env.create(
        "update",
        &pod("p", &[("a", "nginx:1.25"), ("b", "redis:6")], &[]),
    )
    .await;
    let patched = env
        .pods("update")
        .patch(
            "p",
            &PatchParams::default(),
            // What `kubectl set image pod/p b=redis:7` sends.
            &Patch::Strategic(json!({"spec": {"containers": [{"name": "b", "image": "redis:7"}]}})),
        )
        .await
        .unwrap();
    assert_eq!(
        images(&patched),
        map(&[
            ("a", &hub("library/nginx:1.25")),
            ("b", &hub("library/redis:7"))
        ])
    );
    assert_eq!(
        originals(&patched).unwrap(),
        map(&[("a", "nginx:1.25"), ("b", "redis:7")])
    );
    // A label change: the stored images stay exactly as they are (no double prefix).
    let labelled = env
        .pods("update")
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"touched": "yes"}}})),
        )
        .await
        .unwrap();
    assert_eq!(images(&labelled), images(&patched));
    assert_eq!(originals(&labelled), originals(&patched));
}

/// 4. `kubectl debug` adds an ephemeral container through `pods/ephemeralcontainers`:
///    its image is rewritten, and the original goes to the audit log.
async fn kubectl_debug_rewrites_the_new_ephemeral_container(env: &mut Env) {
    env.namespace("debug", &[("harbor-pilot.io/rewrite", "enabled")])
        .await;
    env.create("debug", &pod("target", &[("app", "nginx:alpine")], &[]))
        .await;
    env.cluster.kubectl_ok(&[
        "debug",
        "-n",
        "debug",
        "target",
        "--image=busybox:1.36",
        "--container=dbg",
        "--profile=general",
    ]);
    let stored = env.get("debug", "target").await;
    assert_eq!(
        images(&stored),
        map(&[
            ("app", &hub("library/nginx:alpine")),
            ("dbg", &hub("library/busybox:1.36"))
        ])
    );
    // The subresource keeps only ephemeralContainers from our patch: the pod
    // annotation still names only the container rewritten at creation.
    assert_eq!(originals(&stored).unwrap(), map(&[("app", "nginx:alpine")]));
    let events = env.cluster.audit_events();
    let recorded = events.iter().find_map(|event| {
        (event["objectRef"]["subresource"] == "ephemeralcontainers"
            && event["objectRef"]["name"] == "target")
            .then(|| event["annotations"]["pods.harbor-pilot.io/original-images"].clone())
            .filter(|v| !v.is_null())
    });
    assert_eq!(
        recorded,
        Some(json!(r#"{"dbg":"busybox:1.36"}"#)),
        "audit annotation on the ephemeralcontainers update"
    );
}

/// 5. A second webhook that runs after harbor-pilot adds a sidecar with a Docker Hub
///    image: the API server calls harbor-pilot again, and the sidecar is rewritten.
async fn reinvocation_rewrites_a_sidecar_added_by_a_later_webhook(env: &mut Env) {
    let injector = Injector::start("busybox:1.36").await;
    env.namespace(
        "sidecars",
        &[
            ("harbor-pilot.io/rewrite", "enabled"),
            ("e2e.harbor-pilot.io/sidecars", "yes"),
        ],
    )
    .await;
    let configuration: MutatingWebhookConfiguration = serde_json::from_value(json!({
        "metadata": {"name": "zz-sidecar-injector"},
        "webhooks": [{
            "name": "inject.e2e.harbor-pilot.io",
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "failurePolicy": "Fail",
            "reinvocationPolicy": "Never",
            "timeoutSeconds": 5,
            "clientConfig": {
                "url": injector.url(),
                "caBundle": base64::engine::general_purpose::STANDARD.encode(&injector.ca.pem),
            },
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                       "resources": ["pods"], "scope": "Namespaced"}],
            "namespaceSelector": {"matchLabels": {"e2e.harbor-pilot.io/sidecars": "yes"}},
        }]
    }))
    .unwrap();
    let api = Api::<MutatingWebhookConfiguration>::all(env.client.clone());
    api.create(&PostParams::default(), &configuration)
        .await
        .unwrap();
    // Until the API server has loaded the injector, pods come without the sidecar.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let probe = env
            .pods("sidecars")
            .create(&dry_run(), &pod("probe", &[("app", "nginx:1.27")], &[]))
            .await
            .unwrap();
        if images(&probe).contains_key(common::injector::SIDECAR) {
            break;
        }
        assert!(Instant::now() < deadline, "the injector never ran");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // With an image harbor-pilot warns about: one warning, although it is called twice.
    let manifest = json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "with-sidecar"},
        "spec": {"containers": [{"name": "app", "image": "nginx:1.27"},
                                {"name": "bad", "image": "Bad"}]}
    });
    let (_, stderr) = kubectl_create(&env.cluster, "sidecars", &manifest);
    let stored = env.get("sidecars", "with-sidecar").await;
    api.delete("zz-sidecar-injector", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(
        images(&stored),
        map(&[
            ("app", &hub("library/nginx:1.27")),
            ("bad", "Bad"),
            ("sidecar", &hub("library/busybox:1.36"))
        ])
    );
    assert_eq!(
        originals(&stored).unwrap(),
        map(&[("app", "nginx:1.27"), ("sidecar", "busybox:1.36")])
    );
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("Warning:"))
        .collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(injector.calls() > 0);
}

/// 6. Image volumes (`spec.volumes[].image.reference`).
async fn image_volumes_are_rewritten(env: &mut Env) {
    env.namespace("volumes", &[("harbor-pilot.io/rewrite", "enabled")])
        .await;
    let spec: Pod = serde_json::from_value(json!({
        "metadata": {"name": "models"},
        "spec": {
            "containers": [{"name": "app", "image": "nginx:1.27",
                            "volumeMounts": [{"name": "weights", "mountPath": "/weights"}]}],
            "volumes": [{"name": "weights", "image": {"reference": "quay.io/org/weights:v1",
                                                       "pullPolicy": "IfNotPresent"}}]
        }
    }))
    .unwrap();
    let stored = env.create("volumes", &spec).await;
    let volume = &stored.spec.as_ref().unwrap().volumes.as_ref().unwrap()[0];
    assert_eq!(
        volume.image.as_ref().unwrap().reference.as_deref(),
        Some(format!("{HARBOR}/quay-proxy/org/weights:v1").as_str())
    );
    assert_eq!(
        originals(&stored).unwrap(),
        map(&[
            ("app", "nginx:1.27"),
            ("volume:weights", "quay.io/org/weights:v1")
        ])
    );
}

/// 7. Tag and digest together, a registry with a port, and an unparsable image: stored
///    as the rules say, and the warning reaches `kubectl`.
async fn digests_ports_and_bad_images_are_stored_as_the_rules_say(env: &mut Env) {
    env.namespace("references", &[("harbor-pilot.io/rewrite", "enabled")])
        .await;
    let manifest = json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "refs"},
        "spec": {"containers": [
            {"name": "pinned", "image": format!("nginx:1.25@{DIGEST}")},
            {"name": "port", "image": "host:5000/app"},
            {"name": "bad", "image": "Nginx:Latest"},
        ]}
    });
    let (stored, stderr) = kubectl_create(&env.cluster, "references", &manifest);
    let containers = stored["spec"]["containers"].as_array().unwrap();
    assert_eq!(
        containers[0]["image"],
        hub(&format!("library/nginx:1.25@{DIGEST}"))
    );
    assert_eq!(containers[1]["image"], "host:5000/app");
    assert_eq!(containers[2]["image"], "Nginx:Latest");
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("Warning: "))
        .collect();
    assert_eq!(
        warnings,
        [
            "Warning: harbor-pilot: bad image \"Nginx:Latest\" is not a valid image reference \
             (invalid reference format: repository name (library/Nginx) must be lowercase); left unchanged"
        ],
        "{stderr}"
    );
}

/// 8. The health gate: Harbor down → Pods keep their upstream images and kubectl shows
///    the fail-open warning; Harbor back → rewritten again.
async fn fails_open_while_harbor_is_down_and_rewrites_when_it_is_back(env: &mut Env) {
    let mut standin = HarborStandIn::start();
    let dir = tempfile::tempdir().unwrap();
    let config = standin_config(dir.path(), &standin);
    let gated = Pilot::start(&config, &[]);
    env.point_webhook_at(&gated.url, &gated.ca_pem).await;
    let harbor = standin.harbor();
    let rewritten = format!("{harbor}/docker-hub-proxy/library/nginx:alpine");
    env.wait_for_probe("the gated harbor-pilot to rewrite", |image| {
        image == rewritten
    })
    .await;
    env.namespace("gate", &[("harbor-pilot.io/rewrite", "enabled")])
        .await;

    standin.stop();
    env.wait_for_probe("the gate to close", |image| image == "nginx:alpine")
        .await;
    let manifest = |name: &str| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
               "spec": {"containers": [{"name": "web", "image": "nginx:alpine"}]}})
    };
    let (stored, stderr) = kubectl_create(&env.cluster, "gate", &manifest("while-down"));
    assert_eq!(stored["spec"]["containers"][0]["image"], "nginx:alpine");
    assert!(
        stored["metadata"]["annotations"][ANNOTATION].is_null(),
        "{stored}"
    );
    assert!(
        stderr.contains(
            "Warning: harbor-pilot: Harbor is unavailable; 1 image left on its upstream registry (fail open)"
        ),
        "{stderr}"
    );

    standin.restart();
    env.wait_for_probe("the gate to open again", |image| image == rewritten)
        .await;
    let (stored, stderr) = kubectl_create(&env.cluster, "gate", &manifest("when-back"));
    assert_eq!(stored["spec"]["containers"][0]["image"], rewritten.as_str());
    assert!(!stderr.contains("Warning"), "{stderr}");
}

/// 9. harbor-pilot stopped (connection refused) or hanging (accepts, never answers):
///    Pods are still created, unchanged, within the configuration's timeoutSeconds.
async fn a_stopped_or_hanging_webhook_delays_but_never_blocks_creation(env: &mut Env) {
    let timeout = Duration::from_secs(
        env.rendered["webhooks"][0]["timeoutSeconds"]
            .as_u64()
            .unwrap(),
    );
    env.namespace("outage", &[("harbor-pilot.io/rewrite", "enabled")])
        .await;
    // Stopped: nothing listens on the port.
    let refused = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let ca = env.pilot.ca_pem.clone();
    env.point_webhook_at(&format!("https://{refused}/mutate"), &ca)
        .await;
    env.wait_for_probe("the API server to call the stopped webhook", |image| {
        image == "nginx:alpine"
    })
    .await;
    let mut stopped = Vec::new();
    for i in 0..5 {
        let started = Instant::now();
        let stored = env
            .create(
                "outage",
                &pod(&format!("stopped-{i}"), &[("web", "nginx:alpine")], &[]),
            )
            .await;
        stopped.push(started.elapsed());
        assert_eq!(images(&stored), map(&[("web", "nginx:alpine")]));
    }
    // Hanging: the connection is accepted, the TLS handshake never answered.
    let hanging = Hanging::start();
    env.point_webhook_at(&format!("https://{}/mutate", hanging.addr), &ca)
        .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut hung = Vec::new();
    let mut i = 0;
    while hung.len() < 3 {
        i += 1;
        let started = Instant::now();
        let stored = env
            .create(
                "outage",
                &pod(&format!("hanging-{i}"), &[("web", "nginx:alpine")], &[]),
            )
            .await;
        let took = started.elapsed();
        assert_eq!(images(&stored), map(&[("web", "nginx:alpine")]));
        // The first creations may still go to the stopped address while the API server
        // reloads the configuration.
        if took > timeout / 2 {
            hung.push(took);
        }
        assert!(
            Instant::now() < deadline,
            "the API server never called the hanging webhook"
        );
    }
    let accepted = hanging.finish();
    assert!(accepted > 0, "the API server never connected");
    for took in &hung {
        // Behaviour, not speed: the API server gives up after timeoutSeconds (plus the
        // time to write the Pod), instead of waiting for its own request timeout.
        assert!(
            *took < timeout + Duration::from_secs(10),
            "a creation took {took:?} with timeoutSeconds {timeout:?}"
        );
    }
    println!(
        "    creation latency with the webhook stopped: {:?}; hanging: {:?} (timeoutSeconds {}s)",
        stopped,
        hung,
        timeout.as_secs()
    );
}

/// Creates Pods in `namespace` in bursts of 25 with pauses past a 1 s idle timeout (so
/// the API server keeps opening new connections, which meet whatever certificate is
/// served then) until `stop` is set; returns (created, names not rewritten).
fn create_in_bursts(
    client: kube::Client,
    namespace: &'static str,
    prefix: &'static str,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<(usize, Vec<String>)> {
    tokio::spawn(async move {
        let pods: Api<Pod> = Api::namespaced(client, namespace);
        let mut unrewritten = Vec::new();
        let mut created = 0;
        let mut burst = 0;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            burst += 1;
            for i in 0..25 {
                let name = format!("{prefix}-{burst}-{i}");
                let stored = pods
                    .create(
                        &PostParams::default(),
                        &pod(&name, &[("web", "nginx:alpine")], &[]),
                    )
                    .await
                    .unwrap();
                created += 1;
                if !images(&stored)["web"].starts_with(HARBOR) {
                    unrewritten.push(name);
                }
            }
            tokio::time::sleep(Duration::from_millis(1300)).await;
        }
        (created, unrewritten)
    })
}

/// 10. Certificates change while Pods are created in a loop, and every Pod is still
///     rewritten:
///     (a) new leaves from the same CA every 0.7 s, as cert-manager renews them;
///     (b) `harbor-pilot certs` (static-certs): a renewal with the same CA, then a CA
///     rotation in which the new caBundle reaches the API server before the new Secret
///     reaches the pod, as `kubectl apply -k` and the kubelet do it.
///     A caBundle that does not trust the served certificate fails open (checked last:
///     it shows that this test sees a lost admission).
async fn certificate_rotation_under_load_loses_no_admission(env: &mut Env) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    env.namespace("rotation", &[("harbor-pilot.io/rewrite", "enabled")])
        .await;

    // a. Leaves from one CA.
    let ca = TestCa::new("rotation CA");
    let first = ca.leaf("v0");
    let mut rotating = Pilot::start_with(
        &common::example_config_path(),
        (&first.cert_pem, &first.key_pem),
        &ca.pem,
        &["--idle-timeout", "1s"],
    );
    env.point_webhook_at(&rotating.url.clone(), &ca.pem).await;
    env.wait_for_probe("the rotating harbor-pilot", |image| {
        image.starts_with(HARBOR)
    })
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let creator = create_in_bursts(env.client.clone(), "rotation", "leaf", Arc::clone(&stop));
    for version in 1..=20 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let leaf = ca.leaf(&format!("v{version}"));
        rotating.install(&leaf.cert_pem, &leaf.key_pem);
    }
    stop.store(true, Ordering::Relaxed);
    let (created, unrewritten) = creator.await.unwrap();
    let reloads = rotating.reloads();
    assert!(
        unrewritten.is_empty(),
        "{} of {created} Pods created during 20 leaf rotations were not rewritten: {unrewritten:?}",
        unrewritten.len()
    );
    assert!(reloads >= 10, "only {reloads} reloads logged");
    println!("    a. {created} Pods during 20 leaf rotations ({reloads} reloads), all rewritten");

    // b. `harbor-pilot certs`, renewal and CA rotation.
    let dir = tempfile::tempdir().unwrap();
    let generated = dir.path().join("generated");
    let certs = |extra: &[&str]| {
        let mut args = vec![
            "certs",
            "--out",
            generated.to_str().unwrap(),
            "--extra-name",
            "127.0.0.1",
        ];
        args.extend_from_slice(extra);
        common::harbor_pilot_ok(&args);
        let read = |name: &str| std::fs::read_to_string(generated.join(name)).unwrap();
        let patch: Value = yaml_serde::from_str(&read("webhook-ca-bundle.yaml")).unwrap();
        let bundle = base64::engine::general_purpose::STANDARD
            .decode(patch[0]["value"].as_str().unwrap())
            .unwrap();
        (
            read("tls.crt"),
            read("tls.key"),
            String::from_utf8(bundle).unwrap(),
        )
    };
    let (cert, key, bundle) = certs(&[]);
    let mut pilot = Pilot::start_with(
        &common::example_config_path(),
        (&cert, &key),
        &bundle,
        &["--idle-timeout", "1s"],
    );
    env.point_webhook_at(&pilot.url.clone(), &bundle).await;
    env.wait_for_probe("the static-certs harbor-pilot", |image| {
        image.starts_with(HARBOR)
    })
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let creator = create_in_bursts(env.client.clone(), "rotation", "certs", Arc::clone(&stop));
    // The kubelet takes up to a minute or two to update a mounted Secret; 3 s here.
    let kubelet_delay = Duration::from_secs(3);
    let url = pilot.url.clone();
    for step in ["renew", "rotate the CA", "drop the old CA"] {
        let (cert, key, bundle) = certs(if step == "rotate the CA" {
            &["--new-ca"]
        } else {
            &[]
        });
        env.point_webhook_at(&url, &bundle).await; // kubectl apply -k
        tokio::time::sleep(kubelet_delay).await;
        pilot.install(&cert, &key); // the Secret reaches the pod
        tokio::time::sleep(kubelet_delay).await;
    }
    stop.store(true, Ordering::Relaxed);
    let (created, unrewritten) = creator.await.unwrap();
    assert!(
        unrewritten.is_empty(),
        "{} of {created} Pods created during certs renewal and CA rotation were not rewritten: {unrewritten:?}",
        unrewritten.len()
    );
    println!("    b. {created} Pods during a certs renewal and a CA rotation, all rewritten");

    // A caBundle that does not trust the served certificate: the API server fails open.
    let stranger = TestCa::new("a CA the webhook does not use");
    env.point_webhook_at(&url, &stranger.pem).await;
    env.wait_for_probe("the API server to refuse the certificate", |image| {
        image == "nginx:alpine"
    })
    .await;
}

/// 11. `kubectl apply --dry-run=server` of the base and each overlay: every object is
///     accepted by the server's own validation. Kinds from CRDs that are not installed
///     (cert-manager's Issuer and Certificate, the Prometheus Operator's ServiceMonitor
///     and PrometheusRule) are left out.
async fn manifests_pass_the_servers_own_validation(env: &mut Env) {
    const CRD_KINDS: [&str; 4] = ["Certificate", "Issuer", "ServiceMonitor", "PrometheusRule"];
    // The test's own registration has the shipped name; `apply` would merge the shipped
    // `service` into its `url`. Take it away for this scenario (reset() puts it back).
    Api::<MutatingWebhookConfiguration>::all(env.client.clone())
        .delete("harbor-pilot", &DeleteParams::default())
        .await
        .unwrap();
    env.pointed_at.clear();
    let dir = tempfile::tempdir().unwrap();
    let manifests = common::manifests::prepare(dir.path());
    for variant in common::manifests::VARIANTS {
        let docs = common::manifests::render(&manifests, variant);
        let (kept, left_out): (Vec<&Value>, Vec<&Value>) = docs
            .iter()
            .partition(|doc| !CRD_KINDS.contains(&doc["kind"].as_str().unwrap_or_default()));
        // Namespaced objects need their namespace to exist, even in a dry run: apply the
        // Namespace for real first.
        let namespaces: Vec<&&Value> = kept.iter().filter(|d| d["kind"] == "Namespace").collect();
        let output = env.cluster.kubectl_with_input(
            &["apply", "-f", "-"],
            Some(
                json!({"apiVersion": "v1", "kind": "List", "items": namespaces})
                    .to_string()
                    .as_bytes(),
            ),
        );
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let list = json!({"apiVersion": "v1", "kind": "List", "items": kept});
        let output = env.cluster.kubectl_with_input(
            &[
                "apply",
                "--dry-run=server",
                "--validate=strict",
                "-o",
                "name",
                "-f",
                "-",
            ],
            Some(list.to_string().as_bytes()),
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{variant}: {stderr}");
        assert!(!stderr.contains("Warning"), "{variant}: {stderr}");
        assert_eq!(
            stdout.lines().count(),
            kept.len(),
            "{variant}: every object answered\n{stdout}"
        );
        let left_out: Vec<&str> = left_out.iter().filter_map(|d| d["kind"].as_str()).collect();
        println!(
            "    {variant}: {} objects accepted; left out (no CRD): {left_out:?}",
            kept.len()
        );
    }
}

/// 12. With kube-controller-manager: a Deployment of 3 replicas and a Job create their
///     Pods through the webhook; every Pod is rewritten.
async fn controllers_create_rewritten_pods(env: &mut Env) {
    env.namespace("workloads", &[("harbor-pilot.io/rewrite", "enabled")])
        .await;
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}],
                         "initContainers": [{"name": "wait", "image": "busybox:1.36"}]}
            }
        }
    }))
    .unwrap();
    Api::<Deployment>::namespaced(env.client.clone(), "workloads")
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
    let job: Job = serde_json::from_value(json!({
        "metadata": {"name": "migrate"},
        "spec": {"template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "migrate", "image": "ghcr.io/org/migrate:v2"}]
        }}}
    }))
    .unwrap();
    Api::<Job>::namespaced(env.client.clone(), "workloads")
        .create(&PostParams::default(), &job)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    let pods = loop {
        let list = env
            .pods("workloads")
            .list(&ListParams::default())
            .await
            .unwrap();
        if list.items.len() >= 4 {
            break list.items;
        }
        assert!(
            Instant::now() < deadline,
            "controllers made {} of 4 Pods",
            list.items.len()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let web: Vec<&Pod> = pods
        .iter()
        .filter(|p| {
            p.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("app"))
                .is_some_and(|a| a == "web")
        })
        .collect();
    assert_eq!(web.len(), 3);
    for pod in &web {
        assert_eq!(
            images(pod),
            map(&[
                ("web", &hub("library/nginx:1.27")),
                ("wait", &hub("library/busybox:1.36"))
            ])
        );
        assert_eq!(
            originals(pod).unwrap(),
            map(&[("web", "nginx:1.27"), ("wait", "busybox:1.36")])
        );
    }
    let migrate = pods
        .iter()
        .find(|p| images(p).contains_key("migrate"))
        .expect("the Job's Pod");
    assert_eq!(
        images(migrate)["migrate"],
        format!("{HARBOR}/ghcr-proxy/org/migrate:v2")
    );
}

/// 13. `harbor-pilot prewarm --from-cluster` reads the Pods of the opted-in namespaces
///     (and only those) and pulls their images through Harbor.
async fn prewarm_from_cluster_pulls_the_images_of_opted_in_namespaces(env: &mut Env) {
    let standin = HarborStandIn::start_with_token_auth();
    standin.push_image("library/app", "1.0").await;
    standin.push_image("library/hidden", "1.0").await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("harbor-ca.pem");
    std::fs::write(&ca, &standin.ca.pem).unwrap();
    let config = dir.path().join("config.yaml");
    let harbor = standin.harbor();
    std::fs::write(
        &config,
        format!(
            "harbor: {harbor}\nproxies:\n  docker.io: docker-hub-proxy\nverify:\n  caFile: {}\n",
            ca.display()
        ),
    )
    .unwrap();
    env.namespace("prewarm-on", &[("harbor-pilot.io/rewrite", "enabled")])
        .await;
    env.namespace("prewarm-off", &[]).await;
    // Images already on this Harbor (the webhook under test proxies another one).
    let on_harbor = |path: &str| format!("{harbor}/docker-hub-proxy/{path}");
    env.create(
        "prewarm-on",
        &pod("app", &[("app", &on_harbor("library/app:1.0"))], &[]),
    )
    .await;
    env.create(
        "prewarm-off",
        &pod("hidden", &[("app", &on_harbor("library/hidden:1.0"))], &[]),
    )
    .await;
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_harbor-pilot"))
        .args(["prewarm", "--from-cluster", "--layers", "--config"])
        .arg(&config)
        .arg("--kubeconfig")
        .arg(&env.cluster.kubeconfig)
        // Earlier scenarios leave opted-in namespaces whose images this Harbor lacks.
        .args(["--namespace", "prewarm-on", "--namespace", "prewarm-off"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains(&on_harbor("library/app:1.0")), "{stdout}");
    assert!(!stdout.contains("hidden"), "{stdout}");
    assert!(
        stdout.ends_with("1 images through Harbor: 1 ok, 0 failed\n"),
        "{stdout}"
    );
}
