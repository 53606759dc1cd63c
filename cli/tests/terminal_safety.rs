//! The real `bonker` binary against a real broker, fed bonks, acks, statuses and health reports
//! whose fields carry terminal escape sequences: it never writes a control character that came
//! from the network. Every byte it prints is printable UTF-8 or the newline that ends its own line;
//! the hostile characters show as visible escapes, and `--json` still carries them exactly.

use std::process::{Output, Stdio};

use bonker_tests::{BrokerKind, DEADLINE, Probe, TestBroker};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, ChildStdout, Command};
use tokio::time::timeout;

/// Writes "hacked" to the clipboard (OSC 52), clears the screen, moves the cursor home, sets the
/// window title, starts a C1 CSI, deletes, reverses the text after it (bidi override), and breaks
/// the line — everything a terminal would act on.
const HOSTILE: &str =
    "\x1b]52;c;aGFja2Vk\x07\x1b[2J\x1b[1;1H\x1b]0;pwned\x07\u{9b}31m\x7f\u{202e}gol.exe\r\n\tend\0";

/// How `HOSTILE` must look on the terminal.
const HOSTILE_SHOWN: &str = r"\u{1b}]52;c;aGFja2Vk\u{7}\u{1b}[2J\u{1b}[1;1H\u{1b}]0;pwned\u{7}\u{9b}31m\u{7f}\u{202e}gol.exe\r\n\tend\u{0}";

/// `bonker --mqtt <url> tail [extra…]`, subscribed, with its standard output read line by line as
/// raw bytes.
struct Tail {
    child: Child,
    stdout: BufReader<ChildStdout>,
    printed: Vec<u8>,
}

impl Tail {
    /// Starts the tail and returns once it has subscribed (it says so on standard error).
    async fn start(url: &str, extra: &[&str]) -> Tail {
        let mut child = bonker(url, &[&["tail"], extra].concat())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("bonker tail starts");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
        let mut first = Vec::new();
        timeout(DEADLINE, stderr.read_until(b'\n', &mut first))
            .await
            .expect("bonker tail subscribes within the deadline")
            .expect("stderr readable");
        assert!(
            first.starts_with(b"following "),
            "bonker tail: {:?}",
            String::from_utf8_lossy(&first)
        );
        tokio::spawn(drain(stderr));
        Tail {
            child,
            stdout,
            printed: Vec::new(),
        }
    }

    /// Reads until the tail has printed `count` lines, and returns them (lossy, for assertions).
    async fn lines(&mut self, count: usize) -> Vec<String> {
        let mut lines = Vec::new();
        for _ in 0..count {
            let mut line = Vec::new();
            let read = timeout(DEADLINE, self.stdout.read_until(b'\n', &mut line))
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "bonker tail printed {} of {count} lines within the deadline: {:?}",
                        lines.len(),
                        String::from_utf8_lossy(&self.printed)
                    )
                })
                .expect("stdout readable");
            assert!(read > 0, "bonker tail exited: {:?}", self.child.try_wait());
            self.printed.extend_from_slice(&line);
            lines.push(
                String::from_utf8_lossy(&line)
                    .trim_end_matches('\n')
                    .to_owned(),
            );
        }
        lines
    }
}

/// `bonker --mqtt <url> <args…>`, killed if the test ends first.
fn bonker(url: &str, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_bonker"));
    command
        .args(["--mqtt", url])
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

async fn drain(mut stream: BufReader<impl AsyncRead + Unpin>) {
    let mut sink = Vec::new();
    while stream
        .read_until(b'\n', &mut sink)
        .await
        .is_ok_and(|n| n > 0)
    {
        sink.clear();
    }
}

/// Every byte is printable UTF-8 or a newline: no C0 control, no DEL, no C1 control (raw or
/// encoded), no bidi control.
fn assert_terminal_safe(printed: &[u8], what: &str) {
    let text = std::str::from_utf8(printed).unwrap_or_else(|error| {
        panic!(
            "{what} printed invalid UTF-8 ({error}): {:?}",
            String::from_utf8_lossy(printed)
        )
    });
    for (index, &byte) in printed.iter().enumerate() {
        assert!(
            byte == b'\n' || (byte >= 0x20 && byte != 0x7f),
            "{what} wrote the control byte {byte:#04x} at {index}: {text:?}"
        );
    }
    for character in text.chars() {
        assert!(
            !matches!(character, '\u{80}'..='\u{9f}' | '\u{061c}' | '\u{200e}' | '\u{200f}'
                | '\u{2028}'..='\u{202e}' | '\u{2066}'..='\u{2069}'),
            "{what} wrote {:?}: {text:?}",
            character.escape_unicode().to_string()
        );
    }
}

fn assert_ran(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn hostile_ack(desk: &str, bonk_id: &str) -> String {
    serde_json::json!({
        "bonk_id": bonk_id, "desk": desk, "outcome": "bonked",
        "received_at": "2026-11-21T10:00:00Z", "finished_at": "2026-11-21T10:00:00.250Z",
        "pod": HOSTILE, "namespace": HOSTILE, "detail": HOSTILE,
    })
    .to_string()
}

fn hostile_health(desk: &str, namespaces: &[&str]) -> String {
    serde_json::json!({
        "desk": desk, "agent_version": HOSTILE, "uptime_s": 1, "bonks_total": 7,
        "last_bonk_pod": HOSTILE, "last_bonk_namespace": HOSTILE,
        "servo": {"driver": HOSTILE, "state": HOSTILE, "error": HOSTILE},
        "namespaces": namespaces, "sent_at": chrono::Utc::now().to_rfc3339(),
    })
    .to_string()
}

/// Publishes `(topic, payload)` retained and returns once the broker hands each back as retained.
async fn publish_retained(url: &str, messages: &[(&str, String)]) {
    let publisher = Probe::connect(url, &[]).await;
    for (topic, payload) in messages {
        publisher.publish(topic, payload.clone(), true).await;
    }
    let mut check = Probe::connect(url, &["bonker/desk/+/+"]).await;
    let mut seen = Vec::new();
    while seen.len() < messages.len() {
        let message = check.next_on(|m| m.retain).await;
        if !seen.contains(&message.topic) {
            seen.push(message.topic);
        }
    }
    check.disconnect().await;
    publisher.disconnect().await;
}

/// `bonker tail` and `bonker tail --json` show hostile bonks, acks and statuses as they come.
async fn tail_never_writes_a_control_character_from_the_network(kind: BrokerKind) {
    let broker = TestBroker::start(kind);
    let url = broker.url();
    let mut text = Tail::start(&url, &[]).await;
    let mut json = Tail::start(&url, &["--json"]).await;

    let publisher = Probe::connect(&url, &[]).await;
    let bonk = serde_json::json!({
        "severity": "warning", "pod": HOSTILE, "container": HOSTILE, "summary": HOSTILE,
        "namespace": HOSTILE, "node": HOSTILE,
    });
    publisher
        .publish("bonker/bonk/payments", bonk.to_string(), false)
        .await;
    publisher
        .publish("bonker/desk/alice/bonk", HOSTILE, false)
        .await;
    // Not even UTF-8: a raw 8-bit CSI and a byte that is no character at all.
    publisher
        .publish("bonker/desk/bob/bonk", &b"\x9b2J\x1b[2J\xff"[..], false)
        .await;
    publisher
        .publish(
            "bonker/desk/alice/ack",
            hostile_ack("alice", HOSTILE),
            false,
        )
        .await;
    publisher
        .publish("bonker/desk/alice/status", HOSTILE, false)
        .await;
    // One line per message, in either mode.
    let text_lines = text.lines(5).await;
    let json_lines = json.lines(5).await;
    publisher.disconnect().await;

    assert_terminal_safe(&text.printed, &format!("{kind}: bonker tail"));
    assert_terminal_safe(&json.printed, &format!("{kind}: bonker tail --json"));

    let line = |needle: &str| {
        text_lines
            .iter()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("{kind}: no {needle:?} line in {text_lines:#?}"))
            .clone()
    };
    let namespace_bonk = line("BONK ns payments");
    assert!(
        namespace_bonk.contains(&format!("{HOSTILE_SHOWN} {HOSTILE_SHOWN} {HOSTILE_SHOWN}")),
        "{kind}: pod, container and summary shown escaped on one line: {namespace_bonk}"
    );
    assert!(
        line("BONK desk alice").contains(HOSTILE_SHOWN),
        "{kind}: {text_lines:#?}"
    );
    line("BONK desk bob");
    assert!(
        line("ACK  desk alice").contains(r"[\u{1b}]52;c;a]"),
        "{kind}: the ack's bonk id, cut to 8 bytes, escaped: {text_lines:#?}"
    );
    line("DESK alice");

    // JSON carries exactly what was published.
    let values: Vec<serde_json::Value> = json_lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{kind}: {e}: {l}")))
        .collect();
    let payload = |topic: &str| {
        values
            .iter()
            .find(|v| v["topic"] == topic)
            .unwrap_or_else(|| panic!("{kind}: no {topic} in {values:#?}"))["payload"]
            .clone()
    };
    assert_eq!(payload("bonker/bonk/payments"), bonk, "{kind}");
    assert_eq!(payload("bonker/desk/alice/bonk"), HOSTILE, "{kind}");
    assert_eq!(
        payload("bonker/desk/bob/bonk"),
        "\u{fffd}2J\x1b[2J\u{fffd}",
        "{kind}"
    );
    assert_eq!(
        payload("bonker/desk/alice/ack")["detail"],
        HOSTILE,
        "{kind}"
    );
    assert_eq!(payload("bonker/desk/alice/status"), HOSTILE, "{kind}");
}

/// `bonker fleet` and `bonker fleet --json` show hostile retained health and status.
async fn fleet_never_writes_a_control_character_from_the_network(kind: BrokerKind) {
    let broker = TestBroker::start(kind);
    let url = broker.url();
    publish_retained(
        &url,
        &[
            ("bonker/desk/mallory/status", "online".to_owned()),
            (
                "bonker/desk/mallory/health",
                hostile_health("mallory", &[HOSTILE, "payments"]),
            ),
            ("bonker/desk/eve/status", HOSTILE.to_owned()),
        ],
    )
    .await;

    let table = bonker(&url, &["fleet"])
        .output()
        .await
        .expect("bonker fleet runs");
    assert_ran(&table, &format!("{kind}: bonker fleet"));
    assert_terminal_safe(&table.stdout, &format!("{kind}: bonker fleet"));
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{kind}: a header and two desks: {table}");
    let mallory = lines
        .iter()
        .find(|l| l.starts_with("mallory"))
        .unwrap_or_else(|| panic!("{kind}: {table}"));
    assert!(
        mallory.contains(&format!("{HOSTILE_SHOWN},payments"))
            && mallory.ends_with(&format!("{HOSTILE_SHOWN} {HOSTILE_SHOWN}")),
        "{kind}: namespaces and servo shown escaped: {mallory}"
    );

    let json = bonker(&url, &["fleet", "--json"])
        .output()
        .await
        .expect("bonker fleet --json runs");
    assert_ran(&json, &format!("{kind}: bonker fleet --json"));
    assert_terminal_safe(&json.stdout, &format!("{kind}: bonker fleet --json"));
    let desks: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON");
    let mallory = desks
        .as_array()
        .and_then(|desks| desks.iter().find(|d| d["desk"] == "mallory"))
        .unwrap_or_else(|| panic!("{kind}: {desks:#}"));
    assert_eq!(mallory["namespaces"][0], HOSTILE, "{kind}");
    assert_eq!(mallory["servo"], format!("{HOSTILE} {HOSTILE}"), "{kind}");
}

/// `bonker bonk` waits for a desk whose health and acks are hostile.
async fn bonk_never_writes_a_control_character_from_the_network(kind: BrokerKind) {
    let broker = TestBroker::start(kind);
    let url = broker.url();
    publish_retained(
        &url,
        &[
            ("bonker/desk/mallory/status", "online".to_owned()),
            (
                "bonker/desk/mallory/health",
                hostile_health("mallory", &["payments"]),
            ),
        ],
    )
    .await;
    // The desk: acks the CLI's bonk, after an ack for a bonk that never was.
    let mut desk = Probe::connect(&url, &["bonker/bonk/payments"]).await;
    let cli = bonker(&url, &["bonk", "--namespace", "payments", "--wait", "15"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bonker bonk starts");
    let bonk = desk.next().await.json();
    let id = bonk["id"].as_str().expect("the bonk has an id");
    desk.publish(
        "bonker/desk/mallory/ack",
        hostile_ack("mallory", HOSTILE),
        false,
    )
    .await;
    desk.publish("bonker/desk/mallory/ack", hostile_ack("mallory", id), false)
        .await;
    let output = timeout(DEADLINE, cli.wait_with_output())
        .await
        .expect("bonker bonk exits within the deadline")
        .expect("bonker bonk output");
    desk.disconnect().await;
    assert_ran(&output, &format!("{kind}: bonker bonk"));
    assert_terminal_safe(&output.stdout, &format!("{kind}: bonker bonk"));
    assert_terminal_safe(&output.stderr, &format!("{kind}: bonker bonk's errors"));
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        printed.contains("mallory") && printed.contains("1 desk(s) acked"),
        "{kind}: {printed}"
    );
}

bonker_tests::for_both_brokers!(
    tail_never_writes_a_control_character_from_the_network,
    fleet_never_writes_a_control_character_from_the_network,
    bonk_never_writes_a_control_character_from_the_network,
);
