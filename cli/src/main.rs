//! `bonker`: the operator's command line — run a demo fleet, bonk by hand, see the fleet, follow
//! the bonks live.
//!
//! The CLI speaks only MQTT, like every desk: it works wherever a person can reach the broker.

mod bonk;
mod demo;
mod fleet;
mod session;
mod tail;
mod terminal;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use bonker_client::{MqttArgs, MqttSettings};
use bonker_protocol::{DeskId, Namespace, Prefix, Severity, Topics};
use clap::{Args, Parser, Subcommand};
use serde::{Deserialize, Serialize};

/// bonker: turn every Kubernetes OOMKill into a bonk on a toy Tux.
#[derive(Debug, Parser)]
#[command(name = "bonker", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    global: GlobalArgs,
}

/// Flags every subcommand takes.
#[derive(Debug, Args, Serialize)]
struct GlobalArgs {
    /// Topic prefix [env: BONKER_PREFIX] [default: bonker]
    #[arg(long, global = true, value_name = "PREFIX")]
    #[serde(skip_serializing_if = "Option::is_none")]
    prefix: Option<String>,
    /// TOML file with `prefix` and an `[mqtt]` section
    #[arg(long, global = true, env = "BONKER_CONFIG", value_name = "FILE")]
    #[serde(skip)]
    config: Option<PathBuf>,
    #[command(flatten)]
    #[serde(skip)]
    mqtt: MqttArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a whole fleet in this process: broker, gateway and three desks with simulated
    /// servos, showing every bonk and ack live
    Demo(DemoArgs),
    /// Publish a bonk to a namespace or a desk and wait for the desks' acks
    Bonk(BonkArgs),
    /// Show every desk: online or offline, what it watches, its bonks and temperature
    Fleet {
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Follow bonks, acks and desk status changes live (ctrl-c to stop)
    Tail {
        /// One JSON object per line
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
struct DemoArgs {
    /// MQTT port of the demo's broker
    #[arg(long, default_value_t = 1883, value_name = "PORT")]
    mqtt_port: u16,
    /// HTTP port of the demo's gateway
    #[arg(long, default_value_t = 9095, value_name = "PORT")]
    http_port: u16,
    /// Address the demo listens on (0.0.0.0 to let other machines bonk it)
    #[arg(long, default_value = "127.0.0.1", value_name = "IP")]
    address: std::net::IpAddr,
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("target").args(["namespace", "desk"]))]
struct BonkArgs {
    /// Bonk every desk watching this Kubernetes namespace [default: default]
    #[arg(long, short = 'n', value_name = "NAMESPACE")]
    namespace: Option<String>,
    /// Bonk one desk, whatever it watches
    #[arg(long, short = 'd', value_name = "DESK")]
    desk: Option<String>,
    /// critical (a full bonk), warning (a tap) or info (a wiggle)
    #[arg(long, short = 's', default_value = "critical")]
    severity: Severity,
    /// A sentence shown with the bonk
    #[arg(long, short = 'm')]
    message: Option<String>,
    /// Seconds to wait for acks
    #[arg(long, default_value_t = 10, value_name = "SECONDS")]
    wait: u64,
    /// Publish and exit without waiting for acks
    #[arg(long, conflicts_with = "wait")]
    no_wait: bool,
}

/// The CLI's settings file.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct CliSettings {
    prefix: Prefix,
    mqtt: MqttSettings,
}

/// Exit status of a usage or configuration error, as for every bonker program (and clap's own
/// usage errors): nothing was attempted, and retrying will not help.
const USAGE_ERROR: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // rumqttd logs routine disconnects as errors; the embedded broker of `demo` stays quiet.
    bonker_client::init_tracing_with_default("warn,rumqttd=off");
    // An error can quote the network (a server certificate's names, for one).
    let report =
        |error: anyhow::Error| eprintln!("bonker: {}", terminal::text(&format!("{error:#}")));
    let (settings, action) = match prepare(cli) {
        Ok(prepared) => prepared,
        Err(error) => {
            report(error);
            return ExitCode::from(USAGE_ERROR);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("bonker: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(settings, action)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            report(error);
            ExitCode::FAILURE
        }
    }
}

/// What to do, with every name and setting already checked.
enum Action {
    Demo(demo::Ports),
    Bonk(bonk::Request),
    Fleet { json: bool },
    Tail { json: bool },
}

/// Reads the settings and checks every name given: anything wrong here is the user's to fix.
fn prepare(cli: Cli) -> Result<(CliSettings, Action)> {
    let mut settings: CliSettings =
        bonker_client::config::load(cli.global.config.as_deref(), &[], &cli.global)?;
    settings.mqtt.apply_args(&cli.global.mqtt);
    settings.mqtt.validate()?;
    let action = match cli.command {
        Command::Demo(args) => Action::Demo(demo::Ports {
            address: args.address,
            mqtt: args.mqtt_port,
            http: args.http_port,
        }),
        Command::Bonk(args) => {
            let target = match (args.namespace, args.desk) {
                (_, Some(desk)) => bonk::Target::Desk(DeskId::new(desk)?),
                (namespace, None) => bonk::Target::Namespace(Namespace::new(
                    namespace.unwrap_or_else(|| bonker_protocol::DEFAULT_NAMESPACE.to_owned()),
                )?),
            };
            Action::Bonk(bonk::Request {
                target,
                severity: args.severity,
                message: args.message,
                wait: (!args.no_wait).then(|| Duration::from_secs(args.wait)),
            })
        }
        Command::Fleet { json } => Action::Fleet { json },
        Command::Tail { json } => Action::Tail { json },
    };
    Ok((settings, action))
}

async fn run(settings: CliSettings, action: Action) -> Result<()> {
    let topics = Topics::new(settings.prefix.clone());
    match action {
        Action::Demo(ports) => demo::run(ports).await,
        Action::Bonk(request) => bonk::run(connect(&settings).await?, &topics, request).await,
        Action::Fleet { json } => fleet::run(connect(&settings).await?, &topics, json).await,
        Action::Tail { json } => tail::run(connect(&settings).await?, &topics, json).await,
    }
}

async fn connect(settings: &CliSettings) -> Result<session::Session> {
    session::Session::connect(&settings.mqtt)
        .await
        .context("is the broker running? (--mqtt mqtt://host:port)")
}
