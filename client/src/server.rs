//! The HTTP server loop of every bonker program that serves HTTP (the gateway, the watcher's
//! metrics): axum's router on hyper, with the limits a server on a shared network needs.
//!
//! `axum::serve` gives hyper no timer, so hyper's header read timeout never fires: a client that
//! sends half a request line — or nothing at all — holds its connection, task and file descriptor
//! forever (slowloris). Here:
//! - every connection has a header read timeout ([`HEADER_READ_TIMEOUT`]): headers must arrive
//!   complete, or the connection is closed;
//! - at most [`Limits::max_connections`] connections are served at once; past that, new ones wait
//!   in the kernel's accept queue until one closes, so a flood of sockets costs no task and no
//!   file descriptor of ours, and the header timeout frees the places idle ones took;
//! - body and whole-request limits are the router's business (the gateway's are in its `http`
//!   module: [`BODY_READ_TIMEOUT`] between chunks, a deadline per request).
//!
//! Shutdown is graceful: the listener stops accepting, requests in flight finish (each is bounded
//! by the publish timeout), idle keep-alive connections are closed.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

/// How long a client may take to send a request's headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a request body may pause between two chunks.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long shutdown waits for requests in flight.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// What one server allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once.
    pub max_connections: usize,
}

/// Serves `router` on `listener` until `shutdown` completes, then drains connections.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let places = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut warned_full = false;
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(true);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let place = match places.clone().try_acquire_owned() {
            Ok(place) => {
                warned_full = false;
                place
            }
            Err(_) => {
                if !std::mem::replace(&mut warned_full, true) {
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        "max_connections HTTP connections are open; new ones wait until one closes"
                    );
                }
                tokio::select! {
                    place = places.clone().acquire_owned() => match place {
                        Ok(place) => place,
                        Err(_) => break,
                    },
                    () = &mut shutdown => break,
                }
            }
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: log, breathe, keep serving.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(
            router
                .clone()
                .map_request(|request: Request<Incoming>| request.map(axum::body::Body::new)),
        );
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
            drop(place);
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still in flight after {SHUTDOWN_GRACE:?}; stopping anyway");
    }
    Ok(())
}

/// How long a health check waits for the program's answer.
pub const HEALTH_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// Asks a running bonker program, on its own HTTP port, whether it is healthy: `GET path` on
/// `listen` (an unspecified address, `0.0.0.0` or `::`, is asked on loopback) must answer 2xx
/// within [`HEALTH_CHECK_TIMEOUT`]. It is what `--health-check` runs, for container healthchecks
/// in images that have no shell and no curl (Compose's `healthcheck`, Docker's `HEALTHCHECK`).
pub async fn check_health(listen: std::net::SocketAddr, path: &str) -> Result<(), String> {
    let address = crate::local_address(listen);
    let ask = async {
        let stream = tokio::net::TcpStream::connect(address)
            .await
            .map_err(|e| format!("cannot connect to {address}: {e}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("{address}: {e}"))?;
        tokio::spawn(connection);
        let request = hyper::Request::get(path)
            .header(hyper::header::HOST, address.to_string())
            .body(axum::body::Body::empty())
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("{address}{path}: {e}"))?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!("{address}{path} answered {}", response.status()))
        }
    };
    tokio::time::timeout(HEALTH_CHECK_TIMEOUT, ask)
        .await
        .map_err(|_| format!("{address}{path}: no answer within {HEALTH_CHECK_TIMEOUT:?}"))?
}

/// `--health-check` of `program`: [`check_health`], its failure on stderr, its verdict as the exit
/// status (0 healthy, 1 not).
pub async fn run_health_check(
    program: &str,
    listen: std::net::SocketAddr,
    path: &str,
) -> std::process::ExitCode {
    match check_health(listen, path).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{program}: not healthy: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}
