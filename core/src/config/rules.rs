//! The rewrite rules' part of the configuration: `harbor`, `proxies`, `exclude` and
//! `placeholders`, checked and compiled into a [`RuleSet`].

use std::collections::BTreeMap;

use super::Invalid;
use crate::reference::{DOCKER_HUB, ImageRef, is_registry_host};
use crate::rules::{self, Proxy, RuleSet};

/// Images left alone unless `placeholders` is set: Istio's gateway injection writes
/// `image: auto` and its own webhook replaces it after ours may have run.
pub const DEFAULT_PLACEHOLDERS: &[&str] = &["auto"];

const MAX_PROJECT_LEN: usize = 255;

pub(super) fn default_placeholders() -> Vec<String> {
    DEFAULT_PLACEHOLDERS
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
}

/// A map that refuses a key written twice: YAML parsers keep the last one silently,
/// which would send an upstream to the wrong project without a word.
pub(super) fn unique_keys<'de, D>(deserializer: D) -> Result<BTreeMap<String, String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    struct Visitor;
    impl<'de> serde::de::Visitor<'de> for Visitor {
        type Value = BTreeMap<String, String>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a map of upstream registry host to Harbor project")
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some((key, value)) = map.next_entry::<String, String>()? {
                if out.contains_key(&key) {
                    // The YAML library prefixes the field (`proxies: `) itself.
                    return Err(serde::de::Error::custom(format_args!(
                        "upstream {key:?} is listed twice"
                    )));
                }
                out.insert(key, value);
            }
            Ok(out)
        }
    }
    deserializer.deserialize_map(Visitor)
}

/// Checks the rules' fields, adding every problem to `problems`; the rule set when they
/// compile.
pub(super) fn build(
    harbor: String,
    proxies: BTreeMap<String, String>,
    exclude: Vec<String>,
    placeholders: Vec<String>,
    problems: &mut Vec<Invalid>,
) -> Option<RuleSet> {
    let before = problems.len();
    if let Err(reason) = check_host(&harbor) {
        problems.push(Invalid::new("harbor", &harbor, reason));
    }
    if proxies.is_empty() {
        problems.push(Invalid::field(
            "proxies",
            "no upstream registry listed, so nothing would be rewritten",
        ));
    }
    for (upstream, project) in &proxies {
        let field = format!("proxies[{upstream:?}]");
        if upstream == "index.docker.io" {
            problems.push(Invalid::new(
                &field,
                upstream,
                "is never an image's registry: the kubelet reads it as docker.io; list docker.io instead",
            ));
        } else if let Err(reason) = check_host(upstream) {
            problems.push(Invalid::new(&field, upstream, reason));
        }
        if upstream == &harbor {
            problems.push(Invalid::new(
                "harbor",
                &harbor,
                format!(
                    "is also an upstream under {field}; images already pulled from Harbor would be rewritten again"
                ),
            ));
        }
        if !is_harbor_project_name(project) {
            problems.push(Invalid::new(
                &field,
                project,
                "is not a project name Harbor accepts: 1-255 lowercase letters and digits, \
                 separated by single '.', '_' or '-'",
            ));
        }
    }
    let mut globs = Vec::with_capacity(exclude.len());
    for (index, pattern) in exclude.iter().enumerate() {
        match check_exclude_pattern(pattern) {
            Ok(glob) => globs.push(glob),
            Err(reason) => {
                problems.push(Invalid::new(format!("exclude[{index}]"), pattern, reason))
            }
        }
    }
    for (index, placeholder) in placeholders.iter().enumerate() {
        if placeholder.is_empty() {
            problems.push(Invalid::new(
                format!("placeholders[{index}]"),
                placeholder,
                "is empty; list image strings exactly as pods write them",
            ));
        }
    }
    if problems.len() > before {
        return None;
    }
    let proxies = proxies
        .into_iter()
        .map(|(upstream, project)| Proxy { upstream, project })
        .collect();
    match RuleSet::new(harbor, proxies, globs, exclude, placeholders) {
        Ok(rules) => Some(rules),
        Err(error) => {
            problems.push(Invalid::field(
                "exclude",
                format!("the patterns cannot be compiled together: {error}"),
            ));
            None
        }
    }
}

/// Checks a registry host written in the config; the error is the reason.
pub(crate) fn check_host(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("is empty; write the registry's host[:port]".into());
    }
    if host.contains("://") {
        return Err("must be host[:port], without a scheme".into());
    }
    if host.contains('/') {
        return Err("must be host[:port], without a path".into());
    }
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err("must be lowercase: image registries are compared byte for byte".into());
    }
    if !is_registry_host(host) {
        return Err(if host.contains(['.', ':']) || host == "localhost" {
            "is not a valid host[:port]".into()
        } else {
            "would be read as a Docker Hub namespace, not a registry: a host needs a '.' or a ':port' (or is localhost)".into()
        });
    }
    let port = host.rsplit_once(':').filter(|_| !host.ends_with(']'));
    if port.is_some_and(|(_, port)| !matches!(port.parse::<u32>(), Ok(1..=65535))) {
        return Err("has a port outside 1-65535".into());
    }
    Ok(())
}

/// Harbor's own rule: `^[a-z0-9]+(?:[._-][a-z0-9]+)*$`, 1 to 255 characters.
pub(crate) fn is_harbor_project_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_PROJECT_LEN
        && name.split(['.', '_', '-']).all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

fn check_exclude_pattern(pattern: &str) -> Result<globset::Glob, String> {
    if pattern.is_empty() {
        return Err("is empty".into());
    }
    let first = pattern.split('/').next().unwrap_or_default();
    let has_registry = pattern.contains('/')
        && (first.contains(['.', ':', '*', '?', '[', '{']) || first == "localhost");
    if !has_registry {
        let hint = ImageRef::parse(pattern)
            .map(|r| format!("; did you mean {}/{}?", r.domain(), r.path()))
            .unwrap_or_default();
        return Err(format!(
            "is not a normalised name: patterns match registry/path, e.g. {DOCKER_HUB}/library/ubuntu{hint}"
        ));
    }
    rules::compile_pattern(pattern).map_err(|e| format!("is not a valid pattern: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("docker-hub-proxy", true)]
    #[case("a", true)]
    #[case("proxy.cache_1", true)]
    #[case("", false)]
    #[case("-proxy", false)]
    #[case("proxy-", false)]
    #[case("pro__xy", false)]
    fn follows_harbors_project_name_rule(#[case] name: &str, #[case] ok: bool) {
        assert_eq!(is_harbor_project_name(name), ok);
    }

    #[test]
    fn project_name_length_limit_is_harbors() {
        assert!(is_harbor_project_name(&"a".repeat(255)));
        assert!(!is_harbor_project_name(&"a".repeat(256)));
    }
}
