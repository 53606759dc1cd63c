//! Layered configuration, the same for every program: built-in defaults → TOML file → `BONKER_`
//! environment variables → command-line flags, each layer overriding the one before.
//!
//! Environment variables use `__` between levels (`BONKER_MQTT__URL` → `mqtt.url`) because keys
//! themselves contain `_` (`client_id`): with a single `_` separator `BONKER_MQTT_CLIENT_ID` would
//! become `mqtt.client.id` and be silently ignored. Settings types use `deny_unknown_fields`, so
//! a typo in a file or a variable is an error, not a silent default.

use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The prefix of every environment variable bonker reads.
pub const ENV_PREFIX: &str = "BONKER";

/// A configuration that cannot be used, with what to fix: every program's, so each says it the
/// same way and exits 2 for it.
///
/// Its message is the whole story (the config crate's own message already names the key and
/// quotes its cause), so it has no `source`: a chain of causes would print the cause twice.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The layers could not be read or merged (a missing file, a TOML syntax error, an unknown
    /// key, a wrong type).
    #[error("invalid configuration: {0}")]
    Load(config::ConfigError),
    /// A value is wrong or contradicts another; the message names the key.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl From<config::ConfigError> for ConfigError {
    fn from(error: config::ConfigError) -> Self {
        Self::Load(error)
    }
}

/// A [`ConfigError::Invalid`] saying what is wrong, key first.
pub fn invalid(message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(message.into())
}

/// Loads `T` from defaults (`T::default()` through `#[serde(default)]`), then `file` (TOML, must
/// exist when given), then `BONKER_*` variables, then `overrides` (the flags the user gave, as a
/// serialisable struct whose unset fields are skipped).
///
/// `list_keys` names the keys whose environment value is a comma-separated list
/// (`BONKER_AGENT__NAMESPACES=payments,checkout`).
pub fn load<T, O>(file: Option<&Path>, list_keys: &[&str], overrides: &O) -> Result<T, ConfigError>
where
    T: DeserializeOwned + Serialize + Default,
    O: Serialize,
{
    load_from_env(file, list_keys, overrides, None)
}

/// [`load`], with the environment given explicitly (tests) instead of read from the process.
pub fn load_from_env<T, O>(
    file: Option<&Path>,
    list_keys: &[&str],
    overrides: &O,
    env: Option<std::collections::HashMap<String, String>>,
) -> Result<T, ConfigError>
where
    T: DeserializeOwned + Serialize + Default,
    O: Serialize,
{
    let mut builder = config::Config::builder();
    if let Some(path) = file {
        builder = builder.add_source(
            config::File::from(path)
                .format(config::FileFormat::Toml)
                .required(true),
        );
    }
    let mut environment = config::Environment::with_prefix(ENV_PREFIX)
        .prefix_separator("_")
        .separator("__")
        .try_parsing(true)
        .ignore_empty(true);
    if !list_keys.is_empty() {
        environment = environment.list_separator(",");
        for key in list_keys {
            environment = environment.with_list_parse_key(key);
        }
    }
    let env = settings_variables::<T>(env.unwrap_or_else(|| std::env::vars().collect()));
    builder = builder.add_source(environment.source(Some(env)));
    builder = builder.add_source(config::Config::try_from(overrides)?);
    Ok(builder.build()?.try_deserialize()?)
}

/// Variables every program reads itself; they are not settings.
const NOT_SETTINGS: &[&str] = &["BONKER_CONFIG", "BONKER_LOG", "BONKER_LOG_FORMAT"];

/// The `BONKER_…` variables that name one of `T`'s settings.
///
/// A variable whose first level is not a top-level key of `T` is left out with a warning instead
/// of failing the start: the environment is shared with things bonker does not control —
/// Kubernetes, for one, injects `<SERVICE>_PORT=tcp://…` variables for every Service, so a Service
/// called `bonker-broker` yields `BONKER_BROKER_PORT`. Within a known section, unknown keys are
/// still errors (`deny_unknown_fields`), which catches typos where they are likeliest.
fn settings_variables<T: Serialize + Default>(
    env: std::collections::HashMap<String, String>,
) -> std::collections::HashMap<String, String> {
    let known: Vec<String> = match serde_json::to_value(T::default()) {
        Ok(serde_json::Value::Object(fields)) => fields.keys().cloned().collect(),
        _ => Vec::new(),
    };
    let prefix = format!("{ENV_PREFIX}_");
    env.into_iter()
        .filter(|(key, _)| {
            let Some(rest) = key.strip_prefix(&prefix) else {
                return false;
            };
            if NOT_SETTINGS.contains(&key.as_str()) {
                return false;
            }
            let first = rest.split("__").next().unwrap_or(rest).to_ascii_lowercase();
            let keep = known.contains(&first);
            if !keep {
                tracing::warn!(variable = %key, "ignoring an environment variable that is not a setting");
            }
            keep
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use serde::Deserialize;

    use super::*;
    use crate::mqtt::MqttSettings;

    #[derive(Debug, Default, Deserialize, Serialize)]
    #[serde(default, deny_unknown_fields)]
    struct Settings {
        name: String,
        namespaces: Vec<String>,
        mqtt: MqttSettings,
    }

    #[derive(Serialize, Default)]
    struct Flags {
        #[serde(skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    }

    fn env(pairs: &[(&str, &str)]) -> Option<HashMap<String, String>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn layers_override_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "name = \"file\"\nnamespaces = [\"a\"]\n[mqtt]\nurl = \"mqtt://file:1\"\nclient_id = \"f\"\n",
        )
        .expect("write");
        let settings: Settings = load_from_env(
            Some(&file),
            &["namespaces"],
            &Flags::default(),
            env(&[
                ("BONKER_MQTT__URL", "mqtt://env:2"),
                ("BONKER_NAMESPACES", "x,y"),
                ("BONKER_CONFIG", "ignored"),
            ]),
        )
        .expect("loads");
        assert_eq!(settings.name, "file");
        assert_eq!(settings.mqtt.url, "mqtt://env:2");
        assert_eq!(settings.mqtt.client_id.as_deref(), Some("f"));
        assert_eq!(settings.namespaces, ["x", "y"]);
        assert_eq!(
            settings.mqtt.keep_alive_s,
            crate::mqtt::DEFAULT_KEEP_ALIVE_S
        );

        let flags = Flags {
            name: Some("flag".into()),
        };
        let settings: Settings =
            load_from_env(Some(&file), &[], &flags, env(&[("BONKER_NAME", "env")])).expect("loads");
        assert_eq!(settings.name, "flag");
    }

    #[test]
    fn env_keys_with_underscores_use_double_underscore_levels() {
        let settings: Settings = load_from_env(
            None,
            &[],
            &Flags::default(),
            env(&[
                ("BONKER_MQTT__CLIENT_ID", "desk-1"),
                ("BONKER_MQTT__KEEP_ALIVE_S", "60"),
            ]),
        )
        .expect("loads");
        assert_eq!(settings.mqtt.client_id.as_deref(), Some("desk-1"));
        assert_eq!(settings.mqtt.keep_alive_s, 60);
    }

    #[test]
    fn foreign_variables_are_ignored_but_typos_in_sections_are_errors() {
        let settings: Settings = load_from_env(
            None,
            &[],
            &Flags::default(),
            env(&[
                ("BONKER_BROKER_PORT", "tcp://10.0.0.1:1883"),
                ("BONKER_BROKER_SERVICE_HOST", "10.0.0.1"),
                ("BONKER_LOG_FORMAT", "json"),
                ("BONKER_NAME", "kept"),
            ]),
        )
        .expect("foreign variables do not stop the start");
        assert_eq!(settings.name, "kept");
        let error = load_from_env::<Settings, _>(
            None,
            &[],
            &Flags::default(),
            env(&[("BONKER_MQTT__URLL", "mqtt://x")]),
        )
        .expect_err("a typo within a section")
        .to_string();
        assert!(error.contains("urll"), "{error}");
    }

    #[test]
    fn unknown_keys_and_missing_files_are_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "[mqtt]\nurll = \"x\"\n").expect("write");
        let error = load_from_env::<Settings, _>(Some(&file), &[], &Flags::default(), env(&[]))
            .expect_err("typo")
            .to_string();
        assert!(error.contains("urll"), "{error}");
        let error = load_from_env::<Settings, _>(
            Some(&dir.path().join("missing.toml")),
            &[],
            &Flags::default(),
            env(&[]),
        )
        .expect_err("missing")
        .to_string();
        assert!(error.contains("missing.toml"), "{error}");
    }
}
