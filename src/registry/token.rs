//! The registry token flow (distribution's "token authentication"): the `Bearer`
//! challenge of a `401`, the anonymous token asked from its realm, and the tokens kept
//! until shortly before they expire.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A token is not used in its last seconds: a request sent just before expiry would be
/// refused by the time it arrives.
const EXPIRY_MARGIN: Duration = Duration::from_secs(10);
/// What a token server that says nothing about expiry means (the distribution spec).
const DEFAULT_EXPIRY: Duration = Duration::from_secs(60);
/// Tokens kept at most (one per repository pulled from).
const MAX_TOKENS: usize = 1024;

/// `WWW-Authenticate: Bearer realm="…",service="…",scope="…"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Challenge {
    pub(super) realm: String,
    service: Option<String>,
}

impl Challenge {
    /// Reads a `Bearer` challenge; `None` for any other scheme (`Basic` needs
    /// credentials harbor-pilot does not have).
    pub(super) fn parse(header: &str) -> Option<Self> {
        let (scheme, params) = header.trim().split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let mut realm = None;
        let mut service = None;
        for (key, value) in parameters(params) {
            match key.to_ascii_lowercase().as_str() {
                "realm" => realm = Some(value),
                "service" => service = Some(value),
                _ => {}
            }
        }
        Some(Self {
            realm: realm?,
            service,
        })
    }

    /// The realm's URL asking for `scope`.
    pub(super) fn token_url(&self, scope: &str) -> String {
        let mut url = self.realm.clone();
        url.push(if url.contains('?') { '&' } else { '?' });
        if let Some(service) = &self.service {
            url.push_str("service=");
            url.push_str(&encode(service));
            url.push('&');
        }
        url.push_str("scope=");
        url.push_str(&encode(scope));
        url
    }
}

/// `key="value", key=value` pairs; quoted values may hold commas.
fn parameters(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key.trim().trim_start_matches(',').trim().to_owned();
        let after = after.trim_start();
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.find('"') {
                Some(end) => (quoted[..end].to_owned(), &quoted[end + 1..]),
                None => (quoted.to_owned(), ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (after[..end].trim().to_owned(), &after[end..]),
                None => (after.trim().to_owned(), ""),
            }
        };
        out.push((key, value));
        rest = remaining.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

/// Percent-encoding for a query value (RFC 3986 unreserved characters kept).
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A token server's answer.
#[derive(Debug, serde::Deserialize)]
pub(super) struct Answer {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// Tokens by (registry host, scope).
#[derive(Debug, Default)]
pub(super) struct Tokens(Mutex<HashMap<(String, String), (String, Instant)>>);

impl Tokens {
    /// The token for `scope` at `url`'s host, while it is good.
    pub(super) fn cached(&self, url: &str, scope: &str) -> Option<String> {
        let tokens = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let (token, until) = tokens.get(&(host(url), scope.to_owned()))?;
        (Instant::now() < *until).then(|| token.clone())
    }

    /// Keeps a fresh token; returns it.
    pub(super) fn store(&self, url: &str, scope: &str, answer: Answer) -> String {
        let token = answer.token.or(answer.access_token).unwrap_or_default();
        let lifetime = answer
            .expires_in
            .map_or(DEFAULT_EXPIRY, Duration::from_secs)
            .saturating_sub(EXPIRY_MARGIN);
        let now = Instant::now();
        let mut tokens = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if tokens.len() >= MAX_TOKENS {
            tokens.retain(|_, (_, until)| *until > now);
            if tokens.len() >= MAX_TOKENS {
                tokens.clear();
            }
        }
        tokens.insert(
            (host(url), scope.to_owned()),
            (token.clone(), now + lifetime),
        );
        token
    }
}

/// `host[:port]` of an `https://host[:port]/…` URL.
fn host(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    rest.split('/').next().unwrap_or_default().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_harbors_challenge() {
        let challenge = Challenge::parse(
            r#"Bearer realm="https://harbor.example.com/service/token",service="harbor-registry",scope="repository:p/a:pull,push""#,
        )
        .unwrap();
        assert_eq!(challenge.realm, "https://harbor.example.com/service/token");
        assert_eq!(
            challenge.token_url("repository:docker-hub-proxy/library/nginx:pull"),
            "https://harbor.example.com/service/token?service=harbor-registry&\
             scope=repository%3Adocker-hub-proxy%2Flibrary%2Fnginx%3Apull"
        );
        assert!(Challenge::parse(r#"Basic realm="Harbor""#).is_none());
        assert!(Challenge::parse("Bearer service=x").is_none());
    }

    #[test]
    fn keeps_a_token_until_shortly_before_it_expires() {
        let tokens = Tokens::default();
        let url = "https://h.example.com/v2/p/a/manifests/1";
        let answer = |expires_in| Answer {
            token: Some("t".to_owned()),
            access_token: None,
            expires_in: Some(expires_in),
        };
        assert_eq!(tokens.store(url, "s", answer(300)), "t");
        assert_eq!(tokens.cached(url, "s").as_deref(), Some("t"));
        assert_eq!(tokens.cached(url, "other"), None);
        tokens.store(url, "short", answer(5));
        assert_eq!(tokens.cached(url, "short"), None, "within the margin");
    }
}
