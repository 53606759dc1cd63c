//! A servo without hardware, for laptops, CI and the demo.
//!
//! It logs each pulse and, when given a [`PulseRecorder`] (tests hold a clone), records it with a
//! timestamp there, so they can assert on the exact motion ("one strike, back to rest, released")
//! and await it without sleeping. A recorder keeps every pulse, so a simulated desk opened from its
//! configuration — a demo, a desk without a Pi, running for months — has none. A test that runs
//! the agent as a separate process reads the same records from `servo.record_file`, one JSON
//! object per line.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::{Servo, ServoError};
use crate::config::{PulseRange, ServoConfig, ServoDriver};

/// One recorded servo command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PulseRecord {
    /// When it was sent.
    pub at: DateTime<Utc>,
    /// The pulse width in microseconds, or `None` (JSON `null`) when the servo was released.
    pub pulse_us: Option<u32>,
}

impl PulseRecord {
    /// Whether this record is a release (the end of a move).
    pub fn is_release(&self) -> bool {
        self.pulse_us.is_none()
    }
}

/// Every pulse a simulated servo sent, shared between the servo and whoever watches it.
#[derive(Debug, Clone)]
pub struct PulseRecorder {
    records: Arc<watch::Sender<Vec<PulseRecord>>>,
}

impl Default for PulseRecorder {
    fn default() -> Self {
        Self::new()
    }
}

impl PulseRecorder {
    /// An empty recorder.
    pub fn new() -> Self {
        Self {
            records: Arc::new(watch::Sender::new(Vec::new())),
        }
    }

    /// A copy of every record so far.
    pub fn records(&self) -> Vec<PulseRecord> {
        self.records.borrow().clone()
    }

    /// How many moves have finished (each move ends with a release).
    pub fn moves(&self) -> usize {
        self.records
            .borrow()
            .iter()
            .filter(|r| r.is_release())
            .count()
    }

    /// Waits until `predicate` holds for the records.
    pub async fn wait_for(&self, mut predicate: impl FnMut(&[PulseRecord]) -> bool) {
        let mut receiver = self.records.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let _ = receiver.wait_for(|records| predicate(records)).await;
    }

    fn push(&self, record: PulseRecord) {
        self.records.send_modify(|records| records.push(record));
    }
}

/// The simulated driver.
#[derive(Debug)]
pub struct SimulatedServo {
    range: PulseRange,
    recorder: Option<PulseRecorder>,
    record_file: Option<(PathBuf, File)>,
}

impl SimulatedServo {
    /// A simulated servo that keeps no record in memory, appending to `servo.record_file` when
    /// set.
    pub fn open(config: &ServoConfig) -> Result<SimulatedServo, ServoError> {
        Self::build(config, None)
    }

    /// A simulated servo that also records into `recorder` (tests keep a clone).
    pub fn with_recorder(
        config: &ServoConfig,
        recorder: PulseRecorder,
    ) -> Result<SimulatedServo, ServoError> {
        Self::build(config, Some(recorder))
    }

    fn build(
        config: &ServoConfig,
        recorder: Option<PulseRecorder>,
    ) -> Result<SimulatedServo, ServoError> {
        let record_file = match &config.record_file {
            Some(path) => {
                let file = File::options()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|source| ServoError::Record {
                        path: path.clone(),
                        source,
                    })?;
                Some((path.clone(), file))
            }
            None => None,
        };
        Ok(SimulatedServo {
            range: config.range,
            recorder,
            record_file,
        })
    }

    /// The recorder this servo writes to, if it was given one.
    pub fn recorder(&self) -> Option<PulseRecorder> {
        self.recorder.clone()
    }

    fn record(&mut self, pulse_us: Option<u32>) -> Result<(), ServoError> {
        let record = PulseRecord {
            at: Utc::now(),
            pulse_us,
        };
        if let Some(recorder) = &self.recorder {
            recorder.push(record);
        }
        if let Some((path, file)) = &mut self.record_file {
            let mut line = serde_json::to_vec(&record).unwrap_or_default();
            line.push(b'\n');
            file.write_all(&line).map_err(|source| ServoError::Record {
                path: path.clone(),
                source,
            })?;
        }
        Ok(())
    }
}

impl Servo for SimulatedServo {
    fn set_pulse_width(&mut self, pulse_us: u32) -> Result<(), ServoError> {
        let pulse_us = super::clamp_logged(self.range, pulse_us);
        tracing::debug!(pulse_us, "simulated servo pulse");
        self.record(Some(pulse_us))
    }

    fn release(&mut self) -> Result<(), ServoError> {
        tracing::debug!("simulated servo released");
        self.record(None)
    }

    fn driver(&self) -> ServoDriver {
        ServoDriver::Simulated
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ServoSettings;

    /// A simulated servo's config that writes its pulses to a file in `dir`, and that file.
    fn recording_to_file(dir: &std::path::Path) -> (ServoConfig, PathBuf) {
        let path = dir.join("pulses.jsonl");
        let config = ServoConfig::from_settings(&ServoSettings {
            record_file: Some(path.clone()),
            ..ServoSettings::default()
        })
        .expect("valid");
        (config, path)
    }

    #[test]
    fn pulses_are_clamped_recorded_and_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (config, path) = recording_to_file(dir.path());
        let recorder = PulseRecorder::new();
        let mut servo = SimulatedServo::with_recorder(&config, recorder.clone()).expect("opens");
        servo.set_pulse_width(9999).expect("pulse");
        servo.set_pulse_width(1).expect("pulse");
        servo.release().expect("release");
        let pulses: Vec<Option<u32>> = recorder.records().iter().map(|r| r.pulse_us).collect();
        assert_eq!(
            pulses,
            [Some(config.range.max_us), Some(config.range.min_us), None]
        );
        assert_eq!(recorder.moves(), 1);
        let written: Vec<PulseRecord> = std::fs::read_to_string(&path)
            .expect("read")
            .lines()
            .map(|line| serde_json::from_str(line).expect("json line"))
            .collect();
        assert_eq!(written, recorder.records());
    }

    #[test]
    fn a_servo_opened_from_its_configuration_keeps_no_record_in_memory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (config, path) = recording_to_file(dir.path());
        let mut servo = SimulatedServo::open(&config).expect("opens");
        assert!(servo.recorder().is_none());
        for _ in 0..3 {
            servo.set_pulse_width(1500).expect("pulse");
            servo.release().expect("release");
        }
        // The file, when asked for, still gets every pulse.
        let lines = std::fs::read_to_string(&path)
            .expect("read")
            .lines()
            .count();
        assert_eq!(lines, 6);
    }
}
