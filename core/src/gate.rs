//! Whether Harbor is available, with hysteresis, and the shared flag the admission path
//! reads.
//!
//! [`Hysteresis`] turns a stream of probe results into a state: it takes
//! `failure_threshold` consecutive failures to go down and `success_threshold`
//! consecutive successes to come back, so a flapping Harbor does not flip pods between
//! registries on every probe. It starts [`Availability::Unknown`], and the first success
//! opens it: a fresh cluster has no Harbor yet, and pods must start anyway.
//!
//! [`HarborGate`] is what the admission path holds: one atomic load, no lock, no I/O.
//!
//! Pure: no I/O; the prober in the binary feeds it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

/// What harbor-pilot believes about Harbor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    /// Not probed successfully yet (start-up): images are left alone.
    Unknown,
    /// Healthy: images are rewritten.
    Up,
    /// Failed `failure_threshold` probes in a row: images are left alone.
    Down,
}

impl Availability {
    /// Lower-case name, for logs and labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Availability::Unknown => "unknown",
            Availability::Up => "up",
            Availability::Down => "down",
        }
    }

    fn to_u8(self) -> u8 {
        match self {
            Availability::Unknown => 0,
            Availability::Up => 1,
            Availability::Down => 2,
        }
    }

    fn from_u8(value: u8) -> Self {
        match value {
            1 => Availability::Up,
            2 => Availability::Down,
            _ => Availability::Unknown,
        }
    }
}

/// Consecutive-result counting between states.
#[derive(Debug, Clone)]
pub struct Hysteresis {
    state: Availability,
    failure_threshold: u32,
    success_threshold: u32,
    failures: u32,
    successes: u32,
}

impl Hysteresis {
    /// Starts `Unknown`. Thresholds below 1 count as 1.
    pub fn new(failure_threshold: u32, success_threshold: u32) -> Self {
        Self {
            state: Availability::Unknown,
            failure_threshold: failure_threshold.max(1),
            success_threshold: success_threshold.max(1),
            failures: 0,
            successes: 0,
        }
    }

    /// The current state.
    pub fn state(&self) -> Availability {
        self.state
    }

    /// Records one probe result; returns the new state when it changed.
    pub fn observe(&mut self, success: bool) -> Option<Availability> {
        if success {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
        }
        let next = match self.state {
            // The first success opens the gate: nothing to protect before Harbor exists.
            Availability::Unknown if success => Availability::Up,
            Availability::Unknown | Availability::Up if self.failures >= self.failure_threshold => {
                Availability::Down
            }
            Availability::Down if self.successes >= self.success_threshold => Availability::Up,
            state => state,
        };
        (next != self.state).then(|| {
            self.state = next;
            next
        })
    }
}

/// The availability the admission path reads; cloned into the prober, which writes it.
#[derive(Debug, Clone)]
pub struct HarborGate(Option<Arc<AtomicU8>>);

impl HarborGate {
    /// No health check configured: always rewrite.
    pub fn always_open() -> Self {
        Self(None)
    }

    /// A gate fed by a prober, starting `Unknown` (closed).
    pub fn probed() -> Self {
        Self(Some(Arc::new(AtomicU8::new(Availability::Unknown.to_u8()))))
    }

    /// Whether images may be rewritten now.
    pub fn is_open(&self) -> bool {
        self.availability() == Availability::Up
    }

    /// The current state (`Up` when no health check is configured).
    pub fn availability(&self) -> Availability {
        match &self.0 {
            None => Availability::Up,
            Some(state) => Availability::from_u8(state.load(Ordering::Acquire)),
        }
    }

    /// Whether a prober feeds this gate.
    pub fn is_probed(&self) -> bool {
        self.0.is_some()
    }

    /// Publishes a new state (the prober's job).
    pub fn set(&self, availability: Availability) {
        if let Some(state) = &self.0 {
            state.store(availability.to_u8(), Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    /// Feeds `results` ('+' success, '-' failure) and returns the state after each.
    fn run(failure_threshold: u32, success_threshold: u32, results: &str) -> String {
        let mut gate = Hysteresis::new(failure_threshold, success_threshold);
        results
            .chars()
            .map(|c| {
                gate.observe(c == '+');
                match gate.state() {
                    Availability::Unknown => '?',
                    Availability::Up => 'U',
                    Availability::Down => 'D',
                }
            })
            .collect()
    }

    #[rstest]
    #[case::first_success_opens(2, 1, "+", "U")]
    #[case::unknown_until_first_success(2, 1, "-+", "?U")]
    #[case::never_up_goes_down(2, 1, "--+", "?DU")]
    #[case::two_failures_to_go_down(2, 1, "+--", "UUD")]
    #[case::a_success_resets_the_failures(2, 1, "+-+-+-", "UUUUUU")]
    #[case::flapping_below_the_threshold_never_flips(3, 2, "+--+--+--+", "UUUUUUUUUU")]
    #[case::needs_success_threshold_to_return(2, 3, "+--++-+++", "UUDDDDDDU")]
    #[case::a_failure_resets_the_successes(2, 2, "+--+-+", "UUDDDD")]
    #[case::threshold_one(1, 1, "+-+-", "UDUD")]
    fn follows_the_thresholds(
        #[case] failures: u32,
        #[case] successes: u32,
        #[case] results: &str,
        #[case] states: &str,
    ) {
        assert_eq!(run(failures, successes, results), states, "{results}");
    }

    #[test]
    fn reports_only_changes() {
        let mut gate = Hysteresis::new(2, 1);
        assert_eq!(gate.observe(true), Some(Availability::Up));
        assert_eq!(gate.observe(true), None);
        assert_eq!(gate.observe(false), None);
        assert_eq!(gate.observe(false), Some(Availability::Down));
        assert_eq!(gate.observe(false), None);
        assert_eq!(gate.observe(true), Some(Availability::Up));
    }

    #[test]
    fn the_shared_gate_starts_closed_and_follows_the_prober() {
        let gate = HarborGate::probed();
        assert!(!gate.is_open());
        let reader = gate.clone();
        gate.set(Availability::Up);
        assert!(reader.is_open());
        gate.set(Availability::Down);
        assert_eq!(reader.availability(), Availability::Down);
        assert!(HarborGate::always_open().is_open());
    }
}
