//! The fleet's own programs as child processes: gateways and agents with simulated servos, started
//! on free ports against a test broker, ready when they say so on the wire.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use crate::probe::Probe;
use crate::process::{ChildProcess, binary, free_port, wait_for_port};

/// Acks counted by (desk, bonk id), then by outcome ([`AgentProcess::tally`]).
pub type AckTally =
    std::collections::BTreeMap<(String, String), std::collections::BTreeMap<String, usize>>;

/// A `bonker-gateway` process.
#[derive(Debug)]
pub struct GatewayProcess {
    port: u16,
    process: ChildProcess,
}

impl GatewayProcess {
    /// Starts a gateway on a free port, publishing to `mqtt_url`, with extra flags; returns once it
    /// is ready (`/readyz` answers 200: connected to the broker).
    pub async fn start(mqtt_url: &str, extra: &[&str]) -> GatewayProcess {
        GatewayProcess::start_with(mqtt_url, extra, &[]).await
    }

    /// [`GatewayProcess::start`] with extra environment variables (`BONKER_…` settings).
    pub async fn start_with(
        mqtt_url: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> GatewayProcess {
        let gateway = GatewayProcess::spawn(mqtt_url, free_port(), extra, env);
        gateway.wait_ready().await;
        gateway
    }

    /// Starts a gateway on `port` without waiting for it to be ready (its broker may be down, or
    /// the test expects it to fail).
    pub fn spawn(
        mqtt_url: &str,
        port: u16,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> GatewayProcess {
        let mut command = Command::new(binary("bonker-gateway"));
        command
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--mqtt")
            .arg(mqtt_url)
            .args(extra)
            .env("BONKER_LOG", "info,rumqttd=warn");
        for (name, value) in env {
            command.env(name, value);
        }
        let process = ChildProcess::spawn("bonker-gateway", command);
        GatewayProcess { port, process }
    }

    /// The HTTP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The HTTP address, `127.0.0.1:<port>`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The process.
    pub fn process(&mut self) -> &mut ChildProcess {
        &mut self.process
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&self) {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        assert!(
            wait_for_port(addr, crate::DEADLINE),
            "gateway did not listen; output:\n{}",
            self.process.output()
        );
        let client = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + crate::DEADLINE;
        loop {
            if let Ok(response) = client.get(format!("{}/readyz", self.url())).send().await
                && response.status().is_success()
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "gateway not ready; output:\n{}",
                self.process.output()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A `bonker-agent` process with a simulated servo.
#[derive(Debug)]
pub struct AgentProcess {
    desk: String,
    process: ChildProcess,
}

impl AgentProcess {
    /// Starts the agent for `desk` watching `namespaces` (`+`: every namespace), and returns once
    /// its retained status says `online`.
    pub async fn start(
        mqtt_url: &str,
        desk: &str,
        namespaces: &[&str],
        extra: &[&str],
    ) -> AgentProcess {
        AgentProcess::start_with(
            mqtt_url,
            desk,
            namespaces,
            extra,
            &[],
            crate::ProbeOptions::default(),
        )
        .await
    }

    /// [`AgentProcess::start`] with extra environment variables (`BONKER_…` settings, applied
    /// after the defaults so they win), watching for `online` with a probe connected with
    /// `probe_options` (credentials, TLS).
    pub async fn start_with(
        mqtt_url: &str,
        desk: &str,
        namespaces: &[&str],
        extra: &[&str],
        env: &[(&str, &str)],
        probe_options: crate::ProbeOptions,
    ) -> AgentProcess {
        let mut status = Probe::connect_with(
            mqtt_url,
            &[&format!("bonker/desk/{desk}/status")],
            probe_options,
        )
        .await
        .unwrap_or_else(|e| panic!("status probe cannot connect to {mqtt_url}: {e}"));
        let mut command = Command::new(binary("bonker-agent"));
        command
            .arg("--desk")
            .arg(desk)
            .arg("--servo")
            .arg("simulated")
            .arg("--mqtt")
            .arg(mqtt_url)
            .args(extra)
            .env("BONKER_LOG", "info")
            .env("BONKER_SERVO__STROKE_MS", "20");
        for (name, value) in env {
            command.env(name, value);
        }
        for namespace in namespaces {
            command.arg("--namespace").arg(namespace);
        }
        let process = ChildProcess::spawn(&format!("bonker-agent {desk}"), command);
        let deadline = tokio::time::Instant::now() + crate::DEADLINE;
        loop {
            let message = tokio::time::timeout_at(deadline, status.next())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "agent {desk} never said online; output:\n{}",
                        process.output()
                    )
                });
            if message.text() == "online" {
                break;
            }
        }
        AgentProcess {
            desk: desk.to_owned(),
            process,
        }
    }

    /// Every ack the agent logged so far, as (bonk id, outcome) in order: the agent's own account
    /// of what it did with each bonk, which survives broker restarts that a probe would miss.
    pub fn logged_acks(&self) -> Vec<(String, String)> {
        self.process
            .output()
            .lines()
            .map(strip_ansi)
            .filter(|line| line.contains(" ack ") || line.contains(": ack "))
            .filter_map(|line| {
                let field = |name: &str| {
                    line.split_whitespace()
                        .find_map(|word| word.strip_prefix(name))
                        .map(str::to_owned)
                };
                Some((field("bonk_id=")?, field("outcome=")?))
            })
            .collect()
    }

    /// The acks `agents` logged, counted by (desk, bonk id), then by outcome: how many times each
    /// desk did what with each bonk.
    pub fn tally(agents: &[AgentProcess]) -> AckTally {
        let mut tally = AckTally::new();
        for agent in agents {
            for (id, outcome) in agent.logged_acks() {
                *tally
                    .entry((agent.desk().to_owned(), id))
                    .or_default()
                    .entry(outcome)
                    .or_default() += 1;
            }
        }
        tally
    }

    /// The desk name.
    pub fn desk(&self) -> &str {
        &self.desk
    }

    /// The process.
    pub fn process(&mut self) -> &mut ChildProcess {
        &mut self.process
    }
}

/// A log line without terminal colour codes.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
