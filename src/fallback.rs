//! The fallback controller: sends Pods stuck pulling their Harbor image back to the
//! original upstream image, as node-level mirrors fall back on every pull.
//!
//! It watches only Pods labelled `harbor-pilot.io/rewritten=true` (the webhook labels
//! every Pod it rewrites), with kube-runtime's controller: each change of such a Pod, and
//! each requeue, runs [`reconcile`], which asks the core ([`harbor_pilot_core::fallback`])
//! which containers are stuck, remembers since when, and once one has been stuck for
//! `fallback.after` (at once while the health gate says Harbor is down) sends it back with
//! one JSON Patch and records a Warning Event `HarborFallback` on the Pod.
//!
//! It runs beside the webhook and never affects it: an API server that cannot be reached
//! only delays fallbacks (the watch is re-established with backoff, counted in
//! `harbor_pilot_fallback_watch_restarts_total`), and `/readyz` does not depend on it. Two
//! replicas may both act on a Pod; the patch's `test` makes the second fail, which is
//! counted as a conflict and logged at debug.
//!
//! Since when a container has been stuck is kept in memory: a restart of harbor-pilot
//! starts the wait again (a fallback can come later, never earlier).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use harbor_pilot_core::fallback::{self, Due, Stuck};
use harbor_pilot_core::gate::{Availability, HarborGate};
use harbor_pilot_core::patch::REWRITTEN_LABEL;
use harbor_pilot_core::rules::CachedRules;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Resource as _, ResourceExt as _};
use tokio::task::JoinHandle;

use crate::metrics::{FallbackResult, Metrics};

/// The Event reason `kubectl describe pod` shows.
pub const EVENT_REASON: &str = "HarborFallback";
/// Entries for Pods not reconciled for this long are forgotten (deleted Pods).
const FORGET_AFTER: Duration = Duration::from_secs(600);
/// How long to wait before trying again after an error.
const RETRY: Duration = Duration::from_secs(10);

/// Why the controller cannot reach the API server.
#[derive(Debug, thiserror::Error)]
pub enum FallbackError {
    /// No kubeconfig and not in a cluster.
    #[error("cannot find the API server (in-cluster config, --kubeconfig or KUBECONFIG)")]
    Infer(#[source] kube::config::InferConfigError),
    /// The kubeconfig given with --kubeconfig does not load.
    #[error("cannot load the kubeconfig {}", path.display())]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// The client could not be built.
    #[error("cannot build the Kubernetes client")]
    Client(#[source] kube::Error),
    /// A patch failed for another reason than a changed image.
    #[error("cannot patch pod {pod}")]
    Patch {
        /// `namespace/name`.
        pod: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

/// What the controller needs.
#[derive(Clone)]
pub struct Fallback {
    /// The rules, to check that a recorded original rewrites to the current image.
    pub rules: Arc<CachedRules>,
    /// Harbor down: send back at once.
    pub gate: HarborGate,
    /// How long a container may be stuck before it goes back.
    pub after: Duration,
    /// Where to count.
    pub metrics: Metrics,
    /// `--kubeconfig`, if given (else in-cluster or `KUBECONFIG`).
    pub kubeconfig: Option<PathBuf>,
}

/// A kube client from `--kubeconfig`, else the environment (`KUBECONFIG`, then
/// in-cluster).
pub async fn client(kubeconfig: Option<&std::path::Path>) -> Result<kube::Client, FallbackError> {
    let config = match kubeconfig {
        Some(path) => {
            let loaded = kube::config::Kubeconfig::read_from(path).map_err(|source| {
                FallbackError::Kubeconfig {
                    path: path.to_owned(),
                    source,
                }
            })?;
            kube::Config::from_custom_kubeconfig(loaded, &Default::default())
                .await
                .map_err(|source| FallbackError::Kubeconfig {
                    path: path.to_owned(),
                    source,
                })?
        }
        None => kube::Config::infer().await.map_err(FallbackError::Infer)?,
    };
    kube::Client::try_from(config).map_err(FallbackError::Client)
}

/// Runs the controller until aborted. A client that cannot be built is retried with
/// backoff; admissions go on meanwhile.
pub fn spawn(fallback: Fallback) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut wait = Duration::from_secs(1);
        let client = loop {
            match client(fallback.kubeconfig.as_deref()).await {
                Ok(client) => break client,
                Err(error) => {
                    fallback.metrics.observe_fallback_watch_restart();
                    tracing::error!(error = %harbor_pilot_core::chain::one_line(&error), retry_in = ?wait, "fallback controller cannot start");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(60));
                }
            }
        };
        tracing::info!(after = ?fallback.after, "fallback controller watching pods labelled {REWRITTEN_LABEL}=true");
        run(client, fallback).await;
    })
}

async fn run(client: kube::Client, fallback: Fallback) {
    let api: Api<Pod> = Api::all(client.clone());
    let selector = format!("{REWRITTEN_LABEL}=true");
    let metrics = fallback.metrics.clone();
    let reporter = Reporter {
        controller: "harbor-pilot".to_owned(),
        instance: std::env::var("POD_NAME").ok(),
    };
    let context = Arc::new(Context {
        recorder: Recorder::new(client.clone(), reporter),
        client,
        stuck: Mutex::new(HashMap::new()),
        fallback,
    });
    // The controller's watch retries with backoff by itself; a failure reaches us here.
    Controller::new(api, watcher::Config::default().labels(&selector))
        .run(reconcile, error_policy, context)
        .for_each(|result| {
            if let Err(controller::Error::QueueError(error)) = result {
                metrics.observe_fallback_watch_restart();
                tracing::warn!(%error, "fallback watch failed; re-establishing it with backoff");
            }
            async {}
        })
        .await;
}

/// Shared by every reconcile.
struct Context {
    client: kube::Client,
    recorder: Recorder,
    fallback: Fallback,
    /// `(pod uid, container)` → since when it has been stuck on which image.
    stuck: Mutex<HashMap<(String, String), Seen>>,
}

struct Seen {
    image: String,
    since: Instant,
    last_seen: Instant,
}

/// One Pod: which of its containers are stuck, which of them are due, and the patch.
async fn reconcile(pod: Arc<Pod>, context: Arc<Context>) -> Result<Action, FallbackError> {
    let fallback = &context.fallback;
    let uid = pod.uid().unwrap_or_default();
    let found = fallback::stuck_containers(&pod, &fallback.rules);
    let harbor_down = fallback.gate.availability() == Availability::Down;
    let now = Instant::now();
    let (due_now, wait) = {
        let mut stuck = context.stuck.lock().unwrap_or_else(|p| p.into_inner());
        stuck.retain(|(pod_uid, container), seen| {
            if *pod_uid == uid {
                found
                    .iter()
                    .any(|s| &s.name == container && s.current == seen.image)
            } else {
                now.duration_since(seen.last_seen) < FORGET_AFTER
            }
        });
        let mut due_now = Vec::new();
        let mut wait: Option<Duration> = None;
        for container in &found {
            let seen = stuck
                .entry((uid.clone(), container.name.clone()))
                .or_insert_with(|| Seen {
                    image: container.current.clone(),
                    since: now,
                    last_seen: now,
                });
            seen.last_seen = now;
            let stuck_for = now.duration_since(seen.since);
            match fallback::due(stuck_for, fallback.after, harbor_down) {
                Due::Now => due_now.push((container.clone(), stuck_for)),
                Due::In(left) => wait = Some(wait.map_or(left, |w| w.min(left))),
            }
        }
        let pods: std::collections::HashSet<&String> = stuck.keys().map(|(u, _)| u).collect();
        fallback.metrics.set_fallback_stuck_pods(pods.len());
        (due_now, wait)
    };
    if !due_now.is_empty() {
        send_back(&pod, &due_now, &context).await?;
    }
    Ok(match wait {
        // A little past the due time, so the next look finds it due.
        Some(left) => Action::requeue(left + Duration::from_millis(50)),
        None => Action::await_change(),
    })
}

/// Patches `pod` so the due containers run their originals again, then records Events.
async fn send_back(
    pod: &Pod,
    due: &[(Stuck, Duration)],
    context: &Context,
) -> Result<(), FallbackError> {
    let metrics = &context.fallback.metrics;
    let namespace = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let containers: Vec<Stuck> = due.iter().map(|(s, _)| s.clone()).collect();
    let patch = json_patch::Patch(fallback::revert_patch(pod, &containers));
    let api: Api<Pod> = Api::namespaced(context.client.clone(), &namespace);
    match api
        .patch(&name, &PatchParams::default(), &Patch::Json::<()>(patch))
        .await
    {
        Ok(_) => {}
        // The API server answers a failed `test` with a bare 422 Invalid ("the server
        // rejected our request due to an error in our request"), as it answers other
        // bad patches: look whether an image changed. If one did, another replica sent
        // it back first or someone changed it; either way not ours to change.
        Err(kube::Error::Api(status))
            if matches!(status.code, 409 | 422)
                && image_changed(&api, &name, &containers).await =>
        {
            metrics.observe_fallback(FallbackResult::Conflict, containers.len());
            tracing::debug!(%namespace, pod = %name, "fallback patch did not apply: the image changed meanwhile");
            return Ok(());
        }
        Err(source) => {
            metrics.observe_fallback(FallbackResult::Error, containers.len());
            return Err(FallbackError::Patch {
                pod: format!("{namespace}/{name}"),
                source,
            });
        }
    }
    metrics.observe_fallback(FallbackResult::Reverted, containers.len());
    {
        let mut stuck = context.stuck.lock().unwrap_or_else(|p| p.into_inner());
        let uid = pod.uid().unwrap_or_default();
        for container in &containers {
            stuck.remove(&(uid.clone(), container.name.clone()));
        }
    }
    let reference = pod.object_ref(&());
    for (container, waited) in due {
        tracing::warn!(
            %namespace,
            pod = %name,
            container = %container.name,
            from = %container.current,
            to = %container.original,
            "pulling from Harbor failed; sent the container back to its upstream image"
        );
        let event = Event {
            type_: EventType::Warning,
            reason: EVENT_REASON.to_owned(),
            note: Some(fallback::event_note(container, *waited)),
            action: "SendBackToUpstream".to_owned(),
            secondary: None,
        };
        if let Err(error) = context.recorder.publish(&event, &reference).await {
            tracing::warn!(%error, %namespace, pod = %name, "cannot record the fallback event");
        }
    }
    Ok(())
}

/// Whether any of `containers` no longer has the image its `test` expected.
async fn image_changed(api: &Api<Pod>, name: &str, containers: &[Stuck]) -> bool {
    let Ok(Some(pod)) = api.get_opt(name).await else {
        return true; // gone: nothing left to send back
    };
    let spec = pod.spec.as_ref();
    containers.iter().any(|stuck| {
        let list = match stuck.list {
            fallback::ContainerList::Init => spec.and_then(|s| s.init_containers.as_deref()),
            fallback::ContainerList::Regular => spec.map(|s| s.containers.as_slice()),
        };
        list.and_then(|l| l.get(stuck.index))
            .and_then(|c| c.image.as_deref())
            != Some(stuck.current.as_str())
    })
}

fn error_policy(_pod: Arc<Pod>, error: &FallbackError, _context: Arc<Context>) -> Action {
    tracing::warn!(error = %harbor_pilot_core::chain::one_line(error), "fallback failed; retrying");
    Action::requeue(RETRY)
}
