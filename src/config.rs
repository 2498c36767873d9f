//! The configuration file: one YAML document, validated once at load.
//!
//! [`RawConfig`] is the file's shape (unknown keys are errors); [`Config::from_yaml`]
//! checks every value and compiles the [`RuleSet`]. Errors name the field and the value.
//! [`load`] is the only function here that does I/O.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::str::FromStr as _;
use std::time::Duration;

use serde::Deserialize;

use crate::reference::{DOCKER_HUB, ImageRef, is_registry_host};
use crate::rules::{self, RuleSet};
use crate::units::parse_duration;

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
    /// How to tell whether Harbor is up; without it harbor-pilot always rewrites.
    #[serde(default)]
    pub health: Option<RawHealth>,
}

/// The `health` section as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawHealth {
    /// Harbor's `/api/v2.0/health`, `/api/v2.0/ping`, or the registry's `/v2/`.
    pub url: String,
    /// Time between probes.
    #[serde(default = "default_interval")]
    pub interval: String,
    /// Longest one probe may take.
    #[serde(default = "default_timeout")]
    pub timeout: String,
    /// Consecutive failures before Harbor counts as down.
    #[serde(default = "default_failure_threshold")]
    pub failure_threshold: u32,
    /// Consecutive successes before a down Harbor counts as up again.
    #[serde(default = "default_success_threshold")]
    pub success_threshold: u32,
    /// PEM CA certificates to trust for Harbor, besides the public (Mozilla) roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Skip verifying Harbor's certificate (lab setups only).
    #[serde(default)]
    pub insecure_skip_tls_verify: bool,
    /// `/api/v2.0/health` components that must be healthy.
    #[serde(default = "default_components")]
    pub components: Vec<String>,
}

fn default_interval() -> String {
    "5s".to_owned()
}
fn default_timeout() -> String {
    "1s".to_owned()
}
fn default_failure_threshold() -> u32 {
    2
}
fn default_success_threshold() -> u32 {
    1
}
/// The components that serve pulls; Trivy, the job service or the portal being
/// unhealthy must not stop rewriting.
pub const DEFAULT_COMPONENTS: &[&str] = &["core", "registry", "database", "redis"];
fn default_components() -> Vec<String> {
    DEFAULT_COMPONENTS.iter().map(|s| (*s).to_owned()).collect()
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
    /// The Harbor health check, if configured.
    pub health: Option<HealthCheck>,
}

/// What the Harbor prober checks, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// Where to probe.
    pub target: ProbeTarget,
    /// What the answer must look like, from the URL's path.
    pub kind: ProbeKind,
    /// Time between probes.
    pub interval: Duration,
    /// Longest one probe may take (DNS, connect, TLS, answer).
    pub timeout: Duration,
    /// Consecutive failures before Harbor counts as down.
    pub failure_threshold: u32,
    /// Consecutive successes before it counts as up again.
    pub success_threshold: u32,
    /// A file of CA certificates (PEM) to trust besides the public roots.
    pub ca_file: Option<PathBuf>,
    /// That file's contents, read and checked by [`load`].
    pub ca_pem: Option<Vec<u8>>,
    /// Skip certificate verification.
    pub insecure_skip_tls_verify: bool,
    /// Components of `/api/v2.0/health` that must be healthy.
    pub components: Vec<String>,
}

/// An HTTP(S) endpoint, split for connecting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeTarget {
    /// The URL as configured, for messages.
    pub url: String,
    /// `https` (else `http`).
    pub tls: bool,
    /// Host name or IP literal (IPv6 without brackets).
    pub host: String,
    /// Port.
    pub port: u16,
    /// Path and query.
    pub path_and_query: String,
}

/// The kind of endpoint, which decides what counts as healthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKind {
    /// Harbor's `/api/v2.0/health`: 200 and every required component `healthy`.
    Health,
    /// Harbor's `/api/v2.0/ping`: 200.
    Ping,
    /// The registry API's `/v2/`: 200, or 401 (asking for a token is being up).
    Registry,
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
    let in_file = |source| ConfigError::File {
        path: path.to_owned(),
        source: Box::new(source),
    };
    let mut config = Config::from_yaml(&text).map_err(in_file)?;
    if let Some(health) = &mut config.health {
        health.read_ca_file().map_err(in_file)?;
    }
    Ok(config)
}

impl HealthCheck {
    /// Reads `ca_file` into `ca_pem`, checking that it holds certificates.
    fn read_ca_file(&mut self) -> Result<(), ConfigError> {
        let Some(path) = &self.ca_file else {
            return Ok(());
        };
        let shown = path.display().to_string();
        let pem = std::fs::read(path).map_err(|e| {
            ConfigError::invalid("health.caFile", &shown, format!("cannot be read: {e}"))
        })?;
        use rustls_pki_types::pem::PemObject as _;
        let certificates = rustls_pki_types::CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                ConfigError::invalid("health.caFile", &shown, format!("is not PEM: {e}"))
            })?;
        if certificates.is_empty() {
            return Err(ConfigError::invalid(
                "health.caFile",
                &shown,
                "holds no PEM certificate",
            ));
        }
        self.ca_pem = Some(pem);
        Ok(())
    }
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
            health,
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
        let health = health.map(HealthCheck::try_from).transpose()?;
        Ok(Self { rules, health })
    }
}

impl TryFrom<RawHealth> for HealthCheck {
    type Error = ConfigError;

    fn try_from(raw: RawHealth) -> Result<Self, Self::Error> {
        let RawHealth {
            url,
            interval,
            timeout,
            failure_threshold,
            success_threshold,
            ca_file,
            insecure_skip_tls_verify,
            components,
        } = raw;
        let (target, kind) = parse_probe_url(&url).map_err(|reason| {
            ConfigError::invalid("health.url", &crate::redact::credentials(&url), reason)
        })?;
        let duration = |field: &str, text: &str| {
            parse_duration(text)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    ConfigError::invalid(
                        field,
                        text,
                        "is not a positive duration like 500ms, 5s or 1m",
                    )
                })
        };
        let interval_value = duration("health.interval", &interval)?;
        let timeout_value = duration("health.timeout", &timeout)?;
        if timeout_value > interval_value {
            return Err(ConfigError::invalid(
                "health.timeout",
                &timeout,
                format!(
                    "is longer than health.interval ({interval}); a probe must end before the next starts"
                ),
            ));
        }
        for (field, value) in [
            ("health.failureThreshold", failure_threshold),
            ("health.successThreshold", success_threshold),
        ] {
            if value == 0 {
                return Err(ConfigError::invalid(field, "0", "must be at least 1"));
            }
        }
        if kind == ProbeKind::Health && components.is_empty() {
            return Err(ConfigError::invalid(
                "health.components",
                "",
                "is empty; list the /api/v2.0/health components that must be healthy",
            ));
        }
        if let Some(index) = components.iter().position(String::is_empty) {
            return Err(ConfigError::invalid(
                format!("health.components[{index}]"),
                "",
                "is empty",
            ));
        }
        if insecure_skip_tls_verify && ca_file.is_some() {
            return Err(ConfigError::invalid(
                "health.insecureSkipTlsVerify",
                "true",
                "contradicts health.caFile; use one or the other",
            ));
        }
        Ok(Self {
            target,
            kind,
            interval: interval_value,
            timeout: timeout_value,
            failure_threshold,
            success_threshold,
            ca_file,
            // Read by `load`, which does the file I/O.
            ca_pem: None,
            insecure_skip_tls_verify,
            components,
        })
    }
}

/// Splits a probe URL and tells its kind from the path.
fn parse_probe_url(url: &str) -> Result<(ProbeTarget, ProbeKind), String> {
    if !url.contains("://") {
        return Err("must start with https:// (or http://)".into());
    }
    let uri = axum::http::Uri::from_str(url).map_err(|e| format!("is not a URL: {e}"))?;
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(
            "must not hold credentials: the health endpoints need none, and the URL is logged"
                .into(),
        );
    }
    let tls = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err("must start with https:// (or http://)".into()),
    };
    let host = uri
        .host()
        .filter(|h| !h.is_empty())
        .ok_or("has no host")?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let path = uri.path();
    let kind = if path.ends_with("/api/v2.0/health") {
        ProbeKind::Health
    } else if path.ends_with("/api/v2.0/ping") {
        ProbeKind::Ping
    } else if path.ends_with("/v2/") || path.ends_with("/v2") {
        ProbeKind::Registry
    } else {
        return Err("must end in /api/v2.0/health, /api/v2.0/ping or /v2/ (the path decides what is probed)".into());
    };
    let target = ProbeTarget {
        url: url.to_owned(),
        tls,
        host,
        port: uri.port_u16().unwrap_or(if tls { 443 } else { 80 }),
        path_and_query: uri
            .path_and_query()
            .map_or_else(|| path.to_owned(), |p| p.as_str().to_owned()),
    };
    Ok((target, kind))
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
        "health.components: \"\" is empty"
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
    fn load_reads_and_checks_the_ca_file() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.yaml");
        let ca = dir.path().join("ca.pem");
        std::fs::write(
            &config,
            format!("{HEALTH}  url: https://h/v2/\n  caFile: {}\n", ca.display()),
        )
        .unwrap();
        let message = format!("{:#}", anyhow::Error::from(load(&config).unwrap_err()));
        assert!(
            message.contains("health.caFile") && message.contains("cannot be read"),
            "{message}"
        );
        std::fs::write(&ca, "no certificates here").unwrap();
        let message = format!("{:#}", anyhow::Error::from(load(&config).unwrap_err()));
        assert!(message.contains("holds no PEM certificate"), "{message}");
        let dev =
            crate::tls::ensure_dev_certs(&dir.path().join("dev"), &crate::tls::provider()).unwrap();
        std::fs::copy(&dev.ca, &ca).unwrap();
        let health = load(&config).unwrap().health.unwrap();
        assert!(
            health
                .ca_pem
                .unwrap()
                .starts_with(b"-----BEGIN CERTIFICATE-----")
        );
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
