//! The gateway as a real process (`bonker-gateway` on a free port), talking real HTTP, against
//! both brokers a deployment may use: the bonker broker and Debian's mosquitto. Subscribers and
//! fake desks are real MQTT clients.

use std::process::Command;
use std::time::{Duration, Instant};

use bonker_protocol::{Ack, BonkId, DeskId, Health, Outcome, SCHEMA_VERSION, ServoHealth};
use bonker_tests::webhook::notification;
use bonker_tests::{BrokerKind, ChildProcess, Probe, TestBroker, free_port};
use chrono::Utc;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// A `bonker-gateway` child process.
struct Gateway {
    port: u16,
    process: ChildProcess,
    http: reqwest::Client,
}

impl Gateway {
    /// Spawns the gateway on a free port with `args` and extra environment; does not wait.
    fn spawn(args: &[String], env: &[(&str, &str)]) -> Gateway {
        let port = free_port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_bonker-gateway"));
        command
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .args(args)
            .env("BONKER_LOG", "info,bonker_gateway=debug,rumqttd=warn")
            .env("BONKER_MQTT__RECONNECT_MIN_MS", "50")
            .env("BONKER_MQTT__RECONNECT_MAX_MS", "200");
        for (key, value) in env {
            command.env(key, value);
        }
        Gateway {
            port,
            process: ChildProcess::spawn("bonker-gateway", command),
            http: reqwest::Client::new(),
        }
    }

    /// Spawns the gateway for `mqtt_url` and waits until it is connected (`/readyz` 200).
    async fn start(mqtt_url: &str, extra: &[&str], env: &[(&str, &str)]) -> Gateway {
        let mut args = vec!["--mqtt".to_owned(), mqtt_url.to_owned()];
        args.extend(extra.iter().map(|s| s.to_string()));
        let gateway = Gateway::spawn(&args, env);
        gateway
            .eventually("/readyz answers 200", || async {
                (gateway.get("/readyz").await.0 == StatusCode::OK).then_some(())
            })
            .await;
        gateway
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        match self.http.get(self.url(path)).send().await {
            Ok(response) => {
                let status = response.status();
                let text = response.text().await.unwrap_or_default();
                (
                    status,
                    serde_json::from_str(&text).unwrap_or(Value::String(text)),
                )
            }
            // Not listening yet.
            Err(_) => (StatusCode::from_u16(599).expect("status"), Value::Null),
        }
    }

    async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        let response = self
            .http
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}\n{}", self.process.output()));
        let status = response.status();
        (status, response.json().await.expect("a JSON answer"))
    }

    async fn metrics(&self) -> String {
        match self.get("/metrics").await.1 {
            Value::String(text) => text,
            other => panic!("metrics are not text: {other}"),
        }
    }

    /// Polls `check` until it yields a value; panics with the gateway's output at the deadline.
    async fn eventually<T, F, Fut>(&self, what: &str, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + bonker_tests::DEADLINE;
        loop {
            if let Some(value) = check().await {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not within {:?}; gateway output:\n{}",
                bonker_tests::DEADLINE,
                self.process.output()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

const STARTS_AT: &str = "2026-11-21T10:00:00.123456789Z";

fn alert(status: &str, fingerprint: &str, labels: Value, annotations: Value) -> Value {
    json!({
        "status": status,
        "labels": labels,
        "annotations": annotations,
        "startsAt": STARTS_AT,
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus:9090/graph",
        "fingerprint": fingerprint,
    })
}

fn oom_labels(namespace: &str, pod: &str) -> Value {
    json!({"alertname": "OOMKilled", "severity": "critical", "namespace": namespace, "pod": pod,
           "container": "app", "reason": "OOMKilled"})
}

/// A bonk payload without its send time (which is "now").
fn without_sent_at(mut payload: Value) -> Value {
    let sent_at = payload
        .as_object_mut()
        .and_then(|o| o.remove("sent_at"))
        .expect("sent_at set");
    assert!(
        sent_at.as_str().is_some_and(|s| s.ends_with('Z')),
        "{sent_at}"
    );
    payload
}

/// A multi-alert notification across namespaces (one resolved, one with an invalid namespace):
/// a real subscriber sees exactly one bonk per firing alert, on the right topic, with the right
/// payload; the same notification again bonks nothing new.
async fn multi_alert_notification_bonks_exactly_the_expected_topics(kind: BrokerKind) {
    let broker = TestBroker::start(kind);
    let mut subscriber = Probe::connect(&broker.url(), &["bonker/#"]).await;
    // JSON logs also prove BONKER_LOG_FORMAT is not mistaken for a setting.
    let gateway = Gateway::start(
        &broker.url(),
        &["--cluster", "test-cluster"],
        &[("BONKER_LOG_FORMAT", "json")],
    )
    .await;
    let body = notification(vec![
        alert(
            "firing",
            "fp-api-0",
            oom_labels("payments", "api-0"),
            json!({"summary": "api-0 ran out"}),
        ),
        alert(
            "firing",
            "fp-api-1",
            json!({"alertname": "KubeMemoryHigh", "severity": "warning", "namespace": "payments", "pod": "api-1"}),
            json!({"description": "memory is high"}),
        ),
        alert(
            "resolved",
            "fp-api-2",
            oom_labels("payments", "api-2"),
            json!({}),
        ),
        alert(
            "firing",
            "fp-cart-0",
            json!({"alertname": "OOMKilled", "namespace": "checkout", "pod": "cart-0", "cluster": "label-cluster"}),
            json!({}),
        ),
        alert("firing", "fp-evil", oom_labels("a/#", "evil-0"), json!({})),
    ]);
    let (status, reply) = gateway.post("/webhook", &body).await;
    assert_eq!(status, StatusCode::OK, "{kind}: {reply}");
    assert_eq!(
        (
            &reply["alerts"],
            &reply["firing"],
            &reply["resolved"],
            &reply["published"],
            &reply["duplicates"]
        ),
        (&json!(5), &json!(4), &json!(1), &json!(4), &json!(0)),
        "{kind}: {reply}"
    );

    let id = |fingerprint: &str| BonkId::for_alert(fingerprint, STARTS_AT).to_string();
    let fired_at = "2026-11-21T10:00:00.123456789Z";
    let expected = [
        (
            "bonker/bonk/payments",
            json!({"v": 1, "id": id("fp-api-0"), "source": "alertmanager", "severity": "critical",
                   "namespace": "payments", "pod": "api-0", "container": "app", "alertname": "OOMKilled",
                   "reason": "OOMKilled", "summary": "api-0 ran out", "cluster": "test-cluster",
                   "fired_at": fired_at,
                   "kill": {"by": "alert", "at": fired_at, "cluster": "test-cluster",
                            "namespace": "payments", "pod": "api-0", "container": "app"}}),
        ),
        (
            "bonker/bonk/payments",
            json!({"v": 1, "id": id("fp-api-1"), "source": "alertmanager", "severity": "warning",
                   "namespace": "payments", "pod": "api-1", "alertname": "KubeMemoryHigh",
                   "summary": "memory is high", "cluster": "test-cluster", "fired_at": fired_at}),
        ),
        (
            "bonker/bonk/checkout",
            json!({"v": 1, "id": id("fp-cart-0"), "source": "alertmanager", "severity": "critical",
                   "namespace": "checkout", "pod": "cart-0", "alertname": "OOMKilled",
                   "summary": "OOMKilled firing in pod checkout/cart-0", "cluster": "label-cluster",
                   "fired_at": fired_at,
                   "kill": {"by": "alert", "at": fired_at, "cluster": "label-cluster",
                            "namespace": "checkout", "pod": "cart-0"}}),
        ),
        (
            "bonker/bonk/default",
            json!({"v": 1, "id": id("fp-evil"), "source": "alertmanager", "severity": "critical",
                   "namespace": "a/#", "pod": "evil-0", "container": "app", "alertname": "OOMKilled",
                   "reason": "OOMKilled", "summary": "OOMKilled firing for container app in pod a/#/evil-0",
                   "cluster": "test-cluster", "fired_at": fired_at,
                   "kill": {"by": "alert", "at": fired_at, "cluster": "test-cluster",
                            "namespace": "a/#", "pod": "evil-0", "container": "app"}}),
        ),
    ];
    let received = subscriber.take(expected.len()).await;
    for (message, (topic, payload)) in received.iter().zip(&expected) {
        assert_eq!(message.topic, *topic, "{kind}");
        assert!(!message.retain, "{kind}: bonks are never retained");
        assert_eq!(without_sent_at(message.json()), *payload, "{kind}");
    }

    // Repeated (repeat_interval, an HA pair): 200, nothing new on the wire.
    let (status, reply) = gateway.post("/webhook", &body).await;
    assert_eq!(status, StatusCode::OK, "{kind}: {reply}");
    assert_eq!(
        (&reply["published"], &reply["duplicates"]),
        (&json!(0), &json!(4)),
        "{kind}"
    );
    let sentinel = Probe::connect(&broker.url(), &[]).await;
    sentinel
        .publish("bonker/bonk/zz-sentinel", "sentinel", false)
        .await;
    let next = subscriber.next().await;
    assert_eq!(
        next.topic, "bonker/bonk/zz-sentinel",
        "{kind}: a repeat bonked again: {next:?}"
    );

    let metrics = gateway.metrics().await;
    for line in [
        "bonker_gateway_dedupe_hits_total 4",
        "bonker_gateway_invalid_namespace_labels_total 2",
        "bonker_gateway_alerts_total{status=\"firing\"} 8",
        "bonker_gateway_alerts_total{status=\"resolved\"} 2",
        "bonker_gateway_bonks_published_total{namespace=\"payments\",severity=\"warning\",source=\"alertmanager\"} 1",
        "bonker_gateway_bonks_published_total{namespace=\"default\",severity=\"critical\",source=\"alertmanager\"} 1",
        "bonker_gateway_webhooks_total{outcome=\"ok\"} 2",
    ] {
        assert!(metrics.contains(line), "{kind}: {line} missing:\n{metrics}");
    }
}

/// A broker that is down: 503 within the publish timeout. Once it is up, Alertmanager's retry of
/// the same notification bonks (a 503'd notification was not remembered as delivered).
async fn broker_down_gives_503_and_a_retry_after_it_is_back_bonks(kind: BrokerKind) {
    let mut broker = TestBroker::start(kind);
    broker.kill();
    let gateway = Gateway::spawn(
        &["--mqtt".to_owned(), broker.url()],
        &[("BONKER_PUBLISH_TIMEOUT_MS", "2000")],
    );
    gateway
        .eventually("the gateway listens", || async {
            (gateway.get("/healthz").await.0 == StatusCode::OK).then_some(())
        })
        .await;
    assert_eq!(
        gateway.get("/readyz").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let body = notification(vec![alert(
        "firing",
        "fp-retry",
        oom_labels("payments", "api-9"),
        json!({}),
    )]);
    let started = Instant::now();
    let (status, reply) = gateway.post("/webhook", &body).await;
    let elapsed = started.elapsed();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{kind}: {reply}");
    assert!(
        reply["error"]
            .as_str()
            .is_some_and(|e| e.contains("not accepted by the MQTT broker")),
        "{kind}: {reply}"
    );
    assert!(
        elapsed >= Duration::from_millis(2000) && elapsed < Duration::from_millis(4000),
        "{kind}: 503 after {elapsed:?}"
    );

    broker.restart();
    let mut subscriber = Probe::connect(&broker.url(), &["bonker/bonk/+"]).await;
    // The gateway reconnects within its backoff (at most 200 ms here), well inside the timeout:
    // the retry waits for the connection instead of failing.
    let (status, reply) = gateway.post("/webhook", &body).await;
    assert_eq!(status, StatusCode::OK, "{kind}: {reply}");
    assert_eq!(reply["published"], 1, "{kind}: {reply}");
    let message = subscriber.next().await;
    assert_eq!(message.topic, "bonker/bonk/payments", "{kind}");
    assert_eq!(
        message.json()["id"].as_str(),
        Some(BonkId::for_alert("fp-retry", STARTS_AT).as_str()),
        "{kind}"
    );
    assert_eq!(gateway.get("/readyz").await.0, StatusCode::OK, "{kind}");
    let metrics = gateway.metrics().await;
    assert!(
        metrics.contains("bonker_gateway_webhooks_total{outcome=\"unavailable\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("bonker_gateway_webhooks_total{outcome=\"ok\"} 1"),
        "{metrics}"
    );
}

fn health(desk: &str) -> Vec<u8> {
    Health {
        version: SCHEMA_VERSION,
        desk: DeskId::new(desk).expect("valid desk"),
        agent_version: "0.1.0".into(),
        uptime_s: 42,
        started_at: None,
        bonks_total: 7,
        last_bonk_at: None,
        last_bonk_namespace: None,
        last_bonk_pod: None,
        servo: ServoHealth {
            driver: "simulated".into(),
            state: "rest".into(),
            error: None,
        },
        namespaces: vec!["payments".into()],
        soc_temp_c: Some(48.5),
        bonk_delay_ms: Some(12),
        sent_at: Utc::now(),
    }
    .to_json()
}

fn ack(bonk_id: &str, desk: &str, outcome: Outcome) -> Vec<u8> {
    Ack {
        version: SCHEMA_VERSION,
        bonk_id: BonkId::from_received(bonk_id).expect("valid id"),
        desk: DeskId::new(desk).expect("valid desk"),
        outcome,
        received_at: Utc::now(),
        finished_at: Utc::now(),
        severity: None,
        namespace: Some("payments".into()),
        pod: None,
        count: None,
        detail: None,
    }
    .to_json()
}

/// A fake desk's status, health and ack reach `/api/desks`, `/api/bonks/{id}` and `/metrics`.
async fn fake_desk_acks_show_up_in_the_fleet_view(kind: BrokerKind) {
    let broker = TestBroker::start(kind);
    let gateway = Gateway::start(&broker.url(), &[], &[]).await;
    let mut desk = Probe::connect(&broker.url(), &["bonker/bonk/payments"]).await;
    desk.publish("bonker/desk/alice/status", "online", true)
        .await;
    desk.publish("bonker/desk/alice/health", health("alice"), true)
        .await;
    let alice = gateway
        .eventually("alice in /api/desks with her health", || async {
            let (_, desks) = gateway.get("/api/desks").await;
            desks
                .as_array()?
                .iter()
                .find(|d| d["desk"] == "alice" && d["online"] == true && !d["health"].is_null())
                .cloned()
        })
        .await;
    assert_eq!(alice["namespaces"], json!(["payments"]), "{kind}: {alice}");
    assert_eq!(alice["bonks_total"], 7, "{kind}: {alice}");
    assert_eq!(alice["health"]["soc_temp_c"], 48.5, "{kind}: {alice}");

    let body = notification(vec![alert(
        "firing",
        "fp-ack",
        oom_labels("payments", "api-3"),
        json!({}),
    )]);
    let (status, reply) = gateway.post("/webhook", &body).await;
    assert_eq!(status, StatusCode::OK, "{kind}: {reply}");
    let id = reply["bonks"][0]["id"]
        .as_str()
        .expect("bonk id")
        .to_owned();
    // The desk receives the bonk and acks it, as the agent does.
    let bonk = desk.next().await;
    assert_eq!(bonk.json()["id"], id.as_str(), "{kind}");
    desk.publish(
        "bonker/desk/alice/ack",
        ack(&id, "alice", Outcome::Bonked),
        false,
    )
    .await;
    let view = gateway
        .eventually("alice's ack in /api/bonks/{id}", || async {
            let (status, view) = gateway.get(&format!("/api/bonks/{id}")).await;
            (status == StatusCode::OK && view["acks"].as_array().is_some_and(|a| !a.is_empty()))
                .then_some(view)
        })
        .await;
    let acked = &view["acks"][0];
    assert_eq!(
        (&acked["desk"], &acked["outcome"]),
        (&json!("alice"), &json!("bonked")),
        "{kind}: {view}"
    );
    assert!(
        acked["latency_ms"].as_f64().is_some_and(|ms| ms > 0.0),
        "{kind}: {view}"
    );
    assert_eq!(view["topic"], "bonker/bonk/payments", "{kind}: {view}");
    assert_eq!(view["accepted_by_broker"], true, "{kind}: {view}");

    let metrics = gateway.metrics().await;
    for line in [
        "bonker_gateway_acks_total{desk=\"alice\",outcome=\"bonked\"} 1",
        "bonker_gateway_desks_online 1",
        "bonker_gateway_desks_known 1",
        "bonker_gateway_publish_to_ack_seconds_count 1",
    ] {
        assert!(metrics.contains(line), "{kind}: {line} missing:\n{metrics}");
    }
    let (_, desks) = gateway.get("/api/desks").await;
    assert_eq!(desks[0]["acks"]["bonked"], 1, "{kind}: {desks}");

    // The last will (or a clean shutdown) says offline.
    desk.publish("bonker/desk/alice/status", "offline", true)
        .await;
    gateway
        .eventually("alice offline in the metrics", || async {
            gateway
                .metrics()
                .await
                .contains("bonker_gateway_desks_online 0")
                .then_some(())
        })
        .await;
}

/// rumqttc does not re-subscribe after a reconnect; the gateway does, on every ConnAck.
async fn resubscribes_after_a_broker_restart(kind: BrokerKind) {
    let mut broker = TestBroker::start(kind);
    let gateway = Gateway::start(&broker.url(), &[], &[]).await;
    broker.restart();
    gateway
        .eventually("a second MQTT connection", || async {
            gateway
                .metrics()
                .await
                .contains("bonker_gateway_mqtt_connections_total 2")
                .then_some(())
        })
        .await;
    let desk = Probe::connect(&broker.url(), &[]).await;
    desk.publish("bonker/desk/bob/status", "online", true).await;
    gateway
        .eventually("bob in /api/desks", || async {
            let (_, desks) = gateway.get("/api/desks").await;
            desks
                .as_array()?
                .iter()
                .any(|d| d["desk"] == "bob")
                .then_some(())
        })
        .await;
    // A live (not retained) bonk and its ack after the restart reach the gateway too.
    let id = BonkId::stable(&["resubscribe", &kind.to_string()]).to_string();
    desk.publish(
        "bonker/bonk/payments",
        json!({"id": id, "severity": "info"}).to_string(),
        false,
    )
    .await;
    desk.publish(
        "bonker/desk/bob/ack",
        ack(&id, "bob", Outcome::Duplicate),
        false,
    )
    .await;
    let view = gateway
        .eventually("bob's ack in /api/bonks/{id}", || async {
            let (status, view) = gateway.get(&format!("/api/bonks/{id}")).await;
            (status == StatusCode::OK && view["acks"].as_array().is_some_and(|a| !a.is_empty()))
                .then_some(view)
        })
        .await;
    assert_eq!(view["acks"][0]["outcome"], "duplicate", "{kind}: {view}");
    // Published by someone else: no publish time, no latency.
    assert!(
        view["published_at"].is_null() && view["acks"][0]["latency_ms"].is_null(),
        "{kind}: {view}"
    );
}

/// Many webhooks at once, more bonks in flight than rumqttc's window of 100: every request gets
/// its own PUBACKs (the correlation holds under load) and every bonk arrives exactly once.
async fn concurrent_webhooks_are_each_confirmed_and_delivered_once(kind: BrokerKind) {
    const REQUESTS: usize = 40;
    const ALERTS_PER_REQUEST: usize = 5;
    let broker = TestBroker::start(kind);
    let mut subscriber = Probe::connect(&broker.url(), &["bonker/bonk/+"]).await;
    let gateway = Gateway::start(&broker.url(), &[], &[]).await;
    let mut requests = tokio::task::JoinSet::new();
    let mut expected = std::collections::BTreeSet::new();
    for request in 0..REQUESTS {
        let alerts = (0..ALERTS_PER_REQUEST)
            .map(|n| {
                let fingerprint = format!("storm-{request}-{n}");
                expected.insert(BonkId::for_alert(&fingerprint, STARTS_AT).to_string());
                alert(
                    "firing",
                    &fingerprint,
                    oom_labels("storm", &format!("pod-{n}")),
                    json!({}),
                )
            })
            .collect();
        let post = gateway
            .http
            .post(gateway.url("/webhook"))
            .json(&notification(alerts))
            .send();
        requests.spawn(async move {
            let response = post.await.expect("answered");
            let status = response.status();
            (status, response.json::<Value>().await.expect("json"))
        });
    }
    while let Some(joined) = requests.join_next().await {
        let (status, reply) = joined.expect("request task");
        assert_eq!(status, StatusCode::OK, "{kind}: {reply}");
        assert_eq!(reply["published"], ALERTS_PER_REQUEST, "{kind}: {reply}");
    }
    let received: std::collections::BTreeSet<String> = subscriber
        .take(REQUESTS * ALERTS_PER_REQUEST)
        .await
        .iter()
        .map(|m| m.json()["id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(received, expected, "{kind}");
    let sentinel = Probe::connect(&broker.url(), &[]).await;
    sentinel
        .publish("bonker/bonk/zz-sentinel", "sentinel", false)
        .await;
    assert_eq!(
        subscriber.next().await.topic,
        "bonker/bonk/zz-sentinel",
        "{kind}: a bonk arrived twice"
    );
}

/// A desk as the broker sees it: subscribed to `bonker/bonk/payments`, then `online` (retained)
/// on its status topic, in that order on one connection, as the agent does.
async fn desk_subscribed_then_online(broker: &TestBroker, desk: &str) -> Probe {
    let probe = Probe::connect(&broker.url(), &["bonker/bonk/payments"]).await;
    probe
        .publish(&format!("bonker/desk/{desk}/status"), "online", true)
        .await;
    probe
}

/// `bonker_gateway_desks_awaited` as the gateway reports it.
async fn desks_awaited(gateway: &Gateway) -> Option<u64> {
    gateway
        .metrics()
        .await
        .lines()
        .find_map(|line| line.strip_prefix("bonker_gateway_desks_awaited "))
        .and_then(|value| value.trim().parse().ok())
}

/// A broker, a gateway with `env`, and `desk` online in the gateway's fleet view; then the broker
/// restarts (forgetting the desk's subscription) and the gateway reconnects. The desk's old
/// connection is gone with the broker: it is back only when the test brings it back.
async fn restarted_after_desk_was_online(
    kind: BrokerKind,
    desk: &str,
    env: &[(&str, &str)],
) -> (TestBroker, Gateway) {
    let mut broker = TestBroker::start(kind);
    let gateway = Gateway::start(&broker.url(), &[], env).await;
    let before = desk_subscribed_then_online(&broker, desk).await;
    gateway
        .eventually("the desk online in the fleet view", || async {
            gateway
                .metrics()
                .await
                .contains("bonker_gateway_desks_online 1")
                .then_some(())
        })
        .await;
    drop(before);
    broker.restart();
    gateway
        .eventually("a second MQTT connection", || async {
            gateway
                .metrics()
                .await
                .contains("bonker_gateway_mqtt_connections_total 2")
                .then_some(())
        })
        .await;
    (broker, gateway)
}

/// A broker restarted without persistence (both test brokers run without) forgets every desk's
/// subscription. A bonk it accepted before the desk subscribed again would reach nobody — with a
/// 200 already sent — so after reconnecting the gateway holds bonks until the desks that were
/// online say `online` again: meanwhile requests get 503 (Alertmanager retries), and once the desk
/// is back the retry is published and reaches it.
async fn after_a_broker_restart_bonks_wait_for_the_desks(kind: BrokerKind) {
    let (broker, gateway) =
        restarted_after_desk_was_online(kind, "dora", &[("BONKER_PUBLISH_TIMEOUT_MS", "1000")])
            .await;
    assert_eq!(desks_awaited(&gateway).await, Some(1), "{kind}");
    let (status, reply) = gateway
        .post(
            "/bonk",
            &json!({"namespace": "payments", "message": "refused"}),
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{kind}: {reply}");
    let error = reply["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("desks that were online have subscribed again") && error.contains("retry"),
        "{kind}: {reply}"
    );
    let mut dora = desk_subscribed_then_online(&broker, "dora").await;
    gateway
        .eventually("the gateway no longer waits for dora", || async {
            (desks_awaited(&gateway).await == Some(0)).then_some(())
        })
        .await;
    let (status, reply) = gateway
        .post(
            "/bonk",
            &json!({"namespace": "payments", "message": "after the restart"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{kind}: {reply}");
    // The first bonk dora gets is the retry: the refused request was not published later.
    let message = dora.next().await;
    assert_eq!(message.topic, "bonker/bonk/payments", "{kind}");
    assert_eq!(message.json()["summary"], "after the restart", "{kind}");
}

/// A broker that kept retained messages but lost the desks' sessions (EMQX's default, say)
/// replays each desk's retained `online` to the reconnecting gateway while the desk itself is
/// still away. Neither that replay, nor garbage, nor `offline` ends the hold: only a live `online`
/// from the desk, sent after it has subscribed again.
async fn only_a_live_online_ends_the_hold(kind: BrokerKind) {
    let mut broker = TestBroker::start(kind);
    // A slow first reconnect, so the retained statuses are in place before it.
    let gateway = Gateway::start(
        &broker.url(),
        &[],
        &[
            ("BONKER_PUBLISH_TIMEOUT_MS", "1000"),
            ("BONKER_MQTT__RECONNECT_MIN_MS", "2000"),
            ("BONKER_MQTT__RECONNECT_MAX_MS", "2000"),
        ],
    )
    .await;
    let before = desk_subscribed_then_online(&broker, "erin").await;
    gateway
        .eventually("erin online in the fleet view", || async {
            gateway
                .metrics()
                .await
                .contains("bonker_gateway_desks_online 1")
                .then_some(())
        })
        .await;
    drop(before);
    broker.restart();
    let replayer = Probe::connect(&broker.url(), &[]).await;
    replayer
        .publish("bonker/desk/erin/status", "online", true)
        .await;
    replayer
        .publish("bonker/desk/zz-sentinel/status", "online", true)
        .await;
    assert!(
        gateway
            .metrics()
            .await
            .contains("bonker_gateway_mqtt_connections_total 1"),
        "{kind}: the gateway reconnected before the retained statuses were in place"
    );
    gateway
        .eventually("the replayed statuses seen after the reconnect", || async {
            let metrics = gateway.metrics().await;
            (metrics.contains("bonker_gateway_mqtt_connections_total 2")
                && metrics.contains("bonker_gateway_desks_known 2"))
            .then_some(())
        })
        .await;
    // Live, after every replay: garbage and `offline`.
    replayer
        .publish("bonker/desk/erin/status", "garbage", false)
        .await;
    replayer
        .publish("bonker/desk/erin/status", "offline", false)
        .await;
    gateway
        .eventually("the live garbage and offline seen", || async {
            let metrics = gateway.metrics().await;
            (metrics.contains(
                "bonker_gateway_desk_messages_ignored_total{reason=\"invalid_status\"} 1",
            ) && metrics.contains("bonker_gateway_desks_online 1"))
            .then_some(())
        })
        .await;
    assert_eq!(
        desks_awaited(&gateway).await,
        Some(1),
        "{kind}: still waiting for erin"
    );
    let (status, reply) = gateway
        .post("/bonk", &json!({"namespace": "payments"}))
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{kind}: {reply}");

    let mut erin = desk_subscribed_then_online(&broker, "erin").await;
    gateway
        .eventually("the hold ends with erin's live online", || async {
            (desks_awaited(&gateway).await == Some(0)).then_some(())
        })
        .await;
    let (status, reply) = gateway
        .post(
            "/bonk",
            &json!({"namespace": "payments", "message": "back"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{kind}: {reply}");
    assert_eq!(erin.next().await.json()["summary"], "back", "{kind}");
}

/// One desk's credentials publish what they may on the desk's own topics — a thousand acks and a
/// thousand health reports of the largest size accepted, and three hundred acks of 250 KB — and
/// the gateway stays small and ready, refuses the oversized ones with a warning naming the desk,
/// and keeps serving webhooks.
async fn one_desks_credentials_cannot_grow_the_gateway(kind: BrokerKind) {
    let broker = TestBroker::start(kind);
    let gateway = Gateway::start(&broker.url(), &[], &[]).await;
    let pid = gateway.process.pid();
    let baseline = bonker_tests::measure::rss_kib(pid).expect("RSS");
    // Bonks for the desk to ack: a thousand, seen by the gateway on the broker.
    let bonker = Probe::connect(&broker.url(), &[]).await;
    let mut ids = Vec::new();
    for n in 0..1000 {
        let id = BonkId::stable(&["flood", &n.to_string()]);
        bonker
            .publish(
                "bonker/bonk/flood",
                json!({"id": id.to_string(), "severity": "info"}).to_string(),
                false,
            )
            .await;
        ids.push(id);
    }
    let mallory = Probe::connect(&broker.url(), &[]).await;
    let max_ack = |id: &BonkId| {
        let mut ack = Ack {
            version: SCHEMA_VERSION,
            bonk_id: id.clone(),
            desk: DeskId::new("mallory").expect("desk"),
            outcome: Outcome::Bonked,
            received_at: Utc::now(),
            finished_at: Utc::now(),
            severity: None,
            namespace: Some("flood".into()),
            pod: None,
            count: Some(1),
            detail: Some(String::new()),
        };
        let room = bonker_protocol::desk::MAX_ACK_BYTES - ack.to_json().len();
        ack.detail = Some("x".repeat(room));
        let payload = ack.to_json();
        assert_eq!(payload.len(), bonker_protocol::desk::MAX_ACK_BYTES);
        payload
    };
    let max_health = {
        let mut health = Health {
            version: SCHEMA_VERSION,
            desk: DeskId::new("mallory").expect("desk"),
            agent_version: "0.1.0".into(),
            uptime_s: 1,
            started_at: None,
            bonks_total: 1,
            last_bonk_at: None,
            last_bonk_namespace: None,
            last_bonk_pod: None,
            servo: ServoHealth {
                driver: "simulated".into(),
                state: "rest".into(),
                error: Some(String::new()),
            },
            namespaces: vec!["flood".into()],
            soc_temp_c: None,
            bonk_delay_ms: None,
            sent_at: Utc::now(),
        };
        let room = bonker_protocol::desk::MAX_HEALTH_BYTES - health.to_json().len();
        health.servo.error = Some("y".repeat(room));
        let payload = health.to_json();
        assert_eq!(payload.len(), bonker_protocol::desk::MAX_HEALTH_BYTES);
        payload
    };
    let huge = format!("{{\"detail\":\"{}\"}}", "z".repeat(250_000));
    for id in &ids {
        mallory
            .publish("bonker/desk/mallory/ack", max_ack(id), false)
            .await;
        mallory
            .publish("bonker/desk/mallory/health", max_health.clone(), true)
            .await;
    }
    for _ in 0..300 {
        mallory
            .publish("bonker/desk/mallory/ack", huge.clone(), false)
            .await;
    }
    // Acks of made-up bonks are counted, never kept.
    for n in 0..1000 {
        let made_up = BonkId::stable(&["made-up", &n.to_string()]);
        mallory
            .publish("bonker/desk/mallory/ack", max_ack(&made_up), false)
            .await;
    }
    // A known bonk acked twice at the largest size, then the sentinel: a last small ack of a
    // known bonk, after everything else.
    let last = BonkId::stable(&["flood", "last"]);
    bonker
        .publish(
            "bonker/bonk/flood",
            json!({"id": last.to_string()}).to_string(),
            false,
        )
        .await;
    for _ in 0..2 {
        mallory
            .publish("bonker/desk/mallory/ack", max_ack(&last), false)
            .await;
    }
    let sentinel = BonkId::stable(&["flood", "sentinel"]);
    bonker
        .publish(
            "bonker/bonk/flood",
            json!({"id": sentinel.to_string()}).to_string(),
            false,
        )
        .await;
    mallory
        .publish(
            "bonker/desk/mallory/ack",
            ack(sentinel.as_str(), "mallory", Outcome::Bonked),
            false,
        )
        .await;
    gateway
        .eventually("the sentinel ack seen", || async {
            let (_, view) = gateway.get(&format!("/api/bonks/{sentinel}")).await;
            (view["acks"].as_array().map(Vec::len) == Some(1)).then_some(())
        })
        .await;
    let metrics = gateway.metrics().await;
    assert!(
        !metrics.contains("bonker_gateway_desk_messages_ignored_total{reason=\"too_large\"} 0"),
        "{kind}: the oversized acks were refused as too large:\n{metrics}"
    );
    let after = bonker_tests::measure::rss_kib(pid).expect("RSS");
    eprintln!("{kind}: gateway RSS {baseline} KiB before, {after} KiB after the flood");
    assert!(
        after < 32 * 1024,
        "{kind}: the gateway grew from {baseline} KiB to {after} KiB"
    );
    assert_eq!(gateway.get("/readyz").await.0, StatusCode::OK, "{kind}");
    let (status, reply) = gateway
        .post("/bonk", &json!({"namespace": "payments"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{kind}: {reply}");
    // One ack kept per desk per bonk, its detail cut.
    let (_, view) = gateway.get(&format!("/api/bonks/{last}")).await;
    let acks = view["acks"].as_array().expect("acks");
    assert_eq!(acks.len(), 1, "{kind}: {view}");
    assert_eq!(
        acks[0]["detail"].as_str().map(str::len),
        Some(256),
        "{kind}: {view}"
    );
    let output = gateway.process.output();
    assert!(
        output.contains("too_large") && output.contains("bonker/desk/mallory/ack"),
        "{kind}: the refusal names the desk:\n{output}"
    );
}

/// A client's `\n` cannot forge a log line: every control character in a logged value is escaped.
async fn request_fields_cannot_forge_log_lines(kind: BrokerKind) {
    let broker = TestBroker::start(kind);
    let mut gateway = Gateway::start(&broker.url(), &[], &[]).await;
    let body = json!({"receiver": "r\nERROR forged line\u{1b}[2J", "status": "firing",
                      "alerts": [alert("firing", "fp-forge", json!({"alertname": "A\rB",
                                                                     "namespace": "payments"}),
                                       json!({}))]});
    let (status, reply) = gateway.post("/webhook", &body).await;
    assert_eq!(status, StatusCode::OK, "{kind}: {reply}");
    // The reply can reach us before the line that logs the published bonk is written.
    gateway
        .process
        .wait_for_line("bonk published", bonker_tests::DEADLINE);
    let output = gateway.process.output();
    let forged: Vec<&str> = output.lines().filter(|l| l.contains("forged")).collect();
    assert!(
        !forged.is_empty(),
        "{kind}: the receiver is logged:\n{output}"
    );
    for line in forged {
        assert!(
            line.contains("r\\nERROR forged line\\u{1b}[2J"),
            "{kind}: a forged line: {line:?}"
        );
    }
    assert!(output.contains("A\\rB"), "{kind}:\n{output}");
}

/// A desk that does not come back does not hold bonks forever: after `desk_return_timeout_ms`
/// (3 s here) bonks flow again, with a warning naming the missing desk.
async fn a_desk_that_stays_away_holds_bonks_only_until_the_timeout(kind: BrokerKind) {
    let (broker, gateway) = restarted_after_desk_was_online(
        kind,
        "gus",
        &[
            ("BONKER_PUBLISH_TIMEOUT_MS", "1000"),
            ("BONKER_DESK_RETURN_TIMEOUT_MS", "3000"),
        ],
    )
    .await;
    let held_since = Instant::now();
    assert_eq!(desks_awaited(&gateway).await, Some(1), "{kind}");
    let mut watcher = Probe::connect(&broker.url(), &["bonker/bonk/payments"]).await;
    let (status, reply) = gateway
        .eventually("a bonk accepted once the hold timed out", || async {
            let (status, reply) = gateway
                .post("/bonk", &json!({"namespace": "payments"}))
                .await;
            (status == StatusCode::OK).then_some((status, reply))
        })
        .await;
    assert_eq!(status, StatusCode::OK, "{kind}: {reply}");
    // Requests before the timeout got 503 (1 s each); the first 200 came after the hold.
    assert!(
        held_since.elapsed() >= Duration::from_millis(2000),
        "{kind}: the hold ended after {:?}",
        held_since.elapsed()
    );
    assert_eq!(desks_awaited(&gateway).await, Some(0), "{kind}");
    assert_eq!(watcher.next().await.topic, "bonker/bonk/payments", "{kind}");
    let output = gateway.process.output();
    assert!(
        output.contains("did not come back") && output.contains("gus"),
        "{kind}: no warning naming gus:\n{output}"
    );
}

bonker_tests::for_both_brokers!(
    multi_alert_notification_bonks_exactly_the_expected_topics,
    broker_down_gives_503_and_a_retry_after_it_is_back_bonks,
    fake_desk_acks_show_up_in_the_fleet_view,
    resubscribes_after_a_broker_restart,
    concurrent_webhooks_are_each_confirmed_and_delivered_once,
    after_a_broker_restart_bonks_wait_for_the_desks,
    only_a_live_online_ends_the_hold,
    request_fields_cannot_forge_log_lines,
    one_desks_credentials_cannot_grow_the_gateway,
    a_desk_that_stays_away_holds_bonks_only_until_the_timeout,
);

/// `--embedded-broker`: one process is a broker and a gateway; MQTT clients use the broker too.
#[tokio::test]
async fn embedded_broker_serves_the_gateway_and_desks() {
    let mqtt_port = free_port();
    let gateway = Gateway::spawn(
        &[
            "--embedded-broker".to_owned(),
            "--embedded-broker-listen".to_owned(),
            format!("127.0.0.1:{mqtt_port}"),
        ],
        &[],
    );
    gateway
        .eventually("/readyz answers 200", || async {
            (gateway.get("/readyz").await.0 == StatusCode::OK).then_some(())
        })
        .await;
    let mut desk =
        Probe::connect(&format!("mqtt://127.0.0.1:{mqtt_port}"), &["bonker/bonk/+"]).await;
    let response = gateway
        .http
        .post(gateway.url("/bonk?namespace=lab&severity=warning&message=hello"))
        .send()
        .await
        .expect("POST /bonk");
    assert_eq!(response.status(), StatusCode::OK);
    let reply: Value = response.json().await.expect("json");
    let message = desk.next().await;
    assert_eq!(message.topic, "bonker/bonk/lab");
    assert_eq!(message.json()["id"], reply["id"]);
    assert_eq!(message.json()["summary"], "hello");
}

/// A real Alertmanager with `http_config.authorization` (Bearer, credentials_file) delivers to a
/// gateway that requires the token: the docs' configuration works end to end.
#[tokio::test]
async fn a_real_alertmanager_with_a_bearer_token_bonks() {
    let broker = TestBroker::start(BrokerKind::Mosquitto);
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "s3cret-token\n").expect("write token");
    let gateway = Gateway::start(
        &broker.url(),
        &[
            "--webhook-token-file",
            token_file.to_str().expect("utf-8 path"),
        ],
        &[],
    )
    .await;
    let mut desk = Probe::connect(&broker.url(), &["bonker/bonk/+"]).await;
    let alertmanager = bonker_tests::TestAlertmanager::start(bonker_tests::AlertmanagerOptions {
        webhook_urls: vec![gateway.url("/webhook")],
        bearer_token: Some("s3cret-token".to_owned()),
        ..Default::default()
    });
    alertmanager.add_alert(
        &[
            ("alertname", "OOMKilled"),
            ("namespace", "payments"),
            ("pod", "api-5"),
        ],
        &[("summary", "from a real Alertmanager")],
    );
    let message = desk.next().await;
    assert_eq!(message.topic, "bonker/bonk/payments");
    let bonk = message.json();
    assert_eq!(
        (bonk["pod"].as_str(), bonk["severity"].as_str()),
        (Some("api-5"), Some("critical"))
    );
    assert_eq!(bonk["summary"], "from a real Alertmanager");
    // Without the token: 401.
    let (status, reply) = gateway.post("/webhook", &notification(vec![])).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{reply}");
}

/// SIGTERM: the request in flight still gets its answer, then the process exits 0.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_finishes_the_request_in_flight_then_exits_cleanly() {
    // No broker: the webhook waits its full publish timeout, so it is surely in flight.
    let mut gateway = Gateway::spawn(
        &[
            "--mqtt".to_owned(),
            format!("mqtt://127.0.0.1:{}", free_port()),
        ],
        &[("BONKER_PUBLISH_TIMEOUT_MS", "1500")],
    );
    gateway
        .eventually("the gateway listens", || async {
            (gateway.get("/healthz").await.0 == StatusCode::OK).then_some(())
        })
        .await;
    let body = notification(vec![alert(
        "firing",
        "fp-term",
        oom_labels("payments", "api-4"),
        json!({}),
    )]);
    let request = gateway
        .http
        .post(gateway.url("/webhook"))
        .json(&body)
        .send();
    let in_flight = tokio::spawn(request);
    let process = &mut gateway.process;
    tokio::task::block_in_place(|| {
        process.wait_for_line("webhook received", bonker_tests::DEADLINE)
    });
    gateway.process.signal(rustix::process::Signal::TERM);
    let response = in_flight
        .await
        .expect("task")
        .expect("the in-flight request is answered");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let process = &mut gateway.process;
    let status = tokio::task::block_in_place(|| process.wait_exit(bonker_tests::DEADLINE));
    assert!(status.success(), "{status}");
}

/// SIGTERM while connected: a clean MQTT DISCONNECT, exit 0.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_disconnects_from_the_broker_cleanly() {
    let broker = TestBroker::start(BrokerKind::Mosquitto);
    let mut gateway = Gateway::start(&broker.url(), &[], &[]).await;
    gateway.process.signal(rustix::process::Signal::TERM);
    let process = &mut gateway.process;
    let status = tokio::task::block_in_place(|| process.wait_exit(bonker_tests::DEADLINE));
    assert!(status.success(), "{status}");
    assert!(
        gateway
            .process
            .output()
            .contains("disconnected from the MQTT broker"),
        "{}",
        gateway.process.output()
    );
}

/// A bad configuration exits with code 2 and says what to fix, before binding any port.
#[test]
fn invalid_configuration_exits_2_before_binding() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad_file = dir.path().join("gateway.toml");
    std::fs::write(&bad_file, "publish_timeout = 5\n").expect("write");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["--default-namespace".into(), "Bad_NS".into()],
            "default_namespace",
        ),
        (vec!["--prefix".into(), "bonker/#".into()], "prefix"),
        (vec!["--mqtt".into(), "http://broker".into()], "mqtt"),
        (
            vec![
                "--config".into(),
                dir.path().join("missing.toml").display().to_string(),
            ],
            "missing.toml",
        ),
        (
            vec!["--config".into(), bad_file.display().to_string()],
            "publish_timeout",
        ),
        (
            vec!["--webhook-token-file".into(), "/nonexistent/token".into()],
            "/nonexistent/token",
        ),
    ];
    for (args, expected) in cases {
        let port = free_port();
        let output = Command::new(env!("CARGO_BIN_EXE_bonker-gateway"))
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .args(&args)
            .output()
            .expect("run bonker-gateway");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(expected),
            "{args:?}: expected {expected:?} in {stderr}"
        );
        // Nothing was bound.
        std::net::TcpListener::bind(("127.0.0.1", port)).expect("port still free");
    }
}
