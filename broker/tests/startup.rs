//! What the broker says about its configuration when it starts: passwords that would cross the
//! network in clear text, and TLS files it cannot use.

mod support;

use std::process::Command;

use support::BrokerProcess;

const USERS: &str = "[auth.users]\nalice = \"s3cret\"\n";
const WARNING: &str = "passwords in clear text";

#[test]
fn passwords_on_a_plain_listener_reachable_from_the_network_are_warned_about() {
    let broker = BrokerProcess::start(&format!("listen = \"0.0.0.0:0\"\n{USERS}"), 1);
    let output = broker.stop();
    assert!(output.contains(WARNING), "{output}");
    assert!(!output.contains("s3cret"), "{output}");
}

#[test]
fn no_warning_without_users_or_on_loopback() {
    for config in [
        "listen = \"0.0.0.0:0\"\n".to_owned(),
        format!("listen = \"127.0.0.1:0\"\n{USERS}"),
    ] {
        let output = BrokerProcess::start(&config, 1).stop();
        assert!(!output.contains(WARNING), "{config}:\n{output}");
    }
}

#[test]
fn a_tls_certificate_that_is_not_one_is_refused_before_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = dir.path().join("tls.crt");
    let key = dir.path().join("tls.key");
    std::fs::write(&cert, "not a certificate\n").expect("write");
    std::fs::write(&key, "not a key\n").expect("write");
    let config = dir.path().join("broker.toml");
    std::fs::write(
        &config,
        format!("listen = \"127.0.0.1:0\"\n[tls]\nlisten = \"127.0.0.1:0\"\ncert_file = {cert:?}\nkey_file = {key:?}\n"),
    )
    .expect("write");
    let output = Command::new(env!("CARGO_BIN_EXE_bonker-broker"))
        .arg("--config")
        .arg(&config)
        .env_remove("BONKER_LISTEN")
        .output()
        .expect("bonker-broker runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("tls.cert_file"), "{stderr}");
    assert!(output.stdout.is_empty(), "nothing listened");
}
