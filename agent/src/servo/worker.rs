//! The servo worker: one thread that owns the servo.
//!
//! Why a thread: rppal's calls block (sysfs writes, a software-PWM thread) and a stroke is timed by
//! sleeping. Doing either on the async runtime would stall the MQTT event loop — and a stalled
//! keep-alive makes the broker drop the desk and publish its last will mid-bonk. The agent talks to
//! the worker through a small bounded queue (a full queue means the desk is being bonked faster
//! than it can move, which the agent treats like the rate limit) and gets [`ServoReport`]s back.
//!
//! Moves never overlap because there is one worker. It homes the arm (rest, release) before
//! anything else, so an arm left down by a crash or a power cut is lifted at start, and it parks the
//! arm the same way on shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use bonker_protocol::Severity;
use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use super::motion::{self, Step};
use super::{Servo, ServoError};
use crate::config::{ServoConfig, ServoDriver};

/// How many moves may wait for the servo. Small on purpose: a bonk that would wait longer than a
/// few seconds is better coalesced into the next one.
pub const QUEUE_CAPACITY: usize = 4;

/// A move for the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MoveRequest {
    /// The agent's id for this move.
    pub id: u64,
    /// Which motion.
    pub severity: Severity,
    /// How many strokes (capped by `servo.max_strokes`).
    pub strokes: u32,
}

/// What the worker did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServoReport {
    /// The arm is at rest and released, before any move: the worker is ready.
    Homed {
        /// The homing error, if any (the worker goes on; moves may still work).
        error: Option<String>,
    },
    /// A move ended with the arm back at rest and the servo released.
    Finished {
        /// The move.
        id: u64,
        /// When.
        at: DateTime<Utc>,
    },
    /// A move failed; the worker tried to return to rest.
    Failed {
        /// The move.
        id: u64,
        /// When.
        at: DateTime<Utc>,
        /// What failed.
        error: String,
    },
    /// A queued move was dropped because the agent is shutting down.
    Cancelled {
        /// The move.
        id: u64,
    },
    /// The arm is parked at rest and released; the worker has stopped.
    Parked {
        /// The parking error, if any.
        error: Option<String>,
    },
}

enum Command {
    Move(MoveRequest),
    Park,
}

/// The handle the agent holds: submit moves, park, join.
#[derive(Debug)]
pub struct ServoWorker {
    commands: mpsc::Sender<Command>,
    stopping: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
    driver: ServoDriver,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Move(request) => write!(f, "Move({request:?})"),
            Command::Park => f.write_str("Park"),
        }
    }
}

impl ServoWorker {
    /// Starts the worker thread; it homes the arm, then reports [`ServoReport::Homed`].
    pub fn spawn(
        servo: Box<dyn Servo>,
        config: ServoConfig,
        reports: mpsc::UnboundedSender<ServoReport>,
    ) -> std::io::Result<ServoWorker> {
        let (commands, receiver) = mpsc::channel(QUEUE_CAPACITY);
        let stopping = Arc::new(AtomicBool::new(false));
        let driver = servo.driver();
        let thread = thread::Builder::new().name("servo".to_owned()).spawn({
            let stopping = stopping.clone();
            move || work(servo, config, receiver, reports, stopping)
        })?;
        Ok(ServoWorker {
            commands,
            stopping,
            thread: Some(thread),
            driver,
        })
    }

    /// The driver the worker owns.
    pub fn driver(&self) -> ServoDriver {
        self.driver
    }

    /// Queues a move; gives it back when the queue is full (or the worker has stopped).
    pub fn try_submit(&self, request: MoveRequest) -> Result<(), MoveRequest> {
        self.commands
            .try_send(Command::Move(request))
            .map_err(|error| match error.into_inner() {
                Command::Move(request) => request,
                Command::Park => request,
            })
    }

    /// Asks the worker to cancel queued moves, finish the current one and park the arm. The worker
    /// reports [`ServoReport::Cancelled`] for each dropped move, then [`ServoReport::Parked`].
    pub async fn park(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        // Queued moves are cancelled quickly now, so this waits at most for the current move.
        if self.commands.send(Command::Park).await.is_err() {
            tracing::debug!("servo worker already stopped");
        }
    }

    /// Waits for the worker thread to end (after [`ServoWorker::park`]).
    pub fn join(mut self) {
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("servo worker thread panicked");
        }
    }
}

fn work(
    mut servo: Box<dyn Servo>,
    config: ServoConfig,
    mut commands: mpsc::Receiver<Command>,
    reports: mpsc::UnboundedSender<ServoReport>,
    stopping: Arc<AtomicBool>,
) {
    let error = run_steps(servo.as_mut(), &motion::park(&config))
        .err()
        .map(|e| e.to_string());
    if let Some(error) = &error {
        tracing::error!(%error, "homing the servo failed");
    }
    let _ = reports.send(ServoReport::Homed { error });
    while let Some(command) = commands.blocking_recv() {
        match command {
            Command::Move(request) if stopping.load(Ordering::SeqCst) => {
                let _ = reports.send(ServoReport::Cancelled { id: request.id });
            }
            Command::Move(request) => {
                let steps = motion::plan(request.severity, request.strokes, &config);
                tracing::info!(
                    driver = servo.driver().as_str(),
                    severity = %request.severity,
                    strokes = motion::strokes_for(request.strokes, config.max_strokes),
                    "bonking"
                );
                let report = match run_steps(servo.as_mut(), &steps) {
                    Ok(()) => ServoReport::Finished {
                        id: request.id,
                        at: Utc::now(),
                    },
                    Err(error) => {
                        tracing::error!(%error, "servo move failed; returning to rest");
                        let _ = run_steps(servo.as_mut(), &motion::park(&config));
                        ServoReport::Failed {
                            id: request.id,
                            at: Utc::now(),
                            error: error.to_string(),
                        }
                    }
                };
                let _ = reports.send(report);
            }
            Command::Park => {
                let error = run_steps(servo.as_mut(), &motion::park(&config))
                    .err()
                    .map(|e| e.to_string());
                tracing::info!("servo parked at rest and released");
                let _ = reports.send(ServoReport::Parked { error });
                return;
            }
        }
    }
}

/// Drives each step, then releases the servo — also when a step fails, so it never hums.
fn run_steps(servo: &mut dyn Servo, steps: &[Step]) -> Result<(), ServoError> {
    let moved = steps.iter().try_for_each(|step| {
        servo.set_pulse_width(step.pulse_us)?;
        thread::sleep(step.hold);
        Ok(())
    });
    let released = servo.release();
    moved.and(released)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ServoSettings;
    use crate::servo::simulated::{PulseRecorder, SimulatedServo};

    fn config() -> ServoConfig {
        ServoConfig::from_settings(&ServoSettings {
            stroke_ms: 10,
            ..ServoSettings::default()
        })
        .expect("valid")
    }

    #[tokio::test]
    async fn moves_run_in_order_and_parking_cancels_the_queue() {
        let config = config();
        let recorder = PulseRecorder::new();
        let servo = SimulatedServo::with_recorder(&config, recorder.clone()).expect("opens");
        let (reports_tx, mut reports) = mpsc::unbounded_channel();
        let worker =
            ServoWorker::spawn(Box::new(servo), config.clone(), reports_tx).expect("spawn");
        assert_eq!(
            reports.recv().await,
            Some(ServoReport::Homed { error: None })
        );
        for id in 0..2 {
            worker
                .try_submit(MoveRequest {
                    id,
                    severity: Severity::Critical,
                    strokes: 1,
                })
                .expect("room in the queue");
        }
        let mut finished = Vec::new();
        while finished.len() < 2 {
            match reports.recv().await.expect("report") {
                ServoReport::Finished { id, .. } => finished.push(id),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(finished, [0, 1]);
        worker.park().await;
        assert_eq!(
            reports.recv().await,
            Some(ServoReport::Parked { error: None })
        );
        worker.join();
        let pulses: Vec<Option<u32>> = recorder.records().iter().map(|r| r.pulse_us).collect();
        let rest = Some(config.rest_us);
        let strike = Some(config.strike_us);
        assert_eq!(
            pulses,
            [
                rest, None, strike, rest, None, strike, rest, None, rest, None
            ]
        );
    }
}
