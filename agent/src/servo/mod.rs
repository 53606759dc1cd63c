//! The servo that bonks Tux: a small [`Servo`] trait, its drivers, the motion planner and the
//! worker thread that owns the hardware.
//!
//! - [`Servo`]: set a pulse width, release. That is all a hobby servo understands, so it is all a
//!   driver has to provide; everything else (what a bonk looks like, timing, safety) lives above it.
//! - Drivers: [`rpi::HardwarePwmServo`] (rppal hardware PWM), [`rpi::SoftPwmServo`] (rppal software
//!   PWM on any pin) and [`simulated::SimulatedServo`] (no hardware: logs and records every pulse
//!   so tests can assert on the exact motion).
//! - [`motion`]: turns a severity and a stroke count into pulse steps, every one clamped to the
//!   configured safe range.
//! - [`worker`]: one thread owns the servo and works through a bounded queue, so moves never
//!   overlap and the blocking rppal calls and timed strokes never stall the async runtime (and with
//!   it the MQTT keep-alive).

pub mod motion;
pub mod rpi;
pub mod simulated;
pub mod worker;

use crate::config::{PulseRange, ServoConfig, ServoDriver};

/// A hobby servo: it holds the position a pulse width encodes, until released.
pub trait Servo: Send {
    /// Drives the servo with pulses of `pulse_us` microseconds every period. Drivers clamp to
    /// their safe range again, whatever the caller passes.
    fn set_pulse_width(&mut self, pulse_us: u32) -> Result<(), ServoError>;

    /// Stops sending pulses: the servo goes limp (no hum, no jitter, no holding current).
    fn release(&mut self) -> Result<(), ServoError>;

    /// Which driver this is.
    fn driver(&self) -> ServoDriver;
}

/// A servo operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum ServoError {
    /// The hardware could not be opened (not a Pi, overlay missing, no permission).
    #[error("cannot open the {driver} servo: {reason}")]
    Open {
        /// The driver.
        driver: &'static str,
        /// Why, with a hint.
        reason: String,
    },
    /// A pulse or release failed.
    #[error("servo {operation} failed: {source}")]
    Io {
        /// What was being done.
        operation: &'static str,
        /// The rppal error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The simulated recorder file could not be written.
    #[error("cannot write servo.record_file {path:?}: {source}")]
    Record {
        /// The file.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Opens the servo `config` names. Hardware drivers fail off a Raspberry Pi with a message that
/// says so; the simulated driver always opens.
pub fn open(config: &ServoConfig) -> Result<Box<dyn Servo>, ServoError> {
    match config.driver {
        ServoDriver::Pwm => Ok(Box::new(rpi::HardwarePwmServo::open(config)?)),
        ServoDriver::Softpwm => Ok(Box::new(rpi::SoftPwmServo::open(config)?)),
        ServoDriver::Simulated => Ok(Box::new(simulated::SimulatedServo::open(config)?)),
    }
}

/// Whether this machine says it is a Raspberry Pi (used only to warn about a simulated servo on
/// real hardware).
pub fn looks_like_a_raspberry_pi() -> bool {
    std::fs::read("/proc/device-tree/model")
        .map(|model| String::from_utf8_lossy(&model).contains("Raspberry Pi"))
        .unwrap_or(false)
}

/// Clamps `pulse_us` into `range`, logging when it had to (a planner bug or a driver misuse).
pub(crate) fn clamp_logged(range: PulseRange, pulse_us: u32) -> u32 {
    let clamped = range.clamp(pulse_us);
    if clamped != pulse_us {
        tracing::warn!(
            pulse_us,
            clamped,
            min_us = range.min_us,
            max_us = range.max_us,
            "pulse outside the safe range clamped"
        );
    }
    clamped
}
