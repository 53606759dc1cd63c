//! `bonker demo`: a whole fleet in one process — the embedded broker, the gateway and three desks
//! with simulated servos — plus a live view of every bonk and ack.
//!
//! It is the first thing a newcomer runs, so it prints the exact commands to try and shows what
//! each desk does with them. Everything in it is the real code: the same broker, gateway and agent
//! libraries the production binaries run, talking real MQTT and HTTP on local ports. Anyone who
//! can reach the demo's broker can publish to it, so the live view's lines go out through
//! [`terminal::print_line`].

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use bonker_client::MqttSettings;
use bonker_protocol::{Ack, Bonk, BonkId, Outcome, Route, Severity, Topics};
use chrono::Local;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::session::{Received, Session};
use crate::terminal;

/// The Alertmanager webhook payload the demo suggests posting.
const EXAMPLE_PAYLOAD: &str = include_str!("../../examples/alertmanager-oomkilled.json");
const EXAMPLE_PATH: &str = "examples/alertmanager-oomkilled.json";

/// The demo's desks: who watches what.
const DESKS: [(&str, &str); 3] = [("alice", "payments"), ("bob", "checkout"), ("carol", "+")];

/// Where the demo listens.
#[derive(Debug, Clone)]
pub(crate) struct Ports {
    pub(crate) address: IpAddr,
    pub(crate) mqtt: u16,
    pub(crate) http: u16,
}

/// Runs the demo until ctrl-c or SIGTERM.
pub(crate) async fn run(ports: Ports) -> Result<()> {
    let broker_addr = SocketAddr::new(ports.address, ports.mqtt);
    let broker = start_broker(broker_addr).await?;
    let mqtt = MqttSettings {
        url: broker.url(),
        ..MqttSettings::default()
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut stop = stop_rx.clone();
        async move {
            let _ = stop.wait_for(|stop| *stop).await;
        }
    };
    let mut tasks = JoinSet::new();
    let listener = listen(SocketAddr::new(ports.address, ports.http)).await?;
    let http_addr = listener.local_addr()?;
    let gateway = bonker_gateway::GatewaySettings {
        listen: http_addr,
        mqtt: mqtt.clone(),
        ..Default::default()
    }
    .validate()?;
    tasks.spawn(bonker_gateway::run(listener, gateway, stopped()));

    // Watch the fleet before the desks connect, so their first words show.
    let topics = Topics::default();
    let mut view = Session::connect(&mqtt).await?;
    view.subscribe(&[
        topics.all_namespace_bonks(),
        topics.all_desk_bonks(),
        topics.all_acks(),
        topics.all_statuses(),
    ])
    .await?;
    for (desk, namespace) in DESKS {
        let config = bonker_agent::AgentSettings {
            desk: Some(desk.to_owned()),
            namespaces: vec![namespace.to_owned()],
            mqtt: mqtt.clone(),
            ..Default::default()
        }
        .validate()?;
        let servo = bonker_agent::servo::open(&config.servo)?;
        let stop = stopped();
        tasks.spawn(async move { bonker_agent::run(config, servo, stop).await });
    }
    print_welcome(&mqtt.url, broker_addr.port(), http_addr)?;
    follow(&topics, &mut view, &mut tasks).await?;
    println!("stopping: desks park their arms and say offline…");
    let _ = stop_tx.send(true);
    while let Some(result) = tasks.join_next().await {
        result??;
    }
    view.disconnect().await;
    drop(broker);
    println!("bye");
    Ok(())
}

/// The embedded broker on `addr`.
async fn start_broker(addr: SocketAddr) -> Result<bonker_broker::EmbeddedBroker> {
    tokio::task::spawn_blocking(move || {
        bonker_broker::EmbeddedBroker::start(bonker_broker::BrokerSettings {
            listen: addr,
            ..Default::default()
        })
    })
    .await?
    .with_context(|| {
        format!("cannot start the MQTT broker on {addr} (pick another port with --mqtt-port)")
    })
}

/// The gateway's listener.
async fn listen(addr: SocketAddr) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (pick another port with --http-port)"))
}

/// Prints what happens in the fleet until ctrl-c or SIGTERM; an error when a part of the fleet
/// stops on its own.
async fn follow(
    topics: &Topics,
    view: &mut Session,
    tasks: &mut JoinSet<Result<()>>,
) -> Result<()> {
    let mut bonks: HashMap<BonkId, Bonk> = HashMap::new();
    loop {
        tokio::select! {
            message = view.next() => {
                if let Some(line) = describe(topics, &message?, &mut bonks) {
                    terminal::print_line(&line);
                }
            }
            () = bonker_client::shutdown_signal() => return Ok(()),
            Some(result) = tasks.join_next() => {
                // A part of the fleet stopped on its own: say why and stop the rest.
                result??;
                anyhow::bail!("a part of the demo fleet stopped unexpectedly");
            }
        }
    }
}

/// Where the example payload can be read from: the repository's file when running from a
/// checkout, else a copy written next to the system's temporary files.
fn example_payload_path() -> Result<PathBuf> {
    if Path::new(EXAMPLE_PATH).exists() {
        return Ok(PathBuf::from(EXAMPLE_PATH));
    }
    let path = std::env::temp_dir().join("bonker-alertmanager-oomkilled.json");
    std::fs::write(&path, EXAMPLE_PAYLOAD)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

fn print_welcome(mqtt_url: &str, mqtt_port: u16, http_addr: SocketAddr) -> Result<()> {
    let example = example_payload_path()?;
    let example = example.display();
    let host = if http_addr.ip().is_unspecified() {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), http_addr.port())
    } else {
        http_addr
    };
    let port_flag = if mqtt_port == 1883 {
        String::new()
    } else {
        format!(" -p {mqtt_port}")
    };
    let bonker_flag = if mqtt_port == 1883 {
        String::new()
    } else {
        format!(" --mqtt {mqtt_url}")
    };
    println!(
        "\
bonker demo: a broker, a gateway and three desks with simulated servos
  broker   {mqtt_url}
  gateway  http://{host}   (webhook: POST /webhook, fleet: GET /api/desks, metrics: GET /metrics)
  page     http://{host}/  the fleet page: open it in a browser to watch desks, bonks and acks live
  desks    alice watches payments, bob watches checkout, carol watches every namespace

Try, from another terminal:
  # Alertmanager's webhook, as it posts an OOMKilled alert for namespace payments:
  curl -sS -H 'Content-Type: application/json' --data @{example} http://{host}/webhook
  # by hand, a light tap for every desk watching checkout:
  mosquitto_pub{port_flag} -q 1 -t bonker/bonk/checkout -m tap
  # with the CLI, waiting for the acks:
  cargo run --release --{bonker_flag} bonk --namespace payments --severity warning
  # the fleet:
  cargo run --release --{bonker_flag} fleet

Posting the same alert again bonks nothing: the gateway drops alerts it has already delivered.
ctrl-c stops the demo.
"
    );
    Ok(())
}

fn motion(severity: Severity) -> &'static str {
    match severity {
        Severity::Critical => "BONK!",
        Severity::Warning => "tap",
        Severity::Info => "wiggle",
    }
}

/// One line for the live view, remembering bonks so acks can say which pod.
fn describe(
    topics: &Topics,
    message: &Received,
    bonks: &mut HashMap<BonkId, Bonk>,
) -> Option<String> {
    let time = Local::now().format("%H:%M:%S");
    match topics.route(&message.topic)? {
        Route::NamespaceBonk(namespace) => {
            let bonk = Bonk::parse_lenient(&message.payload).bonk;
            let line = format!(
                "{time}  bonk  → namespace {namespace}: {} from {}{}",
                bonk.severity,
                bonk.source.as_str(),
                what(&bonk)
            );
            remember(bonks, bonk);
            Some(line)
        }
        Route::DeskBonk(desk) => {
            let bonk = Bonk::parse_lenient(&message.payload).bonk;
            let line = format!(
                "{time}  bonk  → desk {desk}: {} from {}{}",
                bonk.severity,
                bonk.source.as_str(),
                what(&bonk)
            );
            remember(bonks, bonk);
            Some(line)
        }
        Route::Ack(desk) => {
            let ack: Ack = serde_json::from_slice(&message.payload).ok()?;
            let bonk = bonks.get(&ack.bonk_id);
            let pod = bonk.map(what).unwrap_or_default();
            let line = match ack.outcome {
                Outcome::Bonked => format!(
                    "{time}  🐧 {:<6} {}{pod}",
                    desk.as_str(),
                    motion(ack.severity.unwrap_or_default())
                ),
                other => format!("{time}  🐧 {:<6} skipped: {other}{pod}", desk.as_str()),
            };
            Some(line)
        }
        Route::Status(desk) => Some(format!(
            "{time}  desk {desk} is {}",
            String::from_utf8_lossy(&message.payload)
        )),
        Route::Health(_) | Route::LastBonk(_) => None,
    }
}

fn what(bonk: &Bonk) -> String {
    let place = match (&bonk.namespace, &bonk.pod) {
        (Some(namespace), Some(pod)) => format!("{namespace}/{pod}"),
        (None, Some(pod)) => pod.clone(),
        _ => String::new(),
    };
    let parts: Vec<&str> = [place.as_str(), bonk.summary.as_deref().unwrap_or("")]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join(": "))
    }
}

/// Keeps the last few hundred bonks, enough to label their acks.
fn remember(bonks: &mut HashMap<BonkId, Bonk>, bonk: Bonk) {
    if bonks.len() >= 512 {
        bonks.clear();
    }
    bonks.insert(bonk.id.clone(), bonk);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_live_view_never_shows_a_control_character_from_the_network() {
        let topics = Topics::default();
        let mut bonks = HashMap::new();
        let hostile = "\x1b]0;pwned\x07\u{9b}31m\u{202e}\r\n";
        let status = Received {
            topic: "bonker/desk/alice/status".to_owned(),
            payload: hostile.as_bytes().to_vec(),
        };
        let bonk = Received {
            topic: "bonker/bonk/payments".to_owned(),
            payload: serde_json::json!({ "pod": hostile, "summary": hostile })
                .to_string()
                .into_bytes(),
        };
        for message in [status, bonk] {
            let line = describe(&topics, &message, &mut bonks).expect("a line");
            let shown = terminal::text(&line);
            assert!(
                shown.chars().all(|c| !c.is_control() && c != '\u{202e}'),
                "{shown:?}"
            );
            assert!(
                shown.contains(r"\u{1b}]0;pwned\u{7}\u{9b}31m\u{202e}\r\n"),
                "{shown}"
            );
        }
    }
}
