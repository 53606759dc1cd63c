//! The fleet page's event stream, `GET /api/events`, as a browser's EventSource sees it: a real
//! gateway process, a real broker (both kinds) and real agents with simulated servos, read over
//! HTTP and split into events the way the WHATWG standard says.

use std::time::Duration;

use bonker_tests::{AgentProcess, BrokerKind, GatewayProcess, SseStream, TestBroker, webhook};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn notification(fingerprint: &str, namespace: &str, pod: &str, summary: &str) -> Value {
    webhook::notification(vec![webhook::oom_alert(
        fingerprint,
        namespace,
        pod,
        summary,
        "2026-11-21T10:00:00.123Z",
    )])
}

async fn open(gateway: &GatewayProcess, last_event_id: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .get(format!("{}/api/events", gateway.url()))
        .header("accept", "text/event-stream");
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id);
    }
    request.send().await.expect("GET /api/events")
}

/// A stream starts with a snapshot that tells the browser how soon to reconnect; then a desk
/// coming online, a webhook's bonk and the desk's ack arrive as they happen, each with a growing
/// id; a browser reconnecting with `Last-Event-ID` gets a fresh, complete snapshot.
async fn the_stream_is_a_snapshot_then_every_change(kind: BrokerKind) {
    let broker = TestBroker::start(kind);
    let gateway = GatewayProcess::start(&broker.url(), &[]).await;
    let response = open(&gateway, None).await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut stream = SseStream::new(response);
    let header = |name: &str| {
        stream
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    assert_eq!(header("content-type").as_deref(), Some("text/event-stream"));
    assert_eq!(header("cache-control").as_deref(), Some("no-cache"));
    assert_eq!(header("x-accel-buffering").as_deref(), Some("no"));

    let snapshot = stream.next().await;
    assert_eq!(snapshot.event, "snapshot");
    assert_eq!(snapshot.retry, Some(2000), "{:?}", stream.lines);
    assert_eq!(snapshot.id.as_deref(), Some("0"));
    assert_eq!(snapshot.json(), json!({"desks": [], "bonks": []}));
    // The wire format, field by field: `retry:`, `event:`, `id:`, `data:`, then a blank line.
    for field in [
        "retry: 2000",
        "event: snapshot",
        "id: 0",
        "data: {\"desks\":[],",
    ] {
        assert!(
            stream.lines.iter().any(|line| line.starts_with(field)),
            "no {field:?} line in {:?}",
            stream.lines
        );
    }

    let _alice = AgentProcess::start(&broker.url(), "alice", &["payments"], &[]).await;
    // Status first, then the health report that names the namespaces.
    let desk = stream
        .next_matching(|e| {
            e.event == "desk"
                && e.json()["namespaces"] == json!(["payments"])
                && e.json()["online"] == true
        })
        .await;
    assert_eq!(desk.json()["desk"], "alice");
    let desk_id: u64 = desk
        .id
        .as_deref()
        .and_then(|id| id.parse().ok())
        .expect("numeric id");
    assert!(desk_id > 0);

    let (status, reply) = post_webhook(
        &gateway,
        &notification("fp-1", "payments", "api-0", "api-0 ran out"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let bonk_id = reply["bonks"][0]["id"]
        .as_str()
        .expect("bonk id")
        .to_owned();
    let bonk = stream.next_named("bonk").await;
    let feed = bonk.json();
    assert_eq!(feed["id"], bonk_id);
    assert_eq!(feed["source"], "alertmanager");
    assert_eq!(feed["pod"], "api-0");
    assert_eq!(feed["summary"], "api-0 ran out");
    assert_eq!(feed["target"], json!({"namespace": "payments"}));
    let bonk_event_id: u64 = bonk
        .id
        .as_deref()
        .and_then(|id| id.parse().ok())
        .expect("id");
    assert!(bonk_event_id > desk_id);
    let ack = stream.next_named("ack").await;
    let ack_json = ack.json();
    assert_eq!(
        (&ack_json["bonk"], &ack_json["desk"], &ack_json["outcome"]),
        (&json!(bonk_id), &json!("alice"), &json!("bonked"))
    );
    assert!(ack_json["latency_ms"].as_f64().is_some_and(|ms| ms >= 0.0));
    let last_id = ack.id.clone().expect("ack id");

    // A reconnect names the last event it saw; it gets the whole state again.
    drop(stream);
    let mut again = SseStream::new(open(&gateway, Some(&last_id)).await);
    let snapshot = again.next().await;
    assert_eq!(snapshot.event, "snapshot");
    let snapshot_id: u64 = snapshot
        .id
        .as_deref()
        .and_then(|id| id.parse().ok())
        .expect("id");
    assert!(snapshot_id >= last_id.parse().expect("numeric"));
    let state = snapshot.json();
    assert_eq!(state["desks"][0]["desk"], "alice");
    assert_eq!(state["bonks"][0]["id"], bonk_id);
    assert_eq!(state["bonks"][0]["desks"][0]["outcome"], "bonked");
}

async fn post_webhook(gateway: &GatewayProcess, body: &Value) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/webhook", gateway.url()))
        .json(body)
        .send()
        .await
        .expect("POST /webhook");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Past `max_event_streams` a stream is refused with 503, a reason and a Retry-After; a place
/// frees as soon as a page goes away.
async fn streams_past_the_cap_are_refused_until_one_closes(kind: BrokerKind) {
    let broker = TestBroker::start(kind);
    let gateway =
        GatewayProcess::start_with(&broker.url(), &[], &[("BONKER_MAX_EVENT_STREAMS", "2")]).await;
    let mut first = SseStream::new(open(&gateway, None).await);
    let mut second = SseStream::new(open(&gateway, None).await);
    assert_eq!(first.next().await.event, "snapshot");
    assert_eq!(second.next().await.event, "snapshot");
    let refused = open(&gateway, None).await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        refused
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("30")
    );
    let body: Value = refused.json().await.expect("a JSON reason");
    let reason = body["error"].as_str().expect("error");
    assert!(
        reason.contains("max_event_streams") && reason.contains('2'),
        "{reason}"
    );

    drop(first);
    let deadline = tokio::time::Instant::now() + bonker_tests::DEADLINE;
    loop {
        let response = open(&gateway, None).await;
        if response.status() == StatusCode::OK {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the closed stream's place was not freed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// With basic auth configured the page and its stream ask for it like the API does.
async fn the_page_and_its_stream_need_the_credentials(kind: BrokerKind) {
    let broker = TestBroker::start(kind);
    let gateway = GatewayProcess::start_with(
        &broker.url(),
        &[],
        &[
            ("BONKER_AUTH__BASIC_USERNAME", "ops"),
            ("BONKER_AUTH__BASIC_PASSWORD", "s3cret"),
        ],
    )
    .await;
    let http = reqwest::Client::new();
    for path in ["/", "/app.js", "/app.css", "/api/events"] {
        let response = http
            .get(format!("{}{path}", gateway.url()))
            .send()
            .await
            .expect("GET");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{path}");
        let challenge = response
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(challenge.starts_with("Basic "), "{path}: {challenge}");
    }
    let page = http
        .get(format!("{}/", gateway.url()))
        .basic_auth("ops", Some("s3cret"))
        .send()
        .await
        .expect("GET /");
    assert_eq!(page.status(), StatusCode::OK);
    let csp = page
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("default-src 'none'"),
        "{csp}"
    );
    let etag = page.headers().get("etag").cloned().expect("an ETag");
    let revalidated = http
        .get(format!("{}/", gateway.url()))
        .basic_auth("ops", Some("s3cret"))
        .header("if-none-match", etag)
        .send()
        .await
        .expect("GET /");
    assert_eq!(revalidated.status(), StatusCode::NOT_MODIFIED);
    let stream = http
        .get(format!("{}/api/events", gateway.url()))
        .basic_auth("ops", Some("s3cret"))
        .send()
        .await
        .expect("GET /api/events");
    assert_eq!(stream.status(), StatusCode::OK);
    assert_eq!(SseStream::new(stream).next().await.event, "snapshot");
}

/// A browser holding the gateway's credentials sends them with any site's form posts; a bonk a
/// browser sends for another site's page is refused, the page's own goes through.
async fn bonks_sent_for_another_sites_page_are_refused(kind: BrokerKind) {
    let broker = TestBroker::start(kind);
    let gateway = GatewayProcess::start(&broker.url(), &[]).await;
    let http = reqwest::Client::new();
    let bonk = |site: &'static str| {
        http.post(format!(
            "{}/bonk?namespace=payments&severity=info",
            gateway.url()
        ))
        .header("sec-fetch-site", site)
        .send()
    };
    for site in ["cross-site", "same-site"] {
        let response = bonk(site).await.expect("POST /bonk");
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{site}");
        let body: Value = response.json().await.expect("a JSON reason");
        assert!(
            body["error"]
                .as_str()
                .is_some_and(|e| e.contains("Sec-Fetch-Site")),
            "{body}"
        );
    }
    assert_eq!(
        bonk("same-origin").await.expect("POST").status(),
        StatusCode::OK
    );
    let metrics = http
        .get(format!("{}/metrics", gateway.url()))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("bonker_gateway_manual_bonks_total{outcome=\"forbidden\"} 2"),
        "{metrics}"
    );
}

bonker_tests::for_both_brokers!(
    bonks_sent_for_another_sites_page_are_refused,
    the_stream_is_a_snapshot_then_every_change,
    streams_past_the_cap_are_refused_until_one_closes,
    the_page_and_its_stream_need_the_credentials,
);
