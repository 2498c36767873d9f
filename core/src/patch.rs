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

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::Write as _;

use json_patch::jsonptr::PointerBuf;

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

/// JSON Pointers to [`ORIGINAL_IMAGES_ANNOTATION`] and [`REWRITTEN_LABEL`]: their `/`
/// is written `~1` (RFC 6901).
const ANNOTATION_POINTER: &str = "/metadata/annotations/harbor-pilot.io~1original-images";
const LABEL_POINTER: &str = "/metadata/labels/harbor-pilot.io~1rewritten";

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

impl<'p> Slot<'p> {
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
    pub fn annotation_key(&self) -> Cow<'p, str> {
        match self.kind {
            SlotKind::ImageVolume => Cow::Owned(format!("volume:{}", self.name)),
            _ => Cow::Borrowed(self.name),
        }
    }

    /// Writes [`Slot::pointer`] as a JSON string (the names in it need no escaping).
    fn write_pointer(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"\"/spec/");
        out.extend_from_slice(self.kind.list().as_bytes());
        out.push(b'/');
        // Written in place: `to_string` allocated once per rewritten image.
        let _ = write!(out, "{}", self.index);
        out.extend_from_slice(match self.kind {
            SlotKind::ImageVolume => b"/image/reference\"",
            _ => b"/image\"",
        });
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
        old: &'o PodImages<'o>,
    },
    /// `pods/ephemeralcontainers` (`kubectl debug`): only ephemeral containers the pod
    /// does not have yet. The API server keeps nothing else from such an update, so no
    /// annotation is written either.
    NewEphemeral {
        /// The pod before this update.
        old: &'o PodImages<'o>,
    },
}

/// The outcome of [`plan`]: a decision for every slot considered, and the patch.
#[derive(Debug, Clone, Default)]
pub struct PodRewrite<'p, 'r> {
    /// One entry per image considered, in pod order.
    pub changes: Vec<Change<'p, 'r>>,
    /// The JSON Patch document as sent (JSON text); empty when there is nothing to
    /// patch. Written directly, not built as operations and serialised: that was a
    /// third of a rewriting review's allocations.
    pub patch: Vec<u8>,
    /// `{"<annotation key>": "<original image>"}` for the images rewritten now.
    pub originals: Originals<'p>,
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
    // The originals rewritten now, in pod order; made a map once at the end (sorted in
    // one go instead of inserted one by one: a tenth of deciding a 50-container pod).
    let mut rewritten: Vec<(Cow<'p, str>, &'p str)> = Vec::new();
    let mut patch = PatchWriter::default();
    // The annotation as it should be after this admission, when the pod has one
    // recorded already; without, it is exactly the originals rewritten now (nothing to
    // remove from), which are not built twice then.
    let mut annotation: Option<Originals<'_>> = recorded.as_ref().map(|recorded| {
        recorded
            .iter()
            .map(|(key, image)| (Cow::Borrowed(key.as_str()), image.as_str()))
            .collect()
    });
    for slot in slots(pod) {
        let old_image = old.get(&(slot.kind, slot.name)).copied();
        let key = slot.annotation_key();
        let original = recorded.as_ref().and_then(|r| r.get(&*key));
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
                patch.replace_image(slot, &rewrite.image);
                if let Some(annotation) = &mut annotation {
                    annotation.insert(key.clone(), slot.image);
                }
                rewritten.push((key, slot.image));
            }
            // A recorded original that no longer belongs to what the container runs
            // (an UPDATE set another image) would send a later fallback to the wrong
            // image: it goes.
            Verdict::Keep(_) => {
                if let Some(original) = original
                    && original != slot.image
                    && rules.decide(original).rewrite_image() != Some(slot.image)
                    && let Some(annotation) = &mut annotation
                {
                    annotation.remove(&*key);
                }
            }
        }
        out.changes.push(Change { slot, verdict });
    }
    // Equal keys (containers of one kind sharing a name, which the API server refuses
    // only after admission) keep the last image, as inserting them one by one did.
    out.originals = rewritten.into_iter().collect();
    // The subresource keeps nothing but ephemeral containers: no metadata there.
    if !matches!(scope, Scope::NewEphemeral { .. }) {
        let annotation = annotation.as_ref().unwrap_or(&out.originals);
        let unchanged = match &recorded {
            Some(before) => before
                .iter()
                .map(|(key, image)| (key.as_str(), image.as_str()))
                .eq(annotation.iter().map(|(key, image)| (&**key, *image))),
            None => annotation.is_empty(),
        };
        let annotation_change = match () {
            () if unchanged => None,
            () if annotation.is_empty() => Some(None),
            () => Some(Some(annotation)),
        };
        let label = !out.originals.is_empty()
            && pod.labels().get(REWRITTEN_LABEL).map(String::as_str) != Some("true");
        metadata_ops(&mut patch, pod, annotation_change, label);
    }
    out.patch = patch.finish();
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
            Verdict::Rewrite(rewrite) => Some(rewrite.image.to_string()),
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
pub fn slots<'p>(pod: &'p PodImages<'_>) -> impl Iterator<Item = Slot<'p>> {
    fn containers<'p>(
        list: &'p Option<Vec<ContainerImage<'_>>>,
        kind: SlotKind,
    ) -> impl Iterator<Item = Slot<'p>> {
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

/// The annotation's entries, annotation key to original image; its value is this map
/// as JSON text, `{"<key>":"<original image>",…}`.
pub type Originals<'p> = BTreeMap<Cow<'p, str>, &'p str>;

/// The operations that set (`Some(Some(originals))`) or remove (`Some(None)`) the
/// annotation, and set the label when `label`. `add` needs the parent to exist, so a
/// missing (or null) `metadata`, `annotations` or `labels` is created whole.
fn metadata_ops(
    patch: &mut PatchWriter,
    pod: &PodImages,
    annotation: Option<Option<&Originals<'_>>>,
    label: bool,
) {
    const ANNOTATIONS: &str = "/metadata/annotations";
    const LABELS: &str = "/metadata/labels";
    let annotation_value = annotation.flatten();
    if pod.metadata_missing {
        if annotation_value.is_none() && !label {
            return;
        }
        let out = patch.op("add", "/metadata");
        out.push(b'{');
        if let Some(originals) = annotation_value {
            out.extend_from_slice(b"\"annotations\":");
            write_annotation_object(out, originals);
        }
        if label {
            if annotation_value.is_some() {
                out.push(b',');
            }
            out.extend_from_slice(b"\"labels\":");
            write_label_object(out);
        }
        out.extend_from_slice(b"}}");
        return;
    }
    match annotation {
        Some(Some(originals)) if pod.metadata.annotations.is_none() => {
            let out = patch.op("add", ANNOTATIONS);
            write_annotation_object(out, originals);
            out.push(b'}');
        }
        Some(Some(originals)) => {
            let out = patch.op("add", ANNOTATION_POINTER);
            write_originals_string(out, originals);
            out.push(b'}');
        }
        Some(None) => {
            patch.remove(ANNOTATION_POINTER);
        }
        None => {}
    }
    if label {
        let out = if pod.metadata.labels.is_none() {
            let out = patch.op("add", LABELS);
            write_label_object(out);
            out
        } else {
            let out = patch.op("add", LABEL_POINTER);
            out.extend_from_slice(b"\"true\"");
            out
        };
        out.push(b'}');
    }
}

/// Bytes reserved for a patch when its first operation is written (a 3-container
/// rewrite with its annotation is about 1 KiB).
const INITIAL_PATCH_CAPACITY: usize = 2048;

/// A JSON Patch document written straight into bytes, in the member order serde gives
/// json_patch's operations (`op`, `path`, `value`).
#[derive(Default)]
struct PatchWriter {
    out: Vec<u8>,
}

impl PatchWriter {
    /// Starts an operation with a value: the caller writes the value and the closing
    /// `}`. `path` needs no JSON escaping (the webhook's own pointers).
    fn op(&mut self, op: &str, path: &str) -> &mut Vec<u8> {
        self.start(op);
        self.out.extend_from_slice(b"\"path\":\"");
        self.out.extend_from_slice(path.as_bytes());
        self.out.extend_from_slice(b"\",\"value\":");
        &mut self.out
    }

    fn remove(&mut self, path: &str) {
        self.start("remove");
        self.out.extend_from_slice(b"\"path\":\"");
        self.out.extend_from_slice(path.as_bytes());
        self.out.extend_from_slice(b"\"}");
    }

    fn replace_image(&mut self, slot: Slot<'_>, image: &str) {
        self.start("replace");
        self.out.extend_from_slice(b"\"path\":");
        slot.write_pointer(&mut self.out);
        self.out.extend_from_slice(b",\"value\":");
        write_json_string(&mut self.out, image);
        self.out.push(b'}');
    }

    fn start(&mut self, op: &str) {
        if self.out.is_empty() {
            // Room for a few containers' operations and the annotation at once: grown
            // from nothing, the buffer was reallocated eight times per admission.
            self.out.reserve(INITIAL_PATCH_CAPACITY);
            self.out.push(b'[');
        } else {
            self.out.push(b',');
        }
        self.out.extend_from_slice(b"{\"op\":\"");
        self.out.extend_from_slice(op.as_bytes());
        self.out.extend_from_slice(b"\",");
    }

    /// The document; empty when no operation was written.
    fn finish(mut self) -> Vec<u8> {
        if !self.out.is_empty() {
            self.out.push(b']');
        }
        self.out
    }
}

/// `{"<key>":<value>}`: the key escaped as a JSON string, the value as `value` writes it.
fn write_member_object(out: &mut Vec<u8>, key: &str, value: impl FnOnce(&mut Vec<u8>)) {
    out.push(b'{');
    write_json_string(out, key);
    out.push(b':');
    value(out);
    out.push(b'}');
}

/// The annotation object: `{"<annotation key>":<originals as a JSON string>}`.
fn write_annotation_object(out: &mut Vec<u8>, originals: &Originals<'_>) {
    write_member_object(out, ORIGINAL_IMAGES_ANNOTATION, |out| {
        write_originals_string(out, originals);
    });
}

/// The label object: `{"<rewritten label>":"true"}`.
fn write_label_object(out: &mut Vec<u8>) {
    write_member_object(out, REWRITTEN_LABEL, |out| {
        out.extend_from_slice(b"\"true\"")
    });
}

/// The originals as JSON text (serde_json's, keys in order), written as a JSON string:
/// what `serde_json::to_string` of the map, then of that text, gives, without the
/// intermediate text and its second escaping. Keys and images needing no escape are
/// copied, quotes escaped; any other pair goes through serde_json twice, as before.
/// (With the copy of plain strings in [`write_json_string`]: 63k of the 1.58M
/// instructions of a 50-container admission, 7.5k of a 3-container one's 274k.)
fn write_originals_string(out: &mut Vec<u8>, originals: &Originals<'_>) {
    out.extend_from_slice(b"\"{");
    for (n, (key, image)) in originals.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        if is_plain(key) && is_plain(image) {
            out.extend_from_slice(b"\\\"");
            out.extend_from_slice(key.as_bytes());
            out.extend_from_slice(b"\\\":\\\"");
            out.extend_from_slice(image.as_bytes());
            out.extend_from_slice(b"\\\"");
        } else {
            let pair = [key.as_ref(), *image]
                .map(|text| serde_json::to_string(text).unwrap_or_default())
                .join(":");
            let escaped = serde_json::to_string(&pair).unwrap_or_default();
            // Without the quotes of the string it was escaped as.
            let inside = escaped.strip_prefix('"').and_then(|e| e.strip_suffix('"'));
            out.extend_from_slice(inside.unwrap_or_default().as_bytes());
        }
    }
    out.extend_from_slice(b"}\"");
}

/// `text` as a JSON string.
fn write_json_string(out: &mut Vec<u8>, text: &str) {
    if is_plain(text) {
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    } else {
        // Writing a string into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, text);
    }
}

/// Whether `text` is written in JSON as is: no quote, backslash or control character.
/// A fold without early exit, which the compiler turns into vector instructions.
fn is_plain(text: &str) -> bool {
    !text.bytes().fold(false, |special, byte| {
        special | (byte < 0x20) | (byte == b'"') | (byte == b'\\')
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use json_patch::PatchOperation;
    use serde_json::{Value, json};

    fn rules() -> CachedRules {
        Config::from_yaml(
            "harbor: harbor.example.com\nproxies:\n  docker.io: hub\n  quay.io: quay\n",
        )
        .unwrap()
        .rules
    }

    fn pod(value: Value) -> (Value, PodImages<'static>) {
        let images = serde_json::from_value(value.clone()).unwrap();
        (value, images)
    }

    /// The operations of a written patch document, read back by json_patch.
    fn ops(patch: &[u8]) -> Vec<PatchOperation> {
        if patch.is_empty() {
            return Vec::new();
        }
        serde_json::from_slice::<json_patch::Patch>(patch)
            .unwrap()
            .0
    }

    fn apply(doc: &Value, patch: &[u8]) -> Value {
        let mut doc = doc.clone();
        json_patch::patch(&mut doc, &ops(patch)).unwrap();
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
        assert_eq!(
            ops(&plan.patch)[0].path().as_str(),
            "/spec/containers/1/image"
        );
    }

    #[test]
    fn containers_sharing_a_name_record_the_last_original() {
        // The API server refuses such a pod, but only after admission: every image is
        // rewritten, and the annotation holds one original per key, the last
        // container's, keys in order.
        let (doc, images) = pod(json!({"spec": {"containers": [
            {"name": "b", "image": "nginx:1"},
            {"name": "a", "image": "redis"},
            {"name": "b", "image": "nginx:2"},
        ]}}));
        let rules = rules();
        let plan = plan(&images, Scope::Create, &rules, &all_served);
        assert_eq!(plan.rewritten(), 2);
        let out = apply(&doc, &plan.patch);
        assert_eq!(
            out["metadata"]["annotations"][ORIGINAL_IMAGES_ANNOTATION],
            r#"{"a":"redis","b":"nginx:2"}"#
        );
        assert_eq!(
            out["spec"]["containers"][2]["image"],
            "harbor.example.com/hub/library/nginx:2"
        );
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
        assert_eq!(ops(&plan.patch).len(), 1, "{:?}", ops(&plan.patch));
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

    /// The written document is, byte for byte, what serde writes for the same
    /// operations as json_patch reads them (what the webhook sent before it wrote the
    /// patch itself), whatever metadata the pod has or lacks.
    #[rstest::rstest]
    #[case::no_metadata(json!({"spec": {"containers": [{"name": "c", "image": "nginx"}]}}))]
    #[case::null_metadata(json!({"metadata": null, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}))]
    #[case::no_annotations_or_labels(json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}))]
    #[case::existing_maps(json!({"metadata": {"annotations": {"a": "b"}, "labels": {"l": "v"}},
        "spec": {"initContainers": [{"name": "i", "image": "quay.io/o/i:1"}],
                 "containers": [{"name": "c\"q", "image": "nginx@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}],
                 "volumes": [{"name": "v", "image": {"reference": "docker.io/o/model:1"}}]}}))]
    #[case::stale_original_removed(json!({"metadata": {"annotations": {ORIGINAL_IMAGES_ANNOTATION: "{\"c\":\"nginx\"}"}},
        "spec": {"containers": [{"name": "c", "image": "gcr.io/x/y"}]}}))]
    #[case::already_labelled(json!({"metadata": {"labels": {REWRITTEN_LABEL: "true"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}))]
    fn the_written_patch_is_what_serde_writes_for_its_operations(#[case] doc: Value) {
        let (_, images) = pod(doc.clone());
        let old = images.clone();
        let rules = rules();
        for scope in [Scope::Create, Scope::Update { old: &old }] {
            let plan = plan(&images, scope, &rules, &all_served);
            let reread = serde_json::to_vec(&ops(&plan.patch)).unwrap();
            let written = if plan.patch.is_empty() {
                b"[]".to_vec()
            } else {
                plan.patch.clone()
            };
            assert_eq!(
                String::from_utf8(written).unwrap(),
                String::from_utf8(reread).unwrap()
            );
        }
        let plan = plan(&images, Scope::Create, &rules, &all_served);
        for change in &plan.changes {
            let mut written = Vec::new();
            change.slot.write_pointer(&mut written);
            assert_eq!(written, serde_json::to_vec(&change.slot.pointer()).unwrap());
        }
    }

    #[test]
    fn the_metadata_pointers_escape_the_keys() {
        for (written, key, parent) in [
            (
                ANNOTATION_POINTER,
                ORIGINAL_IMAGES_ANNOTATION,
                "annotations",
            ),
            (LABEL_POINTER, REWRITTEN_LABEL, "labels"),
        ] {
            assert_eq!(
                written,
                PointerBuf::from_tokens(["metadata", parent, key]).as_str()
            );
        }
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
            ops(&plan.patch)[1].path().as_str(),
            "/metadata/annotations/harbor-pilot.io~1original-images"
        );
    }

    /// A stored pod whose container `c` was rewritten from `nginx:1.25`, as an UPDATE's
    /// oldObject, and the same pod with `c`'s image set to `image`.
    fn update_of_rewritten(image: &str) -> (Value, PodImages<'static>, PodImages<'static>) {
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
        assert!(plan.patch.is_empty(), "{:?}", ops(&plan.patch));
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

    /// What the writers replaced: the text through serde_json, once or twice.
    fn serde_string(text: &str) -> String {
        serde_json::to_string(text).unwrap()
    }

    const AWKWARD: [&str; 9] = [
        "",
        "nginx:1.27",
        "registry.example.com:5000/team/app@sha256:0123",
        "quote\"d",
        "back\\slash",
        "line\nbreak\ttab\u{1}\u{1f}",
        "\u{7f}del and ünïcødé 🚢",
        "/slash/",
        "\\\"",
    ];

    /// Every ASCII character alone and in an image, and the awkward strings.
    fn awkward_strings() -> Vec<String> {
        (0..=0x7f_u8)
            .flat_map(|byte| {
                let c = char::from(byte);
                [c.to_string(), format!("nginx:1{c}27")]
            })
            .chain(AWKWARD.map(str::to_owned))
            .collect()
    }

    #[test]
    fn json_strings_are_written_as_serde_json_writes_them() {
        for text in &awkward_strings() {
            let mut out = Vec::new();
            write_json_string(&mut out, text);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                serde_string(text),
                "{text:?}"
            );
        }
    }

    #[test]
    fn the_originals_are_written_as_serde_json_writes_their_text_as_a_string() {
        let check = |originals: &Originals<'_>| {
            let mut out = Vec::new();
            write_originals_string(&mut out, originals);
            let expected = serde_string(&serde_json::to_string(originals).unwrap());
            assert_eq!(String::from_utf8(out).unwrap(), expected, "{originals:?}");
        };
        check(&Originals::new());
        let texts = awkward_strings();
        for key in &texts {
            for image in &texts {
                check(&Originals::from([(
                    Cow::Borrowed(key.as_str()),
                    image.as_str(),
                )]));
                check(&Originals::from([
                    (Cow::Borrowed("app"), "nginx"),
                    (Cow::Owned(format!("volume:{key}")), image.as_str()),
                    (Cow::Borrowed(key.as_str()), "busybox"),
                ]));
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn any_originals_are_written_as_serde_json_writes_them(
            pairs in proptest::collection::vec(("(?s).{0,12}", "(?s).{0,24}"), 0..6),
        ) {
            let originals: Originals<'_> = pairs
                .iter()
                .map(|(key, image)| (Cow::Borrowed(key.as_str()), image.as_str()))
                .collect();
            let mut out = Vec::new();
            write_originals_string(&mut out, &originals);
            let expected = serde_string(&serde_json::to_string(&originals).unwrap());
            proptest::prop_assert_eq!(String::from_utf8(out).unwrap(), expected);
        }
    }
}
