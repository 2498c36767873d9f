//! `verify`: before an image is rewritten, ask Harbor whether it can serve the rewrite
//! (`HEAD` of the manifest, token flow included), without slowing an admission past
//! `verify.budget`.
//!
//! Answers are remembered per rewritten image: a success for `ttl`, a failure for
//! `failureTtl`, at most [`CAPACITY`] of them (least recently used first out). An image
//! not known yet gets one check, however many admissions ask for it at once; each of
//! them waits for it at most the budget, together with every other check it needs, and
//! then keeps the image upstream for this admission (`unverified`). The check goes on
//! and its answer is there for the next Pod.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use harbor_pilot_core::config::Verify;
use harbor_pilot_core::reference::ImageRef;
use harbor_pilot_core::verdict::Served;
use tokio::sync::watch;

use crate::metrics::{Metrics, VerifyResult};
use crate::registry::{RegistryClient, RegistryError};

/// Rewritten images whose answer is remembered at most.
pub const CAPACITY: usize = 4096;

/// The answer of one check: served, or what Harbor said instead.
type Answer = Result<(), String>;

/// Checks rewrites against Harbor and remembers the answers.
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

struct Inner {
    client: RegistryClient,
    settings: Verify,
    metrics: Metrics,
    known: Mutex<Known>,
}

#[derive(Default)]
struct Known {
    entries: HashMap<String, Entry>,
    /// Bumped on every use; an entry's `used` orders the evictions.
    clock: u64,
}

struct Entry {
    state: State,
    used: u64,
}

enum State {
    Checked { answer: Answer, until: Instant },
    Checking(watch::Receiver<Option<Answer>>),
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// A verifier for `settings`, with its own registry client.
    pub fn new(settings: Verify, metrics: Metrics) -> Result<Self, RegistryError> {
        let client = RegistryClient::new(settings.ca_file.as_deref())?;
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                settings,
                metrics,
                known: Mutex::new(Known::default()),
            }),
        })
    }

    /// Whether Harbor serves each of `images` (rewritten references), waiting at most
    /// the budget for those not known yet.
    pub async fn served(&self, images: Vec<String>) -> HashMap<String, Served> {
        let mut out = HashMap::with_capacity(images.len());
        let mut waiting = Vec::new();
        {
            let mut known = self.inner.known.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            for image in images {
                match known.lookup(&image, now) {
                    Some(Lookup::Answer(answer)) => {
                        self.inner.metrics.observe_verify_cache_hit();
                        out.insert(image, served(answer));
                    }
                    Some(Lookup::Checking(receiver)) => waiting.push((image, receiver)),
                    None => {
                        let receiver = self.start_check(&mut known, &image);
                        waiting.push((image, receiver));
                    }
                }
            }
        }
        if waiting.is_empty() {
            return out;
        }
        let waits = waiting.iter_mut().map(|(_, receiver)| async move {
            // A closed channel means the check task is gone; its entry says so.
            let _ = receiver.wait_for(Option::is_some).await;
        });
        let in_time =
            tokio::time::timeout(self.inner.settings.budget, futures::future::join_all(waits))
                .await
                .is_ok();
        if !in_time {
            self.inner.metrics.observe_verify_budget_exceeded();
        }
        for (image, receiver) in waiting {
            let answer = receiver.borrow().clone();
            out.insert(image, answer.map_or(Served::Unknown, served));
        }
        out
    }

    /// Records a check of `image` as in flight and starts it.
    fn start_check(&self, known: &mut Known, image: &str) -> watch::Receiver<Option<Answer>> {
        let (sender, receiver) = watch::channel(None);
        known.insert(image, State::Checking(receiver.clone()));
        let verifier = self.clone();
        let image = image.to_owned();
        tokio::spawn(async move {
            let answer = verifier.check(&image).await;
            let ttl = if answer.is_ok() {
                verifier.inner.settings.ttl
            } else {
                verifier.inner.settings.failure_ttl
            };
            {
                let mut known = verifier
                    .inner
                    .known
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                known.insert(
                    &image,
                    State::Checked {
                        answer: answer.clone(),
                        until: Instant::now() + ttl,
                    },
                );
            }
            let _ = sender.send(Some(answer));
        });
        receiver
    }

    /// One `HEAD` of the rewritten image's manifest (by digest when it has one).
    async fn check(&self, image: &str) -> Answer {
        let reference = ImageRef::parse(image).map_err(|e| e.to_string())?;
        let tag_or_digest = reference
            .digest()
            .or(reference.tag())
            .unwrap_or("latest")
            .to_owned();
        let started = Instant::now();
        let result = self
            .inner
            .client
            .head_manifest(reference.domain(), reference.path(), &tag_or_digest)
            .await;
        let (label, answer) = match result {
            Ok(_) => (VerifyResult::Served, Ok(())),
            Err(error @ RegistryError::Status { .. }) => {
                (VerifyResult::NotServed, Err(error.to_string()))
            }
            Err(error) => (
                VerifyResult::Error,
                Err(harbor_pilot_core::chain::one_line(&error)),
            ),
        };
        self.inner.metrics.observe_verify_check(label);
        tracing::debug!(image, took = ?started.elapsed(), answer = ?answer, "verified a rewrite against Harbor");
        answer
    }
}

fn served(answer: Answer) -> Served {
    match answer {
        Ok(()) => Served::Yes,
        Err(said) => Served::No(said),
    }
}

enum Lookup {
    Answer(Answer),
    Checking(watch::Receiver<Option<Answer>>),
}

impl Known {
    /// What is known about `image` now (an expired answer is not).
    fn lookup(&mut self, image: &str, now: Instant) -> Option<Lookup> {
        self.clock += 1;
        let clock = self.clock;
        let entry = self.entries.get_mut(image)?;
        entry.used = clock;
        match &entry.state {
            State::Checked { answer, until } if *until > now => {
                Some(Lookup::Answer(answer.clone()))
            }
            State::Checked { .. } => None,
            State::Checking(receiver) => Some(Lookup::Checking(receiver.clone())),
        }
    }

    /// Sets `image`'s state, making room when full: expired answers go first, then the
    /// least recently used tenth (checks in flight stay).
    fn insert(&mut self, image: &str, state: State) {
        self.clock += 1;
        if self.entries.len() >= CAPACITY && !self.entries.contains_key(image) {
            let now = Instant::now();
            self.entries
                .retain(|_, e| !matches!(e.state, State::Checked { until, .. } if until <= now));
            if self.entries.len() >= CAPACITY {
                let mut by_use: Vec<(u64, String)> = self
                    .entries
                    .iter()
                    .filter(|(_, e)| matches!(e.state, State::Checked { .. }))
                    .map(|(k, e)| (e.used, k.clone()))
                    .collect();
                by_use.sort_unstable();
                for (_, key) in by_use.into_iter().take(CAPACITY / 10 + 1) {
                    self.entries.remove(&key);
                }
            }
        }
        self.entries.insert(
            image.to_owned(),
            Entry {
                state,
                used: self.clock,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn checked(ok: bool, for_secs: u64) -> State {
        State::Checked {
            answer: if ok {
                Ok(())
            } else {
                Err("HTTP 404".to_owned())
            },
            until: Instant::now() + Duration::from_secs(for_secs),
        }
    }

    #[test]
    fn remembers_answers_until_they_expire() {
        let mut known = Known::default();
        known.insert("a", checked(true, 60));
        known.insert("b", checked(false, 0));
        let now = Instant::now();
        assert!(matches!(
            known.lookup("a", now),
            Some(Lookup::Answer(Ok(())))
        ));
        assert!(known.lookup("b", now).is_none(), "expired");
        assert!(known.lookup("c", now).is_none());
    }

    #[test]
    fn stays_bounded_and_evicts_the_least_recently_used() {
        let mut known = Known::default();
        for i in 0..CAPACITY {
            known.insert(&format!("image-{i}"), checked(true, 60));
        }
        // Used just now: survives the eviction.
        assert!(known.lookup("image-0", Instant::now()).is_some());
        known.insert("one-more", checked(true, 60));
        assert!(known.entries.len() <= CAPACITY);
        assert!(known.entries.contains_key("image-0"));
        assert!(!known.entries.contains_key("image-1"));
        assert!(known.entries.contains_key("one-more"));
    }
}
