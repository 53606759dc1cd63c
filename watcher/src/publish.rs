//! Publishing bonks: one task owns the MQTT connection, and a kill counts as reported only when
//! the broker has acknowledged its bonk.
//!
//! The watcher hands each bonk to the task through a bounded queue and never waits: while the
//! broker is unreachable bonks wait in order (at most `max_queued_bonks`), and a bonk that does not
//! fit is dropped and counted rather than stalling the kernel log reader. The task hands bonks to
//! rumqttc only while connected and correlates each PUBACK with its bonk
//! ([`bonker_client::puback`]); the kernel log sequence number of an acknowledged bonk comes back
//! on the confirmation channel, and only then does the watcher move its resume point past it. A
//! bonk whose connection fails before its PUBACK is published again after the next `ConnAck`, by
//! the task itself: rumqttc's own re-sending is switched off on every reconnect because it would
//! break the correlation. So a bonk is lost to neither a broker restart nor a watcher restart
//! (a restarted watcher reads the kernel log again from the resume point); at worst it is
//! delivered twice, with the same stable id, which the desks and the gateway recognise.
//!
//! The session is clean: nothing the broker could keep for the watcher (it subscribes to nothing)
//! is worth a persistent session, and unacknowledged bonks are the task's to re-send.

use std::collections::VecDeque;
use std::time::Duration;

use bonker_client::MqttSettings;
use bonker_client::link::{Link, LinkEvent};
use bonker_client::puback::PubAcks;
use bonker_protocol::topics::BONK_DELIVERY;
use bonker_protocol::{Bonk, BonkId};
use rumqttc::AsyncClient;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::metrics::Metrics;

/// How long a stopping watcher waits for queued bonks to be acknowledged.
pub(crate) const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);

/// Capacity of rumqttc's request channel.
const CLIENT_REQUEST_CAPACITY: usize = 64;
/// Bonks handed to rumqttc and not yet written, at most; the rest wait in the task's queue (room
/// is left in the channel for the disconnect).
const HANDOVER_LIMIT: usize = CLIENT_REQUEST_CAPACITY - 8;

/// A bonk on its way to the broker.
#[derive(Debug)]
struct Queued {
    /// The kernel log record of the kill, when it came from the kernel log.
    seq: Option<u64>,
    id: BonkId,
    topic: String,
    payload: Vec<u8>,
}

/// Hands bonks to MQTT.
#[derive(Debug)]
pub(crate) struct BonkPublisher {
    /// `None` once shutting down.
    queue: Option<mpsc::Sender<Queued>>,
    metrics: Metrics,
    task: JoinHandle<()>,
}

/// Kernel log sequence numbers whose bonks the broker acknowledged.
pub(crate) type Confirmations = mpsc::UnboundedReceiver<u64>;

impl BonkPublisher {
    /// Connects (in the background) with `settings`, as `bonker-watcher-<node>` unless a client
    /// id is configured, and starts the task that owns the connection.
    pub(crate) fn start(
        settings: &MqttSettings,
        node: &str,
        max_queued_bonks: usize,
        metrics: Metrics,
    ) -> Result<(BonkPublisher, Confirmations), bonker_client::mqtt::SettingsError> {
        let options = settings.options(&format!("bonker-watcher-{node}"))?;
        let (client, link) = Link::new(settings, options, CLIENT_REQUEST_CAPACITY);
        let (queue, commands) = mpsc::channel(max_queued_bonks);
        let (confirm, confirmations) = mpsc::unbounded_channel();
        let task = PublishTask {
            link: link.fresh_on_connect(),
            commands,
            outbox: Outbox {
                client,
                confirm,
                waiting: VecDeque::new(),
                acks: PubAcks::default(),
                max_queued_bonks,
                connected: false,
                draining: false,
                metrics: metrics.clone(),
            },
        };
        let task = tokio::spawn(task.run());
        Ok((
            BonkPublisher {
                queue: Some(queue),
                metrics,
                task,
            },
            confirmations,
        ))
    }

    /// Queues `bonk` on `topic` without waiting; `seq` is the kernel log record of its kill, sent
    /// back on the confirmation channel once the broker has the bonk. Returns false (and counts
    /// the drop) when the queue is full.
    pub(crate) fn publish(&self, topic: &str, bonk: &Bonk, seq: Option<u64>) -> bool {
        let queued = Queued {
            seq,
            id: bonk.id.clone(),
            topic: topic.to_owned(),
            payload: bonk.to_json(),
        };
        let sent = match &self.queue {
            Some(queue) => queue.try_send(queued).map_err(|e| e.to_string()),
            None => Err("shutting down".to_owned()),
        };
        match sent {
            Ok(()) => true,
            Err(error) => {
                self.metrics.bonks_dropped.inc();
                tracing::error!(%error, bonk_id = %bonk.id, topic, "publish queue full; bonk dropped");
                false
            }
        }
    }

    /// Waits (at most [`DRAIN_TIMEOUT`]) until every queued bonk is acknowledged, then
    /// disconnects.
    pub(crate) async fn shutdown(&mut self) {
        self.queue = None;
        if tokio::time::timeout(DRAIN_TIMEOUT, &mut self.task)
            .await
            .is_err()
        {
            tracing::warn!(
                "stopping before the broker acknowledged every bonk; a restart reads them again from the kernel log"
            );
            self.task.abort();
            let _ = (&mut self.task).await;
        }
    }
}

/// The one task that polls the link: it never blocks on anything else.
struct PublishTask {
    link: Link,
    commands: mpsc::Receiver<Queued>,
    outbox: Outbox,
}

impl PublishTask {
    async fn run(mut self) {
        loop {
            let event = {
                // Commands are taken while the poll is pending, which is never dropped half-way:
                // rumqttc's poll is not cancel-safe while it writes.
                let poll = self.link.next();
                tokio::pin!(poll);
                loop {
                    let accepting = self.outbox.has_room() && !self.outbox.draining;
                    tokio::select! {
                        event = &mut poll => break event,
                        command = self.commands.recv(), if accepting => self.outbox.take(command),
                    }
                }
            };
            if !self.outbox.handle(event) {
                break;
            }
        }
        self.outbox.metrics.mqtt_connected.set(0);
    }
}

/// Bonks between the watcher and the broker's PUBACK.
struct Outbox {
    client: AsyncClient,
    confirm: mpsc::UnboundedSender<u64>,
    /// Not handed to rumqttc yet (disconnected, or [`HANDOVER_LIMIT`] reached), in order.
    waiting: VecDeque<Queued>,
    /// Handed to rumqttc, waiting for the PUBACK.
    acks: PubAcks<Queued>,
    max_queued_bonks: usize,
    connected: bool,
    /// The watcher stopped: send what is queued, then disconnect.
    draining: bool,
    metrics: Metrics,
}

impl Outbox {
    fn has_room(&self) -> bool {
        self.waiting.len() + self.acks.len() < self.max_queued_bonks
    }

    /// A bonk from the watcher, or `None` when it stopped.
    fn take(&mut self, command: Option<Queued>) {
        match command {
            Some(queued) => {
                self.waiting.push_back(queued);
                self.pump();
            }
            None => {
                self.draining = true;
                self.disconnect_when_done();
            }
        }
    }

    /// False once the link has stopped.
    fn handle(&mut self, event: LinkEvent) -> bool {
        match event {
            LinkEvent::Connected {
                session_present, ..
            } => {
                // What rumqttc kept of the old connection is in `waiting` again; the link cleared it.
                self.connected = true;
                self.metrics.mqtt_connected.set(1);
                tracing::info!(
                    session_present,
                    resending = self.waiting.len(),
                    "connected to the MQTT broker"
                );
                self.pump();
                self.disconnect_when_done();
            }
            LinkEvent::PublishWritten(pkid) => {
                if !self.acks.written(pkid) {
                    tracing::debug!(pkid, "a publish went out that no bonk is waiting for");
                }
                self.pump();
            }
            LinkEvent::PublishAcked { pkid, .. } => {
                if let Some(queued) = self.acks.acked(pkid) {
                    self.metrics.bonks_published.inc();
                    tracing::debug!(bonk_id = %queued.id, topic = queued.topic, "the broker has the bonk");
                    if let Some(seq) = queued.seq {
                        let _ = self.confirm.send(seq);
                    }
                }
                self.disconnect_when_done();
            }
            LinkEvent::Disconnected { error, retry_in } => {
                self.connected = false;
                self.metrics.mqtt_connected.set(0);
                // None of these will be acknowledged on this connection: send them again, first.
                for queued in self.acks.take_all().into_iter().rev() {
                    self.waiting.push_front(queued);
                }
                tracing::warn!(%error, retry_in_ms = retry_in.as_millis() as u64, waiting = self.waiting.len(), "MQTT connection failed");
            }
            LinkEvent::Closed => return false,
            LinkEvent::Message(_)
            | LinkEvent::Subscribed { .. }
            | LinkEvent::SubscribeSent { .. }
            | LinkEvent::PublishCollision(_) => {}
        }
        true
    }

    /// Hands waiting bonks to rumqttc while connected and there is room.
    fn pump(&mut self) {
        while self.connected && self.acks.unsent() < HANDOVER_LIMIT {
            let Some(queued) = self.waiting.pop_front() else {
                break;
            };
            let qos = bonker_client::mqtt::qos(BONK_DELIVERY);
            match self.client.try_publish(
                queued.topic.clone(),
                qos,
                BONK_DELIVERY.retain,
                queued.payload.clone(),
            ) {
                Ok(()) => self.acks.handed_over(queued),
                Err(error) => {
                    tracing::debug!(%error, "rumqttc's queue is full; the bonk waits");
                    self.waiting.push_front(queued);
                    break;
                }
            }
        }
    }

    /// While draining: disconnects once every bonk is acknowledged.
    fn disconnect_when_done(&mut self) {
        if self.draining && self.connected && self.waiting.is_empty() && self.acks.is_empty() {
            let _ = self.client.try_disconnect();
        }
    }
}
