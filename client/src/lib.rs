//! What every bonker program shares, so that the broker, gateway, agent, watcher and CLI take the
//! same flags, read the same config layers, connect to MQTT the same way and stop the same way.
//!
//! - [`mqtt`]: `--mqtt…` flags, the `[mqtt]` config section, rumqttc options (TLS, credentials,
//!   TCP_NODELAY, packet limits) and reconnect backoff.
//! - [`puback`]: which publish the broker acknowledged (rumqttc reports only packet ids).
//! - [`config`]: defaults → TOML file → `BONKER_…` environment → flags.
//! - `server` (feature `server`): the HTTP server loop with timeouts and a connection cap.
//! - [`shutdown_signal`]: SIGTERM (what Kubernetes and systemd send) or ctrl-c.
//! - [`init_tracing`]: structured logs, filtered by `BONKER_LOG` or `RUST_LOG`.

pub mod config;
pub mod mqtt;
pub mod puback;
#[cfg(feature = "server")]
pub mod server;
pub mod text;

pub use mqtt::{Backoff, MqttArgs, MqttSettings};

/// Completes when the process is asked to stop: SIGTERM (Kubernetes, systemd, `kill`) or SIGINT
/// (ctrl-c).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("ctrl-c received, shutting down"),
        () = terminate => tracing::info!("SIGTERM received, shutting down"),
    }
}

/// Installs the log subscriber: human-readable lines on stderr, filtered by `BONKER_LOG` (or
/// `RUST_LOG`), `info` by default. `BONKER_LOG_FORMAT=json` switches to one JSON object per line
/// for log collectors.
pub fn init_tracing() {
    init_tracing_with_default("info");
}

/// [`init_tracing`] with another default filter (the CLI keeps the terminal quiet with `warn`).
pub fn init_tracing_with_default(default_filter: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("BONKER_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second initialisation (tests, embedding) keeps the first subscriber.
    let _ = if std::env::var("BONKER_LOG_FORMAT").as_deref() == Ok("json") {
        // JSON escapes every control character already.
        builder.json().try_init()
    } else {
        builder.fmt_fields(escaped_fields()).try_init()
    };
}

/// Text log fields with every unsafe character escaped ([`text::escape_unsafe`]). Field values carry what clients sent
/// (alert labels, receiver names, topics, desk payloads): a raw `\n` in one would start a forged
/// log line, and an escape sequence would reach the terminal of whoever tails the log.
fn escaped_fields() -> impl for<'writer> tracing_subscriber::fmt::FormatFields<'writer> {
    use tracing_subscriber::field::MakeExt;
    tracing_subscriber::fmt::format::debug_fn(|writer, field, value| {
        let raw = format!("{value:?}");
        let text = text::escape_unsafe(&raw);
        if field.name() == "message" {
            write!(writer, "{text}")
        } else {
            write!(writer, "{field}={text}")
        }
    })
    .delimited(" ")
}

#[cfg(test)]
mod tests {
    use super::text::escape_unsafe;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert_eq!(escape_unsafe("plain ü ✓"), "plain ü ✓");
        assert_eq!(
            escape_unsafe("a\nINFO forged\r\u{1b}[2J\u{9b}\u{7f}"),
            "a\\nINFO forged\\r\\u{1b}[2J\\u{9b}\\u{7f}"
        );
    }
}
