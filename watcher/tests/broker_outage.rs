//! A kill counts as reported only once the broker has its bonk: real OOM kills while the broker is
//! down reach the desks' topic after it is back — whether the watcher kept running (it publishes
//! the bonk again after the reconnect) or was killed meanwhile (its successor reads the kill again
//! from the kernel log, because the resume point never moved past an unacknowledged bonk).
//!
//! Each broker is restarted without persistence, so it forgets every session: nothing but the
//! watcher's own re-sending can deliver the bonk. The watcher is paused (SIGSTOP) while the broker
//! comes back and the probe subscribes, so the bonk cannot arrive before anyone listens.

mod support;

use bonker_tests::{BrokerKind, Probe, TestBroker};
use rustix::process::Signal;
use support::{
    CgroupTree, DEADLINE, FakeKubeApi, LIMIT_BYTES, WatcherSetup, WatcherUnderTest,
    assert_next_is_sentinel, bonk_of, hog_killed, random_hex, random_uid, spawn_hog,
};

/// Makes the kernel OOM-kill a hog in `directory` and waits until `watcher` has logged that kill;
/// returns the hog's pid.
async fn kill_seen_by(directory: &std::path::Path, watcher: &mut WatcherUnderTest) -> u32 {
    let hog = spawn_hog(directory);
    let pid = hog.id();
    hog_killed(hog).await;
    watcher
        .process
        .wait_for_line(&format!("(pid {pid})"), DEADLINE);
    pid
}

/// Waits until the watcher has saved a resume point other than `before`.
async fn resume_point_moves(state_file: &std::path::Path, before: &str) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while std::fs::read_to_string(state_file).unwrap_or_default() == before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the resume point never moved past the acknowledged bonk"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

async fn kills_during_a_broker_outage_are_bonked_after_it(kind: BrokerKind) {
    let label = format!("outage-{kind}").to_lowercase();
    let tree = CgroupTree::new(&label);
    let (uid, container_id) = (random_uid(), random_hex(64));
    let container = format!("kubepods/burstable/pod{uid}/{container_id}");
    let directory = tree.create(&container);
    tree.limit(&container, LIMIT_BYTES);
    let node = format!("node-{label}");
    let api = FakeKubeApi::start(&node).await;
    api.add_pod(&uid, "ledger", "writer-0", &[("writer", &container_id)]);
    let mut broker = TestBroker::start(kind);
    let prefix = format!("wtest/{label}");
    let topic = format!("{prefix}/bonk/ledger");
    let state_dir = tempfile::tempdir().expect("tempdir");
    let state_file = state_dir.path().join("state.json");
    let start = |broker: &TestBroker| {
        WatcherUnderTest::start(&WatcherSetup {
            broker,
            prefix: &prefix,
            node: &node,
            api: Some(&api),
            state_file: Some(&state_file),
            kmsg: None,
        })
    };
    let mut watcher = start(&broker);
    let port = broker.port();

    // 1. The broker dies; a container is killed; the watcher sees the kill and keeps running.
    broker.kill();
    let first_pid = kill_seen_by(&directory, &mut watcher).await;
    // The resume point stays before the unacknowledged kill until its PUBACK.
    let before_ack = std::fs::read_to_string(&state_file).unwrap_or_default();
    watcher.process.signal(Signal::STOP);
    broker.restart();
    assert_eq!(broker.port(), port);
    let mut probe = Probe::connect(&broker.url(), &[&topic]).await;
    watcher.process.signal(Signal::CONT);
    let first = bonk_of(&probe.next_on(|m| m.topic == topic).await);
    assert_eq!(first.pod.as_deref(), Some("writer-0"));
    assert!(
        first
            .summary
            .as_deref()
            .is_some_and(|s| s.contains(&format!("(pid {first_pid})"))),
        "{first:?}"
    );
    // The probe can see the bonk before the watcher has its PUBACK: wait until the watcher
    // counted it as reported (the resume point moved past it), or the second outage below would
    // find it unacknowledged too.
    resume_point_moves(&state_file, &before_ack).await;

    // 2. The broker dies again; a second kill; the watcher is killed before the broker is back.
    broker.kill();
    let second_pid = kill_seen_by(&directory, &mut watcher).await;
    watcher.process.kill();
    broker.restart();
    let mut probe = Probe::connect(&broker.url(), &[&topic]).await;
    let watcher = start(&broker);
    let second = bonk_of(&probe.next_on(|m| m.topic == topic).await);
    assert!(
        second
            .summary
            .as_deref()
            .is_some_and(|s| s.contains(&format!("(pid {second_pid})"))),
        "the first bonk after the restart is the unacknowledged kill's, not an acknowledged one again: {second:?}"
    );
    assert_ne!(second.id, first.id);
    watcher.assert_nothing_unexplained().await;
    assert_next_is_sentinel(&mut probe, &topic, |b| b.pod.as_deref() == Some("writer-0")).await;
    drop(tree);
}

bonker_tests::for_both_brokers!(kills_during_a_broker_outage_are_bonked_after_it);
