//! The broker's settings: a small, documented surface over rumqttd's config, with defaults that
//! work with no file at all (MQTT 3.1.1 on `0.0.0.0:1883`, anonymous).
//!
//! rumqttd's own config is kept out of users' sight on purpose: its defaults are unusable
//! (`max_connections = 0`), its Prometheus exporter installs a process-wide recorder and its own
//! HTTP listener (wrong inside the gateway), and its TLS fields are spelled differently from every
//! other bonker program's.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

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
/// How long a new TCP connection may take to send CONNECT.
const CONNECT_TIMEOUT_MS: u16 = 10_000;
/// rumqttd reads at most this many packets per batch from a connection.
const MAX_INFLIGHT_COUNT: usize = 500;

/// Everything the broker can be told, in `broker.toml` or `BONKER_…` variables.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerSettings {
    /// MQTT 3.1.1 listener (port 0: a free port).
    pub listen: SocketAddr,
    /// Optional MQTT 5 listener (rumqttd serves v5 on its own port).
    pub listen_v5: Option<SocketAddr>,
    /// Most simultaneous connections.
    pub max_connections: usize,
    /// Largest accepted payload, in bytes.
    pub max_payload_bytes: usize,
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
}

fn default_tls_listen() -> SocketAddr {
    DEFAULT_TLS_LISTEN
}

/// The `[auth]` section: users and passwords, inline or from a file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// `name = "password"` pairs.
    pub users: BTreeMap<String, String>,
    /// A file of `name:password` lines (blank lines and `#` comments ignored), for Kubernetes
    /// Secrets and files readable only by the service user.
    pub users_file: Option<PathBuf>,
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
                    return Err(BrokerError::Settings(format!(
                        "auth.users_file {path:?} line {}: expected name:password",
                        number + 1
                    )));
                };
                if user.is_empty() {
                    return Err(BrokerError::Settings(format!(
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
            return Err(BrokerError::Settings(
                "max_connections must be at least 1".to_owned(),
            ));
        }
        if self.max_payload_bytes < 1024 {
            return Err(BrokerError::Settings(
                "max_payload_bytes must be at least 1024".to_owned(),
            ));
        }
        let mut addrs = vec![self.listen];
        addrs.extend(self.listen_v5);
        addrs.extend(self.tls.as_ref().map(|t| t.listen));
        for (i, a) in addrs.iter().enumerate() {
            if a.port() != 0 && addrs[..i].iter().any(|b| b.port() == a.port()) {
                return Err(BrokerError::Settings(format!(
                    "two listeners share port {}",
                    a.port()
                )));
            }
        }
        if let Some(tls) = &self.tls {
            for (what, path) in [
                ("tls.cert_file", &tls.cert_file),
                ("tls.key_file", &tls.key_file),
            ] {
                std::fs::metadata(path).map_err(|source| BrokerError::File {
                    what,
                    path: path.clone(),
                    source,
                })?;
            }
        }
        for user in self.auth.resolve()?.keys() {
            if user.trim().is_empty() {
                return Err(BrokerError::Settings("auth: empty user name".to_owned()));
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

    /// The rumqttd config these settings describe.
    pub fn to_rumqttd(&self) -> Result<rumqttd::Config, BrokerError> {
        self.validate()?;
        let users = self.auth.resolve()?;
        let connections = rumqttd::ConnectionSettings {
            connection_timeout_ms: CONNECT_TIMEOUT_MS,
            max_payload_size: self.max_payload_bytes,
            max_inflight_count: MAX_INFLIGHT_COUNT,
            auth: (!users.is_empty()).then(|| users.into_iter().collect::<HashMap<_, _>>()),
            external_auth: None,
            dynamic_filters: true,
        };
        let server = |name: &str, listen: SocketAddr, tls: Option<rumqttd::TlsConfig>| {
            rumqttd::ServerSettings {
                name: name.to_owned(),
                listen,
                tls,
                // rumqttd sleeps this long after every accept; 0 lets a fleet reconnect at once.
                next_connection_delay_ms: 0,
                connections: connections.clone(),
            }
        };
        let mut v4 = HashMap::from([("1".to_owned(), server("v4", self.listen, None))]);
        if let Some(tls) = &self.tls {
            let config = rumqttd::TlsConfig::Rustls {
                capath: None,
                certpath: tls.cert_file.to_string_lossy().into_owned(),
                keypath: tls.key_file.to_string_lossy().into_owned(),
            };
            v4.insert("2".to_owned(), server("v4-tls", tls.listen, Some(config)));
        }
        let v5 = self
            .listen_v5
            .map(|addr| HashMap::from([("1".to_owned(), server("v5", addr, None))]));
        Ok(rumqttd::Config {
            id: 0,
            router: rumqttd::RouterConfig {
                // rumqttd counts its own internal links too; leave headroom over the user limit.
                max_connections: self.max_connections + 16,
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
            metrics: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_work_without_a_file() {
        let settings = BrokerSettings::default();
        let config = settings.to_rumqttd().expect("valid");
        assert_eq!(settings.listen.to_string(), "0.0.0.0:1883");
        assert!(config.router.max_connections >= DEFAULT_MAX_CONNECTIONS);
        let v4 = config.v4.expect("v4 listener");
        assert_eq!(v4.len(), 1);
        assert!(config.prometheus.is_none());
        assert!(v4.values().all(|s| s.connections.auth.is_none()));
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
