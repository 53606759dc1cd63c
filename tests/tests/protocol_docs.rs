//! `docs/protocol.md` is what people copy into their terminals, so its examples are run here: every
//! `mosquitto_pub` line against both brokers (each must arrive as a clean bonk on a bonker topic),
//! and every JSON example through the protocol crate's types.

use std::process::Command;

use bonker_protocol::{Ack, Bonk, BonkId, Detector, Health, Route, Severity, Source, Topics};
use bonker_tests::{BrokerKind, Probe, TestBroker};

const DOC: &str = include_str!("../../docs/protocol.md");

/// Code blocks of the given language, as (preceding comment, line) pairs for `sh`, or whole
/// blocks for other languages.
fn blocks(language: &str) -> Vec<String> {
    let fence = format!("```{language}");
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in DOC.lines() {
        match &mut current {
            None if line.trim() == fence => current = Some(String::new()),
            Some(block) if line.trim() == "```" => {
                out.push(std::mem::take(block));
                current = None;
            }
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
            None => {}
        }
    }
    out
}

/// Each `mosquitto_pub` example with the comment above it.
fn publish_examples() -> Vec<(String, String)> {
    let mut examples = Vec::new();
    for block in blocks("sh") {
        let mut comment = String::new();
        for line in block.lines() {
            if let Some(text) = line.strip_prefix('#') {
                comment = text.trim().to_owned();
            } else if line.starts_with("mosquitto_pub") {
                examples.push((comment.clone(), line.to_owned()));
            }
        }
    }
    examples
}

fn expected_severity(comment: &str) -> Option<Severity> {
    if comment.contains("full bonk") {
        Some(Severity::Critical)
    } else if comment.contains("light tap") {
        Some(Severity::Warning)
    } else if comment.contains("wiggle") {
        Some(Severity::Info)
    } else {
        None
    }
}

async fn every_mosquitto_pub_example_bonks(kind: BrokerKind) {
    let examples = publish_examples();
    assert!(examples.len() >= 8, "docs/protocol.md lost its examples");
    let broker = TestBroker::start(kind);
    let mut probe = Probe::connect(&broker.url(), &["bonker/#"]).await;
    let topics = Topics::default();
    for (comment, line) in &examples {
        let command = line.replacen(
            "mosquitto_pub",
            &format!("mosquitto_pub -h 127.0.0.1 -p {}", broker.port()),
            1,
        );
        let status = Command::new("sh")
            .arg("-c")
            .arg(&command)
            .status()
            .expect("sh runs");
        assert!(status.success(), "{kind}: `{line}` failed");
        let message = probe.next().await;
        let route = topics.route(&message.topic);
        assert!(
            matches!(route, Some(Route::NamespaceBonk(_) | Route::DeskBonk(_))),
            "{kind}: `{line}` published on {}, not a bonk topic",
            message.topic
        );
        assert!(!message.retain, "{kind}: bonks are never retained");
        let parsed = Bonk::parse_lenient(&message.payload);
        assert!(
            parsed.warnings.is_empty(),
            "{kind}: `{line}` gave warnings: {:?}",
            parsed.warnings
        );
        if let Some(severity) = expected_severity(comment) {
            assert_eq!(
                parsed.bonk.severity, severity,
                "{kind}: `{line}` ({comment})"
            );
        }
    }
}

#[tokio::test]
async fn every_mosquitto_pub_example_bonks_on_the_bonker_broker() {
    every_mosquitto_pub_example_bonks(BrokerKind::Bonker).await;
}

#[tokio::test]
async fn every_mosquitto_pub_example_bonks_on_mosquitto() {
    every_mosquitto_pub_example_bonks(BrokerKind::Mosquitto).await;
}

#[test]
fn every_json_example_parses_as_its_type() {
    let examples = blocks("json");
    assert!(
        examples.len() >= 3,
        "docs/protocol.md lost its JSON examples"
    );
    let (mut bonks, mut acks, mut healths) = (0, 0, 0);
    for example in examples {
        let value: serde_json::Value =
            serde_json::from_str(&example).unwrap_or_else(|e| panic!("{e}: {example}"));
        if value.get("bonk_id").is_some() {
            serde_json::from_value::<Ack>(value).expect("ack example");
            acks += 1;
        } else if value.get("uptime_s").is_some() {
            serde_json::from_value::<Health>(value).expect("health example");
            healths += 1;
        } else {
            let bonk: Bonk = serde_json::from_value(value).expect("bonk example");
            let kill = bonk
                .kill
                .as_ref()
                .expect("a detector's bonk carries its kill");
            match bonk.source {
                Source::Alertmanager => {
                    assert_eq!(
                        bonk.id,
                        BonkId::for_alert("abc123", "2026-11-21T10:00:00Z"),
                        "the documented id is the stable id of a real alert"
                    );
                    assert_eq!(kill.by, Detector::Alert);
                }
                Source::Watcher => {
                    assert_eq!(
                        bonk.id,
                        BonkId::stable(&[
                            "watcher",
                            "node-a",
                            "0f4e7c1a-2b3d-4e5f-8a9b-1c2d3e4f5a6b",
                            "812"
                        ]),
                        "the documented id is the stable id of a kernel record"
                    );
                    assert_eq!(kill.by, Detector::Kernel);
                }
                other => panic!("no example of a {other:?} bonk is expected"),
            }
            assert_eq!(kill.pod, bonk.pod, "the kill names the bonk's pod");
            bonks += 1;
        }
    }
    assert_eq!((bonks, acks, healths), (2, 1, 1));
}
