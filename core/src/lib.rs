//! harbor-pilot's core: everything that decides, nothing that does I/O.
//!
//! This crate's dependencies hold no async runtime, HTTP server or client, TLS, metrics
//! or logging library, so the compiler keeps the layering: the binary (`harbor-pilot`)
//! does the I/O around these functions.
//!
//! - [`reference`](mod@reference): image references read exactly as the kubelet and containerd read
//!   them (a thin wrapper over `oci-spec`).
//! - [`rules`]: what an image becomes and why ([`rules::RuleSet`]), and the cache the
//!   webhook asks through ([`rules::CachedRules`]).
//! - [`verdict`]: the outcome for one image of a request, with the reasons of every
//!   layer.
//! - [`pod`]: the fields of a Pod that are read.
//! - `json`: the borrowing JSON reader of the admission hot path (serde_json reads
//!   whatever it declines).
//! - [`patch`]: the image fields of a Pod to rewrite, and the JSON Patch.
//! - [`admission`]: AdmissionReview in, decision, AdmissionReview out.
//! - [`gate`]: whether Harbor may be used now, with hysteresis.
//! - [`fallback`]: which containers stuck pulling from Harbor go back upstream, and the
//!   patch.
//! - [`config`]: the configuration file, parsed and validated.
//! - [`scan`]: the images of Kubernetes manifests, and what they become.
//! - [`export`]: the same proxies as node-level registry mirrors (Talos, containerd).
//! - [`redact`]: secrets kept out of messages.
//! - [`units`]: durations and sizes as people write them.
//! - [`table`]: aligned plain-text tables, short digests and sizes for the terminal.
//! - [`chain`]: an error and its causes on one line.
//! - `invariants` (feature `fuzzing`): what must hold for any input, for the fuzzers.

pub mod admission;
pub mod chain;
pub mod config;
pub mod export;
pub mod fallback;
pub mod gate;
#[cfg(feature = "fuzzing")]
pub mod invariants;
mod json;
pub mod patch;
pub mod pod;
pub mod redact;
pub mod reference;
pub mod rules;
pub mod scan;
pub mod table;
pub mod units;
pub mod verdict;
