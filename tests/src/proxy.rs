//! A TCP round-robin proxy: what a Kubernetes Service does in front of gateway replicas.
//!
//! Each accepted connection goes to the next backend in turn; a backend that refuses the
//! connection is skipped, as kube-proxy's endpoints drop a pod that is gone (here at once, which is
//! kinder than the real thing). Bytes are copied both ways until either side closes.

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
