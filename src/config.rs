//! The configuration file: one YAML document, validated once at load.
//!
//! [`RawConfig`] is the file's shape (unknown keys are errors); [`Config::from_yaml`]
//! checks every value and compiles the [`RuleSet`]. Errors name the field and the value.
//! [`load`] is the only function here that does I/O.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::reference::{DOCKER_HUB, ImageRef, is_registry_host};
use crate::rules::{self, RuleSet};

/// Images left alone unless `placeholders` is set: Istio's gateway injection writes
/// `image: auto` and its own webhook replaces it after ours may have run.
pub const DEFAULT_PLACEHOLDERS: &[&str] = &["auto"];

const MAX_PROJECT_LEN: usize = 255;

/// The configuration file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawConfig {
    /// `host[:port]` that pods pull from.
    pub harbor: String,
    /// Upstream registry host → Harbor proxy-cache project.
    #[serde(deserialize_with = "unique_keys")]
    pub proxies: BTreeMap<String, String>,
    /// Glob patterns on the normalised name (`registry/path`) that stay upstream.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Image strings, matched exactly as written, that are never rewritten.
    #[serde(default = "default_placeholders")]
    pub placeholders: Vec<String>,
}

/// A map that refuses a key written twice: YAML parsers keep the last one silently,
/// which would send an upstream to the wrong project without a word.
fn unique_keys<'de, D>(deserializer: D) -> Result<BTreeMap<String, String>, D::Error>
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
                    return Err(serde::de::Error::custom(format_args!(
                        "proxies: upstream {key:?} is listed twice"
                    )));
                }
                out.insert(key, value);
            }
            Ok(out)
        }
    }
    deserializer.deserialize_map(Visitor)
}

fn default_placeholders() -> Vec<String> {
    DEFAULT_PLACEHOLDERS
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The compiled rewrite rules.
    pub rules: RuleSet,
}

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file was read but is not a valid configuration.
    #[error("invalid config file {}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: Box<ConfigError>,
    },
    /// Not YAML of the expected shape (this includes unknown keys).
    #[error("not a valid configuration")]
    Syntax(#[source] yaml_serde::Error),
    /// A value that is not allowed.
    #[error("{field}: {value:?} {reason}")]
    Invalid {
        /// Where in the file, e.g. `proxies["docker.io"]`.
        field: String,
        /// The offending value.
        value: String,
        /// What is wrong, and what to write instead.
        reason: String,
    },
}

impl ConfigError {
    fn invalid(field: impl Into<String>, value: &str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            value: value.to_owned(),
            reason: reason.into(),
        }
    }
}

/// Reads and validates the configuration file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    Config::from_yaml(&text).map_err(|source| ConfigError::File {
        path: path.to_owned(),
        source: Box::new(source),
    })
}

impl Config {
    /// Parses and validates a configuration document.
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        let raw: RawConfig = yaml_serde::from_str(text).map_err(ConfigError::Syntax)?;
        Self::try_from(raw)
    }
}

impl TryFrom<RawConfig> for Config {
    type Error = ConfigError;

    fn try_from(raw: RawConfig) -> Result<Self, Self::Error> {
        let RawConfig {
            harbor,
            proxies,
            exclude,
            placeholders,
        } = raw;

        check_host(&harbor).map_err(|reason| ConfigError::invalid("harbor", &harbor, reason))?;
        if proxies.is_empty() {
            return Err(ConfigError::invalid(
                "proxies",
                "",
                "lists no upstream registries, so nothing would be rewritten",
            ));
        }
        for (upstream, project) in &proxies {
            let field = format!("proxies[{upstream:?}]");
            if upstream == "index.docker.io" {
                return Err(ConfigError::invalid(
                    field,
                    upstream,
                    "is never an image's registry: the kubelet reads it as docker.io; list docker.io instead",
                ));
            }
            check_host(upstream)
                .map_err(|reason| ConfigError::invalid(&field, upstream, reason))?;
            if upstream == &harbor {
                return Err(ConfigError::invalid(
                    "harbor",
                    &harbor,
                    format!(
                        "is also an upstream under {field}; images already pulled from Harbor would be rewritten again"
                    ),
                ));
            }
            if !is_harbor_project_name(project) {
                return Err(ConfigError::invalid(
                    field,
                    project,
                    "is not a project name Harbor accepts: 1-255 lowercase letters and digits, \
                     separated by single '.', '_' or '-'",
                ));
            }
        }

        let mut globs = Vec::with_capacity(exclude.len());
        for (index, pattern) in exclude.iter().enumerate() {
            let glob = check_exclude_pattern(pattern).map_err(|reason| {
                ConfigError::invalid(format!("exclude[{index}]"), pattern, reason)
            })?;
            globs.push(glob);
        }
        for (index, placeholder) in placeholders.iter().enumerate() {
            if placeholder.is_empty() {
                return Err(ConfigError::invalid(
                    format!("placeholders[{index}]"),
                    placeholder,
                    "is empty; list image strings exactly as pods write them",
                ));
            }
        }

        let rules = RuleSet::new(
            harbor,
            proxies.into_iter().collect::<HashMap<_, _>>(),
            globs,
            exclude,
            placeholders,
        )
        .map_err(|e| ConfigError::invalid("exclude", "", format!("cannot be compiled: {e}")))?;
        Ok(Self { rules })
    }
}

/// Checks a registry host written in the config; the error is the reason.
fn check_host(host: &str) -> Result<(), String> {
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
fn is_harbor_project_name(name: &str) -> bool {
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

    const GOOD: &str = "\
harbor: harbor.example.com
proxies:
  docker.io: docker-hub-proxy
  ghcr.io: ghcr-proxy
  quay.io: quay-proxy
  registry.k8s.io: registry-k8s-proxy
";

    /// The error with its causes, as `main` prints it.
    fn error_for(yaml: &str) -> String {
        match Config::from_yaml(yaml) {
            Ok(_) => panic!("accepted:\n{yaml}"),
            Err(e) => format!("{:#}", anyhow::Error::from(e)),
        }
    }

    #[test]
    fn accepts_the_documented_shape() {
        let config = Config::from_yaml(GOOD).unwrap();
        assert_eq!(config.rules.harbor(), "harbor.example.com");
        assert_eq!(config.rules.proxies().count(), 4);
    }

    #[test]
    fn defaults_placeholders_to_istio_auto() {
        let config = Config::from_yaml(GOOD).unwrap();
        assert_eq!(
            config.rules.decide("auto"),
            rules::Decision::Keep(rules::Keep::Placeholder)
        );
    }

    #[test]
    fn empty_placeholders_turn_the_default_off() {
        let config = Config::from_yaml(&format!("{GOOD}placeholders: []\n")).unwrap();
        assert!(matches!(
            config.rules.decide("auto"),
            rules::Decision::Rewrite(_)
        ));
    }

    #[rstest]
    #[case::unknown_key(
        "harbor: h.example.com\nproxies: {docker.io: p}\nproxy: x\n",
        "unknown field `proxy`"
    )]
    #[case::missing_harbor("proxies: {docker.io: p}\n", "missing field `harbor`")]
    #[case::harbor_scheme(
        "harbor: https://h.example.com\nproxies: {docker.io: p}\n",
        "harbor: \"https://h.example.com\" must be host[:port], without a scheme"
    )]
    #[case::harbor_path(
        "harbor: h.example.com/proxy\nproxies: {docker.io: p}\n",
        "harbor: \"h.example.com/proxy\" must be host[:port], without a path"
    )]
    #[case::harbor_single_label(
        "harbor: harbor\nproxies: {docker.io: p}\n",
        "harbor: \"harbor\" would be read as a Docker Hub namespace"
    )]
    #[case::harbor_bad_port(
        "harbor: h.example.com:99999\nproxies: {docker.io: p}\n",
        "harbor: \"h.example.com:99999\" has a port outside 1-65535"
    )]
    #[case::harbor_uppercase(
        "harbor: Harbor.example.com\nproxies: {docker.io: p}\n",
        "harbor: \"Harbor.example.com\" must be lowercase"
    )]
    #[case::no_proxies(
        "harbor: h.example.com\nproxies: {}\n",
        "proxies: \"\" lists no upstream registries"
    )]
    #[case::upstream_not_a_host(
        "harbor: h.example.com\nproxies: {dockerhub: p}\n",
        "proxies[\"dockerhub\"]: \"dockerhub\" would be read as a Docker Hub namespace"
    )]
    #[case::upstream_with_scheme(
        "harbor: h.example.com\nproxies: {\"https://ghcr.io\": p}\n",
        "proxies[\"https://ghcr.io\"]: \"https://ghcr.io\" must be host[:port], without a scheme"
    )]
    #[case::upstream_legacy_hub(
        "harbor: h.example.com\nproxies: {index.docker.io: p}\n",
        "proxies[\"index.docker.io\"]: \"index.docker.io\" is never an image's registry"
    )]
    #[case::project_uppercase(
        "harbor: h.example.com\nproxies: {docker.io: Docker-Hub}\n",
        "proxies[\"docker.io\"]: \"Docker-Hub\" is not a project name Harbor accepts"
    )]
    #[case::project_double_separator(
        "harbor: h.example.com\nproxies: {docker.io: docker--hub}\n",
        "proxies[\"docker.io\"]: \"docker--hub\" is not a project name"
    )]
    #[case::project_with_slash(
        "harbor: h.example.com\nproxies: {docker.io: a/b}\n",
        "proxies[\"docker.io\"]: \"a/b\" is not a project name"
    )]
    #[case::harbor_is_upstream(
        "harbor: h.example.com\nproxies: {h.example.com: p}\n",
        "harbor: \"h.example.com\" is also an upstream under proxies[\"h.example.com\"]"
    )]
    #[case::exclude_short_name(
        "harbor: h.example.com\nproxies: {docker.io: p}\nexclude: [ubuntu]\n",
        "exclude[0]: \"ubuntu\" is not a normalised name: patterns match registry/path, e.g. docker.io/library/ubuntu; did you mean docker.io/library/ubuntu?"
    )]
    #[case::exclude_bad_glob(
        "harbor: h.example.com\nproxies: {docker.io: p}\nexclude: [\"docker.io/[a\"]\n",
        "exclude[0]: \"docker.io/[a\" is not a valid pattern"
    )]
    #[case::empty_placeholder(
        "harbor: h.example.com\nproxies: {docker.io: p}\nplaceholders: [\"\"]\n",
        "placeholders[0]: \"\" is empty"
    )]
    #[case::duplicate_upstream(
        "harbor: h.example.com\nproxies:\n  docker.io: a\n  docker.io: b\n",
        "proxies: upstream \"docker.io\" is listed twice"
    )]
    fn names_the_field_and_value_of_each_error(#[case] yaml: &str, #[case] expected: &str) {
        let message = error_for(yaml);
        assert!(message.contains(expected), "{message}");
    }

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

    #[test]
    fn load_names_the_file() {
        let missing = Path::new("does/not/exist.yaml");
        let message = format!("{}", load(missing).unwrap_err());
        assert!(message.contains("does/not/exist.yaml"), "{message}");
    }
}
