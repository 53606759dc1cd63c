//! The shipped alert rules in a real Prometheus, delivering to a real Alertmanager: one OOM kill
//! raises exactly the alert that reports it, with the labels the gateway reads.
//!
//! `promtool test rules` proves the PromQL on synthetic series; this proves the rest of the path
//! the gateway depends on: Debian's Prometheus loads `deploy/prometheus/bonker-rules.yml`, scrapes
//! series labelled as kube-state-metrics, cAdvisor and node-exporter label them, and Alertmanager
//! delivers the resulting alerts to a webhook. The rules are the shipped ones with every `for:`
//! shortened to a second (`PrometheusOptions::rule_for`), so each test takes seconds.
//!
//! Each scenario serves a node and its pods as they look before a kill, waits until Prometheus
//! has scraped that, then serves them as they look after it. "Does not fire" is proved from
//! Prometheus's own record (`ALERTS`: never even pending) after the rules were evaluated past
//! their `for:`, with every rule healthy — and, for the rule under test, after checking that its
//! raw input did move (the node's OOM kill counter rose), so silence is the rule's doing.

use std::collections::BTreeMap;
use std::time::Duration;

use bonker_tests::prometheus::{
    ContainerSeries, Exporter, NodeSeries, PrometheusOptions, TestPrometheus, WebhookReceiver,
    exposition,
};
use bonker_tests::{AlertmanagerOptions, TestAlertmanager};

/// Every `for:` of the shipped rules, in these tests.
const RULE_FOR: Duration = Duration::from_secs(1);

/// Exporter → Prometheus → Alertmanager → webhook.
struct Pipeline {
    exporter: Exporter,
    prometheus: TestPrometheus,
    webhook: WebhookReceiver,
    _alertmanager: TestAlertmanager,
}

impl Pipeline {
    async fn start() -> Pipeline {
        let webhook = WebhookReceiver::start().await;
        let alertmanager = TestAlertmanager::start(AlertmanagerOptions {
            webhook_urls: vec![webhook.url()],
            ..AlertmanagerOptions::default()
        });
        let exporter = Exporter::start().await;
        let prometheus = TestPrometheus::start(PrometheusOptions {
            targets: vec![exporter.target()],
            alertmanagers: vec![alertmanager.url()],
            rule_for: Some(RULE_FOR),
            ..PrometheusOptions::default()
        })
        .await;
        Pipeline {
            exporter,
            prometheus,
            webhook,
            _alertmanager: alertmanager,
        }
    }

    /// Serves `before` until Prometheus has scraped it, then `after` until it has scraped that.
    async fn kill(
        &self,
        before: (Vec<ContainerSeries>, Vec<NodeSeries>),
        after: (Vec<ContainerSeries>, Vec<NodeSeries>),
    ) {
        self.exporter.set(exposition(&before.0, &before.1));
        self.exporter.wait_until_scraped().await;
        self.exporter.set(exposition(&after.0, &after.1));
        self.exporter.wait_until_scraped().await;
    }

    /// The nodes whose OOM kill counter Prometheus saw rise: the raw input of NodeOOMKill.
    async fn nodes_with_kills(&self) -> Vec<String> {
        let mut nodes: Vec<String> = self
            .prometheus
            .query(
                "max by (nodename) ((increase(node_vmstat_oom_kill[5m]) > 0) \
                 * on (instance, job) group_left (nodename) node_uname_info)",
            )
            .await
            .iter()
            .filter_map(|sample| sample["metric"]["nodename"].as_str().map(str::to_owned))
            .collect();
        nodes.sort();
        nodes
    }

    /// Asserts that no alert in `alertnames` was ever pending or firing, once the rules have been
    /// evaluated past their `for:` (and all evaluated without error), and that none reached the
    /// webhook.
    async fn assert_never_raised(&self, alertnames: &[&str]) {
        self.prometheus.evaluated_past_for().await;
        for alertname in alertnames {
            let seen = self.prometheus.alerts_seen(alertname).await;
            assert!(
                seen.is_empty(),
                "{alertname} was raised: {seen:?}\n{}",
                self.prometheus.diagnostics().await
            );
            let delivered: Vec<_> = self
                .webhook
                .alerts()
                .into_iter()
                .filter(|a| a["labels"]["alertname"] == *alertname)
                .collect();
            assert!(
                delivered.is_empty(),
                "{alertname} reached the webhook: {delivered:?}"
            );
        }
    }
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The labels of an alert as the webhook received it.
fn webhook_labels(alert: &serde_json::Value) -> BTreeMap<String, String> {
    alert["labels"]
        .as_object()
        .expect("labels")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
        .collect()
}

/// A container's main process killed (it restarts) on node-a, a worker killed in a container that
/// keeps running on node-c: each raises its container alert, and neither NodeOOMKill, although
/// both nodes' kill counters rose.
#[tokio::test(flavor = "multi_thread")]
async fn container_kills_fire_their_container_alerts_and_never_node_oom_kill() {
    let pipeline = Pipeline::start().await;
    let api = ContainerSeries::running("payments", "api-0", "api", "node-a");
    let web = ContainerSeries::running("shop", "web-0", "nginx", "node-a");
    let fluentd = ContainerSeries::running("logging", "fluentd-7x2kq", "fluentd", "node-c");
    // Kills since boot, before the test: only a counter that moves matters.
    let (node_a, node_c) = (
        NodeSeries::new("node-a").killed(3),
        NodeSeries::new("node-c"),
    );

    pipeline
        .kill(
            (
                vec![api.clone(), web.clone(), fluentd.clone()],
                vec![node_a.clone(), node_c.clone()],
            ),
            (
                vec![api.oom_killed(), web.clone(), fluentd.child_oom_killed()],
                vec![node_a.killed(1), node_c.killed(1)],
            ),
        )
        .await;

    let restarted = labels(&[
        ("alertname", "OOMKilled"),
        ("namespace", "payments"),
        ("pod", "api-0"),
        ("container", "api"),
        ("reason", "OOMKilled"),
        ("severity", "none"),
        ("bonk", "critical"),
    ]);
    let firing = pipeline.prometheus.wait_for_firing("OOMKilled").await;
    assert_eq!(firing.len(), 1, "{firing:?}");
    assert_eq!(firing[0].labels, restarted);
    assert_eq!(
        firing[0].annotations.get("summary").map(String::as_str),
        Some("Container api in payments/api-0 was OOM-killed")
    );

    let worker = labels(&[
        ("alertname", "ContainerOOMEvent"),
        ("namespace", "logging"),
        ("pod", "fluentd-7x2kq"),
        ("container", "fluentd"),
        ("reason", "OOMKilled"),
        ("severity", "none"),
        ("bonk", "critical"),
    ]);
    let firing = pipeline
        .prometheus
        .wait_for_firing("ContainerOOMEvent")
        .await;
    assert_eq!(firing.len(), 1, "{firing:?}");
    assert_eq!(firing[0].labels, worker);

    // What Alertmanager hands the gateway: the same labels, nothing from the scrape (no job,
    // no instance).
    let delivered = pipeline.webhook.wait_for_alert("OOMKilled").await;
    assert_eq!(webhook_labels(&delivered), restarted);
    let delivered = pipeline.webhook.wait_for_alert("ContainerOOMEvent").await;
    assert_eq!(webhook_labels(&delivered), worker);

    // Both nodes' counters did rise, and NodeOOMKill still never matched: the container alerts
    // cover both kills.
    assert_eq!(pipeline.nodes_with_kills().await, ["node-a", "node-c"]);
    pipeline.assert_never_raised(&["NodeOOMKill"]).await;
}

/// At the same moment, payments/api-0 is OOM-killed on node-a and node-b's kernel kills a process
/// outside any container (node-b runs a healthy pod). Each kill raises one alert: OOMKilled for
/// the container, NodeOOMKill for node-b — never for node-a, whose kill OOMKilled reports.
#[tokio::test(flavor = "multi_thread")]
async fn a_kill_outside_any_container_fires_node_oom_kill_for_its_node_only() {
    let pipeline = Pipeline::start().await;
    let api = ContainerSeries::running("payments", "api-0", "api", "node-a");
    let cart = ContainerSeries::running("checkout", "cart-0", "cart", "node-b");
    let (node_a, node_b) = (
        NodeSeries::new("node-a"),
        NodeSeries::new("node-b").killed(7),
    );

    pipeline
        .kill(
            (
                vec![api.clone(), cart.clone()],
                vec![node_a.clone(), node_b.clone()],
            ),
            (
                vec![api.oom_killed(), cart.clone()],
                vec![node_a.killed(1), node_b.killed(1)],
            ),
        )
        .await;

    let node_kill = labels(&[
        ("alertname", "NodeOOMKill"),
        ("node", "node-b"),
        ("reason", "OOMKilled"),
        ("severity", "none"),
        ("bonk", "warning"),
    ]);
    let firing = pipeline.prometheus.wait_for_firing("NodeOOMKill").await;
    assert_eq!(firing.len(), 1, "{firing:?}");
    assert_eq!(firing[0].labels, node_kill);
    assert_eq!(
        firing[0].annotations.get("summary").map(String::as_str),
        Some("The kernel OOM-killed a process on node node-b that no container alert reports")
    );
    let oom_killed = pipeline.prometheus.wait_for_firing("OOMKilled").await;
    assert_eq!(oom_killed.len(), 1, "{oom_killed:?}");
    assert_eq!(oom_killed[0].label("pod"), Some("api-0"));

    // No namespace label: the gateway bonks its default namespace with a tap.
    let delivered = pipeline.webhook.wait_for_alert("NodeOOMKill").await;
    assert_eq!(webhook_labels(&delivered), node_kill);
    pipeline.webhook.wait_for_alert("OOMKilled").await;

    // Both counters rose; only node-b's kill was ever NodeOOMKill's (one entry per state it went
    // through: pending, then firing), and nothing else was raised.
    assert_eq!(pipeline.nodes_with_kills().await, ["node-a", "node-b"]);
    pipeline.assert_never_raised(&["ContainerOOMEvent"]).await;
    let mut seen: Vec<String> = pipeline
        .prometheus
        .alerts_seen("NodeOOMKill")
        .await
        .into_iter()
        .filter_map(|labels| labels.get("node").cloned())
        .collect();
    seen.dedup();
    assert_eq!(seen, ["node-b"]);
    let mut delivered: Vec<(String, String)> = pipeline
        .webhook
        .alerts()
        .iter()
        .filter(|a| a["status"] == "firing")
        .map(|a| {
            let labels = webhook_labels(a);
            let place = labels
                .get("pod")
                .or(labels.get("node"))
                .cloned()
                .unwrap_or_default();
            (labels["alertname"].clone(), place)
        })
        .collect();
    delivered.sort();
    delivered.dedup();
    assert_eq!(
        delivered,
        [
            ("NodeOOMKill".to_owned(), "node-b".to_owned()),
            ("OOMKilled".to_owned(), "api-0".to_owned()),
        ]
    );
}

/// The gateway's metrics as the shipped scrape configurations collect them. A Kubernetes scrape
/// gives every series the scraped pod's `namespace`, `pod` and `container` as target labels, and
/// the gateway's own labels of those names say which workload a bonk was for. With the
/// ServiceMonitor's `honorLabels` (and `honor_labels` in deploy/prometheus/prometheus.yml) the
/// workload's labels stay; without it they would be renamed `exported_*`, and an alert on them
/// would bonk the gateway's own namespace. Both are scraped here, so the test sees the difference.
#[tokio::test(flavor = "multi_thread")]
async fn the_shipped_scrapes_keep_the_workload_labels() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let read = |path: &str| std::fs::read_to_string(root.join(path)).expect("a shipped file");
    let honoured = |text: &str, key: &str| text.lines().any(|l| l.trim() == format!("{key}: true"));
    let service_monitor = read("k8s/components/prometheus-operator/servicemonitor.yaml");
    let plain = read("deploy/prometheus/prometheus.yml");
    assert!(
        honoured(&service_monitor, "honorLabels"),
        "the ServiceMonitor must honour the gateway's labels"
    );
    assert!(
        honoured(&plain, "honor_labels"),
        "prometheus.yml must honour the gateway's labels"
    );

    let broker = bonker_tests::TestBroker::start(bonker_tests::BrokerKind::Bonker);
    let gateway = bonker_tests::GatewayProcess::start(&broker.url(), &[]).await;
    let reply = reqwest::Client::new()
        .post(format!("{}/bonk?namespace=payments", gateway.url()))
        .send()
        .await
        .expect("the gateway answers");
    assert!(reply.status().is_success(), "{}", reply.status());
    let series = "bonker_gateway_bonks_published_total";
    for honor_labels in [true, false] {
        let prometheus = TestPrometheus::start(PrometheusOptions {
            targets: vec![gateway.addr().to_string()],
            honor_labels,
            target_labels: [
                ("namespace", "bonker"),
                ("pod", "bonker-gateway-7f9c4-x2x8q"),
                ("container", "gateway"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .to_vec(),
            ..Default::default()
        })
        .await;
        let deadline = tokio::time::Instant::now() + bonker_tests::DEADLINE;
        let metric = loop {
            if let Some(first) = prometheus.query(series).await.first() {
                break first["metric"].clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{series} never scraped: {}",
                prometheus.diagnostics().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        if honor_labels {
            assert_eq!(metric["namespace"], "payments", "{metric}");
            assert!(metric.get("exported_namespace").is_none(), "{metric}");
        } else {
            assert_eq!(metric["namespace"], "bonker", "{metric}");
            assert_eq!(metric["exported_namespace"], "payments", "{metric}");
        }
    }
}
