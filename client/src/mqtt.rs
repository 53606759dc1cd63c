//! MQTT connection settings shared by every bonker program: the same flags, the same config keys, the
//! same defaults, turned into `rumqttc::MqttOptions` in one place.
//!
//! The rumqttc pitfalls this module settles once for everybody (see `docs/brokers.md`):
//! - TCP_NODELAY is switched on ([`tune_event_loop`]); with Nagle's algorithm on, every MQTT hop
//!   waits for a delayed ACK and a bonk's round trip costs ~40 ms instead of ~1 ms.
//! - The 10 KiB default packet limit is raised to [`MAX_PACKET_BYTES`] so Home Assistant discovery
//!   payloads and large alert bonks fit.
//! - TLS uses rustls with the `ring` provider (not aws-lc-rs), so ARMv6 desks cross-compile.
//! - Reconnects back off exponentially ([`Backoff`]); rumqttc itself retries at once, forever.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use backon::BackoffBuilder;
use bonker_protocol::Delivery;
use rumqttc::{EventLoop, MqttOptions, QoS, TlsConfiguration, Transport};
use serde::{Deserialize, Serialize};

/// The broker used when none is configured.
pub const DEFAULT_URL: &str = "mqtt://localhost:1883";
/// Default MQTT keep-alive, in seconds.
pub const DEFAULT_KEEP_ALIVE_S: u64 = 30;
/// Default first reconnect delay, in milliseconds.
pub const DEFAULT_RECONNECT_MIN_MS: u64 = 250;
/// Default longest reconnect delay, in milliseconds.
pub const DEFAULT_RECONNECT_MAX_MS: u64 = 30_000;
/// Largest MQTT packet sent or accepted, in bytes.
pub const MAX_PACKET_BYTES: usize = 256 * 1024;
/// Default TCP connect timeout, in seconds.
pub const DEFAULT_CONNECT_TIMEOUT_S: u64 = 5;

/// The `[mqtt]` section of every program's config, also set by `--mqtt…` flags and
/// `BONKER_MQTT__…` environment variables. Its `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttSettings {
    /// `mqtt://host:port` or `mqtts://host:port` (TLS).
    pub url: String,
    /// Client id; each program picks a sensible default (the desk name for agents).
    pub client_id: Option<String>,
    /// Username, when the broker requires one.
    pub username: Option<String>,
    /// Password, inline. Prefer `password_file` (a Kubernetes Secret, a file readable only by the
    /// service user).
    pub password: Option<String>,
    /// A file holding the password (surrounding whitespace is trimmed).
    pub password_file: Option<PathBuf>,
    /// PEM CA bundle to verify the broker with; without it, `mqtts://` uses the system roots.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate, for brokers that authenticate clients by certificate.
    pub client_cert_file: Option<PathBuf>,
    /// PEM private key for `client_cert_file`.
    pub client_key_file: Option<PathBuf>,
    /// MQTT keep-alive, in seconds.
    pub keep_alive_s: u64,
    /// TCP (and TLS) connect timeout, in seconds.
    pub connect_timeout_s: u64,
    /// First reconnect delay, in milliseconds.
    pub reconnect_min_ms: u64,
    /// Longest reconnect delay, in milliseconds.
    pub reconnect_max_ms: u64,
}

impl std::fmt::Debug for MqttSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttSettings")
            .field("url", &self.url)
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("password_file", &self.password_file)
            .field("ca_file", &self.ca_file)
            .field("client_cert_file", &self.client_cert_file)
            .field("client_key_file", &self.client_key_file)
            .field("keep_alive_s", &self.keep_alive_s)
            .field("connect_timeout_s", &self.connect_timeout_s)
            .field("reconnect_min_ms", &self.reconnect_min_ms)
            .field("reconnect_max_ms", &self.reconnect_max_ms)
            .finish()
    }
}

impl Default for MqttSettings {
    fn default() -> Self {
        Self {
            url: DEFAULT_URL.to_owned(),
            client_id: None,
            username: None,
            password: None,
            password_file: None,
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
            keep_alive_s: DEFAULT_KEEP_ALIVE_S,
            connect_timeout_s: DEFAULT_CONNECT_TIMEOUT_S,
            reconnect_min_ms: DEFAULT_RECONNECT_MIN_MS,
            reconnect_max_ms: DEFAULT_RECONNECT_MAX_MS,
        }
    }
}

/// The `--mqtt…` flags every program takes. Each is optional: unset flags leave the config file's
/// and environment's values alone. Flatten it into a program's clap `Parser`; they are global, so
/// a program with subcommands takes them before or after the subcommand.
#[derive(Debug, Clone, Default, clap::Args, Serialize)]
pub struct MqttArgs {
    /// Broker URL: mqtt://host:port, or mqtts://host:port for TLS [env: BONKER_MQTT__URL]
    #[arg(global = true, long = "mqtt", value_name = "URL")]
    #[serde(rename = "url", skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// MQTT client id [env: BONKER_MQTT__CLIENT_ID]
    #[arg(global = true, long = "mqtt-client-id", value_name = "ID")]
    #[serde(rename = "client_id", skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// MQTT username [env: BONKER_MQTT__USERNAME]
    #[arg(global = true, long = "mqtt-username", value_name = "NAME")]
    #[serde(rename = "username", skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// File holding the MQTT password [env: BONKER_MQTT__PASSWORD_FILE]
    #[arg(global = true, long = "mqtt-password-file", value_name = "FILE")]
    #[serde(rename = "password_file", skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// PEM CA bundle for verifying the broker's TLS certificate [env: BONKER_MQTT__CA_FILE]
    #[arg(global = true, long = "mqtt-ca-file", value_name = "FILE")]
    #[serde(rename = "ca_file", skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate for TLS client auth [env: BONKER_MQTT__CLIENT_CERT_FILE]
    #[arg(
        global = true,
        long = "mqtt-client-cert-file",
        value_name = "FILE",
        requires = "client_key_file"
    )]
    #[serde(rename = "client_cert_file", skip_serializing_if = "Option::is_none")]
    pub client_cert_file: Option<PathBuf>,
    /// PEM private key for --mqtt-client-cert-file [env: BONKER_MQTT__CLIENT_KEY_FILE]
    #[arg(
        global = true,
        long = "mqtt-client-key-file",
        value_name = "FILE",
        requires = "client_cert_file"
    )]
    #[serde(rename = "client_key_file", skip_serializing_if = "Option::is_none")]
    pub client_key_file: Option<PathBuf>,
}

impl MqttArgs {
    /// True when no flag was given.
    pub fn is_empty(&self) -> bool {
        serde_json::to_value(self)
            .map(|v| v.as_object().is_none_or(|o| o.is_empty()))
            .unwrap_or(true)
    }
}

/// Why MQTT settings could not become connection options.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The URL does not parse or has the wrong scheme.
    #[error("mqtt.url {url:?}: {reason}")]
    Url {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A file named in the settings could not be read. (The I/O error is part of the message,
    /// not a `source`: a chain of causes would print it twice.)
    #[error("cannot read {what} {path:?}: {error}")]
    File {
        /// Which setting.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// A TLS file was read but holds nothing usable.
    #[error("{what} {path:?}: {reason}")]
    Tls {
        /// Which setting.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Settings that contradict each other.
    #[error("{0}")]
    Invalid(String),
}

/// Where to connect, parsed from `mqtt.url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddress {
    /// Host name or IP address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Whether to speak TLS.
    pub tls: bool,
}

impl BrokerAddress {
    /// Parses `mqtt://host[:port]` (port 1883) or `mqtts://host[:port]` (port 8883). `tcp://` and
    /// `ssl://` are accepted as aliases, as in mosquitto and paho.
    pub fn parse(url: &str) -> Result<BrokerAddress, SettingsError> {
        let fail = |reason: String| SettingsError::Url {
            url: url.to_owned(),
            reason,
        };
        let parsed = url::Url::parse(url).map_err(|e| {
            fail(format!(
                "{e}; expected mqtt://host:port or mqtts://host:port"
            ))
        })?;
        let tls = match parsed.scheme() {
            "mqtt" | "tcp" => false,
            "mqtts" | "ssl" => true,
            other => {
                return Err(fail(format!(
                    "unknown scheme {other:?}; expected mqtt:// or mqtts://"
                )));
            }
        };
        let host = parsed
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| fail("no host".to_owned()))?;
        if parsed.path() != "" && parsed.path() != "/" {
            return Err(fail("a broker URL has no path".to_owned()));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(fail(
                "put credentials in --mqtt-username / --mqtt-password-file, not the URL".to_owned(),
            ));
        }
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = parsed.port().unwrap_or(if tls { 8883 } else { 1883 });
        Ok(BrokerAddress { host, port, tls })
    }
}

impl MqttSettings {
    /// Checks everything short of the network: the URL, how the settings pair up, and the files
    /// they name (the password file is read, the CA bundle and the client certificate and key
    /// parse), so that every program reports a bad file as a configuration error (exit 2) before
    /// it binds a port, not when it first connects. Programs call this while validating.
    pub fn validate(&self) -> Result<BrokerAddress, SettingsError> {
        let address = self.check()?;
        self.resolve_password()?;
        if address.tls {
            self.tls_config()?;
        }
        Ok(address)
    }

    /// The checks of [`MqttSettings::validate`] that read no file.
    fn check(&self) -> Result<BrokerAddress, SettingsError> {
        let address = BrokerAddress::parse(&self.url)?;
        if self.password.is_some() && self.password_file.is_some() {
            return Err(SettingsError::Invalid(
                "set mqtt.password or mqtt.password_file, not both".to_owned(),
            ));
        }
        if (self.password.is_some() || self.password_file.is_some()) && self.username.is_none() {
            return Err(SettingsError::Invalid(
                "an MQTT password needs mqtt.username (--mqtt-username) too".to_owned(),
            ));
        }
        if self.client_cert_file.is_some() != self.client_key_file.is_some() {
            return Err(SettingsError::Invalid(
                "mqtt.client_cert_file and mqtt.client_key_file go together".to_owned(),
            ));
        }
        if !address.tls && (self.ca_file.is_some() || self.client_cert_file.is_some()) {
            return Err(SettingsError::Invalid(format!(
                "TLS files are set but {} is not mqtts://",
                self.url
            )));
        }
        if self.keep_alive_s < 5 {
            return Err(SettingsError::Invalid(
                "mqtt.keep_alive_s must be at least 5 seconds".to_owned(),
            ));
        }
        if self.reconnect_min_ms == 0 || self.reconnect_min_ms > self.reconnect_max_ms {
            return Err(SettingsError::Invalid(
                "mqtt.reconnect_min_ms must be above 0 and at most mqtt.reconnect_max_ms"
                    .to_owned(),
            ));
        }
        Ok(address)
    }

    /// Applies flags given on the command line over these settings.
    pub fn apply_args(&mut self, args: &MqttArgs) {
        let MqttArgs {
            url,
            client_id,
            username,
            password_file,
            ca_file,
            client_cert_file,
            client_key_file,
        } = args.clone();
        if let Some(url) = url {
            self.url = url;
        }
        if client_id.is_some() {
            self.client_id = client_id;
        }
        if username.is_some() {
            self.username = username;
        }
        if password_file.is_some() {
            self.password_file = password_file;
            self.password = None;
        }
        if ca_file.is_some() {
            self.ca_file = ca_file;
        }
        if client_cert_file.is_some() {
            self.client_cert_file = client_cert_file;
            self.client_key_file = client_key_file;
        }
    }

    /// The password, read from `password_file` when that is set.
    pub fn resolve_password(&self) -> Result<Option<String>, SettingsError> {
        if let Some(path) = &self.password_file {
            let text = read("mqtt.password_file", path)?;
            let text = String::from_utf8(text).map_err(|_| SettingsError::Tls {
                what: "mqtt.password_file",
                path: path.clone(),
                reason: "is not UTF-8".to_owned(),
            })?;
            return Ok(Some(text.trim().to_owned()));
        }
        Ok(self.password.clone())
    }

    /// Builds rumqttc options: address, credentials, TLS, keep-alive and packet limits. The caller
    /// sets what is its own (last will, clean session) on the result.
    pub fn options(&self, default_client_id: &str) -> Result<MqttOptions, SettingsError> {
        // The files are read below, once; `validate` has read them before, at start-up.
        let address = self.check()?;
        let client_id = self
            .client_id
            .clone()
            .unwrap_or_else(|| default_client_id.to_owned());
        let mut options = MqttOptions::new(client_id, address.host.clone(), address.port);
        options
            .set_keep_alive(Duration::from_secs(self.keep_alive_s))
            .set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES);
        if let Some(username) = &self.username {
            let password = self.resolve_password()?.unwrap_or_default();
            options.set_credentials(username.clone(), password);
        }
        if address.tls {
            let config = self.tls_config()?;
            options.set_transport(Transport::Tls(TlsConfiguration::Rustls(Arc::new(config))));
        }
        Ok(options)
    }

    fn tls_config(&self) -> Result<rustls::ClientConfig, SettingsError> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};

        let mut roots = rustls::RootCertStore::empty();
        match &self.ca_file {
            Some(path) => {
                let pem = read("mqtt.ca_file", path)?;
                for cert in CertificateDer::pem_slice_iter(&pem) {
                    let cert = cert.map_err(|e| tls_error("mqtt.ca_file", path, e))?;
                    roots
                        .add(cert)
                        .map_err(|e| tls_error("mqtt.ca_file", path, e))?;
                }
                if roots.is_empty() {
                    return Err(tls_error("mqtt.ca_file", path, "holds no PEM certificate"));
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(found.certs);
                if roots.is_empty() {
                    return Err(SettingsError::Invalid(
                        "mqtts:// without mqtt.ca_file needs the system CA bundle, and none was found"
                            .to_owned(),
                    ));
                }
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| SettingsError::Invalid(format!("TLS: {e}")))?
            .with_root_certificates(roots);
        match (&self.client_cert_file, &self.client_key_file) {
            (Some(cert_path), Some(key_path)) => {
                let pem = read("mqtt.client_cert_file", cert_path)?;
                let chain = CertificateDer::pem_slice_iter(&pem)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| tls_error("mqtt.client_cert_file", cert_path, e))?;
                let key_pem = read("mqtt.client_key_file", key_path)?;
                let key = PrivateKeyDer::from_pem_slice(&key_pem)
                    .map_err(|e| tls_error("mqtt.client_key_file", key_path, e))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| tls_error("mqtt.client_cert_file", cert_path, e))
            }
            _ => Ok(builder.with_no_client_auth()),
        }
    }

    /// The reconnect backoff these settings describe.
    pub fn backoff(&self) -> Backoff {
        Backoff::new(
            Duration::from_millis(self.reconnect_min_ms),
            Duration::from_millis(self.reconnect_max_ms),
        )
    }
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, SettingsError> {
    std::fs::read(path).map_err(|error| SettingsError::File {
        what,
        path: path.to_owned(),
        error,
    })
}

fn tls_error(what: &'static str, path: &Path, error: impl std::fmt::Display) -> SettingsError {
    SettingsError::Tls {
        what,
        path: path.to_owned(),
        reason: error.to_string(),
    }
}

/// Switches on what every bonker event loop needs before its first poll: TCP_NODELAY and the
/// connect timeout.
pub fn tune_event_loop(event_loop: &mut EventLoop, settings: &MqttSettings) {
    let mut network = event_loop.network_options();
    network.set_tcp_nodelay(true);
    network.set_connection_timeout(settings.connect_timeout_s);
    event_loop.set_network_options(network);
}

/// The rumqttc QoS of a protocol [`Delivery`].
pub fn qos(delivery: Delivery) -> QoS {
    match delivery.qos {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

/// Exponential reconnect backoff with jitter, reset after a successful connection.
///
/// rumqttc reconnects on the very next `poll()` after an error, with no delay, so a program that
/// just keeps polling hammers a broker that is down. Every bonker event loop sleeps
/// [`Backoff::next_delay`] after an error and calls [`Backoff::reset`] on `ConnAck`.
#[derive(Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    delays: backon::ExponentialBackoff,
}

impl Backoff {
    /// Delays from `min`, doubling, up to `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            delays: Self::build(min, max),
        }
    }

    fn build(min: Duration, max: Duration) -> backon::ExponentialBackoff {
        backon::ExponentialBuilder::default()
            .with_min_delay(min)
            .with_max_delay(max)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times()
            .build()
    }

    /// The delay before the next reconnect attempt: never more than the maximum, jitter included.
    pub fn next_delay(&mut self) -> Duration {
        self.delays.next().unwrap_or(self.max).min(self.max)
    }

    /// Starts over from the shortest delay (call on every successful connection).
    pub fn reset(&mut self) {
        self.delays = Self::build(self.min, self.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_default_ports() {
        assert_eq!(
            BrokerAddress::parse("mqtt://broker").expect("ok"),
            BrokerAddress {
                host: "broker".into(),
                port: 1883,
                tls: false
            }
        );
        let tls = BrokerAddress::parse("mqtts://broker.example:18883").expect("ok");
        assert_eq!((tls.port, tls.tls), (18883, true));
        assert_eq!(BrokerAddress::parse("mqtts://b").expect("ok").port, 8883);
        let v6 = BrokerAddress::parse("mqtt://[::1]:1884").expect("ok");
        assert_eq!(v6.host, "::1");
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        let error = BrokerAddress::parse("http://broker")
            .expect_err("scheme")
            .to_string();
        assert!(error.contains("unknown scheme \"http\""), "{error}");
        let error = BrokerAddress::parse("broker:1883")
            .expect_err("no scheme")
            .to_string();
        assert!(error.contains("mqtt://"), "{error}");
        let error = BrokerAddress::parse("mqtt://u:p@broker")
            .expect_err("creds")
            .to_string();
        assert!(error.contains("credentials"), "{error}");
    }

    #[test]
    fn contradicting_settings_are_rejected() {
        let settings = MqttSettings {
            password: Some("x".into()),
            ..Default::default()
        };
        assert!(settings.validate().is_err());
        let settings = MqttSettings {
            ca_file: Some("/ca.pem".into()),
            ..Default::default()
        };
        let error = settings
            .validate()
            .expect_err("tls files without tls")
            .to_string();
        assert!(error.contains("not mqtts://"), "{error}");
    }

    #[test]
    fn flags_override_settings_and_password_file_wins() {
        let mut settings = MqttSettings {
            username: Some("old".into()),
            password: Some("inline".into()),
            ..Default::default()
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret\n").expect("write");
        settings.apply_args(&MqttArgs {
            url: Some("mqtt://other:1999".into()),
            username: Some("desk".into()),
            password_file: Some(file),
            ..Default::default()
        });
        assert_eq!(settings.url, "mqtt://other:1999");
        assert_eq!(settings.username.as_deref(), Some("desk"));
        assert_eq!(
            settings.resolve_password().expect("read").as_deref(),
            Some("s3cret")
        );
        let options = settings.options("x").expect("options");
        assert_eq!(options.broker_address(), ("other".to_owned(), 1999));
        let login = options.credentials().expect("credentials set");
        assert_eq!(
            (login.username.as_str(), login.password.as_str()),
            ("desk", "s3cret")
        );
    }

    #[test]
    fn missing_files_are_named() {
        let settings = MqttSettings {
            url: "mqtts://broker".into(),
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..Default::default()
        };
        let error = settings.options("x").expect_err("missing").to_string();
        assert!(
            error.contains("mqtt.ca_file") && error.contains("/nonexistent/ca.pem"),
            "{error}"
        );
    }

    #[test]
    fn debug_never_shows_the_password() {
        let settings = MqttSettings {
            username: Some("desk".into()),
            password: Some("hunter2".into()),
            ..Default::default()
        };
        let shown = format!("{settings:?}");
        assert!(
            !shown.contains("hunter2") && shown.contains("<redacted>"),
            "{shown}"
        );
    }

    #[test]
    fn args_report_emptiness() {
        assert!(MqttArgs::default().is_empty());
        assert!(
            !MqttArgs {
                url: Some("mqtt://x".into()),
                ..Default::default()
            }
            .is_empty()
        );
    }

    #[test]
    fn backoff_grows_to_its_cap_and_resets() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(800));
        let first = backoff.next_delay();
        assert!(first >= Duration::from_millis(100) && first < Duration::from_millis(250));
        let later: Vec<Duration> = (0..10).map(|_| backoff.next_delay()).collect();
        assert!(
            later.iter().all(|d| *d <= Duration::from_millis(1600)),
            "{later:?}"
        );
        assert!(
            later
                .last()
                .is_some_and(|d| *d >= Duration::from_millis(800))
        );
        backoff.reset();
        assert!(backoff.next_delay() < Duration::from_millis(250));
    }
}
