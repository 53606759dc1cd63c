//! Which bonks a desk performs: deduplication, maximum age and the rate limit.
//!
//! Pure bookkeeping with the clock passed in, so every rule is unit-tested without waiting:
//! - the same bonk id seen again within the dedupe window → `duplicate` (replicated gateways and
//!   Alertmanager HA pairs deliver the same alert twice; QoS 1 may redeliver);
//! - older than the maximum age (by `sent_at`, else `fired_at`) → `expired`, so a Pi that was off
//!   overnight does not wake up and bonk forty times;
//! - more performed bonks in the window than the rate limit allows → `rate_limited`, and the bonk
//!   is coalesced into the next performed one, whose stroke count grows (capped by the motion).

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use bonker_protocol::{Bonk, BonkId, Severity};
use chrono::{DateTime, Utc};
use tokio::time::Instant;

/// What to do with a bonk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Bonk Tux: `count` events (this bonk's plus the coalesced ones), at `severity` (the
    /// strongest among them).
    Perform {
        /// Events this move stands for.
        count: u32,
        /// Motion severity.
        severity: Severity,
    },
    /// Seen before within the window.
    Duplicate,
    /// Too old.
    Expired {
        /// How old it was.
        age: Duration,
    },
    /// Over the rate limit; coalesced into the next performed bonk.
    RateLimited,
}

/// The policy's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicySettings {
    /// Maximum age; `None` = never expire.
    pub max_age: Option<Duration>,
    /// How long an id is remembered.
    pub dedupe_window: Duration,
    /// Most ids remembered.
    pub dedupe_max_entries: usize,
    /// Performed bonks allowed per window.
    pub rate_max_bonks: u32,
    /// The rate window.
    pub rate_window: Duration,
}

/// The desk's bonk policy and its memory.
#[derive(Debug)]
pub struct Policy {
    settings: PolicySettings,
    seen: HashSet<BonkId>,
    seen_order: VecDeque<(Instant, BonkId)>,
    performed: VecDeque<Instant>,
    coalesced_count: u32,
    coalesced_severity: Option<Severity>,
}

impl Policy {
    /// A policy with empty memory.
    pub fn new(settings: PolicySettings) -> Self {
        Self {
            settings,
            seen: HashSet::new(),
            seen_order: VecDeque::new(),
            performed: VecDeque::new(),
            coalesced_count: 0,
            coalesced_severity: None,
        }
    }

    /// Decides what to do with `bonk`, received at `now` (monotonic) / `wall` (its clock).
    ///
    /// A `Perform` decision counts toward the rate limit at once; when its move cannot be queued
    /// the caller hands it back with [`Policy::coalesce_instead`].
    pub fn decide(&mut self, bonk: &Bonk, now: Instant, wall: DateTime<Utc>) -> Decision {
        self.forget_old(now);
        if self.seen.contains(&bonk.id) {
            return Decision::Duplicate;
        }
        self.remember(bonk.id.clone(), now);
        if let (Some(max_age), Some(reference)) = (self.settings.max_age, bonk.reference_time()) {
            // A bonk from the future (clock skew) has age zero.
            let age = (wall - reference).to_std().unwrap_or(Duration::ZERO);
            if age > max_age {
                return Decision::Expired { age };
            }
        }
        if self.performed.len() >= self.settings.rate_max_bonks as usize {
            self.coalesced_count = self.coalesced_count.saturating_add(bonk.count.max(1));
            self.coalesced_severity = self.coalesced_severity.max(Some(bonk.severity));
            return Decision::RateLimited;
        }
        self.performed.push_back(now);
        let count = bonk.count.max(1).saturating_add(self.coalesced_count);
        let severity = self
            .coalesced_severity
            .take()
            .map_or(bonk.severity, |coalesced| coalesced.max(bonk.severity));
        self.coalesced_count = 0;
        Decision::Perform { count, severity }
    }

    /// Undoes the rate-limit accounting of the last `Perform` when its move could not be queued
    /// after all, coalescing it instead.
    pub fn coalesce_instead(&mut self, count: u32, severity: Severity) {
        self.performed.pop_back();
        self.coalesced_count = self.coalesced_count.saturating_add(count);
        self.coalesced_severity = self.coalesced_severity.max(Some(severity));
    }

    /// Events waiting to be coalesced into the next performed bonk.
    pub fn coalesced(&self) -> u32 {
        self.coalesced_count
    }

    fn remember(&mut self, id: BonkId, now: Instant) {
        if self.seen_order.len() >= self.settings.dedupe_max_entries
            && let Some((_, oldest)) = self.seen_order.pop_front()
        {
            self.seen.remove(&oldest);
        }
        self.seen.insert(id.clone());
        self.seen_order.push_back((now, id));
    }

    fn forget_old(&mut self, now: Instant) {
        while let Some((at, _)) = self.seen_order.front() {
            if now.duration_since(*at) < self.settings.dedupe_window {
                break;
            }
            if let Some((_, id)) = self.seen_order.pop_front() {
                self.seen.remove(&id);
            }
        }
        while let Some(at) = self.performed.front() {
            if now.duration_since(*at) < self.settings.rate_window {
                break;
            }
            self.performed.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use bonker_protocol::Source;

    use super::*;

    fn settings() -> PolicySettings {
        PolicySettings {
            max_age: Some(Duration::from_secs(600)),
            dedupe_window: Duration::from_secs(3600),
            dedupe_max_entries: 100,
            rate_max_bonks: 2,
            rate_window: Duration::from_secs(60),
        }
    }

    fn bonk(severity: Severity) -> Bonk {
        Bonk::new(Source::Manual, severity)
    }

    #[test]
    fn a_fresh_bonk_is_performed_and_its_id_remembered() {
        let mut policy = Policy::new(settings());
        let now = Instant::now();
        let b = bonk(Severity::Warning);
        assert_eq!(
            policy.decide(&b, now, Utc::now()),
            Decision::Perform {
                count: 1,
                severity: Severity::Warning
            }
        );
        assert_eq!(policy.decide(&b, now, Utc::now()), Decision::Duplicate);
        // Past the window the id is forgotten.
        let later = now + Duration::from_secs(3601);
        assert!(matches!(
            policy.decide(&b, later, Utc::now()),
            Decision::Perform { .. }
        ));
    }

    #[test]
    fn old_bonks_expire_by_sent_at_then_fired_at() {
        let mut policy = Policy::new(settings());
        let now = Instant::now();
        let wall = Utc::now();
        let mut old = bonk(Severity::Critical);
        old.sent_at = Some(wall - chrono::Duration::seconds(601));
        assert!(matches!(
            policy.decide(&old, now, wall),
            Decision::Expired { age } if age >= Duration::from_secs(601)
        ));
        let mut fired = bonk(Severity::Critical);
        fired.sent_at = None;
        fired.fired_at = Some(wall - chrono::Duration::hours(8));
        assert!(matches!(
            policy.decide(&fired, now, wall),
            Decision::Expired { .. }
        ));
        let mut undated = bonk(Severity::Critical);
        undated.sent_at = None;
        assert!(matches!(
            policy.decide(&undated, now, wall),
            Decision::Perform { .. }
        ));
        let mut future = bonk(Severity::Critical);
        future.sent_at = Some(wall + chrono::Duration::hours(1));
        assert!(matches!(
            policy.decide(&future, now, wall),
            Decision::Perform { .. }
        ));
        let mut never = Policy::new(PolicySettings {
            max_age: None,
            ..settings()
        });
        let mut ancient = bonk(Severity::Critical);
        ancient.sent_at = Some(wall - chrono::Duration::days(365));
        assert!(matches!(
            never.decide(&ancient, now, wall),
            Decision::Perform { .. }
        ));
    }

    #[test]
    fn bonks_over_the_rate_limit_are_coalesced_into_the_next_performed_one() {
        let mut policy = Policy::new(settings());
        let now = Instant::now();
        let wall = Utc::now();
        for _ in 0..2 {
            assert!(matches!(
                policy.decide(&bonk(Severity::Info), now, wall),
                Decision::Perform { count: 1, .. }
            ));
        }
        let mut storm = bonk(Severity::Critical);
        storm.count = 3;
        assert_eq!(policy.decide(&storm, now, wall), Decision::RateLimited);
        assert_eq!(
            policy.decide(&bonk(Severity::Info), now, wall),
            Decision::RateLimited
        );
        assert_eq!(policy.coalesced(), 4);
        let later = now + Duration::from_secs(61);
        assert_eq!(
            policy.decide(&bonk(Severity::Info), later, wall),
            Decision::Perform {
                count: 5,
                severity: Severity::Critical
            }
        );
        assert_eq!(policy.coalesced(), 0);
    }

    #[test]
    fn a_move_that_cannot_be_queued_is_coalesced_into_the_next() {
        let mut policy = Policy::new(settings());
        let now = Instant::now();
        assert_eq!(
            policy.decide(&bonk(Severity::Warning), now, Utc::now()),
            Decision::Perform {
                count: 1,
                severity: Severity::Warning
            }
        );
        policy.coalesce_instead(1, Severity::Warning);
        assert_eq!(policy.coalesced(), 1);
        assert_eq!(
            policy.decide(&bonk(Severity::Info), now, Utc::now()),
            Decision::Perform {
                count: 2,
                severity: Severity::Warning
            }
        );
    }

    #[test]
    fn the_dedupe_memory_is_bounded() {
        let mut policy = Policy::new(PolicySettings {
            dedupe_max_entries: 3,
            rate_max_bonks: 1000,
            ..settings()
        });
        let now = Instant::now();
        let first = bonk(Severity::Info);
        policy.decide(&first, now, Utc::now());
        for _ in 0..3 {
            policy.decide(&bonk(Severity::Info), now, Utc::now());
        }
        assert!(matches!(
            policy.decide(&first, now, Utc::now()),
            Decision::Perform { .. }
        ));
    }
}
