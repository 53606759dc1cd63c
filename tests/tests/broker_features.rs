//! Every MQTT feature the fleet relies on, proven against both brokers a deployment may use: the
//! bonker broker (rumqttd) and Debian's mosquitto. When one of these fails for one broker only,
//! `docs/brokers.md` must say so and the fleet must be designed around it.

use bonker_tests::{BrokerKind, Probe, ProbeOptions, TestBroker};

/// QoS 1: a bonk published once reaches every subscriber, in order.
async fn qos1_delivery(kind: BrokerKind) {
    let broker = TestBroker::start(kind);
    let mut desk_a = Probe::connect(&broker.url(), &["bonker/bonk/payments"]).await;
    let mut desk_b = Probe::connect(&broker.url(), &["bonker/bonk/+"]).await;
    let sender = Probe::connect(&broker.url(), &[]).await;
    for n in 0..20 {
        sender
            .publish("bonker/bonk/payments", format!("bonk {n}"), false)
            .await;
    }
    for desk in [&mut desk_a, &mut desk_b] {
        let texts: Vec<String> = desk.take(20).await.iter().map(|m| m.text()).collect();
        let expected: Vec<String> = (0..20).map(|n| format!("bonk {n}")).collect();
        assert_eq!(texts, expected, "{kind}");
    }
}

/// Retained: a late subscriber sees a desk's last status at once, and an empty retained publish
/// clears it.
async fn retained_messages(kind: BrokerKind) {
    let broker = TestBroker::start(kind);
    let desk = Probe::connect(&broker.url(), &[]).await;
    desk.publish("bonker/desk/alice/status", "online", true)
        .await;
    let mut late = Probe::connect(&broker.url(), &["bonker/desk/+/status"]).await;
    let message = late.next().await;
    assert_eq!(
        (
            message.topic.as_str(),
            message.text().as_str(),
            message.retain
        ),
        ("bonker/desk/alice/status", "online", true),
        "{kind}"
    );
    desk.publish("bonker/desk/alice/status", "", true).await;
    // The clearing publish itself is forwarded to the live subscriber.
    assert_eq!(late.next().await.payload, b"", "{kind}");
    let sentinel = Probe::connect(&broker.url(), &[]).await;
    sentinel
        .publish("bonker/desk/zz-sentinel/status", "online", true)
        .await;
    let mut later = Probe::connect(&broker.url(), &["bonker/desk/+/status"]).await;
    let first = later.next().await;
    assert_eq!(
        first.topic, "bonker/desk/zz-sentinel/status",
        "{kind}: a cleared retained status must not be replayed"
    );
}

/// Last will: a desk that dies without DISCONNECT is marked offline by the broker, retained.
async fn last_will_on_unclean_disconnect(kind: BrokerKind) {
    let broker = TestBroker::start(kind);
    let mut watcher = Probe::connect(&broker.url(), &["bonker/desk/+/status"]).await;
    let desk = Probe::connect_with(
        &broker.url(),
        &[],
        ProbeOptions {
            client_id: Some("alice".into()),
            last_will: Some(("bonker/desk/alice/status".into(), b"offline".to_vec(), true)),
            ..Default::default()
        },
    )
    .await
    .expect("desk connects");
    desk.publish("bonker/desk/alice/status", "online", true)
        .await;
    assert_eq!(watcher.next().await.text(), "online", "{kind}");
    drop(desk); // the connection dies, no DISCONNECT
    let will = watcher.next().await;
    assert_eq!(
        (will.topic.as_str(), will.text().as_str()),
        ("bonker/desk/alice/status", "offline"),
        "{kind}"
    );
    let mut late = Probe::connect(&broker.url(), &["bonker/desk/+/status"]).await;
    let retained = late.next().await;
    assert_eq!(
        (retained.text().as_str(), retained.retain),
        ("offline", true),
        "{kind}"
    );
}

/// Persistent sessions: bonks published while a desk is away are delivered when it comes back.
async fn persistent_session_queues_while_away(kind: BrokerKind) {
    let broker = TestBroker::start(kind);
    let options = ProbeOptions {
        client_id: Some("desk-bob".into()),
        clean_session: false,
        ..Default::default()
    };
    let desk = Probe::connect_with(&broker.url(), &["bonker/bonk/checkout"], options.clone())
        .await
        .expect("desk connects");
    desk.disconnect().await;
    let sender = Probe::connect(&broker.url(), &[]).await;
    for n in 0..5 {
        sender
            .publish("bonker/bonk/checkout", format!("queued {n}"), false)
            .await;
    }
    // Back, without subscribing again: the session remembers the subscription.
    let mut desk = Probe::connect_with(&broker.url(), &[], options)
        .await
        .expect("desk reconnects");
    assert!(desk.session_present, "{kind}: session must be resumed");
    let texts: Vec<String> = desk.take(5).await.iter().map(|m| m.text()).collect();
    assert_eq!(
        texts,
        (0..5).map(|n| format!("queued {n}")).collect::<Vec<_>>(),
        "{kind}"
    );
}

/// A link polled from a `select!` (`Link::polled`, as the desk agent does) loses nothing when
/// another branch keeps winning: every message arrives once, in order, and every reply queued
/// between polls reaches the broker.
async fn polled_link_survives_interrupted_polls(kind: BrokerKind) {
    use bonker_client::link::{Link, LinkEvent};
    use rumqttc::{MqttOptions, QoS};

    const COUNT: usize = 300;
    let broker = TestBroker::start(kind);
    let mut watcher = Probe::connect(&broker.url(), &["bonker/test/replies"]).await;
    let sender = Probe::connect(&broker.url(), &[]).await;
    let mut options = MqttOptions::new("polled-link", "127.0.0.1", broker.port());
    options.set_keep_alive(std::time::Duration::from_secs(30));
    let (client, link) = Link::once(None, options, COUNT);
    let mut link = link.polled();
    loop {
        if let LinkEvent::Connected { .. } = link.recv().await {
            break;
        }
    }
    client
        .try_subscribe("bonker/test/requests", QoS::AtLeastOnce)
        .expect("queue SUBSCRIBE");
    loop {
        if let LinkEvent::Subscribed { refused: 0 } = link.recv().await {
            break;
        }
    }
    for n in 0..COUNT {
        sender
            .publish("bonker/test/requests", format!("{n}"), false)
            .await;
    }
    // A branch that wins every other round: `yield_now` is pending on its first poll, so the link
    // is polled, and ready on the next, so that poll is dropped half-way whenever it had not
    // finished by then.
    let mut received = Vec::new();
    let mut interruptions = 0_u64;
    while received.len() < COUNT {
        tokio::select! {
            biased;
            () = tokio::task::yield_now() => interruptions += 1,
            event = link.recv() => match event {
                LinkEvent::Message(publish) => {
                    let text = String::from_utf8(publish.payload.to_vec()).expect("utf-8");
                    client
                        .try_publish("bonker/test/replies", QoS::AtLeastOnce, false, text.clone())
                        .expect("queue the reply");
                    received.push(text);
                }
                LinkEvent::Disconnected { error, .. } => panic!("{kind}: link dropped: {error}"),
                LinkEvent::Closed => panic!("{kind}: link closed"),
                _ => {}
            },
        }
    }
    let expected: Vec<String> = (0..COUNT).map(|n| n.to_string()).collect();
    assert_eq!(received, expected, "{kind}: every request once, in order");
    assert!(interruptions > 0, "{kind}: the poll was never interrupted");
    // The replies leave on later polls; keep polling while the watcher collects them.
    let collect = watcher.take(COUNT);
    tokio::pin!(collect);
    let replies = loop {
        tokio::select! {
            replies = &mut collect => break replies,
            _ = link.recv() => {}
        }
    };
    let replies: Vec<String> = replies.iter().map(|m| m.text()).collect();
    assert_eq!(replies, expected, "{kind}: every reply once, in order");
}

bonker_tests::for_both_brokers!(
    qos1_delivery,
    retained_messages,
    last_will_on_unclean_disconnect,
    persistent_session_queues_while_away,
    polled_link_survives_interrupted_polls,
);
