//! What each bonk looks like, as a list of pulse steps.
//!
//! Planning is a pure function so the motion can be tested (and property-tested) without a
//! servo or a clock: critical → full strokes to `strike_us`, warning → light taps to `tap_us`,
//! info → a wiggle around rest; a coalesced bonk repeats its stroke up to `max_strokes` times.
//! Every plan ends at rest, and every pulse in it is inside the safe range.

use std::time::Duration;

use bonker_protocol::Severity;

use crate::config::ServoConfig;

/// One position: drive `pulse_us` and give the arm `hold` to get there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// Pulse width, in microseconds (already clamped).
    pub pulse_us: u32,
    /// How long to hold it.
    pub hold: Duration,
}

/// How many strokes a bonk standing for `count` events gets: at least 1, at most `max_strokes`.
pub fn strokes_for(count: u32, max_strokes: u32) -> u32 {
    count.clamp(1, max_strokes.max(1))
}

/// The steps of one move: `strokes` strokes of the motion for `severity`, ending at rest.
pub fn plan(severity: Severity, strokes: u32, servo: &ServoConfig) -> Vec<Step> {
    let strokes = strokes_for(strokes, servo.max_strokes);
    let stroke = servo.stroke;
    let half = stroke / 2;
    let step = |pulse_us: u32, hold: Duration| Step {
        pulse_us: servo.range.clamp(pulse_us),
        hold,
    };
    let mut steps = Vec::new();
    for _ in 0..strokes {
        match severity {
            Severity::Critical => {
                steps.push(step(servo.strike_us, stroke));
                steps.push(step(servo.rest_us, stroke));
            }
            Severity::Warning => {
                steps.push(step(servo.tap_us, half));
                steps.push(step(servo.rest_us, half));
            }
            Severity::Info => {
                let up = servo.rest_us.saturating_add(servo.wiggle_us);
                let down = servo.rest_us.saturating_sub(servo.wiggle_us);
                steps.push(step(up, half));
                steps.push(step(down, half));
                steps.push(step(up, half));
                steps.push(step(servo.rest_us, half));
            }
        }
    }
    steps
}

/// The steps that park the arm: rest, held one stroke.
pub fn park(servo: &ServoConfig) -> Vec<Step> {
    vec![Step {
        pulse_us: servo.range.clamp(servo.rest_us),
        hold: servo.stroke,
    }]
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::config::{ServoConfig, ServoSettings};

    fn servo() -> ServoConfig {
        ServoConfig::from_settings(&ServoSettings::default()).expect("defaults are valid")
    }

    #[test]
    fn severities_move_differently_and_end_at_rest() {
        let servo = servo();
        let critical = plan(Severity::Critical, 1, &servo);
        assert_eq!(
            critical.iter().map(|s| s.pulse_us).collect::<Vec<_>>(),
            [servo.strike_us, servo.rest_us]
        );
        let warning = plan(Severity::Warning, 1, &servo);
        assert_eq!(warning[0].pulse_us, servo.tap_us);
        let info = plan(Severity::Info, 1, &servo);
        assert_eq!(info.len(), 4);
        assert!(info.iter().all(|s| s.pulse_us != servo.strike_us));
        for steps in [critical, warning, info] {
            assert_eq!(steps.last().map(|s| s.pulse_us), Some(servo.rest_us));
        }
    }

    #[test]
    fn coalesced_bonks_are_capped() {
        let servo = servo();
        assert_eq!(plan(Severity::Critical, 2, &servo).len(), 4);
        assert_eq!(
            plan(Severity::Critical, 1000, &servo).len(),
            2 * servo.max_strokes as usize
        );
        assert_eq!(plan(Severity::Critical, 0, &servo).len(), 2);
    }

    fn valid_servo() -> impl Strategy<Value = ServoConfig> {
        (
            500u32..2400,
            1u32..2000,
            0u32..3000,
            0u32..3000,
            0u32..3000,
            0u32..600,
        )
            .prop_map(|(min_us, width, rest, strike, tap, wiggle)| {
                let max_us = (min_us + width).min(2500);
                ServoSettings {
                    min_us,
                    max_us,
                    rest_us: rest,
                    strike_us: strike,
                    tap_us: tap,
                    wiggle_us: wiggle,
                    ..ServoSettings::default()
                }
            })
            .prop_filter_map("valid configs only", |settings| {
                ServoConfig::from_settings(&settings).ok()
            })
    }

    fn any_severity() -> impl Strategy<Value = Severity> {
        prop::sample::select(Severity::ALL.to_vec())
    }

    proptest! {
        #[test]
        fn planned_pulses_never_leave_the_safe_range(
            servo in valid_servo(),
            severity in any_severity(),
            strokes in 0u32..100,
        ) {
            let steps = plan(severity, strokes, &servo);
            prop_assert!(!steps.is_empty());
            prop_assert!(steps.len() <= 4 * servo.max_strokes as usize);
            for step in &steps {
                prop_assert!(servo.range.contains(step.pulse_us), "{step:?} outside {:?}", servo.range);
            }
            prop_assert_eq!(steps.last().map(|s| s.pulse_us), Some(servo.rest_us));
        }

        #[test]
        fn configs_with_pulses_outside_their_range_never_validate(
            min_us in 0u32..3000, max_us in 0u32..3000, rest in 0u32..3000,
            strike in 0u32..3000, tap in 0u32..3000,
        ) {
            let settings = ServoSettings {
                min_us, max_us, rest_us: rest, strike_us: strike, tap_us: tap, wiggle_us: 0,
                ..ServoSettings::default()
            };
            if let Ok(servo) = ServoConfig::from_settings(&settings) {
                for pulse in [rest, strike, tap] {
                    prop_assert!(servo.range.contains(pulse));
                }
                prop_assert!(servo.range.min_us >= crate::config::ABSOLUTE_MIN_US);
                prop_assert!(servo.range.max_us <= crate::config::ABSOLUTE_MAX_US);
            }
        }
    }
}
