//! A short-lived MQTT session for the CLI: connect, subscribe, publish one thing with its PUBACK,
//! read what comes.
//!
//! A one-shot [`Link`] polls rumqttc in a task of its own, so the commands are straight-line code
//! over its events with deadlines. The CLI does not reconnect: a person at a terminal is better
//! served by a clear error than by silent retries.

use std::collections::VecDeque;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use bonker_client::MqttSettings;
use bonker_client::link::{Link, LinkEvent, Spawned};
use rumqttc::{AsyncClient, QoS};
use tokio::time::{Instant, timeout, timeout_at};

/// How long to wait for the broker to answer CONNECT, a SUBSCRIBE or a publish.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// rumqttc's request queue and the link's event queue.
const QUEUE: usize = 64;

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
    link: Spawned,
    /// Messages that arrived while a command waited for an acknowledgement.
    early: VecDeque<Received>,
}

/// What a command waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Awaited {
    SubAck,
    PubAck,
    Message,
}

/// What a wait ended with.
#[derive(Debug)]
enum Waited {
    Message(Received),
    Acknowledged,
    Deadline,
}

impl Session {
    /// Connects with a clean session and a unique client id.
    pub(crate) async fn connect(settings: &MqttSettings) -> Result<Session> {
        let client_id = format!("bonker-cli-{}", std::process::id());
        let mut options = settings.options(&client_id)?;
        options.set_clean_session(true);
        let (client, link) = Link::once(Some(settings), options, QUEUE);
        let mut link = link.spawn(QUEUE);
        match timeout(CONNECT_TIMEOUT, link.connected()).await {
            Err(_) => bail!(
                "the broker at {} did not answer within {CONNECT_TIMEOUT:?}",
                settings.url
            ),
            Ok(Err(error)) => {
                // rumqttc's message already quotes its cause; its chain would say it twice.
                return Err(anyhow!(error.to_string()))
                    .with_context(|| format!("cannot connect to the broker at {}", settings.url));
            }
            Ok(Ok(_)) => {}
        }
        Ok(Session {
            client,
            link,
            early: VecDeque::new(),
        })
    }

    /// Waits for the next event of the kind awaited, keeping messages that come first.
    async fn wait_for(&mut self, awaited: Awaited, deadline: Option<Instant>) -> Result<Waited> {
        if awaited == Awaited::Message
            && let Some(message) = self.early.pop_front()
        {
            return Ok(Waited::Message(message));
        }
        loop {
            let event = match deadline {
                Some(deadline) => match timeout_at(deadline, self.link.recv()).await {
                    Ok(event) => event,
                    Err(_) => return Ok(Waited::Deadline),
                },
                None => self.link.recv().await,
            };
            match event {
                Some(LinkEvent::Message(publish)) => {
                    let message = Received {
                        topic: publish.topic,
                        payload: publish.payload.to_vec(),
                    };
                    if awaited == Awaited::Message {
                        return Ok(Waited::Message(message));
                    }
                    self.early.push_back(message);
                }
                Some(LinkEvent::Subscribed { .. }) if awaited == Awaited::SubAck => {
                    return Ok(Waited::Acknowledged);
                }
                Some(LinkEvent::PublishAcked { .. }) if awaited == Awaited::PubAck => {
                    return Ok(Waited::Acknowledged);
                }
                Some(LinkEvent::Disconnected { error, .. }) => bail!("connection lost: {error}"),
                Some(LinkEvent::Closed) | None => bail!("connection lost"),
                Some(_) => {}
            }
        }
    }

    /// Waits for an acknowledgement of `awaited`'s kind; `what` names it in the error.
    async fn acknowledged(
        &mut self,
        awaited: Awaited,
        what: impl FnOnce() -> String,
    ) -> Result<()> {
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        match self.wait_for(awaited, Some(deadline)).await? {
            Waited::Acknowledged => Ok(()),
            Waited::Deadline | Waited::Message(_) => bail!("{}", what()),
        }
    }

    /// Subscribes to each filter at QoS 1 and waits for the broker's SUBACKs.
    pub(crate) async fn subscribe(&mut self, filters: &[String]) -> Result<()> {
        for filter in filters {
            self.client
                .subscribe(filter.clone(), QoS::AtLeastOnce)
                .await?;
        }
        for filter in filters {
            self.acknowledged(Awaited::SubAck, || format!("no SUBACK for {filter}"))
                .await?;
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
        self.acknowledged(Awaited::PubAck, || {
            format!("the broker did not acknowledge the publish to {topic}")
        })
        .await
    }

    /// The next message before `deadline`, or `None` at the deadline.
    pub(crate) async fn next_before(&mut self, deadline: Instant) -> Result<Option<Received>> {
        match self.wait_for(Awaited::Message, Some(deadline)).await? {
            Waited::Message(message) => Ok(Some(message)),
            Waited::Deadline | Waited::Acknowledged => Ok(None),
        }
    }

    /// The next message, waiting as long as it takes.
    pub(crate) async fn next(&mut self) -> Result<Received> {
        match self.wait_for(Awaited::Message, None).await? {
            Waited::Message(message) => Ok(message),
            Waited::Deadline | Waited::Acknowledged => bail!("connection lost"),
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
        if self.client.try_disconnect().is_ok() {
            self.link.closed(CONNECT_TIMEOUT).await;
        }
    }
}
