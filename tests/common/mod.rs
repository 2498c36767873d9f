//! Shared by the integration tests: the admission fixtures, the example configuration,
//! and an independent check of an AdmissionReview answer.
//!
//! The check does not use harbor-pilot's own parser or rules: expected images come from
//! the Go library's answers in `fixtures/admission/images.jsonl` (`docker_ref`) and the
//! example proxy table below, and the pod is walked as plain JSON.

// Test code: a failed setup step should panic with its message.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

pub mod certs;
pub mod client;
pub mod cluster;
pub mod h2raw;
pub mod injector;
pub mod manifests;
pub mod pilot;
pub mod process;
pub mod registry;
pub mod scenarios;
pub mod server;
pub mod token;
pub mod tools;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use base64::Engine as _;
use harbor_pilot_core::reference::shorten as short;
use serde::Deserialize;
use serde_json::Value;

pub const HARBOR: &str = "harbor.example.com";
/// The `proxies` table of `config/example.yaml`, restated so the oracle does not depend on
/// the config loader (a test checks they agree).
pub const EXAMPLE_PROXIES: [(&str, &str); 4] = [
    ("docker.io", "docker-hub-proxy"),
    ("ghcr.io", "ghcr-proxy"),
    ("quay.io", "quay-proxy"),
    ("registry.k8s.io", "registry-k8s-proxy"),
];
pub const ANNOTATION: &str = "harbor-pilot.io/original-images";

pub fn project_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn example_config_path() -> PathBuf {
    project_root().join("config/example.yaml")
}

pub fn example_rules() -> harbor_pilot_core::rules::CachedRules {
    harbor_pilot::config::load(&example_config_path())
        .expect("config/example.yaml loads")
        .rules
}

/// Every AdmissionReview fixture, sorted by name: `(file name, body)`.
pub fn admission_fixtures() -> Vec<(String, Vec<u8>)> {
    let dir = project_root().join("tests/fixtures/admission");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert_eq!(
        files.len(),
        237,
        "admission fixtures missing from {}",
        dir.display()
    );
    files
        .into_iter()
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let body = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (name, body)
        })
        .collect()
}

/// Fixtures that are not AdmissionReviews (no uid to answer under): answered with 400.
/// (A Pod CREATE without an object, 228 and 231, has a uid: allowed with a warning.)
pub const REJECTED: [&str; 5] = [
    "226-synthetic-malformed-empty.json",
    "227-synthetic-malformed-norequest.json",
    "232-synthetic-malformed-nouid.json",
    "235-synthetic-malformed-v1beta1.json",
    "236-synthetic-malformed-truncated.json",
];

#[derive(Deserialize)]
struct ImageAnswer {
    image: String,
    docker_ref: Option<String>,
}

/// The Go library's normalised `(domain, path)` for each fixture image (`None`: invalid).
fn go_answers() -> &'static HashMap<String, Option<(String, String)>> {
    static ANSWERS: OnceLock<HashMap<String, Option<(String, String)>>> = OnceLock::new();
    ANSWERS.get_or_init(|| {
        let path = project_root().join("tests/fixtures/admission/images.jsonl");
        let text = std::fs::read_to_string(&path).expect("images.jsonl");
        text.lines()
            .map(|line| {
                let answer: ImageAnswer = serde_json::from_str(line).expect("images.jsonl line");
                let parts = answer.docker_ref.map(|r| {
                    let (domain, rest) = r.split_once('/').expect("docker_ref has a domain");
                    let name_end = rest.find('@').unwrap_or(rest.len());
                    let name = &rest[..name_end];
                    let path = match name.rfind(':') {
                        Some(colon) if colon > name.rfind('/').unwrap_or(0) => &name[..colon],
                        _ => name,
                    };
                    (domain.to_owned(), path.to_owned())
                });
                (answer.image, parts)
            })
            .collect()
    })
}

/// `[:tag][@digest]` exactly as written in `image`.
fn written_suffix(image: &str) -> &str {
    let name_end = image.find('@').unwrap_or(image.len());
    let name = &image[..name_end];
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    match name[last_slash..].find(':') {
        Some(colon) => &image[last_slash + colon..],
        None => &image[name_end..],
    }
}

/// What the example configuration makes of `image`: `Some(new)` or `None` (unchanged).
pub fn expected_rewrite(image: &str) -> Option<String> {
    if image == "auto" {
        return None; // the default placeholder
    }
    let answer = go_answers()
        .get(image)
        .unwrap_or_else(|| panic!("image {image:?} is not in images.jsonl"));
    let (domain, path) = answer.as_ref()?;
    let (_, project) = EXAMPLE_PROXIES
        .iter()
        .find(|(upstream, _)| upstream == domain)?;
    Some(format!(
        "{HARBOR}/{project}/{path}{}",
        written_suffix(image)
    ))
}

/// An image field of a pod, found by walking the JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonSlot {
    pub list: &'static str,
    pub index: usize,
    pub name: String,
    pub image: String,
}

impl JsonSlot {
    pub fn pointer(&self) -> String {
        if self.list == "volumes" {
            format!("/spec/volumes/{}/image/reference", self.index)
        } else {
            format!("/spec/{}/{}/image", self.list, self.index)
        }
    }

    pub fn annotation_key(&self) -> String {
        if self.list == "volumes" {
            format!("volume:{}", self.name)
        } else {
            self.name.clone()
        }
    }
}

pub fn json_slots(pod: &Value) -> Vec<JsonSlot> {
    let mut out = Vec::new();
    for list in ["initContainers", "containers", "ephemeralContainers"] {
        if let Some(items) = pod["spec"][list].as_array() {
            for (index, c) in items.iter().enumerate() {
                if let Some(image) = c["image"].as_str() {
                    out.push(JsonSlot {
                        list,
                        index,
                        name: c["name"].as_str().unwrap_or_default().to_owned(),
                        image: image.to_owned(),
                    });
                }
            }
        }
    }
    if let Some(items) = pod["spec"]["volumes"].as_array() {
        for (index, v) in items.iter().enumerate() {
            if let Some(image) = v["image"]["reference"].as_str() {
                out.push(JsonSlot {
                    list: "volumes",
                    index,
                    name: v["name"].as_str().unwrap_or_default().to_owned(),
                    image: image.to_owned(),
                });
            }
        }
    }
    out
}

/// JSON Pointers of every leaf that differs between `a` and `b`.
pub fn json_diff(a: &Value, b: &Value) -> Vec<String> {
    fn walk(a: &Value, b: &Value, path: String, out: &mut Vec<String>) {
        static EMPTY: OnceLock<serde_json::Map<String, Value>> = OnceLock::new();
        let empty = EMPTY.get_or_init(serde_json::Map::new);
        match (a, b) {
            // A map that appears (or goes) counts as its keys appearing (or going).
            (Value::Null, Value::Object(y)) => walk(
                &Value::Object(empty.clone()),
                &Value::Object(y.clone()),
                path,
                out,
            ),
            (Value::Object(x), Value::Null) => walk(
                &Value::Object(x.clone()),
                &Value::Object(empty.clone()),
                path,
                out,
            ),
            (Value::Object(x), Value::Object(y)) => {
                for key in x.keys().chain(y.keys().filter(|k| !x.contains_key(*k))) {
                    let escaped = key.replace('~', "~0").replace('/', "~1");
                    walk(
                        x.get(key).unwrap_or(&Value::Null),
                        y.get(key).unwrap_or(&Value::Null),
                        format!("{path}/{escaped}"),
                        out,
                    );
                }
            }
            (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
                for (i, (p, q)) in x.iter().zip(y).enumerate() {
                    walk(p, q, format!("{path}/{i}"), out);
                }
            }
            _ if a != b => out.push(path),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(a, b, String::new(), &mut out);
    out
}

/// What [`verify_answer`] found, for counting across fixtures.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Verified {
    pub patched: bool,
    pub rewritten: usize,
    pub warnings: Vec<String>,
    pub new_images: BTreeMap<String, String>,
}

/// Checks an AdmissionReview answer to the request in `body` (from fixture `file`)
/// against everything the webhook promises, computing the expected images itself.
pub fn verify_answer(file: &str, body: &[u8], answer: &Value) -> Result<Verified, String> {
    let review: Value = serde_json::from_slice(body).map_err(|e| format!("{file}: body: {e}"))?;
    let request = &review["request"];
    let response = &answer["response"];
    let fail = |what: String| {
        Err(format!(
            "{file}: {what}\nanswer: {}",
            short(&answer.to_string(), 600)
        ))
    };

    if answer["apiVersion"] != "admission.k8s.io/v1" || answer["kind"] != "AdmissionReview" {
        return fail("answer is not an admission.k8s.io/v1 AdmissionReview".into());
    }
    if response["uid"] != request["uid"] {
        return fail(format!("uid {} not echoed", request["uid"]));
    }
    if response["allowed"] != true {
        return fail("not allowed".into());
    }
    let patch = match (&response["patch"], &response["patchType"]) {
        (Value::Null, Value::Null) => None,
        (Value::String(p), Value::String(t)) if t == "JSONPatch" => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(p)
                .map_err(|e| format!("{file}: patch is not base64: {e}"))?;
            Some(
                serde_json::from_slice::<json_patch::Patch>(&bytes)
                    .map_err(|e| format!("{file}: patch is not a JSON Patch: {e}"))?,
            )
        }
        _ => return fail("patch and patchType must come together".into()),
    };
    let warnings: Vec<String> = response["warnings"]
        .as_array()
        .map(|w| {
            w.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();

    let object = &request["object"];
    let mut patched = object.clone();
    if let Some(patch) = &patch {
        json_patch::patch(&mut patched, patch)
            .map_err(|e| format!("{file}: patch does not apply: {e}"))?;
    }

    // Which images may change, computed from the request alone.
    let is_pods = request["resource"]["group"] == "" && request["resource"]["resource"] == "pods";
    let operation = request["operation"].as_str().unwrap_or_default();
    let sub = request["subResource"].as_str();
    let is_pod_object = object["kind"].as_str().is_none_or(|k| k == "Pod")
        && object["apiVersion"].as_str().is_none_or(|v| v == "v1");
    let opted_out = object["metadata"]["labels"]["harbor-pilot.io/rewrite"] == "disabled";
    let old_slots = json_slots(&request["oldObject"]);
    let old_image = |slot: &JsonSlot| {
        old_slots
            .iter()
            .find(|o| o.list == slot.list && o.name == slot.name)
            .map(|o| o.image.clone())
    };
    let candidate = |slot: &JsonSlot| -> bool {
        if !is_pods || !is_pod_object || opted_out {
            return false;
        }
        match (operation, sub) {
            ("CREATE", None) => true,
            ("UPDATE", None) => {
                !request["oldObject"].is_null() && old_image(slot).as_deref() != Some(&slot.image)
            }
            ("UPDATE", Some("ephemeralcontainers")) => {
                slot.list == "ephemeralContainers" && old_image(slot).is_none()
            }
            _ => false,
        }
    };

    let mut verified = Verified {
        patched: patch.is_some(),
        warnings: warnings.clone(),
        ..Verified::default()
    };
    let mut allowed_paths = Vec::new();
    let after = json_slots(&patched);
    for slot in json_slots(object) {
        let expected = if candidate(&slot) {
            expected_rewrite(&slot.image)
        } else {
            None
        };
        let now = after
            .iter()
            .find(|s| s.list == slot.list && s.index == slot.index)
            .map(|s| s.image.clone())
            .unwrap_or_default();
        match &expected {
            Some(new) if &now != new => {
                return fail(format!(
                    "{} {:?}: expected {new:?}, got {:?}",
                    slot.pointer(),
                    short(&slot.image, 80),
                    short(&now, 80)
                ));
            }
            None if now != slot.image => {
                return fail(format!(
                    "{} {:?} must stay, became {:?}",
                    slot.pointer(),
                    short(&slot.image, 80),
                    short(&now, 80)
                ));
            }
            _ => {}
        }
        if let Some(new) = expected {
            verified.rewritten += 1;
            verified.new_images.insert(slot.pointer(), new);
            allowed_paths.push(slot.pointer());
        }
        let quoted_prefix = format!("{:?}", short(&slot.image, 40));
        let quoted_prefix = quoted_prefix.trim_end_matches(['"', '…']);
        if candidate(&slot)
            && slot.image != "auto"
            && go_answers().get(&slot.image).is_some_and(Option::is_none)
            && !warnings
                .iter()
                .any(|w| w.contains(quoted_prefix) || w.contains("more images"))
        {
            return fail(format!(
                "no warning names the unparsable image {:?}",
                short(&slot.image, 80)
            ));
        }
    }

    // Only the images and the annotation may change.
    let ephemeral = sub == Some("ephemeralcontainers");
    for changed in json_diff(object, &patched) {
        let is_metadata = changed == "/metadata/annotations/harbor-pilot.io~1original-images"
            || changed == "/metadata/labels/harbor-pilot.io~1rewritten";
        if !allowed_paths.contains(&changed) && (!is_metadata || ephemeral) {
            return fail(format!(
                "the patch changed {changed}, which is not an image field"
            ));
        }
    }
    if verified.rewritten > 0 && !ephemeral {
        if patched["metadata"]["labels"]["harbor-pilot.io/rewritten"] != "true" {
            return fail("a rewritten pod is not labelled harbor-pilot.io/rewritten".into());
        }
        let recorded = patched["metadata"]["annotations"][ANNOTATION]
            .as_str()
            .ok_or_else(|| format!("{file}: annotation {ANNOTATION} missing"))?;
        let recorded: BTreeMap<String, String> = serde_json::from_str(recorded)
            .map_err(|e| format!("{file}: annotation is not a JSON object of strings: {e}"))?;
        for slot in json_slots(object)
            .iter()
            .filter(|s| verified.new_images.contains_key(&s.pointer()))
        {
            if recorded.get(&slot.annotation_key()) != Some(&slot.image) {
                return fail(format!(
                    "annotation does not record {:?} for {}",
                    slot.image,
                    slot.annotation_key()
                ));
            }
        }
        let before: BTreeMap<String, String> = object["metadata"]["annotations"][ANNOTATION]
            .as_str()
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or_default();
        for (key, original) in before {
            // An entry may go only when its container now runs neither the original
            // nor the original's rewrite (it would send a fallback to the wrong image).
            let stale = json_slots(&patched).iter().any(|s| {
                s.annotation_key() == key
                    && s.image != original
                    && expected_rewrite(&original).as_deref() != Some(s.image.as_str())
            });
            if !recorded.contains_key(&key) && !stale {
                return fail(format!(
                    "annotation lost the earlier entry {key}={original}"
                ));
            }
        }
    }
    if verified.rewritten == 0
        && patch.as_ref().is_some_and(|p| {
            p.0.iter()
                .any(|op| !op.path().to_string().starts_with("/metadata"))
        })
    {
        return fail("an image patched although nothing is rewritten".into());
    }
    Ok(verified)
}

/// Reads a file relative to the project root.
pub fn read(path: impl AsRef<Path>) -> String {
    let path = project_root().join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A Pod CREATE review with one container per image (named c0, c1, …), as the API
/// server sends it.
pub fn pod_review(uid: &str, images: &[&str]) -> Value {
    let containers: Vec<Value> = images
        .iter()
        .enumerate()
        .map(|(i, image)| serde_json::json!({"name": format!("c{i}"), "image": image}))
        .collect();
    serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "operation": "CREATE",
            "namespace": "default",
            "userInfo": {"username": "tester"},
            "object": {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "p", "namespace": "default"},
                "spec": {"containers": containers}
            }
        }
    })
}

/// Runs `harbor-pilot ARGS` in the project root (no `HARBOR_PILOT_*` from the caller's
/// environment) and returns what it did.
pub fn harbor_pilot(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_harbor-pilot"))
        .args(args)
        .env_remove("HARBOR_PILOT_CONFIG")
        .current_dir(project_root())
        .output()
        .unwrap()
}

/// [`harbor_pilot`] that must succeed; its standard output.
pub fn harbor_pilot_ok(args: &[&str]) -> String {
    let output = harbor_pilot(args);
    assert!(
        output.status.success(),
        "harbor-pilot {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}
