//! Helpers for the agent's tests: an in-process desk with a simulated servo whose pulses the test
//! can read, a watcher for its acks and status, and bonk payloads.
//!
//! Every wait ends on an event (an ack, a status message, a recorded pulse), never on a timer.

#![allow(dead_code, unreachable_pub)]

use std::path::Path;

use bonker_agent::config::AgentSettings;
use bonker_agent::servo::simulated::{PulseRecord, PulseRecorder, SimulatedServo};
use bonker_tests::{Message, Probe, ProbeOptions};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A probe subscribed to `filters`, connected right after another client went away.
///
/// The bonker broker (rumqttd 0.20) can drop a brand-new connection when it reuses the slot of a
/// client that disconnected a moment before (its logs then say "no-connection id … is already
/// gone" and "router-drop"). Real clients reconnect; a probe would fail the test, so this retries
/// a connection that dies before its SUBACK, at most three times.
pub async fn probe(url: &str, filters: &[&str]) -> Probe {
    probe_with(url, filters, ProbeOptions::default()).await
}

/// [`probe`] with options (credentials, …).
pub async fn probe_with(url: &str, filters: &[&str], options: ProbeOptions) -> Probe {
    for _ in 0..3 {
        let url = url.to_owned();
        let filters: Vec<String> = filters.iter().map(|f| f.to_string()).collect();
        let options = options.clone();
        let attempt = tokio::spawn(async move {
            let filters: Vec<&str> = filters.iter().map(String::as_str).collect();
            Probe::connect_with(&url, &filters, options)
                .await
                .unwrap_or_else(|e| panic!("probe cannot connect to {url}: {e}"))
        });
        if let Ok(probe) = attempt.await {
            return probe;
        }
    }
    panic!("no probe could subscribe to {filters:?} at {url} in three attempts");
}

/// Settings for a test desk: fast strokes, no thermometer, the given broker.
pub fn settings(url: &str, desk: &str, namespaces: &[&str]) -> AgentSettings {
    let mut settings = AgentSettings {
        desk: Some(desk.to_owned()),
        namespaces: namespaces.iter().map(|n| n.to_string()).collect(),
        soc_temp_file: "/nonexistent/thermal_zone0/temp".into(),
        ..AgentSettings::default()
    };
    settings.mqtt.url = url.to_owned();
    settings.mqtt.reconnect_min_ms = 50;
    settings.mqtt.reconnect_max_ms = 500;
    settings.servo.stroke_ms = 10;
    settings
}

/// An agent running in this process with a simulated servo.
pub struct TestDesk {
    /// The desk name.
    pub desk: String,
    /// Every pulse its servo sent.
    pub recorder: PulseRecorder,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestDesk {
    /// Starts an agent with `settings` and returns once it has announced `online` (so it is
    /// subscribed).
    pub async fn start(settings: AgentSettings) -> TestDesk {
        TestDesk::start_with_recorder(settings, PulseRecorder::new()).await
    }

    /// As [`TestDesk::start`], recording into `recorder` (to follow one servo across restarts).
    pub async fn start_with_recorder(settings: AgentSettings, recorder: PulseRecorder) -> TestDesk {
        TestDesk::start_watched(settings, recorder, ProbeOptions::default()).await
    }

    /// As [`TestDesk::start`], awaiting `online` with a watcher connected with `watcher` options
    /// (credentials allowed to read the desk's status).
    pub async fn start_watched(
        settings: AgentSettings,
        recorder: PulseRecorder,
        watcher: ProbeOptions,
    ) -> TestDesk {
        let config = settings.validate().expect("valid test settings");
        let desk = config.desk.to_string();
        let status = config.topics.desk_status(&config.desk);
        let mut watcher = probe_with(&config.mqtt.url, &[&status], watcher).await;
        let servo = SimulatedServo::with_recorder(&config.servo, recorder.clone())
            .expect("simulated servo");
        let (shutdown, stop) = oneshot::channel::<()>();
        let task = tokio::spawn(bonker_agent::run(config, Box::new(servo), async move {
            let _ = stop.await;
        }));
        watcher.next_on(|m| m.text() == "online").await;
        TestDesk {
            desk,
            recorder,
            shutdown: Some(shutdown),
            task: Some(task),
        }
    }

    /// Asks the agent to shut down cleanly and waits until it has.
    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(bonker_tests::DEADLINE, task)
                .await
                .expect("agent stops within the deadline")
                .expect("agent task did not panic")
                .expect("agent ran without error");
        }
    }

    /// The moves that bonked Tux so far (homing and parking, which only visit rest, left out).
    pub fn bonk_moves(&self, rest_us: u32) -> Vec<Vec<u32>> {
        bonk_moves(&self.recorder.records(), rest_us)
    }
}

impl Drop for TestDesk {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Splits pulse records into moves (each ends with a release) and keeps those that leave rest.
pub fn bonk_moves(records: &[PulseRecord], rest_us: u32) -> Vec<Vec<u32>> {
    let mut moves = Vec::new();
    let mut current = Vec::new();
    for record in records {
        match record.pulse_us {
            Some(pulse) => current.push(pulse),
            None => {
                let pulses = std::mem::take(&mut current);
                if pulses.iter().any(|p| *p != rest_us) {
                    moves.push(pulses);
                }
            }
        }
    }
    moves
}

/// Reads the JSON lines a simulated servo wrote to `servo.record_file`.
pub fn read_record_file(path: &Path) -> Vec<PulseRecord> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).expect("a pulse record per line"))
        .collect()
}

/// A bonk payload with an id and a severity, sent now.
pub fn bonk(id: &str, severity: &str) -> String {
    json!({
        "v": 1,
        "id": id,
        "source": "cli",
        "severity": severity,
        "sent_at": chrono::Utc::now().to_rfc3339(),
    })
    .to_string()
}

/// The ack's `(bonk_id, outcome)`.
pub fn outcome(ack: &Message) -> (String, String) {
    let json: Value = ack.json();
    (
        json["bonk_id"].as_str().unwrap_or_default().to_owned(),
        json["outcome"].as_str().unwrap_or_default().to_owned(),
    )
}
