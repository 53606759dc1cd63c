//! The gateway's kill window: what remembering recent OOM kills costs it in memory.
//!
//! The gateway learns every bonk on the namespace topics. A bonk with a `kill` goes into its kill
//! ledger (at most `dedupe.max_kills`, [`DEFAULT_MAX_KILLS`] by default), so that a later alert for
//! the same kill is merged; every detector bonk's id goes into its id window (100,000 by default)
//! and into the fleet view's tracked bonks (the last 10,000). This section runs the real release
//! `bonker-gateway` with its defaults and no desks, publishes watcher bonks straight to the broker
//! and reads the gateway's resident memory (`VmRSS`):
//! - **kills**: a fresh gateway, idle and connected (the baseline), then after [`BONKS`] watcher
//!   bonks for as many distinct pods, once `bonker_gateway_kills_remembered` says every kill is
//!   remembered;
//! - **beyond the cap**: the same gateway after as many more kills, with the gauge still at the cap;
//! - **ids only**: another fresh gateway and as many watcher bonks without a `kill`, so that only
//!   ids are remembered: the difference between the two fresh gateways is the ledger's share.
//!
//! Bonks go out in batches of [`BATCH`]; after each the harness waits until the gateway has seen
//! the batch's last bonk (`/api/bonks/{id}` knows it; one topic, so in order), so the broker
//! never holds more than a batch for the gateway (rumqttd drops the oldest part of a full log) and
//! no fixed sleep guesses how long the gateway takes.

use std::ops::Range;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bonker_protocol::kill::DEFAULT_MAX_KILLS;
use bonker_protocol::{Bonk, BonkId, Detector, Kill, Limit, Namespace, Severity, Source, Topics};
use chrono::Utc;

use crate::http::HttpConnection;
use crate::machine::Load;
use crate::observer::{Observer, ObserverOptions};
use crate::procstat::{peak_rss_kib, rss_kib};
use crate::stack::{Broker, BrokerKind, Gateway, Tools, sum_metric};

/// Bonks per step: the gateway's default cap on remembered kills, so the second step of kills is
/// all beyond it. Quick runs use the same count (the section takes seconds).
pub const BONKS: usize = DEFAULT_MAX_KILLS;

/// Bonks published before the harness waits for the gateway to have seen them.
pub const BATCH: usize = 500;

/// The namespace every bonk is for (one topic, so the gateway sees them in order).
const NAMESPACE: &str = "payments";

/// Resident memory is the median of this many readings…
const RSS_READINGS: usize = 5;
/// …this far apart.
const RSS_INTERVAL: Duration = Duration::from_millis(200);

/// How long the gateway may take to see one batch, or to count its kills.
const BATCH_TIMEOUT: Duration = Duration::from_secs(30);

/// The gauge of remembered kills.
const KILLS_REMEMBERED: &str = "bonker_gateway_kills_remembered";

/// What remembering kills cost the gateway.
#[derive(Debug, Clone)]
pub struct KillWindow {
    /// Bonks in each step.
    pub bonks: usize,
    /// The gateway's cap on remembered kills (its default).
    pub max_kills: usize,
    /// The mean size of a bonk's JSON with its `kill`, in bytes.
    pub kill_payload_bytes: usize,
    /// The mean size of a bonk's JSON without a `kill`, in bytes.
    pub id_payload_bytes: usize,
    /// A fresh gateway, bonks with a kill.
    pub kills: Growth,
    /// The same gateway, as many more kills (its `before_kib` is `kills.after_kib`).
    pub beyond_cap: Growth,
    /// A fresh gateway, bonks without a kill.
    pub ids_only: Growth,
    /// The kills gateway's most resident memory (`VmHWM`) at the end, in KiB.
    pub kills_peak_rss_kib: u64,
}

/// One step: the gateway's resident memory before and after some bonks.
#[derive(Debug, Clone, PartialEq)]
pub struct Growth {
    /// `VmRSS` before, in KiB.
    pub before_kib: u64,
    /// `VmRSS` after, in KiB.
    pub after_kib: u64,
    /// `bonker_gateway_kills_remembered` after.
    pub kills_remembered: u64,
    /// From the first publish until the gateway had seen every bonk.
    pub took: Duration,
    /// The 1-minute load average as the step started.
    pub load: Option<f64>,
}

impl Growth {
    /// The change in resident memory, in KiB (negative when it shrank).
    pub fn delta_kib(&self) -> i64 {
        i64::try_from(self.after_kib).unwrap_or(i64::MAX)
            - i64::try_from(self.before_kib).unwrap_or(i64::MAX)
    }

    /// The change in resident memory per bonk, in bytes.
    pub fn bytes_per_bonk(&self, bonks: usize) -> f64 {
        self.delta_kib() as f64 * 1024.0 / bonks.max(1) as f64
    }
}

impl KillWindow {
    /// What one remembered kill costs beyond what remembering its bonk's id costs, in bytes: the
    /// kills step's growth per bonk less the ids-only step's.
    pub fn bytes_per_kill(&self) -> f64 {
        self.kills.bytes_per_bonk(self.bonks) - self.ids_only.bytes_per_bonk(self.bonks)
    }

    /// Whether the gateway stayed at its cap beyond it.
    pub fn capped(&self) -> bool {
        self.beyond_cap.kills_remembered == self.max_kills as u64
    }

    /// `rss_kib` over the kills gateway's idle baseline.
    pub fn over_baseline(&self, rss_kib: u64) -> f64 {
        rss_kib as f64 / self.kills.before_kib.max(1) as f64
    }
}

/// Runs the section: two fresh gateways, each with its own broker.
pub async fn measure(tools: &Tools) -> Result<KillWindow> {
    let bonks = BONKS;
    let mut gateway = GatewayUnderTest::start(tools, "kill-window-kills").await?;
    let load = load_now();
    let before_kib = gateway.settled_rss_kib().await?;
    let (took, kill_payload_bytes) = gateway.publish(0..bonks, true, bonks as u64).await?;
    let kills = Growth {
        before_kib,
        after_kib: gateway.settled_rss_kib().await?,
        kills_remembered: gateway.kills_remembered().await?,
        took,
        load,
    };
    eprintln!(
        "  {bonks} kills: RSS {} → {} KiB",
        kills.before_kib, kills.after_kib
    );
    let load = load_now();
    let (took, _) = gateway
        .publish(bonks..2 * bonks, true, DEFAULT_MAX_KILLS as u64)
        .await?;
    let beyond_cap = Growth {
        before_kib: kills.after_kib,
        after_kib: gateway.settled_rss_kib().await?,
        kills_remembered: gateway.kills_remembered().await?,
        took,
        load,
    };
    let kills_peak_rss_kib = peak_rss_kib(gateway.gateway.pid()).context("gateway VmHWM")?;
    eprintln!(
        "  {} kills in all: RSS {} KiB, {} remembered",
        2 * bonks,
        beyond_cap.after_kib,
        beyond_cap.kills_remembered
    );
    gateway.stop().await;

    let mut gateway = GatewayUnderTest::start(tools, "kill-window-ids").await?;
    let load = load_now();
    let before_kib = gateway.settled_rss_kib().await?;
    let (took, id_payload_bytes) = gateway.publish(0..bonks, false, 0).await?;
    let ids_only = Growth {
        before_kib,
        after_kib: gateway.settled_rss_kib().await?,
        kills_remembered: gateway.kills_remembered().await?,
        took,
        load,
    };
    eprintln!(
        "  {bonks} bonks without a kill: RSS {} → {} KiB",
        ids_only.before_kib, ids_only.after_kib
    );
    gateway.stop().await;

    Ok(KillWindow {
        bonks,
        max_kills: DEFAULT_MAX_KILLS,
        kill_payload_bytes,
        id_payload_bytes,
        kills,
        beyond_cap,
        ids_only,
        kills_peak_rss_kib,
    })
}

/// The node a pod number runs on: twenty nodes, with names as long as GKE's.
fn node_name(n: usize) -> String {
    format!("gke-prod-eu-default-pool-3f9a1c2d-n{:03}", n % 20)
}

/// The bonk the node watcher publishes for an OOM kill of container `api` in pod number `n`
/// (see its `watcher.rs` and docs/protocol.md, "One kill, one bonk"), with or without its `kill`.
pub fn watcher_bonk(n: usize, with_kill: bool) -> Bonk {
    let node = node_name(n);
    let pod = format!("api-7d4b9c-x2x8q-{n}");
    let pid = 6958 + n;
    let fired_at = Utc::now();
    let mut bonk = Bonk::new(Source::Watcher, Severity::Critical);
    // The watcher's stable id: node, boot id and the kernel record's sequence number.
    bonk.id = BonkId::stable(&[
        "watcher",
        &node,
        "5c1d2e3f-4a5b-4c6d-8e7f-901a2b3c4d5e",
        &(1_000_000 + n).to_string(),
    ]);
    bonk.namespace = Some(NAMESPACE.to_owned());
    bonk.pod = Some(pod.clone());
    bonk.container = Some("api".to_owned());
    bonk.process = Some("python3".to_owned());
    bonk.node = Some(node.clone());
    bonk.reason = Some("OOMKilled".to_owned());
    bonk.summary = Some(format!(
        "OOM kill on {node}: python3 (pid {pid}) in {NAMESPACE}/{pod}/api, 48 MiB resident, at \
         the container's memory limit"
    ));
    bonk.cluster = Some("prod-eu".to_owned());
    bonk.fired_at = Some(fired_at);
    if with_kill {
        let mut kill = Kill::new(Detector::Kernel, fired_at);
        kill.cluster = bonk.cluster.clone();
        kill.namespace = bonk.namespace.clone();
        kill.pod = Some(pod);
        kill.container = bonk.container.clone();
        kill.node = Some(node);
        kill.limit = Some(Limit::Container);
        bonk.kill = Some(kill);
    }
    bonk
}

fn load_now() -> Option<f64> {
    Load::now().map(|l| l.one)
}

/// A broker and a gateway without desks, the harness's MQTT client publishing to it and one HTTP
/// connection to the gateway.
#[derive(Debug)]
struct GatewayUnderTest {
    observer: Observer,
    http: HttpConnection,
    // Dropped in field order: the gateway before its broker.
    gateway: Gateway,
    _broker: Broker,
}

impl GatewayUnderTest {
    async fn start(tools: &Tools, name: &str) -> Result<GatewayUnderTest> {
        let broker = Broker::start(tools, BrokerKind::Bonker, name)?;
        let observer = Observer::connect(&broker.url(), ObserverOptions::default()).await?;
        let gateway = Gateway::start(tools, &broker.url(), None).await?;
        let mut http = HttpConnection::connect(gateway.addr()).await?;
        // What the measurement asks of the gateway is part of its baseline: the first request on
        // each route allocates what later ones reuse.
        let unknown = BonkId::stable(&["bonker-bench", "kill-window", "unknown"]);
        http.get(&format!("/api/bonks/{unknown}")).await?;
        http.get("/metrics").await?;
        Ok(GatewayUnderTest {
            observer,
            http,
            gateway,
            _broker: broker,
        })
    }

    /// The median of [`RSS_READINGS`] readings of the gateway's `VmRSS`, [`RSS_INTERVAL`] apart.
    async fn settled_rss_kib(&mut self) -> Result<u64> {
        let mut readings = Vec::with_capacity(RSS_READINGS);
        for n in 0..RSS_READINGS {
            if n > 0 {
                tokio::time::sleep(RSS_INTERVAL).await;
            }
            self.gateway.check_running()?;
            readings.push(rss_kib(self.gateway.pid())?);
        }
        readings.sort_unstable();
        Ok(readings[readings.len() / 2])
    }

    async fn kills_remembered(&mut self) -> Result<u64> {
        let (status, body) = self.http.get("/metrics").await?;
        if !status.is_success() {
            bail!("GET /metrics answered {status}");
        }
        Ok(sum_metric(&String::from_utf8_lossy(&body), KILLS_REMEMBERED) as u64)
    }

    /// Publishes the watcher bonks of pods `pods`, waiting after each batch until the gateway has
    /// seen its last bonk, then until it remembers `kills`. Returns how long it all took and the
    /// bonks' mean size in bytes.
    async fn publish(
        &mut self,
        pods: Range<usize>,
        with_kill: bool,
        kills: u64,
    ) -> Result<(Duration, usize)> {
        let namespace = Namespace::new(NAMESPACE).map_err(|e| anyhow::anyhow!("namespace: {e}"))?;
        let topic = Topics::default().namespace_bonk(&namespace);
        let count = pods.len();
        let mut payload_bytes = 0;
        let started = Instant::now();
        let pods: Vec<usize> = pods.collect();
        for batch in pods.chunks(BATCH) {
            let mut last = None;
            for &n in batch {
                let bonk = watcher_bonk(n, with_kill);
                let payload = bonk.to_json();
                payload_bytes += payload.len();
                self.observer.publish(topic.clone(), payload).await?;
                last = Some(bonk.id);
            }
            if let Some(last) = last {
                self.wait_seen(&last).await?;
            }
        }
        self.wait_kills(kills).await?;
        Ok((started.elapsed(), payload_bytes / count.max(1)))
    }

    /// Waits until the gateway's fleet view knows bonk `id`.
    async fn wait_seen(&mut self, id: &BonkId) -> Result<()> {
        let path = format!("/api/bonks/{id}");
        let deadline = Instant::now() + BATCH_TIMEOUT;
        loop {
            let (status, _) = self.http.get(&path).await?;
            if status.is_success() {
                return Ok(());
            }
            self.gateway.check_running()?;
            if Instant::now() >= deadline {
                bail!(
                    "the gateway had not seen bonk {id} {BATCH_TIMEOUT:?} after it was published \
                     (GET {path} answered {status})"
                );
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Waits until `bonker_gateway_kills_remembered` is `kills`.
    async fn wait_kills(&mut self, kills: u64) -> Result<()> {
        let deadline = Instant::now() + BATCH_TIMEOUT;
        loop {
            let remembered = self.kills_remembered().await?;
            if remembered == kills {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("the gateway remembers {remembered} kills, not {kills}");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn stop(self) {
        let GatewayUnderTest {
            observer,
            http,
            gateway,
            _broker,
        } = self;
        drop(http);
        drop(gateway);
        observer.disconnect().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bonks_are_the_watchers_each_for_its_own_pod() {
        let first = watcher_bonk(0, true);
        let other = watcher_bonk(1, true);
        let parsed = Bonk::parse_lenient(&first.to_json()).bonk;
        assert_eq!(parsed.source, Source::Watcher);
        assert_eq!(parsed.id, first.id);
        let kill = parsed.kill.expect("a kill");
        assert_eq!(kill.by, Detector::Kernel);
        assert_eq!(kill.pod.as_deref(), Some("api-7d4b9c-x2x8q-0"));
        assert_eq!(kill.limit, Some(Limit::Container));
        assert_ne!(first.id, other.id);
        assert_ne!(first.pod, other.pod);
        assert_eq!(watcher_bonk(0, false).id, first.id);
        assert!(watcher_bonk(0, false).kill.is_none());
    }

    #[test]
    fn growth_is_counted_per_bonk_and_the_ledger_is_what_ids_do_not_explain() {
        let growth = |before_kib, after_kib, kills_remembered| Growth {
            before_kib,
            after_kib,
            kills_remembered,
            took: Duration::from_secs(1),
            load: None,
        };
        let window = KillWindow {
            bonks: 1024,
            max_kills: 10_000,
            kill_payload_bytes: 700,
            id_payload_bytes: 500,
            kills: growth(10_000, 11_000, 10_000),
            beyond_cap: growth(11_000, 10_900, 10_000),
            ids_only: growth(10_000, 10_250, 0),
            kills_peak_rss_kib: 11_100,
        };
        assert_eq!(window.kills.bytes_per_bonk(1024), 1000.0);
        assert_eq!(window.beyond_cap.delta_kib(), -100);
        assert_eq!(window.bytes_per_kill(), 750.0);
        assert!(window.capped());
        assert_eq!(window.over_baseline(15_000), 1.5);
    }
}
