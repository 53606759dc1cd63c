//! Alertmanager webhook bodies (payload version 4), shaped as the shipped `bonker` route sends
//! them, for tests that post to the gateway themselves, and hand-made bonks through `POST /bonk`.

use serde_json::{Value, json};

/// Bonks by hand through the gateway at `gateway_url` (`POST /bonk?<query>`, e.g.
/// `desk=alice`), returning the bonk's id from the answer.
pub async fn manual_bonk(client: &reqwest::Client, gateway_url: &str, query: &str) -> String {
    let reply: Value = client
        .post(format!("{gateway_url}/bonk?{query}"))
        .send()
        .await
        .expect("answer")
        .json()
        .await
        .expect("json");
    reply["id"].as_str().expect("id").to_owned()
}

/// A firing notification of the `bonker` receiver carrying `alerts`.
pub fn notification(alerts: Vec<Value>) -> Value {
    json!({
        "version": "4",
        "groupKey": "{}:{alertname=\"OOMKilled\"}",
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "bonker",
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": alerts,
    })
}

/// A firing `OOMKilled` alert for container `app` of `namespace/pod`, as the shipped rule labels it.
pub fn oom_alert(
    fingerprint: &str,
    namespace: &str,
    pod: &str,
    summary: &str,
    starts_at: &str,
) -> Value {
    json!({
        "status": "firing",
        "labels": {"alertname": "OOMKilled", "severity": "critical", "namespace": namespace,
                   "pod": pod, "container": "app", "reason": "OOMKilled"},
        "annotations": {"summary": summary},
        "startsAt": starts_at,
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus:9090/graph",
        "fingerprint": fingerprint,
    })
}
