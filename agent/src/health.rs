//! Readings for the health report that come from the machine itself.

use std::path::Path;

/// The SoC temperature in °C, read from a Linux thermal zone file (millidegrees, as
/// `/sys/class/thermal/thermal_zone0/temp` reports it). `None` when the file is missing or holds
/// something else: health simply leaves the field out.
pub(crate) fn soc_temperature_c(path: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    let millidegrees: i64 = text.trim().parse().ok()?;
    // One decimal is all a SoC thermometer is good for.
    Some((millidegrees as f64 / 100.0).round() / 10.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_millidegrees_and_tolerates_absence() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("temp");
        std::fs::write(&path, "48312\n").expect("write");
        assert_eq!(soc_temperature_c(&path), Some(48.3));
        std::fs::write(&path, "hot").expect("write");
        assert_eq!(soc_temperature_c(&path), None);
        assert_eq!(soc_temperature_c(&dir.path().join("missing")), None);
    }
}
