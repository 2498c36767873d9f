//! harbor-pilot: a Kubernetes mutating admission webhook that sends image pulls through
//! Harbor proxy-cache projects.
//!
//! The core is pure and does no I/O: [`reference`](mod@reference) reads image strings as the kubelet
//! does, [`rules`] decides what each image becomes, [`patch`] turns those decisions into
//! a JSON Patch for a [`pod`], and [`admission`] answers an AdmissionReview. [`config`]
//! validates the configuration file, [`scan`] previews manifests.
//!
//! The edges do the I/O: [`app`] wires the process together, [`server`] serves HTTPS
//! with [`tls`] certificates that reload, [`webhook`] is `POST /mutate`, [`admin`] the
//! probes and [`metrics`]; [`cli`] and [`commands`] are the command line,
//! [`telemetry`] and [`shutdown`] logging and signals.

pub mod admin;
pub mod admission;
pub mod app;
pub mod certs;
pub mod cli;
pub mod commands;
pub mod config;
pub mod export;
pub mod gate;
pub mod invariants;
pub mod metrics;
pub mod patch;
pub mod pod;
pub mod probe;
pub mod redact;
pub mod reference;
pub mod rules;
pub mod scan;
pub mod server;
pub mod shutdown;
pub mod telemetry;
pub mod tls;
pub mod units;
pub mod webhook;
