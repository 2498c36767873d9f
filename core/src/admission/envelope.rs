//! The whole AdmissionReview read in one pass of the borrowing reader: the pods through
//! `pod::fast_read`, the few request strings the webhook keeps borrowed where they have
//! no escapes, and everything else checked as kube-core's types check it and
//! forgotten, without building those types. `decode` falls back to serde_json and
//! kube-core whenever this declines, so only speed depends on it.
//!
//! Why not serde_json for the envelope: it was read that way (the pods cut out and the
//! rest of the body copied and parsed), and that copy and parse were 7 % of the
//! instructions of a whole admission, more than the rewrite itself (callgrind, a
//! 3-container review of 13 KB: 21k of 300k).
//!
//! No more permissive than kube-core: a member given twice where serde's derived
//! structs refuse one, a `null` where a value is required, a value of another type, a
//! `response`, a string escape that needs a surrogate pair in a kept string — declined,
//! and serde_json gives the exact answer. The differential tests in `decode` and the
//! fuzz invariants hold the two readings together.

use std::borrow::Cow;

use kube_core::admission::Operation;

use crate::json::{Decline, Read, Reader, Seen};
use crate::pod::PodImages;
use crate::pod::fast_read::read_pod;

/// An AdmissionReview as read; what is required is checked by the caller.
#[derive(Debug, Default)]
pub(super) struct Review<'a> {
    pub(super) api_version: Option<Cow<'a, str>>,
    pub(super) kind: Option<Cow<'a, str>>,
    pub(super) request: Option<RequestParts<'a>>,
}

/// kube-core's `AdmissionRequest`, the members the webhook keeps; `None` where absent.
/// The members only checked leave a mark in `seen`.
#[derive(Debug, Default)]
pub(super) struct RequestParts<'a> {
    pub(super) uid: Option<Cow<'a, str>>,
    /// `resource.group` and `resource.resource`, once `resource` was read.
    pub(super) resource: Option<(Cow<'a, str>, Cow<'a, str>)>,
    pub(super) sub_resource: Option<Cow<'a, str>>,
    pub(super) name: Option<Cow<'a, str>>,
    pub(super) namespace: Option<Cow<'a, str>>,
    pub(super) operation: Option<Operation>,
    pub(super) dry_run: bool,
    pub(super) object: Option<Box<PodImages<'a>>>,
    pub(super) old_object: Option<Box<PodImages<'a>>>,
    seen: Seen,
}

impl RequestParts<'_> {
    /// Whether `kind` and `userInfo` were there: kube-core requires them, and nothing
    /// of them is kept (the other required members are `None` when missing).
    pub(super) fn has_checked_members(&self) -> bool {
        self.seen.has(request::KIND) && self.seen.has(request::USER_INFO)
    }
}

/// A request member's place in [`Seen`].
mod request {
    pub(super) const UID: u8 = 0;
    pub(super) const KIND: u8 = 1;
    pub(super) const RESOURCE: u8 = 2;
    pub(super) const SUB_RESOURCE: u8 = 3;
    pub(super) const REQUEST_KIND: u8 = 4;
    pub(super) const REQUEST_RESOURCE: u8 = 5;
    pub(super) const REQUEST_SUB_RESOURCE: u8 = 6;
    pub(super) const NAME: u8 = 7;
    pub(super) const NAMESPACE: u8 = 8;
    pub(super) const OPERATION: u8 = 9;
    pub(super) const USER_INFO: u8 = 10;
    pub(super) const OBJECT: u8 = 11;
    pub(super) const OLD_OBJECT: u8 = 12;
    pub(super) const DRY_RUN: u8 = 13;
    pub(super) const OPTIONS: u8 = 14;
}

/// Reads `body` as an AdmissionReview of pods.
pub(super) fn read_review(body: &[u8]) -> Read<Review<'_>> {
    let mut reader = Reader::new(body)?;
    let mut review = Review::default();
    let mut seen = Seen::default();
    let mut members = reader.object()?;
    while let Some(key) = members.next_key(&mut reader)? {
        match &*key {
            "apiVersion" => {
                seen.first(0)?;
                review.api_version = Some(reader.string()?);
            }
            "kind" => {
                seen.first(1)?;
                review.kind = Some(reader.string()?);
            }
            "request" => {
                seen.first(2)?;
                // A null request is no request: serde_json tells the client so.
                review.request = Some(read_request(&mut reader)?);
            }
            // kube-core reads a response as an AdmissionResponse, which may refuse it.
            "response" => {
                seen.first(3)?;
                if !reader.null()? {
                    return Err(Decline);
                }
            }
            // kube-core's `#[serde(flatten)]` buffers other members as values.
            _ => reader.check_value()?,
        }
    }
    reader.end()?;
    Ok(review)
}

fn read_request<'a>(reader: &mut Reader<'a>) -> Read<RequestParts<'a>> {
    let mut parts = RequestParts::default();
    let mut members = reader.object()?;
    while let Some(key) = members.next_key(reader)? {
        let seen = &mut parts.seen;
        match &*key {
            "uid" => {
                seen.first(request::UID)?;
                parts.uid = Some(reader.string()?);
            }
            "kind" => {
                seen.first(request::KIND)?;
                check_group_version_kind(reader)?;
            }
            "resource" => {
                seen.first(request::RESOURCE)?;
                parts.resource = Some(read_group_version_resource(reader)?);
            }
            "subResource" => {
                seen.first(request::SUB_RESOURCE)?;
                parts.sub_resource = optional(reader, Reader::string)?;
            }
            "requestKind" => {
                seen.first(request::REQUEST_KIND)?;
                optional(reader, check_group_version_kind)?;
            }
            "requestResource" => {
                seen.first(request::REQUEST_RESOURCE)?;
                optional(reader, read_group_version_resource)?;
            }
            "requestSubResource" => {
                seen.first(request::REQUEST_SUB_RESOURCE)?;
                optional(reader, Reader::check_string)?;
            }
            // A `String` with a default: absent is empty, null is refused.
            "name" => {
                seen.first(request::NAME)?;
                parts.name = Some(reader.string()?);
            }
            "namespace" => {
                seen.first(request::NAMESPACE)?;
                parts.namespace = optional(reader, Reader::string)?;
            }
            "operation" => {
                seen.first(request::OPERATION)?;
                parts.operation = Some(match &*reader.string()? {
                    "CREATE" => Operation::Create,
                    "UPDATE" => Operation::Update,
                    "DELETE" => Operation::Delete,
                    "CONNECT" => Operation::Connect,
                    _ => return Err(Decline),
                });
            }
            "userInfo" => {
                seen.first(request::USER_INFO)?;
                check_user_info(reader)?;
            }
            "object" => {
                seen.first(request::OBJECT)?;
                parts.object = read_pod(reader)?;
            }
            "oldObject" => {
                seen.first(request::OLD_OBJECT)?;
                parts.old_object = read_pod(reader)?;
            }
            "dryRun" => {
                seen.first(request::DRY_RUN)?;
                parts.dry_run = reader.boolean()?;
            }
            // A RawExtension: any JSON value, read as serde_json's `Value`.
            "options" => {
                seen.first(request::OPTIONS)?;
                reader.check_value()?;
            }
            // Members kube-core does not know, skipped as serde skips them.
            _ => reader.skip()?,
        }
    }
    Ok(parts)
}

/// `null` as `None`, else what `read` reads.
fn optional<'a, T>(
    reader: &mut Reader<'a>,
    read: impl FnOnce(&mut Reader<'a>) -> Read<T>,
) -> Read<Option<T>> {
    if reader.null()? {
        Ok(None)
    } else {
        read(reader).map(Some)
    }
}

/// kube-core's `GroupVersionKind`: three required strings.
fn check_group_version_kind(reader: &mut Reader<'_>) -> Read<()> {
    let mut seen = Seen::default();
    let mut members = reader.object()?;
    while let Some(key) = members.next_key(reader)? {
        let field = match &*key {
            "group" => 0,
            "version" => 1,
            "kind" => 2,
            _ => {
                reader.skip()?;
                continue;
            }
        };
        seen.first(field)?;
        reader.check_string()?;
    }
    if (0..3).all(|field| seen.has(field)) {
        Ok(())
    } else {
        Err(Decline)
    }
}

/// kube-core's `GroupVersionResource`: `(group, resource)`; `version` is required too,
/// and `api_version` (its own name for it, not `apiVersion`) may be given.
fn read_group_version_resource<'a>(reader: &mut Reader<'a>) -> Read<(Cow<'a, str>, Cow<'a, str>)> {
    let (mut group, mut resource) = (None, None);
    let mut seen = Seen::default();
    let mut members = reader.object()?;
    while let Some(key) = members.next_key(reader)? {
        match &*key {
            "group" => {
                seen.first(0)?;
                group = Some(reader.string()?);
            }
            "version" => {
                seen.first(1)?;
                reader.check_string()?;
            }
            "resource" => {
                seen.first(2)?;
                resource = Some(reader.string()?);
            }
            "api_version" => {
                seen.first(3)?;
                reader.check_string()?;
            }
            _ => reader.skip()?,
        }
    }
    match (group, resource) {
        (Some(group), Some(resource)) if seen.has(1) => Ok((group, resource)),
        _ => Err(Decline),
    }
}

/// k8s-openapi's `UserInfo`, read as it reads it: from an object only, every member
/// optional (`null` too), unknown ones skipped, a repeated one read again.
fn check_user_info(reader: &mut Reader<'_>) -> Read<()> {
    let mut members = reader.object()?;
    while let Some(key) = members.next_key(reader)? {
        match &*key {
            // map[string][]string
            "extra" => optional(reader, |reader| {
                let mut extra = reader.object()?;
                while extra.next_checked_key(reader)? {
                    check_strings(reader)?;
                }
                Ok(())
            })
            .map(drop)?,
            "groups" => optional(reader, check_strings).map(drop)?,
            "uid" | "username" => optional(reader, Reader::check_string).map(drop)?,
            _ => reader.skip()?,
        }
    }
    Ok(())
}

/// An array of strings (not `null`).
fn check_strings(reader: &mut Reader<'_>) -> Read<()> {
    let mut items = reader.array()?;
    while items.next_item(reader)? {
        reader.check_string()?;
    }
    Ok(())
}
