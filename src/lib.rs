//! harbor-pilot: a Kubernetes mutating admission webhook that sends image pulls through
//! Harbor proxy-cache projects.
//!
//! Everything that decides lives in the pure core, [`harbor_pilot_core`] (references,
//! rules, the pod patch, AdmissionReview in and out, the configuration schema). This
//! crate is the edges around it, where the I/O happens:
//!
//! - [`app`]: the running process, start-up and shutdown in order;
//! - [`server`]: the accept loop (TLS or plain), HTTP/1.1 and HTTP/2, limits, drain;
//! - [`tls`]: certificates: loading, reload, client CAs, issuing;
//! - `webhook`: `POST /mutate`; `warm_up`: one admission through it before ready;
//! - `admin`: `/livez`, `/readyz`, `/metrics`;
//! - [`metrics`]: the Prometheus metrics;
//! - `probe`: the Harbor health prober that feeds the core's gate;
//! - [`registry`]: a client for Harbor's registry API (token flow included);
//! - [`prewarm`]: pulling images through Harbor ahead of time;
//! - `verify`: checks that Harbor can serve a rewrite, within a budget, remembered;
//! - `fallback`: the controller that sends Pods stuck pulling from Harbor back upstream;
//! - [`config`]: the configuration file read from disk;
//! - `certs`: the manifests `harbor-pilot certs` writes;
//! - [`cli`], [`commands`]: the command line;
//! - [`telemetry`], [`shutdown`]: logging and signals.
//!
//! Public are the modules the binary, the tests and the load benchmark's responder use;
//! the rest is crate-private.

pub(crate) mod admin;
pub mod app;
pub(crate) mod certs;
pub mod cli;
pub mod commands;
pub mod config;
pub(crate) mod fallback;
pub mod metrics;
pub mod prewarm;
pub(crate) mod probe;
pub mod registry;
pub mod server;
pub mod shutdown;
pub mod telemetry;
pub mod tls;
pub(crate) mod verify;
pub mod warm_up;
pub(crate) mod webhook;
