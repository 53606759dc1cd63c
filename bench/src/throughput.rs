//! Ingestion throughput: how many alerts per second the gateway accepts (answers 200 for, so the
//! broker has PUBACKed every bonk) with concurrent senders, each on its own keep-alive
//! connection, with desks attached and acking.
//!
//! Each cell runs on a fresh stack: a warm-up, then a measured window during which the kernel's
//! CPU accounting of every process (gateway, broker, desks, this harness) is read at both ends.
//! The process near 100 % of a core (or the gateway near the machine's total) is the
//! bottleneck. After the window the harness waits for the gateway to have counted every ack the
//! desks owe (one per bonk per desk): the time that takes shows whether the acks keep up with
//! ingestion or queue up behind it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::http::Notifications;
use crate::procstat::{CpuShare, CpuWindow, peak_rss_kib};
use crate::stack::{BrokerKind, Stack, StackOptions, Tools};

/// How long the harness waits for outstanding acks after a window…
const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);
/// …giving up earlier when no ack has arrived for this long (they were lost, not late).
const DRAIN_STALLED: Duration = Duration::from_secs(2);

/// One throughput cell.
#[derive(Debug, Clone)]
pub struct CellSpec {
    /// Which broker.
    pub broker: BrokerKind,
    /// Concurrent HTTP senders.
    pub senders: usize,
    /// Alerts per notification.
    pub alerts_per_notification: usize,
    /// Desks watching the namespace.
    pub desks: usize,
    /// The gateway's log filter, when not its default (`info`).
    pub gateway_log: Option<String>,
}

/// What a cell measured.
#[derive(Debug, Clone)]
pub struct Cell {
    /// What ran.
    pub spec: CellSpec,
    /// Alerts accepted (200) per second in the window.
    pub alerts_per_s: f64,
    /// Notifications accepted per second in the window.
    pub requests_per_s: f64,
    /// Answers other than 200 in the window.
    pub failures: u64,
    /// Each process's CPU in the window.
    pub cpu: Vec<CpuShare>,
    /// The gateway's peak resident memory over the cell, in KiB.
    pub gateway_peak_rss_kib: u64,
    /// How long after the window the last owed ack arrived at the gateway (`None`: some never
    /// did — none came for [`DRAIN_STALLED`], or [`DRAIN_TIMEOUT`] passed).
    pub ack_drain: Option<Duration>,
    /// Acks the gateway counted against those owed, at the end.
    pub acks_seen: u64,
    /// The machine's 1-minute load average as the cell started.
    pub load: Option<f64>,
    /// What the bonker broker skipped for subscribers that fell behind (`None` on mosquitto).
    pub skipped: Option<crate::stack::Skipped>,
    /// Acks owed: bonks the broker accepted (the gateway's `bonks_published` counter) times
    /// desks.
    pub acks_owed: u64,
}

#[derive(Debug, Default)]
struct Counters {
    measuring: AtomicBool,
    accepted_alerts: AtomicU64,
    accepted_requests: AtomicU64,
    failures: AtomicU64,
}

/// Runs one cell: `warm_up`, then a measured `window`.
pub async fn cell(
    tools: &Tools,
    spec: CellSpec,
    warm_up: Duration,
    window: Duration,
) -> Result<Cell> {
    let namespace = "storm".to_owned();
    let load = crate::machine::Load::now().map(|l| l.one);
    let mut stack = Stack::start(
        tools,
        &StackOptions {
            broker: spec.broker,
            desks: spec.desks,
            namespace: namespace.clone(),
            gateway_log: spec.gateway_log.clone(),
            observe_acks: false,
            observe_bonks: false,
            desks_homeassistant: true,
        },
    )
    .await?;
    let notifications = Arc::new(Notifications::new());
    let counters = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut senders = Vec::with_capacity(spec.senders);
    for _ in 0..spec.senders {
        let mut http = stack.http().await?;
        let notifications = notifications.clone();
        let counters = counters.clone();
        let stop = stop.clone();
        let namespace = namespace.clone();
        let alerts = spec.alerts_per_notification;
        senders.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let (body, _) = notifications.oom_killed(&namespace, alerts);
                let (status, _) = http.post_json("/webhook", body).await?;
                let measuring = counters.measuring.load(Ordering::Relaxed);
                if status.is_success() {
                    if measuring {
                        counters
                            .accepted_alerts
                            .fetch_add(alerts as u64, Ordering::Relaxed);
                        counters.accepted_requests.fetch_add(1, Ordering::Relaxed);
                    }
                } else if measuring {
                    counters.failures.fetch_add(1, Ordering::Relaxed);
                }
            }
            anyhow::Ok(())
        }));
    }
    tokio::time::sleep(warm_up).await;
    let cpu_window = CpuWindow::start(&stack.processes())?;
    let started = Instant::now();
    counters.measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep(window).await;
    counters.measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_window.finish()?;
    stop.store(true, Ordering::Relaxed);
    for sender in senders {
        sender.await??;
    }
    let stopped = Instant::now();
    stack.check_running()?;
    // Every bonk the broker accepted reaches every desk, also those of a notification that was
    // answered 503 because another of its bonks timed out.
    let published = stack
        .gateway_counter("bonker_gateway_bonks_published_total")
        .await? as u64;
    let acks_owed = published * spec.desks as u64;
    let mut last_seen = 0;
    let mut last_progress = Instant::now();
    let (acks_seen, ack_drain) = loop {
        let seen = stack.gateway_counter("bonker_gateway_acks_total").await? as u64;
        if seen >= acks_owed {
            break (seen, Some(stopped.elapsed()));
        }
        if seen > last_seen {
            last_seen = seen;
            last_progress = Instant::now();
        }
        if stopped.elapsed() > DRAIN_TIMEOUT || last_progress.elapsed() > DRAIN_STALLED {
            break (seen, None);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let gateway_peak_rss_kib = peak_rss_kib(stack.gateway.pid())?;
    let skipped = stack.broker_skipped();
    stack.stop().await;
    Ok(Cell {
        alerts_per_s: counters.accepted_alerts.load(Ordering::Relaxed) as f64 / elapsed,
        requests_per_s: counters.accepted_requests.load(Ordering::Relaxed) as f64 / elapsed,
        failures: counters.failures.load(Ordering::Relaxed),
        cpu,
        gateway_peak_rss_kib,
        ack_drain,
        acks_seen,
        acks_owed,
        skipped,
        load,
        spec,
    })
}
