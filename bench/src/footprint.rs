//! Footprint: how big the programs are on disk, and what the desk agent costs a Raspberry Pi.
//!
//! The agent is the real `bonker-agent` binary, run as its own process with a config file, against
//! its own broker so nothing else the run does reaches it:
//! - **idle**: connected, subscribed, announced to Home Assistant, then left alone; resident memory
//!   (`VmRSS`) is read at the end of the idle period, and its CPU time (utime + stime) over the
//!   whole period shows whether it busy-polls (an idle agent should wake only for its keep-alive
//!   and its health report);
//! - **at 10 bonks/s**: bonks published straight to its namespace topic at a steady 10 per
//!   second, every one performed (strokes of 10 ms, the shortest the config allows; rate limit
//!   raised), and every ack awaited; memory is read at the end and its peak (`VmHWM`) too.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bonker_protocol::{Bonk, Namespace, Severity, Source, Topics};

use crate::observer::{Observer, ObserverOptions, Seen};
use crate::process::ChildProcess;
use crate::procstat::{cpu_time, peak_rss_kib, rss_kib};
use crate::stack::{Broker, BrokerKind, Tools};

/// The programs whose size is reported.
pub const BINARIES: [&str; 5] = [
    "bonker-agent",
    "bonker-gateway",
    "bonker-broker",
    "bonker-watcher",
    "bonker",
];

/// A program's size on disk.
#[derive(Debug, Clone)]
pub struct BinarySize {
    /// Its name (and how it was built, when not with the release profile).
    pub name: String,
    /// Its size in bytes; `None` when it was not built.
    pub bytes: Option<u64>,
}

/// The size of each of [`BINARIES`] in `bin_dir`, and of `agent_bin` when the agent is measured
/// from another build (the `pi` profile).
pub fn binary_sizes(bin_dir: &Path, agent_bin: Option<&Path>) -> Vec<BinarySize> {
    let size = |path: &Path| std::fs::metadata(path).ok().map(|m| m.len());
    let mut sizes: Vec<BinarySize> = BINARIES
        .iter()
        .map(|name| BinarySize {
            name: format!("`{name}`"),
            bytes: size(&bin_dir.join(name)),
        })
        .collect();
    if let Some(agent) = agent_bin {
        sizes.insert(
            1,
            BinarySize {
                name: "`bonker-agent`, profile `pi` (as installed on a Pi)".to_owned(),
                bytes: size(agent),
            },
        );
    }
    sizes
}

/// The agent's configuration file for the footprint run.
fn agent_config(url: &str) -> String {
    format!(
        "desk = \"footprint\"\nnamespaces = [\"footprint\"]\n\n[rate_limit]\nmax_bonks = 1000\n\
         per_s = 1\n\n[servo]\ndriver = \"simulated\"\nstroke_ms = 10\n\n[mqtt]\nurl = \"{url}\"\n"
    )
}

/// An agent process being measured.
#[derive(Debug)]
pub struct AgentUnderTest {
    observer: Observer,
    agent: ChildProcess,
    // Dropped last.
    _broker: Broker,
    idle_since: Instant,
    idle_cpu_before: Duration,
    build: &'static str,
}

/// What the agent cost.
#[derive(Debug, Clone)]
pub struct AgentFootprint {
    /// Which build was measured (`pi` or `release` profile).
    pub build: &'static str,
    /// Resident memory at the end of the idle period, in KiB.
    pub idle_rss_kib: u64,
    /// How long it was idle.
    pub idle_for: Duration,
    /// CPU time used while idle.
    pub idle_cpu: Duration,
    /// Resident memory after the bonks, in KiB.
    pub busy_rss_kib: u64,
    /// The most resident memory it ever had, in KiB.
    pub peak_rss_kib: u64,
    /// Bonks sent and acked.
    pub bonks: usize,
    /// The rate they were sent at.
    pub bonks_per_s: f64,
    /// CPU time used while bonked.
    pub busy_cpu: Duration,
    /// How long the bonking lasted.
    pub busy_for: Duration,
}

impl AgentUnderTest {
    /// Starts a broker and the agent, waits until the agent is online, and starts the idle
    /// period.
    pub async fn start(tools: &Tools) -> Result<AgentUnderTest> {
        let broker = Broker::start(tools, BrokerKind::Bonker, "footprint-broker")?;
        let mut observer = Observer::connect(
            &broker.url(),
            ObserverOptions {
                acks: true,
                bonks_on: None,
            },
        )
        .await?;
        let config = tools.dir.join("footprint-agent.toml");
        std::fs::write(&config, agent_config(&broker.url()))?;
        let mut command = Command::new(tools.agent_binary()?);
        command.arg("--config").arg(&config);
        let mut agent = ChildProcess::spawn("footprint-agent", command, &tools.dir)?;
        if let Err(error) = observer
            .wait_online(&["footprint".to_owned()], Duration::from_secs(30))
            .await
        {
            agent.check_running()?;
            return Err(error.context(format!("agent output:\n{}", agent.tail())));
        }
        let idle_cpu_before = cpu_time(agent.pid())?;
        Ok(AgentUnderTest {
            observer,
            agent,
            _broker: broker,
            idle_since: Instant::now(),
            idle_cpu_before,
            build: if tools.agent_bin.is_some() {
                "pi"
            } else {
                "release"
            },
        })
    }

    /// How long the agent has been idle.
    pub fn idle_for(&self) -> Duration {
        self.idle_since.elapsed()
    }

    /// Ends the idle period once it has lasted `idle` (waiting for the rest), then bonks the agent
    /// `bonks` times at `per_second`, awaiting every ack.
    pub async fn finish(
        mut self,
        idle: Duration,
        bonks: usize,
        per_second: u32,
    ) -> Result<AgentFootprint> {
        let rest = idle.saturating_sub(self.idle_since.elapsed());
        tokio::time::sleep(rest).await;
        self.agent.check_running()?;
        let pid = self.agent.pid();
        let idle_for = self.idle_since.elapsed();
        let idle_cpu = cpu_time(pid)?.saturating_sub(self.idle_cpu_before);
        let idle_rss_kib = rss_kib(pid)?;
        self.observer.drain();

        let topics = Topics::default();
        let namespace =
            Namespace::new("footprint").map_err(|e| anyhow::anyhow!("namespace: {e}"))?;
        let topic = topics.namespace_bonk(&namespace);
        let busy_cpu_before = cpu_time(pid)?;
        let started = Instant::now();
        let mut ticker = tokio::time::interval(Duration::from_secs(1) / per_second.max(1));
        let mut acked = 0;
        for _ in 0..bonks {
            ticker.tick().await;
            let mut bonk = Bonk::new(Source::Cli, Severity::Critical);
            bonk.namespace = Some("footprint".to_owned());
            self.observer.publish(topic.clone(), bonk.to_json()).await?;
            acked += self.observer.drain().iter().filter(|s| is_ack(s)).count();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while acked < bonks {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.observer.next_within(left).await {
                Some(seen) if is_ack(&seen) => acked += 1,
                Some(_) => {}
                None => bail!(
                    "the agent acked {acked} of {bonks} bonks; its output:\n{}",
                    self.agent.tail()
                ),
            }
        }
        let busy_for = started.elapsed();
        let busy_cpu = cpu_time(pid)?.saturating_sub(busy_cpu_before);
        let busy_rss_kib = rss_kib(pid)?;
        let peak_rss_kib = peak_rss_kib(pid).context("agent VmHWM")?;
        self.observer.disconnect().await;
        Ok(AgentFootprint {
            build: self.build,
            idle_rss_kib,
            idle_for,
            idle_cpu,
            busy_rss_kib,
            peak_rss_kib,
            bonks,
            bonks_per_s: f64::from(per_second),
            busy_cpu,
            busy_for,
        })
    }
}

fn is_ack(seen: &Seen) -> bool {
    matches!(seen, Seen::Ack { .. })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_footprint_agent_config_is_a_valid_agent_config() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, agent_config("mqtt://127.0.0.1:1883")).expect("write");
        let settings = bonker_agent::config::load_settings(
            Some(&path),
            &<bonker_agent::cli::Args as clap::Parser>::parse_from(["bonker-agent"]),
        )
        .expect("loads");
        let config = settings.validate().expect("valid");
        assert_eq!(config.servo.stroke, Duration::from_millis(10));
        assert_eq!(config.rate_max_bonks, 1000);
    }
}
