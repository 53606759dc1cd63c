//! bonker's gateway: Alertmanager webhooks in, MQTT bonks out, acks and desk health tracked.
//!
//! It runs in the cluster (two replicas are normal) and is the only part of bonker that speaks
//! HTTP. A tour of the modules, in the order a webhook flows through them:
//! - [`config`]: flags, `gateway.toml`, `BONKER_…` variables → validated [`config::GatewayConfig`].
//! - [`http`]: the router ([`app`]), authentication ([`auth`]) and one error type ([`error`]).
//! - [`alertmanager`]: the webhook payload and the rules that turn each firing alert into a bonk.
//! - [`recall`]: what was already bonked — alert instances (re-sent notifications, HA pairs,
//!   other replicas) and kills (the watcher saw it first) — so each bonks once.
//! - [`mqtt`]: the single task that owns the broker connection, publishes with confirmed delivery
//!   and reconnects; [`fleet`] is what it learns about the desks; [`metrics`] what it counts.
//! - `page` and [`events`]: the fleet page at `/` and its live Server-Sent Events stream.
//!
//! [`run`] puts it together: the caller binds the listener (so tests can bind port 0) and says
//! when to stop.

pub mod alertmanager;
mod auth;
pub mod config;
mod error;
mod events;
pub mod fleet;
pub mod http;
mod metrics;
pub mod mqtt;
mod page;
mod recall;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use bonker_broker::{BrokerSettings, EmbeddedBroker};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::{Args, GatewayConfig, GatewaySettings};
pub use http::app;

use crate::alertmanager::BonkRules;
use crate::fleet::Fleet;
use crate::metrics::Metrics;
use crate::mqtt::Publisher;
use crate::recall::Recall;

/// Everything the HTTP handlers share. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    settings: GatewayConfig,
    rules: BonkRules,
    publisher: Publisher,
    recall: Arc<Mutex<Recall>>,
    fleet: Arc<Mutex<Fleet>>,
    metrics: Arc<Metrics>,
    connected: watch::Receiver<bool>,
    /// One permit per event stream that may be open (`max_event_streams`).
    stream_places: Arc<Semaphore>,
    /// Ends every event stream (shutdown: a stream never ends by itself).
    stop_streams: CancellationToken,
}

impl AppState {
    /// Builds the state and spawns the MQTT task, which connects in the background and runs until
    /// `stop_mqtt` is cancelled. Must be called inside a Tokio runtime.
    pub fn start(
        settings: GatewayConfig,
        stop_mqtt: CancellationToken,
    ) -> Result<(AppState, JoinHandle<()>), bonker_client::mqtt::SettingsError> {
        let fleet = Arc::new(Mutex::new(Fleet::default()));
        let metrics = Arc::new(Metrics::new());
        let dedupe = &settings.dedupe;
        let recall = Arc::new(Mutex::new(Recall::new(
            dedupe.max_entries,
            std::time::Duration::from_secs(dedupe.max_age_s),
            std::time::Duration::from_secs(dedupe.kill_window_s),
            dedupe.max_kills,
        )));
        let connection = mqtt::connect(
            &settings,
            &config::default_client_id(),
            fleet.clone(),
            recall.clone(),
            metrics.clone(),
        )?;
        let task = tokio::spawn(connection.task.run(stop_mqtt));
        let rules = BonkRules {
            topics: settings.topics.clone(),
            default_namespace: settings.default_namespace.clone(),
            cluster: settings.cluster.clone(),
            severity_overrides: settings.severity_overrides.clone(),
            kill_alerts: dedupe
                .kill_alerts
                .iter()
                .map(|name| name.trim().to_ascii_lowercase())
                .collect(),
        };
        let stream_places = Arc::new(Semaphore::new(settings.max_event_streams));
        let state = AppState {
            shared: Arc::new(Shared {
                stream_places,
                stop_streams: CancellationToken::new(),
                settings,
                rules,
                publisher: connection.publisher,
                recall,
                fleet,
                metrics,
                connected: connection.connected,
            }),
        };
        Ok((state, task))
    }

    /// The validated settings.
    pub fn settings(&self) -> &GatewayConfig {
        &self.shared.settings
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// True while connected to the MQTT broker.
    pub fn is_connected(&self) -> bool {
        *self.shared.connected.borrow()
    }

    /// Completes once connected to the MQTT broker (tests, start-up ordering).
    pub async fn connected(&self) {
        let mut connected = self.shared.connected.clone();
        // An error means the MQTT task is gone; then there is nothing to wait for.
        let _ = connected.wait_for(|c| *c).await;
    }

    fn rules(&self) -> &BonkRules {
        &self.shared.rules
    }

    fn publisher(&self) -> &Publisher {
        &self.shared.publisher
    }

    fn fleet(&self) -> &Mutex<Fleet> {
        &self.shared.fleet
    }

    fn fleet_handle(&self) -> Arc<Mutex<Fleet>> {
        self.shared.fleet.clone()
    }

    fn stream_places(&self) -> Arc<Semaphore> {
        self.shared.stream_places.clone()
    }

    /// Cancelled at shutdown, which ends every event stream.
    pub fn stop_streams(&self) -> &CancellationToken {
        &self.shared.stop_streams
    }

    fn recall(&self) -> MutexGuard<'_, Recall> {
        recall::lock(&self.shared.recall)
    }
}

/// Serves the gateway on `listener` until `shutdown` completes: then stops accepting, lets
/// in-flight requests finish (each is bounded by the publish timeout), and disconnects from the
/// broker cleanly.
pub async fn run(
    listener: TcpListener,
    settings: GatewayConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let stop_mqtt = CancellationToken::new();
    let (state, mqtt_task) = AppState::start(settings, stop_mqtt.clone())?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "bonker-gateway listening on http://{addr}");
    let limits = bonker_client::server::Limits {
        max_connections: http::MAX_CONNECTIONS,
    };
    let stop_streams = state.stop_streams().clone();
    let shutdown = async move {
        shutdown.await;
        // Open fleet pages would otherwise keep their connections, and the drain, going forever.
        stop_streams.cancel();
    };
    let served = bonker_client::server::serve(listener, app(state), limits, shutdown).await;
    tracing::info!("HTTP server stopped; disconnecting from the MQTT broker");
    stop_mqtt.cancel();
    mqtt_task.await?;
    served?;
    Ok(())
}

/// Starts the bonker MQTT broker inside this process, listening on `listen`, and returns once it
/// accepts connections. It serves until the process exits.
pub async fn start_embedded_broker(listen: SocketAddr) -> anyhow::Result<EmbeddedBroker> {
    let settings = BrokerSettings {
        listen,
        ..BrokerSettings::default()
    };
    let broker = tokio::task::spawn_blocking(move || EmbeddedBroker::start(settings)).await??;
    Ok(broker)
}
