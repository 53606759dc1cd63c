//! Home Assistant MQTT discovery against real brokers: what a desk announces, that the button
//! bonks, that the event entity fires once per performed bonk, that a Home Assistant restart
//! triggers a new announcement, and that `--forget` removes the desk.
//!
//! Home Assistant itself is not run here; instead the tests check every key its MQTT platforms
//! require and render each value template (with minijinja, a Jinja2 engine) against the health
//! reports and acks the desk really published.

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use bonker_tests::{BrokerKind, DEADLINE, Message, Probe, TestBroker};
use common::{TestDesk, bonk, outcome, settings};
use serde_json::{Value, json};

const DISCOVERY: &str = "homeassistant/+/alice/+/config";

/// Collects the desk's discovery configs, keyed by topic.
async fn discovery(probe: &mut Probe, count: usize) -> BTreeMap<String, Message> {
    let mut configs = BTreeMap::new();
    while configs.len() < count {
        // Empty ones clear a retired entity's config; they are not part of the announcement.
        let message = probe
            .next_on(|m| m.topic.ends_with("/config") && !m.payload.is_empty())
            .await;
        configs.insert(message.topic.clone(), message);
    }
    configs
}

fn thermometer(dir: &tempfile::TempDir) -> std::path::PathBuf {
    let path = dir.path().join("temp");
    std::fs::write(&path, "47950\n").expect("write thermometer");
    path
}

fn only_id_chars(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Renders a Home Assistant value template the way its MQTT platforms do: `value_json` is the
/// parsed payload; `to_json` is Home Assistant's name for Jinja's `tojson`.
fn render(template: &str, payload: &Value) -> String {
    let mut environment = minijinja::Environment::new();
    environment.add_filter("to_json", minijinja::filters::tojson);
    environment
        .add_template("t", template)
        .unwrap_or_else(|e| panic!("template {template:?} does not parse: {e}"));
    environment
        .get_template("t")
        .and_then(|t| {
            t.render(
                minijinja::context! { value_json => minijinja::Value::from(minijinja::value::Serde(payload)) },
            )
        })
        .unwrap_or_else(|e| panic!("template {template:?} does not render: {e}"))
}

/// What Home Assistant's MQTT event platform makes of a message on the event entity's state
/// topic: nothing for a retained message or an empty rendering, otherwise the rendered JSON's
/// `event_type` (which must be one of the entity's `event_types`) and the remaining keys as the
/// event's attributes.
fn ha_event(config: &Value, message: &Message) -> Option<(String, Value)> {
    if message.retain {
        return None;
    }
    let template = config["value_template"].as_str().expect("value_template");
    let rendered = render(template, &message.json());
    if rendered.trim().is_empty() {
        return None;
    }
    let mut attributes: Value = serde_json::from_str(&rendered)
        .unwrap_or_else(|e| panic!("the event renders invalid JSON {rendered:?}: {e}"));
    let event_type = attributes
        .as_object_mut()
        .and_then(|a| a.remove("event_type"))
        .and_then(|t| t.as_str().map(str::to_owned))
        .unwrap_or_else(|| panic!("no event_type in {rendered}"));
    assert!(
        config["event_types"]
            .as_array()
            .expect("event_types")
            .contains(&json!(event_type)),
        "event_type {event_type} is not declared"
    );
    Some((event_type, attributes))
}

/// Every entity is announced, retained, with the keys Home Assistant requires, ids made of
/// `[a-zA-Z0-9_-]`, one device for the desk and availability bound to its status topic.
async fn discovery_is_retained_and_complete(kind: BrokerKind) {
    let broker = TestBroker::start(kind);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = settings(&broker.url(), "alice", &["payments"]);
    s.soc_temp_file = thermometer(&dir);
    let desk = TestDesk::start(s).await;
    // The desk announces itself right after connecting; a bonk's ack, published after that on
    // the same connection, says the broker has the whole announcement.
    let mut acks = common::probe(&broker.url(), &["bonker/desk/alice/ack"]).await;
    common::probe(&broker.url(), &[])
        .await
        .publish("bonker/desk/alice/bonk", "wiggle", false)
        .await;
    acks.next().await;
    // A late subscriber gets every config from the broker's retained store.
    let mut ha = common::probe(&broker.url(), &[DISCOVERY]).await;
    let configs = discovery(&mut ha, 9).await;
    let mut unique_ids = std::collections::HashSet::new();
    for (topic, message) in &configs {
        assert!(message.retain, "{kind}: {topic} must be retained");
        let levels: Vec<&str> = topic.split('/').collect();
        assert_eq!(levels.len(), 5, "{topic}");
        assert!(
            only_id_chars(levels[2]) && only_id_chars(levels[3]),
            "{topic}"
        );
        let config = message.json();
        let unique_id = config["unique_id"].as_str().expect("unique_id");
        assert!(only_id_chars(unique_id), "{unique_id}");
        assert!(
            unique_ids.insert(unique_id.to_owned()),
            "unique ids are unique"
        );
        assert!(config["name"].is_string(), "{topic}: name");
        let device = &config["device"];
        assert_eq!(device["identifiers"], json!(["bonker_alice"]), "{topic}");
        assert_eq!(device["name"], "Tux at alice");
        for key in ["model", "manufacturer", "sw_version"] {
            assert!(device[key].is_string(), "{topic}: device.{key}");
        }
        // Connectivity is the availability itself: `off` when the desk is gone, not unavailable.
        let availability = if levels[1] == "binary_sensor" {
            serde_json::Value::Null
        } else {
            json!([{
                "topic": "bonker/desk/alice/status",
                "payload_available": "online",
                "payload_not_available": "offline",
            }])
        };
        assert_eq!(config["availability"], availability, "{topic}");
        match levels[1] {
            "button" => {
                assert_eq!(config["command_topic"], "bonker/desk/alice/bonk");
                assert_eq!(config["payload_press"], r#"{"source":"homeassistant"}"#);
            }
            "sensor" => {
                let state = if levels[3].starts_with("last_bonk") {
                    "bonker/desk/alice/last_bonk"
                } else {
                    "bonker/desk/alice/health"
                };
                assert_eq!(config["state_topic"], state, "{topic}");
                assert!(config["value_template"].is_string(), "{topic}");
            }
            "event" => {
                assert_eq!(config["state_topic"], "bonker/desk/alice/ack");
                assert!(config["value_template"].is_string());
                assert_eq!(
                    config["event_types"],
                    json!(["critical", "warning", "info"])
                );
            }
            "binary_sensor" => {
                assert_eq!(config["state_topic"], "bonker/desk/alice/status");
                assert_eq!(config["device_class"], "connectivity");
                assert_eq!(
                    (&config["payload_on"], &config["payload_off"]),
                    (&json!("online"), &json!("offline"))
                );
                assert_eq!(config["entity_category"], "diagnostic");
            }
            other => panic!("unexpected component {other}"),
        }
    }
    let sensor =
        |object: &str| configs[&format!("homeassistant/sensor/alice/{object}/config")].json();
    assert_eq!(sensor("bonks")["state_class"], "total_increasing");
    assert_eq!(sensor("last_bonk")["device_class"], "timestamp");
    assert_eq!(sensor("started")["device_class"], "timestamp");
    for diagnostic in ["started", "soc_temperature", "servo"] {
        assert_eq!(
            sensor(diagnostic)["entity_category"],
            "diagnostic",
            "{diagnostic}"
        );
    }
    desk.stop().await;
}

/// The sensors' templates turn the desk's real health reports into the values Home Assistant
/// shows; the "Last bonk" sensors have no message to read before the first bonk (unknown), then
/// its time and namespace/pod from the retained `last_bonk` topic.
async fn sensor_templates_read_the_health_report(kind: BrokerKind) {
    let broker = TestBroker::start(kind);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = settings(&broker.url(), "alice", &["payments"]);
    s.soc_temp_file = thermometer(&dir);
    let desk = TestDesk::start(s).await;
    let mut ha = common::probe(&broker.url(), &[DISCOVERY]).await;
    let configs = discovery(&mut ha, 9).await;
    let template = |object: &str| {
        configs[&format!("homeassistant/sensor/alice/{object}/config")].json()["value_template"]
            .as_str()
            .expect("value_template")
            .to_owned()
    };
    let mut health = common::probe(&broker.url(), &["bonker/desk/alice/health"]).await;
    let before = health.next().await.json();
    assert_eq!(render(&template("bonks"), &before), "0", "{kind}");
    // Before the first bonk the "Last bonk" sensors' topic holds nothing: a live sentinel,
    // published after subscribing, is the first message there.
    let mut nothing_yet = common::probe(
        &broker.url(),
        &["bonker/desk/alice/last_bonk", "zz/sentinel"],
    )
    .await;
    common::probe(&broker.url(), &[])
        .await
        .publish("zz/sentinel", "here", false)
        .await;
    assert_eq!(nothing_yet.next().await.topic, "zz/sentinel", "{kind}");
    assert_eq!(render(&template("soc_temperature"), &before), "48.0");
    assert_eq!(render(&template("servo"), &before), "rest");
    // Home Assistant refuses an enum sensor's state outside its options.
    assert_eq!(
        configs["homeassistant/sensor/alice/servo/config"].json()["options"],
        json!(["rest", "moving", "error"])
    );
    let started = render(&template("started"), &before);
    assert!(
        chrono::DateTime::parse_from_rfc3339(&started).is_ok(),
        "{kind}: Started renders a timestamp: {started:?}"
    );
    let sender = common::probe(&broker.url(), &[]).await;
    sender
        .publish(
            "bonker/bonk/payments",
            json!({"id": "t", "pod": "api-7"}).to_string(),
            false,
        )
        .await;
    let after = health
        .next_on(|m| m.json()["bonks_total"] == 1)
        .await
        .json();
    assert_eq!(render(&template("bonks"), &after), "1");
    // Published with that health report, and retained for a Home Assistant that starts later.
    let mut late = common::probe(&broker.url(), &["bonker/desk/alice/last_bonk"]).await;
    let last = late.next().await;
    assert!(last.retain, "{kind}");
    let last = last.json();
    assert_eq!(render(&template("last_bonked"), &last), "payments/api-7");
    let last_bonk = render(&template("last_bonk"), &last);
    assert!(
        chrono::DateTime::parse_from_rfc3339(&last_bonk).is_ok(),
        "{kind}: a timestamp Home Assistant can parse: {last_bonk}"
    );
    let servo = &configs["homeassistant/sensor/alice/servo/config"].json();
    let attributes = render(
        servo["json_attributes_template"]
            .as_str()
            .expect("template"),
        &after,
    );
    let attributes: Value = serde_json::from_str(&attributes).expect("attributes are JSON");
    assert_eq!(attributes["driver"], "simulated");
    desk.stop().await;
}

/// Pressing the button (publishing its payload to its command topic) bonks the desk, and the
/// event entity fires once per performed bonk, with the bonk's severity as its type: its template
/// turns the desk's real acks into events and nothing else (a duplicate fires none).
async fn the_button_bonks_and_each_bonk_fires_an_event(kind: BrokerKind) {
    let broker = TestBroker::start(kind);
    let desk = TestDesk::start(settings(&broker.url(), "alice", &["payments"])).await;
    let mut ha = common::probe(&broker.url(), &[DISCOVERY]).await;
    let configs = discovery(&mut ha, 8).await;
    let button = configs["homeassistant/button/alice/bonk/config"].json();
    let event = configs["homeassistant/event/alice/bonk_event/config"].json();
    let event_topic = event["state_topic"].as_str().expect("state_topic");
    let mut events = common::probe(&broker.url(), &[event_topic]).await;
    let press = common::probe(&broker.url(), &[]).await;
    press
        .publish(
            button["command_topic"].as_str().expect("command_topic"),
            button["payload_press"].as_str().expect("payload_press"),
            false,
        )
        .await;
    let (event_type, attributes) = ha_event(&event, &events.next().await).expect("an event");
    assert_eq!(event_type, "critical", "{kind}");
    assert_eq!(attributes["count"], 1);
    for severity in ["warning", "info"] {
        press
            .publish("bonker/bonk/payments", bonk(severity, severity), false)
            .await;
        let (event_type, attributes) = ha_event(&event, &events.next().await).expect("an event");
        assert_eq!(event_type, severity, "{kind}");
        assert_eq!(attributes["namespace"], "payments");
        assert_eq!(attributes["bonk_id"], severity);
    }
    // A duplicate is acked but not performed, so its ack fires no event.
    press
        .publish("bonker/bonk/payments", bonk("warning", "warning"), false)
        .await;
    let duplicate = events.next().await;
    assert_eq!(duplicate.json()["outcome"], "duplicate");
    assert_eq!(ha_event(&event, &duplicate), None, "{kind}");
    press
        .publish(
            "bonker/desk/alice/bonk",
            json!({"id": "sentinel", "severity": "info", "pod": "api-7"}).to_string(),
            false,
        )
        .await;
    let (_, attributes) = ha_event(&event, &events.next().await).expect("an event");
    assert_eq!(
        (attributes["bonk_id"].as_str(), attributes["pod"].as_str()),
        (Some("sentinel"), Some("api-7")),
        "{kind}"
    );
    assert_eq!(
        desk.bonk_moves(bonker_agent::config::DEFAULT_REST_US).len(),
        4
    );
    desk.stop().await;
}

/// Home Assistant announcing itself (`homeassistant/status` = `online`) makes the desk publish
/// its discovery again; anything else on that topic does not.
async fn a_home_assistant_restart_triggers_a_new_announcement(kind: BrokerKind) {
    let broker = TestBroker::start(kind);
    let desk = TestDesk::start(settings(&broker.url(), "alice", &["payments"])).await;
    let mut ha = common::probe(&broker.url(), &[DISCOVERY]).await;
    let first = discovery(&mut ha, 8).await;
    assert!(first.values().all(|m| m.retain));
    let home_assistant = common::probe(&broker.url(), &[]).await;
    home_assistant
        .publish("homeassistant/status", "offline", false)
        .await;
    home_assistant
        .publish("homeassistant/status", "online", false)
        .await;
    let again = discovery(&mut ha, 8).await;
    assert_eq!(
        again.keys().collect::<Vec<_>>(),
        first.keys().collect::<Vec<_>>(),
        "{kind}"
    );
    for (topic, message) in &again {
        assert_eq!(message.json(), first[topic].json(), "{kind}: {topic}");
    }
    // The announcement ends by clearing what earlier versions announced (Home Assistant then
    // removes those entities).
    let cleared = ha.next().await;
    assert_eq!(
        (
            cleared.topic.as_str(),
            cleared.payload.is_empty(),
            cleared.retain
        ),
        ("homeassistant/sensor/alice/uptime/config", true, false),
        "{kind}"
    );
    // Exactly one announcement: the next thing on these topics is a sentinel.
    home_assistant
        .publish("homeassistant/sensor/alice/zz_sentinel/config", "{}", false)
        .await;
    assert!(ha.next().await.topic.contains("zz_sentinel"), "{kind}");
    desk.stop().await;
}

/// With discovery off nothing is announced, not even on Home Assistant's birth message.
async fn discovery_can_be_turned_off(kind: BrokerKind) {
    let broker = TestBroker::start(kind);
    let mut ha = common::probe(&broker.url(), &["homeassistant/#"]).await;
    let mut s = settings(&broker.url(), "alice", &["payments"]);
    s.homeassistant.enabled = false;
    let desk = TestDesk::start(s).await;
    let home_assistant = common::probe(&broker.url(), &[]).await;
    home_assistant
        .publish("homeassistant/status", "online", false)
        .await;
    // Our own birth message comes back; then the sentinel, with nothing from the desk between.
    home_assistant
        .publish("homeassistant/zz_sentinel", "x", false)
        .await;
    let topics: Vec<String> = vec![ha.next().await.topic, ha.next().await.topic];
    assert_eq!(
        topics,
        ["homeassistant/status", "homeassistant/zz_sentinel"],
        "{kind}"
    );
    desk.stop().await;
}

/// `bonker-agent --forget` clears every retained discovery, last bonk, status and health topic of
/// the desk.
async fn forget_clears_everything(kind: BrokerKind) {
    let broker = TestBroker::start(kind);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = settings(&broker.url(), "alice", &["payments"]);
    s.soc_temp_file = thermometer(&dir);
    let desk = TestDesk::start(s).await;
    let mut ha = common::probe(&broker.url(), &[DISCOVERY]).await;
    discovery(&mut ha, 9).await;
    let mut last_bonk = common::probe(&broker.url(), &["bonker/desk/alice/last_bonk"]).await;
    common::probe(&broker.url(), &[])
        .await
        .publish("bonker/desk/alice/bonk", "wiggle", false)
        .await;
    last_bonk.next().await;
    desk.stop().await;
    let mut retained = common::probe(&broker.url(), &["bonker/desk/alice/+"]).await;
    assert_eq!(
        retained.take(3).await.len(),
        3,
        "{kind}: status, health and the last bonk are retained"
    );

    let binary = env!("CARGO_BIN_EXE_bonker-agent");
    let url = broker.url();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(binary)
            .args(["--forget", "--desk", "alice", "--mqtt", &url])
            .env("BONKER_LOG", "warn")
            .output()
    });
    let output = tokio::time::timeout(DEADLINE, output)
        .await
        .expect("--forget finishes")
        .expect("join")
        .expect("runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{kind}: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(stdout.lines().count(), 13, "{kind}: {stdout}");

    // A new subscriber to everything finds only a sentinel retained after --forget.
    let sentinel = common::probe(&broker.url(), &[]).await;
    sentinel.publish("zz/sentinel", "here", true).await;
    let mut everything = common::probe(&broker.url(), &["#"]).await;
    let first = everything.next().await;
    assert_eq!(
        first.topic, "zz/sentinel",
        "{kind}: {} is still retained",
        first.topic
    );
}

/// After `--forget` the desk's persistent session is gone too: a bonk published while the desk
/// is retired is not waiting for it if it is ever started again.
async fn forget_drops_the_persistent_session(kind: BrokerKind) {
    let broker = TestBroker::start(kind);
    let desk = TestDesk::start(settings(&broker.url(), "alice", &["payments"])).await;
    desk.stop().await;
    let url = broker.url();
    let binary = env!("CARGO_BIN_EXE_bonker-agent");
    let status = tokio::task::spawn_blocking(move || {
        Command::new(binary)
            .args(["--forget", "--desk", "alice", "--mqtt", &url])
            .env("BONKER_LOG", "warn")
            .status()
    })
    .await
    .expect("join")
    .expect("runs");
    assert!(status.success());
    let sender = common::probe(&broker.url(), &[]).await;
    sender
        .publish(
            "bonker/bonk/payments",
            bonk("while-retired", "critical"),
            false,
        )
        .await;
    let mut acks = common::probe(&broker.url(), &["bonker/desk/alice/ack"]).await;
    let desk = TestDesk::start(settings(&broker.url(), "alice", &["payments"])).await;
    sender
        .publish("bonker/desk/alice/bonk", bonk("sentinel", "info"), false)
        .await;
    assert_eq!(
        outcome(&acks.next().await),
        ("sentinel".into(), "bonked".into()),
        "{kind}"
    );
    desk.stop().await;
}

/// mosquitto with the ACL from docs/home-assistant.md, verbatim: the desk announces itself, fires
/// its events and is bonked by Home Assistant's button and by an `mqtt.publish` to a namespace.
#[tokio::test]
async fn everything_works_under_the_documented_acl() {
    let acl = bonker_tests::guides::code_block_after("home-assistant.md", "Broker ACL");
    let users = vec![
        ("homeassistant".to_owned(), "ha-secret".to_owned()),
        ("alice".to_owned(), "alice-secret".to_owned()),
    ];
    let broker = TestBroker::start_with(
        BrokerKind::Mosquitto,
        bonker_tests::BrokerOptions {
            users: users.clone(),
            mosquitto_acl: Some(acl),
            ..Default::default()
        },
    );
    let home_assistant = bonker_tests::ProbeOptions {
        credentials: Some(users[0].clone()),
        ..Default::default()
    };
    let mut s = settings(&broker.url(), "alice", &["payments"]);
    s.mqtt.username = Some(users[1].0.clone());
    s.mqtt.password = Some(users[1].1.clone());
    let desk = TestDesk::start_watched(
        s,
        bonker_agent::servo::simulated::PulseRecorder::new(),
        home_assistant.clone(),
    )
    .await;
    let mut ha = common::probe_with(
        &broker.url(),
        &[
            DISCOVERY,
            "bonker/desk/alice/ack",
            "bonker/desk/alice/last_bonk",
        ],
        home_assistant.clone(),
    )
    .await;
    let configs = discovery(&mut ha, 8).await;
    let button = configs["homeassistant/button/alice/bonk/config"].json();
    let event = configs["homeassistant/event/alice/bonk_event/config"].json();
    ha.publish(
        button["command_topic"].as_str().expect("command_topic"),
        button["payload_press"].as_str().expect("payload_press"),
        false,
    )
    .await;
    let ack = ha.next_on(|m| m.topic.ends_with("/ack")).await;
    let (event_type, _) = ha_event(&event, &ack).expect("an event");
    assert_eq!(event_type, "critical");
    ha.publish(
        "bonker/bonk/payments",
        json!({"id": "from-a-script", "source": "homeassistant", "severity": "info"}).to_string(),
        false,
    )
    .await;
    let ack = ha.next_on(|m| m.topic.ends_with("/ack")).await;
    let (event_type, attributes) = ha_event(&event, &ack).expect("an event");
    assert_eq!(
        (event_type.as_str(), attributes["bonk_id"].as_str()),
        ("info", Some("from-a-script"))
    );
    // The "Last bonk" sensors' topic is the desk's to write.
    ha.next_on(|m| m.topic.ends_with("/last_bonk") && m.json()["bonk_id"] == "from-a-script")
        .await;
    desk.stop().await;
}

bonker_tests::for_both_brokers!(
    discovery_is_retained_and_complete,
    sensor_templates_read_the_health_report,
    the_button_bonks_and_each_bonk_fires_an_event,
    a_home_assistant_restart_triggers_a_new_announcement,
    discovery_can_be_turned_off,
    forget_clears_everything,
    forget_drops_the_persistent_session,
);
