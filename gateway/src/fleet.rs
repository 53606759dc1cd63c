//! The fleet view: what the desks said about themselves (retained status and health) and about
//! each bonk (acks), as the gateway saw it on the broker.
//!
//! One [`Fleet`] struct holds all of it. The MQTT task writes it (and webhooks record their merged
//! alerts); HTTP handlers read it for `GET /api/desks`, `GET /api/bonks/{id}` and the fleet page.
//! It sits behind one `std::sync::Mutex` that is never held across an `.await`, so a lock is a few
//! microseconds and cannot deadlock. Every change is announced to the fleet page's open streams
//! ([`crate::events`]) under that lock, which costs nothing while no page is open.
//!
//! Memory is bounded in bytes whatever the broker carries, because every desk's credentials can
//! publish on its own topics whatever it likes:
//! - at most [`MAX_TRACKED_DESKS`] desks, each with one status and one health report of at most
//!   [`MAX_HEALTH_BYTES`] on the wire;
//! - at most [`MAX_TRACKED_BONKS`] bonks (the oldest forgotten first), each created only by a bonk
//!   seen on the broker or published here — never by an ack, so acks with made-up ids cost nothing;
//! - at most one ack per desk per bonk (a desk acks every bonk once), [`MAX_ACKS_PER_BONK`] per
//!   bonk and [`MAX_STORED_ACKS`] in all (the oldest bonks are forgotten to make room), each
//!   stored in a fixed shape with its detail cut to [`MAX_ACK_DETAIL`] bytes; ack payloads over
//!   [`MAX_ACK_BYTES`] are refused;
//! - the feed (the page's latest bonks) keeps what a bonk was about for its last [`MAX_FEED`]
//!   bonks only, each text field cut to [`MAX_FEED_FIELD`] bytes and at most
//!   [`MAX_EXPECTED_DESKS`] desks expected to react.
//!
//! Desk payloads are parsed strictly (they come from bonker's own agent); what does not parse or
//! is too large is counted and logged by the caller with the desk's name, never guessed at.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bonker_protocol::bonk::cut_to;
use bonker_protocol::desk::{MAX_ACK_BYTES, MAX_HEALTH_BYTES};
use bonker_protocol::{Ack, Bonk, BonkId, DeskId, Health, Outcome, Severity, Source, Status};
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::events::{Event, Events};

/// Most desks tracked; status from further desks is ignored (and counted).
pub const MAX_TRACKED_DESKS: usize = 10_000;
/// Most bonks tracked for `GET /api/bonks/{id}`; the oldest are forgotten first.
pub const MAX_TRACKED_BONKS: usize = 10_000;
/// Most acks kept per bonk.
pub const MAX_ACKS_PER_BONK: usize = 1_000;
/// Most acks kept in all; the oldest bonks are forgotten to stay under it.
pub const MAX_STORED_ACKS: usize = 100_000;
/// An ack's detail is kept up to this many bytes.
pub const MAX_ACK_DETAIL: usize = 256;
/// Bonks the feed keeps with what they were about (source, pod, summary…), newest last.
pub const MAX_FEED: usize = 100;
/// Each text field of a feed bonk is kept up to this many bytes.
pub const MAX_FEED_FIELD: usize = 256;
/// Most desks a feed bonk lists as expected to react.
pub const MAX_EXPECTED_DESKS: usize = MAX_ACKS_PER_BONK;

/// Why a desk message was ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ignored {
    /// A status payload other than `online`/`offline`.
    InvalidStatus,
    /// A health payload that is not a Health report.
    InvalidHealth,
    /// An ack payload that is not an Ack.
    InvalidAck,
    /// A message from a new desk when [`MAX_TRACKED_DESKS`] are already tracked.
    TooManyDesks,
    /// A health or ack payload over its size limit.
    TooLarge,
}

impl Ignored {
    /// Every reason, for the metric's label set.
    pub const ALL: [Ignored; 5] = [
        Ignored::InvalidStatus,
        Ignored::InvalidHealth,
        Ignored::InvalidAck,
        Ignored::TooManyDesks,
        Ignored::TooLarge,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Ignored::InvalidStatus => "invalid_status",
            Ignored::InvalidHealth => "invalid_health",
            Ignored::InvalidAck => "invalid_ack",
            Ignored::TooManyDesks => "too_many_desks",
            Ignored::TooLarge => "too_large",
        }
    }
}

/// A bonk this gateway handed to the broker.
#[derive(Debug, Clone)]
pub struct PublishedBonk {
    /// Wall-clock time of the publish.
    pub at: DateTime<Utc>,
    /// Monotonic time of the publish, for latency.
    pub instant: Instant,
    /// The topic.
    pub topic: String,
    /// The bonk's namespace field (the raw label for alerts).
    pub namespace: Option<String>,
    /// The severity.
    pub severity: Severity,
    /// Who asked for it.
    pub source: Source,
}

/// A desk whose acks come this long after the publish is falling behind: far longer than any
/// stroke, so the bonks are waiting for it at the broker or in its own queue.
pub(crate) const FALLING_BEHIND: Duration = Duration::from_secs(10);
/// A desk falling behind has caught up once an ack comes within this of the publish again.
pub(crate) const CAUGHT_UP: Duration = Duration::from_secs(5);

/// What an accepted ack means for the metrics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AckSeen {
    /// The desk's outcome.
    pub outcome: Outcome,
    /// Publish-to-ack time, when this gateway published the bonk.
    pub latency: Option<Duration>,
    /// Whether this ack moved the desk past [`FALLING_BEHIND`] or back within [`CAUGHT_UP`].
    pub pace: Option<Pace>,
}

/// A change in how far behind a desk's acks are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// Its acks now come [`FALLING_BEHIND`] or more after the publish.
    FellBehind,
    /// Its acks come within [`CAUGHT_UP`] again.
    CaughtUp,
}

/// Where a bonk was published: which desks it is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// Every desk watching this namespace (or every namespace).
    Namespace(String),
    /// This one desk.
    Desk(String),
}

#[derive(Debug)]
struct DeskRecord {
    status: Option<Status>,
    /// When the status last changed, as this gateway saw it.
    status_since: DateTime<Utc>,
    last_seen: DateTime<Utc>,
    health: Option<Health>,
    acks: BTreeMap<&'static str, u64>,
    last_ack_bonk_at: Option<DateTime<Utc>>,
    /// Between an ack [`FALLING_BEHIND`] and one within [`CAUGHT_UP`].
    behind: bool,
}

impl DeskRecord {
    fn new(now: DateTime<Utc>) -> Self {
        Self {
            status: None,
            status_since: now,
            last_seen: now,
            health: None,
            acks: BTreeMap::new(),
            last_ack_bonk_at: None,
            behind: false,
        }
    }
}

#[derive(Debug)]
struct BonkRecord {
    published: Option<PublishedBonk>,
    /// The earlier bonk this alert's kill had already bonked as.
    merged_into: Option<BonkId>,
    accepted_by_broker: bool,
    acks: Vec<AckRecord>,
    /// What it was about, while it is in the feed.
    feed: Option<Box<FeedDetail>>,
}

/// What the feed keeps of a bonk: its fields cut to [`MAX_FEED_FIELD`].
#[derive(Debug)]
struct FeedDetail {
    at: DateTime<Utc>,
    source: Source,
    severity: Severity,
    target: Target,
    namespace: Option<String>,
    pod: Option<String>,
    container: Option<String>,
    alertname: Option<String>,
    summary: Option<String>,
    /// The desks that were online and watching its target when it was seen.
    expected: Vec<DeskId>,
}

/// What is kept of an ack: a fixed shape, the detail cut.
#[derive(Debug, Clone)]
struct AckRecord {
    desk: DeskId,
    outcome: Outcome,
    received_at: DateTime<Utc>,
    finished_at: DateTime<Utc>,
    detail: Option<String>,
    arrived_at: DateTime<Utc>,
    latency: Option<Duration>,
}

/// Desks and bonks as seen on the broker.
#[derive(Debug, Default)]
pub struct Fleet {
    desks: BTreeMap<DeskId, DeskRecord>,
    bonks: HashMap<BonkId, BonkRecord>,
    bonk_order: VecDeque<BonkId>,
    /// Acks kept over every bonk.
    stored_acks: usize,
    /// Desks whose status is `online`, kept as statuses change: the gauge is set after every
    /// desk message, and counting 1,000 desks each time was a third of the gateway's CPU.
    online: usize,
    /// The feed's bonks, oldest first (some may have been forgotten since).
    feed: VecDeque<BonkId>,
    /// The fleet page's streams.
    events: Events,
}

impl Fleet {
    /// Records that this gateway is publishing bonk `id` (called before the broker's PUBACK, so
    /// an ack racing the PUBACK still finds it).
    pub fn record_publish(&mut self, id: BonkId, published: PublishedBonk) {
        let record = self.bonk_entry(id);
        record.published = Some(published);
    }

    /// Records that alert bonk `id` was not published because its kill had already bonked as
    /// `into`.
    pub fn record_merge(&mut self, id: BonkId, into: BonkId) {
        self.bonk_entry(id).merged_into = Some(into);
    }

    /// [`Fleet::record_merge`] for an alert whose bonk would have gone to `target`: the feed shows
    /// it with the bonk it was merged into (whose desks reacted; this one expects none).
    pub fn record_merged_alert(&mut self, bonk: &Bonk, target: Target, into: BonkId) {
        self.record_merge(bonk.id.clone(), into);
        self.add_to_feed(bonk, target, Vec::new(), Utc::now());
    }

    /// Records a bonk seen on the broker on `target`'s topic (anyone's, this gateway's own too):
    /// the desks' acks of it are kept and the feed shows it.
    pub fn record_bonk(&mut self, bonk: &Bonk, target: Target, now: DateTime<Utc>) {
        self.bonk_entry(bonk.id.clone());
        let expected = self.expected_desks(&target);
        self.add_to_feed(bonk, target, expected, now);
    }

    fn add_to_feed(
        &mut self,
        bonk: &Bonk,
        target: Target,
        expected: Vec<DeskId>,
        now: DateTime<Utc>,
    ) {
        let Some(record) = self.bonks.get_mut(&bonk.id) else {
            return;
        };
        if record.feed.is_some() {
            return;
        }
        let cut = |field: &Option<String>| {
            field
                .as_deref()
                .map(|value| cut_to(value, MAX_FEED_FIELD).to_owned())
        };
        record.feed = Some(Box::new(FeedDetail {
            at: record.published.as_ref().map(|p| p.at).unwrap_or(now),
            source: bonk.source,
            severity: bonk.severity,
            target,
            namespace: cut(&bonk.namespace),
            pod: cut(&bonk.pod),
            container: cut(&bonk.container),
            alertname: cut(&bonk.alertname),
            summary: cut(&bonk.summary),
            expected,
        }));
        self.feed.push_back(bonk.id.clone());
        while self.feed.len() > MAX_FEED {
            if let Some(oldest) = self.feed.pop_front()
                && let Some(record) = self.bonks.get_mut(&oldest)
            {
                record.feed = None;
            }
        }
        let id = &bonk.id;
        let bonks = &self.bonks;
        self.events
            .announce("bonk", || bonks.get(id).and_then(|r| feed_bonk(id, r)));
    }

    /// The desks online that watch `target`, by name.
    fn expected_desks(&self, target: &Target) -> Vec<DeskId> {
        let watches = |record: &DeskRecord, namespace: &str| {
            record.health.as_ref().is_some_and(|health| {
                health
                    .namespaces
                    .iter()
                    .any(|watched| watched == namespace || watched == "+")
            })
        };
        self.desks
            .iter()
            .filter(|(desk, record)| {
                record.status == Some(Status::Online)
                    && match target {
                        Target::Namespace(namespace) => watches(record, namespace),
                        Target::Desk(name) => desk.as_str() == name,
                    }
            })
            .map(|(desk, _)| desk.clone())
            .take(MAX_EXPECTED_DESKS)
            .collect()
    }

    /// A new stream of changes, with the state it starts from: taken together under the fleet's
    /// lock, so the stream misses nothing the snapshot lacks. Serialise the snapshot
    /// ([`Snapshot::into_event`]) after letting go of the lock.
    pub fn subscribe(&self) -> (tokio::sync::broadcast::Receiver<Arc<Event>>, Snapshot) {
        (self.events.subscribe(), self.snapshot())
    }

    /// The whole state: every desk, and the feed, oldest bonk first.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            id: self.events.last_id(),
            desks: self.desk_views(),
            bonks: self
                .feed
                .iter()
                .filter_map(|id| feed_bonk(id, self.bonks.get(id)?))
                .collect(),
        }
    }

    fn announce_desk(&mut self, desk: &DeskId) {
        let desks = &self.desks;
        self.events.announce("desk", || {
            desks.get(desk).map(|record| desk_view(desk, record))
        });
    }

    /// The bonk that alert bonk `id` was merged into, when it was.
    pub fn merged_into(&self, id: &BonkId) -> Option<&BonkId> {
        self.bonks.get(id)?.merged_into.as_ref()
    }

    /// Records a bonk seen on the broker (anyone's), so the desks' acks of it are kept.
    pub fn record_seen(&mut self, id: BonkId) {
        self.bonk_entry(id);
    }

    /// Records the broker's PUBACK for bonk `id`.
    pub fn record_accepted(&mut self, id: &BonkId) {
        if let Some(record) = self.bonks.get_mut(id) {
            record.accepted_by_broker = true;
        }
    }

    /// A desk's retained status. An empty payload (the retained message was cleared, the desk
    /// was forgotten) removes the desk.
    pub fn record_status(
        &mut self,
        desk: DeskId,
        payload: &[u8],
        now: DateTime<Utc>,
    ) -> Result<(), Ignored> {
        if payload.is_empty() {
            if let Some(removed) = self.desks.remove(&desk) {
                if removed.status == Some(Status::Online) {
                    self.online -= 1;
                }
                self.events.announce("desk_removed", || DeskRemoved {
                    desk: desk.as_str(),
                });
            }
            return Ok(());
        }
        let status = Status::parse(payload).ok_or(Ignored::InvalidStatus)?;
        let record = self.desk_entry(desk.clone(), now)?;
        let was_online = record.status == Some(Status::Online);
        if record.status != Some(status) {
            record.status_since = now;
        }
        record.status = Some(status);
        record.last_seen = now;
        match (was_online, status == Status::Online) {
            (false, true) => self.online += 1,
            (true, false) => self.online -= 1,
            _ => {}
        }
        self.announce_desk(&desk);
        Ok(())
    }

    /// A desk's retained health report. An empty payload (cleared) is ignored.
    pub fn record_health(
        &mut self,
        desk: DeskId,
        payload: &[u8],
        now: DateTime<Utc>,
    ) -> Result<(), Ignored> {
        if payload.is_empty() {
            return Ok(());
        }
        if payload.len() > MAX_HEALTH_BYTES {
            return Err(Ignored::TooLarge);
        }
        let health: Health = serde_json::from_slice(payload).map_err(|_| Ignored::InvalidHealth)?;
        let record = self.desk_entry(desk.clone(), now)?;
        record.health = Some(health);
        record.last_seen = now;
        self.announce_desk(&desk);
        Ok(())
    }

    /// A desk's ack. The desk is the one in the topic (what a broker ACL protects), whatever the
    /// payload claims.
    pub fn record_ack(
        &mut self,
        desk: DeskId,
        payload: &[u8],
        now: DateTime<Utc>,
        now_instant: Instant,
    ) -> Result<AckSeen, Ignored> {
        if payload.len() > MAX_ACK_BYTES {
            return Err(Ignored::TooLarge);
        }
        let ack: Ack = serde_json::from_slice(payload).map_err(|_| Ignored::InvalidAck)?;
        let desk_record = self.desk_entry(desk.clone(), now)?;
        desk_record.last_seen = now;
        *desk_record.acks.entry(ack.outcome.as_str()).or_default() += 1;
        if ack.outcome == Outcome::Bonked {
            desk_record.last_ack_bonk_at = desk_record.last_ack_bonk_at.max(Some(ack.finished_at));
        }
        let outcome = ack.outcome;
        self.announce_desk(&desk);
        // Only bonks seen on the broker are tracked: an ack with a made-up id is counted, not kept.
        let Some(record) = self.bonks.get_mut(&ack.bonk_id) else {
            return Ok(AckSeen {
                outcome,
                latency: None,
                pace: None,
            });
        };
        let latency = record
            .published
            .as_ref()
            .map(|p| now_instant.saturating_duration_since(p.instant));
        let pace = latency.and_then(|latency| {
            let desk_record = self.desks.get_mut(&desk)?;
            if !desk_record.behind && latency >= FALLING_BEHIND {
                desk_record.behind = true;
                Some(Pace::FellBehind)
            } else if desk_record.behind && latency < CAUGHT_UP {
                desk_record.behind = false;
                Some(Pace::CaughtUp)
            } else {
                None
            }
        });
        if record.acks.len() < MAX_ACKS_PER_BONK && !record.acks.iter().any(|a| a.desk == desk) {
            let in_feed = record.feed.is_some();
            record.acks.push(AckRecord {
                desk: desk.clone(),
                outcome,
                received_at: ack.received_at,
                finished_at: ack.finished_at,
                detail: ack
                    .detail
                    .as_deref()
                    .map(|d| cut_to(d, MAX_ACK_DETAIL).to_owned()),
                arrived_at: now,
                latency,
            });
            self.stored_acks += 1;
            if in_feed {
                let detail = ack.detail.as_deref().map(|d| cut_to(d, MAX_ACK_DETAIL));
                self.events.announce("ack", || AckEvent {
                    bonk: ack.bonk_id.as_str(),
                    ack: FeedDesk {
                        desk: desk.to_string(),
                        outcome: Some(outcome),
                        latency_ms: latency.map(millis),
                        detail: detail.map(str::to_owned),
                    },
                });
            }
            while self.stored_acks > MAX_STORED_ACKS && self.bonk_order.len() > 1 {
                self.forget_oldest_bonk();
            }
        }
        Ok(AckSeen {
            outcome,
            latency,
            pace,
        })
    }

    /// The names of the desks whose status is `online`.
    pub fn online_desk_names(&self) -> impl Iterator<Item = &str> {
        self.desks
            .iter()
            .filter(|(_, record)| record.status == Some(Status::Online))
            .map(|(desk, _)| desk.as_str())
    }

    /// Desks whose status is `online`.
    pub fn desks_online(&self) -> usize {
        self.online
    }

    /// Desks known.
    pub fn desks_known(&self) -> usize {
        self.desks.len()
    }

    /// Every desk, by name.
    pub fn desk_views(&self) -> Vec<DeskView> {
        self.desks
            .iter()
            .map(|(desk, record)| desk_view(desk, record))
            .collect()
    }

    /// One bonk, when tracked.
    pub fn bonk_view(&self, id: &BonkId) -> Option<BonkView> {
        let record = self.bonks.get(id)?;
        let published = record.published.as_ref();
        Some(BonkView {
            id: id.to_string(),
            published_at: published.map(|p| p.at),
            topic: published.map(|p| p.topic.clone()),
            namespace: published.and_then(|p| p.namespace.clone()),
            severity: published.map(|p| p.severity),
            source: published.map(|p| p.source),
            accepted_by_broker: record.accepted_by_broker,
            merged_into: record.merged_into.as_ref().map(BonkId::to_string),
            acks: record
                .acks
                .iter()
                .map(|a| AckView {
                    desk: a.desk.to_string(),
                    outcome: a.outcome,
                    received_at: a.received_at,
                    finished_at: a.finished_at,
                    arrived_at: a.arrived_at,
                    latency_ms: a.latency.map(millis),
                    detail: a.detail.clone(),
                })
                .collect(),
        })
    }

    fn forget_oldest_bonk(&mut self) {
        if let Some(oldest) = self.bonk_order.pop_front()
            && let Some(record) = self.bonks.remove(&oldest)
        {
            self.stored_acks -= record.acks.len();
        }
    }

    fn desk_entry(&mut self, desk: DeskId, now: DateTime<Utc>) -> Result<&mut DeskRecord, Ignored> {
        if !self.desks.contains_key(&desk) && self.desks.len() >= MAX_TRACKED_DESKS {
            return Err(Ignored::TooManyDesks);
        }
        Ok(self
            .desks
            .entry(desk)
            .or_insert_with(|| DeskRecord::new(now)))
    }

    fn bonk_entry(&mut self, id: BonkId) -> &mut BonkRecord {
        if !self.bonks.contains_key(&id) {
            while self.bonk_order.len() >= MAX_TRACKED_BONKS {
                self.forget_oldest_bonk();
            }
            self.bonk_order.push_back(id.clone());
        }
        self.bonks.entry(id).or_insert_with(|| BonkRecord {
            published: None,
            merged_into: None,
            accepted_by_broker: false,
            acks: Vec::new(),
            feed: None,
        })
    }
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn desk_view(desk: &DeskId, record: &DeskRecord) -> DeskView {
    let health = record.health.as_ref();
    let health_bonk_at = health.and_then(|h| h.last_bonk_at);
    DeskView {
        desk: desk.to_string(),
        online: record.status == Some(Status::Online),
        status: record.status.map(Status::as_str).unwrap_or("unknown"),
        status_since: record.status_since,
        last_seen: record.last_seen,
        namespaces: health.map(|h| h.namespaces.clone()).unwrap_or_default(),
        bonks_total: health.map(|h| h.bonks_total),
        last_bonk_at: health_bonk_at.max(record.last_ack_bonk_at),
        acks: record.acks.clone(),
        health: record.health.clone(),
    }
}

/// A feed bonk as the page shows it; `None` when it is not in the feed.
fn feed_bonk(id: &BonkId, record: &BonkRecord) -> Option<FeedBonk> {
    let feed = record.feed.as_deref()?;
    // Up to 1,000 desks on each side: look up, never scan.
    let acks: BTreeMap<&DeskId, &AckRecord> = record.acks.iter().map(|a| (&a.desk, a)).collect();
    let mut desks: Vec<FeedDesk> = feed
        .expected
        .iter()
        .map(|desk| {
            let ack = acks.get(desk);
            FeedDesk {
                desk: desk.to_string(),
                outcome: ack.map(|a| a.outcome),
                latency_ms: ack.and_then(|a| a.latency).map(millis),
                detail: ack.and_then(|a| a.detail.clone()),
            }
        })
        .collect();
    // Desks that acked without being expected (they came online, or watch it by another name).
    desks.extend(
        record
            .acks
            .iter()
            // `expected` is in name order (taken from the desks' map).
            .filter(|a| feed.expected.binary_search(&a.desk).is_err())
            .map(|a| FeedDesk {
                desk: a.desk.to_string(),
                outcome: Some(a.outcome),
                latency_ms: a.latency.map(millis),
                detail: a.detail.clone(),
            }),
    );
    Some(FeedBonk {
        id: id.to_string(),
        at: feed.at,
        source: feed.source,
        severity: feed.severity,
        target: feed.target.clone(),
        namespace: feed.namespace.clone(),
        pod: feed.pod.clone(),
        container: feed.container.clone(),
        alertname: feed.alertname.clone(),
        summary: feed.summary.clone(),
        merged_into: record.merged_into.as_ref().map(BonkId::to_string),
        desks,
    })
}

/// The fleet page's starting point: `snapshot` in [`crate::events`].
#[derive(Debug, Serialize)]
pub struct Snapshot {
    /// The id of the last change it includes.
    #[serde(skip)]
    pub id: u64,
    /// Every desk.
    pub desks: Vec<DeskView>,
    /// The feed, oldest first.
    pub bonks: Vec<FeedBonk>,
}

impl Snapshot {
    /// The `snapshot` event.
    pub fn into_event(self) -> Event {
        Event {
            id: self.id,
            kind: "snapshot",
            data: serde_json::to_string(&self).unwrap_or_else(|_| "null".to_owned()),
        }
    }
}

/// `desk_removed`: the desk's retained status was cleared (it was retired).
#[derive(Debug, Serialize)]
struct DeskRemoved<'a> {
    desk: &'a str,
}

/// `ack`: a desk acked a bonk in the feed.
#[derive(Debug, Serialize)]
struct AckEvent<'a> {
    bonk: &'a str,
    #[serde(flatten)]
    ack: FeedDesk,
}

/// One bonk in the fleet page's feed (`bonk` events and snapshots).
#[derive(Debug, Clone, Serialize)]
pub struct FeedBonk {
    /// The bonk id.
    pub id: String,
    /// When this gateway published or first saw it.
    pub at: DateTime<Utc>,
    /// Who sent it.
    pub source: Source,
    /// How hard.
    pub severity: Severity,
    /// Where it went.
    pub target: Target,
    /// Its namespace field.
    pub namespace: Option<String>,
    /// Its pod.
    pub pod: Option<String>,
    /// Its container.
    pub container: Option<String>,
    /// Its alert's name.
    pub alertname: Option<String>,
    /// Its summary.
    pub summary: Option<String>,
    /// For an alert merged into an earlier bonk of its kill: that bonk's id.
    pub merged_into: Option<String>,
    /// The desks expected to react, then any other desk that acked.
    pub desks: Vec<FeedDesk>,
}

/// One desk's part in a feed bonk.
#[derive(Debug, Clone, Serialize)]
pub struct FeedDesk {
    /// The desk.
    pub desk: String,
    /// Its outcome; `None` while it has not acked.
    pub outcome: Option<Outcome>,
    /// Milliseconds from this gateway's publish to the ack.
    pub latency_ms: Option<f64>,
    /// The desk's detail.
    pub detail: Option<String>,
}

/// One desk in `GET /api/desks`.
#[derive(Debug, Clone, Serialize)]
pub struct DeskView {
    /// The desk's name.
    pub desk: String,
    /// True when its retained status is `online`.
    pub online: bool,
    /// `online`, `offline`, or `unknown` (no status seen yet).
    pub status: &'static str,
    /// When its status last changed, as this gateway saw it (after a gateway restart: when the
    /// retained status arrived again).
    pub status_since: DateTime<Utc>,
    /// When the gateway last heard from it (status, health or ack).
    pub last_seen: DateTime<Utc>,
    /// The namespaces it watches (from its health report).
    pub namespaces: Vec<String>,
    /// Bonks performed since the agent started (from its health report).
    pub bonks_total: Option<u64>,
    /// When Tux was last bonked (health report or the latest `bonked` ack).
    pub last_bonk_at: Option<DateTime<Utc>>,
    /// Acks seen from it since the gateway started, by outcome.
    pub acks: BTreeMap<&'static str, u64>,
    /// Its latest health report.
    pub health: Option<Health>,
}

/// One bonk in `GET /api/bonks/{id}`.
#[derive(Debug, Clone, Serialize)]
pub struct BonkView {
    /// The bonk id.
    pub id: String,
    /// When this gateway published it (absent for bonks published by someone else whose acks
    /// were seen).
    pub published_at: Option<DateTime<Utc>>,
    /// The topic it was published on.
    pub topic: Option<String>,
    /// Its namespace field.
    pub namespace: Option<String>,
    /// Its severity.
    pub severity: Option<Severity>,
    /// Who asked for it.
    pub source: Option<Source>,
    /// True once the broker acknowledged the publish (PUBACK).
    pub accepted_by_broker: bool,
    /// For an alert not published because its kill had already bonked: that bonk's id (look
    /// there for the desks' acks).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merged_into: Option<String>,
    /// The desks' acks, in arrival order.
    pub acks: Vec<AckView>,
}

/// One desk's ack of a bonk.
#[derive(Debug, Clone, Serialize)]
pub struct AckView {
    /// The desk.
    pub desk: String,
    /// What it did.
    pub outcome: Outcome,
    /// When the desk received the bonk.
    pub received_at: DateTime<Utc>,
    /// When the desk finished with it.
    pub finished_at: DateTime<Utc>,
    /// When the ack reached the gateway.
    pub arrived_at: DateTime<Utc>,
    /// Milliseconds from this gateway's publish to the ack's arrival.
    pub latency_ms: Option<f64>,
    /// The desk's detail (a servo error, say).
    pub detail: Option<String>,
}

#[cfg(test)]
mod tests {
    use bonker_protocol::{SCHEMA_VERSION, ServoHealth};

    use super::*;

    fn desk(name: &str) -> DeskId {
        DeskId::new(name).expect("valid desk")
    }

    /// A critical alert bonk on the `payments` topic, published at `instant`.
    fn payments_bonk(instant: Instant) -> PublishedBonk {
        PublishedBonk {
            at: Utc::now(),
            instant,
            topic: "bonker/bonk/payments".into(),
            namespace: Some("payments".into()),
            severity: Severity::Critical,
            source: Source::Alertmanager,
        }
    }

    fn ack_payload(id: &BonkId, desk: &str, outcome: Outcome) -> Vec<u8> {
        Ack {
            version: SCHEMA_VERSION,
            bonk_id: id.clone(),
            desk: DeskId::new(desk).expect("valid"),
            outcome,
            received_at: Utc::now(),
            finished_at: Utc::now(),
            severity: None,
            namespace: None,
            pod: None,
            count: None,
            detail: None,
        }
        .to_json()
    }

    fn health_payload(name: &str) -> Vec<u8> {
        Health {
            version: SCHEMA_VERSION,
            desk: desk(name),
            agent_version: "0.1.0".into(),
            uptime_s: 5,
            started_at: None,
            bonks_total: 3,
            last_bonk_at: None,
            last_bonk_namespace: None,
            last_bonk_pod: None,
            servo: ServoHealth {
                driver: "simulated".into(),
                state: "rest".into(),
                error: None,
            },
            namespaces: vec!["payments".into()],
            soc_temp_c: None,
            bonk_delay_ms: None,
            sent_at: Utc::now(),
        }
        .to_json()
    }

    #[test]
    fn status_and_health_build_the_desk_view() {
        let mut fleet = Fleet::default();
        let now = Utc::now();
        fleet
            .record_status(desk("alice"), b"online", now)
            .expect("ok");
        fleet
            .record_health(desk("alice"), &health_payload("alice"), now)
            .expect("ok");
        fleet
            .record_status(desk("bob"), b"offline", now)
            .expect("ok");
        assert_eq!((fleet.desks_online(), fleet.desks_known()), (1, 2));
        let views = fleet.desk_views();
        assert_eq!(views[0].desk, "alice");
        assert!(views[0].online);
        assert_eq!(views[0].namespaces, ["payments"]);
        assert_eq!(views[0].bonks_total, Some(3));
        assert_eq!(views[1].status, "offline");
        // A cleared retained status forgets the desk.
        fleet.record_status(desk("bob"), b"", now).expect("ok");
        assert_eq!(fleet.desks_known(), 1);
    }

    #[test]
    fn the_online_count_follows_every_status_change() {
        let mut fleet = Fleet::default();
        let now = Utc::now();
        let payloads: [&[u8]; 4] = [b"online", b"offline", b"", b"online"];
        // Every desk walks a different path through the payloads, repeats included; after each
        // step the kept count must equal a recount.
        for step in 0..24usize {
            for (n, name) in ["alice", "bob", "carol"].iter().enumerate() {
                let payload = payloads[(step * (n + 1) + n) % payloads.len()];
                fleet.record_status(desk(name), payload, now).expect("ok");
                let recount = fleet.desk_views().iter().filter(|v| v.online).count();
                assert_eq!(fleet.desks_online(), recount, "step {step}, {name}");
            }
        }
        assert_eq!(
            fleet.record_status(desk("dave"), b"maybe", now),
            Err(Ignored::InvalidStatus)
        );
    }

    #[test]
    fn bad_payloads_are_reported_not_guessed() {
        let mut fleet = Fleet::default();
        let now = Utc::now();
        assert_eq!(
            fleet.record_status(desk("alice"), b"maybe", now),
            Err(Ignored::InvalidStatus)
        );
        assert_eq!(
            fleet.record_health(desk("alice"), b"{}", now),
            Err(Ignored::InvalidHealth)
        );
        assert_eq!(
            fleet.record_ack(desk("alice"), b"bonked", now, Instant::now()),
            Err(Ignored::InvalidAck)
        );
        assert_eq!(fleet.desks_known(), 0);
    }

    #[test]
    fn acks_are_attached_to_published_bonks_with_latency() {
        let mut fleet = Fleet::default();
        let id = BonkId::stable(&["x"]);
        let published = Instant::now();
        fleet.record_publish(id.clone(), payments_bonk(published));
        fleet.record_accepted(&id);
        let seen = fleet
            .record_ack(
                desk("alice"),
                &ack_payload(&id, "alice", Outcome::Bonked),
                Utc::now(),
                published + Duration::from_millis(40),
            )
            .expect("ok");
        assert_eq!(seen.outcome, Outcome::Bonked);
        assert_eq!(seen.latency, Some(Duration::from_millis(40)));
        // The topic's desk counts, not the payload's claim.
        fleet
            .record_ack(
                desk("bob"),
                &ack_payload(&id, "mallory", Outcome::Duplicate),
                Utc::now(),
                published + Duration::from_millis(50),
            )
            .expect("ok");
        let view = fleet.bonk_view(&id).expect("tracked");
        assert!(view.accepted_by_broker);
        assert_eq!(view.acks.len(), 2);
        assert_eq!(view.acks[1].desk, "bob");
        assert_eq!(view.acks[0].latency_ms, Some(40.0));
        let desks = fleet.desk_views();
        assert_eq!(desks[0].acks.get("bonked"), Some(&1));
        assert!(desks[0].last_bonk_at.is_some());
        assert_eq!(
            fleet.bonk_view(&BonkId::stable(&["unknown"])).map(|v| v.id),
            None
        );
    }

    #[test]
    fn a_desk_whose_acks_come_late_falls_behind_once_and_catches_up_once() {
        let mut fleet = Fleet::default();
        let published = Instant::now();
        let ack = |fleet: &mut Fleet, n: u32, after: Duration| {
            let id = BonkId::stable(&["pace", &n.to_string()]);
            fleet.record_publish(id.clone(), payments_bonk(published));
            fleet
                .record_ack(
                    desk("alice"),
                    &ack_payload(&id, "alice", Outcome::Bonked),
                    Utc::now(),
                    published + after,
                )
                .expect("ok")
                .pace
        };
        assert_eq!(ack(&mut fleet, 1, Duration::from_millis(40)), None);
        assert_eq!(ack(&mut fleet, 2, FALLING_BEHIND), Some(Pace::FellBehind));
        assert_eq!(ack(&mut fleet, 3, FALLING_BEHIND * 3), None, "said once");
        assert_eq!(ack(&mut fleet, 4, CAUGHT_UP), None, "not yet within");
        assert_eq!(
            ack(&mut fleet, 5, Duration::from_millis(40)),
            Some(Pace::CaughtUp)
        );
        assert_eq!(ack(&mut fleet, 6, Duration::from_millis(40)), None);
    }

    #[test]
    fn acks_for_bonks_published_elsewhere_are_tracked_without_latency() {
        let mut fleet = Fleet::default();
        let id = BonkId::stable(&["elsewhere"]);
        fleet.record_seen(id.clone());
        let seen = fleet
            .record_ack(
                desk("alice"),
                &ack_payload(&id, "alice", Outcome::Bonked),
                Utc::now(),
                Instant::now(),
            )
            .expect("ok");
        assert_eq!(seen.latency, None);
        let view = fleet.bonk_view(&id).expect("tracked");
        assert_eq!(view.published_at, None);
        assert!(!view.accepted_by_broker);
    }

    #[test]
    fn acks_of_unknown_bonks_are_counted_not_kept_and_each_desk_is_kept_once() {
        let mut fleet = Fleet::default();
        let now = Utc::now();
        let made_up = BonkId::stable(&["made-up"]);
        let seen = fleet
            .record_ack(
                desk("mallory"),
                &ack_payload(&made_up, "mallory", Outcome::Bonked),
                now,
                Instant::now(),
            )
            .expect("counted");
        assert_eq!(seen.outcome, Outcome::Bonked);
        assert!(fleet.bonk_view(&made_up).is_none());
        assert_eq!(fleet.desk_views()[0].acks.get("bonked"), Some(&1));

        let id = BonkId::stable(&["seen"]);
        fleet.record_seen(id.clone());
        for _ in 0..5 {
            fleet
                .record_ack(
                    desk("mallory"),
                    &ack_payload(&id, "mallory", Outcome::Duplicate),
                    now,
                    Instant::now(),
                )
                .expect("ok");
        }
        assert_eq!(fleet.bonk_view(&id).expect("tracked").acks.len(), 1);
    }

    #[test]
    fn oversized_desk_payloads_are_refused_and_details_cut() {
        let mut fleet = Fleet::default();
        let now = Utc::now();
        let id = BonkId::stable(&["seen"]);
        fleet.record_seen(id.clone());
        let mut ack: Ack =
            serde_json::from_slice(&ack_payload(&id, "alice", Outcome::ServoError)).expect("ack");
        ack.detail = Some("é".repeat(1000));
        fleet
            .record_ack(desk("alice"), &ack.to_json(), now, Instant::now())
            .expect("ok");
        let detail = fleet.bonk_view(&id).expect("tracked").acks[0]
            .detail
            .clone()
            .expect("detail");
        assert!(detail.len() <= MAX_ACK_DETAIL && detail.len() >= MAX_ACK_DETAIL - 1);
        ack.detail = Some("x".repeat(MAX_ACK_BYTES));
        assert_eq!(
            fleet.record_ack(desk("alice"), &ack.to_json(), now, Instant::now()),
            Err(Ignored::TooLarge)
        );
        let huge = vec![b' '; MAX_HEALTH_BYTES + 1];
        assert_eq!(
            fleet.record_health(desk("alice"), &huge, now),
            Err(Ignored::TooLarge)
        );
    }

    #[test]
    fn stored_acks_are_capped_by_forgetting_the_oldest_bonks() {
        let mut fleet = Fleet::default();
        let now = Utc::now();
        let per_bonk = 100;
        let bonks = MAX_STORED_ACKS / per_bonk + 5;
        for b in 0..bonks {
            let id = BonkId::stable(&["b", &b.to_string()]);
            fleet.record_seen(id.clone());
            for d in 0..per_bonk {
                let name = format!("d{d}");
                fleet
                    .record_ack(
                        desk(&name),
                        &ack_payload(&id, &name, Outcome::Bonked),
                        now,
                        Instant::now(),
                    )
                    .expect("ok");
            }
        }
        assert!(fleet.stored_acks <= MAX_STORED_ACKS);
        assert!(fleet.bonk_view(&BonkId::stable(&["b", "0"])).is_none());
        let last = BonkId::stable(&["b", &(bonks - 1).to_string()]);
        assert_eq!(fleet.bonk_view(&last).expect("kept").acks.len(), per_bonk);
    }

    #[test]
    fn the_feed_lists_the_desks_expected_to_react_and_announces_each_change() {
        let mut fleet = Fleet::default();
        let now = Utc::now();
        for name in ["alice", "bob"] {
            fleet.record_status(desk(name), b"online", now).expect("ok");
            fleet
                .record_health(desk(name), &health_payload(name), now)
                .expect("ok");
        }
        fleet
            .record_status(desk("bob"), b"offline", now)
            .expect("ok");
        let (mut events, snapshot) = fleet.subscribe();
        assert_eq!(snapshot.into_event().kind, "snapshot");
        let mut bonk = Bonk::new(Source::Watcher, Severity::Critical);
        bonk.namespace = Some("payments".into());
        bonk.summary = Some("<script>x".repeat(100));
        fleet.record_bonk(&bonk, Target::Namespace("payments".into()), now);
        // Seen again (a retained copy, a second subscription): no second entry.
        fleet.record_bonk(&bonk, Target::Namespace("payments".into()), now);
        let announced = events.try_recv().expect("bonk event");
        assert_eq!(announced.kind, "bonk");
        let feed: serde_json::Value = serde_json::from_str(&announced.data).expect("json");
        // Only alice is online and watching payments; bob is offline.
        assert_eq!(
            feed["desks"],
            serde_json::json!([{"desk": "alice", "outcome": null,
            "latency_ms": null, "detail": null}])
        );
        assert!(feed["summary"].as_str().expect("summary").len() <= MAX_FEED_FIELD);
        assert!(events.try_recv().is_err());
        fleet
            .record_ack(
                desk("alice"),
                &ack_payload(&bonk.id, "alice", Outcome::Bonked),
                now,
                Instant::now(),
            )
            .expect("ok");
        let kinds: Vec<&str> = std::iter::from_fn(|| events.try_recv().ok())
            .map(|e| e.kind)
            .collect();
        assert_eq!(kinds, ["desk", "ack"]);
        let snapshot: serde_json::Value =
            serde_json::from_str(&fleet.snapshot().into_event().data).expect("json");
        assert_eq!(snapshot["bonks"][0]["desks"][0]["outcome"], "bonked");
        assert_eq!(snapshot["desks"].as_array().map(Vec::len), Some(2));
        // The feed keeps the last MAX_FEED bonks' details.
        for _ in 0..MAX_FEED + 5 {
            let bonk = Bonk::new(Source::Http, Severity::Info);
            fleet.record_bonk(&bonk, Target::Desk("alice".into()), now);
        }
        assert_eq!(fleet.feed.len(), MAX_FEED);
        let kept = fleet.bonks.values().filter(|r| r.feed.is_some()).count();
        assert_eq!(kept, MAX_FEED);
    }

    #[test]
    fn memory_is_bounded() {
        let mut fleet = Fleet::default();
        let now = Utc::now();
        for n in 0..MAX_TRACKED_DESKS {
            fleet
                .record_status(desk(&format!("d{n}")), b"online", now)
                .expect("ok");
        }
        assert_eq!(
            fleet.record_status(desk("one-too-many"), b"online", now),
            Err(Ignored::TooManyDesks)
        );
        // Known desks still update.
        fleet
            .record_status(desk("d0"), b"offline", now)
            .expect("ok");
        for n in 0..(MAX_TRACKED_BONKS + 10) {
            fleet.record_publish(
                BonkId::stable(&[&n.to_string()]),
                PublishedBonk {
                    at: now,
                    instant: Instant::now(),
                    topic: "t".into(),
                    namespace: None,
                    severity: Severity::Info,
                    source: Source::Http,
                },
            );
        }
        assert_eq!(fleet.bonks.len(), MAX_TRACKED_BONKS);
        assert!(fleet.bonk_view(&BonkId::stable(&["0"])).is_none());
        assert!(
            fleet
                .bonk_view(&BonkId::stable(&[&(MAX_TRACKED_BONKS + 9).to_string()]))
                .is_some()
        );
    }
}
