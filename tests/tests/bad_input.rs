//! Bad input from the outside world, against real processes: whatever arrives over HTTP or MQTT,
//! the gateway and the agents answer in bounded time and memory, say what was wrong, count it, and
//! keep serving everybody else.
//!
//! HTTP: truncated bodies, deep nesting, a wrong type in every field, 100 MB bodies, 10,000 alerts
//! in one notification, unicode and control characters in labels, slow (slowloris) clients.
//! MQTT: garbage and oversized payloads on bonk topics, retained garbage on desk topics.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bonker_protocol::{Ack, Outcome};
use bonker_tests::guides::{code_block_after, setting};
use bonker_tests::measure::{peak_rss_kib, rss_kib};
use bonker_tests::{AgentProcess, BrokerKind, BrokerOptions, GatewayProcess, Probe, TestBroker};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// No rate limit at the desks: these tests count every bonk.
const UNLIMITED: &[(&str, &str)] = &[("BONKER_RATE_LIMIT__MAX_BONKS", "100000")];

/// A real Alertmanager 0.25 notification, as the gateway receives it.
const EXAMPLE: &str = include_str!("../../examples/alertmanager-oomkilled.json");

/// POSTs `body` to the gateway's webhook; returns the status and the JSON answer.
async fn post_webhook(gateway: &GatewayProcess, body: impl Into<reqwest::Body>) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/webhook", gateway.url()))
        .header("content-type", "application/json")
        .body(body)
        .timeout(bonker_tests::DEADLINE)
        .send()
        .await
        .expect("the gateway answers");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn error_text(answer: &Value) -> String {
    answer["error"].as_str().unwrap_or_default().to_owned()
}

/// The gateway still does its job: `/healthz` answers and a valid notification is accepted.
async fn assert_still_serving(gateway: &mut GatewayProcess) {
    assert!(
        gateway.process().try_status().is_none(),
        "the gateway exited; output:\n{}",
        gateway.process().output()
    );
    let health = reqwest::get(format!("{}/healthz", gateway.url()))
        .await
        .expect("healthz answers");
    assert_eq!(health.status(), 200);
    let (status, answer) = post_webhook(gateway, EXAMPLE.to_owned()).await;
    assert_eq!(
        status, 200,
        "a valid notification after bad input: {answer}"
    );
}

async fn metric(gateway: &GatewayProcess, series: &str) -> f64 {
    let text = reqwest::get(format!("{}/metrics", gateway.url()))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    text.lines()
        .find_map(|line| line.strip_prefix(series))
        .and_then(|rest| rest.trim().parse().ok())
        .unwrap_or_else(|| panic!("no series {series} in\n{text}"))
}

/// Truncated bodies, deep nesting and a wrong type in every field: each is a 400 that names the
/// problem, none is a 5xx, none bonks.
#[tokio::test(flavor = "multi_thread")]
async fn malformed_webhooks_get_400_with_the_reason() {
    let broker = TestBroker::start(BrokerKind::Bonker);
    let mut gateway = GatewayProcess::start(&broker.url(), &[]).await;
    let mut tried = 0;

    // Truncated: every 50th byte boundary (on a character boundary) of a real notification.
    for cut in (1..EXAMPLE.len()).step_by(50) {
        if !EXAMPLE.is_char_boundary(cut) {
            continue;
        }
        let (status, answer) = post_webhook(&gateway, EXAMPLE[..cut].to_owned()).await;
        tried += 1;
        assert_eq!(status, 400, "cut at {cut}: {answer}");
        assert!(!error_text(&answer).is_empty(), "cut at {cut}: {answer}");
    }

    // Deep nesting, in arrays and in objects, where the parser recurses.
    for (name, body) in [
        (
            "arrays",
            format!(
                "{{\"alerts\":{}{}}}",
                "[".repeat(100_000),
                "]".repeat(100_000)
            ),
        ),
        (
            "objects in labels",
            format!(
                "{{\"alerts\":[{{\"status\":\"firing\",\"startsAt\":\"2026-11-21T10:00:00Z\",\
                 \"labels\":{}1{}}}]}}",
                "{\"a\":".repeat(50_000),
                "}".repeat(50_000)
            ),
        ),
    ] {
        let started = Instant::now();
        let (status, answer) = post_webhook(&gateway, body).await;
        tried += 1;
        assert_eq!(status, 400, "deep {name}: {answer}");
        assert!(!error_text(&answer).is_empty(), "deep {name}: {answer}");
        assert!(started.elapsed() < Duration::from_secs(5), "deep {name}");
    }

    // A wrong type in every field of the notification and of an alert.
    let example: Value = serde_json::from_str(EXAMPLE).expect("the example is JSON");
    let wrong_values = [
        json!(null),
        json!(42),
        json!(-1),
        json!(1.5e308),
        json!(true),
        json!("text"),
        json!([]),
        json!(["a"]),
        json!({}),
        json!({"a": 1}),
    ];
    // Fields that may be null (they are optional), and one that takes any whole number.
    let nullable = ["version", "endsAt", "generatorURL", "fingerprint"];
    let kind = |v: &Value| std::mem::discriminant(v);
    let mut accepted = 0;
    let mut refused = 0;
    // (the field's path, its last key, the wrong value, the body)
    let mut cases: Vec<(String, String, Value, Value)> = Vec::new();
    for (key, original) in example.as_object().expect("object") {
        for wrong in &wrong_values {
            if kind(wrong) == kind(original) && !original.is_object() {
                continue;
            }
            let mut body = example.clone();
            body[key] = wrong.clone();
            cases.push((key.clone(), key.clone(), wrong.clone(), body));
        }
    }
    for (key, original) in example["alerts"][0].as_object().expect("object") {
        for wrong in &wrong_values {
            if kind(wrong) == kind(original) && !original.is_object() {
                continue;
            }
            let mut body = example.clone();
            body["alerts"][0][key] = wrong.clone();
            cases.push((format!("alerts[0].{key}"), key.clone(), wrong.clone(), body));
        }
    }
    for wrong in &wrong_values {
        if wrong.is_string() {
            continue;
        }
        let mut body = example.clone();
        body["alerts"][0]["labels"]["namespace"] = wrong.clone();
        cases.push((
            "alerts[0].labels.namespace".to_owned(),
            "namespace".to_owned(),
            wrong.clone(),
            body,
        ));
    }
    let maps = [
        "labels",
        "annotations",
        "groupLabels",
        "commonLabels",
        "commonAnnotations",
    ];
    for (field, last, value, body) in cases {
        let may_accept = (value.is_null() && nullable.contains(&last.as_str()))
            || (last == "truncatedAlerts" && value.as_u64().is_some())
            // `{}` is a valid (empty) map, `[]` a valid (empty) list of alerts.
            || (value == json!({}) && maps.contains(&last.as_str()))
            || (value == json!([]) && last == "alerts");
        let (status, answer) = post_webhook(&gateway, body.to_string()).await;
        tried += 1;
        if may_accept {
            assert_eq!(status, 200, "{field} = {value}: {answer}");
            accepted += 1;
        } else {
            assert_eq!(status, 400, "{field} = {value}: {answer}");
            let error = error_text(&answer);
            assert!(
                error.contains(&field) || error.contains(&last),
                "the error for {field} = {value} does not name the field: {error}"
            );
            refused += 1;
        }
    }
    eprintln!(
        "malformed webhooks: {tried} bodies tried; wrong types: {refused} refused with 400 naming \
         the field, {accepted} harmless ones accepted"
    );
    let bad_requests = metric(
        &gateway,
        "bonker_gateway_webhooks_total{outcome=\"bad_request\"}",
    )
    .await;
    assert_eq!(bad_requests as usize, tried - accepted);
    assert_still_serving(&mut gateway).await;
}

/// Sends a 100 MB body (with a Content-Length, or chunked) slowly enough to be streamed, and
/// returns the status line, how many bytes the gateway took before answering, and how long it took.
async fn stream_huge_body(gateway: &GatewayProcess, chunked: bool) -> (String, u64, Duration) {
    const TOTAL: u64 = 100 * 1024 * 1024;
    let stream = TcpStream::connect(gateway.addr()).await.expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    let framing = if chunked {
        "Transfer-Encoding: chunked".to_owned()
    } else {
        format!("Content-Length: {TOTAL}")
    };
    let head = format!(
        "POST /webhook HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n{framing}\r\n\r\n"
    );
    let started = Instant::now();
    let writer_task = tokio::spawn(async move {
        writer.write_all(head.as_bytes()).await.expect("head");
        let chunk = vec![b' '; 64 * 1024];
        let mut sent = 0u64;
        while sent < TOTAL {
            let result = if chunked {
                let mut framed = format!("{:x}\r\n", chunk.len()).into_bytes();
                framed.extend_from_slice(&chunk);
                framed.extend_from_slice(b"\r\n");
                writer.write_all(&framed).await
            } else {
                writer.write_all(&chunk).await
            };
            if result.is_err() {
                break;
            }
            sent += chunk.len() as u64;
        }
        sent
    });
    let mut response = Vec::new();
    let mut buffer = [0u8; 4096];
    let status_line = loop {
        let read = tokio::time::timeout(Duration::from_secs(30), reader.read(&mut buffer))
            .await
            .expect("an answer within 30 s")
            .expect("read");
        assert!(read > 0, "the gateway closed without an answer");
        response.extend_from_slice(&buffer[..read]);
        let text = String::from_utf8_lossy(&response).into_owned();
        if let Some(end) = text.find("\r\n\r\n")
            && text[end..].contains('}')
        {
            break text;
        }
    };
    let elapsed = started.elapsed();
    // The gateway answered; the client stops sending (as curl does) once it sees the answer.
    drop(reader);
    let sent = tokio::time::timeout(Duration::from_secs(30), writer_task)
        .await
        .map(|r| r.unwrap_or(TOTAL))
        .unwrap_or(TOTAL);
    (status_line, sent, elapsed)
}

/// 100 MB bodies are cut at `max_body_bytes` (1 MiB) with a 413 that says so, while the gateway's
/// memory stays bounded and it goes on serving.
#[tokio::test(flavor = "multi_thread")]
async fn a_100_mb_body_is_cut_at_the_limit_with_413() {
    let broker = TestBroker::start(BrokerKind::Bonker);
    let mut gateway = GatewayProcess::start(&broker.url(), &[]).await;
    let pid = gateway.process().pid();
    let before = rss_kib(pid).expect("rss");
    for chunked in [false, true] {
        let (answer, sent, elapsed) = stream_huge_body(&gateway, chunked).await;
        let framing = if chunked { "chunked" } else { "content-length" };
        assert!(
            answer.starts_with("HTTP/1.1 413"),
            "{framing}: expected 413, got {answer}"
        );
        assert!(
            answer.contains("length limit exceeded") || answer.contains("too large"),
            "{framing}: the answer does not say why: {answer}"
        );
        eprintln!(
            "100 MB body ({framing}): 413 after {elapsed:?}; the client got {:.1} MB out before \
             it stopped",
            sent as f64 / 1e6
        );
    }
    let peak = peak_rss_kib(pid).expect("peak rss");
    eprintln!("gateway RSS before: {before} KiB, peak: {peak} KiB");
    assert!(
        peak < before + 32 * 1024,
        "the gateway grew from {before} KiB to {peak} KiB reading a body it refuses"
    );
    assert_still_serving(&mut gateway).await;
}

fn storm_notification(alerts: usize) -> Value {
    let alerts: Vec<Value> = (0..alerts)
        .map(|n| {
            json!({
                "status": "firing",
                "labels": {
                    "alertname": "OOMKilled", "cluster": "prod-eu", "container": "api",
                    "job": "kube-state-metrics", "namespace": "storm",
                    "pod": format!("api-7d4b9c-{n:05}"), "reason": "OOMKilled",
                    "severity": "critical",
                },
                "annotations": {
                    "summary": format!("Container api in storm/api-7d4b9c-{n:05} was OOM-killed"),
                },
                "startsAt": "2026-11-21T11:43:08.105194046Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://prometheus.monitoring.svc:9090/graph?g0.expr=kube_pod_container_status_last_terminated_reason",
                "fingerprint": format!("{n:016x}"),
            })
        })
        .collect();
    json!({
        "version": "4", "groupKey": "{}:{alertname=\"OOMKilled\"}", "truncatedAlerts": 0,
        "status": "firing", "receiver": "bonker", "groupLabels": {"alertname": "OOMKilled"},
        "commonLabels": {"alertname": "OOMKilled"}, "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093", "alerts": alerts,
    })
}

/// 10,000 alerts in one notification. With the default 1 MiB limit a realistic one (about 5 MB)
/// is refused at once with 413; with the limit raised, every alert is published once, in bounded
/// time and memory.
#[tokio::test(flavor = "multi_thread")]
async fn ten_thousand_alerts_in_one_notification() {
    let broker = TestBroker::start(BrokerKind::Mosquitto);
    let body = storm_notification(10_000).to_string();
    eprintln!(
        "a notification of 10,000 realistic alerts is {:.1} MB",
        body.len() as f64 / 1e6
    );

    let gateway = GatewayProcess::start(&broker.url(), &[]).await;
    let started = Instant::now();
    let (status, answer) = post_webhook(&gateway, body.clone()).await;
    assert_eq!(status, 413, "{answer}");
    assert!(
        error_text(&answer).contains("length limit"),
        "the 413 says why: {answer}"
    );
    eprintln!("default limit: 413 after {:?}", started.elapsed());
    drop(gateway);

    let mut gateway =
        GatewayProcess::start_with(&broker.url(), &[], &[("BONKER_MAX_BODY_BYTES", "16777216")])
            .await;
    let mut probe = Probe::connect(&broker.url(), &["bonker/bonk/storm"]).await;
    let pid = gateway.process().pid();
    let before = rss_kib(pid).expect("rss");
    // Post as Alertmanager does: again after each 503, until accepted.
    let started = Instant::now();
    let mut attempts = Vec::new();
    let mut published = 0;
    loop {
        let (status, answer) = post_webhook(&gateway, body.clone()).await;
        published += answer["published"].as_u64().unwrap_or(0);
        attempts.push(format!("{status} after {:?}", started.elapsed()));
        if status == 200 {
            assert_eq!(
                answer["duplicates"].as_u64(),
                Some(10_000 - answer["published"].as_u64().unwrap_or(0))
            );
            break;
        }
        assert_eq!(status, 503, "{answer}");
        assert!(
            error_text(&answer).contains("retry"),
            "a 503 says to retry: {answer}"
        );
        assert!(attempts.len() < 5, "still not accepted: {attempts:?}");
    }
    let elapsed = started.elapsed();
    let peak = peak_rss_kib(pid).expect("peak");
    eprintln!("16 MiB limit: {attempts:?}; gateway RSS {before} -> peak {peak} KiB");
    let mut ids = std::collections::HashSet::new();
    for message in probe.take(10_000).await {
        ids.insert(message.json()["id"].as_str().expect("id").to_owned());
    }
    assert_eq!(ids.len(), 10_000, "every alert's bonk, once");
    assert!(elapsed < Duration::from_secs(30), "{elapsed:?}");
    assert!(peak < before + 256 * 1024, "{before} -> {peak} KiB");
    // Alertmanager sends it again (repeat_interval): nothing is published twice.
    let (status, answer) = post_webhook(&gateway, body).await;
    assert_eq!(status, 200);
    assert_eq!(
        (answer["published"].clone(), answer["duplicates"].clone()),
        (json!(0), json!(10_000))
    );
    let sentinel = Probe::connect(&broker.url(), &[]).await;
    sentinel
        .publish("bonker/bonk/storm", "sentinel", false)
        .await;
    assert_eq!(
        probe.next().await.text(),
        "sentinel",
        "a bonk published twice"
    );
    let _ = published;
    assert_still_serving(&mut gateway).await;
}

/// Unicode and control characters in labels and annotations: the bonk goes to the right topic
/// (or, for a namespace that is not a topic level, the default one), carries the raw values, and
/// the desk performs it once.
#[tokio::test(flavor = "multi_thread")]
async fn unicode_and_control_characters_in_labels() {
    let broker = TestBroker::start(BrokerKind::Bonker);
    let url = broker.url();
    let mut acks = Probe::connect(&url, &["bonker/desk/+/ack"]).await;
    let mut bonks = Probe::connect(&url, &["bonker/bonk/#"]).await;
    let _agent = AgentProcess::start(&url, "alice", &["+"], &[]).await;
    let mut gateway = GatewayProcess::start(&url, &[]).await;
    let strange = [
        "pod-ü-🐧",
        "tab\there",
        "nul\u{0}byte",
        "bell\u{7}\u{1b}[31mred",
        "rtl\u{202e}txet",
        "line\nbreak\r\nINFO forged log line",
        "\u{feff}bom",
        "\u{10ffff}",
    ];
    let namespaces = ["payments", "pay/ments", "pay\u{0}ments", "ünï", "+", "#"];
    let mut alerts = Vec::new();
    for (n, value) in strange.iter().enumerate() {
        let namespace = namespaces[n % namespaces.len()];
        alerts.push(json!({
            "status": "firing",
            "labels": {"alertname": format!("Odd{value}"), "namespace": namespace, "pod": value,
                       "ключ\u{0}": value},
            "annotations": {"summary": value},
            "startsAt": "2026-11-21T11:43:08Z",
            "fingerprint": format!("odd-{n}"),
        }));
    }
    let body = json!({"alerts": alerts}).to_string();
    let (status, answer) = post_webhook(&gateway, body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["published"], strange.len());
    let mut pods: Vec<String> = Vec::new();
    for message in bonks.take(strange.len()).await {
        let bonk = message.json();
        let namespace = bonk["namespace"]
            .as_str()
            .expect("namespace kept")
            .to_owned();
        let expected_topic = if namespace == "payments" {
            "bonker/bonk/payments"
        } else {
            "bonker/bonk/default"
        };
        assert_eq!(message.topic, expected_topic, "namespace {namespace:?}");
        pods.push(bonk["pod"].as_str().expect("pod").to_owned());
    }
    pods.sort();
    let mut expected: Vec<String> = strange.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(pods, expected, "the raw values travel unchanged");
    let mut outcomes: BTreeMap<String, Outcome> = BTreeMap::new();
    for message in acks.take(strange.len()).await {
        let ack: Ack = serde_json::from_value(message.json()).expect("an ack");
        assert!(
            outcomes
                .insert(ack.bonk_id.to_string(), ack.outcome)
                .is_none(),
            "acked twice"
        );
    }
    // Eight bonks at once: the servo queue holds four and the rest are coalesced into the next
    // move (acked `rate_limited`); each alert is acked exactly once either way.
    assert!(
        outcomes
            .values()
            .all(|o| matches!(o, Outcome::Bonked | Outcome::RateLimited)),
        "{outcomes:?}"
    );
    let log = gateway.process().output();
    assert!(
        !log.lines()
            .any(|line| line.starts_with("INFO forged log line")),
        "a label forged a gateway log line:\n{log}"
    );
    assert_still_serving(&mut gateway).await;
}

/// Slow clients (slowloris): many connections that trickle their headers or their body never
/// stop the gateway from serving everybody else, and a stalled body is cut off in bounded time.
#[tokio::test(flavor = "multi_thread")]
async fn slow_clients_do_not_starve_the_others() {
    let broker = TestBroker::start(BrokerKind::Bonker);
    let mut gateway = GatewayProcess::start(&broker.url(), &[]).await;
    let pid = gateway.process().pid();
    let before = rss_kib(pid).expect("rss");
    let mut slow = Vec::new();
    for n in 0..200 {
        let mut stream = TcpStream::connect(gateway.addr()).await.expect("connect");
        let head = if n % 2 == 0 {
            // Headers, then a body that never comes.
            "POST /webhook HTTP/1.1\r\nHost: g\r\nContent-Type: application/json\r\n\
             Content-Length: 100000\r\n\r\n{\"alerts\":["
                .to_owned()
        } else {
            // Headers that never end.
            "POST /webhook HTTP/1.1\r\nHost: g\r\n".to_owned()
        };
        stream.write_all(head.as_bytes()).await.expect("write");
        slow.push(stream);
    }
    // Everybody else is served, promptly, while the slow ones hang on.
    for _ in 0..20 {
        let started = Instant::now();
        let (status, _) = post_webhook(&gateway, EXAMPLE.to_owned()).await;
        assert_eq!(status, 200);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }
    let during = rss_kib(pid).expect("rss");
    eprintln!("200 slow connections: gateway RSS {before} -> {during} KiB");
    assert!(during < before + 16 * 1024);

    assert_still_serving(&mut gateway).await;
    drop(slow);
}

/// Reads from a connection until the gateway answers or closes it, at most `limit`.
async fn wait_until_cut_off(mut stream: TcpStream, limit: Duration) -> Option<(Duration, String)> {
    let started = Instant::now();
    let mut buffer = [0u8; 1024];
    match tokio::time::timeout(limit, stream.read(&mut buffer)).await {
        Ok(Ok(n)) => Some((
            started.elapsed(),
            String::from_utf8_lossy(&buffer[..n])
                .lines()
                .next()
                .unwrap_or("closed")
                .to_owned(),
        )),
        Ok(Err(error)) => Some((started.elapsed(), error.to_string())),
        Err(_) => None,
    }
}

/// A request whose headers or body stall is cut off in bounded time (408 or a closed
/// connection), so slow clients cannot hold connections, tasks and file descriptors forever.
#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_request_is_cut_off_in_bounded_time() {
    let broker = TestBroker::start(BrokerKind::Bonker);
    let gateway = GatewayProcess::start(&broker.url(), &[]).await;
    let limit = Duration::from_secs(40);
    let mut stalled_body = TcpStream::connect(gateway.addr()).await.expect("connect");
    stalled_body
        .write_all(
            b"POST /webhook HTTP/1.1\r\nHost: g\r\nContent-Type: application/json\r\n\
              Content-Length: 1000\r\n\r\n{\"alerts\":[",
        )
        .await
        .expect("write");
    let mut stalled_head = TcpStream::connect(gateway.addr()).await.expect("connect");
    stalled_head
        .write_all(b"POST /webhook HTTP/1.1\r\nHost: g\r\n")
        .await
        .expect("write");
    let (body, head) = tokio::join!(
        wait_until_cut_off(stalled_body, limit),
        wait_until_cut_off(stalled_head, limit)
    );
    eprintln!(
        "stalled body: {body:?}; stalled headers: {head:?} (None: still open after {limit:?})"
    );
    assert!(
        head.is_some(),
        "the gateway waited {limit:?} for the rest of a request's headers"
    );
    assert!(
        body.is_some(),
        "the gateway waited {limit:?} for the rest of a request body without answering or \
         closing: a client can hold connections (and file descriptors) forever"
    );
}

/// What anyone on the broker can send, against a gateway and a desk: garbage and oversized
/// payloads on bonk topics, retained garbage on desk topics. Everything is logged and counted,
/// nothing crashes, and both keep working.
async fn mqtt_garbage_is_counted_and_survived(kind: BrokerKind) {
    let broker = TestBroker::start(kind);
    let url = broker.url();
    let mut acks = Probe::connect(&url, &["bonker/desk/+/ack"]).await;
    let mut agent = AgentProcess::start_with(
        &url,
        "alice",
        &["payments"],
        &[],
        UNLIMITED,
        Default::default(),
    )
    .await;
    let mut gateway = GatewayProcess::start(&url, &[]).await;
    let sender = Probe::connect(&url, &[]).await;

    // Garbage on a bonk topic: every payload is a bonk to the lenient parser (people type them by
    // hand), so each is performed and acked exactly once, with its problems logged.
    let garbage: Vec<Vec<u8>> = vec![
        vec![0xff, 0xfe, 0x00, 0x80],
        b"{\"id\":".to_vec(),
        b"[1,2,3]".to_vec(),
        b"{\"id\": 42, \"severity\": [\"critical\"], \"count\": -3, \"sent_at\": \"soon\"}"
            .to_vec(),
        format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)).into_bytes(),
        vec![b'A'; 200 * 1024],
        format!("{{\"summary\": \"{}\"}}", "é".repeat(60_000)).into_bytes(),
        b"\x1b[2J\x1b[31m critical".to_vec(),
    ];
    for payload in &garbage {
        sender
            .publish("bonker/bonk/payments", payload.clone(), false)
            .await;
        let ack: Ack = serde_json::from_value(acks.next().await.json()).expect("an ack");
        assert_eq!(ack.outcome, Outcome::Bonked, "{kind}: {ack:?}");
    }
    let warnings = agent
        .process()
        .output()
        .matches("bonk payload problem")
        .count();
    assert!(
        warnings >= 5,
        "{kind}: the agent logs what was wrong ({warnings} warnings)"
    );

    // Retained garbage where desks report status and health, and garbage acks.
    sender
        .publish("bonker/desk/mallory/status", "pwned", true)
        .await;
    sender
        .publish("bonker/desk/mallory/health", "{not json", true)
        .await;
    sender
        .publish("bonker/desk/alice/ack", vec![0u8; 1000], false)
        .await;
    assert_eq!(acks.next().await.payload, vec![0u8; 1000]);
    let counted = |reason: &'static str| {
        let gateway = &gateway;
        async move {
            let series =
                format!("bonker_gateway_desk_messages_ignored_total{{reason=\"{reason}\"}}");
            let deadline = Instant::now() + bonker_tests::DEADLINE;
            loop {
                let value = metric(gateway, &series).await;
                if value >= 1.0 || Instant::now() > deadline {
                    return value;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    for reason in ["invalid_status", "invalid_health", "invalid_ack"] {
        assert_eq!(counted(reason).await, 1.0, "{kind}: {reason} counted once");
    }
    // A gateway that starts later gets the retained garbage replayed, counts it and is ready.
    let late = GatewayProcess::start(&url, &[]).await;
    for reason in ["invalid_status", "invalid_health"] {
        let series = format!("bonker_gateway_desk_messages_ignored_total{{reason=\"{reason}\"}}");
        let deadline = Instant::now() + bonker_tests::DEADLINE;
        while metric(&late, &series).await < 1.0 {
            assert!(
                Instant::now() < deadline,
                "{kind}: late gateway never counted {reason}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // A retained bonk is never performed (it would bonk every desk at every reconnect).
    sender
        .publish("bonker/bonk/payments", "retained garbage", true)
        .await;
    let ack: Ack = serde_json::from_value(acks.next().await.json()).expect("ack");
    assert_eq!(
        ack.outcome,
        Outcome::Bonked,
        "{kind}: live delivery of a retained publish"
    );
    let _bob = AgentProcess::start_with(
        &url,
        "bob",
        &["payments"],
        &[],
        UNLIMITED,
        Default::default(),
    )
    .await;
    let ack: Ack = serde_json::from_value(acks.next().await.json()).expect("ack");
    assert_eq!(
        (ack.desk.as_str(), ack.outcome),
        ("bob", Outcome::Expired),
        "{kind}"
    );
    // Clear it: a zero-length message, which bonks nobody.
    sender.publish("bonker/bonk/payments", "", true).await;

    assert!(
        agent.process().try_status().is_none(),
        "{kind}: the agent died"
    );
    assert_still_serving(&mut gateway).await;
    // The still-serving check's notification bonked alice (payments) and bob: once each.
    let mut desks: Vec<String> = acks
        .take(4)
        .await
        .iter()
        .map(|m| {
            let ack: Ack = serde_json::from_value(m.json()).expect("ack");
            assert_eq!(ack.outcome, Outcome::Bonked);
            ack.desk.to_string()
        })
        .collect();
    desks.sort();
    assert_eq!(desks, ["alice", "alice", "bob", "bob"], "{kind}");
}

/// Payloads at and beyond the clients' 256 KiB packet limit on a bonk topic. The bonker broker
/// refuses them at the door (`max_payload_bytes`); mosquitto, configured as docs/brokers.md says
/// (`max_packet_size`), too. The desk never sees them and keeps bonking. (Without the mosquitto
/// setting, the desk's persistent session replays the oversized bonk at every reconnect and the
/// desk is deaf for good: the reason the guide sets it.)
async fn an_oversized_bonk_never_reaches_the_desks(kind: BrokerKind) {
    let options = BrokerOptions {
        mosquitto_config: (kind == BrokerKind::Mosquitto).then(|| {
            let production = code_block_after("brokers.md", "mosquitto in production");
            setting(&production, "max_packet_size")
        }),
        ..Default::default()
    };
    let broker = TestBroker::start_with(kind, options);
    let url = broker.url();
    let mut acks = Probe::connect(&url, &["bonker/desk/+/ack"]).await;
    let mut agent = AgentProcess::start(&url, "alice", &["payments"], &[]).await;
    let port = broker.port().to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let topic = "bonker/bonk/payments";
    // Just under, exactly at and beyond the packet limit (a packet also holds the topic).
    for (n, size) in [
        256 * 1024 - 64,
        256 * 1024 - topic.len() - 4,
        256 * 1024,
        1024 * 1024,
    ]
    .into_iter()
    .enumerate()
    {
        let file = dir.path().join(format!("payload-{n}"));
        std::fs::write(&file, vec![b'x'; size]).expect("write");
        let published = std::process::Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &port, "-q", "1", "-t", topic, "-f"])
            .arg(&file)
            .output()
            .expect("mosquitto_pub runs");
        let sender = Probe::connect(&url, &[]).await;
        let sentinel = format!("{{\"id\":\"after-{size}\"}}");
        sender
            .publish("bonker/desk/alice/bonk", sentinel, false)
            .await;
        let mut seen = Vec::new();
        loop {
            let ack: Ack = serde_json::from_value(acks.next().await.json()).expect("ack");
            if ack.bonk_id.as_str() == format!("after-{size}") {
                break;
            }
            seen.push(ack);
        }
        eprintln!(
            "{kind}: a {size}-byte bonk: mosquitto_pub exited {:?}; the desk acked {} bonk(s) \
             before the next one",
            published.status.code(),
            seen.len()
        );
        assert!(seen.len() <= 1, "{kind}: {seen:?}");
        let output = agent.process().output();
        assert!(
            !output.contains("lost the broker"),
            "{kind}: a {size}-byte bonk disconnected the desk:\n{output}"
        );
    }
    assert!(agent.process().try_status().is_none());
}

bonker_tests::for_both_brokers!(
    mqtt_garbage_is_counted_and_survived,
    an_oversized_bonk_never_reaches_the_desks,
);
