//! `bonker-watcher`: see `bonker-watcher --help` and `docs/watcher.md`.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    bonker_client::init_tracing();
    let flags = bonker_watcher::Args::parse();
    let config = match bonker_watcher::WatcherSettings::load(&flags)
        .and_then(bonker_watcher::WatcherSettings::validate)
    {
        Ok(config) => config,
        Err(error) => {
            eprintln!("bonker-watcher: {error}");
            return ExitCode::from(2);
        }
    };
    if flags.health_check {
        return bonker_client::server::run_health_check(
            "bonker-watcher",
            config.listen,
            "/healthz",
        )
        .await;
    }
    let listener = match tokio::net::TcpListener::bind(config.listen).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!(
                "bonker-watcher: cannot listen on {}: {error}",
                config.listen
            );
            return ExitCode::from(2);
        }
    };
    tracing::info!(listen = %config.listen, node = %config.node_name, "bonker-watcher starting");
    match bonker_watcher::run(config, listener, bonker_client::shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bonker-watcher: {error:#}");
            ExitCode::FAILURE
        }
    }
}
