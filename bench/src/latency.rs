//! Latency: how long a webhook takes to be answered, and how long until every desk has acked.
//!
//! - **Webhook**: sequential POSTs of one-alert notifications; the time from sending the request
//!   to reading the 200, which the gateway sends once the broker has acknowledged (QoS 1 PUBACK)
//!   the bonk. Desks are attached and ack in the background, as in production.
//! - **Closed loop**: one-alert notifications, one at a time; the time from sending the request
//!   until the harness's MQTT client has seen the ack of every desk watching the namespace, and
//!   the spread between the first and the last ack. After each round the harness pauses as long
//!   as the round took (at least 1 ms), so the health reports and Home Assistant events every
//!   desk publishes after its ack are through before the next alert, as with real, sparse OOM
//!   kills.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bonker_protocol::Outcome;

use crate::http::Notifications;
use crate::observer::Seen;
use crate::procstat::CpuWindow;
use crate::stack::{BrokerKind, Stack, StackOptions, Tools};
use crate::stats::{Samples, Summary};

/// How long one closed-loop round may take before the run fails.
const ROUND_TIMEOUT: Duration = Duration::from_secs(10);

/// Rounds before the measured ones: connections warm, allocations made.
const WARM_UP_ROUNDS: usize = 10;

/// Webhook latency with desks attached.
#[derive(Debug, Clone)]
pub struct WebhookLatency {
    /// Which broker.
    pub broker: BrokerKind,
    /// Desks attached.
    pub desks: usize,
    /// POST → 200.
    pub latency: Summary,
    /// Non-200 answers (should be none).
    pub failures: usize,
}

/// Measures `requests` sequential webhooks (bounded by `budget`) against a stack with `desks`.
pub async fn webhook(
    tools: &Tools,
    broker: BrokerKind,
    desks: usize,
    requests: usize,
    budget: Duration,
) -> Result<WebhookLatency> {
    let namespace = format!("webhook{desks}");
    let stack = Stack::start(
        tools,
        &StackOptions {
            broker,
            desks,
            namespace: namespace.clone(),
            gateway_log: None,
            observe_acks: false,
            observe_bonks: false,
            desks_homeassistant: true,
        },
    )
    .await?;
    let notifications = Notifications::new();
    let mut http = stack.http().await?;
    let mut samples = Vec::with_capacity(requests);
    let mut failures = 0;
    let started = Instant::now();
    for n in 0..WARM_UP_ROUNDS + requests {
        if started.elapsed() > budget {
            break;
        }
        let (body, _) = notifications.oom_killed(&namespace, 1);
        let sent = Instant::now();
        let (status, _) = http.post_json("/webhook", body).await?;
        let took = sent.elapsed();
        if !status.is_success() {
            failures += 1;
        } else if n >= WARM_UP_ROUNDS {
            samples.push(took);
        }
    }
    stack.stop().await;
    Ok(WebhookLatency {
        broker,
        desks,
        latency: Samples::new(samples).summary(),
        failures,
    })
}

/// Closed-loop latency for one fleet size and broker.
#[derive(Debug, Clone)]
pub struct ClosedLoop {
    /// Which broker.
    pub broker: BrokerKind,
    /// Desks watching the namespace.
    pub desks: usize,
    /// Whether the desks had Home Assistant discovery on (the default).
    pub homeassistant: bool,
    /// POST → 200 in these rounds.
    pub webhook: Summary,
    /// POST → last desk's ack.
    pub closed_loop: Summary,
    /// First ack → last ack.
    pub skew: Summary,
    /// Acks that were not `bonked` (should be none).
    pub not_bonked: usize,
    /// How long starting the fleet took (all desks online).
    pub fleet_start: Duration,
    /// The machine's 1-minute load average as the run started.
    pub load: Option<f64>,
    /// CPU time each process used per measured round (pauses included), by process name.
    pub cpu_per_round: Vec<(String, Duration)>,
}

/// Runs closed-loop rounds (at most `rounds`, within `budget`) against `desks` desks.
pub async fn closed_loop(
    tools: &Tools,
    broker: BrokerKind,
    desks: usize,
    homeassistant: bool,
    rounds: usize,
    budget: Duration,
) -> Result<ClosedLoop> {
    let namespace = format!("fleet{desks}");
    let load = crate::machine::Load::now().map(|l| l.one);
    let starting = Instant::now();
    let mut stack = Stack::start(
        tools,
        &StackOptions {
            broker,
            desks,
            namespace: namespace.clone(),
            gateway_log: None,
            observe_acks: true,
            observe_bonks: false,
            desks_homeassistant: homeassistant,
        },
    )
    .await?;
    let fleet_start = starting.elapsed();
    let notifications = Notifications::new();
    let mut http = stack.http().await?;
    let mut webhook = Vec::with_capacity(rounds);
    let mut closed = Vec::with_capacity(rounds);
    let mut skew = Vec::with_capacity(rounds);
    let mut not_bonked = 0;
    let started = Instant::now();
    let mut cpu_window = None;
    for n in 0..WARM_UP_ROUNDS + rounds {
        if n == WARM_UP_ROUNDS {
            cpu_window = Some(CpuWindow::start(&stack.processes())?);
        }
        if started.elapsed() > budget {
            break;
        }
        let (body, _) = notifications.oom_killed(&namespace, 1);
        // Whatever is left from the previous round (nothing, normally) must not count here.
        stack.observer.drain();
        let sent = Instant::now();
        let (status, reply) = http.post_json("/webhook", body).await?;
        let answered = sent.elapsed();
        if !status.is_success() {
            bail!(
                "webhook answered {status}: {}",
                String::from_utf8_lossy(&reply)
            );
        }
        let bonk_id = bonk_id_of(&reply)?;
        let round = wait_for_acks(&mut stack, &bonk_id, desks, ROUND_TIMEOUT)
            .await
            .with_context(|| format!("round {n} with {desks} desks on {}", broker.as_str()))?;
        not_bonked += round.not_bonked;
        let total = round.last.duration_since(sent);
        if n >= WARM_UP_ROUNDS {
            webhook.push(answered);
            closed.push(total);
            skew.push(round.last.duration_since(round.first));
        }
        tokio::time::sleep(total.max(Duration::from_millis(1))).await;
    }
    stack.check_running()?;
    let measured_rounds = closed.len().max(1) as u32;
    let cpu_per_round = match cpu_window {
        Some(window) => window
            .finish()?
            .into_iter()
            .map(|share| (share.name, share.cpu / measured_rounds))
            .collect(),
        None => Vec::new(),
    };
    stack.stop().await;
    Ok(ClosedLoop {
        broker,
        desks,
        homeassistant,
        webhook: Samples::new(webhook).summary(),
        closed_loop: Samples::new(closed).summary(),
        skew: Samples::new(skew).summary(),
        not_bonked,
        fleet_start,
        load,
        cpu_per_round,
    })
}

/// The id of the single bonk a webhook reply names.
pub fn bonk_id_of(reply: &[u8]) -> Result<String> {
    let json: serde_json::Value =
        serde_json::from_slice(reply).context("the webhook reply is not JSON")?;
    json["bonks"][0]["id"]
        .as_str()
        .map(str::to_owned)
        .context("the webhook reply names no bonk")
}

/// When a round's acks arrived.
#[derive(Debug)]
struct Round {
    first: Instant,
    last: Instant,
    not_bonked: usize,
}

/// Waits until `desks` distinct desks have acked `bonk_id`.
async fn wait_for_acks(
    stack: &mut Stack,
    bonk_id: &str,
    desks: usize,
    timeout: Duration,
) -> Result<Round> {
    let deadline = Instant::now() + timeout;
    let mut acks: HashMap<String, (Instant, Outcome)> = HashMap::with_capacity(desks);
    while acks.len() < desks {
        let left = deadline.saturating_duration_since(Instant::now());
        match stack.observer.next_within(left).await {
            Some(Seen::Ack {
                desk,
                bonk_id: id,
                outcome,
                at,
            }) if id == bonk_id => {
                acks.entry(desk).or_insert((at, outcome));
            }
            Some(_) => {}
            None => {
                stack.check_running()?;
                bail!(
                    "only {} of {desks} desks acked within {timeout:?}",
                    acks.len()
                );
            }
        }
    }
    let first = acks
        .values()
        .map(|(at, _)| *at)
        .min()
        .unwrap_or_else(Instant::now);
    let last = acks.values().map(|(at, _)| *at).max().unwrap_or(first);
    let not_bonked = acks
        .values()
        .filter(|(_, outcome)| *outcome != Outcome::Bonked)
        .count();
    Ok(Round {
        first,
        last,
        not_bonked,
    })
}
