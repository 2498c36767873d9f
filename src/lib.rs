//! harbor-pilot: a Kubernetes mutating admission webhook that sends image pulls through
//! Harbor proxy-cache projects.
//!
//! The core is pure and does no I/O: [`reference`](mod@reference) reads image strings as the kubelet
//! does, [`rules`] decides what each image becomes, [`patch`] turns those decisions into
//! a JSON Patch for a [`pod`], and [`admission`] answers an AdmissionReview. [`config`]
//! validates the configuration file, [`scan`] previews manifests. The edges:
//! [`cli`] and [`commands`] for the command line.

pub mod admission;
pub mod cli;
pub mod commands;
pub mod config;
pub mod patch;
pub mod pod;
pub mod reference;
pub mod rules;
pub mod scan;
