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
    /// Ask the broker running with this configuration whether it accepts connections on its MQTT
    /// listener and exit 0 if so, 1 if not: a container healthcheck for images without a shell
    #[arg(long)]
    #[serde(skip)]
    health_check: bool,
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
    if args.health_check {
        return health_check(settings.listen);
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

/// How long the health check waits for the broker's answer.
const HEALTH_CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The client id of every health check: one id, so checks never add to `max_client_ids`.
const HEALTH_CHECK_CLIENT_ID: &str = "bonker-broker-health-check";

/// Sends an MQTT CONNECT to the plain listener and waits for the broker to answer it: a CONNACK,
/// or — on a broker with passwords, which this check does not have — the connection closed after
/// the CONNECT was read. A TCP handshake alone would prove nothing (the kernel completes it even
/// when nothing accepts), and a stalled accept loop or front door is what has failed before.
fn health_check(listen: std::net::SocketAddr) -> ExitCode {
    use std::io::{Read as _, Write as _};
    let address = bonker_client::local_address(listen);
    let ask = || -> std::io::Result<()> {
        let mut stream = std::net::TcpStream::connect_timeout(&address, HEALTH_CHECK_TIMEOUT)?;
        stream.set_read_timeout(Some(HEALTH_CHECK_TIMEOUT))?;
        stream.set_write_timeout(Some(HEALTH_CHECK_TIMEOUT))?;
        // MQTT 3.1.1 CONNECT: protocol "MQTT" level 4, clean session, keep-alive 5 s, client id.
        let id = HEALTH_CHECK_CLIENT_ID.as_bytes();
        let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 5];
        body.extend_from_slice(&(id.len() as u16).to_be_bytes());
        body.extend_from_slice(id);
        let mut packet = vec![0x10, body.len() as u8];
        packet.extend_from_slice(&body);
        stream.write_all(&packet)?;
        let mut answer = [0u8; 4];
        match stream.read(&mut answer)? {
            // Closed after reading the CONNECT (a refused login), or a CONNACK.
            0 => Ok(()),
            _ if answer[0] == 0x20 => Ok(()),
            _ => Err(std::io::Error::other("the answer is not a CONNACK")),
        }
    };
    match ask() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bonker-broker: no MQTT answer on {address}: {error}");
            ExitCode::FAILURE
        }
    }
}
