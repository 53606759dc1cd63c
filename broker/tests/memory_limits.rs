//! What a client can make the broker remember is limited, and so is the memory it costs.
//!
//! rumqttd keeps every subscription filter, topic, retained message and client id until it
//! restarts, with no limit of its own; the broker's front door counts them and refuses new ones
//! past its limits. These tests attack a real `bonker-broker` process the way a client with
//! credentials could — thousands of distinct filters, thousands of large retained messages, new
//! client ids and connections — and check both the refusals and the process's resident memory
//! against the budget `docs/brokers.md` gives per filter and per retained byte.

mod support;

use std::time::Duration;

use rumqttc::{Packet, QoS};
use support::{BrokerProcess, DEADLINE, RawClient, client, connack, next_incoming};

/// What `docs/brokers.md` budgets for one subscription filter with an empty log, in KiB.
const KIB_PER_FILTER: u64 = 8;
/// What `docs/brokers.md` budgets per byte of retained messages (topic and payload): rumqttd
/// keeps each as a slice of the buffer it read it into, so up to twice its size.
const MEMORY_PER_RETAINED_BYTE: u64 = 2;
/// Allocator and runtime slack on top of the budget, in KiB.
const SLACK_KIB: u64 = 8 * 1024;

/// A thousand filters for the attacker, two for the probes that look for retained messages.
const MAX_FILTERS: usize = 1_002;
const PROBED_TOPICS: [&str; 2] = ["attack/retained/0", "attack/retained/4999"];
const MAX_RETAINED: usize = 1_000;
const MAX_RETAINED_BYTES: u64 = 8 * 1024 * 1024;

fn limits() -> String {
    format!(
        "listen = \"127.0.0.1:0\"\nmax_filters = {MAX_FILTERS}\nmax_retained = {MAX_RETAINED}\n\
         max_retained_bytes = {MAX_RETAINED_BYTES}\n"
    )
}

fn url(broker: &BrokerProcess) -> String {
    format!("mqtt://127.0.0.1:{}", broker.addr("V4").port())
}

/// Subscribes a fresh client to `topic` and says whether the broker holds a retained message
/// there: it publishes a sentinel after subscribing, so the first message is either the
/// retained one or the sentinel.
async fn retained_payload_len(broker: &BrokerProcess, topic: &str) -> Option<usize> {
    let id = format!("probe-{}", topic.replace('/', "-"));
    let (probe, mut event_loop) = client(&url(broker), &id, None);
    connack(&mut event_loop, DEADLINE)
        .await
        .expect("probe connects");
    probe
        .subscribe(topic, QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    next_incoming(&mut event_loop, DEADLINE, |p| {
        matches!(p, Packet::SubAck(_)).then_some(())
    })
    .await;
    probe
        .publish(topic, QoS::AtLeastOnce, false, "sentinel")
        .await
        .expect("publish");
    let first = next_incoming(&mut event_loop, DEADLINE, |p| match p {
        Packet::Publish(publish) => Some(publish.clone()),
        _ => None,
    })
    .await;
    (first.payload.as_ref() != b"sentinel").then_some(first.payload.len())
}

#[tokio::test]
async fn thousands_of_filters_and_retained_topics_stay_within_the_budget() {
    const FILTERS: usize = 5_000;
    const FILTERS_PER_SUBSCRIBE: usize = 100;
    const RETAINED: usize = 5_000;
    const PAYLOAD: usize = 16 * 1024;
    const IN_FLIGHT: usize = 50;

    let broker = BrokerProcess::start(&limits(), 1);
    let addr = broker.addr("V4");
    // The probes' filters exist before the attack (they must: the attack fills max_filters).
    // This first connection also warms the runtime's buffers before counting starts.
    let mut probes = RawClient::connect(addr, "probes")
        .await
        .expect("probes connect");
    let probed: Vec<String> = PROBED_TOPICS.iter().map(|t| t.to_string()).collect();
    probes.subscribe(&probed).await.expect("probe filters");
    drop(probes);
    let start_kib = broker.rss_kib();

    // 5,000 distinct filters, 100 per SUBSCRIBE. Past the limit the broker closes the
    // connection; the attacker reconnects and tries the next batch.
    let mut attacker = RawClient::connect(addr, "attacker")
        .await
        .expect("connects");
    let mut accepted = 0;
    let mut closed = 0;
    for batch in 0..FILTERS / FILTERS_PER_SUBSCRIBE {
        let filters: Vec<String> = (0..FILTERS_PER_SUBSCRIBE)
            .map(|n| format!("attack/filter/{}", batch * FILTERS_PER_SUBSCRIBE + n))
            .collect();
        match attacker.subscribe(&filters).await {
            Ok(()) => accepted += filters.len(),
            Err(_) => {
                closed += 1;
                attacker = RawClient::connect(addr, "attacker")
                    .await
                    .expect("reconnects");
            }
        }
    }
    let filters_kib = broker.rss_kib();
    assert_eq!(
        accepted,
        MAX_FILTERS - PROBED_TOPICS.len(),
        "filters accepted"
    );
    assert_eq!(closed, (FILTERS - accepted) / FILTERS_PER_SUBSCRIBE);
    // A filter the broker knows is still served; the attacker's connection is up.
    attacker
        .subscribe(&["attack/filter/0".to_owned()])
        .await
        .expect("a known filter is served");

    // 5,000 retained topics of 16 KiB (80 MiB): every one is delivered and acknowledged, but
    // only those within max_retained_bytes are retained.
    for window in 0..RETAINED / IN_FLIGHT {
        for n in 0..IN_FLIGHT {
            let topic = format!("attack/retained/{}", window * IN_FLIGHT + n);
            attacker
                .publish(&topic, &[b'r'; PAYLOAD], true)
                .await
                .expect("publish");
        }
        attacker.await_pubacks(IN_FLIGHT).await.expect("PUBACKs");
    }
    let retained_kib = broker.rss_kib();
    assert_eq!(
        retained_payload_len(&broker, PROBED_TOPICS[0]).await,
        Some(PAYLOAD)
    );
    assert_eq!(retained_payload_len(&broker, PROBED_TOPICS[1]).await, None);

    let budget_kib = start_kib
        + MAX_FILTERS as u64 * KIB_PER_FILTER
        + MAX_RETAINED_BYTES * MEMORY_PER_RETAINED_BYTE / 1024
        + SLACK_KIB;
    println!(
        "bonker-broker RSS: {start_kib} KiB at start, {filters_kib} KiB after {FILTERS} filters \
         ({accepted} accepted), {retained_kib} KiB after {RETAINED} retained topics of {PAYLOAD} \
         bytes; budget {budget_kib} KiB"
    );
    assert!(
        retained_kib <= budget_kib,
        "bonker-broker grew from {start_kib} KiB to {retained_kib} KiB, over its budget of \
         {budget_kib} KiB"
    );
}

#[tokio::test]
async fn connections_past_the_limit_are_refused_and_later_ones_still_work() {
    let broker = BrokerProcess::start("listen = \"127.0.0.1:0\"\nmax_connections = 3\n", 1);
    let addr = broker.addr("V4");
    let first = RawClient::connect(addr, "one").await.expect("one");
    let _second = RawClient::connect(addr, "two").await.expect("two");
    let _third = RawClient::connect(addr, "three").await.expect("three");
    for _ in 0..3 {
        // The same client id again and again: rumqttd itself breaks on this at its limit
        // (upstream #1062); the front door answers each time.
        let refused = RawClient::connect(addr, "four")
            .await
            .err()
            .expect("refused");
        assert!(refused.contains("code 3"), "{refused}");
    }
    drop(first);
    // The first client's place frees once its socket closes.
    let started = std::time::Instant::now();
    loop {
        match RawClient::connect(addr, "four").await {
            Ok(_) => break,
            Err(error) if started.elapsed() < DEADLINE => {
                assert!(error.contains("code 3"), "{error}");
                tokio::task::yield_now().await;
            }
            Err(error) => panic!("no connection after one closed: {error}"),
        }
    }
}

#[tokio::test]
async fn client_ids_and_topics_past_their_limits_are_refused() {
    let broker = BrokerProcess::start(
        "listen = \"127.0.0.1:0\"\nmax_client_ids = 3\nmax_topics = 2\n",
        1,
    );
    let addr = broker.addr("V4");
    let mut alice = RawClient::connect(addr, "alice").await.expect("alice");
    drop(RawClient::connect(addr, "bob").await.expect("bob"));
    drop(RawClient::connect(addr, "carol").await.expect("carol"));
    let refused = RawClient::connect(addr, "dave")
        .await
        .err()
        .expect("a fourth id");
    assert!(refused.contains("code 3"), "{refused}");
    drop(RawClient::connect(addr, "bob").await.expect("bob is known"));

    alice.publish("a/1", b"x", false).await.expect("publish");
    alice.publish("a/2", b"x", false).await.expect("publish");
    alice.publish("a/1", b"x", false).await.expect("publish");
    alice.await_pubacks(3).await.expect("two topics");
    alice.publish("a/3", b"x", false).await.expect("publish");
    alice
        .closed_by_broker(Duration::from_secs(5))
        .await
        .expect("a third topic closes the connection");
}
