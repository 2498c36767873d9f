//! The request envelope — an AdmissionReview with its pods replaced by `null` — read
//! without building kube-core's types: the strings the webhook keeps borrowed where
//! they have no escapes, everything else checked as kube-core's types check it and
//! forgotten. `decode` reads through here and falls back to kube-core whenever this
//! refuses, so only speed depends on it.

use std::borrow::Cow;

use kube_core::admission::Operation;
use serde::de::IgnoredAny;

/// kube-core's `AdmissionReview` as serde_json reads it, strings borrowed where they
/// have no escapes, and only checked where the webhook does not use them. Without
/// kube-core's `#[serde(flatten)]`, which buffers every member but `request` and
/// `response` first (decoding their strings: other members are checked as
/// [`AnyValue`]s here for that reason). What this reads, kube-core reads the same (the
/// differential tests in `decode` and the fuzz invariants hold it); what it refuses — a
/// repeated member, a `response` — goes to `decode::read_with_serde`.
pub(super) struct Envelope<'a> {
    pub(super) api_version: Cow<'a, str>,
    pub(super) kind: Cow<'a, str>,
    pub(super) request: Option<EnvelopeRequest<'a>>,
    pub(super) response: Option<IgnoredAny>,
}

impl<'de> serde::Deserialize<'de> for Envelope<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Envelope<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an AdmissionReview")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Envelope<'de>, A::Error> {
                use serde::de::Error as _;
                fn once<T, E: serde::de::Error>(slot: &mut Option<T>, value: T) -> Result<(), E> {
                    match slot.replace(value) {
                        None => Ok(()),
                        Some(_) => Err(E::custom("repeated member")),
                    }
                }
                let (mut api_version, mut kind) = (None, None);
                let (mut request, mut response) = (None, None);
                while let Some(key) = map.next_key::<Borrowed<'de>>()? {
                    match &*key.0 {
                        "apiVersion" => {
                            once(&mut api_version, map.next_value::<Borrowed<'de>>()?.0)?
                        }
                        "kind" => once(&mut kind, map.next_value::<Borrowed<'de>>()?.0)?,
                        "request" => once(&mut request, map.next_value()?)?,
                        "response" => once(&mut response, map.next_value()?)?,
                        _ => {
                            map.next_value::<AnyValue>()?;
                        }
                    }
                }
                Ok(Envelope {
                    api_version: api_version
                        .ok_or_else(|| A::Error::missing_field("apiVersion"))?,
                    kind: kind.ok_or_else(|| A::Error::missing_field("kind"))?,
                    request: request.flatten(),
                    response: response.flatten(),
                })
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

/// A string, borrowed from the body when it has no escapes.
struct Borrowed<'a>(Cow<'a, str>);

impl<'de> serde::Deserialize<'de> for Borrowed<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        struct Wrapped<'a>(#[serde(borrow)] Cow<'a, str>);
        Wrapped::deserialize(deserializer).map(|Wrapped(text)| Borrowed(text))
    }
}

/// kube-core's `AdmissionRequest`, field for field; its objects are `null` here.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct EnvelopeRequest<'a> {
    #[serde(borrow)]
    pub(super) uid: Cow<'a, str>,
    #[serde(rename = "kind")]
    _kind: GroupVersionKind,
    #[serde(borrow)]
    pub(super) resource: GroupVersionResource<'a>,
    #[serde(borrow, default)]
    pub(super) sub_resource: Option<Cow<'a, str>>,
    #[serde(default, rename = "requestKind")]
    _request_kind: Option<GroupVersionKind>,
    #[serde(borrow, default, rename = "requestResource")]
    _request_resource: Option<GroupVersionResource<'a>>,
    #[serde(default, rename = "requestSubResource")]
    _request_sub_resource: Option<AnyString>,
    #[serde(borrow, default)]
    pub(super) name: Cow<'a, str>,
    #[serde(borrow, default)]
    pub(super) namespace: Option<Cow<'a, str>>,
    pub(super) operation: Operation,
    #[serde(rename = "userInfo")]
    _user_info: UserInfo,
    #[serde(default, rename = "object")]
    _object: Option<IgnoredAny>,
    #[serde(default, rename = "oldObject")]
    _old_object: Option<IgnoredAny>,
    #[serde(default)]
    pub(super) dry_run: bool,
    #[serde(default, rename = "options")]
    _options: Option<AnyValue>,
}

/// kube-core's `GroupVersionKind`: three strings.
#[derive(serde::Deserialize)]
struct GroupVersionKind {
    #[serde(rename = "group")]
    _group: AnyString,
    #[serde(rename = "version")]
    _version: AnyString,
    #[serde(rename = "kind")]
    _kind: AnyString,
}

/// kube-core's `GroupVersionResource`.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct GroupVersionResource<'a> {
    #[serde(borrow)]
    pub(super) group: Cow<'a, str>,
    #[serde(rename = "version")]
    _version: AnyString,
    #[serde(borrow)]
    pub(super) resource: Cow<'a, str>,
    #[serde(default, rename = "apiVersion")]
    _api_version: AnyString,
}

/// k8s-openapi's `UserInfo`: every field optional. Read as k8s-openapi reads it: from a
/// map only (a derived struct would take an array too), unknown keys skipped, a
/// repeated key read again.
struct UserInfo;

impl<'de> serde::Deserialize<'de> for UserInfo {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = UserInfo;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("UserInfo")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<UserInfo, A::Error> {
                while let Some(key) = map.next_key::<Borrowed<'de>>()? {
                    match &*key.0 {
                        "extra" => {
                            map.next_value::<Option<StringListMap>>()?;
                        }
                        "groups" => {
                            map.next_value::<Option<Vec<AnyString>>>()?;
                        }
                        "uid" | "username" => {
                            map.next_value::<Option<AnyString>>()?;
                        }
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(UserInfo)
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

/// A JSON string, checked and forgotten (a `Vec` of these allocates nothing).
#[derive(Default)]
struct AnyString;

impl<'de> serde::Deserialize<'de> for AnyString {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = AnyString;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<AnyString, E> {
                Ok(AnyString)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

/// Any JSON value, checked as `serde_json::Value` reads it (kube-core's `options` is a
/// `RawExtension` holding one) and forgotten. Unlike [`IgnoredAny`], which serde_json
/// skips without decoding, strings are decoded: a lone surrogate escape is refused.
struct AnyValue;

impl<'de> serde::Deserialize<'de> for AnyValue {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = AnyValue;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_bool<E>(self, _: bool) -> Result<AnyValue, E> {
                Ok(AnyValue)
            }
            fn visit_i64<E>(self, _: i64) -> Result<AnyValue, E> {
                Ok(AnyValue)
            }
            fn visit_u64<E>(self, _: u64) -> Result<AnyValue, E> {
                Ok(AnyValue)
            }
            fn visit_f64<E>(self, _: f64) -> Result<AnyValue, E> {
                Ok(AnyValue)
            }
            fn visit_str<E>(self, _: &str) -> Result<AnyValue, E> {
                Ok(AnyValue)
            }
            fn visit_unit<E>(self) -> Result<AnyValue, E> {
                Ok(AnyValue)
            }
            fn visit_none<E>(self) -> Result<AnyValue, E> {
                Ok(AnyValue)
            }
            fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<AnyValue, D::Error> {
                <AnyValue as serde::Deserialize>::deserialize(d)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<AnyValue, A::Error> {
                while seq.next_element::<AnyValue>()?.is_some() {}
                Ok(AnyValue)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<AnyValue, A::Error> {
                while map.next_entry::<AnyString, AnyValue>()?.is_some() {}
                Ok(AnyValue)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// `map[string][]string` (`userInfo.extra`), checked and forgotten.
struct StringListMap;

impl<'de> serde::Deserialize<'de> for StringListMap {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = StringListMap;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a map of string lists")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<StringListMap, A::Error> {
                while map.next_entry::<AnyString, Vec<AnyString>>()?.is_some() {}
                Ok(StringListMap)
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}
