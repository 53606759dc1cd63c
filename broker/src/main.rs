//! `bonker-broker`: runs the embedded MQTT broker until SIGTERM or ctrl-c.

use std::path::PathBuf;
use std::process::ExitCode;

use bonker_broker::{BrokerSettings, EmbeddedBroker};
use clap::Parser;
use serde::Serialize;

/// bonker's MQTT broker (rumqttd): MQTT 3.1.1 on 0.0.0.0:1883 with no configuration at all.
///
/// Every setting can also be given in the TOML file or as a BONKER_… environment variable
/// (sections with a double underscore: BONKER_TLS__CERT_FILE). Flags win over the environment,
/// which wins over the file.
#[derive(Debug, Parser, Serialize)]
#[command(name = "bonker-broker", version, about, long_about)]
struct Args {
    /// MQTT 3.1.1 listener address (port 0 picks a free port) [env: BONKER_LISTEN] [default: 0.0.0.0:1883]
    #[arg(long, value_name = "ADDR:PORT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    listen: Option<String>,
    /// Optional MQTT 5 listener address [env: BONKER_LISTEN_V5]
    #[arg(long, value_name = "ADDR:PORT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    listen_v5: Option<String>,
    /// TOML configuration file (see broker.example.toml)
    #[arg(long, env = "BONKER_CONFIG", value_name = "FILE")]
    #[serde(skip)]
    config: Option<PathBuf>,
}

fn main() -> ExitCode {
    bonker_client::init_tracing();
    let args = Args::parse();
    let settings: BrokerSettings =
        match bonker_client::config::load(args.config.as_deref(), &[], &args) {
            Ok(settings) => settings,
            Err(error) => {
                eprintln!("bonker-broker: {error}");
                return ExitCode::from(2);
            }
        };
    if let Err(error) = settings.validate() {
        eprintln!("bonker-broker: {error}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("bonker-broker: {error}");
            return ExitCode::FAILURE;
        }
    };
    // Poll the shutdown future once before saying "listening": that installs the SIGTERM and
    // ctrl-c handlers, so a supervisor that stops the broker as soon as it is up gets a clean exit.
    let mut shutdown = std::pin::pin!(bonker_client::shutdown_signal());
    runtime.block_on(async {
        tokio::select! {
            biased;
            () = &mut shutdown => {}
            () = std::future::ready(()) => {}
        }
    });
    let broker = match EmbeddedBroker::start(settings) {
        Ok(broker) => broker,
        Err(error) => {
            eprintln!("bonker-broker: {error}");
            return ExitCode::FAILURE;
        }
    };
    for listener in broker.listeners() {
        println!(
            "bonker-broker listening on {} ({:?})",
            listener.addr, listener.kind
        );
    }
    runtime.block_on(shutdown);
    // rumqttd has no shutdown: leaving the process closes every connection; clients' last wills
    // are lost with the broker's in-memory state, as documented in docs/brokers.md.
    ExitCode::SUCCESS
}
