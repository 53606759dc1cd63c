//! What every bonker program shares, so that the broker, gateway, agent, watcher and CLI take the
//! same flags, read the same config layers, connect to MQTT the same way and stop the same way.
//!
//! - [`mqtt`]: `--mqtt…` flags, the `[mqtt]` config section, rumqttc options (TLS, credentials,
//!   TCP_NODELAY, packet limits) and reconnect backoff.
//! - [`link`]: the one loop that polls rumqttc — backoff, re-subscribe and clean state on every
//!   `ConnAck`, typed events.
//! - [`puback`]: which publish the broker acknowledged (rumqttc reports only packet ids).
//! - [`config`]: defaults → TOML file → `BONKER_…` environment → flags.
//! - `server` (feature `server`): the HTTP server loop with timeouts and a connection cap.
//! - [`shutdown_signal`]: SIGTERM (what Kubernetes and systemd send) or ctrl-c.
//! - [`init_tracing`]: structured logs, filtered by `BONKER_LOG` or `RUST_LOG`.

pub mod config;
pub mod link;
pub mod mqtt;
pub mod puback;
#[cfg(feature = "server")]
pub mod server;
pub mod text;

pub use mqtt::{Backoff, MqttArgs, MqttSettings};

/// Where a program listening on `listen` is reached from the same machine: an unspecified
/// address (`0.0.0.0`, `::`) is reached on loopback. What every `--health-check` connects to.
pub fn local_address(listen: std::net::SocketAddr) -> std::net::SocketAddr {
    let mut address = listen;
    if address.ip().is_unspecified() {
        address.set_ip(match address {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    address
}

/// Sleeps until `deadline`; without one, never wakes: a `select!` branch for a timer that may not
/// be set.
pub async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

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
///
/// Where the lines go decides their shape:
/// - a terminal: colours, unless `NO_COLOR` is set (<https://no-color.org>);
/// - anything else (a file, a pipe, `kubectl logs`, Loki): no escape codes;
/// - journald (stderr is the stream systemd named in `JOURNAL_STREAM`): no timestamp of our own —
///   journald stamps every line — and each line starts with its syslog priority (`<3>` error,
///   `<4>` warning, `<6>` info, `<7>` debug), which journald reads (`SyslogLevelPrefix=`, on by
///   default), so `journalctl -p warning` shows the warnings.
pub fn init_tracing() {
    init_tracing_with_default("info");
}

/// [`init_tracing`] with another default filter (the CLI keeps the terminal quiet with `warn`).
pub fn init_tracing_with_default(default_filter: &str) {
    use std::io::IsTerminal as _;
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("BONKER_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new(default_filter));
    let colour = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour);
    // A second initialisation (tests, embedding) keeps the first subscriber.
    let _ = if std::env::var("BONKER_LOG_FORMAT").as_deref() == Ok("json") {
        // JSON escapes every control character already.
        builder.json().try_init()
    } else if stderr_is_journal() {
        builder
            .fmt_fields(escaped_fields())
            .event_format(JournalLine(
                tracing_subscriber::fmt::format().without_time(),
            ))
            .try_init()
    } else {
        builder.fmt_fields(escaped_fields()).try_init()
    };
}

/// Whether stderr is connected to journald: systemd sets `JOURNAL_STREAM` to the device and inode
/// of the stream it connected, and a program whose stderr is still that stream logs to the journal
/// (sd-daemon(3), systemd.exec(5)).
fn stderr_is_journal() -> bool {
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let stream = stream.to_string_lossy();
    let Some((device, inode)) = stream.split_once(':') else {
        return false;
    };
    journal_stream_matches(device, inode)
}

#[cfg(target_os = "linux")]
fn journal_stream_matches(device: &str, inode: &str) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(stderr) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    device.parse() == Ok(stderr.dev()) && inode.parse() == Ok(stderr.ino())
}

#[cfg(not(target_os = "linux"))]
fn journal_stream_matches(_device: &str, _inode: &str) -> bool {
    false
}

/// A log line for journald: the syslog priority of its level first, then the line.
struct JournalLine<F>(F);

impl<S, N, F> tracing_subscriber::fmt::FormatEvent<S, N> for JournalLine<F>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
    F: tracing_subscriber::fmt::FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        write!(writer, "<{}>", syslog_priority(*event.metadata().level()))?;
        self.0.format_event(ctx, writer, event)
    }
}

/// The syslog priority journald files a line of `level` under.
fn syslog_priority(level: tracing::Level) -> u8 {
    match level {
        tracing::Level::ERROR => 3,
        tracing::Level::WARN => 4,
        tracing::Level::INFO => 6,
        _ => 7,
    }
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
    fn journald_priorities_follow_syslog() {
        use super::syslog_priority;
        use tracing::Level;
        let priorities = [
            Level::ERROR,
            Level::WARN,
            Level::INFO,
            Level::DEBUG,
            Level::TRACE,
        ]
        .map(syslog_priority);
        assert_eq!(priorities, [3, 4, 6, 7, 7]);
    }

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert_eq!(escape_unsafe("plain ü ✓"), "plain ü ✓");
        assert_eq!(
            escape_unsafe("a\nINFO forged\r\u{1b}[2J\u{9b}\u{7f}"),
            "a\\nINFO forged\\r\\u{1b}[2J\\u{9b}\\u{7f}"
        );
    }
}
