//! Latency samples and their percentiles.
//!
//! Percentiles use the nearest-rank definition on the sorted samples (p99 of 200 samples is the
//! 198th smallest), so every reported figure is a latency that was actually measured, never an
//! interpolation between two.

use std::time::Duration;

/// Sorted latency samples.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    sorted: Vec<Duration>,
}

impl Samples {
    /// Sorts `samples`.
    pub fn new(mut samples: Vec<Duration>) -> Samples {
        samples.sort_unstable();
        Samples { sorted: samples }
    }

    /// How many samples.
    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    /// No samples at all.
    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }

    /// The nearest-rank percentile `p` (0 < p <= 100); zero when there are no samples.
    pub fn percentile(&self, p: f64) -> Duration {
        if self.sorted.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((p / 100.0) * self.sorted.len() as f64).ceil() as usize;
        self.sorted[rank.clamp(1, self.sorted.len()) - 1]
    }

    /// The largest sample.
    pub fn max(&self) -> Duration {
        self.sorted.last().copied().unwrap_or_default()
    }

    /// p50, p90, p99 and max.
    pub fn summary(&self) -> Summary {
        Summary {
            count: self.len(),
            p50: self.percentile(50.0),
            p90: self.percentile(90.0),
            p99: self.percentile(99.0),
            max: self.max(),
        }
    }
}

/// The usual four figures of a latency distribution.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Summary {
    /// How many samples.
    pub count: usize,
    /// Median.
    pub p50: Duration,
    /// 90th percentile.
    pub p90: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Largest.
    pub max: Duration,
}

/// Milliseconds with a precision that suits the value: `0.412`, `3.71`, `48.2`, `1204`.
pub fn ms(duration: Duration) -> String {
    let ms = duration.as_secs_f64() * 1000.0;
    if ms < 1.0 {
        format!("{ms:.3}")
    } else if ms < 10.0 {
        format!("{ms:.2}")
    } else if ms < 1000.0 {
        format!("{ms:.1}")
    } else {
        format!("{ms:.0}")
    }
}

/// A ratio `a / b` as `1.07×`, or `–` when `b` is zero.
pub fn ratio(a: Duration, b: Duration) -> String {
    if b.is_zero() {
        return "–".to_owned();
    }
    format!("{:.2}×", a.as_secs_f64() / b.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn micros(values: &[u64]) -> Samples {
        Samples::new(values.iter().map(|&v| Duration::from_micros(v)).collect())
    }

    #[test]
    fn nearest_rank_percentiles_are_measured_values() {
        let samples = micros(&(1..=200).rev().collect::<Vec<_>>());
        assert_eq!(samples.percentile(50.0), Duration::from_micros(100));
        assert_eq!(samples.percentile(90.0), Duration::from_micros(180));
        assert_eq!(samples.percentile(99.0), Duration::from_micros(198));
        assert_eq!(samples.max(), Duration::from_micros(200));
    }

    #[test]
    fn tiny_and_empty_sample_sets_do_not_panic() {
        assert_eq!(Samples::default().summary(), Summary::default());
        let one = micros(&[7]);
        assert_eq!(one.percentile(1.0), Duration::from_micros(7));
        assert_eq!(one.percentile(100.0), Duration::from_micros(7));
    }

    #[test]
    fn milliseconds_and_ratios_read_well() {
        assert_eq!(ms(Duration::from_micros(412)), "0.412");
        assert_eq!(ms(Duration::from_micros(3_712)), "3.71");
        assert_eq!(ms(Duration::from_micros(48_250)), "48.2");
        assert_eq!(ms(Duration::from_millis(1_204)), "1204");
        assert_eq!(
            ratio(Duration::from_millis(107), Duration::from_millis(100)),
            "1.07×"
        );
        assert_eq!(ratio(Duration::from_millis(1), Duration::ZERO), "–");
    }
}
