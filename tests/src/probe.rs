//! An MQTT client for tests: subscribe, publish (awaiting the broker's PUBACK), and await messages
//! with a deadline.
//!
//! One task polls a one-shot [`bonker_client::link::Link`] and forwards what the test awaits.
//! Nothing here sleeps to synchronise: every wait ends on an event or a deadline.

use std::time::Duration;

use bonker_client::link::{Link, LinkEvent};
use rumqttc::{AsyncClient, LastWill, MqttOptions, QoS};
use tokio::sync::{Mutex, mpsc};

/// A message a probe received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Its topic.
    pub topic: String,
    /// Its payload.
    pub payload: Vec<u8>,
    /// Whether the broker delivered it as a retained message.
    pub retain: bool,
}

impl Message {
    /// The payload as UTF-8 text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }

    /// The payload parsed as JSON; panics with the payload when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).unwrap_or_else(|e| {
            panic!(
                "payload on {} is not JSON ({e}): {}",
                self.topic,
                self.text()
            )
        })
    }
}

/// How to connect a probe.
#[derive(Debug, Clone)]
pub struct ProbeOptions {
    /// Client id (random when `None`).
    pub client_id: Option<String>,
    /// MQTT clean session flag.
    pub clean_session: bool,
    /// Username and password.
    pub credentials: Option<(String, String)>,
    /// A last will: topic, payload, retained.
    pub last_will: Option<(String, Vec<u8>, bool)>,
    /// TLS: the CA certificate (PEM) to trust.
    pub ca_pem: Option<Vec<u8>>,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        Self {
            client_id: None,
            clean_session: true,
            credentials: None,
            last_will: None,
            ca_pem: None,
        }
    }
}

/// Why a probe could not connect.
#[derive(Debug)]
pub struct ConnectError(pub String);

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

enum Note {
    Message(Message),
    PubAck,
    SubAck,
}

/// A connected MQTT client. Dropping it aborts its connection (no DISCONNECT: like a crash).
#[derive(Debug)]
pub struct Probe {
    client: AsyncClient,
    messages: mpsc::UnboundedReceiver<Message>,
    acks: Mutex<mpsc::UnboundedReceiver<()>>,
    subacks: mpsc::UnboundedReceiver<()>,
    task: tokio::task::JoinHandle<()>,
    /// The ConnAck's session_present flag.
    pub session_present: bool,
}

impl Probe {
    /// Connects to `url` (`mqtt://host:port`) with a clean session and subscribes to `filters`
    /// at QoS 1, returning once the broker has acknowledged the subscriptions.
    pub async fn connect(url: &str, filters: &[&str]) -> Probe {
        Probe::connect_with(url, filters, ProbeOptions::default())
            .await
            .unwrap_or_else(|e| panic!("probe cannot connect to {url}: {e}"))
    }

    /// Connects with `options`; an error when the broker refuses or cannot be reached.
    pub async fn connect_with(
        url: &str,
        filters: &[&str],
        options: ProbeOptions,
    ) -> Result<Probe, ConnectError> {
        let rest = url
            .strip_prefix("mqtt://")
            .or_else(|| url.strip_prefix("mqtts://"))
            .ok_or_else(|| ConnectError(format!("not an mqtt:// url: {url}")))?;
        let (host, port) = rest
            .rsplit_once(':')
            .ok_or_else(|| ConnectError(format!("no port in {url}")))?;
        let port: u16 = port
            .parse()
            .map_err(|_| ConnectError(format!("bad port in {url}")))?;
        let client_id = options
            .client_id
            .clone()
            .unwrap_or_else(|| format!("probe-{}", uuid_like()));
        let mut mqtt = MqttOptions::new(client_id, host, port);
        mqtt.set_clean_session(options.clean_session)
            .set_keep_alive(Duration::from_secs(30))
            .set_max_packet_size(1024 * 1024, 1024 * 1024);
        if let Some((user, password)) = &options.credentials {
            mqtt.set_credentials(user.clone(), password.clone());
        }
        if let Some((topic, payload, retain)) = &options.last_will {
            mqtt.set_last_will(LastWill::new(
                topic.clone(),
                payload.clone(),
                QoS::AtLeastOnce,
                *retain,
            ));
        }
        if let Some(ca) = &options.ca_pem {
            mqtt.set_transport(rumqttc::Transport::Tls(tls_config(ca)));
        }
        let (client, mut link) = Link::once(None, mqtt, 1000);

        // Wait for the ConnAck before handing the probe out.
        let session_present = loop {
            match tokio::time::timeout(crate::DEADLINE, link.next()).await {
                Err(_) => return Err(ConnectError(format!("no CONNACK from {url}"))),
                Ok(LinkEvent::Disconnected { error, .. }) => {
                    return Err(ConnectError(error.to_string()));
                }
                Ok(LinkEvent::Closed) => return Err(ConnectError("closed".to_owned())),
                Ok(LinkEvent::Connected {
                    session_present, ..
                }) => break session_present,
                Ok(_) => {}
            }
        };
        let (message_tx, messages) = mpsc::unbounded_channel();
        let (ack_tx, acks) = mpsc::unbounded_channel();
        let (suback_tx, subacks) = mpsc::unbounded_channel();
        // The test reads when it likes: what it has not read yet waits here, not in the link.
        let task = tokio::spawn(async move {
            loop {
                let note = match link.next().await {
                    LinkEvent::Message(p) => Note::Message(Message {
                        topic: p.topic.clone(),
                        payload: p.payload.to_vec(),
                        retain: p.retain,
                    }),
                    LinkEvent::PublishAcked { .. } => Note::PubAck,
                    LinkEvent::Subscribed { .. } => Note::SubAck,
                    // The probe does not reconnect: a test that kills the broker makes a new one.
                    LinkEvent::Disconnected { .. } | LinkEvent::Closed => break,
                    _ => continue,
                };
                let sent = match note {
                    Note::Message(m) => message_tx.send(m).is_ok(),
                    Note::PubAck => ack_tx.send(()).is_ok(),
                    Note::SubAck => suback_tx.send(()).is_ok(),
                };
                if !sent {
                    break;
                }
            }
        });
        let mut probe = Probe {
            client,
            messages,
            acks: Mutex::new(acks),
            subacks,
            task,
            session_present,
        };
        for filter in filters {
            probe.subscribe(filter).await;
        }
        Ok(probe)
    }

    /// Subscribes to `filter` at QoS 1 and waits for the SUBACK.
    pub async fn subscribe(&mut self, filter: &str) {
        self.client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .expect("subscribe request");
        tokio::time::timeout(crate::DEADLINE, self.subacks.recv())
            .await
            .unwrap_or_else(|_| panic!("no SUBACK for {filter}"))
            .expect("probe connection alive");
    }

    /// Publishes at QoS 1 and waits for the broker's PUBACK.
    pub async fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>, retain: bool) {
        let mut acks = self.acks.lock().await;
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload.into())
            .await
            .expect("publish request");
        tokio::time::timeout(crate::DEADLINE, acks.recv())
            .await
            .unwrap_or_else(|_| panic!("no PUBACK for a publish to {topic}"))
            .expect("probe connection alive");
    }

    /// The next message, or `None` when none arrives within `deadline`.
    pub async fn next_within(&mut self, deadline: Duration) -> Option<Message> {
        tokio::time::timeout(deadline, self.messages.recv())
            .await
            .ok()
            .flatten()
    }

    /// The next message; panics when none arrives within [`crate::DEADLINE`].
    pub async fn next(&mut self) -> Message {
        self.next_within(crate::DEADLINE)
            .await
            .expect("a message within the deadline")
    }

    /// The next message on a topic satisfying `predicate`, skipping others; panics at the deadline.
    pub async fn next_on(&mut self, predicate: impl Fn(&Message) -> bool) -> Message {
        let deadline = tokio::time::Instant::now() + crate::DEADLINE;
        loop {
            let message = tokio::time::timeout_at(deadline, self.messages.recv())
                .await
                .expect("the expected message within the deadline")
                .expect("probe connection alive");
            if predicate(&message) {
                return message;
            }
        }
    }

    /// Exactly `count` messages (panics if fewer arrive within the deadline).
    pub async fn take(&mut self, count: usize) -> Vec<Message> {
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            out.push(self.next().await);
        }
        out
    }

    /// Every message already received, without waiting.
    pub fn drain(&mut self) -> Vec<Message> {
        let mut out = Vec::new();
        while let Ok(message) = self.messages.try_recv() {
            out.push(message);
        }
        out
    }

    /// Disconnects cleanly (MQTT DISCONNECT: no last will).
    pub async fn disconnect(mut self) {
        let _ = self.client.disconnect().await;
        let _ = tokio::time::timeout(crate::DEADLINE, &mut self.task).await;
    }

    /// The underlying client, for anything else.
    pub fn client(&self) -> &AsyncClient {
        &self.client
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{}-{n}", std::process::id())
}

fn tls_config(ca_pem: &[u8]) -> rumqttc::TlsConfiguration {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(cert.expect("CA PEM")).expect("CA cert");
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    rumqttc::TlsConfiguration::Rustls(std::sync::Arc::new(config))
}
