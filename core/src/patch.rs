//! Which image fields of a Pod to rewrite, and the JSON Patch (RFC 6902) that does it.
//!
//! [`plan`] walks init containers, containers, ephemeral containers and image volumes
//! (in that order), asks the rules ([`CachedRules`]) about each image, and produces one
//! `replace` per rewritten image, the annotation [`ORIGINAL_IMAGES_ANNOTATION`] recording
//! the originals, and the label [`REWRITTEN_LABEL`] by which the fallback controller
//! finds the pods it may have to send back. Nothing else in the Pod is touched.
//!
//! The annotation is kept true: an UPDATE that puts a container back to its recorded
//! original (a fallback, or a person doing the same) is left alone, and an entry whose
//! container now runs neither its original nor the original's rewrite is dropped.
//!
//! Pure: no I/O.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation, ReplaceOperation};
use serde_json::Value;

use crate::pod::{ContainerImage, PodImages};
use crate::rules::CachedRules;
use crate::verdict::{Reason, Served, Verdict};

/// Pod label that opts a single pod out: `harbor-pilot.io/rewrite: disabled`.
pub const REWRITE_LABEL: &str = "harbor-pilot.io/rewrite";
/// The value of [`REWRITE_LABEL`] that opts a pod out.
pub const REWRITE_DISABLED: &str = "disabled";
/// Pod annotation holding `{"<container name>": "<original image>"}` for every image
/// harbor-pilot rewrote. Image volumes are keyed `volume:<volume name>`.
pub const ORIGINAL_IMAGES_ANNOTATION: &str = "harbor-pilot.io/original-images";
/// Pod label set on every pod harbor-pilot rewrote: `harbor-pilot.io/rewritten: "true"`.
pub const REWRITTEN_LABEL: &str = "harbor-pilot.io/rewritten";

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

/// Decides every image of `pod` in `scope` and builds the patch; `served` says whether
/// Harbor can serve a rewritten image (`verify`; [`all_served`] without it).
pub fn plan<'p, 'r>(
    pod: &'p PodImages,
    scope: Scope<'_>,
    rules: &'r CachedRules,
    served: &dyn Fn(&str) -> Served,
) -> PodRewrite<'p, 'r> {
    let opted_out = pod.labels().get(REWRITE_LABEL).map(String::as_str) == Some(REWRITE_DISABLED);
    // Indexed once: a body near the size limit can hold a hundred thousand containers.
    let old: HashMap<(SlotKind, &str), &str> = match scope {
        Scope::Create => HashMap::new(),
        Scope::Update { old } | Scope::NewEphemeral { old } => {
            slots(old).map(|s| ((s.kind, s.name), s.image)).collect()
        }
    };
    let recorded = recorded_originals(pod);
    let mut out = PodRewrite::default();
    // The annotation as it should be after this admission, if that differs.
    let mut annotation = recorded.clone().unwrap_or_default();
    for slot in slots(pod) {
        let old_image = old.get(&(slot.kind, slot.name)).copied();
        let key = slot.annotation_key();
        let original = recorded.as_ref().and_then(|r| r.get(&key));
        let verdict = if opted_out {
            Verdict::Keep(Reason::PodOptedOut)
        } else {
            match scope_reason(slot, scope, old_image) {
                Some(reason) => Verdict::Keep(reason),
                // Back to the recorded original: a fallback, or a person undoing the
                // rewrite. Sending it to Harbor again would undo that.
                None if matches!(scope, Scope::Update { .. })
                    && original.is_some_and(|o| o == slot.image) =>
                {
                    Verdict::Keep(Reason::RevertedToOriginal)
                }
                None => match rules.decide(slot.image).into() {
                    Verdict::Rewrite(rewrite) => match served(&rewrite.image) {
                        Served::Yes => Verdict::Rewrite(rewrite),
                        Served::No(answer) => Verdict::Keep(Reason::NotServedByHarbor { answer }),
                        Served::Unknown => Verdict::Keep(Reason::Unverified),
                    },
                    keep => keep,
                },
            }
        };
        match &verdict {
            Verdict::Rewrite(rewrite) => {
                out.patch.push(PatchOperation::Replace(ReplaceOperation {
                    path: slot.pointer(),
                    value: Value::String(rewrite.image.clone()),
                }));
                out.originals.insert(key.clone(), slot.image.to_owned());
                annotation.insert(key, slot.image.to_owned());
            }
            // A recorded original that no longer belongs to what the container runs
            // (an UPDATE set another image) would send a later fallback to the wrong
            // image: it goes.
            Verdict::Keep(_) => {
                if let Some(original) = original
                    && original != slot.image
                    && rules.decide(original).rewrite_image() != Some(slot.image)
                {
                    annotation.remove(&key);
                }
            }
        }
        out.changes.push(Change { slot, verdict });
    }
    // The subresource keeps nothing but ephemeral containers: no metadata there.
    if !matches!(scope, Scope::NewEphemeral { .. }) {
        let annotation_change = match &recorded {
            Some(before) if *before == annotation => None,
            None if annotation.is_empty() => None,
            _ if annotation.is_empty() => Some(None),
            _ => Some(Some(annotation)),
        };
        let label = !out.originals.is_empty()
            && pod.labels().get(REWRITTEN_LABEL).map(String::as_str) != Some("true");
        out.patch
            .extend(metadata_ops(pod, annotation_change, label));
    }
    out
}

/// Every rewrite is served: what [`plan`] is given when nothing is verified.
pub fn all_served(_image: &str) -> Served {
    Served::Yes
}

/// The images `pod` would be rewritten to in `scope`, before any verification: what
/// `verify` checks.
pub fn rewrite_targets(pod: &PodImages, scope: Scope<'_>, rules: &CachedRules) -> Vec<String> {
    let mut targets: Vec<String> = plan(pod, scope, rules, &all_served)
        .changes
        .into_iter()
        .filter_map(|change| match change.verdict {
            Verdict::Rewrite(rewrite) => Some(rewrite.image),
            Verdict::Keep(_) => None,
        })
        .collect();
    targets.sort_unstable();
    targets.dedup();
    targets
}

/// The originals an earlier admission recorded; `None` without the annotation (or with
/// one that does not read, which the next rewrite replaces).
fn recorded_originals(pod: &PodImages) -> Option<BTreeMap<String, String>> {
    pod.annotation(ORIGINAL_IMAGES_ANNOTATION)
        .and_then(|v| serde_json::from_str(v).ok())
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

/// The operations that set (`Some(Some(map))`) or remove (`Some(None)`) the annotation,
/// and set the label when `label`. `add` needs the parent to exist, so a missing (or
/// null) `metadata`, `annotations` or `labels` is created whole.
fn metadata_ops(
    pod: &PodImages,
    annotation: Option<Option<BTreeMap<String, String>>>,
    label: bool,
) -> Vec<PatchOperation> {
    let object =
        |key: &str, value: Value| Value::Object([(key.to_owned(), value)].into_iter().collect());
    let add = |path: &[&str], value: Value| {
        PatchOperation::Add(AddOperation {
            path: PointerBuf::from_tokens(path.iter().copied()),
            value,
        })
    };
    let annotation_value = |map: &BTreeMap<String, String>| {
        Value::String(serde_json::to_string(map).unwrap_or_default())
    };
    let label_value = || Value::String("true".to_owned());
    if pod.metadata_missing {
        let mut metadata = serde_json::Map::new();
        if let Some(Some(map)) = &annotation {
            metadata.insert(
                "annotations".to_owned(),
                object(ORIGINAL_IMAGES_ANNOTATION, annotation_value(map)),
            );
        }
        if label {
            metadata.insert("labels".to_owned(), object(REWRITTEN_LABEL, label_value()));
        }
        return if metadata.is_empty() {
            Vec::new()
        } else {
            vec![add(&["metadata"], Value::Object(metadata))]
        };
    }
    let mut ops = Vec::new();
    match annotation {
        Some(Some(map)) if pod.metadata.annotations.is_none() => ops.push(add(
            &["metadata", "annotations"],
            object(ORIGINAL_IMAGES_ANNOTATION, annotation_value(&map)),
        )),
        Some(Some(map)) => ops.push(add(
            &["metadata", "annotations", ORIGINAL_IMAGES_ANNOTATION],
            annotation_value(&map),
        )),
        Some(None) => ops.push(PatchOperation::Remove(json_patch::RemoveOperation {
            path: PointerBuf::from_tokens(["metadata", "annotations", ORIGINAL_IMAGES_ANNOTATION]),
        })),
        None => {}
    }
    if label {
        ops.push(if pod.metadata.labels.is_none() {
            add(
                &["metadata", "labels"],
                object(REWRITTEN_LABEL, label_value()),
            )
        } else {
            add(&["metadata", "labels", REWRITTEN_LABEL], label_value())
        });
    }
    ops
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
        let plan = plan(&images, Scope::Create, &rules, &all_served);
        let out = apply(&doc, &plan.patch);
        // The whole pod: the four images and the annotation changed, nothing else.
        assert_eq!(
            out,
            json!({
                "metadata": {"name": "p", "annotations": {ORIGINAL_IMAGES_ANNOTATION:
                    r#"{"app":"nginx:1.25","dbg":"quay.io/a/b:1","init":"busybox","volume:models":"quay.io/m/n:2"}"#},
                    "labels": {REWRITTEN_LABEL: "true"}},
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
        let out = apply(
            &doc,
            &plan(&images, Scope::Create, &rules(), &all_served).patch,
        );
        assert_eq!(
            out["metadata"],
            json!({"annotations": {ORIGINAL_IMAGES_ANNOTATION: r#"{"c":"nginx"}"#},
                   "labels": {REWRITTEN_LABEL: "true"}})
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
        let out = apply(
            &doc,
            &plan(&images, Scope::Create, &rules, &all_served).patch,
        );
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
        let plan = plan(&new, Scope::Update { old: &old }, &rules, &all_served);
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
        let plan = plan(&old, Scope::Update { old: &old }, &rules, &all_served);
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
        let plan = plan(&new, Scope::Update { old: &old }, &rules, &all_served);
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
            plan(&new, Scope::Update { old: &old }, &rules, &all_served).rewritten(),
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
        let plan = plan(&new, Scope::NewEphemeral { old: &old }, &rules, &all_served);
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
        let plan = plan(&images, Scope::Create, &rules, &all_served);
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
        assert_eq!(
            plan(&images, Scope::Create, &rules, &all_served).rewritten(),
            1
        );
    }

    #[test]
    fn escapes_the_annotation_key_in_the_pointer() {
        let (_, images) = pod(json!({
            "metadata": {"annotations": {}},
            "spec": {"containers": [{"name": "c", "image": "nginx"}]}
        }));
        let rules = rules();
        let plan = plan(&images, Scope::Create, &rules, &all_served);
        assert_eq!(
            plan.patch[1].path().as_str(),
            "/metadata/annotations/harbor-pilot.io~1original-images"
        );
    }

    /// A stored pod whose container `c` was rewritten from `nginx:1.25`, as an UPDATE's
    /// oldObject, and the same pod with `c`'s image set to `image`.
    fn update_of_rewritten(image: &str) -> (Value, PodImages, PodImages) {
        let annotations = json!({ORIGINAL_IMAGES_ANNOTATION: r#"{"c":"nginx:1.25"}"#});
        let old = json!({"metadata": {"name": "p", "annotations": annotations,
                                      "labels": {REWRITTEN_LABEL: "true", "app": "web"}},
                         "spec": {"containers": [{"name": "c", "image": "harbor.example.com/hub/library/nginx:1.25"}]}});
        let mut new = old.clone();
        new["spec"]["containers"][0]["image"] = json!(image);
        let (_, old) = pod(old);
        let (doc, new_images) = pod(new);
        (doc, old, new_images)
    }

    #[test]
    fn an_update_back_to_the_recorded_original_stays_upstream() {
        let (_, old, new) = update_of_rewritten("nginx:1.25");
        let rules = rules();
        let plan = plan(&new, Scope::Update { old: &old }, &rules, &all_served);
        assert!(plan.patch.is_empty(), "{:?}", plan.patch);
        assert_eq!(
            plan.changes[0].verdict,
            Verdict::Keep(Reason::RevertedToOriginal)
        );
    }

    #[test]
    fn an_update_to_another_proxied_image_replaces_the_recorded_original() {
        let (doc, old, new) = update_of_rewritten("redis:7");
        let rules = rules();
        let out = apply(
            &doc,
            &plan(&new, Scope::Update { old: &old }, &rules, &all_served).patch,
        );
        assert_eq!(
            out["spec"]["containers"][0]["image"],
            "harbor.example.com/hub/library/redis:7"
        );
        assert_eq!(
            out["metadata"]["annotations"],
            json!({ORIGINAL_IMAGES_ANNOTATION: r#"{"c":"redis:7"}"#})
        );
        assert_eq!(
            out["metadata"]["labels"],
            json!({REWRITTEN_LABEL: "true", "app": "web"})
        );
    }

    #[test]
    fn an_update_to_an_unproxied_image_drops_the_stale_original() {
        // Left in place, the entry would send a later fallback to nginx:1.25.
        let (doc, old, new) = update_of_rewritten("gcr.io/team/app:2");
        let rules = rules();
        let plan = plan(&new, Scope::Update { old: &old }, &rules, &all_served);
        let out = apply(&doc, &plan.patch);
        assert_eq!(out["spec"]["containers"][0]["image"], "gcr.io/team/app:2");
        assert_eq!(out["metadata"]["annotations"], json!({}));
        assert_eq!(plan.rewritten(), 0);
    }

    #[test]
    fn the_label_is_added_to_existing_labels_once() {
        let (doc, images) = pod(json!({"metadata": {"labels": {"app": "web"}},
                                       "spec": {"containers": [{"name": "c", "image": "nginx"}]}}));
        let rules = rules();
        let out = apply(
            &doc,
            &plan(&images, Scope::Create, &rules, &all_served).patch,
        );
        assert_eq!(
            out["metadata"]["labels"],
            json!({"app": "web", REWRITTEN_LABEL: "true"})
        );
        // A second pass (reinvocation) adds nothing.
        let again: PodImages = serde_json::from_value(out).unwrap();
        assert!(
            plan(&again, Scope::Create, &rules, &all_served)
                .patch
                .is_empty()
        );
    }
}
