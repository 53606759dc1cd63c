//! Pod UID and container id → namespace, pod and container names, from the Kubernetes API.
//!
//! The watcher asks for one thing only: the pods on its own node
//! (`GET /api/v1/pods?fieldSelector=spec.nodeName=<node>`), with the in-cluster service account
//! (token and CA under `/var/run/secrets/kubernetes.io/serviceaccount`). It keeps the answer as a
//! cache and asks again only when a kill names a pod or container the cache does not know — a
//! container restarted since the last list has a new id — at most once per
//! [`MIN_REFRESH_INTERVAL`]. UIDs and container ids are never reused, so a cached answer is never
//! wrong, only possibly incomplete.
//!
//! Why `reqwest` and a dozen lines of serde rather than `kube` + `k8s-openapi`: one list call
//! needs no watch machinery, informers or the full generated API types (k8s-openapi alone is one
//! of the slowest crates to compile in the ecosystem and would multiply the binary's size);
//! reqwest with rustls is already in the workspace. The token file is re-read on every call
//! because the kubelet rotates projected service account tokens.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Deserialize;

/// Where the in-cluster service account credentials are mounted.
pub(crate) const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The shortest time between two pod lists.
pub(crate) const MIN_REFRESH_INTERVAL: Duration = Duration::from_millis(500);

/// How long one API call may take.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// The names a kill is reported under.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct PodNames {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub pod: String,
    /// The container's name, when the container id is known to the API.
    pub container: Option<String>,
}

/// Why the API could not be asked.
#[derive(Debug, thiserror::Error)]
pub(crate) enum KubeError {
    /// The client could not be built (bad CA file, …).
    #[error("Kubernetes API client: {0}")]
    Setup(String),
    /// The request failed.
    #[error("listing pods on node {node} from {url}: {source}")]
    Request {
        /// The node.
        node: String,
        /// The URL asked.
        url: String,
        /// The error.
        source: reqwest::Error,
    },
    /// The token file could not be read.
    #[error("reading the service account token {path:?}: {source}")]
    Token {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// How to reach the Kubernetes API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeApiSettings {
    /// Base URL, e.g. `https://10.96.0.1:443` or `http://127.0.0.1:8001` (`kubectl proxy`).
    pub url: String,
    /// Bearer token file, sent when it exists.
    pub token_file: Option<PathBuf>,
    /// PEM CA bundle to verify the API server with, instead of the system roots: read when the
    /// configuration is validated, so a missing or empty file is a configuration error rather
    /// than a silent fall-back to public roots.
    pub ca_file: Option<PathBuf>,
}

/// Reads and checks a PEM CA bundle: at least one certificate, every one well-formed.
pub(crate) fn read_ca_bundle(path: &Path) -> Result<Vec<reqwest::Certificate>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let certificates = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certificates.is_empty() {
        return Err(format!("{}: holds no PEM certificate", path.display()));
    }
    Ok(certificates)
}

impl KubeApiSettings {
    /// The in-cluster settings: `KUBERNETES_SERVICE_HOST`/`_PORT` and the service account mount.
    /// `None` outside a cluster.
    pub fn in_cluster() -> Option<KubeApiSettings> {
        let host = std::env::var("KUBERNETES_SERVICE_HOST").ok()?;
        let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".to_owned());
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        Some(KubeApiSettings {
            url: format!("https://{host}:{port}"),
            token_file: Some(PathBuf::from(SERVICE_ACCOUNT_DIR).join("token")),
            ca_file: Some(PathBuf::from(SERVICE_ACCOUNT_DIR).join("ca.crt")),
        })
    }
}

/// A client for the one call the watcher makes.
#[derive(Debug, Clone)]
pub(crate) struct KubeApi {
    client: reqwest::Client,
    pods_url: String,
    node: String,
    token_file: Option<PathBuf>,
}

impl KubeApi {
    /// Builds the client. The CA file must be readable when given.
    pub(crate) fn new(settings: &KubeApiSettings, node: &str) -> Result<KubeApi, KubeError> {
        let mut builder = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(REQUEST_TIMEOUT)
            .use_rustls_tls();
        if let Some(ca_file) = &settings.ca_file {
            let certificates = read_ca_bundle(ca_file).map_err(KubeError::Setup)?;
            builder = builder.tls_built_in_root_certs(false);
            for certificate in certificates {
                builder = builder.add_root_certificate(certificate);
            }
        }
        let client = builder
            .build()
            .map_err(|e| KubeError::Setup(e.to_string()))?;
        let base = settings.url.trim_end_matches('/');
        Ok(KubeApi {
            client,
            pods_url: format!("{base}/api/v1/pods"),
            node: node.to_owned(),
            token_file: settings.token_file.clone(),
        })
    }

    /// Lists the pods on this node.
    pub(crate) async fn list_pods(&self) -> Result<Vec<PodEntry>, KubeError> {
        let mut request = self
            .client
            .get(&self.pods_url)
            .query(&[("fieldSelector", format!("spec.nodeName={}", self.node))]);
        if let Some(path) = self.token_file.as_ref().filter(|p| p.exists()) {
            let token = std::fs::read_to_string(path).map_err(|source| KubeError::Token {
                path: path.clone(),
                source,
            })?;
            request = request.bearer_auth(token.trim());
        }
        let fail = |source| KubeError::Request {
            node: self.node.clone(),
            url: self.pods_url.clone(),
            source,
        };
        let list: PodList = request
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(fail)?
            .json()
            .await
            .map_err(fail)?;
        Ok(list.items.into_iter().map(PodEntry::from).collect())
    }
}

/// One pod, reduced to what identifies its kills.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PodEntry {
    /// UID.
    pub uid: String,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Container id (without the `containerd://` scheme) → container name, for current and
    /// previous instances of regular, init and ephemeral containers.
    pub containers: HashMap<String, String>,
}

impl From<Pod> for PodEntry {
    fn from(pod: Pod) -> PodEntry {
        let mut containers = HashMap::new();
        let statuses = pod
            .status
            .container_statuses
            .iter()
            .chain(&pod.status.init_container_statuses)
            .chain(&pod.status.ephemeral_container_statuses);
        for status in statuses {
            let ids = [
                status.container_id.as_deref(),
                status
                    .last_state
                    .terminated
                    .as_ref()
                    .and_then(|t| t.container_id.as_deref()),
            ];
            for id in ids.into_iter().flatten() {
                let id = id.split_once("://").map_or(id, |(_, id)| id);
                if !id.is_empty() {
                    containers.insert(id.to_ascii_lowercase(), status.name.clone());
                }
            }
        }
        PodEntry {
            uid: pod.metadata.uid.to_ascii_lowercase(),
            namespace: pod.metadata.namespace,
            name: pod.metadata.name,
            containers,
        }
    }
}

#[derive(Debug, Deserialize)]
struct PodList {
    #[serde(default)]
    items: Vec<Pod>,
}

/// The parts of a Pod the watcher reads.
#[derive(Debug, Deserialize)]
pub(crate) struct Pod {
    metadata: PodMetadata,
    #[serde(default)]
    status: PodStatus,
}

#[derive(Debug, Deserialize)]
struct PodMetadata {
    name: String,
    namespace: String,
    uid: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PodStatus {
    #[serde(default)]
    container_statuses: Vec<ContainerStatus>,
    #[serde(default)]
    init_container_statuses: Vec<ContainerStatus>,
    #[serde(default)]
    ephemeral_container_statuses: Vec<ContainerStatus>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ContainerStatus {
    name: String,
    #[serde(rename = "containerID", default)]
    container_id: Option<String>,
    #[serde(default)]
    last_state: ContainerState,
}

#[derive(Debug, Default, Deserialize)]
struct ContainerState {
    #[serde(default)]
    terminated: Option<TerminatedState>,
}

#[derive(Debug, Deserialize)]
struct TerminatedState {
    #[serde(rename = "containerID", default)]
    container_id: Option<String>,
}

/// The pods on this node, as last listed, refreshed when a kill names something unknown.
#[derive(Debug)]
pub(crate) struct PodDirectory {
    api: Option<KubeApi>,
    pods: HashMap<String, PodEntry>,
    last_refresh: Option<Instant>,
}

impl PodDirectory {
    /// A directory that asks `api`, or knows nothing when there is no API.
    pub(crate) fn new(api: Option<KubeApi>) -> PodDirectory {
        PodDirectory {
            api,
            pods: HashMap::new(),
            last_refresh: None,
        }
    }

    /// True when there is an API to ask.
    pub(crate) fn has_api(&self) -> bool {
        self.api.is_some()
    }

    /// Lists the pods now (at start-up, to have the cache warm before the first kill).
    pub(crate) async fn refresh(&mut self) -> Result<usize, KubeError> {
        let Some(api) = &self.api else {
            return Ok(0);
        };
        self.last_refresh = Some(Instant::now());
        let pods = api.list_pods().await?;
        self.pods = pods.into_iter().map(|p| (p.uid.clone(), p)).collect();
        Ok(self.pods.len())
    }

    /// The names for a pod UID and container id, listing the pods again when either is unknown.
    pub(crate) async fn lookup(
        &mut self,
        pod_uid: &str,
        container_id: Option<&str>,
    ) -> Option<PodNames> {
        let known = self.cached(pod_uid, container_id);
        let complete = known
            .as_ref()
            .is_some_and(|names| container_id.is_none() || names.container.is_some());
        if complete || self.api.is_none() {
            return known;
        }
        let may_refresh = self
            .last_refresh
            .is_none_or(|at| at.elapsed() >= MIN_REFRESH_INTERVAL);
        if may_refresh && let Err(error) = self.refresh().await {
            tracing::warn!(%error, "cannot list this node's pods; reporting the kill without names");
        }
        self.cached(pod_uid, container_id).or(known)
    }

    fn cached(&self, pod_uid: &str, container_id: Option<&str>) -> Option<PodNames> {
        let pod = self.pods.get(pod_uid)?;
        Some(PodNames {
            namespace: pod.namespace.clone(),
            pod: pod.name.clone(),
            container: container_id.and_then(|id| pod.containers.get(id).cloned()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_lists_reduce_to_entries_with_every_container_id() {
        let json = serde_json::json!({
            "kind": "PodList",
            "items": [{
                "metadata": {"name": "api-7f9", "namespace": "payments", "uid": "AB-CD"},
                "spec": {"nodeName": "n1"},
                "status": {
                    "containerStatuses": [{
                        "name": "app",
                        "containerID": "containerd://AAAA",
                        "lastState": {"terminated": {"containerID": "containerd://bbbb", "reason": "OOMKilled"}}
                    }, {"name": "waiting"}],
                    "initContainerStatuses": [{"name": "init", "containerID": "cri-o://cccc"}]
                }
            }, {
                "metadata": {"name": "pending", "namespace": "x", "uid": "ee"}
            }]
        });
        let list: PodList = serde_json::from_value(json).expect("parses");
        let entries: Vec<PodEntry> = list.items.into_iter().map(PodEntry::from).collect();
        assert_eq!(entries[0].uid, "ab-cd");
        assert_eq!(
            entries[0].containers.get("aaaa").map(String::as_str),
            Some("app")
        );
        assert_eq!(
            entries[0].containers.get("bbbb").map(String::as_str),
            Some("app")
        );
        assert_eq!(
            entries[0].containers.get("cccc").map(String::as_str),
            Some("init")
        );
        assert_eq!(entries[0].containers.len(), 3);
        assert!(entries[1].containers.is_empty());
    }

    #[tokio::test]
    async fn without_an_api_the_directory_knows_nothing() {
        let mut directory = PodDirectory::new(None);
        assert!(!directory.has_api());
        assert_eq!(directory.lookup("x", None).await, None);
        assert_eq!(directory.refresh().await.expect("no-op"), 0);
    }
}
