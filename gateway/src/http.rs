//! The HTTP API: routes, authentication and handlers.
//!
//! | route                 | auth | what                                                     |
//! |-----------------------|------|----------------------------------------------------------|
//! | `POST /webhook`       | yes  | Alertmanager `webhook_config`: one bonk per firing alert |
//! | `POST /bonk`          | yes  | a manual bonk (JSON body or query string)                |
//! | `GET /api/desks`      | yes  | the fleet view                                           |
//! | `GET /api/bonks/{id}` | yes  | which desks acked a bonk, how and how fast               |
//! | `GET /api/events`     | yes  | the fleet page's live stream (Server-Sent Events)        |
//! | `GET /`               | yes  | the fleet page (and its `/app.js`, `/app.css`)           |
//! | `GET /healthz`        | no   | the process is alive                                     |
//! | `GET /readyz`         | no   | connected to the MQTT broker                             |
//! | `GET /metrics`        | no   | Prometheus (OpenMetrics text)                            |
//!
//! Authenticated posts that a browser sends for another site's page are refused (403) before the
//! credentials are looked at (`sent_for_another_site`).
//!
//! A webhook is answered 200 only once the broker has acknowledged (QoS 1 PUBACK) every new bonk
//! of the notification; otherwise 503 within `publish_timeout_ms`, and Alertmanager retries.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bonker_protocol::bonk::MAX_FIELD_LEN;
use bonker_protocol::{Bonk, BonkId, DeskId, Namespace, Severity, Source};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tower_http::timeout::{RequestBodyTimeoutLayer, TimeoutLayer};
use tracing::Instrument;

use crate::AppState;
use crate::alertmanager::{NamespaceFallback, Notification, Plan, PlannedBonk};
use crate::config::GatewayConfig;
use crate::error::ApiError;
use crate::fleet::Target;
use crate::metrics::Metrics;
use crate::mqtt::{OutgoingBonk, PublishError, lock};
use crate::recall::Verdict;

/// The content type of `GET /metrics`.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// HTTP connections served at once: Alertmanager replicas, scrapers, the CLI and browsers need a
/// few dozen; the cap bounds what a flood of sockets costs (the rest wait in the accept queue).
pub(crate) const MAX_CONNECTIONS: usize = 1024;

/// The gateway's router. Tests call `app(state).oneshot(request)`; [`crate::run`] serves it.
pub fn app(state: AppState) -> Router {
    let max_body_bytes = state.settings().max_body_bytes;
    // A request is answered within the publish timeout once its body is in; bodies that pause
    // are cut by the body timeout, and this deadline caps one that trickles in forever.
    let request_deadline =
        state.settings().publish_timeout + bonker_client::server::BODY_READ_TIMEOUT * 3;
    let authenticated = Router::new()
        .route("/webhook", post(webhook))
        .route("/bonk", post(manual_bonk))
        .route("/api/desks", get(desks))
        .route("/api/bonks/{id}", get(bonk_status))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_auth))
        .layer(RequestBodyTimeoutLayer::new(
            bonker_client::server::BODY_READ_TIMEOUT,
        ))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            request_deadline,
        ));
    // The page's routes have no body to wait for, and its stream lasts as long as the page.
    let page = Router::new()
        .route("/", get(crate::page::index))
        .route("/app.js", get(crate::page::script))
        .route("/app.css", get(crate::page::style))
        .route("/api/events", get(crate::page::events))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_auth));
    Router::new()
        .merge(authenticated)
        .merge(page)
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}

/// The answer to a webhook.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WebhookReply {
    /// Always `ok`.
    pub status: String,
    /// Alerts in the notification.
    pub alerts: usize,
    /// Firing alerts.
    pub firing: usize,
    /// Resolved alerts (never bonked).
    pub resolved: usize,
    /// Bonks the broker accepted now.
    pub published: usize,
    /// Firing alerts that had already bonked (dedupe window or repeated in this notification).
    pub duplicates: usize,
    /// Firing alerts not published because their kill had already bonked (the watcher's bonk,
    /// or another rule's alert): see each bonk's `merged_into`.
    pub merged: usize,
    /// Every distinct firing alert's bonk.
    pub bonks: Vec<BonkRef>,
}

/// A bonk named in a reply.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BonkRef {
    /// The bonk id (look it up at `/api/bonks/{id}`).
    pub id: String,
    /// The topic it went to.
    pub topic: String,
    /// True when it had bonked before and was not published again.
    pub duplicate: bool,
    /// When its kill had already bonked as another bonk: that bonk's id (look it up at
    /// `/api/bonks/{id}` for the desks' acks). Not published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged_into: Option<String>,
}

/// The answer to a manual bonk.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManualBonkReply {
    /// Always `ok`.
    pub status: String,
    /// The bonk id.
    pub id: String,
    /// The topic it went to.
    pub topic: String,
}

async fn require_auth(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if request.method() == Method::POST && sent_for_another_site(request.headers()) {
        let path = request.uri().path();
        match path {
            "/webhook" => state.metrics().webhook("forbidden"),
            "/bonk" => state.metrics().manual_bonk("forbidden"),
            _ => {}
        }
        tracing::info!(
            path,
            "refused a request a browser sent for another site's page"
        );
        return ApiError::Forbidden(
            "a browser sent this request for another site's page (Sec-Fetch-Site); bonk from \
             the fleet page itself, or from a client that is not a browser"
                .to_owned(),
        )
        .into_response();
    }
    let credentials = &state.settings().credentials;
    match credentials.check(request.headers()) {
        Ok(()) => next.run(request).await,
        Err(failure) => {
            let path = request.uri().path();
            match path {
                "/webhook" => state.metrics().webhook("unauthorized"),
                "/bonk" => state.metrics().manual_bonk("unauthorized"),
                _ => {}
            }
            tracing::info!(path, reason = ?failure, "refused a request without valid credentials");
            ApiError::Unauthorized {
                challenges: credentials.challenges(),
            }
            .into_response()
        }
    }
}

async fn webhook(
    State(state): State<AppState>,
    body: Result<Json<Notification>, JsonRejection>,
) -> Result<Json<WebhookReply>, ApiError> {
    let result = match body {
        Ok(Json(notification)) => {
            let span = tracing::info_span!(
                "webhook",
                receiver = %notification.receiver,
                group_key = %notification.group_key,
                alerts = notification.alerts.len(),
                status = %notification.status,
            );
            deliver(&state, notification).instrument(span).await
        }
        Err(rejection) => {
            let error = ApiError::from(rejection);
            tracing::info!(%error, "rejected a webhook");
            Err(error)
        }
    };
    state.metrics().webhook(match &result {
        Ok(_) => "ok",
        Err(error) => error.outcome(),
    });
    result.map(Json)
}

/// Publishes the bonks of one notification and reports what happened.
async fn deliver(state: &AppState, notification: Notification) -> Result<WebhookReply, ApiError> {
    let plan = state.rules().plan(&notification, Utc::now());
    received(state.metrics(), &notification, &plan);
    let now = Instant::now();
    let verdicts: Vec<Verdict> = {
        let mut recall = state.recall();
        plan.bonks
            .iter()
            .map(|planned| recall.judge(&planned.bonk, now))
            .collect()
    };
    let merged_into = record_merges(state, &plan, &verdicts, now);
    let fresh: Vec<&PlannedBonk> = plan
        .bonks
        .iter()
        .zip(&verdicts)
        .filter(|(_, verdict)| **verdict == Verdict::Fresh)
        .map(|(planned, _)| planned)
        .collect();
    let duplicates = count_duplicates(state.metrics(), &plan, &verdicts);
    let merged = verdicts
        .iter()
        .filter(|verdict| matches!(verdict, Verdict::Merged(_)))
        .count();
    publish_fresh(state, &fresh).await?;
    Ok(WebhookReply {
        status: "ok".to_owned(),
        alerts: notification.alerts.len(),
        firing: plan.firing,
        resolved: plan.resolved,
        published: fresh.len(),
        duplicates,
        merged,
        bonks: plan
            .bonks
            .iter()
            .zip(&verdicts)
            .zip(merged_into)
            .map(|((planned, verdict), merged_into)| BonkRef {
                id: planned.bonk.id.to_string(),
                topic: planned.topic.clone(),
                duplicate: *verdict == Verdict::Duplicate,
                merged_into: merged_into.map(|id| id.to_string()),
            })
            .collect(),
    })
}

/// Counts and logs what a notification brought, and each alert sent to the default namespace.
fn received(metrics: &Metrics, notification: &Notification, plan: &Plan) {
    metrics.alerts_received(plan.firing, plan.resolved);
    tracing::info!(
        firing = plan.firing,
        resolved = plan.resolved,
        "webhook received"
    );
    if notification.truncated_alerts > 0 {
        tracing::warn!(
            truncated = notification.truncated_alerts,
            "Alertmanager left alerts out of this notification (max_alerts); they do not bonk"
        );
    }
    for planned in &plan.bonks {
        match &planned.fallback {
            Some(NamespaceFallback::Invalid(error)) => {
                metrics.invalid_namespace_labels.inc();
                tracing::warn!(
                    bonk_id = %planned.bonk.id,
                    namespace = %planned.topic_namespace,
                    %error,
                    "the alert's namespace label is not a valid topic level; bonking the default \
                     namespace"
                );
            }
            Some(NamespaceFallback::Missing) => tracing::debug!(
                bonk_id = %planned.bonk.id,
                namespace = %planned.topic_namespace,
                "the alert has no namespace label; bonking the default namespace"
            ),
            None => {}
        }
    }
}

/// Records each alert merged into an earlier bonk of its kill; for each alert, the bonk it was
/// merged into (a duplicate's, from the fleet view).
fn record_merges(
    state: &AppState,
    plan: &Plan,
    verdicts: &[Verdict],
    now: Instant,
) -> Vec<Option<BonkId>> {
    let mut fleet = lock(state.fleet());
    let mut recall = state.recall();
    plan.bonks
        .iter()
        .zip(verdicts)
        .map(|(planned, verdict)| match verdict {
            Verdict::Fresh => None,
            Verdict::Duplicate => fleet.merged_into(&planned.bonk.id).cloned(),
            Verdict::Merged(earlier) => {
                fleet.record_merged_alert(
                    &planned.bonk,
                    Target::Namespace(planned.topic_namespace.to_string()),
                    earlier.id.clone(),
                );
                recall.merged(&planned.bonk, now);
                state.metrics().alert_merged(earlier.by);
                tracing::info!(
                    bonk_id = %planned.bonk.id,
                    merged_into = %earlier.id,
                    first_seen_by = earlier.by.as_str(),
                    namespace = %planned.topic_namespace,
                    alertname = planned.bonk.alertname.as_deref().unwrap_or(""),
                    pod = planned.bonk.pod.as_deref().unwrap_or(""),
                    "this kill already bonked; merged the alert into that bonk"
                );
                Some(earlier.id.clone())
            }
        })
        .collect()
}

/// Alerts already bonked (and repeats within the notification): counted and logged.
fn count_duplicates(metrics: &Metrics, plan: &Plan, verdicts: &[Verdict]) -> usize {
    let mut duplicates = plan.repeated;
    for (planned, _) in plan
        .bonks
        .iter()
        .zip(verdicts)
        .filter(|(_, verdict)| **verdict == Verdict::Duplicate)
    {
        duplicates += 1;
        tracing::info!(
            bonk_id = %planned.bonk.id,
            namespace = %planned.topic_namespace,
            "already bonked for this alert; not bonking again"
        );
    }
    metrics.dedupe_hits.inc_by(duplicates as u64);
    duplicates
}

/// Publishes the fresh bonks and waits for the broker; 503 unless it accepted every one.
async fn publish_fresh(state: &AppState, fresh: &[&PlannedBonk]) -> Result<(), ApiError> {
    let metrics = state.metrics();
    let outgoing = fresh
        .iter()
        .map(|planned| OutgoingBonk {
            topic: planned.topic.clone(),
            bonk: planned.bonk.clone(),
        })
        .collect();
    let results = state.publisher().publish_all(outgoing).await;
    let mut failures: Vec<PublishError> = Vec::new();
    let mut recall = state.recall();
    let accepted = Instant::now();
    for (planned, result) in fresh.iter().zip(&results) {
        let bonk = &planned.bonk;
        match result {
            Ok(()) => {
                recall.observe(bonk, accepted);
                metrics.set_kills_remembered(recall.len().1);
                metrics.bonk_published(
                    planned.topic_namespace.as_str(),
                    bonk.severity,
                    Source::Alertmanager,
                );
                tracing::info!(
                    bonk_id = %bonk.id,
                    namespace = %planned.topic_namespace,
                    severity = %bonk.severity,
                    alertname = bonk.alertname.as_deref().unwrap_or(""),
                    pod = bonk.pod.as_deref().unwrap_or(""),
                    "bonk published"
                );
            }
            Err(error) => {
                failures.push(*error);
                metrics.publish_failed(*error);
                tracing::warn!(
                    bonk_id = %bonk.id,
                    namespace = %planned.topic_namespace,
                    %error,
                    "bonk not accepted by the MQTT broker"
                );
            }
        }
    }
    match failures.first() {
        Some(first) => Err(ApiError::Unavailable(format!(
            "{} of {} bonks were not accepted by the MQTT broker: {first}; retry later",
            failures.len(),
            fresh.len()
        ))),
        None => Ok(()),
    }
}

/// A manual bonk request from the query string and the body (the body wins; an empty body is
/// none).
fn read_manual_bonk(
    headers: &HeaderMap,
    query: Result<Query<ManualBonkRequest>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<ManualBonkRequest, ApiError> {
    let Query(from_query) = query?;
    let body = body?;
    let from_body = if body.iter().all(u8::is_ascii_whitespace) {
        ManualBonkRequest::default()
    } else if is_json(headers) {
        Json::<ManualBonkRequest>::from_bytes(&body)?.0
    } else {
        return Err(ApiError::UnsupportedMediaType(
            "send a JSON body with `Content-Type: application/json`, query parameters, or an \
             empty body"
                .to_owned(),
        ));
    };
    Ok(from_body.or(from_query))
}

/// A manual bonk request, from the query string and/or a JSON body (the body wins).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ManualBonkRequest {
    namespace: Option<String>,
    desk: Option<String>,
    severity: Option<String>,
    message: Option<String>,
}

impl ManualBonkRequest {
    fn or(self, fallback: ManualBonkRequest) -> ManualBonkRequest {
        ManualBonkRequest {
            namespace: self.namespace.or(fallback.namespace),
            desk: self.desk.or(fallback.desk),
            severity: self.severity.or(fallback.severity),
            message: self.message.or(fallback.message),
        }
    }

    /// The bonk this request asks for and where it goes: (topic, namespace, bonk), or what is
    /// wrong with the request.
    fn bonk(
        &self,
        settings: &GatewayConfig,
    ) -> Result<(String, Option<Namespace>, Bonk), ApiError> {
        let severity = match &self.severity {
            Some(word) => Severity::parse_word(word).ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "severity: unknown severity {word:?}; expected critical, warning or info"
                ))
            })?,
            None => Severity::default(),
        };
        if self
            .message
            .as_ref()
            .is_some_and(|message| message.len() > MAX_FIELD_LEN)
        {
            return Err(ApiError::BadRequest(format!(
                "message: longer than {MAX_FIELD_LEN} bytes"
            )));
        }
        let topics = &settings.topics;
        let (topic, namespace) = match (&self.namespace, &self.desk) {
            (Some(_), Some(_)) => {
                return Err(ApiError::BadRequest(
                    "give namespace or desk, not both".to_owned(),
                ));
            }
            (None, Some(desk)) => {
                let desk = DeskId::new(desk.as_str())
                    .map_err(|e| ApiError::BadRequest(format!("desk: {e}")))?;
                (topics.desk_bonk(&desk), None)
            }
            (Some(namespace), None) => {
                let namespace = Namespace::new(namespace.as_str())
                    .map_err(|e| ApiError::BadRequest(format!("namespace: {e}")))?;
                (topics.namespace_bonk(&namespace), Some(namespace))
            }
            (None, None) => (
                topics.namespace_bonk(&settings.default_namespace),
                Some(settings.default_namespace.clone()),
            ),
        };
        let mut bonk = Bonk::new(Source::Http, severity);
        bonk.namespace = namespace.as_ref().map(|n| n.to_string());
        bonk.summary = self.message.clone();
        bonk.cluster = settings.cluster.as_ref().map(|c| c.to_string());
        Ok((topic, namespace, bonk))
    }
}

async fn manual_bonk(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<ManualBonkRequest>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ManualBonkReply>, ApiError> {
    let result = manual_bonk_inner(&state, &headers, query, body).await;
    state.metrics().manual_bonk(match &result {
        Ok(_) => "ok",
        Err(error) => error.outcome(),
    });
    if let Err(error) = &result {
        tracing::info!(%error, "rejected a manual bonk");
    }
    result.map(Json)
}

async fn manual_bonk_inner(
    state: &AppState,
    headers: &HeaderMap,
    query: Result<Query<ManualBonkRequest>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<ManualBonkReply, ApiError> {
    let request = read_manual_bonk(headers, query, body)?;
    let (topic, namespace, bonk) = request.bonk(state.settings())?;
    let severity = bonk.severity;
    let id = bonk.id.clone();
    let span = tracing::info_span!("manual_bonk", bonk_id = %id, topic = %topic);
    let results = state
        .publisher()
        .publish_all(vec![OutgoingBonk {
            topic: topic.clone(),
            bonk,
        }])
        .instrument(span.clone())
        .await;
    let _entered = span.enter();
    match results.first() {
        Some(Ok(())) => {
            state.metrics().bonk_published(
                namespace.as_ref().map_or("", |n| n.as_str()),
                severity,
                Source::Http,
            );
            tracing::info!(%severity, "manual bonk published");
            Ok(ManualBonkReply {
                status: "ok".to_owned(),
                id: id.to_string(),
                topic,
            })
        }
        Some(Err(error)) => {
            state.metrics().publish_failed(*error);
            tracing::warn!(%error, "manual bonk not accepted by the MQTT broker");
            Err(ApiError::Unavailable(format!(
                "the bonk was not accepted by the MQTT broker: {error}; retry later"
            )))
        }
        None => Err(ApiError::Unavailable(
            "the bonk was not published".to_owned(),
        )),
    }
}

/// True when a browser says it sends the request for a page of another origin. A browser that
/// holds basic auth credentials for the gateway sends them with any site's form posts; the fleet
/// page's own requests are `same-origin`, and clients that are not browsers send no such header.
/// Checked on the header browsers set themselves (not `Origin` against `Host`), so it holds behind
/// a reverse proxy that rewrites `Host`.
fn sent_for_another_site(headers: &HeaderMap) -> bool {
    headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|site| !matches!(site.trim(), "same-origin" | "none"))
}

/// True for `application/json` and `application/<something>+json`.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

async fn desks(State(state): State<AppState>) -> Json<Vec<crate::fleet::DeskView>> {
    Json(lock(state.fleet()).desk_views())
}

async fn bonk_status(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<crate::fleet::BonkView>, ApiError> {
    let Path(raw) = id.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let unknown = || {
        ApiError::NotFound(format!(
            "no bonk with id {raw:?} is tracked (this gateway remembers the last {} bonks it \
             published or saw acked)",
            crate::fleet::MAX_TRACKED_BONKS
        ))
    };
    let id = BonkId::from_received(&raw).ok_or_else(unknown)?;
    lock(state.fleet())
        .bonk_view(&id)
        .map(Json)
        .ok_or_else(unknown)
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

async fn readyz(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    if state.is_connected() {
        Ok(Json(json!({ "status": "ready", "mqtt": "connected" })))
    } else {
        Err(ApiError::Unavailable(
            "not connected to the MQTT broker".to_owned(),
        ))
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)],
        state.metrics().encode(),
    )
        .into_response()
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::NotFound(format!("no route for {method} {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed(format!("{method} is not allowed on {}", uri.path()))
}
