//! The same `proxies` table as node-level registry mirrors: a Talos machine-config
//! patch, or containerd `hosts.toml` files. A mirror is tried first on every pull and
//! the upstream registry is the fallback, node-wide; the webhook decides per namespace
//! at admission. Both can run from one configuration.
//!
//! Pure: the caller prints or writes.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::reference::DOCKER_HUB;
use crate::rules::RuleSet;

/// Harbor's registry API root for `project`: what a mirror endpoint with
/// `overridePath`/`override_path` points at.
fn endpoint(rules: &RuleSet, project: &str) -> String {
    format!("https://{}/v2/{project}", rules.harbor())
}

/// The upstreams in a stable order.
fn sorted(rules: &RuleSet) -> Vec<(&str, &str)> {
    let mut proxies: Vec<_> = rules.proxies().collect();
    proxies.sort_unstable();
    proxies
}

/// A Talos machine-config patch: `machine.registries.mirrors.<upstream>` with Harbor's
/// project as the endpoint and `overridePath: true`. `skipFallback` is left unset, so
/// Talos falls back to the upstream when Harbor fails.
pub fn talos_patch(rules: &RuleSet) -> String {
    let mut mirrors = BTreeMap::new();
    for (upstream, project) in sorted(rules) {
        mirrors.insert(
            upstream.to_owned(),
            serde_json::json!({"endpoints": [endpoint(rules, project)], "overridePath": true}),
        );
    }
    let patch = serde_json::json!({"machine": {"registries": {"mirrors": mirrors}}});
    let mut out = String::from(
        "# Talos machine-config patch from harbor-pilot's configuration: pulls of these\n\
         # registries go through Harbor's proxy-cache projects on every node, and fall back\n\
         # to the upstream registry when Harbor fails (skipFallback is not set).\n\
         #   talosctl patch machineconfig --nodes <nodes> --patch @harbor-mirrors.yaml\n",
    );
    // A tree of strings, bools and lists always serialises.
    out.push_str(&yaml_serde::to_string(&patch).unwrap_or_default());
    out
}

/// One `hosts.toml` for containerd's `config_path` directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostsFile {
    /// The directory under `config_path` (the registry host, `host:port` with a port).
    pub dir: String,
    /// The file's contents.
    pub contents: String,
}

/// One `<upstream>/hosts.toml` per upstream: Harbor's project first (pull and resolve,
/// `override_path`), then the upstream itself as `server`, the fallback.
pub fn containerd_hosts(rules: &RuleSet) -> Vec<HostsFile> {
    sorted(rules)
        .into_iter()
        .map(|(upstream, project)| {
            // containerd's own name for Docker Hub's registry API.
            let server = if upstream == DOCKER_HUB {
                "https://registry-1.docker.io".to_owned()
            } else {
                format!("https://{upstream}")
            };
            let mut contents = String::new();
            let _ = write!(
                contents,
                "# From harbor-pilot's configuration: pulls of {upstream} try Harbor's proxy-cache\n\
                 # project {project} first and fall back to the upstream registry (server).\n\
                 server = {}\n\n\
                 [host.{}]\n  capabilities = [\"pull\", \"resolve\"]\n  override_path = true\n",
                toml_string(&server),
                toml_string(&endpoint(rules, project)),
            );
            HostsFile {
                dir: upstream.to_owned(),
                contents,
            }
        })
        .collect()
}

/// A TOML basic string. Hosts and project names are validated (no quotes, no
/// backslashes), but escaping costs nothing.
fn toml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn rules() -> RuleSet {
        Config::from_yaml(
            "harbor: harbor.example.com:8443\nproxies:\n  quay.io: quay\n  docker.io: hub\n",
        )
        .unwrap()
        .rules
        .rule_set()
        .clone()
    }

    #[test]
    fn talos_endpoints_are_harbor_projects_with_override_path() {
        let patch: serde_json::Value = yaml_serde::from_str(&talos_patch(&rules())).unwrap();
        let mirrors = &patch["machine"]["registries"]["mirrors"];
        assert_eq!(
            mirrors["docker.io"]["endpoints"][0],
            "https://harbor.example.com:8443/v2/hub"
        );
        assert_eq!(mirrors["quay.io"]["overridePath"], true);
        assert!(mirrors["quay.io"].get("skipFallback").is_none());
    }

    #[test]
    fn containerd_falls_back_to_the_upstream() {
        let files = containerd_hosts(&rules());
        assert_eq!(
            files.iter().map(|f| f.dir.as_str()).collect::<Vec<_>>(),
            ["docker.io", "quay.io"]
        );
        assert!(
            files[0]
                .contents
                .contains("server = \"https://registry-1.docker.io\"")
        );
        assert!(files[1].contents.contains("server = \"https://quay.io\""));
        assert!(
            files[1]
                .contents
                .contains("[host.\"https://harbor.example.com:8443/v2/quay\"]")
        );
    }

    #[test]
    fn escapes_toml_strings() {
        assert_eq!(toml_string(r#"a"b\c"#), r#""a\"b\\c""#);
    }
}
