//! The bonk ids seen recently, so one bonk is performed once however often it arrives.
//!
//! Replicated gateways and Alertmanager HA pairs deliver the same alert twice, QoS 1 may
//! redeliver, and Alertmanager re-sends a still-firing alert every `repeat_interval`, with the same
//! id, for as long as it fires (days, for some rules). The window therefore **slides**: seeing an
//! id again refreshes it, so an alert repeated more often than the window is long is remembered
//! for as long as it keeps coming, and bonks once.
//!
//! Bounded in count (the least recently seen id is forgotten first) and in age.

use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use lru::LruCache;

use crate::bonk::BonkId;

/// Bonk ids seen within a sliding window.
#[derive(Debug)]
pub struct RecentIds {
    max_age: Duration,
    /// `None` remembers nothing.
    seen: Option<LruCache<BonkId, Instant>>,
}

impl RecentIds {
    /// A window of at most `max_entries` ids, each kept `max_age` after it was last seen.
    /// `max_entries == 0` remembers nothing.
    pub fn new(max_entries: usize, max_age: Duration) -> RecentIds {
        RecentIds {
            max_age,
            seen: NonZeroUsize::new(max_entries).map(LruCache::new),
        }
    }

    /// True when `id` was seen within the window; seeing it refreshes it.
    pub fn seen_again(&mut self, id: &BonkId, now: Instant) -> bool {
        self.forget_old(now);
        let Some(seen) = &mut self.seen else {
            return false;
        };
        match seen.get_mut(id) {
            Some(at) => {
                *at = now;
                true
            }
            None => false,
        }
    }

    /// Remembers `id` as seen at `now`.
    pub fn insert(&mut self, id: BonkId, now: Instant) {
        self.forget_old(now);
        if let Some(seen) = &mut self.seen {
            seen.put(id, now);
        }
    }

    /// How many ids are remembered.
    pub fn len(&self) -> usize {
        self.seen.as_ref().map_or(0, LruCache::len)
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn forget_old(&mut self, now: Instant) {
        let Some(seen) = &mut self.seen else {
            return;
        };
        while seen
            .peek_lru()
            .is_some_and(|(_, at)| now.saturating_duration_since(*at) >= self.max_age)
        {
            seen.pop_lru();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> BonkId {
        BonkId::stable(&[&n.to_string()])
    }

    #[test]
    fn remembers_what_was_inserted() {
        let mut recent = RecentIds::new(10, Duration::from_secs(60));
        let now = Instant::now();
        assert!(!recent.seen_again(&id(1), now));
        recent.insert(id(1), now);
        recent.insert(id(1), now);
        assert!(recent.seen_again(&id(1), now));
        assert!(!recent.seen_again(&id(2), now));
        assert_eq!(recent.len(), 1);
    }

    #[test]
    fn forgets_after_max_age_without_a_repeat() {
        let mut recent = RecentIds::new(10, Duration::from_secs(60));
        let start = Instant::now();
        recent.insert(id(1), start);
        recent.insert(id(2), start + Duration::from_secs(30));
        assert!(!recent.seen_again(&id(1), start + Duration::from_secs(60)));
        assert!(recent.seen_again(&id(2), start + Duration::from_secs(60)));
        assert_eq!(recent.len(), 1);
    }

    #[test]
    fn a_repeat_slides_the_window() {
        let mut recent = RecentIds::new(10, Duration::from_secs(60));
        let start = Instant::now();
        recent.insert(id(1), start);
        // Seen every 50 s for an hour: never forgotten.
        for n in 1..=72 {
            let at = start + Duration::from_secs(50 * n);
            assert!(recent.seen_again(&id(1), at), "repeat {n}");
        }
        let quiet = start + Duration::from_secs(50 * 72 + 60);
        assert!(!recent.seen_again(&id(1), quiet));
    }

    #[test]
    fn forgets_the_least_recently_seen_beyond_max_entries() {
        let mut recent = RecentIds::new(3, Duration::from_secs(60));
        let now = Instant::now();
        for n in 0..3 {
            recent.insert(id(n), now);
        }
        assert!(recent.seen_again(&id(0), now));
        recent.insert(id(3), now);
        assert_eq!(recent.len(), 3);
        assert!(recent.seen_again(&id(0), now), "refreshed, so kept");
        assert!(
            !recent.seen_again(&id(1), now),
            "least recently seen, so forgotten"
        );
    }

    #[test]
    fn zero_entries_switches_deduplication_off() {
        let mut recent = RecentIds::new(0, Duration::from_secs(60));
        let now = Instant::now();
        recent.insert(id(1), now);
        assert!(!recent.seen_again(&id(1), now));
        assert!(recent.is_empty());
    }
}
