//! The whole loop, driven the ways users drive it, with every program a real process: a real
//! Alertmanager (Debian's) posting to real gateways, real agents with simulated servos, people with
//! `mosquitto_pub` and the `bonker` CLI. Each scenario runs once with the bonker broker and once with
//! Debian's mosquitto.
//!
//! The desks: alice watches `payments`, bob watches `checkout`, carol watches every namespace.

use std::collections::BTreeMap;
use std::process::Command;

use bonker_protocol::{Ack, BonkId, Outcome};
use bonker_tests::{
    AgentProcess, AlertmanagerOptions, BrokerKind, GatewayProcess, Message, Probe,
    TestAlertmanager, TestBroker, binary,
};

struct Fleet {
    broker: TestBroker,
    agents: Vec<AgentProcess>,
    acks: Probe,
}

impl Fleet {
    async fn start(kind: BrokerKind) -> Fleet {
        let broker = TestBroker::start(kind);
        let url = broker.url();
        let acks = Probe::connect(&url, &["bonker/desk/+/ack"]).await;
        let agents = vec![
            AgentProcess::start(&url, "alice", &["payments"], &[]).await,
            AgentProcess::start(&url, "bob", &["checkout"], &[]).await,
            AgentProcess::start(&url, "carol", &["+"], &[]).await,
        ];
        Fleet {
            broker,
            agents,
            acks,
        }
    }

    fn url(&self) -> String {
        self.broker.url()
    }

    /// Acks until `count` have arrived.
    async fn acks(&mut self, count: usize) -> Vec<Ack> {
        self.acks
            .take(count)
            .await
            .iter()
            .map(|m: &Message| serde_json::from_value(m.json()).expect("an ack"))
            .collect()
    }

    /// Proves no further ack is on its way: bonks desk `carol` directly with a sentinel and expects
    /// that sentinel's ack to be the very next one.
    async fn assert_no_more_acks(&mut self) {
        let sentinel = format!(
            "{{\"id\":\"sentinel-{}\",\"severity\":\"info\"}}",
            BonkId::random()
        );
        let sender = Probe::connect(&self.url(), &[]).await;
        sender
            .publish("bonker/desk/carol/bonk", sentinel, false)
            .await;
        let next: Ack = serde_json::from_value(self.acks.next().await.json()).expect("an ack");
        assert!(
            next.bonk_id.as_str().starts_with("sentinel-"),
            "an unexpected ack arrived: {next:?}"
        );
    }
}

/// Outcomes by desk for one bonk id.
fn outcomes(acks: &[Ack], id: &BonkId) -> BTreeMap<String, Vec<Outcome>> {
    let mut out: BTreeMap<String, Vec<Outcome>> = BTreeMap::new();
    for ack in acks.iter().filter(|a| &a.bonk_id == id) {
        out.entry(ack.desk.to_string())
            .or_default()
            .push(ack.outcome);
    }
    out
}

fn bonked(desks: &[&str]) -> BTreeMap<String, Vec<Outcome>> {
    desks
        .iter()
        .map(|d| (d.to_string(), vec![Outcome::Bonked]))
        .collect()
}

async fn fingerprint_of(alertmanager: &TestAlertmanager, pod: &str) -> (String, String) {
    let alerts: serde_json::Value = reqwest::get(format!("{}/api/v2/alerts", alertmanager.url()))
        .await
        .expect("alertmanager answers")
        .json()
        .await
        .expect("json");
    let alert = alerts
        .as_array()
        .and_then(|a| a.iter().find(|a| a["labels"]["pod"] == pod))
        .unwrap_or_else(|| panic!("alert for {pod} not in alertmanager: {alerts}"));
    (
        alert["fingerprint"]
            .as_str()
            .expect("fingerprint")
            .to_owned(),
        alert["startsAt"].as_str().expect("startsAt").to_owned(),
    )
}

fn oom(namespace: &'static str, pod: &'static str) -> Vec<(&'static str, &'static str)> {
    vec![
        ("alertname", "OOMKilled"),
        ("severity", "critical"),
        ("namespace", namespace),
        ("pod", pod),
        ("container", "app"),
        ("reason", "OOMKilled"),
    ]
}

/// Scenario 1: a real Alertmanager, one notification with alerts across namespaces, then resolved.
async fn alertmanager_alerts_bonk_every_watching_desk_once(kind: BrokerKind) {
    let mut fleet = Fleet::start(kind).await;
    let gateway = GatewayProcess::start(&fleet.url(), &[]).await;
    let alertmanager = TestAlertmanager::start(AlertmanagerOptions {
        webhook_urls: vec![format!("{}/webhook", gateway.url())],
        group_by: vec!["alertname"],
        ..Default::default()
    });
    alertmanager.add_alert(&oom("payments", "api-0"), &[("summary", "api ran out")]);
    alertmanager.add_alert(&oom("payments", "api-1"), &[]);
    alertmanager.add_alert(&oom("checkout", "cart-0"), &[]);

    // payments alerts: alice and carol; checkout: bob and carol. 2 + 2 + 2 acks.
    let acks = fleet.acks(6).await;
    for (namespace, pod, desks) in [
        ("payments", "api-0", ["alice", "carol"]),
        ("payments", "api-1", ["alice", "carol"]),
        ("checkout", "cart-0", ["bob", "carol"]),
    ] {
        let (fingerprint, starts_at) = fingerprint_of(&alertmanager, pod).await;
        let id = BonkId::for_alert(&fingerprint, &starts_at);
        assert_eq!(
            outcomes(&acks, &id),
            bonked(&desks),
            "{kind}: {namespace}/{pod}"
        );
        // The gateway saw every ack.
        let view: serde_json::Value = reqwest::get(format!("{}/api/bonks/{id}", gateway.url()))
            .await
            .expect("gateway answers")
            .json()
            .await
            .expect("json");
        let acked = view.to_string();
        for desk in desks {
            assert!(
                acked.contains(desk),
                "{kind}: gateway view of {pod} lacks {desk}: {view}"
            );
        }
    }

    // Resolved: Alertmanager notifies, the gateway counts it, nothing bonks.
    alertmanager.resolve_alert(&oom("payments", "api-0"), &[]);
    let resolved = "bonker_gateway_alerts_total{status=\"resolved\"} 1";
    let deadline = tokio::time::Instant::now() + bonker_tests::DEADLINE;
    loop {
        let metrics = reqwest::get(format!("{}/metrics", gateway.url()))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        if metrics.lines().any(|l| l == resolved) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{kind}: the gateway never received the resolved notification:\n{metrics}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    fleet.assert_no_more_acks().await;
}

/// Scenario 2, duplicates: an Alertmanager HA pair, each posting to its own gateway replica;
/// every desk still bonks once per alert.
async fn ha_pair_and_two_gateways_bonk_once(kind: BrokerKind) {
    let mut fleet = Fleet::start(kind).await;
    let gateway_a = GatewayProcess::start(&fleet.url(), &[]).await;
    let gateway_b = GatewayProcess::start(&fleet.url(), &[]).await;
    let first = TestAlertmanager::start(AlertmanagerOptions {
        webhook_urls: vec![format!("{}/webhook", gateway_a.url())],
        clustered: true,
        ..Default::default()
    });
    let second = TestAlertmanager::start(AlertmanagerOptions {
        webhook_urls: vec![format!("{}/webhook", gateway_b.url())],
        peers: vec![first.cluster_addr().expect("clustered")],
        ..Default::default()
    });
    first.wait_for_cluster(2).await;
    second.wait_for_cluster(2).await;
    // Prometheus sends every alert to every Alertmanager, with the same start.
    let start = bonker_tests::alertmanager::now_millis();
    for alertmanager in [&first, &second] {
        alertmanager.add_alert_started(&oom("payments", "api-7"), &[], &start);
    }
    let (fingerprint, starts_at) = fingerprint_of(&first, "api-7").await;
    let id = BonkId::for_alert(&fingerprint, &starts_at);
    // alice and carol bonk; a second delivery, if any, is acked `duplicate`.
    let acks = fleet.acks(2).await;
    assert_eq!(outcomes(&acks, &id), bonked(&["alice", "carol"]), "{kind}");
    // Any later ack for this id must be a duplicate, never a second bonk.
    let sentinel_sender = Probe::connect(&fleet.url(), &[]).await;
    sentinel_sender
        .publish(
            "bonker/desk/carol/bonk",
            "{\"id\":\"sentinel-ha\",\"severity\":\"info\"}",
            false,
        )
        .await;
    loop {
        let ack: Ack = serde_json::from_value(fleet.acks.next().await.json()).expect("ack");
        if ack.bonk_id.as_str() == "sentinel-ha" {
            break;
        }
        assert_eq!(ack.bonk_id, id, "{kind}: unexpected ack {ack:?}");
        assert_eq!(
            ack.outcome,
            Outcome::Duplicate,
            "{kind}: {} bonked twice",
            ack.desk
        );
    }
}

/// Scenario 3: people with mosquitto_pub: words, JSON, a sentence — to a namespace and to a desk.
async fn mosquitto_pub_by_hand_bonks(kind: BrokerKind) {
    let mut fleet = Fleet::start(kind).await;
    let port = fleet.broker.port().to_string();
    let cases: [(&[&str], &[&str]); 5] = [
        (
            &["-t", "bonker/bonk/checkout", "-m", "bonk"],
            &["bob", "carol"],
        ),
        (
            &["-t", "bonker/bonk/payments", "-m", "tap"],
            &["alice", "carol"],
        ),
        (
            &[
                "-t",
                "bonker/bonk/payments",
                "-m",
                "{\"severity\":\"warning\"}",
            ],
            &["alice", "carol"],
        ),
        (&["-t", "bonker/desk/bob/bonk", "-m", "bonk"], &["bob"]),
        (
            &[
                "-t",
                "bonker/desk/alice/bonk",
                "-m",
                "hello from the terminal",
            ],
            &["alice"],
        ),
    ];
    for (args, desks) in cases {
        let status = Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &port, "-q", "1"])
            .args(args)
            .status()
            .expect("mosquitto_pub runs");
        assert!(status.success());
        let acks = fleet.acks(desks.len()).await;
        let mut got: Vec<(String, Outcome)> = acks
            .iter()
            .map(|a| (a.desk.to_string(), a.outcome))
            .collect();
        got.sort();
        let want: Vec<(String, Outcome)> = desks
            .iter()
            .map(|d| (d.to_string(), Outcome::Bonked))
            .collect();
        assert_eq!(got, want, "{kind}: mosquitto_pub {args:?}");
    }
    fleet.assert_no_more_acks().await;
}

/// Scenario 4, the CLI: `bonker bonk` gets its acks; `bonker fleet --json` lists every desk;
/// after `kill -9` of one agent it shows that desk offline.
async fn cli_bonks_and_shows_the_fleet(kind: BrokerKind) {
    let mut fleet = Fleet::start(kind).await;
    let url = fleet.url();
    let bonker = |args: &[&str]| {
        let output = Command::new(binary("bonker"))
            .arg("--mqtt")
            .arg(&url)
            .args(args)
            .output()
            .expect("bonker runs");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (ok, stdout, stderr) =
        bonker(&["bonk", "--namespace", "payments", "--severity", "warning"]);
    assert!(ok, "{kind}: bonker bonk failed: {stdout}{stderr}");
    assert!(
        stdout.contains("alice") && stdout.contains("carol"),
        "{kind}: {stdout}"
    );
    assert!(stdout.contains("2 desk(s) acked"), "{kind}: {stdout}");
    assert!(!stdout.contains("bob"), "{kind}: {stdout}");

    let desks = |json: &str| -> BTreeMap<String, bool> {
        let value: serde_json::Value = serde_json::from_str(json).expect("fleet --json is JSON");
        value
            .as_array()
            .expect("an array")
            .iter()
            .map(|d| {
                (
                    d["desk"].as_str().expect("desk").to_owned(),
                    d["online"] == true,
                )
            })
            .collect()
    };
    let (ok, stdout, stderr) = bonker(&["fleet", "--json"]);
    assert!(ok, "{stderr}");
    let expected: BTreeMap<String, bool> = [("alice", true), ("bob", true), ("carol", true)]
        .map(|(d, o)| (d.to_owned(), o))
        .into();
    assert_eq!(desks(&stdout), expected, "{kind}");

    let mut status = Probe::connect(&url, &["bonker/desk/bob/status"]).await;
    assert_eq!(status.next().await.text(), "online");
    fleet.agents[1].process().kill();
    let will = status.next().await;
    assert_eq!(
        will.text(),
        "offline",
        "{kind}: the broker publishes bob's last will"
    );
    let (ok, stdout, _) = bonker(&["fleet", "--json"]);
    assert!(ok);
    assert_eq!(desks(&stdout).get("bob"), Some(&false), "{kind}: {stdout}");
    assert_eq!(desks(&stdout).get("alice"), Some(&true), "{kind}: {stdout}");
}

bonker_tests::for_both_brokers!(
    alertmanager_alerts_bonk_every_watching_desk_once,
    ha_pair_and_two_gateways_bonk_once,
    mosquitto_pub_by_hand_bonks,
    cli_bonks_and_shows_the_fleet,
);
