//! The rewrite rule: which images go through which Harbor proxy-cache project.
//!
//! An image whose normalised registry is a configured upstream becomes
//! `<harbor>/<project>/<path>[:tag][@digest]`, with the path as the kubelet normalises it
//! and the tag and digest exactly as written. Everything else is kept byte for byte, and
//! [`Keep`] says why.
//!
//! Pure: no I/O. Built from a validated [`crate::config::Config`]. Decisions are
//! memoised per image string (see [`RuleSet::decide`]): the same input always gets the
//! same answer, only faster.

use std::collections::HashMap;
use std::fmt;
use std::sync::RwLock;

use globset::{Glob, GlobSet, GlobSetBuilder};

use crate::reference::{ImageRef, MAX_PATH_LEN, ParseError};

/// How many image strings [`RuleSet::decide`] remembers; the memo is emptied when full.
const MEMO_CAPACITY: usize = 8192;
/// Longer image strings are decided every time (no valid reference is this long).
const MEMO_MAX_IMAGE_LEN: usize = 512;

/// The compiled rewrite rules.
#[derive(Debug, Clone)]
pub struct RuleSet {
    harbor: String,
    /// Upstream registry host → Harbor project.
    proxies: HashMap<String, String>,
    exclude: GlobSet,
    exclude_patterns: Vec<String>,
    placeholders: Vec<String>,
    memo: Memo,
}

/// Decisions already made, by image string as written. Parsing a reference with
/// oci-spec costs 1-6 µs; the pods of one ReplicaSet carry the same images again and
/// again, so most lookups hit.
#[derive(Default)]
struct Memo(RwLock<HashMap<Box<str>, Remembered>>);

/// A [`Decision`] without borrows, to be stored.
#[derive(Clone)]
enum Remembered {
    Rewrite { image: Box<str>, upstream: Box<str> },
    Keep(Keep<'static>),
    Excluded { pattern: usize },
}

impl fmt::Debug for Memo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let len = self.0.read().map_or(0, |m| m.len());
        write!(f, "Memo({len} images)")
    }
}

impl Clone for Memo {
    /// A clone starts with an empty memo: it is a cache, not state.
    fn clone(&self) -> Self {
        Self::default()
    }
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
    /// The image to pull instead.
    pub image: String,
    /// The configured upstream key that matched (`docker.io`); bounded, so usable as a
    /// metric label.
    pub upstream: &'r str,
    /// The Harbor project the upstream maps to.
    pub project: &'r str,
}

/// Why an image is left as written. [`Keep::as_str`] gives the metric label.
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
        /// The image's normalised registry (empty when it has none).
        registry: String,
    },
    /// Matches an `exclude` pattern.
    Excluded {
        /// The pattern as configured.
        pattern: &'r str,
    },
    /// `<project>/<path>` would exceed the 255 characters a repository name may have.
    NameTooLong,
    /// Pod UPDATE: same image as in the running pod; rewriting it would restart the
    /// container.
    UnchangedOnUpdate,
    /// `pods/ephemeralcontainers`: an ephemeral container that already exists (they are
    /// immutable once added).
    ExistingEphemeral,
    /// The pod is labelled `harbor-pilot.io/rewrite: disabled`.
    PodOptedOut,
    /// It would be rewritten, but Harbor is down (or not probed yet): fail open.
    HarborUnavailable,
}

impl Keep<'_> {
    /// The same reason without borrows; `Excluded` is handled by the memo itself.
    fn to_owned_static(&self) -> Keep<'static> {
        match self {
            Keep::Placeholder => Keep::Placeholder,
            Keep::Unparsable(e) => Keep::Unparsable(e.clone()),
            Keep::AlreadyOnHarbor => Keep::AlreadyOnHarbor,
            Keep::NotProxied { registry } => Keep::NotProxied {
                registry: registry.clone(),
            },
            Keep::Excluded { .. } => Keep::Excluded { pattern: "" },
            Keep::NameTooLong => Keep::NameTooLong,
            Keep::UnchangedOnUpdate => Keep::UnchangedOnUpdate,
            Keep::ExistingEphemeral => Keep::ExistingEphemeral,
            Keep::PodOptedOut => Keep::PodOptedOut,
            Keep::HarborUnavailable => Keep::HarborUnavailable,
        }
    }

    /// A stable, bounded label value for metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            Keep::Placeholder => "placeholder",
            Keep::Unparsable(_) => "unparsable",
            Keep::AlreadyOnHarbor => "already_on_harbor",
            Keep::NotProxied { .. } => "not_proxied",
            Keep::Excluded { .. } => "excluded",
            Keep::NameTooLong => "name_too_long",
            Keep::UnchangedOnUpdate => "unchanged_on_update",
            Keep::ExistingEphemeral => "existing_ephemeral",
            Keep::PodOptedOut => "pod_opted_out",
            Keep::HarborUnavailable => "harbor_unavailable",
        }
    }

    /// Every label value [`Keep::as_str`] can return, for pre-registering metrics.
    pub const LABELS: [&'static str; 10] = [
        "placeholder",
        "unparsable",
        "already_on_harbor",
        "not_proxied",
        "excluded",
        "name_too_long",
        "unchanged_on_update",
        "existing_ephemeral",
        "pod_opted_out",
        "harbor_unavailable",
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
            Keep::UnchangedOnUpdate => {
                f.write_str("unchanged by this update (rewriting would restart the container)")
            }
            Keep::ExistingEphemeral => f.write_str("existing ephemeral container (immutable)"),
            Keep::PodOptedOut => f.write_str("pod labelled harbor-pilot.io/rewrite: disabled"),
            Keep::HarborUnavailable => {
                f.write_str("Harbor is unavailable: left upstream (fail open)")
            }
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
        proxies: HashMap<String, String>,
        exclude: Vec<Glob>,
        exclude_patterns: Vec<String>,
        placeholders: Vec<String>,
    ) -> Result<Self, globset::Error> {
        let mut set = GlobSetBuilder::new();
        for glob in exclude {
            set.add(glob);
        }
        Ok(Self {
            harbor,
            proxies,
            exclude: set.build()?,
            exclude_patterns,
            placeholders,
            memo: Memo::default(),
        })
    }

    /// The Harbor host pods pull from.
    pub fn harbor(&self) -> &str {
        &self.harbor
    }

    /// Upstream registry → project, in no particular order.
    pub fn proxies(&self) -> impl Iterator<Item = (&str, &str)> {
        self.proxies.iter().map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// Decides what `image` becomes, remembering the answer for the next pod with the
    /// same image (up to 8,192 image strings; the memory is emptied when full).
    pub fn decide(&self, image: &str) -> Decision<'_> {
        let memo = self.memo.0.read().unwrap_or_else(|p| p.into_inner());
        if let Some(remembered) = memo.get(image) {
            return self.recall(remembered);
        }
        drop(memo);
        let decision = self.decide_afresh(image);
        if image.len() <= MEMO_MAX_IMAGE_LEN {
            let mut memo = self.memo.0.write().unwrap_or_else(|p| p.into_inner());
            if memo.len() >= MEMO_CAPACITY {
                memo.clear();
            }
            memo.insert(image.into(), self.remember(&decision));
        }
        decision
    }

    fn remember(&self, decision: &Decision<'_>) -> Remembered {
        match decision {
            Decision::Rewrite(r) => Remembered::Rewrite {
                image: r.image.as_str().into(),
                upstream: r.upstream.into(),
            },
            Decision::Keep(Keep::Excluded { pattern }) => Remembered::Excluded {
                pattern: self
                    .exclude_patterns
                    .iter()
                    .position(|p| p == pattern)
                    .unwrap_or_default(),
            },
            Decision::Keep(keep) => Remembered::Keep(keep.to_owned_static()),
        }
    }

    fn recall(&self, remembered: &Remembered) -> Decision<'_> {
        match remembered {
            Remembered::Rewrite { image, upstream } => {
                // Only configured upstreams are ever remembered.
                let (upstream, project) = self
                    .proxies
                    .get_key_value(upstream.as_ref())
                    .map(|(u, p)| (u.as_str(), p.as_str()))
                    .unwrap_or_default();
                Decision::Rewrite(Rewrite {
                    image: image.to_string(),
                    upstream,
                    project,
                })
            }
            Remembered::Excluded { pattern } => Decision::Keep(Keep::Excluded {
                pattern: self
                    .exclude_patterns
                    .get(*pattern)
                    .map(String::as_str)
                    .unwrap_or_default(),
            }),
            Remembered::Keep(keep) => Decision::Keep(keep.clone()),
        }
    }

    /// Decides without the memo (what [`RuleSet::decide`] does on a miss).
    pub fn decide_afresh(&self, image: &str) -> Decision<'_> {
        if self.placeholders.iter().any(|p| p == image) {
            return Decision::Keep(Keep::Placeholder);
        }
        let reference = match ImageRef::parse(image) {
            Ok(reference) => reference,
            Err(error) => return Decision::Keep(Keep::Unparsable(error)),
        };
        self.decide_parsed(&reference)
    }

    /// Decides what an already parsed image becomes (placeholders are matched on the raw
    /// string, so they are not considered here).
    pub fn decide_parsed(&self, reference: &ImageRef) -> Decision<'_> {
        let domain = reference.domain();
        if domain == self.harbor {
            return Decision::Keep(Keep::AlreadyOnHarbor);
        }
        let Some((upstream, project)) = self.proxies.get_key_value(domain) else {
            return Decision::Keep(Keep::NotProxied {
                registry: domain.to_owned(),
            });
        };
        if let Some(pattern) = self.excluding_pattern(reference) {
            return Decision::Keep(Keep::Excluded { pattern });
        }
        // The project becomes the first path component; the Go grammar caps the path.
        if project.len() + 1 + reference.path().len() > MAX_PATH_LEN {
            return Decision::Keep(Keep::NameTooLong);
        }
        let mut image =
            String::with_capacity(self.harbor.len() + project.len() + reference.path().len() + 80);
        image.push_str(&self.harbor);
        image.push('/');
        image.push_str(project);
        image.push('/');
        image.push_str(reference.path());
        reference.write_suffix(&mut image);
        Decision::Rewrite(Rewrite {
            image,
            upstream,
            project,
        })
    }

    fn excluding_pattern(&self, reference: &ImageRef) -> Option<&str> {
        if self.exclude_patterns.is_empty() {
            return None;
        }
        let name = format!("{}/{}", reference.domain(), reference.path());
        let index = self.exclude.matches(&name).into_iter().next()?;
        self.exclude_patterns.get(index).map(String::as_str)
    }
}

/// Compiles an `exclude` pattern: a glob on `registry/path` where `*` stays within one
/// path segment and `**` spans several.
pub fn compile_pattern(pattern: &str) -> Result<Glob, globset::Error> {
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
        .map(|(u, p)| (u.to_owned(), p.to_owned()))
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
            Decision::Rewrite(r) => r.image,
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
    fn remembered_decisions_equal_fresh_ones() {
        let rules = rules(&["docker.io/library/ubuntu"]);
        for image in [
            "nginx:alpine",
            "ubuntu:22.04",
            "gcr.io/a/b",
            "Nginx",
            "auto",
            "harbor.example.com/x/y",
            &format!("quay.io/{}", "a".repeat(250)),
        ] {
            let fresh = rules.decide_afresh(image);
            assert_eq!(rules.decide(image), fresh, "first {image}");
            assert_eq!(rules.decide(image), fresh, "remembered {image}");
        }
    }

    #[test]
    fn the_memo_stays_bounded() {
        let rules = rules(&[]);
        for i in 0..(MEMO_CAPACITY + 10) {
            rules.decide(&format!("nginx:{i}"));
        }
        rules.decide(&format!("quay.io/{}", "a".repeat(MEMO_MAX_IMAGE_LEN)));
        let len = rules.memo.0.read().unwrap().len();
        assert!(len <= MEMO_CAPACITY, "{len}");
    }

    #[test]
    fn labels_cover_every_reason() {
        let reasons = [
            Keep::Placeholder,
            Keep::Unparsable(ParseError::InvalidFormat),
            Keep::AlreadyOnHarbor,
            Keep::NotProxied {
                registry: String::new(),
            },
            Keep::Excluded { pattern: "" },
            Keep::NameTooLong,
            Keep::UnchangedOnUpdate,
            Keep::ExistingEphemeral,
            Keep::PodOptedOut,
            Keep::HarborUnavailable,
        ];
        let labels: Vec<_> = reasons.iter().map(Keep::as_str).collect();
        assert_eq!(labels, Keep::LABELS);
    }
}
