//! What the gateway remembers of the bonks on the broker: which alert instances already bonked,
//! and which kills.
//!
//! Alertmanager re-sends a still-firing alert every `repeat_interval` for as long as it fires,
//! both members of an HA pair deliver it, and every gateway replica may be the one that receives
//! it; a kill is also seen first by the node watcher, a minute or more before any alert. One alert
//! instance, and one kill, must bonk once. So the gateway learns every detector's bonk on the
//! broker (its own, the other replicas', the watchers') and, for each firing alert, decides:
//! - **duplicate** — the same alert instance (same id) was seen within the dedupe window, which
//!   slides: each repeat refreshes it, so an alert firing for days bonks once;
//! - **merged** — the alert reports a kill an earlier bonk already stands for (the rule is
//!   [`KillLedger`]'s, shared with the desks);
//! - **fresh** — publish it.
//!
//! An id or kill is remembered once it is on the broker (this gateway's PUBACK, or the bonk seen
//! on its subscription): a notification answered with 503 must bonk when Alertmanager retries it.
//! Both are bounded in count and age, so memory stays flat whatever is published.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bonker_protocol::{Bonk, Earlier, KillLedger, RecentIds, Source};

/// What to do with a firing alert's bonk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Publish it.
    Fresh,
    /// The same alert instance already bonked.
    Duplicate,
    /// Its kill already bonked, as this earlier bonk.
    Merged(Earlier),
}

/// Recent bonk ids and kills, learnt from the broker and from this gateway's publishes.
#[derive(Debug)]
pub struct Recall {
    ids: RecentIds,
    kills: KillLedger,
}

impl Recall {
    /// Remembers up to `max_ids` ids, each for `id_age` after it was last seen, and up to
    /// `max_kills` kills for `kill_window`.
    pub fn new(
        max_ids: usize,
        id_age: Duration,
        kill_window: Duration,
        max_kills: usize,
    ) -> Recall {
        Recall {
            ids: RecentIds::new(max_ids, id_age),
            kills: KillLedger::new(kill_window, max_kills),
        }
    }

    /// Decides about a firing alert's bonk. A repeat refreshes the id's place in the window.
    pub fn judge(&mut self, bonk: &Bonk, now: Instant) -> Verdict {
        if self.ids.seen_again(&bonk.id, now) {
            return Verdict::Duplicate;
        }
        match self.kills.earlier(bonk, now) {
            Some(earlier) => Verdict::Merged(earlier),
            None => Verdict::Fresh,
        }
    }

    /// Remembers a bonk that is on the broker: published by this gateway, or seen on the
    /// subscription. Hand-made bonks are left out: they never merge, and their ids are random.
    pub fn observe(&mut self, bonk: &Bonk, now: Instant) {
        if bonk.source == Source::Manual && bonk.kill.is_none() {
            return;
        }
        self.ids.insert(bonk.id.clone(), now);
        self.kills.record(bonk, now);
    }

    /// Remembers the id of an alert merged into an earlier bonk, so its repeats are duplicates.
    pub fn merged(&mut self, bonk: &Bonk, now: Instant) {
        self.ids.insert(bonk.id.clone(), now);
    }

    /// How many ids and kills are remembered.
    pub fn len(&self) -> (usize, usize) {
        (self.ids.len(), self.kills.len())
    }
}

/// Locks the recall; a panic elsewhere while holding it leaves data that is still worth using.
pub(crate) fn lock(recall: &Mutex<Recall>) -> MutexGuard<'_, Recall> {
    recall.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use bonker_protocol::{BonkId, Detector, Kill, Severity};
    use chrono::Utc;

    use super::*;

    fn recall() -> Recall {
        Recall::new(10, Duration::from_secs(60), Duration::from_secs(600), 10)
    }

    fn detector_bonk(source: Source, by: Detector, id: &str) -> Bonk {
        let mut bonk = Bonk::new(source, Severity::Critical);
        bonk.id = BonkId::stable(&[id]);
        let mut kill = Kill::new(by, Utc::now());
        kill.namespace = Some("payments".into());
        kill.pod = Some("api-0".into());
        kill.container = Some("api".into());
        bonk.kill = Some(kill);
        bonk.alertname = (by == Detector::Alert).then(|| "OOMKilled".to_owned());
        bonk
    }

    #[test]
    fn an_alert_after_the_watchers_bonk_merges_and_its_repeats_are_duplicates() {
        let mut recall = recall();
        let now = Instant::now();
        let watcher = detector_bonk(Source::Watcher, Detector::Kernel, "w");
        recall.observe(&watcher, now);
        let mut alert = detector_bonk(Source::Alertmanager, Detector::Alert, "a");
        alert.kill.as_mut().expect("kill").at += chrono::Duration::seconds(60);
        assert_eq!(
            recall.judge(&alert, now),
            Verdict::Merged(Earlier {
                id: watcher.id.clone(),
                by: Detector::Kernel
            })
        );
        recall.merged(&alert, now);
        assert_eq!(recall.judge(&alert, now), Verdict::Duplicate);
    }

    #[test]
    fn the_id_window_slides_with_every_repeat() {
        let mut recall = recall();
        let start = Instant::now();
        let mut alert = detector_bonk(Source::Alertmanager, Detector::Alert, "a");
        alert.kill = None;
        assert_eq!(recall.judge(&alert, start), Verdict::Fresh);
        recall.observe(&alert, start);
        // Repeated every 50 s, the 60 s window never forgets it.
        for n in 1..10 {
            let at = start + Duration::from_secs(50 * n);
            assert_eq!(recall.judge(&alert, at), Verdict::Duplicate, "repeat {n}");
        }
        // After a silence longer than the window, it is new again.
        assert_eq!(
            recall.judge(&alert, start + Duration::from_secs(450 + 61)),
            Verdict::Fresh
        );
    }

    #[test]
    fn hand_made_bonks_are_not_remembered() {
        let mut recall = recall();
        let now = Instant::now();
        let manual = Bonk::new(Source::Manual, Severity::Critical);
        recall.observe(&manual, now);
        assert_eq!(recall.len(), (0, 0));
        assert_eq!(recall.judge(&manual, now), Verdict::Fresh);
    }
}
