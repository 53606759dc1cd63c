//! The agent's configuration: raw [`AgentSettings`] as read from defaults, a TOML file, `BONKER_…`
//! environment variables and flags, and the validated [`AgentConfig`] the rest of the agent uses.
//!
//! Two types on purpose: `AgentSettings` mirrors the file (strings, numbers, `deny_unknown_fields` so a
//! typo is an error), while `AgentConfig` holds only checked values (a [`DeskId`], [`Namespace`]s,
//! a [`PulseRange`] that every pulse is clamped to). Everything is validated before the agent opens
//! the servo or connects to the broker, so a bad file stops it at once with a message that names
//! the key — and a typo in a pulse width can never drive the servo into its end stop.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bonker_client::MqttSettings;
use bonker_protocol::{BonkFilters, DeskId, Namespace, Prefix, PrefixFilter, Topics};
use serde::{Deserialize, Serialize};

/// Default maximum age of a bonk, in seconds: older ones are acked `expired` and not performed.
pub const DEFAULT_MAX_AGE_S: u64 = 600;
/// Default interval between health reports, in seconds.
pub const DEFAULT_HEALTH_INTERVAL_S: u64 = 30;
/// Default window in which a bonk id seen again is a duplicate, in seconds.
pub const DEFAULT_DEDUPE_WINDOW_S: u64 = 86_400;
/// How far apart two reports of one OOM kill may be, in seconds: the gateway's default too.
pub const DEFAULT_KILL_WINDOW_S: u64 = bonker_protocol::kill::DEFAULT_WINDOW.as_secs();
/// Most namespaces one desk watches by name: 100 names of up to 63 bytes keep the health report
/// well inside [`bonker_protocol::desk::MAX_HEALTH_BYTES`].
pub const MAX_NAMESPACES: usize = 100;
/// Most bonk ids remembered for deduplication; the oldest are forgotten first.
pub const DEDUPE_MAX_ENTRIES: usize = 10_000;
/// Default rate limit: at most this many performed bonks…
pub const DEFAULT_RATE_MAX_BONKS: u32 = 10;
/// …per this many seconds.
pub const DEFAULT_RATE_PER_S: u64 = 60;
/// Where Linux reports the SoC temperature (millidegrees Celsius) on a Raspberry Pi.
pub const DEFAULT_SOC_TEMP_FILE: &str = "/sys/class/thermal/thermal_zone0/temp";
/// Home Assistant's default discovery prefix (spelled by the protocol crate).
pub use bonker_protocol::homeassistant::DEFAULT_DISCOVERY_PREFIX;

/// Default servo period, in milliseconds (50 Hz, what hobby servos expect).
pub const DEFAULT_PERIOD_MS: u64 = 20;
/// Default rest pulse, in microseconds (neutral on most hobby servos).
pub const DEFAULT_REST_US: u32 = 1500;
/// Default strike pulse for a full bonk, in microseconds.
pub const DEFAULT_STRIKE_US: u32 = 1900;
/// Default pulse for a light tap, in microseconds.
pub const DEFAULT_TAP_US: u32 = 1700;
/// Default wiggle amplitude around rest, in microseconds.
pub const DEFAULT_WIGGLE_US: u32 = 120;
/// Default lower end of the safe pulse range, in microseconds.
pub const DEFAULT_MIN_US: u32 = 1000;
/// Default upper end of the safe pulse range, in microseconds.
pub const DEFAULT_MAX_US: u32 = 2000;
/// Default time the arm is given to reach each position, in milliseconds.
pub const DEFAULT_STROKE_MS: u64 = 250;
/// Default cap on strokes for one (coalesced) bonk.
pub const DEFAULT_MAX_STROKES: u32 = 3;
/// No hobby servo takes pulses outside 500–2500 µs; a range beyond this is a typo.
pub const ABSOLUTE_MIN_US: u32 = 500;
/// See [`ABSOLUTE_MIN_US`].
pub const ABSOLUTE_MAX_US: u32 = 2500;
/// The longest move allowed (`max_strokes` full strokes), in milliseconds, so that a move in
/// progress always finishes within the agent's shutdown budget.
pub const MAX_MOVE_MS: u64 = 6000;
/// The GPIO pin of PWM channel 0 on the Pi 1–4 header (physical pin 12).
pub const DEFAULT_GPIO_PIN: u8 = 18;

/// Keys whose `BONKER_…` environment value is a comma-separated list.
pub const LIST_KEYS: &[&str] = &["namespaces"];

/// The agent's settings, exactly as written in `agent.toml` (see `agent/agent.example.toml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentSettings {
    /// This desk's name (letters, digits, `_`, `-`). Required.
    pub desk: Option<String>,
    /// Namespaces to watch; `+` watches every namespace. The desk topic is always watched.
    pub namespaces: Vec<String>,
    /// Topic prefix; may hold `+` levels (`bonker/+`) to watch several clusters on one broker.
    pub prefix: String,
    /// Concrete prefix for this desk's own topics (bonk, ack, status, health). Defaults to
    /// `prefix` when it has no `+`, else to its levels before the first `+`.
    pub desk_prefix: Option<String>,
    /// Bonks older than this (by `sent_at`, else `fired_at`) are acked `expired`; 0 = never.
    pub max_age_s: u64,
    /// Seconds between retained health reports.
    pub health_interval_s: u64,
    /// Seconds a bonk id is remembered after it was last seen; the same id again is acked
    /// `duplicate`.
    pub dedupe_window_s: u64,
    /// Seconds two reports of one OOM kill may be apart (the watcher's and an alert's); the later
    /// is acked `duplicate`. 0 = judge by id only.
    pub kill_window_s: u64,
    /// File holding the SoC temperature in millidegrees; reported when it exists.
    pub soc_temp_file: PathBuf,
    /// Per-desk rate limit.
    pub rate_limit: RateLimitSettings,
    /// The servo.
    pub servo: ServoSettings,
    /// Home Assistant MQTT discovery.
    pub homeassistant: HomeAssistantSettings,
    /// The broker connection (shared by every bonker program).
    pub mqtt: MqttSettings,
}

impl Default for AgentSettings {
    fn default() -> Self {
        Self {
            desk: None,
            namespaces: Vec::new(),
            prefix: bonker_protocol::DEFAULT_PREFIX.to_owned(),
            desk_prefix: None,
            max_age_s: DEFAULT_MAX_AGE_S,
            health_interval_s: DEFAULT_HEALTH_INTERVAL_S,
            dedupe_window_s: DEFAULT_DEDUPE_WINDOW_S,
            kill_window_s: DEFAULT_KILL_WINDOW_S,
            soc_temp_file: PathBuf::from(DEFAULT_SOC_TEMP_FILE),
            rate_limit: RateLimitSettings::default(),
            servo: ServoSettings::default(),
            homeassistant: HomeAssistantSettings::default(),
            mqtt: MqttSettings::default(),
        }
    }
}

/// `[rate_limit]`: at most `max_bonks` performed bonks per `per_s` seconds; bonks over it are
/// coalesced into the next performed one and acked `rate_limited`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitSettings {
    /// Bonks allowed per window.
    pub max_bonks: u32,
    /// The window, in seconds.
    pub per_s: u64,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        Self {
            max_bonks: DEFAULT_RATE_MAX_BONKS,
            per_s: DEFAULT_RATE_PER_S,
        }
    }
}

/// Which servo driver moves the arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ServoDriver {
    /// Hardware PWM through the kernel's PWM sysfs interface (needs `dtoverlay=pwm`).
    Pwm,
    /// Software PWM on any GPIO pin (more jitter; no overlay needed).
    Softpwm,
    /// No hardware: log each move and record every pulse. The default.
    #[default]
    Simulated,
}

impl ServoDriver {
    /// The name used in config and health reports.
    pub fn as_str(self) -> &'static str {
        match self {
            ServoDriver::Pwm => "pwm",
            ServoDriver::Softpwm => "softpwm",
            ServoDriver::Simulated => "simulated",
        }
    }
}

/// `[servo]`: driver, pins and pulse widths (microseconds), all checked at load.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServoSettings {
    /// `pwm`, `softpwm` or `simulated`.
    pub driver: ServoDriver,
    /// Hardware PWM channel: 0 = GPIO18 on a Pi 1–4 (2 on a Pi 5), 1 = GPIO13.
    pub pwm_channel: u8,
    /// BCM GPIO number for `softpwm`.
    pub gpio_pin: u8,
    /// PWM period in milliseconds (20 = 50 Hz).
    pub period_ms: u64,
    /// Arm at rest.
    pub rest_us: u32,
    /// Full bonk (critical).
    pub strike_us: u32,
    /// Light tap (warning).
    pub tap_us: u32,
    /// Wiggle amplitude around rest (info).
    pub wiggle_us: u32,
    /// Lowest pulse ever sent.
    pub min_us: u32,
    /// Highest pulse ever sent.
    pub max_us: u32,
    /// Time given to reach each position, in milliseconds.
    pub stroke_ms: u64,
    /// Most strokes for one coalesced bonk.
    pub max_strokes: u32,
    /// `simulated` only: append every pulse as a JSON line to this file.
    pub record_file: Option<PathBuf>,
}

impl Default for ServoSettings {
    fn default() -> Self {
        Self {
            driver: ServoDriver::Simulated,
            pwm_channel: 0,
            gpio_pin: DEFAULT_GPIO_PIN,
            period_ms: DEFAULT_PERIOD_MS,
            rest_us: DEFAULT_REST_US,
            strike_us: DEFAULT_STRIKE_US,
            tap_us: DEFAULT_TAP_US,
            wiggle_us: DEFAULT_WIGGLE_US,
            min_us: DEFAULT_MIN_US,
            max_us: DEFAULT_MAX_US,
            stroke_ms: DEFAULT_STROKE_MS,
            max_strokes: DEFAULT_MAX_STROKES,
            record_file: None,
        }
    }
}

/// `[homeassistant]`: MQTT discovery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HomeAssistantSettings {
    /// Announce this desk to Home Assistant.
    pub enabled: bool,
    /// Home Assistant's discovery prefix.
    pub discovery_prefix: String,
}

impl Default for HomeAssistantSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            discovery_prefix: DEFAULT_DISCOVERY_PREFIX.to_owned(),
        }
    }
}

pub use bonker_client::config::ConfigError;
use bonker_client::config::invalid;

/// Which namespaces a desk watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Watch {
    /// Every namespace (`+`).
    Every,
    /// These namespaces (possibly none: then only the desk topic bonks this desk).
    Only(Vec<Namespace>),
}

impl Watch {
    /// Whether a bonk on `namespace`'s topic is for this desk.
    pub fn includes(&self, namespace: &Namespace) -> bool {
        match self {
            Watch::Every => true,
            Watch::Only(namespaces) => namespaces.contains(namespace),
        }
    }

    /// As reported in health: `["+"]` or the names.
    pub fn names(&self) -> Vec<String> {
        match self {
            Watch::Every => vec!["+".to_owned()],
            Watch::Only(namespaces) => namespaces.iter().map(ToString::to_string).collect(),
        }
    }
}

/// The safe pulse range. Every pulse the agent sends passes through [`PulseRange::clamp`], in
/// the motion planner and again in each driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PulseRange {
    /// Lowest pulse, in microseconds.
    pub min_us: u32,
    /// Highest pulse, in microseconds.
    pub max_us: u32,
}

impl PulseRange {
    /// `pulse_us` forced into the range.
    pub fn clamp(self, pulse_us: u32) -> u32 {
        pulse_us.clamp(self.min_us, self.max_us)
    }

    /// Whether `pulse_us` is inside the range.
    pub fn contains(self, pulse_us: u32) -> bool {
        (self.min_us..=self.max_us).contains(&pulse_us)
    }
}

/// Validated servo settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServoConfig {
    /// The driver.
    pub driver: ServoDriver,
    /// Hardware PWM channel (0–3).
    pub pwm_channel: u8,
    /// BCM GPIO pin for software PWM.
    pub gpio_pin: u8,
    /// PWM period.
    pub period: Duration,
    /// Rest pulse.
    pub rest_us: u32,
    /// Strike pulse.
    pub strike_us: u32,
    /// Tap pulse.
    pub tap_us: u32,
    /// Wiggle amplitude.
    pub wiggle_us: u32,
    /// The safe range.
    pub range: PulseRange,
    /// Time per position.
    pub stroke: Duration,
    /// Stroke cap.
    pub max_strokes: u32,
    /// Where the simulated driver records pulses, if anywhere.
    pub record_file: Option<PathBuf>,
}

impl ServoConfig {
    /// Checks `settings`: the safe range is sane, and rest, strike, tap and the wiggle lie inside it.
    pub fn from_settings(settings: &ServoSettings) -> Result<ServoConfig, ConfigError> {
        let ServoSettings {
            driver,
            pwm_channel,
            gpio_pin,
            period_ms,
            rest_us,
            strike_us,
            tap_us,
            wiggle_us,
            min_us,
            max_us,
            stroke_ms,
            max_strokes,
            ref record_file,
        } = *settings;
        if min_us < ABSOLUTE_MIN_US || max_us > ABSOLUTE_MAX_US || min_us >= max_us {
            return Err(invalid(format!(
                "servo.min_us ({min_us}) and servo.max_us ({max_us}) must satisfy \
                 {ABSOLUTE_MIN_US} <= min_us < max_us <= {ABSOLUTE_MAX_US}"
            )));
        }
        let range = PulseRange { min_us, max_us };
        for (key, value) in [
            ("servo.rest_us", rest_us),
            ("servo.strike_us", strike_us),
            ("servo.tap_us", tap_us),
        ] {
            if !range.contains(value) {
                return Err(invalid(format!(
                    "{key} = {value} is outside the safe range servo.min_us..=servo.max_us \
                     ({min_us}..={max_us}); fix the value or widen the range deliberately"
                )));
            }
        }
        if rest_us.saturating_sub(wiggle_us) < min_us || rest_us.saturating_add(wiggle_us) > max_us
        {
            return Err(invalid(format!(
                "servo.wiggle_us = {wiggle_us} moves the arm outside the safe range around \
                 servo.rest_us = {rest_us} ({min_us}..={max_us})"
            )));
        }
        if !(5..=100).contains(&period_ms) {
            return Err(invalid(format!(
                "servo.period_ms = {period_ms} must be between 5 and 100 (20 = 50 Hz)"
            )));
        }
        if u64::from(max_us) >= period_ms * 1000 {
            return Err(invalid(format!(
                "servo.max_us = {max_us} does not fit in servo.period_ms = {period_ms}"
            )));
        }
        if !(10..=5000).contains(&stroke_ms) {
            return Err(invalid(format!(
                "servo.stroke_ms = {stroke_ms} must be between 10 and 5000"
            )));
        }
        if !(1..=10).contains(&max_strokes) {
            return Err(invalid(format!(
                "servo.max_strokes = {max_strokes} must be between 1 and 10"
            )));
        }
        let longest_move_ms = u64::from(max_strokes) * 2 * stroke_ms;
        if longest_move_ms > MAX_MOVE_MS {
            return Err(invalid(format!(
                "servo.max_strokes = {max_strokes} strokes of 2 × servo.stroke_ms = {stroke_ms} \
                 take {longest_move_ms} ms; keep them under {MAX_MOVE_MS} ms"
            )));
        }
        if pwm_channel > 3 {
            return Err(invalid(format!(
                "servo.pwm_channel = {pwm_channel} must be 0, 1, 2 or 3"
            )));
        }
        if gpio_pin > 53 {
            return Err(invalid(format!(
                "servo.gpio_pin = {gpio_pin} is not a BCM GPIO number"
            )));
        }
        if record_file.is_some() && driver != ServoDriver::Simulated {
            return Err(invalid(
                "servo.record_file applies only to servo.driver = \"simulated\"",
            ));
        }
        Ok(ServoConfig {
            driver,
            pwm_channel,
            gpio_pin,
            period: Duration::from_millis(period_ms),
            rest_us,
            strike_us,
            tap_us,
            wiggle_us,
            range,
            stroke: Duration::from_millis(stroke_ms),
            max_strokes,
            record_file: record_file.clone(),
        })
    }
}

/// Validated Home Assistant settings (present only when enabled).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HomeAssistantConfig {
    /// The discovery prefix.
    pub discovery_prefix: Prefix,
}

/// The validated configuration the agent runs with.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// This desk.
    pub desk: DeskId,
    /// The namespaces it watches.
    pub watch: Watch,
    /// Filters for namespace bonks (the prefix may hold `+`).
    pub filters: BonkFilters,
    /// This desk's own topics (concrete prefix).
    pub topics: Topics,
    /// Maximum bonk age; `None` = never expire.
    pub max_age: Option<Duration>,
    /// Health report interval.
    pub health_interval: Duration,
    /// Deduplication window.
    pub dedupe_window: Duration,
    /// How far apart two reports of one kill may be.
    pub kill_window: Duration,
    /// Performed bonks allowed per window.
    pub rate_max_bonks: u32,
    /// The rate limit window.
    pub rate_window: Duration,
    /// SoC temperature file.
    pub soc_temp_file: PathBuf,
    /// The servo.
    pub servo: ServoConfig,
    /// Home Assistant discovery, when enabled.
    pub homeassistant: Option<HomeAssistantConfig>,
    /// Home Assistant discovery prefix even when disabled (`--forget` clears it regardless).
    pub discovery_prefix: Prefix,
    /// The broker connection.
    pub mqtt: MqttSettings,
}

impl AgentSettings {
    /// Validates these settings into what the agent runs on, naming the key of the first problem
    /// found.
    pub fn validate(self) -> Result<AgentConfig, ConfigError> {
        let settings = self;
        let desk = match settings.desk.as_deref().map(str::trim) {
            None | Some("") => {
                return Err(invalid(
                    "no desk name: pass --desk NAME, set `desk` in the config file or BONKER_DESK",
                ));
            }
            Some(desk) => DeskId::new(desk).map_err(|e| invalid(format!("desk: {e}")))?,
        };
        let mut watch = Watch::Only(Vec::new());
        for raw in &settings.namespaces {
            let raw = raw.trim();
            if raw == "+" {
                watch = Watch::Every;
                continue;
            }
            let namespace = Namespace::new(raw).map_err(|e| invalid(format!("namespaces: {e}")))?;
            if let Watch::Only(namespaces) = &mut watch
                && !namespaces.contains(&namespace)
            {
                namespaces.push(namespace);
            }
        }
        if let Watch::Only(namespaces) = &watch
            && namespaces.len() > MAX_NAMESPACES
        {
            return Err(invalid(format!(
                "namespaces: at most {MAX_NAMESPACES} (the health report must stay small enough \
                 for every reader); watch \"+\" for every namespace, got {}",
                namespaces.len()
            )));
        }
        let prefix_filter = PrefixFilter::new(settings.prefix.trim())
            .map_err(|e| invalid(format!("prefix: {e}")))?;
        let desk_prefix = match &settings.desk_prefix {
            Some(raw) => {
                Prefix::new(raw.trim()).map_err(|e| invalid(format!("desk_prefix: {e}")))?
            }
            None => prefix_filter.concrete_root().ok_or_else(|| {
                invalid(format!(
                    "prefix {:?} starts with '+': set desk_prefix to the concrete prefix for \
                     this desk's own topics",
                    settings.prefix
                ))
            })?,
        };
        if settings.health_interval_s == 0 {
            return Err(invalid("health_interval_s must be at least 1"));
        }
        if settings.rate_limit.max_bonks == 0 || settings.rate_limit.per_s == 0 {
            return Err(invalid(
                "rate_limit.max_bonks and rate_limit.per_s must both be at least 1",
            ));
        }
        let servo = ServoConfig::from_settings(&settings.servo)?;
        let discovery_prefix = Prefix::new(settings.homeassistant.discovery_prefix.trim())
            .map_err(|e| invalid(format!("homeassistant.discovery_prefix: {e}")))?;
        let homeassistant = settings.homeassistant.enabled.then(|| HomeAssistantConfig {
            discovery_prefix: discovery_prefix.clone(),
        });
        settings
            .mqtt
            .validate()
            .map_err(|e| invalid(format!("mqtt: {e}")))?;
        Ok(AgentConfig {
            desk,
            watch,
            filters: BonkFilters::new(prefix_filter),
            topics: Topics::new(desk_prefix),
            max_age: (settings.max_age_s > 0).then(|| Duration::from_secs(settings.max_age_s)),
            health_interval: Duration::from_secs(settings.health_interval_s),
            dedupe_window: Duration::from_secs(settings.dedupe_window_s),
            kill_window: Duration::from_secs(settings.kill_window_s),
            rate_max_bonks: settings.rate_limit.max_bonks,
            rate_window: Duration::from_secs(settings.rate_limit.per_s),
            soc_temp_file: settings.soc_temp_file,
            servo,
            homeassistant,
            discovery_prefix,
            mqtt: settings.mqtt,
        })
    }
}

impl AgentConfig {
    /// The MQTT client id: `mqtt.client_id` when set, else `bonker-agent-<desk>`. It must stay the
    /// same across restarts so the broker resumes the desk's persistent session.
    pub fn client_id(&self) -> String {
        self.mqtt
            .client_id
            .clone()
            .unwrap_or_else(|| default_client_id(&self.desk))
    }

    /// The subscription filters: each watched namespace (or all) under the prefix filter, then
    /// this desk's own bonk topic, then Home Assistant's status topic when discovery is on.
    pub fn subscriptions(&self) -> Vec<String> {
        let mut filters = match &self.watch {
            Watch::Every => vec![self.filters.every_namespace()],
            Watch::Only(namespaces) => namespaces
                .iter()
                .map(|namespace| self.filters.namespace(namespace))
                .collect(),
        };
        filters.push(self.topics.desk_bonk(&self.desk));
        if let Some(homeassistant) = &self.homeassistant {
            filters.push(bonker_protocol::homeassistant::birth_topic(
                &homeassistant.discovery_prefix,
            ));
        }
        filters
    }
}

/// `bonker-agent-<desk>`: the default MQTT client id of a desk's agent.
pub fn default_client_id(desk: &DeskId) -> String {
    format!("bonker-agent-{desk}")
}

/// Loads settings: defaults, then `file`, then `BONKER_…` variables, then `overrides` (the flags
/// given, [`crate::cli::Args`]).
pub fn load_settings(
    file: Option<&Path>,
    overrides: &impl Serialize,
) -> Result<AgentSettings, ConfigError> {
    bonker_client::config::load(file, LIST_KEYS, overrides)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn settings(desk: &str) -> AgentSettings {
        AgentSettings {
            desk: Some(desk.to_owned()),
            ..AgentSettings::default()
        }
    }

    fn flags(given: &[&str]) -> crate::cli::Args {
        use clap::Parser as _;
        crate::cli::Args::parse_from(std::iter::once("bonker-agent").chain(given.iter().copied()))
    }

    fn no_flags() -> crate::cli::Args {
        flags(&[])
    }

    fn load_with_env(
        file: Option<&Path>,
        overrides: &crate::cli::Args,
        env: &[(&str, &str)],
    ) -> Result<AgentSettings, ConfigError> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        bonker_client::config::load_from_env(file, LIST_KEYS, overrides, Some(env))
    }

    #[test]
    fn the_example_config_parses_and_validates() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("agent.example.toml");
        let settings = load_with_env(Some(&path), &no_flags(), &[]).expect("loads");
        let config = settings.validate().expect("valid");
        assert_eq!(config.desk.as_str(), "alice");
        assert_eq!(config.watch.names(), ["payments", "checkout"]);
        assert_eq!(config.servo.driver, ServoDriver::Pwm);
        assert_eq!(config.client_id(), "bonker-agent-alice");
    }

    #[test]
    fn the_pi_example_config_parses_and_validates() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/pi/agent.toml");
        let settings = load_with_env(Some(&path), &no_flags(), &[]).expect("loads");
        settings.validate().expect("valid");
    }

    #[test]
    fn flags_work_without_a_file_and_override_the_environment() {
        let overrides = flags(&[
            "--desk",
            "alice",
            "--namespace",
            "payments",
            "--namespace",
            "checkout",
        ]);
        let settings = load_with_env(
            None,
            &overrides,
            &[("BONKER_NAMESPACES", "a,b,c"), ("BONKER_MAX_AGE_S", "60")],
        )
        .expect("loads");
        let config = settings.validate().expect("valid");
        assert_eq!(config.watch.names(), ["payments", "checkout"]);
        assert_eq!(config.max_age, Some(Duration::from_secs(60)));
    }

    #[test]
    fn environment_lists_and_sections_are_read() {
        let settings = load_with_env(
            None,
            &no_flags(),
            &[
                ("BONKER_DESK", "bob"),
                ("BONKER_NAMESPACES", "payments,checkout"),
                ("BONKER_SERVO__STRIKE_US", "1800"),
                ("BONKER_RATE_LIMIT__MAX_BONKS", "3"),
            ],
        )
        .expect("loads");
        assert_eq!(settings.namespaces, ["payments", "checkout"]);
        assert_eq!(settings.servo.strike_us, 1800);
        assert_eq!(settings.rate_limit.max_bonks, 3);
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, "desk = \"a\"\n[servo]\nstrike = 1900\n").expect("write");
        let error = load_with_env(Some(&path), &no_flags(), &[])
            .expect_err("typo")
            .to_string();
        assert!(error.contains("strike"), "{error}");
    }

    #[test]
    fn a_desk_is_required_and_validated() {
        let error = AgentSettings::default()
            .validate()
            .expect_err("no desk")
            .to_string();
        assert!(error.contains("--desk"), "{error}");
        let error = settings("al ice")
            .validate()
            .expect_err("bad desk")
            .to_string();
        assert!(error.contains("desk"), "{error}");
    }

    #[test]
    fn namespaces_are_validated_and_plus_means_every() {
        let mut s = settings("a");
        s.namespaces = vec!["Payments".into()];
        assert!(s.clone().validate().is_err());
        s.namespaces = vec!["payments".into(), "+".into()];
        let config = s.validate().expect("valid");
        assert_eq!(config.watch, Watch::Every);
        assert_eq!(config.subscriptions()[0], "bonker/bonk/+");
    }

    #[test]
    fn a_desk_watches_at_most_a_hundred_namespaces_by_name_and_its_health_fits() {
        let mut s = settings("a");
        s.namespaces = (0..MAX_NAMESPACES)
            .map(|n| format!("{}-{n:03}", "n".repeat(59)))
            .collect();
        let config = s.clone().validate().expect("a hundred is fine");
        let health = bonker_protocol::Health {
            version: bonker_protocol::SCHEMA_VERSION,
            desk: config.desk.clone(),
            agent_version: "0.1.0".into(),
            uptime_s: u64::MAX,
            started_at: Some(chrono::Utc::now()),
            bonks_total: u64::MAX,
            last_bonk_at: Some(chrono::Utc::now()),
            last_bonk_namespace: Some("n".repeat(63)),
            last_bonk_pod: Some("p".repeat(253)),
            servo: bonker_protocol::ServoHealth {
                driver: "simulated".into(),
                state: "rest".into(),
                error: Some("e".repeat(256)),
            },
            namespaces: config.watch.names(),
            soc_temp_c: Some(45.5),
            bonk_delay_ms: Some(i64::MIN),
            sent_at: chrono::Utc::now(),
        };
        assert!(health.to_json().len() <= bonker_protocol::desk::MAX_HEALTH_BYTES);
        s.namespaces.push("one-more".into());
        let error = s.validate().expect_err("too many");
        assert!(error.to_string().contains("at most 100"), "{error}");
    }

    #[test]
    fn wildcard_prefixes_keep_desk_topics_concrete() {
        let mut s = settings("alice");
        s.prefix = "bonker/+".into();
        s.namespaces = vec!["payments".into()];
        let config = s.clone().validate().expect("valid");
        assert_eq!(
            config.subscriptions(),
            [
                "bonker/+/bonk/payments",
                "bonker/desk/alice/bonk",
                "homeassistant/status"
            ]
        );
        s.prefix = "+/bonker".into();
        let error = s
            .clone()
            .validate()
            .expect_err("needs desk_prefix")
            .to_string();
        assert!(error.contains("desk_prefix"), "{error}");
        s.desk_prefix = Some("desks".into());
        let config = s.validate().expect("valid");
        assert_eq!(
            config.topics.desk_bonk(&config.desk),
            "desks/desk/alice/bonk"
        );
    }

    #[test]
    fn pulses_outside_the_safe_range_are_rejected_at_load() {
        type Mutation = fn(&mut ServoSettings);
        let cases: &[(&str, Mutation)] = &[
            ("servo.strike_us", |s| s.strike_us = 19000),
            ("servo.rest_us", |s| s.rest_us = 900),
            ("servo.tap_us", |s| s.tap_us = 2100),
            ("servo.min_us", |s| s.min_us = 2000),
            ("servo.min_us", |s| s.max_us = 3000),
            ("servo.wiggle_us", |s| s.wiggle_us = 600),
            ("servo.stroke_ms", |s| s.stroke_ms = 0),
            ("servo.max_strokes", |s| {
                s.max_strokes = 10;
                s.stroke_ms = 1000;
            }),
            ("servo.max_strokes", |s| s.max_strokes = 0),
            ("servo.pwm_channel", |s| s.pwm_channel = 4),
            ("servo.period_ms", |s| s.period_ms = 1),
            ("servo.record_file", |s| {
                s.driver = ServoDriver::Pwm;
                s.record_file = Some("x".into());
            }),
        ];
        for (key, mutate) in cases {
            let mut s = settings("a");
            mutate(&mut s.servo);
            let error = s.validate().expect_err(key).to_string();
            assert!(error.contains(key), "{key}: {error}");
        }
    }

    #[test]
    fn bad_mqtt_and_discovery_settings_are_rejected() {
        let mut s = settings("a");
        s.mqtt.url = "http://x".into();
        assert!(s.validate().expect_err("url").to_string().contains("mqtt"));
        let mut s = settings("a");
        s.homeassistant.discovery_prefix = "home/+".into();
        assert!(
            s.validate()
                .expect_err("prefix")
                .to_string()
                .contains("homeassistant.discovery_prefix")
        );
    }

    #[test]
    fn client_id_defaults_to_the_desk() {
        let config = settings("alice").validate().expect("valid");
        assert_eq!(config.client_id(), "bonker-agent-alice");
        let mut s = settings("alice");
        s.mqtt.client_id = Some("custom".into());
        assert_eq!(s.validate().expect("valid").client_id(), "custom");
    }
}
