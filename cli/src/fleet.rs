//! `bonker fleet`: the desks, as their retained status and health topics describe them.
//!
//! The CLI reads the broker, not the gateway: it works wherever a person can reach the broker, and
//! shows the same truth Home Assistant sees. Health reports are the desks' own words, so every
//! cell of the table is escaped for the terminal before it is measured, and the JSON is escaped by
//! [`terminal::json`].

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;
use bonker_protocol::{Health, Route, Status, Topics};
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::session::{Received, Session};
use crate::terminal;

/// How long the broker must be quiet before the retained burst is taken as complete.
pub(crate) const RETAINED_QUIET: Duration = Duration::from_millis(400);
/// The longest the CLI waits for retained messages.
pub(crate) const RETAINED_LIMIT: Duration = Duration::from_secs(3);

/// One desk as the broker's retained messages describe it.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct DeskView {
    pub(crate) desk: String,
    pub(crate) online: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) last_seen: Option<DateTime<Utc>>,
    pub(crate) namespaces: Vec<String>,
    pub(crate) bonks_total: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) last_bonk_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) soc_temp_c: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) servo: Option<String>,
}

impl DeskView {
    /// Whether this desk is subscribed to bonks for `namespace`.
    pub(crate) fn watches(&self, namespace: &str) -> bool {
        self.namespaces.iter().any(|n| n == namespace || n == "+")
    }
}

/// Folds one status or health message into the fleet; other topics are ignored.
pub(crate) fn apply(fleet: &mut BTreeMap<String, DeskView>, topics: &Topics, message: &Received) {
    match topics.route(&message.topic) {
        Some(Route::Status(desk)) => {
            if message.payload.is_empty() {
                // A cleared status: the desk was retired.
                fleet.remove(desk.as_str());
                return;
            }
            let view = entry(fleet, desk.as_str());
            view.online = Status::parse(&message.payload) == Some(Status::Online);
        }
        Some(Route::Health(desk)) => {
            let Ok(health) = serde_json::from_slice::<Health>(&message.payload) else {
                return;
            };
            let view = entry(fleet, desk.as_str());
            view.last_seen = Some(health.sent_at);
            view.namespaces = health.namespaces;
            view.bonks_total = health.bonks_total;
            view.last_bonk_at = health.last_bonk_at;
            view.soc_temp_c = health.soc_temp_c;
            view.servo = Some(format!("{} {}", health.servo.driver, health.servo.state));
        }
        _ => {}
    }
}

fn entry<'a>(fleet: &'a mut BTreeMap<String, DeskView>, desk: &str) -> &'a mut DeskView {
    fleet.entry(desk.to_owned()).or_insert_with(|| DeskView {
        desk: desk.to_owned(),
        ..DeskView::default()
    })
}

/// Subscribes to every desk's status and health and returns the fleet they describe.
pub(crate) async fn read(
    session: &mut Session,
    topics: &Topics,
) -> Result<BTreeMap<String, DeskView>> {
    session
        .subscribe(&[topics.all_statuses(), topics.all_health()])
        .await?;
    let mut fleet = BTreeMap::new();
    for message in session.retained(RETAINED_QUIET, RETAINED_LIMIT).await? {
        apply(&mut fleet, topics, &message);
    }
    Ok(fleet)
}

/// `bonker fleet`.
pub(crate) async fn run(mut session: Session, topics: &Topics, json: bool) -> Result<()> {
    let fleet = read(&mut session, topics).await?;
    session.disconnect().await;
    if json {
        let desks: Vec<&DeskView> = fleet.values().collect();
        let json = serde_json::to_string_pretty(&desks)?;
        for line in terminal::json(&json).lines() {
            terminal::print_line(line);
        }
        return Ok(());
    }
    if fleet.is_empty() {
        terminal::print_line(&format!(
            "no desks have reported under {}/desk/",
            topics.prefix()
        ));
        return Ok(());
    }
    for line in table(&fleet, Utc::now()) {
        terminal::print_line(&line);
    }
    Ok(())
}

fn ago(now: DateTime<Utc>, then: Option<DateTime<Utc>>) -> String {
    let Some(then) = then else {
        return "-".to_owned();
    };
    let seconds = (now - then).num_seconds().max(0);
    match seconds {
        0..=59 => format!("{seconds}s ago"),
        60..=3599 => format!("{}m ago", seconds / 60),
        3600..=86_399 => format!("{}h ago", seconds / 3600),
        _ => format!("{}d ago", seconds / 86_400),
    }
}

/// The table's lines, every cell escaped for the terminal so that widths are the widths shown.
fn table(fleet: &BTreeMap<String, DeskView>, now: DateTime<Utc>) -> Vec<String> {
    let mut rows = vec![[
        "DESK".to_owned(),
        "STATUS".to_owned(),
        "LAST SEEN".to_owned(),
        "NAMESPACES".to_owned(),
        "BONKS".to_owned(),
        "LAST BONK".to_owned(),
        "TEMP".to_owned(),
        "SERVO".to_owned(),
    ]];
    for view in fleet.values() {
        rows.push([
            view.desk.clone(),
            if view.online { "online" } else { "offline" }.to_owned(),
            ago(now, view.last_seen),
            if view.namespaces.is_empty() {
                "-".to_owned()
            } else {
                view.namespaces.join(",")
            },
            view.bonks_total.to_string(),
            ago(now, view.last_bonk_at),
            view.soc_temp_c
                .map(|t| format!("{t:.1}°C"))
                .unwrap_or_else(|| "-".to_owned()),
            view.servo.clone().unwrap_or_else(|| "-".to_owned()),
        ]);
    }
    let rows: Vec<[String; 8]> = rows
        .into_iter()
        .map(|row| row.map(|cell| terminal::text(&cell).into_owned()))
        .collect();
    let mut widths = [0usize; 8];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    rows.iter()
        .map(|row| {
            let cells: Vec<String> = row
                .iter()
                .zip(widths)
                .map(|(cell, width)| format!("{cell:<width$}"))
                .collect();
            cells.join("  ").trim_end().to_owned()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(topic: &str, payload: &[u8]) -> Received {
        Received {
            topic: topic.to_owned(),
            payload: payload.to_vec(),
        }
    }

    #[test]
    fn status_and_health_fold_into_one_row_per_desk() {
        let topics = Topics::default();
        let mut fleet = BTreeMap::new();
        apply(
            &mut fleet,
            &topics,
            &message("bonker/desk/alice/status", b"online"),
        );
        let health = serde_json::json!({
            "desk": "alice", "agent_version": "0.1.0", "uptime_s": 1, "bonks_total": 3,
            "servo": {"driver": "simulated", "state": "rest"}, "namespaces": ["payments"],
            "sent_at": "2026-11-21T10:00:00Z", "soc_temp_c": 41.5
        });
        apply(
            &mut fleet,
            &topics,
            &message("bonker/desk/alice/health", health.to_string().as_bytes()),
        );
        apply(
            &mut fleet,
            &topics,
            &message("bonker/desk/bob/status", b"offline"),
        );
        apply(
            &mut fleet,
            &topics,
            &message("bonker/desk/bob/health", b"garbage"),
        );
        assert_eq!(fleet.len(), 2);
        assert!(fleet["alice"].online && fleet["alice"].watches("payments"));
        assert!(!fleet["alice"].watches("checkout"));
        assert!(!fleet["bob"].online);
        let now = DateTime::parse_from_rfc3339("2026-11-21T10:05:00Z")
            .expect("time")
            .with_timezone(&Utc);
        let table = table(&fleet, now).join("\n");
        assert!(table.starts_with("DESK"), "{table}");
        assert!(table.contains("alice  online"), "{table}");
        assert!(table.contains("5m ago"), "{table}");
        assert!(table.contains("41.5°C"), "{table}");
        apply(&mut fleet, &topics, &message("bonker/desk/bob/status", b""));
        assert!(
            !fleet.contains_key("bob"),
            "a cleared status retires the desk"
        );
    }

    #[test]
    fn health_fields_cannot_drive_the_terminal() {
        let topics = Topics::default();
        let hostile = "\x1b]52;c;aGFja2Vk\x07\u{9b}2J\u{202e}\x7f\nx";
        let health = serde_json::json!({
            "desk": "mallory", "agent_version": hostile, "uptime_s": 1, "bonks_total": 0,
            "servo": {"driver": hostile, "state": hostile}, "namespaces": [hostile, "ü🐧"],
            "sent_at": "2026-11-21T10:00:00Z"
        });
        let mut fleet = BTreeMap::new();
        apply(
            &mut fleet,
            &topics,
            &message("bonker/desk/mallory/health", health.to_string().as_bytes()),
        );
        let now = DateTime::parse_from_rfc3339("2026-11-21T10:00:30Z")
            .expect("time")
            .with_timezone(&Utc);
        let lines = table(&fleet, now);
        assert_eq!(lines.len(), 2, "one header, one desk: {lines:?}");
        for line in &lines {
            assert!(line.chars().all(|c| !c.is_control()), "{line:?}");
            assert_eq!(
                terminal::text(line),
                line.as_str(),
                "escaped before measuring"
            );
        }
        assert!(
            lines[1].contains(r"\u{1b}]52;c;aGFja2Vk\u{7}\u{9b}2J\u{202e}\u{7f}\nx,ü🐧"),
            "{}",
            lines[1]
        );
    }
}
