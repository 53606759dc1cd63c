//! The watcher's own Prometheus metrics, and the small HTTP server that serves them.
//!
//! `bonker_watcher_oom_kills_total{namespace,pod,container,limit}` is the point: unlike
//! cAdvisor's `container_oom_events_total` or kube-state-metrics' last-terminated reason, it lives
//! in the watcher, so it does not disappear when the killed container is replaced, and it counts
//! child processes whose death never restarted anything. Kills outside Kubernetes have empty
//! `namespace`, `pod` and `container` labels. The killed process's name is in the bonk and the
//! log, not in a label: any workload chooses it, so as a label it would make series without end.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// HTTP connections served at once: Prometheus and a person with curl need a few; the cap
/// bounds what anyone who can reach the port can make the watcher hold.
pub const MAX_CONNECTIONS: usize = 64;

/// Labels of one killed process.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KillLabels {
    /// Kubernetes namespace, empty outside Kubernetes.
    pub namespace: String,
    /// Pod name, empty outside Kubernetes.
    pub pod: String,
    /// Container name, empty when unknown.
    pub container: String,
    /// Which limit fired: `container`, `pod`, `cgroup`, `node`, `numa`; empty when unknown.
    pub limit: String,
}

/// Labels of a kill seen only by the cgroup counters.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CounterOnlyLabels {
    /// Kubernetes namespace, empty outside Kubernetes.
    pub namespace: String,
    /// Pod name, empty outside Kubernetes.
    pub pod: String,
    /// Container name, empty when unknown.
    pub container: String,
}

/// Every metric the watcher exports.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    /// OOM kills by namespace, pod, container and limit.
    pub oom_kills: Family<KillLabels, Counter>,
    /// Kills the cgroup counters saw but the kernel log did not explain.
    pub counter_only_detections: Family<CounterOnlyLabels, Counter>,
    /// OOM report lines that could not be parsed.
    pub parse_failures: Counter,
    /// Kernel log records lost to ring buffer overruns (`EPIPE`) — times it happened.
    pub kmsg_overruns: Counter,
    /// Bonks the MQTT broker acknowledged.
    pub bonks_published: Counter,
    /// Bonks dropped because the publish queue was full (broker unreachable for long).
    pub bonks_dropped: Counter,
    /// 1 while the kernel log is being read, 0 when it cannot be opened.
    pub kernel_log_readable: Gauge,
    /// 1 while connected to the MQTT broker.
    pub mqtt_connected: Gauge,
    /// Kill lines that came without a cgroup (the kernel rate-limits its OOM summaries), given
    /// one by the counters.
    pub kills_without_cgroup: Counter,
    /// Readings of the memory cgroup counters.
    pub cgroup_scans: Counter,
    /// Counted kills waiting for their kernel log line (reported from the counter when the grace
    /// period ends).
    pub unexplained_counter_kills: Gauge,
    /// Seconds from the kernel's timestamp of a kill to its bonk being handed to MQTT.
    pub detection_delay_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("bonker_watcher");
        let oom_kills = Family::<KillLabels, Counter>::default();
        registry.register(
            "oom_kills",
            "OOM kills on this node, by namespace, pod, container and the limit that fired",
            oom_kills.clone(),
        );
        let counter_only_detections = Family::<CounterOnlyLabels, Counter>::default();
        registry.register(
            "counter_only_detections",
            "OOM kills counted by memory cgroup counters that no kernel log line explained",
            counter_only_detections.clone(),
        );
        let parse_failures = Counter::default();
        registry.register(
            "parse_failures",
            "Kernel OOM report lines that could not be parsed",
            parse_failures.clone(),
        );
        let kmsg_overruns = Counter::default();
        registry.register(
            "kmsg_overruns",
            "Times kernel log records were overwritten before they were read",
            kmsg_overruns.clone(),
        );
        let bonks_published = Counter::default();
        registry.register(
            "bonks_published",
            "Bonks the MQTT broker acknowledged",
            bonks_published.clone(),
        );
        let bonks_dropped = Counter::default();
        registry.register(
            "bonks_dropped",
            "Bonks dropped because the publish queue was full",
            bonks_dropped.clone(),
        );
        let kernel_log_readable = Gauge::default();
        registry.register(
            "kernel_log_readable",
            "1 while the kernel log is being read",
            kernel_log_readable.clone(),
        );
        let mqtt_connected = Gauge::default();
        registry.register(
            "mqtt_connected",
            "1 while connected to the MQTT broker",
            mqtt_connected.clone(),
        );
        let kills_without_cgroup = Counter::default();
        registry.register(
            "kills_without_cgroup",
            "Kernel kill lines without a cgroup (summary rate-limited by the kernel)",
            kills_without_cgroup.clone(),
        );
        let cgroup_scans = Counter::default();
        registry.register(
            "cgroup_scans",
            "Readings of the memory cgroup OOM counters",
            cgroup_scans.clone(),
        );
        let unexplained_counter_kills = Gauge::default();
        registry.register(
            "unexplained_counter_kills",
            "Counted OOM kills still waiting for their kernel log line",
            unexplained_counter_kills.clone(),
        );
        let detection_delay_seconds = Histogram::new([
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ]);
        registry.register(
            "detection_delay_seconds",
            "Seconds from the kernel's timestamp of an OOM kill to its bonk being published",
            detection_delay_seconds.clone(),
        );
        Metrics {
            registry: Arc::new(registry),
            oom_kills,
            counter_only_detections,
            parse_failures,
            kmsg_overruns,
            bonks_published,
            bonks_dropped,
            kernel_log_readable,
            mqtt_connected,
            kills_without_cgroup,
            cgroup_scans,
            unexplained_counter_kills,
            detection_delay_seconds,
        }
    }

    /// The metrics in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// The HTTP routes: `GET /metrics` and `GET /healthz`.
pub fn router(metrics: Metrics) -> Router {
    Router::new()
        .route("/metrics", get(serve_metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(metrics)
}

async fn serve_metrics(State(metrics): State<Metrics>) -> impl IntoResponse {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.encode(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kills_are_exported_with_their_labels() {
        let metrics = Metrics::new();
        metrics
            .oom_kills
            .get_or_create(&KillLabels {
                namespace: "payments".into(),
                pod: "api-1".into(),
                container: "app".into(),
                limit: "container".into(),
            })
            .inc();
        metrics.parse_failures.inc();
        let text = metrics.encode();
        assert!(
            text.contains(
                r#"bonker_watcher_oom_kills_total{namespace="payments",pod="api-1",container="app",limit="container"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains("bonker_watcher_parse_failures_total 1"),
            "{text}"
        );
        assert!(
            text.contains("bonker_watcher_kernel_log_readable 0"),
            "{text}"
        );
    }
}
