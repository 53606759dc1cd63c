//! Memory cgroup OOM-kill counters: the cross-check that catches what the kernel log misses.
//!
//! The kernel counts every OOM kill in the victim's memory cgroup, whether or not its log line was
//! written, rate-limited, overwritten or unparseable:
//!
//! | | the cgroup's own processes | the cgroup and all its descendants |
//! |---|---|---|
//! | v1 | `oom_kill` in `memory.oom_control` | — |
//! | v2 | `oom_kill` in `memory.events.local` (kernel 5.2+) | `oom_kill` in `memory.events` |
//! | v2 group kills (5.19+) | `oom_group_kill` in `memory.events.local` | `oom_group_kill` in `memory.events` |
//!
//! [`Counters`] reads them for the whole hierarchy; [`CounterTracker`] turns successive readings
//! into OOM events per cgroup ([`CounterIncrease`]); [`Ledger`] matches those against the kills
//! the kernel log reported, so each kill is reported exactly once, by whichever source saw it
//! first.
//!
//! **Removed cgroups.** When a container's main process dies, the runtime removes the container's
//! cgroup within milliseconds — usually before the next reading — and its counters go with it. On
//! v2 the ancestors' `memory.events` still hold the kill: a kill that a cgroup's `memory.events`
//! counted but neither its own `memory.events.local` nor any remaining child's `memory.events`
//! did happened in a removed descendant, and is attributed to that cgroup (the pod, when a
//! container was removed). On v1 nothing remains: there the kernel log is the only record.
//!
//! **Attribution is cumulative.** Each cgroup keeps how many of its counted kills have been
//! attributed, rather than comparing one reading's increases with the last: a reading is not
//! atomic, and a kill that lands between reading a parent and reading its child would otherwise
//! be counted at the child in one reading and again at the parent in the next. Cgroups are read
//! parents first (a child may have counted a kill its parent has not yet, never the reverse), and
//! `memory.events` before `memory.events.local` for the same reason; a shortfall is then only
//! ever temporary, and nothing is attributed twice.
//!
//! **Group kills.** With `memory.oom.group=1` (the kubelet sets it on every container on cgroup v2
//! since 1.28) one OOM kills every process of the container, and each process counts in
//! `oom_kill`: that is one OOM event, however many processes it took, and one [`CounterIncrease`]
//! with `group` set. The kernel counts the chosen victim's kill, then the group kill
//! (`oom_group_kill`), then the other processes' kills, so a reading can fall between them: kills
//! in a group cgroup whose group counter has not risen are held until it does (a few readings at
//! most), and kills that follow a group event in the next reading are its stragglers, not new
//! events. Kernels before 5.19 have no group counter; there a group's kills in two consecutive
//! readings are one event.

use std::collections::{BTreeMap, BTreeSet};
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

/// One cgroup's OOM counters, as read; `None` where the file or key does not exist.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupCounters {
    /// Kills of the cgroup's own processes.
    pub oom_kill: Option<u64>,
    /// Kills in the cgroup and its descendants (v2).
    pub oom_kill_tree: Option<u64>,
    /// Group kills whose group is this cgroup (v2, 5.19+).
    pub oom_group_kill: Option<u64>,
    /// Group kills of this cgroup or a descendant (v2, 5.19+).
    pub oom_group_kill_tree: Option<u64>,
    /// `memory.oom.group` is set: an OOM kill in it takes every process (v2).
    pub oom_group: bool,
}

/// One reading of every cgroup's OOM counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Path relative to the hierarchy root, as the kernel prints it (`/` for the root,
    /// `/kubepods/…` below it), to its counters.
    pub cgroups: BTreeMap<String, CgroupCounters>,
}

impl Counters {
    /// Reads the counters of every cgroup in `hierarchy`, each cgroup before its children (see
    /// the module docs). Cgroups that vanish mid-scan are skipped; only an unreadable root is an
    /// error.
    pub fn read(hierarchy: &Hierarchy) -> io::Result<Counters> {
        let root = hierarchy.root();
        std::fs::metadata(root)?;
        let mut counters = Counters::default();
        let mut stack = vec![(root.to_owned(), String::from("/"))];
        while let Some((directory, relative)) = stack.pop() {
            let cgroup = match hierarchy {
                Hierarchy::V1 { .. } => CgroupCounters {
                    oom_kill: read_oom_keys(&directory.join("memory.oom_control")).0,
                    ..CgroupCounters::default()
                },
                Hierarchy::V2 { .. } => {
                    let (oom_kill_tree, oom_group_kill_tree) =
                        read_oom_keys(&directory.join("memory.events"));
                    let (oom_kill, oom_group_kill) =
                        read_oom_keys(&directory.join("memory.events.local"));
                    let oom_group = std::fs::read_to_string(directory.join("memory.oom.group"))
                        .is_ok_and(|text| text.trim() == "1");
                    CgroupCounters {
                        oom_kill,
                        oom_kill_tree,
                        oom_group_kill,
                        oom_group_kill_tree,
                        oom_group,
                    }
                }
            };
            if cgroup.oom_kill.is_some() || cgroup.oom_kill_tree.is_some() {
                counters.cgroups.insert(relative.clone(), cgroup);
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

    /// The highest cgroup at or above `path` with `memory.oom.group` set: the group an OOM kill in
    /// `path` takes with it (the kernel picks the highest, too).
    fn group_of(&self, path: &str) -> Option<String> {
        let mut group = None;
        let mut current = Some(path);
        while let Some(cgroup) = current {
            if self.cgroups.get(cgroup).is_some_and(|c| c.oom_group) {
                group = Some(cgroup.to_owned());
            }
            current = parent_of(cgroup);
        }
        group
    }
}

/// Reads `oom_kill` and `oom_group_kill` from a flat-keyed cgroup file, in one read.
fn read_oom_keys(file: &Path) -> (Option<u64>, Option<u64>) {
    let Ok(text) = std::fs::read_to_string(file) else {
        return (None, None);
    };
    let value = |key: &str| {
        text.lines()
            .filter_map(|line| line.split_once(' '))
            .find(|(k, _)| *k == key)
            .and_then(|(_, v)| v.trim().parse().ok())
    };
    (value("oom_kill"), value("oom_group_kill"))
}

/// Which counter a [`CounterIncrease`]'s value is a reading of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CounterSource {
    /// The cgroup's own kills (`oom_kill` in `memory.oom_control` or `memory.events.local`).
    Own,
    /// Kills of removed descendants, or every kill where no local counter exists (`oom_kill` in
    /// `memory.events`).
    Subtree,
    /// Group kills (`oom_group_kill`).
    Group,
}

impl CounterSource {
    /// A short name, for logs and stable ids.
    pub fn as_str(self) -> &'static str {
        match self {
            CounterSource::Own => "own",
            CounterSource::Subtree => "subtree",
            CounterSource::Group => "group",
        }
    }
}

/// New OOM events counted in one cgroup since the previous reading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterIncrease {
    /// The cgroup, relative to the hierarchy root.
    pub path: String,
    /// How many OOM events: kills, or for group kills one per group event however many
    /// processes it took. Zero for the stragglers of a group event already counted.
    pub events: u64,
    /// The counter's value now: with `path` and `source`, it identifies the last of these events
    /// (the n-th kill in this cgroup).
    pub counter: u64,
    /// Which counter `counter` is a reading of.
    pub source: CounterSource,
    /// How many processes were killed (more than `events` for group kills).
    pub processes: u64,
    /// A `memory.oom.group` kill, or its stragglers.
    pub group: bool,
}

/// How many readings kills in a group cgroup wait for the group counter that the kernel counts
/// right after them, before they are an event without it.
const MAX_HOLD_READINGS: u64 = 4;

/// Turns successive [`Counters`] readings into the OOM events that happened in between.
#[derive(Debug, Default)]
pub struct CounterTracker {
    readings: u64,
    kills: Attribution,
    groups: Attribution,
    /// Kills in group cgroups whose group counter had not risen yet, with their group and the
    /// reading that held them.
    held: Vec<(String, Kills, u64)>,
    /// The groups of the previous reading's group events.
    recent_groups: Vec<String>,
}

impl CounterTracker {
    /// A tracker that has seen nothing yet.
    pub fn new() -> CounterTracker {
        CounterTracker::default()
    }

    /// Records `current`, returning the OOM events counted since the previous reading. The first
    /// reading is the baseline: kills from before the watcher started are not reported again.
    pub fn observe(&mut self, current: Counters) -> Vec<CounterIncrease> {
        let baseline = self.readings == 0;
        self.readings += 1;
        let kill_counts: BTreeMap<String, (Option<u64>, Option<u64>)> = current
            .cgroups
            .iter()
            .map(|(path, c)| (path.clone(), (c.oom_kill, c.oom_kill_tree)))
            .collect();
        let group_counts: BTreeMap<String, (Option<u64>, Option<u64>)> = current
            .cgroups
            .iter()
            .filter(|(_, c)| c.oom_group_kill.is_some() || c.oom_group_kill_tree.is_some())
            .map(|(path, c)| (path.clone(), (c.oom_group_kill, c.oom_group_kill_tree)))
            .collect();
        let group_counters = !group_counts.is_empty();
        let kills = self.kills.observe(&kill_counts, baseline);
        let groups = self.groups.observe(&group_counts, baseline);
        if baseline {
            return Vec::new();
        }
        let mut pending: Vec<Kills> = kills.into_iter().flat_map(Attributed::kills).collect();
        let mut held = std::mem::take(&mut self.held);
        let recent = std::mem::take(&mut self.recent_groups);
        let removed = |path: &str| !current.cgroups.contains_key(path);
        let mut increases = Vec::new();

        // Group kills, with the kills in their subtree: this reading's, and those held from the
        // previous one (named by the deepest cgroup known, the container when its cgroup was
        // removed since).
        for group in groups {
            let (events, counter) = (group.own + group.rest, group.tree.or(group.local));
            let mut path = group.path.clone();
            let mut processes = 0;
            pending.retain(|kills| {
                let inside = is_within(&kills.path, &group.path);
                processes += if inside { kills.count } else { 0 };
                !inside
            });
            held.retain(|(_, kills, _)| {
                let inside = is_within(&kills.path, &group.path);
                if inside {
                    processes += kills.count;
                    path = kills.path.clone();
                }
                !inside
            });
            increases.push(CounterIncrease {
                path: path.clone(),
                events,
                counter: counter.unwrap_or_default(),
                source: CounterSource::Group,
                processes: processes.max(events),
                group: true,
            });
            self.recent_groups.push(group.path);
        }
        // The stragglers of the previous reading's group events.
        pending.retain(|kills| {
            let straggler = recent
                .iter()
                .any(|group| kills.belongs_to(group, removed(group)));
            if straggler {
                increases.push(kills.increase(0, true));
            }
            !straggler
        });
        // Kills held that no group counter claimed: on a kernel without group counters, after
        // one reading; with them (where the group counter always follows), after a few. One
        // event per group, with this reading's kills in the same group.
        let (mut held, keep): (Vec<_>, Vec<_>) = held
            .into_iter()
            .partition(|(_, _, at)| !group_counters || self.readings - at >= MAX_HOLD_READINGS);
        self.held = keep;
        while let Some((group, first, _)) = held.pop() {
            let mut processes = first.count;
            held.retain(|(other, kills, _)| {
                let same = *other == group;
                processes += if same { kills.count } else { 0 };
                !same
            });
            pending.retain(|kills| {
                let inside = kills.belongs_to(&group, removed(&group));
                processes += if inside { kills.count } else { 0 };
                !inside
            });
            let mut increase = first.increase(1, true);
            increase.processes = processes;
            increases.push(increase);
            self.recent_groups.push(group);
        }
        // Kills in a group cgroup wait for its group counter; every other kill is an event.
        for kills in pending {
            match current.group_of(&kills.path) {
                Some(group) => self.held.push((group, kills, self.readings)),
                None => increases.push(kills.increase(kills.count, false)),
            }
        }
        increases
    }
}

/// Kills newly attributed to one cgroup by one counter.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Kills {
    path: String,
    count: u64,
    counter: u64,
    source: CounterSource,
}

impl Kills {
    /// True when these kills are part of an event of `group`: inside it, or — when the group's
    /// cgroup was removed — counted for a removed descendant by one of its ancestors.
    fn belongs_to(&self, group: &str, group_removed: bool) -> bool {
        is_within(&self.path, group)
            || (group_removed
                && self.source == CounterSource::Subtree
                && is_within(group, &self.path))
    }

    fn increase(&self, events: u64, group: bool) -> CounterIncrease {
        CounterIncrease {
            path: self.path.clone(),
            events,
            counter: self.counter,
            source: self.source,
            processes: self.count,
            group,
        }
    }
}

/// What one reading attributed to one cgroup.
#[derive(Debug, Clone)]
struct Attributed {
    path: String,
    /// Counted by its own counter.
    own: u64,
    /// Counted by its hierarchical counter for removed descendants (or for itself, without a
    /// local counter).
    rest: u64,
    local: Option<u64>,
    tree: Option<u64>,
}

impl Attributed {
    fn kills(self) -> impl Iterator<Item = Kills> {
        let own = (self.own > 0).then(|| Kills {
            path: self.path.clone(),
            count: self.own,
            counter: self.local.unwrap_or_default(),
            source: CounterSource::Own,
        });
        let rest = (self.rest > 0).then(|| Kills {
            path: self.path.clone(),
            count: self.rest,
            counter: self.tree.unwrap_or_default(),
            source: CounterSource::Subtree,
        });
        own.into_iter().chain(rest)
    }
}

/// Cumulative attribution of one kind of counter (kills, or group kills) to the deepest cgroup
/// that counted each event (see the module docs).
#[derive(Debug, Default)]
struct Attribution {
    tallies: BTreeMap<String, Tally>,
}

#[derive(Debug, Clone, Default)]
struct Tally {
    /// The counters when first seen (zero for a cgroup created after the baseline).
    base_local: u64,
    base_tree: u64,
    /// The counters at the last reading.
    local: Option<u64>,
    tree: Option<u64>,
    /// How many of the own counter's events have been attributed.
    own: u64,
    /// How many events of removed descendants have been attributed here.
    rest: u64,
    /// What removed children's hierarchical counters had counted since the baseline.
    gone: u64,
}

impl Tally {
    fn local_since_base(&self) -> u64 {
        self.local.map_or(0, |v| v.saturating_sub(self.base_local))
    }

    fn tree_since_base(&self) -> u64 {
        self.tree.map_or(0, |v| v.saturating_sub(self.base_tree))
    }
}

type Reading = BTreeMap<String, (Option<u64>, Option<u64>)>;

impl Attribution {
    fn observe(&mut self, current: &Reading, baseline: bool) -> Vec<Attributed> {
        // Removed cgroups — and cgroups whose counters went down, removed and created again under
        // the same name — leave what their subtree counted to the nearest remaining ancestor,
        // whose hierarchical counter still includes it.
        let ended: BTreeSet<String> = self
            .tallies
            .iter()
            .filter(|(path, tally)| match current.get(*path) {
                None => true,
                Some((local, tree)) => {
                    went_down(*local, tally.local) || went_down(*tree, tally.tree)
                }
            })
            .map(|(path, _)| path.clone())
            .collect();
        for path in &ended {
            let counted = self.tallies[path].tree_since_base();
            let mut ancestor = parent_of(path);
            while let Some(candidate) = ancestor {
                if ended.contains(candidate) {
                    // Its own hierarchical counter included this one's.
                    break;
                }
                if let Some(tally) = self.tallies.get_mut(candidate) {
                    tally.gone += counted;
                    break;
                }
                ancestor = parent_of(candidate);
            }
        }
        for path in &ended {
            self.tallies.remove(path);
        }
        // New cgroups: the baseline's counts are history; a cgroup that appears later was created
        // since the last reading, so everything it counted is new.
        for (path, (local, tree)) in current {
            self.tallies.entry(path.clone()).or_insert_with(|| Tally {
                base_local: if baseline { local.unwrap_or(0) } else { 0 },
                base_tree: if baseline { tree.unwrap_or(0) } else { 0 },
                ..Tally::default()
            });
        }
        let mut children: BTreeMap<&str, u64> = BTreeMap::new();
        for (path, (_, tree)) in current {
            if let (Some(parent), Some(tally)) = (parent_of(path), self.tallies.get(path)) {
                *children.entry(parent).or_default() +=
                    tree.map_or(0, |v| v.saturating_sub(tally.base_tree));
            }
        }
        let mut attributed = Vec::new();
        for (path, (local, tree)) in current {
            let Some(tally) = self.tallies.get_mut(path) else {
                continue;
            };
            tally.local = *local;
            tally.tree = *tree;
            let own = tally.local_since_base().saturating_sub(tally.own);
            let rest = if tree.is_some() {
                let explained = tally.local_since_base()
                    + children.get(path.as_str()).copied().unwrap_or(0)
                    + tally.gone
                    + tally.rest;
                tally.tree_since_base().saturating_sub(explained)
            } else {
                0
            };
            tally.own += own;
            tally.rest += rest;
            if own > 0 || rest > 0 {
                attributed.push(Attributed {
                    path: path.clone(),
                    own,
                    rest,
                    local: *local,
                    tree: *tree,
                });
            }
        }
        attributed
    }
}

fn went_down(now: Option<u64>, before: Option<u64>) -> bool {
    matches!((now, before), (Some(now), Some(before)) if now < before)
}

/// `/a/b` → `/a` → `/` → none.
fn parent_of(path: &str) -> Option<&str> {
    if path == "/" {
        return None;
    }
    match path.rfind('/') {
        Some(0) => Some("/"),
        Some(index) => Some(&path[..index]),
        None => None,
    }
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

/// A counted OOM event that no kernel log line has explained yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Debit {
    /// The cgroup that counted it.
    pub path: String,
    /// The counter value for this event.
    pub counter: u64,
    /// Which counter.
    pub source: CounterSource,
    /// How many processes it killed (more than one for a group kill).
    pub processes: u64,
    /// A `memory.oom.group` kill.
    pub group: bool,
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

    /// Settles counted events against kernel-log kills; returns how many of the `increase`'s
    /// events no kernel-log kill explains.
    ///
    /// A group event is explained by its victim's kill (the one the kernel log bonks); its other
    /// processes' kills are settled with it.
    pub fn settle(&mut self, increase: &CounterIncrease) -> u64 {
        let matches = |credit: &Credit| {
            credit.path == increase.path
                || (credit.subtree && is_within(&increase.path, &credit.path))
                || is_within(&credit.path, &increase.path)
        };
        if !increase.group {
            let mut unexplained = 0;
            for _ in 0..increase.events {
                match self.credits.iter().position(matches) {
                    Some(index) => {
                        self.credits.remove(index);
                    }
                    None => unexplained += 1,
                }
            }
            return unexplained;
        }
        let mut victims = 0;
        for _ in 0..increase.processes.max(increase.events) {
            let Some(index) = self.credits.iter().position(matches) else {
                break;
            };
            if !self.credits.remove(index).subtree {
                victims += 1;
            }
        }
        increase.events.saturating_sub(victims)
    }

    /// Remembers a counted event of `increase`, with counter value `counter`, that nothing
    /// explains yet; a kernel-log line may still come.
    pub fn add_debit(&mut self, increase: &CounterIncrease, counter: u64, now: Instant) {
        if self.debits.len() >= self.max_entries {
            self.debits.remove(0);
        }
        self.debits.push(Debit {
            path: increase.path.clone(),
            counter,
            source: increase.source,
            processes: increase
                .processes
                .checked_div(increase.events)
                .unwrap_or(1)
                .max(1),
            group: increase.group,
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

    /// A v1 reading: own counters only.
    fn v1(pairs: &[(&str, u64)]) -> Counters {
        Counters {
            cgroups: pairs
                .iter()
                .map(|(path, count)| {
                    let counters = CgroupCounters {
                        oom_kill: Some(*count),
                        ..CgroupCounters::default()
                    };
                    ((*path).to_owned(), counters)
                })
                .collect(),
        }
    }

    /// A v2 reading: `(path, own kills, own group kills, oom.group)`, with the hierarchical
    /// counters summed over each cgroup's subtree as the kernel keeps them.
    fn v2(cgroups: &[(&str, u64, u64, bool)]) -> Counters {
        let tree = |path: &str, pick: fn(&(&str, u64, u64, bool)) -> u64| -> u64 {
            cgroups
                .iter()
                .filter(|c| is_within(c.0, path))
                .map(pick)
                .sum()
        };
        Counters {
            cgroups: cgroups
                .iter()
                .map(|c| {
                    let counters = CgroupCounters {
                        oom_kill: Some(c.1),
                        oom_kill_tree: Some(tree(c.0, |c| c.1)),
                        oom_group_kill: Some(c.2),
                        oom_group_kill_tree: Some(tree(c.0, |c| c.2)),
                        oom_group: c.3,
                    };
                    (c.0.to_owned(), counters)
                })
                .collect(),
        }
    }

    fn kill(path: &str, events: u64, counter: u64, source: CounterSource) -> CounterIncrease {
        CounterIncrease {
            path: path.into(),
            events,
            counter,
            source,
            processes: events,
            group: false,
        }
    }

    fn group(path: &str, events: u64, processes: u64, counter: u64) -> CounterIncrease {
        CounterIncrease {
            path: path.into(),
            events,
            counter,
            source: CounterSource::Group,
            processes,
            group: true,
        }
    }

    const POD: &str = "/k/p";
    const CONTAINER: &str = "/k/p/c";

    #[test]
    fn the_first_reading_is_a_baseline() {
        let mut tracker = CounterTracker::new();
        assert!(tracker.observe(v1(&[("/a", 5)])).is_empty());
        let increases = tracker.observe(v1(&[("/a", 7), ("/b", 1)]));
        assert_eq!(
            increases,
            [
                kill("/a", 2, 7, CounterSource::Own),
                kill("/b", 1, 1, CounterSource::Own)
            ]
        );
    }

    #[test]
    fn v2_kills_are_attributed_to_their_own_cgroup_and_removed_ones_to_the_nearest_ancestor() {
        let mut tracker = CounterTracker::new();
        tracker.observe(v2(&[
            ("/k", 0, 0, false),
            (POD, 0, 0, false),
            (CONTAINER, 0, 0, false),
        ]));
        let increases = tracker.observe(v2(&[
            ("/k", 0, 0, false),
            (POD, 0, 0, false),
            (CONTAINER, 1, 0, false),
        ]));
        assert_eq!(increases, [kill(CONTAINER, 1, 1, CounterSource::Own)]);
        // The container is removed with a second kill it counted after the last reading: only
        // the pod's hierarchical counter still has it.
        let mut reading = v2(&[("/k", 0, 0, false), (POD, 0, 0, false)]);
        for path in ["/k", POD] {
            reading.cgroups.get_mut(path).expect("cgroup").oom_kill_tree = Some(2);
        }
        let increases = tracker.observe(reading.clone());
        assert_eq!(increases, [kill(POD, 1, 2, CounterSource::Subtree)]);
        // Nothing is attributed twice.
        assert!(tracker.observe(reading).is_empty());
    }

    #[test]
    fn a_kill_between_reading_a_parent_and_its_child_is_counted_once() {
        let mut tracker = CounterTracker::new();
        tracker.observe(v2(&[(POD, 0, 0, false), (CONTAINER, 0, 0, false)]));
        // The pod was read before the kill, the container after it.
        let mut torn = v2(&[(POD, 0, 0, false), (CONTAINER, 1, 0, false)]);
        torn.cgroups.get_mut(POD).expect("pod").oom_kill_tree = Some(0);
        assert_eq!(
            tracker.observe(torn),
            [kill(CONTAINER, 1, 1, CounterSource::Own)]
        );
        let whole = v2(&[(POD, 0, 0, false), (CONTAINER, 1, 0, false)]);
        assert!(tracker.observe(whole).is_empty());
    }

    #[test]
    fn without_local_counters_the_hierarchical_ones_are_attributed_to_the_deepest_cgroup() {
        let mut tracker = CounterTracker::new();
        let reading = |pod: u64, container: Option<u64>| {
            let mut counters = Counters::default();
            let tree = |count| CgroupCounters {
                oom_kill_tree: Some(count),
                ..CgroupCounters::default()
            };
            counters.cgroups.insert(POD.into(), tree(pod));
            if let Some(count) = container {
                counters.cgroups.insert(CONTAINER.into(), tree(count));
            }
            counters
        };
        tracker.observe(reading(0, Some(0)));
        assert_eq!(
            tracker.observe(reading(1, Some(1))),
            [kill(CONTAINER, 1, 1, CounterSource::Subtree)]
        );
        assert_eq!(
            tracker.observe(reading(2, None)),
            [kill(POD, 1, 2, CounterSource::Subtree)]
        );
    }

    #[test]
    fn a_recreated_cgroup_counts_from_zero() {
        let mut tracker = CounterTracker::new();
        tracker.observe(v1(&[("/a", 4)]));
        let increases = tracker.observe(v1(&[("/a", 1)]));
        assert_eq!(increases, [kill("/a", 1, 1, CounterSource::Own)]);
    }

    #[test]
    fn a_group_kill_is_one_event_however_many_processes_it_took() {
        let mut tracker = CounterTracker::new();
        tracker.observe(v2(&[(POD, 0, 0, false), (CONTAINER, 0, 0, true)]));
        assert_eq!(
            tracker.observe(v2(&[(POD, 0, 0, false), (CONTAINER, 3, 1, true)])),
            [group(CONTAINER, 1, 3, 1)]
        );
    }

    #[test]
    fn a_group_kill_split_across_readings_is_still_one_event() {
        let mut tracker = CounterTracker::new();
        tracker.observe(v2(&[(POD, 0, 0, false), (CONTAINER, 0, 0, true)]));
        // The victim is counted, the group not yet: held, for as long as a slow reading takes.
        for _ in 0..2 {
            assert!(
                tracker
                    .observe(v2(&[(POD, 0, 0, false), (CONTAINER, 1, 0, true)]))
                    .is_empty()
            );
        }
        // The group and two more processes; then the last process, a straggler.
        assert_eq!(
            tracker.observe(v2(&[(POD, 0, 0, false), (CONTAINER, 3, 1, true)])),
            [group(CONTAINER, 1, 3, 1)]
        );
        let stragglers = tracker.observe(v2(&[(POD, 0, 0, false), (CONTAINER, 4, 1, true)]));
        assert_eq!(stragglers.len(), 1);
        assert_eq!((stragglers[0].events, stragglers[0].processes), (0, 1));
        // Later kills are events again.
        assert!(
            tracker
                .observe(v2(&[(POD, 0, 0, false), (CONTAINER, 4, 1, true)]))
                .is_empty()
        );
        assert_eq!(
            tracker.observe(v2(&[(POD, 0, 0, false), (CONTAINER, 6, 2, true)])),
            [group(CONTAINER, 1, 2, 2)]
        );
    }

    #[test]
    fn a_held_kill_whose_group_counter_never_rises_is_still_an_event() {
        let mut tracker = CounterTracker::new();
        tracker.observe(v2(&[(POD, 0, 0, false), (CONTAINER, 0, 0, true)]));
        let mut increases = Vec::new();
        for _ in 0..=MAX_HOLD_READINGS {
            increases.extend(tracker.observe(v2(&[(POD, 0, 0, false), (CONTAINER, 1, 0, true)])));
        }
        assert_eq!(increases.len(), 1, "{increases:?}");
        assert_eq!(
            (
                increases[0].path.as_str(),
                increases[0].events,
                increases[0].group
            ),
            (CONTAINER, 1, true)
        );
    }

    #[test]
    fn a_removed_group_is_counted_by_its_pod_and_named_by_what_was_held() {
        let mut tracker = CounterTracker::new();
        tracker.observe(v2(&[(POD, 0, 0, false), (CONTAINER, 0, 0, true)]));
        assert!(
            tracker
                .observe(v2(&[(POD, 0, 0, false), (CONTAINER, 1, 0, true)]))
                .is_empty()
        );
        // The container was killed and removed: its pod's hierarchical counters hold the rest.
        let mut reading = v2(&[(POD, 0, 0, false)]);
        let pod = reading.cgroups.get_mut(POD).expect("pod");
        pod.oom_kill_tree = Some(3);
        pod.oom_group_kill_tree = Some(1);
        assert_eq!(tracker.observe(reading), [group(CONTAINER, 1, 3, 1)]);
    }

    #[test]
    fn without_group_counters_a_groups_kills_in_two_readings_are_one_event() {
        let mut tracker = CounterTracker::new();
        let reading = |kills| {
            let mut counters = v2(&[(POD, 0, 0, false), (CONTAINER, kills, 0, true)]);
            for cgroup in counters.cgroups.values_mut() {
                cgroup.oom_group_kill = None;
                cgroup.oom_group_kill_tree = None;
            }
            counters
        };
        tracker.observe(reading(0));
        assert!(tracker.observe(reading(1)).is_empty());
        let increases = tracker.observe(reading(3));
        assert_eq!(increases.len(), 1);
        assert_eq!(
            (
                increases[0].path.as_str(),
                increases[0].events,
                increases[0].processes,
                increases[0].group
            ),
            (CONTAINER, 1, 3, true)
        );
        assert!(tracker.observe(reading(3)).is_empty());
    }

    #[test]
    fn kernel_kills_and_counters_settle_each_other_in_either_order() {
        let now = Instant::now();
        let mut ledger = Ledger::new(Duration::from_secs(60), 100);
        ledger.kernel_kill(CONTAINER, false, now);
        let increase = kill(CONTAINER, 2, 2, CounterSource::Own);
        assert_eq!(ledger.settle(&increase), 1);
        ledger.add_debit(&increase, 2, now);
        ledger.kernel_kill(CONTAINER, false, now);
        assert!(ledger.take_expired_debits(Duration::ZERO, now).is_empty());
    }

    #[test]
    fn a_group_event_is_explained_by_its_victim_and_settles_its_members() {
        let now = Instant::now();
        let mut ledger = Ledger::new(Duration::from_secs(60), 100);
        ledger.kernel_kill(CONTAINER, false, now);
        ledger.kernel_kill(CONTAINER, true, now);
        ledger.kernel_kill(CONTAINER, true, now);
        assert_eq!(ledger.settle(&group(CONTAINER, 1, 3, 1)), 0);
        // Every credit was used: a later kill in the pod is not explained by a leftover.
        assert_eq!(ledger.settle(&kill(POD, 1, 4, CounterSource::Subtree)), 1);
        // Members alone (the victim's line was lost) do not explain the event.
        ledger.kernel_kill(CONTAINER, true, now);
        assert_eq!(ledger.settle(&group(CONTAINER, 1, 2, 2)), 1);
    }

    #[test]
    fn unexplained_debits_expire_after_the_grace_period() {
        let start = Instant::now();
        let mut ledger = Ledger::new(Duration::from_secs(60), 100);
        ledger.add_debit(&kill("/x", 1, 1, CounterSource::Own), 1, start);
        assert!(
            ledger
                .take_expired_debits(Duration::from_secs(2), start)
                .is_empty()
        );
        assert_eq!(ledger.oldest_debit(), Some(start));
        ledger.add_debit(
            &kill("/y", 1, 1, CounterSource::Own),
            1,
            start + Duration::from_secs(1),
        );
        assert_eq!(
            ledger.take_oldest_debit().map(|d| d.path),
            Some("/x".to_owned())
        );
        assert_eq!(
            ledger.take_oldest_debit().map(|d| d.path),
            Some("/y".to_owned())
        );
        ledger.add_debit(&group("/x", 1, 4, 1), 1, start);
        let expired =
            ledger.take_expired_debits(Duration::from_secs(2), start + Duration::from_secs(2));
        assert_eq!(expired.len(), 1);
        assert_eq!((expired[0].processes, expired[0].group), (4, true));
        assert_eq!(ledger.oldest_debit(), None);
    }

    #[test]
    fn group_kills_and_vanished_children_match_by_subtree() {
        let now = Instant::now();
        let mut ledger = Ledger::new(Duration::from_secs(60), 100);
        ledger.kernel_kill("/g", true, now);
        assert_eq!(ledger.settle(&kill("/g/sub", 1, 1, CounterSource::Own)), 0);
        ledger.kernel_kill("/p/c", false, now);
        assert_eq!(ledger.settle(&kill("/p", 1, 9, CounterSource::Subtree)), 0);
        assert_eq!(ledger.settle(&kill("/q", 1, 1, CounterSource::Own)), 1);
    }

    #[test]
    fn within_and_parents() {
        assert!(is_within("/a/b", "/a"));
        assert!(is_within("/a", "/a"));
        assert!(is_within("/a", "/"));
        assert!(!is_within("/ab", "/a"));
        assert_eq!(parent_of("/a/b"), Some("/a"));
        assert_eq!(parent_of("/a"), Some("/"));
        assert_eq!(parent_of("/"), None);
    }

    #[test]
    fn the_real_hierarchy_is_found_and_read() {
        let hierarchy = Hierarchy::detect(Path::new("/sys/fs/cgroup")).expect("memory controller");
        let counters = Counters::read(&hierarchy).expect("read");
        assert!(!counters.cgroups.is_empty());
        assert!(Hierarchy::detect(Path::new("/nonexistent")).is_err());
    }
}
