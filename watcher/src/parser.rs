//! The kernel's OOM report, line by line, across kernel versions 3.10 to 6.x.
//!
//! An OOM kill writes a report of dozens of records; three kinds of line matter:
//!
//! - the summary (4.19 and later): `oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),
//!   cpuset=…,mems_allowed=0,oom_memcg=/…,task_memcg=/…,task=python3,pid=1234,uid=0` — which cgroup
//!   hit its limit and which cgroup the victim lived in. A global (node-wide) OOM says
//!   `global_oom` instead of `oom_memcg=…`. Before 4.19 the same facts came as
//!   `Task in /… killed as a result of limit of /…`.
//! - the kill: `Memory cgroup out of memory: Killed process 1234 (python3) total-vm:…kB,
//!   anon-rss:…kB, file-rss:…kB, shmem-rss:…kB, UID:0 pgtables:…kB oom_score_adj:0`. Before 5.1
//!   there is no `…: ` prefix; `shmem-rss` arrived in 4.5, `UID` in 5.3, `pgtables` and
//!   `oom_score_adj` in 5.10. This is the one line the kernel never rate-limits.
//! - `Tasks in /… are going to be killed due to memory.oom.group set` (cgroup v2 with
//!   `memory.oom.group=1`, which the kubelet sets on containers since 1.28): the kills that follow
//!   have no summary of their own.
//!
//! Three more say which process's allocation made the kernel kill — the *trigger*, which need not
//! be the victim (a sidecar can fill a pod's limit and the kernel kill the main process; on a
//! node-wide OOM, the kubelet's allocation may kill a pod's JVM):
//!
//! - the header, `NAME invoked oom-killer: gfp_mask=…`, naming the allocating thread;
//! - the stack dump's first line, `CPU: 1 UID: 0 PID: 24170 Comm: NAME Not tainted …`, with that
//!   thread's id (a thread id, not a process id: it equals the victim's pid only when the
//!   process's main thread allocated);
//! - the task table (`[  pid  ]   uid  tgid … name`, unless `vm.oom_dump_tasks=0`), one row per
//!   process that could have been chosen, which maps a thread to its process.
//!
//! A trigger is reported only when these lines show it is another process than the victim: a
//! JVM's or a Go program's other threads (`C2 CompilerThre`, or the process's own name with
//! another thread id) are the victim itself, not a trigger.
//!
//! The summary and the header around it are rate-limited by the kernel (10 reports per 5 s), so a
//! kill line may come alone; [`OomAssembler`] then yields a kill without a cgroup and the watcher
//! fills it in from the memory cgroup counters.
//!
//! Parsing is by hand rather than by regular expression: the values are simple, and two of them
//! (the process name, bitmap lists such as `mems_allowed=0-1,3`) contain the very separators a
//! naive split would use.

/// A summary line: `oom-kill:constraint=…,task_memcg=…,task=…,pid=…,uid=…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OomSummary {
    /// `CONSTRAINT_MEMCG` for a cgroup limit, `CONSTRAINT_NONE` for a node-wide OOM, …
    pub constraint: Option<String>,
    /// The cgroup whose limit was hit (`None` for a global OOM).
    pub oom_memcg: Option<String>,
    /// The victim's memory cgroup.
    pub task_memcg: Option<String>,
    /// The victim's name (the kernel's 15-character `comm`).
    pub task: String,
    /// The victim's pid.
    pub pid: u32,
    /// The victim's uid.
    pub uid: Option<u32>,
    /// True when the kernel reported `global_oom`.
    pub global: bool,
}

/// A kill line: `[…: ]Killed process PID (NAME) total-vm:…kB, anon-rss:…kB, …`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KilledProcess {
    /// What the kernel says happened, e.g. `Memory cgroup out of memory` or `Out of memory`
    /// (absent before 5.1).
    pub context: Option<String>,
    /// The killed process's pid.
    pub pid: u32,
    /// The killed process's name.
    pub name: String,
    /// Virtual memory size, in KiB.
    pub total_vm_kb: u64,
    /// Anonymous resident memory, in KiB.
    pub anon_rss_kb: u64,
    /// File-backed resident memory, in KiB.
    pub file_rss_kb: u64,
    /// Shared-memory resident memory, in KiB (4.5 and later).
    pub shmem_rss_kb: Option<u64>,
    /// The process's uid (5.3 and later).
    pub uid: Option<u32>,
    /// Page-table size, in KiB (5.10 and later).
    pub pgtables_kb: Option<u64>,
    /// The process's `oom_score_adj` (5.10 and later).
    pub oom_score_adj: Option<i32>,
}

/// One OOM-related kernel log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OomLine {
    /// `… invoked oom-killer: …`: a new OOM report starts.
    Invoked {
        /// The process whose allocation failed (not necessarily the victim).
        process: String,
    },
    /// The `oom-kill:` summary (4.19 and later).
    Summary(OomSummary),
    /// `Task in X killed as a result of limit of Y` (before 4.19).
    LegacyTaskIn {
        /// The victim's memory cgroup.
        task_memcg: String,
        /// The cgroup whose limit was hit.
        oom_memcg: String,
    },
    /// `Tasks in X are going to be killed due to memory.oom.group set`.
    GroupKill {
        /// The cgroup all of whose tasks are killed.
        memcg: String,
    },
    /// A process was killed.
    Killed(KilledProcess),
    /// `CPU: N [UID: N ]PID: N Comm: NAME …`: the first line of a stack dump, naming the running
    /// thread. In an OOM report it follows the header and names the allocating thread.
    Running {
        /// The thread's id.
        pid: u32,
        /// Its name.
        comm: String,
    },
    /// The task table's header, `[  pid  ]   uid  tgid total_vm … name`.
    TaskHeader {
        /// How many columns come before the name (it differs between kernel versions).
        columns: usize,
    },
    /// A row of the task table: `[  1234]     0  1234 …  NAME`.
    Task {
        /// The pid of the process's thread that holds its memory (normally the main thread).
        pid: u32,
        /// The process id.
        tgid: u32,
        /// The columns after the pid, as printed (the name is the last, and may hold spaces).
        rest: String,
    },
}

/// A line that is clearly part of an OOM report but could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot parse OOM line ({reason}): {line:?}")]
pub struct ParseError {
    /// What was wrong.
    pub reason: String,
    /// The line, cut to 300 bytes.
    pub line: String,
}

fn parse_error(reason: impl Into<String>, line: &str) -> ParseError {
    ParseError {
        reason: reason.into(),
        line: line.chars().take(300).collect(),
    }
}

const SUMMARY_PREFIX: &str = "oom-kill:";
const KILLED_MARKER: &str = "Killed process ";
const INVOKED_MARKER: &str = " invoked oom-killer";
const LEGACY_TASK_IN: &str = "Task in ";
const LEGACY_LIMIT_OF: &str = " killed as a result of limit of ";
const GROUP_PREFIX: &str = "Tasks in ";
const GROUP_SUFFIX: &str = " are going to be killed due to memory.oom.group set";
const RUNNING_PREFIX: &str = "CPU: ";

/// `N [UID: N ]PID: N Comm: NAME Not tainted …` (after `CPU: `). Stack dumps are printed for
/// many reasons besides OOM reports, so a line that does not fit is simply not one (`None`).
fn parse_running(rest: &str) -> Option<OomLine> {
    let (_, after) = rest.split_once(" PID: ")?;
    let (pid, after) = after.split_once(' ')?;
    let pid = pid.parse().ok()?;
    let after = after.strip_prefix("Comm: ")?;
    let end = [" Not tainted", " Tainted:"]
        .iter()
        .filter_map(|marker| after.find(marker))
        .min()
        .unwrap_or(after.len());
    Some(OomLine::Running {
        pid,
        comm: after[..end].to_owned(),
    })
}

/// The task table's header or one of its rows; anything else in brackets (`[drm] …`) is `None`.
fn parse_task_table(message: &str) -> Option<OomLine> {
    let (inside, rest) = message.strip_prefix('[')?.split_once(']')?;
    let inside = inside.trim();
    if inside == "pid" {
        let columns: Vec<&str> = rest.split_whitespace().collect();
        return (columns.last() == Some(&"name")).then(|| OomLine::TaskHeader {
            columns: columns.len() - 1,
        });
    }
    let pid = inside.parse().ok()?;
    let mut columns = rest.split_whitespace();
    let _uid: u32 = columns.next()?.parse().ok()?;
    let tgid = columns.next()?.parse().ok()?;
    Some(OomLine::Task {
        pid,
        tgid,
        rest: rest.to_owned(),
    })
}

/// Classifies a kernel log message: `None` for lines that have nothing to do with OOM kills,
/// `Some(Err(_))` for lines that look like OOM report lines but do not parse.
pub fn parse_line(message: &str) -> Option<Result<OomLine, ParseError>> {
    let message = message.trim_end();
    if let Some(rest) = message.strip_prefix(SUMMARY_PREFIX) {
        return Some(parse_summary(rest, message).map(OomLine::Summary));
    }
    if let Some(position) = message.find(KILLED_MARKER) {
        // `Killed process` opens the line, or follows the `context: ` prefix.
        let prefix = &message[..position];
        if prefix.is_empty() || prefix.ends_with(": ") {
            return Some(
                parse_killed(prefix, &message[position + KILLED_MARKER.len()..], message)
                    .map(OomLine::Killed),
            );
        }
        return None;
    }
    if let Some(rest) = message.strip_prefix(GROUP_PREFIX)
        && let Some(memcg) = rest.strip_suffix(GROUP_SUFFIX)
    {
        return Some(Ok(OomLine::GroupKill {
            memcg: memcg.to_owned(),
        }));
    }
    if let Some(rest) = message.strip_prefix(LEGACY_TASK_IN)
        && let Some((task_memcg, oom_memcg)) = rest.split_once(LEGACY_LIMIT_OF)
    {
        return Some(Ok(OomLine::LegacyTaskIn {
            task_memcg: task_memcg.to_owned(),
            oom_memcg: oom_memcg.to_owned(),
        }));
    }
    if let Some(rest) = message.strip_prefix(RUNNING_PREFIX) {
        return parse_running(rest).map(Ok);
    }
    if message.starts_with('[') {
        return parse_task_table(message).map(Ok);
    }
    if let Some(position) = message.find(INVOKED_MARKER)
        && message[position + INVOKED_MARKER.len()..].starts_with(':')
    {
        return Some(Ok(OomLine::Invoked {
            process: message[..position].to_owned(),
        }));
    }
    None
}

/// The keys of the summary, in the order the kernel prints them.
const SUMMARY_KEYS: [&str; 6] = [
    "constraint",
    "nodemask",
    "cpuset",
    "mems_allowed",
    "oom_memcg",
    "task_memcg",
];

fn parse_summary(rest: &str, line: &str) -> Result<OomSummary, ParseError> {
    // The line ends in `,task=NAME,pid=N,uid=N`; NAME may hold anything, so peel from the right.
    let mut head = rest;
    let mut uid = None;
    if let Some((before, value)) = head.rsplit_once(",uid=")
        && let Ok(parsed) = value.parse()
    {
        uid = Some(parsed);
        head = before;
    }
    let (before, pid) = head
        .rsplit_once(",pid=")
        .ok_or_else(|| parse_error("no pid", line))?;
    let pid: u32 = pid
        .parse()
        .map_err(|_| parse_error(format!("pid {pid:?} is not a number"), line))?;
    // `task=` follows `task_memcg=…` when there is one; a cgroup path is written by the kubelet
    // or the runtime, while the task name is chosen by the (possibly hostile) workload, so the
    // first `,task=` after the memcg path is the right one.
    let search_from = before
        .find("task_memcg=")
        .map_or(0, |i| i + "task_memcg=".len());
    let task_at = before[search_from..]
        .find(",task=")
        .map(|i| i + search_from)
        .or_else(|| before.starts_with("task=").then_some(0))
        .ok_or_else(|| parse_error("no task", line))?;
    let task_field = &before[task_at..];
    let task = task_field
        .strip_prefix(",task=")
        .or_else(|| task_field.strip_prefix("task="))
        .unwrap_or_default()
        .to_owned();
    let fields = &before[..task_at];

    let mut summary = OomSummary {
        constraint: None,
        oom_memcg: None,
        task_memcg: None,
        task,
        pid,
        uid,
        global: false,
    };
    // Split on commas, but a comma only starts a new field when a known key follows it: bitmap
    // lists (`mems_allowed=0-1,3`) contain commas too.
    let mut current: Option<(&str, String)> = None;
    let finish = |field: Option<(&str, String)>, summary: &mut OomSummary| {
        if let Some((key, value)) = field {
            match key {
                "constraint" => summary.constraint = Some(value),
                "oom_memcg" => summary.oom_memcg = Some(value),
                "task_memcg" => summary.task_memcg = Some(value),
                _ => {}
            }
        }
    };
    for token in fields.split(',') {
        if token == "global_oom" {
            finish(current.take(), &mut summary);
            summary.global = true;
            continue;
        }
        let key = token
            .split_once('=')
            .map(|(key, _)| key)
            .filter(|key| SUMMARY_KEYS.contains(key));
        match key {
            Some(key) => {
                finish(current.take(), &mut summary);
                current = Some((key, token[key.len() + 1..].to_owned()));
            }
            None => match current.as_mut() {
                Some((_, value)) => {
                    value.push(',');
                    value.push_str(token);
                }
                None if token.is_empty() => {}
                None => return Err(parse_error(format!("unexpected field {token:?}"), line)),
            },
        }
    }
    finish(current.take(), &mut summary);
    if summary.oom_memcg.is_none() && summary.constraint.as_deref() == Some("CONSTRAINT_NONE") {
        summary.global = true;
    }
    Ok(summary)
}

fn parse_killed(prefix: &str, rest: &str, line: &str) -> Result<KilledProcess, ParseError> {
    let context = prefix
        .strip_suffix(": ")
        .map(str::to_owned)
        .filter(|c| !c.is_empty());
    let (pid, rest) = rest
        .split_once(" (")
        .ok_or_else(|| parse_error("no `(` after the pid", line))?;
    let pid: u32 = pid
        .parse()
        .map_err(|_| parse_error(format!("pid {pid:?} is not a number"), line))?;
    // `NAME) total-vm:…`, or on some distribution kernels `NAME), UID N, total-vm:…`.
    let (head, rest) = rest
        .rsplit_once(" total-vm:")
        .ok_or_else(|| parse_error("no total-vm", line))?;
    let (name, uid) = match head.rsplit_once("), UID ") {
        Some((name, uid)) => {
            let uid = uid.trim_end_matches(',');
            let uid: u32 = uid
                .parse()
                .map_err(|_| parse_error(format!("UID {uid:?} is not a number"), line))?;
            (name, Some(uid))
        }
        None => (
            head.strip_suffix(')')
                .ok_or_else(|| parse_error("no `)` after the process name", line))?,
            None,
        ),
    };
    let mut killed = KilledProcess {
        context,
        pid,
        name: name.to_owned(),
        total_vm_kb: 0,
        anon_rss_kb: 0,
        file_rss_kb: 0,
        shmem_rss_kb: None,
        uid,
        pgtables_kb: None,
        oom_score_adj: None,
    };
    let fields = format!("total-vm:{rest}");
    let mut seen_required = 0;
    for token in fields.split([',', ' ']).filter(|t| !t.is_empty()) {
        let (key, value) = token
            .split_once(':')
            .ok_or_else(|| parse_error(format!("field {token:?} has no `:`"), line))?;
        let number = value.strip_suffix("kB").unwrap_or(value);
        let kilobytes = || -> Result<u64, ParseError> {
            number
                .parse()
                .map_err(|_| parse_error(format!("{key} {value:?} is not a number"), line))
        };
        match key {
            "total-vm" => {
                killed.total_vm_kb = kilobytes()?;
                seen_required += 1;
            }
            "anon-rss" => {
                killed.anon_rss_kb = kilobytes()?;
                seen_required += 1;
            }
            "file-rss" => {
                killed.file_rss_kb = kilobytes()?;
                seen_required += 1;
            }
            "shmem-rss" => killed.shmem_rss_kb = Some(kilobytes()?),
            "pgtables" => killed.pgtables_kb = Some(kilobytes()?),
            "UID" => {
                killed.uid =
                    Some(number.parse().map_err(|_| {
                        parse_error(format!("UID {value:?} is not a number"), line)
                    })?);
            }
            "oom_score_adj" => {
                killed.oom_score_adj = Some(number.parse().map_err(|_| {
                    parse_error(format!("oom_score_adj {value:?} is not a number"), line)
                })?);
            }
            // Fields a future kernel may add are fine.
            _ => {}
        }
    }
    if seen_required < 3 {
        return Err(parse_error("missing total-vm, anon-rss or file-rss", line));
    }
    Ok(killed)
}

/// One process killed by the OOM killer, assembled from the report's lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelKill {
    /// Sequence number of the record that completed the kill (the kill line, or the summary
    /// when the kill line never came).
    pub seq: u64,
    /// Sequence number of the report's first record (its header, or its summary, or the kill line
    /// itself): reading again from there assembles the same kill, cgroups included.
    pub first_seq: u64,
    /// Kernel timestamp of that record, in microseconds since boot.
    pub timestamp_us: u64,
    /// The killed process's pid.
    pub pid: u32,
    /// The killed process's name.
    pub process: String,
    /// The victim's memory cgroup, when the report said.
    pub task_memcg: Option<String>,
    /// The cgroup whose limit was hit, when the report said (for a `memory.oom.group` member:
    /// the victim's report).
    pub oom_memcg: Option<String>,
    /// True for a node-wide OOM (no cgroup limit involved).
    pub global: bool,
    /// The summary's constraint (`CONSTRAINT_MEMCG`, `CONSTRAINT_NONE`, `CONSTRAINT_CPUSET`,
    /// `CONSTRAINT_MEMORY_POLICY`): which kind of limit fired. `None` without a summary.
    pub constraint: Option<String>,
    /// The process whose allocation made the kernel kill, when the report shows it is another
    /// process than the victim (see the module docs).
    pub trigger: Option<Trigger>,
    /// Resident memory at the kill, in KiB (anon + file + shmem), when the kill line came.
    pub rss_kb: Option<u64>,
    /// True when the process died because its cgroup has `memory.oom.group` set and another
    /// process in it was chosen: part of an OOM event already reported.
    pub group_member: bool,
    /// True when `task_memcg` is the group's cgroup, an ancestor of the victim's own cgroup.
    pub memcg_is_ancestor: bool,
}

/// The process whose allocation made the kernel kill: the report's `… invoked oom-killer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trigger {
    /// Its name (the kernel's 15-character `comm`).
    pub process: String,
    /// Its process id, when the report says (from the task table; or, without one, the
    /// allocating thread's id).
    pub pid: Option<u32>,
}

/// Most task table rows remembered for one report (a node-wide OOM lists every process).
const MAX_TASKS: usize = 65_536;

/// What an OOM report's header says about the process that invoked the OOM killer, kept until
/// the report's victim is assembled.
#[derive(Debug, Clone, Default)]
struct ReportHeader {
    /// The header's record.
    seq: u64,
    /// The invoking thread's name.
    invoker: String,
    /// The invoking thread's id, from the stack dump.
    thread: Option<u32>,
    /// Columns before the name in the task table, from its header.
    columns: Option<usize>,
    /// The task table: pid of each listed process's thread → (process id, name).
    tasks: std::collections::HashMap<u32, (u32, String)>,
}

impl ReportHeader {
    /// The trigger of the kill of `victim_pid` (`victim`), when the report shows it is another
    /// process; `None` when it is the victim or the report cannot tell.
    fn trigger(&self, victim_pid: u32, victim: &str) -> Option<Trigger> {
        // The invoking thread's process: the thread itself when it is listed (a main thread),
        // else the one process listed under the thread's name (threads keep their process's
        // name unless they rename themselves).
        let listed = self
            .thread
            .and_then(|tid| self.tasks.get(&tid))
            .or_else(|| {
                let mut named = self
                    .tasks
                    .values()
                    .filter(|(_, name)| *name == self.invoker);
                match (named.next(), named.next()) {
                    (Some(only), None) => Some(only),
                    _ => None,
                }
            });
        if self.thread == Some(victim_pid) {
            return None;
        }
        if let Some((tgid, name)) = listed {
            return (*tgid != victim_pid).then(|| Trigger {
                process: name.clone(),
                pid: Some(*tgid),
            });
        }
        if self.tasks.is_empty() {
            // No task table: another name is another process (or a renamed thread, which the
            // table would have told apart); the same name with another thread id may well be
            // one of the victim's own threads.
            return (self.invoker != victim).then(|| Trigger {
                process: self.invoker.clone(),
                pid: self.thread,
            });
        }
        // Listed, but not as one process: several processes share the name (one of them the
        // trigger, and when the victim is among them it cannot be told apart), or a thread
        // renamed itself and its process is unknown.
        let several = self
            .tasks
            .values()
            .filter(|(_, name)| *name == self.invoker)
            .nth(1)
            .is_some();
        (several && self.invoker != victim).then(|| Trigger {
            process: self.invoker.clone(),
            pid: None,
        })
    }
}

/// Something the assembler produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assembled {
    /// A kill.
    Kill(KernelKill),
    /// An OOM report line that could not be parsed.
    ParseFailure(ParseError),
}

#[derive(Debug, Clone)]
struct PendingSummary {
    summary: OomSummary,
    seq: u64,
    /// The report's first record: its header's, else the summary's.
    first_seq: u64,
    timestamp_us: u64,
}

/// Turns the kernel's OOM report lines into [`KernelKill`]s.
///
/// A kill is complete at its `Killed process` line, which takes the cgroups from the summary
/// (or legacy `Task in` line) before it. A summary whose kill line never arrives (lost in a ring
/// buffer overrun) becomes a kill of its own when the next report starts or on [`Self::flush`].
#[derive(Debug, Default)]
pub struct OomAssembler {
    summary: Option<PendingSummary>,
    legacy: Option<(String, String)>,
    group: Option<String>,
    /// The open report's header, until its victim is assembled. A kill line that comes without
    /// one (the kernel rate-limits headers with summaries) has no known trigger.
    header: Option<ReportHeader>,
    /// The last victim's constraint and limit cgroup, for the `memory.oom.group` kills that
    /// follow it: the same OOM, the same limit.
    victim_limit: Option<(Option<String>, Option<String>)>,
    /// The last victim's report's first record: the group kills that follow are in that report.
    victim_first_seq: Option<u64>,
}

impl OomAssembler {
    /// An assembler with nothing pending.
    pub fn new() -> OomAssembler {
        OomAssembler::default()
    }

    /// True while a summary waits for its kill line; the caller should call [`Self::flush`] if
    /// no further record arrives shortly.
    pub fn has_pending(&self) -> bool {
        self.summary.is_some()
    }

    /// Feeds one kernel record's message.
    pub fn push(&mut self, seq: u64, timestamp_us: u64, message: &str) -> Vec<Assembled> {
        let mut out = Vec::new();
        match parse_line(message) {
            None => {}
            Some(Err(error)) => out.push(Assembled::ParseFailure(error)),
            Some(Ok(OomLine::Invoked { process })) => {
                out.extend(self.flush());
                self.legacy = None;
                self.group = None;
                self.victim_limit = None;
                self.header = Some(ReportHeader {
                    seq,
                    invoker: process,
                    ..ReportHeader::default()
                });
            }
            Some(Ok(OomLine::Running { pid, comm })) => {
                // Only the dump right after the header names the allocating thread.
                if let Some(header) = self.header.as_mut()
                    && header.thread.is_none()
                    && header.columns.is_none()
                    && comm == header.invoker
                {
                    header.thread = Some(pid);
                }
            }
            Some(Ok(OomLine::TaskHeader { columns })) => {
                if let Some(header) = self.header.as_mut() {
                    header.columns = Some(columns);
                    header.tasks.clear();
                }
            }
            Some(Ok(OomLine::Task { pid, tgid, rest })) => {
                if let Some(header) = self.header.as_mut()
                    && let Some(columns) = header.columns
                    && header.tasks.len() < MAX_TASKS
                {
                    let name = rest.split_whitespace().skip(columns).collect::<Vec<_>>();
                    if !name.is_empty() {
                        header.tasks.insert(pid, (tgid, name.join(" ")));
                    }
                }
            }
            Some(Ok(OomLine::Summary(summary))) => {
                out.extend(self.flush());
                self.group = None;
                self.victim_limit = None;
                let first_seq = self.header.as_ref().map_or(seq, |h| h.seq);
                self.summary = Some(PendingSummary {
                    summary,
                    seq,
                    first_seq,
                    timestamp_us,
                });
            }
            Some(Ok(OomLine::LegacyTaskIn {
                task_memcg,
                oom_memcg,
            })) => {
                self.legacy = Some((task_memcg, oom_memcg));
            }
            Some(Ok(OomLine::GroupKill { memcg })) => {
                self.group = Some(memcg);
            }
            Some(Ok(OomLine::Killed(killed))) => {
                let rss_kb =
                    killed.anon_rss_kb + killed.file_rss_kb + killed.shmem_rss_kb.unwrap_or(0);
                let global_context = killed
                    .context
                    .as_deref()
                    .is_some_and(|c| c.starts_with("Out of memory"));
                let mut kill = KernelKill {
                    seq,
                    first_seq: seq,
                    timestamp_us,
                    pid: killed.pid,
                    process: killed.name,
                    task_memcg: None,
                    oom_memcg: None,
                    global: global_context,
                    constraint: None,
                    trigger: None,
                    rss_kb: Some(rss_kb),
                    group_member: false,
                    memcg_is_ancestor: false,
                };
                if let Some(pending) = self.summary.take() {
                    kill.first_seq = pending.first_seq;
                    self.victim_first_seq = Some(pending.first_seq);
                    // Before 5.2 the kernel could kill a child of the chosen task
                    // ("sacrifice child"): the summary's pid then differs, its cgroups still hold.
                    kill.task_memcg = pending.summary.task_memcg;
                    kill.oom_memcg = pending.summary.oom_memcg;
                    kill.global |= pending.summary.global;
                    kill.constraint = pending.summary.constraint;
                    self.victim_limit = Some((kill.constraint.clone(), kill.oom_memcg.clone()));
                    kill.trigger = self
                        .header
                        .take()
                        .and_then(|h| h.trigger(kill.pid, &kill.process));
                } else if let Some(group) = &self.group {
                    kill.first_seq = self.victim_first_seq.unwrap_or(seq);
                    kill.task_memcg = Some(group.clone());
                    if let Some((constraint, oom_memcg)) = &self.victim_limit {
                        kill.constraint.clone_from(constraint);
                        kill.oom_memcg.clone_from(oom_memcg);
                    }
                    kill.group_member = true;
                    kill.memcg_is_ancestor = true;
                } else {
                    if let Some((task_memcg, oom_memcg)) = self.legacy.take() {
                        kill.task_memcg = Some(task_memcg);
                        kill.oom_memcg = Some(oom_memcg);
                    }
                    // A header without a summary: a kernel before 4.19. A kill line alone (its
                    // header rate-limited away) finds no header: the previous report's was
                    // taken by its own victim.
                    let header = self.header.take();
                    kill.first_seq = header.as_ref().map_or(seq, |h| h.seq);
                    self.victim_first_seq = Some(kill.first_seq);
                    kill.trigger = header.and_then(|h| h.trigger(kill.pid, &kill.process));
                }
                out.push(Assembled::Kill(kill));
            }
        }
        out
    }

    /// Completes a summary whose kill line has not arrived, as a kill of its own.
    pub fn flush(&mut self) -> Option<Assembled> {
        let pending = self.summary.take()?;
        let trigger = self
            .header
            .take()
            .and_then(|h| h.trigger(pending.summary.pid, &pending.summary.task));
        Some(Assembled::Kill(KernelKill {
            seq: pending.seq,
            first_seq: pending.first_seq,
            timestamp_us: pending.timestamp_us,
            pid: pending.summary.pid,
            process: pending.summary.task,
            task_memcg: pending.summary.task_memcg,
            oom_memcg: pending.summary.oom_memcg,
            global: pending.summary.global,
            constraint: pending.summary.constraint,
            trigger,
            rss_kb: None,
            group_member: false,
            memcg_is_ancestor: false,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn killed(line: &str) -> KilledProcess {
        match parse_line(line) {
            Some(Ok(OomLine::Killed(k))) => k,
            other => panic!("{line}: {other:?}"),
        }
    }

    fn summary(line: &str) -> OomSummary {
        match parse_line(line) {
            Some(Ok(OomLine::Summary(s))) => s,
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn kill_lines_of_every_generation() {
        let k = killed(
            "Killed process 28438 (java) total-vm:20255636kB, anon-rss:466160kB, file-rss:13684kB",
        );
        assert_eq!((k.pid, k.name.as_str(), k.context), (28438, "java", None));
        assert_eq!(
            (k.anon_rss_kb, k.file_rss_kb, k.shmem_rss_kb),
            (466_160, 13_684, None)
        );

        let k = killed(
            "Killed process 387951 (runc:[2:INIT]) total-vm:477124kB, anon-rss:3000kB, file-rss:3896kB, shmem-rss:0kB",
        );
        assert_eq!(k.name, "runc:[2:INIT]");
        assert_eq!(k.shmem_rss_kb, Some(0));

        let k = killed(
            "Memory cgroup out of memory: Killed process 4321 (node) total-vm:1200000kB, anon-rss:500000kB, file-rss:20000kB, shmem-rss:0kB, UID:1000",
        );
        assert_eq!(k.context.as_deref(), Some("Memory cgroup out of memory"));
        assert_eq!(k.uid, Some(1000));
        assert_eq!(k.pgtables_kb, None);

        let k = killed(
            "Memory cgroup out of memory: Killed process 13192 (python3) total-vm:82132kB, anon-rss:65152kB, file-rss:6652kB, shmem-rss:0kB, UID:0 pgtables:192kB oom_score_adj:0",
        );
        assert_eq!(
            (k.pgtables_kb, k.oom_score_adj, k.uid),
            (Some(192), Some(0), Some(0))
        );

        let k = killed(
            "Out of memory: Killed process 77 (my (odd) name) total-vm:10kB, anon-rss:1kB, file-rss:2kB, shmem-rss:3kB, UID:0 pgtables:4kB oom_score_adj:-998",
        );
        assert_eq!(k.name, "my (odd) name");
        assert_eq!(k.oom_score_adj, Some(-998));
    }

    #[test]
    fn summaries_with_bitmaps_global_ooms_and_odd_task_names() {
        let s = summary(
            "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=cri-containerd-ec9e.scope,mems_allowed=0-1,3,oom_memcg=/kubepods.slice/a.slice,task_memcg=/kubepods.slice/a.slice/b.scope,task=pt_main_thread,pid=461754,uid=0",
        );
        assert_eq!(s.constraint.as_deref(), Some("CONSTRAINT_MEMCG"));
        assert_eq!(s.oom_memcg.as_deref(), Some("/kubepods.slice/a.slice"));
        assert_eq!(
            s.task_memcg.as_deref(),
            Some("/kubepods.slice/a.slice/b.scope")
        );
        assert_eq!(
            (s.task.as_str(), s.pid, s.uid, s.global),
            ("pt_main_thread", 461_754, Some(0), false)
        );

        let s = summary(
            "oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0,global_oom,task_memcg=/system.slice/x.service,task=x,pid=1,uid=0",
        );
        assert!(s.global);
        assert_eq!(s.oom_memcg, None);
        assert_eq!(s.task_memcg.as_deref(), Some("/system.slice/x.service"));

        let s = summary(
            "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/a,task_memcg=/a,task=evil,task=x,pid=5,uid=7",
        );
        assert_eq!(s.task_memcg.as_deref(), Some("/a"));
        assert_eq!(s.task, "evil,task=x");
    }

    #[test]
    fn unrelated_and_broken_lines() {
        assert_eq!(parse_line("usb 1-1: new device"), None);
        assert_eq!(
            parse_line(
                "Memory cgroup out of memory: Kill process 62685 (bash) score 0 or sacrifice child"
            ),
            None
        );
        assert_eq!(
            parse_line(
                "oom_reaper: reaped process 387951 (runc:[2:INIT]), now anon-rss:0kB, file-rss:0kB, shmem-rss:0kB"
            ),
            None
        );
        assert_eq!(parse_line("audit: comm=\"x\" msg='Killed process'"), None);
        assert!(matches!(
            parse_line("oom-kill:constraint=CONSTRAINT_MEMCG"),
            Some(Err(_))
        ));
        assert!(matches!(
            parse_line("Memory cgroup out of memory: Killed process x (y) total-vm:1kB"),
            Some(Err(_))
        ));
        assert!(matches!(
            parse_line("Killed process 1 (y) total-vm:1kB, anon-rss:zkB, file-rss:1kB"),
            Some(Err(_))
        ));
        assert!(matches!(
            parse_line("Killed process 1 (y) total-vm:1kB"),
            Some(Err(_))
        ));
    }

    #[test]
    fn group_kills_are_members_of_one_event() {
        let mut assembler = OomAssembler::new();
        assembler.push(1, 10, "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/g,task_memcg=/g/c,task=a,pid=10,uid=0");
        let first = assembler.push(2, 11, "Memory cgroup out of memory: Killed process 10 (a) total-vm:1kB, anon-rss:1kB, file-rss:1kB, shmem-rss:0kB, UID:0 pgtables:1kB oom_score_adj:0");
        assert!(
            assembler
                .push(
                    3,
                    12,
                    "Tasks in /g are going to be killed due to memory.oom.group set"
                )
                .is_empty()
        );
        let second = assembler.push(4, 13, "Memory cgroup out of memory: Killed process 11 (b) total-vm:1kB, anon-rss:1kB, file-rss:1kB, shmem-rss:0kB, UID:0 pgtables:1kB oom_score_adj:0");
        let [Assembled::Kill(first)] = first.as_slice() else {
            panic!("{first:?}")
        };
        let [Assembled::Kill(second)] = second.as_slice() else {
            panic!("{second:?}")
        };
        assert_eq!(
            (first.task_memcg.as_deref(), first.group_member),
            (Some("/g/c"), false)
        );
        assert_eq!(
            (second.task_memcg.as_deref(), second.group_member),
            (Some("/g"), true)
        );
        assert!(second.memcg_is_ancestor);
        // The same OOM as the victim's: the same limit.
        assert_eq!(
            (second.constraint.as_deref(), second.oom_memcg.as_deref()),
            (Some("CONSTRAINT_MEMCG"), Some("/g"))
        );
    }

    #[test]
    fn a_summary_without_its_kill_line_is_still_a_kill() {
        let mut assembler = OomAssembler::new();
        assembler.push(7, 70, "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/a,task_memcg=/a,task=x,pid=9,uid=0");
        assert!(assembler.has_pending());
        let next = assembler.push(
            8,
            80,
            "y invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0",
        );
        let [Assembled::Kill(kill)] = next.as_slice() else {
            panic!("{next:?}")
        };
        assert_eq!((kill.seq, kill.pid, kill.rss_kb), (7, 9, None));
        assert!(!assembler.has_pending());
        assert_eq!(assembler.flush(), None);
    }

    #[test]
    fn a_kill_knows_where_its_report_starts() {
        // Header at 0, summary at 1+, kill line last: reading again from the header reassembles it.
        let kill = report("java", Some(100), &[(100, 100, "java")]);
        assert_eq!((kill.first_seq, kill.seq), (0, 6));
        // A report whose header the kernel rate-limited away starts at its summary, and the
        // memory.oom.group kills that follow belong to it.
        let mut assembler = OomAssembler::new();
        assembler.push(7, 70, MEMCG_SUMMARY);
        let victim = assembler.push(8, 71, &killed_line(100, "java"));
        assembler.push(
            9,
            72,
            "Tasks in /p are going to be killed due to memory.oom.group set",
        );
        let member = assembler.push(10, 73, &killed_line(101, "helper"));
        // A kill line alone is a report of its own.
        let alone = OomAssembler::new().push(20, 80, &killed_line(102, "z"));
        let firsts: Vec<(u64, u64)> = [victim, member, alone]
            .iter()
            .flatten()
            .map(|assembled| match assembled {
                Assembled::Kill(kill) => (kill.first_seq, kill.seq),
                Assembled::ParseFailure(error) => panic!("{error:?}"),
            })
            .collect();
        assert_eq!(firsts, [(7, 8), (7, 10), (20, 20)]);
    }

    #[test]
    fn a_kill_line_alone_has_no_cgroup() {
        let mut assembler = OomAssembler::new();
        let out = assembler.push(5, 50, "Memory cgroup out of memory: Killed process 3 (z) total-vm:1kB, anon-rss:1kB, file-rss:1kB, shmem-rss:0kB");
        let [Assembled::Kill(kill)] = out.as_slice() else {
            panic!("{out:?}")
        };
        assert_eq!(kill.task_memcg, None);
        assert_eq!(kill.rss_kb, Some(2));
    }

    const MEMCG_SUMMARY: &str = "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/p,task_memcg=/p/c,task=java,pid=100,uid=0";

    fn killed_line(pid: u32, name: &str) -> String {
        format!(
            "Memory cgroup out of memory: Killed process {pid} ({name}) total-vm:1kB, anon-rss:1kB, file-rss:1kB, shmem-rss:0kB, UID:0 pgtables:1kB oom_score_adj:0"
        )
    }

    /// Feeds a report — header, stack dump line, task table — and returns its one kill.
    fn report(invoker: &str, thread: Option<u32>, table: &[(u32, u32, &str)]) -> KernelKill {
        let mut assembler = OomAssembler::new();
        let mut lines = vec![format!(
            "{invoker} invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0"
        )];
        if let Some(tid) = thread {
            lines.push(format!(
                "CPU: 1 UID: 0 PID: {tid} Comm: {invoker} Not tainted 6.1.0 #1 PREEMPT(none)"
            ));
        }
        if !table.is_empty() {
            lines.push("Tasks state (memory values in pages):".to_owned());
            lines.push("[  pid  ]   uid  tgid total_vm      rss rss_anon rss_file rss_shmem pgtables_bytes swapents oom_score_adj name".to_owned());
            for (pid, tgid, name) in table {
                lines.push(format!(
                    "[{pid:>7}]     0 {tgid:>5}    15415    13872    12224     1648         0   155648        0             0 {name}"
                ));
            }
        }
        lines.push(MEMCG_SUMMARY.to_owned());
        lines.push(killed_line(100, "java"));
        let mut kills = Vec::new();
        for (seq, line) in lines.iter().enumerate() {
            kills.extend(assembler.push(seq as u64, seq as u64, line));
        }
        let [Assembled::Kill(kill)] = kills.as_slice() else {
            panic!("{kills:?}")
        };
        assert_eq!(kill.constraint.as_deref(), Some("CONSTRAINT_MEMCG"));
        kill.clone()
    }

    fn trigger(process: &str, pid: Option<u32>) -> Option<Trigger> {
        Some(Trigger {
            process: process.to_owned(),
            pid,
        })
    }

    #[test]
    fn stack_dump_and_task_table_lines() {
        assert_eq!(
            parse_line("CPU: 2 PID: 5282 Comm: java Tainted: G    B ------------ T 3.10.0 #1"),
            Some(Ok(OomLine::Running {
                pid: 5282,
                comm: "java".into()
            }))
        );
        assert_eq!(
            parse_line("CPU: 0 UID: 1000 PID: 77 Comm: Web Content Not tainted 6.18.4 #1"),
            Some(Ok(OomLine::Running {
                pid: 77,
                comm: "Web Content".into()
            }))
        );
        assert_eq!(
            parse_line("[ pid ]   uid  tgid total_vm      rss nr_ptes swapents oom_score_adj name"),
            Some(Ok(OomLine::TaskHeader { columns: 7 }))
        );
        assert!(matches!(
            parse_line(
                "[  24167]     0 24167      648      366        0      366         0    49152        0             0 sh"
            ),
            Some(Ok(OomLine::Task {
                pid: 24167,
                tgid: 24167,
                ..
            }))
        ));
        // Brackets and stack dumps are printed for other reasons too: not OOM lines, no errors.
        assert_eq!(parse_line("[drm] Initialized"), None);
        assert_eq!(parse_line("CPU: 3 is now offline"), None);
    }

    #[test]
    fn the_trigger_is_another_process_as_the_report_shows_it() {
        // The victim's main thread allocated: no trigger.
        assert_eq!(
            report("java", Some(100), &[(100, 100, "java")]).trigger,
            None
        );
        // Another listed process allocated.
        assert_eq!(
            report(
                "sidecar",
                Some(200),
                &[(100, 100, "java"), (200, 200, "sidecar")]
            )
            .trigger,
            trigger("sidecar", Some(200))
        );
        // One of the victim's other threads (same name, a thread id not in the table).
        assert_eq!(
            report("java", Some(104), &[(100, 100, "java")]).trigger,
            None
        );
        // A thread of another process: the one process listed under that name.
        assert_eq!(
            report(
                "kubelet",
                Some(1201),
                &[(100, 100, "java"), (1187, 1187, "kubelet")]
            )
            .trigger,
            trigger("kubelet", Some(1187))
        );
        // A renamed thread (a JVM's `C2 CompilerThre`): whose, the report does not say.
        assert_eq!(
            report("C2 CompilerThre", Some(105), &[(100, 100, "java")]).trigger,
            None
        );
        // Several processes of that name: the trigger is one of them when the victim is not.
        assert_eq!(
            report(
                "worker",
                Some(300),
                &[
                    (100, 100, "java"),
                    (301, 301, "worker"),
                    (302, 302, "worker")
                ]
            )
            .trigger,
            trigger("worker", None)
        );
        assert_eq!(
            report("java", Some(300), &[(100, 100, "java"), (101, 101, "java")]).trigger,
            None
        );
        // No task table (vm.oom_dump_tasks=0): another name is another process.
        assert_eq!(
            report("sidecar", Some(200), &[]).trigger,
            trigger("sidecar", Some(200))
        );
        assert_eq!(report("java", Some(104), &[]).trigger, None);
        assert_eq!(
            report("sidecar", None, &[]).trigger,
            trigger("sidecar", None)
        );
    }

    #[test]
    fn a_report_without_a_header_has_no_trigger() {
        let mut assembler = OomAssembler::new();
        assembler.push(
            1,
            1,
            "sidecar invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0",
        );
        assembler.push(2, 2, MEMCG_SUMMARY);
        let first = assembler.push(3, 3, &killed_line(100, "java"));
        // The next kill's header and summary were rate-limited away.
        let second = assembler.push(4, 4, &killed_line(101, "java"));
        let [Assembled::Kill(first)] = first.as_slice() else {
            panic!("{first:?}")
        };
        let [Assembled::Kill(second)] = second.as_slice() else {
            panic!("{second:?}")
        };
        assert_eq!(first.trigger, trigger("sidecar", None));
        assert_eq!(
            (second.trigger.clone(), second.constraint.clone()),
            (None, None)
        );
    }
}
