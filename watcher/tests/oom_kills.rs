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

mod support;

use std::sync::atomic::Ordering;
use std::time::Instant;

use bonker_protocol::{Bonk, Detector, Limit, Source};
use bonker_tests::{BrokerKind, Probe, TestBroker};
use support::{
    CgroupTree, DEADLINE, FakeKubeApi, LIMIT_BYTES, MoreSetup, WatcherSetup, WatcherUnderTest,
    assert_next_is_sentinel, bonk_of, hog_killed, random_hex, random_uid, remove_cgroup, report,
    spawn_hog, spawn_parent_with_hog_child,
};

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
    assert_eq!(bonk.process.as_deref(), Some(support::HOG_NAME));
    assert_eq!(bonk.node.as_deref(), Some(node.as_str()));
    assert_eq!(bonk.reason.as_deref(), Some("OOMKilled"));
    // The kill, as the gateway and desks match it with an alert for the same container.
    let kill = bonk
        .kill
        .clone()
        .expect("the watcher's bonk carries its kill");
    assert_eq!(kill.by, Detector::Kernel);
    assert_eq!(Some(kill.at), bonk.fired_at);
    assert_eq!(
        (
            kill.namespace.as_deref(),
            kill.pod.as_deref(),
            kill.container.as_deref(),
            kill.node.as_deref()
        ),
        (
            Some("payments"),
            Some("api-7f9c"),
            Some("app"),
            Some(node.as_str())
        )
    );
    assert_eq!(kill.limit, Some(Limit::Container));
    // The hog's own allocation made the kernel kill it.
    assert_eq!(kill.trigger, None);
    let summary = bonk.summary.clone().unwrap_or_default();
    assert!(summary.contains("payments/api-7f9c/app"), "{summary}");
    // Which limit was hit comes from the kernel's summary, which the kernel drops when it has
    // printed 10 OOM reports in 5 s (other tests, other programs): check it when it was printed.
    if watcher.all_kills_had_a_summary().await {
        assert!(summary.contains("container's memory limit"), "{summary}");
    }

    watcher.assert_nothing_unexplained().await;
    assert_next_is_sentinel(&mut probe, &topic, |b| b.pod.as_deref() == Some("api-7f9c")).await;
    let metrics = watcher.metrics().await;
    assert!(
        metrics.contains(r#"bonker_watcher_oom_kills_total{namespace="payments",pod="api-7f9c",container="app",limit="container"} 1"#),
        "{metrics}"
    );
    assert!(api.requests.load(Ordering::SeqCst) >= 1);
    drop(tree);
}

/// systemd driver, Guaranteed pod, `cri-containerd-<id>.scope`, limit on the pod slice: a shell
/// whose hog child is killed survives (nothing restarts, kube-state-metrics sees nothing), and
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
            Some(support::HOG_NAME)
        )
    );
    let summary = bonk.summary.clone().unwrap_or_default();
    if watcher.all_kills_had_a_summary().await {
        assert!(summary.contains("pod's memory limit"), "{summary}");
        let kill = bonk.kill.clone().expect("kill");
        assert_eq!(kill.limit, Some(Limit::Pod), "the pod's limit fired");
    }
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
        metrics.contains(r#"bonker_watcher_oom_kills_total{namespace="batch",pod="etl-0",container="etl",limit="container"} 1"#),
        "only the new kill is counted by the restarted watcher: {metrics}"
    );
}

/// The runtime removes a container's cgroup within milliseconds of its main process dying —
/// here, as soon as the hog is reaped, before the watcher reads the cgroup counters again (on
/// cgroup v1 the counter goes with the cgroup). The kill is still bonked once, with its pod and
/// container: the kernel's report names the cgroup by path, and nothing reads the cgroup after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_whose_cgroup_is_removed_at_once_is_still_bonked_once() {
    let tree = CgroupTree::new("removed");
    let (uid, container_id) = (random_uid(), random_hex(64));
    let container = format!("kubepods/burstable/pod{uid}/{container_id}");
    let directory = tree.create(&container);
    tree.limit(&container, LIMIT_BYTES);
    let node = "node-removed";
    let api = FakeKubeApi::start(node).await;
    api.add_pod(&uid, "checkout", "cart-5d8f", &[("cart", &container_id)]);
    let broker = TestBroker::start(BrokerKind::Mosquitto);
    let prefix = "wtest/removed";
    let topic = format!("{prefix}/bonk/checkout");
    let mut probe = Probe::connect(&broker.url(), &[&topic]).await;
    // Counter readings 3 s apart: the cgroup is gone long before the first one after the kill.
    let watcher = WatcherUnderTest::start_with(
        &WatcherSetup {
            broker: &broker,
            prefix,
            node,
            api: Some(&api),
            state_file: None,
            kmsg: None,
        },
        &MoreSetup {
            cluster: Some("prod-eu"),
            scan_interval_ms: Some(3000),
            ..MoreSetup::default()
        },
    );

    let (died_at, status) = hog_killed(spawn_hog(&directory)).await;
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "the kernel kills the hog"
    );
    remove_cgroup(&directory);
    assert!(!directory.exists());
    assert_eq!(
        watcher.scans_so_far().await,
        0.0,
        "the container's cgroup was removed before the watcher read the counters after the kill"
    );
    let bonk = bonk_of(&probe.next_on(|m| m.topic == topic).await);
    report(
        "container cgroup removed at once",
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
        (
            Some("checkout"),
            Some("cart-5d8f"),
            Some("cart"),
            Some(support::HOG_NAME)
        )
    );
    let kill = bonk
        .kill
        .clone()
        .expect("the watcher's bonk carries its kill");
    assert_eq!(
        (
            kill.by,
            kill.cluster.as_deref(),
            kill.namespace.as_deref(),
            kill.pod.as_deref(),
            kill.container.as_deref(),
            kill.node.as_deref()
        ),
        (
            Detector::Kernel,
            Some("prod-eu"),
            Some("checkout"),
            Some("cart-5d8f"),
            Some("cart"),
            Some(node)
        )
    );
    assert_eq!(kill.limit, Some(Limit::Container));
    watcher.assert_nothing_unexplained().await;
    assert_next_is_sentinel(&mut probe, &topic, |b| {
        b.pod.as_deref() == Some("cart-5d8f")
    })
    .await;
    let metrics = watcher.metrics().await;
    assert!(
        metrics.contains(r#"bonker_watcher_oom_kills_total{namespace="checkout",pod="cart-5d8f",container="cart",limit="container"} 1"#),
        "{metrics}"
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
    assert_eq!(bonk.process.as_deref(), Some(support::HOG_NAME));
    assert_eq!(bonk.node.as_deref(), Some(node));
    // Outside any pod, the kill is known by its node; the service's own limit fired.
    let kill = bonk
        .kill
        .clone()
        .expect("the watcher's bonk carries its kill");
    assert_eq!(
        (kill.namespace, kill.pod, kill.node.as_deref()),
        (None, None, Some(node))
    );
    assert_eq!(kill.limit, Some(Limit::Cgroup));
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
        // From the counter alone: the container's cgroup counted it.
        let kill = bonk
            .kill
            .clone()
            .expect("the watcher's bonk carries its kill");
        assert_eq!(
            (kill.container.as_deref(), kill.limit, kill.trigger),
            (Some("indexer"), Some(Limit::Container), None)
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
