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
use bonker_client::link::{Link, LinkEvent};
use bonker_client::mqtt::qos;
use bonker_protocol::homeassistant::{self as ha};
use bonker_protocol::topics::STATUS_DELIVERY;

use crate::config::AgentConfig;

/// How long `--forget` may take in all.
const FORGET_TIMEOUT: Duration = Duration::from_secs(30);

/// Between clearing the discovery configs and clearing the topics the entities read: Home
/// Assistant removes an entity a little after its config is cleared, and an entity still there
/// when its state topic is cleared renders its template on the empty message and logs an error.
const HOME_ASSISTANT_GRACE: Duration = Duration::from_secs(2);

/// Every retained topic a desk may have published, in the order they are cleared: its Home
/// Assistant discovery configs (under the configured discovery prefix, whether discovery is
/// enabled now or not), then the topics their entities read — its last bonk, health and status.
fn topic_groups(config: &AgentConfig) -> (Vec<String>, Vec<String>) {
    let discovery = ha::all_discovery_topics(&config.discovery_prefix, &config.desk);
    let state = vec![
        config.topics.desk_last_bonk(&config.desk),
        config.topics.desk_health(&config.desk),
        config.topics.desk_status(&config.desk),
    ];
    (discovery, state)
}

/// Clears every retained topic of the desk and waits until the broker acknowledged each clear.
/// Returns the topics cleared.
pub(crate) async fn forget(config: &AgentConfig) -> anyhow::Result<Vec<String>> {
    tokio::time::timeout(FORGET_TIMEOUT, clear(config))
        .await
        .unwrap_or_else(|_| bail!("the broker did not acknowledge within {FORGET_TIMEOUT:?}"))
}

async fn clear(config: &AgentConfig) -> anyhow::Result<Vec<String>> {
    let (discovery, state) = topic_groups(config);
    let total = discovery.len() + state.len();
    let mut options = config
        .mqtt
        .options(&config.client_id())
        .context("MQTT settings")?;
    options.set_clean_session(true);
    let (client, link) = Link::once(Some(&config.mqtt), options, total + 1);
    let mut link = link.spawn(total + 1);
    let clear_all = |topics: &[String]| {
        topics.iter().try_for_each(|topic| {
            client
                .try_publish(topic.clone(), qos(STATUS_DELIVERY), true, Vec::<u8>::new())
                .context("queue a clearing publish")
        })
    };
    clear_all(&discovery)?;
    let grace = tokio::time::sleep(Duration::MAX);
    tokio::pin!(grace);
    let mut in_grace = false;
    let mut acknowledged = 0;
    loop {
        tokio::select! {
            event = link.recv() => match event {
                Some(LinkEvent::PublishAcked { .. }) => {
                    acknowledged += 1;
                    if acknowledged == discovery.len() {
                        grace.as_mut().reset(tokio::time::Instant::now() + HOME_ASSISTANT_GRACE);
                        in_grace = true;
                    }
                    if acknowledged == total {
                        client.try_disconnect().context("queue DISCONNECT")?;
                    }
                }
                Some(LinkEvent::Disconnected { error, .. }) => {
                    return Err(anyhow::Error::new(error))
                        .with_context(|| format!("MQTT connection to {}", config.mqtt.url));
                }
                Some(LinkEvent::Closed) | None => {
                    if acknowledged < total {
                        bail!("the MQTT connection to {} ended early", config.mqtt.url);
                    }
                    return Ok(discovery.into_iter().chain(state).collect());
                }
                Some(_) => {}
            },
            () = &mut grace, if in_grace => {
                in_grace = false;
                clear_all(&state)?;
            }
        }
    }
}
