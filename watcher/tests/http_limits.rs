//! The watcher's metrics port is reachable by anything on the node's network: a client that sends
//! half a request, or nothing at all, must not hold a connection forever, and a flood of sockets
//! must not cost the watcher a task and a file descriptor each.

mod support;

use std::time::{Duration, Instant};

use bonker_client::server::HEADER_READ_TIMEOUT;
use bonker_tests::{BrokerKind, TestBroker};
use bonker_watcher::metrics::MAX_CONNECTIONS;
use support::{WatcherSetup, WatcherUnderTest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Generous room for a loaded machine on top of the header timeout.
const MARGIN: Duration = Duration::from_secs(5);

/// Waits until the watcher closes `stream`; returns when, or `None` if it never does by `limit`.
async fn closed_at(mut stream: TcpStream, limit: Duration) -> Option<Instant> {
    let mut buffer = [0u8; 512];
    let started = Instant::now();
    loop {
        let left = limit.checked_sub(started.elapsed())?;
        match tokio::time::timeout(left, stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(Instant::now()),
            Ok(Ok(_)) => continue,
            Err(_) => return None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_half_sent_requests_are_closed_and_connections_are_capped() {
    let broker = TestBroker::start(BrokerKind::Bonker);
    let watcher = WatcherUnderTest::start(&WatcherSetup {
        broker: &broker,
        prefix: "bonker",
        node: "node-http",
        api: None,
        state_file: None,
        kmsg: Some("/nonexistent/kmsg"),
    });
    let addr = watcher
        .metrics_url
        .trim_start_matches("http://")
        .trim_end_matches("/metrics")
        .to_owned();

    // Half a request line: closed once the header timeout passes.
    let mut half = TcpStream::connect(&addr).await.expect("connect");
    half.write_all(b"GET /metr").await.expect("write");
    let sent = Instant::now();
    let closed = closed_at(half, HEADER_READ_TIMEOUT + MARGIN)
        .await
        .expect("a half-sent request line is closed");
    let waited = closed - sent;
    eprintln!("half a request line closed after {waited:?}");
    assert!(
        waited >= HEADER_READ_TIMEOUT - Duration::from_secs(1),
        "{waited:?}"
    );

    // More silent sockets than the watcher serves at once. It takes MAX_CONNECTIONS of them, the
    // header timeout closes those, and only then are the others taken: two waves of closing,
    // a header timeout apart, the first exactly MAX_CONNECTIONS wide.
    let sockets = MAX_CONNECTIONS + 36;
    let mut silent = Vec::new();
    for _ in 0..sockets {
        silent.push(TcpStream::connect(&addr).await.expect("connect"));
    }
    let opened = Instant::now();
    let limit = HEADER_READ_TIMEOUT * 2 + MARGIN * 2;
    let closes: Vec<Option<Instant>> =
        futures_join_all(silent.into_iter().map(|s| closed_at(s, limit))).await;
    let mut closes: Vec<Duration> = closes
        .into_iter()
        .map(|at| at.expect("every silent socket is closed in the end") - opened)
        .collect();
    closes.sort();
    let first_wave = closes
        .iter()
        .filter(|at| **at < closes[0] + HEADER_READ_TIMEOUT / 2)
        .count();
    eprintln!(
        "{sockets} silent sockets: first closed after {:?}, {first_wave} in the first wave, last \
         after {:?}",
        closes[0],
        closes[sockets - 1]
    );
    assert_eq!(first_wave, MAX_CONNECTIONS, "{closes:?}");
    assert!(
        closes[sockets - 1] >= closes[0] + HEADER_READ_TIMEOUT - Duration::from_secs(1),
        "{closes:?}"
    );

    // And the port serves as before.
    let metrics = watcher.metrics().await;
    assert!(
        metrics.contains("bonker_watcher_mqtt_connected 1"),
        "{metrics}"
    );
}

/// Waits for every future, concurrently.
async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut outputs = Vec::with_capacity(handles.len());
    for handle in handles {
        outputs.push(handle.await.expect("task"));
    }
    outputs
}
