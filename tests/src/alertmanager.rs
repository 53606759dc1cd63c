//! Debian's Alertmanager (`prometheus-alertmanager`) as a child process on free loopback ports,
//! with alerts injected by `amtool alert add` — the same way an operator tests a route.
//!
//! Two instances can form a cluster (an HA pair) with `AlertmanagerOptions::peers`; both then
//! deliver notifications, as they do in production, and the fleet must still bonk once.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::process::{ChildProcess, free_port, wait_for_port};

/// How to start an Alertmanager.
#[derive(Debug, Clone)]
pub struct AlertmanagerOptions {
    /// Webhook receivers (each a `webhook_configs` entry of the one receiver).
    pub webhook_urls: Vec<String>,
    /// Bearer token sent to the webhooks (`http_config.authorization`, from a file).
    pub bearer_token: Option<String>,
    /// `group_by` labels.
    pub group_by: Vec<&'static str>,
    /// `group_wait`.
    pub group_wait: &'static str,
    /// `group_interval`.
    pub group_interval: &'static str,
    /// `repeat_interval`.
    pub repeat_interval: &'static str,
    /// Whether resolved notifications are sent.
    pub send_resolved: bool,
    /// Cluster peers (other test Alertmanagers' cluster addresses); empty: no clustering.
    pub peers: Vec<SocketAddr>,
    /// Whether this instance listens for cluster peers.
    pub clustered: bool,
}

impl Default for AlertmanagerOptions {
    fn default() -> Self {
        Self {
            webhook_urls: Vec::new(),
            bearer_token: None,
            group_by: vec!["alertname", "namespace"],
            group_wait: "1s",
            group_interval: "1s",
            repeat_interval: "1h",
            send_resolved: true,
            peers: Vec::new(),
            clustered: false,
        }
    }
}

/// A running Alertmanager. Killed when dropped.
#[derive(Debug)]
pub struct TestAlertmanager {
    port: u16,
    cluster_port: Option<u16>,
    _dir: tempfile::TempDir,
    process: ChildProcess,
}

fn binary() -> PathBuf {
    ["/usr/bin/prometheus-alertmanager", "/usr/bin/alertmanager"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("prometheus-alertmanager"))
}

impl TestAlertmanager {
    /// Starts Alertmanager with one route to the webhooks, and waits until it is ready.
    pub fn start(options: AlertmanagerOptions) -> TestAlertmanager {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let mut http_config = String::new();
        if let Some(token) = &options.bearer_token {
            let path = dir.path().join("token");
            std::fs::write(&path, token).expect("write token");
            http_config = format!(
                "        http_config:\n          authorization:\n            type: Bearer\n            credentials_file: {}\n",
                path.display()
            );
        }
        let webhooks: String = options
            .webhook_urls
            .iter()
            .map(|url| {
                format!(
                    "      - url: {url}\n        send_resolved: {}\n        max_alerts: 0\n{http_config}",
                    options.send_resolved
                )
            })
            .collect();
        let config = format!(
            "route:\n  receiver: bonker\n  group_by: [{}]\n  \
             group_wait: {}\n  group_interval: {}\n  repeat_interval: {}\n\
             receivers:\n  - name: bonker\n    webhook_configs:\n{webhooks}",
            options.group_by.join(", "),
            options.group_wait,
            options.group_interval,
            options.repeat_interval
        );
        let config_path = dir.path().join("alertmanager.yml");
        std::fs::write(&config_path, &config).expect("write alertmanager.yml");
        let check = Command::new("amtool")
            .arg("check-config")
            .arg(&config_path)
            .output()
            .expect("amtool (package prometheus-alertmanager) is installed");
        assert!(
            check.status.success(),
            "amtool rejects the test config:\n{config}\n{}",
            String::from_utf8_lossy(&check.stdout)
        );

        let cluster_port = (options.clustered || !options.peers.is_empty()).then(free_port);
        let mut command = Command::new(binary());
        command
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn");
        match cluster_port {
            Some(cluster) => {
                command
                    .arg(format!("--cluster.listen-address=127.0.0.1:{cluster}"))
                    .arg(format!("--cluster.advertise-address=127.0.0.1:{cluster}"))
                    .arg("--cluster.peer-timeout=2s")
                    .arg("--cluster.gossip-interval=100ms")
                    .arg("--cluster.pushpull-interval=1s");
                for peer in &options.peers {
                    command.arg(format!("--cluster.peer={peer}"));
                }
            }
            None => {
                command.arg("--cluster.listen-address=");
            }
        }
        let process = ChildProcess::spawn("alertmanager", command);
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        assert!(
            wait_for_port(addr, crate::DEADLINE),
            "alertmanager did not listen on {addr}; output:\n{}",
            process.output()
        );
        TestAlertmanager {
            port,
            cluster_port,
            _dir: dir,
            process,
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The cluster listen address, when clustered.
    pub fn cluster_addr(&self) -> Option<SocketAddr> {
        self.cluster_port
            .map(|p| SocketAddr::from((Ipv4Addr::LOCALHOST, p)))
    }

    /// Injects a firing alert with `amtool alert add` (labels as `name=value`), started now.
    pub fn add_alert(&self, labels: &[(&str, &str)], annotations: &[(&str, &str)]) {
        self.add_alert_started(labels, annotations, &now_millis());
    }

    /// Injects a firing alert that started at `start` (RFC 3339). Prometheus sends each alert to
    /// every Alertmanager with the same start: tests of an HA pair pass the same `start` to both.
    pub fn add_alert_started(
        &self,
        labels: &[(&str, &str)],
        annotations: &[(&str, &str)],
        start: &str,
    ) {
        self.amtool_add(labels, annotations, Some(start.to_owned()), None);
    }

    /// Marks an alert resolved: the same labels with an end time in the past.
    pub fn resolve_alert(&self, labels: &[(&str, &str)], annotations: &[(&str, &str)]) {
        let ended = chrono::Utc::now() - chrono::Duration::seconds(1);
        self.amtool_add(labels, annotations, None, Some(ended.to_rfc3339()));
    }

    fn amtool_add(
        &self,
        labels: &[(&str, &str)],
        annotations: &[(&str, &str)],
        start: Option<String>,
        end: Option<String>,
    ) {
        let mut command = Command::new("amtool");
        command
            .arg("alert")
            .arg("add")
            .arg(format!("--alertmanager.url={}", self.url()));
        for (name, value) in annotations {
            command.arg(format!("--annotation={name}={value}"));
        }
        if let Some(start) = start {
            command.arg(format!("--start={start}"));
        }
        if let Some(end) = end {
            command.arg(format!("--end={end}"));
        }
        for (name, value) in labels {
            command.arg(format!("{name}={value}"));
        }
        let output = command.output().expect("amtool runs");
        assert!(
            output.status.success(),
            "amtool alert add failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// The process, for `kill -9` and its output.
    pub fn process(&mut self) -> &mut ChildProcess {
        &mut self.process
    }

    /// Waits until this instance sees `expected` cluster members (itself included).
    pub async fn wait_for_cluster(&self, expected: usize) {
        let client = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + crate::DEADLINE;
        loop {
            let peers = client
                .get(format!("{}/api/v2/status", self.url()))
                .send()
                .await
                .ok();
            let count = match peers {
                Some(response) => response
                    .json::<serde_json::Value>()
                    .await
                    .ok()
                    .and_then(|v| v["cluster"]["peers"].as_array().map(Vec::len))
                    .unwrap_or(0),
                None => 0,
            };
            if count >= expected {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "alertmanager cluster did not form ({count} of {expected} peers)"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Now, in RFC 3339 with milliseconds: what Prometheus sends as an alert's start.
pub fn now_millis() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
