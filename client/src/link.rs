//! The MQTT link: the one loop that polls rumqttc, used by every bonker program and harness.
//!
//! rumqttc makes progress — reading, writing, keep-alive pings, reconnecting — only while its
//! `EventLoop` is polled, and it leaves the rest to its user: it reconnects at once and forever,
//! subscribes to nothing again after a reconnect, and keeps the previous connection's queued
//! events, stashed packet-id collision and pending requests. [`Link`] settles those once:
//! - after a connection error it waits [`Backoff::next_delay`] before the next attempt, and resets
//!   the backoff on `ConnAck`; or, for a one-shot session (the CLI, `--forget`, test probes),
//!   it ends instead ([`Link::once`]);
//! - on every `ConnAck` it subscribes again to the filters it was given
//!   ([`Link::subscribe_on_connect`]), before anything else the program queues on that connection;
//! - with [`Link::fresh_on_connect`] (programs that correlate PUBACKs, see [`crate::puback`]) it
//!   clears what rumqttc kept of the previous connection on every `ConnAck`;
//! - it turns rumqttc's packets into [`LinkEvent`]s, packet ids included, and drops the rest.
//!
//! # Who polls
//! A program whose own loop must react to the connection in the same step (the gateway and the
//! watcher correlate PUBACKs with what they hand to rumqttc) calls [`Link::next`] from its task
//! and never drops that future half-way except to stop: rumqttc's `poll` is not cancel-safe while
//! it writes. A program whose work per event is short and never waits (the desk agent: parse,
//! decide, queue a reply) polls from its own `select!` through [`Link::polled`], whose `recv` keeps
//! the poll in progress when another branch wins: its replies leave on the next poll of the same
//! task, with no hop to another task and no wake of another thread per message. Everything else
//! calls [`Link::spawn`]: one task polls and forwards the events on a bounded channel, so the
//! program's own work is straight-line code over `recv()` and never runs in the loop that keeps
//! the connection alive.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, Outgoing, Packet, Publish, QoS,
    SubscribeFilter, SubscribeReasonCode,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::mqtt::{Backoff, MqttSettings, tune_event_loop};

/// How long to wait for the broker to close the connection after DISCONNECT.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// What the link reports.
#[derive(Debug)]
pub enum LinkEvent {
    /// Connected (again). `session_present` is false when the broker had no session for us.
    Connected {
        /// Whether the broker resumed a persistent session.
        session_present: bool,
        /// Whether the link queued the SUBSCRIBE of [`Link::subscribe_on_connect`]'s filters.
        resubscribed: bool,
    },
    /// A SUBSCRIBE was acknowledged; `refused` of its filters were refused.
    Subscribed {
        /// How many filters the broker refused.
        refused: usize,
    },
    /// A SUBSCRIBE went out (in request order).
    SubscribeSent {
        /// QoS 1 publishes still unacknowledged.
        inflight: u16,
    },
    /// A message arrived.
    Message(Publish),
    /// One of our publishes was written with this packet id (0 for QoS 0).
    PublishWritten(u16),
    /// A publish found its packet id still unacknowledged (the broker acknowledged out of
    /// order): rumqttc holds it, and takes no new request, until that PUBACK comes.
    PublishCollision(u16),
    /// The broker acknowledged our QoS 1 publish with this packet id.
    PublishAcked {
        /// Its packet id.
        pkid: u16,
        /// QoS 1 publishes still unacknowledged.
        inflight: u16,
    },
    /// The connection failed or dropped. A reconnecting link tries again after `retry_in`; a
    /// one-shot link reports [`LinkEvent::Closed`] next.
    Disconnected {
        /// Why.
        error: ConnectionError,
        /// The backoff delay before the next attempt.
        retry_in: Duration,
    },
    /// The link has stopped: DISCONNECT went out (and the broker closed the connection, or did
    /// not within a second), every client handle was dropped, or a one-shot link lost its
    /// connection. Nothing follows.
    Closed,
}

/// The event loop of one MQTT connection with bonker's reconnect rules. See the module docs.
pub struct Link {
    client: AsyncClient,
    event_loop: EventLoop,
    /// `None` for a one-shot link.
    backoff: Option<Backoff>,
    subscriptions: Vec<String>,
    fresh_on_connect: bool,
    /// When the next connection attempt may start (after a backoff delay).
    retry_at: Option<Instant>,
    closed: bool,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("client_id", &self.event_loop.mqtt_options.client_id())
            .field("reconnects", &self.backoff.is_some())
            .field("subscriptions", &self.subscriptions)
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl Link {
    /// A reconnecting link for `options` (built by [`MqttSettings::options`]), tuned and backed
    /// off as `settings` say; `capacity` is rumqttc's request queue. Nothing is dialled until the
    /// link is polled.
    pub fn new(
        settings: &MqttSettings,
        options: MqttOptions,
        capacity: usize,
    ) -> (AsyncClient, Link) {
        let (client, mut link) = Link::build(options, capacity, Some(settings.backoff()));
        tune_event_loop(&mut link.event_loop, settings);
        (client, link)
    }

    /// A link that does not reconnect: after its first connection error it reports
    /// [`LinkEvent::Disconnected`] and [`LinkEvent::Closed`]. TCP_NODELAY is on, as on every
    /// bonker connection; the connect timeout is `settings`' when given, else rumqttc's.
    pub fn once(
        settings: Option<&MqttSettings>,
        options: MqttOptions,
        capacity: usize,
    ) -> (AsyncClient, Link) {
        let (client, mut link) = Link::build(options, capacity, None);
        match settings {
            Some(settings) => tune_event_loop(&mut link.event_loop, settings),
            None => {
                let mut network = link.event_loop.network_options();
                network.set_tcp_nodelay(true);
                link.event_loop.set_network_options(network);
            }
        }
        (client, link)
    }

    fn build(
        options: MqttOptions,
        capacity: usize,
        backoff: Option<Backoff>,
    ) -> (AsyncClient, Link) {
        let (client, event_loop) = AsyncClient::new(options, capacity);
        let link = Link {
            client: client.clone(),
            event_loop,
            backoff,
            subscriptions: Vec::new(),
            fresh_on_connect: false,
            retry_at: None,
            closed: false,
        };
        (client, link)
    }

    /// Subscribes to `filters` at QoS 1 on every `ConnAck`.
    #[must_use]
    pub fn subscribe_on_connect(mut self, filters: impl IntoIterator<Item = String>) -> Self {
        self.subscriptions = filters.into_iter().collect();
        self
    }

    /// Clears what rumqttc kept of the previous connection on every `ConnAck` (pending requests,
    /// a stashed packet-id collision, queued events): for programs that republish by themselves
    /// what the broker did not acknowledge. See [`crate::puback`].
    #[must_use]
    pub fn fresh_on_connect(mut self) -> Self {
        self.fresh_on_connect = true;
        self
    }

    /// The client id this link connects with.
    pub fn client_id(&self) -> String {
        self.event_loop.mqtt_options.client_id()
    }

    /// The next event. Waits out the backoff delay after an error first. Do not drop the future
    /// half-way except to stop polling for good (see the module docs).
    pub async fn next(&mut self) -> LinkEvent {
        if self.closed {
            return LinkEvent::Closed;
        }
        loop {
            if let Some(retry_at) = self.retry_at {
                tokio::time::sleep_until(retry_at).await;
                self.retry_at = None;
            }
            let event = match self.event_loop.poll().await {
                Ok(event) => event,
                Err(ConnectionError::RequestsDone) => return self.close(),
                Err(error) => return self.failed(error),
            };
            if let Some(event) = self.translate(event).await {
                return event;
            }
        }
    }

    fn failed(&mut self, error: ConnectionError) -> LinkEvent {
        match &mut self.backoff {
            Some(backoff) => {
                let retry_in = backoff.next_delay();
                self.retry_at = Some(Instant::now() + retry_in);
                LinkEvent::Disconnected { error, retry_in }
            }
            None => {
                self.closed = true;
                LinkEvent::Disconnected {
                    error,
                    retry_in: Duration::ZERO,
                }
            }
        }
    }

    fn close(&mut self) -> LinkEvent {
        self.closed = true;
        LinkEvent::Closed
    }

    async fn translate(&mut self, event: Event) -> Option<LinkEvent> {
        let inflight = self.event_loop.state.inflight();
        Some(match event {
            Event::Incoming(Packet::ConnAck(connack)) => self.connected(connack.session_present),
            Event::Incoming(Packet::Publish(publish)) => LinkEvent::Message(publish),
            Event::Incoming(Packet::PubAck(ack)) => LinkEvent::PublishAcked {
                pkid: ack.pkid,
                inflight,
            },
            Event::Incoming(Packet::SubAck(suback)) => LinkEvent::Subscribed {
                refused: suback
                    .return_codes
                    .iter()
                    .filter(|code| matches!(code, SubscribeReasonCode::Failure))
                    .count(),
            },
            Event::Outgoing(Outgoing::Publish(pkid)) => LinkEvent::PublishWritten(pkid),
            Event::Outgoing(Outgoing::Subscribe(_)) => LinkEvent::SubscribeSent { inflight },
            Event::Outgoing(Outgoing::AwaitAck(pkid)) => LinkEvent::PublishCollision(pkid),
            Event::Outgoing(Outgoing::Disconnect) => {
                // Exit only once the broker is done with this connection: a client connecting
                // with the same id the next instant is then not caught in its clean-up.
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, self.event_loop.poll()).await;
                self.close()
            }
            _ => return None,
        })
    }

    fn connected(&mut self, session_present: bool) -> LinkEvent {
        if self.fresh_on_connect {
            crate::puback::forget_old_connection(&mut self.event_loop);
        }
        if let Some(backoff) = &mut self.backoff {
            backoff.reset();
        }
        let resubscribed = !self.subscriptions.is_empty()
            && {
                let filters = self
                    .subscriptions
                    .iter()
                    .map(|filter| SubscribeFilter::new(filter.clone(), QoS::AtLeastOnce));
                match self.client.try_subscribe_many(filters) {
                    Ok(()) => true,
                    Err(error) => {
                        tracing::error!(%error, filters = ?self.subscriptions, "cannot queue SUBSCRIBE");
                        false
                    }
                }
            };
        LinkEvent::Connected {
            session_present,
            resubscribed,
        }
    }

    /// Polls in a task of its own, forwarding every event on a channel of `capacity`. The task
    /// ends after [`LinkEvent::Closed`], or when the receiver is dropped.
    pub fn spawn(mut self, capacity: usize) -> Spawned {
        let (events_tx, events) = mpsc::channel(capacity);
        let task = tokio::spawn(async move {
            loop {
                let event = self.next().await;
                let closed = matches!(event, LinkEvent::Closed);
                if events_tx.send(event).await.is_err() || closed {
                    return;
                }
            }
        });
        Spawned { events, task }
    }
}

/// A poll of the link in progress; it owns the link until it completes.
type Poll = Pin<Box<dyn Future<Output = (Link, LinkEvent)> + Send>>;

/// A link polled from its owner's own `select!` ([`Link::polled`]).
pub struct Polled {
    /// The link between polls.
    idle: Option<Link>,
    /// The poll in progress: it owns the link until it completes.
    poll: Option<Poll>,
}

impl std::fmt::Debug for Polled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Polled")
            .field("link", &self.idle)
            .field("polling", &self.poll.is_some())
            .finish()
    }
}

impl Link {
    /// This link, polled by its owner's `select!` (see the module docs).
    pub fn polled(self) -> Polled {
        Polled {
            idle: Some(self),
            poll: None,
        }
    }
}

impl Polled {
    /// The next event. Cancel-safe: a poll interrupted by another branch of a `select!` goes on
    /// where it stopped on the next call, so no packet is half-written or lost. After
    /// [`LinkEvent::Closed`] it returns `Closed` again at once.
    pub async fn recv(&mut self) -> LinkEvent {
        let poll = match &mut self.poll {
            Some(poll) => poll,
            None => {
                // Between polls the link is always idle here.
                let Some(mut link) = self.idle.take() else {
                    return LinkEvent::Closed;
                };
                self.poll.insert(Box::pin(async move {
                    let event = link.next().await;
                    (link, event)
                }))
            }
        };
        let (link, event) = poll.await;
        self.poll = None;
        self.idle = Some(link);
        event
    }

    /// Waits (at most `timeout`) for [`LinkEvent::Closed`] after a DISCONNECT was queued,
    /// dropping every other event. False when it did not come in time.
    pub async fn closed(mut self, timeout: Duration) -> bool {
        tokio::time::timeout(timeout, async {
            while !matches!(self.recv().await, LinkEvent::Closed) {}
        })
        .await
        .is_ok()
    }
}

/// A link polled by a task of its own ([`Link::spawn`]). Dropping it stops the task.
#[derive(Debug)]
pub struct Spawned {
    events: mpsc::Receiver<LinkEvent>,
    task: JoinHandle<()>,
}

impl Spawned {
    /// The next event; `None` once the link has stopped.
    pub async fn recv(&mut self) -> Option<LinkEvent> {
        self.events.recv().await
    }

    /// An event already received, without waiting.
    pub fn try_recv(&mut self) -> Option<LinkEvent> {
        self.events.try_recv().ok()
    }

    /// Waits for the first `ConnAck`: `Ok(session_present)`, or the error of a failed attempt
    /// (every attempt, for a one-shot link; a reconnecting link reports the first failure too).
    /// Other events before it are dropped.
    pub async fn connected(&mut self) -> Result<bool, ConnectionError> {
        loop {
            match self.recv().await {
                Some(LinkEvent::Connected {
                    session_present, ..
                }) => return Ok(session_present),
                Some(LinkEvent::Disconnected { error, .. }) => return Err(error),
                Some(LinkEvent::Closed) | None => return Err(ConnectionError::RequestsDone),
                Some(_) => {}
            }
        }
    }

    /// Waits (at most `timeout`) for the task to end after a DISCONNECT was queued; stops it
    /// otherwise. False when it had to be stopped.
    pub async fn closed(mut self, timeout: Duration) -> bool {
        let finished = tokio::time::timeout(timeout, async {
            while let Some(event) = self.events.recv().await {
                if matches!(event, LinkEvent::Closed) {
                    break;
                }
            }
        })
        .await
        .is_ok();
        self.task.abort();
        finished
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        self.task.abort();
    }
}
