//! What the broker's own integration tests share: the real `bonker-broker` binary as a child
//! process (killed when dropped), a throw-away TLS certificate authority made with the `openssl`
//! command line tool, MQTT clients built the way every bonker program builds them
//! (`bonker_client::mqtt`), and the broker's resident memory.
//!
//! Each test file includes this module and uses part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use bonker_client::mqtt::MqttSettings;
use rumqttc::{AsyncClient, Event, EventLoop, Packet};

/// How long anything that should be quick may take on a loaded CI machine.
pub(crate) const DEADLINE: Duration = Duration::from_secs(20);

/// A `bonker-broker` process started from a TOML configuration, killed and reaped on drop.
pub(crate) struct BrokerProcess {
    child: Child,
    output: Arc<(Mutex<Vec<String>>, Condvar)>,
    readers: Vec<std::thread::JoinHandle<()>>,
    listeners: Vec<(String, SocketAddr)>,
    _dir: tempfile::TempDir,
}

impl BrokerProcess {
    /// Starts the broker with `config` (the contents of `broker.toml`) and waits until it has
    /// printed `listeners` "listening on" lines, i.e. until every listener accepts connections.
    pub(crate) fn start(config: &str, listeners: usize) -> BrokerProcess {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("broker.toml");
        std::fs::write(&path, config).expect("write broker.toml");
        let mut child = Command::new(env!("CARGO_BIN_EXE_bonker-broker"))
            .arg("--config")
            .arg(&path)
            .env("BONKER_LOG", "warn,rumqttd=off")
            .env_remove("BONKER_LISTEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("bonker-broker starts");
        let output = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let mut readers = Vec::new();
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let output = output.clone();
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let (lines, changed) = &*output;
                    lines.lock().expect("output lock").push(line);
                    changed.notify_all();
                }
            }));
        }
        let mut broker = BrokerProcess {
            child,
            output,
            readers,
            listeners: Vec::new(),
            _dir: dir,
        };
        let lines = broker.wait_for_lines("listening on", listeners, DEADLINE);
        for line in lines {
            // "bonker-broker listening on 127.0.0.1:1883 (V4)"
            let rest = line.split("listening on ").nth(1).expect("address");
            let (addr, kind) = rest.split_once(' ').expect("address and kind");
            broker.listeners.push((
                kind.trim_matches(|c| c == '(' || c == ')').to_owned(),
                addr.parse().expect("listener address"),
            ));
        }
        broker
    }

    /// The address of the listener of `kind` (`V4`, `V4Tls`, `V5`).
    pub(crate) fn addr(&self, kind: &str) -> SocketAddr {
        self.listeners
            .iter()
            .find(|(k, _)| k == kind)
            .map(|(_, addr)| *addr)
            .unwrap_or_else(|| panic!("no {kind} listener in {:?}", self.listeners))
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the broker printed so far.
    pub(crate) fn output(&self) -> String {
        self.output.0.lock().expect("output lock").join("\n")
    }

    /// Waits until the broker has printed `count` lines containing `needle`; returns them.
    pub(crate) fn wait_for_lines(
        &self,
        needle: &str,
        count: usize,
        timeout: Duration,
    ) -> Vec<String> {
        let started = Instant::now();
        let (lines, changed) = &*self.output;
        let mut guard = lines.lock().expect("output lock");
        loop {
            let found: Vec<String> = guard
                .iter()
                .filter(|l| l.contains(needle))
                .cloned()
                .collect();
            if found.len() >= count {
                return found;
            }
            let left = timeout.saturating_sub(started.elapsed());
            assert!(
                !left.is_zero(),
                "bonker-broker did not print {count} lines with {needle:?} within {timeout:?}; \
                 output:\n{}",
                guard.join("\n")
            );
            guard = changed.wait_timeout(guard, left).expect("output lock").0;
        }
    }

    /// Stops the broker with SIGTERM and returns everything it printed, to the last line.
    pub(crate) fn stop(mut self) -> String {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
        let status = self.child.wait().expect("bonker-broker exits");
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        assert!(
            status.success(),
            "bonker-broker exited with {status}:\n{}",
            self.output()
        );
        self.output()
    }

    /// The broker's resident memory (`VmRSS`), in KiB.
    pub(crate) fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("broker is running");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/<pid>/status")
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A CA and a server certificate for `localhost` and `127.0.0.1` signed by it, as PEM files in a
/// temporary directory, made with the `openssl` command line tool.
pub(crate) struct TestCa {
    dir: tempfile::TempDir,
}

impl TestCa {
    /// Makes a fresh CA and server certificate (ECDSA P-256: quick to make and to handshake).
    pub(crate) fn new() -> TestCa {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        openssl(
            dir.path(),
            &[
                &["req", "-x509"],
                &key[..],
                &[
                    "-days",
                    "2",
                    "-subj",
                    "/CN=bonker-broker test CA",
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.pem",
                    "-addext",
                    "basicConstraints=critical,CA:TRUE",
                    "-addext",
                    "keyUsage=critical,keyCertSign,cRLSign",
                ],
            ]
            .concat(),
        );
        openssl(
            dir.path(),
            &[
                &["req"],
                &key[..],
                &[
                    "-subj",
                    "/CN=localhost",
                    "-keyout",
                    "server.key",
                    "-out",
                    "server.csr",
                ],
            ]
            .concat(),
        );
        std::fs::write(
            dir.path().join("server.ext"),
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n",
        )
        .expect("write server.ext");
        openssl(
            dir.path(),
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
        TestCa { dir }
    }

    /// The CA certificate clients trust.
    pub(crate) fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The `[tls]` section serving the server certificate on a free loopback port, plus `extra`
    /// lines.
    pub(crate) fn tls_section(&self, extra: &str) -> String {
        format!(
            "[tls]\nlisten = \"127.0.0.1:0\"\ncert_file = {:?}\nkey_file = {:?}\n{extra}\n",
            self.dir.path().join("server.pem"),
            self.dir.path().join("server.key"),
        )
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
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// An MQTT 3.1.1 client for `url` (`mqtt://…` or `mqtts://…`, trusting `ca_file`), built by
/// `bonker_client` exactly as the fleet's programs build theirs. Nothing is sent until the event
/// loop is polled.
pub(crate) fn client(
    url: &str,
    client_id: &str,
    ca_file: Option<&Path>,
) -> (AsyncClient, EventLoop) {
    let settings = MqttSettings {
        url: url.to_owned(),
        client_id: Some(client_id.to_owned()),
        ca_file: ca_file.map(Path::to_path_buf),
        ..MqttSettings::default()
    };
    let options = settings.options(client_id).expect("valid client settings");
    let (client, mut event_loop) = AsyncClient::new(options, 1000);
    bonker_client::mqtt::tune_event_loop(&mut event_loop, &settings);
    (client, event_loop)
}

/// Polls `event_loop` until the broker's CONNACK, and returns how long that took. Any error (the
/// TCP connect, the TLS handshake, a refused CONNECT) or `timeout` is an `Err` with the reason.
pub(crate) async fn connack(
    event_loop: &mut EventLoop,
    timeout: Duration,
) -> Result<Duration, String> {
    let started = Instant::now();
    let outcome = tokio::time::timeout(timeout, async {
        loop {
            match event_loop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
                Ok(_) => continue,
                Err(error) => return Err(error.to_string()),
            }
        }
    })
    .await;
    match outcome {
        Ok(Ok(())) => Ok(started.elapsed()),
        Ok(Err(error)) => Err(format!("{error} after {:?}", started.elapsed())),
        Err(_) => Err(format!("no CONNACK within {timeout:?}")),
    }
}

/// Polls `event_loop` until `wanted` accepts an incoming packet, returning it; panics with the
/// reason on an error or after `timeout`.
pub(crate) async fn next_incoming<T>(
    event_loop: &mut EventLoop,
    timeout: Duration,
    mut wanted: impl FnMut(&Packet) -> Option<T>,
) -> T {
    tokio::time::timeout(timeout, async {
        loop {
            match event_loop.poll().await {
                Ok(Event::Incoming(packet)) => {
                    if let Some(found) = wanted(&packet) {
                        return found;
                    }
                }
                Ok(Event::Outgoing(_)) => {}
                Err(error) => panic!("MQTT connection failed: {error}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the awaited MQTT packet did not arrive within {timeout:?}"))
}

/// An MQTT 3.1.1 client that writes packets byte by byte as the specification lays them out, for
/// tests that need exact control over what a (hostile) client sends: how many filters per
/// SUBSCRIBE, how many publishes in flight, what happens after the broker closes.
pub(crate) struct RawClient {
    stream: tokio::net::TcpStream,
    read: Vec<u8>,
    next_packet_id: u16,
}

impl RawClient {
    /// Connects with a clean session; `Err` with the reason if the broker refuses or closes.
    pub(crate) async fn connect(addr: SocketAddr, client_id: &str) -> Result<RawClient, String> {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let mut client = RawClient {
            stream,
            read: Vec::new(),
            next_packet_id: 1,
        };
        let mut body = mqtt_string("MQTT");
        body.extend([4, 0x02, 0, 60]);
        body.extend(mqtt_string(client_id));
        client.send(0x10, &body).await?;
        let (first, body) = client.packet().await?;
        match (first, body.as_slice()) {
            (0x20, [_, 0]) => Ok(client),
            (0x20, [_, code]) => Err(format!("CONNACK refused the connection with code {code}")),
            _ => Err(format!("expected CONNACK, got packet {first:#x}")),
        }
    }

    /// Subscribes to `filters` (QoS 1) in one SUBSCRIBE and waits for its SUBACK.
    pub(crate) async fn subscribe(&mut self, filters: &[String]) -> Result<(), String> {
        let id = self.packet_id();
        let mut body = id.to_be_bytes().to_vec();
        for filter in filters {
            body.extend(mqtt_string(filter));
            body.push(1);
        }
        self.send(0x82, &body).await?;
        loop {
            let (first, body) = self.packet().await?;
            if first == 0x90 && body[..2] == id.to_be_bytes() {
                return match body[2..].iter().find(|&&code| code >= 0x80) {
                    Some(code) => Err(format!("SUBACK refused a filter with {code:#x}")),
                    None => Ok(()),
                };
            }
        }
    }

    /// Publishes at QoS 1 without waiting; [`RawClient::await_pubacks`] waits.
    pub(crate) async fn publish(
        &mut self,
        topic: &str,
        payload: &[u8],
        retain: bool,
    ) -> Result<(), String> {
        let id = self.packet_id();
        let mut body = mqtt_string(topic);
        body.extend(id.to_be_bytes());
        body.extend_from_slice(payload);
        self.send(0x32 | u8::from(retain), &body).await
    }

    /// Waits for `count` PUBACKs (anything else the broker sends is skipped).
    pub(crate) async fn await_pubacks(&mut self, mut count: usize) -> Result<(), String> {
        while count > 0 {
            if self.packet().await?.0 == 0x40 {
                count -= 1;
            }
        }
        Ok(())
    }

    /// Waits until the broker closes the connection; `Err` if it sends anything but PUBACKs or
    /// keeps it open past `timeout`.
    pub(crate) async fn closed_by_broker(&mut self, timeout: Duration) -> Result<(), String> {
        tokio::time::timeout(timeout, async {
            loop {
                match self.packet().await {
                    Err(_) => return Ok(()),
                    Ok((0x40, _)) => continue,
                    Ok((first, _)) => return Err(format!("unexpected packet {first:#x}")),
                }
            }
        })
        .await
        .map_err(|_| format!("the broker kept the connection open for {timeout:?}"))?
    }

    fn packet_id(&mut self) -> u16 {
        let id = self.next_packet_id;
        self.next_packet_id = self.next_packet_id.checked_add(1).unwrap_or(1);
        id
    }

    async fn send(&mut self, first: u8, body: &[u8]) -> Result<(), String> {
        use tokio::io::AsyncWriteExt as _;
        let mut packet = vec![first];
        let mut len = body.len();
        loop {
            let byte = (len % 128) as u8;
            len /= 128;
            packet.push(if len > 0 { byte | 0x80 } else { byte });
            if len == 0 {
                break;
            }
        }
        packet.extend_from_slice(body);
        self.stream
            .write_all(&packet)
            .await
            .map_err(|e| format!("the broker closed the connection: {e}"))
    }

    /// The next packet: its first byte and its body.
    async fn packet(&mut self) -> Result<(u8, Vec<u8>), String> {
        use tokio::io::AsyncReadExt as _;
        loop {
            if self.read.len() >= 2 {
                let mut len = 0usize;
                let mut header = None;
                for (index, &byte) in self.read[1..].iter().take(4).enumerate() {
                    len |= usize::from(byte & 0x7f) << (7 * index);
                    if byte & 0x80 == 0 {
                        header = Some(index + 2);
                        break;
                    }
                }
                if let Some(header) = header.filter(|&h| self.read.len() >= h + len) {
                    let first = self.read[0];
                    let body = self.read[header..header + len].to_vec();
                    self.read.drain(..header + len);
                    return Ok((first, body));
                }
            }
            let mut chunk = [0u8; 4096];
            let read = tokio::time::timeout(DEADLINE, self.stream.read(&mut chunk))
                .await
                .map_err(|_| format!("nothing from the broker within {DEADLINE:?}"))?
                .map_err(|e| format!("the broker closed the connection: {e}"))?;
            if read == 0 {
                return Err("the broker closed the connection".to_owned());
            }
            self.read.extend_from_slice(&chunk[..read]);
        }
    }
}

fn mqtt_string(s: &str) -> Vec<u8> {
    let mut bytes = (s.len() as u16).to_be_bytes().to_vec();
    bytes.extend_from_slice(s.as_bytes());
    bytes
}
