//! MQTT 5 clients go through the same front door as MQTT 3.1.1 ones (on the optional
//! `listen_v5` listener), which reads their packets' properties to find topics and retain flags.

mod support;

use std::time::Duration;

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};
use support::{BrokerProcess, DEADLINE};

async fn connect(addr: std::net::SocketAddr, id: &str) -> (AsyncClient, EventLoop) {
    let mut options = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut event_loop) = AsyncClient::new(options, 100);
    next(&mut event_loop, |p| {
        matches!(p, Packet::ConnAck(_)).then_some(())
    })
    .await;
    (client, event_loop)
}

async fn next<T>(event_loop: &mut EventLoop, mut wanted: impl FnMut(&Packet) -> Option<T>) -> T {
    tokio::time::timeout(DEADLINE, async {
        loop {
            match event_loop.poll().await {
                Ok(Event::Incoming(packet)) => {
                    if let Some(found) = wanted(&packet) {
                        return found;
                    }
                }
                Ok(Event::Outgoing(_)) => {}
                Err(error) => panic!("MQTT 5 connection failed: {error}"),
            }
        }
    })
    .await
    .expect("the awaited MQTT 5 packet arrived in time")
}

#[tokio::test]
async fn mqtt5_clients_publish_retain_and_subscribe_through_the_front_door() {
    let broker = BrokerProcess::start(
        "listen = \"127.0.0.1:0\"\nlisten_v5 = \"127.0.0.1:0\"\nmax_retained = 1\n",
        2,
    );
    let v5 = broker.addr("V5");
    let (publisher, mut publisher_loop) = connect(v5, "v5-publisher").await;
    publisher
        .publish("v5/kept", QoS::AtLeastOnce, true, "first")
        .await
        .expect("publish");
    next(&mut publisher_loop, |p| {
        matches!(p, Packet::PubAck(_)).then_some(())
    })
    .await;
    // Past max_retained: delivered to subscribers, but not retained.
    publisher
        .publish("v5/not-kept", QoS::AtLeastOnce, true, "second")
        .await
        .expect("publish");
    next(&mut publisher_loop, |p| {
        matches!(p, Packet::PubAck(_)).then_some(())
    })
    .await;

    let (subscriber, mut subscriber_loop) = connect(v5, "v5-subscriber").await;
    subscriber
        .subscribe("v5/#", QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    let retained = next(&mut subscriber_loop, |p| match p {
        Packet::Publish(publish) => Some(publish.clone()),
        _ => None,
    })
    .await;
    assert_eq!(
        (
            retained.topic.as_ref(),
            retained.payload.as_ref(),
            retained.retain
        ),
        (&b"v5/kept"[..], &b"first"[..], true)
    );
    publisher
        .publish("v5/live", QoS::AtLeastOnce, false, "third")
        .await
        .expect("publish");
    next(&mut publisher_loop, |p| {
        matches!(p, Packet::PubAck(_)).then_some(())
    })
    .await;
    let live = next(&mut subscriber_loop, |p| match p {
        Packet::Publish(publish) => Some(publish.clone()),
        _ => None,
    })
    .await;
    assert_eq!(
        live.payload.as_ref(),
        b"third",
        "the second publish was not retained, so the next message is the live one"
    );
}
