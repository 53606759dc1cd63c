//! The `bonker-agent` command line: flags, config loading, exit codes.
//!
//! Exit codes: 0 after a clean shutdown, 2 for a configuration that cannot run (reported before
//! the servo is opened or the broker contacted), 1 for anything that fails at run time (no servo
//! hardware, broker unreachable during `--forget`).

use std::path::PathBuf;
use std::process::ExitCode;

use bonker_client::MqttArgs;
use clap::Parser;
use serde::Serialize;

use crate::config::{AgentConfig, ConfigError, ServoDriver, load_settings};
use crate::servo;

/// bonker's desk agent: bonks the toy Tux on this desk when a watched Kubernetes namespace has an
/// OOM kill.
///
/// Every flag can also be set in the config file (--config) or as a BONKER_… environment
/// variable; flags win over the environment, which wins over the file.
#[derive(Debug, Clone, Parser, Serialize)]
#[command(name = "bonker-agent", version, about, long_about)]
pub struct Args {
    /// This desk's name: letters, digits, '_' and '-' [env: BONKER_DESK]
    #[arg(long, value_name = "NAME")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub desk: Option<String>,

    /// A Kubernetes namespace to watch; repeat for several, '+' for every namespace
    /// [env: BONKER_NAMESPACES=payments,checkout]
    #[arg(long = "namespace", value_name = "NAMESPACE")]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,

    /// Topic prefix; may hold '+' levels, e.g. bonker/+ for every cluster [default: bonker]
    /// [env: BONKER_PREFIX]
    #[arg(long, value_name = "PREFIX")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,

    /// Servo driver [default: simulated] [env: BONKER_SERVO__DRIVER]
    #[arg(long, value_enum, value_name = "DRIVER")]
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "servo_driver_layer"
    )]
    pub servo: Option<ServoDriver>,

    /// TOML config file (see agent.example.toml)
    #[arg(long, env = "BONKER_CONFIG", value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// Clear this desk's retained Home Assistant discovery, last bonk, status and health topics
    /// and its persistent session on the broker, then exit. Stop the desk's agent first.
    #[arg(long)]
    #[serde(skip)]
    pub forget: bool,

    #[command(flatten)]
    #[serde(skip)]
    pub mqtt: MqttArgs,
}

/// `--servo DRIVER` is the key `servo.driver`.
fn servo_driver_layer<S: serde::Serializer>(
    driver: &Option<ServoDriver>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut servo = serializer.serialize_map(Some(1))?;
    servo.serialize_entry("driver", driver)?;
    servo.end()
}

impl Args {
    /// Loads and validates the configuration these flags describe: the flags given are the top
    /// layer.
    pub fn config(&self) -> Result<AgentConfig, ConfigError> {
        let mut settings = load_settings(self.config.as_deref(), self)?;
        settings.mqtt.apply_args(&self.mqtt);
        settings.validate()
    }
}

/// The whole program: parse flags, load config, run.
pub fn main() -> ExitCode {
    let args = Args::parse();
    bonker_client::init_tracing();
    let config = match args.config() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("bonker-agent: {error}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("bonker-agent: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    if args.forget {
        return match runtime.block_on(crate::forget::forget(&config)) {
            Ok(topics) => {
                for topic in topics {
                    println!("cleared {topic}");
                }
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("bonker-agent: --forget failed: {error:#}");
                ExitCode::FAILURE
            }
        };
    }
    if config.servo.driver == ServoDriver::Simulated && servo::looks_like_a_raspberry_pi() {
        tracing::warn!(
            "running the simulated servo on a Raspberry Pi: set servo.driver = \"pwm\" \
             (or --servo pwm) to move the real one"
        );
    }
    let servo = match servo::open(&config.servo) {
        Ok(servo) => servo,
        Err(error) => {
            eprintln!("bonker-agent: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(crate::run(config, servo, bonker_client::shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bonker-agent: {error:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_command_line_parses() {
        let args = Args::try_parse_from([
            "bonker-agent",
            "--desk",
            "alice",
            "--namespace",
            "payments",
            "--namespace",
            "checkout",
            "--mqtt",
            "mqtt://broker:1883",
        ])
        .expect("parses");
        assert_eq!(args.namespaces, ["payments", "checkout"]);
        // The flags given are the top config layer; the others are left out of it.
        assert_eq!(
            serde_json::to_value(&args).expect("serialises"),
            serde_json::json!({"desk": "alice", "namespaces": ["payments", "checkout"]})
        );
        let args = Args::try_parse_from(["bonker-agent", "--servo", "simulated"]).expect("parses");
        assert_eq!(
            serde_json::to_value(&args).expect("serialises"),
            serde_json::json!({"servo": {"driver": "simulated"}})
        );
    }

    #[test]
    fn help_explains_every_flag() {
        use clap::CommandFactory;
        let help = Args::command().render_long_help().to_string();
        for flag in [
            "--desk",
            "--namespace",
            "--prefix",
            "--servo",
            "--config",
            "--forget",
            "--mqtt",
            "--mqtt-username",
            "--mqtt-password-file",
            "--mqtt-ca-file",
        ] {
            assert!(help.contains(flag), "{flag} missing from --help");
        }
    }
}
