//! A fleet of simulated desks in one process: N real desk agents (the `bonker_agent` library the
//! `bonker-agent` binary runs), each with its own MQTT connection, persistent session and servo
//! worker thread, driving a simulated servo whose strokes take no time, so a closed-loop
//! measurement sees only software.
//!
//! The harness runs this as a child process (`bonker-bench desks …`) so the kernel accounts the
//! fleet's CPU apart from the gateway's and the broker's.
//!
//! Settings that differ from an agent's defaults, and why:
//! - `servo.stroke` is zero (the config file cannot say so; its minimum is 10 ms): only software
//!   is measured;
//! - `rate_limit` is 1,000,000 bonks per second: the benchmark bonks every desk far more often
//!   than the real limit (10 per minute) allows, and a rate-limited bonk skips the servo;
//! - no log output: each real desk logs on its own Pi; a thousand desks logging into one
//!   process would measure this machine's terminal, not the fleet.

use std::time::Duration;

use anyhow::{Context, Result};
use bonker_agent::config::{RateLimitSettings, ServoSettings};
use bonker_agent::{AgentConfig, AgentSettings};
use bonker_client::MqttSettings;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// The desk rate limit for benchmarks: effectively none.
pub const BENCH_RATE_MAX_BONKS: u32 = 1_000_000;

/// How the harness names desk `n` of a fleet.
pub fn desk_id(prefix: &str, n: usize) -> String {
    format!("{prefix}{n:04}")
}

/// The agent configuration of one benchmark desk; `homeassistant` is the agent's default (on).
pub fn bench_desk_config(
    url: &str,
    desk: &str,
    namespace: &str,
    homeassistant: bool,
) -> Result<AgentConfig> {
    let mut settings = AgentSettings {
        desk: Some(desk.to_owned()),
        namespaces: vec![namespace.to_owned()],
        rate_limit: RateLimitSettings {
            max_bonks: BENCH_RATE_MAX_BONKS,
            per_s: 1,
        },
        servo: ServoSettings::default(),
        mqtt: MqttSettings {
            url: url.to_owned(),
            ..MqttSettings::default()
        },
        ..AgentSettings::default()
    };
    settings.homeassistant.enabled = homeassistant;
    let mut config = settings
        .validate()
        .with_context(|| format!("agent settings for desk {desk}"))?;
    config.servo.stroke = Duration::ZERO;
    Ok(config)
}

/// Runs `count` desks watching `namespace` until SIGTERM or ctrl-c, then shuts each down cleanly
/// (offline published, DISCONNECT sent).
pub async fn run(
    url: &str,
    namespace: &str,
    count: usize,
    prefix: &str,
    homeassistant: bool,
) -> Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut desks = JoinSet::new();
    for n in 0..count {
        let config = bench_desk_config(url, &desk_id(prefix, n), namespace, homeassistant)?;
        let servo = bonker_agent::servo::open(&config.servo)?;
        let mut stop = stop_rx.clone();
        desks.spawn(async move {
            bonker_agent::run(config, servo, async move {
                let _ = stop.wait_for(|stop| *stop).await;
            })
            .await
        });
    }
    tokio::select! {
        () = bonker_client::shutdown_signal() => {}
        Some(result) = desks.join_next() => {
            // A desk stopped on its own: that is a failure of the run.
            result??;
            anyhow::bail!("a desk stopped unexpectedly");
        }
    }
    let _ = stop_tx.send(true);
    while let Some(result) = desks.join_next().await {
        result??;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_desks_are_valid_agents_with_instant_strokes() {
        let config =
            bench_desk_config("mqtt://127.0.0.1:1883", &desk_id("d10-", 7), "f", true).expect("ok");
        assert_eq!(config.desk.to_string(), "d10-0007");
        assert!(config.homeassistant.is_some(), "the agent's default");
        assert_eq!(config.servo.stroke, Duration::ZERO);
        assert_eq!(config.rate_max_bonks, BENCH_RATE_MAX_BONKS);
        assert_eq!(config.client_id(), "bonker-agent-d10-0007");
    }
}
