//! Alertmanager's webhook payload and how its alerts become bonks.
//!
//! This is pure logic, no I/O, so every mapping rule is unit-tested here:
//! - **every firing alert** in `alerts[]` becomes one bonk (a notification groups many alerts;
//!   bonking once per POST would hide all but one); resolved alerts never bonk;
//! - the bonk goes to the topic of the alert's `namespace` label. A missing label, or one that is
//!   not a valid topic level (`a/#`, `+`, NUL…), sends the bonk to the default namespace topic with
//!   the raw label kept in the payload — one bad alert never costs the others their bonk, and no
//!   label value can ever choose a topic outside its own level;
//! - severity comes from the alertname's override (`OOMKilled` is always critical by default),
//!   else the [`BONK_LABEL`] (bonker's own rules set it, and `severity: none` so that they page
//!   nobody), else the `severity` label;
//! - the bonk id is [`BonkId::for_alert`] of the alert's fingerprint and `startsAt`, so the same
//!   alert instance has the same id whichever Alertmanager or gateway replica delivered it.
//!   Senders that omit the fingerprint get one derived from the sorted labels.
//!
//! Field names follow kube-state-metrics and cAdvisor: `namespace`, `pod`, `container`, `reason`,
//! `node`, `cluster`; the summary comes from the `summary` annotation, else `description`, else a
//! generated sentence.

use std::collections::{BTreeMap, HashMap, HashSet};

use bonker_protocol::bonk::MAX_FIELD_LEN;
use bonker_protocol::{
    Bonk, BonkId, Cluster, Detector, Kill, NameError, Namespace, SCHEMA_VERSION, Severity, Source,
    Topics,
};
use chrono::{DateTime, Utc};
use serde::Deserialize;

/// The alert label that says how hard to bonk (`critical`, `warning`, `info`), over the
/// `severity` label. bonker's own rules set it and label themselves `severity: none`, the
/// Alertmanager convention for alerts that page nobody, so a bonk never changes what else an
/// existing Alertmanager does with the alert.
pub const BONK_LABEL: &str = "bonk";

/// An Alertmanager webhook notification (`webhook_config`, payload version 4).
///
/// Only `alerts` is required, so hand-written senders and older Alertmanagers work; unknown fields
/// are ignored so newer ones do too.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    /// Payload version (`"4"`).
    #[serde(default)]
    pub version: Option<String>,
    /// The receiver's name in the Alertmanager config.
    #[serde(default)]
    pub receiver: String,
    /// `firing` or `resolved`: the group's overall status.
    #[serde(default)]
    pub status: String,
    /// The alerts of this notification.
    pub alerts: Vec<Alert>,
    /// The labels the group is grouped by.
    #[serde(default)]
    pub group_labels: BTreeMap<String, String>,
    /// Labels every alert shares.
    #[serde(default)]
    pub common_labels: BTreeMap<String, String>,
    /// Annotations every alert shares.
    #[serde(default)]
    pub common_annotations: BTreeMap<String, String>,
    /// Alertmanager's URL.
    #[serde(default, rename = "externalURL")]
    pub external_url: String,
    /// The group's key, stable across notifications of the same group.
    #[serde(default)]
    pub group_key: String,
    /// How many alerts Alertmanager left out (`max_alerts`).
    #[serde(default)]
    pub truncated_alerts: u64,
}

/// One alert of a notification.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    /// Whether the alert is firing or resolved.
    pub status: AlertStatus,
    /// The alert's labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The alert's annotations.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// When the alert started firing; part of the alert instance's identity.
    pub starts_at: DateTime<Utc>,
    /// When it ended (`0001-01-01T00:00:00Z` while firing).
    #[serde(default)]
    pub ends_at: Option<String>,
    /// Link to the alert's expression.
    #[serde(default, rename = "generatorURL")]
    pub generator_url: Option<String>,
    /// Alertmanager's hash of the labels.
    #[serde(default)]
    pub fingerprint: Option<String>,
}

/// An alert's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    /// Firing: bonk.
    Firing,
    /// Resolved: never bonk.
    Resolved,
}

impl AlertStatus {
    /// Both statuses, for the metric's label set.
    pub const ALL: [AlertStatus; 2] = [AlertStatus::Firing, AlertStatus::Resolved];

    /// `firing` or `resolved`.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Firing => "firing",
            AlertStatus::Resolved => "resolved",
        }
    }
}

/// Why a bonk went to the default namespace topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamespaceFallback {
    /// The alert has no `namespace` label.
    Missing,
    /// The label is not a valid topic level; the error says which rule it broke.
    Invalid(NameError),
}

/// A bonk ready to publish, with the topic it goes to.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedBonk {
    /// The payload.
    pub bonk: Bonk,
    /// `<prefix>/bonk/<namespace>`.
    pub topic: String,
    /// The namespace whose topic it goes to.
    pub topic_namespace: Namespace,
    /// Set when the alert's own namespace label could not be used.
    pub fallback: Option<NamespaceFallback>,
}

/// What one notification asks for.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// One bonk per distinct firing alert instance, in the notification's order.
    pub bonks: Vec<PlannedBonk>,
    /// Firing alerts in the notification.
    pub firing: usize,
    /// Resolved alerts in the notification (never bonked).
    pub resolved: usize,
    /// Firing alerts that repeat an earlier alert of the same notification (same id).
    pub repeated: usize,
}

/// The rules turning alerts into bonks, from the gateway's settings.
#[derive(Debug, Clone)]
pub struct BonkRules {
    /// Topics under the configured prefix.
    pub topics: Topics,
    /// Where alerts without a usable namespace label go.
    pub default_namespace: Namespace,
    /// Copied into bonks whose alert has no `cluster` label.
    pub cluster: Option<Cluster>,
    /// Severity by lower-cased alertname.
    pub severity_overrides: HashMap<String, Severity>,
    /// Lower-cased alertnames that report an OOM kill.
    pub kill_alerts: HashSet<String>,
}

impl BonkRules {
    /// Plans the bonks of `notification`, sent at `now`.
    pub fn plan(&self, notification: &Notification, now: DateTime<Utc>) -> Plan {
        let mut plan = Plan::default();
        let mut seen = HashSet::new();
        for alert in &notification.alerts {
            match alert.status {
                AlertStatus::Resolved => plan.resolved += 1,
                AlertStatus::Firing => {
                    plan.firing += 1;
                    let planned = self.bonk_for_alert(alert, now);
                    if seen.insert(planned.bonk.id.clone()) {
                        plan.bonks.push(planned);
                    } else {
                        plan.repeated += 1;
                    }
                }
            }
        }
        plan
    }

    /// The bonk for one firing alert.
    pub fn bonk_for_alert(&self, alert: &Alert, now: DateTime<Utc>) -> PlannedBonk {
        let label = |name: &str| {
            alert
                .labels
                .get(name)
                .map(|v| v.trim())
                .filter(|v| !v.is_empty())
        };
        let raw_namespace = label("namespace");
        let (topic_namespace, fallback) = match raw_namespace.map(Namespace::new) {
            Some(Ok(namespace)) => (namespace, None),
            Some(Err(error)) => (
                self.default_namespace.clone(),
                Some(NamespaceFallback::Invalid(error)),
            ),
            None => (
                self.default_namespace.clone(),
                Some(NamespaceFallback::Missing),
            ),
        };
        let alertname = label("alertname");
        let severity = alertname
            .and_then(|name| self.severity_overrides.get(&name.to_ascii_lowercase()))
            .copied()
            .or_else(|| label(BONK_LABEL).and_then(Severity::parse_word))
            .unwrap_or_else(|| Severity::from_alert_label(label("severity")));
        let fingerprint = match alert.fingerprint.as_deref().map(str::trim) {
            Some(fingerprint) if !fingerprint.is_empty() => fingerprint.to_owned(),
            _ => fingerprint_from_labels(&alert.labels),
        };
        let id = BonkId::for_alert(&fingerprint, &alert.starts_at.to_rfc3339());
        let summary = alert
            .annotations
            .get("summary")
            .or_else(|| alert.annotations.get("description"))
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .unwrap_or_else(|| generated_summary(alert));
        let field = |value: Option<&str>| value.map(cut);
        let mut bonk = Bonk {
            version: SCHEMA_VERSION,
            id,
            source: Source::Alertmanager,
            severity,
            namespace: field(raw_namespace),
            pod: field(label("pod")),
            container: field(label("container")),
            process: None,
            node: field(label("node")),
            alertname: field(alertname),
            reason: field(label("reason")),
            summary: Some(cut(&summary)),
            cluster: field(label("cluster"))
                .or_else(|| self.cluster.as_ref().map(|c| c.to_string())),
            fired_at: Some(alert.starts_at),
            sent_at: Some(now),
            count: 1,
            kill: None,
        };
        if self.reports_a_kill(alert) {
            bonk.kill = Some(alert_kill(&bonk));
        }
        PlannedBonk {
            topic: self.topics.namespace_bonk(&topic_namespace),
            topic_namespace,
            bonk,
            fallback,
        }
    }
}

impl BonkRules {
    /// True for an alert about an OOM kill: a configured alertname, or `reason="OOMKilled"`.
    fn reports_a_kill(&self, alert: &Alert) -> bool {
        let named = |name: &str| {
            alert
                .labels
                .get(name)
                .map(|value| value.trim().to_ascii_lowercase())
        };
        named("alertname").is_some_and(|name| self.kill_alerts.contains(&name))
            || named("reason").as_deref() == Some("oomkilled")
    }
}

/// The kill an alert reports: its place from the bonk's fields (labels, already cut), its time
/// the alert's `startsAt` — the first evaluation that saw the kill, so at or after it.
fn alert_kill(bonk: &Bonk) -> Kill {
    let mut kill = Kill::new(Detector::Alert, bonk.fired_at.unwrap_or_else(Utc::now));
    kill.cluster = bonk.cluster.clone();
    kill.namespace = bonk.namespace.clone();
    kill.pod = bonk.pod.clone();
    kill.container = bonk.container.clone();
    kill.node = bonk.node.clone();
    kill
}

/// A stable stand-in for Alertmanager's fingerprint: the sorted labels, which is what
/// Alertmanager hashes too. Used only when a sender omits the fingerprint.
fn fingerprint_from_labels(labels: &BTreeMap<String, String>) -> String {
    let mut text = String::from("labels");
    for (name, value) in labels {
        text.push('\u{1f}');
        text.push_str(name);
        text.push('=');
        text.push_str(value);
    }
    text
}

/// "OOMKilled firing for container api in pod payments/api-7d9 (OOMKilled)".
fn generated_summary(alert: &Alert) -> String {
    let label = |name: &str| alert.labels.get(name).map(String::as_str);
    let mut text = format!("{} firing", label("alertname").unwrap_or("alert"));
    if let Some(container) = label("container") {
        text.push_str(&format!(" for container {container}"));
    }
    match (label("namespace"), label("pod")) {
        (Some(namespace), Some(pod)) => text.push_str(&format!(" in pod {namespace}/{pod}")),
        (None, Some(pod)) => text.push_str(&format!(" in pod {pod}")),
        (Some(namespace), None) => text.push_str(&format!(" in namespace {namespace}")),
        (None, None) => {}
    }
    if let Some(reason) = label("reason").filter(|r| Some(*r) != label("alertname")) {
        text.push_str(&format!(" ({reason})"));
    }
    text
}

/// Cuts a label or annotation to [`MAX_FIELD_LEN`] bytes on a character boundary, so a huge
/// annotation can never make a bonk exceed the broker's packet limit (which would drop the
/// connection for every other bonk in flight).
pub fn cut(value: &str) -> String {
    bonker_protocol::bonk::cut_to(value, MAX_FIELD_LEN).to_owned()
}

#[cfg(test)]
mod tests {
    use bonker_protocol::Prefix;
    use serde_json::json;

    use super::*;

    fn rules() -> BonkRules {
        BonkRules {
            topics: Topics::default(),
            default_namespace: Namespace::new("default").expect("valid"),
            cluster: Some(Cluster::new("prod-eu").expect("valid")),
            severity_overrides: HashMap::from([("oomkilled".to_owned(), Severity::Critical)]),
            kill_alerts: HashSet::from(["oomkilled".to_owned(), "nodeoomkill".to_owned()]),
        }
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-21T10:05:00Z")
            .expect("time")
            .with_timezone(&Utc)
    }

    fn alert(status: &str, labels: serde_json::Value) -> serde_json::Value {
        json!({
            "status": status,
            "labels": labels,
            "annotations": {},
            "startsAt": "2026-11-21T10:00:00.123456789Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus/graph",
            "fingerprint": format!("fp-{}", status),
        })
    }

    fn notification(alerts: Vec<serde_json::Value>) -> Notification {
        serde_json::from_value(json!({
            "version": "4",
            "groupKey": "{}:{alertname=\"OOMKilled\"}",
            "truncatedAlerts": 0,
            "status": "firing",
            "receiver": "bonker",
            "groupLabels": {"alertname": "OOMKilled"},
            "commonLabels": {},
            "commonAnnotations": {},
            "externalURL": "http://alertmanager:9093",
            "alerts": alerts,
        }))
        .expect("valid notification")
    }

    #[test]
    fn a_real_alertmanager_payload_maps_every_field() {
        let mut a = alert(
            "firing",
            json!({"alertname": "OOMKilled", "namespace": "payments", "pod": "api-7d9",
                   "container": "api", "reason": "OOMKilled", "severity": "warning",
                   "node": "node-1"}),
        );
        a["annotations"] = json!({"summary": "api was OOM killed", "description": "long"});
        let plan = rules().plan(&notification(vec![a]), now());
        assert_eq!((plan.firing, plan.resolved, plan.bonks.len()), (1, 0, 1));
        let planned = &plan.bonks[0];
        assert_eq!(planned.topic, "bonker/bonk/payments");
        assert_eq!(planned.fallback, None);
        let bonk = &planned.bonk;
        assert_eq!(bonk.source, Source::Alertmanager);
        // The override wins over the label.
        assert_eq!(bonk.severity, Severity::Critical);
        assert_eq!(bonk.namespace.as_deref(), Some("payments"));
        assert_eq!(bonk.pod.as_deref(), Some("api-7d9"));
        assert_eq!(bonk.container.as_deref(), Some("api"));
        assert_eq!(bonk.reason.as_deref(), Some("OOMKilled"));
        assert_eq!(bonk.node.as_deref(), Some("node-1"));
        assert_eq!(bonk.alertname.as_deref(), Some("OOMKilled"));
        assert_eq!(bonk.summary.as_deref(), Some("api was OOM killed"));
        assert_eq!(bonk.cluster.as_deref(), Some("prod-eu"));
        assert_eq!(
            bonk.fired_at.map(|t| t.to_rfc3339()),
            Some("2026-11-21T10:00:00.123456789+00:00".to_owned())
        );
        assert_eq!(bonk.sent_at, Some(now()));
        assert_eq!(
            bonk.id,
            BonkId::for_alert("fp-firing", "2026-11-21T10:00:00.123456789Z")
        );
    }

    #[test]
    fn kill_alerts_carry_the_kill_and_other_alerts_do_not() {
        let kill_of = |labels: serde_json::Value| {
            let plan = rules().plan(&notification(vec![alert("firing", labels)]), now());
            plan.bonks[0].bonk.kill.clone()
        };
        let kill = kill_of(json!({"alertname": "OOMKilled", "namespace": "payments",
                                  "pod": "api-7d9", "container": "api", "node": "node-1"}))
        .expect("OOMKilled reports a kill");
        assert_eq!(kill.by, Detector::Alert);
        assert_eq!(kill.at.to_rfc3339(), "2026-11-21T10:00:00.123456789+00:00");
        assert_eq!(kill.cluster.as_deref(), Some("prod-eu"));
        assert_eq!(
            (kill.namespace.as_deref(), kill.pod.as_deref()),
            (Some("payments"), Some("api-7d9"))
        );
        assert_eq!(
            (kill.container.as_deref(), kill.node.as_deref()),
            (Some("api"), Some("node-1"))
        );
        // Case does not matter, and any alert labelled with the OOMKilled reason reports a kill.
        assert!(kill_of(json!({"alertname": "NODEOOMKILL", "node": "node-1"})).is_some());
        assert!(kill_of(json!({"alertname": "Custom", "reason": "OOMKilled"})).is_some());
        assert!(kill_of(json!({"alertname": "ContainerMemoryNearLimit", "pod": "a"})).is_none());
        assert!(kill_of(json!({"alertname": "Custom", "reason": "Error"})).is_none());
    }

    #[test]
    fn every_firing_alert_bonks_and_resolved_ones_never_do() {
        let alerts = vec![
            alert("firing", json!({"alertname": "A", "namespace": "payments"})),
            alert(
                "resolved",
                json!({"alertname": "A", "namespace": "checkout"}),
            ),
            {
                let mut a = alert("firing", json!({"alertname": "A", "namespace": "checkout"}));
                a["fingerprint"] = json!("other");
                a
            },
        ];
        let plan = rules().plan(&notification(alerts), now());
        assert_eq!((plan.firing, plan.resolved), (2, 1));
        let topics: Vec<&str> = plan.bonks.iter().map(|b| b.topic.as_str()).collect();
        assert_eq!(topics, ["bonker/bonk/payments", "bonker/bonk/checkout"]);
    }

    #[test]
    fn invalid_or_missing_namespaces_go_to_the_default_topic_with_the_raw_label_kept() {
        for raw in ["a/#", "+", "bad\0ns", "Payments", "x y", &"n".repeat(64)] {
            let plan = rules().plan(
                &notification(vec![alert("firing", json!({"namespace": raw}))]),
                now(),
            );
            let planned = &plan.bonks[0];
            assert_eq!(planned.topic, "bonker/bonk/default", "{raw:?}");
            assert!(
                matches!(planned.fallback, Some(NamespaceFallback::Invalid(_))),
                "{raw:?}"
            );
            assert_eq!(planned.bonk.namespace.as_deref(), Some(raw));
        }
        let plan = rules().plan(&notification(vec![alert("firing", json!({}))]), now());
        assert_eq!(plan.bonks[0].topic, "bonker/bonk/default");
        assert_eq!(plan.bonks[0].fallback, Some(NamespaceFallback::Missing));
        assert_eq!(plan.bonks[0].bonk.namespace, None);
    }

    #[test]
    fn severity_from_label_with_overrides_matched_case_insensitively() {
        let severity = |labels: serde_json::Value| {
            rules()
                .plan(&notification(vec![alert("firing", labels)]), now())
                .bonks[0]
                .bonk
                .severity
        };
        assert_eq!(
            severity(json!({"severity": "critical"})),
            Severity::Critical
        );
        assert_eq!(severity(json!({"severity": "warning"})), Severity::Warning);
        assert_eq!(severity(json!({"severity": "page"})), Severity::Info);
        assert_eq!(severity(json!({})), Severity::Info);
        assert_eq!(
            severity(json!({"alertname": "oomkilled", "severity": "info"})),
            Severity::Critical
        );
        // bonker's own rules: severity none (pages nobody), the motion in the `bonk` label.
        assert_eq!(
            severity(json!({"severity": "none", "bonk": "warning"})),
            Severity::Warning
        );
        assert_eq!(
            severity(json!({"severity": "warning", "bonk": "critical"})),
            Severity::Critical
        );
        assert_eq!(
            severity(json!({"severity": "critical", "bonk": "nonsense"})),
            Severity::Critical,
            "an unknown bonk label leaves the severity label in charge"
        );
        assert_eq!(
            severity(json!({"alertname": "OOMKilled", "bonk": "info"})),
            Severity::Critical,
            "an override by alertname comes first"
        );
    }

    #[test]
    fn ids_are_stable_and_repeats_within_a_notification_bonk_once() {
        let a = alert("firing", json!({"namespace": "payments"}));
        let plan = rules().plan(&notification(vec![a.clone(), a.clone()]), now());
        assert_eq!((plan.bonks.len(), plan.repeated), (1, 1));
        let later = rules().plan(&notification(vec![a]), now() + chrono::Duration::hours(1));
        assert_eq!(later.bonks[0].bonk.id, plan.bonks[0].bonk.id);
    }

    #[test]
    fn missing_fingerprints_are_derived_from_sorted_labels() {
        let mut a = alert("firing", json!({"namespace": "payments", "pod": "x"}));
        a.as_object_mut().expect("object").remove("fingerprint");
        let mut b = alert("firing", json!({"pod": "x", "namespace": "payments"}));
        b["fingerprint"] = json!("");
        let mut c = alert("firing", json!({"pod": "y", "namespace": "payments"}));
        c.as_object_mut().expect("object").remove("fingerprint");
        let ids: Vec<BonkId> = [a, b, c]
            .into_iter()
            .map(|x| {
                rules().plan(&notification(vec![x]), now()).bonks[0]
                    .bonk
                    .id
                    .clone()
            })
            .collect();
        assert_eq!(ids[0], ids[1]);
        assert_ne!(ids[0], ids[2]);
    }

    #[test]
    fn summaries_fall_back_to_description_then_a_sentence() {
        let mut a = alert(
            "firing",
            json!({"alertname": "KubeContainerOOM", "namespace": "payments", "pod": "api-1",
                   "container": "api", "reason": "OOMKilled"}),
        );
        let summary = |a: &serde_json::Value| {
            rules().plan(&notification(vec![a.clone()]), now()).bonks[0]
                .bonk
                .summary
                .clone()
                .expect("summary")
        };
        assert_eq!(
            summary(&a),
            "KubeContainerOOM firing for container api in pod payments/api-1 (OOMKilled)"
        );
        a["annotations"] = json!({"description": "described"});
        assert_eq!(summary(&a), "described");
    }

    #[test]
    fn the_cluster_label_wins_over_the_configured_cluster_and_long_values_are_cut() {
        let long = "é".repeat(MAX_FIELD_LEN);
        let plan = rules().plan(
            &notification(vec![alert(
                "firing",
                json!({"cluster": "label-cluster", "pod": long}),
            )]),
            now(),
        );
        let bonk = &plan.bonks[0].bonk;
        assert_eq!(bonk.cluster.as_deref(), Some("label-cluster"));
        assert!(bonk.pod.as_ref().expect("pod").len() <= MAX_FIELD_LEN);
    }

    #[test]
    fn prefixes_with_several_levels_are_used() {
        let mut rules = rules();
        rules.topics = Topics::new(Prefix::new("bonker/prod-eu").expect("valid"));
        let plan = rules.plan(
            &notification(vec![alert("firing", json!({"namespace": "payments"}))]),
            now(),
        );
        assert_eq!(plan.bonks[0].topic, "bonker/prod-eu/bonk/payments");
    }

    #[test]
    fn wrong_shapes_are_reported_with_the_problem() {
        let error = |value: serde_json::Value| {
            serde_json::from_value::<Notification>(value)
                .expect_err("wrong shape")
                .to_string()
        };
        let message =
            error(json!({"alerts": [{"status": "burning", "startsAt": "2026-11-21T10:00:00Z"}]}));
        assert!(message.contains("burning"), "{message}");
        let message = error(json!({"receiver": "x"}));
        assert!(message.contains("alerts"), "{message}");
        let message = error(json!({"alerts": [{"status": "firing", "startsAt": "yesterday"}]}));
        assert!(message.contains("input"), "{message}");
    }
}
