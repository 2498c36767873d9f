//! The part of a v1 Pod that harbor-pilot reads: metadata labels and annotations, and
//! the name and image of every container, init container, ephemeral container and image
//! volume.
//!
//! Why not decode `k8s_openapi::api::core::v1::Pod`: the webhook is on the path of every
//! pod creation, and decoding a whole Pod (env, probes, managedFields, …) into typed
//! structs costs five to seven times as much as reading these fields and skipping the
//! rest (measured with serde_json on the admission fixtures: 49 µs against 9 µs for a
//! 14 KB StatefulSet pod, 1.86 ms against 0.32 ms for a 1 MiB pod). Field names follow
//! the v1 API exactly, the small types are k8s-openapi's own (`ObjectMeta`,
//! `ImageVolumeSource`), and a test decodes every admission fixture both ways and
//! compares the result with k8s-openapi's `Pod`.
//!
//! Unknown and unread fields are ignored, never lost: the webhook answers with a JSON
//! Patch naming only the fields it changes.
//!
//! Pure: types only. `fast_read` reads them on the webhook's hot path.

pub(crate) mod fast_read;

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ImageVolumeSource, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// The prefix of the label and annotation keys harbor-pilot reads and writes; a pod's
/// other labels and annotations are checked (strings, as the API requires) but not kept.
pub const OWN_KEY_PREFIX: &str = "harbor-pilot.io/";

/// The fields of a v1 Pod that decide and carry an image rewrite.
///
/// The containers' names and images borrow from the request body where the fast reader
/// reads them (`'a`): a 50-container pod's ~100 strings were ~100 allocations and copies
/// per admission. serde's reading owns them (`PodImages<'static>`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodImages<'a> {
    /// `apiVersion`, when the object states it.
    pub api_version: Option<String>,
    /// `kind`, when the object states it.
    pub kind: Option<String>,
    /// Name, generateName, namespace and uid; of the labels and annotations only
    /// harbor-pilot's own ([`OWN_KEY_PREFIX`]), the maps present exactly when the pod
    /// has them. Other metadata is not read.
    pub metadata: ObjectMeta,
    /// The object has no `metadata` (or `metadata: null`). No API server sends such a
    /// pod, but a patch must then create `/metadata` before it can add an annotation.
    pub metadata_missing: bool,
    /// The image-bearing parts of `spec`.
    pub spec: PodSpecImages<'a>,
}

/// [`PodImages`] as written, before absent metadata is told from empty metadata.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WirePodImages {
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default, deserialize_with = "metadata_subset")]
    metadata: Option<ObjectMeta>,
    #[serde(default, deserialize_with = "null_as_default")]
    spec: PodSpecImages<'static>,
}

impl<'de> Deserialize<'de> for PodImages<'static> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        WirePodImages::deserialize(ObjectsOnly(deserializer)).map(Self::from)
    }
}

impl From<WirePodImages> for PodImages<'static> {
    fn from(wire: WirePodImages) -> Self {
        Self {
            api_version: wire.api_version,
            kind: wire.kind,
            metadata_missing: wire.metadata.is_none(),
            metadata: wire.metadata.unwrap_or_default(),
            spec: wire.spec,
        }
    }
}

/// The image-bearing lists of a PodSpec.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpecImages<'a> {
    /// `spec.initContainers`
    #[serde(default, deserialize_with = "objects")]
    pub init_containers: Option<Vec<ContainerImage<'a>>>,
    /// `spec.containers`
    #[serde(default, deserialize_with = "objects")]
    pub containers: Option<Vec<ContainerImage<'a>>>,
    /// `spec.ephemeralContainers`
    #[serde(default, deserialize_with = "objects")]
    pub ephemeral_containers: Option<Vec<ContainerImage<'a>>>,
    /// `spec.volumes`
    #[serde(default, deserialize_with = "objects")]
    pub volumes: Option<Vec<VolumeImage>>,
}

/// A container's (or init or ephemeral container's) name and image.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ContainerImage<'a> {
    /// `name`
    #[serde(default)]
    pub name: Cow<'a, str>,
    /// `image`
    #[serde(default)]
    pub image: Option<Cow<'a, str>>,
}

/// A volume's name and, for an image volume (Kubernetes 1.31+), its source.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct VolumeImage {
    /// `name`
    #[serde(default)]
    pub name: String,
    /// `image`: the OCI image or artifact the kubelet pulls and mounts.
    #[serde(default)]
    pub image: Option<ImageVolumeSource>,
}

impl PodImages<'_> {
    /// The pod's labels (empty when it has none).
    pub fn labels(&self) -> &BTreeMap<String, String> {
        static EMPTY: BTreeMap<String, String> = BTreeMap::new();
        self.metadata.labels.as_ref().unwrap_or(&EMPTY)
    }

    /// The value of annotation `key`, if present.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.metadata
            .annotations
            .as_ref()?
            .get(key)
            .map(String::as_str)
    }

    /// Whether the object says it is something other than a v1 Pod. An object that
    /// states neither `apiVersion` nor `kind` is taken for what the request says it is.
    pub fn is_other_kind(&self) -> bool {
        self.api_version.as_deref().is_some_and(|v| v != "v1")
            || self.kind.as_deref().is_some_and(|k| k != "Pod")
    }

    /// `apiVersion/kind` as stated by the object, for messages.
    pub fn stated_kind(&self) -> String {
        format!(
            "{}/{}",
            self.api_version.as_deref().unwrap_or("?"),
            self.kind.as_deref().unwrap_or("?")
        )
    }
}

/// An object that is not read: any JSON is skipped. The fallback for a request whose
/// object does not read as a Pod, so that a malformed object (labels that are a string,
/// say) still gets an answer under its uid, allowed, rather than a 400.
#[derive(Debug, Clone, Default)]
pub struct Unread {
    metadata: ObjectMeta,
}

impl<'de> Deserialize<'de> for Unread {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(deserializer)?;
        Ok(Self::default())
    }
}

impl serde::Serialize for Unread {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_none()
    }
}

/// The admission types of kube-core are generic over `kube_core::Resource`; these two traits
/// give a type that through kube-core's blanket implementation, with the Pod's identity.
macro_rules! as_pod_resource {
    ($type:ty) => {
        impl k8s_openapi::Resource for $type {
            const API_VERSION: &'static str = <Pod as k8s_openapi::Resource>::API_VERSION;
            const GROUP: &'static str = <Pod as k8s_openapi::Resource>::GROUP;
            const KIND: &'static str = <Pod as k8s_openapi::Resource>::KIND;
            const VERSION: &'static str = <Pod as k8s_openapi::Resource>::VERSION;
            const URL_PATH_SEGMENT: &'static str = <Pod as k8s_openapi::Resource>::URL_PATH_SEGMENT;
            type Scope = <Pod as k8s_openapi::Resource>::Scope;
        }

        impl k8s_openapi::Metadata for $type {
            type Ty = ObjectMeta;

            fn metadata(&self) -> &ObjectMeta {
                &self.metadata
            }

            fn metadata_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

as_pod_resource!(PodImages<'static>);
as_pod_resource!(Unread);

/// The metadata fields the webhook uses; `managedFields` alone is often a third of a Pod.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MetadataSubset {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    generate_name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    uid: Option<String>,
    #[serde(default, deserialize_with = "own_keys")]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default, deserialize_with = "own_keys")]
    annotations: Option<BTreeMap<String, String>>,
}

/// `null`, or a map of strings of which only harbor-pilot's keys are kept: every value
/// must still be a string, as `BTreeMap<String, String>` requires, but the pod's other
/// labels and annotations (often most of its metadata) cost no allocation.
fn own_keys<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<BTreeMap<String, String>>, D::Error> {
    struct OwnKeys;

    impl<'de> Visitor<'de> for OwnKeys {
        type Value = Option<BTreeMap<String, String>>;

        fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            formatter.write_str("a map")
        }

        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(
            self,
            deserializer: D,
        ) -> Result<Self::Value, D::Error> {
            deserializer.deserialize_map(self)
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut own = BTreeMap::new();
            while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                if key.starts_with(OWN_KEY_PREFIX) {
                    own.insert(key.into_owned(), map.next_value::<String>()?);
                } else {
                    map.next_value::<StringChecked>()?;
                }
            }
            Ok(Some(own))
        }
    }

    deserializer.deserialize_option(OwnKeys)
}

/// A string, read and dropped without being copied.
struct StringChecked;

impl<'de> Deserialize<'de> for StringChecked {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Checked;

        impl Visitor<'_> for Checked {
            type Value = StringChecked;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("a string")
            }

            fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<StringChecked, E> {
                Ok(StringChecked)
            }
        }

        deserializer.deserialize_str(Checked)
    }
}

fn metadata_subset<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<ObjectMeta>, D::Error> {
    let Some(Strict(subset)) = Option::<Strict<MetadataSubset>>::deserialize(deserializer)? else {
        return Ok(None);
    };
    let MetadataSubset {
        name,
        generate_name,
        namespace,
        uid,
        labels,
        annotations,
    } = subset;
    Ok(Some(ObjectMeta {
        name,
        generate_name,
        namespace,
        uid,
        labels,
        annotations,
        ..ObjectMeta::default()
    }))
}

fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<Strict<T>>::deserialize(deserializer)?.map_or_else(T::default, |s| s.0))
}

/// A list of objects, each read strictly (see [`Strict`]).
fn objects<'de, D, T>(deserializer: D) -> Result<Option<Vec<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<Strict<T>>>::deserialize(deserializer)?
        .map(|items| items.into_iter().map(|s| s.0).collect()))
}

/// A struct read only from a JSON object. serde's derived structs also accept an array
/// of field values in order (`["c", "nginx"]` for a container); the patch addresses
/// fields by name, so such an object would get a patch that cannot apply, and the API
/// server fails a request whose patch does not apply. (Found by fuzzing; no API server
/// sends arrays there, but a malformed pod must be left alone, not broken.)
struct Strict<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Strict<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        T::deserialize(ObjectsOnly(deserializer)).map(Strict)
    }
}

/// A deserializer that lets the value it reads be a map, never a sequence.
struct ObjectsOnly<D>(D);

impl<'de, D: Deserializer<'de>> Deserializer<'de> for ObjectsOnly<D> {
    type Error = D::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_any(NoSequence(visitor))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_struct(name, fields, NoSequence(visitor))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
        byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
        identifier ignored_any
    }
}

/// Passes maps to the inner visitor; anything else is refused with its expectation.
struct NoSequence<V>(V);

impl<'de, V: Visitor<'de>> Visitor<'de> for NoSequence<V> {
    type Value = V::Value;

    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.expecting(formatter)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.0.visit_map(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_names_images_labels_and_annotations() {
        let pod: PodImages = serde_json::from_str(
            r#"{"apiVersion":"v1","kind":"Pod",
                "metadata":{"name":"p","labels":{"a":"b","harbor-pilot.io/rewrite":"disabled"},
                            "annotations":{"k":"v","harbor-pilot.io/original-images":"{}"},
                            "managedFields":[{"manager":"kubectl"}]},
                "spec":{"containers":[{"name":"c","image":"nginx","env":[{"name":"X"}]}],
                        "initContainers":[{"name":"i","image":"busybox"}],
                        "volumes":[{"name":"v","image":{"reference":"quay.io/a/b:1"}},
                                   {"name":"s","secret":{"secretName":"x"}}]}}"#,
        )
        .unwrap();
        // Only harbor-pilot's own labels and annotations are kept.
        assert_eq!(
            pod.labels(),
            &BTreeMap::from([("harbor-pilot.io/rewrite".into(), "disabled".into())])
        );
        assert_eq!(
            pod.annotation("harbor-pilot.io/original-images"),
            Some("{}")
        );
        assert_eq!(pod.annotation("k"), None);
        let containers = pod.spec.containers.as_deref().unwrap();
        assert_eq!(containers[0].image.as_deref(), Some("nginx"));
        let volumes = pod.spec.volumes.as_deref().unwrap();
        assert_eq!(
            volumes[0]
                .image
                .as_ref()
                .and_then(|i| i.reference.as_deref()),
            Some("quay.io/a/b:1")
        );
        assert!(volumes[1].image.is_none());
        assert!(!pod.is_other_kind());
    }

    #[test]
    fn null_lists_and_spec_read_as_absent() {
        let pod: PodImages =
            serde_json::from_str(r#"{"metadata":null,"spec":{"initContainers":null}}"#).unwrap();
        assert_eq!(pod.spec.init_containers, None);
        assert!(pod.metadata_missing);
        let pod: PodImages = serde_json::from_str(r#"{"spec":null}"#).unwrap();
        assert_eq!(pod.spec, PodSpecImages::default());
        assert!(pod.metadata_missing);
        let pod: PodImages = serde_json::from_str(r#"{"metadata":{}}"#).unwrap();
        assert!(!pod.metadata_missing);
    }

    #[rstest::rstest]
    #[case::label(r#"{"metadata":{"labels":{"app":1}}}"#, "invalid type: integer `1`")]
    #[case::annotation(r#"{"metadata":{"annotations":{"a":null}}}"#, "invalid type: null")]
    #[case::labels(
        r#"{"metadata":{"labels":"app"}}"#,
        "invalid type: string \"app\", expected a map"
    )]
    fn refuses_labels_and_annotations_that_are_not_strings(
        #[case] json: &str,
        #[case] error: &str,
    ) {
        let refused = serde_json::from_str::<PodImages>(json).unwrap_err();
        assert!(refused.to_string().contains(error), "{refused}");
    }

    #[rstest::rstest]
    #[case::pod(r#"[]"#)]
    #[case::metadata(r#"{"metadata":[]}"#)]
    #[case::spec(r#"{"spec":[null,[{"name":"c","image":"nginx"}]]}"#)]
    #[case::container(r#"{"spec":{"containers":[["c","nginx"]]}}"#)]
    #[case::init_container(r#"{"spec":{"initContainers":[["c","nginx"]]}}"#)]
    #[case::volume(r#"{"spec":{"volumes":[["v",{"reference":"nginx"}]]}}"#)]
    #[case::volume_source(r#"{"spec":{"volumes":[{"name":"v","image":["nginx"]}]}}"#)]
    fn refuses_arrays_where_the_api_has_objects(#[case] json: &str) {
        let error = serde_json::from_str::<PodImages>(json).unwrap_err();
        assert!(
            error.to_string().contains("invalid type: sequence"),
            "{error}"
        );
    }

    #[test]
    fn notices_an_object_of_another_kind() {
        let pod: PodImages =
            serde_json::from_str(r#"{"apiVersion":"apps/v1","kind":"Deployment"}"#).unwrap();
        assert!(pod.is_other_kind());
        assert_eq!(pod.stated_kind(), "apps/v1/Deployment");
    }
}
