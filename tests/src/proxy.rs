//! TCP proxies: a round-robin one, what a Kubernetes Service does in front of gateway replicas; a
//! broker link whose replies can be stalled; a link that can be cut, as a WAN outage cuts a bridge.
//!
//! The round-robin proxy sends each accepted connection to the next backend in turn; a backend
//! that refuses the connection is skipped, as kube-proxy's endpoints drop a pod that is gone (here
//! at once, which is kinder than the real thing). Bytes are copied both ways until either side
//! closes.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::net::{TcpListener, TcpStream};

/// A running proxy; stops when dropped.
#[derive(Debug)]
pub struct RoundRobinProxy {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl RoundRobinProxy {
    /// Listens on a free loopback port and forwards to `backends` in turn.
    pub async fn start(backends: Vec<SocketAddr>) -> RoundRobinProxy {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = connections.clone();
        let task = tokio::spawn(async move {
            let next = AtomicUsize::new(0);
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                counter.fetch_add(1, Ordering::SeqCst);
                let start = next.fetch_add(1, Ordering::SeqCst);
                let backends = backends.clone();
                tokio::spawn(async move {
                    for offset in 0..backends.len() {
                        let backend = backends[(start + offset) % backends.len()];
                        if let Ok(mut outbound) = TcpStream::connect(backend).await {
                            let _ = outbound.set_nodelay(true);
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                            return;
                        }
                    }
                });
            }
        });
        RoundRobinProxy {
            addr,
            connections,
            task,
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for RoundRobinProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A TCP link to a broker whose replies can be held back: what a client sees when the network
/// towards it stalls one way. Used to stop a gateway between "the broker has my bonk" and "I know
/// the broker has my bonk" (its PUBACK never arrives), and kill it there.
#[derive(Debug)]
pub struct StallableLink {
    addr: SocketAddr,
    stalled: Arc<tokio::sync::watch::Sender<bool>>,
    task: tokio::task::JoinHandle<()>,
}

impl StallableLink {
    /// Listens on a free loopback port and forwards every connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> StallableLink {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind the link");
        let addr = listener.local_addr().expect("link address");
        let stalled = Arc::new(tokio::sync::watch::Sender::new(false));
        let gate = stalled.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    continue;
                };
                let Ok(outbound) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let _ = inbound.set_nodelay(true);
                let _ = outbound.set_nodelay(true);
                let (mut client_read, mut client_write) = inbound.into_split();
                let (mut upstream_read, mut upstream_write) = outbound.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut client_read, &mut upstream_write).await;
                });
                let mut gate = gate.subscribe();
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let mut buffer = vec![0u8; 64 * 1024];
                    loop {
                        let Ok(read) = upstream_read.read(&mut buffer).await else {
                            return;
                        };
                        if read == 0 || gate.wait_for(|stalled| !*stalled).await.is_err() {
                            return;
                        }
                        if client_write.write_all(&buffer[..read]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        StallableLink {
            addr,
            stalled,
            task,
        }
    }

    /// `mqtt://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("mqtt://{}", self.addr)
    }

    /// Holds back everything the broker sends from now on (requests still go through).
    pub fn stall_replies(&self) {
        self.stalled.send_replace(true);
    }

    /// Lets the broker's replies through again.
    pub fn resume_replies(&self) {
        self.stalled.send_replace(false);
    }
}

impl Drop for StallableLink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A TCP link that can be cut and restored: what a WAN outage does to a bridge between an office
/// broker and the cluster broker. Every connection is forwarded to `upstream`; [`cut`] closes the
/// open ones (both ends see their connection drop, as after a router reset) and closes every new
/// connection as soon as it is accepted, until [`restore`].
///
/// [`cut`]: CuttableLink::cut
/// [`restore`]: CuttableLink::restore
#[derive(Debug)]
pub struct CuttableLink {
    addr: SocketAddr,
    cut: Arc<tokio::sync::watch::Sender<bool>>,
    connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl CuttableLink {
    /// Listens on a free loopback port and forwards every connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> CuttableLink {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind the link");
        let addr = listener.local_addr().expect("link address");
        let cut = Arc::new(tokio::sync::watch::Sender::new(false));
        let connections = Arc::new(AtomicUsize::new(0));
        let gate = cut.clone();
        let counter = connections.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                let mut gate = gate.subscribe();
                if *gate.borrow_and_update() {
                    // Closed at once: the client sees its connection attempt fail.
                    continue;
                }
                let Ok(mut outbound) = TcpStream::connect(upstream).await else {
                    continue;
                };
                counter.fetch_add(1, Ordering::SeqCst);
                let _ = inbound.set_nodelay(true);
                let _ = outbound.set_nodelay(true);
                tokio::spawn(async move {
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = gate.wait_for(|cut| *cut) => {}
                    }
                    // Dropping both streams closes both connections.
                });
            }
        });
        CuttableLink {
            addr,
            cut,
            connections,
            task,
        }
    }

    /// The link's address, `127.0.0.1:<port>`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes every connection through the link and refuses new ones.
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    /// Forwards new connections again.
    pub fn restore(&self) {
        self.cut.send_replace(false);
    }

    /// Connections forwarded so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for CuttableLink {
    fn drop(&mut self) {
        self.task.abort();
    }
}
