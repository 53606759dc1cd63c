//! Every status code of the HTTP API, through the real router in-process (`app(state).oneshot`).
//!
//! The MQTT side is real too: an embedded bonker broker on a loopback port for the cases that
//! publish, and a port nobody listens on for the cases where the broker is down.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use bonker_broker::{BrokerSettings, EmbeddedBroker};
use bonker_gateway::config::AuthSettings;
use bonker_gateway::{AppState, GatewaySettings, app};
use bonker_tests::Probe;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// One broker for this test binary: rumqttd cannot be stopped, and needs not be.
fn broker_url() -> String {
    static BROKER: OnceLock<EmbeddedBroker> = OnceLock::new();
    BROKER
        .get_or_init(|| {
            EmbeddedBroker::start(BrokerSettings::loopback(0)).expect("embedded broker starts")
        })
        .url()
}

/// A gateway state connected to the test broker.
async fn connected(config: GatewaySettings) -> AppState {
    let state = start(GatewaySettings {
        mqtt: bonker_client::MqttSettings {
            url: broker_url(),
            ..config.mqtt.clone()
        },
        ..config
    });
    tokio::time::timeout(bonker_tests::DEADLINE, state.connected())
        .await
        .expect("gateway connects to the test broker");
    state
}

/// A gateway state whose broker is down (nothing listens on its port).
fn disconnected(config: GatewaySettings) -> AppState {
    start(GatewaySettings {
        mqtt: bonker_client::MqttSettings {
            url: format!("mqtt://127.0.0.1:{}", bonker_tests::free_port()),
            ..config.mqtt.clone()
        },
        ..config
    })
}

fn start(config: GatewaySettings) -> AppState {
    let settings = config.validate().expect("valid test config");
    // The MQTT task ends with the test's runtime.
    let (state, _task) =
        AppState::start(settings, CancellationToken::new()).expect("gateway state starts");
    state
}

fn json_post(path: &str, body: impl Into<Body>) -> Request<Body> {
    Request::post(path)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.into())
        .expect("request")
}

async fn send(state: &AppState, request: Request<Body>) -> (StatusCode, Value) {
    let response = app(state.clone())
        .oneshot(request)
        .await
        .expect("the router never fails");
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 16 * 1024 * 1024)
        .await
        .expect("body");
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    (status, body)
}

async fn get(state: &AppState, path: &str) -> (StatusCode, Value) {
    send(
        state,
        Request::get(path).body(Body::empty()).expect("request"),
    )
    .await
}

fn alert(status: &str, fingerprint: &str, labels: Value) -> Value {
    json!({
        "status": status,
        "labels": labels,
        "annotations": {"summary": format!("{fingerprint} summary")},
        "startsAt": "2026-11-21T10:00:00.123Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus:9090/graph",
        "fingerprint": fingerprint,
    })
}

fn notification(alerts: Vec<Value>) -> Value {
    json!({
        "version": "4",
        "groupKey": "{}:{alertname=\"OOMKilled\"}",
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "bonker",
        "groupLabels": {"alertname": "OOMKilled"},
        "commonLabels": {"alertname": "OOMKilled"},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": alerts,
    })
}

/// A unique namespace per test, so tests sharing the broker never see each other's bonks.
fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn error_of(body: &Value) -> &str {
    body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error message in {body}"))
}

#[tokio::test]
async fn webhook_answers_200_once_the_broker_has_every_bonk() {
    let state = connected(GatewaySettings::default()).await;
    let (payments, checkout) = (unique("payments"), unique("checkout"));
    let mut desk = Probe::connect(
        &broker_url(),
        &[
            &format!("bonker/bonk/{payments}"),
            &format!("bonker/bonk/{checkout}"),
        ],
    )
    .await;
    let body = notification(vec![
        alert(
            "firing",
            "fp-1",
            json!({"alertname": "OOMKilled", "namespace": payments, "pod": "api-0"}),
        ),
        alert(
            "firing",
            "fp-2",
            json!({"alertname": "OOMKilled", "namespace": checkout, "pod": "cart-0"}),
        ),
        alert(
            "resolved",
            "fp-3",
            json!({"alertname": "OOMKilled", "namespace": payments}),
        ),
    ]);
    let (status, reply) = send(&state, json_post("/webhook", body.to_string())).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["status"], "ok");
    assert_eq!(
        (
            reply["alerts"].as_u64(),
            reply["published"].as_u64(),
            reply["duplicates"].as_u64(),
            reply["resolved"].as_u64()
        ),
        (Some(3), Some(2), Some(0), Some(1))
    );
    // 200 came after the PUBACKs: the subscriber gets both.
    let topics: Vec<String> = desk.take(2).await.into_iter().map(|m| m.topic).collect();
    assert_eq!(
        topics,
        [
            format!("bonker/bonk/{payments}"),
            format!("bonker/bonk/{checkout}")
        ]
    );

    // The same notification again (repeat_interval, an HA pair): nothing new.
    let (status, reply) = send(&state, json_post("/webhook", body.to_string())).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(
        (reply["published"].as_u64(), reply["duplicates"].as_u64()),
        (Some(0), Some(2))
    );
    assert!(
        reply["bonks"]
            .as_array()
            .expect("bonks")
            .iter()
            .all(|b| b["duplicate"] == true)
    );

    let (_, metrics) = get(&state, "/metrics").await;
    let metrics = metrics.as_str().expect("text").to_owned();
    assert!(
        metrics.contains("bonker_gateway_webhooks_total{outcome=\"ok\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("bonker_gateway_dedupe_hits_total 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("bonker_gateway_alerts_total{status=\"resolved\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "bonker_gateway_bonks_published_total{{namespace=\"{payments}\",severity=\"critical\",source=\"alertmanager\"}} 1"
        )),
        "{metrics}"
    );
}

#[tokio::test]
async fn thousands_of_alerts_in_one_notification_are_paced_not_refused() {
    const ALERTS: usize = 3000;
    let state = connected(GatewaySettings::default()).await;
    let namespace = unique("storm");
    let mut desk = Probe::connect(&broker_url(), &[&format!("bonker/bonk/{namespace}")]).await;
    let alerts = (0..ALERTS)
        .map(|n| {
            alert(
                "firing",
                &format!("storm-{n}"),
                json!({"namespace": namespace}),
            )
        })
        .collect();
    let body = notification(alerts).to_string();
    assert!(body.len() < bonker_gateway::config::DEFAULT_MAX_BODY_BYTES);
    let (status, reply) = send(&state, json_post("/webhook", body)).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["published"], ALERTS);
    let ids: std::collections::HashSet<String> = desk
        .take(ALERTS)
        .await
        .iter()
        .map(|m| m.json()["id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(ids.len(), ALERTS);
}

#[tokio::test]
async fn resolved_only_and_empty_notifications_are_200_and_bonk_nothing() {
    let state = connected(GatewaySettings::default()).await;
    for alerts in [
        vec![alert("resolved", "fp-r", json!({"namespace": "x"}))],
        vec![],
    ] {
        let (status, reply) = send(
            &state,
            json_post("/webhook", notification(alerts).to_string()),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{reply}");
        assert_eq!(reply["published"], 0);
    }
}

#[tokio::test]
async fn an_invalid_namespace_label_bonks_the_default_namespace_and_is_counted() {
    let default = unique("fallback");
    let state = connected(GatewaySettings {
        default_namespace: default.clone(),
        ..Default::default()
    })
    .await;
    let mut desk = Probe::connect(&broker_url(), &[&format!("bonker/bonk/{default}")]).await;
    let body = notification(vec![alert(
        "firing",
        "fp-bad",
        json!({"alertname": "OOMKilled", "namespace": "a/#"}),
    )]);
    let (status, reply) = send(&state, json_post("/webhook", body.to_string())).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let message = desk.next().await;
    assert_eq!(message.json()["namespace"], "a/#");
    let (_, metrics) = get(&state, "/metrics").await;
    assert!(
        metrics
            .as_str()
            .expect("text")
            .contains("bonker_gateway_invalid_namespace_labels_total 1")
    );
}

#[tokio::test]
async fn a_wrong_content_type_is_415() {
    let state = connected(GatewaySettings::default()).await;
    let body = notification(vec![]).to_string();
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let mut request = Request::post("/webhook");
        if let Some(content_type) = content_type {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        let (status, reply) = send(
            &state,
            request.body(Body::from(body.clone())).expect("request"),
        )
        .await;
        assert_eq!(
            status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type:?}: {reply}"
        );
        assert!(error_of(&reply).contains("application/json"), "{reply}");
    }
    let (_, metrics) = get(&state, "/metrics").await;
    assert!(
        metrics
            .as_str()
            .expect("text")
            .contains("bonker_gateway_webhooks_total{outcome=\"unsupported_media_type\"} 3")
    );
}

#[tokio::test]
async fn malformed_bodies_are_400_and_say_what_is_wrong() {
    let state = connected(GatewaySettings::default()).await;
    let good_alert = alert("firing", "fp", json!({"namespace": "x"}));
    let mut bad_status = good_alert.clone();
    bad_status["status"] = json!("burning");
    let mut bad_time = good_alert.clone();
    bad_time["startsAt"] = json!("yesterday");
    let mut bad_label = good_alert.clone();
    bad_label["labels"]["severity"] = json!(5);
    let mut no_start = good_alert.clone();
    no_start.as_object_mut().expect("object").remove("startsAt");
    let cases: Vec<(String, &str)> = vec![
        ("{\"alerts\": [".to_owned(), "EOF"),
        ("not json".to_owned(), "expected"),
        ("{\"receiver\": \"x\"}".to_owned(), "alerts"),
        ("[]".to_owned(), "expected struct"),
        ("null".to_owned(), "expected struct"),
        ("{\"alerts\": null}".to_owned(), "alerts"),
        ("{\"alerts\": [null]}".to_owned(), "alerts[0]"),
        (
            notification(vec![bad_status]).to_string(),
            "alerts[0].status",
        ),
        (
            notification(vec![bad_time]).to_string(),
            "alerts[0].startsAt",
        ),
        (
            notification(vec![bad_label]).to_string(),
            "alerts[0].labels.severity",
        ),
        (notification(vec![no_start]).to_string(), "startsAt"),
        (
            format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)),
            "invalid type",
        ),
        (
            format!(
                "{{\"alerts\": [{{\"labels\": {{\"a\": {}{}}}}}]}}",
                "[".repeat(10_000),
                "]".repeat(10_000)
            ),
            "alerts[0].labels.a",
        ),
        ("{\"alerts\": []} trailing".to_owned(), "trailing"),
    ];
    for (body, expected) in cases {
        let (status, reply) = send(&state, json_post("/webhook", body.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body:.80}: {reply}");
        let message = error_of(&reply);
        assert!(
            message.contains(expected),
            "{body:.80}: expected {expected:?} in {message:?}"
        );
    }
    // Not UTF-8 at all.
    let (status, _) = send(&state, json_post("/webhook", vec![0xff, 0xfe, 0x00])).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_body_over_the_limit_is_413() {
    let state = connected(GatewaySettings {
        max_body_bytes: 2048,
        ..Default::default()
    })
    .await;
    let alerts = (0..40)
        .map(|n| alert("firing", &format!("fp-{n}"), json!({"namespace": "x"})))
        .collect();
    let body = notification(alerts).to_string();
    assert!(body.len() > 2048);
    let (status, reply) = send(&state, json_post("/webhook", body)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{reply}");
    assert!(error_of(&reply).contains("length limit"), "{reply}");
    // The manual endpoint has the same limit.
    let (status, _) = send(
        &state,
        json_post("/bonk", format!("{{\"message\":\"{}\"}}", "x".repeat(4096))),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

#[tokio::test]
async fn credentials_are_required_when_configured() {
    let state = connected(GatewaySettings {
        auth: AuthSettings {
            bearer_token: Some("t0ken".into()),
            basic_username: Some("alertmanager".into()),
            basic_password: Some("pw".into()),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let body = notification(vec![]).to_string();
    for authorization in [
        None,
        Some("Bearer wrong".to_owned()),
        Some(basic("alertmanager", "wrong")),
        Some("t0ken".to_owned()),
    ] {
        let mut request =
            Request::post("/webhook").header(header::CONTENT_TYPE, "application/json");
        if let Some(value) = &authorization {
            request = request.header(header::AUTHORIZATION, value);
        }
        let response = app(state.clone())
            .oneshot(request.body(Body::from(body.clone())).expect("request"))
            .await
            .expect("response");
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "{authorization:?}"
        );
        let challenges: Vec<&str> = response
            .headers()
            .get_all(header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        assert_eq!(challenges.len(), 2, "{challenges:?}");
        assert!(challenges[0].starts_with("Bearer") && challenges[1].starts_with("Basic"));
    }
    for authorization in ["Bearer t0ken".to_owned(), basic("alertmanager", "pw")] {
        let request = Request::post("/webhook")
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::AUTHORIZATION, &authorization)
            .body(Body::from(body.clone()))
            .expect("request");
        let (status, reply) = send(&state, request).await;
        assert_eq!(status, StatusCode::OK, "{authorization}: {reply}");
    }
    // Credentials are checked before the body: an unauthenticated bad body is 401, not 400.
    let (status, _) = send(&state, json_post("/webhook", "garbage")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = send(
        &state,
        Request::post("/bonk").body(Body::empty()).expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = get(&state, "/api/desks").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Probes and metrics stay open.
    for path in ["/healthz", "/readyz", "/metrics"] {
        let (status, _) = get(&state, path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
    }
    let (_, metrics) = get(&state, "/metrics").await;
    let metrics = metrics.as_str().expect("text").to_owned();
    assert!(
        metrics.contains("bonker_gateway_webhooks_total{outcome=\"unauthorized\"} 5"),
        "{metrics}"
    );
    assert!(
        metrics.contains("bonker_gateway_manual_bonks_total{outcome=\"unauthorized\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn unknown_routes_and_bonks_are_404_and_wrong_methods_405() {
    let state = connected(GatewaySettings::default()).await;
    let (status, reply) = get(&state, "/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(error_of(&reply).contains("/nope"));
    let (status, reply) = get(&state, "/api/bonks/00000000-0000-0000-0000-000000000000").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(error_of(&reply).contains("no bonk"), "{reply}");
    let (status, _) = get(&state, "/api/bonks/%20").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, reply) = get(&state, "/webhook").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{reply}");
    assert!(error_of(&reply).contains("GET"));
}

#[tokio::test]
async fn a_broker_that_is_down_gives_503_within_the_publish_timeout() {
    let state = disconnected(GatewaySettings {
        publish_timeout_ms: 300,
        ..Default::default()
    });
    let (status, reply) = get(&state, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(error_of(&reply).contains("not connected"));
    let (status, _) = get(&state, "/healthz").await;
    assert_eq!(status, StatusCode::OK);

    let body = notification(vec![alert(
        "firing",
        "fp-down",
        json!({"namespace": "payments"}),
    )]);
    let started = Instant::now();
    let (status, reply) = send(&state, json_post("/webhook", body.to_string())).await;
    let elapsed = started.elapsed();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{reply}");
    assert!(
        error_of(&reply).contains("not accepted by the MQTT broker"),
        "{reply}"
    );
    assert!(
        elapsed >= Duration::from_millis(300) && elapsed < Duration::from_millis(1500),
        "{elapsed:?}"
    );

    let (status, _) = send(
        &state,
        Request::post("/bonk").body(Body::empty()).expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let (_, metrics) = get(&state, "/metrics").await;
    let metrics = metrics.as_str().expect("text").to_owned();
    assert!(
        metrics.contains("bonker_gateway_webhooks_total{outcome=\"unavailable\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("bonker_gateway_publish_failures_total{reason=\"timeout\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("bonker_gateway_mqtt_connected 0"),
        "{metrics}"
    );
}

#[tokio::test]
async fn readyz_is_200_while_connected() {
    let state = connected(GatewaySettings::default()).await;
    let (status, reply) = get(&state, "/readyz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(reply["mqtt"], "connected");
    let (_, metrics) = get(&state, "/metrics").await;
    assert!(
        metrics
            .as_str()
            .expect("text")
            .contains("bonker_gateway_mqtt_connected 1")
    );
}

#[tokio::test]
async fn manual_bonks_from_query_body_or_nothing() {
    let default = unique("manual");
    let state = connected(GatewaySettings {
        default_namespace: default.clone(),
        cluster: Some("lab".into()),
        ..Default::default()
    })
    .await;
    let target = unique("target");
    let mut desk = Probe::connect(
        &broker_url(),
        &[
            &format!("bonker/bonk/{default}"),
            &format!("bonker/bonk/{target}"),
            &format!("bonker/desk/{target}/bonk"),
        ],
    )
    .await;

    // Empty body: the default namespace, a full bonk.
    let (status, reply) = send(
        &state,
        Request::post("/bonk").body(Body::empty()).expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["topic"], format!("bonker/bonk/{default}"));
    let message = desk.next().await;
    let bonk = message.json();
    assert_eq!(
        (
            bonk["source"].as_str(),
            bonk["severity"].as_str(),
            bonk["cluster"].as_str()
        ),
        (Some("http"), Some("critical"), Some("lab"))
    );
    assert_eq!(bonk["id"], reply["id"]);

    // Query string.
    let (status, reply) = send(
        &state,
        Request::post(format!(
            "/bonk?namespace={target}&severity=tap&message=deploy%20done"
        ))
        .body(Body::empty())
        .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let bonk = desk.next().await;
    assert_eq!(bonk.topic, format!("bonker/bonk/{target}"));
    assert_eq!(
        (
            bonk.json()["severity"].as_str(),
            bonk.json()["summary"].as_str()
        ),
        (Some("warning"), Some("deploy done"))
    );

    // JSON body to one desk.
    let (status, reply) = send(
        &state,
        json_post(
            "/bonk",
            json!({"desk": target, "severity": "info"}).to_string(),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let bonk = desk.next().await;
    assert_eq!(bonk.topic, format!("bonker/desk/{target}/bonk"));
    assert_eq!(bonk.json()["severity"], "info");
}

#[tokio::test]
async fn manual_bonks_with_bad_input_are_4xx() {
    let state = connected(GatewaySettings::default()).await;
    let cases: Vec<(Request<Body>, StatusCode, &str)> = vec![
        (
            json_post("/bonk", "{\"namespace\":\"a\",\"desk\":\"b\"}"),
            StatusCode::BAD_REQUEST,
            "not both",
        ),
        (
            json_post("/bonk", "{\"namespace\":\"a/#\"}"),
            StatusCode::BAD_REQUEST,
            "namespace",
        ),
        (
            json_post("/bonk", "{\"desk\":\"+\"}"),
            StatusCode::BAD_REQUEST,
            "desk",
        ),
        (
            json_post("/bonk", "{\"severity\":\"loud\"}"),
            StatusCode::BAD_REQUEST,
            "severity",
        ),
        (
            json_post("/bonk", "{\"namespce\":\"a\"}"),
            StatusCode::BAD_REQUEST,
            "namespce",
        ),
        (
            json_post("/bonk", "{\"message\": 5}"),
            StatusCode::BAD_REQUEST,
            "message",
        ),
        (
            json_post("/bonk", "{oops"),
            StatusCode::BAD_REQUEST,
            "key must be a string",
        ),
        (
            json_post("/bonk", format!("{{\"message\":\"{}\"}}", "x".repeat(2000))),
            StatusCode::BAD_REQUEST,
            "longer than",
        ),
        (
            Request::post("/bonk?nmespace=x")
                .body(Body::empty())
                .expect("request"),
            StatusCode::BAD_REQUEST,
            "nmespace",
        ),
        (
            Request::post("/bonk")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from("namespace=x"))
                .expect("request"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "application/json",
        ),
    ];
    for (request, expected_status, expected_text) in cases {
        let uri = request.uri().clone();
        let (status, reply) = send(&state, request).await;
        assert_eq!(status, expected_status, "{uri}: {reply}");
        assert!(
            error_of(&reply).contains(expected_text),
            "{uri}: expected {expected_text:?} in {reply}"
        );
    }
}

#[tokio::test]
async fn fleet_endpoints_answer_json() {
    let state = connected(GatewaySettings::default()).await;
    let (status, desks) = get(&state, "/api/desks").await;
    assert_eq!(status, StatusCode::OK);
    assert!(desks.is_array(), "{desks}");
    let (status, reply) = send(
        &state,
        Request::post(format!("/bonk?namespace={}", unique("api")))
            .body(Body::empty())
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let id = reply["id"].as_str().expect("id");
    let (status, view) = get(&state, &format!("/api/bonks/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["accepted_by_broker"], true);
    assert_eq!(view["source"], "http");
    assert_eq!(view["acks"], json!([]));
}

#[tokio::test]
async fn metrics_are_openmetrics_text() {
    let state = connected(GatewaySettings::default()).await;
    let response = app(state.clone())
        .oneshot(
            Request::get("/metrics")
                .body(Body::empty())
                .expect("request"),
        )
        .await
        .expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
        Some(bonker_gateway::http::OPENMETRICS_CONTENT_TYPE)
    );
    let text = String::from_utf8(
        axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body")
            .to_vec(),
    )
    .expect("utf-8");
    assert!(text.ends_with("# EOF\n"), "{text}");
}
