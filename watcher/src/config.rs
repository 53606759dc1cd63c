//! The watcher's settings: command-line flags, `BONKER_…` environment variables and an optional
//! TOML file, layered by [`bonker_client::config::load`], then checked before anything starts.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bonker_client::{MqttArgs, MqttSettings};
use bonker_protocol::{Cluster, Namespace, Prefix};
use serde::{Deserialize, Serialize};

/// Default address for `/metrics` and `/healthz`.
pub(crate) const DEFAULT_LISTEN: &str = "0.0.0.0:9096";
/// Default kernel log device.
pub(crate) const DEFAULT_KMSG: &str = "/dev/kmsg";
/// Default cgroup mount.
pub(crate) const DEFAULT_CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// Where the kernel publishes its boot id.
pub(crate) const DEFAULT_BOOT_ID_FILE: &str = "/proc/sys/kernel/random/boot_id";
/// Default interval between two readings of the cgroup counters, in milliseconds.
pub(crate) const DEFAULT_CGROUP_SCAN_INTERVAL_MS: u64 = 500;
/// Default time a counted kill waits for its kernel log line before it is reported from the
/// counter alone, in milliseconds.
pub(crate) const DEFAULT_COUNTER_GRACE_MS: u64 = 1500;
/// Default age beyond which a kill found in the kernel log is counted but not bonked, in seconds.
pub(crate) const DEFAULT_MAX_EVENT_AGE_S: u64 = 300;
/// Default bound of the MQTT publish queue.
pub(crate) const DEFAULT_MAX_QUEUED_BONKS: usize = 1000;

/// Every setting, as read from the TOML file (top-level keys) and `BONKER_…` variables.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WatcherSettings {
    /// Address for `/metrics` and `/healthz`.
    pub listen: String,
    /// This node's name (the DaemonSet sets it from `spec.nodeName`); the host name when unset.
    pub node_name: Option<String>,
    /// The kernel log device.
    pub kmsg: PathBuf,
    /// The cgroup mount (v1: its parent or the memory mount itself; v2: the unified mount).
    pub cgroup_root: PathBuf,
    /// File keeping the resume point across restarts; none means a restart re-reads the ring
    /// buffer and reports only kills younger than `max_event_age_s`.
    pub state_file: Option<PathBuf>,
    /// The kernel's boot id file.
    pub boot_id_file: PathBuf,
    /// Topic prefix.
    pub prefix: String,
    /// Cluster name copied into bonks.
    pub cluster: Option<String>,
    /// Namespace topic for kills outside Kubernetes or in pods the API does not know.
    pub default_namespace: String,
    /// Ask the Kubernetes API for names (in-cluster config unless `kube_api_url` is set).
    pub kube_api: bool,
    /// Kubernetes API base URL, overriding the in-cluster address (e.g. `kubectl proxy`).
    pub kube_api_url: Option<String>,
    /// Bearer token file for the API (defaults to the service account token).
    pub kube_token_file: Option<PathBuf>,
    /// CA bundle for the API (defaults to the service account CA).
    pub kube_ca_file: Option<PathBuf>,
    /// Interval between readings of the cgroup counters, in milliseconds (0 disables them).
    pub cgroup_scan_interval_ms: u64,
    /// How long a counted kill waits for its kernel log line, in milliseconds.
    pub counter_grace_ms: u64,
    /// Kills older than this, found in the kernel log at start-up, are not bonked.
    pub max_event_age_s: u64,
    /// Bound of the publish queue while the broker is unreachable.
    pub max_queued_bonks: usize,
    /// The `[mqtt]` section.
    pub mqtt: MqttSettings,
}

impl Default for WatcherSettings {
    fn default() -> Self {
        WatcherSettings {
            listen: DEFAULT_LISTEN.to_owned(),
            node_name: None,
            kmsg: PathBuf::from(DEFAULT_KMSG),
            cgroup_root: PathBuf::from(DEFAULT_CGROUP_ROOT),
            state_file: None,
            boot_id_file: PathBuf::from(DEFAULT_BOOT_ID_FILE),
            prefix: bonker_protocol::DEFAULT_PREFIX.to_owned(),
            cluster: None,
            default_namespace: bonker_protocol::DEFAULT_NAMESPACE.to_owned(),
            kube_api: true,
            kube_api_url: None,
            kube_token_file: None,
            kube_ca_file: None,
            cgroup_scan_interval_ms: DEFAULT_CGROUP_SCAN_INTERVAL_MS,
            counter_grace_ms: DEFAULT_COUNTER_GRACE_MS,
            max_event_age_s: DEFAULT_MAX_EVENT_AGE_S,
            max_queued_bonks: DEFAULT_MAX_QUEUED_BONKS,
            mqtt: MqttSettings::default(),
        }
    }
}

/// Command-line flags. Each overrides the file and the environment when given.
#[derive(Debug, Clone, Default, clap::Parser, Serialize)]
#[command(
    name = "bonker-watcher",
    version,
    about = "Watches this node's kernel for OOM kills and bonks within a second.",
    long_about = "Watches this node's kernel for OOM kills (the kernel log in /dev/kmsg, cross-checked \
                  with memory cgroup counters), maps each to its pod and container, publishes a bonk on \
                  the namespace topic and counts it in bonker_watcher_oom_kills_total.\n\n\
                  Every setting is also a TOML key (--config) and a BONKER_<KEY> environment variable, \
                  e.g. BONKER_NODE_NAME, BONKER_MQTT__URL."
)]
pub struct Args {
    /// TOML config file
    #[arg(long, env = "BONKER_CONFIG", value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Ask the watcher running with this configuration whether it is up (GET /healthz on its
    /// listen address) and exit 0 if so, 1 if not: a container healthcheck for images without a
    /// shell
    #[arg(long)]
    #[serde(skip)]
    pub health_check: bool,
    /// Address for /metrics and /healthz [default: 0.0.0.0:9096] [env: BONKER_LISTEN]
    #[arg(long, value_name = "ADDR:PORT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// This node's name, as in the pods' spec.nodeName [default: the host name] [env: BONKER_NODE_NAME]
    #[arg(long, value_name = "NAME")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// Kernel log device [default: /dev/kmsg] [env: BONKER_KMSG]
    #[arg(long, value_name = "PATH")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kmsg: Option<PathBuf>,
    /// cgroup mount [default: /sys/fs/cgroup] [env: BONKER_CGROUP_ROOT]
    #[arg(long, value_name = "PATH")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup_root: Option<PathBuf>,
    /// File keeping the kernel log resume point across restarts [env: BONKER_STATE_FILE]
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_file: Option<PathBuf>,
    /// Topic prefix [default: bonker] [env: BONKER_PREFIX]
    #[arg(long, value_name = "PREFIX")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Cluster name copied into bonks [env: BONKER_CLUSTER]
    #[arg(long, value_name = "NAME")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// Kubernetes API URL instead of the in-cluster one, e.g. http://127.0.0.1:8001 [env: BONKER_KUBE_API_URL]
    #[arg(long, value_name = "URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kube_api_url: Option<String>,
    /// MQTT connection.
    #[command(flatten)]
    #[serde(skip)]
    pub mqtt: MqttArgs,
}

/// Settings checked and turned into the types the watcher uses.
#[derive(Debug, Clone)]
pub struct WatcherConfig {
    /// Address for `/metrics` and `/healthz`.
    pub listen: SocketAddr,
    /// This node's name.
    pub node_name: String,
    /// The kernel log device.
    pub kmsg: PathBuf,
    /// The cgroup mount.
    pub cgroup_root: PathBuf,
    /// Resume point file.
    pub state_file: Option<PathBuf>,
    /// Boot id file.
    pub boot_id_file: PathBuf,
    /// Topic prefix.
    pub prefix: Prefix,
    /// Cluster copied into bonks.
    pub cluster: Option<Cluster>,
    /// Fallback namespace topic.
    pub default_namespace: Namespace,
    /// How to reach the Kubernetes API, if at all.
    pub kube_api: Option<crate::kube::KubeApiSettings>,
    /// Counter reading interval; `None` disables the counters.
    pub cgroup_scan_interval: Option<Duration>,
    /// How long a counted kill waits for its kernel log line.
    pub counter_grace: Duration,
    /// Age beyond which kernel log kills are not bonked.
    pub max_event_age: Duration,
    /// Publish queue bound.
    pub max_queued_bonks: usize,
    /// MQTT settings.
    pub mqtt: MqttSettings,
}

pub(crate) use bonker_client::config::ConfigError;
use bonker_client::config::invalid;

impl WatcherSettings {
    /// Loads settings from `flags.config`, the environment and the flags.
    pub fn load(flags: &Args) -> Result<WatcherSettings, ConfigError> {
        let mut settings: WatcherSettings =
            bonker_client::config::load(flags.config.as_deref(), &[], flags)?;
        settings.mqtt.apply_args(&flags.mqtt);
        Ok(settings)
    }

    /// Checks every setting and resolves defaults that depend on the machine (the host name, the
    /// in-cluster API address).
    pub fn validate(self) -> Result<WatcherConfig, ConfigError> {
        let listen: SocketAddr = self
            .listen
            .parse()
            .map_err(|e| invalid(format!("listen {:?}: {e}; expected ADDR:PORT", self.listen)))?;
        let node_name = match self.node_name.filter(|n| !n.trim().is_empty()) {
            Some(name) => name.trim().to_owned(),
            None => std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .ok()
                .filter(|h| !h.is_empty())
                .ok_or_else(|| {
                    invalid(
                        "node_name is not set and the host name cannot be read; set --node-name \
                         (BONKER_NODE_NAME, from the downward API's spec.nodeName)"
                            .to_owned(),
                    )
                })?,
        };
        let prefix = Prefix::new(self.prefix).map_err(|e| invalid(format!("prefix: {e}")))?;
        let cluster = self
            .cluster
            .map(Cluster::new)
            .transpose()
            .map_err(|e| invalid(format!("cluster: {e}")))?;
        let default_namespace = Namespace::new(self.default_namespace)
            .map_err(|e| invalid(format!("default_namespace: {e}")))?;
        self.mqtt.validate().map_err(|e| invalid(e.to_string()))?;
        let kube_api = if !self.kube_api {
            None
        } else if let Some(url) = self.kube_api_url {
            let parsed =
                url::Url::parse(&url).map_err(|e| invalid(format!("kube_api_url {url:?}: {e}")))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(invalid(format!(
                    "kube_api_url {url:?}: expected http:// or https://"
                )));
            }
            Some(crate::kube::KubeApiSettings {
                url,
                token_file: self.kube_token_file,
                ca_file: self.kube_ca_file,
            })
        } else {
            crate::kube::KubeApiSettings::in_cluster().map(|mut settings| {
                if self.kube_token_file.is_some() {
                    settings.token_file = self.kube_token_file;
                }
                if self.kube_ca_file.is_some() {
                    settings.ca_file = self.kube_ca_file;
                }
                settings
            })
        };
        if let Some(ca_file) = kube_api.as_ref().and_then(|k| k.ca_file.as_deref()) {
            crate::kube::read_ca_bundle(ca_file)
                .map_err(|e| invalid(format!("kube_ca_file: {e}")))?;
        }
        if self.max_queued_bonks == 0 {
            return Err(invalid("max_queued_bonks must be at least 1".to_owned()));
        }
        Ok(WatcherConfig {
            listen,
            node_name,
            kmsg: self.kmsg,
            cgroup_root: self.cgroup_root,
            state_file: self.state_file,
            boot_id_file: self.boot_id_file,
            prefix,
            cluster,
            default_namespace,
            kube_api,
            cgroup_scan_interval: (self.cgroup_scan_interval_ms > 0)
                .then(|| Duration::from_millis(self.cgroup_scan_interval_ms)),
            counter_grace: Duration::from_millis(self.counter_grace_ms),
            max_event_age: Duration::from_secs(self.max_event_age_s),
            max_queued_bonks: self.max_queued_bonks,
            mqtt: self.mqtt,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_parses_and_validates() {
        let text = include_str!("../watcher.example.toml");
        let settings: WatcherSettings = toml::from_str(text).expect("example parses");
        let config = settings.validate().expect("example validates");
        assert_eq!(config.node_name, "node-1");
        assert_eq!(config.listen.port(), 9096);
    }

    #[test]
    fn defaults_validate_and_bad_values_are_named() {
        let config = WatcherSettings {
            node_name: Some("n".into()),
            kube_api: false,
            ..Default::default()
        }
        .validate()
        .expect("defaults");
        assert_eq!(
            config.cgroup_scan_interval,
            Some(Duration::from_millis(500))
        );
        assert!(config.kube_api.is_none());

        for (settings, needle) in [
            (
                WatcherSettings {
                    listen: "nope".into(),
                    ..Default::default()
                },
                "listen",
            ),
            (
                WatcherSettings {
                    prefix: "a/#".into(),
                    ..Default::default()
                },
                "prefix",
            ),
            (
                WatcherSettings {
                    default_namespace: "Bad_NS".into(),
                    ..Default::default()
                },
                "default_namespace",
            ),
            (
                WatcherSettings {
                    kube_api_url: Some("ftp://x".into()),
                    ..Default::default()
                },
                "kube_api_url",
            ),
            (
                // Never a silent fall-back to the public roots.
                WatcherSettings {
                    kube_api_url: Some("https://10.96.0.1".into()),
                    kube_ca_file: Some("/nonexistent/ca.crt".into()),
                    ..Default::default()
                },
                "kube_ca_file: reading /nonexistent/ca.crt",
            ),
            (
                WatcherSettings {
                    kube_api_url: Some("https://10.96.0.1".into()),
                    kube_ca_file: Some("Cargo.toml".into()),
                    ..Default::default()
                },
                "kube_ca_file: Cargo.toml: holds no PEM certificate",
            ),
        ] {
            let error = settings.validate().expect_err(needle).to_string();
            assert!(error.contains(needle), "{error}");
        }
    }
}
