//! Which image fields of a Pod to rewrite, and the JSON Patch (RFC 6902) that does it.
//!
//! [`plan`] walks init containers, containers, ephemeral containers and image volumes
//! (in that order), asks the rules ([`CachedRules`]) about each image, and produces one `replace` per
//! rewritten image plus one `add` recording the originals in the annotation
//! [`ORIGINAL_IMAGES_ANNOTATION`]. Nothing else in the Pod is touched.
//!
//! Pure: no I/O.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation, ReplaceOperation};
use serde_json::Value;

use crate::pod::{ContainerImage, PodImages};
use crate::rules::CachedRules;
use crate::verdict::{Reason, Verdict};

/// Pod label that opts a single pod out: `harbor-pilot.io/rewrite: disabled`.
pub const REWRITE_LABEL: &str = "harbor-pilot.io/rewrite";
/// The value of [`REWRITE_LABEL`] that opts a pod out.
pub const REWRITE_DISABLED: &str = "disabled";
/// Pod annotation holding `{"<container name>": "<original image>"}` for every image
/// harbor-pilot rewrote. Image volumes are keyed `volume:<volume name>`.
pub const ORIGINAL_IMAGES_ANNOTATION: &str = "harbor-pilot.io/original-images";

/// The kind of field an image sits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SlotKind {
    /// `spec.initContainers[].image`
    InitContainer,
    /// `spec.containers[].image`
    Container,
    /// `spec.ephemeralContainers[].image`
    EphemeralContainer,
    /// `spec.volumes[].image.reference`
    ImageVolume,
}

impl SlotKind {
    fn list(self) -> &'static str {
        match self {
            SlotKind::InitContainer => "initContainers",
            SlotKind::Container => "containers",
            SlotKind::EphemeralContainer => "ephemeralContainers",
            SlotKind::ImageVolume => "volumes",
        }
    }
}

/// One image-bearing field of a Pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot<'p> {
    /// Which list it is in.
    pub kind: SlotKind,
    /// Its index in that list.
    pub index: usize,
    /// The container's or volume's name.
    pub name: &'p str,
    /// The image as written.
    pub image: &'p str,
}

impl Slot<'_> {
    /// JSON Pointer (RFC 6901) to the image string.
    pub fn pointer(&self) -> PointerBuf {
        let index = self.index.to_string();
        match self.kind {
            SlotKind::ImageVolume => {
                PointerBuf::from_tokens(["spec", "volumes", &index, "image", "reference"])
            }
            kind => PointerBuf::from_tokens(["spec", kind.list(), &index, "image"]),
        }
    }

    /// The key under which the original image is recorded in the annotation. Container
    /// names are unique across all container lists of a Pod; volume names live apart,
    /// so they get a prefix no container name can have.
    pub fn annotation_key(&self) -> String {
        match self.kind {
            SlotKind::ImageVolume => format!("volume:{}", self.name),
            _ => self.name.to_owned(),
        }
    }
}

/// Names a slot the way a user reads it: `nginx`, `init/setup`, `ephemeral/debugger`,
/// `volume/models`.
impl fmt::Display for Slot<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let prefix = match self.kind {
            SlotKind::Container => "",
            SlotKind::InitContainer => "init/",
            SlotKind::EphemeralContainer => "ephemeral/",
            SlotKind::ImageVolume => "volume/",
        };
        write!(f, "{prefix}{}", self.name)
    }
}

/// What happened to one slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change<'p, 'r> {
    /// The field.
    pub slot: Slot<'p>,
    /// What happens to its image, and why.
    pub verdict: Verdict<'r>,
}

/// Which images of a Pod are candidates for rewriting.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'o> {
    /// Pod CREATE: every image.
    Create,
    /// Pod UPDATE: images that differ from the same-named container (or volume) of the
    /// running pod, and images of new ones. An unchanged image is never touched:
    /// changing it would restart the container.
    Update {
        /// The pod before this update.
        old: &'o PodImages,
    },
    /// `pods/ephemeralcontainers` (`kubectl debug`): only ephemeral containers the pod
    /// does not have yet. The API server keeps nothing else from such an update, so no
    /// annotation is written either.
    NewEphemeral {
        /// The pod before this update.
        old: &'o PodImages,
    },
}

/// The outcome of [`plan`]: a decision for every slot considered, and the patch.
#[derive(Debug, Clone, Default)]
pub struct PodRewrite<'p, 'r> {
    /// One entry per image considered, in pod order.
    pub changes: Vec<Change<'p, 'r>>,
    /// The JSON Patch; empty when nothing is rewritten.
    pub patch: Vec<PatchOperation>,
    /// `{"<annotation key>": "<original image>"}` for the images rewritten now.
    pub originals: BTreeMap<String, String>,
}

impl PodRewrite<'_, '_> {
    /// How many images are rewritten.
    pub fn rewritten(&self) -> usize {
        self.originals.len()
    }
}

/// Decides every image of `pod` in `scope` and builds the patch.
pub fn plan<'p, 'r>(
    pod: &'p PodImages,
    scope: Scope<'_>,
    rules: &'r CachedRules,
) -> PodRewrite<'p, 'r> {
    let opted_out = pod.labels().get(REWRITE_LABEL).map(String::as_str) == Some(REWRITE_DISABLED);
    // Indexed once: a body near the size limit can hold a hundred thousand containers.
    let old: HashMap<(SlotKind, &str), &str> = match scope {
        Scope::Create => HashMap::new(),
        Scope::Update { old } | Scope::NewEphemeral { old } => {
            slots(old).map(|s| ((s.kind, s.name), s.image)).collect()
        }
    };
    let mut out = PodRewrite::default();
    for slot in slots(pod) {
        let old_image = old.get(&(slot.kind, slot.name)).copied();
        let verdict = if opted_out {
            Verdict::Keep(Reason::PodOptedOut)
        } else {
            match scope_reason(slot, scope, old_image) {
                Some(reason) => Verdict::Keep(reason),
                None => rules.decide(slot.image).into(),
            }
        };
        if let Verdict::Rewrite(rewrite) = &verdict {
            out.patch.push(PatchOperation::Replace(ReplaceOperation {
                path: slot.pointer(),
                value: Value::String(rewrite.image.clone()),
            }));
            out.originals
                .insert(slot.annotation_key(), slot.image.to_owned());
        }
        out.changes.push(Change { slot, verdict });
    }
    if !out.originals.is_empty() && !matches!(scope, Scope::NewEphemeral { .. }) {
        out.patch.push(annotation_op(pod, &out.originals));
    }
    out
}

/// `Some(reason)` when `scope` takes `slot` out of consideration; `old_image` is the
/// image of the same-named slot of the same kind in the old pod.
fn scope_reason(
    slot: Slot<'_>,
    scope: Scope<'_>,
    old_image: Option<&str>,
) -> Option<Reason<'static>> {
    match scope {
        Scope::Create => None,
        Scope::Update { .. } => {
            (old_image == Some(slot.image)).then_some(Reason::UnchangedOnUpdate)
        }
        Scope::NewEphemeral { .. } => {
            let is_new = slot.kind == SlotKind::EphemeralContainer && old_image.is_none();
            (!is_new).then_some(Reason::ExistingEphemeral)
        }
    }
}

/// Every image-bearing field of `pod`, in pod order. Containers without an image and
/// volumes that are not image volumes have nothing to rewrite and are not listed.
pub fn slots(pod: &PodImages) -> impl Iterator<Item = Slot<'_>> {
    fn containers(
        list: &Option<Vec<ContainerImage>>,
        kind: SlotKind,
    ) -> impl Iterator<Item = Slot<'_>> {
        list.iter()
            .flatten()
            .enumerate()
            .filter_map(move |(index, c)| {
                Some(Slot {
                    kind,
                    index,
                    name: &c.name,
                    image: c.image.as_deref()?,
                })
            })
    }
    let spec = &pod.spec;
    containers(&spec.init_containers, SlotKind::InitContainer)
        .chain(containers(&spec.containers, SlotKind::Container))
        .chain(containers(
            &spec.ephemeral_containers,
            SlotKind::EphemeralContainer,
        ))
        .chain(
            spec.volumes
                .iter()
                .flatten()
                .enumerate()
                .filter_map(|(index, v)| {
                    Some(Slot {
                        kind: SlotKind::ImageVolume,
                        index,
                        name: &v.name,
                        image: v.image.as_ref()?.reference.as_deref()?,
                    })
                }),
        )
}

/// Records `originals` in the annotation, merged over what an earlier admission of the
/// same pod recorded (an UPDATE, or a reinvocation after another webhook).
fn annotation_op(pod: &PodImages, originals: &BTreeMap<String, String>) -> PatchOperation {
    // An unreadable earlier value cannot be merged; ours replaces it.
    let mut merged: BTreeMap<String, String> = pod
        .annotation(ORIGINAL_IMAGES_ANNOTATION)
        .and_then(|v| serde_json::from_str(v).ok())
        .unwrap_or_default();
    merged.extend(originals.iter().map(|(k, v)| (k.clone(), v.clone())));
    let value = Value::String(serde_json::to_string(&merged).unwrap_or_default());
    let object =
        |key: &str, value: Value| Value::Object([(key.to_owned(), value)].into_iter().collect());
    let (path, value): (&[&str], Value) = if pod.metadata_missing {
        // `add` needs the parent to exist: create the whole metadata object.
        (
            &["metadata"],
            object("annotations", object(ORIGINAL_IMAGES_ANNOTATION, value)),
        )
    } else if pod.metadata.annotations.is_none() {
        // `add` on a missing (or null) `annotations` creates the map.
        (
            &["metadata", "annotations"],
            object(ORIGINAL_IMAGES_ANNOTATION, value),
        )
    } else {
        (
            &["metadata", "annotations", ORIGINAL_IMAGES_ANNOTATION],
            value,
        )
    };
    PatchOperation::Add(AddOperation {
        path: PointerBuf::from_tokens(path.iter().copied()),
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use serde_json::json;

    fn rules() -> CachedRules {
        Config::from_yaml(
            "harbor: harbor.example.com\nproxies:\n  docker.io: hub\n  quay.io: quay\n",
        )
        .unwrap()
        .rules
    }

    fn pod(value: Value) -> (Value, PodImages) {
        let images = serde_json::from_value(value.clone()).unwrap();
        (value, images)
    }

    fn apply(doc: &Value, patch: &[PatchOperation]) -> Value {
        let mut doc = doc.clone();
        json_patch::patch(&mut doc, patch).unwrap();
        doc
    }

    #[test]
    fn rewrites_every_kind_of_image_slot() {
        let (doc, images) = pod(json!({
            "metadata": {"name": "p"},
            "spec": {
                "initContainers": [{"name": "init", "image": "busybox"}],
                "containers": [{"name": "app", "image": "nginx:1.25"}, {"name": "side", "image": "gcr.io/x/y"}],
                "ephemeralContainers": [{"name": "dbg", "image": "quay.io/a/b:1"}],
                "volumes": [{"name": "data", "emptyDir": {}}, {"name": "models", "image": {"reference": "quay.io/m/n:2"}}]
            }
        }));
        let rules = rules();
        let plan = plan(&images, Scope::Create, &rules);
        let out = apply(&doc, &plan.patch);
        // The whole pod: the four images and the annotation changed, nothing else.
        assert_eq!(
            out,
            json!({
                "metadata": {"name": "p", "annotations": {ORIGINAL_IMAGES_ANNOTATION:
                    r#"{"app":"nginx:1.25","dbg":"quay.io/a/b:1","init":"busybox","volume:models":"quay.io/m/n:2"}"#}},
                "spec": {
                    "initContainers": [{"name": "init", "image": "harbor.example.com/hub/library/busybox"}],
                    "containers": [{"name": "app", "image": "harbor.example.com/hub/library/nginx:1.25"},
                                   {"name": "side", "image": "gcr.io/x/y"}],
                    "ephemeralContainers": [{"name": "dbg", "image": "harbor.example.com/quay/a/b:1"}],
                    "volumes": [{"name": "data", "emptyDir": {}},
                                {"name": "models", "image": {"reference": "harbor.example.com/quay/m/n:2"}}]
                }
            })
        );
        assert_eq!(plan.rewritten(), 4);
        assert_eq!(plan.changes.len(), 5);
    }

    #[test]
    fn creates_metadata_when_the_pod_has_none() {
        let (doc, images) = pod(json!({"spec": {"containers": [{"name": "c", "image": "nginx"}]}}));
        let out = apply(&doc, &plan(&images, Scope::Create, &rules()).patch);
        assert_eq!(
            out["metadata"],
            json!({"annotations": {ORIGINAL_IMAGES_ANNOTATION: r#"{"c":"nginx"}"#}})
        );
    }

    #[rstest::rstest]
    #[case::no_annotations(json!({}))]
    #[case::null_annotations(json!({"annotations": null}))]
    #[case::other_annotations(json!({"annotations": {"team": "a"}}))]
    #[case::unreadable_earlier_record(json!({"annotations": {ORIGINAL_IMAGES_ANNOTATION: "not json"}}))]
    // Found by the review fuzz target: `add /metadata/annotations` fails without a
    // metadata object, and the API server refuses a pod whose patch does not apply.
    #[case::null_metadata(Value::Null)]
    fn records_the_original_and_keeps_other_annotations(#[case] metadata: Value) {
        let (doc, images) = pod(json!({
            "metadata": metadata,
            "spec": {"containers": [{"name": "c", "image": "nginx"}]}
        }));
        let rules = rules();
        let out = apply(&doc, &plan(&images, Scope::Create, &rules).patch);
        let annotations = &out["metadata"]["annotations"];
        assert_eq!(annotations[ORIGINAL_IMAGES_ANNOTATION], r#"{"c":"nginx"}"#);
        let others = annotations.as_object().unwrap().len() - 1;
        assert_eq!(
            others,
            usize::from(doc["metadata"]["annotations"].get("team").is_some())
        );
    }

    #[test]
    fn merges_with_the_originals_already_recorded() {
        let (old_doc, old) = pod(json!({
            "metadata": {"annotations": {ORIGINAL_IMAGES_ANNOTATION: r#"{"a":"redis:7","b":"nginx:1"}"#}},
            "spec": {"containers": [
                {"name": "a", "image": "harbor.example.com/hub/library/redis:7"},
                {"name": "b", "image": "harbor.example.com/hub/library/nginx:1"}
            ]}
        }));
        let mut new_doc = old_doc.clone();
        new_doc["spec"]["containers"][1]["image"] = json!("nginx:2");
        let (_, new) = pod(new_doc.clone());
        let rules = rules();
        let plan = plan(&new, Scope::Update { old: &old }, &rules);
        let out = apply(&new_doc, &plan.patch);
        assert_eq!(
            out["spec"]["containers"][1]["image"],
            "harbor.example.com/hub/library/nginx:2"
        );
        assert_eq!(
            out["metadata"]["annotations"][ORIGINAL_IMAGES_ANNOTATION],
            r#"{"a":"redis:7","b":"nginx:2"}"#
        );
    }

    #[test]
    fn update_leaves_unchanged_images_of_a_running_pod() {
        let (_, old) = pod(json!({"spec": {"containers": [{"name": "c", "image": "nginx:1.25"}]}}));
        let rules = rules();
        let plan = plan(&old, Scope::Update { old: &old }, &rules);
        assert!(plan.patch.is_empty());
        assert_eq!(
            plan.changes[0].verdict,
            Verdict::Keep(Reason::UnchangedOnUpdate)
        );
    }

    #[test]
    fn update_rewrites_new_containers() {
        let (_, old) = pod(json!({"spec": {"containers": [{"name": "a", "image": "nginx"}]}}));
        let (_, new) = pod(
            json!({"spec": {"containers": [{"name": "a", "image": "nginx"}, {"name": "b", "image": "nginx"}]}}),
        );
        let rules = rules();
        let plan = plan(&new, Scope::Update { old: &old }, &rules);
        assert_eq!(plan.rewritten(), 1);
        assert_eq!(plan.patch[0].path().as_str(), "/spec/containers/1/image");
    }

    #[test]
    fn update_compares_within_the_same_list() {
        // An init container and a container may not share a name, but if the request
        // says so, an unchanged init image must not make the container look unchanged.
        let (_, old) = pod(json!({"spec": {"initContainers": [{"name": "x", "image": "nginx"}]}}));
        let (_, new) = pod(json!({"spec": {"containers": [{"name": "x", "image": "nginx"}]}}));
        let rules = rules();
        assert_eq!(
            plan(&new, Scope::Update { old: &old }, &rules).rewritten(),
            1
        );
    }

    #[test]
    fn ephemeral_subresource_rewrites_only_new_ephemeral_containers() {
        let (_, old) = pod(json!({"spec": {
            "containers": [{"name": "app", "image": "nginx"}],
            "ephemeralContainers": [{"name": "dbg1", "image": "busybox"}]
        }}));
        let (new_doc, new) = pod(json!({"spec": {
            "containers": [{"name": "app", "image": "nginx"}],
            "ephemeralContainers": [{"name": "dbg1", "image": "busybox"}, {"name": "dbg2", "image": "busybox:1.36"}]
        }}));
        let rules = rules();
        let plan = plan(&new, Scope::NewEphemeral { old: &old }, &rules);
        assert_eq!(plan.patch.len(), 1, "{:?}", plan.patch);
        let out = apply(&new_doc, &plan.patch);
        assert_eq!(
            out["spec"]["ephemeralContainers"][1]["image"],
            "harbor.example.com/hub/library/busybox:1.36"
        );
        assert_eq!(out["spec"]["ephemeralContainers"][0]["image"], "busybox");
        assert_eq!(out["spec"]["containers"][0]["image"], "nginx");
    }

    #[test]
    fn opted_out_pod_is_left_alone() {
        let (_, images) = pod(json!({
            "metadata": {"labels": {REWRITE_LABEL: REWRITE_DISABLED}},
            "spec": {"containers": [{"name": "c", "image": "nginx"}]}
        }));
        let rules = rules();
        let plan = plan(&images, Scope::Create, &rules);
        assert!(plan.patch.is_empty());
        assert_eq!(plan.changes[0].verdict, Verdict::Keep(Reason::PodOptedOut));
    }

    #[test]
    fn other_label_values_do_not_opt_out() {
        let (_, images) = pod(json!({
            "metadata": {"labels": {REWRITE_LABEL: "enabled"}},
            "spec": {"containers": [{"name": "c", "image": "nginx"}]}
        }));
        let rules = rules();
        assert_eq!(plan(&images, Scope::Create, &rules).rewritten(), 1);
    }

    #[test]
    fn escapes_the_annotation_key_in_the_pointer() {
        let (_, images) = pod(json!({
            "metadata": {"annotations": {}},
            "spec": {"containers": [{"name": "c", "image": "nginx"}]}
        }));
        let rules = rules();
        let plan = plan(&images, Scope::Create, &rules);
        assert_eq!(
            plan.patch[1].path().as_str(),
            "/metadata/annotations/harbor-pilot.io~1original-images"
        );
    }
}
