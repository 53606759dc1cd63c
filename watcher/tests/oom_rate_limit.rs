//! More OOM kills than the kernel reports in full: the kernel prints its OOM report header and
//! `oom-kill:` summary at most 10 times per 5 seconds, but every `Killed process` line. Kills
//! beyond the limit arrive without a cgroup; the watcher must still bonk each of them once, on the
//! right namespace topic with the right pod and container, by pairing them with the memory cgroup
//! counters.
//!
//! This lives in a test binary of its own: the kernel's rate limit is global, and using it up
//! while other end-to-end tests run would take the summaries their assertions read.

mod support;

use std::collections::HashSet;
use std::time::Instant;

use bonker_tests::{BrokerKind, Probe, TestBroker};
use support::{
    CgroupTree, FakeKubeApi, LIMIT_BYTES, WatcherSetup, WatcherUnderTest, assert_next_is_sentinel,
    bonk_of, hog_killed, random_hex, random_uid, spawn_hog,
};

/// More kills than fit in the kernel's 10-per-5-seconds report budget.
const KILLS: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kills_beyond_the_kernels_report_rate_limit_keep_their_identity() {
    let tree = CgroupTree::new("ratelimit");
    let (uid, container_id) = (random_uid(), random_hex(64));
    let container = format!("kubepods/burstable/pod{uid}/{container_id}");
    let directory = tree.create(&container);
    tree.limit(&container, LIMIT_BYTES);
    let node = "node-ratelimit";
    let api = FakeKubeApi::start(node).await;
    api.add_pod(&uid, "crawler", "crawler-0", &[("worker", &container_id)]);
    let broker = TestBroker::start(BrokerKind::Mosquitto);
    let prefix = "wtest/ratelimit";
    let topic = format!("{prefix}/bonk/crawler");
    let mut probe = Probe::connect(&broker.url(), &[&topic]).await;
    let watcher = WatcherUnderTest::start(&WatcherSetup {
        broker: &broker,
        prefix,
        node,
        api: Some(&api),
        state_file: None,
        kmsg: None,
    });

    let started = Instant::now();
    for _ in 0..KILLS {
        hog_killed(spawn_hog(&directory)).await;
    }
    let killing = started.elapsed();
    let mut ids = HashSet::new();
    for _ in 0..KILLS {
        let bonk = bonk_of(&probe.next_on(|m| m.topic == topic).await);
        assert_eq!(
            (
                bonk.pod.as_deref(),
                bonk.container.as_deref(),
                bonk.process.as_deref()
            ),
            (Some("crawler-0"), Some("worker"), Some(support::HOG_NAME)),
            "{bonk:?}"
        );
        assert!(
            ids.insert(bonk.id.clone()),
            "bonk {} arrived twice",
            bonk.id
        );
    }
    eprintln!(
        "[timing] {KILLS} kills in {:.0} ms: all bonked {:.0} ms after the first",
        killing.as_secs_f64() * 1000.0,
        started.elapsed().as_secs_f64() * 1000.0
    );
    watcher.assert_nothing_unexplained().await;
    assert_next_is_sentinel(&mut probe, &topic, |b| {
        b.pod.as_deref() == Some("crawler-0")
    })
    .await;

    let without_cgroup = watcher
        .sample("bonker_watcher_kills_without_cgroup_total")
        .await
        .unwrap_or(0.0);
    assert!(
        without_cgroup >= 1.0,
        "the kernel reported every kill in full ({KILLS} kills in {killing:?}): the rate-limited path was not exercised"
    );
    let metrics = watcher.metrics().await;
    assert!(
        metrics.contains(&format!(
            r#"bonker_watcher_oom_kills_total{{namespace="crawler",pod="crawler-0",container="worker",limit="container"}} {KILLS}"#
        )),
        "{metrics}"
    );
    assert!(
        !metrics.contains(r#"bonker_watcher_counter_only_detections_total{namespace="crawler""#),
        "{metrics}"
    );
}
