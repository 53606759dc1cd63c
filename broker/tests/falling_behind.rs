//! A subscriber that reads slower than its filter fills misses messages — rumqttd drops the oldest
//! segment of a filter's log when it is full, delivered or not — and the broker must say so,
//! naming the client, rather than lose them silently. The slow subscriber here holds its PUBACKs
//! (manual acks), so rumqttd stops sending to it once its inflight window is full, while a
//! publisher puts twice the filter log's size through the filter; then it acks and reads on.

mod support;

use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, Publish, QoS};
use support::{BrokerProcess, DEADLINE};

/// Twice what one filter's log holds, in messages of [`PAYLOAD_BYTES`].
const MESSAGES: usize = 2 * bonker_broker::settings::FILTER_LOG_BYTES / PAYLOAD_BYTES;
const PAYLOAD_BYTES: usize = 1024;
const TOPIC: &str = "bonker/test/bonk";

fn options(id: &str, port: u16) -> MqttOptions {
    let mut options = MqttOptions::new(id, "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_max_packet_size(64 * 1024, 64 * 1024);
    options
}

/// Polls until `done` says the event is the one awaited.
async fn poll_until(event_loop: &mut EventLoop, mut done: impl FnMut(&Event) -> bool) {
    tokio::time::timeout(DEADLINE, async {
        loop {
            let event = event_loop.poll().await.expect("connection");
            if done(&event) {
                return;
            }
        }
    })
    .await
    .expect("the awaited event in time");
}

#[tokio::test]
async fn a_subscriber_that_falls_behind_is_named_in_a_warning() {
    let broker = BrokerProcess::start("listen = \"127.0.0.1:0\"\n", 1);
    let port = broker.addr("V4").port();

    let mut slow_options = options("slow-desk", port);
    slow_options.set_manual_acks(true);
    let (slow, mut slow_loop) = AsyncClient::new(slow_options, 1000);
    slow.subscribe(TOPIC, QoS::AtLeastOnce)
        .await
        .expect("queue SUBSCRIBE");
    poll_until(&mut slow_loop, |e| {
        matches!(e, Event::Incoming(Packet::SubAck(_)))
    })
    .await;

    // The slow desk takes what the broker sends but acks nothing while the publisher runs.
    let (held_tx, mut held_rx) = tokio::sync::mpsc::unbounded_channel::<Publish>();
    let reader = tokio::spawn(async move {
        loop {
            match slow_loop.poll().await {
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    if held_tx.send(publish).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(error) => panic!("the slow desk's connection: {error}"),
            }
        }
    });

    let (publisher, mut publisher_loop) = AsyncClient::new(options("publisher", port), 1000);
    let mut acked = 0;
    let payload = vec![b'x'; PAYLOAD_BYTES];
    let sender = publisher.clone();
    let send = tokio::spawn(async move {
        for _ in 0..MESSAGES {
            sender
                .publish(TOPIC, QoS::AtLeastOnce, false, payload.clone())
                .await
                .expect("queue PUBLISH");
        }
    });
    poll_until(&mut publisher_loop, |e| {
        if matches!(e, Event::Incoming(Packet::PubAck(_))) {
            acked += 1;
        }
        acked == MESSAGES
    })
    .await;
    send.await.expect("publisher task");

    // Now the slow desk acks what it holds and reads on: the broker finds the filter's log has
    // moved past it.
    let mut received = 0;
    let warned = tokio::time::timeout(DEADLINE, async {
        loop {
            tokio::select! {
                publish = held_rx.recv() => {
                    let publish = publish.expect("the slow desk's reader");
                    slow.ack(&publish).await.expect("queue PUBACK");
                    received += 1;
                }
                () = tokio::time::sleep(Duration::from_millis(100)) => {
                    if broker.output().contains("fell behind") {
                        return;
                    }
                }
            }
        }
    })
    .await;
    assert!(
        warned.is_ok(),
        "no warning after {received} of {MESSAGES} messages; broker output:\n{}",
        broker.output()
    );
    let warning = broker.wait_for_lines("fell behind", 1, DEADLINE).remove(0);
    println!("{received} of {MESSAGES} delivered; the broker said: {warning}");
    assert!(warning.contains("slow-desk"), "names the client: {warning}");
    assert!(warning.contains(TOPIC), "names the filter: {warning}");
    assert!(
        received < MESSAGES,
        "the slow desk missed messages ({received} of {MESSAGES})"
    );
    reader.abort();
}
