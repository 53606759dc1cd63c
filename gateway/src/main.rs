//! `bonker-gateway`: configuration, the optional embedded broker, the listener, then
//! [`bonker_gateway::run`] until SIGTERM or ctrl-c. Exit code 2 for a bad configuration (nothing
//! was bound), 1 for a failure at run time.

use std::process::ExitCode;

use bonker_gateway::{Args, GatewaySettings};
use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    bonker_client::init_tracing();
    let mut settings = match args.load().and_then(GatewaySettings::validate) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("bonker-gateway: {error}");
            return ExitCode::from(2);
        }
    };
    if args.health_check {
        return bonker_client::server::run_health_check(
            "bonker-gateway",
            settings.listen,
            "/readyz",
        )
        .await;
    }
    // Held for the life of the process: the broker serves until it exits.
    let _embedded_broker = match settings.embedded_broker {
        Some(listen) => match bonker_gateway::start_embedded_broker(listen).await {
            Ok(broker) => {
                settings.mqtt.url = broker.url();
                tracing::info!(url = %settings.mqtt.url, "embedded MQTT broker started");
                Some(broker)
            }
            Err(error) => {
                tracing::error!("cannot start the embedded MQTT broker on {listen}: {error:#}");
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    let listener = match tokio::net::TcpListener::bind(settings.listen).await {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!("cannot listen on {}: {error}", settings.listen);
            return ExitCode::FAILURE;
        }
    };
    match bonker_gateway::run(listener, settings, bonker_client::shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}
