//! [`PodImages`] read with the borrowing [`Reader`]: the webhook's hot path. It
//! reads exactly what `PodImages`'s serde implementation reads, and declines wherever
//! that implementation would fail (or where it is not sure it would read the same
//! value), so that the caller can fall back to serde for the exact error.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ImageVolumeSource;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{ContainerImage, OWN_KEY_PREFIX, PodImages, PodSpecImages, VolumeImage};
use crate::json::{Read, Reader, Seen};

/// A pod object, or `None` for `null`. Read into its box, metadata in place: the
/// pod is 512 bytes, and each move of it is a copy.
pub(crate) fn read_pod<'a>(reader: &mut Reader<'a>) -> Read<Option<Box<PodImages<'a>>>> {
    if reader.null()? {
        return Ok(None);
    }
    let mut pod = Box::<PodImages>::default();
    pod.metadata_missing = true;
    let mut seen = Seen::default();
    let mut object = reader.object()?;
    while let Some(key) = object.next_key(reader)? {
        match &*key {
            "apiVersion" => {
                seen.first(0)?;
                pod.api_version = reader.optional_string()?;
            }
            "kind" => {
                seen.first(1)?;
                pod.kind = reader.optional_string()?;
            }
            "metadata" => {
                seen.first(2)?;
                pod.metadata_missing = !read_metadata(reader, &mut pod.metadata)?;
            }
            "spec" => {
                seen.first(3)?;
                if !reader.null()? {
                    pod.spec = read_spec(reader)?;
                }
            }
            _ => reader.skip()?,
        }
    }
    Ok(Some(pod))
}

/// Reads `metadata` into `metadata`, still its default; `false` for `null`.
fn read_metadata(reader: &mut Reader<'_>, metadata: &mut ObjectMeta) -> Read<bool> {
    if reader.null()? {
        return Ok(false);
    }
    let mut seen = Seen::default();
    let mut object = reader.object()?;
    while let Some(key) = object.next_key(reader)? {
        match &*key {
            "name" => {
                seen.first(0)?;
                metadata.name = reader.optional_string()?;
            }
            "generateName" => {
                seen.first(1)?;
                metadata.generate_name = reader.optional_string()?;
            }
            "namespace" => {
                seen.first(2)?;
                metadata.namespace = reader.optional_string()?;
            }
            "uid" => {
                seen.first(3)?;
                metadata.uid = reader.optional_string()?;
            }
            "labels" => {
                seen.first(4)?;
                metadata.labels = read_string_map(reader)?;
            }
            "annotations" => {
                seen.first(5)?;
                metadata.annotations = read_string_map(reader)?;
            }
            _ => reader.skip()?,
        }
    }
    Ok(true)
}

/// `null`, or an object of strings of which harbor-pilot's keys are kept (a key given
/// twice keeps its last value, as serde's `BTreeMap` does).
fn read_string_map(reader: &mut Reader<'_>) -> Read<Option<BTreeMap<String, String>>> {
    if reader.null()? {
        return Ok(None);
    }
    let mut map = BTreeMap::new();
    let mut object = reader.object()?;
    while let Some(key) = object.next_key(reader)? {
        let value = reader.string()?;
        if key.starts_with(OWN_KEY_PREFIX) {
            map.insert(key.into_owned(), value.into_owned());
        }
    }
    Ok(Some(map))
}

fn read_spec<'a>(reader: &mut Reader<'a>) -> Read<PodSpecImages<'a>> {
    let mut spec = PodSpecImages::default();
    let mut seen = Seen::default();
    let mut object = reader.object()?;
    while let Some(key) = object.next_key(reader)? {
        match &*key {
            "initContainers" => {
                seen.first(0)?;
                spec.init_containers = read_list(reader, read_container)?;
            }
            "containers" => {
                seen.first(1)?;
                spec.containers = read_list(reader, read_container)?;
            }
            "ephemeralContainers" => {
                seen.first(2)?;
                spec.ephemeral_containers = read_list(reader, read_container)?;
            }
            "volumes" => {
                seen.first(3)?;
                spec.volumes = read_list(reader, read_volume)?;
            }
            _ => reader.skip()?,
        }
    }
    Ok(spec)
}

/// `null`, or an array of objects each read by `item`.
fn read_list<'a, T>(
    reader: &mut Reader<'a>,
    item: fn(&mut Reader<'a>) -> Read<T>,
) -> Read<Option<Vec<T>>> {
    if reader.null()? {
        return Ok(None);
    }
    let mut items = Vec::new();
    let mut array = reader.array()?;
    while array.next_item(reader)? {
        items.push(item(reader)?);
    }
    Ok(Some(items))
}

fn read_container<'a>(reader: &mut Reader<'a>) -> Read<ContainerImage<'a>> {
    let mut container = ContainerImage::default();
    let mut seen = Seen::default();
    let mut object = reader.object()?;
    while let Some(key) = object.next_key(reader)? {
        match &*key {
            "name" => {
                seen.first(0)?;
                container.name = reader.string()?;
            }
            "image" => {
                seen.first(1)?;
                container.image = reader.optional_str()?;
            }
            _ => reader.skip()?,
        }
    }
    Ok(container)
}

/// A volume: its name, and the source of an image volume.
fn read_volume(reader: &mut Reader<'_>) -> Read<VolumeImage> {
    let mut volume = VolumeImage::default();
    let mut seen = Seen::default();
    let mut object = reader.object()?;
    while let Some(key) = object.next_key(reader)? {
        match &*key {
            "name" => {
                seen.first(0)?;
                volume.name = reader.string()?.into_owned();
            }
            "image" => {
                seen.first(1)?;
                if !reader.null()? {
                    volume.image = Some(read_image_source(reader)?);
                }
            }
            _ => reader.skip()?,
        }
    }
    Ok(volume)
}

/// k8s-openapi's `ImageVolumeSource` reading: a field given twice keeps its last value
/// (its generated code does not refuse duplicates).
fn read_image_source(reader: &mut Reader<'_>) -> Read<ImageVolumeSource> {
    let mut source = ImageVolumeSource::default();
    let mut object = reader.object()?;
    while let Some(key) = object.next_key(reader)? {
        match &*key {
            "reference" => source.reference = reader.optional_string()?,
            "pullPolicy" => source.pull_policy = reader.optional_string()?,
            _ => reader.skip()?,
        }
    }
    Ok(source)
}
