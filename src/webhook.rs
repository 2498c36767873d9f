//! The webhook's HTTP surface: `POST /mutate`.
//!
//! Reads the body (up to a limit), hands it to [`admission`], and answers 200 with the
//! AdmissionReview. A body that is not an AdmissionReview gets 400 and one over the
//! limit 413, each with a `v1.Status` JSON explaining why; other paths 404, other methods
//! 405. Nothing here turns an internal failure into a denied pod: a panic in the review
//! is answered `allowed: true`, without a patch, with a warning, and counted as
//! `outcome="error"`.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use futures::future::Either;
use harbor_pilot_core::rules::CachedRules;
use harbor_pilot_core::verdict::{Served, Verdict};
use hyper::service::Service as _;
use hyper_util::service::TowerToHyperService;
use kube::core::admission::AdmissionResponse;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::metrics::{Metrics, Rejection};
use crate::server::{self, ConnectionLimits, HttpService, Transport};
use crate::verify::Verifier;
use harbor_pilot_core::admission::{self, Harbor, Incoming, Outcome};
use harbor_pilot_core::gate::HarborGate;

/// The path the MutatingWebhookConfiguration points at.
pub const MUTATE_PATH: &str = "/mutate";

/// What the handler needs.
#[derive(Debug, Clone)]
pub struct WebhookState {
    /// The rewrite rules.
    pub rules: Arc<CachedRules>,
    /// Where to count.
    pub metrics: Metrics,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Longest a request body may take to arrive.
    pub body_read_timeout: std::time::Duration,
    /// Whether Harbor may be used now.
    pub gate: HarborGate,
    /// Checks rewrites against Harbor (`verify`), if configured.
    pub verifier: Option<Verifier>,
    /// Log nothing of its admissions: the warm-up's, which are made up.
    pub silent: bool,
}

/// The header carrying the warm-up's token ([`WarmUpPass`]).
pub(crate) const WARM_UP_HEADER: &str = "harbor-pilot-warm-up";

/// Lets the start-up warm-up's made-up admissions through the real port (see
/// [`crate::warm_up`]) without their being logged, counted or remembered: a `POST
/// /mutate` carrying the pass's token in [`WARM_UP_HEADER`] while the pass is open is
/// answered with the pass's state (a throwaway copy of the rules, metrics of its own,
/// [`WebhookState::silent`]) instead of the real one. The token is random per process and
/// travels only inside the warm-up's own TLS connections, so no caller can use it to
/// go unlogged; once closed, before the port is marked ready, the header is not even
/// looked at (one relaxed atomic load per admission).
#[derive(Debug)]
pub struct WarmUpPass {
    token: HeaderValue,
    open: AtomicBool,
    /// Taken when the pass closes: its copy of the rules and its metrics are freed then
    /// (the port's service holds the pass for the process's life). Locked only for
    /// requests that carry the token while the pass is open.
    state: Mutex<Option<Arc<WebhookState>>>,
}

impl WarmUpPass {
    /// An open pass for `token`, answering with `state` (made [`WebhookState::silent`]).
    pub fn new(token: HeaderValue, state: WebhookState) -> Arc<Self> {
        Arc::new(Self {
            token,
            open: AtomicBool::new(true),
            state: Mutex::new(Some(Arc::new(WebhookState {
                silent: true,
                ..state
            }))),
        })
    }

    /// The token the warm-up's requests carry.
    pub fn token(&self) -> &HeaderValue {
        &self.token
    }

    /// From now on every admission is a real one; the pass's state is dropped (once
    /// no warm-up admission holds it).
    pub fn close(&self) {
        self.open.store(false, Ordering::Relaxed);
        self.lock_state().take();
    }

    /// The state the warm-up's admissions are answered with; `None` once closed.
    #[cfg(test)]
    pub(crate) fn state(&self) -> Option<Arc<WebhookState>> {
        self.lock_state().clone()
    }

    /// The state to answer with, for a request that carries the token while the pass
    /// is open.
    fn admits(&self, headers: &HeaderMap) -> Option<Arc<WebhookState>> {
        if self.open.load(Ordering::Relaxed) && headers.get(WARM_UP_HEADER) == Some(&self.token) {
            self.lock_state().clone()
        } else {
            None
        }
    }

    fn lock_state(&self) -> MutexGuard<'_, Option<Arc<WebhookState>>> {
        // Nothing panics while holding it (an Option is cloned or taken).
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Parses references of every shape and runs one made-up review through the whole
/// path, so that what is built on first use (the reference grammar, among others) is
/// built before the port is marked ready, not during the first real admission. The
/// throwaway copy of the rules leaves the real cache as it was.
pub(crate) fn warm_up(rules: &CachedRules) {
    harbor_pilot_core::reference::ImageRef::warm_up();
    let throwaway = rules.clone();
    if let Ok(incoming) = admission::parse_review(&made_up_review(rules)) {
        let reviewed = admission::review(
            &incoming,
            &throwaway,
            Harbor::Available,
            &harbor_pilot_core::patch::all_served,
        );
        admission::encode_review(&reviewed.response);
        // An event's first use registers its callsite with the subscriber (the filter
        // decides its interest once), part of what made the first admission slower
        // than later ones at the info level (not at warn). Done here under a
        // subscriber that drops everything, so no line is written; registration is
        // global, so the real subscriber learns of the callsites all the same.
        let (namespace, name) = incoming.namespace_and_name();
        crate::telemetry::without_logging(|| {
            log_review(&reviewed, &incoming, namespace, name);
        });
    }
}

/// A CREATE of a pod shaped like the ones a cluster sends (a Deployment's, over 16 KiB):
/// an init container and three containers with what charts give them (env, ports,
/// probes, resources, mounts, security contexts), labels, annotations with the escaped
/// JSON of `kubectl apply`, owner references and managed fields. Its images are of the
/// rules' proxied upstreams in turn, so the first is one the rules rewrite. With a
/// one-container pod of a few hundred bytes, the first real admission still ran ~110
/// cache lines of the review's reader for the first time (escaped strings, the fields
/// it skips; counted under callgrind); with this pod, 7. The body also spans more than
/// one TLS record.
pub(crate) fn made_up_review(rules: &CachedRules) -> Vec<u8> {
    // The proxied upstreams in turn, Docker Hub's images written as charts write them
    // (no registry, `library/` implied): each upstream's rewrite and counter series, and
    // the short name's normalisation, are then not first run by a real admission. (An
    // h2load admission with such images before the first real one took that one from
    // 1.17x to 1.09x a later one's time inside the server; with the warm-up through the
    // real port the difference was within the noise, 1.13-1.18x against 1.14x.)
    let upstreams: Vec<&str> = rules.proxies().map(|(upstream, _)| upstream).collect();
    let image = |slot: usize, name: &str| match upstreams.get(slot % upstreams.len().max(1)) {
        None => format!("nginx:1.27-{name}"),
        Some(&"docker.io") => format!("{name}:1"),
        Some(upstream) => format!("{upstream}/warm-up/{name}:1"),
    };
    let container = |name: &str, image: String| {
        serde_json::json!({
            "name": name,
            "image": image,
            "imagePullPolicy": "IfNotPresent",
            "command": ["/bin/app", "--config=/etc/app/config.yaml"],
            "args": ["--listen=:8080", "--log-level=info", "--metrics=:9090"],
            "env": [
                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}},
                {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"key": "password", "name": "warm-up"}}},
                {"name": "GOMAXPROCS", "value": "2"},
                {"name": "JAVA_OPTS", "value": "-Xms256m -Xmx512m -Dfile.encoding=\"UTF-8\""},
            ],
            "ports": [
                {"containerPort": 8080, "name": "http", "protocol": "TCP"},
                {"containerPort": 9090, "name": "metrics", "protocol": "TCP"},
            ],
            "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http", "scheme": "HTTP"},
                              "failureThreshold": 3, "initialDelaySeconds": 10, "periodSeconds": 10,
                              "successThreshold": 1, "timeoutSeconds": 1},
            "readinessProbe": {"exec": {"command": ["sh", "-c", "test -f /tmp/ready"]},
                               "failureThreshold": 3, "periodSeconds": 5, "successThreshold": 1,
                               "timeoutSeconds": 1},
            "resources": {"limits": {"cpu": "500m", "memory": "512Mi"},
                          "requests": {"cpu": "100m", "memory": "128Mi"}},
            "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]},
                                "readOnlyRootFilesystem": true, "runAsNonRoot": true, "runAsUser": 65532,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "terminationMessagePath": "/dev/termination-log",
            "terminationMessagePolicy": "File",
            "volumeMounts": [
                {"mountPath": "/etc/app", "name": "config", "readOnly": true},
                {"mountPath": "/tmp", "name": "tmp"},
                {"mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "name": "kube-api-access-warm",
                 "readOnly": true},
            ],
        })
    };
    let containers = serde_json::json!([
        container("app", image(1, "app")),
        container(
            "sidecar",
            format!(
                "{}@sha256:{}",
                image(2, "sidecar"),
                "0123456789abcdef".repeat(4)
            )
        ),
        container("proxy", "registry.k8s.io/pause:3.10".to_owned()),
    ]);
    let init_containers = serde_json::json!([container("init", image(0, "init"))]);
    // What `kubectl apply` leaves: the whole manifest as one escaped JSON string.
    let last_applied = serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "warm-up", "namespace": "warm-up"},
        "spec": {"template": {"spec": {"containers": containers, "initContainers": init_containers}}},
    })
    .to_string();
    // Managed fields: keys such as `k:{"name":"app"}` with escaped quotes, nested.
    let fields = |names: &[&str]| {
        let mut entries = serde_json::Map::new();
        entries.insert(".".to_owned(), serde_json::json!({}));
        for name in names {
            entries.insert(
                format!("k:{{\"name\":\"{name}\"}}"),
                serde_json::json!({".": {}, "f:image": {}, "f:imagePullPolicy": {}, "f:name": {},
                                   "f:env": {".": {}, "k:{\"name\":\"GOMAXPROCS\"}": {".": {}, "f:name": {}, "f:value": {}}},
                                   "f:ports": {".": {}, "k:{\"containerPort\":8080,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}},
                                   "f:resources": {".": {}, "f:limits": {".": {}, "f:cpu": {}, "f:memory": {}}}}),
            );
        }
        serde_json::Value::Object(entries)
    };
    let review = serde_json::json!({
        "apiVersion": admission::API_VERSION,
        "kind": "AdmissionReview",
        "request": {
            "uid": "warm-up",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "name": "warm-up-5d8f7b6c9-x2x7q",
            "namespace": "warm-up",
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller",
                         "uid": "0b6f7a1e-1c2d-4e5f-8a9b-0c1d2e3f4a5b",
                         "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"]},
            "object": {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": "warm-up-5d8f7b6c9-x2x7q",
                    "generateName": "warm-up-5d8f7b6c9-",
                    "namespace": "warm-up",
                    "creationTimestamp": null,
                    "labels": {"app.kubernetes.io/name": "warm-up", "app.kubernetes.io/instance": "warm-up",
                               "app.kubernetes.io/version": "1.0.0", "pod-template-hash": "5d8f7b6c9"},
                    "annotations": {"kubectl.kubernetes.io/last-applied-configuration": last_applied,
                                    "checksum/config": "0123456789abcdef".repeat(4),
                                    "prometheus.io/scrape": "true"},
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "warm-up-5d8f7b6c9",
                                         "uid": "4f2c8a1e-9b3d-4c5e-8f7a-1b2c3d4e5f6a",
                                         "controller": true, "blockOwnerDeletion": true}],
                    "managedFields": [{"manager": "kube-controller-manager", "operation": "Update",
                                       "apiVersion": "v1", "time": "2026-01-01T00:00:00Z", "fieldsType": "FieldsV1",
                                       "fieldsV1": {"f:metadata": {"f:generateName": {}, "f:labels": {".": {}, "f:app.kubernetes.io/name": {}},
                                                                   "f:ownerReferences": {".": {}, "k:{\"uid\":\"4f2c8a1e-9b3d-4c5e-8f7a-1b2c3d4e5f6a\"}": {}}},
                                                    "f:spec": {"f:containers": fields(&["app", "sidecar", "proxy"]),
                                                               "f:initContainers": fields(&["init"])}}}],
                },
                "spec": {
                    "initContainers": init_containers,
                    "containers": containers,
                    "volumes": [
                        {"name": "config", "configMap": {"name": "warm-up", "defaultMode": 420}},
                        {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
                        {"name": "kube-api-access-warm", "projected": {"defaultMode": 420, "sources": [
                            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                        ]}},
                    ],
                    "serviceAccountName": "warm-up",
                    "securityContext": {"fsGroup": 65532, "runAsNonRoot": true},
                    "terminationGracePeriodSeconds": 30,
                    "dnsPolicy": "ClusterFirst",
                    "restartPolicy": "Always",
                    "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                        {"weight": 100, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname",
                            "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "warm-up"}}}}]}},
                    "tolerations": [
                        {"effect": "NoExecute", "key": "node.kubernetes.io/not-ready", "operator": "Exists", "tolerationSeconds": 300},
                        {"effect": "NoExecute", "key": "node.kubernetes.io/unreachable", "operator": "Exists", "tolerationSeconds": 300},
                    ],
                    "priority": 0,
                    "enableServiceLinks": true,
                },
                "status": {},
            },
            "oldObject": null,
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        }
    });
    review.to_string().into_bytes()
}

/// The webhook port's service: `POST /mutate` straight to the review, anything else
/// to [`other_requests`]. Every admission comes this way, and going through an axum
/// router (path match, URL-parameter map, boxed service, futures and body) was 8 of an
/// admission's 60 allocations. The warm-up's admissions, while `warm_up` is open, are
/// answered with its state.
fn service(state: WebhookState, warm_up: Option<Arc<WarmUpPass>>) -> impl HttpService {
    let state = Arc::new(state);
    let others = TowerToHyperService::new(other_requests());
    hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
        // The path without the query: the API server calls `/mutate?timeout=10s`.
        if request.method() == Method::POST && request.uri().path() == MUTATE_PATH {
            let state = warm_up
                .as_ref()
                .and_then(|pass| pass.admits(request.headers()))
                .unwrap_or_else(|| Arc::clone(&state));
            Either::Left(async move { Ok(review_body(&state, request.into_body()).await) })
        } else {
            Either::Right(others.call(request))
        }
    })
}

/// Serves the webhook on `listener` until `stop` fires (or its sender is dropped),
/// then drains for at most `drain`; see [`server::serve`]. `warm_up` lets the warm-up's
/// admissions through ([`WarmUpPass`]). The webhook port and the warm-up's own port
/// (when the warm-up cannot use the real one) start their server here, and only here:
/// the generic server code (accept loop, connection task, hyper and rustls) is then
/// compiled once, in this module, and the warm-up runs the very machine code the port
/// runs later. Started from two modules, each had its own copy (the compiler
/// instantiates generics per codegen unit), and the first real admission ran ~750
/// cache lines of connection code for the first time (counted under callgrind).
#[inline(never)]
pub fn spawn_server(
    listener: TcpListener,
    transport: Transport,
    state: WebhookState,
    limits: ConnectionLimits,
    stop: oneshot::Receiver<()>,
    drain: Duration,
    warm_up: Option<Arc<WarmUpPass>>,
) -> JoinHandle<()> {
    tokio::spawn(server::serve(
        listener,
        transport,
        service(state, warm_up),
        limits,
        async {
            let _ = stop.await;
        },
        drain,
    ))
}

/// JSON answers for what is not `POST /mutate`: 405 on the path, 404 elsewhere.
fn other_requests() -> Router {
    Router::new()
        .route(
            MUTATE_PATH,
            any(|| async {
                status_response(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "MethodNotAllowed",
                    "use POST /mutate",
                )
            }),
        )
        .fallback(|| async {
            status_response(
                StatusCode::NOT_FOUND,
                "NotFound",
                "the webhook path is POST /mutate",
            )
        })
}

/// Reads the body of a `POST /mutate` and answers it.
async fn review_body(state: &WebhookState, body: hyper::body::Incoming) -> Response {
    let started = Instant::now();
    let body = match read_body(body, state.max_body_bytes, state.body_read_timeout).await {
        Ok(body) => body,
        Err(rejection) => {
            state
                .metrics
                .observe_rejection(rejection.kind, started.elapsed());
            tracing::warn!(reason = rejection.message, "request rejected");
            return rejection.into_response();
        }
    };
    // From here on nothing awaits. No panic on this path may become anything but an
    // allowed answer: parsing and deciding both run under catch_unwind.
    let incoming =
        match std::panic::catch_unwind(AssertUnwindSafe(|| admission::parse_review(&body))) {
            Ok(Ok(incoming)) => incoming,
            Ok(Err(error)) => {
                state
                    .metrics
                    .observe_rejection(Rejection::BadRequest, started.elapsed());
                let message = error.detail();
                // The body is never logged: a Pod carries secrets (env values, args,
                // last-applied-configuration) in fields the webhook does not read.
                tracing::warn!(error = %message, bytes = body.len(), "not an AdmissionReview");
                return status_response(StatusCode::BAD_REQUEST, "BadRequest", &message);
            }
            Err(panic) => return parse_panicked(state, &body, &*panic, started),
        };
    // One atomic load: the prober never blocks an admission.
    let harbor = if state.gate.is_open() {
        Harbor::Available
    } else {
        Harbor::Unavailable
    };
    // `verify`: ask Harbor about the images this pod would be rewritten to, waiting at
    // most the budget (nothing is asked while the gate is closed: fail open as before).
    let served = match &state.verifier {
        Some(verifier) if harbor == Harbor::Available => {
            let targets = std::panic::catch_unwind(AssertUnwindSafe(|| {
                admission::rewrite_targets(&incoming, &state.rules)
            }))
            .unwrap_or_default();
            if targets.is_empty() {
                None
            } else {
                Some(verifier.served(targets).await)
            }
        }
        _ => None,
    };
    let served = |image: &str| match &served {
        None => Served::Yes,
        Some(known) => known.get(image).cloned().unwrap_or(Served::Unknown),
    };
    let answer = || answer_and_count(state, &incoming, harbor, &served, body.len(), started);
    if state.silent {
        crate::telemetry::without_logging(answer)
    } else {
        answer()
    }
}

/// The part of [`review_body`] after the last await: decide, log, count, answer. Never
/// inlined: the warm-up's admissions call it under a discarding subscriber and real
/// ones directly, and both must run the one copy of its machine code.
#[inline(never)]
fn answer_and_count(
    state: &WebhookState,
    incoming: &Incoming,
    harbor: Harbor,
    served: &dyn Fn(&str) -> Served,
    bytes: usize,
    started: Instant,
) -> Response {
    let (namespace, name) = incoming.namespace_and_name();
    // A DEBUG span: an INFO span cost ~5 µs per request (a quarter of a small review)
    // even with nothing logged inside, so the INFO and WARN events below carry the same
    // fields themselves.
    let span = tracing::debug_span!(
        "admission",
        uid = incoming.uid(),
        namespace,
        name,
        operation = admission::operation_label(incoming.operation()),
        dry_run = incoming.dry_run(),
    );
    let _entered = span.enter();
    tracing::debug!(bytes, "admission review received");
    let answer = answer(incoming, &state.rules, harbor, served, namespace, name);
    state.metrics.observe_review(
        admission::operation_label(incoming.operation()),
        answer.outcome,
        started.elapsed(),
        &answer.changes,
    );
    json_response(StatusCode::OK, answer.body)
}

/// The parser panicked (a bug): answer allowed under the uid if a plain read of the
/// envelope finds one, else 400, which `failurePolicy: Ignore` also lets through.
fn parse_panicked(
    state: &WebhookState,
    body: &[u8],
    panic: &(dyn std::any::Any + Send),
    started: Instant,
) -> Response {
    #[derive(serde::Deserialize)]
    struct Envelope {
        request: Uid,
    }
    #[derive(serde::Deserialize)]
    struct Uid {
        uid: String,
    }
    tracing::error!(panic = %panic_message(panic), "reading the review failed; allowing the request unchanged");
    match serde_json::from_slice::<Envelope>(body) {
        Ok(envelope) => {
            let mut response = AdmissionResponse::invalid("");
            response.uid = envelope.request.uid;
            let response = internal_error_response(response);
            state
                .metrics
                .observe_review("unknown", Outcome::Error, started.elapsed(), &[]);
            json_response(StatusCode::OK, admission::encode_review(&response))
        }
        Err(_) => {
            state
                .metrics
                .observe_rejection(Rejection::BadRequest, started.elapsed());
            status_response(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "harbor-pilot could not read the request (internal error)",
            )
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

struct Answer<'a> {
    body: Vec<u8>,
    outcome: Outcome,
    changes: Vec<harbor_pilot_core::patch::Change<'a, 'a>>,
}

/// Reviews `incoming`; a panic becomes an allowed, unpatched answer.
fn answer<'a>(
    incoming: &'a Incoming,
    rules: &'a CachedRules,
    harbor: Harbor,
    served: &dyn Fn(&str) -> Served,
    namespace: &str,
    name: &str,
) -> Answer<'a> {
    match std::panic::catch_unwind(AssertUnwindSafe(|| {
        admission::review(incoming, rules, harbor, served)
    })) {
        Ok(reviewed) => {
            log_review(&reviewed, incoming, namespace, name);
            Answer {
                body: admission::encode_review(&reviewed.response),
                outcome: reviewed.outcome,
                changes: reviewed.changes,
            }
        }
        Err(panic) => {
            tracing::error!(
                uid = incoming.uid(),
                namespace,
                name,
                panic = %panic_message(&*panic),
                "review failed; allowing the request unchanged"
            );
            let response = internal_error_response(incoming.request.allowed());
            Answer {
                body: admission::encode_review(&response),
                outcome: Outcome::Error,
                changes: Vec::new(),
            }
        }
    }
}

/// `response` (built without a patch), allowed, with a warning: what an internal
/// failure answers.
fn internal_error_response(mut response: AdmissionResponse) -> AdmissionResponse {
    response.allowed = true;
    response.warnings = Some(vec![
        "harbor-pilot: internal error; images left unchanged".to_owned(),
    ]);
    response
}

fn log_review(
    reviewed: &admission::Reviewed<'_>,
    incoming: &Incoming,
    namespace: &str,
    name: &str,
) {
    let uid = incoming.uid();
    let operation = admission::operation_label(incoming.operation());
    let outcome = reviewed.outcome.as_str();
    match reviewed.outcome {
        Outcome::Rewritten => {
            let rewritten = reviewed
                .changes
                .iter()
                .filter(|c| matches!(c.verdict, Verdict::Rewrite(_)))
                .count();
            tracing::info!(
                uid,
                namespace,
                name,
                operation,
                rewritten,
                "images rewritten"
            );
        }
        Outcome::InvalidObject | Outcome::Error => tracing::warn!(
            uid,
            namespace,
            name,
            operation,
            outcome,
            warnings = ?reviewed.response.warnings,
            "allowed unchanged"
        ),
        _ => tracing::debug!(outcome, "reviewed"),
    }
    if tracing::enabled!(tracing::Level::DEBUG) {
        for change in &reviewed.changes {
            tracing::debug!(slot = %change.slot, image = %harbor_pilot_core::redact::credentials(change.slot.image), verdict = %change.verdict, "image");
        }
    }
}

struct BodyRejection {
    kind: Rejection,
    message: String,
}

impl IntoResponse for BodyRejection {
    fn into_response(self) -> Response {
        match self.kind {
            Rejection::PayloadTooLarge => status_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLarge",
                &self.message,
            ),
            Rejection::BadRequest => {
                status_response(StatusCode::BAD_REQUEST, "BadRequest", &self.message)
            }
            Rejection::Timeout => {
                status_response(StatusCode::REQUEST_TIMEOUT, "Timeout", &self.message)
            }
        }
    }
}

async fn read_body(
    body: hyper::body::Incoming,
    limit: usize,
    timeout: std::time::Duration,
) -> Result<Bytes, BodyRejection> {
    let too_large = || BodyRejection {
        kind: Rejection::PayloadTooLarge,
        message: format!(
            "request body is larger than the {limit} bytes allowed (--max-body-bytes)"
        ),
    };
    let limited = http_body_util::BodyExt::collect(http_body_util::Limited::new(body, limit));
    let Ok(read) = tokio::time::timeout(timeout, limited).await else {
        return Err(BodyRejection {
            kind: Rejection::Timeout,
            message: format!("request body not received within {timeout:?} (--body-read-timeout)"),
        });
    };
    read.map(http_body_util::Collected::to_bytes)
        .map_err(|error| {
            // The limit is a LengthLimitError, maybe wrapped in another; anything else is
            // the client going away mid-body.
            let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&*error);
            while let Some(e) = source {
                if e.is::<http_body_util::LengthLimitError>() {
                    return too_large();
                }
                source = e.source();
            }
            BodyRejection {
                kind: Rejection::BadRequest,
                message: format!("cannot read the request body: {error}"),
            }
        })
}

/// A `v1.Status` body, the shape Kubernetes clients understand for errors.
fn status_response(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    });
    json_response(code, serde_json::to_vec(&body).unwrap_or_default())
}

fn json_response(code: StatusCode, body: Vec<u8>) -> Response {
    (code, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}
