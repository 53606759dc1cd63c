//! One OOM kill, one bonk, through the whole chain as a cluster runs it, every part a real
//! process: the kernel kills a memory hog in a kubelet-shaped memory cgroup; the watcher reads it
//! from `/dev/kmsg` (names from a stand-in Kubernetes API) and bonks; Debian's Prometheus scrapes a
//! test exporter serving the kube-state-metrics, cAdvisor and node-exporter series of the same pod
//! as they look after the kill, evaluates the **shipped** rules and alerts Debian's Alertmanager,
//! which posts to the gateway; two desks (one on the namespace, one on every namespace) with
//! simulated servos. Both brokers.
//!
//! Each desk's arm must move exactly once — the watcher's bonk, within a second of the kernel's
//! timestamp — and the gateway must report the alert merged into the watcher's bonk. Without the
//! watcher, the alert bonks once (and the node rule stays quiet).
//!
//! Kills are global on a machine (every watcher reads the one kernel log), so the scenarios with
//! a kill run one after the other inside one test.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use bonker_protocol::{Ack, BonkId, Outcome, Source};
use bonker_tests::prometheus::{
    ContainerSeries, Exporter, NodeSeries, PrometheusOptions, TestPrometheus, exposition,
};
use bonker_tests::{
    AgentProcess, AlertmanagerOptions, BrokerKind, GatewayProcess, Probe, TestAlertmanager,
    TestBroker,
};
use serde_json::json;
use support::{
    CgroupTree, FakeKubeApi, LIMIT_BYTES, MoreSetup, WatcherSetup, WatcherUnderTest, bonk_of,
    hog_killed, random_hex, random_uid, spawn_hog,
};

/// The cluster around the desks: broker, desks, gateway, Alertmanager, Prometheus, exporter.
struct Cluster {
    broker: TestBroker,
    _desks: Vec<AgentProcess>,
    acks: Probe,
    bonks: Probe,
    gateway: GatewayProcess,
    _alertmanager: TestAlertmanager,
    prometheus: TestPrometheus,
    exporter: Exporter,
    container: ContainerSeries,
    node: NodeSeries,
}

impl Cluster {
    async fn start(kind: BrokerKind, pod: &str, node: &str) -> Cluster {
        let broker = TestBroker::start(kind);
        let url = broker.url();
        let acks = Probe::connect(&url, &["bonker/desk/+/ack"]).await;
        let bonks = Probe::connect(&url, &["bonker/bonk/+"]).await;
        let desks = vec![
            AgentProcess::start(&url, "alice", &["payments"], &[]).await,
            AgentProcess::start(&url, "carol", &["+"], &[]).await,
        ];
        let gateway = GatewayProcess::start(&url, &[]).await;
        let alertmanager = TestAlertmanager::start(AlertmanagerOptions {
            webhook_urls: vec![format!("{}/webhook", gateway.url())],
            ..AlertmanagerOptions::default()
        });
        let exporter = Exporter::start().await;
        let container = ContainerSeries::running("payments", pod, "app", node);
        let node = NodeSeries::new(node);
        exporter.set(exposition(
            std::slice::from_ref(&container),
            std::slice::from_ref(&node),
        ));
        let prometheus = TestPrometheus::start(PrometheusOptions {
            targets: vec![exporter.target()],
            alertmanagers: vec![alertmanager.url()],
            rule_for: Some(Duration::from_secs(1)),
            ..PrometheusOptions::default()
        })
        .await;
        exporter.wait_until_scraped().await;
        Cluster {
            broker,
            _desks: desks,
            acks,
            bonks,
            gateway,
            _alertmanager: alertmanager,
            prometheus,
            exporter,
            container,
            node,
        }
    }

    /// The series now show the kill, as kube-state-metrics, cAdvisor and node-exporter would.
    async fn metrics_show_the_kill(&self) {
        self.exporter.set(exposition(
            &[self.container.oom_killed()],
            &[self.node.killed(1)],
        ));
        self.exporter.wait_until_scraped().await;
    }

    async fn ack(&mut self) -> Ack {
        serde_json::from_value(self.acks.next().await.json()).expect("an ack")
    }

    /// Every ack until a sentinel sent to carol after everything else.
    async fn acks_until_sentinel(&mut self) -> Vec<Ack> {
        let sentinel = BonkId::random();
        Probe::connect(&self.broker.url(), &[])
            .await
            .publish(
                "bonker/desk/carol/bonk",
                json!({"id": sentinel.to_string(), "severity": "info"}).to_string(),
                false,
            )
            .await;
        let mut acks = Vec::new();
        loop {
            let ack = self.ack().await;
            if ack.bonk_id == sentinel {
                return acks;
            }
            acks.push(ack);
        }
    }

    async fn gateway_metric(&self, line_start: &str) -> f64 {
        let text = reqwest::get(format!("{}/metrics", self.gateway.url()))
            .await
            .expect("gateway metrics")
            .text()
            .await
            .expect("text");
        text.lines()
            .find_map(|line| line.strip_prefix(line_start))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// The sum of a metric over all its label sets.
    async fn gateway_metric_sum(&self, name: &str) -> f64 {
        let text = reqwest::get(format!("{}/metrics", self.gateway.url()))
            .await
            .expect("gateway metrics")
            .text()
            .await
            .expect("text");
        text.lines()
            .filter(|line| {
                line.starts_with(&format!("{name}{{")) || line.starts_with(&format!("{name} "))
            })
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    async fn gateway_metric_reaches(&self, line_start: &str, at_least: f64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let value = self.gateway_metric(line_start).await;
            if value >= at_least {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{line_start} stayed at {value}; Prometheus: {}",
                self.prometheus.diagnostics().await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// `bonked` acks per desk.
fn bonked(acks: &[Ack]) -> BTreeMap<String, Vec<BonkId>> {
    let mut out: BTreeMap<String, Vec<BonkId>> = BTreeMap::new();
    for ack in acks.iter().filter(|a| a.outcome == Outcome::Bonked) {
        out.entry(ack.desk.to_string())
            .or_default()
            .push(ack.bonk_id.clone());
    }
    out
}

async fn the_watcher_bonks_first_and_the_alert_is_merged(kind: BrokerKind) {
    let label = format!("chain-{kind}").to_lowercase();
    let tree = CgroupTree::new(&label);
    let (uid, container_id) = (random_uid(), random_hex(64));
    let container = format!("kubepods/burstable/pod{uid}/{container_id}");
    let directory = tree.create(&container);
    tree.limit(&container, LIMIT_BYTES);
    let node = format!("node-{label}");
    let pod = format!("api-{}", random_hex(5));
    let api = FakeKubeApi::start(&node).await;
    api.add_pod(&uid, "payments", &pod, &[("app", &container_id)]);

    let mut cluster = Cluster::start(kind, &pod, &node).await;
    // Kills of earlier tests are still in the kernel's ring buffer: history to this watcher.
    let watcher = WatcherUnderTest::start_with(
        &WatcherSetup {
            broker: &cluster.broker,
            prefix: "bonker",
            node: &node,
            api: Some(&api),
            state_file: None,
            kmsg: None,
        },
        &MoreSetup {
            max_event_age_s: Some(5),
            ..MoreSetup::default()
        },
    );

    let (_, status) = hog_killed(spawn_hog(&directory)).await;
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "{kind}: the kernel kills the hog"
    );
    let bonk = bonk_of(
        &cluster
            .bonks
            .next_on(|m| m.topic == "bonker/bonk/payments")
            .await,
    );
    assert_eq!(bonk.source, Source::Watcher, "{kind}");
    let kill = bonk
        .kill
        .clone()
        .expect("the watcher's bonk carries the kill");
    assert_eq!(kill.pod.as_deref(), Some(pod.as_str()), "{kind}");
    let mut first = Vec::new();
    for _ in 0..2 {
        first.push(cluster.ack().await);
    }
    for ack in &first {
        assert_eq!(
            (ack.bonk_id.clone(), ack.outcome),
            (bonk.id.clone(), Outcome::Bonked),
            "{kind}: {ack:?}"
        );
        let after_kernel = ack.received_at - kill.at;
        eprintln!(
            "[timing] {kind}: kernel timestamp -> {} received the bonk: {} ms",
            ack.desk,
            after_kernel.num_milliseconds()
        );
        assert!(
            after_kernel < chrono::Duration::seconds(1),
            "{kind}: {} got the bonk {after_kernel} after the kernel's timestamp",
            ack.desk
        );
    }

    // A minute later in a cluster, seconds here: the series show the kill, the rule fires.
    cluster.metrics_show_the_kill().await;
    let merged_before = std::time::Instant::now();
    cluster
        .gateway_metric_reaches(
            "bonker_gateway_alerts_merged_total{source=\"kernel\"} ",
            1.0,
        )
        .await;
    eprintln!(
        "[timing] {kind}: series changed -> alert merged by the gateway: {} ms",
        merged_before.elapsed().as_millis()
    );
    let firing = cluster.prometheus.firing("OOMKilled").await;
    assert_eq!(firing.len(), 1, "{kind}: {firing:?}");
    assert!(
        cluster.prometheus.firing("NodeOOMKill").await.is_empty(),
        "{kind}: the node rule stays quiet for a container kill"
    );
    let later = cluster.acks_until_sentinel().await;
    let all: Vec<Ack> = first.into_iter().chain(later).collect();
    assert_eq!(
        bonked(&all),
        BTreeMap::from([
            ("alice".to_owned(), vec![bonk.id.clone()]),
            ("carol".to_owned(), vec![bonk.id.clone()]),
        ]),
        "{kind}: one bonk per desk per kill: {all:?}"
    );
    assert_eq!(
        cluster
            .gateway_metric_sum("bonker_gateway_bonks_published_total")
            .await,
        0.0,
        "{kind}: the gateway published nothing for the alert"
    );
    drop(watcher);
    drop(tree);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_kill_bonks_each_desk_once_through_watcher_prometheus_and_alertmanager() {
    for kind in [BrokerKind::Bonker, BrokerKind::Mosquitto] {
        the_watcher_bonks_first_and_the_alert_is_merged(kind).await;
    }
}

/// No watcher on the node: the alert is the only detector, and bonks each desk once.
async fn without_the_watcher_the_alert_bonks_once(kind: BrokerKind) {
    let node = format!("node-alone-{kind}").to_lowercase();
    let mut cluster = Cluster::start(kind, "cart-0", &node).await;
    cluster.metrics_show_the_kill().await;
    let mut acks = Vec::new();
    for _ in 0..2 {
        acks.push(cluster.ack().await);
    }
    // Past the rules' `for` with the kill in view: anything else that would fire has fired.
    cluster.prometheus.evaluated_past_for().await;
    assert!(
        cluster.prometheus.firing("NodeOOMKill").await.is_empty(),
        "{kind}: the node rule stays quiet for a container kill"
    );
    acks.extend(cluster.acks_until_sentinel().await);
    let per_desk = bonked(&acks);
    assert_eq!(per_desk.len(), 2, "{kind}: {acks:?}");
    for (desk, ids) in &per_desk {
        assert_eq!(ids.len(), 1, "{kind}: {desk} bonked {ids:?}");
    }
    assert_eq!(
        cluster
            .gateway_metric_sum("bonker_gateway_bonks_published_total")
            .await,
        1.0,
        "{kind}: the gateway published the alert's bonk, once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_watcher_the_alert_bonks_once_bonker_broker() {
    without_the_watcher_the_alert_bonks_once(BrokerKind::Bonker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_watcher_the_alert_bonks_once_mosquitto() {
    without_the_watcher_the_alert_bonks_once(BrokerKind::Mosquitto).await;
}
