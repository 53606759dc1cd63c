//! Subscribers that fall behind, made visible.
//!
//! rumqttd keeps what is routed to a filter in a ring of segments shared by every subscriber of
//! that filter (see [`crate::settings::FILTER_LOG_BYTES`]). A subscriber that reads slower than
//! the filter fills — a desk on a bad link, an overloaded Pi, a client holding its PUBACKs —
//! finds, when it next reads, that the ring has moved past its cursor: rumqttd jumps it to the
//! oldest message still held, and what lay between is never delivered. rumqttd reports each jump
//! on its alerts link with the client id and the filter but not the number of messages skipped,
//! and logs it without the client id. This module takes those alerts and warns once per client and
//! filter in each batch, naming the desk that missed bonks, so the loss is never silent.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// How often rumqttd hands over its alerts (it takes whole seconds).
const ALERT_INTERVAL: Duration = Duration::from_secs(1);

/// rumqttd's metric settings asking for its alerts every [`ALERT_INTERVAL`]. Its timer needs an
/// interval for meters too (it unwraps both), so meters get an hourly one; nothing reads them.
pub(crate) fn alert_settings() -> HashMap<rumqttd::MetricType, rumqttd::MetricSettings> {
    let every = |interval: Duration| -> rumqttd::MetricSettings {
        toml::from_str(&format!("push_interval = {}", interval.as_secs()))
            .expect("rumqttd's metric settings have one field, push_interval")
    };
    HashMap::from([
        (rumqttd::MetricType::Alerts, every(ALERT_INTERVAL)),
        (
            rumqttd::MetricType::Meters,
            every(Duration::from_secs(3600)),
        ),
    ])
}

/// Starts [`watch`] on a thread of its own. A broker that cannot be watched still serves; it
/// says so.
pub(crate) fn start(broker: &rumqttd::Broker) {
    let started = broker
        .alerts()
        .map_err(|error| error.to_string())
        .and_then(|link| {
            std::thread::Builder::new()
                .name("bonker-broker-alerts".to_owned())
                .spawn(move || watch(link))
                .map(drop)
                .map_err(|error| error.to_string())
        });
    if let Err(error) = started {
        tracing::warn!(%error, "cannot watch for subscribers falling behind");
    }
}

/// Warns about every subscriber rumqttd reports as having skipped messages, until the broker
/// goes away.
fn watch(link: rumqttd::alerts::AlertsLink) {
    while let Ok(alerts) = link.router_rx.recv() {
        for ((client_id, filter), jumps) in jumps(&alerts) {
            tracing::warn!(
                client_id,
                filter,
                jumps,
                "a subscriber fell behind: the broker's log for this filter had dropped messages \
                 before they were sent to it, so it missed them (a desk misses those bonks and \
                 never acks them). The client reads slower than the filter fills: a slow link, \
                 an overloaded desk, or a client holding its acks"
            );
        }
    }
}

/// The cursor jumps in one batch of alerts, counted by client id and filter.
fn jumps(alerts: &[rumqttd::Alert]) -> BTreeMap<(String, String), usize> {
    let mut jumps = BTreeMap::new();
    for alert in alerts {
        if alert.kind.name() != "cursor_jump" {
            continue;
        }
        // rumqttd does not export the alert's kind, only its name and description.
        let description = alert.kind.description();
        let filter = jumped_filter(&description).unwrap_or("?").to_owned();
        *jumps.entry((alert.client_id.clone(), filter)).or_default() += 1;
    }
    jumps
}

/// The filter named by a cursor jump's description, `Filter: {filter}, Lost: {lost}`.
fn jumped_filter(description: &str) -> Option<&str> {
    let rest = description.strip_prefix("Filter: ")?;
    Some(
        rest.rsplit_once(", Lost: ")
            .map_or(rest, |(filter, _)| filter),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_is_read_from_rumqttds_description() {
        assert_eq!(
            jumped_filter("Filter: bonker/ns/+/bonk, Lost: 0"),
            Some("bonker/ns/+/bonk")
        );
        assert_eq!(jumped_filter("Topic: x"), None);
    }

    #[test]
    fn the_alert_settings_are_what_rumqttd_reads() {
        let settings = alert_settings();
        assert!(settings.contains_key(&rumqttd::MetricType::Alerts));
        assert!(settings.contains_key(&rumqttd::MetricType::Meters));
    }
}
