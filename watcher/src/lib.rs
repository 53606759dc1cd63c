//! `bonker-watcher`: sees every OOM kill on its node in the kernel itself and bonks within a
//! second — including kills of child processes that never restart a container, which alerting on
//! kube-state-metrics cannot see at all.
//!
//! A tour, in the order a kill travels:
//! - [`kmsg`]: follows `/dev/kmsg` record by record and keeps a resume point (boot id + sequence
//!   number) so a restart never reports a kill twice.
//! - [`parser`]: understands the kernel's OOM report lines from 3.10 to 6.x and assembles them
//!   into kills.
//! - [`cgroup`]: reads the memory cgroups' own OOM-kill counters and matches them against the
//!   kernel log, so a kill whose line was lost, rate-limited or unreadable is still reported.
//! - [`identity`]: reads pod UID, container id, runtime and QoS class out of a cgroup path, for
//!   every layout the kubelet uses.
//! - [`kube`]: turns pod UID and container id into namespace, pod and container names.
//! - [`limit`]: which memory limit fired — the container's, the pod's, the node's.
//! - [`watcher`]: the loop that owns all of it and decides what to report.
//! - [`publish`]: hands bonks to MQTT; [`metrics`]: `/metrics` and `/healthz`.
//! - [`config`]: flags, environment and TOML.
//!
//! `docs/watcher.md` says when to run it and what it needs.

pub mod cgroup;
mod config;
pub mod identity;
pub mod kmsg;
mod kube;
pub mod limit;
pub mod metrics;
pub mod parser;
mod publish;
mod watcher;

use std::future::Future;

use tokio_util::sync::CancellationToken;

pub use config::{Args, WatcherConfig, WatcherSettings};
pub use metrics::Metrics;
pub use watcher::Watcher;

/// Runs the watcher and its HTTP server on `listener` until `shutdown` completes.
///
/// The caller binds the listener, so tests can bind port 0.
pub async fn run(
    config: WatcherConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let metrics = Metrics::new();
    let watcher = Watcher::new(config, metrics.clone())?;
    let stop = CancellationToken::new();
    let stop_on_signal = stop.clone();
    tokio::spawn(async move {
        shutdown.await;
        stop_on_signal.cancel();
    });
    let http_stop = stop.clone();
    let http = tokio::spawn(async move {
        let limits = bonker_client::server::Limits {
            max_connections: metrics::MAX_CONNECTIONS,
        };
        bonker_client::server::serve(listener, metrics::router(metrics), limits, async move {
            http_stop.cancelled().await
        })
        .await
    });
    let result = watcher.run(stop.clone()).await;
    stop.cancel();
    match http.await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::error!(%error, "the HTTP server failed"),
        Err(error) => tracing::error!(%error, "the HTTP server task failed"),
    }
    result
}
