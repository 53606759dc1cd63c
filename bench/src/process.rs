//! Child processes of a run: brokers, the gateway, the desks and the footprint agent.
//!
//! Each part runs as its own process, as in production, so the kernel accounts its CPU and memory
//! separately — that is the evidence for where a bottleneck is. Output goes to a log file in the
//! run's directory (reading it through a pipe would cost the harness CPU during measurements) and
//! is shown when the part fails. A child is stopped with SIGTERM, then SIGKILL, when its guard is
//! dropped, so a failed run leaves nothing behind.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rustix::process::{Pid, Signal, kill_process};

/// How long a child may take to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Numbers the log files of a run, so that a part started again does not overwrite its last log.
static STARTED: AtomicUsize = AtomicUsize::new(0);

/// A running child process, stopped when dropped.
#[derive(Debug)]
pub struct ChildProcess {
    name: String,
    child: Child,
    log: PathBuf,
}

impl ChildProcess {
    /// Starts `command` with its output going to `<dir>/<n>-<name>.log` and without inheriting any
    /// `BONKER_…` variable from the caller (a run must not depend on the shell it started in).
    pub fn spawn(name: &str, mut command: Command, dir: &Path) -> Result<ChildProcess> {
        let number = STARTED.fetch_add(1, Ordering::Relaxed);
        let log = dir.join(format!("{number:03}-{name}.log"));
        let file = std::fs::File::create(&log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let err = file.try_clone()?;
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("BONKER_") {
                command.env_remove(key);
            }
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::from(file))
            .stderr(Stdio::from(err));
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {name} ({command:?})"))?;
        Ok(ChildProcess {
            name: name.to_owned(),
            child,
            log,
        })
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its name in the run.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Everything it printed so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last lines it printed, for error messages.
    pub fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Fails with its output if it has exited.
    pub fn check_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} exited ({status}); its last output:\n{}",
                self.name,
                self.tail()
            );
        }
        Ok(())
    }

    /// SIGTERM, then SIGKILL after [`STOP_TIMEOUT`]; waits for it to end.
    pub fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        if let Some(pid) = i32::try_from(self.child.id()).ok().and_then(Pid::from_raw) {
            let _ = kill_process(pid, Signal::TERM);
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A free TCP port on 127.0.0.1 (bound to port 0, then released).
pub fn free_port() -> Result<u16> {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("cannot bind 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Waits until `process` accepts TCP connections on `port`, failing if it exits or `timeout`
/// passes first.
pub fn wait_for_port(process: &mut ChildProcess, port: u16, timeout: Duration) -> Result<()> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let deadline = Instant::now() + timeout;
    let mut delay = Duration::from_millis(1);
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        process.check_running()?;
        if Instant::now() >= deadline {
            bail!(
                "{} did not listen on {addr} within {timeout:?}; its last output:\n{}",
                process.name(),
                process.tail()
            );
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(50));
    }
}
