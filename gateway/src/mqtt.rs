//! The gateway's one MQTT connection: publishing bonks with confirmed delivery, watching the
//! desks' status, health and ack topics for the fleet view, and every namespace bonk — the
//! watchers', the other replicas' — so an alert for a kill already bonked is merged
//! ([`crate::recall`]).
//!
//! # One task owns the connection
//! [`MqttTask`] owns the connection's [`Link`] and is the only thing that polls it. HTTP handlers
//! never touch MQTT: they send [`OutgoingBonk`]s through a [`Publisher`] (a bounded channel) and
//! await one answer per bonk. The task never awaits anything but the event loop, its command
//! channel, a backoff timer and shutdown, so nothing an HTTP client does can stall it.
//!
//! # Knowing that the broker accepted a bonk
//! rumqttc reports packet ids, not which publish they belong to; the task correlates them with
//! [`bonker_client::puback::PubAcks`] (it calls `try_publish`, never the blocking `publish`, and
//! answers a webhook's waiter on the PUBACK of its bonk).
//!
//! rumqttc writes at most 100 publishes ahead of the broker's PUBACKs and its request channel is
//! bounded, so the task takes a publish from its command channel only while it is ready (connected,
//! not holding for returning desks) and fewer than [`HANDOVER_LIMIT`] are between `try_publish` and
//! the wire; the rest wait in order in the command channel, their senders with them. A
//! notification with thousands of alerts is thus paced, not refused.
//!
//! # Reconnects
//! The gateway connects with a **clean session**. Its subscriptions are worth nothing offline (desk
//! status and health are retained and arrive again on subscribe; acks missed while away only
//! thin the fleet view), and a persistent session per replica would pile up on the broker, since
//! every pod start has a new client id. With a clean session the broker reports
//! `session_present = false` and rumqttc drops whatever it still held for the old connection. So:
//! - on a connection error every waiter fails at once with [`PublishError::Disconnected`] (the
//!   handler answers 503 and Alertmanager retries; a bonk that did reach the broker is recognised
//!   by its stable id downstream);
//! - while disconnected, publishes are not handed to rumqttc but wait (bounded) for the next
//!   `ConnAck` or until their HTTP request gives up, so the order of rumqttc's channel always
//!   matches the correlation's;
//! - on every `ConnAck` the link clears leftover requests of the old connection (rumqttc would
//!   otherwise re-send them and break the correlation), subscribes again (rumqttc does not) and
//!   resets its backoff; publish commands are served during the backoff delay too.
//!
//! # Waiting for the desks after a reconnect
//! The PUBACK says the broker has a bonk, not that any desk will get it: a broker restarted
//! without persistence (the bonker broker; mosquitto without `persistence`) has forgotten every
//! desk's subscription, and what it accepts before a desk subscribes again is delivered to nobody
//! — with a 200 already sent, so Alertmanager never retries. So after every reconnect (not the
//! first connect) the task holds bonks back until each desk the fleet view had `online` has sent
//! a *live* `online` or health report again, or `desk_return_timeout` has passed. An agent
//! publishes `online` right after its SUBACK, sends its SUBSCRIBE before anything new on a
//! connection, and the broker handles one connection's packets in order, so either message means
//! the desk's subscriptions are in place. Retained replays prove nothing: a broker may keep
//! retained messages yet lose sessions (EMQX does by default), and garbage or `offline` says the
//! opposite. Where the broker kept everything (a network blip of the gateway alone), the desks
//! did not reconnect, so the hold ends with each desk's next periodic health report (30 s by
//! default) — a short wait, answered 503 and retried by Alertmanager, rather than a lost bonk. Held bonks wait like bonks sent
//! while disconnected; a request that gives up meanwhile answers 503
//! ([`PublishError::DesksReturning`]) and Alertmanager retries.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bonker_client::link::{Link, LinkEvent};
use bonker_client::mqtt::SettingsError;
use bonker_client::puback::PubAcks;
use bonker_protocol::{Bonk, BonkId, Route, Status, Topics};
use chrono::Utc;
use rumqttc::{AsyncClient, ConnectionError, Publish, QoS};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::config::GatewayConfig;
use crate::fleet::{FALLING_BEHIND, Fleet, Pace, PublishedBonk, Target};
use crate::metrics::{AckLabels, DeskLabels, Metrics};
use crate::recall::Recall;

/// Publish requests waiting for the MQTT task.
const COMMAND_QUEUE_CAPACITY: usize = 1024;
/// rumqttc's request channel.
const CLIENT_REQUEST_CAPACITY: usize = 1024;
/// Most publishes handed to rumqttc and not yet written; leaves room in its channel for the
/// subscriptions and the DISCONNECT.
const HANDOVER_LIMIT: usize = CLIENT_REQUEST_CAPACITY - 24;
/// How long a clean DISCONNECT may take at shutdown.
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the broker did not accept a bonk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// No PUBACK within the publish timeout (broker down, slow or unreachable).
    #[error("the MQTT broker did not acknowledge in time")]
    Timeout,
    /// The connection was lost before the PUBACK.
    #[error("the connection to the MQTT broker was lost before it acknowledged")]
    Disconnected,
    /// rumqttc's request queue was full.
    #[error("too many bonks are waiting for the MQTT broker")]
    QueueFull,
    /// The gateway is shutting down.
    #[error("the gateway is shutting down")]
    Stopped,
    /// Reconnected, but desks that were online have not subscribed again yet.
    #[error(
        "reconnected to the MQTT broker; bonks wait until the desks that were online have \
         subscribed again"
    )]
    DesksReturning,
}

impl PublishError {
    /// Every reason, for the metric's label set.
    pub const ALL: [PublishError; 5] = [
        PublishError::Timeout,
        PublishError::Disconnected,
        PublishError::QueueFull,
        PublishError::Stopped,
        PublishError::DesksReturning,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            PublishError::Timeout => "timeout",
            PublishError::Disconnected => "disconnected",
            PublishError::QueueFull => "queue_full",
            PublishError::Stopped => "stopped",
            PublishError::DesksReturning => "desks_returning",
        }
    }
}

/// A bonk to publish on a topic.
#[derive(Debug, Clone)]
pub struct OutgoingBonk {
    /// The topic (built by the protocol crate).
    pub topic: String,
    /// The payload.
    pub bonk: Bonk,
}

#[derive(Debug)]
struct PublishCommand {
    outgoing: OutgoingBonk,
    reply: oneshot::Sender<Result<(), PublishError>>,
}

/// The handle HTTP handlers publish through. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Publisher {
    commands: mpsc::Sender<PublishCommand>,
    timeout: Duration,
    /// True while bonks wait for desks after a reconnect.
    holding: watch::Receiver<bool>,
}

impl Publisher {
    /// Publishes every bonk at QoS 1 and waits until the broker has acknowledged each, or until
    /// the publish timeout has passed. One result per bonk, in order.
    pub async fn publish_all(&self, bonks: Vec<OutgoingBonk>) -> Vec<Result<(), PublishError>> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let timed_out = || {
            if *self.holding.borrow() {
                PublishError::DesksReturning
            } else {
                PublishError::Timeout
            }
        };
        let mut answers = Vec::with_capacity(bonks.len());
        for outgoing in bonks {
            let (reply, answer) = oneshot::channel();
            let queued = tokio::time::timeout_at(
                deadline,
                self.commands.send(PublishCommand { outgoing, reply }),
            )
            .await;
            answers.push(match queued {
                Ok(Ok(())) => Ok(answer),
                Ok(Err(_)) => Err(PublishError::Stopped),
                Err(_) => Err(timed_out()),
            });
        }
        let mut results = Vec::with_capacity(answers.len());
        for answer in answers {
            results.push(match answer {
                Err(error) => Err(error),
                Ok(answer) => match tokio::time::timeout_at(deadline, answer).await {
                    Ok(Ok(result)) => result,
                    Ok(Err(_)) => Err(PublishError::Stopped),
                    Err(_) => Err(timed_out()),
                },
            });
        }
        results
    }
}

struct Waiter {
    id: BonkId,
    reply: oneshot::Sender<Result<(), PublishError>>,
}

/// Publishes handed to rumqttc, waiting for their PUBACK.
#[derive(Default)]
struct Inflight {
    acks: PubAcks<Waiter>,
}

impl Inflight {
    /// Room for another publish in rumqttc's request queue.
    fn has_room(&self) -> bool {
        self.acks.unsent() < HANDOVER_LIMIT
    }

    /// Hands a publish to rumqttc (call only while ready and with room).
    fn hand_over(&mut self, command: PublishCommand, client: &AsyncClient, fleet: &Mutex<Fleet>) {
        let PublishCommand { outgoing, reply } = command;
        // The HTTP request already gave up (and answered 503): publishing now would only surprise.
        if reply.is_closed() {
            return;
        }
        let OutgoingBonk { topic, bonk } = outgoing;
        match client.try_publish(topic.clone(), QoS::AtLeastOnce, false, bonk.to_json()) {
            Ok(()) => {
                lock(fleet).record_publish(
                    bonk.id.clone(),
                    PublishedBonk {
                        at: Utc::now(),
                        instant: std::time::Instant::now(),
                        topic,
                        namespace: bonk.namespace.clone(),
                        severity: bonk.severity,
                        source: bonk.source,
                    },
                );
                self.acks.handed_over(Waiter { id: bonk.id, reply });
            }
            Err(_) => {
                let _ = reply.send(Err(PublishError::QueueFull));
            }
        }
    }

    fn fail_sent(&mut self, error: PublishError) {
        for waiter in self.acks.take_all() {
            let _ = waiter.reply.send(Err(error));
        }
    }
}

/// The MQTT side of the gateway: owns the connection. Run it with [`MqttTask::run`].
pub struct MqttTask {
    client: AsyncClient,
    link: Link,
    commands: mpsc::Receiver<PublishCommand>,
    topics: Topics,
    url: String,
    /// True while connected: what readiness reads, and the task itself.
    connected: watch::Sender<bool>,
    fleet: Arc<Mutex<Fleet>>,
    recall: Arc<Mutex<Recall>>,
    metrics: Arc<Metrics>,
    inflight: Inflight,
    /// See "Waiting for the desks after a reconnect" above.
    hold: ReturnHold,
}

/// Holds bonks back after a reconnect until the desks that were online have said `online`
/// again (see "Waiting for the desks after a reconnect" above). It owns what says so: the
/// `holding` flag publishers read and the `desks_awaited` gauge.
struct ReturnHold {
    timeout: Duration,
    ever_connected: bool,
    current: Option<Hold>,
    holding: watch::Sender<bool>,
    metrics: Arc<Metrics>,
}

/// One hold: these desks have not said `online` since the reconnect.
struct Hold {
    awaited: HashSet<String>,
    started: tokio::time::Instant,
    deadline: tokio::time::Instant,
}

impl ReturnHold {
    fn is_holding(&self) -> bool {
        self.current.is_some()
    }

    fn deadline(&self) -> Option<tokio::time::Instant> {
        self.current.as_ref().map(|hold| hold.deadline)
    }

    /// Connected: after a reconnect (not the first connect), holds bonks until the desks that
    /// were online say so again.
    fn connected(&mut self, fleet: &Mutex<Fleet>) {
        if !std::mem::replace(&mut self.ever_connected, true) || self.timeout.is_zero() {
            return;
        }
        let awaited: HashSet<String> = lock(fleet).online_desk_names().map(str::to_owned).collect();
        if awaited.is_empty() {
            return;
        }
        tracing::info!(
            desks = awaited.len(),
            timeout_ms = self.timeout.as_millis() as u64,
            "reconnected: holding bonks until the desks that were online have subscribed again"
        );
        let started = tokio::time::Instant::now();
        self.metrics.desks_awaited.set(gauge_value(awaited.len()));
        self.holding.send_replace(true);
        self.current = Some(Hold {
            awaited,
            started,
            deadline: started + self.timeout,
        });
    }

    /// A desk sent a live `online` or health report; the last one awaited ends the hold.
    fn desk_returned(&mut self, desk: &str) {
        let Some(hold) = &mut self.current else {
            return;
        };
        if hold.awaited.remove(desk) {
            self.metrics
                .desks_awaited
                .set(gauge_value(hold.awaited.len()));
            if hold.awaited.is_empty() {
                self.end();
            }
        }
    }

    /// Ends the hold: every desk is back, or its deadline passed with some missing.
    fn end(&mut self) {
        let Some(hold) = self.current.take() else {
            return;
        };
        let waited_ms = hold.started.elapsed().as_millis() as u64;
        if hold.awaited.is_empty() {
            tracing::info!(waited_ms, "every desk is back; publishing bonks again");
        } else {
            let mut missing: Vec<&str> = hold.awaited.iter().map(String::as_str).collect();
            missing.sort_unstable();
            tracing::warn!(
                waited_ms,
                missing = ?missing,
                "desks did not come back within desk_return_timeout_ms; publishing bonks again \
                 (they miss what is published until they subscribe)"
            );
        }
        self.metrics.desks_awaited.set(0);
        self.holding.send_replace(false);
    }

    /// The connection was lost: the next ConnAck starts a new hold from the fleet view, which
    /// this one's desks are in.
    fn cancel(&mut self) {
        self.current = None;
        self.holding.send_replace(false);
        self.metrics.desks_awaited.set(0);
    }
}

impl std::fmt::Debug for MqttTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttTask")
            .field("url", &self.url)
            .field("client_id", &self.link.client_id())
            .field("connected", &*self.connected.borrow())
            .finish_non_exhaustive()
    }
}

/// What [`connect`] returns: the handle to publish through, the task to spawn, and the connection
/// state for readiness.
#[derive(Debug)]
pub struct Connection {
    /// Publishes bonks.
    pub publisher: Publisher,
    /// The task owning the connection; spawn [`MqttTask::run`].
    pub task: MqttTask,
    /// True while connected to the broker.
    pub connected: watch::Receiver<bool>,
}

/// Prepares the connection (nothing is dialled until the task runs). What the task learns from
/// the broker goes into `fleet` and `recall`.
pub fn connect(
    gateway: &GatewayConfig,
    default_client_id: &str,
    fleet: Arc<Mutex<Fleet>>,
    recall: Arc<Mutex<Recall>>,
    metrics: Arc<Metrics>,
) -> Result<Connection, SettingsError> {
    let settings = &gateway.mqtt;
    let topics = gateway.topics.clone();
    let publish_timeout = gateway.publish_timeout;
    let desk_return_timeout = gateway.desk_return_timeout;
    let mut options = settings.options(default_client_id)?;
    options.set_clean_session(true);
    let (client, link) = Link::new(settings, options, CLIENT_REQUEST_CAPACITY);
    let link = link
        .subscribe_on_connect([
            topics.all_statuses(),
            topics.all_health(),
            topics.all_acks(),
            topics.all_namespace_bonks(),
            topics.all_desk_bonks(),
        ])
        .fresh_on_connect();
    let (commands_tx, commands) = mpsc::channel(COMMAND_QUEUE_CAPACITY);
    let (connected, connected_rx) = watch::channel(false);
    let (holding, holding_rx) = watch::channel(false);
    let task = MqttTask {
        client,
        link,
        commands,
        topics,
        url: settings.url.clone(),
        connected,
        fleet,
        recall,
        metrics: metrics.clone(),
        inflight: Inflight::default(),
        hold: ReturnHold {
            timeout: desk_return_timeout,
            ever_connected: false,
            current: None,
            holding,
            metrics,
        },
    };
    Ok(Connection {
        publisher: Publisher {
            commands: commands_tx,
            timeout: publish_timeout,
            holding: holding_rx,
        },
        task,
        connected: connected_rx,
    })
}

enum Step {
    Event(LinkEvent),
    Shutdown,
}

impl MqttTask {
    /// Runs until `shutdown` is cancelled, then disconnects cleanly.
    pub async fn run(mut self, shutdown: CancellationToken) {
        tracing::info!(
            url = %self.url,
            client_id = %self.link.client_id(),
            "connecting to the MQTT broker"
        );
        loop {
            match self.next_event(&shutdown).await {
                Step::Shutdown | Step::Event(LinkEvent::Closed) => break,
                Step::Event(event) => self.handle_event(event),
            }
        }
        self.disconnect().await;
    }

    /// Polls the link, serving publish commands while it waits (a backoff delay included). The
    /// poll future is never dropped half-way for a command (only for shutdown), so no packet is
    /// lost to cancellation.
    async fn next_event(&mut self, shutdown: &CancellationToken) -> Step {
        let poll = self.link.next();
        tokio::pin!(poll);
        loop {
            let hold_deadline = self.hold.deadline();
            let ready = *self.connected.borrow() && !self.hold.is_holding();
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return Step::Shutdown,
                event = &mut poll => return Step::Event(event),
                // Field by field: `poll` holds the link.
                () = bonker_client::sleep_until(hold_deadline), if hold_deadline.is_some() => {
                    self.hold.end();
                }
                Some(command) = self.commands.recv(), if ready && self.inflight.has_room() => {
                    self.inflight.hand_over(command, &self.client, &self.fleet);
                }
            }
        }
    }

    fn handle_event(&mut self, event: LinkEvent) {
        match event {
            LinkEvent::Connected {
                session_present, ..
            } => self.connected(session_present),
            LinkEvent::Message(publish) => self.message(&publish),
            LinkEvent::PublishAcked { pkid, .. } => {
                if let Some(waiter) = self.inflight.acks.acked(pkid) {
                    lock(&self.fleet).record_accepted(&waiter.id);
                    let _ = waiter.reply.send(Ok(()));
                }
            }
            LinkEvent::Subscribed { refused } => subscribed(refused),
            LinkEvent::PublishWritten(pkid) => {
                if !self.inflight.acks.written(pkid) {
                    tracing::debug!(pkid, "a publish went out that no request is waiting for");
                }
            }
            LinkEvent::Disconnected { error, retry_in } => {
                self.connection_lost(&error);
                tracing::debug!(
                    delay_ms = retry_in.as_millis() as u64,
                    "reconnecting after a delay"
                );
            }
            LinkEvent::PublishCollision(pkid) => {
                tracing::debug!(
                    pkid,
                    "packet id collision; the publish waits for the broker"
                );
            }
            LinkEvent::SubscribeSent { .. } | LinkEvent::Closed => {}
        }
    }

    /// The link subscribed to the desk topics and cleared the old connection's requests (their
    /// waiters already failed).
    fn connected(&mut self, session_present: bool) {
        self.set_connected(true);
        self.metrics.mqtt_connections.inc();
        tracing::info!(url = %self.url, session_present, "connected to the MQTT broker");
        self.hold.connected(&self.fleet);
    }

    /// Says whether the task is connected: to readiness and to the metrics.
    fn set_connected(&self, connected: bool) {
        self.connected.send_replace(connected);
        self.metrics.mqtt_connected.set(i64::from(connected));
    }

    fn connection_lost(&mut self, error: &ConnectionError) {
        if *self.connected.borrow() {
            tracing::warn!(url = %self.url, %error, "lost the connection to the MQTT broker");
        } else {
            tracing::warn!(url = %self.url, %error, "cannot connect to the MQTT broker");
        }
        self.set_connected(false);
        self.inflight.fail_sent(PublishError::Disconnected);
        self.hold.cancel();
    }

    fn message(&mut self, publish: &Publish) {
        let topic = publish.topic.as_str();
        match self.topics.route(topic) {
            Some(Route::NamespaceBonk(namespace)) => {
                self.bonk_seen(&publish.payload, Target::Namespace(namespace.to_string()));
            }
            Some(Route::DeskBonk(desk)) => {
                self.bonk_seen(&publish.payload, Target::Desk(desk.to_string()));
            }
            Some(route) => self.desk_message(route, publish),
            None => tracing::debug!(topic, "ignoring a message on an unexpected topic"),
        }
    }

    /// A bonk on the broker: every bonk, so the desks' acks of it are kept, and every detector's
    /// namespace bonk, so alerts for a kill already bonked are merged into it.
    fn bonk_seen(&mut self, payload: &[u8], target: Target) {
        if Bonk::clears_retained(payload) {
            return;
        }
        let bonk = Bonk::parse_lenient(payload).bonk;
        let for_namespace = matches!(target, Target::Namespace(_));
        lock(&self.fleet).record_bonk(&bonk, target, Utc::now());
        if for_namespace {
            let mut recall = crate::recall::lock(&self.recall);
            recall.observe(&bonk, std::time::Instant::now());
            self.metrics.set_kills_remembered(recall.len().1);
        }
    }

    /// A desk's status, health report or ack, for the fleet view and the return hold.
    fn desk_message(&mut self, route: Route, publish: &Publish) {
        let now = Utc::now();
        let payload = &publish.payload[..];
        // Only a desk the return hold waits for can come back.
        let live = !publish.retain && self.hold.is_holding();
        let mut returned = None;
        let mut fleet = lock(&self.fleet);
        let result = match route {
            Route::Status(desk) => {
                // Only a live `online` says the desk has subscribed again (an agent says it
                // right after its SUBACK): a retained one is the broker replaying what it kept,
                // which it may have kept while losing the desk's session.
                if live && Status::parse(payload) == Some(Status::Online) {
                    returned = Some(desk.to_string());
                }
                fleet.record_status(desk, payload, now)
            }
            Route::Health(desk) => {
                let result = fleet.record_health(desk.clone(), payload, now);
                // A live health report proves the desk's connection is up and subscribed: an
                // agent subscribes before it publishes anything new on a connection.
                if live && result.is_ok() && !payload.is_empty() {
                    returned = Some(desk.to_string());
                }
                result
            }
            Route::Ack(desk) => {
                let name = desk.to_string();
                fleet
                    .record_ack(desk, payload, now, std::time::Instant::now())
                    .map(|seen| {
                        self.metrics
                            .acks
                            .get_or_create(&AckLabels {
                                desk: name.clone(),
                                outcome: seen.outcome.as_str(),
                            })
                            .inc();
                        if let Some(latency) = seen.latency {
                            self.metrics.publish_to_ack.observe(latency.as_secs_f64());
                            self.metrics
                                .desk_ack_delay
                                .get_or_create(&DeskLabels { desk: name.clone() })
                                .set(latency.as_secs_f64());
                        }
                        match seen.pace {
                            Some(Pace::FellBehind) => tracing::warn!(
                                desk = %name,
                                delay_s = seen.latency.map_or(0.0, |l| l.as_secs_f64()),
                                "a desk is falling behind: it acked a bonk {} s or more after \
                                 it was published, so bonks wait for it at the broker, which \
                                 drops them once it holds as many as it keeps for one desk (see \
                                 docs/brokers.md); a slow link or an overloaded desk",
                                FALLING_BEHIND.as_secs()
                            ),
                            Some(Pace::CaughtUp) => tracing::info!(
                                desk = %name,
                                "a desk that fell behind has caught up"
                            ),
                            None => {}
                        }
                        tracing::debug!(desk = %name, outcome = %seen.outcome, "ack received");
                    })
            }
            _ => {
                tracing::debug!(
                    topic = publish.topic,
                    "ignoring a message on an unexpected topic"
                );
                Ok(())
            }
        };
        self.metrics
            .desks_online
            .set(gauge_value(fleet.desks_online()));
        self.metrics
            .desks_known
            .set(gauge_value(fleet.desks_known()));
        drop(fleet);
        if let Err(ignored) = result {
            self.metrics.desk_message_ignored(ignored);
            tracing::warn!(
                topic = publish.topic,
                reason = ignored.as_str(),
                "ignoring a desk message"
            );
        }
        // The last awaited desk ends the hold; what waited is taken from the command channel.
        if let Some(desk) = returned {
            self.hold.desk_returned(&desk);
        }
    }

    async fn disconnect(mut self) {
        self.inflight.fail_sent(PublishError::Stopped);
        self.commands.close();
        while let Ok(command) = self.commands.try_recv() {
            let _ = command.reply.send(Err(PublishError::Stopped));
        }
        if !*self.connected.borrow() {
            return;
        }
        if self.client.try_disconnect().is_err() {
            return;
        }
        let clean = tokio::time::timeout(DISCONNECT_TIMEOUT, async {
            loop {
                match self.link.next().await {
                    LinkEvent::Closed | LinkEvent::Disconnected { .. } => break,
                    _ => {}
                }
            }
        })
        .await;
        self.set_connected(false);
        match clean {
            Ok(()) => tracing::info!("disconnected from the MQTT broker"),
            Err(_) => tracing::warn!("the MQTT broker did not take the DISCONNECT in time"),
        }
    }
}

/// Locks the fleet; a panic elsewhere while holding it leaves data that is still worth serving.
pub(crate) fn lock(fleet: &Mutex<Fleet>) -> std::sync::MutexGuard<'_, Fleet> {
    fleet.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The broker answered the SUBSCRIBE to the desk topics.
fn subscribed(refused: usize) {
    if refused > 0 {
        tracing::warn!(
            refused,
            "the broker refused a subscription to the desk topics (check its ACL); the fleet \
             view may be incomplete"
        );
    } else {
        tracing::debug!("subscribed to the desk topics");
    }
}

fn gauge_value(count: usize) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}
