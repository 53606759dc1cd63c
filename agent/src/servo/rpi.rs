//! Raspberry Pi servo drivers, through rppal.
//!
//! - [`HardwarePwmServo`]: the SoC's PWM peripheral via the kernel's PWM sysfs interface. Jitter
//!   free; needs `dtoverlay=pwm` (or `pwm-2chan`) in the boot config. Channel 0 is GPIO18
//!   (physical pin 12) on a Pi 1–4 — the only hardware PWM pin on a Pi 1 Model B's 26-pin header;
//!   on a Pi 5 GPIO18 is channel 2.
//! - [`SoftPwmServo`]: rppal's software PWM on any GPIO pin: a busy thread with some jitter, so
//!   the signal is stopped after every move.
//!
//! Both compile everywhere rppal builds (x86_64 Linux included, so CI checks them); off a Pi,
//! opening them fails with rppal's "unknown model" error, reported with a hint.

use rppal::gpio::{Gpio, OutputPin};
use rppal::pwm::{Channel, Polarity, Pwm};

use super::{Servo, ServoError};
use crate::config::{PulseRange, ServoConfig, ServoDriver};

fn micros(pulse_us: u32) -> std::time::Duration {
    std::time::Duration::from_micros(u64::from(pulse_us))
}

fn io_error(
    operation: &'static str,
) -> impl FnOnce(Box<dyn std::error::Error + Send + Sync>) -> ServoError {
    move |source| ServoError::Io { operation, source }
}

fn open_hint(error: &str) -> &'static str {
    if error.contains("Raspberry Pi model") || error.contains("nknown model") {
        "this does not look like a Raspberry Pi; use --servo simulated to run without hardware"
    } else if error.contains("ermission") {
        "run as a user in the gpio group (see deploy/pi/README.md)"
    } else {
        "check the wiring and the PWM overlay in the boot config (see docs/agent.md)"
    }
}

/// Hardware PWM.
#[derive(Debug)]
pub struct HardwarePwmServo {
    pwm: Pwm,
    range: PulseRange,
    enabled: bool,
}

impl HardwarePwmServo {
    /// Opens `config.pwm_channel` with `config.period`, disabled until the first pulse.
    pub fn open(config: &ServoConfig) -> Result<HardwarePwmServo, ServoError> {
        let channel = match config.pwm_channel {
            0 => Channel::Pwm0,
            1 => Channel::Pwm1,
            2 => Channel::Pwm2,
            _ => Channel::Pwm3,
        };
        let rest = micros(config.range.clamp(config.rest_us));
        let pwm = Pwm::with_period(channel, config.period, rest, Polarity::Normal, false).map_err(
            |error| {
                let error = error.to_string();
                ServoError::Open {
                    driver: "pwm",
                    reason: format!(
                        "hardware PWM channel {}: {error}; {}",
                        config.pwm_channel,
                        open_hint(&error)
                    ),
                }
            },
        )?;
        Ok(HardwarePwmServo {
            pwm,
            range: config.range,
            enabled: false,
        })
    }
}

impl Servo for HardwarePwmServo {
    fn set_pulse_width(&mut self, pulse_us: u32) -> Result<(), ServoError> {
        let pulse_us = super::clamp_logged(self.range, pulse_us);
        self.pwm
            .set_pulse_width(micros(pulse_us))
            .map_err(|e| io_error("set pulse width")(Box::new(e)))?;
        if !self.enabled {
            self.pwm
                .enable()
                .map_err(|e| io_error("enable PWM")(Box::new(e)))?;
            self.enabled = true;
        }
        Ok(())
    }

    fn release(&mut self) -> Result<(), ServoError> {
        self.pwm
            .disable()
            .map_err(|e| io_error("disable PWM")(Box::new(e)))?;
        self.enabled = false;
        Ok(())
    }

    fn driver(&self) -> ServoDriver {
        ServoDriver::Pwm
    }
}

/// Software PWM on a GPIO pin.
#[derive(Debug)]
pub struct SoftPwmServo {
    pin: OutputPin,
    period: std::time::Duration,
    range: PulseRange,
}

impl SoftPwmServo {
    /// Opens BCM GPIO `config.gpio_pin` as an output, low.
    pub fn open(config: &ServoConfig) -> Result<SoftPwmServo, ServoError> {
        let open_error = |error: rppal::gpio::Error| {
            let error = error.to_string();
            ServoError::Open {
                driver: "softpwm",
                reason: format!("GPIO {}: {error}; {}", config.gpio_pin, open_hint(&error)),
            }
        };
        let pin = Gpio::new()
            .and_then(|gpio| gpio.get(config.gpio_pin))
            .map_err(open_error)?
            .into_output_low();
        Ok(SoftPwmServo {
            pin,
            period: config.period,
            range: config.range,
        })
    }
}

impl Servo for SoftPwmServo {
    fn set_pulse_width(&mut self, pulse_us: u32) -> Result<(), ServoError> {
        let pulse_us = super::clamp_logged(self.range, pulse_us);
        self.pin
            .set_pwm(self.period, micros(pulse_us))
            .map_err(|e| io_error("set software PWM")(Box::new(e)))
    }

    fn release(&mut self) -> Result<(), ServoError> {
        self.pin
            .clear_pwm()
            .map_err(|e| io_error("clear software PWM")(Box::new(e)))?;
        self.pin.set_low();
        Ok(())
    }

    fn driver(&self) -> ServoDriver {
        ServoDriver::Softpwm
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ServoConfig, ServoSettings};

    /// Off a Pi (CI, a laptop) the rppal drivers refuse to open with a clear hint; on a Pi they
    /// may open. Either way nothing panics.
    #[test]
    fn hardware_drivers_fail_clearly_off_a_pi() {
        let on_a_pi = super::super::looks_like_a_raspberry_pi();
        for driver in [ServoDriver::Pwm, ServoDriver::Softpwm] {
            let config = ServoConfig::from_settings(&ServoSettings {
                driver,
                ..ServoSettings::default()
            })
            .expect("valid");
            match super::super::open(&config) {
                Ok(servo) => assert!(on_a_pi, "{} opened off a Pi", servo.driver().as_str()),
                Err(error) if !on_a_pi => {
                    let error = error.to_string();
                    assert!(error.contains(driver.as_str()), "{error}");
                    assert!(error.contains("--servo simulated"), "{error}");
                }
                Err(_) => {}
            }
        }
    }
}
