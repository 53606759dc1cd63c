//! A short-lived MQTT session for the CLI: connect, subscribe, publish one thing with its PUBACK,
//! read what comes.
//!
//! One task polls rumqttc's event loop and forwards what matters over channels, so the commands
//! are straight-line code over `recv()` with deadlines. The CLI does not reconnect: a person at a
//! terminal is better served by a clear error than by silent retries.

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use bonker_client::MqttSettings;
use rumqttc::{AsyncClient, Event, Packet, QoS};
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout, timeout_at};

/// How long to wait for the broker to answer CONNECT.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A message received by the CLI.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub(crate) topic: String,
    pub(crate) payload: Vec<u8>,
}

/// A connected CLI session.
#[derive(Debug)]
pub(crate) struct Session {
    client: AsyncClient,
    messages: mpsc::UnboundedReceiver<Received>,
    acks: mpsc::UnboundedReceiver<()>,
    subacks: mpsc::UnboundedReceiver<()>,
    errors: mpsc::UnboundedReceiver<String>,
}

impl Session {
    /// Connects with a clean session and a unique client id.
    pub(crate) async fn connect(settings: &MqttSettings) -> Result<Session> {
        let client_id = format!("bonker-cli-{}", std::process::id());
        let mut options = settings.options(&client_id)?;
        options.set_clean_session(true);
        let (client, mut event_loop) = AsyncClient::new(options, 64);
        bonker_client::mqtt::tune_event_loop(&mut event_loop, settings);
        let connected = timeout(CONNECT_TIMEOUT, async {
            loop {
                match event_loop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
                    Ok(_) => {}
                    Err(error) => return Err(error),
                }
            }
        })
        .await;
        match connected {
            Err(_) => bail!(
                "the broker at {} did not answer within {CONNECT_TIMEOUT:?}",
                settings.url
            ),
            Ok(Err(error)) => {
                // rumqttc's message already quotes its cause; its chain would say it twice.
                return Err(anyhow!(error.to_string()))
                    .with_context(|| format!("cannot connect to the broker at {}", settings.url));
            }
            Ok(Ok(())) => {}
        }
        let (message_tx, messages) = mpsc::unbounded_channel();
        let (ack_tx, acks) = mpsc::unbounded_channel();
        let (suback_tx, subacks) = mpsc::unbounded_channel();
        let (error_tx, errors) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                match event_loop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(publish))) => {
                        let _ = message_tx.send(Received {
                            topic: publish.topic.clone(),
                            payload: publish.payload.to_vec(),
                        });
                    }
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        let _ = ack_tx.send(());
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = suback_tx.send(());
                    }
                    Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => break,
                    Ok(_) => {}
                    Err(error) => {
                        let _ = error_tx.send(error.to_string());
                        break;
                    }
                }
            }
        });
        Ok(Session {
            client,
            messages,
            acks,
            subacks,
            errors,
        })
    }

    /// Subscribes to each filter at QoS 1 and waits for the broker's SUBACKs.
    pub(crate) async fn subscribe(&mut self, filters: &[String]) -> Result<()> {
        for filter in filters {
            self.client
                .subscribe(filter.clone(), QoS::AtLeastOnce)
                .await?;
        }
        for filter in filters {
            tokio::select! {
                ack = timeout(CONNECT_TIMEOUT, self.subacks.recv()) => {
                    ack.map_err(|_| anyhow!("no SUBACK for {filter}"))?
                        .ok_or_else(|| anyhow!("connection lost while subscribing"))?;
                }
                Some(error) = self.errors.recv() => bail!("connection lost: {error}"),
            }
        }
        Ok(())
    }

    /// Publishes at QoS 1 and waits for the broker's PUBACK.
    pub(crate) async fn publish(
        &mut self,
        topic: &str,
        payload: Vec<u8>,
        retain: bool,
    ) -> Result<()> {
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload)
            .await?;
        tokio::select! {
            ack = timeout(CONNECT_TIMEOUT, self.acks.recv()) => {
                ack.map_err(|_| anyhow!("the broker did not acknowledge the publish to {topic}"))?
                    .ok_or_else(|| anyhow!("connection lost while publishing"))?;
            }
            Some(error) = self.errors.recv() => bail!("connection lost: {error}"),
        }
        Ok(())
    }

    /// The next message before `deadline`, or `None` at the deadline.
    pub(crate) async fn next_before(&mut self, deadline: Instant) -> Result<Option<Received>> {
        tokio::select! {
            message = timeout_at(deadline, self.messages.recv()) => Ok(message.ok().flatten()),
            Some(error) = self.errors.recv() => bail!("connection lost: {error}"),
        }
    }

    /// The next message, waiting as long as it takes.
    pub(crate) async fn next(&mut self) -> Result<Received> {
        tokio::select! {
            Some(message) = self.messages.recv() => Ok(message),
            Some(error) = self.errors.recv() => bail!("connection lost: {error}"),
        }
    }

    /// Collects retained messages: everything that arrives until the broker has been quiet for
    /// `quiet` (retained messages come in a burst right after subscribing), at most `limit`.
    pub(crate) async fn retained(
        &mut self,
        quiet: Duration,
        limit: Duration,
    ) -> Result<Vec<Received>> {
        let end = Instant::now() + limit;
        let mut out = Vec::new();
        loop {
            let deadline = (Instant::now() + quiet).min(end);
            match self.next_before(deadline).await? {
                Some(message) => out.push(message),
                None => return Ok(out),
            }
        }
    }

    /// Disconnects cleanly.
    pub(crate) async fn disconnect(self) {
        let _ = self.client.disconnect().await;
    }
}
