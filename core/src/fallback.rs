//! Falling back after admission: which containers of a Pod are stuck pulling their Harbor
//! image, whether it is time to send them back to the original upstream image, and the
//! JSON Patch that does it.
//!
//! A container is sent back only when all of this holds, so that the controller can
//! never write anything but what the webhook itself recorded:
//!
//! - its image is on the Harbor host;
//! - the `harbor-pilot.io/original-images` annotation records an original for it, and
//!   the rewrite of that original (by today's rules) is exactly the current image;
//! - its status is waiting with `ErrImagePull` or `ImagePullBackOff`.
//!
//! Ephemeral containers (their image cannot change), mirror (static) pods and pods being
//! deleted are left alone. The patch `test`s each current image first, so a second
//! controller (two replicas) or a person who changed the image meanwhile makes it fail
//! instead of being overwritten.
//!
//! Pure: a Pod in, a decision and a patch out; the controller in the binary watches,
//! times and patches.

use std::collections::BTreeMap;
use std::time::Duration;

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation, ReplaceOperation, TestOperation};
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use serde_json::Value;

use crate::patch::ORIGINAL_IMAGES_ANNOTATION;
use crate::rules::CachedRules;

/// Pod annotation `{"<container>": "<the Harbor image it was sent back from>"}`.
pub const FALLBACK_ANNOTATION: &str = "harbor-pilot.io/fallback";
/// The kubelet's waiting reasons for an image it cannot pull.
pub const PULL_FAILURES: [&str; 2] = ["ErrImagePull", "ImagePullBackOff"];
/// The annotation the kubelet puts on the API server's copy of a static pod.
const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// Which list a container is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContainerList {
    /// `spec.initContainers`
    Init,
    /// `spec.containers`
    Regular,
}

/// A container stuck pulling its Harbor image, with what it goes back to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stuck {
    /// Which list the container is in.
    pub list: ContainerList,
    /// Its index in that list.
    pub index: usize,
    /// Its name.
    pub name: String,
    /// The Harbor image it fails to pull.
    pub current: String,
    /// The image the annotation recorded, to go back to.
    pub original: String,
    /// `ErrImagePull` or `ImagePullBackOff`.
    pub reason: String,
    /// The kubelet's message (the pull error), when it gave one.
    pub message: Option<String>,
}

impl Stuck {
    /// JSON Pointer to the container's image.
    pub fn pointer(&self) -> PointerBuf {
        let list = match self.list {
            ContainerList::Init => "initContainers",
            ContainerList::Regular => "containers",
        };
        PointerBuf::from_tokens(["spec", list, &self.index.to_string(), "image"])
    }
}

/// Why a whole Pod is left alone.
pub fn skipped(pod: &Pod) -> Option<&'static str> {
    if pod.metadata.deletion_timestamp.is_some() {
        return Some("being deleted");
    }
    let annotations = pod.metadata.annotations.as_ref();
    if annotations.is_some_and(|a| a.contains_key(MIRROR_ANNOTATION)) {
        return Some("a mirror of a static pod (its spec belongs to the node)");
    }
    None
}

/// The containers and init containers of `pod` that may be sent back now or later.
pub fn stuck_containers(pod: &Pod, rules: &CachedRules) -> Vec<Stuck> {
    if skipped(pod).is_some() {
        return Vec::new();
    }
    let Some(originals) = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ORIGINAL_IMAGES_ANNOTATION))
        .and_then(|v| serde_json::from_str::<BTreeMap<String, String>>(v).ok())
    else {
        return Vec::new();
    };
    let (Some(spec), Some(status)) = (&pod.spec, &pod.status) else {
        return Vec::new();
    };
    let lists = [
        (
            ContainerList::Init,
            spec.init_containers.as_deref().unwrap_or_default(),
            status
                .init_container_statuses
                .as_deref()
                .unwrap_or_default(),
        ),
        (
            ContainerList::Regular,
            spec.containers.as_slice(),
            status.container_statuses.as_deref().unwrap_or_default(),
        ),
    ];
    let mut out = Vec::new();
    for (list, containers, statuses) in lists {
        for (index, container) in containers.iter().enumerate() {
            let Some(current) = container.image.as_deref() else {
                continue;
            };
            let Some(waiting) = statuses
                .iter()
                .find(|s| s.name == container.name)
                .and_then(pull_failure)
            else {
                continue;
            };
            let Some(original) = originals.get(&container.name) else {
                continue;
            };
            let on_harbor = current
                .strip_prefix(rules.harbor())
                .is_some_and(|rest| rest.starts_with('/'));
            // Only what the webhook itself would have written: the rewrite of the
            // recorded original must be exactly the current image.
            if !on_harbor || rules.decide(original).rewrite_image() != Some(current) {
                continue;
            }
            out.push(Stuck {
                list,
                index,
                name: container.name.clone(),
                current: current.to_owned(),
                original: original.clone(),
                reason: waiting.0.to_owned(),
                message: waiting.1.map(str::to_owned),
            });
        }
    }
    out
}

/// `(reason, message)` when the container waits because its image does not pull.
fn pull_failure(status: &ContainerStatus) -> Option<(&str, Option<&str>)> {
    let waiting = status.state.as_ref()?.waiting.as_ref()?;
    let reason = waiting.reason.as_deref()?;
    PULL_FAILURES
        .contains(&reason)
        .then_some((reason, waiting.message.as_deref()))
}

/// When a stuck container is sent back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Now.
    Now,
    /// Not before this much longer.
    In(Duration),
}

/// A container seen stuck for `stuck_for` goes back after `after`, or at once while
/// Harbor is known to be down.
pub fn due(stuck_for: Duration, after: Duration, harbor_down: bool) -> Due {
    if harbor_down || stuck_for >= after {
        Due::Now
    } else {
        Due::In(after - stuck_for)
    }
}

/// One JSON Patch sending every container in `reverts` back: for each a `test` of the
/// current image and a `replace` with the original, then the
/// [`FALLBACK_ANNOTATION`] merged with what an earlier fallback recorded.
pub fn revert_patch(pod: &Pod, reverts: &[Stuck]) -> Vec<PatchOperation> {
    let mut ops = Vec::with_capacity(reverts.len() * 2 + 1);
    for stuck in reverts {
        ops.push(PatchOperation::Test(TestOperation {
            path: stuck.pointer(),
            value: Value::String(stuck.current.clone()),
        }));
        ops.push(PatchOperation::Replace(ReplaceOperation {
            path: stuck.pointer(),
            value: Value::String(stuck.original.clone()),
        }));
    }
    let annotations = pod.metadata.annotations.as_ref();
    let mut recorded: BTreeMap<String, String> = annotations
        .and_then(|a| a.get(FALLBACK_ANNOTATION))
        .and_then(|v| serde_json::from_str(v).ok())
        .unwrap_or_default();
    recorded.extend(reverts.iter().map(|s| (s.name.clone(), s.current.clone())));
    let value = Value::String(serde_json::to_string(&recorded).unwrap_or_default());
    ops.push(PatchOperation::Add(if annotations.is_some() {
        AddOperation {
            path: PointerBuf::from_tokens(["metadata", "annotations", FALLBACK_ANNOTATION]),
            value,
        }
    } else {
        AddOperation {
            path: PointerBuf::from_tokens(["metadata", "annotations"]),
            value: Value::Object(
                [(FALLBACK_ANNOTATION.to_owned(), value)]
                    .into_iter()
                    .collect(),
            ),
        }
    }));
    ops
}

/// What `kubectl describe pod` shows for one container sent back.
pub fn event_note(stuck: &Stuck, waited: Duration) -> String {
    let error = stuck
        .message
        .as_deref()
        .map_or_else(String::new, |m| format!(": {m}"));
    let note = format!(
        "container {} could not pull {} from Harbor for {}s ({}{error}); sent back to {}",
        stuck.name,
        stuck.current,
        waited.as_secs(),
        stuck.reason,
        stuck.original
    );
    // The Events API caps a note at 1 kB.
    crate::reference::shorten(&note, 1000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use serde_json::json;

    fn rules() -> CachedRules {
        Config::from_yaml("harbor: harbor.example.com\nproxies: {docker.io: hub}\n")
            .unwrap()
            .rules
    }

    /// A rewritten pod with containers `web` (nginx:1.25) and `side` (gcr.io, not
    /// rewritten) and init container `init` (busybox), `waiting` giving each
    /// container's waiting reason.
    fn pod(waiting: &[(&str, &str)]) -> Value {
        let status = |name: &str| {
            let reason = waiting.iter().find(|(n, _)| *n == name).map(|(_, r)| *r);
            match reason {
                Some(reason) => json!({"name": name, "image": "x", "imageID": "", "ready": false,
                    "restartCount": 0, "state": {"waiting": {"reason": reason,
                    "message": format!("{name}: failed to pull")}}}),
                None => json!({"name": name, "image": "x", "imageID": "", "ready": true,
                    "restartCount": 0, "state": {"running": {}}}),
            }
        };
        json!({
            "metadata": {"name": "p", "uid": "u", "annotations": {
                ORIGINAL_IMAGES_ANNOTATION: r#"{"init":"busybox","web":"nginx:1.25"}"#}},
            "spec": {
                "initContainers": [{"name": "init", "image": "harbor.example.com/hub/library/busybox"}],
                "containers": [{"name": "web", "image": "harbor.example.com/hub/library/nginx:1.25"},
                               {"name": "side", "image": "gcr.io/x/y:1"}]
            },
            "status": {"initContainerStatuses": [status("init")],
                       "containerStatuses": [status("web"), status("side")]}
        })
    }

    fn stuck(value: &Value) -> Vec<Stuck> {
        stuck_containers(&serde_json::from_value(value.clone()).unwrap(), &rules())
    }

    fn names(stuck: &[Stuck]) -> Vec<&str> {
        stuck.iter().map(|s| s.name.as_str()).collect()
    }

    #[test]
    fn finds_containers_and_init_containers_stuck_pulling_from_harbor() {
        let found = stuck(&pod(&[
            ("web", "ImagePullBackOff"),
            ("init", "ErrImagePull"),
        ]));
        assert_eq!(names(&found), ["init", "web"]);
        assert_eq!(found[1].original, "nginx:1.25");
        assert_eq!(
            found[1].current,
            "harbor.example.com/hub/library/nginx:1.25"
        );
        assert_eq!(found[1].message.as_deref(), Some("web: failed to pull"));
    }

    #[rstest::rstest]
    #[case::other_waiting_reason(&[("web", "ContainerCreating")])]
    #[case::not_on_harbor(&[("side", "ImagePullBackOff")])]
    #[case::running(&[])]
    fn leaves_containers_that_are_not_stuck_on_harbor(#[case] waiting: &[(&str, &str)]) {
        assert!(stuck(&pod(waiting)).is_empty());
    }

    #[test]
    fn leaves_an_image_that_is_not_the_rewrite_of_the_recorded_original() {
        // Someone set another Harbor image meanwhile: not ours to change.
        let mut value = pod(&[("web", "ImagePullBackOff")]);
        value["spec"]["containers"][0]["image"] =
            json!("harbor.example.com/hub/library/nginx:1.26");
        assert!(stuck(&value).is_empty());
        // Or there is no record at all.
        let mut value = pod(&[("web", "ImagePullBackOff")]);
        value["metadata"]["annotations"] = json!({});
        assert!(stuck(&value).is_empty());
    }

    #[test]
    fn leaves_mirror_pods_and_pods_being_deleted() {
        let mut mirror = pod(&[("web", "ImagePullBackOff")]);
        mirror["metadata"]["annotations"][MIRROR_ANNOTATION] = json!("abc");
        assert!(stuck(&mirror).is_empty());
        let mut deleting = pod(&[("web", "ImagePullBackOff")]);
        deleting["metadata"]["deletionTimestamp"] = json!("2026-12-01T00:00:00Z");
        assert!(stuck(&deleting).is_empty());
    }

    #[rstest::rstest]
    #[case::too_early(10, false, Due::In(Duration::from_secs(20)))]
    #[case::time_is_up(30, false, Due::Now)]
    #[case::harbor_down(0, true, Due::Now)]
    fn is_due_after_the_wait_or_at_once_while_harbor_is_down(
        #[case] stuck_for: u64,
        #[case] down: bool,
        #[case] expected: Due,
    ) {
        assert_eq!(
            due(
                Duration::from_secs(stuck_for),
                Duration::from_secs(30),
                down
            ),
            expected
        );
    }

    #[test]
    fn the_patch_tests_replaces_and_records_and_fails_on_a_changed_image() {
        let mut value = pod(&[("web", "ImagePullBackOff")]);
        value["metadata"]["annotations"][FALLBACK_ANNOTATION] = json!(r#"{"old":"x"}"#);
        let pod_typed: Pod = serde_json::from_value(value.clone()).unwrap();
        let found = stuck_containers(&pod_typed, &rules());
        let patch = json_patch::Patch(revert_patch(&pod_typed, &found));
        let mut patched = value.clone();
        json_patch::patch(&mut patched, &patch).unwrap();
        assert_eq!(patched["spec"]["containers"][0]["image"], "nginx:1.25");
        assert_eq!(patched["spec"]["containers"][1]["image"], "gcr.io/x/y:1");
        assert_eq!(
            patched["metadata"]["annotations"][FALLBACK_ANNOTATION],
            r#"{"old":"x","web":"harbor.example.com/hub/library/nginx:1.25"}"#
        );
        // A second controller applying the same patch finds the image changed.
        assert!(json_patch::patch(&mut patched, &patch).is_err());
    }

    #[test]
    fn the_event_note_names_container_images_and_error() {
        let found = stuck(&pod(&[("web", "ImagePullBackOff")]));
        assert_eq!(
            event_note(&found[0], Duration::from_secs(31)),
            "container web could not pull harbor.example.com/hub/library/nginx:1.25 from Harbor \
             for 31s (ImagePullBackOff: web: failed to pull); sent back to nginx:1.25"
        );
    }
}
