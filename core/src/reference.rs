//! Image references read the way the kubelet and containerd read them.
//!
//! [`ImageRef`] wraps [`oci_spec::distribution::Reference`] and closes the gaps between
//! that crate and the Go library `github.com/distribution/reference` v0.6.0
//! (`ParseNormalizedNamed`), which is what the kubelet and containerd use. The
//! differences, measured on 1,532 strings, are listed in the project's REFERENCES notes;
//! in short, this wrapper:
//!
//! - splits the registry host off the way Go's `splitDockerDomain` does (an uppercase
//!   first component is a host, `Foo/bar` is host `Foo`);
//! - accepts bracketed IPv6 hosts (`[::1]:5000/app`), which oci-spec's grammar lacks;
//! - rejects bare 64-hex identifiers and uppercase digest hex, which oci-spec accepts;
//! - reports a first component that looks like a host but is not one (`foo_bar.com/app`)
//!   with an empty domain, as Go does;
//! - keeps the tag exactly as written: oci-spec fills in `latest`, Go does not.
//!
//! Errors carry the Go library's messages, so a warning says what the kubelet would say.
//!
//! Pure: no I/O, no async, nothing from the server side of the crate.
//! Grammar: <https://github.com/distribution/reference/blob/v0.6.0/regexp.go>.

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use oci_spec::distribution::{ParseError as OciParseError, Reference};
use regex_automata::dfa::{Automaton as _, StartKind, dense};
use regex_automata::nfa::thompson::{self, WhichCaptures};
use regex_automata::util::syntax;
use regex_automata::{Anchored, Input};

/// The registry that unqualified names (`nginx`, `bitnami/redis`) resolve to.
pub const DOCKER_HUB: &str = "docker.io";
const DOCKER_HUB_LEGACY: &str = "index.docker.io";
const OFFICIAL_REPO_PREFIX: &str = "library/";
/// Longest repository path the Go library accepts, counted after `library/` insertion.
pub const MAX_PATH_LEN: usize = 255;
/// A host oci-spec always recognises as a registry, parsed in place of hosts it cannot
/// read (IPv6, uppercase single labels) and put back afterwards.
const PLACEHOLDER_HOST: &str = "placeholder.invalid";

/// Why a string is not an image reference. The messages are the Go library's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The string does not match the reference grammar.
    #[error("invalid reference format")]
    InvalidFormat,
    /// The repository part (before the first `:`) contains uppercase letters.
    #[error("invalid reference format: repository name ({0}) must be lowercase")]
    RepositoryNotLowercase(String),
    /// The string only matches the grammar once lowercased.
    #[error("repository name must be lowercase")]
    NameContainsUppercase,
    /// The repository path is longer than [`MAX_PATH_LEN`] after normalisation.
    #[error("repository name must not be more than 255 characters")]
    NameTooLong,
    /// A bare 64-character hex string, which names an image ID rather than a repository.
    #[error("invalid repository name ({0}), cannot specify 64-byte hexadecimal strings")]
    HexIdentifier(String),
    /// A digest whose hex part is not lowercase hex.
    #[error("invalid checksum digest format")]
    DigestInvalidFormat,
    /// A digest whose hex part has the wrong length for its algorithm.
    #[error("invalid checksum digest length")]
    DigestInvalidLength,
    /// A digest algorithm other than sha256, sha384 or sha512.
    #[error("unsupported digest algorithm")]
    DigestUnsupported,
}

impl ParseError {
    /// Errors oci-spec reports only after the whole string matched the grammar.
    fn is_past_grammar(error: &OciParseError) -> bool {
        matches!(
            error,
            OciParseError::DigestInvalidFormat
                | OciParseError::DigestInvalidLength
                | OciParseError::DigestUnsupported
                | OciParseError::NameTooLong
        )
    }

    fn from_oci(error: &OciParseError) -> Self {
        match error {
            OciParseError::DigestInvalidFormat => Self::DigestInvalidFormat,
            OciParseError::DigestInvalidLength => Self::DigestInvalidLength,
            OciParseError::DigestUnsupported => Self::DigestUnsupported,
            OciParseError::NameTooLong => Self::NameTooLong,
            OciParseError::NameContainsUppercase => Self::NameContainsUppercase,
            OciParseError::NameEmpty
            | OciParseError::ReferenceInvalidFormat
            | OciParseError::TagInvalidFormat => Self::InvalidFormat,
        }
    }
}

/// A parsed image reference with the normalised domain and path the kubelet uses, and
/// the tag and digest exactly as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    inner: Reference,
    tag_written: bool,
}

impl ImageRef {
    /// Parses `input` as the kubelet does (`ParseNormalizedNamed`).
    pub fn parse(input: &str) -> Result<Self, ParseError> {
        if is_hex_identifier(input) {
            return Err(ParseError::HexIdentifier(input.to_owned()));
        }
        let split = split_domain(input);
        let remote = split.remote();
        if has_uppercase(remote) {
            // Quoted whole, as Go does; whoever shows it to a person shortens it.
            return Err(ParseError::RepositoryNotLowercase(
                split.remainder_with_prefix(),
            ));
        }
        // Go's grammar classes are ASCII-only; the regex inside oci-spec is Unicode-aware.
        if !input.is_ascii() {
            return Err(ParseError::InvalidFormat);
        }
        let inner = match split.domain {
            Domain::DockerHub => parse_oci(input)?,
            // oci-spec splits these hosts off exactly as Go does.
            Domain::Host(host) if is_valid_domain(host) && oci_splits_host(host) => {
                parse_oci(input)?
            }
            Domain::Host(host) if is_valid_domain(host) => {
                let parsed = parse_oci(&format!("{PLACEHOLDER_HOST}/{}", split.remainder))?;
                with_registry(&parsed, host.to_owned())
            }
            // A host-shaped first component that is not a valid host: the Go library
            // then reads the whole name as a path with no domain (`foo_bar.com/app`).
            Domain::Host(_) => {
                let parsed = parse_oci(&format!("{PLACEHOLDER_HOST}/{input}"))?;
                with_registry(&parsed, String::new())
            }
        };
        check_digest_hex(&inner)?;
        let tag_written =
            inner.digest().is_some() || inner.tag() != Some("latest") || input.ends_with(":latest");
        Ok(Self { inner, tag_written })
    }

    /// Parses a reference of each shape, so that the grammar is compiled (on first use,
    /// once per process, ~1 ms) and each way through the parse has run before a server
    /// takes its first request: letters, digits and each separator in hosts, paths and
    /// tags, digests, ports, IPv6, a host oci-spec does not split off.
    pub fn warm_up() {
        for input in [
            "nginx",
            "nginx:1.27",
            "nginx:1.25-alpine",
            "library/nginx:1.27@sha256:0000000000000000000000000000000000000000000000000000000000000000",
            "ghcr.io/org/app:v1",
            "quay.io/prometheus/node-exporter:v1.8.2",
            "registry.k8s.io/pause:3.10",
            "registry.k8s.io/ingress-nginx/controller:v1.11.2@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "localhost:5000/team/app@sha256:1111111111111111111111111111111111111111111111111111111111111111",
            "My-Registry-0.example9.COM:443/abcdefghijklmnopqrstuvwxyz0123456789/a.b_c__d-e--f9:ABCXYZ_abcxyz-0189.v",
            "10.0.0.1:5000/a0/b-1/c_2/d.3:0@sha512:0123456789abcdefABCDEF0123456789abcdefABCDEF0123456789abcdef0123456789abcdefABCDEF0123456789abcdefABCDEF0123456789abcdef01234567",
            "app@sha256+b64.x-y_z:0123456789abcdef0123456789abcdef",
            "[::1]:5000/app:v1",
            "foo_bar.com/app",
            "Foo/bar",
        ] {
            let _ = Self::parse(input);
        }
    }

    /// The registry host with its port (`docker.io`, `localhost:5000`, `[::1]:5000`);
    /// empty when the name has no valid host (`foo_bar.com/app`).
    pub fn domain(&self) -> &str {
        self.inner.registry()
    }

    /// The repository path after normalisation (`library/nginx` for `nginx`).
    pub fn path(&self) -> &str {
        self.inner.repository()
    }

    /// The tag as written; `None` when the input had none (no `latest` is assumed).
    pub fn tag(&self) -> Option<&str> {
        if self.tag_written {
            self.inner.tag()
        } else {
            None
        }
    }

    /// The digest as written (`sha256:…`), if any.
    pub fn digest(&self) -> Option<&str> {
        self.inner.digest()
    }

    /// The wrapped oci-spec reference. Its `tag()` reports `latest` when none was written.
    pub fn as_oci(&self) -> &Reference {
        &self.inner
    }

    /// Writes `[:tag][@digest]` exactly as the input had them.
    pub fn write_suffix(&self, out: &mut String) {
        if let Some(tag) = self.tag() {
            out.push(':');
            out.push_str(tag);
        }
        if let Some(digest) = self.digest() {
            out.push('@');
            out.push_str(digest);
        }
    }
}

impl FromStr for ImageRef {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// The fully qualified form: `domain/path[:tag][@digest]` (the Go library's `String()`).
impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.domain().is_empty() {
            write!(f, "{}/", self.domain())?;
        }
        f.write_str(self.path())?;
        let mut suffix = String::new();
        self.write_suffix(&mut suffix);
        f.write_str(&suffix)
    }
}

/// Whether `host` is a registry host the kubelet recognises as one when it is the first
/// component of an image name: valid `host[:port]` grammar, and containing a `.` or a
/// `:`, or being `localhost`. Uppercase is refused although the grammar allows it:
/// hosts are compared byte for byte, so `Docker.io` would silently match nothing.
pub(crate) fn is_registry_host(host: &str) -> bool {
    is_valid_domain(host)
        && !host.bytes().any(|b| b.is_ascii_uppercase())
        && (host.contains('.') || host.contains(':') || host == "localhost")
}

enum Domain<'a> {
    DockerHub,
    Host(&'a str),
}

struct Split<'a> {
    domain: Domain<'a>,
    /// Everything after the domain, without the `library/` prefix Go would add.
    remainder: &'a str,
    /// Whether Go adds `library/` to the remainder (a single-component Docker Hub path).
    official: bool,
}

impl Split<'_> {
    /// The part Go checks for uppercase: the remainder up to its first `:`, which
    /// includes `library/` when Go inserted it. Only its case matters, so the prefix
    /// (lowercase) is left out here and added back in error messages.
    fn remote(&self) -> &str {
        self.remainder.split(':').next().unwrap_or_default()
    }

    fn remainder_with_prefix(&self) -> String {
        let remote = self.remote();
        if self.official {
            format!("{OFFICIAL_REPO_PREFIX}{remote}")
        } else {
            remote.to_owned()
        }
    }
}

/// Go's `splitDockerDomain`: the first `/`-component is a registry host when it contains
/// `.` or `:`, is `localhost`, or contains an uppercase letter.
fn split_domain(name: &str) -> Split<'_> {
    let (domain, remainder) = match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':']) || first == "localhost" || has_uppercase(first) =>
        {
            let domain = if first == DOCKER_HUB || first == DOCKER_HUB_LEGACY {
                Domain::DockerHub
            } else {
                Domain::Host(first)
            };
            (domain, rest)
        }
        _ => (Domain::DockerHub, name),
    };
    let official = matches!(domain, Domain::DockerHub) && !remainder.contains('/');
    Split {
        domain,
        remainder,
        official,
    }
}

/// oci-spec's own host test (its grammar has no IPv6, and it ignores case).
fn oci_splits_host(host: &str) -> bool {
    !host.starts_with('[') && (host.contains(['.', ':']) || host == "localhost")
}

fn parse_oci(input: &str) -> Result<Reference, ParseError> {
    oci_reference(input).map_err(|oci_error| {
        let error = ParseError::from_oci(&oci_error);
        // Go answers "must be lowercase" when the lowercased string matches the grammar;
        // it does not look any further (digest, length) at that string.
        if error == ParseError::InvalidFormat
            && has_uppercase(input)
            && oci_reference(&input.to_ascii_lowercase())
                .err()
                .is_none_or(|lower| ParseError::is_past_grammar(&lower))
        {
            return ParseError::NameContainsUppercase;
        }
        // go-digest knows algorithms by their lowercase names only, and calls one with
        // an uppercase letter a bad format rather than an unsupported algorithm.
        if error == ParseError::DigestUnsupported && digest_algorithm_has_uppercase(input) {
            return ParseError::DigestInvalidFormat;
        }
        error
    })
}

/// oci-spec's grammar (`distribution::reference`'s `REFERENCE_REGEXP`), with `\w` and
/// `[:xdigit:]` as ASCII classes.
const OCI_GRAMMAR: &str = r"^((?:(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])(?:(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))+)?(?::[0-9]+)?/)?[a-z0-9]+(?:(?:(?:[._]|__|[-]*)[a-z0-9]+)+)?(?:(?:/[a-z0-9]+(?:(?:(?:[._]|__|[-]*)[a-z0-9]+)+)?)+)?)(?::([\w][\w.-]{0,127}))?(?:@([A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*[:][[:xdigit:]]{32,}))?$";

/// `Reference::from_str` for ASCII input, step for step (oci-spec 0.10's `try_from` and
/// `split_domain`), but over [`OCI_GRAMMAR`] (see [`grammar`]). Every caller has refused
/// non-ASCII input already (Go's classes are ASCII-only), where the two grammars match
/// the same strings; the differential tests against the Go library hold both to that.
fn oci_reference(input: &str) -> Result<Reference, OciParseError> {
    // It compiles (a test says so); were it not to, oci-spec's own is as right.
    let Some(grammar) = grammar() else {
        return Reference::from_str(input);
    };
    if input.is_empty() {
        return Err(OciParseError::NameEmpty);
    }
    if !input.is_ascii() {
        return Err(OciParseError::ReferenceInvalidFormat);
    }
    if !grammar_matches(grammar, input) {
        return Err(OciParseError::ReferenceInvalidFormat);
    }
    let (name, tag, digest) = grammar_parts(input);
    let (tag, digest) = (tag.map(str::to_owned), digest.map(str::to_owned));
    let (registry, repository) = oci_split_domain(name);
    if repository.len() > MAX_PATH_LEN {
        return Err(OciParseError::NameTooLong);
    }
    if let Some(digest) = &digest {
        let Some((algorithm, hex)) = digest.split_once(':') else {
            return Err(OciParseError::DigestInvalidFormat);
        };
        let hex_len = match algorithm {
            "sha256" => 64,
            "sha384" => 96,
            "sha512" => 128,
            _ => return Err(OciParseError::DigestUnsupported),
        };
        if hex.len() != hex_len {
            return Err(OciParseError::DigestInvalidLength);
        }
    }
    Ok(match (tag, digest) {
        (Some(tag), Some(digest)) => {
            Reference::with_tag_and_digest(registry, repository, tag, digest)
        }
        (None, Some(digest)) => Reference::with_digest(registry, repository, digest),
        (tag, None) => Reference::with_tag(
            registry,
            repository,
            tag.unwrap_or_else(|| "latest".to_owned()),
        ),
    })
}

/// [`OCI_GRAMMAR`] compiled, whole, into a DFA at first use (once per process: ~1 ms;
/// 335 states, 43 KB).
///
/// Not a `regex::Regex`. oci-spec compiles its grammar with Unicode classes, so `\w`
/// holds every letter of every script: that took ~12 MiB and ~50 ms to build and a
/// further ~5 MiB per thread that matched a long reference, most of the webhook's
/// memory. And a `Regex`, even with ASCII classes, builds its automaton lazily, state
/// by state as inputs first reach them, in a cache per thread: an admission whose
/// images took a path through the grammar no earlier one had (a tag with a `-` after
/// letters, a longer tag, a port) built states while it was reviewed. Under callgrind,
/// the review of a 3-container pod with new images, first after start: 153k
/// instructions against the next such pod's 131k (237k without the references of
/// [`ImageRef::warm_up`], which cannot know every path pods take); in the server, the
/// first admission after start took 1.15x a later one, and the first pod of any new
/// shape as much. Built whole, nothing is built while serving, and a match costs what
/// it did (~0.1 µs).
fn grammar() -> Option<&'static dense::DFA<Vec<u32>>> {
    static GRAMMAR: OnceLock<Option<dense::DFA<Vec<u32>>>> = OnceLock::new();
    GRAMMAR
        .get_or_init(|| {
            dense::Builder::new()
                .syntax(syntax::Config::new().unicode(false))
                .thompson(thompson::Config::new().which_captures(WhichCaptures::None))
                // The grammar begins with `^`: only anchored searches, so no unanchored
                // start states are built.
                .configure(dense::Config::new().start_kind(StartKind::Anchored))
                .build(OCI_GRAMMAR)
                .ok()
        })
        .as_ref()
}

/// Whether all of `input` matches the grammar (it is anchored at both ends).
fn grammar_matches(grammar: &dense::DFA<Vec<u32>>, input: &str) -> bool {
    let search = Input::new(input).anchored(Anchored::Yes).earliest(true);
    // A dense DFA's search fails only on a quit byte (none are set) or on a start it
    // was not built for (this one is); a failure would be no match.
    matches!(grammar.try_search_fwd(&search), Ok(Some(_)))
}

/// The name, tag and digest of `input`, which matches [`OCI_GRAMMAR`]: what its three
/// capture groups hold, found without them. Capturing runs a backtracking search (~9k
/// instructions for a reference, measured under callgrind; the match alone ~1k), and a
/// matched string splits only one way: `@` appears nowhere but before the digest, and
/// `:` in a name only before a host's port, which a `/` follows; a tag has neither.
fn grammar_parts(input: &str) -> (&str, Option<&str>, Option<&str>) {
    let (before_digest, digest) = match input.split_once('@') {
        Some((before, digest)) => (before, Some(digest)),
        None => (input, None),
    };
    match before_digest.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name, Some(tag), digest),
        _ => (before_digest, None, digest),
    }
}

/// oci-spec's `split_domain`: the registry and the repository of a matched name.
fn oci_split_domain(name: &str) -> (String, String) {
    let (mut domain, mut remainder) = match name.split_once('/') {
        Some((left, right)) if left.contains(['.', ':']) || left == "localhost" => {
            (left.to_owned(), right.to_owned())
        }
        _ => (DOCKER_HUB.to_owned(), name.to_owned()),
    };
    if domain == DOCKER_HUB_LEGACY {
        DOCKER_HUB.clone_into(&mut domain);
    }
    if domain == DOCKER_HUB && !remainder.contains('/') {
        remainder = format!("{OFFICIAL_REPO_PREFIX}{remainder}");
    }
    (domain, remainder)
}

/// Whether the algorithm of the digest in `input` (between the last `@` and the next
/// `:`) has an uppercase letter.
fn digest_algorithm_has_uppercase(input: &str) -> bool {
    input
        .rsplit_once('@')
        .and_then(|(_, digest)| digest.split_once(':'))
        .is_some_and(|(algorithm, _)| has_uppercase(algorithm))
}

/// Rebuilds `parsed` under another registry; oci-spec offers no setter.
fn with_registry(parsed: &Reference, registry: String) -> Reference {
    let repository = parsed.repository().to_owned();
    match (parsed.tag(), parsed.digest()) {
        (Some(tag), Some(digest)) => {
            Reference::with_tag_and_digest(registry, repository, tag.to_owned(), digest.to_owned())
        }
        (None, Some(digest)) => Reference::with_digest(registry, repository, digest.to_owned()),
        (tag, None) => {
            Reference::with_tag(registry, repository, tag.unwrap_or("latest").to_owned())
        }
    }
}

/// go-digest requires lowercase hex; oci-spec only checks the length.
fn check_digest_hex(reference: &Reference) -> Result<(), ParseError> {
    match reference.digest().and_then(|d| d.split_once(':')) {
        Some((_, hex)) if hex.bytes().any(|b| b.is_ascii_uppercase()) => {
            Err(ParseError::DigestInvalidFormat)
        }
        _ => Ok(()),
    }
}

/// `^[a-f0-9]{64}$`: an image ID, which Go refuses as a name.
fn is_hex_identifier(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'a'..=b'f' | b'0'..=b'9'))
}

/// Go's `strings.ToLower(s) != s`, without allocating for ASCII input.
fn has_uppercase(s: &str) -> bool {
    if s.is_ascii() {
        s.bytes().any(|b| b.is_ascii_uppercase())
    } else {
        s.to_lowercase() != s
    }
}

/// The reference grammar's `domainAndPort`: dot-separated labels or a bracketed IPv6
/// address, then an optional `:port` of digits.
fn is_valid_domain(domain: &str) -> bool {
    let (host, port) = if let Some(rest) = domain.strip_prefix('[') {
        let Some((inside, after)) = rest.split_once(']') else {
            return false;
        };
        let is_ipv6 =
            !inside.is_empty() && inside.bytes().all(|b| b.is_ascii_hexdigit() || b == b':');
        if !is_ipv6 {
            return false;
        }
        (None, after)
    } else {
        match domain.find(':') {
            Some(colon) => (Some(&domain[..colon]), &domain[colon..]),
            None => (Some(domain), ""),
        }
    };
    let port_ok = port.is_empty()
        || port
            .strip_prefix(':')
            .is_some_and(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()));
    port_ok && host.is_none_or(|host| host.split('.').all(is_domain_label))
}

/// `[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]`
fn is_domain_label(label: &str) -> bool {
    let bytes = label.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
        }
        _ => false,
    }
}

/// `s` cut to at most `max` bytes (on a character boundary), with `…` when cut: for
/// quoting user input in messages, where an image string can be 64 KiB.
pub fn shorten(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_ascii_grammar_compiles_and_reads_what_oci_spec_reads() {
        assert!(grammar().is_some());
        for input in [
            "nginx",
            "nginx:1.27",
            "index.docker.io/nginx",
            "localhost/app:v1",
            "localhost:5000/a/b:c@sha256:0000000000000000000000000000000000000000000000000000000000000000",
            "ghcr.io/org/app@sha512:00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
            "a@sha256:00",
            "a@md5:00000000000000000000000000000000",
            "a@sha256-00000000000000000000000000000000",
            "UPPER/case",
            "",
            ":tag",
            "a:_tag.-x",
        ] {
            assert_eq!(
                format!("{:?}", oci_reference(input)),
                format!("{:?}", Reference::from_str(input)),
                "{input}"
            );
        }
    }

    use super::*;
    use regex::RegexBuilder;
    use rstest::rstest;

    /// Every input of the recorded corpus, and each with a tag and a digest added.
    fn corpus() -> Vec<String> {
        include_str!("../../tests/fixtures/image-refs.jsonl")
            .lines()
            .map(|line| {
                let record: serde_json::Value = serde_json::from_str(line).unwrap();
                record["input"].as_str().unwrap().to_owned()
            })
            .flat_map(|input| {
                [
                    format!("{input}:v1.2_x-y"),
                    format!("{input}@{DIGEST}"),
                    format!("{input}:7@{DIGEST}"),
                    input,
                ]
            })
            .collect()
    }

    #[test]
    fn the_parts_are_what_the_capture_groups_hold() {
        let grammar = RegexBuilder::new(OCI_GRAMMAR)
            .unicode(false)
            .build()
            .unwrap();
        let mut matched = 0;
        for input in corpus() {
            let Some(captures) = grammar.captures(&input) else {
                continue;
            };
            matched += 1;
            let group = |i| captures.get(i).map(|m| m.as_str());
            assert_eq!(
                grammar_parts(&input),
                (group(1).unwrap_or(""), group(2), group(3)),
                "{input}"
            );
        }
        // Enough of the corpus matches for the comparison to mean something.
        assert!(matched > 1000, "{matched}");
    }

    /// The whole DFA against the `regex` crate's matcher of the same grammar, on the
    /// corpus and on each recorded input with one character replaced or inserted, at
    /// every position, from each class the grammar tells apart.
    #[test]
    fn the_whole_dfa_matches_what_the_regex_crate_matches() {
        let reference = RegexBuilder::new(OCI_GRAMMAR)
            .unicode(false)
            .build()
            .unwrap();
        let dfa = grammar().unwrap();
        let (mut checked, mut matched) = (0, 0);
        for (n, input) in corpus().iter().enumerate() {
            if !input.is_ascii() {
                continue;
            }
            let mut variants = vec![input.clone()];
            // The recorded input itself (corpus() adds a tag, a digest and both first).
            let positions = if n % 4 == 3 { input.len() + 1 } else { 0 };
            for at in 0..positions {
                for c in [
                    'a', 'g', 'A', 'G', '0', '.', '_', '-', ':', '/', '@', '+', ' ',
                ] {
                    let mut replaced = input.clone();
                    if at < input.len() {
                        replaced.replace_range(at..=at, c.encode_utf8(&mut [0; 4]));
                        variants.push(replaced);
                    }
                    let mut inserted = input.clone();
                    inserted.insert(at, c);
                    variants.push(inserted);
                }
            }
            for variant in &variants {
                let expected = reference.is_match(variant);
                assert_eq!(grammar_matches(dfa, variant), expected, "{variant:?}");
                checked += 1;
                matched += usize::from(expected);
            }
        }
        // Both answers are common enough for the comparison to mean something.
        assert!(
            matched > 100_000 && checked - matched > 100_000,
            "{matched} of {checked}"
        );
    }

    #[test]
    fn the_corpus_reads_as_oci_spec_reads_it() {
        for input in corpus().iter().filter(|input| input.is_ascii()) {
            assert_eq!(
                format!("{:?}", oci_reference(input)),
                format!("{:?}", Reference::from_str(input)),
                "{input}"
            );
        }
    }

    const DIGEST: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn parts(input: &str) -> (String, String, Option<String>, Option<String>) {
        let r = ImageRef::parse(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
        (
            r.domain().to_owned(),
            r.path().to_owned(),
            r.tag().map(str::to_owned),
            r.digest().map(str::to_owned),
        )
    }

    #[rstest]
    #[case::short_name("nginx", "docker.io", "library/nginx", None)]
    #[case::short_name_with_tag("nginx:alpine", "docker.io", "library/nginx", Some("alpine"))]
    #[case::hub_user_repo("bitnami/redis:7", "docker.io", "bitnami/redis", Some("7"))]
    #[case::explicit_hub("docker.io/nginx", "docker.io", "library/nginx", None)]
    #[case::legacy_hub("index.docker.io/nginx", "docker.io", "library/nginx", None)]
    #[case::library_not_doubled(
        "library/library/nginx",
        "docker.io",
        "library/library/nginx",
        None
    )]
    #[case::host_with_port("host:5000/app", "host:5000", "app", None)]
    #[case::localhost("localhost/app:v1", "localhost", "app", Some("v1"))]
    #[case::bare_localhost_port_is_a_tag(
        "localhost:5000",
        "docker.io",
        "library/localhost",
        Some("5000")
    )]
    #[case::hub_alias_is_its_own_registry(
        "registry-1.docker.io/nginx",
        "registry-1.docker.io",
        "nginx",
        None
    )]
    #[case::uppercase_first_component_is_a_host("Foo/bar", "Foo", "bar", None)]
    #[case::ipv6("[::1]:5000/app:v1", "[::1]:5000", "app", Some("v1"))]
    #[case::ipv6_uppercase("[2001:DB8::1]/x", "[2001:DB8::1]", "x", None)]
    #[case::underscore_host_has_no_domain("foo_bar.com/app", "", "foo_bar.com/app", None)]
    #[case::explicit_latest_kept("nginx:latest", "docker.io", "library/nginx", Some("latest"))]
    #[case::sha256_alone_is_a_tag(
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "docker.io",
        "library/sha256",
        Some("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    )]
    fn splits_domain_and_path(
        #[case] input: &str,
        #[case] domain: &str,
        #[case] path: &str,
        #[case] tag: Option<&str>,
    ) {
        let (d, p, t, _) = parts(input);
        assert_eq!((d.as_str(), p.as_str(), t.as_deref()), (domain, path, tag));
    }

    #[test]
    fn keeps_tag_and_digest() {
        let r = ImageRef::parse(&format!("nginx:1.25@{DIGEST}")).unwrap();
        assert_eq!(r.tag(), Some("1.25"));
        assert_eq!(r.digest(), Some(DIGEST));
        assert_eq!(
            r.to_string(),
            format!("docker.io/library/nginx:1.25@{DIGEST}")
        );
    }

    #[test]
    fn digest_only_has_no_tag() {
        let r = ImageRef::parse(&format!("quay.io/a/b@{DIGEST}")).unwrap();
        assert_eq!(r.tag(), None);
        assert_eq!(r.to_string(), format!("quay.io/a/b@{DIGEST}"));
    }

    #[test]
    fn adds_no_latest() {
        assert_eq!(
            ImageRef::parse("nginx").unwrap().to_string(),
            "docker.io/library/nginx"
        );
    }

    #[rstest]
    #[case::empty("", ParseError::InvalidFormat)]
    #[case::leading_space(" nginx", ParseError::InvalidFormat)]
    #[case::trailing_space("nginx ", ParseError::InvalidFormat)]
    #[case::scheme("docker://nginx", ParseError::InvalidFormat)]
    #[case::non_ascii("nginx\u{a0}", ParseError::InvalidFormat)]
    #[case::uppercase_path("Nginx", ParseError::RepositoryNotLowercase("library/Nginx".into()))]
    #[case::uppercase_digest_algorithm(
        "nginx@SHA256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        ParseError::RepositoryNotLowercase("library/nginx@SHA256".into())
    )]
    #[case::uppercase_digest_hex(
        "nginx@sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
        ParseError::DigestInvalidFormat
    )]
    #[case::short_digest("nginx@sha256:abc", ParseError::InvalidFormat)]
    #[case::wrong_digest_length(
        "nginx@sha256:e3b0c44298fc1c149afbf4c8996fb924",
        ParseError::DigestInvalidLength
    )]
    #[case::unknown_algorithm(
        "nginx@md5:e3b0c44298fc1c149afbf4c8996fb924",
        ParseError::DigestUnsupported
    )]
    #[case::hex_identifier(
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        ParseError::HexIdentifier(
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".into()
        )
    )]
    #[case::ipv6_unbracketed("::1/app", ParseError::InvalidFormat)]
    #[case::ipv6_zone("[fe80::1%eth0]/app", ParseError::InvalidFormat)]
    #[case::bracketed_non_host("[abc]/app", ParseError::InvalidFormat)]
    #[case::empty_port("host:/app", ParseError::InvalidFormat)]
    #[case::trailing_dot_hub("docker.io./nginx", ParseError::InvalidFormat)]
    #[case::triple_underscore("a___b", ParseError::InvalidFormat)]
    fn rejects_what_the_kubelet_rejects(#[case] input: &str, #[case] error: ParseError) {
        assert_eq!(ImageRef::parse(input), Err(error));
    }

    #[test]
    fn limits_path_length_after_library_insertion() {
        assert!(ImageRef::parse(&"a".repeat(247)).is_ok());
        assert_eq!(
            ImageRef::parse(&"a".repeat(248)),
            Err(ParseError::NameTooLong)
        );
        assert!(ImageRef::parse(&format!("example.com/{}", "a".repeat(255))).is_ok());
    }

    #[test]
    fn limits_path_length_of_hostless_names() {
        let long = format!("foo_bar.com/{}", "a".repeat(244));
        assert_eq!(ImageRef::parse(&long), Err(ParseError::NameTooLong));
    }

    #[test]
    fn quotes_the_whole_repository_name_as_go_does() {
        // Found by the live oracle: Go quotes the name whole; warnings shorten it.
        let name = format!("Registry/{}", "a".repeat(300));
        let message = ImageRef::parse(&format!("x/{name}"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            message,
            format!("invalid reference format: repository name (x/{name}) must be lowercase")
        );
    }

    // Found by the live oracle (tests/reference_oracle.rs); each answer is Go's.
    #[rstest]
    #[case::uppercase_algorithm(
        "example.com/app:v1@SHA256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        ParseError::DigestInvalidFormat
    )]
    #[case::unknown_lowercase_algorithm(
        "example.com/app@sha1:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        ParseError::DigestUnsupported
    )]
    #[case::bad_host_lowercase_matches_with_unknown_digest(
        "d29_pks.W.k8s.io/1j@s:ca185a6405acc5daba5777596965ecdd3a0970bf6b5486dd428d674f0f73c0f4",
        ParseError::NameContainsUppercase
    )]
    #[case::uppercase_first_component_too_long_when_lowercased(
        &format!("not_a_vZalid_host_{}/docker", "x".repeat(250)),
        ParseError::NameContainsUppercase
    )]
    fn reads_bad_references_as_go_does(#[case] input: &str, #[case] expected: ParseError) {
        assert_eq!(ImageRef::parse(input), Err(expected));
    }

    #[rstest]
    #[case::fqdn("harbor.example.com", true)]
    #[case::with_port("harbor.example.com:8443", true)]
    #[case::localhost("localhost", true)]
    #[case::ipv6("[::1]:5000", true)]
    #[case::single_label("harbor", false)]
    #[case::uppercase("Harbor.example.com", false)]
    #[case::scheme("https://harbor.example.com", false)]
    #[case::path("harbor.example.com/proxy", false)]
    #[case::empty_port("harbor.example.com:", false)]
    #[case::leading_hyphen("-harbor.example.com", false)]
    #[case::underscore("foo_bar.com", false)]
    fn recognises_registry_hosts(#[case] host: &str, #[case] expected: bool) {
        assert_eq!(is_registry_host(host), expected, "{host}");
    }
}
