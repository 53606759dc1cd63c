//! Which bonks a desk performs: deduplication, maximum age and the rate limit.
//!
//! Pure bookkeeping with the clock passed in, so every rule is unit-tested without waiting:
//! - the same bonk id seen again within the dedupe window → `duplicate` (replicated gateways and
//!   Alertmanager HA pairs deliver the same alert twice; QoS 1 may redeliver). The window slides:
//!   every repeat refreshes the id, so an alert re-sent for days is performed once;
//! - a bonk for a kill this desk already moved for within the kill window → `duplicate` too.
//!   The gateway normally merges an alert into the watcher's bonk for the same kill; this is the
//!   backstop when it could not (a gateway restarted in between, a broker that lost its state, a
//!   bonk published by another tool). The rule is the protocol's [`KillLedger`], the same one
//!   the gateway applies;
//! - older than the maximum age (by `sent_at`, else `fired_at`) → `expired`, so a Pi that was off
//!   overnight does not wake up and bonk forty times;
//! - more performed bonks in the window than the rate limit allows → `rate_limited`, and the bonk
//!   is coalesced into the next performed one, whose stroke count grows (capped by the motion).

use std::collections::VecDeque;
use std::time::Duration;

use bonker_protocol::{Bonk, BonkId, KillLedger, RecentIds, Severity};
use chrono::{DateTime, Utc};
use tokio::time::Instant;

/// What to do with a bonk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
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
    /// Reports a kill this desk already moved for, as the `earlier` bonk.
    SameKill {
        /// The bonk already performed for this kill.
        earlier: BonkId,
    },
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
pub(crate) struct PolicySettings {
    /// Maximum age; `None` = never expire.
    pub max_age: Option<Duration>,
    /// How long an id is remembered after it was last seen.
    pub dedupe_window: Duration,
    /// Most ids remembered.
    pub dedupe_max_entries: usize,
    /// How far apart two reports of one kill may be; zero merges nothing.
    pub kill_window: Duration,
    /// Most kills remembered.
    pub max_kills: usize,
    /// Performed bonks allowed per window.
    pub rate_max_bonks: u32,
    /// The rate window.
    pub rate_window: Duration,
}

/// The desk's bonk policy and its memory.
#[derive(Debug)]
pub(crate) struct Policy {
    settings: PolicySettings,
    seen: RecentIds,
    kills: KillLedger,
    performed: VecDeque<Instant>,
    coalesced_count: u32,
    coalesced_severity: Option<Severity>,
}

impl Policy {
    /// A policy with empty memory.
    pub(crate) fn new(settings: PolicySettings) -> Self {
        Self {
            settings,
            seen: RecentIds::new(settings.dedupe_max_entries, settings.dedupe_window),
            kills: KillLedger::new(settings.kill_window, settings.max_kills),
            performed: VecDeque::new(),
            coalesced_count: 0,
            coalesced_severity: None,
        }
    }

    /// Decides what to do with `bonk`, received at `now` (monotonic) / `wall` (its clock).
    ///
    /// A `Perform` decision counts toward the rate limit at once; when its move cannot be queued
    /// the caller hands it back with [`Policy::coalesce_instead`].
    pub(crate) fn decide(&mut self, bonk: &Bonk, now: Instant, wall: DateTime<Utc>) -> Decision {
        self.forget_old(now);
        let std_now = now.into_std();
        if self.seen.seen_again(&bonk.id, std_now) {
            return Decision::Duplicate;
        }
        self.seen.insert(bonk.id.clone(), std_now);
        if let (Some(max_age), Some(reference)) = (self.settings.max_age, bonk.reference_time()) {
            // A bonk from the future (clock skew) has age zero.
            let age = (wall - reference).to_std().unwrap_or(Duration::ZERO);
            if age > max_age {
                return Decision::Expired { age };
            }
        }
        if let Some(earlier) = self.kills.merge_target(bonk, std_now) {
            return Decision::SameKill {
                earlier: earlier.clone(),
            };
        }
        // Performed now or coalesced into the next move: either way, this kill moved the arm.
        self.kills.record(bonk, std_now);
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
    pub(crate) fn coalesce_instead(&mut self, count: u32, severity: Severity) {
        self.performed.pop_back();
        self.coalesced_count = self.coalesced_count.saturating_add(count);
        self.coalesced_severity = self.coalesced_severity.max(Some(severity));
    }

    /// Events waiting to be coalesced into the next performed bonk.
    pub(crate) fn coalesced(&self) -> u32 {
        self.coalesced_count
    }

    fn forget_old(&mut self, now: Instant) {
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
    use bonker_protocol::{Detector, Kill, Source};

    use super::*;

    fn settings() -> PolicySettings {
        PolicySettings {
            max_age: Some(Duration::from_secs(600)),
            dedupe_window: Duration::from_secs(3600),
            dedupe_max_entries: 100,
            kill_window: Duration::from_secs(600),
            max_kills: 100,
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

    #[test]
    fn an_id_repeated_more_often_than_the_window_is_long_stays_a_duplicate() {
        let mut policy = Policy::new(PolicySettings {
            dedupe_window: Duration::from_secs(60),
            ..settings()
        });
        let start = Instant::now();
        let b = bonk(Severity::Critical);
        assert!(matches!(
            policy.decide(&b, start, Utc::now()),
            Decision::Perform { .. }
        ));
        for n in 1..20 {
            let at = start + Duration::from_secs(50 * n);
            assert_eq!(
                policy.decide(&b, at, Utc::now()),
                Decision::Duplicate,
                "repeat {n}"
            );
        }
    }

    fn kill_bonk(source: Source, by: Detector, at: DateTime<Utc>) -> Bonk {
        let mut bonk = Bonk::new(source, Severity::Critical);
        let mut kill = Kill::new(by, at);
        kill.namespace = Some("payments".into());
        kill.pod = Some("api-0".into());
        kill.container = Some("api".into());
        bonk.kill = Some(kill);
        bonk.alertname = (by == Detector::Alert).then(|| "OOMKilled".to_owned());
        bonk
    }

    #[test]
    fn a_second_report_of_a_kill_already_performed_is_a_duplicate() {
        let mut policy = Policy::new(settings());
        let now = Instant::now();
        let wall = Utc::now();
        let watcher = kill_bonk(Source::Watcher, Detector::Kernel, wall);
        assert!(matches!(
            policy.decide(&watcher, now, wall),
            Decision::Perform { .. }
        ));
        let alert = kill_bonk(
            Source::Alertmanager,
            Detector::Alert,
            wall + chrono::Duration::seconds(70),
        );
        assert_eq!(
            policy.decide(&alert, now, wall),
            Decision::SameKill {
                earlier: watcher.id.clone()
            }
        );
        // A hand-made bonk for the same pod is not a kill report: performed.
        let mut manual = bonk(Severity::Critical);
        manual.pod = Some("api-0".into());
        assert!(matches!(
            policy.decide(&manual, now, wall),
            Decision::Perform { .. }
        ));
    }

    #[test]
    fn each_kill_of_a_crash_loop_is_its_own_bonk() {
        let mut policy = Policy::new(PolicySettings {
            rate_max_bonks: 1000,
            ..settings()
        });
        let now = Instant::now();
        let wall = Utc::now();
        for n in 0..3 {
            let at = wall + chrono::Duration::seconds(30 * n);
            let kernel = kill_bonk(Source::Watcher, Detector::Kernel, at);
            assert!(
                matches!(policy.decide(&kernel, now, wall), Decision::Perform { .. }),
                "kill {n}"
            );
            let alert = kill_bonk(
                Source::Alertmanager,
                Detector::Alert,
                at + chrono::Duration::seconds(10),
            );
            assert_eq!(
                policy.decide(&alert, now, wall),
                Decision::SameKill { earlier: kernel.id },
                "alert {n}"
            );
        }
    }

    #[test]
    fn an_expired_report_does_not_stand_for_its_kill() {
        let mut policy = Policy::new(settings());
        let now = Instant::now();
        let wall = Utc::now();
        let mut late = kill_bonk(Source::Watcher, Detector::Kernel, wall);
        late.sent_at = Some(wall - chrono::Duration::seconds(900));
        assert!(matches!(
            policy.decide(&late, now, wall),
            Decision::Expired { .. }
        ));
        let alert = kill_bonk(
            Source::Alertmanager,
            Detector::Alert,
            wall + chrono::Duration::seconds(5),
        );
        assert!(matches!(
            policy.decide(&alert, now, wall),
            Decision::Perform { .. }
        ));
    }
}
