//! What the kernel says about a process: CPU time from `/proc/<pid>/stat`, memory from
//! `/proc/<pid>/status`.
//!
//! The benchmark attributes CPU to each part (broker, gateway, desks, load generator) by reading
//! these before and after a measured window: the difference in utime+stime over the wall time is
//! the share of a core each part used, which is what says where the bottleneck is.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// User plus system CPU time a process has used so far.
pub fn cpu_time(pid: u32) -> Result<Duration> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    parse_cpu_time(&text, clock_ticks_per_second()).with_context(|| format!("in {path}"))
}

/// CPU time of this process.
pub fn own_cpu_time() -> Result<Duration> {
    cpu_time(std::process::id())
}

/// `VmRSS` (resident memory now) of a process, in KiB.
pub fn rss_kib(pid: u32) -> Result<u64> {
    status_field_kib(pid, "VmRSS")
}

/// `VmHWM` (the most resident memory the process ever had), in KiB.
pub fn peak_rss_kib(pid: u32) -> Result<u64> {
    status_field_kib(pid, "VmHWM")
}

fn status_field_kib(pid: u32, field: &str) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    parse_status_kib(&text, field).with_context(|| format!("no {field} in {path}"))
}

fn clock_ticks_per_second() -> u64 {
    rustix::param::clock_ticks_per_second()
}

/// utime + stime from a `/proc/<pid>/stat` line. The command name (field 2) may hold spaces and
/// parentheses, so fields are counted from the last `)`.
fn parse_cpu_time(stat: &str, ticks_per_second: u64) -> Result<Duration> {
    let Some(close) = stat.rfind(')') else {
        bail!("no command name");
    };
    // After ")": field 3 (state) is index 0, so utime (14) is index 11 and stime (15) index 12.
    let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    let field = |index: usize| -> Result<u64> {
        fields
            .get(index)
            .context("too few fields")?
            .parse::<u64>()
            .context("not a number")
    };
    let ticks = field(11)? + field(12)?;
    Ok(Duration::from_secs_f64(
        ticks as f64 / ticks_per_second.max(1) as f64,
    ))
}

fn parse_status_kib(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// CPU use of several processes over one window, started by [`CpuWindow::start`].
#[derive(Debug)]
pub struct CpuWindow {
    started: Instant,
    before: Vec<(String, u32, Duration)>,
}

/// One process's share of the machine over a window.
#[derive(Debug, Clone, PartialEq)]
pub struct CpuShare {
    /// Which part (`gateway`, `broker`, …).
    pub name: String,
    /// CPU time used during the window.
    pub cpu: Duration,
    /// That time over the wall time, in percent of one core (200 % = both cores of two).
    pub percent_of_core: f64,
}

impl CpuWindow {
    /// Reads the CPU time of each `(name, pid)` now.
    pub fn start(processes: &[(&str, u32)]) -> Result<CpuWindow> {
        let before = processes
            .iter()
            .map(|(name, pid)| Ok(((*name).to_owned(), *pid, cpu_time(*pid)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(CpuWindow {
            started: Instant::now(),
            before,
        })
    }

    /// Each process's CPU time since [`CpuWindow::start`].
    pub fn finish(&self) -> Result<Vec<CpuShare>> {
        let wall = self.started.elapsed().as_secs_f64().max(1e-9);
        self.before
            .iter()
            .map(|(name, pid, before)| {
                let cpu = cpu_time(*pid)?.saturating_sub(*before);
                Ok(CpuShare {
                    name: name.clone(),
                    cpu,
                    percent_of_core: cpu.as_secs_f64() / wall * 100.0,
                })
            })
            .collect()
    }
}

/// CPU use of several processes split between interleaved phases (bonker's rounds and the
/// floor's, say): each [`CpuSplit::charge`] gives the CPU time every process used since the last
/// reading to one phase. One reading ends a stretch and starts the next, so nothing is counted
/// twice or lost between phases.
#[derive(Debug)]
pub struct CpuSplit {
    processes: Vec<(String, u32)>,
    mark: Vec<Duration>,
    /// Per phase, per process.
    totals: Vec<Vec<Duration>>,
}

impl CpuSplit {
    /// Reads the CPU time of each `(name, pid)` now; `phases` phases start at zero.
    pub fn start(processes: &[(&str, u32)], phases: usize) -> Result<CpuSplit> {
        let processes: Vec<(String, u32)> = processes
            .iter()
            .map(|(name, pid)| ((*name).to_owned(), *pid))
            .collect();
        let mark = read_all(&processes)?;
        Ok(CpuSplit {
            totals: vec![vec![Duration::ZERO; processes.len()]; phases],
            processes,
            mark,
        })
    }

    /// Starts the next stretch now without charging the last one to any phase.
    pub fn skip(&mut self) -> Result<()> {
        self.mark = read_all(&self.processes)?;
        Ok(())
    }

    /// Charges the CPU time used since the last reading to `phase`.
    pub fn charge(&mut self, phase: usize) -> Result<()> {
        let now = read_all(&self.processes)?;
        self.charge_reading(phase, now);
        Ok(())
    }

    fn charge_reading(&mut self, phase: usize, now: Vec<Duration>) {
        for ((total, before), after) in self.totals[phase].iter_mut().zip(&self.mark).zip(&now) {
            *total += after.saturating_sub(*before);
        }
        self.mark = now;
    }

    /// Each process's CPU time in `phase` divided by `rounds`, by process name.
    pub fn per_round(&self, phase: usize, rounds: usize) -> Vec<(String, Duration)> {
        let rounds = rounds.max(1) as u32;
        self.processes
            .iter()
            .zip(&self.totals[phase])
            .map(|((name, _), total)| (name.clone(), *total / rounds))
            .collect()
    }
}

fn read_all(processes: &[(String, u32)]) -> Result<Vec<Duration>> {
    processes.iter().map(|(_, pid)| cpu_time(*pid)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_read_after_a_command_name_with_spaces_and_parentheses() {
        let stat = "4242 (tokio (runtime) x) S 1 4242 4242 0 -1 4194560 123 0 0 0 250 50 0 0 20 0 \
                    5 0 12345 1000000 300 18446744073709551615";
        assert_eq!(
            parse_cpu_time(stat, 100).expect("parses"),
            Duration::from_secs(3)
        );
        assert!(parse_cpu_time("4242 no parenthesis", 100).is_err());
        assert!(parse_cpu_time("4242 (x) S 1", 100).is_err());
    }

    #[test]
    fn memory_fields_are_read_in_kib() {
        let status = "Name:\tbonker-agent\nVmHWM:\t    4100 kB\nVmRSS:\t    3876 kB\n";
        assert_eq!(parse_status_kib(status, "VmRSS"), Some(3876));
        assert_eq!(parse_status_kib(status, "VmHWM"), Some(4100));
        assert_eq!(parse_status_kib(status, "VmSwap"), None);
    }

    #[test]
    fn interleaved_phases_are_charged_each_its_own_stretch() {
        let ms = Duration::from_millis;
        let mut split = CpuSplit {
            processes: vec![("broker".to_owned(), 1), ("desks".to_owned(), 2)],
            mark: vec![ms(100), ms(50)],
            totals: vec![vec![Duration::ZERO; 2]; 2],
        };
        split.charge_reading(0, vec![ms(110), ms(70)]);
        split.charge_reading(1, vec![ms(114), ms(70)]);
        split.charge_reading(0, vec![ms(124), ms(90)]);
        assert_eq!(
            split.per_round(0, 2),
            [("broker".to_owned(), ms(10)), ("desks".to_owned(), ms(20))]
        );
        assert_eq!(
            split.per_round(1, 1),
            [("broker".to_owned(), ms(4)), ("desks".to_owned(), ms(0))]
        );
        assert_eq!(split.per_round(1, 0)[0].1, ms(4), "no rounds: as one");
    }

    #[test]
    fn this_process_can_be_measured() {
        assert!(rss_kib(std::process::id()).expect("own VmRSS") > 0);
        own_cpu_time().expect("own CPU time");
    }
}
