//! The front door: every listener a client can reach belongs to bonker-broker, not rumqttd. Each
//! accepted connection gets a task of its own, which finishes the TLS handshake (on the TLS
//! listener) and reads the whole CONNECT, each within a deadline, and only then connects to
//! rumqttd's loopback listener and relays the connection both ways, showing what the client asks
//! the broker to remember to the [`Ledger`] on the way.
//!
//! Why a front door, when rumqttd has listeners of its own:
//! - **rumqttd handshakes TLS inside its accept loop, with no deadline** (`server/broker.rs`):
//!   one client that connects to the TLS port and sends nothing stops every later TLS client
//!   until it goes away. Here a handshake is one task among many, ends after
//!   `tls.handshake_timeout_ms`, and at most `max_connecting` connections per listener may be
//!   handshaking or sending CONNECT at once (more are closed at once, so a flood of idle sockets
//!   costs bounded memory and legitimate clients are told at once to retry).
//! - **rumqttd remembers without limit** every filter, topic, retained message and client id a
//!   client invents ([`crate::limits`]), and offers no hook to refuse one. The front door reads
//!   CONNECT, SUBSCRIBE and PUBLISH ([`crate::mqtt`]): a new name past a limit closes the
//!   connection (CONNECT gets a refusing CONNACK), and a retained message past the retained
//!   limits is delivered but not retained (its retain flag is cleared on the way).
//! - **rumqttd breaks when it refuses a connection over `max_connections`** (upstream #1062):
//!   the front door refuses first, with a CONNACK, so rumqttd never has to.
//!
//! Nothing a client sends is parsed for rumqttd: packets are forwarded as they came, whole and in
//! order, and rumqttd still validates every byte. The broker-to-client direction is copied
//! unread. The only change ever made to a packet is clearing a retain bit.
//!
//! A client's packets after its CONNECT wait until rumqttd has accepted the connection, so a
//! client that fails authentication cannot use up any limit.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::limits::{Key, Ledger, Refusal};
use crate::mqtt::{self, Malformed, Version};
use crate::{BrokerError, ListenerKind};

/// Worker threads of the front door's runtime: handshakes and relaying; rumqttd has its own.
const WORKER_THREADS: usize = 2;
/// Pending connections the kernel queues per listener before the front door accepts them.
const BACKLOG: u32 = 1024;
/// How long to wait before accepting again after `accept` failed (out of file descriptors,
/// usually): long enough not to spin, short enough not to matter.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// How long rumqttd may take to answer a CONNECT.
const CONNACK_TIMEOUT: Duration = Duration::from_secs(30);
/// After one side of a relayed connection closes, how long the other may take to finish.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// How much a connection reads at a time from its client: most packets are far smaller, and
/// every connection holds this much while idle.
const READ_CHUNK: usize = 2 * 1024;
/// An idle connection's buffer larger than this (after a large packet) is given back.
const LARGE_BUFFER: usize = 16 * 1024;
/// Largest CONNECT accepted (remaining length): a will payload of at most 64 KiB, as MQTT allows,
/// and names. It bounds what a connection that never finishes its CONNECT can make the broker
/// hold: `max_connecting` of these per listener.
const MAX_CONNECT_BYTES: usize = 80 * 1024;
/// rumqttd accepts MQTT 5 topic aliases up to this number (its CONNACK says so).
const TOPIC_ALIAS_MAX: u16 = 4096;
/// At most one "turned away" warning per listener in this interval.
const TURNED_AWAY_WARNING_INTERVAL: Duration = Duration::from_secs(10);

/// What every connection task needs to know.
#[derive(Debug)]
pub(crate) struct Rules {
    /// Time to send the whole CONNECT.
    pub(crate) connect_timeout: Duration,
    /// Time to finish the TLS handshake.
    pub(crate) handshake_timeout: Duration,
    /// Connections per listener between accept and CONNACK.
    pub(crate) max_connecting: usize,
    /// Largest remaining length of a packet (rumqttd's `max_payload_size` means the same).
    pub(crate) max_packet: usize,
    /// Longest topic, filter or client id.
    pub(crate) max_topic_bytes: usize,
}

/// One public listener: where it listens, what it speaks, where rumqttd serves it.
#[derive(Debug)]
pub(crate) struct Door {
    pub(crate) kind: ListenerKind,
    pub(crate) addr: SocketAddr,
    pub(crate) listener: TcpListener,
    pub(crate) upstream: SocketAddr,
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
}

/// The front door's runtime, which owns its listeners from the moment they are bound.
#[derive(Debug)]
pub(crate) struct Front {
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for Front {
    /// A broker that failed to start may be dropped inside its caller's async context, where a
    /// runtime must not block to shut down.
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Front {
    pub(crate) fn new() -> Result<Self, BrokerError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(WORKER_THREADS)
            .thread_name("bonker-broker-front")
            .enable_all()
            .build()?;
        Ok(Front {
            runtime: Some(runtime),
        })
    }

    fn runtime(&self) -> &tokio::runtime::Runtime {
        self.runtime
            .as_ref()
            .expect("the runtime is only taken by serve")
    }

    /// Binds a listener, with TCP_NODELAY (accepted sockets inherit it) and a backlog for a
    /// fleet reconnecting at once.
    pub(crate) fn bind(&self, addr: SocketAddr) -> io::Result<TcpListener> {
        let _runtime = self.runtime().enter();
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.set_nodelay(true)?;
        socket.bind(addr)?;
        socket.listen(BACKLOG)
    }

    /// Serves every door until the process exits, on a thread of its own.
    pub(crate) fn serve(
        mut self,
        doors: Vec<Door>,
        rules: Rules,
        ledger: Ledger,
    ) -> io::Result<()> {
        let shared = Arc::new(Shared {
            rules,
            ledger,
            anonymous_ids: AtomicU64::new(0),
            refusal_warnings: std::sync::Mutex::new(WarningBudget::default()),
        });
        let runtime = self.runtime.take().expect("serve is called once");
        std::thread::Builder::new()
            .name("bonker-broker-front".to_owned())
            .spawn(move || {
                runtime.block_on(async move {
                    for door in doors {
                        tokio::spawn(accept_loop(door, shared.clone()));
                    }
                    std::future::pending::<()>().await;
                });
            })?;
        Ok(())
    }
}

#[derive(Debug)]
struct Shared {
    rules: Rules,
    ledger: Ledger,
    /// Numbers the connections without a client id (rumqttd gives each a fresh one).
    anonymous_ids: AtomicU64,
    /// Clients that reconnect to break a limit again and again must not flood the log.
    refusal_warnings: std::sync::Mutex<WarningBudget>,
}

impl Shared {
    /// Whether a warning about one client may be logged now (see [`WarningBudget`]).
    fn warning_allowed(&self) -> Option<u64> {
        self.refusal_warnings
            .lock()
            .map(|mut budget| budget.allow())
            .unwrap_or(Some(0))
    }
}

/// At most [`WarningBudget::PER_INTERVAL`] warnings per interval; the rest are counted, and the
/// count is logged with the next warning allowed.
#[derive(Debug, Default)]
struct WarningBudget {
    interval_start: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

impl WarningBudget {
    const PER_INTERVAL: u32 = 20;
    const INTERVAL: Duration = Duration::from_secs(10);

    /// `Some(number suppressed since the last warning)` if this one may be logged.
    fn allow(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self
            .interval_start
            .is_none_or(|start| now.duration_since(start) >= Self::INTERVAL)
        {
            self.interval_start = Some(now);
            self.logged = 0;
        }
        if self.logged >= Self::PER_INTERVAL {
            self.suppressed += 1;
            return None;
        }
        self.logged += 1;
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// A listener's identity, for its connections and their logs.
struct DoorInfo {
    addr: SocketAddr,
    version: Version,
    upstream: SocketAddr,
    tls: Option<TlsAcceptor>,
}

async fn accept_loop(door: Door, shared: Arc<Shared>) {
    let info = Arc::new(DoorInfo {
        addr: door.addr,
        version: match door.kind {
            ListenerKind::V5 => Version::V5,
            ListenerKind::V4 | ListenerKind::V4Tls => Version::V4,
        },
        upstream: door.upstream,
        tls: door.tls.map(TlsAcceptor::from),
    });
    let connecting = Arc::new(Semaphore::new(shared.rules.max_connecting));
    let mut turned_away = TurnedAway::default();
    loop {
        let (stream, peer) = match door.listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, listener = %info.addr, "cannot accept a connection");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        let Ok(permit) = connecting.clone().try_acquire_owned() else {
            // Dropping the stream closes it: the client retries, instead of waiting in a queue
            // behind connections that may never finish.
            turned_away.note(&info, shared.rules.max_connecting);
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection(
            stream,
            peer,
            info.clone(),
            shared.clone(),
            permit,
        ));
    }
}

/// Rate-limits the warning about connections closed because `max_connecting` were pending.
#[derive(Debug, Default)]
struct TurnedAway {
    last_warning: Option<Instant>,
    since: u64,
}

impl TurnedAway {
    fn note(&mut self, info: &DoorInfo, max_connecting: usize) {
        self.since += 1;
        if self
            .last_warning
            .is_some_and(|at| at.elapsed() < TURNED_AWAY_WARNING_INTERVAL)
        {
            return;
        }
        tracing::warn!(
            listener = %info.addr,
            closed = self.since,
            max_connecting,
            "closed new connections at once: max_connecting connections are still in their TLS \
             handshake or CONNECT"
        );
        self.last_warning = Some(Instant::now());
        self.since = 0;
    }
}

/// Why a connection ended early.
#[derive(Debug, thiserror::Error)]
enum Closed {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("closed by the client before its CONNECT was complete")]
    EndOfStream,
    #[error("TLS handshake not finished within {0:?}")]
    HandshakeTimeout(Duration),
    #[error("TLS handshake failed: {0}")]
    Handshake(io::Error),
    #[error("CONNECT not complete within {0:?}")]
    ConnectTimeout(Duration),
    #[error("the broker did not answer the CONNECT")]
    NoConnAck,
    #[error("{0}")]
    Malformed(#[from] Malformed),
    #[error("{what} longer than max_topic_bytes ({max})")]
    TooLong { what: &'static str, max: usize },
    #[error("{0}")]
    Refused(#[from] Refusal),
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    info: Arc<DoorInfo>,
    shared: Arc<Shared>,
    permit: OwnedSemaphorePermit,
) {
    let mut client_id = None;
    let outcome = match &info.tls {
        None => serve(stream, &info, &shared, permit, &mut client_id).await,
        Some(acceptor) => {
            let timeout = shared.rules.handshake_timeout;
            match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => serve(stream, &info, &shared, permit, &mut client_id).await,
                Ok(Err(error)) => Err(Closed::Handshake(error)),
                Err(_) => Err(Closed::HandshakeTimeout(timeout)),
            }
        }
    };
    let Err(reason) = outcome else {
        return;
    };
    let client_id = client_id.as_deref().unwrap_or("");
    match reason {
        Closed::Refused(_) | Closed::TooLong { .. } => match shared.warning_allowed() {
            Some(suppressed) => tracing::warn!(
                %peer, listener = %info.addr, client_id, %reason, suppressed,
                "closed a connection"
            ),
            None => tracing::debug!(
                %peer, listener = %info.addr, client_id, %reason, "closed a connection"
            ),
        },
        Closed::Malformed(_) => {
            tracing::info!(%peer, listener = %info.addr, client_id, %reason, "closed a connection");
        }
        // Scanners, dead networks, clients that gave up: not worth more than a debug line each.
        _ => {
            tracing::debug!(%peer, listener = %info.addr, client_id, %reason, "connection ended");
        }
    }
}

/// Reads the CONNECT, lets rumqttd accept or refuse it, then relays.
async fn serve<S>(
    mut client: S,
    info: &DoorInfo,
    shared: &Shared,
    permit: OwnedSemaphorePermit,
    client_id_for_log: &mut Option<String>,
) -> Result<(), Closed>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let rules = &shared.rules;
    let ledger = &shared.ledger;
    let mut incoming = BytesMut::with_capacity(READ_CHUNK);
    let frame = tokio::time::timeout(
        rules.connect_timeout,
        read_frame(
            &mut client,
            &mut incoming,
            rules.max_packet.min(MAX_CONNECT_BYTES),
        ),
    )
    .await
    .map_err(|_| Closed::ConnectTimeout(rules.connect_timeout))??;
    if frame.kind != mqtt::CONNECT {
        return Err(Malformed("the first packet is not CONNECT").into());
    }
    let connect_bytes = &mut incoming[..frame.len()];
    let connect = mqtt::connect(connect_bytes, info.version)?;
    *client_id_for_log = Some(
        connect
            .client_id
            .chars()
            .take(rules.max_topic_bytes)
            .collect(),
    );
    let too_long = |what| Closed::TooLong {
        what,
        max: rules.max_topic_bytes,
    };
    if connect.client_id.len() > rules.max_topic_bytes {
        return refuse(&mut client, info.version, too_long("client id")).await;
    }
    let client_key = if connect.client_id.is_empty() {
        // rumqttd names such a client itself, with a new name every time.
        let number = shared.anonymous_ids.fetch_add(1, Ordering::Relaxed);
        Some(ledger.key(&format!("\0{number}")))
    } else {
        Some(ledger.key(connect.client_id))
    };
    let username = connect.username.map(|name| ledger.key(name));
    let mut will_topic = None;
    let mut retained_will = None;
    let mut clear_will_retain = false;
    if let Some(will) = &connect.will {
        if will.topic.len() > rules.max_topic_bytes {
            return refuse(&mut client, info.version, too_long("will topic")).await;
        }
        let key = ledger.key(will.topic);
        will_topic = Some(key);
        if will.retain && will.payload_len > 0 {
            let bytes = (will.topic.len() + will.payload_len) as u64;
            if ledger.retained_fits(key, bytes) {
                retained_will = Some((key, bytes));
            } else {
                clear_will_retain = true;
            }
        }
    }
    let flags_offset = connect.flags_offset;
    let slot = match ledger.open_connection() {
        Ok(slot) => slot,
        Err(refusal) => return refuse(&mut client, info.version, refusal.into()).await,
    };
    if let Err(refusal) = ledger.check_connect(client_key, username, will_topic) {
        return refuse(&mut client, info.version, refusal.into()).await;
    }
    if clear_will_retain {
        connect_bytes[flags_offset] &= !mqtt::CONNECT_WILL_RETAIN;
        if let Some(suppressed) = shared.warning_allowed() {
            tracing::warn!(
                client_id = client_id_for_log.as_deref().unwrap_or(""),
                suppressed,
                "the last will will not be retained: max_retained or max_retained_bytes reached"
            );
        }
    }

    let mut upstream = TcpStream::connect(info.upstream).await?;
    upstream.set_nodelay(true)?;
    upstream.write_all(&incoming[..frame.len()]).await?;
    incoming.advance(frame.len());

    let mut outgoing = BytesMut::with_capacity(64);
    let connack = match tokio::time::timeout(
        CONNACK_TIMEOUT,
        read_frame(&mut upstream, &mut outgoing, rules.max_packet),
    )
    .await
    {
        Ok(Ok(frame)) if frame.kind == mqtt::CONNACK => frame,
        // rumqttd closes without a CONNACK when it refuses a password.
        _ => return Err(Closed::NoConnAck),
    };
    let code = mqtt::connack_code(&outgoing[..connack.len()])?;
    if code == 0 {
        // Recorded before the client hears its CONNACK, so whatever it does next (another
        // client connecting, say) already counts it.
        ledger.record_connect(client_key, username, will_topic, retained_will);
    }
    client.write_all(&outgoing[..connack.len()]).await?;
    client.flush().await?;
    outgoing.advance(connack.len());
    if code != 0 {
        return Ok(());
    }
    drop(permit);

    let session = Session {
        shared,
        version: info.version,
        aliases: HashMap::new(),
        warned_retain: false,
        client_id: client_id_for_log.as_deref().unwrap_or(""),
    };
    let outcome = relay(client, upstream, incoming, outgoing, session).await;
    drop(slot);
    outcome
}

/// Answers a CONNECT with a refusing CONNACK and closes.
async fn refuse<S>(client: &mut S, version: Version, reason: Closed) -> Result<(), Closed>
where
    S: AsyncWrite + Unpin,
{
    let connack = match reason {
        Closed::Refused(Refusal::ClientIdOfAnotherUser) => mqtt::id_refusing_connack(version),
        _ => mqtt::refusing_connack(version),
    };
    let _ = client.write_all(connack).await;
    let _ = client.shutdown().await;
    Err(reason)
}

/// Reads until `buf` starts with a whole packet; returns its fixed header.
async fn read_frame<R>(
    reader: &mut R,
    buf: &mut BytesMut,
    max_packet: usize,
) -> Result<mqtt::Frame, Closed>
where
    R: AsyncRead + Unpin,
{
    loop {
        let wanted = match mqtt::frame(buf, max_packet)? {
            Some(frame) if buf.len() >= frame.len() => return Ok(frame),
            Some(frame) => frame.len() - buf.len(),
            None => READ_CHUNK,
        };
        buf.reserve(wanted);
        if reader.read_buf(buf).await? == 0 {
            return Err(Closed::EndOfStream);
        }
    }
}

/// Relays an accepted connection both ways until either side closes.
async fn relay<S>(
    client: S,
    upstream: TcpStream,
    mut incoming: BytesMut,
    outgoing: BytesMut,
    mut session: Session<'_>,
) -> Result<(), Closed>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut upstream_read, mut upstream_write) = upstream.into_split();
    let mut to_client = pin!(async {
        client_write.write_all(&outgoing).await?;
        // `copy` (unlike `copy_buf`) flushes whenever rumqttd has nothing more to send, which a
        // TLS stream needs: records it could not write yet would otherwise wait for more data.
        tokio::io::copy(&mut upstream_read, &mut client_write).await?;
        // rumqttd closed the connection (keep-alive, a takeover, a protocol error): so do we.
        let _ = tokio::time::timeout(CLOSE_GRACE, client_write.shutdown()).await;
        Ok::<_, io::Error>(())
    });
    let to_broker = pin!(session.forward(&mut client_read, &mut upstream_write, &mut incoming));
    tokio::select! {
        outcome = &mut to_client => outcome.map_err(Closed::from),
        outcome = to_broker => {
            if outcome.is_ok() {
                // The client closed; rumqttd has been told (end of stream after everything the
                // client sent, a DISCONNECT included) and closes in turn.
                let _ = tokio::time::timeout(CLOSE_GRACE, to_client).await;
            }
            outcome
        }
    }
}

/// One accepted connection's client-to-broker direction.
struct Session<'a> {
    shared: &'a Shared,
    version: Version,
    /// MQTT 5 topic aliases the client set: alias → topic key and length.
    aliases: HashMap<u16, (Key, usize)>,
    warned_retain: bool,
    client_id: &'a str,
}

impl Session<'_> {
    /// Forwards whole packets, in order, until the client closes.
    async fn forward<R, W>(
        &mut self,
        reader: &mut R,
        writer: &mut W,
        buf: &mut BytesMut,
    ) -> Result<(), Closed>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let max_packet = self.shared.rules.max_packet;
        loop {
            let mut ready = 0;
            while let Some(frame) = mqtt::frame(&buf[ready..], max_packet)? {
                let end = ready + frame.len();
                if end > buf.len() {
                    break;
                }
                self.inspect(frame.kind, &mut buf[ready..end])?;
                ready = end;
            }
            if ready > 0 {
                writer.write_all(&buf[..ready]).await?;
                buf.advance(ready);
            }
            if buf.is_empty() && buf.capacity() > LARGE_BUFFER {
                *buf = BytesMut::with_capacity(READ_CHUNK);
            }
            let wanted = match mqtt::frame(buf, max_packet)? {
                Some(frame) => frame.len() - buf.len(),
                None => READ_CHUNK,
            };
            buf.reserve(wanted);
            if reader.read_buf(buf).await? == 0 {
                writer.shutdown().await?;
                return Ok(());
            }
        }
    }

    fn inspect(&mut self, kind: u8, packet: &mut [u8]) -> Result<(), Closed> {
        match kind {
            mqtt::PUBLISH => self.publish(packet),
            mqtt::SUBSCRIBE => self.subscribe(packet),
            _ => Ok(()),
        }
    }

    fn publish(&mut self, packet: &mut [u8]) -> Result<(), Closed> {
        let ledger = &self.shared.ledger;
        let max_topic_bytes = self.shared.rules.max_topic_bytes;
        let publish = mqtt::publish(packet, self.version)?;
        let (key, topic_len) = if publish.topic.is_empty() {
            let alias = publish.alias.unwrap_or_default();
            *self
                .aliases
                .get(&alias)
                .ok_or(Malformed("PUBLISH with an unknown topic alias"))?
        } else {
            if publish.topic.len() > max_topic_bytes {
                return Err(Closed::TooLong {
                    what: "topic",
                    max: max_topic_bytes,
                });
            }
            let key = ledger.key(publish.topic);
            ledger.admit_topic(key)?;
            if let Some(alias) = publish.alias {
                if alias == 0 || alias > TOPIC_ALIAS_MAX {
                    return Err(Malformed("topic alias out of range").into());
                }
                self.aliases.insert(alias, (key, publish.topic.len()));
            }
            (key, publish.topic.len())
        };
        if publish.payload_len == 0 {
            ledger.clear_retained(key);
        } else if publish.retain && !ledger.retain(key, (topic_len + publish.payload_len) as u64) {
            packet[0] &= !mqtt::PUBLISH_RETAIN;
            if !self.warned_retain {
                self.warned_retain = true;
                if let Some(suppressed) = self.shared.warning_allowed() {
                    tracing::warn!(
                        client_id = self.client_id,
                        suppressed,
                        "delivering retained messages without retaining them: max_retained or \
                         max_retained_bytes reached"
                    );
                }
            }
        }
        Ok(())
    }

    fn subscribe(&mut self, packet: &[u8]) -> Result<(), Closed> {
        let ledger = &self.shared.ledger;
        let max_topic_bytes = self.shared.rules.max_topic_bytes;
        let filters = mqtt::subscribe(packet, self.version)?;
        let mut keys = Vec::with_capacity(filters.len());
        for filter in filters {
            if filter.len() > max_topic_bytes {
                return Err(Closed::TooLong {
                    what: "subscription filter",
                    max: max_topic_bytes,
                });
            }
            // A shared subscription reads the log of the filter after its group, as rumqttd
            // keeps it.
            let path = filter
                .strip_prefix("$share/")
                .and_then(|rest| rest.split_once('/'))
                .map_or(filter, |(_group, path)| path);
            if filter.starts_with('$') && !filter.starts_with("$share") {
                return Err(Malformed("subscription filter starting with $").into());
            }
            if !rumqttd::protocol::valid_filter(path) {
                return Err(Malformed("invalid subscription filter").into());
            }
            keys.push(ledger.key(path));
        }
        ledger.admit_filters(&keys)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_about_clients_are_rationed() {
        let mut budget = WarningBudget::default();
        for _ in 0..WarningBudget::PER_INTERVAL {
            assert_eq!(budget.allow(), Some(0));
        }
        assert_eq!(budget.allow(), None);
        assert_eq!(budget.allow(), None);
        // A new interval: the next warning says how many were left out.
        budget.interval_start = Instant::now().checked_sub(WarningBudget::INTERVAL);
        assert_eq!(budget.allow(), Some(2));
        assert_eq!(budget.allow(), Some(0));
    }
}
