//! The configuration file: one YAML document, validated once.
//!
//! [`RawConfig`] is the file's shape (unknown keys are errors); [`Config::from_yaml`]
//! checks every value, reports every problem it finds (not only the first) with the
//! field and the value, and compiles the rules. The sections are checked in modules of
//! their own: the rewrite rules in `rules`, the Harbor health check in `health`.
//!
//! Pure: text in, a validated [`Config`] out. Reading the file, and the files it names
//! (`health.caFile`), is the binary's business.

mod fallback;
mod health;
mod rules;
mod verify;

use std::fmt;

use serde::Deserialize;

use crate::rules::CachedRules;

pub use fallback::{Fallback, RawFallback};
pub use health::{DEFAULT_COMPONENTS, HealthCheck, ProbeKind, ProbeTarget, RawHealth};
pub use rules::DEFAULT_PLACEHOLDERS;
pub use verify::{RawVerify, Verify};

/// The configuration file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawConfig {
    /// `host[:port]` that pods pull from.
    pub harbor: String,
    /// Upstream registry host → Harbor proxy-cache project.
    #[serde(deserialize_with = "rules::unique_keys")]
    pub proxies: std::collections::BTreeMap<String, String>,
    /// Glob patterns on the normalised name (`registry/path`) that stay upstream.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Image strings, matched exactly as written, that are never rewritten.
    #[serde(default = "rules::default_placeholders")]
    pub placeholders: Vec<String>,
    /// How to tell whether Harbor is up; without it harbor-pilot always rewrites.
    #[serde(default)]
    pub health: Option<RawHealth>,
    /// Sending pods stuck pulling from Harbor back to their upstream images.
    #[serde(default)]
    pub fallback: Option<RawFallback>,
    /// Checking that Harbor can serve an image before rewriting it.
    #[serde(default)]
    pub verify: Option<RawVerify>,
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The compiled rewrite rules, with their decisions cached.
    pub rules: CachedRules,
    /// The Harbor health check, if configured.
    pub health: Option<HealthCheck>,
    /// The fallback controller, if configured.
    pub fallback: Option<Fallback>,
    /// Verification of rewrites against Harbor, if configured.
    pub verify: Option<Verify>,
}

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Not YAML of the expected shape (this includes unknown keys and wrong types).
    #[error("not a valid configuration")]
    Syntax(#[source] yaml_serde::Error),
    /// Values that are not allowed: every one found, in file order.
    #[error("{}", Problems(.0))]
    Invalid(Vec<Invalid>),
}

/// One value that is not allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// Where in the file, e.g. `proxies["docker.io"]`.
    pub field: String,
    /// The offending value, when there is one to quote.
    pub value: Option<String>,
    /// What is wrong, and what to write instead.
    pub reason: String,
}

impl Invalid {
    /// A problem with `value` at `field`.
    pub fn new(field: impl Into<String>, value: &str, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            value: Some(value.to_owned()),
            reason: reason.into(),
        }
    }

    /// A problem with `field` as a whole (an empty list, say).
    pub fn field(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            value: None,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(value) => write!(f, "{}: {value:?} {}", self.field, self.reason),
            None => write!(f, "{}: {}", self.field, self.reason),
        }
    }
}

impl std::error::Error for Invalid {}

/// The problems on one line, `; `-separated (check-config prints one per line).
struct Problems<'a>(&'a [Invalid]);

impl fmt::Display for Problems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            problem.fmt(f)?;
        }
        Ok(())
    }
}

impl ConfigError {
    /// One problem as an error.
    pub fn invalid(field: impl Into<String>, value: &str, reason: impl Into<String>) -> Self {
        Self::Invalid(vec![Invalid::new(field, value, reason)])
    }

    /// Every problem, one per entry (a syntax error is one).
    pub fn problems(&self) -> Vec<String> {
        match self {
            ConfigError::Syntax(error) => vec![format!("{self}: {error}")],
            ConfigError::Invalid(problems) => problems.iter().map(ToString::to_string).collect(),
        }
    }
}

impl Config {
    /// Parses and validates a configuration document.
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        let raw: RawConfig = yaml_serde::from_str(text).map_err(ConfigError::Syntax)?;
        Self::try_from(raw)
    }

    /// Parses and validates a configuration split over several documents, `(name,
    /// text)`, each holding some of the top-level sections (a directory of files, as a
    /// ConfigMap with one key per section mounts it). A section in two documents is an
    /// error naming both.
    pub fn from_documents(documents: &[(String, String)]) -> Result<Self, ConfigError> {
        if let [(_, text)] = documents {
            return Self::from_yaml(text);
        }
        let mut merged = yaml_serde::Mapping::new();
        let mut owner: Vec<(String, &str)> = Vec::new();
        let mut problems = Vec::new();
        for (name, text) in documents {
            let value: yaml_serde::Value =
                yaml_serde::from_str(text).map_err(ConfigError::Syntax)?;
            let yaml_serde::Value::Mapping(sections) = value else {
                if value.is_null() {
                    continue; // an empty file
                }
                problems.push(Invalid::field(
                    name.clone(),
                    "is not a mapping of configuration sections",
                ));
                continue;
            };
            for (key, section) in sections {
                let key_text = key.as_str().unwrap_or_default().to_owned();
                if let Some((_, first)) = owner.iter().find(|(k, _)| *k == key_text) {
                    problems.push(Invalid::field(
                        key_text.clone(),
                        format!("is in both {first} and {name}; write each section once"),
                    ));
                    continue;
                }
                owner.push((key_text, name));
                merged.insert(key, section);
            }
        }
        if !problems.is_empty() {
            return Err(ConfigError::Invalid(problems));
        }
        let raw: RawConfig = yaml_serde::from_value(yaml_serde::Value::Mapping(merged))
            .map_err(ConfigError::Syntax)?;
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
            health,
            fallback,
            verify,
        } = raw;
        let mut problems = Vec::new();
        let rules = rules::build(harbor, proxies, exclude, placeholders, &mut problems);
        let health = health.and_then(|raw| health::build(raw, &mut problems));
        let fallback = fallback.and_then(|raw| fallback::build(raw, &mut problems));
        let verify = verify.and_then(|raw| verify::build(raw, &mut problems));
        match rules {
            Some(rules) if problems.is_empty() => Ok(Self {
                rules: CachedRules::new(rules),
                health,
                fallback,
                verify,
            }),
            _ => Err(ConfigError::Invalid(problems)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use std::time::Duration;

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
            Err(e) => crate::chain::one_line(&e),
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
            crate::rules::Decision::Keep(crate::rules::Keep::Placeholder)
        );
    }

    #[test]
    fn empty_placeholders_turn_the_default_off() {
        let config = Config::from_yaml(&format!("{GOOD}placeholders: []\n")).unwrap();
        assert!(matches!(
            config.rules.decide("auto"),
            crate::rules::Decision::Rewrite(_)
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
        "proxies: no upstream registry listed, so nothing would be rewritten"
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

    const HEALTH: &str = "harbor: h.example.com\nproxies: {docker.io: p}\nhealth:\n";

    #[test]
    fn reads_the_documented_health_section() {
        let yaml = format!(
            "{HEALTH}  url: https://harbor.example.com/api/v2.0/health\n  interval: 5s\n  timeout: 1s\n  \
             failureThreshold: 2\n  successThreshold: 1\n"
        );
        let health = Config::from_yaml(&yaml).unwrap().health.unwrap();
        assert_eq!(health.kind, ProbeKind::Health);
        assert_eq!(health.target.host, "harbor.example.com");
        assert_eq!(health.target.port, 443);
        assert_eq!(health.target.path_and_query, "/api/v2.0/health");
        assert_eq!(health.interval, Duration::from_secs(5));
        assert_eq!(health.timeout, Duration::from_secs(1));
        assert_eq!(health.components, DEFAULT_COMPONENTS);
        assert!(Config::from_yaml(GOOD).unwrap().health.is_none());
    }

    #[rstest]
    #[case::ping("https://harbor.example.com/api/v2.0/ping", ProbeKind::Ping, 443)]
    #[case::registry("https://harbor.svc:8443/v2/", ProbeKind::Registry, 8443)]
    #[case::registry_no_slash("http://harbor.svc/v2", ProbeKind::Registry, 80)]
    #[case::behind_a_prefix("https://h.example.com/harbor/api/v2.0/health", ProbeKind::Health, 443)]
    #[case::ipv6("https://[::1]:8443/api/v2.0/ping", ProbeKind::Ping, 8443)]
    fn tells_the_probe_kind_from_the_path(
        #[case] url: &str,
        #[case] kind: ProbeKind,
        #[case] port: u16,
    ) {
        let health = Config::from_yaml(&format!("{HEALTH}  url: \"{url}\"\n"))
            .unwrap()
            .health
            .unwrap();
        assert_eq!((health.kind, health.target.port), (kind, port));
        assert!(!health.target.host.starts_with('['));
    }

    #[rstest]
    #[case::no_url("  interval: 5s\n", "missing field `url`")]
    #[case::credentials(
        "  url: https://admin:Harbor12345@h.example.com/api/v2.0/health\n",
        "health.url: \"https://***@h.example.com/api/v2.0/health\" must not hold credentials"
    )]
    #[case::unknown_key("  url: https://h/v2/\n  intervall: 5s\n", "unknown field `intervall`")]
    #[case::other_path(
        "  url: https://h.example.com/api/v2.0/projects\n",
        "health.url: \"https://h.example.com/api/v2.0/projects\" must end in /api/v2.0/health"
    )]
    #[case::no_scheme(
        "  url: h.example.com/v2/\n",
        "health.url: \"h.example.com/v2/\" must start with https://"
    )]
    #[case::bad_interval(
        "  url: https://h/v2/\n  interval: 5\n",
        "health.interval: \"5\" is not a positive duration"
    )]
    #[case::zero_timeout(
        "  url: https://h/v2/\n  timeout: 0s\n",
        "health.timeout: \"0s\" is not a positive duration"
    )]
    #[case::timeout_over_interval(
        "  url: https://h/v2/\n  interval: 1s\n  timeout: 2s\n",
        "health.timeout: \"2s\" is longer than health.interval (1s)"
    )]
    #[case::zero_threshold(
        "  url: https://h/v2/\n  failureThreshold: 0\n",
        "health.failureThreshold: \"0\" must be at least 1"
    )]
    #[case::no_components(
        "  url: https://h/api/v2.0/health\n  components: []\n",
        "health.components: no component listed"
    )]
    #[case::insecure_and_ca(
        "  url: https://h/v2/\n  caFile: ca.pem\n  insecureSkipTlsVerify: true\n",
        "health.insecureSkipTlsVerify: \"true\" contradicts health.caFile"
    )]
    fn names_the_health_field_of_each_error(#[case] section: &str, #[case] expected: &str) {
        let message = error_for(&format!("{HEALTH}{section}"));
        assert!(message.contains(expected), "{message}");
    }

    #[test]
    fn reports_every_problem_not_only_the_first() {
        let error = Config::from_yaml(
            "harbor: Harbor\nproxies: {docker.io: Hub, ghcr.io: ok}\nexclude: [ubuntu]\n\
             health:\n  url: https://h/api/v2.0/projects\n  interval: 5\n",
        )
        .unwrap_err();
        let problems = error.problems();
        assert_eq!(problems.len(), 5, "{problems:#?}");
        assert!(
            problems[0].starts_with("harbor: \"Harbor\""),
            "{problems:#?}"
        );
        assert!(
            problems[1].starts_with("proxies[\"docker.io\"]: \"Hub\""),
            "{problems:#?}"
        );
        assert!(
            problems[2].starts_with("exclude[0]: \"ubuntu\""),
            "{problems:#?}"
        );
        assert!(problems[3].starts_with("health.url: "), "{problems:#?}");
        assert!(
            problems[4].starts_with("health.interval: \"5\""),
            "{problems:#?}"
        );
    }

    #[test]
    fn a_duplicate_key_is_named_once() {
        let message =
            error_for("harbor: h.example.com\nproxies:\n  docker.io: a\n  docker.io: b\n");
        assert!(!message.contains("proxies: proxies"), "{message}");
    }

    #[test]
    fn sections_may_come_from_several_documents() {
        let documents = [
            ("config.yaml".to_owned(), GOOD.to_owned()),
            (
                "fallback.yaml".to_owned(),
                "fallback:\n  after: 45s\n".to_owned(),
            ),
            ("empty.yaml".to_owned(), String::new()),
        ];
        let config = Config::from_documents(&documents).unwrap();
        assert_eq!(
            config.fallback,
            Some(Fallback {
                after: Duration::from_secs(45)
            })
        );
        assert_eq!(config.rules.harbor(), "harbor.example.com");
    }

    #[test]
    fn a_section_in_two_documents_names_both() {
        let documents = [
            ("a.yaml".to_owned(), GOOD.to_owned()),
            (
                "b.yaml".to_owned(),
                "harbor: other.example.com\n".to_owned(),
            ),
        ];
        let problems = Config::from_documents(&documents).unwrap_err().problems();
        assert_eq!(
            problems,
            ["harbor: is in both a.yaml and b.yaml; write each section once"]
        );
    }

    #[rstest]
    #[case::default("fallback: {}\n", Some(30))]
    #[case::set("fallback:\n  after: 2m\n", Some(120))]
    #[case::absent("", None)]
    fn reads_the_fallback_section(#[case] section: &str, #[case] seconds: Option<u64>) {
        let config = Config::from_yaml(&format!("{GOOD}{section}")).unwrap();
        assert_eq!(
            config.fallback.map(|f| f.after),
            seconds.map(Duration::from_secs)
        );
    }

    #[test]
    fn names_a_bad_fallback_duration() {
        let message = error_for(&format!("{GOOD}fallback:\n  after: soon\n"));
        assert!(
            message.contains("fallback.after: \"soon\" is not a positive duration"),
            "{message}"
        );
    }

    #[test]
    fn reads_the_verify_section_with_its_defaults() {
        let verify = Config::from_yaml(&format!("{GOOD}verify: {{}}\n"))
            .unwrap()
            .verify
            .unwrap();
        assert_eq!(verify.budget, Duration::from_millis(250));
        assert_eq!(verify.ttl, Duration::from_secs(3600));
        assert_eq!(verify.failure_ttl, Duration::from_secs(60));
        let message = error_for(&format!("{GOOD}verify:\n  budget: 5s\n  failureTtl: x\n"));
        assert!(
            message.contains("verify.budget: \"5s\" is longer than 2s"),
            "{message}"
        );
        assert!(message.contains("verify.failureTtl: \"x\""), "{message}");
    }
}
