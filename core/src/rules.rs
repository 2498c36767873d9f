//! The rewrite rule: which images go through which Harbor proxy-cache project.
//!
//! An image whose normalised registry is a configured upstream becomes
//! `<harbor>/<project>/<path>[:tag][@digest]`, with the path as the kubelet normalises it
//! and the tag and digest exactly as written. Everything else is kept byte for byte, and
//! [`Keep`] says why. Reasons that come from the request rather than from the image
//! (an unchanged image in an UPDATE, an opted-out pod, Harbor being down) are not the
//! rules' business: see [`crate::verdict`].
//!
//! Pure: [`RuleSet`] is plain data built from a validated [`crate::config::Config`], and
//! [`RuleSet::decide`] a function of its input. The webhook asks through
//! [`CachedRules`] (module `cache`), which remembers answers per image string.

mod cache;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use globset::{Glob, GlobSet, GlobSetBuilder};

use crate::reference::{ImageRef, MAX_PATH_LEN, ParseError};

pub use cache::CachedRules;

/// The compiled rewrite rules.
#[derive(Debug, Clone)]
pub struct RuleSet {
    harbor: String,
    /// The configured upstream → project pairs; [`Rewrite`] and the cache refer to
    /// them by position.
    proxies: Vec<Proxy>,
    /// Upstream registry host → position in `proxies`.
    by_upstream: HashMap<String, usize>,
    exclude: GlobSet,
    exclude_patterns: Vec<String>,
    placeholders: Vec<String>,
}

/// One `proxies` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proxy {
    /// The upstream registry host as configured (`docker.io`); bounded, so usable as a
    /// metric label.
    pub upstream: String,
    /// The Harbor project it maps to.
    pub project: String,
}

/// What happens to one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision<'r> {
    /// Pull it through Harbor.
    Rewrite(Rewrite<'r>),
    /// Leave it as written.
    Keep(Keep<'r>),
}

/// A rewritten image and the rule that produced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewrite<'r> {
    /// The image to pull instead. Shared with the rules' memory of past decisions,
    /// so a remembered decision costs no copy of the string.
    pub image: Arc<str>,
    /// The configured upstream key that matched (`docker.io`); bounded, so usable as a
    /// metric label.
    pub upstream: &'r str,
    /// The Harbor project the upstream maps to.
    pub project: &'r str,
}

/// Why the rules leave an image as written. [`Keep::as_str`] gives the metric label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Keep<'r> {
    /// Listed under `placeholders` (Istio's `auto`): another webhook fills it in later.
    Placeholder,
    /// Not an image reference; the kubelet will report it.
    Unparsable(ParseError),
    /// Already pulled from the Harbor host, so rewriting again would be wrong.
    AlreadyOnHarbor,
    /// Its registry has no proxy project.
    NotProxied {
        /// The image's normalised registry (empty when it has none); shared like
        /// [`Rewrite::image`].
        registry: Arc<str>,
    },
    /// Matches an `exclude` pattern.
    Excluded {
        /// The pattern as configured.
        pattern: &'r str,
    },
    /// `<project>/<path>` would exceed the 255 characters a repository name may have.
    NameTooLong,
}

impl Keep<'_> {
    /// A stable, bounded label value for metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            Keep::Placeholder => "placeholder",
            Keep::Unparsable(_) => "unparsable",
            Keep::AlreadyOnHarbor => "already_on_harbor",
            Keep::NotProxied { .. } => "not_proxied",
            Keep::Excluded { .. } => "excluded",
            Keep::NameTooLong => "name_too_long",
        }
    }

    /// Every label value [`Keep::as_str`] can return (a test checks the list is
    /// complete).
    pub const LABELS: [&'static str; 6] = [
        "placeholder",
        "unparsable",
        "already_on_harbor",
        "not_proxied",
        "excluded",
        "name_too_long",
    ];
}

impl fmt::Display for Keep<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Keep::Placeholder => f.write_str("listed in placeholders: another webhook replaces it"),
            Keep::Unparsable(e) => write!(f, "not an image reference: {e}"),
            Keep::AlreadyOnHarbor => f.write_str("already pulled from the harbor host"),
            Keep::NotProxied { registry } if registry.is_empty() => {
                f.write_str("no registry host (the first component is not a valid host)")
            }
            Keep::NotProxied { registry } => write!(f, "registry {registry} has no proxy project"),
            Keep::Excluded { pattern } => write!(f, "matches exclude pattern {pattern}"),
            Keep::NameTooLong => {
                f.write_str("the rewritten repository name would be longer than 255 characters")
            }
        }
    }
}

impl Decision<'_> {
    /// The image to pull instead, if it is a rewrite.
    pub fn rewrite_image(&self) -> Option<&str> {
        match self {
            Decision::Rewrite(rewrite) => Some(&rewrite.image),
            Decision::Keep(_) => None,
        }
    }
}

impl fmt::Display for Decision<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decision::Rewrite(r) => write!(
                f,
                "{} is proxied by harbor project {}",
                r.upstream, r.project
            ),
            Decision::Keep(keep) => keep.fmt(f),
        }
    }
}

impl RuleSet {
    /// Builds a rule set from already validated parts; see [`crate::config`] for the
    /// checks. `exclude` holds the compiled `exclude_patterns`, in the same order.
    pub fn new(
        harbor: String,
        proxies: Vec<Proxy>,
        exclude: Vec<Glob>,
        exclude_patterns: Vec<String>,
        placeholders: Vec<String>,
    ) -> Result<Self, globset::Error> {
        let mut set = GlobSetBuilder::new();
        for glob in exclude {
            set.add(glob);
        }
        let by_upstream = proxies
            .iter()
            .enumerate()
            .map(|(index, proxy)| (proxy.upstream.clone(), index))
            .collect();
        Ok(Self {
            harbor,
            proxies,
            by_upstream,
            exclude: set.build()?,
            exclude_patterns,
            placeholders,
        })
    }

    /// The Harbor host pods pull from.
    pub fn harbor(&self) -> &str {
        &self.harbor
    }

    /// Upstream registry → project, in the order configured (sorted by upstream).
    pub fn proxies(&self) -> impl Iterator<Item = (&str, &str)> {
        self.proxies
            .iter()
            .map(|p| (p.upstream.as_str(), p.project.as_str()))
    }

    /// Decides what `image` becomes.
    pub fn decide(&self, image: &str) -> Decision<'_> {
        self.resolve(&self.answer(image))
    }

    /// Decides what an already parsed image becomes (placeholders are matched on the raw
    /// string, so they are not considered here).
    pub fn decide_parsed(&self, reference: &ImageRef) -> Decision<'_> {
        self.resolve(&self.answer_parsed(reference))
    }

    /// The decision with the rule set's parts named by position: what the cache keeps.
    fn answer(&self, image: &str) -> Answer {
        if self.placeholders.iter().any(|p| p == image) {
            return Answer::Keep(Keep::Placeholder);
        }
        match ImageRef::parse(image) {
            Ok(reference) => self.answer_parsed(&reference),
            Err(error) => Answer::Keep(Keep::Unparsable(error)),
        }
    }

    fn answer_parsed(&self, reference: &ImageRef) -> Answer {
        let domain = reference.domain();
        if domain == self.harbor {
            return Answer::Keep(Keep::AlreadyOnHarbor);
        }
        let Some(&proxy) = self.by_upstream.get(domain) else {
            return Answer::Keep(Keep::NotProxied {
                registry: domain.into(),
            });
        };
        if let Some(pattern) = self.excluding_pattern(reference) {
            return Answer::Excluded { pattern };
        }
        let project = &self.proxies[proxy].project;
        // The project becomes the first path component; the Go grammar caps the path.
        if project.len() + 1 + reference.path().len() > MAX_PATH_LEN {
            return Answer::Keep(Keep::NameTooLong);
        }
        let mut image =
            String::with_capacity(self.harbor.len() + project.len() + reference.path().len() + 80);
        image.push_str(&self.harbor);
        image.push('/');
        image.push_str(project);
        image.push('/');
        image.push_str(reference.path());
        reference.write_suffix(&mut image);
        Answer::Rewrite {
            image: image.into(),
            proxy,
        }
    }

    /// The decision an answer of this rule set stands for. Positions index this set's
    /// own lists, which never change after construction.
    fn resolve(&self, answer: &Answer) -> Decision<'_> {
        match answer {
            Answer::Rewrite { image, proxy } => {
                let Proxy { upstream, project } = &self.proxies[*proxy];
                Decision::Rewrite(Rewrite {
                    image: image.clone(),
                    upstream,
                    project,
                })
            }
            Answer::Excluded { pattern } => Decision::Keep(Keep::Excluded {
                pattern: &self.exclude_patterns[*pattern],
            }),
            Answer::Keep(keep) => Decision::Keep(keep.clone()),
        }
    }

    /// The position of the first `exclude` pattern matching the normalised name.
    fn excluding_pattern(&self, reference: &ImageRef) -> Option<usize> {
        if self.exclude_patterns.is_empty() {
            return None;
        }
        let name = format!("{}/{}", reference.domain(), reference.path());
        self.exclude.matches(&name).into_iter().next()
    }
}

/// A [`Decision`] without borrows: the parts of the rule set by position.
#[derive(Debug, Clone)]
enum Answer {
    Rewrite {
        image: Arc<str>,
        proxy: usize,
    },
    Excluded {
        pattern: usize,
    },
    /// Never `Keep::Excluded`, which is `Excluded` above.
    Keep(Keep<'static>),
}

/// Compiles an `exclude` pattern: a glob on `registry/path` where `*` stays within one
/// path segment and `**` spans several.
pub(crate) fn compile_pattern(pattern: &str) -> Result<Glob, globset::Error> {
    globset::GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    const DIGEST: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn rules(exclude: &[&str]) -> RuleSet {
        let proxies = [
            ("docker.io", "docker-hub-proxy"),
            ("ghcr.io", "ghcr-proxy"),
            ("quay.io", "quay-proxy"),
            ("registry.k8s.io", "registry-k8s-proxy"),
            ("registry-1.docker.io", "docker-hub-proxy"),
        ]
        .into_iter()
        .map(|(u, p)| Proxy {
            upstream: u.to_owned(),
            project: p.to_owned(),
        })
        .collect();
        RuleSet::new(
            "harbor.example.com".to_owned(),
            proxies,
            exclude
                .iter()
                .map(|p| compile_pattern(p).unwrap())
                .collect(),
            exclude.iter().map(|p| (*p).to_owned()).collect(),
            vec!["auto".to_owned()],
        )
        .unwrap()
    }

    fn rewritten(image: &str) -> String {
        match rules(&[]).decide(image) {
            Decision::Rewrite(r) => r.image.to_string(),
            other => panic!("{image}: {other:?}"),
        }
    }

    fn kept(image: &str) -> String {
        match rules(&[]).decide(image) {
            Decision::Keep(keep) => keep.as_str().to_owned(),
            other => panic!("{image}: {other:?}"),
        }
    }

    #[rstest]
    #[case::short_docker_hub_name(
        "nginx:alpine",
        "harbor.example.com/docker-hub-proxy/library/nginx:alpine"
    )]
    #[case::untagged_name_gets_no_latest(
        "nginx",
        "harbor.example.com/docker-hub-proxy/library/nginx"
    )]
    #[case::explicit_latest_kept(
        "nginx:latest",
        "harbor.example.com/docker-hub-proxy/library/nginx:latest"
    )]
    #[case::hub_user_repo(
        "bitnami/redis:7.2",
        "harbor.example.com/docker-hub-proxy/bitnami/redis:7.2"
    )]
    #[case::explicit_docker_io(
        "docker.io/library/alpine",
        "harbor.example.com/docker-hub-proxy/library/alpine"
    )]
    #[case::legacy_index_host(
        "index.docker.io/nginx",
        "harbor.example.com/docker-hub-proxy/library/nginx"
    )]
    #[case::ghcr(
        "ghcr.io/dexidp/dex:v2.45.1",
        "harbor.example.com/ghcr-proxy/dexidp/dex:v2.45.1"
    )]
    #[case::quay_deep_path("quay.io/a/b/c:1", "harbor.example.com/quay-proxy/a/b/c:1")]
    #[case::registry_k8s(
        "registry.k8s.io/pause:3.10",
        "harbor.example.com/registry-k8s-proxy/pause:3.10"
    )]
    #[case::hub_alias_keeps_path_as_written(
        "registry-1.docker.io/nginx:1",
        "harbor.example.com/docker-hub-proxy/nginx:1"
    )]
    fn rewrites_proxied_registries(#[case] image: &str, #[case] expected: &str) {
        assert_eq!(rewritten(image), expected);
    }

    #[test]
    fn keeps_tag_and_digest() {
        assert_eq!(
            rewritten(&format!("nginx:1.25@{DIGEST}")),
            format!("harbor.example.com/docker-hub-proxy/library/nginx:1.25@{DIGEST}")
        );
    }

    #[test]
    fn keeps_digest_only() {
        assert_eq!(
            rewritten(&format!("ghcr.io/o/r@{DIGEST}")),
            format!("harbor.example.com/ghcr-proxy/o/r@{DIGEST}")
        );
    }

    #[rstest]
    #[case::other_registry("gcr.io/google-samples/app:v1", "not_proxied")]
    #[case::host_with_port_is_not_docker_hub("host:5000/app", "not_proxied")]
    #[case::localhost("localhost:5000/app", "not_proxied")]
    #[case::already_on_harbor(
        "harbor.example.com/docker-hub-proxy/library/nginx:alpine",
        "already_on_harbor"
    )]
    #[case::harbor_other_project("harbor.example.com/team/app:1", "already_on_harbor")]
    #[case::placeholder("auto", "placeholder")]
    #[case::empty("", "unparsable")]
    #[case::whitespace(" nginx:1.25", "unparsable")]
    #[case::uppercase("Nginx:latest", "unparsable")]
    #[case::hex_id(
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "unparsable"
    )]
    #[case::ipv6("[::1]:5000/app:v1", "not_proxied")]
    #[case::hostless("foo_bar.com/app", "not_proxied")]
    fn keeps_everything_else(#[case] image: &str, #[case] reason: &str) {
        assert_eq!(kept(image), reason);
    }

    #[test]
    fn placeholder_is_matched_as_written() {
        // `docker.io/library/auto` is a real (if unlikely) image, not Istio's placeholder.
        assert!(matches!(
            rules(&[]).decide("docker.io/library/auto"),
            Decision::Rewrite(_)
        ));
    }

    #[test]
    fn second_pass_is_a_no_op() {
        let once = rewritten("nginx:alpine");
        assert_eq!(
            rules(&[]).decide(&once),
            Decision::Keep(Keep::AlreadyOnHarbor)
        );
    }

    #[rstest]
    #[case::exact_name("docker.io/library/ubuntu", "ubuntu:22.04", true)]
    #[case::exact_name_other_image("docker.io/library/ubuntu", "nginx", false)]
    #[case::star_stays_in_segment("quay.io/myorg/*", "quay.io/myorg/app:1", true)]
    #[case::star_does_not_cross_slash("quay.io/myorg/*", "quay.io/myorg/team/app:1", false)]
    #[case::double_star_crosses("quay.io/myorg/**", "quay.io/myorg/team/app:1", true)]
    #[case::any_registry("*/library/ubuntu", "docker.io/library/ubuntu", true)]
    fn excludes_by_pattern_on_the_normalised_name(
        #[case] pattern: &str,
        #[case] image: &str,
        #[case] excluded: bool,
    ) {
        let rules = rules(&[pattern]);
        let decision = rules.decide(image);
        assert_eq!(
            decision == Decision::Keep(Keep::Excluded { pattern }),
            excluded,
            "{decision:?}"
        );
    }

    #[test]
    fn refuses_a_rewrite_longer_than_a_repository_name_may_be() {
        let path = "a".repeat(250);
        assert_eq!(
            rules(&[]).decide(&format!("quay.io/{path}")),
            Decision::Keep(Keep::NameTooLong)
        );
    }

    #[test]
    fn labels_cover_every_reason() {
        let reasons = [
            Keep::Placeholder,
            Keep::Unparsable(ParseError::InvalidFormat),
            Keep::AlreadyOnHarbor,
            Keep::NotProxied {
                registry: "".into(),
            },
            Keep::Excluded { pattern: "" },
            Keep::NameTooLong,
        ];
        let labels: Vec<_> = reasons.iter().map(Keep::as_str).collect();
        assert_eq!(labels, Keep::LABELS);
    }
}
