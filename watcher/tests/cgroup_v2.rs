//! cgroup v2 nodes, as the kubelet lays them out with the systemd and cgroupfs drivers and
//! containerd, CRI-O and Docker (`fixtures/cgroup-v2-*.tree`), built in a temporary directory:
//! every container and pod cgroup is identified, and the OOM counters — `memory.events` and
//! `memory.events.local`, with `oom_kill` and `oom_group_kill`, changed the way the kernel changes
//! them — yield one OOM event per kill, one per `memory.oom.group` kill however many processes it
//! took, and still one when the container's cgroup is removed before the next reading.
//!
//! The test machines run cgroup v1, so these counters are written by the tests; the kills behind
//! them are real in `oom_kills.rs`.

mod support;

use std::path::Path;

use bonker_protocol::{Detector, Limit, Source};
use bonker_tests::{BrokerKind, Probe, TestBroker};
use bonker_watcher::cgroup::{CounterSource, CounterTracker, Counters, Hierarchy};
use bonker_watcher::identity::{QosClass, Runtime, identify};
use support::{
    CgroupV2Node, FakeKubeApi, MoreSetup, WatcherSetup, WatcherUnderTest, assert_next_is_sentinel,
    bonk_of,
};

const TREES: [&str; 4] = [
    "cgroup-v2-systemd-containerd.tree",
    "cgroup-v2-systemd-crio.tree",
    "cgroup-v2-systemd-docker.tree",
    "cgroup-v2-cgroupfs-containerd.tree",
];

const API_POD: &str = "3f0e5a1c-7b2d-4c8e-9a61-2d4b8c7e9f10";
const APP: &str = "5d1f0c3b9e8a47d2b6c1f0e9d8c7b6a5e4d3c2b1a09f8e7d6c5b4a3928170615";
const SIDECAR: &str = "aa11bb22cc33dd44ee55ff66aa77bb88cc99dd00ee11ff22aa33bb44cc55dd66";

fn read(node: &CgroupV2Node) -> Counters {
    let hierarchy = Hierarchy::detect(node.root()).expect("a v2 memory controller");
    assert_eq!(hierarchy.version(), "v2");
    Counters::read(&hierarchy).expect("read the counters")
}

/// The highest cgroup at or above `path` whose `memory.oom.group` is 1.
fn oom_group_of(node: &CgroupV2Node, path: &str) -> Option<String> {
    let mut group = None;
    let mut current = Some(path.to_owned());
    while let Some(cgroup) = current.filter(|c| !c.is_empty()) {
        let file = node
            .root()
            .join(cgroup.trim_start_matches('/'))
            .join("memory.oom.group");
        if std::fs::read_to_string(file).is_ok_and(|t| t.trim() == "1") {
            group = Some(cgroup.clone());
        }
        current = cgroup.rsplit_once('/').map(|(parent, _)| parent.to_owned());
    }
    group
}

#[test]
fn every_kubelet_layout_on_a_v2_node_is_identified() {
    for tree in TREES {
        let node = CgroupV2Node::materialize(tree);
        let counters = read(&node);
        // The root has no memory.events on v2; every other cgroup is read.
        assert!(!counters.cgroups.contains_key("/"), "{tree}");
        for cgroup in &node.cgroups {
            let read = counters
                .cgroups
                .get(&cgroup.path)
                .unwrap_or_else(|| panic!("{tree}: {} not read", cgroup.path));
            assert_eq!(
                (read.oom_kill, read.oom_kill_tree, read.oom_group_kill),
                (Some(0), Some(0), Some(0)),
                "{tree}: {}",
                cgroup.path
            );
            let identity = identify(&cgroup.path);
            let expect = |key: &str| cgroup.expect.get(key).map(String::as_str);
            assert_eq!(
                identity.pod_uid.as_deref(),
                expect("pod"),
                "{}",
                cgroup.path
            );
            assert_eq!(
                identity.container_id.as_deref(),
                expect("container"),
                "{}",
                cgroup.path
            );
            let qos = identity.qos.map(|q| q.to_string());
            assert_eq!(qos.as_deref(), expect("qos"), "{}", cgroup.path);
            let runtime = identity.runtime.map(|r| match r {
                Runtime::Containerd => "containerd",
                Runtime::CriO => "crio",
                Runtime::Docker => "docker",
            });
            assert_eq!(runtime, expect("runtime"), "{}", cgroup.path);
            assert_eq!(
                identity.runtime_monitor,
                expect("monitor") == Some("1"),
                "{}",
                cgroup.path
            );
        }
    }
    // The systemd driver's escaped UIDs and the Guaranteed pod directly under kubepods.slice.
    let guaranteed = identify(
        "/kubepods.slice/kubepods-pod9b2c4d6e_1a3f_4b5c_8d7e_0f1a2b3c4d5e.slice/cri-containerd-0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9.scope",
    );
    assert_eq!(guaranteed.qos, Some(QosClass::Guaranteed));
}

/// Every container of every layout, killed once: one OOM event in that container, a group event
/// (with both processes) where `memory.oom.group` is set.
#[test]
fn each_kill_on_a_v2_node_is_one_event_in_its_container() {
    for tree in TREES {
        let node = CgroupV2Node::materialize(tree);
        let mut tracker = CounterTracker::new();
        assert!(tracker.observe(read(&node)).is_empty(), "the baseline");
        for cgroup in &node.cgroups {
            let Some(container) = cgroup.expect.get("container") else {
                continue;
            };
            // cgroup v2 keeps processes in leaves only (crun's `container` child, not its scope).
            let parent = format!("{}/", cgroup.path);
            if node.cgroups.iter().any(|c| c.path.starts_with(&parent)) {
                continue;
            }
            let group = oom_group_of(&node, &cgroup.path);
            // As the kernel counts it: the victim, the group, the group's other process.
            node.count_kill(&cgroup.path);
            if let Some(group) = &group {
                node.count_group_kill(group);
                node.count_kill(&cgroup.path);
            }
            let increases = tracker.observe(read(&node));
            assert_eq!(increases.len(), 1, "{tree}: {}: {increases:?}", cgroup.path);
            let increase = &increases[0];
            assert_eq!(
                identify(&increase.path).container_id.as_ref(),
                Some(container),
                "{tree}: {increase:?}"
            );
            assert_eq!(increase.events, 1, "{tree}: {increase:?}");
            assert_eq!(
                (increase.group, increase.processes),
                (group.is_some(), if group.is_some() { 2 } else { 1 }),
                "{tree}: {increase:?}"
            );
            assert!(
                tracker.observe(read(&node)).is_empty(),
                "{tree}: counted once"
            );
        }
    }
}

#[test]
fn a_kill_in_a_container_removed_before_the_next_reading_is_counted_by_its_pod() {
    let node = CgroupV2Node::materialize("cgroup-v2-systemd-containerd.tree");
    let mut tracker = CounterTracker::new();
    tracker.observe(read(&node));
    let sidecar = node.cgroup(&format!("cri-containerd-{SIDECAR}.scope"));
    node.count_kill(&sidecar);
    node.count_group_kill(&sidecar);
    node.count_kill(&sidecar);
    node.remove(&sidecar);
    let increases = tracker.observe(read(&node));
    assert_eq!(increases.len(), 1, "{increases:?}");
    let increase = &increases[0];
    let pod = sidecar.rsplit_once('/').expect("a parent").0;
    assert_eq!(
        (
            increase.path.as_str(),
            increase.events,
            increase.processes,
            increase.source
        ),
        (pod, 1, 2, CounterSource::Group)
    );
    assert_eq!(identify(&increase.path).pod_uid.as_deref(), Some(API_POD));
    assert!(tracker.observe(read(&node)).is_empty());
}

/// The watcher itself on a v2 node without a kernel log (the DaemonSet as shipped, unprivileged):
/// the counters alone bonk each OOM event once, a `memory.oom.group` kill of three processes as
/// one bonk — also when a reading falls between the victim's kill and the group's — and a kill in
/// a container whose cgroup is already gone as a bonk for its pod.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_v2_node_the_counters_alone_bonk_each_oom_once() {
    let node = CgroupV2Node::materialize("cgroup-v2-systemd-containerd.tree");
    let name = "node-v2-counters";
    let api = FakeKubeApi::start(name).await;
    api.add_pod(
        API_POD,
        "payments",
        "api-7f9c",
        &[("app", APP), ("sidecar", SIDECAR)],
    );
    let broker = TestBroker::start(BrokerKind::Mosquitto);
    let prefix = "wtest/v2";
    let topic = format!("{prefix}/bonk/payments");
    let mut probe = Probe::connect(&broker.url(), &[&topic]).await;
    let watcher = WatcherUnderTest::start_with(
        &WatcherSetup {
            broker: &broker,
            prefix,
            node: name,
            api: Some(&api),
            state_file: None,
            kmsg: Some("/nonexistent/kmsg"),
        },
        &MoreSetup {
            cgroup_root: Some(node.root()),
            ..MoreSetup::default()
        },
    );
    let ours = |b: &bonker_protocol::Bonk| b.pod.as_deref() == Some("api-7f9c");
    let app = node.cgroup(&format!("cri-containerd-{APP}.scope"));

    // A group kill of three processes, counted as the kernel counts it.
    node.count_kill(&app);
    node.count_group_kill(&app);
    node.count_kill(&app);
    node.count_kill(&app);
    let bonk = bonk_of(&probe.next_on(|m| m.topic == topic).await);
    assert_eq!(bonk.source, Source::Watcher);
    assert_eq!(
        (
            bonk.namespace.as_deref(),
            bonk.pod.as_deref(),
            bonk.container.as_deref(),
            bonk.process.as_deref()
        ),
        (Some("payments"), Some("api-7f9c"), Some("app"), None)
    );
    let kill = bonk
        .kill
        .clone()
        .expect("the watcher's bonk carries its kill");
    assert_eq!(
        (
            kill.by,
            kill.container.as_deref(),
            kill.node.as_deref(),
            kill.limit
        ),
        (
            Detector::Kernel,
            Some("app"),
            Some(name),
            Some(Limit::Container)
        )
    );
    let summary = bonk.summary.clone().unwrap_or_default();
    assert!(summary.contains("3 processes"), "{summary}");
    assert!(summary.contains("memory.oom.group"), "{summary}");
    watcher.settle().await;
    assert_next_is_sentinel(&mut probe, &topic, ours).await;

    // The next group kill with a reading between the victim's kill and the group's.
    node.count_kill(&app);
    watcher.settle().await;
    node.count_group_kill(&app);
    node.count_kill(&app);
    let second = bonk_of(&probe.next_on(|m| m.topic == topic).await);
    assert_ne!(second.id, bonk.id);
    assert_eq!(second.container.as_deref(), Some("app"));
    watcher.settle().await;
    assert_next_is_sentinel(&mut probe, &topic, ours).await;

    // The sidecar is killed and its cgroup removed before the next reading: only the pod's
    // counters know, and the bonk names the pod.
    let sidecar = node.cgroup(&format!("cri-containerd-{SIDECAR}.scope"));
    watcher.scans(1).await;
    node.count_kill(&sidecar);
    node.count_group_kill(&sidecar);
    node.count_kill(&sidecar);
    node.remove(&sidecar);
    let third = bonk_of(&probe.next_on(|m| m.topic == topic).await);
    assert_eq!(
        (third.pod.as_deref(), third.container.as_deref()),
        (Some("api-7f9c"), None)
    );
    let kill = third.kill.clone().expect("kill");
    assert_eq!((kill.container, kill.limit), (None, Some(Limit::Pod)));
    watcher.settle().await;
    assert_next_is_sentinel(&mut probe, &topic, ours).await;

    let metrics = watcher.metrics().await;
    assert!(
        metrics.contains(r#"bonker_watcher_counter_only_detections_total{namespace="payments",pod="api-7f9c",container="app"} 2"#),
        "{metrics}"
    );
    // Every process is counted: three, two, and the sidecar's two.
    assert!(
        metrics.contains(r#"bonker_watcher_oom_kills_total{namespace="payments",pod="api-7f9c",container="app",limit="container"} 5"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"bonker_watcher_oom_kills_total{namespace="payments",pod="api-7f9c",container="",limit="pod"} 2"#),
        "{metrics}"
    );
    assert!(Path::new(node.root()).join("kubepods.slice").is_dir());
}
