//! The gateway against a scripted MQTT broker that misbehaves on purpose: it withholds a PUBACK
//! until the MQTT client's packet ids wrap around onto it (a packet-id collision), resets the
//! connection while that collision is pending, and after the reconnect acknowledges only the
//! publishes it chooses. Real brokers do each of these under load or failure; scripting them is
//! the only way to make them happen on cue.
//!
//! What must hold: the gateway keeps publishing after the reconnect (nothing of the old
//! connection wedges the new one), and every 200 answers a bonk the broker acknowledged.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bonker_tests::{GatewayProcess, free_port};
use bytes::BytesMut;
use rumqttc::{ConnAck, ConnectReturnCode, Packet, PingResp, PubAck, SubAck, SubscribeReasonCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// What the broker does with each connection.
struct Script {
    /// Connections accepted so far.
    connections: AtomicUsize,
    /// Tells the first connection to drop (the collision is pending).
    reset_first: Notify,
}

/// Serves MQTT 3.1.1 on a free loopback port with `script`.
async fn scripted_broker(script: Arc<Script>) -> u16 {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let number = script.connections.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve(stream, number, script.clone()));
        }
    });
    port
}

async fn serve(mut stream: TcpStream, number: usize, script: Arc<Script>) {
    let mut buffer = BytesMut::with_capacity(64 * 1024);
    let mut out = BytesMut::new();
    let mut withheld = None;
    let reset = script.reset_first.notified();
    tokio::pin!(reset);
    loop {
        let packet = loop {
            match Packet::read(&mut buffer, 1024 * 1024) {
                Ok(packet) => break packet,
                Err(rumqttc::Error::InsufficientBytes(_)) => {}
                Err(_) => return,
            }
            tokio::select! {
                read = stream.read_buf(&mut buffer) => {
                    if !matches!(read, Ok(n) if n > 0) {
                        return;
                    }
                }
                () = &mut reset, if number == 0 => return,
            }
        };
        match packet {
            Packet::Connect(..) => {
                ConnAck::new(ConnectReturnCode::Success, false)
                    .write(&mut out)
                    .expect("encode");
            }
            Packet::Subscribe(subscribe) => {
                let codes = subscribe
                    .filters
                    .iter()
                    .map(|_| SubscribeReasonCode::Success(rumqttc::QoS::AtLeastOnce))
                    .collect();
                SubAck::new(subscribe.pkid, codes)
                    .write(&mut out)
                    .expect("encode");
            }
            Packet::PingReq => {
                PingResp.write(&mut out).expect("encode");
            }
            Packet::Publish(publish) => {
                let text = String::from_utf8_lossy(&publish.payload);
                let ack = match number {
                    // The first connection never acknowledges its first publish, so that the
                    // client's packet ids wrap around onto it.
                    0 => *withheld.get_or_insert(publish.pkid) != publish.pkid,
                    // Later ones acknowledge only the bonks that ask for it.
                    _ => text.contains("ack-me"),
                };
                if ack {
                    PubAck::new(publish.pkid).write(&mut out).expect("encode");
                }
            }
            Packet::Disconnect => return,
            _ => {}
        }
        if !out.is_empty() {
            if stream.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
    }
}

async fn post(client: reqwest::Client, url: String, body: Value) -> (u16, Value) {
    let response = client.post(url).json(&body).send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collision_pending_at_a_reset_does_not_wedge_the_reconnected_gateway() {
    let script = Arc::new(Script {
        connections: AtomicUsize::new(0),
        reset_first: Notify::new(),
    });
    let port = scripted_broker(script.clone()).await;
    let mut gateway = GatewayProcess::spawn(
        &format!("mqtt://127.0.0.1:{port}"),
        free_port(),
        &[],
        &[
            ("BONKER_LOG", "info,bonker_gateway::mqtt=debug"),
            ("BONKER_PUBLISH_TIMEOUT_MS", "3000"),
            ("BONKER_MQTT__RECONNECT_MIN_MS", "50"),
            ("BONKER_MQTT__RECONNECT_MAX_MS", "200"),
        ],
    );
    gateway.wait_ready().await;
    let http = reqwest::Client::new();

    // 101 bonks: the first is never acknowledged, and 100 publishes later the client's packet
    // ids (1..=100, shared with the SUBSCRIBE) come round to its id again.
    let alerts: Vec<Value> = (0..101)
        .map(|n| {
            json!({"status": "firing", "fingerprint": format!("fp-{n}"),
                   "startsAt": "2026-12-03T10:00:00Z",
                   "labels": {"alertname": "Load", "namespace": "payments"}})
        })
        .collect();
    let flood = tokio::spawn(post(
        http.clone(),
        format!("{}/webhook", gateway.url()),
        json!({"alerts": alerts}),
    ));
    gateway
        .process()
        .wait_for_line("packet id collision", bonker_tests::DEADLINE);
    script.reset_first.notify_one();
    let (status, reply) = flood.await.expect("request task");
    assert_eq!(status, 503, "the bonks of the reset connection: {reply}");

    // The reconnected gateway publishes again, and each request gets its own bonk's PUBACK.
    let bonk = |message: &str| {
        post(
            http.clone(),
            format!("{}/bonk", gateway.url()),
            json!({"namespace": "payments", "message": message}),
        )
    };
    let (held, acked) = tokio::join!(bonk("hold"), bonk("ack-me first"));
    assert_eq!(acked.0, 200, "{}: {}", acked.1, gateway.process().output());
    assert_eq!(
        held.0, 503,
        "a bonk the broker never acknowledged: {}",
        held.1
    );
    for n in 0..5 {
        let (status, reply) = bonk(&format!("ack-me {n}")).await;
        assert_eq!(status, 200, "{reply}");
    }
    assert!(script.connections.load(Ordering::SeqCst) >= 2);
}
