//! Home Assistant MQTT discovery: the topics and payloads that make every desk appear in Home
//! Assistant as a device, "Tux at `<desk>`", with a Bonk button, sensors and a bonk event.
//!
//! Discovery uses one retained config message per entity on
//! `<discovery_prefix>/<component>/<node_id>/<object_id>/config`. This per-component form works
//! on every Home Assistant version (the single device message exists only since about 2024.11).
//! Keys are spelled out in full (no abbreviations) so a person reading a retained config with
//! `mosquitto_sub` can follow it.
//!
//! The sensors read the desk's retained health report ([`crate::Health`]) through value
//! templates, so there is no second set of state topics to keep in step with it: the health topic
//! is the state. The two "Last bonk" sensors are the exception: before the first bonk they have
//! nothing to show, and every Home Assistant release before 2025 logs a warning for a timestamp
//! sensor whose template renders `None` (and shows the text `None` in a plain one). So they read
//! the desk's retained `last_bonk` topic — the ack of its last performed bonk — which holds
//! nothing until there is one: Home Assistant shows "unknown" and logs nothing, on old releases
//! and new. The bonk event entity reads the desk's ack topic the
//! same way: its template turns each `bonked` ack into an event whose type is the severity and
//! ignores the other outcomes. There is no topic of its own: a separate event message per bonk
//! would cost every broker a message per bonk per desk, and rumqttd matches a topic that nobody
//! subscribes to (a desk without Home Assistant) against every subscription on every publish.
//!
//! Every entity is available exactly when the desk's status topic says `online`.

use serde_json::{Value, json};

use crate::bonk::Severity;
use crate::names::{DeskId, Prefix};
use crate::topics::{Delivery, Topics};

/// Home Assistant's default discovery prefix.
pub const DEFAULT_DISCOVERY_PREFIX: &str = "homeassistant";

/// The payload Home Assistant publishes on its status topic when it (re)starts; desks announce
/// themselves again when they see it.
pub const BIRTH_ONLINE: &str = "online";

/// The payload the Bonk button publishes on the desk's bonk topic: a bonk whose source is Home
/// Assistant, with every other field defaulted by the agent's lenient parser.
pub const BUTTON_PAYLOAD: &str = r#"{"source":"homeassistant"}"#;

/// The manufacturer shown on the device page.
pub const MANUFACTURER: &str = "bonker";

/// The model shown on the device page.
pub const MODEL: &str = "Tux bonker desk agent";

/// Discovery configs: QoS 1, retained, so Home Assistant finds them whenever it starts.
pub const DISCOVERY_DELIVERY: Delivery = Delivery {
    qos: 1,
    retain: true,
};

/// A Home Assistant entity platform used by a desk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Component {
    /// `button`: the Bonk button.
    Button,
    /// `sensor`: bonk count, last bonk, diagnostics.
    Sensor,
    /// `event`: the bonk event.
    Event,
    /// `binary_sensor`: the desk's connectivity.
    BinarySensor,
}

impl Component {
    /// The component name as it appears in the discovery topic.
    pub fn as_str(self) -> &'static str {
        match self {
            Component::Button => "button",
            Component::Sensor => "sensor",
            Component::Event => "event",
            Component::BinarySensor => "binary_sensor",
        }
    }
}

/// One entity's discovery message.
#[derive(Debug, Clone, PartialEq)]
pub struct Discovery {
    /// The platform.
    pub component: Component,
    /// The entity's id within the desk (`bonk`, `bonk_event`, `bonks`, `last_bonk`, …), unique
    /// across components so `unique_id`s are too.
    pub object_id: &'static str,
    /// `<discovery_prefix>/<component>/<node_id>/<object_id>/config`.
    pub topic: String,
    /// The config payload.
    pub config: Value,
}

impl Discovery {
    /// The JSON payload.
    pub fn payload(&self) -> Vec<u8> {
        serde_json::to_vec(&self.config).unwrap_or_default()
    }
}

/// `<discovery_prefix>/status`: where Home Assistant announces that it (re)started.
pub fn birth_topic(discovery_prefix: &Prefix) -> String {
    format!("{discovery_prefix}/status")
}

/// The desk's discovery `node_id`: the desk name itself. Desk names use only `[a-zA-Z0-9_-]`, the
/// characters Home Assistant allows, so no escaping is ever needed — and a broker ACL can confine
/// a desk's credentials to `homeassistant/+/<desk>/#` with a username pattern.
pub fn node_id(desk: &DeskId) -> String {
    desk.to_string()
}

/// The device's identifier: `bonker_<desk>`, so it cannot collide with another integration's.
pub fn device_identifier(desk: &DeskId) -> String {
    format!("bonker_{desk}")
}

/// An entity's `unique_id`: `bonker_<desk>_<object_id>`, stable across restarts and versions.
pub fn unique_id(desk: &DeskId, object_id: &str) -> String {
    format!("{}_{object_id}", device_identifier(desk))
}

/// The discovery topic of one entity.
pub fn discovery_topic(
    discovery_prefix: &Prefix,
    component: Component,
    desk: &DeskId,
    object_id: &str,
) -> String {
    format!(
        "{discovery_prefix}/{}/{}/{object_id}/config",
        component.as_str(),
        node_id(desk)
    )
}

/// Everything discovery needs to know about a desk.
#[derive(Debug, Clone)]
pub struct DeskDevice<'a> {
    /// The desk.
    pub desk: &'a DeskId,
    /// Its topics (status, health, bonk, ack).
    pub topics: &'a Topics,
    /// Home Assistant's discovery prefix.
    pub discovery_prefix: &'a Prefix,
    /// The agent's version, shown as the device's software version.
    pub sw_version: &'a str,
    /// Whether the desk can report its SoC temperature (only then is the sensor announced).
    pub has_soc_temperature: bool,
}

/// Every entity a desk may announce, as (component, object_id): the list `--forget` clears.
pub const ENTITIES: [(Component, &str); 9] = [
    (Component::Button, "bonk"),
    (Component::Event, "bonk_event"),
    (Component::BinarySensor, "connectivity"),
    (Component::Sensor, "bonks"),
    (Component::Sensor, "last_bonk"),
    (Component::Sensor, "last_bonked"),
    (Component::Sensor, "started"),
    (Component::Sensor, "soc_temperature"),
    (Component::Sensor, "servo"),
];

/// Entities earlier versions announced and this one does not: a desk clears their discovery
/// topics when it announces itself, so Home Assistant removes them. `uptime`, a duration that
/// changed with every health report (a recorder row each time), became `started`, a timestamp
/// that does not change.
pub const RETIRED_ENTITIES: [(Component, &str); 1] = [(Component::Sensor, "uptime")];

/// The discovery topics of [`RETIRED_ENTITIES`].
pub fn retired_discovery_topics(discovery_prefix: &Prefix, desk: &DeskId) -> Vec<String> {
    RETIRED_ENTITIES
        .iter()
        .map(|(component, object_id)| {
            discovery_topic(discovery_prefix, *component, desk, object_id)
        })
        .collect()
}

/// Every discovery topic a desk may have published (including optional and retired ones), for
/// clearing.
pub fn all_discovery_topics(discovery_prefix: &Prefix, desk: &DeskId) -> Vec<String> {
    ENTITIES
        .iter()
        .map(|(component, object_id)| {
            discovery_topic(discovery_prefix, *component, desk, object_id)
        })
        .chain(retired_discovery_topics(discovery_prefix, desk))
        .collect()
}

const TEMPLATE_BONKS: &str = "{{ value_json.bonks_total }}";
/// When the last bonk finished, from its ack on the `last_bonk` topic.
const TEMPLATE_LAST_BONK: &str = "{{ value_json.finished_at }}";
/// `namespace/pod` of the last bonk, whichever of the two it had, or `this desk` for a bonk sent
/// to the desk alone.
const TEMPLATE_LAST_BONKED: &str = "{{ [value_json.namespace | default(''), \
value_json.pod | default('')] | select | join('/') or 'this desk' }}";
const TEMPLATE_STARTED: &str = "{{ value_json.started_at }}";
const TEMPLATE_SOC_TEMPERATURE: &str = "{{ value_json.soc_temp_c | default('None') }}";
const TEMPLATE_SERVO: &str = "{{ value_json.servo.state }}";
/// The event entity's template: a `bonked` ack becomes an event of its severity, with the ack's
/// fields (bonk_id, namespace, pod, count, …) as attributes; any other ack renders empty, which
/// Home Assistant ignores.
const TEMPLATE_BONK_EVENT: &str = "{% if value_json.outcome == 'bonked' %}\
{{ dict(value_json, event_type=value_json.severity) | to_json }}{% endif %}";

impl DeskDevice<'_> {
    /// The discovery messages for this desk, in a stable order.
    pub fn discovery(&self) -> Vec<Discovery> {
        let health = self.topics.desk_health(self.desk);
        let last_bonk = self.topics.desk_last_bonk(self.desk);
        let mut messages = vec![
            self.entity(
                Component::Button,
                "bonk",
                json!({
                    "name": "Bonk",
                    "icon": "mdi:hammer",
                    "command_topic": self.topics.desk_bonk(self.desk),
                    "payload_press": BUTTON_PAYLOAD,
                    "qos": 1,
                    "retain": false,
                }),
            ),
            self.entity(
                Component::Event,
                "bonk_event",
                json!({
                    "name": "Bonk",
                    "icon": "mdi:hammer",
                    "state_topic": self.topics.desk_ack(self.desk),
                    "value_template": TEMPLATE_BONK_EVENT,
                    "event_types": Severity::ALL.iter().rev().map(|s| s.as_str()).collect::<Vec<_>>(),
                    "qos": 1,
                }),
            ),
            // Connectivity, where Home Assistant users look for it: on while the agent is online,
            // off (not unavailable) when it is gone, so this entity has no availability of its
            // own — it is the availability.
            self.entity(
                Component::BinarySensor,
                "connectivity",
                json!({
                    "name": "Connectivity",
                    "device_class": "connectivity",
                    "entity_category": "diagnostic",
                    "state_topic": self.topics.desk_status(self.desk),
                    "payload_on": crate::Status::Online.as_str(),
                    "payload_off": crate::Status::Offline.as_str(),
                    "qos": 1,
                }),
            ),
            self.entity(
                Component::Sensor,
                "bonks",
                json!({
                    "name": "Bonks",
                    "icon": "mdi:counter",
                    "state_topic": health,
                    "value_template": TEMPLATE_BONKS,
                    "state_class": "total_increasing",
                    "qos": 1,
                }),
            ),
            self.entity(
                Component::Sensor,
                "last_bonk",
                json!({
                    "name": "Last bonk",
                    "device_class": "timestamp",
                    "state_topic": last_bonk,
                    "value_template": TEMPLATE_LAST_BONK,
                    "qos": 1,
                }),
            ),
            self.entity(
                Component::Sensor,
                "last_bonked",
                json!({
                    "name": "Last bonked",
                    "icon": "mdi:kubernetes",
                    "state_topic": last_bonk,
                    "value_template": TEMPLATE_LAST_BONKED,
                    "qos": 1,
                }),
            ),
            self.entity(
                Component::Sensor,
                "started",
                json!({
                    "name": "Started",
                    "device_class": "timestamp",
                    "entity_category": "diagnostic",
                    "state_topic": health,
                    "value_template": TEMPLATE_STARTED,
                    "qos": 1,
                }),
            ),
        ];
        if self.has_soc_temperature {
            messages.push(self.entity(
                Component::Sensor,
                "soc_temperature",
                json!({
                    "name": "SoC temperature",
                    "device_class": "temperature",
                    "unit_of_measurement": "°C",
                    "state_class": "measurement",
                    "entity_category": "diagnostic",
                    "state_topic": health,
                    "value_template": TEMPLATE_SOC_TEMPERATURE,
                    "qos": 1,
                }),
            ));
        }
        messages.push(self.entity(
            Component::Sensor,
            "servo",
            json!({
                "name": "Servo",
                "icon": "mdi:robot-industrial",
                "device_class": "enum",
                "options": crate::ServoState::ALL.map(crate::ServoState::as_str),
                "entity_category": "diagnostic",
                "state_topic": health,
                "value_template": TEMPLATE_SERVO,
                "json_attributes_topic": health,
                "json_attributes_template": "{{ value_json.servo | tojson }}",
                "qos": 1,
            }),
        ));
        messages
    }

    fn entity(
        &self,
        component: Component,
        object_id: &'static str,
        mut config: Value,
    ) -> Discovery {
        config["unique_id"] = json!(unique_id(self.desk, object_id));
        if component != Component::BinarySensor {
            config["availability"] = json!([{
            "topic": self.topics.desk_status(self.desk),
            "payload_available": crate::Status::Online.as_str(),
            "payload_not_available": crate::Status::Offline.as_str(),
            }]);
        }
        config["device"] = json!({
            "identifiers": [device_identifier(self.desk)],
            "name": format!("Tux at {}", self.desk),
            "manufacturer": MANUFACTURER,
            "model": MODEL,
            "sw_version": self.sw_version,
        });
        config["origin"] = json!({
            "name": "bonker",
            "sw_version": self.sw_version,
        });
        Discovery {
            component,
            object_id,
            topic: discovery_topic(self.discovery_prefix, component, self.desk, object_id),
            config,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desk() -> DeskId {
        DeskId::new("alice").expect("valid")
    }

    fn discovery(has_soc_temperature: bool) -> Vec<Discovery> {
        let desk = desk();
        let topics = Topics::default();
        let prefix = Prefix::new(DEFAULT_DISCOVERY_PREFIX).expect("valid");
        DeskDevice {
            desk: &desk,
            topics: &topics,
            discovery_prefix: &prefix,
            sw_version: "1.2.3",
            has_soc_temperature,
        }
        .discovery()
    }

    fn only_id_chars(s: &str) -> bool {
        s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    }

    #[test]
    fn topics_follow_the_per_component_layout() {
        let messages = discovery(true);
        let topics: Vec<&str> = messages.iter().map(|m| m.topic.as_str()).collect();
        assert_eq!(
            topics,
            [
                "homeassistant/button/alice/bonk/config",
                "homeassistant/event/alice/bonk_event/config",
                "homeassistant/binary_sensor/alice/connectivity/config",
                "homeassistant/sensor/alice/bonks/config",
                "homeassistant/sensor/alice/last_bonk/config",
                "homeassistant/sensor/alice/last_bonked/config",
                "homeassistant/sensor/alice/started/config",
                "homeassistant/sensor/alice/soc_temperature/config",
                "homeassistant/sensor/alice/servo/config",
            ]
        );
        assert_eq!(
            all_discovery_topics(
                &Prefix::new(DEFAULT_DISCOVERY_PREFIX).expect("valid"),
                &desk()
            )
            .len(),
            messages.len() + RETIRED_ENTITIES.len()
        );
        let unique_ids: std::collections::HashSet<&str> = messages
            .iter()
            .filter_map(|m| m.config["unique_id"].as_str())
            .collect();
        assert_eq!(unique_ids.len(), messages.len(), "unique ids are unique");
        for message in &messages {
            let levels: Vec<&str> = message.topic.split('/').collect();
            assert!(
                only_id_chars(levels[2]) && only_id_chars(levels[3]),
                "{}",
                message.topic
            );
            let unique_id = message.config["unique_id"].as_str().expect("unique_id");
            assert!(only_id_chars(unique_id), "{unique_id}");
        }
        assert_eq!(discovery(false).len(), messages.len() - 1);
    }

    #[test]
    fn every_entity_carries_device_availability_and_its_required_keys() {
        for message in discovery(true) {
            let config = &message.config;
            assert_eq!(config["device"]["identifiers"][0], "bonker_alice");
            assert_eq!(config["device"]["name"], "Tux at alice");
            if message.component == Component::BinarySensor {
                // Connectivity is the availability: it must show `off`, not `unavailable`.
                assert!(config.get("availability").is_none(), "{}", message.topic);
                assert_eq!(config["state_topic"], "bonker/desk/alice/status");
                assert_eq!(config["device_class"], "connectivity");
            } else {
                assert_eq!(
                    config["availability"][0]["topic"],
                    "bonker/desk/alice/status"
                );
            }
            let required = match message.component {
                Component::Button => "command_topic",
                Component::Sensor | Component::Event | Component::BinarySensor => "state_topic",
            };
            assert!(
                config[required].is_string(),
                "{}: {required}",
                message.topic
            );
        }
        let button = &discovery(false)[0].config;
        assert_eq!(button["command_topic"], "bonker/desk/alice/bonk");
        assert_eq!(button["payload_press"], BUTTON_PAYLOAD);
        let event = &discovery(false)[1].config;
        assert_eq!(event["event_types"], json!(["critical", "warning", "info"]));
        assert_eq!(event["state_topic"], "bonker/desk/alice/ack");
        assert!(event["value_template"].is_string());
    }

    #[test]
    fn the_servo_sensor_is_an_enum_of_every_servo_state() {
        let messages = discovery(false);
        let servo = &messages
            .iter()
            .find(|m| m.object_id == "servo")
            .expect("servo")
            .config;
        assert_eq!(servo["device_class"], "enum");
        assert_eq!(servo["options"], json!(["rest", "moving", "error"]));
    }

    #[test]
    fn the_button_payload_is_a_homeassistant_bonk() {
        let bonk = crate::Bonk::parse_lenient(BUTTON_PAYLOAD.as_bytes());
        assert!(bonk.warnings.is_empty());
        assert_eq!(bonk.bonk.source, crate::Source::Homeassistant);
    }
}
