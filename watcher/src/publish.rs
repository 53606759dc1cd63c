//! Publishing bonks: one rumqttc client, one task driving its event loop, a bounded queue.
//!
//! The watcher hands each bonk to the client with `try_publish`, which never waits: while the
//! broker is unreachable bonks wait in the client's request queue (bounded by
//! `max_queued_bonks`), and a bonk that does not fit is dropped and counted rather than stalling
//! the kernel log reader. The session is persistent (`clean_session = false`, a client id per
//! node) because rumqttc discards queued and in-flight publishes when it reconnects to a session
//! the broker does not have; with a persistent session they are delivered after the reconnect.

use std::time::Duration;

use bonker_client::MqttSettings;
use bonker_protocol::Bonk;
use bonker_protocol::topics::BONK_DELIVERY;
use rumqttc::{AsyncClient, Event, EventLoop, Outgoing, Packet};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// How long a stopping watcher waits for queued bonks to be sent.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);

/// Hands bonks to MQTT.
#[derive(Debug)]
pub struct BonkPublisher {
    client: AsyncClient,
    metrics: Metrics,
    event_loop: JoinHandle<()>,
    stop: CancellationToken,
}

impl BonkPublisher {
    /// Connects (in the background) with `settings`, as `bonker-watcher-<node>` unless a client
    /// id is configured, and starts the event loop task.
    pub fn start(
        settings: &MqttSettings,
        node: &str,
        max_queued_bonks: usize,
        metrics: Metrics,
    ) -> Result<BonkPublisher, bonker_client::mqtt::SettingsError> {
        let mut options = settings.options(&format!("bonker-watcher-{node}"))?;
        options.set_clean_session(false);
        let (client, mut event_loop) = AsyncClient::new(options, max_queued_bonks);
        bonker_client::mqtt::tune_event_loop(&mut event_loop, settings);
        let stop = CancellationToken::new();
        let event_loop = tokio::spawn(drive(
            event_loop,
            settings.backoff(),
            metrics.clone(),
            stop.clone(),
        ));
        Ok(BonkPublisher {
            client,
            metrics,
            event_loop,
            stop,
        })
    }

    /// Queues `bonk` on `topic` without waiting. Returns false (and counts the drop) when the
    /// queue is full.
    pub fn publish(&self, topic: &str, bonk: &Bonk) -> bool {
        let qos = bonker_client::mqtt::qos(BONK_DELIVERY);
        match self
            .client
            .try_publish(topic, qos, BONK_DELIVERY.retain, bonk.to_json())
        {
            Ok(()) => {
                self.metrics.bonks_published.inc();
                true
            }
            Err(error) => {
                self.metrics.bonks_dropped.inc();
                tracing::error!(%error, bonk_id = %bonk.id, topic, "publish queue full; bonk dropped");
                false
            }
        }
    }

    /// Sends what is queued, disconnects, and stops the event loop (after at most
    /// [`DRAIN_TIMEOUT`]).
    pub async fn shutdown(self) {
        let _ = self.client.try_disconnect();
        let stop = self.stop.clone();
        let mut event_loop = self.event_loop;
        if tokio::time::timeout(DRAIN_TIMEOUT, &mut event_loop)
            .await
            .is_err()
        {
            stop.cancel();
            let _ = event_loop.await;
        }
    }
}

/// The one task that polls the event loop: it reconnects with backoff and never blocks on
/// anything else.
async fn drive(
    mut event_loop: EventLoop,
    mut backoff: bonker_client::Backoff,
    metrics: Metrics,
    stop: CancellationToken,
) {
    loop {
        let event = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            event = event_loop.poll() => event,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                backoff.reset();
                metrics.mqtt_connected.set(1);
                tracing::info!(
                    session_present = ack.session_present,
                    "connected to the MQTT broker"
                );
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
            Ok(_) => {}
            Err(error) => {
                metrics.mqtt_connected.set(0);
                let delay = backoff.next_delay();
                tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "MQTT connection failed");
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
    metrics.mqtt_connected.set(0);
}
