//! Prometheus metrics in an owned registry.
//!
//! Every label value comes from a closed set: operations and outcomes are enums, the
//! upstream is a key of the configuration, the skip reason is [`Keep::as_str`]. Never a
//! namespace, an image or an error text, so the series count cannot grow with traffic.

use std::time::Duration;

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

use crate::admission::Outcome;
use crate::patch::Change;
use crate::rules::{Decision, Keep};

const NAMESPACE: &str = "harbor_pilot";

/// Outcomes of requests that never became a review.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Not an AdmissionReview (HTTP 400).
    BadRequest,
    /// Over the body size limit (HTTP 413).
    PayloadTooLarge,
    /// The body did not arrive within the body read timeout (HTTP 408).
    Timeout,
}

impl Rejection {
    fn as_str(self) -> &'static str {
        match self {
            Rejection::BadRequest => "bad_request",
            Rejection::PayloadTooLarge => "payload_too_large",
            Rejection::Timeout => "timeout",
        }
    }
}

/// Operation label for requests whose operation is unknown (rejected bodies).
const UNKNOWN_OPERATION: &str = "unknown";
const OPERATIONS: [&str; 4] = ["CREATE", "UPDATE", "DELETE", "CONNECT"];

/// Why a TLS handshake did not complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// The client did not finish within the handshake timeout.
    Timeout,
    /// The handshake failed (protocol version, certificate, garbage).
    Error,
}

/// The metrics harbor-pilot exports.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    admission_requests: IntCounterVec,
    admission_duration: Histogram,
    images_rewritten: IntCounterVec,
    images_skipped: IntCounterVec,
    tls_reloads: IntCounterVec,
    tls_cert_not_after: Gauge,
    tls_handshake_failures: IntCounterVec,
    harbor_up: IntGauge,
    harbor_probes: IntCounterVec,
    harbor_probe_duration: Histogram,
    harbor_transitions: IntCounterVec,
    fail_open_admissions: IntCounter,
}

impl Metrics {
    /// Registers every metric in a new registry, with all label values of the closed
    /// sets present (at zero) so dashboards and alerts see them before the first event.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let opts = |name: &str, help: &str| Opts::new(name, help).namespace(NAMESPACE);

        let admission_requests = IntCounterVec::new(
            opts(
                "admission_requests_total",
                "AdmissionReview requests answered, by operation and outcome.",
            ),
            &["operation", "outcome"],
        )?;
        let admission_duration = Histogram::with_opts(
            HistogramOpts::new(
                "admission_duration_seconds",
                "Time from the start of a /mutate request to its answer, body read included.",
            )
            .namespace(NAMESPACE)
            .buckets(vec![
                0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05,
                0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
        )?;
        let images_rewritten = IntCounterVec::new(
            opts(
                "images_rewritten_total",
                "Images rewritten to Harbor, by configured upstream registry.",
            ),
            &["upstream"],
        )?;
        let images_skipped = IntCounterVec::new(
            opts("images_skipped_total", "Images left as written, by reason."),
            &["reason"],
        )?;
        let tls_reloads = IntCounterVec::new(
            opts(
                "tls_reloads_total",
                "Attempts to load a changed serving certificate, by result.",
            ),
            &["result"],
        )?;
        let tls_cert_not_after = Gauge::with_opts(opts(
            "tls_cert_not_after_timestamp_seconds",
            "Expiry (notAfter) of the serving certificate in use, as a Unix timestamp.",
        ))?;
        let tls_handshake_failures = IntCounterVec::new(
            opts(
                "tls_handshake_failures_total",
                "TLS handshakes on the webhook port that did not complete, by reason.",
            ),
            &["reason"],
        )?;
        let harbor_up = IntGauge::with_opts(opts(
            "harbor_up",
            "1 while images are rewritten (Harbor healthy, or no health check configured); \
             0 while Harbor is down or not yet probed and admissions fail open.",
        ))?;
        let harbor_probes = IntCounterVec::new(
            opts("harbor_probes_total", "Harbor health probes, by result."),
            &["result"],
        )?;
        let harbor_probe_duration = Histogram::with_opts(
            HistogramOpts::new(
                "harbor_probe_duration_seconds",
                "Time one Harbor health probe took (DNS, connect, TLS, answer).",
            )
            .namespace(NAMESPACE)
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
        )?;
        let harbor_transitions = IntCounterVec::new(
            opts(
                "harbor_transitions_total",
                "Changes of Harbor's availability after the thresholds, by new state.",
            ),
            &["to"],
        )?;
        let fail_open_admissions = IntCounter::with_opts(opts(
            "fail_open_admissions_total",
            "Admissions whose images stayed upstream because Harbor was unavailable.",
        ))?;
        let build_info = IntGaugeVec::new(
            opts(
                "build_info",
                "Always 1; the version label says which build runs.",
            ),
            &["version"],
        )?;

        for collector in [
            Box::new(admission_requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(admission_duration.clone()),
            Box::new(images_rewritten.clone()),
            Box::new(images_skipped.clone()),
            Box::new(tls_reloads.clone()),
            Box::new(tls_cert_not_after.clone()),
            Box::new(tls_handshake_failures.clone()),
            Box::new(build_info.clone()),
            Box::new(harbor_up.clone()),
            Box::new(harbor_probes.clone()),
            Box::new(harbor_probe_duration.clone()),
            Box::new(harbor_transitions.clone()),
            Box::new(fail_open_admissions.clone()),
        ] {
            registry.register(collector)?;
        }

        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        for operation in OPERATIONS {
            for outcome in Outcome::LABELS {
                admission_requests.with_label_values(&[operation, outcome]);
            }
        }
        for rejection in [
            Rejection::BadRequest,
            Rejection::PayloadTooLarge,
            Rejection::Timeout,
        ] {
            admission_requests.with_label_values(&[UNKNOWN_OPERATION, rejection.as_str()]);
        }
        for reason in Keep::LABELS {
            images_skipped.with_label_values(&[reason]);
        }
        for result in ["success", "error"] {
            tls_reloads.with_label_values(&[result]);
        }
        for reason in ["timeout", "error"] {
            tls_handshake_failures.with_label_values(&[reason]);
        }
        for result in ["success", "failure"] {
            harbor_probes.with_label_values(&[result]);
        }
        for state in ["up", "down"] {
            harbor_transitions.with_label_values(&[state]);
        }
        // Without a health check the gate is always open.
        harbor_up.set(1);

        Ok(Self {
            registry,
            admission_requests,
            admission_duration,
            images_rewritten,
            images_skipped,
            tls_reloads,
            tls_cert_not_after,
            tls_handshake_failures,
            harbor_up,
            harbor_probes,
            harbor_probe_duration,
            harbor_transitions,
            fail_open_admissions,
        })
    }

    /// Makes the `upstream` series of every configured upstream visible at zero.
    pub fn register_upstreams<'a>(&self, upstreams: impl IntoIterator<Item = &'a str>) {
        for upstream in upstreams {
            self.images_rewritten.with_label_values(&[upstream]);
        }
    }

    /// Counts one answered review and the decision on each of its images.
    pub fn observe_review(
        &self,
        operation: &'static str,
        outcome: Outcome,
        elapsed: Duration,
        changes: &[Change<'_, '_>],
    ) {
        self.admission_requests
            .with_label_values(&[operation, outcome.as_str()])
            .inc();
        self.admission_duration.observe(elapsed.as_secs_f64());
        if outcome == Outcome::FailOpen {
            self.fail_open_admissions.inc();
        }
        for change in changes {
            match &change.decision {
                Decision::Rewrite(r) => {
                    self.images_rewritten.with_label_values(&[r.upstream]).inc()
                }
                Decision::Keep(keep) => self
                    .images_skipped
                    .with_label_values(&[keep.as_str()])
                    .inc(),
            }
        }
    }

    /// Counts a request answered with an HTTP error instead of a review.
    pub fn observe_rejection(&self, rejection: Rejection, elapsed: Duration) {
        self.admission_requests
            .with_label_values(&[UNKNOWN_OPERATION, rejection.as_str()])
            .inc();
        self.admission_duration.observe(elapsed.as_secs_f64());
    }

    /// Counts a certificate reload attempt.
    pub fn observe_tls_reload(&self, success: bool) {
        let result = if success { "success" } else { "error" };
        self.tls_reloads.with_label_values(&[result]).inc();
    }

    /// Records the notAfter of the certificate now served.
    pub fn set_cert_not_after(&self, unix_seconds: i64) {
        // f64 holds Unix seconds exactly until the year 285 million.
        #[allow(clippy::cast_precision_loss)]
        self.tls_cert_not_after.set(unix_seconds as f64);
    }

    /// Counts a handshake that did not complete.
    pub fn observe_handshake_failure(&self, failure: HandshakeFailure) {
        let reason = match failure {
            HandshakeFailure::Timeout => "timeout",
            HandshakeFailure::Error => "error",
        };
        self.tls_handshake_failures
            .with_label_values(&[reason])
            .inc();
    }

    /// Records whether images are rewritten now (the gate is open).
    pub fn set_harbor_up(&self, up: bool) {
        self.harbor_up.set(i64::from(up));
    }

    /// Counts one Harbor probe.
    pub fn observe_harbor_probe(&self, success: bool, elapsed: Duration) {
        let result = if success { "success" } else { "failure" };
        self.harbor_probes.with_label_values(&[result]).inc();
        self.harbor_probe_duration.observe(elapsed.as_secs_f64());
    }

    /// Counts a change of Harbor's availability (`up` or `down`).
    pub fn observe_harbor_transition(&self, to: &'static str) {
        self.harbor_transitions.with_label_values(&[to]).inc();
    }

    /// The registry in the Prometheus text format (0.0.4), and its content type.
    pub fn encode(&self) -> Result<(Vec<u8>, String), prometheus::Error> {
        let encoder = TextEncoder::new();
        let mut out = Vec::with_capacity(8 * 1024);
        encoder.encode(&self.registry.gather(), &mut out)?;
        Ok((out, encoder.format_type().to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(metrics: &Metrics) -> String {
        String::from_utf8(metrics.encode().unwrap().0).unwrap()
    }

    #[test]
    fn exposes_every_family_before_any_traffic() {
        let metrics = Metrics::new().unwrap();
        metrics.register_upstreams(["docker.io"]);
        let text = text(&metrics);
        for line in [
            "harbor_pilot_admission_requests_total{operation=\"CREATE\",outcome=\"rewritten\"} 0",
            "harbor_pilot_admission_requests_total{operation=\"unknown\",outcome=\"bad_request\"} 0",
            "harbor_pilot_images_rewritten_total{upstream=\"docker.io\"} 0",
            "harbor_pilot_images_skipped_total{reason=\"unparsable\"} 0",
            "harbor_pilot_tls_reloads_total{result=\"error\"} 0",
            "harbor_pilot_tls_handshake_failures_total{reason=\"timeout\"} 0",
            "harbor_pilot_admission_duration_seconds_count 0",
            "harbor_pilot_tls_cert_not_after_timestamp_seconds 0",
        ] {
            assert!(text.contains(line), "missing {line}");
        }
        assert!(text.contains(&format!(
            "harbor_pilot_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )));
    }

    #[test]
    fn counts_reviews_rejections_and_reloads() {
        let metrics = Metrics::new().unwrap();
        metrics.observe_review("CREATE", Outcome::Unchanged, Duration::from_micros(30), &[]);
        metrics.observe_rejection(Rejection::PayloadTooLarge, Duration::from_micros(5));
        metrics.observe_tls_reload(false);
        metrics.set_cert_not_after(1_800_000_000);
        let text = text(&metrics);
        assert!(text.contains("operation=\"CREATE\",outcome=\"unchanged\"} 1"));
        assert!(text.contains("operation=\"unknown\",outcome=\"payload_too_large\"} 1"));
        assert!(text.contains("harbor_pilot_tls_reloads_total{result=\"error\"} 1"));
        assert!(text.contains("harbor_pilot_tls_cert_not_after_timestamp_seconds 1800000000"));
        assert!(text.contains("harbor_pilot_admission_duration_seconds_count 2"));
    }
}
