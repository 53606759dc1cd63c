//! No lost bonks under concurrency: many webhooks at the same moment, each for a distinct alert,
//! must give exactly one bonk per alert on the namespace topic and exactly one ack per bonk from
//! every desk watching it.
//!
//! Counting "exactly" needs an end: after the burst the harness sends one more alert (the
//! sentinel) and waits for every desk's ack of it. A desk handles its messages in order and the
//! broker keeps each publisher's order, so once a desk's sentinel ack is in, any duplicate or late
//! ack of the burst from that desk would already have arrived.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use bonker_protocol::Outcome;

use crate::http::Notifications;
use crate::latency::bonk_id_of;
use crate::observer::Seen;
use crate::stack::{BrokerKind, Stack, StackOptions, Tools};

/// How long the burst's acks may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// What the burst produced.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Which broker.
    pub broker: BrokerKind,
    /// Concurrent webhooks sent.
    pub webhooks: usize,
    /// Desks watching.
    pub desks: usize,
    /// Webhooks answered 200.
    pub answered_ok: usize,
    /// Bonks the gateway said it published (sum of `published` in the replies).
    pub published: usize,
    /// Distinct burst bonks seen on the namespace topic by an independent subscriber.
    pub bonks_on_topic: usize,
    /// Burst bonk messages seen on the topic in all (more than distinct = duplicates).
    pub bonk_messages: usize,
    /// Fewest distinct burst bonks any desk acked.
    pub min_acked_per_desk: usize,
    /// Most distinct burst bonks any desk acked.
    pub max_acked_per_desk: usize,
    /// Acks beyond the first for the same bonk and desk.
    pub duplicate_acks: usize,
    /// Acks by outcome.
    pub outcomes: BTreeMap<&'static str, usize>,
    /// From the first request to the last ack of the burst.
    pub took: Duration,
}

impl Delivery {
    /// Exactly one bonk per alert and one ack per bonk per desk.
    pub fn exact(&self) -> bool {
        self.answered_ok == self.webhooks
            && self.published == self.webhooks
            && self.bonks_on_topic == self.webhooks
            && self.bonk_messages == self.webhooks
            && self.min_acked_per_desk == self.webhooks
            && self.max_acked_per_desk == self.webhooks
            && self.duplicate_acks == 0
    }
}

/// Sends `webhooks` concurrent one-alert webhooks (one connection each) to a stack with `desks`.
pub async fn burst(
    tools: &Tools,
    broker: BrokerKind,
    webhooks: usize,
    desks: usize,
) -> Result<Delivery> {
    let namespace = "burst".to_owned();
    let mut stack = Stack::start(
        tools,
        &StackOptions {
            broker,
            desks,
            namespace: namespace.clone(),
            gateway_log: None,
            observe_acks: true,
            observe_bonks: true,
            desks_homeassistant: true,
        },
    )
    .await?;
    let notifications = Notifications::new();
    let mut connections = Vec::with_capacity(webhooks);
    for _ in 0..webhooks {
        connections.push(stack.http().await?);
    }
    // Every request is built and every connection open before the first is sent.
    let start = Arc::new(tokio::sync::Barrier::new(webhooks));
    let mut requests = Vec::with_capacity(webhooks);
    for mut http in connections {
        let (body, _) = notifications.oom_killed(&namespace, 1);
        let start = start.clone();
        requests.push(tokio::spawn(async move {
            start.wait().await;
            http.post_json("/webhook", body).await
        }));
    }
    let sent = Instant::now();
    let mut answered_ok = 0;
    let mut published = 0;
    let mut burst_ids = HashSet::new();
    for request in requests {
        let (status, reply) = request.await??;
        if status.is_success() {
            answered_ok += 1;
            let json: serde_json::Value = serde_json::from_slice(&reply)?;
            published += json["published"].as_u64().unwrap_or(0) as usize;
            burst_ids.insert(bonk_id_of(&reply)?);
        }
    }
    // The sentinel.
    let mut http = stack.http().await?;
    let (body, _) = notifications.oom_killed(&namespace, 1);
    let (status, reply) = http.post_json("/webhook", body).await?;
    if !status.is_success() {
        bail!("the sentinel webhook answered {status}");
    }
    let sentinel = bonk_id_of(&reply)?;

    let mut acked: HashMap<(String, String), usize> = HashMap::new();
    let mut outcomes: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut sentinel_acked: HashSet<String> = HashSet::new();
    let mut bonk_messages = 0;
    let mut bonks_on_topic = HashSet::new();
    let mut last_ack = sent;
    let deadline = Instant::now() + TIMEOUT;
    while sentinel_acked.len() < desks || !bonks_on_topic.contains(&sentinel) {
        let left = deadline.saturating_duration_since(Instant::now());
        match stack.observer.next_within(left).await {
            Some(Seen::Ack {
                desk,
                bonk_id,
                outcome,
                at,
            }) => {
                if bonk_id == sentinel {
                    sentinel_acked.insert(desk);
                } else if burst_ids.contains(&bonk_id) {
                    *acked.entry((desk, bonk_id)).or_default() += 1;
                    *outcomes.entry(outcome_name(outcome)).or_default() += 1;
                    last_ack = last_ack.max(at);
                }
            }
            Some(Seen::Bonk { bonk_id, .. }) => {
                if burst_ids.contains(&bonk_id) {
                    bonk_messages += 1;
                }
                bonks_on_topic.insert(bonk_id);
            }
            Some(Seen::Online { .. }) => {}
            None => {
                stack.check_running()?;
                break;
            }
        }
    }
    let mut per_desk: HashMap<&str, usize> = stack
        .desk_ids
        .iter()
        .map(|desk| (desk.as_str(), 0))
        .collect();
    let mut duplicate_acks = 0;
    for ((desk, _), count) in &acked {
        if let Some(n) = per_desk.get_mut(desk.as_str()) {
            *n += 1;
        }
        duplicate_acks += count - 1;
    }
    let bonks_on_topic = bonks_on_topic.intersection(&burst_ids).count();
    let result = Delivery {
        broker,
        webhooks,
        desks,
        answered_ok,
        published,
        bonks_on_topic,
        bonk_messages,
        min_acked_per_desk: per_desk.values().copied().min().unwrap_or(0),
        max_acked_per_desk: per_desk.values().copied().max().unwrap_or(0),
        duplicate_acks,
        outcomes,
        took: last_ack.duration_since(sent),
    };
    stack.stop().await;
    Ok(result)
}

fn outcome_name(outcome: Outcome) -> &'static str {
    outcome.as_str()
}
