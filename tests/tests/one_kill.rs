//! One OOM kill, one bonk, at every desk that watches it — however many detectors report it, how
//! many gateway replicas there are, and whether the gateway restarted in between.
//!
//! Every program is a real process: gateways, agents with simulated servos, Debian's
//! Alertmanager, both brokers. The node watcher's bonk is published as the watcher publishes it
//! (`source: watcher`, a `kill` seen by the kernel); the watcher itself, a real kernel kill and a
//! real Prometheus evaluating the shipped rules are in the watcher's end-to-end tests.
//!
//! The desks: alice watches `payments`, carol watches every namespace. "Exactly one" is proved
//! with a sentinel: after the expected acks, a bonk sent to carol directly must be the next ack.

use std::collections::BTreeMap;
use std::time::Duration;

use bonker_protocol::{Ack, Bonk, BonkId, Detector, Kill, Outcome, Severity, Source};
use bonker_tests::{
    AgentProcess, AlertmanagerOptions, BrokerKind, GatewayProcess, Probe, RoundRobinProxy,
    TestAlertmanager, TestBroker,
};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

struct Desks {
    broker: TestBroker,
    _agents: Vec<AgentProcess>,
    acks: Probe,
}

impl Desks {
    async fn start(kind: BrokerKind, agent_env: &[(&str, &str)]) -> Desks {
        let broker = TestBroker::start(kind);
        let url = broker.url();
        let acks = Probe::connect(&url, &["bonker/desk/+/ack"]).await;
        let mut agents = Vec::new();
        for (desk, namespaces) in [("alice", "payments"), ("carol", "+")] {
            agents.push(
                AgentProcess::start_with(
                    &url,
                    desk,
                    &[namespaces],
                    &[],
                    agent_env,
                    bonker_tests::ProbeOptions::default(),
                )
                .await,
            );
        }
        Desks {
            broker,
            _agents: agents,
            acks,
        }
    }

    fn url(&self) -> String {
        self.broker.url()
    }

    async fn acks(&mut self, count: usize) -> Vec<Ack> {
        let mut acks = Vec::with_capacity(count);
        for message in self.acks.take(count).await {
            acks.push(serde_json::from_value(message.json()).expect("an ack"));
        }
        acks
    }

    /// Every ack until the sentinel's: proves nothing else is on its way.
    async fn acks_until_sentinel(&mut self) -> Vec<Ack> {
        let sentinel = BonkId::random();
        Probe::connect(&self.url(), &[])
            .await
            .publish(
                "bonker/desk/carol/bonk",
                json!({"id": sentinel.to_string(), "severity": "info"}).to_string(),
                false,
            )
            .await;
        let mut acks = Vec::new();
        loop {
            let ack: Ack = serde_json::from_value(self.acks.next().await.json()).expect("an ack");
            if ack.bonk_id == sentinel {
                return acks;
            }
            acks.push(ack);
        }
    }

    /// Publishes a bonk as the node watcher does for a container kill at `at`.
    async fn watcher_bonk(&self, pod: &str, at: DateTime<Utc>, seq: u32) -> BonkId {
        let mut bonk = Bonk::new(Source::Watcher, Severity::Critical);
        bonk.id = BonkId::stable(&["watcher", "node-a", "boot-1", &seq.to_string()]);
        bonk.namespace = Some("payments".into());
        bonk.pod = Some(pod.into());
        bonk.container = Some("app".into());
        bonk.node = Some("node-a".into());
        bonk.reason = Some("OOMKilled".into());
        bonk.fired_at = Some(at);
        let mut kill = Kill::new(Detector::Kernel, at);
        kill.namespace = bonk.namespace.clone();
        kill.pod = bonk.pod.clone();
        kill.container = bonk.container.clone();
        kill.node = bonk.node.clone();
        kill.limit = Some(bonker_protocol::Limit::Container);
        bonk.kill = Some(kill);
        Probe::connect(&self.url(), &[])
            .await
            .publish("bonker/bonk/payments", bonk.to_json(), false)
            .await;
        bonk.id
    }
}

/// Outcomes by desk, for one bonk id.
fn outcomes(acks: &[Ack], id: &BonkId) -> BTreeMap<String, Vec<Outcome>> {
    let mut out: BTreeMap<String, Vec<Outcome>> = BTreeMap::new();
    for ack in acks.iter().filter(|a| &a.bonk_id == id) {
        out.entry(ack.desk.to_string())
            .or_default()
            .push(ack.outcome);
    }
    out
}

fn each_desk(outcome: Outcome) -> BTreeMap<String, Vec<Outcome>> {
    ["alice", "carol"]
        .into_iter()
        .map(|desk| (desk.to_owned(), vec![outcome]))
        .collect()
}

/// `bonked` acks per desk over all acks: what the arm did.
fn bonks_per_desk(acks: &[Ack]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for ack in acks.iter().filter(|a| a.outcome == Outcome::Bonked) {
        *out.entry(ack.desk.to_string()).or_default() += 1;
    }
    out
}

fn oom(pod: &'static str) -> Vec<(&'static str, &'static str)> {
    vec![
        ("alertname", "OOMKilled"),
        ("severity", "critical"),
        ("namespace", "payments"),
        ("pod", pod),
        ("container", "app"),
        ("reason", "OOMKilled"),
    ]
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

async fn get_json(url: &str) -> Value {
    reqwest::get(url)
        .await
        .expect("the gateway answers")
        .json()
        .await
        .expect("JSON")
}

async fn metric(gateway: &str, line_start: &str) -> f64 {
    let text = reqwest::get(format!("{gateway}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    text.lines()
        .find_map(|line| line.strip_prefix(line_start))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Waits until a gateway metric reaches `at_least`.
async fn metric_reaches(gateway: &str, line_start: &str, at_least: f64) {
    let deadline = tokio::time::Instant::now() + bonker_tests::DEADLINE;
    loop {
        let value = metric(gateway, line_start).await;
        if value >= at_least {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{line_start} stayed at {value}, expected at least {at_least}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn alert_id(alertmanager: &TestAlertmanager, pod: &str) -> BonkId {
    let alerts = get_json(&format!("{}/api/v2/alerts", alertmanager.url())).await;
    let alert = alerts
        .as_array()
        .and_then(|a| a.iter().find(|a| a["labels"]["pod"] == pod))
        .unwrap_or_else(|| panic!("no alert for {pod} in {alerts}"));
    BonkId::for_alert(
        alert["fingerprint"].as_str().expect("fingerprint"),
        alert["startsAt"].as_str().expect("startsAt"),
    )
}

/// The watcher bonks first; a minute later (here: seconds) Alertmanager's OOMKilled alert for the
/// same container arrives. The gateway merges it: each desk moved once, the reply and the API
/// say which bonk it was merged into, the metric counts it.
async fn an_alert_after_the_watchers_bonk_is_merged(kind: BrokerKind) {
    let mut desks = Desks::start(kind, &[]).await;
    let gateway = GatewayProcess::start(&desks.url(), &[]).await;
    let killed_at = Utc::now() - chrono::Duration::seconds(3);
    let watcher = desks.watcher_bonk("api-0", killed_at, 1).await;
    let acks = desks.acks(2).await;
    assert_eq!(
        outcomes(&acks, &watcher),
        each_desk(Outcome::Bonked),
        "{kind}"
    );
    metric_reaches(&gateway.url(), "bonker_gateway_kills_remembered ", 1.0).await;

    let alertmanager = TestAlertmanager::start(AlertmanagerOptions {
        webhook_urls: vec![format!("{}/webhook", gateway.url())],
        ..Default::default()
    });
    alertmanager.add_alert_started(&oom("api-0"), &[], &rfc3339(Utc::now()));
    metric_reaches(
        &gateway.url(),
        "bonker_gateway_alerts_merged_total{source=\"kernel\"} ",
        1.0,
    )
    .await;
    let alert = alert_id(&alertmanager, "api-0").await;
    let view = get_json(&format!("{}/api/bonks/{alert}", gateway.url())).await;
    assert_eq!(
        view["merged_into"],
        json!(watcher.to_string()),
        "{kind}: {view}"
    );
    assert_eq!(
        metric(&gateway.url(), "bonker_gateway_bonks_published_total").await,
        0.0,
        "{kind}: nothing was published for the alert"
    );
    let later = desks.acks_until_sentinel().await;
    assert!(
        later.is_empty(),
        "{kind}: the alert bonked again: {later:?}"
    );
}

/// The same through the webhook directly, to read the reply: `merged` and `merged_into`.
/// An alert for another container of the same pod — no kill of its own — bonks as usual.
async fn the_webhook_reply_names_the_bonk_an_alert_was_merged_into(kind: BrokerKind) {
    let mut desks = Desks::start(kind, &[]).await;
    let gateway = GatewayProcess::start(&desks.url(), &[]).await;
    let killed_at = Utc::now() - chrono::Duration::seconds(40);
    let watcher = desks.watcher_bonk("api-1", killed_at, 2).await;
    desks.acks(2).await;
    metric_reaches(&gateway.url(), "bonker_gateway_kills_remembered ", 1.0).await;

    let starts_at = rfc3339(Utc::now());
    let alert = |fingerprint: &str, container: &str| {
        json!({"status": "firing", "fingerprint": fingerprint, "startsAt": starts_at,
               "labels": {"alertname": "OOMKilled", "namespace": "payments", "pod": "api-1",
                          "container": container, "reason": "OOMKilled"}})
    };
    let body = json!({"version": "4", "status": "firing", "receiver": "bonker",
                      "alerts": [alert("fp-app", "app"), alert("fp-sidecar", "sidecar")]});
    let reply: Value = reqwest::Client::new()
        .post(format!("{}/webhook", gateway.url()))
        .json(&body)
        .send()
        .await
        .expect("webhook")
        .json()
        .await
        .expect("JSON reply");
    assert_eq!(
        (&reply["published"], &reply["merged"], &reply["duplicates"]),
        (&json!(1), &json!(1), &json!(0)),
        "{kind}: {reply}"
    );
    let merged_id = BonkId::for_alert("fp-app", &starts_at);
    let sidecar_id = BonkId::for_alert("fp-sidecar", &starts_at);
    assert_eq!(reply["bonks"][0]["id"], json!(merged_id.to_string()));
    assert_eq!(reply["bonks"][0]["merged_into"], json!(watcher.to_string()));
    assert_eq!(reply["bonks"][1]["id"], json!(sidecar_id.to_string()));
    assert!(reply["bonks"][1].get("merged_into").is_none(), "{reply}");
    let acks = desks.acks_until_sentinel().await;
    assert_eq!(
        outcomes(&acks, &sidecar_id),
        each_desk(Outcome::Bonked),
        "{kind}"
    );
    assert_eq!(
        bonks_per_desk(&acks).values().sum::<usize>(),
        2,
        "{kind}: {acks:?}"
    );

    // Alertmanager repeats it: a duplicate, still naming the bonk it was merged into.
    let again: Value = reqwest::Client::new()
        .post(format!("{}/webhook", gateway.url()))
        .json(&body)
        .send()
        .await
        .expect("webhook")
        .json()
        .await
        .expect("JSON reply");
    assert_eq!(
        (&again["published"], &again["duplicates"]),
        (&json!(0), &json!(2)),
        "{kind}: {again}"
    );
    assert_eq!(again["bonks"][0]["merged_into"], json!(watcher.to_string()));
}

/// Two gateway replicas behind a round-robin Service, fed by an Alertmanager HA pair: one kill the
/// watcher saw, one only the alert reports. Each desk moves once per kill.
async fn two_replicas_and_an_ha_pair_still_bonk_once_per_kill(kind: BrokerKind) {
    let mut desks = Desks::start(kind, &[]).await;
    let replicas = [
        GatewayProcess::start(&desks.url(), &[]).await,
        GatewayProcess::start(&desks.url(), &[]).await,
    ];
    let proxy = RoundRobinProxy::start(replicas.iter().map(GatewayProcess::addr).collect()).await;
    let watcher = desks
        .watcher_bonk("api-2", Utc::now() - chrono::Duration::seconds(5), 3)
        .await;
    desks.acks(2).await;
    for replica in &replicas {
        metric_reaches(&replica.url(), "bonker_gateway_kills_remembered ", 1.0).await;
    }
    let first = TestAlertmanager::start(AlertmanagerOptions {
        webhook_urls: vec![format!("{}/webhook", proxy.url())],
        clustered: true,
        ..Default::default()
    });
    let second = TestAlertmanager::start(AlertmanagerOptions {
        webhook_urls: vec![format!("{}/webhook", proxy.url())],
        peers: vec![first.cluster_addr().expect("clustered")],
        ..Default::default()
    });
    first.wait_for_cluster(2).await;
    second.wait_for_cluster(2).await;
    let start = rfc3339(Utc::now());
    for alertmanager in [&first, &second] {
        alertmanager.add_alert_started(&oom("api-2"), &[], &start);
        alertmanager.add_alert_started(&oom("api-3"), &[], &start);
    }
    let only_alert = alert_id(&first, "api-3").await;
    let mut acks = Vec::new();
    while bonks_per_desk(&acks).values().sum::<usize>() < 2 {
        acks.extend(desks.acks(1).await);
    }
    // The api-2 alert reached a replica too, and was merged there.
    let deadline = tokio::time::Instant::now() + bonker_tests::DEADLINE;
    loop {
        let mut merged = 0.0;
        for replica in &replicas {
            merged += metric(
                &replica.url(),
                "bonker_gateway_alerts_merged_total{source=\"kernel\"} ",
            )
            .await;
        }
        if merged >= 1.0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{kind}: no replica merged the api-2 alert"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    acks.extend(desks.acks_until_sentinel().await);
    let bonked: Vec<&Ack> = acks
        .iter()
        .filter(|a| a.outcome == Outcome::Bonked)
        .collect();
    assert!(
        bonked.iter().all(|a| a.bonk_id == only_alert),
        "{kind}: only the alert without a watcher bonk moves the arms: {acks:?}"
    );
    assert_eq!(bonks_per_desk(&acks).len(), 2, "{kind}: {acks:?}");
    assert!(
        acks.iter()
            .all(|a| a.outcome == Outcome::Bonked || a.outcome == Outcome::Duplicate),
        "{kind}: {acks:?}"
    );
    assert!(
        outcomes(&acks, &watcher).is_empty(),
        "{kind}: the watcher's bonk was not delivered again"
    );
}

/// The gateway restarts between the watcher's bonk and the alert, so it never saw the kill: it
/// publishes the alert, and the desks — which did see it — ack it `duplicate`, naming the bonk.
async fn a_restarted_gateway_is_caught_by_the_desks(kind: BrokerKind) {
    let mut desks = Desks::start(kind, &[]).await;
    let mut before = GatewayProcess::start(&desks.url(), &[]).await;
    let watcher = desks
        .watcher_bonk("api-4", Utc::now() - chrono::Duration::seconds(20), 4)
        .await;
    let acks = desks.acks(2).await;
    assert_eq!(
        outcomes(&acks, &watcher),
        each_desk(Outcome::Bonked),
        "{kind}"
    );
    metric_reaches(&before.url(), "bonker_gateway_kills_remembered ", 1.0).await;
    // Restarted: the new process has not seen the watcher's bonk.
    let port = before.port();
    before.process().kill();
    let gateway = GatewayProcess::spawn(&desks.url(), port, &[], &[]);
    gateway.wait_ready().await;
    assert_eq!(
        metric(&gateway.url(), "bonker_gateway_kills_remembered ").await,
        0.0
    );
    let alertmanager = TestAlertmanager::start(AlertmanagerOptions {
        webhook_urls: vec![format!("{}/webhook", gateway.url())],
        ..Default::default()
    });
    alertmanager.add_alert_started(&oom("api-4"), &[], &rfc3339(Utc::now()));
    let alert = alert_id(&alertmanager, "api-4").await;
    let acks = desks.acks(2).await;
    assert_eq!(
        outcomes(&acks, &alert),
        each_desk(Outcome::Duplicate),
        "{kind}"
    );
    for ack in &acks {
        let detail = ack.detail.as_deref().unwrap_or("");
        assert!(
            detail.contains(watcher.as_str()),
            "{kind}: the duplicate ack names the bonk performed: {ack:?}"
        );
    }
    assert!(desks.acks_until_sentinel().await.is_empty(), "{kind}");
}

/// A crash loop: the container is killed three times, the watcher bonks each kill, and an alert
/// for each kill arrives later. Three moves per desk; each alert merged into its own kill.
async fn a_crash_loop_is_one_bonk_per_kill(kind: BrokerKind) {
    let mut desks = Desks::start(kind, &[]).await;
    let gateway = GatewayProcess::start(&desks.url(), &[]).await;
    let now = Utc::now();
    let mut kills = Vec::new();
    for (seq, seconds_ago) in [(10, 90), (11, 60), (12, 30)] {
        let at = now - chrono::Duration::seconds(seconds_ago);
        kills.push((desks.watcher_bonk("api-5", at, seq).await, at));
    }
    let acks = desks.acks(6).await;
    assert_eq!(
        bonks_per_desk(&acks),
        BTreeMap::from([("alice".to_owned(), 3), ("carol".to_owned(), 3)]),
        "{kind}: {acks:?}"
    );
    metric_reaches(&gateway.url(), "bonker_gateway_kills_remembered ", 3.0).await;
    // Each episode of the rule starts 20 s after its kill, before the next kill.
    let alerts: Vec<Value> = kills
        .iter()
        .map(|(_, at)| {
            json!({"status": "firing", "fingerprint": "fp-crashloop",
                   "startsAt": rfc3339(*at + chrono::Duration::seconds(20)),
                   "labels": {"alertname": "OOMKilled", "namespace": "payments", "pod": "api-5",
                              "container": "app"}})
        })
        .collect();
    let reply: Value = reqwest::Client::new()
        .post(format!("{}/webhook", gateway.url()))
        .json(&json!({"version": "4", "status": "firing", "alerts": alerts}))
        .send()
        .await
        .expect("webhook")
        .json()
        .await
        .expect("JSON reply");
    assert_eq!(reply["merged"], json!(3), "{kind}: {reply}");
    for (n, (watcher, _)) in kills.iter().enumerate() {
        assert_eq!(
            reply["bonks"][n]["merged_into"],
            json!(watcher.to_string()),
            "{kind}: alert {n} merges into its own kill: {reply}"
        );
    }
    assert!(desks.acks_until_sentinel().await.is_empty(), "{kind}");
}

/// An alert that stays firing (the classic last-terminated-reason rule) re-sent with a 1 s
/// `repeat_interval` (every 1–1.5 s with a 500 ms `group_interval`), across several gateway and
/// desk dedupe windows of 3 s: one bonk. A window that did not slide would forget the id 3 s after
/// the first notification and bonk again.
async fn a_long_firing_alert_bonks_once_across_dedupe_windows(kind: BrokerKind) {
    let mut desks = Desks::start(kind, &[("BONKER_DEDUPE_WINDOW_S", "3")]).await;
    let gateway =
        GatewayProcess::start_with(&desks.url(), &[], &[("BONKER_DEDUPE__MAX_AGE_S", "2")]).await;
    let alertmanager = TestAlertmanager::start(AlertmanagerOptions {
        webhook_urls: vec![format!("{}/webhook", gateway.url())],
        group_wait: "100ms",
        group_interval: "500ms",
        repeat_interval: "1s",
        ..Default::default()
    });
    alertmanager.add_alert(&oom("api-6"), &[]);
    let acks = desks.acks(2).await;
    let alert = alert_id(&alertmanager, "api-6").await;
    assert_eq!(
        outcomes(&acks, &alert),
        each_desk(Outcome::Bonked),
        "{kind}"
    );
    // Eight repeats: the last of them about three windows after the first notification.
    metric_reaches(&gateway.url(), "bonker_gateway_dedupe_hits_total ", 8.0).await;
    let later = desks.acks_until_sentinel().await;
    assert!(
        later.is_empty(),
        "{kind}: the repeats bonked again: {later:?}"
    );
}

macro_rules! on_both_brokers {
    ($($scenario:ident),* $(,)?) => {
        mod bonker_broker {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(bonker_tests::BrokerKind::Bonker).await;
                }
            )*
        }
        mod mosquitto {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(bonker_tests::BrokerKind::Mosquitto).await;
                }
            )*
        }
    };
}

on_both_brokers!(
    an_alert_after_the_watchers_bonk_is_merged,
    the_webhook_reply_names_the_bonk_an_alert_was_merged_into,
    two_replicas_and_an_ha_pair_still_bonk_once_per_kill,
    a_restarted_gateway_is_caught_by_the_desks,
    a_crash_loop_is_one_bonk_per_kill,
    a_long_firing_alert_bonks_once_across_dedupe_windows,
);
