//! Log lines as the place they go to expects them, from the real gateway binary with stderr
//! where a deployment puts it:
//! - a pipe (a file, `kubectl logs`, Loki): no terminal escape codes at all;
//! - journald: systemd connects stderr to a stream and names it in `JOURNAL_STREAM`
//!   (`<device>:<inode>`, systemd.exec(5)); the test does the same with a pipe of its own. Each
//!   line then starts with its syslog priority and carries no timestamp of its own, since
//!   journald stamps lines itself.
//!
//! The gateway is pointed at a port where no broker listens, so it logs at info (starting) and at
//! warning (the failed connection) within a second.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use bonker_tests::{binary, free_port};

/// Starts the gateway with stderr to a pipe of the test's own (its device and inode passed to
/// `env` through `{stream}`), reads stderr until a warning, and returns the lines.
fn gateway_lines(env: &[(&str, &str)]) -> Vec<String> {
    use std::os::fd::AsRawFd as _;
    use std::os::unix::fs::MetadataExt as _;
    let (reader, writer) = rustix::pipe::pipe().expect("pipe");
    let reader = std::fs::File::from(reader);
    let pipe = std::fs::metadata(format!("/proc/self/fd/{}", writer.as_raw_fd()))
        .expect("the pipe's inode");
    let stream = format!("{}:{}", pipe.dev(), pipe.ino());
    let mut command = Command::new(binary("bonker-gateway"));
    command
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--mqtt", &format!("mqtt://127.0.0.1:{}", free_port())])
        .env_remove("NO_COLOR")
        .env_remove("JOURNAL_STREAM")
        .env("BONKER_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(writer));
    for (name, value) in env {
        command.env(name, value.replace("{stream}", &stream));
    }
    let mut child = command.spawn().expect("start the gateway");
    // The child holds the only write end from here on, so reading ends when it does.
    drop(command);
    let pid = child.id();
    let watchdog = std::thread::spawn(move || {
        std::thread::park_timeout(Duration::from_secs(20));
        if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    });
    let mut lines = Vec::new();
    for line in BufReader::new(reader).lines() {
        let line = line.expect("utf-8 log line");
        let warned = line.contains("WARN");
        lines.push(line);
        if warned {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    watchdog.thread().unpark();
    assert!(
        lines.iter().any(|l| l.contains("WARN")),
        "no warning within 20 s: {lines:#?}"
    );
    lines
}

#[test]
fn lines_to_a_pipe_carry_no_escape_codes() {
    let lines = gateway_lines(&[]);
    for line in &lines {
        assert!(
            !line.contains('\u{1b}'),
            "an escape code in a line to a pipe: {line:?}"
        );
    }
    // Still the usual line: a timestamp first.
    assert!(
        lines[0].starts_with(|c: char| c.is_ascii_digit()),
        "{lines:#?}"
    );
}

#[test]
fn lines_to_journald_start_with_their_priority_and_no_timestamp() {
    let lines = gateway_lines(&[("JOURNAL_STREAM", "{stream}")]);
    assert!(
        lines.iter().any(|l| l.starts_with("<6>")),
        "info lines at priority 6: {lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("<4>")),
        "warnings at priority 4: {lines:#?}"
    );
    for line in &lines {
        let Some((_, rest)) = line.strip_prefix('<').and_then(|l| l.split_once('>')) else {
            panic!("a line without a priority: {line:?}");
        };
        assert!(
            rest.trim_start().starts_with(['I', 'W', 'E', 'D', 'T']),
            "a timestamp (or something else) before the level: {line:?}"
        );
        assert!(!line.contains('\u{1b}'), "an escape code: {line:?}");
    }
}

#[test]
fn a_stream_that_is_not_stderr_is_not_the_journal() {
    // Inherited from a parent whose stderr went to the journal: the variable names another stream.
    let lines = gateway_lines(&[("JOURNAL_STREAM", "8:12345")]);
    assert!(
        lines[0].starts_with(|c: char| c.is_ascii_digit()),
        "{lines:#?}"
    );
}
