//! What desks say back: one [`Ack`] per bonk received, a retained [`Status`] (also the agent's last
//! will) and a retained [`Health`] report.
//!
//! These payloads are produced only by bonker's own agent, so they are parsed strictly (serde);
//! readers such as the gateway count and log the ones that do not parse instead of guessing.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::bonk::{BonkId, SCHEMA_VERSION, Severity};
use crate::names::DeskId;

fn schema_version() -> u32 {
    SCHEMA_VERSION
}

/// What a desk did with a bonk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Tux was bonked.
    Bonked,
    /// The same bonk id was seen recently; not performed again.
    Duplicate,
    /// Over the desk's rate limit; coalesced into the next bonk.
    RateLimited,
    /// Older than the desk's maximum age; not performed.
    Expired,
    /// The servo failed.
    ServoError,
}

impl Outcome {
    /// Every outcome, for metrics that must show zero counts too.
    pub const ALL: [Outcome; 5] = [
        Outcome::Bonked,
        Outcome::Duplicate,
        Outcome::RateLimited,
        Outcome::Expired,
        Outcome::ServoError,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Bonked => "bonked",
            Outcome::Duplicate => "duplicate",
            Outcome::RateLimited => "rate_limited",
            Outcome::Expired => "expired",
            Outcome::ServoError => "servo_error",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The largest ack payload a reader accepts, in bytes; an agent's acks are a few hundred.
pub const MAX_ACK_BYTES: usize = 4 * 1024;

/// The largest health payload a reader accepts, in bytes: room for a hundred namespaces.
pub const MAX_HEALTH_BYTES: usize = 16 * 1024;

/// A desk's acknowledgement of one bonk. Every bonk a desk receives gets exactly one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ack {
    /// Payload schema version.
    #[serde(rename = "v", default = "schema_version")]
    pub version: u32,
    /// The bonk this acknowledges.
    pub bonk_id: BonkId,
    /// The desk that received it.
    pub desk: DeskId,
    /// What the desk did.
    pub outcome: Outcome,
    /// When the desk received the bonk.
    pub received_at: DateTime<Utc>,
    /// When the desk finished with it (the arm back at rest, for `bonked`).
    pub finished_at: DateTime<Utc>,
    /// The bonk's severity, as performed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<Severity>,
    /// The bonk's namespace, when it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The bonk's pod, when it named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// How many strokes the arm made (`bonked` only; coalesced bonks make more than one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// A human detail, for example the servo error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Ack {
    /// The JSON payload.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// A desk's presence, on its retained status topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// Connected.
    Online,
    /// Gone: a clean shutdown, or the broker's last will after an unclean one.
    Offline,
}

impl Status {
    /// The payload: `online` or `offline` (Home Assistant's default availability payloads).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Online => "online",
            Status::Offline => "offline",
        }
    }

    /// Parses a status payload; surrounding whitespace and case are ignored.
    pub fn parse(payload: &[u8]) -> Option<Status> {
        let text = std::str::from_utf8(payload).ok()?.trim();
        if text.eq_ignore_ascii_case("online") {
            Some(Status::Online)
        } else if text.eq_ignore_ascii_case("offline") {
            Some(Status::Offline)
        } else {
            None
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the servo is doing, as a desk reports it (`servo.state` in its health report).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServoState {
    /// At rest, ready for the next bonk.
    Rest,
    /// Performing a bonk.
    Moving,
    /// The last move failed (`servo.error` says why).
    Error,
}

impl ServoState {
    /// Every state, in the order Home Assistant lists them as the servo sensor's options.
    pub const ALL: [ServoState; 3] = [ServoState::Rest, ServoState::Moving, ServoState::Error];

    /// The wire form.
    pub fn as_str(self) -> &'static str {
        match self {
            ServoState::Rest => "rest",
            ServoState::Moving => "moving",
            ServoState::Error => "error",
        }
    }
}

/// The servo's part of a health report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServoHealth {
    /// The driver: `pwm`, `softpwm` or `simulated`.
    pub driver: String,
    /// Its state: one of [`ServoState`] (`rest`, `moving`, `error`); a string on the wire, so
    /// readers of a newer desk's state do not fail.
    pub state: String,
    /// The last error, if the servo is in error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A desk's health report, retained, sent on connect and periodically.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    /// Payload schema version.
    #[serde(rename = "v", default = "schema_version")]
    pub version: u32,
    /// The desk.
    pub desk: DeskId,
    /// The agent's version.
    pub agent_version: String,
    /// Seconds since the agent started.
    pub uptime_s: u64,
    /// When the agent started, by the wall clock: the report's time less its uptime, to the
    /// second, so it stays the same from report to report — and moves once if the clock is set
    /// after the start (a Pi without a real-time clock before NTP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// Bonks performed since the agent started.
    pub bonks_total: u64,
    /// When Tux was last bonked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_bonk_at: Option<DateTime<Utc>>,
    /// The namespace of the last bonk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_bonk_namespace: Option<String>,
    /// The pod of the last bonk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_bonk_pod: Option<String>,
    /// The servo.
    pub servo: ServoHealth,
    /// The namespaces this desk watches (`+` for every namespace).
    pub namespaces: Vec<String>,
    /// The SoC temperature in °C, on a Pi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soc_temp_c: Option<f64>,
    /// How long the latest bonk took to reach this desk, in milliseconds: when the desk got it,
    /// by its own clock, less the bonk's `sent_at` (so it includes how far the two clocks are
    /// apart, and can be negative). A desk falling behind — bonks queued for it at the broker —
    /// shows a growing delay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bonk_delay_ms: Option<i64>,
    /// When this report was made.
    pub sent_at: DateTime<Utc>,
}

impl Health {
    /// The JSON payload.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_payloads_are_home_assistant_defaults() {
        assert_eq!(Status::Online.as_str(), "online");
        assert_eq!(Status::Offline.as_str(), "offline");
        assert_eq!(Status::parse(b" Online\n"), Some(Status::Online));
        assert_eq!(Status::parse(b"offline"), Some(Status::Offline));
        assert_eq!(Status::parse(b"gone"), None);
        assert_eq!(Status::parse(&[0xff]), None);
    }

    #[test]
    fn ack_wire_format() {
        let ack = Ack {
            version: SCHEMA_VERSION,
            bonk_id: BonkId::stable(&["x"]),
            desk: DeskId::new("alice").expect("valid"),
            outcome: Outcome::RateLimited,
            received_at: DateTime::from_timestamp(0, 0).expect("epoch"),
            finished_at: DateTime::from_timestamp(1, 0).expect("epoch"),
            severity: Some(Severity::Warning),
            namespace: None,
            pod: None,
            count: None,
            detail: None,
        };
        let json: serde_json::Value = serde_json::from_slice(&ack.to_json()).expect("json");
        assert_eq!(json["outcome"], "rate_limited");
        assert_eq!(json["desk"], "alice");
        assert_eq!(json["v"], 1);
        assert_eq!(json["received_at"], "1970-01-01T00:00:00Z");
        assert_eq!(json["severity"], "warning");
        assert!(json.get("namespace").is_none());
    }
}
