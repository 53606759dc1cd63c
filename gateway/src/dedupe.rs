//! The dedupe window: bonk ids this gateway already got accepted by the broker.
//!
//! Alertmanager re-sends still-firing alerts (`group_interval`, `repeat_interval`) and both
//! members of an HA pair may deliver the same notification; one alert instance must bonk once.
//! The window is bounded in size and age, so memory stays flat whatever Alertmanager sends.
//!
//! An id is remembered only once its publish succeeded: a notification answered with 503 must
//! bonk when Alertmanager retries it. Two identical notifications arriving at the same moment may
//! both publish; the stable bonk id lets desks drop the second (as they do for duplicates coming
//! through another gateway replica).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bonker_protocol::BonkId;

/// Remembers recently published bonk ids.
#[derive(Debug)]
pub struct DedupeWindow {
    max_entries: usize,
    max_age: Duration,
    seen: HashMap<BonkId, Instant>,
    order: VecDeque<(BonkId, Instant)>,
}

impl DedupeWindow {
    /// A window of at most `max_entries` ids, each kept for `max_age`. `max_entries == 0`
    /// remembers nothing.
    pub fn new(max_entries: usize, max_age: Duration) -> Self {
        Self {
            max_entries,
            max_age,
            seen: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// True when `id` was published within the window.
    pub fn contains(&mut self, id: &BonkId, now: Instant) -> bool {
        self.evict(now);
        self.seen.contains_key(id)
    }

    /// Remembers `id` as published at `now`.
    pub fn insert(&mut self, id: BonkId, now: Instant) {
        if self.max_entries == 0 {
            return;
        }
        self.evict(now);
        if self.seen.contains_key(&id) {
            return;
        }
        self.seen.insert(id.clone(), now);
        self.order.push_back((id, now));
        while self.order.len() > self.max_entries {
            self.pop_oldest();
        }
    }

    /// How many ids are remembered.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    fn evict(&mut self, now: Instant) {
        while let Some((_, inserted)) = self.order.front() {
            if now.saturating_duration_since(*inserted) < self.max_age {
                break;
            }
            self.pop_oldest();
        }
    }

    fn pop_oldest(&mut self) {
        if let Some((id, _)) = self.order.pop_front() {
            self.seen.remove(&id);
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
        let mut window = DedupeWindow::new(10, Duration::from_secs(60));
        let now = Instant::now();
        assert!(!window.contains(&id(1), now));
        window.insert(id(1), now);
        window.insert(id(1), now);
        assert!(window.contains(&id(1), now));
        assert!(!window.contains(&id(2), now));
        assert_eq!(window.len(), 1);
    }

    #[test]
    fn forgets_after_max_age() {
        let mut window = DedupeWindow::new(10, Duration::from_secs(60));
        let start = Instant::now();
        window.insert(id(1), start);
        window.insert(id(2), start + Duration::from_secs(30));
        assert!(window.contains(&id(1), start + Duration::from_secs(59)));
        assert!(!window.contains(&id(1), start + Duration::from_secs(60)));
        assert!(window.contains(&id(2), start + Duration::from_secs(60)));
        assert_eq!(window.len(), 1);
    }

    #[test]
    fn forgets_the_oldest_beyond_max_entries() {
        let mut window = DedupeWindow::new(3, Duration::from_secs(60));
        let now = Instant::now();
        for n in 0..5 {
            window.insert(id(n), now);
        }
        assert_eq!(window.len(), 3);
        assert!(!window.contains(&id(0), now));
        assert!(!window.contains(&id(1), now));
        assert!(window.contains(&id(4), now));
    }

    #[test]
    fn zero_entries_switches_deduplication_off() {
        let mut window = DedupeWindow::new(0, Duration::from_secs(60));
        let now = Instant::now();
        window.insert(id(1), now);
        assert!(!window.contains(&id(1), now));
        assert!(window.is_empty());
    }
}
