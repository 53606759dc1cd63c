//! Real OOM kills, end to end: memory cgroups laid out as the kubelet lays them out, a memory hog
//! the kernel kills for exceeding `memory.limit_in_bytes`, the real `bonker-watcher` binary
//! reading the real `/dev/kmsg` and cgroup counters, a fake Kubernetes API (a PodList on a
//! loopback port), and a real MQTT broker with a probe subscribed to the namespace topic.
//!
//! Each test asserts exactly one bonk per kill, with the right identity. "Exactly one" is
//! checked without sleeping: after the bonk, the test waits until the watcher has read the cgroup
//! counters twice more (its `cgroup_scans` metric), so the counters have seen the kill; no counted
//! kill may then be left unexplained, and a sentinel published afterwards must be the next message.
//!
//! The tests need root and the cgroup v1 memory controller at `/sys/fs/cgroup/memory` (the test
//! machines have both). Every cgroup lives under a per-test parent that is removed on drop, with
//! any process still in it killed first, so a failing test leaves nothing behind.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bonker_protocol::{Bonk, Source};
use bonker_tests::{BrokerKind, ChildProcess, Probe, TestBroker, free_port};

const MEMORY_ROOT: &str = "/sys/fs/cgroup/memory";
const LIMIT_BYTES: u64 = 32 * 1024 * 1024;
const DEADLINE: Duration = Duration::from_secs(20);
/// Allocates 4 MiB at a time until the kernel kills it.
const HOG: &str = "l = []\nwhile True:\n    l.append(bytearray(4 << 20))\n";

// ---------------------------------------------------------------------------------------------
// Memory cgroups

/// A per-test tree of memory cgroups, removed (with its processes killed) on drop.
struct CgroupTree {
    name: String,
}

impl CgroupTree {
    fn new(label: &str) -> CgroupTree {
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
    fn directory(&self, relative: &str) -> PathBuf {
        Path::new(MEMORY_ROOT).join(&self.name).join(relative)
    }

    /// The path the kernel prints for it.
    fn kernel_path(&self, relative: &str) -> String {
        format!("/{}/{relative}", self.name)
    }

    /// Creates `relative` (and its parents).
    fn create(&self, relative: &str) -> PathBuf {
        let directory = self.directory(relative);
        std::fs::create_dir_all(&directory).expect("create cgroup");
        directory
    }

    /// Limits `relative` to `bytes` of memory, swap included.
    fn limit(&self, relative: &str, bytes: u64) {
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

/// Runs the memory hog in `cgroup` (the shell moves itself in, then becomes python).
fn spawn_hog(cgroup: &Path) -> Child {
    Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo $$ > {}/cgroup.procs && exec python3 -c '{HOG}'",
            cgroup.display()
        ))
        .stdin(Stdio::null())
        .spawn()
        .expect("start the memory hog")
}

/// A shell in `cgroup` that runs the hog as its child and survives the child's death.
fn spawn_parent_with_hog_child(cgroup: &Path) -> ChildProcess {
    let mut command = Command::new("sh");
    command.arg("-c").arg(format!(
        "echo $$ > {}/cgroup.procs && python3 -c '{HOG}'; echo \"child exited $?\"; exec sleep 120",
        cgroup.display()
    ));
    ChildProcess::spawn("parent shell", command)
}

/// Waits for the hog to die; returns when it was seen dead and how it died.
async fn hog_killed(mut hog: Child) -> (Instant, std::process::ExitStatus) {
    tokio::task::spawn_blocking(move || {
        let status = hog.wait().expect("wait for the hog");
        (Instant::now(), status)
    })
    .await
    .expect("waiter")
}

// ---------------------------------------------------------------------------------------------
// Identities

fn random_hex(length: usize) -> String {
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

fn random_uid() -> String {
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
struct FakeKubeApi {
    url: String,
    pods: Arc<Mutex<Vec<serde_json::Value>>>,
    requests: Arc<AtomicUsize>,
}

impl FakeKubeApi {
    async fn start(node: &str) -> FakeKubeApi {
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

    fn add_pod(&self, uid: &str, namespace: &str, name: &str, containers: &[(&str, &str)]) {
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

struct WatcherUnderTest {
    process: ChildProcess,
    metrics_url: String,
}

struct WatcherSetup<'a> {
    broker: &'a TestBroker,
    prefix: &'a str,
    node: &'a str,
    api: Option<&'a FakeKubeApi>,
    state_file: Option<&'a Path>,
    kmsg: Option<&'a str>,
}

impl WatcherUnderTest {
    fn start(setup: &WatcherSetup<'_>) -> WatcherUnderTest {
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

    async fn metrics(&self) -> String {
        reqwest::get(&self.metrics_url)
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics body")
    }

    /// The value of the first sample whose line starts with `series`.
    async fn sample(&self, series: &str) -> Option<f64> {
        self.metrics()
            .await
            .lines()
            .find(|line| line.starts_with(series))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|value| value.parse().ok())
    }

    /// Waits until the watcher has read the cgroup counters twice more, so every kill that
    /// happened before this call has been counted and matched.
    async fn settle(&self) {
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
    async fn assert_nothing_unexplained(&self) {
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
async fn assert_next_is_sentinel(probe: &mut Probe, topic: &str, ours: impl Fn(&Bonk) -> bool) {
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

fn bonk_of(message: &bonker_tests::Message) -> Bonk {
    serde_json::from_slice(&message.payload)
        .unwrap_or_else(|e| panic!("not a bonk on {}: {e}: {}", message.topic, message.text()))
}

/// Prints how long the kill took to become a bonk: from the moment the test saw the hog reaped
/// (negative when the bonk was faster than the reaping), and from the kernel's own timestamp of
/// the kill record (`fired_at`), when the bonk came from the kernel log.
fn report(test: &str, died_at: Instant, received_at: Instant, bonk: &Bonk) {
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

// ---------------------------------------------------------------------------------------------
// The tests

/// cgroupfs driver, Burstable pod, containerd-style bare container id, limit on the container:
/// the killed process is bonked once on its namespace topic with pod, container and process.
async fn a_killed_container_process_is_bonked_once_with_its_identity(kind: BrokerKind) {
    let label = format!("cgroupfs-{kind}").to_lowercase();
    let tree = CgroupTree::new(&label);
    let (uid, container_id) = (random_uid(), random_hex(64));
    let container = format!("kubepods/burstable/pod{uid}/{container_id}");
    let directory = tree.create(&container);
    tree.limit(&container, LIMIT_BYTES);

    let node = format!("node-{label}");
    let api = FakeKubeApi::start(&node).await;
    api.add_pod(&uid, "payments", "api-7f9c", &[("app", &container_id)]);
    let broker = TestBroker::start(kind);
    let prefix = format!("wtest/{label}");
    let topic = format!("{prefix}/bonk/payments");
    let mut probe = Probe::connect(&broker.url(), &[&topic]).await;
    let watcher = WatcherUnderTest::start(&WatcherSetup {
        broker: &broker,
        prefix: &prefix,
        node: &node,
        api: Some(&api),
        state_file: None,
        kmsg: None,
    });

    let (died_at, status) = hog_killed(spawn_hog(&directory)).await;
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "the kernel kills the hog"
    );
    let message = probe.next_on(|m| m.topic == topic).await;
    let received_at = Instant::now();
    let bonk = bonk_of(&message);
    report(
        &format!("container kill ({kind})"),
        died_at,
        received_at,
        &bonk,
    );

    assert_eq!(bonk.source, Source::Watcher);
    assert_eq!(bonk.severity, bonker_protocol::Severity::Critical);
    assert_eq!(bonk.namespace.as_deref(), Some("payments"));
    assert_eq!(bonk.pod.as_deref(), Some("api-7f9c"));
    assert_eq!(bonk.container.as_deref(), Some("app"));
    assert_eq!(bonk.process.as_deref(), Some("python3"));
    assert_eq!(bonk.node.as_deref(), Some(node.as_str()));
    assert_eq!(bonk.reason.as_deref(), Some("OOMKilled"));
    let summary = bonk.summary.clone().unwrap_or_default();
    assert!(
        summary.contains("payments/api-7f9c/app") && summary.contains("container's memory limit"),
        "{summary}"
    );

    watcher.assert_nothing_unexplained().await;
    assert_next_is_sentinel(&mut probe, &topic, |b| b.pod.as_deref() == Some("api-7f9c")).await;
    let metrics = watcher.metrics().await;
    assert!(
        metrics.contains(r#"bonker_watcher_oom_kills_total{namespace="payments",pod="api-7f9c",container="app",process="python3"} 1"#),
        "{metrics}"
    );
    assert!(api.requests.load(Ordering::SeqCst) >= 1);
    drop(tree);
}

/// systemd driver, Guaranteed pod, `cri-containerd-<id>.scope`, limit on the pod slice: a shell
/// whose python child is killed survives (nothing restarts, kube-state-metrics sees nothing), and
/// the child's kill is bonked once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_killed_while_its_parent_survives_is_bonked_once() {
    let tree = CgroupTree::new("child");
    let (uid, container_id) = (random_uid(), random_hex(64));
    let pod = format!("kubepods.slice/kubepods-pod{}.slice", uid.replace('-', "_"));
    let container = format!("{pod}/cri-containerd-{container_id}.scope");
    let directory = tree.create(&container);
    tree.limit(&pod, LIMIT_BYTES);

    let node = "node-child";
    let api = FakeKubeApi::start(node).await;
    api.add_pod(
        &uid,
        "logging",
        "fluentd-x2k4p",
        &[("fluentd", &container_id)],
    );
    let broker = TestBroker::start(BrokerKind::Mosquitto);
    let prefix = "wtest/child";
    let topic = format!("{prefix}/bonk/logging");
    let mut probe = Probe::connect(&broker.url(), &[&topic]).await;
    let watcher = WatcherUnderTest::start(&WatcherSetup {
        broker: &broker,
        prefix,
        node,
        api: Some(&api),
        state_file: None,
        kmsg: None,
    });

    let mut parent = spawn_parent_with_hog_child(&directory);
    let waiter = tokio::task::spawn_blocking(move || {
        let line = parent.wait_for_line("child exited", DEADLINE);
        (parent, Instant::now(), line)
    });
    let message = probe.next_on(|m| m.topic == topic).await;
    let received_at = Instant::now();
    let (mut parent, died_at, line) = waiter.await.expect("waiter");
    assert_eq!(line.trim(), "child exited 137", "the child was SIGKILLed");
    assert_eq!(parent.try_status(), None, "the parent survives its child");
    let bonk = bonk_of(&message);
    report("child kill, parent survives", died_at, received_at, &bonk);

    assert_eq!(
        (
            bonk.namespace.as_deref(),
            bonk.pod.as_deref(),
            bonk.container.as_deref(),
            bonk.process.as_deref()
        ),
        (
            Some("logging"),
            Some("fluentd-x2k4p"),
            Some("fluentd"),
            Some("python3")
        )
    );
    let summary = bonk.summary.clone().unwrap_or_default();
    assert!(summary.contains("pod's memory limit"), "{summary}");
    watcher.assert_nothing_unexplained().await;
    assert_next_is_sentinel(&mut probe, &topic, |b| {
        b.pod.as_deref() == Some("fluentd-x2k4p")
    })
    .await;
    parent.kill();
}

/// A restart resumes from the state file: the kill reported before the restart is not reported
/// again (the next bonk after the restart is the next kill's), and the resume point names this
/// boot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_without_reporting_again() {
    let tree = CgroupTree::new("restart");
    let (uid, container_id) = (random_uid(), random_hex(64));
    let container = format!("kubepods/besteffort/pod{uid}/crio-{container_id}");
    let directory = tree.create(&container);
    tree.limit(&container, LIMIT_BYTES);
    let node = "node-restart";
    let api = FakeKubeApi::start(node).await;
    api.add_pod(&uid, "batch", "etl-0", &[("etl", &container_id)]);
    let broker = TestBroker::start(BrokerKind::Mosquitto);
    let prefix = "wtest/restart";
    let topic = format!("{prefix}/bonk/batch");
    let mut probe = Probe::connect(&broker.url(), &[&topic]).await;
    let state_dir = tempfile::tempdir().expect("tempdir");
    let state_file = state_dir.path().join("state.json");
    let setup = WatcherSetup {
        broker: &broker,
        prefix,
        node,
        api: Some(&api),
        state_file: Some(&state_file),
        kmsg: None,
    };

    let mut watcher = WatcherUnderTest::start(&setup);
    let (died_at, _) = hog_killed(spawn_hog(&directory)).await;
    let first = bonk_of(&probe.next_on(|m| m.topic == topic).await);
    report("before restart", died_at, Instant::now(), &first);
    assert_eq!(first.container.as_deref(), Some("etl"));
    watcher.process.signal(rustix::process::Signal::TERM);
    assert!(
        watcher.process.wait_exit(DEADLINE).success(),
        "{}",
        watcher.process.output()
    );

    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state_file).expect("state file written"))
            .expect("state file is JSON");
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").expect("boot id");
    assert_eq!(state["boot_id"].as_str(), Some(boot_id.trim()));
    assert!(state["last_seq"].as_u64().is_some_and(|s| s > 0));

    let watcher = WatcherUnderTest::start(&setup);
    let (died_at, _) = hog_killed(spawn_hog(&directory)).await;
    let second = bonk_of(&probe.next_on(|m| m.topic == topic).await);
    report("after restart", died_at, Instant::now(), &second);
    assert_ne!(
        second.id, first.id,
        "the first kill was reported again after the restart"
    );
    assert!(second.fired_at > first.fired_at);
    watcher.assert_nothing_unexplained().await;
    assert_next_is_sentinel(&mut probe, &topic, |b| b.pod.as_deref() == Some("etl-0")).await;
    let metrics = watcher.metrics().await;
    assert!(
        metrics.contains(r#"bonker_watcher_oom_kills_total{namespace="batch",pod="etl-0",container="etl",process="python3"} 1"#),
        "only the new kill is counted by the restarted watcher: {metrics}"
    );
}

/// A kill outside Kubernetes goes to the default namespace topic, named by its cgroup path and
/// process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_outside_kubernetes_names_its_cgroup_and_process() {
    let tree = CgroupTree::new("host");
    let service = "system.slice/nightly-report.service";
    let directory = tree.create(service);
    tree.limit(service, LIMIT_BYTES);
    let kernel_path = tree.kernel_path(service);
    let node = "node-host";
    let api = FakeKubeApi::start(node).await;
    let broker = TestBroker::start(BrokerKind::Mosquitto);
    let prefix = "wtest/host";
    let topic = format!("{prefix}/bonk/default");
    let mut probe = Probe::connect(&broker.url(), &[&topic]).await;
    let watcher = WatcherUnderTest::start(&WatcherSetup {
        broker: &broker,
        prefix,
        node,
        api: Some(&api),
        state_file: None,
        kmsg: None,
    });

    let (died_at, _) = hog_killed(spawn_hog(&directory)).await;
    // Kills of other tests running at the same time land on this topic too: pick ours.
    let ours = |b: &Bonk| {
        b.summary
            .as_deref()
            .is_some_and(|s| s.contains(&kernel_path))
    };
    let message = probe
        .next_on(|m| serde_json::from_slice::<Bonk>(&m.payload).is_ok_and(|b| ours(&b)))
        .await;
    let bonk = bonk_of(&message);
    report("kill outside Kubernetes", died_at, Instant::now(), &bonk);
    assert_eq!(bonk.namespace, None);
    assert_eq!(bonk.pod, None);
    assert_eq!(bonk.process.as_deref(), Some("python3"));
    assert_eq!(bonk.node.as_deref(), Some(node));
    watcher.assert_nothing_unexplained().await;
    assert_next_is_sentinel(&mut probe, &topic, ours).await;
}

/// Without the kernel log (as in a container whose device cgroup denies `/dev/kmsg`), the memory
/// cgroup counters alone still bonk every kill once, with pod and container, without a process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_kernel_log_the_cgroup_counters_still_bonk() {
    let tree = CgroupTree::new("counters");
    let (uid, container_id) = (random_uid(), random_hex(64));
    let pod = format!(
        "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice",
        uid.replace('-', "_")
    );
    let container = format!("{pod}/crio-{container_id}.scope");
    let directory = tree.create(&container);
    tree.limit(&container, LIMIT_BYTES);
    let node = "node-counters";
    let api = FakeKubeApi::start(node).await;
    api.add_pod(&uid, "search", "indexer-5", &[("indexer", &container_id)]);
    let broker = TestBroker::start(BrokerKind::Mosquitto);
    let prefix = "wtest/counters";
    let topic = format!("{prefix}/bonk/search");
    let mut probe = Probe::connect(&broker.url(), &[&topic]).await;
    let watcher = WatcherUnderTest::start(&WatcherSetup {
        broker: &broker,
        prefix,
        node,
        api: Some(&api),
        state_file: None,
        kmsg: Some("/nonexistent/kmsg"),
    });

    for round in 0..2 {
        let (died_at, _) = hog_killed(spawn_hog(&directory)).await;
        let bonk = bonk_of(&probe.next_on(|m| m.topic == topic).await);
        report(
            &format!("counters only, kill {}", round + 1),
            died_at,
            Instant::now(),
            &bonk,
        );
        assert_eq!(
            (
                bonk.namespace.as_deref(),
                bonk.pod.as_deref(),
                bonk.container.as_deref(),
                bonk.process.as_deref()
            ),
            (Some("search"), Some("indexer-5"), Some("indexer"), None)
        );
        assert!(
            bonk.summary
                .as_deref()
                .is_some_and(|s| s.contains("memory cgroup counter"))
        );
        watcher.assert_nothing_unexplained().await;
        assert_next_is_sentinel(&mut probe, &topic, |b| {
            b.pod.as_deref() == Some("indexer-5")
        })
        .await;
    }
    let metrics = watcher.metrics().await;
    assert!(
        metrics.contains("bonker_watcher_kernel_log_readable 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"bonker_watcher_counter_only_detections_total{namespace="search",pod="indexer-5",container="indexer"} 2"#),
        "{metrics}"
    );
}

mod bonker_broker {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_killed_container_process_is_bonked_once_with_its_identity() {
        super::a_killed_container_process_is_bonked_once_with_its_identity(
            bonker_tests::BrokerKind::Bonker,
        )
        .await;
    }
}

mod mosquitto {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_killed_container_process_is_bonked_once_with_its_identity() {
        super::a_killed_container_process_is_bonked_once_with_its_identity(
            bonker_tests::BrokerKind::Mosquitto,
        )
        .await;
    }
}
