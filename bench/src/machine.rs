//! The machine a run measured: CPU, cores, memory, kernel, compiler and broker versions, and how
//! busy the machine was. Figures mean little without it, so it heads the report.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Where the workspace's lock file is, to report the versions of the MQTT crates built in.
const CARGO_LOCK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.lock");

/// A description of this machine.
#[derive(Debug, Clone)]
pub struct Machine {
    /// `model name` from `/proc/cpuinfo`.
    pub cpu_model: String,
    /// CPUs this process may run on.
    pub cores: usize,
    /// `MemTotal`, in MiB.
    pub memory_mib: u64,
    /// Kernel release.
    pub kernel: String,
    /// `rustc --version`.
    pub rustc: String,
    /// mosquitto's version line.
    pub mosquitto: String,
    /// rumqttd's version (the embedded broker).
    pub rumqttd: String,
    /// rumqttc's version (gateway, agents, the harness's own client).
    pub rumqttc: String,
}

impl Machine {
    /// Reads everything it can; what it cannot read says `unknown`.
    pub fn describe(mosquitto: &Path) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let lock = std::fs::read_to_string(CARGO_LOCK).unwrap_or_default();
        Machine {
            cpu_model: cpuinfo
                .lines()
                .find_map(|line| {
                    let (key, value) = line.split_once(':')?;
                    (key.trim() == "model name").then(|| value.trim().to_owned())
                })
                .unwrap_or_else(unknown),
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            memory_mib: meminfo
                .lines()
                .find_map(|line| {
                    let rest = line.strip_prefix("MemTotal:")?;
                    rest.split_whitespace().next()?.parse::<u64>().ok()
                })
                .unwrap_or(0)
                / 1024,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_owned())
                .unwrap_or_else(|_| unknown()),
            rustc: first_line(Command::new("rustc").arg("--version")),
            mosquitto: first_line(Command::new(mosquitto).arg("-h")),
            rumqttd: locked_version(&lock, "rumqttd"),
            rumqttc: locked_version(&lock, "rumqttc"),
        }
    }
}

fn unknown() -> String {
    "unknown".to_owned()
}

/// The first non-empty line a command prints (on stdout or stderr; `mosquitto -h` uses stdout
/// and exits non-zero).
fn first_line(command: &mut Command) -> String {
    command
        .output()
        .ok()
        .and_then(|output| {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            text.lines()
                .map(str::trim)
                .find(|line| !line.is_empty())
                .map(str::to_owned)
        })
        .unwrap_or_else(unknown)
}

/// The version of `package` in a Cargo.lock text.
fn locked_version(lock: &str, package: &str) -> String {
    let needle = format!("name = \"{package}\"");
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line.trim() == needle
            && let Some(version) = lines
                .next()
                .and_then(|v| v.trim().strip_prefix("version = "))
        {
            return version.trim_matches('"').to_owned();
        }
    }
    unknown()
}

/// The 1-, 5- and 15-minute load averages.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Load {
    /// 1 minute.
    pub one: f64,
    /// 5 minutes.
    pub five: f64,
    /// 15 minutes.
    pub fifteen: f64,
}

impl Load {
    /// Reads `/proc/loadavg`.
    pub fn now() -> Option<Load> {
        parse_loadavg(&std::fs::read_to_string("/proc/loadavg").ok()?)
    }
}

impl std::fmt::Display for Load {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.2} / {:.2} / {:.2}",
            self.one, self.five, self.fifteen
        )
    }
}

fn parse_loadavg(text: &str) -> Option<Load> {
    let mut fields = text.split_whitespace().map(|f| f.parse::<f64>().ok());
    Some(Load {
        one: fields.next()??,
        five: fields.next()??,
        fifteen: fields.next()??,
    })
}

/// Waits, checking every `every`, until the 1-minute load is below `max_load` or `patience`
/// has passed. Returns the load when it stopped waiting. Other work on a shared machine makes
/// every figure noisy, so a run starts when the machine is quiet if it can.
pub fn wait_for_quiet(max_load: f64, patience: Duration, every: Duration) -> Option<Load> {
    let started = Instant::now();
    loop {
        let load = Load::now()?;
        if load.one < max_load {
            return Some(load);
        }
        if started.elapsed() >= patience {
            eprintln!(
                "the machine is still busy (load {load}) after {} s; measuring anyway",
                patience.as_secs()
            );
            return Some(load);
        }
        eprintln!(
            "waiting for the machine to quieten: load {load}, want the 1-minute figure below {max_load}"
        );
        std::thread::sleep(every);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loadavg_and_lock_versions_are_parsed() {
        assert_eq!(
            parse_loadavg("0.52 1.10 2.00 3/161 810\n"),
            Some(Load {
                one: 0.52,
                five: 1.10,
                fifteen: 2.00
            })
        );
        assert_eq!(parse_loadavg("garbage"), None);
        let lock = "[[package]]\nname = \"rumqttd\"\nversion = \"0.20.0\"\nsource = \"x\"\n";
        assert_eq!(locked_version(lock, "rumqttd"), "0.20.0");
        assert_eq!(locked_version(lock, "rumqttc"), "unknown");
    }
}
