//! Desks on an office broker bridged to the cluster broker, with every program a real process: two
//! Debian mosquittos, the office one bridged to the cluster one exactly as `docs/brokers.md` ("Past
//! one broker") configures it — over TLS, as the bridge's own user, under the documented ACL — a
//! gateway on the cluster broker, agents at the office, and one desk on the cluster broker for
//! comparison.
//!
//! 1. The loop closes across the bridge: an Alertmanager webhook bonks each desk once, and the
//!    gateway sees every ack; so does a bonk for one desk.
//! 2. The desks' status, health and Home Assistant discovery reach the cluster broker retained,
//!    Home Assistant's birth reaches the desks, and a desk's last will reaches the gateway.
//! 3. A WAN outage — the link between the bridge and the cluster broker cut, both brokers up: the
//!    gateway keeps accepting alerts, the cluster desk is bonked at once, and the office's bonks
//!    wait on the cluster broker; after the link is back each office desk performs each of them
//!    exactly once.
//!
//! The desks: alice and bob at the office, carol on the cluster broker; all three watch `payments`.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bonker_protocol::BonkId;
use bonker_tests::guides::{code_block_after, with_setting};
use bonker_tests::webhook::{notification, oom_alert};
use bonker_tests::{
    AckTally, AgentProcess, BrokerKind, BrokerOptions, GatewayProcess, Probe, ProbeOptions,
    TestBridge, TestBroker, TestCa,
};
use serde_json::Value;

/// Agents that reconnect within a second, count every bonk (no rate limit) and move quickly.
const AGENT_ENV: &[(&str, &str)] = &[
    ("BONKER_MQTT__RECONNECT_MAX_MS", "1000"),
    ("BONKER_RATE_LIMIT__MAX_BONKS", "100000"),
    ("BONKER_SERVO__STROKE_MS", "10"),
    ("BONKER_SERVO__MAX_STROKES", "10"),
];

const OFFICE_DESKS: [&str; 2] = ["alice", "bob"];
const CLUSTER_DESK: &str = "carol";
const ALL_DESKS: [&str; 3] = ["alice", "bob", "carol"];

/// How long the bridge may take to come back after the link is restored: mosquitto retries after
/// a random wait of up to 30 s (`restart_timeout 2 30`), and this machine may be loaded.
const RECONNECT_DEADLINE: Duration = Duration::from_secs(90);

/// The test's own user on the cluster broker: watches everything, bonks like a person would.
const OBSERVER_ACL: &str = "
user observer
topic read $SYS/#
topic read bonker/#
topic read homeassistant/#
topic write bonker/bonk/#
topic write bonker/desk/+/bonk
topic write homeassistant/status
";

/// How clients reach the cluster broker: its address, the test CA, a password per user.
struct ClusterAccess {
    url: String,
    ca: TestCa,
    passwords: BTreeMap<String, String>,
    secrets: tempfile::TempDir,
}

impl ClusterAccess {
    fn credentials(&self, user: &str) -> ProbeOptions {
        ProbeOptions {
            credentials: Some((user.to_owned(), self.passwords[user].clone())),
            ca_pem: Some(self.ca.ca_pem()),
            ..Default::default()
        }
    }

    /// `--mqtt-username`, `--mqtt-password-file`, `--mqtt-ca-file` for `user`.
    fn mqtt_flags(&self, user: &str) -> Vec<String> {
        let path = self.secrets.path().join(user);
        // Kubernetes Secrets and `echo` both end files with a newline; it is not part of it.
        std::fs::write(&path, format!("{}\n", self.passwords[user])).expect("write secret");
        vec![
            "--mqtt-username".to_owned(),
            user.to_owned(),
            "--mqtt-password-file".to_owned(),
            path.display().to_string(),
            "--mqtt-ca-file".to_owned(),
            self.ca.ca_file().display().to_string(),
        ]
    }

    /// A probe on the cluster broker, as the test's observer.
    async fn observe(&self, filters: &[&str]) -> Probe {
        Probe::connect_with(&self.url, filters, self.credentials("observer"))
            .await
            .unwrap_or_else(|e| panic!("the observer cannot connect to the cluster broker: {e}"))
    }
}

/// The cluster broker (TLS, a password per user, the documented ACL) with a gateway and carol on
/// it; the office broker bridged to it with alice and bob on it.
struct Office {
    access: ClusterAccess,
    cluster: TestBroker,
    bridge: TestBridge,
    gateway: GatewayProcess,
    agents: Vec<AgentProcess>,
}

impl Office {
    async fn start() -> Office {
        let ca = TestCa::new();
        let passwords: BTreeMap<String, String> =
            ["gateway", "office-bridge", "observer", CLUSTER_DESK]
                .iter()
                .map(|user| (user.to_string(), format!("{user}-{}", BonkId::random())))
                .collect();
        let acl = code_block_after("brokers.md", "ACL: a desk may write only its own topics")
            + &code_block_after("brokers.md", "The bridge's user on the cluster broker")
            + OBSERVER_ACL;
        let cluster = TestBroker::start_with(
            BrokerKind::Mosquitto,
            BrokerOptions {
                users: passwords
                    .iter()
                    .map(|(u, p)| (u.clone(), p.clone()))
                    .collect(),
                mosquitto_acl: Some(acl),
                tls: Some(ca.server_cert_and_key()),
                ..Default::default()
            },
        );

        // The documented bridge, pointed at this test's CA and password (and, by the harness, at
        // the link in front of the cluster broker).
        let connection = code_block_after("brokers.md", "The office broker's bridge");
        let connection = with_setting(
            &connection,
            "bridge_cafile",
            &ca.ca_file().display().to_string(),
        );
        let connection = with_setting(&connection, "remote_password", &passwords["office-bridge"]);
        let bridge = TestBridge::start(
            SocketAddr::from((Ipv4Addr::LOCALHOST, cluster.port())),
            &connection,
        )
        .await;
        let access = ClusterAccess {
            url: cluster.url(),
            ca,
            passwords,
            secrets: tempfile::tempdir().expect("tempdir"),
        };
        let mut state = access.observe(&[bridge.state_topic()]).await;
        state.next_on(|m| m.text() == "1").await;
        // Retained: a client that subscribes later learns that the bridge is up.
        let mut later = access.observe(&[bridge.state_topic()]).await;
        let connected = later.next().await;
        assert_eq!((connected.text().as_str(), connected.retain), ("1", true));

        let mut agents = Vec::new();
        for desk in OFFICE_DESKS {
            agents.push(
                AgentProcess::start_with(
                    &bridge.office().url(),
                    desk,
                    &["payments"],
                    &[],
                    AGENT_ENV,
                    ProbeOptions::default(),
                )
                .await,
            );
        }
        let carol_flags = access.mqtt_flags(CLUSTER_DESK);
        agents.push(
            AgentProcess::start_with(
                &access.url,
                CLUSTER_DESK,
                &["payments"],
                &as_str(&carol_flags),
                AGENT_ENV,
                access.credentials("observer"),
            )
            .await,
        );
        let gateway_flags = access.mqtt_flags("gateway");
        let gateway = GatewayProcess::start(&access.url, &as_str(&gateway_flags)).await;
        let office = Office {
            access,
            cluster,
            bridge,
            gateway,
            agents,
        };
        office.wait_for_desks(&ALL_DESKS, true).await;
        office
    }

    async fn observe(&self, filters: &[&str]) -> Probe {
        self.access.observe(filters).await
    }

    fn agent(&self, desk: &str) -> &AgentProcess {
        self.agents
            .iter()
            .find(|a| a.desk() == desk)
            .expect("a desk of the test")
    }

    /// Waits until the gateway's `/api/desks` shows each of `desks` with this online state and,
    /// online, with a health report watching `payments`. Returns the desks' views.
    async fn wait_for_desks(&self, desks: &[&str], online: bool) -> BTreeMap<String, Value> {
        let deadline = Instant::now() + bonker_tests::DEADLINE;
        loop {
            let views = self.desk_views().await;
            let ready = desks.iter().all(|desk| {
                views.get(*desk).is_some_and(|view| {
                    view["online"] == online
                        && (!online || view["namespaces"] == serde_json::json!(["payments"]))
                })
            });
            if ready {
                return views;
            }
            assert!(
                Instant::now() < deadline,
                "the gateway never showed {desks:?} with online = {online}: {views:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn desk_views(&self) -> BTreeMap<String, Value> {
        let Ok(response) = reqwest::get(format!("{}/api/desks", self.gateway.url())).await else {
            return BTreeMap::new();
        };
        let views: Value = response.json().await.unwrap_or_default();
        views
            .as_array()
            .map(|views| {
                views
                    .iter()
                    .map(|v| (v["desk"].as_str().unwrap_or_default().to_owned(), v.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Posts one firing `OOMKilled` alert for `payments/<pod>` as Alertmanager would; the gateway
    /// must answer 200 (the cluster broker has the bonk). Returns the bonk's id.
    async fn alert(&self, pod: &str) -> BonkId {
        let fingerprint = format!("{pod}-{}", BonkId::random());
        let starts_at = bonker_tests::alertmanager::now_millis();
        let body = notification(vec![oom_alert(
            &fingerprint,
            "payments",
            pod,
            &format!("{pod} ran out of memory"),
            &starts_at,
        )]);
        let response = reqwest::Client::new()
            .post(format!("{}/webhook", self.gateway.url()))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("the gateway answers");
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        assert_eq!(status, 200, "the webhook for {pod}: {text}");
        BonkId::for_alert(&fingerprint, &starts_at)
    }

    /// The gateway's `/api/bonks/{id}` acks as (desk, outcome, latency in ms).
    async fn gateway_acks(&self, id: &str) -> Vec<(String, String, f64)> {
        let Ok(response) = reqwest::get(format!("{}/api/bonks/{id}", self.gateway.url())).await
        else {
            return Vec::new();
        };
        let view: Value = response.json().await.unwrap_or_default();
        view["acks"]
            .as_array()
            .map(|acks| {
                acks.iter()
                    .map(|a| {
                        (
                            a["desk"].as_str().unwrap_or_default().to_owned(),
                            a["outcome"].as_str().unwrap_or_default().to_owned(),
                            a["latency_ms"].as_f64().unwrap_or(f64::NAN),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits, at most `deadline`, until the gateway has an ack from each of `desks` for `id`.
    async fn wait_for_gateway_acks(
        &self,
        id: &str,
        desks: &[&str],
        deadline: Duration,
    ) -> Vec<(String, String, f64)> {
        let until = Instant::now() + deadline;
        loop {
            let acks = self.gateway_acks(id).await;
            if desks
                .iter()
                .all(|d| acks.iter().any(|(desk, _, _)| desk == d))
            {
                return acks;
            }
            assert!(
                Instant::now() < until,
                "the gateway never saw acks from {desks:?} for {id}: {acks:?}\n\
                 office broker:\n{}\ncluster broker:\n{}",
                self.bridge.office().output(),
                self.cluster.output()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Acks each desk logged, by (desk, bonk id), then by outcome.
    fn tally(&self) -> AckTally {
        AgentProcess::tally(&self.agents)
    }

    /// Publishes a sentinel bonk on `payments` on the cluster broker after everything else and
    /// waits until every desk acked it. The bridge forwards the cluster's messages to the office in
    /// order and each broker delivers them to a desk in order, so any bonk still on its way to a
    /// desk before the sentinel — a redelivery — has been acked by then.
    async fn settle(&self) {
        let observer = self.observe(&[]).await;
        let id = format!("sentinel-{}", BonkId::random());
        observer
            .publish(
                "bonker/bonk/payments",
                format!("{{\"id\":\"{id}\",\"source\":\"manual\",\"severity\":\"info\"}}"),
                false,
            )
            .await;
        let deadline = Instant::now() + bonker_tests::DEADLINE;
        loop {
            let tally = self.tally();
            let missing: Vec<&str> = ALL_DESKS
                .iter()
                .copied()
                .filter(|desk| !tally.contains_key(&(desk.to_string(), id.clone())))
                .collect();
            if missing.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the sentinel was never acked by {missing:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Asserts that each of `desks` performed each of `ids` exactly once and acked it nothing
    /// else. A bonk that arrives while the servo is busy is folded into the next move and acked
    /// `rate_limited`: performed too.
    fn assert_performed_once(&self, ids: &[BonkId], desks: &[&str]) {
        let tally = self.tally();
        for id in ids {
            for desk in desks {
                let outcomes = tally.get(&(desk.to_string(), id.to_string()));
                let performed = outcomes.map_or(0, |o| {
                    o.get("bonked").copied().unwrap_or(0)
                        + o.get("rate_limited").copied().unwrap_or(0)
                });
                let acks: usize = outcomes.map_or(0, |o| o.values().sum());
                assert!(
                    performed == 1 && acks == 1,
                    "{desk} acked {id} {outcomes:?}; expected one performed bonk"
                );
            }
        }
    }
}

/// Scenario 1: a webhook bonks every desk once across the bridge, the gateway sees every ack; so
/// does a bonk for one desk. Prints what the bridge adds to the round trip.
#[tokio::test(flavor = "multi_thread")]
async fn the_loop_closes_across_the_bridge() {
    let office = Office::start().await;
    const ROUNDS: usize = 20;
    let mut ids = Vec::new();
    let mut direct = Vec::new();
    let mut bridged = Vec::new();
    for round in 0..ROUNDS {
        let id = office.alert(&format!("api-{round}")).await;
        let acks = office
            .wait_for_gateway_acks(id.as_str(), &ALL_DESKS, bonker_tests::DEADLINE)
            .await;
        for (desk, _, latency) in acks {
            if desk == CLUSTER_DESK {
                direct.push(latency);
            } else {
                bridged.push(latency);
            }
        }
        ids.push(id);
    }
    // A bonk for one office desk, from the gateway's own endpoint.
    let response = reqwest::Client::new()
        .post(format!("{}/bonk?desk=alice", office.gateway.url()))
        .send()
        .await
        .expect("the gateway answers");
    assert_eq!(response.status(), 200);
    let reply: Value = response.json().await.expect("json");
    let desk_bonk = reply["id"]
        .as_str()
        .unwrap_or_else(|| panic!("the reply names its bonk: {reply}"))
        .to_owned();
    office
        .wait_for_gateway_acks(&desk_bonk, &["alice"], bonker_tests::DEADLINE)
        .await;

    office.settle().await;
    office.assert_performed_once(&ids, &ALL_DESKS);
    for id in &ids {
        let acks = office.gateway_acks(id.as_str()).await;
        let mut desks: Vec<&str> = acks.iter().map(|(desk, _, _)| desk.as_str()).collect();
        desks.sort();
        assert_eq!(desks, ALL_DESKS, "the gateway's acks for {id}: {acks:?}");
    }
    let tally = office.tally();
    assert_eq!(
        tally.get(&("alice".to_owned(), desk_bonk.clone())),
        Some(&BTreeMap::from([("bonked".to_owned(), 1)])),
        "alice's bonk"
    );
    assert!(
        !tally.contains_key(&("bob".to_owned(), desk_bonk)),
        "a bonk for alice reached bob"
    );

    let (direct, bridged) = (median(&mut direct), median(&mut bridged));
    eprintln!(
        "[timing] bridge: webhook to ack, median of {ROUNDS}: {direct:.1} ms on the cluster \
         broker, {bridged:.1} ms across the bridge (+{:.1} ms)",
        bridged - direct
    );
}

/// Scenario 2: what desks say reaches the cluster broker, retained, and the gateway; what Home
/// Assistant says reaches the desks.
#[tokio::test(flavor = "multi_thread")]
async fn desks_report_back_across_the_bridge() {
    let mut office = Office::start().await;
    let views = office.wait_for_desks(&ALL_DESKS, true).await;
    for desk in OFFICE_DESKS {
        assert_eq!(views[desk]["status"], "online", "{desk}: {}", views[desk]);
        assert_eq!(
            views[desk]["health"]["desk"], desk,
            "{desk}: {}",
            views[desk]
        );
    }

    // Retained on the cluster broker, as if alice were connected to it.
    let mut retained = office
        .observe(&[
            "bonker/desk/alice/status",
            "bonker/desk/alice/health",
            "homeassistant/button/alice/bonk/config",
        ])
        .await;
    let mut topics = BTreeMap::new();
    for message in retained.take(3).await {
        assert!(message.retain, "{} arrived not retained", message.topic);
        topics.insert(message.topic.clone(), message);
    }
    assert_eq!(topics["bonker/desk/alice/status"].text(), "online");
    assert_eq!(topics["bonker/desk/alice/health"].json()["desk"], "alice");

    // Home Assistant's birth on the cluster broker: alice announces herself again.
    office
        .observe(&[])
        .await
        .publish("homeassistant/status", "online", false)
        .await;
    let announced = retained
        .next_on(|m| m.topic == "homeassistant/button/alice/bonk/config")
        .await;
    assert!(!announced.retain, "a fresh announcement, not a replay");

    // bob's agent dies: the office broker publishes his last will, and the gateway sees it.
    let bob = office
        .agents
        .iter_mut()
        .find(|a| a.desk() == "bob")
        .expect("bob");
    bob.process().kill();
    office.wait_for_desks(&["bob"], false).await;
    office.wait_for_desks(&["alice", "carol"], true).await;
}

/// Scenario 3: a WAN outage. The link between the bridge and the cluster broker is cut, both
/// brokers stay up: bonks published meanwhile wait on the cluster broker and are delivered after
/// the link is back, each exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn a_wan_outage_queues_the_office_bonks() {
    let office = Office::start().await;
    let mut state = office.observe(&[office.bridge.state_topic()]).await;
    assert_eq!(state.next().await.text(), "1", "the bridge is up");
    // One bonk before, so the loop is known to work and nothing is in flight when the link goes.
    let before = office.alert("before").await;
    office
        .wait_for_gateway_acks(before.as_str(), &ALL_DESKS, bonker_tests::DEADLINE)
        .await;

    let connections = office.bridge.link().connections();
    office.bridge.link().cut();
    let cut_at = Instant::now();
    // The cluster broker publishes the bridge's last will as soon as its connection drops.
    state.next_on(|m| m.text() == "0").await;
    let noticed_in = cut_at.elapsed();

    const DURING: usize = 5;
    let mut during = Vec::new();
    for n in 0..DURING {
        during.push(office.alert(&format!("during-{n}")).await);
    }
    // carol, on the cluster broker, is bonked at once.
    for id in &during {
        office
            .wait_for_gateway_acks(id.as_str(), &[CLUSTER_DESK], bonker_tests::DEADLINE)
            .await;
    }
    // The office desks have not been: nothing crosses a cut link.
    let tally = office.tally();
    for id in &during {
        for desk in OFFICE_DESKS {
            assert!(
                !tally.contains_key(&(desk.to_owned(), id.to_string())),
                "{desk} acked {id} while the link was cut"
            );
        }
    }
    // The gateway still shows the office desks online: their retained status is the last one the
    // cluster broker had, and nobody published `offline` for them.
    office.wait_for_desks(&ALL_DESKS, true).await;

    office.bridge.link().restore();
    let restored_at = Instant::now();
    let back = state
        .next_within(RECONNECT_DEADLINE)
        .await
        .unwrap_or_else(|| {
            panic!(
                "the bridge did not reconnect within {RECONNECT_DEADLINE:?}; office broker:\n{}",
                office.bridge.office().output()
            )
        });
    assert_eq!(
        back.text(),
        "1",
        "the bridge's notification after the outage"
    );
    let reconnected_in = restored_at.elapsed();
    assert!(
        office.bridge.link().connections() > connections,
        "the bridge reconnected through the link"
    );
    for id in &during {
        office
            .wait_for_gateway_acks(id.as_str(), &OFFICE_DESKS, bonker_tests::DEADLINE)
            .await;
    }
    let delivered_in = restored_at.elapsed();

    office.settle().await;
    let mut all = vec![before];
    all.extend(during.iter().cloned());
    office.assert_performed_once(&all, &ALL_DESKS);
    for id in &all {
        let acks = office.gateway_acks(id.as_str()).await;
        for desk in ALL_DESKS {
            let count = acks.iter().filter(|(d, _, _)| d == desk).count();
            assert_eq!(
                count, 1,
                "the gateway saw {count} acks from {desk} for {id}: {acks:?}"
            );
        }
    }
    let alice = office.agent("alice").logged_acks();
    assert!(
        alice.iter().all(|(_, outcome)| outcome != "expired"),
        "alice: {alice:?}"
    );
    eprintln!(
        "[timing] bridge outage: cut noticed by the cluster broker in {:.0} ms; after the link \
         was restored the bridge was back in {:.1} s and the {DURING} queued bonks were acked by \
         both office desks in {:.1} s",
        noticed_in.as_secs_f64() * 1000.0,
        reconnected_in.as_secs_f64(),
        delivered_in.as_secs_f64()
    );
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

fn as_str(flags: &[String]) -> Vec<&str> {
    flags.iter().map(String::as_str).collect()
}
