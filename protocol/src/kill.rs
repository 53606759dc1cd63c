//! A kill's identity: which container the kernel killed and when, so that one OOM kill bonks once
//! however many detectors report it.
//!
//! Two kinds of detector see the same kill, at different times and with different knowledge:
//! - the **kernel** (the node watcher reading `/dev/kmsg`) within milliseconds, with the kernel's
//!   own timestamp, the limit that fired and the processes involved;
//! - an **alert** (Prometheus through Alertmanager) tens of seconds to minutes later, whose
//!   `startsAt` is the first rule evaluation after the kill — the kill happened at or before it.
//!
//! Every detector bonk carries a [`Kill`]; hand-made bonks carry none and never merge. Whether a
//! new bonk reports a kill already bonked is decided by [`KillLedger::merge_target`], the one rule
//! every gateway replica and every desk applies, so they agree without talking to each other:
//! - a kill is keyed by its container (cluster, namespace, pod, container), or by its node when it
//!   was outside any pod. A missing cluster or container on either side matches any;
//! - an **alert** merges into the most recent **kernel** kill of its container at or before its
//!   `at` (allowing [`CLOCK_SKEW`]) and no older than the window — never into a later kill, so a
//!   crash-looping container's kills each keep their own bonk;
//! - failing that, an alert merges into an earlier bonked alert of **another rule** for the same
//!   container within the window (two rules that fire for one kill). The same rule firing again
//!   for the same labels with a new `startsAt` is a new episode, hence a new kill;
//! - a **kernel** kill reported after an alert (a watcher that was down and caught up) merges into
//!   that alert when the alert's own most recent kernel kill would be this one;
//! - two kernel kills are never the same kill (the watcher's stable ids take care of repeats).
//!
//! The window must cover scrape interval + rule evaluation + `for` + Alertmanager's `group_wait`
//! + a webhook retry: [`DEFAULT_WINDOW`] is 10 minutes.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::bonk::{Bonk, BonkId};

/// How long a kill is remembered and how far apart its reports may be.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(600);

/// How much later than an alert a kernel timestamp may be and still be its kill: node and
/// Prometheus clocks differ a little, and the kernel's monotonic time maps to wall time loosely.
pub const CLOCK_SKEW: Duration = Duration::from_secs(2);

/// Most kills a [`KillLedger`] remembers by default; the oldest are forgotten first.
pub const DEFAULT_MAX_KILLS: usize = 10_000;

/// What detected a kill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Detector {
    /// The kernel's own report, read by the node watcher.
    Kernel,
    /// A Prometheus alert, through Alertmanager and the gateway.
    Alert,
}

impl Detector {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Detector::Kernel => "kernel",
            Detector::Alert => "alert",
        }
    }
}

/// Which memory limit fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Limit {
    /// A container's memory limit (`CONSTRAINT_MEMCG` at the container's cgroup).
    Container,
    /// The pod's memory limit (`CONSTRAINT_MEMCG` at the pod's cgroup).
    Pod,
    /// Some other memory cgroup's limit (a systemd slice, a cgroup outside Kubernetes).
    Cgroup,
    /// The whole node ran out of memory (`CONSTRAINT_NONE`).
    Node,
    /// A NUMA constraint (`CONSTRAINT_CPUSET`, `CONSTRAINT_MEMORY_POLICY`).
    Numa,
    /// A limit this version does not know.
    #[serde(other)]
    Other,
}

impl Limit {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::Container => "container",
            Limit::Pod => "pod",
            Limit::Cgroup => "cgroup",
            Limit::Node => "node",
            Limit::Numa => "numa",
            Limit::Other => "other",
        }
    }
}

/// One OOM kill, as a detector saw it: the `kill` object of a detector's bonk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kill {
    /// Who saw it.
    pub by: Detector,
    /// When it happened: the kernel's timestamp, or for an alert its `startsAt` (the kill happened
    /// at or before it).
    pub at: DateTime<Utc>,
    /// The cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// The victim's namespace (absent for a process outside any pod).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The victim's pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// The victim's container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// The node; the key of a kill outside any pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Which limit fired, when the detector knows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<Limit>,
    /// The process whose allocation made the kernel kill, when it is not the victim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
}

impl Kill {
    /// A kill seen by `by` at `at`, with nothing else known yet.
    pub fn new(by: Detector, at: DateTime<Utc>) -> Kill {
        Kill {
            by,
            at,
            cluster: None,
            namespace: None,
            pod: None,
            container: None,
            node: None,
            limit: None,
            trigger: None,
        }
    }

    /// The ledger bucket: the pod, or the node for a kill outside any pod. `None` when the kill
    /// names neither, so it can never be matched.
    fn bucket(&self) -> Option<Bucket> {
        match (&self.namespace, &self.pod, &self.node) {
            (Some(namespace), Some(pod), _) => Some(Bucket::Pod(namespace.clone(), pod.clone())),
            (_, None, Some(node)) => Some(Bucket::Node(node.clone())),
            _ => None,
        }
    }

    /// True when both name the same place: same bucket, and cluster and container equal where
    /// both say.
    fn same_place(&self, other: &Kill) -> bool {
        let agree = |a: &Option<String>, b: &Option<String>| match (a, b) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        };
        agree(&self.cluster, &other.cluster) && agree(&self.container, &other.container)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Bucket {
    Pod(String, String),
    Node(String),
}

#[derive(Debug, Clone)]
struct Entry {
    kill: Kill,
    id: BonkId,
    /// The alert's name, for telling two rules apart from the same rule firing again.
    alertname: Option<String>,
}

/// The earlier bonk a report of the same kill merges into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Earlier {
    /// Its id.
    pub id: BonkId,
    /// Who detected it.
    pub by: Detector,
}

/// The kills recently bonked, and the one rule deciding whether a new report is one of them.
///
/// Bounded in age (the window plus [`CLOCK_SKEW`] after a kill was recorded) and in count, so
/// memory stays flat whatever detectors send.
#[derive(Debug)]
pub struct KillLedger {
    window: Duration,
    max_kills: usize,
    buckets: HashMap<Bucket, Vec<Entry>>,
    /// Insertion order, for forgetting the oldest.
    order: VecDeque<(Bucket, BonkId, Instant)>,
    len: usize,
}

impl KillLedger {
    /// A ledger that merges reports up to `window` apart and remembers at most `max_kills`.
    /// A zero window or count merges nothing.
    pub fn new(window: Duration, max_kills: usize) -> KillLedger {
        KillLedger {
            window,
            max_kills,
            buckets: HashMap::new(),
            order: VecDeque::new(),
            len: 0,
        }
    }

    /// How many kills are remembered.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no kill is remembered.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bonk that already stands for `bonk`'s kill, if any: see the module docs for the rule.
    /// `None` for a bonk without a kill, and never the bonk's own id.
    pub fn merge_target(&mut self, bonk: &Bonk, now: Instant) -> Option<&BonkId> {
        self.target(bonk, now).map(|e| &e.id)
    }

    /// Like [`KillLedger::merge_target`], also saying which detector reported the earlier bonk.
    pub fn earlier(&mut self, bonk: &Bonk, now: Instant) -> Option<Earlier> {
        self.target(bonk, now).map(|e| Earlier {
            id: e.id.clone(),
            by: e.kill.by,
        })
    }

    fn target(&mut self, bonk: &Bonk, now: Instant) -> Option<&Entry> {
        self.forget_old(now);
        let kill = bonk.kill.as_ref()?;
        let entries = self.buckets.get(&kill.bucket()?)?;
        let window = chrono::Duration::from_std(self.window).unwrap_or(chrono::Duration::MAX);
        let skew = chrono::Duration::from_std(CLOCK_SKEW).unwrap_or_default();
        let candidates = entries
            .iter()
            .filter(|e| e.id != bonk.id && e.kill.same_place(kill));
        match kill.by {
            Detector::Alert => {
                let kernel = candidates
                    .clone()
                    .filter(|e| e.kill.by == Detector::Kernel)
                    .filter(|e| e.kill.at <= kill.at + skew && kill.at - e.kill.at <= window)
                    .max_by_key(|e| e.kill.at);
                kernel.or_else(|| {
                    candidates
                        .filter(|e| e.kill.by == Detector::Alert)
                        .filter(|e| e.alertname != bonk.alertname)
                        .filter(|e| (kill.at - e.kill.at).abs() <= window)
                        .min_by_key(|e| (kill.at - e.kill.at).abs())
                })
            }
            Detector::Kernel => candidates
                .clone()
                .filter(|e| e.kill.by == Detector::Alert)
                .filter(|e| kill.at <= e.kill.at + skew && e.kill.at - kill.at <= window)
                // The alert belongs to its most recent kernel kill: not this one when a later
                // kernel kill of the same place came before the alert.
                .filter(|alert| {
                    !entries.iter().any(|other| {
                        other.kill.by == Detector::Kernel
                            && other.id != bonk.id
                            && other.kill.same_place(kill)
                            && other.kill.at > kill.at
                            && other.kill.at <= alert.kill.at + skew
                    })
                })
                .min_by_key(|e| e.kill.at),
        }
    }

    /// Remembers that `bonk` was bonked for its kill (nothing for a bonk without one, or one
    /// already remembered).
    pub fn record(&mut self, bonk: &Bonk, now: Instant) {
        if self.max_kills == 0 || self.window.is_zero() {
            return;
        }
        self.forget_old(now);
        let Some(kill) = &bonk.kill else {
            return;
        };
        let Some(bucket) = kill.bucket() else {
            return;
        };
        // Nearly every container has one kill in the window: room for exactly one (a growing
        // `Vec` would reserve four).
        let entries = self
            .buckets
            .entry(bucket.clone())
            .or_insert_with(|| Vec::with_capacity(1));
        if entries.iter().any(|e| e.id == bonk.id) {
            return;
        }
        entries.push(Entry {
            kill: kill.clone(),
            id: bonk.id.clone(),
            alertname: bonk.alertname.clone(),
        });
        self.order.push_back((bucket, bonk.id.clone(), now));
        self.len += 1;
        while self.len > self.max_kills {
            self.forget_oldest();
        }
    }

    fn retention(&self) -> Duration {
        self.window + CLOCK_SKEW
    }

    fn forget_old(&mut self, now: Instant) {
        let retention = self.retention();
        while self
            .order
            .front()
            .is_some_and(|(_, _, at)| now.saturating_duration_since(*at) >= retention)
        {
            self.forget_oldest();
        }
    }

    fn forget_oldest(&mut self) {
        let Some((bucket, id, _)) = self.order.pop_front() else {
            return;
        };
        if let Some(entries) = self.buckets.get_mut(&bucket) {
            let before = entries.len();
            entries.retain(|e| e.id != id);
            self.len -= before - entries.len();
            if entries.is_empty() {
                self.buckets.remove(&bucket);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bonk::{Severity, Source};

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-03T07:00:00Z")
            .expect("time")
            .with_timezone(&Utc)
    }

    fn secs(n: i64) -> chrono::Duration {
        chrono::Duration::seconds(n)
    }

    fn kill_bonk(by: Detector, at: DateTime<Utc>, container: Option<&str>) -> Bonk {
        let mut kill = Kill::new(by, at);
        kill.namespace = Some("payments".to_owned());
        kill.pod = Some("api-1".to_owned());
        kill.container = container.map(str::to_owned);
        let mut bonk = Bonk::new(
            match by {
                Detector::Kernel => Source::Watcher,
                Detector::Alert => Source::Alertmanager,
            },
            Severity::Critical,
        );
        if by == Detector::Alert {
            bonk.alertname = Some("OOMKilled".to_owned());
        }
        bonk.kill = Some(kill);
        bonk
    }

    fn ledger() -> KillLedger {
        KillLedger::new(DEFAULT_WINDOW, 100)
    }

    #[test]
    fn an_alert_merges_into_the_kernel_kill_before_it() {
        let mut ledger = ledger();
        let now = Instant::now();
        let kernel = kill_bonk(Detector::Kernel, t0(), Some("app"));
        ledger.record(&kernel, now);
        let alert = kill_bonk(Detector::Alert, t0() + secs(75), Some("app"));
        assert_eq!(ledger.merge_target(&alert, now), Some(&kernel.id));
        // A missing container on either side matches.
        let vague = kill_bonk(Detector::Alert, t0() + secs(75), None);
        assert_eq!(ledger.merge_target(&vague, now), Some(&kernel.id));
        // Another container, another pod, or too late: no merge.
        let other = kill_bonk(Detector::Alert, t0() + secs(75), Some("sidecar"));
        assert_eq!(ledger.merge_target(&other, now), None);
        let mut elsewhere = alert.clone();
        elsewhere.kill.as_mut().expect("kill").pod = Some("api-2".to_owned());
        assert_eq!(ledger.merge_target(&elsewhere, now), None);
        let late = kill_bonk(Detector::Alert, t0() + secs(601), Some("app"));
        assert_eq!(ledger.merge_target(&late, now), None);
    }

    #[test]
    fn an_alert_never_merges_into_a_later_kill() {
        let mut ledger = ledger();
        let now = Instant::now();
        let kernel = kill_bonk(Detector::Kernel, t0() + secs(60), Some("app"));
        ledger.record(&kernel, now);
        let early = kill_bonk(Detector::Alert, t0() + secs(30), Some("app"));
        assert_eq!(ledger.merge_target(&early, now), None);
        // Within the clock skew it is the same kill.
        let close = kill_bonk(Detector::Alert, t0() + secs(59), Some("app"));
        assert_eq!(ledger.merge_target(&close, now), Some(&kernel.id));
    }

    #[test]
    fn a_crash_loop_merges_each_alert_with_its_own_kill() {
        let mut ledger = ledger();
        let now = Instant::now();
        let kills: Vec<Bonk> = (0..3)
            .map(|n| kill_bonk(Detector::Kernel, t0() + secs(30 * n), Some("app")))
            .collect();
        for kill in &kills {
            ledger.record(kill, now);
        }
        for (n, kill) in kills.iter().enumerate() {
            let alert = kill_bonk(
                Detector::Alert,
                t0() + secs(30 * n as i64 + 20),
                Some("app"),
            );
            assert_eq!(ledger.merge_target(&alert, now), Some(&kill.id), "kill {n}");
        }
    }

    #[test]
    fn two_rules_for_one_kill_merge_but_one_rule_firing_again_does_not() {
        let mut ledger = ledger();
        let now = Instant::now();
        let first = kill_bonk(Detector::Alert, t0(), Some("app"));
        ledger.record(&first, now);
        let mut other_rule = kill_bonk(Detector::Alert, t0() + secs(15), Some("app"));
        other_rule.alertname = Some("ContainerOOMEvent".to_owned());
        assert_eq!(ledger.merge_target(&other_rule, now), Some(&first.id));
        let again = kill_bonk(Detector::Alert, t0() + secs(400), Some("app"));
        assert_eq!(ledger.merge_target(&again, now), None);
        // Its own id is never a merge target.
        assert_eq!(ledger.merge_target(&first, now), None);
    }

    #[test]
    fn a_late_kernel_report_merges_into_the_alert_it_explains() {
        let mut ledger = ledger();
        let now = Instant::now();
        let alert = kill_bonk(Detector::Alert, t0() + secs(60), Some("app"));
        ledger.record(&alert, now);
        let kernel = kill_bonk(Detector::Kernel, t0(), Some("app"));
        assert_eq!(ledger.merge_target(&kernel, now), Some(&alert.id));
        // Once a later kernel kill explains the alert, an earlier one is a kill of its own.
        let later = kill_bonk(Detector::Kernel, t0() + secs(40), Some("app"));
        ledger.record(&later, now);
        assert_eq!(ledger.merge_target(&kernel, now), None);
    }

    #[test]
    fn kernel_kills_never_merge_with_each_other() {
        let mut ledger = ledger();
        let now = Instant::now();
        let first = kill_bonk(Detector::Kernel, t0(), Some("app"));
        ledger.record(&first, now);
        let second = kill_bonk(Detector::Kernel, t0() + secs(1), Some("app"));
        assert_eq!(ledger.merge_target(&second, now), None);
    }

    #[test]
    fn node_kills_are_keyed_by_node_and_hand_made_bonks_never_merge() {
        let mut ledger = ledger();
        let now = Instant::now();
        let mut kernel = Bonk::new(Source::Watcher, Severity::Critical);
        let mut kill = Kill::new(Detector::Kernel, t0());
        kill.node = Some("node-1".to_owned());
        kill.limit = Some(Limit::Node);
        kernel.kill = Some(kill.clone());
        ledger.record(&kernel, now);
        let mut alert = Bonk::new(Source::Alertmanager, Severity::Warning);
        alert.kill = Some(Kill {
            by: Detector::Alert,
            at: t0() + secs(90),
            ..kill.clone()
        });
        assert_eq!(ledger.merge_target(&alert, now), Some(&kernel.id));
        alert.kill.as_mut().expect("kill").node = Some("node-2".to_owned());
        assert_eq!(ledger.merge_target(&alert, now), None);
        let manual = Bonk::new(Source::Manual, Severity::Critical);
        ledger.record(&manual, now);
        assert_eq!(ledger.merge_target(&manual, now), None);
        assert_eq!(ledger.len(), 1);
    }

    #[test]
    fn kills_are_forgotten_by_age_and_count() {
        let mut ledger = KillLedger::new(Duration::from_secs(60), 3);
        let start = Instant::now();
        let bonks: Vec<Bonk> = (0..4)
            .map(|n| kill_bonk(Detector::Kernel, t0() + secs(n), Some("app")))
            .collect();
        for bonk in &bonks {
            ledger.record(bonk, start);
            ledger.record(bonk, start);
        }
        assert_eq!(ledger.len(), 3);
        let alert = kill_bonk(Detector::Alert, t0() + secs(5), Some("app"));
        assert_eq!(ledger.merge_target(&alert, start), Some(&bonks[3].id));
        let later = start + Duration::from_secs(60) + CLOCK_SKEW;
        assert_eq!(ledger.merge_target(&alert, later), None);
        assert!(ledger.is_empty());
    }

    #[test]
    fn the_kill_object_round_trips_and_tolerates_unknown_limits() {
        let mut kill = Kill::new(Detector::Kernel, t0());
        kill.limit = Some(Limit::Pod);
        kill.trigger = Some("java".to_owned());
        let text = serde_json::to_string(&kill).expect("serialises");
        assert_eq!(
            text,
            r#"{"by":"kernel","at":"2026-12-03T07:00:00Z","limit":"pod","trigger":"java"}"#
        );
        let back: Kill = serde_json::from_str(&text).expect("parses");
        assert_eq!(back, kill);
        let future: Kill =
            serde_json::from_str(r#"{"by":"alert","at":"2026-12-03T07:00:00Z","limit":"swap"}"#)
                .expect("parses");
        assert_eq!(future.limit, Some(Limit::Other));
    }
}
