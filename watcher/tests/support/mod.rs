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

/// Removes an emptied cgroup at once, as the runtime does when a container's last process has
/// exited (the kernel may still hold it busy for a moment after the process was reaped).
pub(crate) fn remove_cgroup(cgroup: &Path) {
    let started = Instant::now();
    loop {
        match std::fs::remove_dir(cgroup) {
            Ok(()) => return,
            Err(error) if error.raw_os_error() == Some(16) && started.elapsed() < DEADLINE => {
                std::thread::yield_now();
            }
            Err(error) => panic!("cannot remove {}: {error}", cgroup.display()),
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
    /// A kernel log path the watcher cannot read (it then runs on the cgroup counters alone);
    /// `None`: the machine's `/dev/kmsg`.
    pub(crate) kmsg: Option<&'a str>,
}

/// What fewer tests need, beside [`WatcherSetup`].
#[derive(Default)]
pub(crate) struct MoreSetup<'a> {
    /// A replayed kernel log instead of the machine's.
    pub(crate) replay: Option<&'a KernelLogReplay>,
    /// The cgroup mount (default: the machine's `/sys/fs/cgroup`).
    pub(crate) cgroup_root: Option<&'a Path>,
    pub(crate) cluster: Option<&'a str>,
    /// Interval between counter readings (default: the watcher's 500 ms).
    pub(crate) scan_interval_ms: Option<u64>,
    /// Kills older than this in the ring buffer at start are history, not bonked (default: the
    /// watcher's 300 s).
    pub(crate) max_event_age_s: Option<u64>,
}

impl WatcherUnderTest {
    pub(crate) fn start(setup: &WatcherSetup<'_>) -> WatcherUnderTest {
        WatcherUnderTest::start_with(setup, &MoreSetup::default())
    }

    pub(crate) fn start_with(setup: &WatcherSetup<'_>, more: &MoreSetup<'_>) -> WatcherUnderTest {
        let port = free_port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_bonker-watcher"));
        command
            .env_clear()
            .env("BONKER_LOG", "info,bonker_watcher=debug")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--node-name", setup.node])
            .args(["--mqtt", &setup.broker.url()])
            .args(["--prefix", setup.prefix])
            .arg("--cgroup-root")
            .arg(more.cgroup_root.unwrap_or(Path::new("/sys/fs/cgroup")));
        if let Some(api) = setup.api {
            command.args(["--kube-api-url", &api.url]);
        }
        if let Some(state_file) = setup.state_file {
            command.arg("--state-file").arg(state_file);
        }
        if let Some(cluster) = more.cluster {
            command.args(["--cluster", cluster]);
        }
        if let Some(interval) = more.scan_interval_ms {
            command.env("BONKER_CGROUP_SCAN_INTERVAL_MS", interval.to_string());
        }
        if let Some(age) = more.max_event_age_s {
            command.env("BONKER_MAX_EVENT_AGE_S", age.to_string());
        }
        let unreadable = match (more.replay, setup.kmsg) {
            (Some(replay), _) => {
                command.arg("--kmsg").arg(replay.path());
                false
            }
            (None, Some(kmsg)) => {
                command.args(["--kmsg", kmsg]);
                true
            }
            (None, None) => false,
        };
        let mut process = ChildProcess::spawn("bonker-watcher", command);
        let ready = if unreadable {
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
        self.scans(2).await;
    }

    /// How many times the watcher has read the cgroup counters since its baseline.
    pub(crate) async fn scans_so_far(&self) -> f64 {
        self.sample("bonker_watcher_cgroup_scans_total")
            .await
            .unwrap_or(0.0)
    }

    /// Waits until the watcher has read the cgroup counters `count` more times.
    pub(crate) async fn scans(&self, count: u32) {
        let series = "bonker_watcher_cgroup_scans_total";
        let start = self.sample(series).await.unwrap_or(0.0);
        let started = Instant::now();
        while self.sample(series).await.unwrap_or(0.0) < start + f64::from(count) {
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

// ---------------------------------------------------------------------------------------------
// Recorded kernel logs, replayed

/// The kernel messages of a `*.txt` fixture (comments and blank lines left out).
pub(crate) fn fixture_messages(name: &str) -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A named pipe the watcher reads as its kernel log, fed with kernel messages as `/dev/kmsg`
/// records of the kernel facility, stamped with the kernel's clock at the time of writing (so
/// the watcher treats them as kills happening now, not as history). This is how a test shows
/// the watcher a node-wide OOM, which no test machine can safely have.
pub(crate) struct KernelLogReplay {
    directory: tempfile::TempDir,
    writer: std::fs::File,
    next_seq: u64,
}

impl KernelLogReplay {
    pub(crate) fn new() -> KernelLogReplay {
        let directory = tempfile::tempdir().expect("tempdir");
        let path = directory.path().join("kmsg");
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            &path,
            rustix::fs::Mode::from_raw_mode(0o600),
        )
        .expect("mkfifo");
        // Opened for reading and writing, the pipe neither blocks this open nor the watcher's,
        // and never reaches end of file while the test holds it.
        let writer = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .expect("open the pipe");
        KernelLogReplay {
            directory,
            writer,
            next_seq: 1,
        }
    }

    pub(crate) fn path(&self) -> PathBuf {
        self.directory.path().join("kmsg")
    }

    /// Writes `messages` as kernel records, one write each (as the kernel would), now.
    pub(crate) fn write<S: AsRef<str>>(&mut self, messages: &[S]) {
        use std::io::Write as _;
        for message in messages {
            let message = message.as_ref();
            let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
            let timestamp_us = now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1_000;
            // Facility 0 (kernel); kill lines at error level, the rest at warning, as printed.
            let level = if message.contains("Killed process") {
                3
            } else {
                4
            };
            let record = format!("{level},{},{timestamp_us},-;{message}\n", self.next_seq);
            self.next_seq += 1;
            self.writer
                .write_all(record.as_bytes())
                .expect("write a kernel record");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A cgroup v2 node's tree, from a `*.tree` fixture

/// A cgroup of a tree fixture and what its path must be identified as.
pub(crate) struct FixtureCgroup {
    /// The path, as the kernel prints it (`/kubepods.slice/…`).
    pub(crate) path: String,
    /// `pod`, `container`, `qos`, `runtime`, `monitor`, as the fixture says.
    pub(crate) expect: std::collections::BTreeMap<String, String>,
}

/// A cgroup v2 hierarchy laid out in a temporary directory as a real node's is: the root's
/// `cgroup.controllers` lists `memory`, every cgroup has the interface files of a 6.x kernel,
/// and the OOM counters change the way the kernel changes them.
pub(crate) struct CgroupV2Node {
    directory: tempfile::TempDir,
    pub(crate) cgroups: Vec<FixtureCgroup>,
}

const V2_CONTROLLERS: &str = "cpuset cpu io memory hugetlb pids rdma misc\n";
const V2_EVENTS: &str = "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n";

impl CgroupV2Node {
    pub(crate) fn materialize(fixture: &str) -> CgroupV2Node {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(fixture);
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let directory = tempfile::tempdir().expect("tempdir");
        let root = directory.path();
        for (file, contents) in [
            ("cgroup.controllers", V2_CONTROLLERS),
            ("cgroup.subtree_control", V2_CONTROLLERS),
            ("cgroup.procs", ""),
            ("memory.stat", ""),
            (
                "memory.pressure",
                "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
            ),
        ] {
            std::fs::write(root.join(file), contents).expect("write a root file");
        }
        let mut cgroups = Vec::new();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let mut words = line.split_whitespace();
            let relative = words.next().expect("a path");
            let cgroup_dir = root.join(relative);
            std::fs::create_dir_all(&cgroup_dir).expect("create a cgroup");
            let mut files: Vec<(String, String)> = [
                ("cgroup.controllers", V2_CONTROLLERS),
                ("cgroup.subtree_control", ""),
                ("cgroup.procs", ""),
                ("cgroup.type", "domain\n"),
                ("cgroup.events", "populated 0\nfrozen 0\n"),
                ("memory.current", "0\n"),
                ("memory.min", "0\n"),
                ("memory.low", "0\n"),
                ("memory.high", "max\n"),
                ("memory.max", "max\n"),
                ("memory.swap.max", "max\n"),
                ("memory.oom.group", "0\n"),
                ("memory.events", V2_EVENTS),
                ("memory.events.local", V2_EVENTS),
                ("memory.stat", ""),
            ]
            .iter()
            .map(|(f, c)| ((*f).to_owned(), (*c).to_owned()))
            .collect();
            let mut expect = std::collections::BTreeMap::new();
            for word in words {
                let (key, value) = word.split_once('=').expect("key=value");
                if key.contains('.') {
                    files.retain(|(f, _)| f != key);
                    files.push((key.to_owned(), format!("{value}\n")));
                } else {
                    expect.insert(key.to_owned(), value.to_owned());
                }
            }
            for (file, contents) in files {
                std::fs::write(cgroup_dir.join(file), contents).expect("write a cgroup file");
            }
            cgroups.push(FixtureCgroup {
                path: format!("/{relative}"),
                expect,
            });
        }
        CgroupV2Node { directory, cgroups }
    }

    /// The cgroup2 mount.
    pub(crate) fn root(&self) -> &Path {
        self.directory.path()
    }

    /// The one cgroup whose path ends with `suffix`.
    pub(crate) fn cgroup(&self, suffix: &str) -> String {
        let found: Vec<&FixtureCgroup> = self
            .cgroups
            .iter()
            .filter(|c| c.path.ends_with(suffix))
            .collect();
        assert_eq!(found.len(), 1, "cgroups ending with {suffix}");
        found[0].path.clone()
    }

    /// One process of `cgroup` killed, counted as the kernel counts it: in the cgroup's
    /// `memory.events.local`, then in `memory.events` of the cgroup and each ancestor below the
    /// root.
    pub(crate) fn count_kill(&self, cgroup: &str) {
        self.count(cgroup, "oom_kill");
    }

    /// A `memory.oom.group` kill of `group` counted, as the kernel does after the victim's kill
    /// and before the other processes'.
    pub(crate) fn count_group_kill(&self, group: &str) {
        self.count(group, "oom_group_kill");
    }

    /// Removes `cgroup` and everything below it, as the runtime does when a container ends.
    pub(crate) fn remove(&self, cgroup: &str) {
        std::fs::remove_dir_all(self.directory_of(cgroup)).expect("remove a cgroup");
    }

    fn directory_of(&self, cgroup: &str) -> PathBuf {
        self.root().join(cgroup.trim_start_matches('/'))
    }

    fn count(&self, cgroup: &str, key: &str) {
        bump(&self.directory_of(cgroup).join("memory.events.local"), key);
        let mut current = Some(cgroup.trim_end_matches('/'));
        while let Some(path) = current.filter(|p| !p.is_empty()) {
            bump(&self.directory_of(path).join("memory.events"), key);
            current = path.rsplit_once('/').map(|(parent, _)| parent);
        }
    }
}

/// Adds one to `key` in a flat-keyed file, replacing the file atomically (a reader sees the old
/// contents or the new, never half of them).
fn bump(file: &Path, key: &str) {
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let mut found = false;
    let updated: String = text
        .lines()
        .map(|line| match line.split_once(' ') {
            Some((k, v)) if k == key => {
                found = true;
                format!("{k} {}\n", v.trim().parse::<u64>().expect("a count") + 1)
            }
            _ => format!("{line}\n"),
        })
        .collect();
    assert!(found, "{} has no {key}", file.display());
    let temporary = file.with_extension("bump");
    std::fs::write(&temporary, updated).expect("write");
    std::fs::rename(&temporary, file).expect("rename");
}
