//! The MQTT link: the one task that polls rumqttc's event loop.
//!
//! rumqttc makes progress — reading, writing, keep-alive pings, reconnecting — only while its
//! `EventLoop` is polled, so exactly one task polls it and does nothing else that could block: it
//! forwards what the agent needs as [`LinkEvent`]s on an unbounded channel and sleeps only for the
//! reconnect backoff (rumqttc itself retries at once, forever). The agent's own work never runs
//! here. The task is spawned before the agent awaits anything from the broker, or the first
//! publish would wait for a poll that never comes.
//!
//! Each event carries the number of QoS 1 publishes still awaiting their PUBACK, which is how a
//! clean shutdown knows its `offline` status has reached the broker before it disconnects.

use std::time::Duration;

use bonker_client::Backoff;
use rumqttc::{ConnectionError, Event, EventLoop, Outgoing, Packet, SubscribeReasonCode};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// What the link tells the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// Connected (again). `session_present` is false when the broker had no session for us.
    Connected {
        /// Whether the broker resumed the persistent session.
        session_present: bool,
    },
    /// A SUBSCRIBE was acknowledged; `failed` filters were refused.
    Subscribed {
        /// How many filters the broker refused.
        failed: usize,
    },
    /// A SUBSCRIBE went out (in request order).
    SubscribeSent {
        /// QoS 1 publishes still unacknowledged.
        inflight: u16,
    },
    /// A message arrived.
    Message {
        /// Its topic.
        topic: String,
        /// Its payload.
        payload: Vec<u8>,
        /// Whether the broker replayed it as a retained message.
        retain: bool,
    },
    /// One of our QoS 1 publishes was acknowledged.
    PublishAcked {
        /// QoS 1 publishes still unacknowledged.
        inflight: u16,
    },
    /// The connection dropped; the link retries after `retry_in`.
    Disconnected {
        /// Why.
        error: String,
        /// The backoff delay.
        retry_in: Duration,
    },
    /// We sent DISCONNECT; the link has stopped.
    Closed,
}

/// Spawns the link task. It ends after sending DISCONNECT, or when the agent drops its receiver.
pub fn spawn(
    mut event_loop: EventLoop,
    mut backoff: Backoff,
    events: mpsc::UnboundedSender<LinkEvent>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let event = match event_loop.poll().await {
                Ok(event) => event,
                Err(ConnectionError::RequestsDone) => return,
                Err(error) => {
                    let retry_in = backoff.next_delay();
                    let forwarded = events.send(LinkEvent::Disconnected {
                        error: error.to_string(),
                        retry_in,
                    });
                    if forwarded.is_err() {
                        return;
                    }
                    tokio::time::sleep(retry_in).await;
                    continue;
                }
            };
            let inflight = event_loop.state.inflight();
            let forward = match event {
                Event::Incoming(Packet::ConnAck(connack)) => {
                    backoff.reset();
                    Some(LinkEvent::Connected {
                        session_present: connack.session_present,
                    })
                }
                Event::Incoming(Packet::Publish(publish)) => Some(LinkEvent::Message {
                    topic: publish.topic,
                    payload: publish.payload.to_vec(),
                    retain: publish.retain,
                }),
                Event::Incoming(Packet::PubAck(_)) => Some(LinkEvent::PublishAcked { inflight }),
                Event::Incoming(Packet::SubAck(suback)) => Some(LinkEvent::Subscribed {
                    failed: suback
                        .return_codes
                        .iter()
                        .filter(|code| matches!(code, SubscribeReasonCode::Failure))
                        .count(),
                }),
                Event::Outgoing(Outgoing::Subscribe(_)) => {
                    Some(LinkEvent::SubscribeSent { inflight })
                }
                Event::Outgoing(Outgoing::Disconnect) => {
                    wait_for_close(&mut event_loop).await;
                    let _ = events.send(LinkEvent::Closed);
                    return;
                }
                _ => None,
            };
            if let Some(forward) = forward
                && events.send(forward).is_err()
            {
                return;
            }
        }
    })
}

/// How long to wait for the broker to close the connection after DISCONNECT.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// After DISCONNECT, waits (briefly) for the broker to close the connection, so the program
/// exits only once the broker is done with it: a client that connects the same instant is then
/// not caught in the broker's clean-up of this one.
pub(crate) async fn wait_for_close(event_loop: &mut EventLoop) {
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, event_loop.poll()).await;
}
