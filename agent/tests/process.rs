//! The `bonker-agent` binary as a real process: started with flags only, killed with `kill -9`,
//! stopped with SIGTERM, given bad configuration.

mod common;

use std::path::Path;
use std::process::Command;

use bonker_tests::{BrokerKind, ChildProcess, DEADLINE, TestBroker, free_port};
use common::{bonk, bonk_moves, outcome, read_record_file};
use rumqttc::QoS;
use rustix::process::Signal;

const REST: u32 = bonker_agent::config::DEFAULT_REST_US;
const STRIKE: u32 = bonker_agent::config::DEFAULT_STRIKE_US;

/// `bonker-agent --desk <desk> --namespace payments --mqtt <url>`, with no config file, a
/// simulated servo recording to `record_file` and a clean environment.
fn agent_command(url: &str, desk: &str, record_file: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_bonker-agent"));
    command
        .args(["--desk", desk, "--namespace", "payments", "--mqtt", url])
        .env("BONKER_LOG", "info")
        .env("BONKER_SERVO__STROKE_MS", "10")
        .env("BONKER_SERVO__RECORD_FILE", record_file)
        .env("BONKER_MQTT__RECONNECT_MAX_MS", "500")
        .env("BONKER_SOC_TEMP_FILE", "/nonexistent");
    command
}

async fn start_agent(url: &str, desk: &str, record_file: &Path) -> ChildProcess {
    let mut status = common::probe(url, &[&format!("bonker/desk/{desk}/status")]).await;
    let agent = ChildProcess::spawn("bonker-agent", agent_command(url, desk, record_file));
    status.next_on(|m| m.text() == "online").await;
    agent
}

/// `kill -9`: no DISCONNECT, so the broker publishes the last will, `offline`, retained.
async fn kill_9_makes_the_broker_publish_offline(kind: BrokerKind) {
    let broker = TestBroker::start(kind);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut agent = start_agent(&broker.url(), "frank", &dir.path().join("pulses")).await;
    let mut status = common::probe(&broker.url(), &["bonker/desk/frank/status"]).await;
    assert_eq!(status.next().await.text(), "online", "{kind}");
    agent.kill();
    let will = status.next().await;
    assert_eq!(will.text(), "offline", "{kind}");
    let mut late = common::probe(&broker.url(), &["bonker/desk/frank/status"]).await;
    let retained = late.next().await;
    assert_eq!(
        (retained.text().as_str(), retained.retain),
        ("offline", true),
        "{kind}"
    );
}

/// SIGTERM: the move in progress finishes, queued moves are cancelled (acked `servo_error`), the
/// arm parks at rest and is released, then `offline` is published and the process exits 0.
async fn sigterm_parks_the_arm_then_publishes_offline(kind: BrokerKind) {
    let broker = TestBroker::start(kind);
    let dir = tempfile::tempdir().expect("tempdir");
    let record_file = dir.path().join("pulses");
    let mut command = agent_command(&broker.url(), "grace", &record_file);
    // Slow strokes, so the agent is mid-move when the signal arrives.
    command
        .env("BONKER_SERVO__STROKE_MS", "300")
        .env("BONKER_RATE_LIMIT__MAX_BONKS", "100");
    let mut status = common::probe(&broker.url(), &["bonker/desk/grace/status"]).await;
    let mut agent = ChildProcess::spawn("bonker-agent", command);
    status.next_on(|m| m.text() == "online").await;
    let mut acks = common::probe(&broker.url(), &["bonker/desk/grace/ack"]).await;
    let sender = common::probe(&broker.url(), &[]).await;
    sender
        .publish("bonker/bonk/payments", bonk("first", "critical"), false)
        .await;
    sender
        .publish("bonker/bonk/payments", bonk("queued", "critical"), false)
        .await;
    agent.wait_for_line("bonking", DEADLINE);
    agent.signal(Signal::TERM);
    let mut outcomes = vec![outcome(&acks.next().await), outcome(&acks.next().await)];
    outcomes.sort();
    assert_eq!(
        outcomes,
        [
            ("first".into(), "bonked".into()),
            ("queued".into(), "servo_error".into())
        ],
        "{kind}"
    );
    let offline = status.next().await;
    assert_eq!(offline.text(), "offline", "{kind}");
    assert!(agent.wait_exit(DEADLINE).success(), "{kind}: exit status");
    let records = read_record_file(&record_file);
    let last_two: Vec<Option<u32>> = records.iter().rev().take(2).map(|r| r.pulse_us).collect();
    assert_eq!(
        last_two,
        [None, Some(REST)],
        "{kind}: parked at rest, then released"
    );
    assert_eq!(
        bonk_moves(&records, REST),
        vec![vec![STRIKE, REST]],
        "{kind}"
    );
    assert!(
        records.first().and_then(|r| r.pulse_us) == Some(REST),
        "{kind}: the arm is homed at start"
    );
}

/// A desk that crashes (or loses power) and comes back performs the bonks sent meanwhile.
async fn bonks_sent_while_crashed_are_performed_after_restart(kind: BrokerKind) {
    let broker = TestBroker::start(kind);
    let dir = tempfile::tempdir().expect("tempdir");
    let record_file = dir.path().join("pulses");
    let mut agent = start_agent(&broker.url(), "heidi", &record_file).await;
    agent.kill();
    let mut acks = common::probe(&broker.url(), &["bonker/desk/heidi/ack"]).await;
    let sender = common::probe(&broker.url(), &[]).await;
    sender
        .publish("bonker/bonk/payments", bonk("meanwhile", "critical"), false)
        .await;
    let _agent = start_agent(&broker.url(), "heidi", &record_file).await;
    assert_eq!(
        outcome(&acks.next().await),
        ("meanwhile".into(), "bonked".into()),
        "{kind}"
    );
    assert_eq!(
        bonk_moves(&read_record_file(&record_file), REST),
        vec![vec![STRIKE, REST]]
    );
}

/// A storm of bonks far faster than a desk can answer (one publisher, no pause, 16,000 bonks):
/// every bonk still gets exactly one ack, and the desk stays online and answers the next bonk.
///
/// The desk reads bonks faster than it can send replies, so its replies queue up inside it; the
/// queue must hold a storm's worth (with 4,096 slots, 3,262 of these 16,000 acks were lost on
/// mosquitto). Both test brokers have room for the whole storm — mosquitto's per-client queue is
/// 100,000 messages; the bonker broker's per-filter log keeps at least three of its four
/// 256 KiB segments, 786,432 bytes, and rumqttd counts these bonks as 45 bytes each (720,000 in
/// all) — so every lost ack would be the desk's.
async fn a_bonk_storm_gets_one_ack_per_bonk(kind: BrokerKind) {
    const STORM: usize = 16_000;
    let broker = TestBroker::start(kind);
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = start_agent(&broker.url(), "storm", &dir.path().join("pulses")).await;
    let mut acks = common::probe(&broker.url(), &["bonker/desk/storm/ack"]).await;
    let sender = common::probe(&broker.url(), &[]).await;
    let payloads: Vec<String> = (0..STORM)
        .map(|n| serde_json::json!({"v": 1, "id": format!("s{n}")}).to_string())
        .collect();
    let storm = tokio::spawn({
        let client = sender.client().clone();
        async move {
            for payload in payloads {
                client
                    .publish("bonker/bonk/payments", QoS::AtLeastOnce, false, payload)
                    .await
                    .expect("queue a bonk");
            }
        }
    });
    let mut seen = std::collections::HashSet::new();
    while seen.len() < STORM {
        let Some(ack) = acks.next_within(DEADLINE).await else {
            panic!(
                "{kind}: {} of {STORM} bonks acked, then silence; agent output:\n{}",
                seen.len(),
                agent.output()
            );
        };
        let (id, _) = outcome(&ack);
        assert!(seen.insert(id.clone()), "{kind}: {id} acked twice");
    }
    storm.await.expect("the storm was sent");
    sender
        .publish("bonker/bonk/payments", bonk("after", "critical"), false)
        .await;
    let after = acks.next().await;
    assert_eq!(outcome(&after).0, "after", "{kind}");
    assert!(
        !agent.output().contains("cannot queue"),
        "{kind}: the agent dropped replies:\n{}",
        agent.output()
    );
}

bonker_tests::for_both_brokers!(
    kill_9_makes_the_broker_publish_offline,
    sigterm_parks_the_arm_then_publishes_offline,
    bonks_sent_while_crashed_are_performed_after_restart,
    a_bonk_storm_gets_one_ack_per_bonk,
);

/// Runs a command that must exit on its own, returning its status and all of its output.
fn run_to_exit(mut command: Command) -> (std::process::ExitStatus, String) {
    use std::process::Stdio;
    command
        .env("BONKER_LOG", "info")
        .env_remove("BONKER_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = command.spawn().expect("bonker-agent starts");
    let pid = rustix::process::Pid::from_child(&child);
    let (done_tx, done) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done_tx.send(child.wait_with_output());
    });
    match done.recv_timeout(DEADLINE) {
        Ok(Ok(output)) => {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            (output.status, text)
        }
        Ok(Err(error)) => panic!("waiting for bonker-agent: {error}"),
        Err(_) => {
            let _ = rustix::process::kill_process(pid, Signal::KILL);
            panic!("bonker-agent did not exit within {DEADLINE:?}");
        }
    }
}

/// Configuration that cannot run is rejected with exit code 2 and a message naming the key,
/// before the servo is opened or any broker contacted (nothing listens on the port given).
#[test]
fn invalid_configuration_exits_2_and_names_the_problem() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("agent.toml");
    std::fs::write(&file, "desk = \"ivan\"\n[servo]\nstrike = 1900\n").expect("write");
    let url = format!("mqtt://127.0.0.1:{}", free_port());
    let binary = env!("CARGO_BIN_EXE_bonker-agent");
    // (flags, environment, what the message must mention)
    type Case<'a> = (Vec<String>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (vec![], vec![], "--desk"),
        (vec!["--desk".into(), "bad desk".into()], vec![], "desk"),
        (
            vec![
                "--desk".into(),
                "ivan".into(),
                "--namespace".into(),
                "Payments".into(),
            ],
            vec![],
            "namespace",
        ),
        (
            vec!["--desk".into(), "ivan".into()],
            vec![("BONKER_SERVO__STRIKE_US", "9000")],
            "servo.strike_us",
        ),
        (
            vec!["--config".into(), file.display().to_string()],
            vec![],
            "strike",
        ),
        (
            vec![
                "--desk".into(),
                "ivan".into(),
                "--mqtt".into(),
                "http://x".into(),
            ],
            vec![],
            "mqtt",
        ),
    ];
    for (args, env, needle) in cases {
        let mut command = Command::new(binary);
        command.args(&args).envs(env.iter().copied());
        if !args.iter().any(|a| a == "--mqtt") {
            command.args(["--mqtt", &url]);
        }
        let (status, output) = run_to_exit(command);
        assert_eq!(status.code(), Some(2), "{args:?}: {output}");
        assert!(
            output.contains(needle),
            "{args:?}: expected {needle:?} in {output}"
        );
    }
}

/// Off a Raspberry Pi (CI, a laptop) the hardware drivers cannot open: exit 1 with a hint, not a
/// panic. (On a Pi they may open; that is what the Pi is for.)
#[test]
fn hardware_servo_off_a_pi_exits_1_with_a_hint() {
    if bonker_agent::servo::looks_like_a_raspberry_pi() {
        return;
    }
    let url = format!("mqtt://127.0.0.1:{}", free_port());
    for driver in ["pwm", "softpwm"] {
        let mut command = Command::new(env!("CARGO_BIN_EXE_bonker-agent"));
        command.args(["--desk", "judy", "--servo", driver, "--mqtt", &url]);
        let (status, output) = run_to_exit(command);
        assert_eq!(status.code(), Some(1), "{driver}: {output}");
        assert!(output.contains("--servo simulated"), "{driver}: {output}");
        assert!(!output.contains("panicked"), "{driver}: {output}");
    }
}

/// `--help` documents every flag and exits 0.
#[test]
fn help_lists_every_flag() {
    let mut command = Command::new(env!("CARGO_BIN_EXE_bonker-agent"));
    command.arg("--help");
    let (status, output) = run_to_exit(command);
    assert!(status.success(), "{output}");
    for flag in [
        "--desk",
        "--namespace",
        "--prefix",
        "--servo",
        "--config",
        "--forget",
        "--mqtt",
    ] {
        assert!(output.contains(flag), "{flag} missing: {output}");
    }
}
