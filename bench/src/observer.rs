//! The harness's own MQTT client: it sees desks come online, their acks, and the bonks on a
//! namespace topic, each stamped with the moment it arrived.
//!
//! Timestamps are taken in the task that polls the connection, as each packet is read, so a
//! measurement loop that reads them later (after its HTTP reply, say) still gets exact times.
//! Like every bonker client it disables Nagle's algorithm, or each message could wait ~40 ms.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bonker_client::MqttSettings;
use bonker_client::link::{Link, LinkEvent};
use bonker_protocol::{Ack, Namespace, Outcome, Route, Status, Topics};
use rumqttc::{AsyncClient, Publish, QoS};
use tokio::sync::mpsc;

/// What the observer saw.
#[derive(Debug, Clone)]
pub enum Seen {
    /// A desk's retained status is `online` (it has subscribed).
    Online {
        /// The desk.
        desk: String,
    },
    /// A desk acked a bonk.
    Ack {
        /// The desk.
        desk: String,
        /// The bonk.
        bonk_id: String,
        /// What the desk did.
        outcome: Outcome,
        /// When the ack arrived here.
        at: Instant,
    },
    /// A bonk was published on the watched namespace topic.
    Bonk {
        /// Its id, as far as it parses.
        bonk_id: String,
        /// When it arrived here.
        at: Instant,
    },
}

/// What to subscribe to besides desk statuses.
#[derive(Debug, Clone, Default)]
pub struct ObserverOptions {
    /// Every desk's acks.
    pub acks: bool,
    /// Bonks on this namespace's topic.
    pub bonks_on: Option<Namespace>,
}

/// A connected observer.
#[derive(Debug)]
pub struct Observer {
    client: AsyncClient,
    events: mpsc::UnboundedReceiver<Seen>,
    task: tokio::task::JoinHandle<()>,
}

impl Observer {
    /// Connects to `url`, subscribes, and returns once the broker has acknowledged the
    /// subscriptions.
    pub async fn connect(url: &str, options: ObserverOptions) -> Result<Observer> {
        let topics = Topics::default();
        let settings = MqttSettings {
            url: url.to_owned(),
            ..MqttSettings::default()
        };
        let client_id = format!("bonker-bench-observer-{}", std::process::id());
        let mut mqtt = settings
            .options(&client_id)
            .context("observer MQTT settings")?;
        mqtt.set_clean_session(true);
        let mut filters = vec![topics.all_statuses()];
        if options.acks {
            filters.push(topics.all_acks());
        }
        if let Some(namespace) = &options.bonks_on {
            filters.push(topics.namespace_bonk(namespace));
        }
        // A benchmark does not reconnect: a lost observer fails the section.
        let (client, link) = Link::once(Some(&settings), mqtt, 1024);
        let link = link.subscribe_on_connect(filters);
        let (task, events) = stamped(link, "observer", url, move |publish, at| {
            interpret(&topics, &publish.topic, &publish.payload, at)
        })
        .await?;
        Ok(Observer {
            client,
            events,
            task,
        })
    }

    /// The next thing seen, or `None` after `timeout`.
    pub async fn next_within(&mut self, timeout: Duration) -> Option<Seen> {
        tokio::time::timeout(timeout, self.events.recv())
            .await
            .ok()
            .flatten()
    }

    /// Everything seen so far, without waiting.
    pub fn drain(&mut self) -> Vec<Seen> {
        let mut seen = Vec::new();
        while let Ok(event) = self.events.try_recv() {
            seen.push(event);
        }
        seen
    }

    /// Waits until every desk in `desks` is online (has subscribed), or fails after `timeout`
    /// naming how many are missing.
    pub async fn wait_online(&mut self, desks: &[String], timeout: Duration) -> Result<()> {
        let mut missing: HashSet<&str> = desks.iter().map(String::as_str).collect();
        let deadline = tokio::time::Instant::now() + timeout;
        while !missing.is_empty() {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(Seen::Online { desk })) => {
                    missing.remove(desk.as_str());
                }
                Ok(Some(_)) => {}
                Ok(None) => bail!("the observer's connection dropped"),
                Err(_) => bail!(
                    "{} of {} desks did not come online within {timeout:?}",
                    missing.len(),
                    desks.len()
                ),
            }
        }
        Ok(())
    }

    /// Publishes `payload` on `topic` at QoS 1 (queued; the broker acknowledges in the background).
    pub async fn publish(&self, topic: String, payload: Vec<u8>) -> Result<()> {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .context("publish")
    }

    /// Disconnects cleanly.
    pub async fn disconnect(self) {
        let _ = self.client.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_secs(2), self.task).await;
    }
}

/// Polls `link` in a task of its own, stamping each message as it is read and passing it to
/// `interpret`, whose findings come out of the channel; returns once the broker has acknowledged
/// the subscriptions. A benchmark does not reconnect: a lost connection ends the channel.
pub(crate) async fn stamped<T: Send + 'static>(
    mut link: Link,
    who: &'static str,
    url: &str,
    interpret: impl Fn(&Publish, Instant) -> Option<T> + Send + 'static,
) -> Result<(tokio::task::JoinHandle<()>, mpsc::UnboundedReceiver<T>)> {
    let (found_tx, found) = mpsc::unbounded_channel();
    let (subscribed_tx, subscribed) = tokio::sync::oneshot::channel::<Result<(), String>>();
    let task = tokio::spawn(async move {
        let mut subscribed_tx = Some(subscribed_tx);
        loop {
            let event = link.next().await;
            let at = Instant::now();
            match event {
                LinkEvent::Disconnected { error, .. } => {
                    if let Some(tx) = subscribed_tx.take() {
                        let _ = tx.send(Err(error.to_string()));
                    }
                    return;
                }
                LinkEvent::Closed => return,
                LinkEvent::Subscribed { .. } => {
                    if let Some(tx) = subscribed_tx.take() {
                        let _ = tx.send(Ok(()));
                    }
                }
                LinkEvent::Message(publish) => {
                    if let Some(item) = interpret(&publish, at)
                        && found_tx.send(item).is_err()
                    {
                        return;
                    }
                }
                _ => {}
            }
        }
    });
    match tokio::time::timeout(Duration::from_secs(10), subscribed).await {
        Ok(Ok(Ok(()))) => Ok((task, found)),
        Ok(Ok(Err(error))) => bail!("{who} cannot connect to {url}: {error}"),
        Ok(Err(_)) => bail!("{who} stopped before subscribing"),
        Err(_) => bail!("{who}: no SUBACK from {url} within 10 s"),
    }
}

fn interpret(topics: &Topics, topic: &str, payload: &[u8], at: Instant) -> Option<Seen> {
    match topics.route(topic)? {
        Route::Status(desk) => {
            (Status::parse(payload) == Some(Status::Online)).then(|| Seen::Online {
                desk: desk.to_string(),
            })
        }
        Route::Ack(desk) => {
            let ack: Ack = serde_json::from_slice(payload).ok()?;
            Some(Seen::Ack {
                desk: desk.to_string(),
                bonk_id: ack.bonk_id.as_str().to_owned(),
                outcome: ack.outcome,
                at,
            })
        }
        Route::NamespaceBonk(_) => {
            let bonk = bonker_protocol::Bonk::parse_lenient(payload).bonk;
            Some(Seen::Bonk {
                bonk_id: bonk.id.as_str().to_owned(),
                at,
            })
        }
        Route::DeskBonk(_) | Route::Health(_) | Route::LastBonk(_) => None,
    }
}
