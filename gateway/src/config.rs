//! The gateway's configuration: what operators write ([`GatewaySettings`], from defaults, a TOML
//! file, `BONKER_…` variables and flags) and what the program runs on ([`GatewayConfig`], validated).
//!
//! The two are separate types on purpose. Everything that can be wrong — a namespace that is not a
//! DNS label, a token file that cannot be read, two password sources at once — is found by
//! [`GatewaySettings::validate`] before any port is bound, and reported with the key to fix. The
//! rest of the gateway only ever sees [`GatewayConfig`], whose fields are already typed and checked.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bonker_client::{MqttArgs, MqttSettings};
use bonker_protocol::{Cluster, Namespace, Prefix, Severity, Topics};
use serde::{Deserialize, Serialize};

use crate::auth::{Credentials, Secret};

/// Where the gateway serves HTTP by default.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 9095);
/// Where `--embedded-broker` listens for MQTT by default.
pub const DEFAULT_EMBEDDED_BROKER_LISTEN: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 1883);
/// How long a webhook waits for the broker to accept (PUBACK) all its bonks before answering 503.
/// Well under Alertmanager's retry horizon, so a retry always follows.
pub const DEFAULT_PUBLISH_TIMEOUT_MS: u64 = 5_000;
/// How long the gateway, after reconnecting to the broker, holds bonks back until every desk that
/// was online has said `online` again. A broker that restarted without persistence (the bonker
/// broker, mosquitto without `persistence`) has forgotten the desks' subscriptions, and a bonk it
/// accepts before a desk has subscribed again is lost for that desk. The agents' default
/// `mqtt.reconnect_max_ms`, so a desk that backed off fully is still waited for.
pub const DEFAULT_DESK_RETURN_TIMEOUT_MS: u64 = 30_000;
/// The largest request body accepted (Alertmanager notifications are a few KiB per alert).
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
/// How many bonk ids the dedupe window remembers.
pub const DEFAULT_DEDUPE_MAX_ENTRIES: usize = 100_000;
/// How long the dedupe window remembers a bonk id after it was last seen, in seconds (a day:
/// longer than any sensible `repeat_interval`; every repeat refreshes it).
pub const DEFAULT_DEDUPE_MAX_AGE_S: u64 = 86_400;
/// How far apart two reports of one kill may be, in seconds: scrape interval + rule evaluation +
/// `for` + Alertmanager's `group_wait` + a webhook retry fit in 10 minutes with room to spare.
pub const DEFAULT_KILL_WINDOW_S: u64 = bonker_protocol::kill::DEFAULT_WINDOW.as_secs();
/// The alerts that report an OOM kill (besides any alert labelled `reason="OOMKilled"`): the
/// shipped rules and the common community rule.
pub const DEFAULT_KILL_ALERTS: [&str; 4] = [
    "OOMKilled",
    "ContainerOOMEvent",
    "NodeOOMKill",
    "KubernetesContainerOomKiller",
];
const MAX_KILL_WINDOW_S: u64 = 86_400;
/// The alert that bonker exists for; it always bonks at full strength unless configured otherwise.
pub const OOM_KILLED_ALERTNAME: &str = "OOMKilled";

const MIN_PUBLISH_TIMEOUT_MS: u64 = 100;
const MAX_PUBLISH_TIMEOUT_MS: u64 = 60_000;
const MAX_DESK_RETURN_TIMEOUT_MS: u64 = 600_000;
const MIN_MAX_BODY_BYTES: usize = 1024;
/// Live event streams (open fleet pages) served at once by default.
pub const DEFAULT_MAX_EVENT_STREAMS: usize = 32;
/// At most this many: every stream holds one of the server's connections for as long as the page
/// is open, and webhooks must always find one.
const MAX_MAX_EVENT_STREAMS: usize = 256;
const MAX_MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// The gateway's configuration as written in `gateway.toml`, `BONKER_…` variables and flags.
/// See `gateway/gateway.example.toml` for every key with its default. Its `Debug` output never
/// shows a password or token.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewaySettings {
    /// HTTP listen address.
    pub listen: SocketAddr,
    /// Topic prefix (one or more levels, no wildcards).
    pub prefix: String,
    /// Namespace topic for alerts without a usable `namespace` label and for `POST /bonk` without
    /// one.
    pub default_namespace: String,
    /// Cluster name copied into bonks whose alert has no `cluster` label.
    pub cluster: Option<String>,
    /// How long a request waits for the broker's PUBACKs before answering 503, in milliseconds.
    pub publish_timeout_ms: u64,
    /// After a reconnect to the broker, how long bonks wait for the desks that were online to say
    /// `online` again (re-subscribed), in milliseconds; 0 publishes at once.
    pub desk_return_timeout_ms: u64,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// Most fleet pages following `GET /api/events` at once; more get 503.
    pub max_event_streams: usize,
    /// Run the bonker MQTT broker inside the gateway and connect to it.
    pub embedded_broker: bool,
    /// Where the embedded broker listens.
    pub embedded_broker_listen: SocketAddr,
    /// HTTP authentication for `/webhook`, `/bonk` and `/api/…`.
    pub auth: AuthSettings,
    /// The dedupe window.
    pub dedupe: DedupeSettings,
    /// Severity by alertname, overriding the `severity` label. The built-in
    /// `OOMKilled = "critical"` applies unless this table names `OOMKilled` itself.
    pub severity_overrides: BTreeMap<String, Severity>,
    /// The MQTT connection.
    pub mqtt: MqttSettings,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN,
            prefix: bonker_protocol::DEFAULT_PREFIX.to_owned(),
            default_namespace: bonker_protocol::DEFAULT_NAMESPACE.to_owned(),
            cluster: None,
            publish_timeout_ms: DEFAULT_PUBLISH_TIMEOUT_MS,
            desk_return_timeout_ms: DEFAULT_DESK_RETURN_TIMEOUT_MS,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_event_streams: DEFAULT_MAX_EVENT_STREAMS,
            embedded_broker: false,
            embedded_broker_listen: DEFAULT_EMBEDDED_BROKER_LISTEN,
            auth: AuthSettings::default(),
            dedupe: DedupeSettings::default(),
            severity_overrides: BTreeMap::from([(
                OOM_KILLED_ALERTNAME.to_owned(),
                Severity::Critical,
            )]),
            mqtt: MqttSettings::default(),
        }
    }
}

/// The `[auth]` section. Both methods may be configured at once; a request passes with either.
/// With neither, the endpoints are open (fine on a private network, not on a shared cluster).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// Bearer token, inline. Prefer `bearer_token_file`.
    pub bearer_token: Option<String>,
    /// A file holding the bearer token (a mounted Kubernetes Secret).
    pub bearer_token_file: Option<PathBuf>,
    /// Basic auth user name.
    pub basic_username: Option<String>,
    /// Basic auth password, inline. Prefer `basic_password_file`.
    pub basic_password: Option<String>,
    /// A file holding the basic auth password.
    pub basic_password_file: Option<PathBuf>,
}

impl fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |set: bool| if set { "<redacted>" } else { "<unset>" };
        f.debug_struct("AuthSettings")
            .field("bearer_token", &redacted(self.bearer_token.is_some()))
            .field("bearer_token_file", &self.bearer_token_file)
            .field("basic_username", &self.basic_username)
            .field("basic_password", &redacted(self.basic_password.is_some()))
            .field("basic_password_file", &self.basic_password_file)
            .finish()
    }
}

/// The `[dedupe]` section: how long and how many bonk ids are remembered, so that re-sent
/// notifications (Alertmanager's `repeat_interval`, both members of an HA pair) bonk only once,
/// and how alerts for a kill that already bonked are merged into that bonk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DedupeSettings {
    /// Most ids remembered; the least recently seen are forgotten first. 0 switches
    /// deduplication off.
    pub max_entries: usize,
    /// How long an id is remembered after it was last seen, in seconds.
    pub max_age_s: u64,
    /// How far apart two reports of one kill may be, in seconds. 0 merges nothing.
    pub kill_window_s: u64,
    /// Most kills remembered; the oldest are forgotten first. 0 merges nothing.
    pub max_kills: usize,
    /// Alertnames that report an OOM kill, so their bonks carry the kill and merge with the
    /// watcher's. Any alert labelled `reason="OOMKilled"` does too.
    pub kill_alerts: Vec<String>,
}

impl Default for DedupeSettings {
    fn default() -> Self {
        Self {
            max_entries: DEFAULT_DEDUPE_MAX_ENTRIES,
            max_age_s: DEFAULT_DEDUPE_MAX_AGE_S,
            kill_window_s: DEFAULT_KILL_WINDOW_S,
            max_kills: bonker_protocol::kill::DEFAULT_MAX_KILLS,
            kill_alerts: DEFAULT_KILL_ALERTS.map(str::to_owned).to_vec(),
        }
    }
}

/// The command line. Every flag is optional and overrides the config file and environment; the
/// flags that map one-to-one onto keys are themselves the top config layer (unset ones skipped).
#[derive(Debug, Clone, Default, clap::Parser, Serialize)]
#[command(
    name = "bonker-gateway",
    version,
    about = "Alertmanager webhooks in, MQTT bonks out: every firing alert bonks the desks watching \
             its namespace",
    long_about = None
)]
pub struct Args {
    /// TOML configuration file (see gateway.example.toml)
    #[arg(long, value_name = "FILE", env = "BONKER_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// HTTP listen address [default: 0.0.0.0:9095] [env: BONKER_LISTEN]
    #[arg(long, value_name = "ADDR:PORT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// Topic prefix, e.g. bonker or bonker/prod-eu [default: bonker] [env: BONKER_PREFIX]
    #[arg(long, value_name = "PREFIX")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Namespace bonked for alerts without a usable namespace label [default: default]
    /// [env: BONKER_DEFAULT_NAMESPACE]
    #[arg(long, value_name = "NAMESPACE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_namespace: Option<String>,
    /// Cluster name copied into bonks whose alert has no cluster label [env: BONKER_CLUSTER]
    #[arg(long, value_name = "NAME")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// File holding the bearer token that /webhook, /bonk and /api/ require
    /// [env: BONKER_AUTH__BEARER_TOKEN_FILE]
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub webhook_token_file: Option<PathBuf>,
    /// Run the bonker MQTT broker inside this process and connect to it (single-box setups)
    /// [env: BONKER_EMBEDDED_BROKER=true]
    #[arg(long)]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub embedded_broker: bool,
    /// Where the embedded broker listens [default: 0.0.0.0:1883]
    /// [env: BONKER_EMBEDDED_BROKER_LISTEN]
    #[arg(long, value_name = "ADDR:PORT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embedded_broker_listen: Option<SocketAddr>,
    /// MQTT connection flags.
    #[command(flatten)]
    #[serde(skip)]
    pub mqtt: MqttArgs,
    /// Ask the gateway running with this configuration whether it is ready (GET /readyz on its
    /// listen address) and exit 0 if so, 1 if not: a container healthcheck for images without
    /// a shell
    #[arg(long)]
    #[serde(skip)]
    pub health_check: bool,
}

pub use bonker_client::config::ConfigError;
use bonker_client::config::invalid;

impl Args {
    /// Loads the configuration layers (defaults → `--config` file → `BONKER_…` → flags).
    pub fn load(&self) -> Result<GatewaySettings, ConfigError> {
        self.load_with_env(None)
    }

    /// [`Args::load`] with an explicit environment (tests).
    pub fn load_with_env(
        &self,
        env: Option<HashMap<String, String>>,
    ) -> Result<GatewaySettings, ConfigError> {
        let mut config: GatewaySettings =
            bonker_client::config::load_from_env(self.config.as_deref(), &[], self, env)?;
        // Applied after the layers because a flag naming a file must also clear the inline value
        // a lower layer may have set, which a merge cannot express.
        config.mqtt.apply_args(&self.mqtt);
        if let Some(file) = &self.webhook_token_file {
            config.auth.bearer_token = None;
            config.auth.bearer_token_file = Some(file.clone());
        }
        Ok(config)
    }
}

/// The validated settings the gateway runs on. Its `Debug` output never shows a secret.
#[derive(Clone)]
pub struct GatewayConfig {
    /// HTTP listen address.
    pub listen: SocketAddr,
    /// Topics under the configured prefix.
    pub topics: Topics,
    /// Where alerts without a usable namespace label go.
    pub default_namespace: Namespace,
    /// The cluster copied into bonks, when configured.
    pub cluster: Option<Cluster>,
    /// How long a request waits for PUBACKs.
    pub publish_timeout: Duration,
    /// How long bonks wait for the desks after a reconnect to the broker (zero: not at all).
    pub desk_return_timeout: Duration,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Most event streams served at once.
    pub max_event_streams: usize,
    /// The embedded broker's listen address, when the gateway runs one.
    pub embedded_broker: Option<SocketAddr>,
    /// HTTP credentials (none: open).
    pub credentials: Credentials,
    /// The dedupe window.
    pub dedupe: DedupeSettings,
    /// Severity by lower-cased alertname.
    pub severity_overrides: HashMap<String, Severity>,
    /// The MQTT connection (already validated).
    pub mqtt: MqttSettings,
}

impl fmt::Debug for GatewaySettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatewaySettings")
            .field("listen", &self.listen)
            .field("prefix", &self.prefix)
            .field("default_namespace", &self.default_namespace)
            .field("cluster", &self.cluster)
            .field("publish_timeout_ms", &self.publish_timeout_ms)
            .field("desk_return_timeout_ms", &self.desk_return_timeout_ms)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_event_streams", &self.max_event_streams)
            .field("embedded_broker", &self.embedded_broker)
            .field("embedded_broker_listen", &self.embedded_broker_listen)
            .field("auth", &self.auth)
            .field("dedupe", &self.dedupe)
            .field("severity_overrides", &self.severity_overrides)
            .field("mqtt", &self.mqtt)
            .finish()
    }
}

impl fmt::Debug for GatewayConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatewayConfig")
            .field("listen", &self.listen)
            .field("topics", &self.topics)
            .field("default_namespace", &self.default_namespace)
            .field("cluster", &self.cluster)
            .field("publish_timeout", &self.publish_timeout)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_event_streams", &self.max_event_streams)
            .field("embedded_broker", &self.embedded_broker)
            .field("credentials", &self.credentials)
            .field("dedupe", &self.dedupe)
            .field("severity_overrides", &self.severity_overrides)
            .field("mqtt", &self.mqtt)
            .finish()
    }
}

impl GatewaySettings {
    /// Checks every value and reads the secret files, so a bad configuration stops the program
    /// before it binds a port.
    pub fn validate(self) -> Result<GatewayConfig, ConfigError> {
        let prefix =
            Prefix::new(self.prefix.clone()).map_err(|e| invalid(format!("prefix: {e}")))?;
        let default_namespace = Namespace::new(self.default_namespace.clone())
            .map_err(|e| invalid(format!("default_namespace: {e}")))?;
        let cluster = self
            .cluster
            .as_deref()
            .map(Cluster::new)
            .transpose()
            .map_err(|e| invalid(format!("cluster: {e}")))?;
        if !(MIN_PUBLISH_TIMEOUT_MS..=MAX_PUBLISH_TIMEOUT_MS).contains(&self.publish_timeout_ms) {
            return Err(invalid(format!(
                "publish_timeout_ms must be between {MIN_PUBLISH_TIMEOUT_MS} and \
                 {MAX_PUBLISH_TIMEOUT_MS}, got {}",
                self.publish_timeout_ms
            )));
        }
        if self.desk_return_timeout_ms > MAX_DESK_RETURN_TIMEOUT_MS {
            return Err(invalid(format!(
                "desk_return_timeout_ms must be at most {MAX_DESK_RETURN_TIMEOUT_MS} (0: do not \
                 wait for desks after a reconnect), got {}",
                self.desk_return_timeout_ms
            )));
        }
        if !(MIN_MAX_BODY_BYTES..=MAX_MAX_BODY_BYTES).contains(&self.max_body_bytes) {
            return Err(invalid(format!(
                "max_body_bytes must be between {MIN_MAX_BODY_BYTES} and {MAX_MAX_BODY_BYTES}, \
                 got {}",
                self.max_body_bytes
            )));
        }
        if !(1..=MAX_MAX_EVENT_STREAMS).contains(&self.max_event_streams) {
            return Err(invalid(format!(
                "max_event_streams must be between 1 and {MAX_MAX_EVENT_STREAMS}, got {}",
                self.max_event_streams
            )));
        }
        if self.dedupe.max_entries > 0 && self.dedupe.max_age_s == 0 {
            return Err(invalid(
                "dedupe.max_age_s must be above 0 (set dedupe.max_entries = 0 to switch \
                 deduplication off)",
            ));
        }
        if self.dedupe.kill_window_s > MAX_KILL_WINDOW_S {
            return Err(invalid(format!(
                "dedupe.kill_window_s must be at most {MAX_KILL_WINDOW_S} (0: merge nothing), got {}",
                self.dedupe.kill_window_s
            )));
        }
        if self.dedupe.kill_alerts.iter().any(|a| a.trim().is_empty()) {
            return Err(invalid("dedupe.kill_alerts: an alertname is empty"));
        }
        self.mqtt
            .validate()
            .map_err(|e| invalid(format!("mqtt: {e}")))?;
        // Reading the password file now turns a missing Secret mount into a start-up error.
        self.mqtt
            .resolve_password()
            .map_err(|e| invalid(format!("mqtt: {e}")))?;
        let credentials = self.auth.resolve()?;
        let mut severity_overrides = HashMap::from([(
            OOM_KILLED_ALERTNAME.to_ascii_lowercase(),
            Severity::Critical,
        )]);
        for (alertname, severity) in &self.severity_overrides {
            if alertname.trim().is_empty() {
                return Err(invalid("severity_overrides: an alertname is empty"));
            }
            severity_overrides.insert(alertname.to_ascii_lowercase(), *severity);
        }
        Ok(GatewayConfig {
            listen: self.listen,
            topics: Topics::new(prefix),
            default_namespace,
            cluster,
            publish_timeout: Duration::from_millis(self.publish_timeout_ms),
            desk_return_timeout: Duration::from_millis(self.desk_return_timeout_ms),
            max_body_bytes: self.max_body_bytes,
            max_event_streams: self.max_event_streams,
            embedded_broker: self.embedded_broker.then_some(self.embedded_broker_listen),
            credentials,
            dedupe: self.dedupe,
            severity_overrides,
            mqtt: self.mqtt,
        })
    }
}

impl AuthSettings {
    fn resolve(&self) -> Result<Credentials, ConfigError> {
        let bearer = one_secret(
            "auth.bearer_token",
            self.bearer_token.as_deref(),
            self.bearer_token_file.as_deref(),
        )?;
        let basic_password = one_secret(
            "auth.basic_password",
            self.basic_password.as_deref(),
            self.basic_password_file.as_deref(),
        )?;
        let basic = match (&self.basic_username, basic_password) {
            (None, None) => None,
            (Some(user), Some(password)) => {
                if user.is_empty() || user.contains(':') {
                    return Err(invalid(
                        "auth.basic_username must be non-empty and must not contain ':'",
                    ));
                }
                Some((user.clone(), password))
            }
            (Some(_), None) => {
                return Err(invalid(
                    "auth.basic_username needs auth.basic_password or auth.basic_password_file",
                ));
            }
            (None, Some(_)) => {
                return Err(invalid("auth.basic_password needs auth.basic_username"));
            }
        };
        Ok(Credentials::new(bearer, basic))
    }
}

/// A secret given inline or in a file (not both), trimmed, never empty.
fn one_secret(
    key: &str,
    inline: Option<&str>,
    file: Option<&Path>,
) -> Result<Option<Secret>, ConfigError> {
    let value = match (inline, file) {
        (Some(_), Some(_)) => {
            return Err(invalid(format!("set {key} or {key}_file, not both")));
        }
        (Some(value), None) => value.to_owned(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|e| invalid(format!("cannot read {key}_file {}: {e}", path.display())))?,
        (None, None) => return Ok(None),
    };
    let value = value.trim();
    if value.is_empty() {
        return Err(invalid(format!("{key} is empty")));
    }
    Ok(Some(Secret::new(value)))
}

/// The MQTT client id used when `mqtt.client_id` is not set: `bonker-gateway-<host>-<random>`.
///
/// Two replicas must never share a client id (the broker would disconnect one whenever the other
/// connects). The host name (a pod name in Kubernetes) tells operators which replica is which; the
/// random suffix keeps two gateways on one host apart. A fresh suffix per start costs nothing
/// because the gateway uses a clean session (see the `mqtt` module).
pub fn default_client_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let host: String = host
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_' || *c == '.')
        .take(40)
        .collect();
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..6];
    if host.is_empty() {
        format!("bonker-gateway-{suffix}")
    } else {
        format!("bonker-gateway-{host}-{suffix}")
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Option<HashMap<String, String>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn parse(args: &[&str]) -> Args {
        Args::try_parse_from(std::iter::once("bonker-gateway").chain(args.iter().copied()))
            .expect("flags parse")
    }

    #[test]
    fn flags_are_the_top_layer_and_unset_ones_leave_the_others_alone() {
        let unset = parse(&[]).load_with_env(env(&[("BONKER_EMBEDDED_BROKER", "true")]));
        assert!(
            unset.expect("loads").embedded_broker,
            "an unset flag is skipped"
        );
        let config = parse(&[
            "--embedded-broker",
            "--embedded-broker-listen",
            "127.0.0.1:2",
        ])
        .load_with_env(env(&[]))
        .expect("loads");
        assert!(config.embedded_broker);
        assert_eq!(config.embedded_broker_listen.to_string(), "127.0.0.1:2");
    }

    #[test]
    fn the_example_file_parses_and_matches_the_defaults() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("gateway.example.toml");
        let args = parse(&["--config", example.to_str().expect("utf-8 path")]);
        let config = args.load_with_env(env(&[])).expect("example loads");
        let defaults = GatewaySettings::default();
        assert_eq!(config.listen, defaults.listen);
        assert_eq!(config.prefix, defaults.prefix);
        assert_eq!(config.default_namespace, defaults.default_namespace);
        assert_eq!(config.publish_timeout_ms, defaults.publish_timeout_ms);
        assert_eq!(config.max_body_bytes, defaults.max_body_bytes);
        assert_eq!(config.max_event_streams, defaults.max_event_streams);
        assert_eq!(config.dedupe, defaults.dedupe);
        assert_eq!(config.mqtt, defaults.mqtt);
        assert_eq!(
            config.severity_overrides.get("OOMKilled"),
            Some(&Severity::Critical)
        );
        config.validate().expect("example validates");
    }

    #[test]
    fn defaults_validate_and_oomkilled_is_critical() {
        let settings = GatewaySettings::default()
            .validate()
            .expect("defaults are valid");
        assert_eq!(settings.listen, DEFAULT_LISTEN);
        assert_eq!(settings.default_namespace.as_str(), "default");
        assert_eq!(settings.publish_timeout, Duration::from_millis(5000));
        assert_eq!(
            settings.severity_overrides.get("oomkilled"),
            Some(&Severity::Critical)
        );
        assert!(settings.credentials.is_open());
        assert_eq!(settings.embedded_broker, None);
    }

    #[test]
    fn layers_flags_over_env_over_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("gateway.toml");
        std::fs::write(
            &file,
            "prefix = \"bonker/file\"\ncluster = \"file\"\npublish_timeout_ms = 1000\n\
             [severity_overrides]\nKubeJobFailed = \"warning\"\n[dedupe]\nmax_entries = 7\n",
        )
        .expect("write");
        let args = parse(&[
            "--config",
            file.to_str().expect("utf-8"),
            "--cluster",
            "flag",
            "--mqtt",
            "mqtt://flag:1",
            "--listen",
            "127.0.0.1:1",
        ]);
        let config = args
            .load_with_env(env(&[
                ("BONKER_PREFIX", "bonker/env"),
                ("BONKER_CLUSTER", "env"),
                ("BONKER_DEDUPE__MAX_AGE_S", "60"),
                ("BONKER_MQTT__URL", "mqtt://env:2"),
            ]))
            .expect("loads");
        assert_eq!(config.prefix, "bonker/env");
        assert_eq!(config.cluster.as_deref(), Some("flag"));
        assert_eq!(config.publish_timeout_ms, 1000);
        assert_eq!(config.dedupe.max_entries, 7);
        assert_eq!(config.dedupe.max_age_s, 60);
        assert_eq!(config.mqtt.url, "mqtt://flag:1");
        assert_eq!(config.listen.to_string(), "127.0.0.1:1");
        let settings = config.validate().expect("valid");
        // The built-in OOMKilled override survives a table that does not name it.
        assert_eq!(
            settings.severity_overrides.get("oomkilled"),
            Some(&Severity::Critical)
        );
        assert_eq!(
            settings.severity_overrides.get("kubejobfailed"),
            Some(&Severity::Warning)
        );
    }

    #[test]
    fn bad_values_name_the_key_to_fix() {
        let cases: Vec<(GatewaySettings, &str)> = vec![
            (
                GatewaySettings {
                    prefix: "bonker/#".into(),
                    ..Default::default()
                },
                "prefix",
            ),
            (
                GatewaySettings {
                    default_namespace: "Default".into(),
                    ..Default::default()
                },
                "default_namespace",
            ),
            (
                GatewaySettings {
                    cluster: Some("a/b".into()),
                    ..Default::default()
                },
                "cluster",
            ),
            (
                GatewaySettings {
                    publish_timeout_ms: 0,
                    ..Default::default()
                },
                "publish_timeout_ms",
            ),
            (
                GatewaySettings {
                    max_body_bytes: 10,
                    ..Default::default()
                },
                "max_body_bytes",
            ),
            (
                GatewaySettings {
                    max_event_streams: 0,
                    ..Default::default()
                },
                "max_event_streams",
            ),
            (
                GatewaySettings {
                    max_event_streams: 100_000,
                    ..Default::default()
                },
                "max_event_streams",
            ),
            (
                GatewaySettings {
                    auth: AuthSettings {
                        bearer_token: Some("a".into()),
                        bearer_token_file: Some("/x".into()),
                        ..Default::default()
                    },
                    ..Default::default()
                },
                "auth.bearer_token",
            ),
            (
                GatewaySettings {
                    auth: AuthSettings {
                        basic_username: Some("am".into()),
                        ..Default::default()
                    },
                    ..Default::default()
                },
                "auth.basic_username",
            ),
            (
                GatewaySettings {
                    auth: AuthSettings {
                        bearer_token_file: Some("/nonexistent/token".into()),
                        ..Default::default()
                    },
                    ..Default::default()
                },
                "/nonexistent/token",
            ),
            (
                GatewaySettings {
                    mqtt: MqttSettings {
                        url: "http://broker".into(),
                        ..Default::default()
                    },
                    ..Default::default()
                },
                "mqtt",
            ),
        ];
        for (config, key) in cases {
            let error = config.validate().expect_err(key).to_string();
            assert!(error.contains(key), "{key}: {error}");
        }
    }

    #[test]
    fn variables_that_are_not_settings_do_not_stop_the_gateway() {
        let config = parse(&[])
            .load_with_env(env(&[
                ("BONKER_LOG_FORMAT", "json"),
                ("BONKER_BROKER_PORT", "tcp://10.0.0.7:1883"),
                ("BONKER_PUBLISH_TIMEOUT_MS", "1234"),
            ]))
            .expect("loads");
        assert_eq!(config.publish_timeout_ms, 1234);
    }

    #[test]
    fn unknown_keys_and_bad_severities_are_rejected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("gateway.toml");
        std::fs::write(&file, "publish_timeout = 5\n").expect("write");
        let args = parse(&["--config", file.to_str().expect("utf-8")]);
        let error = args
            .load_with_env(env(&[]))
            .expect_err("unknown key")
            .to_string();
        assert!(error.contains("publish_timeout"), "{error}");
        std::fs::write(&file, "[severity_overrides]\nOOMKilled = \"loud\"\n").expect("write");
        let error = args
            .load_with_env(env(&[]))
            .expect_err("bad severity")
            .to_string();
        assert!(error.contains("loud"), "{error}");
    }

    #[test]
    fn token_files_are_read_trimmed_and_flags_replace_inline_tokens() {
        let dir = tempfile::tempdir().expect("tempdir");
        let token = dir.path().join("token");
        std::fs::write(&token, "s3cret\n").expect("write");
        let args = parse(&["--webhook-token-file", token.to_str().expect("utf-8")]);
        let config = args
            .load_with_env(env(&[("BONKER_AUTH__BEARER_TOKEN", "inline")]))
            .expect("loads");
        assert_eq!(config.auth.bearer_token, None);
        let settings = config.validate().expect("valid");
        assert!(settings.credentials.bearer_matches("s3cret"));
        assert!(!settings.credentials.bearer_matches("inline"));
        std::fs::write(&token, "\n").expect("write");
        let error = args
            .load_with_env(env(&[]))
            .expect("loads")
            .validate()
            .expect_err("empty token")
            .to_string();
        assert!(error.contains("empty"), "{error}");
    }

    #[test]
    fn secrets_never_reach_debug_output() {
        let config = GatewaySettings {
            auth: AuthSettings {
                bearer_token: Some("tok-123".into()),
                basic_username: Some("am".into()),
                basic_password: Some("pw-456".into()),
                ..Default::default()
            },
            mqtt: MqttSettings {
                username: Some("gateway".into()),
                password: Some("mqtt-pw".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let secrets = ["tok-123", "pw-456", "mqtt-pw"];
        let text = format!("{config:?}");
        assert!(secrets.iter().all(|s| !text.contains(s)), "{text}");
        let settings = config.validate().expect("valid");
        let text = format!("{settings:?}");
        assert!(secrets.iter().all(|s| !text.contains(s)), "{text}");
        assert!(text.contains("<redacted>"), "{text}");
    }

    #[test]
    fn embedded_broker_flag_and_listen_address() {
        let args = parse(&[
            "--embedded-broker",
            "--embedded-broker-listen",
            "127.0.0.1:18830",
        ]);
        let settings = args
            .load_with_env(env(&[]))
            .expect("loads")
            .validate()
            .expect("valid");
        assert_eq!(
            settings.embedded_broker.map(|a| a.to_string()).as_deref(),
            Some("127.0.0.1:18830")
        );
    }

    #[test]
    fn default_client_ids_differ_between_instances() {
        let a = default_client_id();
        let b = default_client_id();
        assert!(a.starts_with("bonker-gateway-"), "{a}");
        assert_ne!(a, b);
        assert!(a.chars().all(|c| c.is_ascii_graphic()), "{a}");
    }
}
