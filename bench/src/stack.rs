//! A fleet under test: a broker, a gateway and a process of desks, each its own process on
//! loopback ports, plus the harness's observer and HTTP connection.
//!
//! Every measurement starts a fresh stack, so no section inherits another's queues, sessions or
//! dedupe memory. Non-default settings are listed in [`BROKER_SETTINGS_NOTE`] and in
//! [`crate::desks`]; the gateway runs with its defaults.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bonker_protocol::Namespace;

use crate::http::HttpConnection;
use crate::observer::{Observer, ObserverOptions};
use crate::process::{ChildProcess, free_port, wait_for_port};

/// What the report says about the brokers' configuration.
pub const BROKER_SETTINGS_NOTE: &str = "\
- **bonker-broker**: its defaults (rumqttd behind bonker's settings: TCP_NODELAY on every \
connection, `max_connections` 10000, outgoing QoS 1 window 100 per connection, fixed in rumqttd), \
listening on 127.0.0.1.
- **mosquitto**: `set_tcp_nodelay true` (default false), `max_queued_messages 100000` (default \
1000: the gateway's and the harness's subscriptions receive a burst of one ack per desk), \
`max_inflight_messages 100` (default 20; the same window rumqttd uses), `persistence false`, \
anonymous on 127.0.0.1.";

/// Which broker a stack runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    /// `bonker-broker` (rumqttd), the embedded default.
    Bonker,
    /// Debian's mosquitto.
    Mosquitto,
}

impl BrokerKind {
    /// Both, in report order.
    pub const BOTH: [BrokerKind; 2] = [BrokerKind::Bonker, BrokerKind::Mosquitto];

    /// The name in tables.
    pub fn as_str(self) -> &'static str {
        match self {
            BrokerKind::Bonker => "bonker-broker",
            BrokerKind::Mosquitto => "mosquitto",
        }
    }
}

/// Where the programs under test are.
#[derive(Debug, Clone)]
pub struct Tools {
    /// The directory of the release binaries (`bonker-gateway`, `bonker-broker`, …).
    pub bin_dir: PathBuf,
    /// mosquitto.
    pub mosquitto: PathBuf,
    /// This program, which runs the desks.
    pub self_exe: PathBuf,
    /// Where configs and logs of this run go.
    pub dir: PathBuf,
    /// The desks' log filter (`None`: the desks log nothing).
    pub desks_log: Option<String>,
    /// The bonker broker's log filter (`None`: its default).
    pub broker_log: Option<String>,
    /// The agent binary the footprint section measures (`None`: the one in `bin_dir`).
    pub agent_bin: Option<PathBuf>,
}

impl Tools {
    /// The agent binary whose footprint is measured.
    pub fn agent_binary(&self) -> Result<PathBuf> {
        match &self.agent_bin {
            Some(path) if path.exists() => Ok(path.clone()),
            Some(path) => bail!(
                "{} not found; build it first: cargo build --profile pi -p bonker-agent",
                path.display()
            ),
            None => self.binary("bonker-agent"),
        }
    }

    /// A workspace binary, or an error that says how to build it.
    pub fn binary(&self, name: &str) -> Result<PathBuf> {
        let path = self.bin_dir.join(name);
        if !path.exists() {
            bail!(
                "{} not found; build it first: cargo build --release -p {name}",
                path.display()
            );
        }
        Ok(path)
    }
}

/// A broker process.
#[derive(Debug)]
pub struct Broker {
    kind: BrokerKind,
    port: u16,
    process: ChildProcess,
}

impl Broker {
    /// Starts `kind` on a free loopback port and waits until it accepts connections.
    pub fn start(tools: &Tools, kind: BrokerKind, name: &str) -> Result<Broker> {
        let port = free_port()?;
        let mut process = match kind {
            BrokerKind::Bonker => {
                let config = tools.dir.join(format!("{name}.toml"));
                std::fs::write(&config, format!("listen = \"127.0.0.1:{port}\"\n"))?;
                let mut command = Command::new(tools.binary("bonker-broker")?);
                command.arg("--config").arg(&config);
                if let Some(log) = &tools.broker_log {
                    command.env("BONKER_LOG", log);
                }
                ChildProcess::spawn(name, command, &tools.dir)?
            }
            BrokerKind::Mosquitto => {
                let config = tools.dir.join(format!("{name}.conf"));
                std::fs::write(&config, mosquitto_config(port))?;
                let mut command = Command::new(&tools.mosquitto);
                command.arg("-c").arg(&config);
                ChildProcess::spawn(name, command, &tools.dir)?
            }
        };
        wait_for_port(&mut process, port, Duration::from_secs(10))?;
        Ok(Broker {
            kind,
            port,
            process,
        })
    }

    /// `mqtt://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Which broker.
    pub fn kind(&self) -> BrokerKind {
        self.kind
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// What the bonker broker skipped for subscribers that fell behind, so far (`None` for
    /// mosquitto, which does not say).
    pub fn skipped(&self) -> Option<Skipped> {
        (self.kind == BrokerKind::Bonker).then(|| Skipped::from_log(&self.process.output()))
    }
}

/// Messages rumqttd skipped for subscribers that fell behind: when a filter's log has dropped
/// segments a subscriber had not read, rumqttd moves its cursor to the oldest message left and
/// warns "Read cursor start jumped from (segment, offset) to (segment, offset) on <filter>", with
/// the client id in the line's span; the offsets are absolute, so their difference is the count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Skipped {
    /// Bonks the desks never got (bonk filters, any client but the gateway).
    pub bonks_to_desks: u64,
    /// Acks the gateway never got (ack filters).
    pub acks_to_gateway: u64,
    /// Everything else (the gateway's own view of the bonks, health, status).
    pub other: u64,
}

impl Skipped {
    fn from_log(log: &str) -> Skipped {
        let mut skipped = Skipped::default();
        for line in log.lines() {
            let Some((from, to, filter)) = cursor_jump(line) else {
                continue;
            };
            let count = to.saturating_sub(from);
            let gateway = line.contains("client_id=\"bonker-gateway");
            if filter.ends_with("/ack") {
                skipped.acks_to_gateway += count;
            } else if filter.contains("/bonk/") && !gateway {
                skipped.bonks_to_desks += count;
            } else {
                skipped.other += count;
            }
        }
        skipped
    }
}

/// The absolute offsets and the filter of one of rumqttd's cursor-jump warnings.
fn cursor_jump(line: &str) -> Option<(u64, u64, &str)> {
    let rest = line.split("Read cursor start jumped from ").nth(1)?;
    let (from, rest) = rest.split_once(" to ")?;
    let (to, filter) = rest.split_once(" on ")?;
    let offset = |cursor: &str| -> Option<u64> {
        cursor
            .trim_matches(|c| c == '(' || c == ')')
            .split_once(", ")?
            .1
            .parse()
            .ok()
    };
    Some((offset(from)?, offset(to)?, filter.trim_end_matches('"')))
}

/// The mosquitto configuration of every run (see [`BROKER_SETTINGS_NOTE`]).
pub fn mosquitto_config(port: u16) -> String {
    format!(
        "per_listener_settings false\nlistener {port} 127.0.0.1\nallow_anonymous true\n\
         set_tcp_nodelay true\nmax_queued_messages 100000\nmax_inflight_messages 100\n\
         persistence false\nlog_dest stderr\nlog_type error\nlog_type warning\n"
    )
}

/// A gateway process.
#[derive(Debug)]
pub struct Gateway {
    addr: SocketAddr,
    process: ChildProcess,
}

impl Gateway {
    /// Starts `bonker-gateway` against `mqtt_url` with its defaults (`log` overrides the log
    /// filter, e.g. `warn`) and waits until `/readyz` says it is connected to the broker.
    pub async fn start(tools: &Tools, mqtt_url: &str, log: Option<&str>) -> Result<Gateway> {
        let port = free_port()?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let mut command = Command::new(tools.binary("bonker-gateway")?);
        command
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--mqtt")
            .arg(mqtt_url);
        if let Some(log) = log {
            command.env("BONKER_LOG", log);
        }
        let mut process = ChildProcess::spawn("gateway", command, &tools.dir)?;
        wait_for_port(&mut process, port, Duration::from_secs(10))?;
        let mut http = HttpConnection::connect(addr).await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let (status, _) = http.get("/readyz").await?;
            if status.is_success() {
                break;
            }
            process.check_running()?;
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "the gateway did not connect to {mqtt_url} within 10 s:\n{}",
                    process.tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Gateway { addr, process })
    }

    /// Where it serves HTTP.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Fails with its output if it has exited.
    pub fn check_running(&mut self) -> Result<()> {
        self.process.check_running()
    }
}

/// What a stack runs.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// The broker.
    pub broker: BrokerKind,
    /// How many desks watch `namespace` (0: none).
    pub desks: usize,
    /// The namespace every bonk goes to.
    pub namespace: String,
    /// The gateway's log filter, when not its default.
    pub gateway_log: Option<String>,
    /// What the observer subscribes to.
    pub observe_acks: bool,
    /// Whether the observer counts the bonks on the namespace topic.
    pub observe_bonks: bool,
    /// Whether the desks announce themselves to Home Assistant and publish a bonk event after
    /// each bonk (the agent's default).
    pub desks_homeassistant: bool,
}

/// A running fleet. Dropping it stops every process.
#[derive(Debug)]
pub struct Stack {
    /// The desks' ids.
    pub desk_ids: Vec<String>,
    /// The harness's MQTT client.
    pub observer: Observer,
    /// The gateway.
    pub gateway: Gateway,
    // Dropped in field order: desks say offline before the broker goes.
    desks: Option<ChildProcess>,
    broker: Broker,
}

impl Stack {
    /// Starts broker, observer, gateway and desks, and returns once every desk is online.
    pub async fn start(tools: &Tools, options: &StackOptions) -> Result<Stack> {
        let broker = Broker::start(tools, options.broker, options.broker.as_str())?;
        let url = broker.url();
        let namespace = Namespace::new(&options.namespace)
            .map_err(|e| anyhow::anyhow!("namespace {}: {e}", options.namespace))?;
        let mut observer = Observer::connect(
            &url,
            ObserverOptions {
                acks: options.observe_acks,
                bonks_on: options.observe_bonks.then_some(namespace),
            },
        )
        .await?;
        let gateway = Gateway::start(tools, &url, options.gateway_log.as_deref()).await?;
        let prefix = format!("{}-", options.namespace);
        let desk_ids: Vec<String> = (0..options.desks)
            .map(|n| crate::desks::desk_id(&prefix, n))
            .collect();
        let desks = if options.desks > 0 {
            let mut command = Command::new(&tools.self_exe);
            command
                .arg("desks")
                .arg("--mqtt")
                .arg(&url)
                .arg("--namespace")
                .arg(&options.namespace)
                .arg("--count")
                .arg(options.desks.to_string())
                .arg("--id-prefix")
                .arg(&prefix);
            if !options.desks_homeassistant {
                command.arg("--without-homeassistant");
            }
            if let Some(log) = &tools.desks_log {
                command.arg("--log").arg(log);
            }
            let mut process = ChildProcess::spawn("desks", command, &tools.dir)?;
            // A thousand connections, subscriptions and Home Assistant announcements take a while
            // on two cores, more so on a busy machine.
            let timeout = Duration::from_secs(30 + options.desks as u64 / 10);
            if let Err(error) = observer.wait_online(&desk_ids, timeout).await {
                process.check_running()?;
                return Err(error.context(format!("desks' output:\n{}", process.tail())));
            }
            Some(process)
        } else {
            None
        };
        Ok(Stack {
            desk_ids,
            observer,
            gateway,
            desks,
            broker,
        })
    }

    /// The broker's `mqtt://` URL.
    pub fn mqtt_url(&self) -> String {
        self.broker.url()
    }

    /// A new keep-alive HTTP connection to the gateway.
    pub async fn http(&self) -> Result<HttpConnection> {
        HttpConnection::connect(self.gateway.addr()).await
    }

    /// `(name, pid)` of each process of the stack and of this harness, for CPU accounting.
    pub fn processes(&self) -> Vec<(&'static str, u32)> {
        let mut processes = vec![
            ("gateway", self.gateway.pid()),
            (
                match self.broker.kind() {
                    BrokerKind::Bonker => "bonker-broker",
                    BrokerKind::Mosquitto => "mosquitto",
                },
                self.broker.pid(),
            ),
        ];
        if let Some(desks) = &self.desks {
            processes.push(("desks", desks.pid()));
        }
        processes.push(("harness", std::process::id()));
        processes
    }

    /// Fails if a part of the stack has died.
    pub fn check_running(&mut self) -> Result<()> {
        self.gateway.check_running()?;
        if let Some(desks) = &mut self.desks {
            desks.check_running()?;
        }
        Ok(())
    }

    /// Reads a counter family from the gateway's `/metrics`, summed over its labels.
    pub async fn gateway_counter(&self, name: &str) -> Result<f64> {
        let mut http = self.http().await?;
        let (status, body) = http.get("/metrics").await?;
        if !status.is_success() {
            bail!("GET /metrics answered {status}");
        }
        Ok(sum_metric(&String::from_utf8_lossy(&body), name))
    }

    /// Stops the desks, then the observer; the rest stops when dropped.
    /// What the broker skipped for subscribers that fell behind (see [`Skipped`]).
    pub fn broker_skipped(&self) -> Option<Skipped> {
        self.broker.skipped()
    }

    pub async fn stop(mut self) {
        if let Some(mut desks) = self.desks.take() {
            tokio::task::spawn_blocking(move || desks.stop())
                .await
                .unwrap_or(());
        }
        self.observer.disconnect().await;
    }
}

/// The sum of every sample of the metric `name` (e.g. `bonker_gateway_acks_total`) in a
/// Prometheus text exposition.
pub fn sum_metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The path of `name` next to this executable (the release binaries of the workspace).
pub fn sibling_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find this executable")?;
    Ok(exe
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_broker_log_says_what_was_skipped_for_whom() {
        let log = "\
            2026-12-04T20:18:23Z  WARN run:[<] outgoing{connection_id=5}:outgoing_publish\
            {client_id=\"bonker-agent-storm-0007\"}: rumqttd::router::routing: \
            request_cursor=(1, 1016) start_cursor=(2, 1026) error=\"Read cursor start jumped \
            from (1, 1016) to (2, 1026) on bonker/bonk/storm\"\n\
            2026-12-04T20:18:24Z  WARN run:[<] outgoing{connection_id=2}:outgoing_publish\
            {client_id=\"bonker-gateway-vm-f3b192\"}: rumqttd::router::routing: \
            error=\"Read cursor start jumped from (3, 4000) to (5, 4500) on bonker/desk/+/ack\"\n\
            2026-12-04T20:18:24Z  WARN {client_id=\"bonker-gateway-vm-f3b192\"}: \
            error=\"Read cursor start jumped from (3, 10) to (4, 17) on bonker/bonk/+\"\n\
            2026-12-04T20:18:25Z  WARN bonker_broker::behind: a subscriber fell behind\n";
        assert_eq!(
            Skipped::from_log(log),
            Skipped {
                bonks_to_desks: 10,
                acks_to_gateway: 500,
                other: 7,
            }
        );
    }

    #[test]
    fn metric_families_are_summed_over_labels_only_for_the_named_family() {
        let text = "# TYPE bonker_gateway_acks counter\n\
                    bonker_gateway_acks_total{desk=\"a\",outcome=\"bonked\"} 3\n\
                    bonker_gateway_acks_total{desk=\"b\",outcome=\"rate_limited\"} 4\n\
                    bonker_gateway_acks_total_other 100\n\
                    bonker_gateway_dedupe_hits_total 5\n";
        assert_eq!(sum_metric(text, "bonker_gateway_acks_total"), 7.0);
        assert_eq!(sum_metric(text, "bonker_gateway_dedupe_hits_total"), 5.0);
        assert_eq!(sum_metric(text, "bonker_gateway_missing_total"), 0.0);
    }

    #[test]
    fn mosquitto_gets_no_delay_and_room_for_bursts() {
        let config = mosquitto_config(1883);
        assert!(config.contains("set_tcp_nodelay true"));
        assert!(config.contains("listener 1883 127.0.0.1"));
        assert!(config.contains("max_queued_messages 100000"));
    }
}
