//! A real Home Assistant (the release `scripts/install-homeassistant` pins) on a free loopback
//! port, with its MQTT integration on the test broker and discovery on, as a user sets it up.
//!
//! What it sees is read back over MQTT: `mqtt_statestream` publishes every entity's state and
//! attributes under `hass/<domain>/<object_id>/…`, so a test needs no API token. An automation
//! presses the desk's Bonk button when anything is published on [`PRESS_TOPIC`] — the button is
//! pressed by Home Assistant itself, through its `button.press` service. The MQTT integration
//! logs at `info`, so an entity's removal is a line to wait for; everything at warning and above
//! is in [`TestHomeAssistant::problems`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::{ChildProcess, Probe, free_port};

/// Publishing anything here makes Home Assistant press `button.tux_at_<desk>_bonk` for the desk
/// named in [`TestHomeAssistant::start`].
pub const PRESS_TOPIC: &str = "bonker-test/press";

/// Where `mqtt_statestream` publishes.
const STATESTREAM_BASE: &str = "hass";

/// How long Home Assistant may take to start or stop on a slow machine.
const START_DEADLINE: Duration = Duration::from_secs(90);

/// Home Assistant's `hass`: `$HASS_BINARY` (another release, to check by hand), or where
/// `scripts/install-homeassistant` puts it. (Not a `BONKER_…` variable: every program warns about
/// those it does not know.)
pub fn hass_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("HASS_BINARY") {
        return PathBuf::from(path);
    }
    let tools = std::env::var_os("BONKER_TOOLS_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("bonker")))
        .or_else(|| std::env::var_os("HOME").map(|d| PathBuf::from(d).join(".cache/bonker")))
        .expect("HOME is set");
    let path = tools.join("homeassistant/bin/hass");
    assert!(
        path.exists(),
        "{} is missing: run `bash scripts/install-homeassistant` (scripts/test does)",
        path.display()
    );
    path
}

/// A running Home Assistant with its own configuration directory.
#[derive(Debug)]
pub struct TestHomeAssistant {
    process: ChildProcess,
    config: tempfile::TempDir,
}

impl TestHomeAssistant {
    /// Starts Home Assistant on the broker at `mqtt_url` (`mqtt://127.0.0.1:<port>`), with an
    /// automation pressing `desk`'s Bonk button, and returns once it announced itself on the
    /// broker (`homeassistant/status` = `online`, sent once it is running — so every entity
    /// discovered from then on is streamed).
    pub async fn start(mqtt_url: &str, desk: &str) -> TestHomeAssistant {
        let port: u16 = mqtt_url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("mqtt://127.0.0.1:<port>");
        let config = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(config.path().join(".storage")).expect("mkdir .storage");
        std::fs::write(
            config.path().join("configuration.yaml"),
            configuration(free_port(), desk),
        )
        .expect("write configuration.yaml");
        // The MQTT integration is set up by a config entry, as the UI would leave it.
        let entry = serde_json::json!({
            "version": 1, "minor_version": 1, "key": "core.config_entries",
            "data": {"entries": [{
                "entry_id": "0bonker0test0mqtt0entry000000001", "version": 1, "minor_version": 1,
                "domain": "mqtt", "title": "bonker test broker",
                "data": {"broker": "127.0.0.1", "port": port, "discovery": true},
                "options": {}, "pref_disable_new_entities": false, "pref_disable_polling": false,
                "source": "user", "unique_id": null, "disabled_by": null,
            }]},
        });
        std::fs::write(
            config.path().join(".storage/core.config_entries"),
            entry.to_string(),
        )
        .expect("write the MQTT config entry");
        let mut birth = Probe::connect(mqtt_url, &["homeassistant/status"]).await;
        let mut command = Command::new(hass_binary());
        command
            .arg("--config")
            .arg(config.path())
            .arg("--skip-pip")
            .env("TZ", "UTC");
        let process = ChildProcess::spawn("home assistant", command);
        let deadline = tokio::time::Instant::now() + START_DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match birth.next_within(left).await {
                Some(message) if message.text() == "online" => break,
                Some(_) => {}
                None => panic!(
                    "Home Assistant did not announce itself within {START_DEADLINE:?}:\n{}",
                    process.output()
                ),
            }
        }
        TestHomeAssistant { process, config }
    }

    /// Everything Home Assistant logged so far.
    pub fn output(&self) -> String {
        self.process.output()
    }

    /// Every line logged at warning or above, less the one `--skip-pip` always prints.
    pub fn problems(&self) -> Vec<String> {
        self.output()
            .lines()
            .filter(|l| {
                l.contains(" WARNING (") || l.contains(" ERROR (") || l.contains(" CRITICAL (")
            })
            .filter(|l| !l.contains("Skipping pip installation"))
            .map(str::to_owned)
            .collect()
    }

    /// Waits until Home Assistant logged `count` lines containing `needle`.
    pub async fn wait_for_lines(&self, needle: &str, count: usize) {
        let deadline = tokio::time::Instant::now() + crate::DEADLINE;
        while self.output().matches(needle).count() < count {
            assert!(
                tokio::time::Instant::now() < deadline,
                "Home Assistant did not log {count} × {needle:?}:\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops Home Assistant (SIGTERM) and waits until it exited, which writes its registries.
    pub fn stop(&mut self) {
        self.process.signal(rustix::process::Signal::TERM);
        let status = self.process.wait_exit(START_DEADLINE);
        assert!(status.success(), "Home Assistant exited with {status}");
    }

    /// A registry from `.storage` (`core.device_registry`, `core.entity_registry`), as Home
    /// Assistant last wrote it.
    pub fn registry(&self, name: &str) -> serde_json::Value {
        let path = self.config.path().join(".storage").join(name);
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_str(&text).expect("a registry is JSON")
    }
}

fn configuration(http_port: u16, desk: &str) -> String {
    format!(
        "homeassistant:
  name: bonker test
  time_zone: UTC
  unit_system: metric
  currency: EUR
  country: DE
  latitude: 0
  longitude: 0
  elevation: 0
http:
  server_host: 127.0.0.1
  server_port: {http_port}
logger:
  default: warning
  logs:
    homeassistant.components.mqtt: info
mqtt_statestream:
  base_topic: {STATESTREAM_BASE}
  publish_attributes: true
automation:
  - alias: press the bonk button
    trigger:
      - platform: mqtt
        topic: {PRESS_TOPIC}
    action:
      - service: button.press
        target:
          entity_id: button.tux_at_{desk}_bonk
"
    )
}

/// What Home Assistant says about its entities, as `mqtt_statestream` publishes it: the latest
/// value of each `<domain>/<object_id>/<state or attribute>`, e.g.
/// `sensor/tux_at_alice_bonks/state`.
#[derive(Debug)]
pub struct States {
    probe: Probe,
    latest: BTreeMap<String, String>,
}

impl States {
    /// Follows every state Home Assistant streams to the broker at `mqtt_url`.
    pub async fn follow(mqtt_url: &str) -> States {
        States {
            probe: Probe::connect(mqtt_url, &[&format!("{STATESTREAM_BASE}/#")]).await,
            latest: BTreeMap::new(),
        }
    }

    /// The latest value of `key`, if streamed.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.latest.get(key).map(String::as_str)
    }

    /// Every key and its latest value.
    pub fn all(&self) -> &BTreeMap<String, String> {
        &self.latest
    }

    /// Waits until `done` holds for what was streamed; panics naming `what` with everything seen
    /// after [`crate::DEADLINE`].
    pub async fn until(&mut self, what: &str, done: impl Fn(&States) -> bool) {
        let deadline = tokio::time::Instant::now() + crate::DEADLINE;
        while !done(self) {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some(message) = self.probe.next_within(left).await else {
                panic!(
                    "Home Assistant never showed {what}; it showed {:#?}",
                    self.latest
                );
            };
            if let Some(key) = message.topic.strip_prefix(&format!("{STATESTREAM_BASE}/")) {
                self.latest.insert(key.to_owned(), message.text());
            }
        }
    }
}
