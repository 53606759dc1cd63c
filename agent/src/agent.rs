//! The agent: one struct that owns the desk's state and a `select!` loop over its inputs.
//!
//! Inputs: MQTT events from the link, which this loop polls itself ([`Link::polled`]: the poll in
//! progress survives the other branches), reports from the servo worker
//! ([`crate::servo::worker`]), the health ticker and the shutdown signal. Nothing is shared between
//! tasks behind a lock: the agent alone decides, acks and publishes; the worker alone touches the
//! servo. Polling in the same task means a bonk costs no hop between tasks: its ack is written by
//! the next poll, and the only thread it crosses is the servo worker's, there and back.
//!
//! The life of a bonk: a message on a watched namespace topic or the desk topic → lenient parse
//! (problems logged, never fatal) → policy (duplicate / expired / rate limited / perform) → for
//! a performed bonk a move is queued on the worker and the `bonked` ack is published when the arm is
//! back at rest; every other outcome is acked at once. Exactly one ack per bonk received.
//!
//! Connection rules: persistent session (clean session off, stable client id) so bonks published
//! during a Wi-Fi drop are delivered after it; the link renews the subscriptions on every ConnAck
//! (rumqttc never re-subscribes by itself); `online` (retained) and a health report follow the SUBACK, so
//! whoever sees `online` knows the desk is listening. The last will publishes `offline` when the
//! desk vanishes; a clean shutdown parks the arm, publishes `offline`, waits for its PUBACK and
//! only then disconnects.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use anyhow::Context as _;
use bonker_client::link::{Link, LinkEvent, Polled};
use bonker_client::mqtt::qos;
use bonker_protocol::homeassistant::{self as ha, DeskDevice};
use bonker_protocol::topics::{ACK_DELIVERY, HEALTH_DELIVERY, LAST_BONK_DELIVERY, STATUS_DELIVERY};
use bonker_protocol::{
    Ack, Bonk, BonkId, Delivery, Health, Namespace, Outcome, Route, SCHEMA_VERSION, ServoHealth,
    ServoState, Severity, Status,
};
use chrono::{DateTime, SubsecRound, Utc};
use rumqttc::{AsyncClient, LastWill, Publish, QoS};
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};

use crate::config::{AgentConfig, DEDUPE_MAX_ENTRIES};
use crate::policy::{Decision, Policy, PolicySettings};
use crate::servo::Servo;
use crate::servo::worker::{MoveRequest, ServoReport, ServoWorker};

/// How many requests may wait in rumqttc's queue. The agent never blocks on it (it uses
/// `try_publish`) and skips periodic health while disconnected; what fills it is a storm.
///
/// Under a storm a desk receives faster than it can reply: rumqttc's event loop reads up to ten
/// packets per poll but writes one request per poll. The broker cannot be made to pace its
/// deliveries instead: with manual acks, a PUBACK sent only after the reply, mosquitto 2.0 still
/// had 3,680 bonks unacknowledged out to one desk, far past its `max_inflight_messages` of 20.
/// So this queue is the desk's buffer for replies, sized by memory: 32,768 acks of ~300 bytes
/// is ~10 MB at worst on a 512 MB Pi, and a slot costs memory only while it is used. With 4,096
/// slots a storm of 16,000 bonks lost 3,262 acks on mosquitto
/// (`a_bonk_storm_gets_one_ack_per_bonk`). A reply that still finds the queue full is logged and
/// dropped, never waited for.
const REQUEST_QUEUE: usize = 32_768;

// Shutdown budget: parking, `offline` and DISCONNECT together stay under the 15 s systemd allows
// (TimeoutStopSec) before it kills the agent. Config validation keeps every move shorter than
// MAX_MOVE_MS so the current move always fits.

/// How long shutdown waits for the current move to finish and the arm to park.
const PARK_TIMEOUT: Duration = Duration::from_secs(8);

/// How long shutdown waits for the broker to acknowledge `offline`.
const OFFLINE_TIMEOUT: Duration = Duration::from_secs(3);

/// How long shutdown waits for the link to send DISCONNECT.
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The shortest gap between two health reports that bonks trigger. One bonk is reported at once;
/// during a storm the desk reports at most once per gap instead of after every bonk (a message per
/// bonk less for the broker and every health subscriber), and the bonks of the gap are reported
/// when it ends, so the last report always counts every bonk.
const HEALTH_MIN_GAP: Duration = Duration::from_secs(1);

/// The agent's version, reported in health and to Home Assistant.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Runs the agent until `shutdown` completes, then parks the arm, publishes `offline` and
/// disconnects. Errors only when it cannot start (bad MQTT settings, no thread for the servo).
pub async fn run(
    config: AgentConfig,
    servo: Box<dyn Servo>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let mut agent = Agent::start(config, servo).await?;
    agent.run_until(shutdown).await;
    agent.shut_down().await;
    Ok(())
}

/// A bonk as it arrived, before the policy's decision.
#[derive(Debug)]
struct Received {
    bonk: Bonk,
    received_at: DateTime<Utc>,
    /// The bonk's namespace, else its topic's.
    namespace: Option<String>,
}

/// A bonk being performed, waiting for its move to finish before it is acked.
#[derive(Debug)]
struct PendingMove {
    bonk_id: BonkId,
    received_at: DateTime<Utc>,
    severity: Severity,
    count: u32,
    namespace: Option<String>,
    pod: Option<String>,
}

/// The last performed bonk: health reports say when and what; with Home Assistant on, its ack is
/// retained on the desk's `last_bonk` topic for the "Last bonk" sensors.
#[derive(Debug, Clone)]
struct LastBonk {
    ack: Ack,
    /// Not yet on the `last_bonk` topic: it goes with the next health report.
    unpublished: bool,
}

/// The desk agent. See the module docs.
#[derive(Debug)]
pub struct Agent {
    config: AgentConfig,
    client: AsyncClient,
    link: Polled,
    worker: Option<ServoWorker>,
    servo_reports: mpsc::UnboundedReceiver<ServoReport>,
    policy: Policy,
    tally: Tally,
    servo: ServoStatus,
    moves: Moves,
    session: Session,
    shutting_down: bool,
    health_gap: HealthGap,
}

/// What the health report counts.
#[derive(Debug)]
struct Tally {
    started: Instant,
    bonks_total: u64,
    last_bonk: Option<LastBonk>,
    /// The latest bonk's delay on its way here (see [`Health::bonk_delay_ms`]).
    bonk_delay_ms: Option<i64>,
}

/// The servo as the worker last reported it.
#[derive(Debug)]
struct ServoStatus {
    state: ServoState,
    error: Option<String>,
}

/// Moves handed to the servo worker, each with what its ack needs.
#[derive(Debug, Default)]
struct Moves {
    next_id: u64,
    pending: HashMap<u64, PendingMove>,
}

impl Moves {
    /// The id of the next move.
    fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn queued(&mut self, id: u64, performed: PendingMove) {
        self.pending.insert(id, performed);
    }

    fn done(&mut self, id: u64) -> Option<PendingMove> {
        self.pending.remove(&id)
    }
}

/// The MQTT session as the link reports it.
#[derive(Debug, Default)]
struct Session {
    connected: bool,
    /// `online`, health and discovery follow the SUBACK of this connection's SUBSCRIBE.
    announce_on_suback: bool,
    /// SUBSCRIBEs queued and sent: a SUBSCRIBE behind the last publish is the marker that says it
    /// went out (see [`Agent::wait_until_published`]).
    subscribe_requests: u64,
    subscribes_sent: u64,
    /// QoS 1 publishes not yet acknowledged.
    inflight: u16,
}

impl Session {
    /// Everything queued before the last marker has been sent and acknowledged.
    fn all_acknowledged(&self) -> bool {
        self.subscribes_sent >= self.subscribe_requests && self.inflight == 0
    }
}

/// Keeps bonk-triggered health reports [`HEALTH_MIN_GAP`] apart.
#[derive(Debug, Default)]
struct HealthGap {
    last: Option<Instant>,
    /// A change waits for the end of the gap.
    pending: bool,
}

impl HealthGap {
    /// Whether a change may be reported now; if not, it is reported when the gap ends.
    fn report_now(&mut self) -> bool {
        match self.last {
            Some(at) if at.elapsed() < HEALTH_MIN_GAP => {
                self.pending = true;
                false
            }
            _ => true,
        }
    }

    fn reported(&mut self) {
        self.last = Some(Instant::now());
        self.pending = false;
    }

    /// When a waiting change is due.
    fn due(&self) -> Option<Instant> {
        self.pending
            .then(|| self.last.unwrap_or_else(Instant::now) + HEALTH_MIN_GAP)
    }
}

impl Agent {
    /// Homes the servo, then starts the MQTT link (it connects in the background).
    pub async fn start(config: AgentConfig, servo: Box<dyn Servo>) -> anyhow::Result<Agent> {
        let client_id = config.client_id();
        let mut options = config.mqtt.options(&client_id).context("MQTT settings")?;
        options.set_clean_session(false);
        options.set_last_will(LastWill::new(
            config.topics.desk_status(&config.desk),
            Status::Offline.as_str(),
            qos(STATUS_DELIVERY),
            STATUS_DELIVERY.retain,
        ));
        let (reports_tx, mut servo_reports) = mpsc::unbounded_channel();
        let worker = ServoWorker::spawn(servo, config.servo.clone(), reports_tx)
            .context("cannot start the servo thread")?;
        let (servo_state, servo_error) = match servo_reports.recv().await {
            Some(ServoReport::Homed { error: None }) => (ServoState::Rest, None),
            Some(ServoReport::Homed { error: Some(error) }) => (ServoState::Error, Some(error)),
            other => (
                ServoState::Error,
                Some(format!("servo worker did not home: {other:?}")),
            ),
        };
        let (client, link) = Link::new(&config.mqtt, options, REQUEST_QUEUE);
        let link = link.subscribe_on_connect(config.subscriptions()).polled();
        tracing::info!(
            desk = %config.desk,
            namespaces = ?config.watch.names(),
            broker = %config.mqtt.url,
            client_id,
            servo = worker.driver().as_str(),
            "bonker-agent started"
        );
        let policy = Policy::new(PolicySettings {
            max_age: config.max_age,
            dedupe_window: config.dedupe_window,
            dedupe_max_entries: DEDUPE_MAX_ENTRIES,
            kill_window: config.kill_window,
            max_kills: bonker_protocol::kill::DEFAULT_MAX_KILLS,
            rate_max_bonks: config.rate_max_bonks,
            rate_window: config.rate_window,
        });
        Ok(Agent {
            config,
            client,
            link,
            worker: Some(worker),
            servo_reports,
            policy,
            tally: Tally {
                started: Instant::now(),
                bonks_total: 0,
                last_bonk: None,
                bonk_delay_ms: None,
            },
            servo: ServoStatus {
                state: servo_state,
                error: servo_error,
            },
            moves: Moves::default(),
            session: Session::default(),
            shutting_down: false,
            health_gap: HealthGap::default(),
        })
    }

    /// The main loop, until `shutdown` completes (or the link dies, which it does not on its own).
    pub async fn run_until(&mut self, shutdown: impl Future<Output = ()>) {
        let mut health_ticker = tokio::time::interval_at(
            Instant::now() + self.config.health_interval,
            self.config.health_interval,
        );
        health_ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                event = self.link.recv() => match event {
                    LinkEvent::Closed => {
                        tracing::error!("MQTT link stopped unexpectedly");
                        return;
                    }
                    event => self.on_link_event(event),
                },
                Some(report) = self.servo_reports.recv() => self.on_servo_report(report),
                _ = health_ticker.tick() => {
                    if self.session.connected {
                        self.publish_health();
                    }
                }
                () = bonker_client::sleep_until(self.health_gap.due()), if self.health_gap.pending => {
                    self.health_gap.pending = false;
                    if self.session.connected {
                        self.publish_health();
                    }
                }
            }
        }
    }

    /// Parks the arm, publishes `offline`, waits for its PUBACK, disconnects.
    pub async fn shut_down(mut self) {
        self.shutting_down = true;
        tracing::info!(desk = %self.config.desk, "shutting down: parking the arm");
        let parked = self.park().await;
        if self.session.connected {
            self.publish(
                self.config.topics.desk_status(&self.config.desk),
                STATUS_DELIVERY,
                Status::Offline.as_str(),
            );
            self.wait_until_published().await;
        }
        let worker = self.worker.take();
        if self.client.try_disconnect().is_ok() {
            self.link.closed(DISCONNECT_TIMEOUT).await;
        }
        if let Some(worker) = worker {
            if parked {
                worker.join();
            } else {
                tracing::error!("the servo did not park in time; leaving it");
            }
        }
        tracing::info!(desk = %self.config.desk, "stopped");
    }

    async fn park(&mut self) -> bool {
        let Some(worker) = &self.worker else {
            return false;
        };
        worker.park().await;
        let deadline = tokio::time::sleep(PARK_TIMEOUT);
        tokio::pin!(deadline);
        let mut link_open = true;
        loop {
            tokio::select! {
                () = &mut deadline => return false,
                report = self.servo_reports.recv() => match report {
                    Some(ServoReport::Parked { error }) => {
                        if let Some(error) = error {
                            tracing::error!(%error, "parking the arm failed");
                        }
                        return true;
                    }
                    Some(report) => self.on_servo_report(report),
                    None => return false,
                },
                event = self.link.recv(), if link_open => {
                    link_open = !matches!(event, LinkEvent::Closed);
                    self.on_link_event(event);
                }
            }
        }
    }

    /// Waits until everything published so far (the `offline` status last) is acknowledged.
    ///
    /// rumqttc does not say which PUBACK belongs to which publish, so the agent queues a
    /// SUBSCRIBE right behind `offline` (renewing the desk topic subscription, which changes
    /// nothing) as a marker: requests leave in order, so once the marker has gone out and no QoS 1
    /// publish is in flight, `offline` has been acknowledged.
    async fn wait_until_published(&mut self) {
        let marker = self.client.try_subscribe(
            self.config.topics.desk_bonk(&self.config.desk),
            QoS::AtLeastOnce,
        );
        if marker.is_err() {
            return;
        }
        self.session.subscribe_requests += 1;
        let deadline = tokio::time::sleep(OFFLINE_TIMEOUT);
        tokio::pin!(deadline);
        while !self.session.all_acknowledged() {
            tokio::select! {
                () = &mut deadline => {
                    tracing::warn!("the broker did not acknowledge `offline` in time");
                    return;
                }
                event = self.link.recv() => match event {
                    LinkEvent::Closed => return,
                    event => self.on_link_event(event),
                },
            }
            if !self.session.connected {
                return;
            }
        }
        tracing::debug!("`offline` acknowledged by the broker");
    }

    fn on_link_event(&mut self, event: LinkEvent) {
        match event {
            LinkEvent::Connected {
                session_present,
                resubscribed,
            } => {
                self.session.connected = true;
                self.session.inflight = 0;
                tracing::info!(
                    desk = %self.config.desk,
                    session_present,
                    "connected to the broker"
                );
                if resubscribed {
                    self.session.subscribe_requests += 1;
                    self.session.announce_on_suback = true;
                }
            }
            LinkEvent::Subscribed { refused } => {
                if refused > 0 {
                    tracing::error!(
                        refused,
                        filters = ?self.config.subscriptions(),
                        "the broker refused some subscriptions (check its ACL)"
                    );
                }
                if std::mem::take(&mut self.session.announce_on_suback) && !self.shutting_down {
                    self.publish(
                        self.config.topics.desk_status(&self.config.desk),
                        STATUS_DELIVERY,
                        Status::Online.as_str(),
                    );
                    self.publish_health();
                    self.announce_to_home_assistant();
                }
            }
            LinkEvent::SubscribeSent { inflight } => {
                self.session.subscribes_sent += 1;
                self.session.inflight = inflight;
            }
            LinkEvent::PublishAcked { inflight, .. } => self.session.inflight = inflight,
            LinkEvent::PublishWritten(_) | LinkEvent::PublishCollision(_) => {}
            LinkEvent::Message(Publish {
                topic,
                payload,
                retain,
                ..
            }) => self.on_message(&topic, &payload, retain),
            LinkEvent::Disconnected { error, retry_in } => {
                if std::mem::take(&mut self.session.connected) {
                    tracing::warn!(%error, ?retry_in, "lost the broker; reconnecting");
                } else {
                    tracing::warn!(%error, ?retry_in, broker = %self.config.mqtt.url, "cannot connect to the broker");
                }
            }
            LinkEvent::Closed => self.session.connected = false,
        }
    }

    fn on_message(&mut self, topic: &str, payload: &[u8], retain: bool) {
        if let Some(homeassistant) = &self.config.homeassistant
            && topic == ha::birth_topic(&homeassistant.discovery_prefix)
        {
            if std::str::from_utf8(payload).map(str::trim) == Ok(ha::BIRTH_ONLINE)
                && !self.shutting_down
            {
                tracing::info!("Home Assistant (re)started; announcing the desk again");
                self.announce_to_home_assistant();
                self.publish_health();
            }
            return;
        }
        match self.config.topics.route(topic) {
            Some(Route::DeskBonk(desk)) if desk == self.config.desk => {
                self.on_bonk(topic, None, payload, retain);
                return;
            }
            _ => {}
        }
        match self.config.filters.route(topic) {
            Some(Route::NamespaceBonk(namespace)) if self.config.watch.includes(&namespace) => {
                self.on_bonk(topic, Some(namespace), payload, retain);
            }
            Some(Route::NamespaceBonk(namespace)) => {
                tracing::debug!(topic, %namespace, "bonk for a namespace this desk does not watch");
            }
            _ => tracing::debug!(topic, "message on an unexpected topic ignored"),
        }
    }

    fn on_bonk(
        &mut self,
        topic: &str,
        topic_namespace: Option<Namespace>,
        payload: &[u8],
        retain: bool,
    ) {
        if Bonk::clears_retained(payload) {
            tracing::debug!(
                topic,
                "an empty message clears a retained bonk: nothing to perform"
            );
            return;
        }
        let received_at = Utc::now();
        let parsed = Bonk::parse_lenient(payload);
        if let Some(sent_at) = parsed.bonk.sent_at.filter(|_| !retain) {
            self.tally.bonk_delay_ms = Some((received_at - sent_at).num_milliseconds());
        }
        for warning in &parsed.warnings {
            tracing::warn!(
                desk = %self.config.desk,
                topic,
                bonk_id = %parsed.bonk.id,
                warning = %warning,
                "bonk payload problem; using defaults"
            );
        }
        let namespace = parsed
            .bonk
            .namespace
            .clone()
            .or_else(|| topic_namespace.map(|n| n.to_string()));
        let received = Received {
            bonk: parsed.bonk,
            received_at,
            namespace,
        };
        let immediate = if self.shutting_down {
            self.ack_now(
                &received,
                Outcome::ServoError,
                Some("not performed: the agent is shutting down".to_owned()),
            )
        } else if retain {
            self.ack_now(
                &received,
                Outcome::Expired,
                Some(format!(
                    "a retained bonk replayed by the broker is never performed; clear it with \
                     mosquitto_pub -r -n -t {topic}"
                )),
            )
        } else {
            match self.decide(received) {
                Some(ack) => ack,
                None => return,
            }
        };
        self.publish_ack(&immediate, topic);
    }

    /// What the policy makes of a bonk: the ack to send now, or `None` when a move was queued
    /// (its ack follows when the arm is back).
    fn decide(&mut self, received: Received) -> Option<Ack> {
        let decision = self
            .policy
            .decide(&received.bonk, Instant::now(), received.received_at);
        Some(match decision {
            Decision::Duplicate => self.ack_now(&received, Outcome::Duplicate, None),
            Decision::SameKill { earlier } => self.ack_now(
                &received,
                Outcome::Duplicate,
                Some(format!(
                    "the same OOM kill as bonk {earlier}, already performed"
                )),
            ),
            Decision::Expired { age } => self.ack_now(
                &received,
                Outcome::Expired,
                Some(format!(
                    "{} s old, over max_age_s = {}",
                    age.as_secs(),
                    self.config.max_age.map_or(0, |a| a.as_secs())
                )),
            ),
            Decision::RateLimited => {
                let detail = self.rate_limit_detail();
                self.ack_now(&received, Outcome::RateLimited, Some(detail))
            }
            Decision::Perform { count, severity } => {
                let received = self.start_move(received, count, severity)?;
                self.policy.coalesce_instead(count, severity);
                self.ack_now(
                    &received,
                    Outcome::RateLimited,
                    Some("the servo is busy; coalesced into the next bonk".to_owned()),
                )
            }
        })
    }

    /// Queues the move of a bonk on the servo worker: `None` once queued, or the bonk back when
    /// the worker's queue is full.
    fn start_move(
        &mut self,
        received: Received,
        count: u32,
        severity: Severity,
    ) -> Option<Received> {
        let id = self.moves.next_id();
        let queued = self.worker.as_ref().is_some_and(|worker| {
            worker
                .try_submit(MoveRequest {
                    id,
                    severity,
                    strokes: count,
                })
                .is_ok()
        });
        if !queued {
            return Some(received);
        }
        tracing::debug!(bonk_id = %received.bonk.id, count, %severity, "move queued");
        // The worker starts a move as soon as the one before it ends: the servo is moving from
        // now until the last queued move has finished. (A report of each start would wake this
        // loop once more per bonk, for nothing else.)
        self.servo.state = ServoState::Moving;
        self.moves.queued(
            id,
            PendingMove {
                bonk_id: received.bonk.id,
                received_at: received.received_at,
                severity,
                count,
                namespace: received.namespace,
                pod: received.bonk.pod,
            },
        );
        None
    }

    /// The ack of a bonk that is not performed.
    fn ack_now(&self, received: &Received, outcome: Outcome, detail: Option<String>) -> Ack {
        Ack {
            version: SCHEMA_VERSION,
            bonk_id: received.bonk.id.clone(),
            desk: self.config.desk.clone(),
            outcome,
            received_at: received.received_at,
            finished_at: Utc::now(),
            severity: Some(received.bonk.severity),
            namespace: received.namespace.clone(),
            pod: received.bonk.pod.clone(),
            count: None,
            detail,
        }
    }

    fn rate_limit_detail(&self) -> String {
        format!(
            "over the rate limit of {} bonks per {} s; coalesced into the next bonk \
             ({} waiting)",
            self.config.rate_max_bonks,
            self.config.rate_window.as_secs(),
            self.policy.coalesced()
        )
    }

    fn on_servo_report(&mut self, report: ServoReport) {
        match report {
            ServoReport::Homed { .. } | ServoReport::Parked { .. } => {}
            ServoReport::Finished { id, at } => {
                // Moving while another move waits: the worker starts it at once.
                self.servo.state = if self.moves.pending.len() > 1 {
                    ServoState::Moving
                } else {
                    ServoState::Rest
                };
                self.servo.error = None;
                let Some(performed) = self.moves.done(id) else {
                    return;
                };
                self.tally.bonks_total += 1;
                let ack = self.ack_for(&performed, Outcome::Bonked, at, None);
                self.publish_ack(&ack, "");
                self.tally.last_bonk = Some(LastBonk {
                    ack,
                    unpublished: true,
                });
                self.health_changed();
            }
            ServoReport::Failed { id, at, error } => {
                self.servo.state = ServoState::Error;
                self.servo.error = Some(error.clone());
                if let Some(performed) = self.moves.done(id) {
                    let ack = self.ack_for(&performed, Outcome::ServoError, at, Some(error));
                    self.publish_ack(&ack, "");
                }
                self.health_changed();
            }
            ServoReport::Cancelled { id } => {
                if let Some(performed) = self.moves.done(id) {
                    let ack = self.ack_for(
                        &performed,
                        Outcome::ServoError,
                        Utc::now(),
                        Some("cancelled: the agent is shutting down".to_owned()),
                    );
                    self.publish_ack(&ack, "");
                }
            }
        }
    }

    fn ack_for(
        &self,
        performed: &PendingMove,
        outcome: Outcome,
        finished_at: DateTime<Utc>,
        detail: Option<String>,
    ) -> Ack {
        Ack {
            version: SCHEMA_VERSION,
            bonk_id: performed.bonk_id.clone(),
            desk: self.config.desk.clone(),
            outcome,
            received_at: performed.received_at,
            finished_at,
            severity: Some(performed.severity),
            namespace: performed.namespace.clone(),
            pod: performed.pod.clone(),
            count: (outcome == Outcome::Bonked).then_some(performed.count),
            detail,
        }
    }

    fn publish_ack(&self, ack: &Ack, topic: &str) {
        tracing::info!(
            desk = %self.config.desk,
            topic,
            bonk_id = %ack.bonk_id,
            outcome = %ack.outcome,
            severity = ?ack.severity,
            namespace = ?ack.namespace,
            "ack"
        );
        self.publish(
            self.config.topics.desk_ack(&self.config.desk),
            ACK_DELIVERY,
            ack.to_json(),
        );
    }

    /// The current health report.
    fn health(&self) -> Health {
        let last = self.tally.last_bonk.as_ref();
        Health {
            version: SCHEMA_VERSION,
            desk: self.config.desk.clone(),
            agent_version: VERSION.to_owned(),
            uptime_s: self.tally.started.elapsed().as_secs(),
            started_at: chrono::Duration::from_std(self.tally.started.elapsed())
                .ok()
                .and_then(|uptime| Utc::now().checked_sub_signed(uptime))
                .map(|at| at.trunc_subsecs(0)),
            bonks_total: self.tally.bonks_total,
            last_bonk_at: last.map(|l| l.ack.finished_at.trunc_subsecs(3)),
            last_bonk_namespace: last.and_then(|l| l.ack.namespace.clone()),
            last_bonk_pod: last.and_then(|l| l.ack.pod.clone()),
            servo: ServoHealth {
                driver: self
                    .worker
                    .as_ref()
                    .map_or("none", |w| w.driver().as_str())
                    .to_owned(),
                state: self.servo.state.as_str().to_owned(),
                error: self.servo.error.clone(),
            },
            namespaces: self.config.watch.names(),
            soc_temp_c: crate::health::soc_temperature_c(&self.config.soc_temp_file),
            bonk_delay_ms: self.tally.bonk_delay_ms,
            sent_at: Utc::now().trunc_subsecs(3),
        }
    }

    /// Reports a change of health now, or at the end of the current [`HEALTH_MIN_GAP`].
    fn health_changed(&mut self) {
        if !self.session.connected {
            return;
        }
        if self.health_gap.report_now() {
            self.publish_health();
        }
    }

    /// Publishes the health report and, with Home Assistant on, a last bonk it has not seen:
    /// both change with a bonk, so they share [`HEALTH_MIN_GAP`].
    fn publish_health(&mut self) {
        self.health_gap.reported();
        self.publish(
            self.config.topics.desk_health(&self.config.desk),
            HEALTH_DELIVERY,
            self.health().to_json(),
        );
        let announced = self.config.homeassistant.is_some();
        let Some(last) = self
            .tally
            .last_bonk
            .as_mut()
            .filter(|l| announced && l.unpublished)
        else {
            return;
        };
        last.unpublished = false;
        let payload = last.ack.to_json();
        self.publish(
            self.config.topics.desk_last_bonk(&self.config.desk),
            LAST_BONK_DELIVERY,
            payload,
        );
    }

    fn announce_to_home_assistant(&self) {
        let Some(homeassistant) = &self.config.homeassistant else {
            return;
        };
        let device = DeskDevice {
            desk: &self.config.desk,
            topics: &self.config.topics,
            discovery_prefix: &homeassistant.discovery_prefix,
            sw_version: VERSION,
            has_soc_temperature: crate::health::soc_temperature_c(&self.config.soc_temp_file)
                .is_some(),
        };
        for discovery in device.discovery() {
            self.publish(
                discovery.topic.clone(),
                ha::DISCOVERY_DELIVERY,
                discovery.payload(),
            );
        }
        // What an earlier version announced and this one does not: an empty retained config
        // makes Home Assistant remove the entity.
        for topic in
            ha::retired_discovery_topics(&homeassistant.discovery_prefix, &self.config.desk)
        {
            self.publish(topic, ha::DISCOVERY_DELIVERY, Vec::new());
        }
    }

    fn publish(&self, topic: String, delivery: Delivery, payload: impl Into<Vec<u8>>) {
        if let Err(error) = self.client.try_publish(
            topic.clone(),
            qos(delivery),
            delivery.retain,
            payload.into(),
        ) {
            tracing::warn!(%error, topic, "cannot queue publish");
        }
    }
}
