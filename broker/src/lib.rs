//! bonker's embedded MQTT broker: rumqttd, configured for the fleet and made embeddable.
//!
//! A small office or a home needs no separate broker: `bonker-broker` (or `bonker-gateway
//! --embedded-broker`, or `bonker demo`) runs one. Production fleets may use mosquitto or EMQX
//! instead; `docs/brokers.md` says when and why.
//!
//! What this crate adds on top of rumqttd, and why:
//! - **Settings with defaults that work without a file** ([`BrokerSettings`]): rumqttd's own config
//!   has no usable defaults (its `max_connections` defaults to 0).
//! - **A start that reports readiness** ([`EmbeddedBroker::start`]): rumqttd's `start()` blocks
//!   forever and cannot report a port-0 bind, so the broker runs on its own OS thread, port 0 is
//!   resolved to a reserved free port first, and `start` returns once every listener accepts.
//! - **TCP_NODELAY on every connection**: rumqttd never sets it, so each MQTT hop waits ~40 ms for
//!   a delayed ACK. Accepted sockets inherit the option from their listening socket on Linux, so
//!   once the listeners are up the broker sets it there (see [`nodelay`]).
//!
//! What rumqttd cannot do, documented rather than patched: stopping in-process (run the
//! `bonker-broker` binary when a broker must be stopped), persisting retained messages or sessions
//! across restarts, and per-topic ACLs.

pub mod nodelay;
pub mod settings;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

pub use settings::{AuthSettings, BrokerSettings, TlsSettings};

/// How long [`EmbeddedBroker::start`] waits for the listeners to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The settings are wrong; the message says which one and how.
    #[error("invalid broker settings: {0}")]
    Settings(String),
    /// A file named in the settings could not be read.
    #[error("cannot read {what} {path:?}: {source}")]
    File {
        /// Which setting.
        what: &'static str,
        /// The path.
        path: std::path::PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A listener did not come up.
    #[error("broker listener {addr} did not start within {timeout:?}: {reason}")]
    NotReady {
        /// The address.
        addr: SocketAddr,
        /// How long we waited.
        timeout: Duration,
        /// The last error seen.
        reason: String,
    },
    /// The OS refused something (reserving a port, spawning the thread).
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// What a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    /// MQTT 3.1.1 over TCP.
    V4,
    /// MQTT 5 over TCP.
    V5,
    /// MQTT 3.1.1 over TLS.
    V4Tls,
}

/// One listener of a running broker, with its real address (port 0 already resolved).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listener {
    /// What it speaks.
    pub kind: ListenerKind,
    /// Where it listens.
    pub addr: SocketAddr,
}

/// A running rumqttd broker inside this process. It runs until the process exits: rumqttd has no
/// shutdown, so dropping this handle leaves it serving.
#[derive(Debug)]
pub struct EmbeddedBroker {
    listeners: Vec<Listener>,
}

impl EmbeddedBroker {
    /// Starts the broker on its own thread and returns once every listener accepts connections.
    pub fn start(settings: BrokerSettings) -> Result<EmbeddedBroker, BrokerError> {
        let settings = settings.resolve_free_ports()?;
        let config = settings.to_rumqttd()?;
        let listeners = settings.listeners();
        // rumqttd binds on its own thread and only logs a failed bind; binding here first turns
        // "address in use" into an error the caller sees at once.
        for listener in &listeners {
            TcpListener::bind(listener.addr).map_err(|error| {
                BrokerError::Settings(format!("cannot listen on {}: {error}", listener.addr))
            })?;
        }
        std::thread::Builder::new()
            .name("bonker-broker".to_owned())
            .spawn(move || {
                let mut broker = rumqttd::Broker::new(config);
                if let Err(error) = broker.start() {
                    tracing::error!(%error, "embedded broker stopped");
                }
            })?;
        wait_until_listening(&listeners.iter().map(|l| l.addr).collect::<Vec<_>>())?;
        for listener in &listeners {
            tracing::info!(kind = ?listener.kind, addr = %listener.addr, "broker listening");
        }
        Ok(EmbeddedBroker { listeners })
    }

    /// Every listener with its real address.
    pub fn listeners(&self) -> &[Listener] {
        &self.listeners
    }

    /// The MQTT 3.1.1 listener's address, as a client on this machine would reach it.
    pub fn mqtt_addr(&self) -> SocketAddr {
        let addr = self
            .listeners
            .iter()
            .find(|l| l.kind == ListenerKind::V4)
            .map(|l| l.addr)
            .unwrap_or_else(|| self.listeners[0].addr);
        reachable(addr)
    }

    /// `mqtt://host:port` for the MQTT 3.1.1 listener.
    pub fn url(&self) -> String {
        let addr = self.mqtt_addr();
        format!("mqtt://{addr}")
    }
}

/// The address a local client should dial for a listener bound to `addr` (an unspecified address
/// becomes loopback).
pub fn reachable(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        let ip = match addr.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        };
        SocketAddr::new(ip, addr.port())
    } else {
        addr
    }
}

/// Reserves a free TCP port on `ip` by binding port 0 and releasing it. Another process could take
/// it in between; for tests and the demo on one machine that risk is accepted.
pub fn reserve_port(ip: IpAddr) -> std::io::Result<u16> {
    let listener = TcpListener::bind(SocketAddr::new(ip, 0))?;
    listener.local_addr().map(|a| a.port())
}

/// Waits until rumqttd listens on every address, switching TCP_NODELAY on for each listener as it
/// appears (see [`nodelay`]). Where the listening sockets cannot be inspected, falls back to
/// connecting, and warns that latency will suffer.
fn wait_until_listening(addrs: &[SocketAddr]) -> Result<(), BrokerError> {
    let started = Instant::now();
    let mut delay = Duration::from_millis(1);
    let mut pending = addrs.to_vec();
    loop {
        match nodelay::set_on_listeners(&pending) {
            Ok(found) => pending.retain(|addr| !found.contains(addr)),
            Err(error) => {
                tracing::warn!(
                    %error,
                    "cannot set TCP_NODELAY on the broker's listeners; each MQTT hop may wait ~40 ms"
                );
                pending.retain(|addr| TcpStream::connect(reachable(*addr)).is_err());
            }
        }
        let Some(addr) = pending.first() else {
            return Ok(());
        };
        if started.elapsed() >= READY_TIMEOUT {
            return Err(BrokerError::NotReady {
                addr: *addr,
                timeout: READY_TIMEOUT,
                reason: "not listening (is the port in use?)".to_owned(),
            });
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(50));
    }
}
