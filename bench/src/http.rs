//! A lean HTTP/1.1 client for the load generator, and the Alertmanager notifications it posts.
//!
//! Each sender owns one keep-alive connection (hyper's connection-level client, no pool, no
//! middleware), as Alertmanager does per receiver: the client's own cost per request stays a few
//! microseconds, so on a two-core machine the harness takes as little CPU as possible from the
//! gateway it measures.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;

/// One keep-alive HTTP/1.1 connection to the gateway.
#[derive(Debug)]
pub struct HttpConnection {
    sender: SendRequest<Full<Bytes>>,
    host: String,
}

impl HttpConnection {
    /// Connects (TCP_NODELAY on, like any HTTP client worth its salt) and starts the connection
    /// task.
    pub async fn connect(addr: SocketAddr) -> Result<HttpConnection> {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .with_context(|| format!("cannot connect to the gateway at {addr}"))?;
        stream.set_nodelay(true)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("HTTP handshake")?;
        tokio::spawn(async move {
            // Ends when the sender is dropped or the gateway closes the connection; the next
            // request then reports the error.
            let _ = connection.await;
        });
        Ok(HttpConnection {
            sender,
            host: addr.to_string(),
        })
    }

    /// POSTs a JSON body; returns the status and the whole response body.
    pub async fn post_json(&mut self, path: &str, body: Bytes) -> Result<(StatusCode, Bytes)> {
        let request = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(hyper::header::HOST, &self.host)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))?;
        self.send(request).await
    }

    /// GETs `path`; returns the status and the body.
    pub async fn get(&mut self, path: &str) -> Result<(StatusCode, Bytes)> {
        let request = Request::builder()
            .method(Method::GET)
            .uri(path)
            .header(hyper::header::HOST, &self.host)
            .body(Full::new(Bytes::new()))?;
        self.send(request).await
    }

    async fn send(&mut self, request: Request<Full<Bytes>>) -> Result<(StatusCode, Bytes)> {
        self.sender
            .ready()
            .await
            .context("the gateway closed the connection")?;
        let response = self
            .sender
            .send_request(request)
            .await
            .context("HTTP request failed")?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .context("reading the response")?
            .to_bytes();
        Ok((status, body))
    }
}

/// Makes Alertmanager notifications whose alerts all have fingerprints never used before in this
/// process, so the gateway's dedupe window never short-circuits a measurement.
#[derive(Debug)]
pub struct Notifications {
    next: AtomicU64,
    run: String,
    starts_at: String,
}

impl Default for Notifications {
    fn default() -> Self {
        Self::new()
    }
}

impl Notifications {
    /// A generator for this run: fingerprints carry the run's start time, so two runs against the
    /// same long-lived gateway would not collide either.
    pub fn new() -> Notifications {
        let now = chrono::Utc::now();
        Notifications {
            next: AtomicU64::new(0),
            run: format!("{:x}", now.timestamp_millis()),
            starts_at: now.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        }
    }

    /// A firing notification of `alerts` OOMKilled alerts for `namespace`, shaped like
    /// Alertmanager's (payload version 4), with the fingerprints used.
    pub fn oom_killed(&self, namespace: &str, alerts: usize) -> (Bytes, Vec<String>) {
        let first = self.next.fetch_add(alerts as u64, Ordering::Relaxed);
        let mut fingerprints = Vec::with_capacity(alerts);
        let mut body = String::with_capacity(300 + alerts * 620);
        body.push_str(r#"{"receiver":"bonker","status":"firing","alerts":["#);
        for n in 0..alerts as u64 {
            let fingerprint = format!("{}{:08x}", self.run, first + n);
            if n > 0 {
                body.push(',');
            }
            let pod = format!("api-{:x}", first + n);
            body.push_str(&format!(
                r#"{{"status":"firing","labels":{{"alertname":"OOMKilled","cluster":"bench","container":"api","job":"kube-state-metrics","namespace":"{namespace}","pod":"{pod}","reason":"OOMKilled","severity":"critical"}},"annotations":{{"summary":"Container api in {namespace}/{pod} was OOM-killed","description":"The container was killed by the kernel for exceeding its memory limit of 256Mi."}},"startsAt":"{starts_at}","endsAt":"0001-01-01T00:00:00Z","generatorURL":"http://prometheus.monitoring.svc:9090/graph?g0.expr=kube_pod_container_status_last_terminated_reason","fingerprint":"{fingerprint}"}}"#,
                starts_at = self.starts_at,
            ));
            fingerprints.push(fingerprint);
        }
        body.push_str(&format!(
            r#"],"groupLabels":{{"alertname":"OOMKilled","namespace":"{namespace}"}},"commonLabels":{{"alertname":"OOMKilled","namespace":"{namespace}","severity":"critical"}},"commonAnnotations":{{}},"externalURL":"http://alertmanager.monitoring.svc:9093","version":"4","groupKey":"{{}}:{{alertname=\"OOMKilled\", namespace=\"{namespace}\"}}","truncatedAlerts":0}}"#
        ));
        (Bytes::from(body), fingerprints)
    }

    /// The `startsAt` every alert of this run carries.
    pub fn starts_at(&self) -> &str {
        &self.starts_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_are_valid_json_with_fresh_fingerprints() {
        let notifications = Notifications::new();
        let (first, first_prints) = notifications.oom_killed("payments", 3);
        let (second, second_prints) = notifications.oom_killed("payments", 1);
        let json: serde_json::Value = serde_json::from_slice(&first).expect("valid JSON");
        let alerts = json["alerts"].as_array().expect("alerts");
        assert_eq!(alerts.len(), 3);
        assert_eq!(alerts[2]["labels"]["namespace"], "payments");
        assert_eq!(alerts[2]["fingerprint"], first_prints[2].as_str());
        assert_eq!(json["version"], "4");
        serde_json::from_slice::<serde_json::Value>(&second).expect("valid JSON");
        let mut all: Vec<&String> = first_prints.iter().chain(&second_prints).collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 4, "every fingerprint is new");
    }
}
