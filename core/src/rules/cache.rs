//! [`CachedRules`]: a [`RuleSet`] that remembers its answers per image string.
//!
//! Parsing a reference with oci-spec costs 1-6 µs, and the pods of one ReplicaSet carry
//! the same images again and again, so most admissions hit. The cache changes no answer
//! (a test and the fuzz invariants compare it with [`RuleSet::decide`]); it is a separate
//! type so the rule set stays plain data, and it owns the rule set it caches, so the
//! positions it stores (of a proxy, of an exclude pattern) always index that set.
//!
//! No I/O; the one shared state is a lock around the map.

use std::collections::HashMap;
use std::fmt;
use std::sync::RwLock;

// foldhash instead of std's SipHash: hashing the image strings was ~1.2 µs of a
// 50-container admission (benches/sample.sh). Its state is seeded at random per
// process, as std's is, so the keys pods bring cannot be chosen to collide.
use foldhash::fast::RandomState;

use super::{Answer, Decision, RuleSet};

/// How many image strings are remembered; the map is emptied when full.
const CAPACITY: usize = 8192;
/// Longer image strings are decided every time (no valid reference is this long).
const MAX_IMAGE_LEN: usize = 512;

/// A [`RuleSet`] with a bounded memory of its decisions.
pub struct CachedRules {
    rules: RuleSet,
    memo: RwLock<HashMap<Box<str>, Answer, RandomState>>,
}

impl CachedRules {
    /// Caches `rules`' decisions.
    pub fn new(rules: RuleSet) -> Self {
        Self {
            rules,
            memo: RwLock::new(HashMap::default()),
        }
    }

    /// The rules themselves (uncached).
    pub fn rule_set(&self) -> &RuleSet {
        &self.rules
    }

    /// The Harbor host pods pull from.
    pub fn harbor(&self) -> &str {
        self.rules.harbor()
    }

    /// Upstream registry → project.
    pub fn proxies(&self) -> impl Iterator<Item = (&str, &str)> {
        self.rules.proxies()
    }

    /// What [`RuleSet::decide`] answers, remembered for the next pod with the same image
    /// (up to 8,192 image strings).
    pub fn decide(&self, image: &str) -> Decision<'_> {
        {
            let memo = self.memo.read().unwrap_or_else(|p| p.into_inner());
            if let Some(answer) = memo.get(image) {
                return self.rules.resolve(answer);
            }
        }
        let answer = self.rules.answer(image);
        let decision = self.rules.resolve(&answer);
        if image.len() <= MAX_IMAGE_LEN {
            let mut memo = self.memo.write().unwrap_or_else(|p| p.into_inner());
            if memo.len() >= CAPACITY {
                memo.clear();
            }
            memo.insert(image.into(), answer);
        }
        decision
    }
}

impl fmt::Debug for CachedRules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let len = self.memo.read().map_or(0, |m| m.len());
        f.debug_struct("CachedRules")
            .field("rules", &self.rules)
            .field("remembered", &len)
            .finish()
    }
}

impl Clone for CachedRules {
    /// A clone starts with an empty memory: it is a cache, not state.
    fn clone(&self) -> Self {
        Self::new(self.rules.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn cached() -> CachedRules {
        Config::from_yaml(
            "harbor: harbor.example.com\nproxies: {docker.io: hub, quay.io: quay}\n\
             exclude: [docker.io/library/ubuntu]\n",
        )
        .unwrap()
        .rules
    }

    #[test]
    fn remembered_decisions_equal_fresh_ones() {
        let rules = cached();
        for image in [
            "nginx:alpine",
            "quay.io/a/b:1",
            "ubuntu:22.04",
            "gcr.io/a/b",
            "Nginx",
            "auto",
            "harbor.example.com/x/y",
            &format!("quay.io/{}", "a".repeat(250)),
        ] {
            let fresh = rules.rule_set().decide(image);
            assert_eq!(rules.decide(image), fresh, "first {image}");
            assert_eq!(rules.decide(image), fresh, "remembered {image}");
        }
    }

    #[test]
    fn stays_bounded() {
        let rules = cached();
        for i in 0..(CAPACITY + 10) {
            rules.decide(&format!("nginx:{i}"));
        }
        rules.decide(&format!("quay.io/{}", "a".repeat(MAX_IMAGE_LEN)));
        let len = rules.memo.read().unwrap().len();
        assert!(len <= CAPACITY, "{len}");
    }

    #[test]
    fn a_clone_starts_empty_and_answers_the_same() {
        let rules = cached();
        let first = rules.decide("nginx");
        let clone = rules.clone();
        assert!(clone.memo.read().unwrap().is_empty());
        assert_eq!(clone.decide("nginx"), first);
    }
}
