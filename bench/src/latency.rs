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
//! - **Floor**: in the same run, alternating round for round with bonker's on the same broker,
//!   the same fan-out done by bare MQTT clients ([`crate::floor`]): what MQTT itself costs on this
//!   broker and machine at that moment, against which bonker's rounds are read as ratios.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bonker_protocol::Outcome;

use crate::floor::Floor;
use crate::http::Notifications;
use crate::observer::Seen;
use crate::procstat::CpuSplit;
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
    /// The floor's rounds, interleaved with these (`None`: not measured).
    pub floor: Option<FloorLoop>,
}

/// The floor's side of a closed-loop run: bare MQTT clients, round for round with bonker's.
#[derive(Debug, Clone)]
pub struct FloorLoop {
    /// Publish → last reply.
    pub closed_loop: Summary,
    /// First reply → last reply.
    pub skew: Summary,
    /// CPU time each process used per floor round (pauses included), by process name; the bare
    /// clients' process is `floor-desks`.
    pub cpu_per_round: Vec<(String, Duration)>,
}

/// The name of the floor's bare clients' process in CPU accounts.
pub const FLOOR_DESKS: &str = "floor-desks";

/// CPU time per desk and bonk (or floor message): the desks' process's CPU per round over the
/// fleet size (`None` when that process was not accounted).
pub fn cpu_per_desk(
    cpu_per_round: &[(String, Duration)],
    process: &str,
    desks: usize,
) -> Option<Duration> {
    cpu_per_round
        .iter()
        .find(|(name, _)| name == process)
        .map(|(_, cpu)| *cpu / desks.max(1) as u32)
}

/// bonker's closed loop over the floor's, in one run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FloorRatios {
    /// Closed loop p50 over the floor's.
    pub p50: f64,
    /// Closed loop p99 over the floor's.
    pub p99: f64,
    /// First → last ack p50 over the floor's first → last reply p50 (`None` when the floor's is
    /// zero, as with one desk).
    pub skew_p50: Option<f64>,
    /// The same at p99.
    pub skew_p99: Option<f64>,
    /// The desks' CPU per desk and bonk over the bare clients' (`None` when either is zero or
    /// was not accounted).
    pub cpu_per_desk: Option<f64>,
}

impl ClosedLoop {
    /// The ratios to the floor, when it was measured.
    pub fn floor_ratios(&self) -> Option<FloorRatios> {
        let floor = self.floor.as_ref()?;
        let over =
            |a: Duration, b: Duration| (!b.is_zero()).then(|| a.as_secs_f64() / b.as_secs_f64());
        Some(FloorRatios {
            p50: over(self.closed_loop.p50, floor.closed_loop.p50)?,
            p99: over(self.closed_loop.p99, floor.closed_loop.p99)?,
            skew_p50: over(self.skew.p50, floor.skew.p50),
            skew_p99: over(self.skew.p99, floor.skew.p99),
            cpu_per_desk: match (
                cpu_per_desk(&self.cpu_per_round, "desks", self.desks),
                cpu_per_desk(&floor.cpu_per_round, FLOOR_DESKS, self.desks),
            ) {
                (Some(bonker), Some(floor)) if !bonker.is_zero() => over(bonker, floor),
                _ => None,
            },
        })
    }
}

/// Runs closed-loop rounds (at most `rounds`, within `budget`) against `desks` desks, each
/// followed, `with_floor`, by a floor round of as many bare clients on the same broker.
pub async fn closed_loop(
    tools: &Tools,
    broker: BrokerKind,
    desks: usize,
    homeassistant: bool,
    with_floor: bool,
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
    let mut floor = if with_floor {
        Some(Floor::start(tools, &stack.mqtt_url(), &format!("floor{desks}"), desks).await?)
    } else {
        None
    };
    let notifications = Notifications::new();
    let mut http = stack.http().await?;
    let mut webhook = Vec::with_capacity(rounds);
    let mut closed = Vec::with_capacity(rounds);
    let mut skew = Vec::with_capacity(rounds);
    let mut floor_closed = Vec::with_capacity(rounds);
    let mut floor_skew = Vec::with_capacity(rounds);
    let mut not_bonked = 0;
    let mut processes = stack.processes();
    if let Some(floor) = &floor {
        processes.push((FLOOR_DESKS, floor.pid()));
    }
    // Phase 0 is bonker's rounds, phase 1 the floor's; each with the pause after it.
    let mut cpu = CpuSplit::start(&processes, 2)?;
    let started = Instant::now();
    for n in 0..WARM_UP_ROUNDS + rounds {
        if started.elapsed() > budget {
            break;
        }
        let measured = n >= WARM_UP_ROUNDS;

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
        if measured {
            webhook.push(answered);
            closed.push(total);
            skew.push(round.last.duration_since(round.first));
        }
        tokio::time::sleep(total.max(Duration::from_millis(1))).await;
        if measured {
            cpu.charge(0)?;
        } else {
            cpu.skip()?;
        }

        let Some(floor) = &mut floor else {
            continue;
        };
        let round = floor.round(ROUND_TIMEOUT).await.with_context(|| {
            format!(
                "floor round {n} with {desks} clients on {}",
                broker.as_str()
            )
        })?;
        let total = round.last.duration_since(round.sent);
        if measured {
            floor_closed.push(total);
            floor_skew.push(round.last.duration_since(round.first));
        }
        tokio::time::sleep(total.max(Duration::from_millis(1))).await;
        if measured {
            cpu.charge(1)?;
        } else {
            cpu.skip()?;
        }
    }
    stack.check_running()?;
    if let Some(floor) = &mut floor {
        floor.check_running()?;
    }
    let measured_rounds = closed.len();
    let cpu_per_round = cpu
        .per_round(0, measured_rounds)
        .into_iter()
        .filter(|(name, _)| name != FLOOR_DESKS)
        .collect();
    let floor_cpu_per_round = cpu.per_round(1, measured_rounds);
    if let Some(floor) = floor {
        floor.stop().await;
    }
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
        floor: with_floor.then(|| FloorLoop {
            closed_loop: Samples::new(floor_closed).summary(),
            skew: Samples::new(floor_skew).summary(),
            cpu_per_round: floor_cpu_per_round,
        }),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(p50_ms: u64, p99_ms: u64) -> Summary {
        Summary {
            count: 100,
            p50: Duration::from_millis(p50_ms),
            p90: Duration::from_millis(p99_ms),
            p99: Duration::from_millis(p99_ms),
            max: Duration::from_millis(p99_ms),
        }
    }

    fn run(desks: usize, floor: Option<FloorLoop>) -> ClosedLoop {
        ClosedLoop {
            broker: BrokerKind::Bonker,
            desks,
            homeassistant: true,
            webhook: summary(1, 2),
            closed_loop: summary(13, 30),
            skew: summary(6, 12),
            not_bonked: 0,
            fleet_start: Duration::from_secs(1),
            load: None,
            cpu_per_round: vec![
                ("desks".to_owned(), Duration::from_millis(8)),
                ("bonker-broker".to_owned(), Duration::from_millis(5)),
            ],
            floor,
        }
    }

    #[test]
    fn ratios_to_the_floor_are_bonker_over_floor() {
        let floor = FloorLoop {
            closed_loop: summary(10, 20),
            skew: summary(4, 10),
            cpu_per_round: vec![(FLOOR_DESKS.to_owned(), Duration::from_millis(2))],
        };
        let ratios = run(100, Some(floor)).floor_ratios().expect("measured");
        assert!((ratios.p50 - 1.3).abs() < 1e-9);
        assert!((ratios.p99 - 1.5).abs() < 1e-9);
        assert_eq!(ratios.skew_p50, Some(1.5));
        assert_eq!(ratios.skew_p99, Some(1.2));
        assert_eq!(ratios.cpu_per_desk, Some(4.0));
        assert!(run(100, None).floor_ratios().is_none());
    }

    #[test]
    fn a_zero_floor_skew_or_unaccounted_cpu_gives_no_ratio() {
        let floor = FloorLoop {
            closed_loop: summary(1, 2),
            skew: summary(0, 0),
            cpu_per_round: Vec::new(),
        };
        let ratios = run(1, Some(floor)).floor_ratios().expect("measured");
        assert_eq!(ratios.skew_p50, None);
        assert_eq!(ratios.cpu_per_desk, None);
        assert_eq!(
            cpu_per_desk(&run(100, None).cpu_per_round, "desks", 100),
            Some(Duration::from_micros(80))
        );
    }
}
