//! The TLS listener's server configuration: rustls with the `ring` provider, like every other
//! bonker program (no aws-lc-rs C build, so the broker cross-compiles for ARMv6 desks too).
//!
//! The broker terminates TLS itself, in the front door, rather than letting rumqttd do it:
//! rumqttd handshakes inside its accept loop with no deadline, so one client that opens a TCP
//! connection to the TLS port and sends nothing stops every later TLS client from connecting.
//! Loading the certificate and key here, at start-up, also turns a bad file into an error before
//! any port is bound (rumqttd only read them when the first client connected).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::BrokerError;
use crate::settings::TlsSettings;

/// The server configuration `settings` describe, with every file read and checked.
pub(crate) fn server_config(
    settings: &TlsSettings,
) -> Result<Arc<rustls::ServerConfig>, BrokerError> {
    let certs = read("tls.cert_file", &settings.cert_file)?;
    let certs = CertificateDer::pem_slice_iter(&certs)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| invalid("tls.cert_file", &settings.cert_file, error))?;
    if certs.is_empty() {
        return Err(invalid(
            "tls.cert_file",
            &settings.cert_file,
            "holds no PEM certificate",
        ));
    }
    let key = read("tls.key_file", &settings.key_file)?;
    let key = PrivateKeyDer::from_pem_slice(&key)
        .map_err(|error| invalid("tls.key_file", &settings.key_file, error))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| crate::settings::wrong(format!("tls: {error}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|error| {
            crate::settings::wrong(format!(
                "tls.cert_file {:?} and tls.key_file {:?}: {error}",
                settings.cert_file, settings.key_file
            ))
        })?;
    Ok(Arc::new(config))
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, BrokerError> {
    std::fs::read(path).map_err(|source| BrokerError::File {
        what,
        path: path.to_owned(),
        source,
    })
}

fn invalid(what: &str, path: &Path, error: impl std::fmt::Display) -> BrokerError {
    crate::settings::wrong(format!("{what} {path:?}: {error}"))
}
