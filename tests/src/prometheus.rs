//! Debian's Prometheus server (`/usr/bin/prometheus`, package `prometheus`) as a child process on a
//! free loopback port, evaluating the shipped alert rules (`deploy/prometheus/bonker-rules.yml`)
//! against series the test serves itself, and sending its alerts to a real Alertmanager.
//!
//! `promtool test rules` (`deploy/prometheus/tests/`) proves the rules' PromQL on synthetic series.
//! It cannot prove that a real Prometheus loads the shipped file, scrapes the series with the labels
//! kube-state-metrics, the kubelet's cAdvisor and node-exporter expose, and hands Alertmanager —
//! and so the gateway — alerts with the labels the gateway reads. This module does, in seconds:
//!
//! - [`Exporter`]: a `/metrics` endpoint on a free loopback port whose text the test replaces at
//!   run time ([`Exporter::set`]), and which says when Prometheus has scraped the latest text
//!   ([`Exporter::wait_until_scraped`]), so a test switches from "before the kill" to "after" only
//!   once Prometheus has seen "before";
//! - [`ContainerSeries`], [`NodeSeries`] and [`exposition`]: the series one container and one node
//!   show before and after an OOM kill, in the Prometheus text format;
//! - [`TestPrometheus`]: the server itself, scraping the exporters with `honor_labels: true` (so
//!   the exporters' `job`, `instance`, `namespace`, `pod` and `node` labels survive as they do
//!   behind real service discovery), evaluating the rules, alerting to the given Alertmanagers;
//!   with helpers to query it and to await its alerts;
//! - [`WebhookReceiver`]: an Alertmanager webhook endpoint that records every notification, for
//!   tests that check what Alertmanager sends without a gateway.
//!
//! The rules are loaded from the shipped file, unchanged — unless the test asks for
//! [`PrometheusOptions::rule_for`], which loads a copy whose every `for:` is rewritten (the
//! shipped `for: 2m` of `NodeOOMKill` would make a test wait two minutes). Everything else in the
//! rules is what a cluster runs.
//!
//! The HTTP endpoints are a few lines over tokio's TCP listener rather than an HTTP framework:
//! they serve one request per connection, which is all Prometheus and Alertmanager need from them.
//!
//! The end-to-end shape with the gateway:
//!
//! ```text
//! Exporter ──scrape──► TestPrometheus ──alerts──► TestAlertmanager ──webhook──► gateway (or WebhookReceiver)
//! ```
//!
//! ```no_run
//! # async fn example(gateway_url: String) {
//! use std::time::Duration;
//! use bonker_tests::prometheus::{ContainerSeries, Exporter, NodeSeries, PrometheusOptions, TestPrometheus, exposition};
//! use bonker_tests::{AlertmanagerOptions, TestAlertmanager};
//!
//! let alertmanager = TestAlertmanager::start(AlertmanagerOptions {
//!     webhook_urls: vec![format!("{gateway_url}/webhook")],
//!     ..AlertmanagerOptions::default()
//! });
//! let exporter = Exporter::start().await;
//! let api = ContainerSeries::running("payments", "api-0", "api", "node-a");
//! let node = NodeSeries::new("node-a");
//! exporter.set(exposition(&[api.clone()], &[node.clone()]));
//! let prometheus = TestPrometheus::start(PrometheusOptions {
//!     targets: vec![exporter.target()],
//!     alertmanagers: vec![alertmanager.url()],
//!     rule_for: Some(Duration::from_secs(1)),
//!     ..PrometheusOptions::default()
//! })
//! .await;
//! exporter.wait_until_scraped().await;
//! exporter.set(exposition(&[api.oom_killed()], &[node.killed(1)]));
//! let alerts = prometheus.wait_for_firing("OOMKilled").await;
//! # }
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::process::{ChildProcess, free_port};

/// The name of the rule group in the shipped rules file.
pub const RULE_GROUP: &str = "bonker-oom";

/// The shipped rules file, `deploy/prometheus/bonker-rules.yml`.
pub fn shipped_rules() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("deploy")
        .join("prometheus")
        .join("bonker-rules.yml")
}

/// How to start a Prometheus.
#[derive(Debug, Clone)]
pub struct PrometheusOptions {
    /// What to scrape, as `host:port` serving `/metrics` (e.g. [`Exporter::target`]). One job.
    pub targets: Vec<String>,
    /// The job's `honor_labels` (the exporters stand in for kube-state-metrics and cAdvisor,
    /// whose labels name the workload, so `true` unless a test checks a scrape's own config).
    pub honor_labels: bool,
    /// Target labels the scrape attaches, as a Kubernetes service discovery does (`namespace`,
    /// `pod`, `container` of the scraped pod).
    pub target_labels: Vec<(String, String)>,
    /// Alertmanagers to send alerts to, as URLs (e.g. `TestAlertmanager::url`); none: alerts are
    /// evaluated but go nowhere.
    pub alertmanagers: Vec<String>,
    /// `scrape_interval` (and `scrape_timeout`).
    pub scrape_interval: Duration,
    /// `evaluation_interval` of the rules.
    pub evaluation_interval: Duration,
    /// `None`: load the shipped rules file as it is. `Some(d)`: load a copy, in Prometheus's
    /// temporary directory, in which every rule's `for:` is `d` — nothing else changes.
    pub rule_for: Option<Duration>,
}

impl Default for PrometheusOptions {
    fn default() -> Self {
        Self {
            targets: Vec::new(),
            honor_labels: true,
            target_labels: Vec::new(),
            alertmanagers: Vec::new(),
            scrape_interval: Duration::from_millis(500),
            evaluation_interval: Duration::from_millis(500),
            rule_for: None,
        }
    }
}

/// An alert as Prometheus reports it (`/api/v1/alerts`): pending or firing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveAlert {
    /// Every label, `alertname` included.
    pub labels: BTreeMap<String, String>,
    /// The annotations, templates expanded.
    pub annotations: BTreeMap<String, String>,
    /// `pending` or `firing`.
    pub state: String,
}

impl ActiveAlert {
    /// The value of a label.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.get(name).map(String::as_str)
    }
}

/// A running Prometheus server. Killed when dropped.
#[derive(Debug)]
pub struct TestPrometheus {
    port: u16,
    options: PrometheusOptions,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
    process: ChildProcess,
}

fn prometheus_binary() -> PathBuf {
    let debian = PathBuf::from("/usr/bin/prometheus");
    if debian.exists() {
        debian
    } else {
        PathBuf::from("prometheus")
    }
}

/// A duration as Prometheus writes one: `1500ms`, `0s`.
fn prometheus_duration(duration: Duration) -> String {
    if duration.is_zero() {
        "0s".to_owned()
    } else {
        format!("{}ms", duration.as_millis().max(1))
    }
}

/// `rules` with every `for:` line replaced by `for: <duration>`.
fn rewrite_for(rules: &str, duration: Duration) -> (String, usize) {
    let mut replaced = 0;
    let mut out = String::with_capacity(rules.len());
    for line in rules.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("for:") && !trimmed.starts_with("for: |") {
            let indent = &line[..line.len() - trimmed.len()];
            let _ = writeln!(out, "{indent}for: {}", prometheus_duration(duration));
            replaced += 1;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    (out, replaced)
}

impl TestPrometheus {
    /// Writes the configuration, checks it with `promtool check config` (which also checks the
    /// rules), starts Prometheus and waits until it is ready (`/-/ready`).
    ///
    /// Ready is not yet scraping: Prometheus 2.42 (Debian 12) hands new targets to its scrapers on
    /// a fixed 5-second tick, so the first scrape comes about 5 s after start. Start Prometheus
    /// before the test's other peers (broker, gateway, desks) to overlap that wait, and await
    /// [`Exporter::wait_until_scraped`] before changing the exporter's text.
    pub async fn start(options: PrometheusOptions) -> TestPrometheus {
        let dir = tempfile::tempdir().expect("tempdir");
        let rules = match options.rule_for {
            None => shipped_rules()
                .canonicalize()
                .expect("deploy/prometheus/bonker-rules.yml exists"),
            Some(duration) => {
                let shipped = std::fs::read_to_string(shipped_rules()).expect("read the rules");
                let (copy, replaced) = rewrite_for(&shipped, duration);
                assert!(replaced > 0, "the shipped rules have no `for:` to rewrite");
                let path = dir.path().join("bonker-rules.yml");
                std::fs::write(&path, copy).expect("write the rules copy");
                path
            }
        };
        let port = free_port();
        let interval = prometheus_duration(options.scrape_interval);
        let alertmanagers: Vec<String> = options
            .alertmanagers
            .iter()
            .map(|url| {
                let host = url
                    .trim_start_matches("http://")
                    .trim_end_matches('/')
                    .to_owned();
                format!("\"{host}\"")
            })
            .collect();
        let targets: Vec<String> = options.targets.iter().map(|t| format!("\"{t}\"")).collect();
        let target_labels: Vec<String> = options
            .target_labels
            .iter()
            .map(|(name, value)| format!("{name}: \"{value}\""))
            .collect();
        let config = format!(
            "global:\n  scrape_interval: {interval}\n  scrape_timeout: {interval}\n  \
             evaluation_interval: {}\n\
             rule_files:\n  - \"{}\"\n\
             alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: [{}]\n\
             scrape_configs:\n  - job_name: test-exporters\n    honor_labels: {}\n    \
             static_configs:\n      - targets: [{}]\n        labels: {{{}}}\n",
            prometheus_duration(options.evaluation_interval),
            rules.display(),
            alertmanagers.join(", "),
            options.honor_labels,
            targets.join(", "),
            target_labels.join(", "),
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, &config).expect("write prometheus.yml");
        let check = Command::new("promtool")
            .arg("check")
            .arg("config")
            .arg(&config_path)
            .output()
            .expect("promtool (package prometheus) is installed");
        assert!(
            check.status.success(),
            "promtool rejects the test config:\n{config}\n{}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );

        let mut command = Command::new(prometheus_binary());
        command
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            // Re-send firing alerts every evaluation, not every minute: an Alertmanager that
            // restarts in a test learns them again at once.
            .arg(format!(
                "--rules.alert.resend-delay={}",
                prometheus_duration(options.evaluation_interval)
            ))
            .arg("--log.level=info");
        let process = ChildProcess::spawn("prometheus", command);
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("reqwest client");
        let mut prometheus = TestPrometheus {
            port,
            options,
            client,
            _dir: dir,
            process,
        };
        prometheus.wait_ready().await;
        prometheus
    }

    async fn wait_ready(&mut self) {
        let deadline = tokio::time::Instant::now() + crate::DEADLINE;
        loop {
            let ready = self
                .client
                .get(format!("{}/-/ready", self.url()))
                .send()
                .await
                .is_ok_and(|response| response.status().is_success());
            if ready {
                return;
            }
            if let Some(status) = self.process.try_status() {
                panic!(
                    "prometheus exited ({status}) before it was ready; output:\n{}",
                    self.process.output()
                );
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "prometheus was not ready within {:?}; output:\n{}",
                crate::DEADLINE,
                self.process.output()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The options it was started with.
    pub fn options(&self) -> &PrometheusOptions {
        &self.options
    }

    /// The process, for its output.
    pub fn process(&mut self) -> &mut ChildProcess {
        &mut self.process
    }

    async fn get(&self, path: &str, query: &[(&str, &str)]) -> Value {
        let response = self
            .client
            .get(format!("{}{path}", self.url()))
            .query(query)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = response.status();
        let body: Value = response
            .json()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: not JSON ({status}): {e}"));
        assert_eq!(
            body["status"], "success",
            "GET {path} {query:?} failed ({status}): {body}"
        );
        body["data"].clone()
    }

    /// An instant query (`/api/v1/query`): the result vector's elements (`metric`, `value`).
    pub async fn query(&self, promql: &str) -> Vec<Value> {
        let data = self.get("/api/v1/query", &[("query", promql)]).await;
        data["result"].as_array().cloned().unwrap_or_default()
    }

    /// Every pending or firing alert (`/api/v1/alerts`).
    pub async fn alerts(&self) -> Vec<ActiveAlert> {
        let data = self.get("/api/v1/alerts", &[]).await;
        data["alerts"]
            .as_array()
            .map(|alerts| alerts.iter().map(active_alert).collect())
            .unwrap_or_default()
    }

    /// The firing alerts named `alertname`, right now.
    pub async fn firing(&self, alertname: &str) -> Vec<ActiveAlert> {
        self.alerts()
            .await
            .into_iter()
            .filter(|a| a.state == "firing" && a.label("alertname") == Some(alertname))
            .collect()
    }

    /// Waits until at least one alert named `alertname` is firing; returns every one that is.
    /// Panics after [`crate::DEADLINE`] with what Prometheus knows (alerts, rule health,
    /// targets, its log).
    pub async fn wait_for_firing(&self, alertname: &str) -> Vec<ActiveAlert> {
        let deadline = tokio::time::Instant::now() + crate::DEADLINE;
        loop {
            let firing = self.firing(alertname).await;
            if !firing.is_empty() {
                return firing;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "{alertname} did not fire within {:?}\n{}",
                    crate::DEADLINE,
                    self.diagnostics().await
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every alert named `alertname` that was pending or firing at any evaluation in the last hour
    /// (from the `ALERTS` series): its labels, `alertstate` included. Empty means the rule never
    /// matched — in a test younger than an hour, never since Prometheus started.
    pub async fn alerts_seen(&self, alertname: &str) -> Vec<BTreeMap<String, String>> {
        let promql = format!("last_over_time(ALERTS{{alertname=\"{alertname}\"}}[1h])");
        self.query(&promql)
            .await
            .iter()
            .map(|sample| string_map(&sample["metric"]))
            .collect()
    }

    /// Waits until every rule group has been evaluated at or after `instant`, then checks that
    /// every rule evaluated without error — so that "this alert never fired" is a finding about
    /// the rule, not about a query that failed.
    pub async fn evaluated_after(&self, instant: DateTime<Utc>) {
        // Far enough for the instant itself plus one evaluation.
        let deadline =
            tokio::time::Instant::now() + crate::DEADLINE + until(instant).unwrap_or_default();
        loop {
            let groups = self.rule_groups().await;
            let evaluated = !groups.is_empty()
                && groups.iter().all(|group| {
                    group["lastEvaluation"]
                        .as_str()
                        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                        .is_some_and(|t| t >= instant)
                });
            if evaluated {
                let errors: Vec<String> = groups
                    .iter()
                    .flat_map(|group| group["rules"].as_array().cloned().unwrap_or_default())
                    .filter(|rule| rule["health"] != "ok")
                    .map(|rule| {
                        format!("{}: {} {}", rule["name"], rule["health"], rule["lastError"])
                    })
                    .collect();
                assert!(errors.is_empty(), "rules failed to evaluate: {errors:?}");
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "the rules were not evaluated after {instant}\n{}",
                    self.diagnostics().await
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the rules have been evaluated [`PrometheusOptions::rule_for`] plus two
    /// evaluation intervals after now: long enough for any rule whose condition holds now to be
    /// firing. Needs `rule_for` (the shipped `for:` durations are minutes).
    pub async fn evaluated_past_for(&self) {
        let rule_for = self
            .options
            .rule_for
            .expect("evaluated_past_for needs PrometheusOptions::rule_for");
        let margin = rule_for + 2 * self.options.evaluation_interval;
        let instant = Utc::now() + chrono::Duration::from_std(margin).expect("a short duration");
        self.evaluated_after(instant).await;
    }

    async fn rule_groups(&self) -> Vec<Value> {
        let data = self.get("/api/v1/rules", &[]).await;
        data["groups"].as_array().cloned().unwrap_or_default()
    }

    /// What Prometheus knows, for a failure message: its alerts, the health of its rules and
    /// targets, and its log.
    pub async fn diagnostics(&self) -> String {
        let mut text = String::new();
        let _ = writeln!(text, "--- prometheus alerts ---");
        for alert in self.alerts().await {
            let _ = writeln!(text, "{} {:?}", alert.state, alert.labels);
        }
        let _ = writeln!(text, "--- prometheus rules ---");
        for group in self.rule_groups().await {
            for rule in group["rules"].as_array().cloned().unwrap_or_default() {
                let _ = writeln!(
                    text,
                    "{} health={} state={} lastError={} lastEvaluation={}",
                    rule["name"],
                    rule["health"],
                    rule["state"],
                    rule["lastError"],
                    rule["lastEvaluation"]
                );
            }
        }
        let _ = writeln!(text, "--- prometheus targets ---");
        let targets = self.get("/api/v1/targets", &[]).await;
        for target in targets["activeTargets"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            let _ = writeln!(
                text,
                "{} health={} lastError={} lastScrape={}",
                target["scrapeUrl"], target["health"], target["lastError"], target["lastScrape"]
            );
        }
        let _ = writeln!(text, "--- prometheus log ---\n{}", self.process.output());
        text
    }
}

fn until(instant: DateTime<Utc>) -> Option<Duration> {
    (instant - Utc::now()).to_std().ok()
}

fn string_map(value: &Value) -> BTreeMap<String, String> {
    value
        .as_object()
        .map(|object| {
            object
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

fn active_alert(value: &Value) -> ActiveAlert {
    ActiveAlert {
        labels: string_map(&value["labels"]),
        annotations: string_map(&value["annotations"]),
        state: value["state"].as_str().unwrap_or_default().to_owned(),
    }
}

/// One container as kube-state-metrics and the kubelet's cAdvisor describe it. Build one with
/// [`ContainerSeries::running`], then derive its state after a kill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSeries {
    /// The namespace.
    pub namespace: String,
    /// The pod.
    pub pod: String,
    /// The container.
    pub container: String,
    /// The node the pod runs on (`kube_pod_info`'s `node`, and cAdvisor's `node` label).
    pub node: String,
    /// `kube_pod_container_status_restarts_total`.
    pub restarts: u64,
    /// `kube_pod_container_status_last_terminated_reason`'s `reason`; `None`: never terminated.
    pub last_terminated_reason: Option<String>,
    /// `container_oom_events_total` of the current container instance. Each restart is a new
    /// instance (a new cgroup `id`), whose counter starts at 0: the killed instance's series is
    /// gone, as it is from a real kubelet.
    pub oom_events: u64,
    /// `container_memory_working_set_bytes`.
    pub working_set_bytes: u64,
    /// `kube_pod_container_resource_limits{resource="memory"}`.
    pub memory_limit_bytes: u64,
}

const MIB: u64 = 1024 * 1024;

impl ContainerSeries {
    /// A healthy container that never restarted: 64 MiB used of a 256 MiB limit.
    pub fn running(namespace: &str, pod: &str, container: &str, node: &str) -> ContainerSeries {
        ContainerSeries {
            namespace: namespace.to_owned(),
            pod: pod.to_owned(),
            container: container.to_owned(),
            node: node.to_owned(),
            restarts: 0,
            last_terminated_reason: None,
            oom_events: 0,
            working_set_bytes: 64 * MIB,
            memory_limit_bytes: 256 * MIB,
        }
    }

    /// The same container after its main process was OOM-killed and the kubelet restarted it:
    /// one more restart, last termination `OOMKilled`, a new container instance whose cAdvisor
    /// counter is at 0 (the killed instance's series vanished before a scrape saw it move).
    /// On the node, pair it with [`NodeSeries::killed`].
    pub fn oom_killed(&self) -> ContainerSeries {
        ContainerSeries {
            restarts: self.restarts + 1,
            last_terminated_reason: Some("OOMKilled".to_owned()),
            oom_events: 0,
            working_set_bytes: 8 * MIB,
            ..self.clone()
        }
    }

    /// The same container after the kernel OOM-killed one of its processes (a worker, a child)
    /// while its main process survived: cAdvisor counts the kill, nothing restarts.
    pub fn child_oom_killed(&self) -> ContainerSeries {
        ContainerSeries {
            oom_events: self.oom_events + 1,
            ..self.clone()
        }
    }

    fn uid(&self) -> String {
        format!("uid-{}-{}", self.namespace, self.pod)
    }

    fn kube_state_metrics_labels(&self) -> Vec<(&'static str, String)> {
        vec![
            ("job", "kube-state-metrics".to_owned()),
            ("instance", "10.96.0.20:8080".to_owned()),
            ("namespace", self.namespace.clone()),
            ("pod", self.pod.clone()),
            ("uid", self.uid()),
            ("container", self.container.clone()),
        ]
    }

    fn cadvisor_labels(&self) -> Vec<(&'static str, String)> {
        // The cgroup of the current container instance: a new one after every restart.
        let id = format!(
            "/kubepods/burstable/pod{}/{}-{}",
            self.uid(),
            self.container,
            self.restarts
        );
        vec![
            ("job", "kubelet".to_owned()),
            ("metrics_path", "/metrics/cadvisor".to_owned()),
            ("instance", format!("{}:10250", self.node)),
            ("node", self.node.clone()),
            ("namespace", self.namespace.clone()),
            ("pod", self.pod.clone()),
            ("container", self.container.clone()),
            ("id", id),
            ("image", format!("registry.example/{}:1", self.container)),
        ]
    }
}

/// One node as node-exporter describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSeries {
    /// The node's name (`node_uname_info`'s `nodename`, the Kubernetes node name).
    pub node: String,
    /// `node_vmstat_oom_kill`: every kernel OOM kill on the node since boot.
    pub oom_kills: u64,
}

impl NodeSeries {
    /// A node whose kernel has killed nothing since boot.
    pub fn new(node: &str) -> NodeSeries {
        NodeSeries {
            node: node.to_owned(),
            oom_kills: 0,
        }
    }

    /// The same node after the kernel OOM-killed `kills` more processes — whether in a
    /// container or not: the counter cannot tell.
    pub fn killed(&self, kills: u64) -> NodeSeries {
        NodeSeries {
            oom_kills: self.oom_kills + kills,
            ..self.clone()
        }
    }

    fn labels(&self) -> Vec<(&'static str, String)> {
        vec![
            ("job", "node-exporter".to_owned()),
            ("instance", format!("{}:9100", self.node)),
        ]
    }
}

/// The Prometheus text format for `containers` and `nodes`: kube-state-metrics' `kube_pod_info`,
/// restarts, last termination reason and memory limit; cAdvisor's OOM events and working set;
/// node-exporter's `node_uname_info` and `node_vmstat_oom_kill`. Every series carries the `job`
/// and `instance` its exporter's scrape would give it.
pub fn exposition(containers: &[ContainerSeries], nodes: &[NodeSeries]) -> String {
    let mut text = String::new();
    let mut pods: Vec<&ContainerSeries> = Vec::new();
    for container in containers {
        if !pods
            .iter()
            .any(|p| p.namespace == container.namespace && p.pod == container.pod)
        {
            pods.push(container);
        }
    }
    family(
        &mut text,
        "kube_pod_info",
        "gauge",
        pods.iter().map(|c| {
            let mut labels = c.kube_state_metrics_labels();
            labels.retain(|(name, _)| *name != "container");
            labels.push(("node", c.node.clone()));
            labels.push(("created_by_kind", "ReplicaSet".to_owned()));
            (labels, 1)
        }),
    );
    family(
        &mut text,
        "kube_pod_container_status_restarts_total",
        "counter",
        containers
            .iter()
            .map(|c| (c.kube_state_metrics_labels(), c.restarts)),
    );
    family(
        &mut text,
        "kube_pod_container_status_last_terminated_reason",
        "gauge",
        containers.iter().filter_map(|c| {
            let reason = c.last_terminated_reason.clone()?;
            let mut labels = c.kube_state_metrics_labels();
            labels.push(("reason", reason));
            Some((labels, 1))
        }),
    );
    family(
        &mut text,
        "kube_pod_container_resource_limits",
        "gauge",
        containers.iter().map(|c| {
            let mut labels = c.kube_state_metrics_labels();
            labels.push(("node", c.node.clone()));
            labels.push(("resource", "memory".to_owned()));
            labels.push(("unit", "byte".to_owned()));
            (labels, c.memory_limit_bytes)
        }),
    );
    family(
        &mut text,
        "container_oom_events_total",
        "counter",
        containers
            .iter()
            .map(|c| (c.cadvisor_labels(), c.oom_events)),
    );
    family(
        &mut text,
        "container_memory_working_set_bytes",
        "gauge",
        containers
            .iter()
            .map(|c| (c.cadvisor_labels(), c.working_set_bytes)),
    );
    family(
        &mut text,
        "node_uname_info",
        "gauge",
        nodes.iter().map(|n| {
            let mut labels = n.labels();
            labels.extend([
                ("nodename", n.node.clone()),
                ("sysname", "Linux".to_owned()),
                ("release", "6.1.0-28-amd64".to_owned()),
                ("machine", "x86_64".to_owned()),
                ("domainname", "(none)".to_owned()),
            ]);
            (labels, 1)
        }),
    );
    family(
        &mut text,
        "node_vmstat_oom_kill",
        "untyped",
        nodes.iter().map(|n| (n.labels(), n.oom_kills)),
    );
    text
}

/// Appends one metric family (`# TYPE` line and samples) to `text`; nothing when it has no
/// samples.
fn family(
    text: &mut String,
    name: &str,
    kind: &str,
    samples: impl Iterator<Item = (Vec<(&'static str, String)>, u64)>,
) {
    let samples: Vec<_> = samples.collect();
    if samples.is_empty() {
        return;
    }
    let _ = writeln!(text, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        let labels: Vec<String> = labels
            .iter()
            .map(|(label, value)| format!("{label}=\"{}\"", escape_label_value(value)))
            .collect();
        let _ = writeln!(text, "{name}{{{}}} {value}", labels.join(","));
    }
}

fn escape_label_value(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A `/metrics` endpoint on a free loopback port, serving whatever text the test last
/// [`set`](Exporter::set). Stopped when dropped.
#[derive(Debug)]
pub struct Exporter {
    addr: SocketAddr,
    state: Arc<ExporterState>,
    server: JoinHandle<()>,
}

#[derive(Debug)]
struct ExporterState {
    /// The text to serve, and its generation (1 for the first `set`).
    text: Mutex<(u64, String)>,
    /// The generation of the text most recently served.
    served: watch::Sender<u64>,
}

impl Exporter {
    /// Starts serving an empty exposition.
    pub async fn start() -> Exporter {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(ExporterState {
            text: Mutex::new((0, String::new())),
            served: watch::channel(0).0,
        });
        let handler_state = state.clone();
        let server = serve(listener, move |request| {
            if request.method != "GET" || request.path.split('?').next() != Some("/metrics") {
                return Response::text(404, "only GET /metrics here\n");
            }
            let (generation, text) = handler_state
                .text
                .lock()
                .map(|t| t.clone())
                .unwrap_or_default();
            handler_state.served.send_replace(generation);
            Response {
                status: 200,
                content_type: "text/plain; version=0.0.4; charset=utf-8",
                body: text.into_bytes(),
            }
        });
        Exporter {
            addr,
            state,
            server,
        }
    }

    /// `127.0.0.1:<port>`: a scrape target.
    pub fn target(&self) -> String {
        self.addr.to_string()
    }

    /// Replaces what `/metrics` serves from the next scrape on.
    pub fn set(&self, text: impl Into<String>) {
        if let Ok(mut current) = self.state.text.lock() {
            current.0 += 1;
            current.1 = text.into();
        }
    }

    /// Waits until a scrape has served the text last [`set`](Exporter::set) (at most
    /// [`crate::DEADLINE`]): from then on Prometheus has at least one sample of it.
    pub async fn wait_until_scraped(&self) {
        let generation = self.state.text.lock().map(|t| t.0).unwrap_or_default();
        let mut served = self.state.served.subscribe();
        let result = tokio::time::timeout(
            crate::DEADLINE,
            served.wait_for(|served| *served >= generation),
        )
        .await;
        assert!(
            matches!(result, Ok(Ok(_))),
            "nothing scraped {} within {:?}",
            self.target(),
            crate::DEADLINE
        );
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// An Alertmanager webhook endpoint on a free loopback port that records every notification it
/// receives (and answers 200). Stopped when dropped.
#[derive(Debug)]
pub struct WebhookReceiver {
    addr: SocketAddr,
    notifications: Arc<Mutex<Vec<Value>>>,
    received: watch::Sender<usize>,
    server: JoinHandle<()>,
}

impl WebhookReceiver {
    /// Starts listening.
    pub async fn start() -> WebhookReceiver {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let notifications = Arc::new(Mutex::new(Vec::new()));
        let received = watch::channel(0).0;
        let (store, counter) = (notifications.clone(), received.clone());
        let server = serve(listener, move |request| {
            if request.method != "POST" {
                return Response::text(405, "POST a webhook notification\n");
            }
            match serde_json::from_slice::<Value>(&request.body) {
                Ok(notification) => {
                    if let Ok(mut all) = store.lock() {
                        all.push(notification);
                        counter.send_replace(all.len());
                    }
                    Response::text(200, "{}")
                }
                Err(e) => Response::text(400, &format!("not JSON: {e}\n")),
            }
        });
        WebhookReceiver {
            addr,
            notifications,
            received,
            server,
        }
    }

    /// `http://127.0.0.1:<port>/webhook`.
    pub fn url(&self) -> String {
        format!("http://{}/webhook", self.addr)
    }

    /// Every notification received so far, in order.
    pub fn notifications(&self) -> Vec<Value> {
        self.notifications
            .lock()
            .map(|n| n.clone())
            .unwrap_or_default()
    }

    /// Every alert of every notification received so far, in order.
    pub fn alerts(&self) -> Vec<Value> {
        self.notifications()
            .iter()
            .flat_map(|n| n["alerts"].as_array().cloned().unwrap_or_default())
            .collect()
    }

    /// Waits until a notification carries a firing alert named `alertname`, and returns that
    /// alert (`labels`, `annotations`, `startsAt`, `fingerprint`, …). At most [`crate::DEADLINE`].
    pub async fn wait_for_alert(&self, alertname: &str) -> Value {
        let find = |alerts: Vec<Value>| {
            alerts
                .into_iter()
                .find(|a| a["status"] == "firing" && a["labels"]["alertname"] == alertname)
        };
        let mut received = self.received.subscribe();
        let deadline = tokio::time::Instant::now() + crate::DEADLINE;
        loop {
            if let Some(alert) = find(self.alerts()) {
                return alert;
            }
            let changed = tokio::time::timeout_at(deadline, received.changed()).await;
            assert!(
                matches!(changed, Ok(Ok(()))),
                "no notification with a firing {alertname} within {:?}; received: {:?}",
                crate::DEADLINE,
                self.notifications()
            );
        }
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// An HTTP request, as much of it as these endpoints read.
#[derive(Debug)]
struct Request {
    method: String,
    path: String,
    body: Vec<u8>,
}

#[derive(Debug)]
struct Response {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
}

impl Response {
    fn text(status: u16, body: &str) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.as_bytes().to_vec(),
        }
    }
}

/// The largest request head or body read.
const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

/// Accepts connections until aborted; each gets one request, one response and is closed.
fn serve(
    listener: TcpListener,
    handler: impl Fn(Request) -> Response + Send + Sync + 'static,
) -> JoinHandle<()> {
    let handler = Arc::new(handler);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let handler = handler.clone();
            tokio::spawn(async move {
                let _ = answer(stream, handler.as_ref()).await;
            });
        }
    })
}

async fn answer(
    mut stream: TcpStream,
    handler: &(impl Fn(Request) -> Response + ?Sized),
) -> std::io::Result<()> {
    let response = match read_request(&mut stream).await? {
        Some(request) => handler(request),
        None => return Ok(()),
    };
    let reason = match response.status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Error",
    };
    let head = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        response.status,
        response.content_type,
        response.body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(&response.body).await?;
    stream.shutdown().await
}

/// Reads one request: the head up to the blank line, then `Content-Length` bytes of body.
/// `None` when the peer closed before sending one.
async fn read_request(stream: &mut TcpStream) -> std::io::Result<Option<Request>> {
    let invalid =
        |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let mut buffer = Vec::with_capacity(4096);
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        if buffer.len() > MAX_REQUEST_BYTES {
            return Err(invalid("request head too large"));
        }
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return if buffer.is_empty() {
                Ok(None)
            } else {
                Err(invalid("connection closed inside the request head"))
            };
        }
        buffer.extend_from_slice(&chunk[..read]);
    };
    let head = std::str::from_utf8(&buffer[..head_end]).map_err(|_| invalid("head not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let method = request_line.next().unwrap_or_default().to_owned();
    let path = request_line.next().unwrap_or_default().to_owned();
    let mut content_length = 0;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if name.trim().eq_ignore_ascii_case("content-length") {
            content_length = value
                .trim()
                .parse()
                .map_err(|_| invalid("bad Content-Length"))?;
        } else if name.trim().eq_ignore_ascii_case("transfer-encoding") {
            return Err(invalid("chunked bodies are not supported"));
        }
    }
    if content_length > MAX_REQUEST_BYTES {
        return Err(invalid("body too large"));
    }
    let mut body = buffer[head_end..].to_vec();
    while body.len() < content_length {
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Err(invalid("connection closed inside the body"));
        }
        body.extend_from_slice(&chunk[..read]);
    }
    body.truncate(content_length);
    Ok(Some(Request { method, path, body }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_for_of_the_shipped_rules_is_rewritten() {
        let shipped = std::fs::read_to_string(shipped_rules()).expect("read the rules");
        let (copy, replaced) = rewrite_for(&shipped, Duration::from_millis(1500));
        assert_eq!(
            replaced,
            shipped
                .lines()
                .filter(|l| l.trim_start().starts_with("for:"))
                .count()
        );
        assert!(replaced >= 1);
        assert!(
            copy.lines()
                .filter(|l| l.contains("for:"))
                .all(|l| l.trim() == "for: 1500ms")
        );
        // Nothing else changed.
        let without_for = |text: &str| -> Vec<String> {
            text.lines()
                .filter(|l| !l.trim_start().starts_with("for:"))
                .map(str::to_owned)
                .collect()
        };
        assert_eq!(without_for(&shipped), without_for(&copy));
    }

    #[test]
    fn the_exposition_groups_each_family_and_escapes_labels() {
        let mut api = ContainerSeries::running("payments", "api-0", "api", "node-a");
        api.container = "a\"b".to_owned();
        let text = exposition(&[api.oom_killed()], &[NodeSeries::new("node-a").killed(2)]);
        assert!(text.contains("container=\"a\\\"b\""));
        assert!(text.contains("reason=\"OOMKilled\"} 1\n"));
        assert!(
            text.contains(
                "node_vmstat_oom_kill{job=\"node-exporter\",instance=\"node-a:9100\"} 2\n"
            )
        );
        let types: Vec<&str> = text.lines().filter(|l| l.starts_with("# TYPE")).collect();
        let mut unique = types.clone();
        unique.dedup();
        assert_eq!(types, unique, "each family once");
    }
}
