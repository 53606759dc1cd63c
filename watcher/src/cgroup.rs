//! Memory cgroup OOM-kill counters: the cross-check that catches what the kernel log misses.
//!
//! The kernel counts every OOM kill in the victim's memory cgroup — `oom_kill` in
//! `memory.oom_control` on cgroup v1, `oom_kill` in `memory.events.local` (or `memory.events`) on
//! cgroup v2 — whether or not its log line was written, rate-limited, overwritten or unparseable.
//! [`Counters`] reads those counters for the whole hierarchy; [`CounterTracker`] turns successive
//! readings into "n new kills in cgroup X"; [`Ledger`] matches them against the kills the kernel
//! log reported, so each kill is reported exactly once, by whichever source saw it first.
//!
//! v1 counters are per cgroup; v2's `memory.events` also counts the kills of all descendants.
//! Where only a hierarchical counter exists, a kill is attributed to the deepest cgroup that
//! counted it (its own increase minus its children's). A cgroup removed between two scans takes
//! its counter with it; on v2 its parent still counted the kill, which is then matched against a
//! kernel-log kill in the removed child.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Which cgroup hierarchy holds the memory controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hierarchy {
    /// cgroup v1: the memory controller's own mount (e.g. `/sys/fs/cgroup/memory`).
    V1 {
        /// The mount point.
        root: PathBuf,
    },
    /// cgroup v2: the unified mount (e.g. `/sys/fs/cgroup`).
    V2 {
        /// The mount point.
        root: PathBuf,
    },
}

/// The memory controller was not found below the configured root.
#[derive(Debug, thiserror::Error)]
#[error(
    "no memory cgroup controller under {root}: expected {root}/memory/memory.oom_control \
     (cgroup v1) or {root}/cgroup.controllers listing `memory` (cgroup v2)"
)]
pub struct NoMemoryController {
    /// The root that was searched.
    pub root: String,
}

impl Hierarchy {
    /// Finds the memory controller under `cgroup_root` (normally `/sys/fs/cgroup`, or the host's
    /// cgroup tree mounted into a container). Accepts the v1 memory mount itself too.
    pub fn detect(cgroup_root: &Path) -> Result<Hierarchy, NoMemoryController> {
        if cgroup_root.join("memory.oom_control").is_file() {
            return Ok(Hierarchy::V1 {
                root: cgroup_root.to_owned(),
            });
        }
        let v1 = cgroup_root.join("memory");
        if v1.join("memory.oom_control").is_file() {
            return Ok(Hierarchy::V1 { root: v1 });
        }
        let controllers =
            std::fs::read_to_string(cgroup_root.join("cgroup.controllers")).unwrap_or_default();
        if controllers.split_whitespace().any(|c| c == "memory") {
            return Ok(Hierarchy::V2 {
                root: cgroup_root.to_owned(),
            });
        }
        Err(NoMemoryController {
            root: cgroup_root.display().to_string(),
        })
    }

    /// The mount point whose relative paths the kernel log prints.
    pub fn root(&self) -> &Path {
        match self {
            Hierarchy::V1 { root } | Hierarchy::V2 { root } => root,
        }
    }

    /// `v1` or `v2`.
    pub fn version(&self) -> &'static str {
        match self {
            Hierarchy::V1 { .. } => "v1",
            Hierarchy::V2 { .. } => "v2",
        }
    }
}

/// One reading of every cgroup's OOM-kill counter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Path relative to the hierarchy root, as the kernel prints it (`/` for the root,
    /// `/kubepods/…` below it), to its `oom_kill` count.
    pub counts: BTreeMap<String, u64>,
    /// True when a count includes the cgroup's descendants (v2 without `memory.events.local`).
    pub hierarchical: bool,
}

impl Counters {
    /// Reads the counters of every cgroup in `hierarchy`. Cgroups that vanish mid-scan are
    /// skipped; only an unreadable root is an error.
    pub fn read(hierarchy: &Hierarchy) -> io::Result<Counters> {
        let root = hierarchy.root();
        std::fs::metadata(root)?;
        let mut counters = Counters::default();
        let mut stack = vec![(root.to_owned(), String::from("/"))];
        while let Some((directory, relative)) = stack.pop() {
            match hierarchy {
                Hierarchy::V1 { .. } => {
                    if let Some(count) = read_key(&directory.join("memory.oom_control"), "oom_kill")
                    {
                        counters.counts.insert(relative.clone(), count);
                    }
                }
                Hierarchy::V2 { .. } => {
                    if let Some(count) =
                        read_key(&directory.join("memory.events.local"), "oom_kill")
                    {
                        counters.counts.insert(relative.clone(), count);
                    } else if let Some(count) =
                        read_key(&directory.join("memory.events"), "oom_kill")
                    {
                        counters.counts.insert(relative.clone(), count);
                        counters.hierarchical = true;
                    }
                }
            }
            let Ok(entries) = std::fs::read_dir(&directory) else {
                continue;
            };
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    let child = if relative == "/" {
                        format!("/{name}")
                    } else {
                        format!("{relative}/{name}")
                    };
                    stack.push((entry.path(), child));
                }
            }
        }
        Ok(counters)
    }
}

/// Reads `key value` from a flat-keyed cgroup file.
fn read_key(file: &Path, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines()
        .filter_map(|line| line.split_once(' '))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.trim().parse().ok())
}

/// New kills counted in one cgroup since the previous reading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterIncrease {
    /// The cgroup, relative to the hierarchy root.
    pub path: String,
    /// How many new kills.
    pub kills: u64,
    /// The counter's value now (identifies these kills: the n-th kill in this cgroup).
    pub counter: u64,
}

/// Turns successive [`Counters`] readings into the kills that happened in between.
#[derive(Debug, Default)]
pub struct CounterTracker {
    previous: Option<Counters>,
}

impl CounterTracker {
    /// A tracker that has seen nothing yet.
    pub fn new() -> CounterTracker {
        CounterTracker::default()
    }

    /// Records `current`, returning the cgroups whose counters grew. The first reading is the
    /// baseline: kills from before the watcher started are not reported again.
    pub fn observe(&mut self, current: Counters) -> Vec<CounterIncrease> {
        let Some(previous) = self.previous.replace(current.clone()) else {
            return Vec::new();
        };
        let delta = |path: &str, now: u64| -> u64 {
            match previous.counts.get(path) {
                // A counter that went down belongs to a new cgroup of the same name.
                Some(&before) if before <= now => now - before,
                _ => now,
            }
        };
        let deltas: BTreeMap<&str, u64> = current
            .counts
            .iter()
            .map(|(path, &now)| (path.as_str(), delta(path, now)))
            .collect();
        let mut increases = Vec::new();
        for (path, &own) in &deltas {
            let kills = if current.hierarchical {
                let children: u64 = deltas
                    .iter()
                    .filter(|(child, _)| is_direct_child(child, path))
                    .map(|(_, &d)| d)
                    .sum();
                own.saturating_sub(children)
            } else {
                own
            };
            if kills > 0 {
                increases.push(CounterIncrease {
                    path: (*path).to_owned(),
                    kills,
                    counter: current.counts.get(*path).copied().unwrap_or_default(),
                });
            }
        }
        increases
    }
}

fn is_direct_child(child: &str, parent: &str) -> bool {
    let rest = if parent == "/" {
        child.strip_prefix('/')
    } else {
        child.strip_prefix(parent).and_then(|r| r.strip_prefix('/'))
    };
    rest.is_some_and(|r| !r.is_empty() && !r.contains('/'))
}

/// True when `path` is `ancestor` or lies below it.
pub fn is_within(path: &str, ancestor: &str) -> bool {
    if ancestor == "/" || path == ancestor {
        return true;
    }
    path.strip_prefix(ancestor)
        .is_some_and(|r| r.starts_with('/'))
}

#[derive(Debug, Clone)]
struct Credit {
    path: String,
    subtree: bool,
    at: Instant,
}

/// A counted kill that no kernel log line has explained yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Debit {
    /// The cgroup that counted it.
    pub path: String,
    /// The counter value for this kill.
    pub counter: u64,
    /// When it was counted.
    pub at: Instant,
}

/// Matches kernel-log kills (credits) against counted kills (debits), so that every kill is
/// reported once: by the kernel log when it has the line, by the counters when it does not.
#[derive(Debug)]
pub struct Ledger {
    credits: Vec<Credit>,
    debits: Vec<Debit>,
    credit_lifetime: Duration,
    max_entries: usize,
}

impl Ledger {
    /// A ledger that forgets unmatched kernel-log kills after `credit_lifetime` (their counter may
    /// have vanished with the cgroup) and holds at most `max_entries` of each kind.
    pub fn new(credit_lifetime: Duration, max_entries: usize) -> Ledger {
        Ledger {
            credits: Vec::new(),
            debits: Vec::new(),
            credit_lifetime,
            max_entries,
        }
    }

    /// A kill the kernel log reported in `path` (`subtree`: somewhere within `path`, as for
    /// `memory.oom.group` kills). Settles a waiting debit, or is remembered for the next scan.
    pub fn kernel_kill(&mut self, path: &str, subtree: bool, now: Instant) {
        let matching = self.debits.iter().position(|debit| {
            debit.path == path
                || (subtree && is_within(&debit.path, path))
                // The victim's cgroup is gone and an ancestor's hierarchical counter counted it.
                || is_within(path, &debit.path)
        });
        if let Some(index) = matching {
            self.debits.remove(index);
            return;
        }
        if self.credits.len() >= self.max_entries {
            self.credits.remove(0);
        }
        self.credits.push(Credit {
            path: path.to_owned(),
            subtree,
            at: now,
        });
    }

    /// Settles counted kills against kernel-log kills; returns how many of the `increase`'s
    /// kills no kernel-log kill explains.
    pub fn settle(&mut self, increase: &CounterIncrease) -> u64 {
        let mut unexplained = 0;
        for _ in 0..increase.kills {
            let matching = self.credits.iter().position(|credit| {
                credit.path == increase.path
                    || (credit.subtree && is_within(&increase.path, &credit.path))
                    || is_within(&credit.path, &increase.path)
            });
            match matching {
                Some(index) => {
                    self.credits.remove(index);
                }
                None => unexplained += 1,
            }
        }
        unexplained
    }

    /// Remembers a counted kill that nothing explains yet; a kernel-log line may still come.
    pub fn add_debit(&mut self, path: &str, counter: u64, now: Instant) {
        if self.debits.len() >= self.max_entries {
            self.debits.remove(0);
        }
        self.debits.push(Debit {
            path: path.to_owned(),
            counter,
            at: now,
        });
    }

    /// Removes and returns the debits older than `grace`: kills only the counters saw. Also
    /// forgets expired credits.
    pub fn take_expired_debits(&mut self, grace: Duration, now: Instant) -> Vec<Debit> {
        let lifetime = self.credit_lifetime;
        self.credits
            .retain(|credit| now.saturating_duration_since(credit.at) < lifetime);
        let (expired, waiting): (Vec<Debit>, Vec<Debit>) = self
            .debits
            .drain(..)
            .partition(|debit| now.saturating_duration_since(debit.at) >= grace);
        self.debits = waiting;
        expired
    }

    /// Removes and returns the oldest counted kill still waiting: the likeliest cgroup of a
    /// kernel-log kill that came without one (the counter was read between the kernel counting
    /// the kill and printing it).
    pub fn take_oldest_debit(&mut self) -> Option<Debit> {
        let index = self
            .debits
            .iter()
            .enumerate()
            .min_by_key(|(_, debit)| debit.at)
            .map(|(index, _)| index)?;
        Some(self.debits.remove(index))
    }

    /// How many counted kills wait for a kernel log line.
    pub fn waiting_debits(&self) -> usize {
        self.debits.len()
    }

    /// The oldest waiting debit's time, to schedule the next expiry check.
    pub fn oldest_debit(&self) -> Option<Instant> {
        self.debits.iter().map(|d| d.at).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters(pairs: &[(&str, u64)], hierarchical: bool) -> Counters {
        Counters {
            counts: pairs.iter().map(|(p, c)| ((*p).to_owned(), *c)).collect(),
            hierarchical,
        }
    }

    #[test]
    fn the_first_reading_is_a_baseline() {
        let mut tracker = CounterTracker::new();
        assert!(tracker.observe(counters(&[("/a", 5)], false)).is_empty());
        let increases = tracker.observe(counters(&[("/a", 7), ("/b", 1)], false));
        assert_eq!(
            increases,
            [
                CounterIncrease {
                    path: "/a".into(),
                    kills: 2,
                    counter: 7
                },
                CounterIncrease {
                    path: "/b".into(),
                    kills: 1,
                    counter: 1
                },
            ]
        );
    }

    #[test]
    fn hierarchical_counters_are_attributed_to_the_deepest_cgroup() {
        let mut tracker = CounterTracker::new();
        tracker.observe(counters(&[("/k", 0), ("/k/p", 0), ("/k/p/c", 0)], true));
        let increases = tracker.observe(counters(&[("/k", 1), ("/k/p", 1), ("/k/p/c", 1)], true));
        assert_eq!(
            increases,
            [CounterIncrease {
                path: "/k/p/c".into(),
                kills: 1,
                counter: 1
            }]
        );
        // The container cgroup vanished: the pod counted the kill.
        let increases = tracker.observe(counters(&[("/k", 2), ("/k/p", 2)], true));
        assert_eq!(
            increases,
            [CounterIncrease {
                path: "/k/p".into(),
                kills: 1,
                counter: 2
            }]
        );
    }

    #[test]
    fn a_recreated_cgroup_counts_from_zero() {
        let mut tracker = CounterTracker::new();
        tracker.observe(counters(&[("/a", 4)], false));
        let increases = tracker.observe(counters(&[("/a", 1)], false));
        assert_eq!(increases[0].kills, 1);
    }

    #[test]
    fn kernel_kills_and_counters_settle_each_other_in_either_order() {
        let now = Instant::now();
        let mut ledger = Ledger::new(Duration::from_secs(60), 100);
        ledger.kernel_kill("/k/p/c", false, now);
        let increase = CounterIncrease {
            path: "/k/p/c".into(),
            kills: 2,
            counter: 2,
        };
        assert_eq!(ledger.settle(&increase), 1);
        ledger.add_debit("/k/p/c", 2, now);
        ledger.kernel_kill("/k/p/c", false, now);
        assert!(ledger.take_expired_debits(Duration::ZERO, now).is_empty());
    }

    #[test]
    fn unexplained_debits_expire_after_the_grace_period() {
        let start = Instant::now();
        let mut ledger = Ledger::new(Duration::from_secs(60), 100);
        ledger.add_debit("/x", 1, start);
        assert!(
            ledger
                .take_expired_debits(Duration::from_secs(2), start)
                .is_empty()
        );
        assert_eq!(ledger.oldest_debit(), Some(start));
        ledger.add_debit("/y", 1, start + Duration::from_secs(1));
        assert_eq!(
            ledger.take_oldest_debit().map(|d| d.path),
            Some("/x".to_owned())
        );
        assert_eq!(
            ledger.take_oldest_debit().map(|d| d.path),
            Some("/y".to_owned())
        );
        ledger.add_debit("/x", 1, start);
        let expired =
            ledger.take_expired_debits(Duration::from_secs(2), start + Duration::from_secs(2));
        assert_eq!(expired.len(), 1);
        assert_eq!(ledger.oldest_debit(), None);
    }

    #[test]
    fn group_kills_and_vanished_children_match_by_subtree() {
        let now = Instant::now();
        let mut ledger = Ledger::new(Duration::from_secs(60), 100);
        ledger.kernel_kill("/g", true, now);
        assert_eq!(
            ledger.settle(&CounterIncrease {
                path: "/g/sub".into(),
                kills: 1,
                counter: 1
            }),
            0
        );
        ledger.kernel_kill("/p/c", false, now);
        assert_eq!(
            ledger.settle(&CounterIncrease {
                path: "/p".into(),
                kills: 1,
                counter: 9
            }),
            0
        );
        assert_eq!(
            ledger.settle(&CounterIncrease {
                path: "/q".into(),
                kills: 1,
                counter: 1
            }),
            1
        );
    }

    #[test]
    fn within_and_children() {
        assert!(is_within("/a/b", "/a"));
        assert!(is_within("/a", "/a"));
        assert!(is_within("/a", "/"));
        assert!(!is_within("/ab", "/a"));
        assert!(is_direct_child("/a", "/"));
        assert!(is_direct_child("/a/b", "/a"));
        assert!(!is_direct_child("/a/b/c", "/a"));
        assert!(!is_direct_child("/ab", "/a"));
    }

    #[test]
    fn the_real_hierarchy_is_found_and_read() {
        let hierarchy = Hierarchy::detect(Path::new("/sys/fs/cgroup")).expect("memory controller");
        let counters = Counters::read(&hierarchy).expect("read");
        assert!(!counters.counts.is_empty());
        assert!(Hierarchy::detect(Path::new("/nonexistent")).is_err());
    }
}
