//! The Bonk payload: what every publisher sends and every agent performs.
//!
//! Two ways in, on purpose:
//! - programs use serde ([`Bonk`] is `Serialize`/`Deserialize`, unknown fields ignored);
//! - agents use [`Bonk::parse_lenient`], because people type bonks by hand with `mosquitto_pub`.
//!   Blank text, a word (`bonk`, `tap`, `wiggle`), a JSON object with some fields, even broken
//!   JSON: each is a bonk, with defaults for what is missing and a warning for what was wrong.
//!   A hand-typed bonk must never be lost to a typo, and nothing a publisher sends can crash a desk.
//!
//! The one message on a bonk topic that is not a bonk is the zero-length one
//! ([`Bonk::clears_retained`]): it is how MQTT clears a retained message, and a broker delivers it
//! to every live subscriber as an ordinary message (without the retain flag), so a desk cannot tell
//! "clear" from "bonk" by anything but its length.

use std::fmt;

use chrono::{DateTime, Timelike, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use crate::kill::Kill;

/// The payload schema version carried in the `v` field of every JSON payload.
pub const SCHEMA_VERSION: u32 = 1;

/// The longest string a lenient parse keeps for one field; longer values are cut, with a warning.
pub const MAX_FIELD_LEN: usize = 1024;

/// The longest bonk id accepted from a publisher; a longer one is replaced by a generated id.
pub const MAX_ID_LEN: usize = 128;

/// UUID namespace for name-based (v5) bonk ids, so every replica derives the same id.
const BONK_ID_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x6b6f_6e6b_2d62_6f6e_6b65_7200_0000_0001);

/// A bonk's identity. Stable for alert bonks (see [`BonkId::for_alert`]) so duplicates delivered by
/// another gateway replica or Alertmanager replica can be recognised anywhere downstream.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BonkId(String);

impl BonkId {
    /// A fresh random id (UUID v4), for manual bonks.
    pub fn random() -> Self {
        Self(uuid::Uuid::new_v4().to_string())
    }

    /// The stable id of one alert instance: Alertmanager's `fingerprint` plus its `startsAt`.
    ///
    /// `startsAt` is normalised — parsed as RFC 3339, cut to whole milliseconds, printed in UTC —
    /// so every sender agrees: Prometheus sends alerts with millisecond precision, Alertmanager's
    /// webhook prints them with up to nanoseconds and its API with milliseconds, and offsets may
    /// differ. An unparseable value is used as given.
    pub fn for_alert(fingerprint: &str, starts_at: &str) -> Self {
        let starts_at = DateTime::parse_from_rfc3339(starts_at)
            .map(|t| {
                let t = t.with_timezone(&Utc);
                let millis = t.timestamp_subsec_millis() * 1_000_000;
                t.with_nanosecond(millis)
                    .unwrap_or(t)
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            })
            .unwrap_or_else(|_| starts_at.to_owned());
        Self::stable(&["alert", fingerprint, &starts_at])
    }

    /// A name-based id (UUID v5) from `parts`, for any publisher that must derive the same id for the
    /// same event every time (the node watcher uses node, boot id and kernel sequence number).
    pub fn stable(parts: &[&str]) -> Self {
        let name = parts.join("\u{1f}");
        Self(uuid::Uuid::new_v5(&BONK_ID_NAMESPACE, name.as_bytes()).to_string())
    }

    /// Wraps an id received from elsewhere. Returns `None` for an empty or over-long id.
    pub fn from_received(id: &str) -> Option<Self> {
        let id = id.trim();
        (!id.is_empty() && id.len() <= MAX_ID_LEN && !id.chars().any(char::is_control))
            .then(|| Self(id.to_owned()))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BonkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who sent a bonk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The gateway, from an Alertmanager webhook.
    Alertmanager,
    /// A person, by hand (`mosquitto_pub`). The default for payloads that do not say.
    #[default]
    Manual,
    /// A Home Assistant button or automation.
    Homeassistant,
    /// The `bonker` CLI.
    Cli,
    /// The gateway's `POST /bonk`.
    Http,
    /// The node watcher, straight from the kernel.
    Watcher,
    /// A source this version does not know.
    #[serde(other)]
    Other,
}

impl Source {
    /// The wire name, as in the JSON payload.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Alertmanager => "alertmanager",
            Source::Manual => "manual",
            Source::Homeassistant => "homeassistant",
            Source::Cli => "cli",
            Source::Http => "http",
            Source::Watcher => "watcher",
            Source::Other => "other",
        }
    }

    fn parse(value: &str) -> Source {
        match value.to_ascii_lowercase().as_str() {
            "alertmanager" => Source::Alertmanager,
            "manual" => Source::Manual,
            "homeassistant" | "home_assistant" | "home-assistant" => Source::Homeassistant,
            "cli" => Source::Cli,
            "http" => Source::Http,
            "watcher" => Source::Watcher,
            _ => Source::Other,
        }
    }
}

/// How hard Tux gets bonked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// A gentle wiggle.
    Info,
    /// A light tap.
    Warning,
    /// A full bonk. The default: someone who bonks by hand means it.
    #[default]
    Critical,
}

impl Severity {
    /// Every severity, mildest first.
    pub const ALL: [Severity; 3] = [Severity::Info, Severity::Warning, Severity::Critical];

    /// The wire name: `critical`, `warning` or `info`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }

    /// Parses a severity word, case-insensitively. Besides the wire names it accepts the motions
    /// (`bonk`, `tap`, `wiggle`) and common alerting words (`error`, `page`, `warn`, `none`).
    pub fn parse_word(word: &str) -> Option<Severity> {
        match word.trim().to_ascii_lowercase().as_str() {
            "critical" | "crit" | "bonk" | "error" | "page" | "high" => Some(Severity::Critical),
            "warning" | "warn" | "tap" | "medium" => Some(Severity::Warning),
            "info" | "wiggle" | "none" | "low" | "debug" => Some(Severity::Info),
            _ => None,
        }
    }

    /// Maps an alert's `severity` label: critical → critical, warning → warning, anything else
    /// (including no label) → info.
    pub fn from_alert_label(label: Option<&str>) -> Severity {
        match label.map(|l| l.trim().to_ascii_lowercase()).as_deref() {
            Some("critical") => Severity::Critical,
            Some("warning") => Severity::Warning,
            _ => Severity::Info,
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Severity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Severity::parse_word(s)
            .ok_or_else(|| format!("unknown severity {s:?}: expected critical, warning or info"))
    }
}

impl<'de> Deserialize<'de> for Severity {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let word = String::deserialize(deserializer)?;
        word.parse().map_err(serde::de::Error::custom)
    }
}

fn schema_version() -> u32 {
    SCHEMA_VERSION
}

fn one() -> u32 {
    1
}

fn is_one(n: &u32) -> bool {
    *n == 1
}

/// A request to bonk Tux, published on a namespace topic or a desk topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bonk {
    /// Payload schema version ([`SCHEMA_VERSION`]).
    #[serde(rename = "v", default = "schema_version")]
    pub version: u32,
    /// Identity; stable for alert bonks.
    pub id: BonkId,
    /// Who sent it.
    #[serde(default)]
    pub source: Source,
    /// How hard to bonk.
    #[serde(default)]
    pub severity: Severity,
    /// The Kubernetes namespace, as the alert labelled it (kept raw even when it is not a valid
    /// topic level, in which case the bonk went to the default namespace topic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// The container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// The process that was killed (node watcher).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<String>,
    /// The node it happened on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The alert's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alertname: Option<String>,
    /// Why (for example `OOMKilled`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A human sentence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// The cluster it came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// When the underlying event happened (an alert's `startsAt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fired_at: Option<DateTime<Utc>>,
    /// When this bonk was published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<DateTime<Utc>>,
    /// How many events this one bonk stands for (several alerts coalesced); 1 when absent.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub count: u32,
    /// The OOM kill this bonk reports, for bonks from a detector (watcher, alert); hand-made
    /// bonks have none and are never merged with another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kill: Option<Kill>,
}

impl Bonk {
    /// A bonk with a fresh random id, sent now, and nothing else set.
    pub fn new(source: Source, severity: Severity) -> Self {
        Self {
            version: SCHEMA_VERSION,
            id: BonkId::random(),
            source,
            severity,
            namespace: None,
            pod: None,
            container: None,
            process: None,
            node: None,
            alertname: None,
            reason: None,
            summary: None,
            cluster: None,
            fired_at: None,
            sent_at: Some(Utc::now()),
            count: 1,
            kill: None,
        }
    }

    /// The JSON payload.
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising a struct of strings, numbers and timestamps cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The instant a bonk's age is judged from: when it was sent, or else when its event fired.
    pub fn reference_time(&self) -> Option<DateTime<Utc>> {
        self.sent_at.or(self.fired_at)
    }

    /// A zero-length message: how MQTT clears a topic's retained message
    /// (`mosquitto_pub -r -n -t <topic>`). It is never a bonk: desks ignore it (no move, no ack),
    /// so clearing a retained bonk by the book bonks nobody.
    pub fn clears_retained(payload: &[u8]) -> bool {
        payload.is_empty()
    }

    /// Parses any payload as a bonk, never failing. See the module docs for what is accepted;
    /// callers first set aside the messages that [clear a retained one](Bonk::clears_retained).
    pub fn parse_lenient(payload: &[u8]) -> Lenient {
        let mut warnings = Vec::new();
        let mut bonk = Bonk::new(Source::Manual, Severity::default());
        bonk.sent_at = None;
        let text = match std::str::from_utf8(payload) {
            Ok(text) => text.trim(),
            Err(_) => {
                warnings.push("payload is not UTF-8; bonking with defaults".to_owned());
                return Lenient { bonk, warnings };
            }
        };
        if text.starts_with('{') || text.starts_with('[') || text.starts_with('"') {
            match serde_json::from_str::<Value>(text) {
                Ok(Value::Object(fields)) => apply_fields(&mut bonk, &fields, &mut warnings),
                Ok(Value::String(word)) => apply_text(&mut bonk, &word, &mut warnings),
                Ok(other) => warnings.push(format!(
                    "payload is JSON but not an object (got {}); bonking with defaults",
                    json_kind(&other)
                )),
                Err(error) => warnings.push(format!(
                    "payload looks like JSON but is not valid ({error}); bonking with defaults"
                )),
            }
        } else if !text.is_empty() {
            apply_text(&mut bonk, text, &mut warnings);
        }
        Lenient { bonk, warnings }
    }
}

/// The result of [`Bonk::parse_lenient`]: always a bonk, plus what was wrong with the payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Lenient {
    /// The bonk, with defaults for whatever was missing or wrong.
    pub bonk: Bonk,
    /// One sentence per problem found; empty for a clean payload.
    pub warnings: Vec<String>,
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `value` cut to at most `max` bytes on a character boundary: how every reader bounds a string
/// that came from the network.
pub fn cut_to(value: &str, max: usize) -> &str {
    let mut end = value.len().min(max);
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    &value[..end]
}

fn cut(value: &str, field: &str, warnings: &mut Vec<String>) -> String {
    if value.len() > MAX_FIELD_LEN {
        warnings.push(format!(
            "field `{field}` is longer than {MAX_FIELD_LEN} bytes; cut"
        ));
    }
    cut_to(value, MAX_FIELD_LEN).to_owned()
}

/// Cuts the kill's strings like any other field's.
fn cut_kill(mut kill: Kill, warnings: &mut Vec<String>) -> Kill {
    for (field, value) in [
        ("kill.cluster", &mut kill.cluster),
        ("kill.namespace", &mut kill.namespace),
        ("kill.pod", &mut kill.pod),
        ("kill.container", &mut kill.container),
        ("kill.node", &mut kill.node),
        ("kill.trigger", &mut kill.trigger),
    ] {
        if let Some(text) = value {
            *text = cut(text, field, warnings);
        }
    }
    kill
}

/// A plain-text payload: a severity word, or else a summary.
fn apply_text(bonk: &mut Bonk, text: &str, warnings: &mut Vec<String>) {
    match Severity::parse_word(text) {
        Some(severity) => bonk.severity = severity,
        None => bonk.summary = Some(cut(text, "summary", warnings)),
    }
}

fn apply_fields(bonk: &mut Bonk, fields: &Map<String, Value>, warnings: &mut Vec<String>) {
    for (key, value) in fields {
        if value.is_null() {
            continue;
        }
        let wrong = |expected: &str| {
            format!(
                "field `{key}`: expected {expected}, got {}; ignored",
                json_kind(value)
            )
        };
        match key.as_str() {
            "v" => {}
            "id" => match value.as_str().and_then(BonkId::from_received) {
                Some(id) => bonk.id = id,
                None => warnings.push(format!(
                    "field `id`: expected a non-empty string of at most {MAX_ID_LEN} bytes; \
                     a new id was generated"
                )),
            },
            "source" => match value.as_str() {
                Some(source) => bonk.source = Source::parse(source),
                None => warnings.push(wrong("a string")),
            },
            "severity" => match value.as_str().and_then(Severity::parse_word) {
                Some(severity) => bonk.severity = severity,
                None => warnings.push(format!(
                    "field `severity`: expected critical, warning or info, got {value}; \
                     using {}",
                    bonk.severity
                )),
            },
            "count" => match value.as_u64().filter(|n| *n >= 1) {
                Some(n) => bonk.count = u32::try_from(n).unwrap_or(u32::MAX),
                None => warnings.push(wrong("a whole number of at least 1")),
            },
            "fired_at" | "sent_at" => {
                // RFC 3339, plus whatever a serialised `Bonk` holds: chrono writes years outside
                // 0000–9999 with a sign (`-0026-…`, `+10000-…`), which RFC 3339 cannot express.
                match value.as_str().and_then(|s| {
                    DateTime::parse_from_rfc3339(s)
                        .map(|t| t.with_timezone(&Utc))
                        .or_else(|_| s.parse::<DateTime<Utc>>())
                        .ok()
                }) {
                    Some(t) => {
                        let t = Some(t);
                        if key == "fired_at" {
                            bonk.fired_at = t;
                        } else {
                            bonk.sent_at = t;
                        }
                    }
                    None => warnings.push(wrong("an RFC 3339 timestamp string")),
                }
            }
            "namespace" | "pod" | "container" | "process" | "node" | "alertname" | "reason"
            | "summary" | "cluster" | "message" => {
                let Some(text) = value.as_str() else {
                    warnings.push(wrong("a string"));
                    continue;
                };
                let text = Some(cut(text, key, warnings));
                match key.as_str() {
                    "namespace" => bonk.namespace = text,
                    "pod" => bonk.pod = text,
                    "container" => bonk.container = text,
                    "process" => bonk.process = text,
                    "node" => bonk.node = text,
                    "alertname" => bonk.alertname = text,
                    "reason" => bonk.reason = text,
                    "cluster" => bonk.cluster = text,
                    // `message` is what people type; it is the summary.
                    _ => bonk.summary = text,
                }
            }
            "kill" => match serde_json::from_value::<Kill>(value.clone()) {
                Ok(kill) => bonk.kill = Some(cut_kill(kill, warnings)),
                Err(error) => warnings.push(format!(
                    "field `kill`: {error}; ignored (the bonk is not merged with other reports \
                     of its kill)"
                )),
            },
            // Unknown fields are ignored, as for serde: newer publishers may add fields.
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_zero_length_message_clears_and_blank_text_is_a_full_bonk() {
        assert!(Bonk::clears_retained(b""));
        for payload in [&b" "[..], b"\n", b"{}", b"bonk"] {
            assert!(!Bonk::clears_retained(payload), "{payload:?}");
        }
        let parsed = Bonk::parse_lenient(b" ");
        assert!(parsed.warnings.is_empty());
        assert_eq!(parsed.bonk.severity, Severity::Critical);
        assert_eq!(parsed.bonk.source, Source::Manual);
        assert!(!parsed.bonk.id.as_str().is_empty());
        assert_ne!(Bonk::parse_lenient(b" ").bonk.id, parsed.bonk.id);
    }

    #[test]
    fn words_are_severities_and_other_text_is_a_summary() {
        assert_eq!(
            Bonk::parse_lenient(b"bonk").bonk.severity,
            Severity::Critical
        );
        assert_eq!(
            Bonk::parse_lenient(b" tap\n").bonk.severity,
            Severity::Warning
        );
        assert_eq!(Bonk::parse_lenient(b"WIGGLE").bonk.severity, Severity::Info);
        let text = Bonk::parse_lenient(b"deploy went sideways");
        assert_eq!(text.bonk.summary.as_deref(), Some("deploy went sideways"));
        assert_eq!(text.bonk.severity, Severity::Critical);
        assert!(text.warnings.is_empty());
    }

    #[test]
    fn partial_json_gets_defaults() {
        let parsed = Bonk::parse_lenient(br#"{"severity":"warning"}"#);
        assert!(parsed.warnings.is_empty(), "{:?}", parsed.warnings);
        assert_eq!(parsed.bonk.severity, Severity::Warning);
        assert_eq!(parsed.bonk.count, 1);
    }

    #[test]
    fn broken_json_is_a_default_bonk_with_a_warning() {
        let parsed = Bonk::parse_lenient(br#"{"severity": "warning""#);
        assert_eq!(parsed.bonk.severity, Severity::Critical);
        assert_eq!(parsed.warnings.len(), 1);
        assert!(
            parsed.warnings[0].contains("not valid"),
            "{:?}",
            parsed.warnings
        );
    }

    #[test]
    fn wrong_field_types_are_reported_one_by_one() {
        let parsed = Bonk::parse_lenient(
            br#"{"severity":5,"pod":["x"],"count":0,"id":"","namespace":"ok"}"#,
        );
        assert_eq!(parsed.warnings.len(), 4, "{:?}", parsed.warnings);
        assert_eq!(parsed.bonk.namespace.as_deref(), Some("ok"));
        assert_eq!(parsed.bonk.pod, None);
    }

    #[test]
    fn non_utf8_and_non_object_json_still_bonk() {
        assert_eq!(Bonk::parse_lenient(&[0xff, 0xfe]).warnings.len(), 1);
        assert_eq!(Bonk::parse_lenient(b"[1,2]").warnings.len(), 1);
        assert_eq!(
            Bonk::parse_lenient(br#""tap""#).bonk.severity,
            Severity::Warning
        );
    }

    #[test]
    fn long_fields_are_cut_on_a_char_boundary() {
        let long = "é".repeat(MAX_FIELD_LEN);
        let payload = serde_json::json!({ "summary": long }).to_string();
        let parsed = Bonk::parse_lenient(payload.as_bytes());
        let summary = parsed.bonk.summary.expect("summary kept");
        assert!(summary.len() <= MAX_FIELD_LEN);
        assert_eq!(parsed.warnings.len(), 1);
    }

    #[test]
    fn serde_ignores_unknown_fields_and_fills_defaults() {
        let bonk: Bonk =
            serde_json::from_str(r#"{"id":"x","future_field":{"a":1}}"#).expect("parses");
        assert_eq!(bonk.version, SCHEMA_VERSION);
        assert_eq!(bonk.severity, Severity::Critical);
        assert_eq!(bonk.count, 1);
    }

    #[test]
    fn alert_ids_are_stable_and_normalise_the_timestamp() {
        let a = BonkId::for_alert("abc123", "2026-11-21T10:00:00Z");
        let b = BonkId::for_alert("abc123", "2026-11-21T11:00:00+01:00");
        let c = BonkId::for_alert("abc123", "2026-11-21T10:00:01Z");
        let d = BonkId::for_alert("abc124", "2026-11-21T10:00:00Z");
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
        assert_eq!(a, BonkId::for_alert("abc123", "2026-11-21T10:00:00.000Z"));
        // Alertmanager's webhook (nanoseconds) and its API (milliseconds) agree.
        assert_eq!(
            BonkId::for_alert("f", "2026-11-21T11:47:05.27135243Z"),
            BonkId::for_alert("f", "2026-11-21T11:47:05.271Z")
        );
        // Pinned: the id must never change between releases, or mixed-version replicas disagree.
        // It is the UUID v5 of "alert", the fingerprint and "2026-11-21T10:00:00.000Z", joined by
        // U+001F, in bonker's own UUID namespace.
        assert_eq!(a.as_str(), "b45bd9bc-3f7a-53f5-9ea7-0ac432383248");
    }

    #[test]
    fn timestamps_outside_four_digit_years_survive_the_wire() {
        // Found by fuzzing the webhook: Alertmanager's JSON decoder accepts such a `startsAt`, and
        // the agent must read back exactly the bonk the gateway sent.
        for text in ["-0026-11-21T11:56:15.345196839Z", "+10000-01-01T00:00:00Z"] {
            let t: DateTime<Utc> = text.parse().expect("chrono reads its own format");
            let mut bonk = Bonk::new(Source::Alertmanager, Severity::Critical);
            bonk.fired_at = Some(t);
            let parsed = Bonk::parse_lenient(&bonk.to_json());
            assert!(parsed.warnings.is_empty(), "{text}: {:?}", parsed.warnings);
            assert_eq!(parsed.bonk, bonk, "{text}");
        }
    }

    #[test]
    fn alert_label_severity_mapping() {
        assert_eq!(
            Severity::from_alert_label(Some("critical")),
            Severity::Critical
        );
        assert_eq!(
            Severity::from_alert_label(Some("Warning")),
            Severity::Warning
        );
        assert_eq!(Severity::from_alert_label(Some("page")), Severity::Info);
        assert_eq!(Severity::from_alert_label(None), Severity::Info);
    }
}
