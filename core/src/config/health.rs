//! The `health` section: how harbor-pilot tells whether Harbor is up, so it can fail
//! open. Checked here; the prober (in the binary) runs it.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::Invalid;
use crate::units::parse_duration;

/// The components that serve pulls; Trivy, the job service or the portal being
/// unhealthy must not stop rewriting.
pub const DEFAULT_COMPONENTS: &[&str] = &["core", "registry", "database", "redis"];

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
fn default_components() -> Vec<String> {
    DEFAULT_COMPONENTS.iter().map(|s| (*s).to_owned()).collect()
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
    /// A file of CA certificates (PEM) to trust besides the public roots; the binary
    /// reads and checks it when it loads the configuration.
    pub ca_file: Option<PathBuf>,
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

/// A duration field: positive, written like `500ms`, `5s` or `1m`.
pub(crate) fn positive_duration(
    field: &str,
    text: &str,
    problems: &mut Vec<Invalid>,
) -> Option<Duration> {
    let parsed = parse_duration(text).ok().filter(|d| !d.is_zero());
    if parsed.is_none() {
        problems.push(Invalid::new(
            field,
            text,
            "is not a positive duration like 500ms, 5s or 1m",
        ));
    }
    parsed
}

/// Checks the section, adding every problem to `problems`.
pub(super) fn build(raw: RawHealth, problems: &mut Vec<Invalid>) -> Option<HealthCheck> {
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
    let before = problems.len();
    let target = parse_probe_url(&url)
        .map_err(|reason| {
            problems.push(Invalid::new(
                "health.url",
                &crate::redact::credentials(&url),
                reason,
            ));
        })
        .ok();
    let interval_value = positive_duration("health.interval", &interval, problems);
    let timeout_value = positive_duration("health.timeout", &timeout, problems);
    if let (Some(interval_value), Some(timeout_value)) = (interval_value, timeout_value)
        && timeout_value > interval_value
    {
        problems.push(Invalid::new(
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
            problems.push(Invalid::new(field, "0", "must be at least 1"));
        }
    }
    if target
        .as_ref()
        .is_some_and(|(_, kind)| *kind == ProbeKind::Health)
        && components.is_empty()
    {
        problems.push(Invalid::field(
            "health.components",
            "no component listed; list the /api/v2.0/health components that must be healthy",
        ));
    }
    for (index, component) in components.iter().enumerate() {
        if component.is_empty() {
            problems.push(Invalid::new(
                format!("health.components[{index}]"),
                "",
                "is empty",
            ));
        }
    }
    if insecure_skip_tls_verify && ca_file.is_some() {
        problems.push(Invalid::new(
            "health.insecureSkipTlsVerify",
            "true",
            "contradicts health.caFile; use one or the other",
        ));
    }
    if problems.len() > before {
        return None;
    }
    let ((target, kind), interval, timeout) = (target?, interval_value?, timeout_value?);
    Some(HealthCheck {
        target,
        kind,
        interval,
        timeout,
        failure_threshold,
        success_threshold,
        ca_file,
        insecure_skip_tls_verify,
        components,
    })
}

/// Splits a probe URL and tells its kind from the path.
fn parse_probe_url(url: &str) -> Result<(ProbeTarget, ProbeKind), String> {
    let target = parse_https_url(url)?;
    let path = target.path_and_query.split('?').next().unwrap_or_default();
    let kind = if path.ends_with("/api/v2.0/health") {
        ProbeKind::Health
    } else if path.ends_with("/api/v2.0/ping") {
        ProbeKind::Ping
    } else if path.ends_with("/v2/") || path.ends_with("/v2") {
        ProbeKind::Registry
    } else {
        return Err("must end in /api/v2.0/health, /api/v2.0/ping or /v2/ (the path decides what is probed)".into());
    };
    Ok((target, kind))
}

/// Splits an `https://` (or `http://`) URL without credentials; the error is the reason.
pub(crate) fn parse_https_url(url: &str) -> Result<ProbeTarget, String> {
    if !url.contains("://") {
        return Err("must start with https:// (or http://)".into());
    }
    let uri: http::Uri = url.parse().map_err(|e| format!("is not a URL: {e}"))?;
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
    Ok(ProbeTarget {
        url: url.to_owned(),
        tls,
        host,
        port: uri.port_u16().unwrap_or(if tls { 443 } else { 80 }),
        path_and_query: uri
            .path_and_query()
            .map_or_else(|| uri.path().to_owned(), |p| p.as_str().to_owned()),
    })
}
