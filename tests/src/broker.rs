//! Brokers for tests: the bonker broker (`bonker-broker`) or Debian's mosquitto, each a child
//! process on a free loopback port, so a test can `kill -9` it and restart it on the same port.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::process::{ChildProcess, binary, free_port, wait_for_port};

/// Which broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    /// `bonker-broker` (rumqttd).
    Bonker,
    /// Debian's `mosquitto`.
    Mosquitto,
}

impl BrokerKind {
    /// Both brokers: every feature the fleet relies on is tested against each.
    pub const BOTH: [BrokerKind; 2] = [BrokerKind::Bonker, BrokerKind::Mosquitto];
}

impl fmt::Display for BrokerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BrokerKind::Bonker => "bonker-broker",
            BrokerKind::Mosquitto => "mosquitto",
        })
    }
}

/// How to start a test broker.
#[derive(Debug, Clone, Default)]
pub struct BrokerOptions {
    /// Users and passwords; when set, anonymous clients are refused.
    pub users: Vec<(String, String)>,
    /// A mosquitto ACL file's text (mosquitto only: rumqttd has no ACLs).
    pub mosquitto_acl: Option<String>,
    /// Keep sessions and retained messages on disk across restarts (mosquitto only: the bonker
    /// broker keeps them in memory).
    pub persistence: bool,
    /// Serve MQTT over TLS with this certificate and key (PEM files), instead of plain TCP.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Extra `mosquitto.conf` lines (mosquitto only), e.g. settings a guide recommends.
    pub mosquitto_config: Option<String>,
}

/// A broker child process on a free loopback port. Killed when dropped.
#[derive(Debug)]
pub struct TestBroker {
    kind: BrokerKind,
    port: u16,
    options: BrokerOptions,
    dir: tempfile::TempDir,
    process: Option<ChildProcess>,
}

impl TestBroker {
    /// Starts `kind` with default options (anonymous, plain TCP, no persistence).
    pub fn start(kind: BrokerKind) -> TestBroker {
        TestBroker::start_with(kind, BrokerOptions::default())
    }

    /// Starts `kind` with `options`.
    pub fn start_with(kind: BrokerKind, options: BrokerOptions) -> TestBroker {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut broker = TestBroker {
            kind,
            port: free_port(),
            options,
            dir,
            process: None,
        };
        broker.launch();
        broker
    }

    /// Which broker this is.
    pub fn kind(&self) -> BrokerKind {
        self.kind
    }

    /// The port it listens on (the same across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `mqtt://127.0.0.1:<port>` (`mqtts://localhost:<port>` with TLS).
    pub fn url(&self) -> String {
        if self.options.tls.is_some() {
            format!("mqtts://localhost:{}", self.port)
        } else {
            format!("mqtt://127.0.0.1:{}", self.port)
        }
    }

    /// `kill -9` the broker. Clients see their connection drop.
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    /// Starts the broker again on the same port with the same options (and, for mosquitto with
    /// persistence, the same database).
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    /// The broker's working directory: its configuration files and, for mosquitto with
    /// persistence, its database (`mosquitto.db`, written every second and at shutdown).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The broker's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(ChildProcess::pid)
    }

    /// The broker's output so far.
    pub fn output(&self) -> String {
        self.process
            .as_ref()
            .map(ChildProcess::output)
            .unwrap_or_default()
    }

    fn launch(&mut self) {
        let process = match self.kind {
            BrokerKind::Bonker => self.launch_bonker(),
            BrokerKind::Mosquitto => self.launch_mosquitto(),
        };
        self.process = Some(process);
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        if !wait_for_port(addr, crate::DEADLINE) {
            panic!(
                "{} did not listen on {addr}; output:\n{}",
                self.kind,
                self.output()
            );
        }
    }

    fn launch_bonker(&mut self) -> ChildProcess {
        assert!(
            self.options.mosquitto_acl.is_none(),
            "the bonker broker has no ACLs (see docs/brokers.md)"
        );
        assert!(
            self.options.mosquitto_config.is_none(),
            "mosquitto.conf lines are for mosquitto"
        );
        let mut config = String::new();
        let listen = format!("127.0.0.1:{}", self.port);
        if let Some((cert, key)) = &self.options.tls {
            // The plain listener moves to a spare port; tests talk TLS on `port`.
            config.push_str(&format!("listen = \"127.0.0.1:{}\"\n", free_port()));
            config.push_str(&format!(
                "[tls]\nlisten = \"{listen}\"\ncert_file = {cert:?}\nkey_file = {key:?}\n"
            ));
        } else {
            config.push_str(&format!("listen = \"{listen}\"\n"));
        }
        if !self.options.users.is_empty() {
            config.push_str("[auth.users]\n");
            for (user, password) in &self.options.users {
                config.push_str(&format!("{user:?} = {password:?}\n"));
            }
        }
        let path = self.dir.path().join("broker.toml");
        std::fs::write(&path, config).expect("write broker.toml");
        let mut command = Command::new(binary("bonker-broker"));
        command
            .arg("--config")
            .arg(&path)
            .env("BONKER_LOG", "warn,rumqttd=error")
            .env_remove("BONKER_LISTEN");
        let mut process = ChildProcess::spawn("bonker-broker", command);
        process.wait_for_line("listening on", crate::DEADLINE);
        process
    }

    fn launch_mosquitto(&mut self) -> ChildProcess {
        let dir = self.dir.path();
        let mut config = format!(
            "per_listener_settings false\nlistener {} 127.0.0.1\nset_tcp_nodelay true\n\
             max_queued_messages 100000\nlog_dest stderr\nlog_type error\nlog_type warning\n",
            self.port
        );
        if let Some((cert, key)) = &self.options.tls {
            config.push_str(&format!(
                "certfile {}\nkeyfile {}\n",
                cert.display(),
                key.display()
            ));
        }
        if self.options.users.is_empty() {
            config.push_str("allow_anonymous true\n");
        } else {
            let passwords = dir.join("passwd");
            write_mosquitto_passwords(&passwords, &self.options.users);
            config.push_str(&format!(
                "allow_anonymous false\npassword_file {}\n",
                passwords.display()
            ));
        }
        if let Some(acl) = &self.options.mosquitto_acl {
            let path = dir.join("acl");
            std::fs::write(&path, acl).expect("write acl");
            config.push_str(&format!("acl_file {}\n", path.display()));
        }
        if self.options.persistence {
            // mosquitto started as root drops to its own user before it writes its database.
            use std::os::unix::fs::PermissionsExt as _;
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777));
            config.push_str(&format!(
                "persistence true\npersistence_location {}/\nautosave_interval 1\n",
                dir.display()
            ));
        } else {
            config.push_str("persistence false\n");
        }
        if let Some(extra) = &self.options.mosquitto_config {
            config.push_str(extra);
            config.push('\n');
        }
        let path = dir.join("mosquitto.conf");
        std::fs::write(&path, config).expect("write mosquitto.conf");
        let mut command = Command::new(mosquitto_binary());
        command.arg("-c").arg(&path);
        ChildProcess::spawn("mosquitto", command)
    }
}

fn mosquitto_binary() -> PathBuf {
    for candidate in ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"] {
        if Path::new(candidate).exists() {
            return PathBuf::from(candidate);
        }
    }
    PathBuf::from("mosquitto")
}

fn write_mosquitto_passwords(path: &Path, users: &[(String, String)]) {
    std::fs::write(path, "").expect("create password file");
    for (user, password) in users {
        let status = Command::new("mosquitto_passwd")
            .arg("-b")
            .arg(path)
            .arg(user)
            .arg(password)
            .status()
            .expect("mosquitto_passwd (package mosquitto) is installed");
        assert!(status.success(), "mosquitto_passwd failed for {user}");
    }
}
