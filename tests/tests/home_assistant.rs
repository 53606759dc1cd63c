//! A desk in a real Home Assistant (the release `scripts/install-homeassistant` pins), on each
//! broker, as a user sets it up: the MQTT integration with discovery on. Everything Home
//! Assistant shows is read back from what it streams (`mqtt_statestream`), and its log must hold
//! no warning or error from start to stop.

use std::process::Command;

use bonker_tests::homeassistant::{PRESS_TOPIC, States, TestHomeAssistant};
use bonker_tests::{AgentProcess, BrokerKind, Probe, TestBroker, binary};
use serde_json::json;

/// The entity ids Home Assistant derives for desk `alice`, with the state each shows while the
/// desk is online and has not been bonked yet (`None`: a timestamp, checked apart).
const ENTITIES: [(&str, Option<&str>); 9] = [
    ("button/tux_at_alice_bonk", Some("unknown")),
    ("event/tux_at_alice_bonk", Some("unknown")),
    ("binary_sensor/tux_at_alice_connectivity", Some("on")),
    ("sensor/tux_at_alice_bonks", Some("0")),
    ("sensor/tux_at_alice_last_bonk", Some("unknown")),
    ("sensor/tux_at_alice_last_bonked", Some("unknown")),
    ("sensor/tux_at_alice_started", None),
    ("sensor/tux_at_alice_soc_temperature", Some("48.0")),
    ("sensor/tux_at_alice_servo", Some("rest")),
];

fn state<'a>(states: &'a States, entity: &str) -> Option<&'a str> {
    states.get(&format!("{entity}/state"))
}

fn is_timestamp(value: Option<&str>) -> bool {
    value.is_some_and(|v| chrono::DateTime::parse_from_rfc3339(v).is_ok())
}

/// Every entity discovered and available with its value (no `None`), the Bonk button bonks the
/// desk, each bonk fires the event and updates the sensors, stopping the desk makes it
/// unavailable and Connectivity off, `--forget` removes the device — and Home Assistant logs
/// nothing at warning or above throughout.
async fn a_desk_in_a_real_home_assistant(kind: BrokerKind) {
    let broker = TestBroker::start(kind);
    let url = broker.url();
    let mut ha = TestHomeAssistant::start(&url, "alice").await;
    let mut states = States::follow(&url).await;
    let thermometer = tempfile::NamedTempFile::new().expect("tempfile");
    std::fs::write(thermometer.path(), "47950\n").expect("write thermometer");
    let thermometer_path = thermometer.path().to_str().expect("utf-8 path");
    let mut desk = AgentProcess::start_with(
        &url,
        "alice",
        &["payments"],
        &[],
        &[("BONKER_SOC_TEMP_FILE", thermometer_path)],
        Default::default(),
    )
    .await;

    states
        .until("every entity of the desk, available", |s| {
            ENTITIES.iter().all(|(entity, want)| match want {
                Some(want) => state(s, entity) == Some(*want),
                None => is_timestamp(state(s, entity)),
            })
        })
        .await;
    let none: Vec<_> = states
        .all()
        .iter()
        .filter(|(key, value)| key.ends_with("/state") && value.as_str() == "None")
        .collect();
    assert!(none.is_empty(), "{kind}: states rendered None: {none:?}");
    // The Servo sensor is an enum (Home Assistant refuses, with an error, a state outside its
    // options).
    assert_eq!(
        states.get("sensor/tux_at_alice_servo/device_class"),
        Some("\"enum\""),
        "{kind}"
    );

    // Home Assistant presses the button: the desk gets a Home Assistant bonk and performs it.
    let mut desk_topics =
        Probe::connect(&url, &["bonker/desk/alice/bonk", "bonker/desk/alice/ack"]).await;
    desk_topics.publish(PRESS_TOPIC, "press", false).await;
    let bonk = desk_topics
        .next_on(|m| m.topic.ends_with("/bonk"))
        .await
        .json();
    assert_eq!(bonk["source"], "homeassistant", "{kind}");
    let ack = desk_topics
        .next_on(|m| m.topic.ends_with("/ack"))
        .await
        .json();
    assert_eq!(ack["outcome"], "bonked", "{kind}");
    states
        .until("the button's bonk as an event and in the sensors", |s| {
            s.get("event/tux_at_alice_bonk/event_type") == Some("\"critical\"")
                && state(s, "sensor/tux_at_alice_bonks") == Some("1")
                && state(s, "sensor/tux_at_alice_last_bonked") == Some("this desk")
                && is_timestamp(state(s, "sensor/tux_at_alice_last_bonk"))
                && is_timestamp(state(s, "event/tux_at_alice_bonk"))
        })
        .await;

    // A bonk for the desk's namespace, as the gateway sends for an alert.
    desk_topics
        .publish(
            "bonker/bonk/payments",
            json!({"id": "ha-alert-1", "pod": "api-7", "severity": "warning"}).to_string(),
            false,
        )
        .await;
    states
        .until("the alert's bonk as an event and in the sensors", |s| {
            s.get("event/tux_at_alice_bonk/event_type") == Some("\"warning\"")
                && s.get("event/tux_at_alice_bonk/bonk_id") == Some("\"ha-alert-1\"")
                && state(s, "sensor/tux_at_alice_bonks") == Some("2")
                && state(s, "sensor/tux_at_alice_last_bonked") == Some("payments/api-7")
        })
        .await;

    // The desk stops: Connectivity turns off and everything else is unavailable.
    desk.process().signal(rustix::process::Signal::TERM);
    desk.process().wait_exit(bonker_tests::DEADLINE);
    states
        .until("the stopped desk", |s| {
            ENTITIES.iter().all(|(entity, _)| {
                state(s, entity)
                    == Some(if entity.starts_with("binary_sensor/") {
                        "off"
                    } else {
                        "unavailable"
                    })
            })
        })
        .await;

    // `--forget` removes every entity, then the device.
    let forget = Command::new(binary("bonker-agent"))
        .args(["--forget", "--desk", "alice", "--mqtt", &url])
        .env("BONKER_LOG", "warn")
        .output()
        .expect("runs --forget");
    assert!(forget.status.success(), "{kind}: {forget:?}");
    ha.wait_for_lines("Removing component", ENTITIES.len())
        .await;
    ha.stop();
    let devices = ha.registry("core.device_registry");
    let identifier = json!([["mqtt", "bonker_alice"]]);
    let listed = |list: &str| {
        devices["data"][list]
            .as_array()
            .expect("a device list")
            .iter()
            .any(|d| d["identifiers"] == identifier)
    };
    assert!(!listed("devices"), "{kind}: the device is still there");
    assert!(
        listed("deleted_devices"),
        "{kind}: the device was never there"
    );
    let entities = ha.registry("core.entity_registry");
    let left: Vec<_> = entities["data"]["entities"]
        .as_array()
        .expect("an entity list")
        .iter()
        .filter(|e| e["platform"] == "mqtt")
        .map(|e| e["entity_id"].clone())
        .collect();
    assert!(left.is_empty(), "{kind}: entities left: {left:?}");

    let problems = ha.problems();
    assert!(
        problems.is_empty(),
        "{kind}: Home Assistant logged:\n{}",
        problems.join("\n")
    );
}

bonker_tests::for_both_brokers!(a_desk_in_a_real_home_assistant);
