//! Child processes for tests: the workspace's own binaries and Debian's, started on free ports and
//! always killed when their guard is dropped (a failing test must not leave a broker behind).

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (bound to port 0, then released).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

/// The path of a binary built from this workspace (`bonker-broker`, `bonker-gateway`,
/// `bonker-agent`, `bonker`, `bonker-watcher`), next to the running test executable.
///
/// Tests never build: the test command (`scripts/test`) builds every binary first. Within a
/// package's own tests prefer `env!("CARGO_BIN_EXE_<name>")`, which cargo keeps fresh.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executable lives in target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not built; run `cargo build --workspace --bins` first (scripts/test does)",
        path.display()
    );
    path
}

/// A running child process, killed (SIGKILL) and reaped on drop. Its stdout and stderr are
/// captured line by line so tests can await a line and show the output when they fail.
#[derive(Debug)]
pub struct ChildProcess {
    name: String,
    child: Option<Child>,
    output: Arc<Mutex<Vec<String>>>,
}

impl ChildProcess {
    /// Spawns `command` with piped output.
    pub fn spawn(name: &str, mut command: Command) -> ChildProcess {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let output = Arc::new(Mutex::new(Vec::new()));
        if let Some(stdout) = child.stdout.take() {
            pump(stdout, output.clone());
        }
        if let Some(stderr) = child.stderr.take() {
            pump(stderr, output.clone());
        }
        ChildProcess {
            name: name.to_owned(),
            child: Some(child),
            output,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Everything the process printed so far (stdout and stderr interleaved by line).
    pub fn output(&self) -> String {
        self.output.lock().map(|o| o.join("\n")).unwrap_or_default()
    }

    /// Waits until the process prints a line containing `needle`; panics with its output if it
    /// exits or the deadline passes first.
    pub fn wait_for_line(&mut self, needle: &str, deadline: Duration) -> String {
        let started = Instant::now();
        loop {
            if let Some(line) = self
                .output
                .lock()
                .ok()
                .and_then(|o| o.iter().find(|l| l.contains(needle)).cloned())
            {
                return line;
            }
            if let Some(status) = self.try_status() {
                panic!(
                    "{} exited ({status}) before printing {needle:?}; output:\n{}",
                    self.name,
                    self.output()
                );
            }
            assert!(
                started.elapsed() < deadline,
                "{} did not print {needle:?} within {deadline:?}; output:\n{}",
                self.name,
                self.output()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The exit status, if the process has exited.
    pub fn try_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Sends a signal (`rustix::process::Signal::TERM`, `::STOP`, `::CONT`, …).
    pub fn signal(&self, signal: rustix::process::Signal) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.pid() as i32) {
            let _ = rustix::process::kill_process(pid, signal);
        }
    }

    /// `kill -9`, and waits until the process is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits for the process to exit on its own (after SIGTERM, say), at most `deadline`.
    pub fn wait_exit(&mut self, deadline: Duration) -> std::process::ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.try_status() {
                return status;
            }
            assert!(
                started.elapsed() < deadline,
                "{} did not exit within {deadline:?}; output:\n{}",
                self.name,
                self.output()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- output of {} ---\n{}", self.name, self.output());
        }
    }
}

fn pump(stream: impl std::io::Read + Send + 'static, output: Arc<Mutex<Vec<String>>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if let Ok(mut output) = output.lock() {
                output.push(line);
            }
        }
    });
}

/// Waits until something accepts TCP connections on `addr`.
pub fn wait_for_port(addr: SocketAddr, deadline: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}
