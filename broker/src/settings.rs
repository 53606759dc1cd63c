//! The broker's settings: a small, documented surface over rumqttd's config, with defaults that
//! work with no file at all (MQTT 3.1.1 on `0.0.0.0:1883`, anonymous).
//!
//! rumqttd's own config is kept out of users' sight on purpose: its defaults are unusable
//! (`max_connections = 0`), its Prometheus exporter installs a process-wide recorder and its own
//! HTTP listener (wrong inside the gateway), and its TLS fields are spelled differently from every
//! other bonker program's. rumqttd itself only ever listens on loopback ports chosen at start
//! ([`Upstream`]); the listeners configured here belong to the front door (`front.rs`).
//!
//! The limits (`max_filters`, `max_topics`, `max_retained`, …) have no counterpart in rumqttd:
//! the front door enforces them (`limits.rs`). Their defaults fit a fleet of a few thousand
//! desks; `docs/brokers.md` gives what each costs in memory.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::limits::Limits;
use crate::{BrokerError, Listener, ListenerKind, reserve_port};

/// Default MQTT 3.1.1 listener.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 1883);
/// Default TLS listener.
pub const DEFAULT_TLS_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 8883);
/// Default connection limit: a fleet of desks, gateways, watchers and Home Assistant, with room.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default largest payload: Home Assistant discovery payloads and coalesced alert bonks fit.
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 256 * 1024;
/// How much a subscription filter's log holds. rumqttd keeps every message routed to a filter in
/// an in-memory log shared by all its subscribers and drops the oldest segment only when the log
/// is full, delivered or not: the log is a ring, and the broker's memory grows until every filter
/// with traffic has filled its ring. 1 MiB holds about 1,500 bonks — what a desk back from an
/// outage can catch up on, or how far a slow subscriber may fall behind in a burst before it
/// misses messages (mosquitto's default queue is 1,000 messages per client).
pub const FILTER_LOG_BYTES: usize = FILTER_LOG_SEGMENTS * SEGMENT_BYTES;
/// Segments per filter log: the log drops a quarter of what it holds at a time.
const FILTER_LOG_SEGMENTS: usize = 4;
const SEGMENT_BYTES: usize = 256 * 1024;
/// Default time a new connection has to send its CONNECT (after the TLS handshake, on TLS).
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 10_000;
/// Default time a TLS client has to finish its handshake.
pub const DEFAULT_HANDSHAKE_TIMEOUT_MS: u64 = 10_000;
/// Default number of connections per listener that may be between accept and CONNACK (in the TLS
/// handshake, or sending CONNECT) at once; more are closed at once.
pub const DEFAULT_MAX_CONNECTING: usize = 1024;
/// Default distinct subscription filters (rumqttd never forgets one).
pub const DEFAULT_MAX_FILTERS: usize = 10_000;
/// Default distinct topics published to.
pub const DEFAULT_MAX_TOPICS: usize = 200_000;
/// Default topics holding a retained message: about twenty per desk for 5,000 desks.
pub const DEFAULT_MAX_RETAINED: usize = 100_000;
/// Default topic and payload bytes of all retained messages together.
pub const DEFAULT_MAX_RETAINED_BYTES: u64 = 64 * 1024 * 1024;
/// Default distinct client ids (rumqttd remembers each one it ever saw).
pub const DEFAULT_MAX_CLIENT_IDS: usize = 200_000;
/// Default longest topic, filter or client id, in bytes: every bonker topic with the longest
/// prefix, cluster and desk names fits, as do Home Assistant's discovery topics.
pub const DEFAULT_MAX_TOPIC_BYTES: usize = 512;
/// rumqttd reads at most this many packets per batch from a connection.
const MAX_INFLIGHT_COUNT: usize = 500;

/// Everything the broker can be told, in `broker.toml` or `BONKER_…` variables. Its `Debug` never
/// shows a password.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerSettings {
    /// MQTT 3.1.1 listener (port 0: a free port).
    pub listen: SocketAddr,
    /// Optional MQTT 5 listener (rumqttd serves v5 on its own port).
    pub listen_v5: Option<SocketAddr>,
    /// Most simultaneous connections. The front door refuses more with a CONNACK before rumqttd
    /// sees them.
    pub max_connections: usize,
    /// Largest accepted packet payload, in bytes.
    pub max_payload_bytes: usize,
    /// How long a new connection may take to send its CONNECT, in milliseconds.
    pub connect_timeout_ms: u64,
    /// Connections per listener that may be between accept and CONNACK at once.
    pub max_connecting: usize,
    /// Distinct subscription filters the broker will hold.
    pub max_filters: usize,
    /// Distinct topics clients may publish to.
    pub max_topics: usize,
    /// Topics that may hold a retained message.
    pub max_retained: usize,
    /// Topic and payload bytes of all retained messages together.
    pub max_retained_bytes: u64,
    /// Distinct client ids the broker will remember.
    pub max_client_ids: usize,
    /// Longest topic, filter or client id, in bytes.
    pub max_topic_bytes: usize,
    /// Optional MQTT-over-TLS listener.
    pub tls: Option<TlsSettings>,
    /// Username/password authentication for every listener; anonymous when empty.
    pub auth: AuthSettings,
}

impl Default for BrokerSettings {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN,
            listen_v5: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
            connect_timeout_ms: DEFAULT_CONNECT_TIMEOUT_MS,
            max_connecting: DEFAULT_MAX_CONNECTING,
            max_filters: DEFAULT_MAX_FILTERS,
            max_topics: DEFAULT_MAX_TOPICS,
            max_retained: DEFAULT_MAX_RETAINED,
            max_retained_bytes: DEFAULT_MAX_RETAINED_BYTES,
            max_client_ids: DEFAULT_MAX_CLIENT_IDS,
            max_topic_bytes: DEFAULT_MAX_TOPIC_BYTES,
            tls: None,
            auth: AuthSettings::default(),
        }
    }
}

/// The `[tls]` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// Where the TLS listener binds.
    #[serde(default = "default_tls_listen")]
    pub listen: SocketAddr,
    /// PEM certificate chain.
    pub cert_file: PathBuf,
    /// PEM private key.
    pub key_file: PathBuf,
    /// How long a client may take to finish its TLS handshake, in milliseconds.
    #[serde(default = "default_handshake_timeout_ms")]
    pub handshake_timeout_ms: u64,
}

fn default_tls_listen() -> SocketAddr {
    DEFAULT_TLS_LISTEN
}

fn default_handshake_timeout_ms() -> u64 {
    DEFAULT_HANDSHAKE_TIMEOUT_MS
}

/// The `[auth]` section: users and passwords, inline or from a file. Its `Debug` shows user names,
/// never passwords.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// `name = "password"` pairs.
    pub users: BTreeMap<String, String>,
    /// A file of `name:password` lines (blank lines and `#` comments ignored), for Kubernetes
    /// Secrets and files readable only by the service user.
    pub users_file: Option<PathBuf>,
}

impl std::fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        /// A user's password, shown as `<redacted>`.
        struct Redacted;
        impl std::fmt::Debug for Redacted {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("<redacted>")
            }
        }
        let users: BTreeMap<&str, Redacted> = self
            .users
            .keys()
            .map(|user| (user.as_str(), Redacted))
            .collect();
        f.debug_struct("AuthSettings")
            .field("users", &users)
            .field("users_file", &self.users_file)
            .finish()
    }
}

impl AuthSettings {
    /// Every user, from both sources. A user in both takes the file's password.
    pub fn resolve(&self) -> Result<BTreeMap<String, String>, BrokerError> {
        let mut users = self.users.clone();
        if let Some(path) = &self.users_file {
            let text = std::fs::read_to_string(path).map_err(|source| BrokerError::File {
                what: "auth.users_file",
                path: path.clone(),
                source,
            })?;
            for (number, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let Some((user, password)) = line.split_once(':') else {
                    return Err(wrong(format!(
                        "auth.users_file {path:?} line {}: expected name:password",
                        number + 1
                    )));
                };
                if user.is_empty() {
                    return Err(wrong(format!(
                        "auth.users_file {path:?} line {}: empty user name",
                        number + 1
                    )));
                }
                users.insert(user.to_owned(), password.to_owned());
            }
        }
        Ok(users)
    }
}

impl BrokerSettings {
    /// Settings for one anonymous MQTT 3.1.1 listener on `127.0.0.1:port` (tests, the demo).
    pub fn loopback(port: u16) -> Self {
        Self {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
            ..Self::default()
        }
    }

    /// Checks the settings without binding anything.
    pub fn validate(&self) -> Result<(), BrokerError> {
        if self.max_connections == 0 {
            return Err(wrong("max_connections must be at least 1".to_owned()));
        }
        if self.max_payload_bytes < 1024 {
            return Err(wrong("max_payload_bytes must be at least 1024".to_owned()));
        }
        let at_least_one = [
            ("max_connecting", self.max_connecting),
            ("max_filters", self.max_filters),
            ("max_topics", self.max_topics),
            ("max_client_ids", self.max_client_ids),
        ];
        for (what, value) in at_least_one {
            if value == 0 {
                return Err(wrong(format!("{what} must be at least 1")));
            }
        }
        if !(64..=65_535).contains(&self.max_topic_bytes) {
            return Err(wrong(
                "max_topic_bytes must be between 64 and 65535".to_owned(),
            ));
        }
        let mut timeouts = vec![("connect_timeout_ms", self.connect_timeout_ms, 60_000)];
        timeouts.extend(self.tls.as_ref().map(|tls| {
            (
                "tls.handshake_timeout_ms",
                tls.handshake_timeout_ms,
                600_000,
            )
        }));
        for (what, value, max) in timeouts {
            if !(100..=max).contains(&value) {
                return Err(wrong(format!("{what} must be between 100 and {max}")));
            }
        }
        let mut addrs = vec![self.listen];
        addrs.extend(self.listen_v5);
        addrs.extend(self.tls.as_ref().map(|t| t.listen));
        for (i, a) in addrs.iter().enumerate() {
            if a.port() != 0 && addrs[..i].iter().any(|b| b.port() == a.port()) {
                return Err(wrong(format!("two listeners share port {}", a.port())));
            }
        }
        if let Some(tls) = &self.tls {
            crate::tls::server_config(tls)?;
        }
        for user in self.auth.resolve()?.keys() {
            if user.trim().is_empty() {
                return Err(wrong("auth: empty user name".to_owned()));
            }
        }
        Ok(())
    }

    /// The same settings with every port 0 replaced by a free port.
    pub fn resolve_free_ports(mut self) -> Result<Self, BrokerError> {
        let resolve = |addr: &mut SocketAddr| -> Result<(), BrokerError> {
            if addr.port() == 0 {
                addr.set_port(reserve_port(addr.ip())?);
            }
            Ok(())
        };
        resolve(&mut self.listen)?;
        if let Some(v5) = self.listen_v5.as_mut() {
            resolve(v5)?;
        }
        if let Some(tls) = self.tls.as_mut() {
            resolve(&mut tls.listen)?;
        }
        Ok(self)
    }

    /// The listeners these settings open.
    pub fn listeners(&self) -> Vec<Listener> {
        let mut listeners = vec![Listener {
            kind: ListenerKind::V4,
            addr: self.listen,
        }];
        listeners.extend(self.listen_v5.map(|addr| Listener {
            kind: ListenerKind::V5,
            addr,
        }));
        listeners.extend(self.tls.as_ref().map(|tls| Listener {
            kind: ListenerKind::V4Tls,
            addr: tls.listen,
        }));
        listeners
    }

    /// The limits the front door enforces.
    pub(crate) fn limits(&self) -> Limits {
        Limits {
            max_connections: self.max_connections,
            max_filters: self.max_filters,
            max_topics: self.max_topics,
            max_retained: self.max_retained,
            max_retained_bytes: self.max_retained_bytes,
            max_client_ids: self.max_client_ids,
        }
    }

    /// The rumqttd config these settings describe, with rumqttd listening on `upstream` only.
    pub(crate) fn to_rumqttd(&self, upstream: &Upstream) -> Result<rumqttd::Config, BrokerError> {
        self.validate()?;
        let users = self.auth.resolve()?;
        let connections = rumqttd::ConnectionSettings {
            // The front door forwards a CONNECT only once it has all of it, within
            // `connect_timeout_ms`; rumqttd's own deadline is a backstop.
            connection_timeout_ms: u16::try_from(self.connect_timeout_ms).unwrap_or(u16::MAX),
            max_payload_size: self.max_payload_bytes,
            max_inflight_count: MAX_INFLIGHT_COUNT,
            auth: (!users.is_empty()).then(|| users.into_iter().collect::<HashMap<_, _>>()),
            external_auth: None,
            dynamic_filters: true,
        };
        let server = |name: &str, listen: SocketAddr| rumqttd::ServerSettings {
            name: name.to_owned(),
            listen,
            tls: None,
            // rumqttd sleeps this long after every accept; 0 lets a fleet reconnect at once.
            next_connection_delay_ms: 0,
            connections: connections.clone(),
        };
        let v4 = HashMap::from([("1".to_owned(), server("v4", upstream.v4))]);
        let v5 = upstream
            .v5
            .map(|addr| HashMap::from([("1".to_owned(), server("v5", addr))]));
        Ok(rumqttd::Config {
            id: 0,
            router: rumqttd::RouterConfig {
                // The front door keeps connections within `max_connections`, counting a
                // connection until its socket closes; rumqttd may take a moment longer to forget
                // one, and counts its own internal links too. Headroom keeps rumqttd from ever
                // refusing a connection itself, which breaks later connects (upstream #1062).
                max_connections: self.max_connections.saturating_mul(2).saturating_add(16),
                max_outgoing_packet_count: 200,
                max_segment_size: SEGMENT_BYTES,
                max_segment_count: FILTER_LOG_SEGMENTS,
                custom_segment: None,
                initialized_filters: None,
                shared_subscriptions_strategy: Default::default(),
            },
            v4: Some(v4),
            v5,
            ws: None,
            cluster: None,
            console: None,
            bridge: None,
            prometheus: None,
            // Its alerts name each subscriber that fell behind (see `behind`).
            metrics: Some(crate::behind::alert_settings()),
        })
    }
}

/// Where rumqttd itself listens: loopback ports only the front door connects to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Upstream {
    /// MQTT 3.1.1, for the plain and the TLS listener alike.
    pub(crate) v4: SocketAddr,
    /// MQTT 5, if configured.
    pub(crate) v5: Option<SocketAddr>,
}

impl Upstream {
    /// Free loopback ports for rumqttd's listeners, each held by a [`PortHold`] until rumqttd
    /// listens on it.
    pub(crate) fn reserve(settings: &BrokerSettings) -> Result<(Self, Vec<PortHold>), BrokerError> {
        let mut holds = Vec::new();
        let mut loopback = || -> Result<SocketAddr, BrokerError> {
            let hold = PortHold::new(IpAddr::V4(Ipv4Addr::LOCALHOST))?;
            let addr = hold.addr;
            holds.push(hold);
            Ok(addr)
        };
        let upstream = Upstream {
            v4: loopback()?,
            v5: settings.listen_v5.map(|_| loopback()).transpose()?,
        };
        Ok((upstream, holds))
    }

    /// Every address.
    pub(crate) fn addrs(&self) -> Vec<SocketAddr> {
        std::iter::once(self.v4).chain(self.v5).collect()
    }
}

/// A free port kept from everyone but its intended listener: a socket bound to it with
/// `SO_REUSEADDR` and never listening. Linux gives such a port to no `bind(…:0)` and to no
/// outgoing connection, so no other program's free port can be this one, while a listener that
/// also sets `SO_REUSEADDR` (tokio's, so rumqttd's) may still bind it (a port released before
/// rumqttd binds it could be taken in between). Dropped once rumqttd listens.
#[derive(Debug)]
pub(crate) struct PortHold {
    addr: SocketAddr,
    _socket: tokio::net::TcpSocket,
}

impl PortHold {
    fn new(ip: IpAddr) -> std::io::Result<PortHold> {
        let socket = match ip {
            IpAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            IpAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        socket.bind(SocketAddr::new(ip, 0))?;
        Ok(PortHold {
            addr: socket.local_addr()?,
            _socket: socket,
        })
    }
}

/// A setting that is wrong, named in `message`.
pub(crate) fn wrong(message: impl Into<String>) -> BrokerError {
    BrokerError::Settings(bonker_client::config::invalid(message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_held_port_is_free_only_for_the_listener_it_is_held_for() {
        let hold = PortHold::new(IpAddr::V4(Ipv4Addr::LOCALHOST)).expect("hold");
        let stranger = tokio::net::TcpSocket::new_v4().expect("socket");
        assert_eq!(
            stranger
                .bind(hold.addr)
                .expect_err("a socket without SO_REUSEADDR cannot bind it")
                .kind(),
            std::io::ErrorKind::AddrInUse
        );
        let rumqttd = tokio::net::TcpListener::bind(hold.addr)
            .await
            .expect("a tokio listener binds the held port");
        drop(hold);
        tokio::net::TcpStream::connect(rumqttd.local_addr().expect("addr"))
            .await
            .expect("the listener accepts once the hold is gone");
    }

    fn upstream() -> Upstream {
        Upstream {
            v4: "127.0.0.1:40001".parse().expect("addr"),
            v5: None,
        }
    }

    #[test]
    fn defaults_work_without_a_file() {
        let settings = BrokerSettings::default();
        let config = settings.to_rumqttd(&upstream()).expect("valid");
        assert_eq!(settings.listen.to_string(), "0.0.0.0:1883");
        assert!(config.router.max_connections > DEFAULT_MAX_CONNECTIONS);
        let v4 = config.v4.expect("v4 listener");
        assert_eq!(v4.len(), 1);
        assert!(config.v5.is_none());
        assert!(config.prometheus.is_none());
        assert!(v4.values().all(|s| s.connections.auth.is_none()));
    }

    #[test]
    fn rumqttd_listens_on_loopback_only_and_never_does_tls_itself() {
        let settings: BrokerSettings =
            toml::from_str("listen = \"0.0.0.0:1883\"\nlisten_v5 = \"0.0.0.0:1884\"\n")
                .expect("parses");
        let upstream = Upstream {
            v5: Some("127.0.0.1:40002".parse().expect("addr")),
            ..upstream()
        };
        let config = settings.to_rumqttd(&upstream).expect("valid");
        let servers: Vec<_> = config
            .v4
            .iter()
            .chain(config.v5.iter())
            .flat_map(|servers| servers.values())
            .collect();
        assert_eq!(servers.len(), 2);
        assert!(
            servers
                .iter()
                .all(|s| s.listen.ip().is_loopback() && s.tls.is_none())
        );
    }

    #[test]
    fn debug_never_shows_a_password() {
        let settings = BrokerSettings {
            auth: AuthSettings {
                users: BTreeMap::from([
                    ("gateway".into(), "hunter2-gateway".into()),
                    ("alice".into(), "hunter2-alice".into()),
                ]),
                users_file: Some("/etc/bonker/broker-users".into()),
            },
            ..Default::default()
        };
        for shown in [format!("{settings:?}"), format!("{settings:#?}")] {
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(
                shown.contains("alice") && shown.contains("gateway"),
                "{shown}"
            );
            assert!(shown.contains("<redacted>"), "{shown}");
            assert!(shown.contains("/etc/bonker/broker-users"), "{shown}");
        }
    }

    #[test]
    fn users_come_from_inline_and_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("users");
        std::fs::write(&file, "# desks\nalice:pw1\n\nbob:pw:with:colons\n").expect("write");
        let auth = AuthSettings {
            users: BTreeMap::from([
                ("gateway".into(), "g".into()),
                ("alice".into(), "old".into()),
            ]),
            users_file: Some(file),
        };
        let users = auth.resolve().expect("resolves");
        assert_eq!(users["alice"], "pw1");
        assert_eq!(users["bob"], "pw:with:colons");
        assert_eq!(users["gateway"], "g");
    }

    #[test]
    fn bad_settings_say_what_is_wrong() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("users");
        std::fs::write(&file, "alice\n").expect("write");
        let settings = BrokerSettings {
            auth: AuthSettings {
                users_file: Some(file),
                ..Default::default()
            },
            ..Default::default()
        };
        let error = settings.validate().expect_err("bad line").to_string();
        assert!(error.contains("line 1: expected name:password"), "{error}");

        let settings = BrokerSettings {
            tls: Some(TlsSettings {
                listen: DEFAULT_TLS_LISTEN,
                cert_file: "/nonexistent/cert.pem".into(),
                key_file: "/nonexistent/key.pem".into(),
                handshake_timeout_ms: DEFAULT_HANDSHAKE_TIMEOUT_MS,
            }),
            ..Default::default()
        };
        let error = settings.validate().expect_err("missing cert").to_string();
        assert!(error.contains("tls.cert_file"), "{error}");

        let settings = BrokerSettings {
            listen_v5: Some(DEFAULT_LISTEN),
            ..Default::default()
        };
        assert!(settings.validate().is_err());

        for (text, what) in [
            ("max_filters = 0", "max_filters"),
            ("max_connecting = 0", "max_connecting"),
            ("max_topic_bytes = 10", "max_topic_bytes"),
            ("connect_timeout_ms = 70000", "connect_timeout_ms"),
        ] {
            let settings: BrokerSettings = toml::from_str(text).expect("parses");
            let error = settings.validate().expect_err(text).to_string();
            assert!(error.contains(what), "{text}: {error}");
        }
    }

    #[test]
    fn free_ports_are_resolved() {
        let settings = BrokerSettings::loopback(0)
            .resolve_free_ports()
            .expect("free port");
        assert_ne!(settings.listen.port(), 0);
    }

    #[test]
    fn the_example_file_parses_and_matches_the_defaults() {
        let text = include_str!("../broker.example.toml");
        let settings: BrokerSettings = toml::from_str(text).expect("example parses");
        settings.validate().expect("example is valid");
        assert_eq!(settings, BrokerSettings::default());
    }

    #[test]
    fn toml_parses() {
        let settings: BrokerSettings = toml::from_str(
            "listen = \"127.0.0.1:1884\"\n[auth]\nusers = { gateway = \"secret\" }\n",
        )
        .expect("parses");
        assert_eq!(settings.listen.port(), 1884);
        assert_eq!(settings.auth.users["gateway"], "secret");
        assert!(toml::from_str::<BrokerSettings>("lisen = \"x\"").is_err());
    }
}
