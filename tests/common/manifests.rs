//! A scratch copy of `manifests/` with everything each shipped variant needs to render:
//! the static-certs overlay's generated certificates and small overlays that add each
//! optional component, as a user would write them.

use std::path::{Path, PathBuf};

use serde_json::Value;

/// Every variant the tests render: `base`, or an overlay's directory name.
pub const VARIANTS: [&str; 6] = [
    "base",
    "cert-manager",
    "static-certs",
    "with-monitoring",
    "with-fallback",
    "with-prewarm",
];

/// The user-written overlays: `(name, the overlay it builds on, the component it adds)`.
const COMPONENT_OVERLAYS: [(&str, &str, &str); 3] = [
    ("with-fallback", "static-certs", "fallback"),
    ("with-prewarm", "static-certs", "prewarm"),
    ("with-monitoring", "cert-manager", "monitoring"),
];

/// Copies `manifests/` into `dir` and prepares it; returns the copy's root.
pub fn prepare(dir: &Path) -> PathBuf {
    let manifests = dir.join("manifests");
    copy_dir(&super::project_root().join("manifests"), &manifests);
    let generated = manifests.join("overlays/static-certs/generated");
    super::harbor_pilot_ok(&["certs", "--out", generated.to_str().unwrap()]);
    for (name, builds_on, component) in COMPONENT_OVERLAYS {
        let overlay = manifests.join("overlays").join(name);
        std::fs::create_dir_all(&overlay).unwrap();
        std::fs::write(
            overlay.join("kustomization.yaml"),
            format!(
                "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
                 resources:\n  - ../{builds_on}\ncomponents:\n  - ../../components/{component}\n"
            ),
        )
        .unwrap();
    }
    manifests
}

/// `variant` of the prepared copy rendered by `kubectl kustomize`, one value per
/// document.
pub fn render(manifests: &Path, variant: &str) -> Vec<Value> {
    let dir = if variant == "base" {
        manifests.join("base")
    } else {
        manifests.join("overlays").join(variant)
    };
    let text = super::tools::render(&dir);
    yaml_serde::Deserializer::from_str(&text)
        .map(|doc| <Value as serde::Deserialize>::deserialize(doc).unwrap())
        .filter(|doc| !doc.is_null())
        .collect()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
