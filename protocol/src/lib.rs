//! bonker's wire protocol: the one place that spells a topic or defines a payload.
//!
//! The gateway, the agents, the node watcher, the CLI and people typing `mosquitto_pub` are
//! deployed independently and meet only on the MQTT broker. This crate is their contract, so it has
//! no I/O and no MQTT client: just names, topics and payloads, each validated at construction.
//!
//! - [`names`]: validated names that become topic levels (namespace, desk, cluster, prefix).
//! - [`topics`]: every topic, its QoS and retain flag, and [`topics::Topics::route`] to classify
//!   incoming ones.
//! - [`bonk`]: the [`Bonk`] payload, with a lenient parser for hand-typed bonks.
//! - [`kill`]: a kill's identity ([`Kill`]) and the one rule ([`KillLedger`]) deciding whether
//!   two detectors' reports are the same OOM kill.
//! - [`recent`]: the sliding window of bonk ids seen, which desks and gateways dedupe by.
//! - [`desk`]: what desks publish back: [`Ack`], [`Status`], [`Health`].
//! - [`homeassistant`]: Home Assistant MQTT discovery topics and payloads for each desk.
//!
//! `docs/protocol.md` documents all of it for people at a terminal; a test runs its examples.

pub mod bonk;
pub mod desk;
pub mod homeassistant;
pub mod kill;
pub mod names;
pub mod recent;
pub mod topics;

pub use bonk::{Bonk, BonkId, Lenient, SCHEMA_VERSION, Severity, Source};
pub use desk::{Ack, Health, Outcome, ServoHealth, ServoState, Status};
pub use kill::{Detector, Earlier, Kill, KillLedger, Limit};
pub use names::{Cluster, DeskId, NameError, Namespace, Prefix, PrefixFilter};
pub use recent::RecentIds;
pub use topics::{BonkFilters, Delivery, Route, Topics};

/// The default topic prefix.
pub const DEFAULT_PREFIX: &str = "bonker";

/// The default namespace for bonks that name none (and for alerts without a usable namespace label).
pub const DEFAULT_NAMESPACE: &str = "default";
