//! Prometheus metrics in an owned registry.
//!
//! Every label value comes from a closed set: operations, outcomes and reasons are the
//! core's enums, the upstream is a key of the configuration, the rest are the [`Label`]
//! enums here. Never a namespace, an image or an error text, so the series count cannot
//! grow with traffic.

use std::sync::Arc;
use std::time::Duration;

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

use harbor_pilot_core::admission::{OPERATION_LABELS, Outcome};
use harbor_pilot_core::patch::Change;
use harbor_pilot_core::verdict::{Reason, Verdict};

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

/// Why a TLS handshake did not complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// The client did not finish within the handshake timeout.
    Timeout,
    /// The handshake failed (protocol version, certificate, garbage).
    Error,
}

/// How an attempt to load a changed certificate ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadResult {
    /// Loaded and served.
    Success,
    /// Did not load; the old pair stays.
    Error,
}

/// How one Harbor health probe ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeResult {
    /// Harbor answered as healthy.
    Success,
    /// It did not.
    Failure,
}

/// A change of Harbor's availability, after the thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Images are rewritten again.
    Up,
    /// Admissions fail open.
    Down,
}

/// How an attempt to send containers back to their upstream images ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FallbackResult {
    /// Patched: the containers run their original images again.
    Reverted,
    /// The patch's `test` failed: another replica did it, or the image changed.
    Conflict,
    /// The patch failed otherwise; retried.
    Error,
}

/// How one check of a rewrite against Harbor (`verify`) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyResult {
    /// Harbor answered 2xx: it serves the image.
    Served,
    /// Harbor answered another status.
    NotServed,
    /// No answer (connection, TLS, timeout, token).
    Error,
}

/// A closed set of label values: every value is registered at zero before any event,
/// and `as_str` can return nothing else (each enum's test checks its list).
pub trait Label: Copy + 'static {
    /// Every value.
    const ALL: &'static [Self];
    /// The label value.
    fn as_str(self) -> &'static str;
}

macro_rules! labels {
    ($type:ty { $($variant:ident => $text:literal),* $(,)? }) => {
        impl Label for $type {
            const ALL: &'static [Self] = &[$(<$type>::$variant),*];
            fn as_str(self) -> &'static str {
                match self {
                    $(<$type>::$variant => $text),*
                }
            }
        }
    };
}

labels!(Rejection { BadRequest => "bad_request", PayloadTooLarge => "payload_too_large", Timeout => "timeout" });
labels!(HandshakeFailure { Timeout => "timeout", Error => "error" });
labels!(ReloadResult { Success => "success", Error => "error" });
labels!(ProbeResult { Success => "success", Failure => "failure" });
labels!(Transition { Up => "up", Down => "down" });
labels!(FallbackResult { Reverted => "reverted", Conflict => "conflict", Error => "error" });
labels!(VerifyResult { Served => "served", NotServed => "not_served", Error => "error" });

/// Operation label for requests whose operation is unknown (rejected bodies).
const UNKNOWN_OPERATION: &str = "unknown";
/// Image labels one review counts before adding them to the metrics.
const BATCHED_LABELS: usize = 8;

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
    fallbacks: IntCounterVec,
    fallback_stuck_pods: IntGauge,
    fallback_watch_restarts: IntCounter,
    verify_checks: IntCounterVec,
    verify_cache_hits: IntCounter,
    verify_budget_exceeded: IntCounter,
    resolved: Resolved,
}

/// The series an admission counts, resolved once. `with_label_values` hashes the label
/// values and takes the vector's lock on every call: once per admission and once per
/// upstream and reason among its images, ~0.15 µs of a 3-container admission's ~28
/// (benches/sample.sh). Shared by the clones; a label value not resolved here (an
/// upstream registered on another clone, the panic path's `unknown` operation) is
/// looked up as before, so what is counted does not depend on it.
#[derive(Debug, Clone)]
struct Resolved {
    /// `admission_requests_total`, [`OPERATION_LABELS`] by [`Outcome::ALL`].
    admissions: Arc<[[IntCounter; Outcome::ALL.len()]; OPERATION_LABELS.len()]>,
    /// `images_skipped_total`, by [`Reason::LABELS`].
    skipped: Arc<[IntCounter; Reason::LABELS.len()]>,
    /// `images_rewritten_total` of the upstreams registered on this value.
    rewritten: Arc<[(String, IntCounter)]>,
}

impl Resolved {
    fn new(admission_requests: &IntCounterVec, images_skipped: &IntCounterVec) -> Self {
        Self {
            admissions: Arc::new(OPERATION_LABELS.map(|operation| {
                Outcome::ALL.map(|outcome| {
                    admission_requests.with_label_values(&[operation, outcome.as_str()])
                })
            })),
            skipped: Arc::new(
                Reason::LABELS.map(|reason| images_skipped.with_label_values(&[reason])),
            ),
            rewritten: Arc::new([]),
        }
    }

    fn admission(&self, operation: &str, outcome: Outcome) -> Option<&IntCounter> {
        let operation = OPERATION_LABELS.iter().position(|&o| o == operation)?;
        let outcome = Outcome::ALL.iter().position(|&o| o == outcome)?;
        Some(&self.admissions[operation][outcome])
    }

    fn image(&self, rewritten: bool, label: &str) -> Option<&IntCounter> {
        if rewritten {
            self.rewritten
                .iter()
                .find_map(|(upstream, counter)| (upstream == label).then_some(counter))
        } else {
            let reason = Reason::LABELS.iter().position(|&r| r == label)?;
            Some(&self.skipped[reason])
        }
    }
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
        let fallbacks = IntCounterVec::new(
            opts(
                "fallbacks_total",
                "Containers the fallback controller tried to send back to their upstream \
                 images, by result.",
            ),
            &["result"],
        )?;
        let fallback_stuck_pods = IntGauge::with_opts(opts(
            "fallback_stuck_pods",
            "Pods with a container now stuck pulling its Harbor image, waiting to be sent back.",
        ))?;
        let fallback_watch_restarts = IntCounter::with_opts(opts(
            "fallback_watch_restarts_total",
            "Times the fallback controller's watch of the API server failed and was \
             re-established.",
        ))?;
        let verify_checks = IntCounterVec::new(
            opts(
                "verify_checks_total",
                "Checks of a rewritten image against Harbor (HEAD of its manifest), by result.",
            ),
            &["result"],
        )?;
        let verify_cache_hits = IntCounter::with_opts(opts(
            "verify_cache_hits_total",
            "Rewrites decided from a remembered check, without asking Harbor.",
        ))?;
        let verify_budget_exceeded = IntCounter::with_opts(opts(
            "verify_budget_exceeded_total",
            "Admissions that kept images upstream because a check did not finish within \
             verify.budget.",
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
            Box::new(fallbacks.clone()),
            Box::new(fallback_stuck_pods.clone()),
            Box::new(fallback_watch_restarts.clone()),
            Box::new(verify_checks.clone()),
            Box::new(verify_cache_hits.clone()),
            Box::new(verify_budget_exceeded.clone()),
        ] {
            registry.register(collector)?;
        }

        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        // Also makes every operation, outcome and reason series visible at zero.
        let resolved = Resolved::new(&admission_requests, &images_skipped);
        for rejection in Rejection::ALL {
            admission_requests.with_label_values(&[UNKNOWN_OPERATION, rejection.as_str()]);
        }
        register_all::<ReloadResult>(&tls_reloads);
        register_all::<HandshakeFailure>(&tls_handshake_failures);
        register_all::<ProbeResult>(&harbor_probes);
        register_all::<Transition>(&harbor_transitions);
        register_all::<FallbackResult>(&fallbacks);
        register_all::<VerifyResult>(&verify_checks);
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
            fallbacks,
            fallback_stuck_pods,
            fallback_watch_restarts,
            verify_checks,
            verify_cache_hits,
            verify_budget_exceeded,
            resolved,
        })
    }

    /// Makes the `upstream` series of every configured upstream visible at zero, and
    /// resolves them for this value and its later clones.
    pub fn register_upstreams<'a>(&mut self, upstreams: impl IntoIterator<Item = &'a str>) {
        let mut rewritten = self.resolved.rewritten.to_vec();
        for upstream in upstreams {
            let counter = self.images_rewritten.with_label_values(&[upstream]);
            if !rewritten.iter().any(|(known, _)| known == upstream) {
                rewritten.push((upstream.to_owned(), counter));
            }
        }
        self.resolved.rewritten = rewritten.into();
    }

    /// Counts one answered review and the decision on each of its images.
    pub fn observe_review(
        &self,
        operation: &'static str,
        outcome: Outcome,
        elapsed: Duration,
        changes: &[Change<'_, '_>],
    ) {
        match self.resolved.admission(operation, outcome) {
            Some(counter) => counter.inc(),
            None => self
                .admission_requests
                .with_label_values(&[operation, outcome.as_str()])
                .inc(),
        }
        self.admission_duration.observe(elapsed.as_secs_f64());
        if outcome == Outcome::FailOpen {
            self.fail_open_admissions.inc();
        }
        // Counted per label, then added: a label lookup hashes its values and takes a
        // lock, and a 50-container pod has 50 images but a handful of labels. On the
        // stack, so counting allocates nothing; labels past the first few of one pod
        // (rare) are looked up per image.
        let mut batched = [(true, "", 0_u64); BATCHED_LABELS];
        let mut used = 0;
        for change in changes {
            let (rewritten, label) = match &change.verdict {
                Verdict::Rewrite(r) => (true, r.upstream),
                Verdict::Keep(reason) => (false, reason.as_str()),
            };
            let (counted, free) = batched.split_at_mut(used);
            match counted
                .iter_mut()
                .find(|(r, l, _)| *r == rewritten && *l == label)
            {
                Some((_, _, count)) => *count += 1,
                None => match free.first_mut() {
                    Some(slot) => {
                        *slot = (rewritten, label, 1);
                        used += 1;
                    }
                    None => self.count_image(rewritten, label, 1),
                },
            }
        }
        for &(rewritten, label, count) in batched.iter().take(used) {
            self.count_image(rewritten, label, count);
        }
    }

    /// Adds `count` to `images_rewritten_total{upstream=label}` or
    /// `images_skipped_total{reason=label}`.
    fn count_image(&self, rewritten: bool, label: &str, count: u64) {
        match self.resolved.image(rewritten, label) {
            Some(counter) => counter.inc_by(count),
            None => self.image_counter(rewritten, label).inc_by(count),
        }
    }

    fn image_counter(&self, rewritten: bool, label: &str) -> IntCounter {
        if rewritten {
            self.images_rewritten.with_label_values(&[label])
        } else {
            self.images_skipped.with_label_values(&[label])
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
    pub fn observe_tls_reload(&self, result: ReloadResult) {
        self.tls_reloads.with_label_values(&[result.as_str()]).inc();
    }

    /// Records the notAfter of the certificate now served.
    pub fn set_cert_not_after(&self, unix_seconds: i64) {
        // f64 holds Unix seconds exactly until the year 285 million.
        #[allow(clippy::cast_precision_loss)]
        self.tls_cert_not_after.set(unix_seconds as f64);
    }

    /// Counts a handshake that did not complete.
    pub fn observe_handshake_failure(&self, failure: HandshakeFailure) {
        self.tls_handshake_failures
            .with_label_values(&[failure.as_str()])
            .inc();
    }

    /// Records whether images are rewritten now (the gate is open).
    pub fn set_harbor_up(&self, up: bool) {
        self.harbor_up.set(i64::from(up));
    }

    /// Counts one Harbor probe.
    pub fn observe_harbor_probe(&self, result: ProbeResult, elapsed: Duration) {
        self.harbor_probes
            .with_label_values(&[result.as_str()])
            .inc();
        self.harbor_probe_duration.observe(elapsed.as_secs_f64());
    }

    /// Counts a change of Harbor's availability.
    pub fn observe_harbor_transition(&self, to: Transition) {
        self.harbor_transitions
            .with_label_values(&[to.as_str()])
            .inc();
    }

    /// Counts `containers` sent back (or not) in one fallback patch.
    pub fn observe_fallback(&self, result: FallbackResult, containers: usize) {
        self.fallbacks
            .with_label_values(&[result.as_str()])
            .inc_by(u64::try_from(containers).unwrap_or(u64::MAX));
    }

    /// How many Pods have a container stuck pulling from Harbor now.
    pub fn set_fallback_stuck_pods(&self, pods: usize) {
        self.fallback_stuck_pods
            .set(i64::try_from(pods).unwrap_or(i64::MAX));
    }

    /// Counts a failed watch (or a client that could not be built) of the fallback
    /// controller.
    pub fn observe_fallback_watch_restart(&self) {
        self.fallback_watch_restarts.inc();
    }

    /// Counts one check of a rewrite against Harbor.
    pub fn observe_verify_check(&self, result: VerifyResult) {
        self.verify_checks
            .with_label_values(&[result.as_str()])
            .inc();
    }

    /// Counts a rewrite decided from a remembered check.
    pub fn observe_verify_cache_hit(&self) {
        self.verify_cache_hits.inc();
    }

    /// Counts an admission whose checks did not all finish within the budget.
    pub fn observe_verify_budget_exceeded(&self) {
        self.verify_budget_exceeded.inc();
    }

    /// The registry in the Prometheus text format (0.0.4), and its content type.
    pub fn encode(&self) -> Result<(Vec<u8>, String), prometheus::Error> {
        let encoder = TextEncoder::new();
        let mut out = Vec::with_capacity(8 * 1024);
        encoder.encode(&self.registry.gather(), &mut out)?;
        Ok((out, encoder.format_type().to_owned()))
    }
}

/// Makes every value of `L` visible at zero.
fn register_all<L: Label>(family: &IntCounterVec) {
    for value in L::ALL {
        family.with_label_values(&[value.as_str()]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_lists_are_complete_and_distinct() {
        fn check<L: Label + PartialEq + std::fmt::Debug>(every: &[L]) {
            for value in every {
                assert!(L::ALL.contains(value), "{value:?} missing from ALL");
            }
            let texts: std::collections::BTreeSet<_> = L::ALL.iter().map(|l| l.as_str()).collect();
            assert_eq!(texts.len(), L::ALL.len());
        }
        // Each list written out by variant: a variant added to an enum and not to its
        // `labels!` line fails to compile in the `match` the macro writes.
        check(&[
            Rejection::BadRequest,
            Rejection::PayloadTooLarge,
            Rejection::Timeout,
        ]);
        check(&[HandshakeFailure::Timeout, HandshakeFailure::Error]);
        check(&[ReloadResult::Success, ReloadResult::Error]);
        check(&[ProbeResult::Success, ProbeResult::Failure]);
        check(&[Transition::Up, Transition::Down]);
        check(&[
            VerifyResult::Served,
            VerifyResult::NotServed,
            VerifyResult::Error,
        ]);
        check(&[
            FallbackResult::Reverted,
            FallbackResult::Conflict,
            FallbackResult::Error,
        ]);
    }

    fn text(metrics: &Metrics) -> String {
        String::from_utf8(metrics.encode().unwrap().0).unwrap()
    }

    #[test]
    fn exposes_every_family_before_any_traffic() {
        let mut metrics = Metrics::new().unwrap();
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

    /// Each image counts once under its own label, however the images of one pod mix,
    /// and however many labels one pod has (past the few counted at once).
    #[rstest::rstest]
    #[case::mixed(
        "docker.io: hub\n  quay.io: quay",
        &["nginx", "quay.io/a/b", "redis", "ghcr.io/x/y", "quay.io/c/d", "busybox", "Bad Image"],
        &[
            "harbor_pilot_images_rewritten_total{upstream=\"docker.io\"} 6",
            "harbor_pilot_images_rewritten_total{upstream=\"quay.io\"} 4",
            "harbor_pilot_images_skipped_total{reason=\"not_proxied\"} 2",
            "harbor_pilot_images_skipped_total{reason=\"unparsable\"} 2",
        ]
    )]
    #[case::more_labels_than_counted_at_once(
        &(0..10).map(|i| format!("r{i}.example.com: p{i}")).collect::<Vec<_>>().join("\n  "),
        &(0..20).map(|i| format!("r{}.example.com/app:{i}", i % 10)).collect::<Vec<_>>(),
        &(0..10).map(|i| format!("harbor_pilot_images_rewritten_total{{upstream=\"r{i}.example.com\"}} 4")).collect::<Vec<_>>()
    )]
    fn counts_every_image_of_a_pod_under_its_label(
        #[case] proxies: &str,
        #[case] images: &[impl AsRef<str>],
        #[case] expected: &[impl AsRef<str>],
    ) {
        use harbor_pilot_core::admission::{Harbor, parse_review, review};
        let rules = harbor_pilot_core::config::Config::from_yaml(&format!(
            "harbor: harbor.example.com\nproxies:\n  {proxies}\n"
        ))
        .unwrap()
        .rules;
        let containers: Vec<_> = images
            .iter()
            .enumerate()
            .map(|(i, image)| serde_json::json!({"name": format!("c{i}"), "image": image.as_ref()}))
            .collect();
        let body = serde_json::json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "u", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "operation": "CREATE", "userInfo": {},
                "object": {"metadata": {"name": "p"}, "spec": {"containers": containers}}}
        });
        let body = serde_json::to_vec(&body).unwrap();
        let incoming = parse_review(&body).unwrap();
        let reviewed = review(
            &incoming,
            &rules,
            Harbor::Available,
            &harbor_pilot_core::patch::all_served,
        );
        // Counted the same whether the upstreams' series were resolved beforehand (as
        // the server does) or are looked up per review.
        for resolve in [true, false] {
            let mut metrics = Metrics::new().unwrap();
            if resolve {
                metrics.register_upstreams(rules.proxies().map(|(upstream, _)| upstream));
            }
            for _ in 0..2 {
                metrics.observe_review(
                    "CREATE",
                    reviewed.outcome,
                    Duration::from_micros(30),
                    &reviewed.changes,
                );
            }
            let text = text(&metrics);
            assert!(text.contains(
                "harbor_pilot_admission_requests_total{operation=\"CREATE\",outcome=\"rewritten\"} 2"
            ));
            for line in expected {
                let line = line.as_ref();
                assert!(text.contains(line), "missing {line} in\n{text}");
            }
        }
    }

    #[test]
    fn each_operation_and_outcome_is_counted_in_its_own_series() {
        let metrics = Metrics::new().unwrap();
        let pairs = || {
            OPERATION_LABELS
                .iter()
                .enumerate()
                .flat_map(|(o, &operation)| {
                    Outcome::ALL
                        .iter()
                        .enumerate()
                        .map(move |(i, &outcome)| (operation, outcome, o * 10 + i + 1))
                })
                .chain([("unknown", Outcome::Error, 99)])
        };
        for (operation, outcome, times) in pairs() {
            for _ in 0..times {
                metrics.observe_review(operation, outcome, Duration::from_micros(30), &[]);
            }
        }
        let text = text(&metrics);
        for (operation, outcome, times) in pairs() {
            let line = format!(
                "harbor_pilot_admission_requests_total{{operation=\"{operation}\",outcome=\"{}\"}} {times}\n",
                outcome.as_str()
            );
            assert!(text.contains(&line), "missing {line} in\n{text}");
        }
    }

    #[test]
    fn counts_reviews_rejections_and_reloads() {
        let metrics = Metrics::new().unwrap();
        metrics.observe_review("CREATE", Outcome::Unchanged, Duration::from_micros(30), &[]);
        metrics.observe_rejection(Rejection::PayloadTooLarge, Duration::from_micros(5));
        metrics.observe_tls_reload(ReloadResult::Error);
        metrics.set_cert_not_after(1_800_000_000);
        let text = text(&metrics);
        assert!(text.contains("operation=\"CREATE\",outcome=\"unchanged\"} 1"));
        assert!(text.contains("operation=\"unknown\",outcome=\"payload_too_large\"} 1"));
        assert!(text.contains("harbor_pilot_tls_reloads_total{result=\"error\"} 1"));
        assert!(text.contains("harbor_pilot_tls_cert_not_after_timestamp_seconds 1800000000"));
        assert!(text.contains("harbor_pilot_admission_duration_seconds_count 2"));
    }
}
