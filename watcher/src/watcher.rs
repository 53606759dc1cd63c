//! The watcher itself: one struct that owns all state, and one `select!` loop over its inputs
//! (kernel log records, cgroup counter readings, timers, shutdown).
//!
//! A kill is reported once, by whichever source has it first:
//! - the kernel log, normally: its kill line is read within milliseconds, carries the process
//!   name and (with the summary before it) the victim's cgroup; published at once.
//! - a kill line without a cgroup (the kernel rate-limits the summary to 10 per 5 s) waits for the
//!   next counter reading, which says which cgroup counted a kill, and is published then.
//! - a counted kill no kernel log line explains within the grace period (lost to an overrun,
//!   unparseable, or no kernel log access at all) is published from the counter alone.
//!
//! Every bonk carries the kill it reports ([`bonker_protocol::Kill`]): seen by the kernel, at the
//! kernel's timestamp, named by cluster, namespace, pod, container and node, with the limit that
//! fired ([`crate::limit`]) and the process that triggered it when it was not the victim. The
//! gateway and the desks merge an alert for the same kill into it. A kill outside any pod has no
//! namespace of its own: it goes to the default namespace's topic, its kill keyed by the node.
//!
//! Nothing here reads the victim's cgroup after the kill: the kernel's report names it by path,
//! and the path alone names the pod and container — the runtime removes a killed container's
//! cgroup within milliseconds, and that must not matter.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bonker_protocol::{Bonk, BonkId, Detector, Kill, Limit, Namespace, Severity, Source, Topics};
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::cgroup::{CounterSource, CounterTracker, Counters, Hierarchy, Ledger};
use crate::config::WatcherConfig;
use crate::identity::{CgroupIdentity, identify};
use crate::kmsg::{self, KernelLog, KmsgRead, Progress, StateFile};
use crate::kube::{KubeApi, PodDirectory, PodNames};
use crate::limit;
use crate::metrics::{CounterOnlyLabels, KillLabels, Metrics};
use crate::parser::{Assembled, KernelKill, OomAssembler, Trigger};
use crate::publish::{BonkPublisher, Confirmations};

/// How long a summary waits for its kill line before it is reported alone.
const SUMMARY_WAIT: Duration = Duration::from_millis(250);
/// How long unmatched kernel-log kills are remembered for the counters.
const CREDIT_LIFETIME: Duration = Duration::from_secs(30);
/// Most unmatched entries of each kind kept in the ledger.
const MAX_LEDGER_ENTRIES: usize = 10_000;
/// Most kills kept waiting for a cgroup.
const MAX_AWAITING: usize = 1_000;

/// The reason every watcher bonk carries.
pub(crate) const REASON: &str = "OOMKilled";

/// One kill, ready to be reported.
#[derive(Debug, Clone)]
struct KillReport {
    id: BonkId,
    /// The first record of the kernel log report it was read from (none for the counters'
    /// kills): the broker's acknowledgement of its bonk is reported back with it.
    seq: Option<u64>,
    process: Option<String>,
    pid: Option<u32>,
    cgroup: Option<String>,
    oom_cgroup: Option<String>,
    /// The kernel's `CONSTRAINT_…`, when its summary came.
    constraint: Option<String>,
    /// Which limit fired (see [`crate::limit`]).
    limit: Option<Limit>,
    /// True when the kernel's report said which limit (rather than the counters suggesting it).
    limit_reported: bool,
    /// The process whose allocation made the kernel kill, when not the victim.
    trigger: Option<Trigger>,
    /// Processes killed: more than one for a `memory.oom.group` kill seen by the counters.
    processes: u64,
    /// Killed because another process of its `memory.oom.group` was (reported with that one).
    group_member: bool,
    rss_kb: Option<u64>,
    fired_at: DateTime<Utc>,
    /// Kernel timestamp, for the detection delay metric.
    timestamp_us: Option<u64>,
    /// Counted and bonked (false for `memory.oom.group` members and history).
    bonk: bool,
    counter_only: bool,
}

/// The node watcher.
#[derive(Debug)]
pub struct Watcher {
    config: WatcherConfig,
    topics: Topics,
    metrics: Metrics,
    publisher: BonkPublisher,
    /// Kernel log records the broker acknowledged the bonk of.
    confirmations: Confirmations,
    directory: PodDirectory,
    hierarchy: Option<Hierarchy>,
    /// How far the kernel log is reported.
    progress: Progress,
    assembler: OomAssembler,
    summary_deadline: Option<tokio::time::Instant>,
    tracker: CounterTracker,
    ledger: Ledger,
    /// Kernel-log kills without a cgroup, waiting for a counter reading, with their deadline.
    awaiting: VecDeque<(KernelKill, Instant)>,
    /// Kernel timestamp (µs) of the counters' baseline: older kills are already in it.
    baseline_us: u64,
    kernel_log_open: bool,
}

impl Watcher {
    /// Prepares the watcher: reads the boot id and resume point, finds the memory cgroup
    /// hierarchy, builds the Kubernetes client and starts the MQTT client.
    pub fn new(config: WatcherConfig, metrics: Metrics) -> anyhow::Result<Watcher> {
        use anyhow::Context as _;
        let boot_id = kmsg::read_boot_id(&config.boot_id_file).with_context(|| {
            format!("reading the boot id from {}", config.boot_id_file.display())
        })?;
        let state_file = config.state_file.clone().map(StateFile::new);
        let resume = match state_file.as_ref().map(StateFile::load).transpose() {
            Ok(point) => point.flatten(),
            Err(error) => {
                tracing::warn!(%error, "cannot read the state file; starting without a resume point");
                None
            }
        };
        let hierarchy = match config.cgroup_scan_interval {
            None => None,
            Some(_) => match Hierarchy::detect(&config.cgroup_root) {
                Ok(hierarchy) => {
                    tracing::info!(cgroup = hierarchy.version(), root = %hierarchy.root().display(), "reading memory cgroup OOM counters");
                    Some(hierarchy)
                }
                Err(error) => {
                    tracing::warn!(%error, "memory cgroup counters unavailable; relying on the kernel log alone");
                    None
                }
            },
        };
        let api = match &config.kube_api {
            Some(settings) => Some(KubeApi::new(settings, &config.node_name)?),
            None => {
                tracing::warn!(
                    "no Kubernetes API configured (not in a cluster and no --kube-api-url): kills are reported by cgroup path, without pod names"
                );
                None
            }
        };
        let (publisher, confirmations) = BonkPublisher::start(
            &config.mqtt,
            &config.node_name,
            config.max_queued_bonks,
            metrics.clone(),
        )?;
        Ok(Watcher {
            topics: Topics::new(config.prefix.clone()),
            metrics,
            publisher,
            confirmations,
            directory: PodDirectory::new(api),
            hierarchy,
            progress: Progress::new(boot_id, state_file, resume),
            assembler: OomAssembler::new(),
            summary_deadline: None,
            tracker: CounterTracker::new(),
            ledger: Ledger::new(CREDIT_LIFETIME, MAX_LEDGER_ENTRIES),
            awaiting: VecDeque::new(),
            baseline_us: 0,
            kernel_log_open: false,
            config,
        })
    }

    /// Runs until `shutdown` is cancelled, then drains the publish queue.
    pub async fn run(mut self, shutdown: CancellationToken) -> anyhow::Result<()> {
        self.list_pods().await;
        // The counters' baseline comes first, so kills found later in the kernel log's history
        // are known to be included in it.
        self.baseline_us = kmsg::monotonic_now_us();
        if let Some(hierarchy) = self.hierarchy.clone() {
            match read_counters(hierarchy).await {
                Ok(counters) => {
                    self.tracker.observe(counters);
                }
                Err(error) => tracing::warn!(%error, "cannot read the memory cgroup counters"),
            }
        }
        let log = self.open_kernel_log();
        if log.is_none() && self.hierarchy.is_none() {
            anyhow::bail!(
                "neither the kernel log ({}) nor the memory cgroup counters (under {}) can be read: nothing to watch",
                self.config.kmsg.display(),
                self.config.cgroup_root.display()
            );
        }
        let result = self.watch(log, &shutdown).await;
        self.publisher.shutdown().await;
        while let Ok(seq) = self.confirmations.try_recv() {
            self.progress.confirmed(seq);
        }
        result
    }

    /// Lists this node's pods, so the first kill is named at once.
    async fn list_pods(&mut self) {
        if !self.directory.has_api() {
            return;
        }
        match self.directory.refresh().await {
            Ok(pods) => {
                tracing::info!(pods, node = %self.config.node_name, "listed this node's pods")
            }
            Err(error) => {
                tracing::warn!(%error, "cannot list this node's pods yet; will retry on the first kill")
            }
        }
    }

    /// The kernel log, or `None` when it cannot be read (the counters alone then).
    fn open_kernel_log(&mut self) -> Option<KernelLog> {
        match KernelLog::open(&self.config.kmsg) {
            Ok(log) => {
                self.kernel_log_open = true;
                self.metrics.kernel_log_readable.set(1);
                tracing::info!(kmsg = %self.config.kmsg.display(), boot_id = %self.progress.boot_id(), resume = ?self.progress.point(), "following the kernel log");
                Some(log)
            }
            Err(error) => {
                self.metrics.kernel_log_readable.set(0);
                tracing::warn!(
                    %error,
                    kmsg = %self.config.kmsg.display(),
                    "cannot read the kernel log: kills are detected by the memory cgroup counters only, \
                     without process names (in a container this needs CAP_SYSLOG and access to the \
                     device; see docs/watcher.md)"
                );
                None
            }
        }
    }

    /// Follows the kernel log and the counters until `shutdown`, or until neither can be read.
    async fn watch(
        &mut self,
        mut log: Option<KernelLog>,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        let scan_interval = self
            .config
            .cgroup_scan_interval
            .unwrap_or(Duration::from_secs(3600));
        let mut scan = tokio::time::interval(scan_interval);
        scan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        scan.tick().await;
        let scanning = self.hierarchy.is_some();

        loop {
            let summary_deadline = self.summary_deadline;
            // Biased: kernel log records already read are handled before the next counter
            // reading, so a reading rarely sees a kill whose line is waiting in the queue.
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break Ok(()),
                read = next_read(&mut log) => match read {
                    Ok(read) => self.handle_read(read).await,
                    Err(error) => {
                        tracing::error!(%error, "reading the kernel log failed; continuing with the cgroup counters only");
                        self.metrics.kernel_log_readable.set(0);
                        self.kernel_log_open = false;
                        log = None;
                        if !scanning {
                            break Err(anyhow::anyhow!("the kernel log failed and there are no cgroup counters: {error}"));
                        }
                    }
                },
                () = bonker_client::sleep_until(summary_deadline), if summary_deadline.is_some() => {
                    self.summary_deadline = None;
                    if let Some(assembled) = self.assembler.flush() {
                        self.handle_assembled(assembled).await;
                    }
                }
                _ = scan.tick(), if scanning => self.scan().await,
                Some(seq) = self.confirmations.recv() => self.progress.confirmed(seq),
            }
        }
    }

    async fn handle_read(&mut self, read: KmsgRead) {
        let record = match read {
            KmsgRead::Record(record) => record,
            KmsgRead::Overrun => {
                self.metrics.kmsg_overruns.inc();
                tracing::warn!(
                    "kernel log records were overwritten before they could be read; the cgroup counters account for lost kills"
                );
                return;
            }
            KmsgRead::Malformed(error) => {
                tracing::warn!(%error, "skipping a malformed kernel log record");
                return;
            }
        };
        if !record.is_from_kernel() {
            return;
        }
        let outputs = self
            .assembler
            .push(record.seq, record.timestamp_us, &record.message);
        self.summary_deadline = self
            .assembler
            .has_pending()
            .then(|| tokio::time::Instant::now() + SUMMARY_WAIT);
        let handled_before = self.progress.already_handled(record.seq);
        for assembled in outputs {
            if handled_before {
                continue;
            }
            self.handle_assembled(assembled).await;
        }
    }

    async fn handle_assembled(&mut self, assembled: Assembled) {
        match assembled {
            Assembled::ParseFailure(error) => {
                self.metrics.parse_failures.inc();
                tracing::warn!(%error, "the memory cgroup counters will account for this kill");
            }
            Assembled::Kill(kill) => self.handle_kernel_kill(kill).await,
        }
    }

    async fn handle_kernel_kill(&mut self, kill: KernelKill) {
        if self.progress.already_handled(kill.seq) {
            return;
        }
        let now_us = kmsg::monotonic_now_us();
        let age = Duration::from_micros(now_us.saturating_sub(kill.timestamp_us));
        let history = age > self.config.max_event_age;
        if history && !self.progress.resumed() {
            // Found in the ring buffer on a first start: long over, and possibly reported by an
            // earlier watcher whose state was lost.
            tracing::debug!(pid = kill.pid, process = %kill.process, age_s = age.as_secs(), "skipping an old OOM kill from the kernel log");
            self.progress.handled(kill.seq);
            return;
        }
        // Until it is reported (a counter reading may be awaited first), a restart reads its
        // whole report again.
        self.progress.opened(kill.first_seq);
        let before_baseline = kill.timestamp_us < self.baseline_us;
        if let Some(path) = &kill.task_memcg
            && !before_baseline
        {
            self.ledger
                .kernel_kill(path, kill.memcg_is_ancestor, Instant::now());
        }
        if kill.task_memcg.is_none() && !before_baseline {
            self.metrics.kills_without_cgroup.inc();
        }
        if kill.task_memcg.is_none()
            && !before_baseline
            && let Some(debit) = self.ledger.take_oldest_debit()
        {
            // The counters were read between the kernel counting this kill and printing it.
            let mut kill = kill;
            kill.task_memcg = Some(debit.path);
            self.report_kernel_kill(kill, history).await;
            return;
        }
        if kill.task_memcg.is_none() && self.hierarchy.is_some() && !before_baseline {
            // The counters will say where it happened, within one reading.
            let wait = self.config.cgroup_scan_interval.unwrap_or_default() * 2
                + Duration::from_millis(200);
            if self.awaiting.len() >= MAX_AWAITING
                && let Some((oldest, _)) = self.awaiting.pop_front()
            {
                self.report_kernel_kill(oldest, history).await;
            }
            self.awaiting.push_back((kill, Instant::now() + wait));
            return;
        }
        self.report_kernel_kill(kill, history).await;
    }

    async fn report_kernel_kill(&mut self, kill: KernelKill, history: bool) {
        let fired_at = kmsg::wall_time_of(kill.timestamp_us, kmsg::monotonic_now_us(), Utc::now());
        let (seq, first_seq) = (kill.seq, kill.first_seq);
        let limit = limit::of_kernel_kill(&kill);
        let limit_reported = kill.constraint.is_some() || kill.oom_memcg.is_some() || kill.global;
        let report = KillReport {
            id: BonkId::stable(&[
                "watcher",
                &self.config.node_name,
                self.progress.boot_id(),
                &seq.to_string(),
            ]),
            seq: Some(first_seq),
            process: Some(kill.process),
            pid: Some(kill.pid),
            cgroup: kill.task_memcg,
            oom_cgroup: kill.oom_memcg,
            constraint: kill.constraint,
            limit,
            limit_reported,
            trigger: kill.trigger,
            processes: 1,
            group_member: kill.group_member,
            rss_kb: kill.rss_kb,
            fired_at,
            timestamp_us: Some(kill.timestamp_us),
            bonk: !kill.group_member && !history,
            counter_only: false,
        };
        self.report(report).await;
        self.progress.handled(seq);
        self.progress.closed(first_seq);
    }

    async fn scan(&mut self) {
        let Some(hierarchy) = self.hierarchy.clone() else {
            return;
        };
        let counters = match read_counters(hierarchy).await {
            Ok(counters) => counters,
            Err(error) => {
                tracing::warn!(%error, "cannot read the memory cgroup counters");
                return;
            }
        };
        let now = Instant::now();
        for increase in self.tracker.observe(counters) {
            let unexplained = self.ledger.settle(&increase);
            for index in 0..unexplained {
                // The n-th unexplained event of this increase has counter value
                // counter - (u-1-n).
                let counter = increase.counter.saturating_sub(unexplained - 1 - index);
                if let Some((mut kill, _)) = self.awaiting.pop_front() {
                    kill.task_memcg = Some(increase.path.clone());
                    self.report_kernel_kill(kill, false).await;
                } else {
                    self.ledger.add_debit(&increase, counter, now);
                }
            }
        }
        let grace = if self.kernel_log_open {
            self.config.counter_grace
        } else {
            Duration::ZERO
        };
        for debit in self.ledger.take_expired_debits(grace, now) {
            let age = now.saturating_duration_since(debit.at);
            // The id names the counter the event was read from: the same cgroup's own counter
            // and its hierarchical or group counter count different things.
            let source = match debit.source {
                CounterSource::Own => "cgroup".to_owned(),
                other => format!("cgroup-{}", other.as_str()),
            };
            let report = KillReport {
                id: BonkId::stable(&[
                    "watcher",
                    &self.config.node_name,
                    self.progress.boot_id(),
                    &source,
                    &debit.path,
                    &debit.counter.to_string(),
                ]),
                seq: None,
                process: None,
                pid: None,
                limit: Some(limit::of_cgroup(&debit.path)),
                cgroup: Some(debit.path),
                oom_cgroup: None,
                constraint: None,
                limit_reported: false,
                trigger: None,
                processes: debit.processes,
                group_member: false,
                rss_kb: None,
                fired_at: Utc::now() - chrono::Duration::from_std(age).unwrap_or_default(),
                timestamp_us: None,
                bonk: true,
                counter_only: true,
            };
            self.report(report).await;
        }
        while self
            .awaiting
            .front()
            .is_some_and(|(_, deadline)| *deadline <= now)
        {
            if let Some((kill, _)) = self.awaiting.pop_front() {
                tracing::warn!(pid = kill.pid, process = %kill.process, "no cgroup counted this kill; reporting it without a pod");
                self.report_kernel_kill(kill, false).await;
            }
        }
        self.metrics
            .unexplained_counter_kills
            .set(i64::try_from(self.ledger.waiting_debits()).unwrap_or(i64::MAX));
        self.metrics.cgroup_scans.inc();
    }

    async fn report(&mut self, report: KillReport) {
        let identity = report.cgroup.as_deref().map(identify).unwrap_or_default();
        let names = match &identity.pod_uid {
            Some(uid) => {
                self.directory
                    .lookup(uid, identity.container_id.as_deref())
                    .await
            }
            None => None,
        };
        let labels = KillLabels {
            namespace: names
                .as_ref()
                .map(|n| n.namespace.clone())
                .unwrap_or_default(),
            pod: names.as_ref().map(|n| n.pod.clone()).unwrap_or_default(),
            container: names
                .as_ref()
                .and_then(|n| n.container.clone())
                .unwrap_or_default(),
            limit: report
                .limit
                .map(|l| l.as_str().to_owned())
                .unwrap_or_default(),
        };
        self.metrics
            .oom_kills
            .get_or_create(&labels)
            .inc_by(report.processes.max(1));
        if report.counter_only {
            self.metrics
                .counter_only_detections
                .get_or_create(&CounterOnlyLabels {
                    namespace: labels.namespace.clone(),
                    pod: labels.pod.clone(),
                    container: labels.container.clone(),
                })
                .inc();
        }
        let summary = self.summary(&report, &identity, names.as_ref());
        tracing::info!(
            bonk_id = %report.id,
            namespace = %labels.namespace,
            pod = %labels.pod,
            container = %labels.container,
            process = report.process.as_deref().unwrap_or(""),
            pid = report.pid,
            cgroup = report.cgroup.as_deref().unwrap_or("?"),
            oom_cgroup = report.oom_cgroup.as_deref(),
            constraint = report.constraint.as_deref(),
            limit = report.limit.map(Limit::as_str),
            trigger = report.trigger.as_ref().map(|t| t.process.as_str()),
            trigger_pid = report.trigger.as_ref().and_then(|t| t.pid),
            processes = report.processes,
            counter_only = report.counter_only,
            bonk = report.bonk,
            "{summary}"
        );
        if !report.bonk {
            return;
        }
        // A kill outside any pod (or in a pod the API does not know) has no namespace of its own:
        // it goes to the default namespace's topic, its kill keyed by the node.
        let namespace = names
            .as_ref()
            .and_then(|n| Namespace::new(n.namespace.clone()).ok())
            .unwrap_or_else(|| self.config.default_namespace.clone());
        let topic = self.topics.namespace_bonk(&namespace);
        let cluster = self.config.cluster.as_ref().map(ToString::to_string);
        let mut kill = Kill::new(Detector::Kernel, report.fired_at);
        kill.cluster = cluster.clone();
        kill.namespace = names.as_ref().map(|n| n.namespace.clone());
        kill.pod = names.as_ref().map(|n| n.pod.clone());
        kill.container = names.as_ref().and_then(|n| n.container.clone());
        kill.node = Some(self.config.node_name.clone());
        kill.limit = report.limit;
        kill.trigger = report.trigger.map(|t| t.process);
        let mut bonk = Bonk::new(Source::Watcher, Severity::Critical);
        bonk.id = report.id;
        bonk.namespace = kill.namespace.clone();
        bonk.pod = kill.pod.clone();
        bonk.container = kill.container.clone();
        bonk.process = report.process;
        bonk.node = kill.node.clone();
        bonk.reason = Some(REASON.to_owned());
        bonk.summary = Some(summary);
        bonk.cluster = cluster;
        bonk.fired_at = Some(report.fired_at);
        bonk.sent_at = Some(Utc::now());
        bonk.kill = Some(kill);
        let queued = self.publisher.publish(&topic, &bonk, report.seq);
        if let Some(seq) = report.seq {
            self.progress.bonk_queued(seq, queued);
        }
        if queued && let Some(timestamp_us) = report.timestamp_us {
            let delay = kmsg::monotonic_now_us().saturating_sub(timestamp_us);
            self.metrics
                .detection_delay_seconds
                .observe(delay as f64 / 1e6);
        }
    }

    /// The bonk's text: who was killed where, which limit fired, and what triggered it.
    fn summary(
        &self,
        report: &KillReport,
        identity: &CgroupIdentity,
        names: Option<&PodNames>,
    ) -> String {
        let node = &self.config.node_name;
        let who = match (&report.process, report.pid) {
            (Some(process), Some(pid)) => format!("{process} (pid {pid})"),
            (Some(process), None) => process.clone(),
            _ if report.processes > 1 => format!("{} processes", report.processes),
            _ => "a process".to_owned(),
        };
        let place = match (names, identity.pod_uid.as_deref(), report.cgroup.as_deref()) {
            (Some(names), _, _) => match &names.container {
                Some(container) => format!("{}/{}/{container}", names.namespace, names.pod),
                None => format!("{}/{}", names.namespace, names.pod),
            },
            (None, Some(uid), _) => format!("pod {uid}"),
            (None, None, Some(cgroup)) => format!("cgroup {cgroup}"),
            (None, None, None) => "an unknown cgroup".to_owned(),
        };
        let node_wide = report.limit == Some(Limit::Node);
        let mut text = if node_wide {
            format!("{node} ran out of memory: the kernel killed {who} in {place}")
        } else {
            format!("OOM kill on {node}: {who} in {place}")
        };
        if report.processes > 1 {
            text.push_str(", killed together (memory.oom.group)");
        }
        if report.group_member {
            text.push_str(", with the rest of its memory.oom.group");
        }
        if let Some(rss_kb) = report.rss_kb {
            text.push_str(&format!(", {} MiB resident", rss_kb / 1024));
        }
        if let Some(limit) = report.limit
            && report.limit_reported
            && !node_wide
        {
            text.push_str(", ");
            text.push_str(&limit::phrase(limit, report.oom_cgroup.as_deref()));
        }
        if let Some(trigger) = &report.trigger {
            match trigger.pid {
                Some(pid) => text.push_str(&format!(
                    "; {} (pid {pid}) asked for the memory",
                    trigger.process
                )),
                None => text.push_str(&format!("; {} asked for the memory", trigger.process)),
            }
        }
        if report.counter_only {
            text.push_str(" (seen by the memory cgroup counter; no kernel log line)");
        }
        text
    }
}

async fn next_read(log: &mut Option<KernelLog>) -> std::io::Result<KmsgRead> {
    match log {
        Some(log) => log.next().await,
        None => std::future::pending().await,
    }
}

async fn read_counters(hierarchy: Hierarchy) -> std::io::Result<Counters> {
    tokio::task::spawn_blocking(move || Counters::read(&hierarchy))
        .await
        .map_err(std::io::Error::other)?
}
