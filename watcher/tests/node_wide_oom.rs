//! The node itself out of memory (`CONSTRAINT_NONE`), end to end: the real `bonker-watcher`
//! reads a recorded node-wide OOM report (`fixtures/linux-6.1-v2-node-wide-oom.txt`, replayed
//! through a pipe as kernel log records stamped now — no test machine can safely run out of
//! memory) on a cgroup v2 node built from `fixtures/cgroup-v2-systemd-containerd.tree`, whose
//! counters change as the kernel changes them, with a stand-in Kubernetes API and a real broker.
//!
//! Each kill is bonked exactly once, its `kill` saying `limit: node`, naming the node and the
//! process whose allocation triggered it: the batch service outside any pod on the default
//! namespace's topic (keyed by the node), the pod's JVM on its namespace's topic (keyed by its
//! container) — one bonk for the JVM and the shell `memory.oom.group` took with it. Nothing is
//! left for the counters to report again.

mod support;

use bonker_protocol::{Bonk, Detector, Limit, Source};
use bonker_tests::{BrokerKind, Probe, TestBroker};
use support::{
    CgroupV2Node, FakeKubeApi, KernelLogReplay, MoreSetup, WatcherSetup, WatcherUnderTest,
    assert_next_is_sentinel, bonk_of, fixture_messages,
};

const FIXTURE: &str = "linux-6.1-v2-node-wide-oom.txt";
const POD_UID: &str = "6c1d2e3f-4a5b-4c6d-8e7f-90a1b2c3d4e5";
const CONTAINER_ID: &str = "8f7e6d5c4b3a29180f1e2d3c4b5a69788f7e6d5c4b3a29180f1e2d3c4b5a6978";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_wide_oom_is_bonked_once_per_kill_naming_the_node_and_the_trigger() {
    let node = CgroupV2Node::materialize("cgroup-v2-systemd-containerd.tree");
    let name = "node-7";
    let api = FakeKubeApi::start(name).await;
    api.add_pod(POD_UID, "reports", "nightly-7c9f", &[("jvm", CONTAINER_ID)]);
    let broker = TestBroker::start(BrokerKind::Mosquitto);
    let prefix = "wtest/nodewide";
    let default_topic = format!("{prefix}/bonk/default");
    let pod_topic = format!("{prefix}/bonk/reports");
    let mut probe = Probe::connect(&broker.url(), &[&default_topic, &pod_topic]).await;
    let mut replay = KernelLogReplay::new();
    let watcher = WatcherUnderTest::start_with(
        &WatcherSetup {
            broker: &broker,
            prefix,
            node: name,
            api: Some(&api),
            state_file: None,
            kmsg: None,
        },
        &MoreSetup {
            replay: Some(&replay),
            cgroup_root: Some(node.root()),
            cluster: Some("prod-eu"),
            scan_interval_ms: None,
            max_event_age_s: None,
        },
    );
    let messages = fixture_messages(FIXTURE);
    let second_report = messages
        .iter()
        .rposition(|m| m.contains(" invoked oom-killer:"))
        .expect("two reports");
    let (first, second) = messages.split_at(second_report);

    // The batch service, outside any pod. The kernel counts the kill, then prints it.
    node.count_kill("/system.slice/legacy-batch.service");
    replay.write(first);
    let bonk = bonk_of(&probe.next_on(|m| m.topic == default_topic).await);
    assert_eq!(bonk.source, Source::Watcher);
    assert_eq!(
        (
            bonk.namespace.as_deref(),
            bonk.pod.as_deref(),
            bonk.process.as_deref(),
            bonk.node.as_deref()
        ),
        (None, None, Some("java"), Some(name))
    );
    let kill = bonk
        .kill
        .clone()
        .expect("the watcher's bonk carries its kill");
    assert_eq!(kill.by, Detector::Kernel);
    assert_eq!(Some(kill.at), bonk.fired_at);
    assert_eq!(
        (
            kill.cluster.as_deref(),
            kill.namespace.as_deref(),
            kill.pod.as_deref(),
            kill.container.as_deref(),
            kill.node.as_deref()
        ),
        (Some("prod-eu"), None, None, None, Some(name))
    );
    assert_eq!(kill.limit, Some(Limit::Node));
    assert_eq!(kill.trigger.as_deref(), Some("kubelet"));
    let summary = bonk.summary.clone().unwrap_or_default();
    assert!(
        summary.starts_with(
            "node-7 ran out of memory: the kernel killed java (pid 2412) in cgroup /system.slice/legacy-batch.service"
        ),
        "{summary}"
    );
    assert!(
        summary.contains("kubelet (pid 1187) asked for the memory"),
        "{summary}"
    );

    // The pod's JVM, and the shell its container's memory.oom.group takes with it.
    let container = node.cgroup(&format!("cri-containerd-{CONTAINER_ID}.scope"));
    node.count_kill(&container);
    node.count_group_kill(&container);
    node.count_kill(&container);
    replay.write(second);
    let bonk = bonk_of(&probe.next_on(|m| m.topic == pod_topic).await);
    assert_eq!(
        (
            bonk.namespace.as_deref(),
            bonk.pod.as_deref(),
            bonk.container.as_deref(),
            bonk.process.as_deref()
        ),
        (
            Some("reports"),
            Some("nightly-7c9f"),
            Some("jvm"),
            Some("java")
        )
    );
    let kill = bonk
        .kill
        .clone()
        .expect("the watcher's bonk carries its kill");
    assert_eq!(
        (
            kill.namespace.as_deref(),
            kill.pod.as_deref(),
            kill.container.as_deref(),
            kill.node.as_deref(),
            kill.limit,
            kill.trigger.as_deref()
        ),
        (
            Some("reports"),
            Some("nightly-7c9f"),
            Some("jvm"),
            Some(name),
            Some(Limit::Node),
            Some("containerd")
        )
    );
    let summary = bonk.summary.clone().unwrap_or_default();
    assert!(
        summary.starts_with("node-7 ran out of memory: the kernel killed java (pid 3301) in reports/nightly-7c9f/jvm"),
        "{summary}"
    );
    assert!(
        summary.contains("containerd (pid 511) asked for the memory"),
        "{summary}"
    );

    // Exactly once each: the counters agree with the kernel log, and nothing else was sent.
    watcher.assert_nothing_unexplained().await;
    let ours = |b: &Bonk| b.node.as_deref() == Some(name);
    assert_next_is_sentinel(&mut probe, &default_topic, ours).await;
    assert_next_is_sentinel(&mut probe, &pod_topic, ours).await;
    let metrics = watcher.metrics().await;
    for series in [
        r#"bonker_watcher_oom_kills_total{namespace="",pod="",container="",limit="node"} 1"#,
        // Two processes of one container (java, then sh): one series, counted twice.
        r#"bonker_watcher_oom_kills_total{namespace="reports",pod="nightly-7c9f",container="jvm",limit="node"} 2"#,
    ] {
        assert!(metrics.contains(series), "{series}: {metrics}");
    }
    assert!(
        !metrics.contains("bonker_watcher_counter_only_detections_total{"),
        "{metrics}"
    );
}
