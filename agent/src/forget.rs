//! `bonker-agent --forget`: remove a retired desk from the broker and from Home Assistant.
//!
//! Retained messages outlive the agent that published them, so a desk that is gone for good would
//! stay in Home Assistant (its discovery configs) and in `bonker fleet` (its status and health)
//! forever. Publishing an empty retained message clears a topic. This connects with the desk's own
//! client id and a clean session, which also makes the broker drop the desk's persistent session
//! (and the bonks queued in it) — so stop the desk's agent first, or it will be kicked off and come
//! straight back.

use std::time::Duration;

use anyhow::{Context as _, bail};
use bonker_client::mqtt::{qos, tune_event_loop};
use bonker_protocol::homeassistant::{self as ha};
use bonker_protocol::topics::STATUS_DELIVERY;
use rumqttc::{AsyncClient, Event, Incoming, Outgoing};

use crate::config::AgentConfig;

/// How long `--forget` may take in all.
const FORGET_TIMEOUT: Duration = Duration::from_secs(30);

/// Every retained topic a desk may have published: its Home Assistant discovery configs (under
/// the configured discovery prefix, whether discovery is enabled now or not), its last bonk, health
/// and status.
pub fn retained_topics(config: &AgentConfig) -> Vec<String> {
    let mut topics = ha::all_discovery_topics(&config.discovery_prefix, &config.desk);
    topics.push(config.topics.desk_last_bonk(&config.desk));
    topics.push(config.topics.desk_health(&config.desk));
    topics.push(config.topics.desk_status(&config.desk));
    topics
}

/// Clears every retained topic of the desk and waits until the broker acknowledged each clear.
/// Returns the topics cleared.
pub async fn forget(config: &AgentConfig) -> anyhow::Result<Vec<String>> {
    tokio::time::timeout(FORGET_TIMEOUT, clear(config))
        .await
        .unwrap_or_else(|_| bail!("the broker did not acknowledge within {FORGET_TIMEOUT:?}"))
}

async fn clear(config: &AgentConfig) -> anyhow::Result<Vec<String>> {
    let topics = retained_topics(config);
    let mut options = config
        .mqtt
        .options(&config.client_id())
        .context("MQTT settings")?;
    options.set_clean_session(true);
    let (client, mut event_loop) = AsyncClient::new(options, topics.len() + 1);
    tune_event_loop(&mut event_loop, &config.mqtt);
    for topic in &topics {
        client
            .try_publish(topic.clone(), qos(STATUS_DELIVERY), true, Vec::<u8>::new())
            .context("queue a clearing publish")?;
    }
    let mut acknowledged = 0;
    loop {
        let event = event_loop
            .poll()
            .await
            .with_context(|| format!("MQTT connection to {}", config.mqtt.url))?;
        match event {
            Event::Incoming(Incoming::PubAck(_)) => {
                acknowledged += 1;
                if acknowledged == topics.len() {
                    client.try_disconnect().context("queue DISCONNECT")?;
                }
            }
            Event::Outgoing(Outgoing::Disconnect) => {
                crate::link::wait_for_close(&mut event_loop).await;
                return Ok(topics);
            }
            _ => {}
        }
    }
}
