//! The gateway's Prometheus metrics, served at `GET /metrics` in the OpenMetrics text format.
//!
//! Every metric is registered here, in one place, so the list in `docs/gateway.md` can be checked
//! against one file. Label values are bounded: namespaces are validated topic levels, desks are
//! capped by the fleet registry, outcomes and reasons are fixed word lists.

use bonker_protocol::{Detector, Severity, Source};

use crate::alertmanager::AlertStatus;
use crate::fleet::Ignored;
use crate::mqtt::PublishError;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;

/// The prefix of every metric name.
pub(crate) const METRIC_PREFIX: &str = "bonker_gateway";

/// Publish-to-ack latency buckets, in seconds: from a loopback round trip to a slow servo stroke.
const LATENCY_BUCKETS_S: [f64; 13] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// The outcomes of `POST /webhook` and `POST /bonk`.
const HTTP_OUTCOMES: [&str; 7] = [
    "ok",
    "bad_request",
    "unsupported_media_type",
    "payload_too_large",
    "unauthorized",
    "forbidden",
    "unavailable",
];

/// An HTTP request's outcome.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `ok`, `bad_request`, `unsupported_media_type`, `payload_too_large`, `unauthorized`,
    /// `forbidden`, `unavailable`.
    pub outcome: &'static str,
}

/// An alert's status.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AlertLabels {
    /// `firing` or `resolved`.
    pub status: &'static str,
}

/// Where a bonk went.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BonkLabels {
    /// The namespace of the topic it was published on.
    pub namespace: String,
    /// `critical`, `warning` or `info`.
    pub severity: &'static str,
    /// `alertmanager` or `http`.
    pub source: &'static str,
}

/// Who first reported a kill an alert was merged into.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MergeLabels {
    /// `kernel` (the node watcher's bonk) or `alert` (another rule's alert).
    pub source: &'static str,
}

/// Why something failed or was ignored.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// A fixed word, see each metric's help.
    pub reason: &'static str,
}

/// A desk's ack.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AckLabels {
    /// The desk.
    pub desk: String,
    /// What it did: `bonked`, `duplicate`, `rate_limited`, `expired`, `servo_error`.
    pub outcome: &'static str,
}

/// A desk.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeskLabels {
    /// The desk.
    pub desk: String,
}

/// Every metric the gateway exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// `POST /webhook` requests by outcome.
    pub webhooks: Family<OutcomeLabels, Counter>,
    /// `POST /bonk` requests by outcome.
    pub manual_bonks: Family<OutcomeLabels, Counter>,
    /// Alerts received, by status.
    pub alerts: Family<AlertLabels, Counter>,
    /// Bonks the broker accepted (PUBACK), by namespace, severity and source.
    pub bonks_published: Family<BonkLabels, Counter>,
    /// Bonks the broker did not accept in time, by reason.
    pub publish_failures: Family<ReasonLabels, Counter>,
    /// Firing alerts not bonked again because the same alert instance already bonked.
    pub dedupe_hits: Counter,
    /// Firing alerts not bonked because their kill already bonked, by who reported it first.
    pub alerts_merged: Family<MergeLabels, Counter>,
    /// Kills remembered for merging (bounded by `dedupe.max_kills`).
    pub kills_remembered: Gauge,
    /// Alerts whose namespace label is not a valid topic level (bonked on the default namespace).
    pub invalid_namespace_labels: Counter,
    /// Acks received, by desk and outcome.
    pub acks: Family<AckLabels, Counter>,
    /// Seconds from this gateway's publish to a desk's ack arriving back.
    pub publish_to_ack: Histogram,
    /// By desk: the publish-to-ack time of its latest ack of a bonk this gateway published.
    pub desk_ack_delay: Family<DeskLabels, Gauge<f64, AtomicU64>>,
    /// Desk messages ignored, by reason.
    pub desk_messages_ignored: Family<ReasonLabels, Counter>,
    /// Desks whose retained status is `online`.
    pub desks_online: Gauge,
    /// Desks known (any status).
    pub desks_known: Gauge,
    /// 1 while connected to the MQTT broker.
    pub mqtt_connected: Gauge,
    /// Desks the gateway waits for after a reconnect before it publishes bonks.
    pub desks_awaited: Gauge,
    /// Successful MQTT connections (the first one and every reconnect).
    pub mqtt_connections: Counter,
    /// Fleet page event streams open.
    pub event_streams: Gauge,
    /// Event streams refused because `max_event_streams` were open.
    pub event_stream_refused: Counter,
}

/// Counts one open event stream in [`Metrics::event_streams`] until dropped.
#[derive(Debug)]
pub(crate) struct OpenStream(Gauge);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Counts an event stream as open until the guard is dropped.
    pub(crate) fn event_streams_open_guard(&self) -> OpenStream {
        self.event_streams.inc();
        OpenStream(self.event_streams.clone())
    }

    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix(METRIC_PREFIX);
        let webhooks = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "webhooks",
            "POST /webhook requests by outcome (ok, bad_request, unsupported_media_type, \
             payload_too_large, unauthorized, forbidden, unavailable)",
            webhooks.clone(),
        );
        let manual_bonks = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "manual_bonks",
            "POST /bonk requests by outcome",
            manual_bonks.clone(),
        );
        let alerts = Family::<AlertLabels, Counter>::default();
        registry.register("alerts", "Alerts received, by status", alerts.clone());
        let bonks_published = Family::<BonkLabels, Counter>::default();
        registry.register(
            "bonks_published",
            "Bonks accepted by the MQTT broker (PUBACK), by namespace, severity and source",
            bonks_published.clone(),
        );
        let publish_failures = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "publish_failures",
            "Bonks not accepted by the MQTT broker, by reason (timeout, disconnected, \
             queue_full, stopped)",
            publish_failures.clone(),
        );
        let dedupe_hits = Counter::default();
        registry.register(
            "dedupe_hits",
            "Firing alerts not bonked again because the same alert instance already bonked",
            dedupe_hits.clone(),
        );
        let alerts_merged = Family::<MergeLabels, Counter>::default();
        registry.register(
            "alerts_merged",
            "Firing alerts not bonked because their kill already bonked, by who reported the \
             kill first (kernel: the node watcher; alert: another rule)",
            alerts_merged.clone(),
        );
        for source in [Detector::Kernel, Detector::Alert] {
            alerts_merged
                .get_or_create(&MergeLabels {
                    source: source.as_str(),
                })
                .inc_by(0);
        }
        let kills_remembered = Gauge::default();
        registry.register(
            "kills_remembered",
            "OOM kills remembered for merging later alerts into their bonk",
            kills_remembered.clone(),
        );
        let invalid_namespace_labels = Counter::default();
        registry.register(
            "invalid_namespace_labels",
            "Alerts whose namespace label is not a valid topic level (bonked on the default \
             namespace)",
            invalid_namespace_labels.clone(),
        );
        let acks = Family::<AckLabels, Counter>::default();
        registry.register(
            "acks",
            "Acks received from desks, by desk and outcome",
            acks.clone(),
        );
        let publish_to_ack = Histogram::new(LATENCY_BUCKETS_S);
        registry.register_with_unit(
            "publish_to_ack",
            "Time from this gateway publishing a bonk to a desk's ack arriving",
            Unit::Seconds,
            publish_to_ack.clone(),
        );
        let desk_ack_delay = Family::<DeskLabels, Gauge<f64, AtomicU64>>::default();
        registry.register_with_unit(
            "desk_ack_delay",
            "By desk, the time from this gateway publishing a bonk to that desk's ack arriving, \
             for its latest ack: a desk falling behind shows a growing delay",
            Unit::Seconds,
            desk_ack_delay.clone(),
        );
        let desk_messages_ignored = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "desk_messages_ignored",
            "Desk messages ignored, by reason (invalid_status, invalid_health, invalid_ack, \
             too_many_desks)",
            desk_messages_ignored.clone(),
        );
        let desks_online = Gauge::default();
        registry.register(
            "desks_online",
            "Desks whose retained status is online",
            desks_online.clone(),
        );
        let desks_known = Gauge::default();
        registry.register(
            "desks_known",
            "Desks known to the gateway",
            desks_known.clone(),
        );
        let mqtt_connected = Gauge::default();
        registry.register(
            "mqtt_connected",
            "1 while the gateway is connected to the MQTT broker",
            mqtt_connected.clone(),
        );
        let desks_awaited = Gauge::default();
        registry.register(
            "desks_awaited",
            "Desks that were online before the gateway reconnected to the MQTT broker and have not \
             said online since; bonks wait for them",
            desks_awaited.clone(),
        );
        let mqtt_connections = Counter::default();
        registry.register(
            "mqtt_connections",
            "Successful MQTT connections (the first and every reconnect)",
            mqtt_connections.clone(),
        );
        let event_streams = Gauge::default();
        registry.register(
            "event_streams",
            "Fleet page event streams (GET /api/events) open",
            event_streams.clone(),
        );
        let event_stream_refused = Counter::default();
        registry.register(
            "event_streams_refused",
            "Event streams refused with 503 because max_event_streams were open",
            event_stream_refused.clone(),
        );
        // Known label values start at zero, so dashboards and alerts see every series from the
        // first scrape (a family without any series is not exported at all).
        for outcome in HTTP_OUTCOMES {
            webhooks.get_or_create(&OutcomeLabels { outcome }).inc_by(0);
            manual_bonks
                .get_or_create(&OutcomeLabels { outcome })
                .inc_by(0);
        }
        for status in AlertStatus::ALL {
            alerts
                .get_or_create(&AlertLabels {
                    status: status.as_str(),
                })
                .inc_by(0);
        }
        for error in PublishError::ALL {
            publish_failures
                .get_or_create(&ReasonLabels {
                    reason: error.as_str(),
                })
                .inc_by(0);
        }
        for ignored in Ignored::ALL {
            desk_messages_ignored
                .get_or_create(&ReasonLabels {
                    reason: ignored.as_str(),
                })
                .inc_by(0);
        }
        Self {
            registry,
            webhooks,
            manual_bonks,
            alerts,
            bonks_published,
            publish_failures,
            dedupe_hits,
            alerts_merged,
            kills_remembered,
            invalid_namespace_labels,
            acks,
            publish_to_ack,
            desk_ack_delay,
            desk_messages_ignored,
            desks_online,
            desks_known,
            mqtt_connected,
            desks_awaited,
            mqtt_connections,
            event_streams,
            event_stream_refused,
        }
    }

    /// Counts a webhook by outcome.
    pub fn webhook(&self, outcome: &'static str) {
        self.webhooks
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// Counts a manual bonk request by outcome.
    pub fn manual_bonk(&self, outcome: &'static str) {
        self.manual_bonks
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// Counts the alerts of a notification.
    pub(crate) fn alerts_received(&self, firing: usize, resolved: usize) {
        for (status, count) in [
            (AlertStatus::Firing, firing),
            (AlertStatus::Resolved, resolved),
        ] {
            self.alerts
                .get_or_create(&AlertLabels {
                    status: status.as_str(),
                })
                .inc_by(count as u64);
        }
    }

    /// Counts an alert merged into the bonk of a kill `by` saw first.
    pub(crate) fn alert_merged(&self, by: Detector) {
        self.alerts_merged
            .get_or_create(&MergeLabels {
                source: by.as_str(),
            })
            .inc();
    }

    /// Counts a bonk the broker accepted.
    pub(crate) fn bonk_published(&self, namespace: &str, severity: Severity, source: Source) {
        self.bonks_published
            .get_or_create(&BonkLabels {
                namespace: namespace.to_owned(),
                severity: severity.as_str(),
                source: source.as_str(),
            })
            .inc();
    }

    /// Counts a bonk the broker did not accept, by why.
    pub(crate) fn publish_failed(&self, error: PublishError) {
        self.publish_failures
            .get_or_create(&ReasonLabels {
                reason: error.as_str(),
            })
            .inc();
    }

    /// Sets how many kills the gateway remembers.
    pub(crate) fn set_kills_remembered(&self, count: usize) {
        self.kills_remembered
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// Counts an ignored desk message.
    pub fn desk_message_ignored(&self, ignored: Ignored) {
        self.desk_messages_ignored
            .get_or_create(&ReasonLabels {
                reason: ignored.as_str(),
            })
            .inc();
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_exported_with_its_prefix() {
        let metrics = Metrics::new();
        metrics.webhook("ok");
        metrics.publish_to_ack.observe(0.02);
        metrics
            .desk_ack_delay
            .get_or_create(&DeskLabels {
                desk: "alice".into(),
            })
            .set(12.5);
        let text = metrics.encode();
        for name in [
            "bonker_gateway_webhooks_total{outcome=\"ok\"} 1",
            "bonker_gateway_webhooks_total{outcome=\"unavailable\"} 0",
            "bonker_gateway_manual_bonks_total{outcome=\"unauthorized\"} 0",
            "bonker_gateway_alerts_total{status=\"resolved\"} 0",
            "bonker_gateway_publish_failures_total{reason=\"timeout\"} 0",
            "bonker_gateway_desk_messages_ignored_total{reason=\"invalid_ack\"} 0",
            "bonker_gateway_dedupe_hits_total 0",
            "bonker_gateway_alerts_merged_total{source=\"kernel\"} 0",
            "bonker_gateway_alerts_merged_total{source=\"alert\"} 0",
            "bonker_gateway_kills_remembered 0",
            "bonker_gateway_invalid_namespace_labels_total 0",
            "bonker_gateway_publish_to_ack_seconds_count 1",
            "bonker_gateway_desk_ack_delay_seconds{desk=\"alice\"} 12.5",
            "bonker_gateway_desks_online 0",
            "bonker_gateway_desks_known 0",
            "bonker_gateway_mqtt_connected 0",
            "bonker_gateway_mqtt_connections_total 0",
            "# EOF",
        ] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
    }
}
