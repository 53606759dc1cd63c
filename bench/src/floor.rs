//! The floor: the closed loop's fan-out done by bare MQTT clients, on the same broker and machine
//! as bonker's rounds, so bonker's figures can be read against what MQTT itself costs there.
//!
//! A publisher client sends one QoS 1 message on a namespace topic; each of N bare clients,
//! subscribed to it at QoS 1, answers with a QoS 1 reply on a topic of its own (the message
//! echoed, nothing parsed, no policy); an observer client sees every reply. A round is the time
//! from the publish to the last reply seen, and the spread between the first and the last reply.
//!
//! The bare clients run in a process of their own (`bonker-bench floor-desks …`), as bonker's
//! desks do (`bonker-bench desks …`), so the kernel accounts their CPU apart and the two can be
//! compared desk for desk. Each has its own connection with the settings a desk's has: bonker's
//! MQTT defaults (TCP_NODELAY on, keep-alive, packet size), a persistent session, QoS 1 both
//! ways.
//!
//! The floor's topics lie outside bonker's tree (`floor/…`, not `bonker/…`), so neither the
//! gateway nor bonker's desks, connected to the same broker, receive a floor message: each floor
//! round moves exactly one message to each bare client and one reply from each to the observer.

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bonker_client::MqttSettings;
use bonker_client::link::{Link, LinkEvent};
use rumqttc::{AsyncClient, QoS};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};

use crate::process::ChildProcess;
use crate::stack::Tools;

/// The size of every floor message and reply: the round's number, padded.
pub const PAYLOAD_BYTES: usize = 256;

/// What a bare client publishes on its reply topic once subscribed.
const READY: &[u8] = b"ready";

/// rumqttc's request queue of each bare client: one reply per round is all it ever holds.
const CLIENT_REQUESTS: usize = 64;

/// The topic the publisher sends a round's message on.
pub fn message_topic(namespace: &str) -> String {
    format!("floor/{namespace}")
}

/// The topic bare client `desk` replies on.
pub fn reply_topic(desk: &str) -> String {
    format!("floor/{desk}/reply")
}

/// Every bare client's reply topic (the observer's subscription).
pub fn all_replies() -> String {
    reply_topic("+")
}

/// The desk of a reply topic.
pub fn desk_of_reply(topic: &str) -> Option<&str> {
    topic.strip_prefix("floor/")?.strip_suffix("/reply")
}

/// Round `round`'s message: its number in decimal, padded with spaces to [`PAYLOAD_BYTES`].
pub fn message(round: u64) -> Vec<u8> {
    let mut payload = round.to_string().into_bytes();
    payload.resize(PAYLOAD_BYTES.max(payload.len()), b' ');
    payload
}

/// The round a message or reply is for; `None` for a client's "ready" or anything else.
pub fn round_of(payload: &[u8]) -> Option<u64> {
    std::str::from_utf8(payload).ok()?.trim_end().parse().ok()
}

/// Runs `count` bare clients subscribed to `namespace`'s floor topic until SIGTERM or ctrl-c,
/// each echoing every message on its own reply topic (the `floor-desks` process).
pub async fn run_desks(url: &str, namespace: &str, count: usize, prefix: &str) -> Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut clients = JoinSet::new();
    for n in 0..count {
        let desk = crate::desks::desk_id(prefix, n);
        let settings = MqttSettings {
            url: url.to_owned(),
            ..MqttSettings::default()
        };
        let mut options = settings
            .options(&format!("bonker-bench-floor-{desk}"))
            .context("floor client MQTT settings")?;
        options.set_clean_session(false);
        let (client, link) = Link::new(&settings, options, CLIENT_REQUESTS);
        let link = link.subscribe_on_connect([message_topic(namespace)]);
        clients.spawn(bare_client(
            client,
            link,
            reply_topic(&desk),
            stop_rx.clone(),
        ));
    }
    tokio::select! {
        () = bonker_client::shutdown_signal() => {}
        Some(result) = clients.join_next() => {
            result??;
            bail!("a floor client stopped unexpectedly");
        }
    }
    let _ = stop_tx.send(true);
    while let Some(result) = clients.join_next().await {
        result??;
    }
    Ok(())
}

/// One bare client: the one task that polls its connection, echoing each message. The reply is
/// queued without waiting (`try_publish`): awaiting the request queue from the task that drains
/// it could stall the connection.
async fn bare_client(
    client: AsyncClient,
    mut link: Link,
    reply_topic: String,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    loop {
        tokio::select! {
            // The only change ever sent is the stop.
            _ = stop.changed() => {
                let _ = client.try_disconnect();
                // Let DISCONNECT go out.
                let _ = tokio::time::timeout(Duration::from_secs(2), async {
                    while !matches!(link.next().await, LinkEvent::Closed) {}
                })
                .await;
                return Ok(());
            }
            event = link.next() => match event {
                LinkEvent::Subscribed { .. } => {
                    client
                        .try_publish(&reply_topic, QoS::AtLeastOnce, false, READY)
                        .context("floor client: ready")?;
                }
                LinkEvent::Message(publish) => {
                    client
                        .try_publish(&reply_topic, QoS::AtLeastOnce, false, publish.payload)
                        .context("floor client: reply")?;
                }
                LinkEvent::Closed => bail!("floor client {reply_topic}: link closed"),
                _ => {}
            }
        }
    }
}

/// A reply the observer saw.
#[derive(Debug)]
struct Reply {
    desk: String,
    round: Option<u64>,
    at: Instant,
}

/// When a floor round's replies arrived.
#[derive(Debug, Clone, Copy)]
pub struct FloorRound {
    /// The publish (just before it was queued).
    pub sent: Instant,
    /// The first reply.
    pub first: Instant,
    /// The last reply.
    pub last: Instant,
}

/// A running floor: the bare clients' process, the publisher and the observer.
#[derive(Debug)]
pub struct Floor {
    namespace: String,
    count: usize,
    next_round: u64,
    publisher: AsyncClient,
    publisher_task: JoinHandle<()>,
    observer: AsyncClient,
    observer_task: JoinHandle<()>,
    replies: mpsc::UnboundedReceiver<Reply>,
    desks: ChildProcess,
}

impl Floor {
    /// Starts the observer, the publisher and `count` bare clients on `url`, and returns once
    /// every client has subscribed.
    pub async fn start(tools: &Tools, url: &str, namespace: &str, count: usize) -> Result<Floor> {
        let settings = MqttSettings {
            url: url.to_owned(),
            ..MqttSettings::default()
        };
        let (observer, observer_task, mut replies) = observe(&settings).await?;
        let mut options = settings
            .options(&format!(
                "bonker-bench-floor-publisher-{}",
                std::process::id()
            ))
            .context("floor publisher MQTT settings")?;
        options.set_clean_session(true);
        let (publisher, mut link) = Link::once(Some(&settings), options, CLIENT_REQUESTS);
        let publisher_task =
            tokio::spawn(async move { while !matches!(link.next().await, LinkEvent::Closed) {} });

        let prefix = format!("{namespace}-");
        let mut command = Command::new(&tools.self_exe);
        command
            .arg("floor-desks")
            .arg("--mqtt")
            .arg(url)
            .arg("--namespace")
            .arg(namespace)
            .arg("--count")
            .arg(count.to_string())
            .arg("--id-prefix")
            .arg(&prefix);
        let mut desks = ChildProcess::spawn("floor-desks", command, &tools.dir)?;
        let timeout = Duration::from_secs(30 + count as u64 / 10);
        let deadline = tokio::time::Instant::now() + timeout;
        let mut ready = std::collections::HashSet::with_capacity(count);
        while ready.len() < count {
            match tokio::time::timeout_at(deadline, replies.recv()).await {
                Ok(Some(Reply {
                    desk, round: None, ..
                })) => {
                    ready.insert(desk);
                }
                Ok(Some(_)) => {}
                Ok(None) => bail!("the floor observer's connection dropped"),
                Err(_) => {
                    desks.check_running()?;
                    bail!(
                        "{} of {count} floor clients did not subscribe within {timeout:?}:\n{}",
                        count - ready.len(),
                        desks.tail()
                    );
                }
            }
        }
        Ok(Floor {
            namespace: namespace.to_owned(),
            count,
            next_round: 0,
            publisher,
            publisher_task,
            observer,
            observer_task,
            replies,
            desks,
        })
    }

    /// One round: publishes the next message and waits until every client has replied to it.
    pub async fn round(&mut self, timeout: Duration) -> Result<FloorRound> {
        // Whatever is left from the previous round (nothing, normally) must not count here.
        while self.replies.try_recv().is_ok() {}
        let round = self.next_round;
        self.next_round += 1;
        let sent = Instant::now();
        self.publisher
            .publish(
                message_topic(&self.namespace),
                QoS::AtLeastOnce,
                false,
                message(round),
            )
            .await
            .context("floor publish")?;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut seen: HashMap<String, Instant> = HashMap::with_capacity(self.count);
        while seen.len() < self.count {
            match tokio::time::timeout_at(deadline, self.replies.recv()).await {
                Ok(Some(reply)) if reply.round == Some(round) => {
                    seen.entry(reply.desk).or_insert(reply.at);
                }
                Ok(Some(_)) => {}
                Ok(None) => bail!("the floor observer's connection dropped"),
                Err(_) => {
                    self.desks.check_running()?;
                    bail!(
                        "only {} of {} floor clients replied within {timeout:?}",
                        seen.len(),
                        self.count
                    );
                }
            }
        }
        let first = seen.values().min().copied().unwrap_or(sent);
        let last = seen.values().max().copied().unwrap_or(first);
        Ok(FloorRound { sent, first, last })
    }

    /// The bare clients' process id.
    pub fn pid(&self) -> u32 {
        self.desks.pid()
    }

    /// Fails if the bare clients' process has died.
    pub fn check_running(&mut self) -> Result<()> {
        self.desks.check_running()
    }

    /// Stops the bare clients, then disconnects the publisher and the observer.
    pub async fn stop(self) {
        let Floor {
            publisher,
            publisher_task,
            observer,
            observer_task,
            mut desks,
            ..
        } = self;
        tokio::task::spawn_blocking(move || desks.stop())
            .await
            .unwrap_or(());
        let _ = publisher.disconnect().await;
        let _ = observer.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_secs(2), publisher_task).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), observer_task).await;
    }
}

/// The floor's observer: subscribed to every reply, each stamped as it is read (in the task
/// that polls the connection, as the harness's own observer does).
async fn observe(
    settings: &MqttSettings,
) -> Result<(AsyncClient, JoinHandle<()>, mpsc::UnboundedReceiver<Reply>)> {
    let mut options = settings
        .options(&format!(
            "bonker-bench-floor-observer-{}",
            std::process::id()
        ))
        .context("floor observer MQTT settings")?;
    options.set_clean_session(true);
    let (client, link) = Link::once(Some(settings), options, CLIENT_REQUESTS);
    let link = link.subscribe_on_connect([all_replies()]);
    let (task, replies) =
        crate::observer::stamped(link, "floor observer", &settings.url, |publish, at| {
            let desk = desk_of_reply(&publish.topic)?;
            Some(Reply {
                desk: desk.to_owned(),
                round: round_of(&publish.payload),
                at,
            })
        })
        .await?;
    Ok((client, task, replies))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_travels_in_a_padded_message_and_its_echo() {
        let payload = message(42);
        assert_eq!(payload.len(), PAYLOAD_BYTES);
        assert_eq!(round_of(&payload), Some(42));
        assert_eq!(round_of(READY), None);
        assert_eq!(round_of(b"\xff"), None);
    }

    #[test]
    fn floor_topics_stay_outside_bonkers_tree() {
        let topics = bonker_protocol::Topics::default();
        assert_eq!(message_topic("floor10"), "floor/floor10");
        assert!(topics.route(&message_topic("floor10")).is_none());
        assert!(topics.route(&reply_topic("floor10-0003")).is_none());
        assert_eq!(
            desk_of_reply(&reply_topic("floor10-0003")),
            Some("floor10-0003")
        );
        assert_eq!(desk_of_reply(&message_topic("floor10")), None);
        assert_eq!(all_replies(), "floor/+/reply");
    }
}
