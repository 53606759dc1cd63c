//! bonker's embedded MQTT broker: rumqttd, configured for the fleet, behind a front door of its
//! own, and embeddable.
//!
//! A small office or a home needs no separate broker: `bonker-broker` (or `bonker-gateway
//! --embedded-broker`, or `bonker demo`) runs one. Production fleets may use mosquitto or EMQX
//! instead; `docs/brokers.md` says when and why.
//!
//! What this crate adds on top of rumqttd, and why:
//! - **Settings with defaults that work without a file** ([`BrokerSettings`]): rumqttd's own config
//!   has no usable defaults (its `max_connections` defaults to 0).
//! - **A front door** (`front`): clients never reach rumqttd directly. rumqttd listens on
//!   loopback ports only; every public listener is this crate's, and each connection is one task
//!   that finishes the TLS handshake (`tls`) and the CONNECT within deadlines, so idle or slow
//!   clients cannot keep others out (rumqttd handshakes TLS in its accept loop, with no
//!   deadline). The front door also reads what clients ask the broker to remember (`mqtt`) and
//!   keeps it within limits (`limits`): rumqttd keeps every filter, topic, retained message and
//!   client id forever, with no limit of its own.
//! - **A start that reports readiness** ([`EmbeddedBroker::start`]): rumqttd's `start()` blocks
//!   forever and cannot report a bind, so the broker runs on its own OS thread and `start`
//!   returns once every listener accepts. The public listeners are bound here first, so "address
//!   in use" is an error the caller sees.
//! - **TCP_NODELAY on every connection**: rumqttd never sets it, so each MQTT hop would wait
//!   ~40 ms for a delayed ACK. The front door sets it on its own sockets, and on rumqttd's
//!   loopback listeners once they are up (see [`nodelay`]), which accepted sockets inherit.
//! - **A warning naming every subscriber that fell behind** (`behind`): rumqttd drops the oldest
//!   messages of a filter's log when it is full, delivered or not, and says only which filter.
//!
//! What rumqttd cannot do, documented rather than patched: stopping in-process (run the
//! `bonker-broker` binary when a broker must be stopped), persisting retained messages or sessions
//! across restarts, and per-topic ACLs.

mod behind;
mod front;
mod limits;
mod mqtt;
pub mod nodelay;
pub mod settings;
mod tls;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

pub use settings::{AuthSettings, BrokerSettings, TlsSettings};

use settings::Upstream;

/// How long [`EmbeddedBroker::start`] waits for the listeners to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The settings are wrong; the message says which one and how.
    #[error(transparent)]
    Settings(#[from] bonker_client::config::ConfigError),
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
    /// Starts the broker on its own threads and returns once every listener accepts connections.
    pub fn start(settings: BrokerSettings) -> Result<EmbeddedBroker, BrokerError> {
        settings.validate()?;
        let tls = settings.tls.as_ref().map(tls::server_config).transpose()?;
        let front = front::Front::new()?;
        let (upstream, holds) = Upstream::reserve(&settings)?;
        let mut doors = Vec::new();
        let mut listeners = Vec::new();
        for listener in settings.listeners() {
            let socket = front.bind(listener.addr).map_err(|error| {
                crate::settings::wrong(format!("cannot listen on {}: {error}", listener.addr))
            })?;
            let addr = socket.local_addr()?;
            let (upstream_addr, tls) = match listener.kind {
                ListenerKind::V4 => (upstream.v4, None),
                ListenerKind::V4Tls => (upstream.v4, tls.clone()),
                ListenerKind::V5 => (upstream.v5.unwrap_or(upstream.v4), None),
            };
            doors.push(front::Door {
                kind: listener.kind,
                addr,
                listener: socket,
                upstream: upstream_addr,
                tls,
            });
            listeners.push(Listener {
                kind: listener.kind,
                addr,
            });
        }
        let config = settings.to_rumqttd(&upstream)?;
        std::thread::Builder::new()
            .name("bonker-broker".to_owned())
            .spawn(move || {
                let mut broker = rumqttd::Broker::new(config);
                behind::start(&broker);
                if let Err(error) = broker.start() {
                    tracing::error!(%error, "embedded broker stopped");
                }
            })?;
        wait_until_listening(&upstream.addrs())?;
        drop(holds);
        raise_open_file_limit(&settings, listeners.len());
        let rules = front::Rules {
            connect_timeout: Duration::from_millis(settings.connect_timeout_ms),
            handshake_timeout: Duration::from_millis(
                settings
                    .tls
                    .as_ref()
                    .map_or(settings::DEFAULT_HANDSHAKE_TIMEOUT_MS, |t| {
                        t.handshake_timeout_ms
                    }),
            ),
            max_connecting: settings.max_connecting,
            max_packet: settings.max_payload_bytes,
            max_topic_bytes: settings.max_topic_bytes,
        };
        front.serve(doors, rules, limits::Ledger::new(settings.limits()))?;
        let has_users = !settings.auth.resolve()?.is_empty();
        for listener in &listeners {
            tracing::info!(kind = ?listener.kind, addr = %listener.addr, "broker listening");
            if has_users
                && listener.kind != ListenerKind::V4Tls
                && !listener.addr.ip().is_loopback()
            {
                tracing::warn!(
                    addr = %listener.addr,
                    "this listener takes passwords in clear text (MQTT without TLS): anyone on \
                     the network path can read them. Serve clients on other machines through \
                     [tls], and bind this listener to 127.0.0.1 if only local clients need it"
                );
            }
        }
        tracing::debug!(upstream = ?upstream, "rumqttd serves the front door on loopback");
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

/// Waits until rumqttd listens on every (loopback) address, switching TCP_NODELAY on for each
/// listener as it appears (see [`nodelay`]). Where the listening sockets cannot be inspected, falls back to
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

/// Raises this process's soft limit on open files to its hard limit. Each relayed connection
/// holds three descriptors (the client's socket, the front door's socket to rumqttd, and
/// rumqttd's end of it), so the usual soft limit of 1024 would cap the broker at about 300
/// clients. Warns when even the hard limit is below what `max_connections` needs.
fn raise_open_file_limit(settings: &BrokerSettings, listeners: usize) {
    use rustix::process::{Resource, getrlimit, setrlimit};

    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        limit.current = limit.maximum;
        if let Err(error) = setrlimit(Resource::Nofile, limit) {
            tracing::debug!(%error, "cannot raise the open-file limit");
        }
    }
    let current = getrlimit(Resource::Nofile).current;
    let needed = (3 * settings.max_connections + listeners * settings.max_connecting + 64) as u64;
    if let Some(current) = current.filter(|&current| current < needed) {
        tracing::warn!(
            open_files = current,
            needed,
            max_connections = settings.max_connections,
            "the open-file limit is lower than max_connections needs (three per connection); \
             raise it (LimitNOFILE= in systemd) or lower max_connections"
        );
    }
}
