//! Shared by the end-to-end tests: memory cgroups shaped like the kubelet's, memory hogs, a fake
//! Kubernetes API, the watcher binary under test, and the checks that a kill was bonked once.
// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bonker_protocol::Bonk;
use bonker_tests::{ChildProcess, Probe, TestBroker, free_port};

pub(crate) const MEMORY_ROOT: &str = "/sys/fs/cgroup/memory";
pub(crate) const LIMIT_BYTES: u64 = 32 * 1024 * 1024;
pub(crate) const DEADLINE: Duration = Duration::from_secs(20);
/// The memory hog: `tail` keeps the last line of its input in memory, and /dev/zero has no line
/// ends, so it grows until the kernel kills it (in a few hundred milliseconds at 32 MiB).
pub(crate) const HOG: &str = "tail /dev/zero";
/// The hog's process name, as the kernel reports it.
pub(crate) const HOG_NAME: &str = "tail";

// ---------------------------------------------------------------------------------------------
// Memory cgroups

/// A per-test tree of memory cgroups, removed (with its processes killed) on drop.
pub(crate) struct CgroupTree {
    name: String,
}

impl CgroupTree {
    pub(crate) fn new(label: &str) -> CgroupTree {
        assert!(
            Path::new(MEMORY_ROOT).join("memory.oom_control").is_file(),
            "these tests need the cgroup v1 memory controller at {MEMORY_ROOT} (and root)"
        );
        let name = format!("bonker-watcher-test-{}-{label}", std::process::id());
        let tree = CgroupTree { name };
        std::fs::create_dir_all(tree.directory("")).expect("create the test cgroup root");
        tree
    }

    /// The cgroup's directory.
    pub(crate) fn directory(&self, relative: &str) -> PathBuf {
        Path::new(MEMORY_ROOT).join(&self.name).join(relative)
    }

    /// The path the kernel prints for it.
    pub(crate) fn kernel_path(&self, relative: &str) -> String {
        format!("/{}/{relative}", self.name)
    }

    /// Creates `relative` (and its parents).
    pub(crate) fn create(&self, relative: &str) -> PathBuf {
        let directory = self.directory(relative);
        std::fs::create_dir_all(&directory).expect("create cgroup");
        directory
    }

    /// Limits `relative` to `bytes` of memory, swap included.
    pub(crate) fn limit(&self, relative: &str, bytes: u64) {
        let directory = self.directory(relative);
        std::fs::write(directory.join("memory.limit_in_bytes"), bytes.to_string())
            .expect("set memory.limit_in_bytes");
        let swap = directory.join("memory.memsw.limit_in_bytes");
        if swap.exists() {
            std::fs::write(swap, bytes.to_string()).expect("set memory.memsw.limit_in_bytes");
        }
    }
}

impl Drop for CgroupTree {
    fn drop(&mut self) {
        let root = self.directory("");
        let mut directories = Vec::new();
        let mut stack = vec![root];
        while let Some(directory) = stack.pop() {
            if let Ok(entries) = std::fs::read_dir(&directory) {
                for entry in entries.flatten() {
                    if entry.file_type().is_ok_and(|t| t.is_dir()) {
                        stack.push(entry.path());
                    }
                }
            }
            directories.push(directory);
        }
        // Deepest first.
        directories.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for directory in &directories {
            let started = Instant::now();
            loop {
                let procs =
                    std::fs::read_to_string(directory.join("cgroup.procs")).unwrap_or_default();
                let pids: Vec<&str> = procs.split_whitespace().collect();
                if pids.is_empty() || started.elapsed() > Duration::from_secs(5) {
                    break;
                }
                let _ = Command::new("kill").arg("-9").args(&pids).status();
                std::thread::sleep(Duration::from_millis(20));
            }
            if let Err(error) = std::fs::remove_dir(directory) {
                eprintln!("cannot remove test cgroup {}: {error}", directory.display());
            }
        }
    }
}

/// Runs the memory hog in `cgroup` (the shell moves itself in, then becomes the hog).
pub(crate) fn spawn_hog(cgroup: &Path) -> Child {
    Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo $$ > {}/cgroup.procs && exec {HOG}",
            cgroup.display()
        ))
        .stdin(Stdio::null())
        .spawn()
        .expect("start the memory hog")
}

/// A shell in `cgroup` that runs the hog as its child and survives the child's death.
pub(crate) fn spawn_parent_with_hog_child(cgroup: &Path) -> ChildProcess {
    let mut command = Command::new("sh");
    command.arg("-c").arg(format!(
        "echo $$ > {}/cgroup.procs && {HOG}; echo \"child exited $?\"; exec sleep 120",
        cgroup.display()
    ));
    ChildProcess::spawn("parent shell", command)
}

/// Waits for the hog to die; returns when it was seen dead and how it died.
pub(crate) async fn hog_killed(mut hog: Child) -> (Instant, std::process::ExitStatus) {
    tokio::task::spawn_blocking(move || {
        let status = hog.wait().expect("wait for the hog");
        (Instant::now(), status)
    })
    .await
    .expect("waiter")
}

// ---------------------------------------------------------------------------------------------
// Identities

pub(crate) fn random_hex(length: usize) -> String {
    let mut out = String::new();
    let mut n = 0u64;
    while out.len() < length {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u64(n);
        out.push_str(&format!("{:016x}", hasher.finish()));
        n += 1;
    }
    out.truncate(length);
    out
}

pub(crate) fn random_uid() -> String {
    let hex = random_hex(32);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

// ---------------------------------------------------------------------------------------------
// A fake Kubernetes API: GET /api/v1/pods?fieldSelector=spec.nodeName=<node>

#[derive(Clone)]
pub(crate) struct FakeKubeApi {
    pub(crate) url: String,
    pub(crate) pods: Arc<Mutex<Vec<serde_json::Value>>>,
    pub(crate) requests: Arc<AtomicUsize>,
}

impl FakeKubeApi {
    pub(crate) async fn start(node: &str) -> FakeKubeApi {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake API");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let api = FakeKubeApi {
            url,
            pods: Arc::default(),
            requests: Arc::default(),
        };
        let state = (api.clone(), node.to_owned());
        let router = axum::Router::new()
            .route(
                "/api/v1/pods",
                axum::routing::get(
                    |axum::extract::State((api, node)): axum::extract::State<(FakeKubeApi, String)>,
                     axum::extract::Query(query): axum::extract::Query<std::collections::HashMap<String, String>>| async move {
                        api.requests.fetch_add(1, Ordering::SeqCst);
                        let wanted = format!("spec.nodeName={node}");
                        let items = if query.get("fieldSelector") == Some(&wanted) {
                            api.pods.lock().expect("pods").clone()
                        } else {
                            Vec::new()
                        };
                        axum::Json(serde_json::json!({"kind": "PodList", "apiVersion": "v1", "items": items}))
                    },
                ),
            )
            .with_state(state);
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        api
    }

    pub(crate) fn add_pod(
        &self,
        uid: &str,
        namespace: &str,
        name: &str,
        containers: &[(&str, &str)],
    ) {
        let statuses: Vec<serde_json::Value> = containers
            .iter()
            .map(|(name, id)| serde_json::json!({"name": name, "containerID": format!("containerd://{id}"), "ready": true}))
            .collect();
        self.pods.lock().expect("pods").push(serde_json::json!({
            "metadata": {"name": name, "namespace": namespace, "uid": uid},
            "spec": {"nodeName": "ignored-by-the-watcher"},
            "status": {"phase": "Running", "containerStatuses": statuses}
        }));
    }
}

// ---------------------------------------------------------------------------------------------
// The watcher under test

pub(crate) struct WatcherUnderTest {
    pub(crate) process: ChildProcess,
    pub(crate) metrics_url: String,
}

pub(crate) struct WatcherSetup<'a> {
    pub(crate) broker: &'a TestBroker,
    pub(crate) prefix: &'a str,
    pub(crate) node: &'a str,
    pub(crate) api: Option<&'a FakeKubeApi>,
    pub(crate) state_file: Option<&'a Path>,
    pub(crate) kmsg: Option<&'a str>,
}

impl WatcherUnderTest {
    pub(crate) fn start(setup: &WatcherSetup<'_>) -> WatcherUnderTest {
        let port = free_port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_bonker-watcher"));
        command
            .env_clear()
            .env("BONKER_LOG", "info,bonker_watcher=debug")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--node-name", setup.node])
            .args(["--mqtt", &setup.broker.url()])
            .args(["--prefix", setup.prefix])
            .args(["--cgroup-root", "/sys/fs/cgroup"]);
        if let Some(api) = setup.api {
            command.args(["--kube-api-url", &api.url]);
        }
        if let Some(state_file) = setup.state_file {
            command.arg("--state-file").arg(state_file);
        }
        if let Some(kmsg) = setup.kmsg {
            command.args(["--kmsg", kmsg]);
        }
        let mut process = ChildProcess::spawn("bonker-watcher", command);
        let ready = if setup.kmsg.is_some() {
            "cannot read the kernel log"
        } else {
            "following the kernel log"
        };
        process.wait_for_line(ready, DEADLINE);
        process.wait_for_line("connected to the MQTT broker", DEADLINE);
        WatcherUnderTest {
            process,
            metrics_url: format!("http://127.0.0.1:{port}/metrics"),
        }
    }

    pub(crate) async fn metrics(&self) -> String {
        reqwest::get(&self.metrics_url)
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics body")
    }

    /// The value of the first sample whose line starts with `series`.
    pub(crate) async fn sample(&self, series: &str) -> Option<f64> {
        self.metrics()
            .await
            .lines()
            .find(|line| line.starts_with(series))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|value| value.parse().ok())
    }

    /// True when every kill this watcher saw came with the kernel's `oom-kill:` summary (none
    /// was rate-limited away).
    pub(crate) async fn all_kills_had_a_summary(&self) -> bool {
        self.sample("bonker_watcher_kills_without_cgroup_total")
            .await
            .unwrap_or(0.0)
            == 0.0
    }

    /// Waits until the watcher has read the cgroup counters twice more, so every kill that
    /// happened before this call has been counted and matched.
    pub(crate) async fn settle(&self) {
        let series = "bonker_watcher_cgroup_scans_total";
        let start = self.sample(series).await.unwrap_or(0.0);
        let started = Instant::now();
        while self.sample(series).await.unwrap_or(0.0) < start + 2.0 {
            assert!(
                started.elapsed() < DEADLINE,
                "the watcher stopped reading the cgroup counters"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// After [`Self::settle`]: no counted kill waits for a kernel log line, so none will be
    /// reported a second time from the counter.
    pub(crate) async fn assert_nothing_unexplained(&self) {
        self.settle().await;
        assert_eq!(
            self.sample("bonker_watcher_unexplained_counter_kills")
                .await,
            Some(0.0),
            "{}",
            self.metrics().await
        );
    }
}

/// Asserts that the next message on `topic` is a fresh sentinel: nothing else was queued.
pub(crate) async fn assert_next_is_sentinel(
    probe: &mut Probe,
    topic: &str,
    ours: impl Fn(&Bonk) -> bool,
) {
    let sentinel = format!(
        "{{\"id\":\"sentinel-{}\",\"source\":\"manual\"}}",
        random_hex(8)
    );
    probe.publish(topic, sentinel.clone(), false).await;
    let next = probe
        .next_on(|m| {
            m.topic == topic
                && (m.text() == sentinel
                    || serde_json::from_slice::<Bonk>(&m.payload).is_ok_and(|b| ours(&b)))
        })
        .await;
    assert_eq!(
        next.text(),
        sentinel,
        "a second bonk for the same kill arrived"
    );
}

pub(crate) fn bonk_of(message: &bonker_tests::Message) -> Bonk {
    serde_json::from_slice(&message.payload)
        .unwrap_or_else(|e| panic!("not a bonk on {}: {e}: {}", message.topic, message.text()))
}

/// Prints how long the kill took to become a bonk: from the moment the test saw the hog reaped
/// (negative when the bonk was faster than the reaping), and from the kernel's own timestamp of
/// the kill record (`fired_at`), when the bonk came from the kernel log.
pub(crate) fn report(test: &str, died_at: Instant, received_at: Instant, bonk: &Bonk) {
    let exit_to_bonk_ms = if received_at >= died_at {
        received_at.duration_since(died_at).as_secs_f64() * 1000.0
    } else {
        -(died_at.duration_since(received_at).as_secs_f64() * 1000.0)
    };
    let kernel = match (&bonk.process, bonk.fired_at) {
        (Some(_), Some(fired)) => format!(
            "; kernel record -> bonk received {:.1} ms",
            (chrono::Utc::now() - fired).num_microseconds().unwrap_or(0) as f64 / 1000.0
        ),
        _ => String::new(),
    };
    eprintln!("[timing] {test}: hog reaped -> bonk received {exit_to_bonk_ms:+.1} ms{kernel}");
}
