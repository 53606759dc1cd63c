//! `bonker-broker` from the command line: it runs with no file at all, with a file, and refuses
//! bad configuration with a clear message and a non-zero exit before serving anything.

use std::net::TcpListener;
use std::process::Command;

use bonker_tests::{BrokerKind, ChildProcess, DEADLINE, Probe, TestBroker, binary, free_port};

fn run_to_exit(args: &[&str], config: Option<&str>) -> (i32, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut command = Command::new(binary("bonker-broker"));
    command.args(args).env_remove("BONKER_LISTEN");
    if let Some(text) = config {
        let path = dir.path().join("broker.toml");
        std::fs::write(&path, text).expect("write");
        command.arg("--config").arg(path);
    }
    let output = command.output().expect("bonker-broker runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn bad_configuration_is_refused_with_a_message() {
    let (code, stderr) = run_to_exit(
        &[],
        Some("listen = \"127.0.0.1:1883\"\nmax_conections = 5\n"),
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("max_conections"), "{stderr}");

    let (code, stderr) = run_to_exit(&["--listen", "not-an-address"], None);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("listen"), "{stderr}");

    let (code, stderr) = run_to_exit(
        &[],
        Some(
            "listen = \"127.0.0.1:0\"\n[tls]\ncert_file = \"/nonexistent/tls.crt\"\nkey_file = \"/nonexistent/tls.key\"\n",
        ),
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("tls.cert_file"), "{stderr}");

    let (code, stderr) = run_to_exit(&["--config", "/nonexistent/broker.toml"], None);
    assert_ne!(code, 0, "{stderr}");
    assert!(stderr.contains("/nonexistent/broker.toml"), "{stderr}");
}

#[test]
fn a_port_in_use_is_reported_at_once() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let (code, stderr) = run_to_exit(&["--listen", &format!("127.0.0.1:{port}")], None);
    assert_ne!(code, 0);
    assert!(stderr.contains("cannot listen on"), "{stderr}");
}

#[tokio::test]
async fn it_serves_from_flags_and_from_a_file_with_users() {
    // Flags only.
    let port = free_port();
    let mut command = Command::new(binary("bonker-broker"));
    command.arg("--listen").arg(format!("127.0.0.1:{port}"));
    let mut broker = ChildProcess::spawn("bonker-broker", command);
    broker.wait_for_line("listening on", DEADLINE);
    let url = format!("mqtt://127.0.0.1:{port}");
    let mut probe = Probe::connect(&url, &["bonker/#"]).await;
    probe.publish("bonker/bonk/default", "bonk", false).await;
    assert_eq!(probe.next().await.text(), "bonk");
    broker.signal(rustix::process::Signal::TERM);
    assert!(
        broker.wait_exit(DEADLINE).success(),
        "SIGTERM stops it cleanly"
    );

    // A file with users: anonymous clients are refused, known users served.
    let broker = TestBroker::start_with(
        BrokerKind::Bonker,
        bonker_tests::BrokerOptions {
            users: vec![("alice".into(), "s3cret".into())],
            ..Default::default()
        },
    );
    let anonymous = Probe::connect_with(&broker.url(), &[], Default::default()).await;
    assert!(anonymous.is_err(), "an anonymous client must be refused");
    let wrong = Probe::connect_with(
        &broker.url(),
        &[],
        bonker_tests::ProbeOptions {
            credentials: Some(("alice".into(), "wrong".into())),
            ..Default::default()
        },
    )
    .await;
    assert!(wrong.is_err(), "a wrong password must be refused");
    let alice = Probe::connect_with(
        &broker.url(),
        &["bonker/#"],
        bonker_tests::ProbeOptions {
            credentials: Some(("alice".into(), "s3cret".into())),
            ..Default::default()
        },
    )
    .await;
    assert!(alice.is_ok(), "alice is served");
}

/// rumqttd keeps every message routed to a filter in that filter's log until the log is full,
/// delivered or not; bonker-broker caps each log at `FILTER_LOG_BYTES`. Twelve times that much
/// traffic through one filter, with a subscriber reading all of it, must leave the broker's
/// memory no higher than one full log (plus per-message bookkeeping and allocator slack).
#[tokio::test]
async fn memory_per_filter_is_capped_by_its_log() {
    use bonker_broker::settings::FILTER_LOG_BYTES;
    use bonker_tests::measure::rss_kib;

    const PAYLOAD: usize = 4 * 1024;
    let broker = TestBroker::start(BrokerKind::Bonker);
    let pid = broker.pid().expect("bonker-broker runs as a process");
    let mut subscriber = Probe::connect(&broker.url(), &["bonker/bonk/memory"]).await;
    let publisher = Probe::connect(&broker.url(), &[]).await;
    let messages = 12 * FILTER_LOG_BYTES / PAYLOAD;
    let mut before = None;
    for n in 0..messages {
        // Start counting once a first log's worth has passed: runtime buffers are warm then.
        if n == FILTER_LOG_BYTES / PAYLOAD {
            before = rss_kib(pid);
        }
        publisher
            .publish("bonker/bonk/memory", vec![b'x'; PAYLOAD], false)
            .await;
        let message = subscriber.next().await;
        assert_eq!(message.payload.len(), PAYLOAD);
    }
    let before = before.expect("broker RSS");
    let after = rss_kib(pid).expect("broker RSS");
    let traffic_kib = (messages * PAYLOAD / 1024) as u64;
    let log_kib = (FILTER_LOG_BYTES / 1024) as u64;
    assert!(
        after <= before + log_kib + log_kib / 2 + 1024,
        "bonker-broker grew from {before} KiB to {after} KiB after {traffic_kib} KiB through one \
         filter (log capacity {log_kib} KiB)"
    );
}
