//! A throw-away certificate authority for TLS tests, made with the `openssl` command line tool
//! (installed everywhere Debian's mosquitto is): a CA, and a server certificate for `localhost`
//! and `127.0.0.1` signed by it. Brokers serve the server certificate; clients trust the CA.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A CA and one server certificate, as PEM files in a temporary directory.
#[derive(Debug)]
pub struct TestCa {
    dir: tempfile::TempDir,
}

impl TestCa {
    /// Makes a fresh CA and a server certificate valid for `localhost` and `127.0.0.1`.
    pub fn new() -> TestCa {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path();
        openssl(
            path,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=bonker test CA",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        openssl(
            path,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=localhost",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
            ],
        );
        std::fs::write(
            path.join("server.ext"),
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n\
             extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n",
        )
        .expect("write server.ext");
        openssl(
            path,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "server.ext",
                "-out",
                "server.pem",
            ],
        );
        // rumqttd wants PKCS#8 keys; openssl 3 writes them by default, older versions do not.
        openssl(
            path,
            &[
                "pkcs8",
                "-topk8",
                "-nocrypt",
                "-in",
                "server.key",
                "-out",
                "server.pkcs8.key",
            ],
        );
        // mosquitto started as root drops to its own user before it reads the key: let it.
        use std::os::unix::fs::PermissionsExt as _;
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755));
        for file in ["ca.pem", "server.pem", "server.pkcs8.key"] {
            let _ =
                std::fs::set_permissions(path.join(file), std::fs::Permissions::from_mode(0o644));
        }
        TestCa { dir }
    }

    /// The CA certificate (PEM) clients trust.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The CA certificate's PEM bytes.
    pub fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(self.ca_file()).expect("read ca.pem")
    }

    /// The server certificate and its (PKCS#8) key, for `BrokerOptions::tls`.
    pub fn server_cert_and_key(&self) -> (PathBuf, PathBuf) {
        (
            self.dir.path().join("server.pem"),
            self.dir.path().join("server.pkcs8.key"),
        )
    }
}

impl Default for TestCa {
    fn default() -> Self {
        TestCa::new()
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl command line tool is installed");
    assert!(
        output.status.success(),
        "openssl {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}
