//! Who may drive the servos: webhook authentication at the gateway, MQTT credentials and TLS for
//! every program against both brokers, and mosquitto's ACL from docs/brokers.md (used verbatim)
//! keeping each desk to its own topics. Secrets never appear in any program's output.

use std::path::Path;
use std::process::Command;

use bonker_protocol::{Ack, BonkId, Outcome};
use bonker_tests::guides::code_block_after;
use bonker_tests::{
    AgentProcess, AlertmanagerOptions, BrokerKind, BrokerOptions, GatewayProcess, Probe,
    ProbeOptions, TestAlertmanager, TestBroker, TestCa, binary,
};

fn unique(name: &str) -> String {
    format!("{name}-{}", BonkId::random())
}

fn write_secret(dir: &Path, name: &str, secret: &str) -> String {
    let path = dir.join(name);
    // Kubernetes Secrets and `echo` both end files with a newline; it is not part of the secret.
    std::fs::write(&path, format!("{secret}\n")).expect("write secret");
    path.display().to_string()
}

fn assert_not_logged(secrets: &[&str], outputs: &[(&str, String)]) {
    for (program, output) in outputs {
        for secret in secrets {
            assert!(
                !output.contains(secret),
                "{program} logged a secret:\n{output}"
            );
        }
    }
}

/// Webhook authentication: with a bearer token (from a file) and basic auth (password from a
/// file) configured, anything else gets 401 with the challenges; a real Alertmanager with the
/// token delivers; no secret appears in the logs, even at debug level.
#[tokio::test(flavor = "multi_thread")]
async fn webhook_auth_is_enforced_and_secrets_stay_out_of_the_logs() {
    let broker = TestBroker::start(BrokerKind::Bonker);
    let url = broker.url();
    let dir = tempfile::tempdir().expect("tempdir");
    let token = unique("bearer");
    let password = unique("basic");
    let token_file = write_secret(dir.path(), "token", &token);
    let password_file = write_secret(dir.path(), "password", &password);
    let mut acks = Probe::connect(&url, &["bonker/desk/+/ack"]).await;
    let _alice = AgentProcess::start(&url, "alice", &["payments"], &[]).await;
    let mut gateway = GatewayProcess::start_with(
        &url,
        &["--webhook-token-file", &token_file],
        &[
            ("BONKER_LOG", "debug,rumqttd=warn,hyper=info"),
            ("BONKER_AUTH__BASIC_USERNAME", "alertmanager"),
            ("BONKER_AUTH__BASIC_PASSWORD_FILE", &password_file),
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let body = include_str!("../../examples/alertmanager-oomkilled.json");
    let webhook = format!("{}/webhook", gateway.url());
    let post = |authorization: Option<String>| {
        let mut request = client
            .post(&webhook)
            .header("content-type", "application/json")
            .body(body);
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        request.send()
    };
    use base64::Engine as _;
    let basic = |user: &str, password: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        )
    };
    let refused = [
        None,
        Some(format!("Bearer {token}x")),
        Some(format!("Bearer {}", &token[..token.len() - 1])),
        Some("Bearer ".to_owned()),
        Some(format!("Basic {token}")),
        Some(basic("alertmanager", "wrong")),
        Some(basic("mallory", &password)),
        Some(format!("Token {token}")),
    ];
    for authorization in &refused {
        let response = post(authorization.clone()).await.expect("answer");
        assert_eq!(response.status(), 401, "{authorization:?}");
        let challenges: Vec<String> = response
            .headers()
            .get_all("www-authenticate")
            .iter()
            .map(|v| v.to_str().unwrap_or_default().to_owned())
            .collect();
        assert!(
            challenges.iter().any(|c| c.starts_with("Bearer"))
                && challenges.iter().any(|c| c.starts_with("Basic")),
            "{challenges:?}"
        );
    }
    for path in ["/api/desks", "/api/bonks/x", "/api/events", "/", "/app.js"] {
        let response = client
            .get(format!("{}{path}", gateway.url()))
            .send()
            .await
            .expect("answer");
        assert_eq!(response.status(), 401, "{path}");
    }
    let manual = client
        .post(format!("{}/bonk", gateway.url()))
        .send()
        .await
        .expect("answer");
    assert_eq!(manual.status(), 401, "POST /bonk");
    for path in ["/healthz", "/readyz", "/metrics"] {
        let response = client
            .get(format!("{}{path}", gateway.url()))
            .send()
            .await
            .expect("answer");
        assert_eq!(response.status(), 200, "{path} stays open for probes");
    }
    // Nothing refused bonked: the next ack is the first accepted notification's.
    let response = post(Some(basic("alertmanager", &password)))
        .await
        .expect("answer");
    assert_eq!(response.status(), 200, "basic auth");
    let first: Ack = serde_json::from_value(acks.next().await.json()).expect("ack");
    assert_eq!(first.outcome, Outcome::Bonked);
    let _ = acks.next().await; // the notification's second alert
    let response = post(Some(format!("bearer  {token} ")))
        .await
        .expect("answer");
    assert_eq!(response.status(), 200, "bearer, any case and spacing");

    // A real Alertmanager with the token in a credentials file delivers.
    let alertmanager = TestAlertmanager::start(AlertmanagerOptions {
        webhook_urls: vec![webhook.clone()],
        bearer_token: Some(token.clone()),
        ..Default::default()
    });
    alertmanager.add_alert(
        &[
            ("alertname", "OOMKilled"),
            ("namespace", "payments"),
            ("pod", "secured-0"),
        ],
        &[],
    );
    let ack: Ack = serde_json::from_value(acks.next().await.json()).expect("ack");
    assert_eq!(
        (ack.desk.as_str(), ack.outcome),
        ("alice", Outcome::Bonked),
        "Alertmanager's authenticated webhook bonked"
    );
    let metrics = reqwest::get(format!("{}/metrics", gateway.url()))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains(&format!(
            "bonker_gateway_webhooks_total{{outcome=\"unauthorized\"}} {}",
            refused.len()
        )),
        "every refused webhook counted:\n{metrics}"
    );
    assert_not_logged(
        &[&token, &password],
        &[
            ("bonker-gateway", gateway.process().output()),
            ("alertmanager", alertmanager_output(alertmanager)),
        ],
    );
}

fn as_str(flags: &[String]) -> Vec<&str> {
    flags.iter().map(String::as_str).collect()
}

fn alertmanager_output(mut alertmanager: TestAlertmanager) -> String {
    alertmanager.process().output()
}

/// MQTT with usernames, passwords (from files) and TLS (a CA made for the test), end to end:
/// gateway, agent and CLI connect, bonk and ack; a client without credentials, with a wrong
/// password or without the CA is refused; no password appears in any output.
async fn mqtt_credentials_and_tls_end_to_end(kind: BrokerKind) {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let passwords: Vec<(String, String)> = ["gateway", "alice", "operator"]
        .iter()
        .map(|user| (user.to_string(), unique(user)))
        .collect();
    let password = |user: &str| {
        passwords
            .iter()
            .find(|(u, _)| u == user)
            .map(|(_, p)| p.clone())
            .expect("a user")
    };
    let broker = TestBroker::start_with(
        kind,
        BrokerOptions {
            users: passwords.clone(),
            tls: Some(ca.server_cert_and_key()),
            ..Default::default()
        },
    );
    let url = broker.url();
    assert!(url.starts_with("mqtts://"), "{url}");
    let ca_file = ca.ca_file().display().to_string();
    let file_for = |user: &str| write_secret(dir.path(), user, &password(user));
    let credentials = |user: &str| ProbeOptions {
        credentials: Some((user.to_owned(), password(user))),
        ca_pem: Some(ca.ca_pem()),
        ..Default::default()
    };
    let mqtt_flags = |user: &str| {
        vec![
            "--mqtt-username".to_owned(),
            user.to_owned(),
            "--mqtt-password-file".to_owned(),
            file_for(user),
            "--mqtt-ca-file".to_owned(),
            ca_file.clone(),
        ]
    };

    let mut acks = Probe::connect_with(&url, &["bonker/desk/+/ack"], credentials("operator"))
        .await
        .unwrap_or_else(|e| panic!("{kind}: operator cannot connect: {e}"));
    let agent_flags = mqtt_flags("alice");
    let mut agent = AgentProcess::start_with(
        &url,
        "alice",
        &["payments"],
        &as_str(&agent_flags),
        &[],
        credentials("operator"),
    )
    .await;
    let gateway_flags = mqtt_flags("gateway");
    let mut gateway = GatewayProcess::start(&url, &as_str(&gateway_flags)).await;
    let response = reqwest::Client::new()
        .post(format!("{}/bonk?namespace=payments", gateway.url()))
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 200, "{kind}");
    let ack: Ack = serde_json::from_value(acks.next().await.json()).expect("ack");
    assert_eq!(
        (ack.desk.as_str(), ack.outcome),
        ("alice", Outcome::Bonked),
        "{kind}"
    );

    // The CLI, the way an operator runs it.
    let cli_flags = mqtt_flags("operator");
    let cli = Command::new(binary("bonker"))
        .args(["--mqtt", &url])
        .args(&cli_flags)
        .args(["bonk", "--namespace", "payments", "--severity", "info"])
        .output()
        .expect("bonker runs");
    let cli_stdout = String::from_utf8_lossy(&cli.stdout).into_owned();
    let cli_stderr = String::from_utf8_lossy(&cli.stderr).into_owned();
    assert!(cli.status.success(), "{kind}: {cli_stdout}{cli_stderr}");
    assert!(
        cli_stdout.contains("1 desk(s) acked"),
        "{kind}: {cli_stdout}"
    );
    let _ = acks.next().await;

    // Refused: no credentials, a wrong password, a CA that did not sign the broker's certificate.
    let anonymous = Probe::connect_with(
        &url,
        &[],
        ProbeOptions {
            ca_pem: Some(ca.ca_pem()),
            ..Default::default()
        },
    )
    .await;
    assert!(
        anonymous.is_err(),
        "{kind}: a client without credentials got in"
    );
    let wrong = Probe::connect_with(
        &url,
        &[],
        ProbeOptions {
            credentials: Some(("alice".into(), "guess".into())),
            ca_pem: Some(ca.ca_pem()),
            ..Default::default()
        },
    )
    .await;
    assert!(wrong.is_err(), "{kind}: a wrong password got in");
    let other_ca = TestCa::new();
    let untrusted = Probe::connect_with(
        &url,
        &[],
        ProbeOptions {
            credentials: Some(("alice".into(), password("alice"))),
            ca_pem: Some(other_ca.ca_pem()),
            ..Default::default()
        },
    )
    .await;
    assert!(
        untrusted.is_err(),
        "{kind}: a client trusted a certificate its CA did not sign"
    );
    let refused_cli = Command::new(binary("bonker"))
        .args(["--mqtt", &url, "--mqtt-ca-file", &ca_file])
        .args(["bonk", "--namespace", "payments"])
        .output()
        .expect("bonker runs");
    assert!(
        !refused_cli.status.success(),
        "{kind}: the CLI bonked without credentials"
    );
    let refused_stderr = String::from_utf8_lossy(&refused_cli.stderr).into_owned();
    assert!(
        !refused_stderr.is_empty(),
        "{kind}: the refusal is explained"
    );
    let mut anonymous_gateway = GatewayProcess::spawn(
        &url,
        bonker_tests::free_port(),
        &["--mqtt-ca-file", &ca_file],
        &[],
    );
    anonymous_gateway
        .process()
        .wait_for_line("cannot connect to the MQTT broker", bonker_tests::DEADLINE);
    let ready = reqwest::get(format!("{}/readyz", anonymous_gateway.url()))
        .await
        .expect("answer");
    assert_eq!(ready.status(), 503, "{kind}: not ready without credentials");

    let secrets: Vec<String> = passwords.iter().map(|(_, p)| p.clone()).collect();
    let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
    assert_not_logged(
        &secrets,
        &[
            ("bonker-gateway", gateway.process().output()),
            ("bonker-agent", agent.process().output()),
            (
                "bonker",
                format!("{cli_stdout}{cli_stderr}{refused_stderr}"),
            ),
            ("broker", broker.output()),
        ],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn mqtt_credentials_and_tls_end_to_end_bonker_broker() {
    mqtt_credentials_and_tls_end_to_end(BrokerKind::Bonker).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mqtt_credentials_and_tls_end_to_end_mosquitto() {
    mqtt_credentials_and_tls_end_to_end(BrokerKind::Mosquitto).await;
}

/// mosquitto with the ACL from docs/brokers.md, verbatim: the gateway and the desks work, and a
/// desk's credentials can neither bonk (a namespace or another desk) as if they were the gateway,
/// nor write another desk's status, health or acks, nor read another desk's topics.
#[tokio::test(flavor = "multi_thread")]
async fn the_documented_acl_keeps_each_desk_to_its_own_topics() {
    let acl = code_block_after("brokers.md", "ACL: a desk may write only its own topics");
    let users: Vec<(String, String)> = ["gateway", "alice", "bob"]
        .iter()
        .map(|user| (user.to_string(), unique(user)))
        .collect();
    let password = |user: &str| {
        users
            .iter()
            .find(|(u, _)| u == user)
            .map(|(_, p)| p.clone())
            .expect("a user")
    };
    let broker = TestBroker::start_with(
        BrokerKind::Mosquitto,
        BrokerOptions {
            users: users.clone(),
            mosquitto_acl: Some(acl),
            ..Default::default()
        },
    );
    let url = broker.url();
    let dir = tempfile::tempdir().expect("tempdir");
    let as_user = |user: &str| ProbeOptions {
        credentials: Some((user.to_owned(), password(user))),
        ..Default::default()
    };
    let flags = |user: &str| {
        vec![
            "--mqtt-username".to_owned(),
            user.to_owned(),
            "--mqtt-password-file".to_owned(),
            write_secret(dir.path(), user, &password(user)),
        ]
    };
    // The gateway's user reads what desks say.
    let mut desk_topics = Probe::connect_with(&url, &["bonker/desk/#"], as_user("gateway"))
        .await
        .expect("the gateway user connects");
    let bob_flags = flags("bob");
    let _bob = AgentProcess::start_with(
        &url,
        "bob",
        &["payments"],
        &as_str(&bob_flags),
        &[],
        as_user("gateway"),
    )
    .await;
    let alice_flags = flags("alice");
    let _alice = AgentProcess::start_with(
        &url,
        "alice",
        &["checkout"],
        &as_str(&alice_flags),
        &[],
        as_user("gateway"),
    )
    .await;
    let gateway_flags = flags("gateway");
    let gateway = GatewayProcess::start(&url, &as_str(&gateway_flags)).await;
    let client = reqwest::Client::new();
    let gateway_url = gateway.url();
    let bonk =
        |query: &'static str| bonker_tests::webhook::manual_bonk(&client, &gateway_url, query);
    // The gateway's bonks reach bob under the ACL.
    let id = bonk("namespace=payments").await;
    let ack = desk_topics
        .next_on(|m| m.topic == "bonker/desk/bob/ack")
        .await;
    assert_eq!(ack.json()["bonk_id"], id.as_str());

    // Alice's credentials, used by hand: a client of her own (another client id).
    let mut mallory = Probe::connect_with(
        &url,
        &[
            "bonker/desk/+/ack",
            "bonker/desk/bob/#",
            "bonker/desk/alice/bonk",
        ],
        as_user("alice"),
    )
    .await
    .expect("alice's credentials connect");
    let forged = "{\"id\":\"forged\",\"severity\":\"critical\"}";
    // mosquitto drops a denied publish silently and still sends the PUBACK (MQTT 3.1.1).
    mallory.publish("bonker/bonk/payments", forged, false).await;
    mallory.publish("bonker/desk/bob/bonk", forged, false).await;
    mallory
        .publish("bonker/desk/bob/status", "offline", true)
        .await;
    mallory
        .publish("bonker/desk/bob/health", "{\"forged\":true}", true)
        .await;
    mallory
        .publish(
            "bonker/desk/bob/ack",
            "{\"v\":1,\"bonk_id\":\"forged\",\"desk\":\"bob\",\"outcome\":\"bonked\"}",
            false,
        )
        .await;
    // What alice may do still works: her own status, as the sentinel. Nothing forged arrives
    // before it.
    mallory
        .publish("bonker/desk/alice/status", "online", true)
        .await;
    loop {
        let next = desk_topics.next().await;
        let text = next.text();
        assert!(
            !(text.contains("forged")
                || (next.topic == "bonker/desk/bob/status" && text == "offline")),
            "a forbidden publish got through: {} {text}",
            next.topic
        );
        if next.topic == "bonker/desk/alice/status" && text == "online" && !next.retain {
            break;
        }
    }
    // Bob bonks the gateway's next bonk, and it is the first thing he acks since: the forged bonks
    // never reached him.
    let id = bonk("namespace=payments").await;
    let ack = desk_topics
        .next_on(|m| m.topic == "bonker/desk/bob/ack")
        .await;
    assert_eq!(
        ack.json()["bonk_id"],
        id.as_str(),
        "bob acked a forged bonk"
    );
    // Alice's own client saw nothing of bob's (not his bonks, acks or status) before the bonk
    // for alice, which her credentials may read.
    let own = bonk("desk=alice").await;
    let seen = mallory.next().await;
    assert_eq!(
        (seen.topic.as_str(), seen.json()["id"].as_str()),
        ("bonker/desk/alice/bonk", Some(own.as_str())),
        "alice's credentials read another desk's topic"
    );
    // The fleet view still has bob online.
    let desks: serde_json::Value = reqwest::get(format!("{}/api/desks", gateway.url()))
        .await
        .expect("answer")
        .json()
        .await
        .expect("json");
    let bob = desks
        .as_array()
        .and_then(|d| d.iter().find(|d| d["desk"] == "bob"))
        .expect("bob in the fleet view");
    assert_eq!(bob["online"], true, "{desks}");
}

/// One desk's credentials with another desk's (predictable) client id: alice's password and the
/// client id `bonker-agent-bob`, with a persistent session and with a clean one. She gets nothing
/// of bob's, and the bonk queued in bob's session waits for him. The bonker broker refuses the id
/// to her (it belongs to the user who first connected with it); mosquitto, configured as
/// docs/brokers.md says (`use_username_as_clientid` on the desks' listener), gives her a session
/// of her own.
async fn a_desk_cannot_take_over_another_desks_session(kind: BrokerKind) {
    let users: Vec<(String, String)> = ["gateway", "alice", "bob"]
        .iter()
        .map(|user| (user.to_string(), unique(user)))
        .collect();
    let as_user = |user: &str, client_id: Option<&str>, clean_session: bool| ProbeOptions {
        client_id: client_id.map(str::to_owned),
        clean_session,
        credentials: users.iter().find(|(u, _)| u == user).cloned(),
        ..Default::default()
    };
    let broker = TestBroker::start_with(
        kind,
        BrokerOptions {
            users: users.clone(),
            mosquitto_acl: (kind == BrokerKind::Mosquitto).then(|| {
                code_block_after("brokers.md", "ACL: a desk may write only its own topics")
            }),
            mosquitto_config: (kind == BrokerKind::Mosquitto).then(|| {
                let production = code_block_after("brokers.md", "mosquitto in production");
                bonker_tests::guides::setting(&production, "use_username_as_clientid")
            }),
            ..Default::default()
        },
    );
    let url = broker.url();
    let bobs_id = Some("bonker-agent-bob");
    let bob = Probe::connect_with(
        &url,
        &["bonker/desk/bob/bonk"],
        as_user("bob", bobs_id, false),
    )
    .await
    .expect("bob connects");
    bob.disconnect().await;
    let gateway = Probe::connect_with(&url, &[], as_user("gateway", None, true))
        .await
        .expect("the gateway user connects");
    let queued = "{\"id\":\"queued-for-bob\",\"source\":\"manual\"}";
    gateway.publish("bonker/desk/bob/bonk", queued, false).await;

    for clean_session in [false, true] {
        let attempt = Probe::connect_with(
            &url,
            &["bonker/desk/alice/bonk"],
            as_user("alice", bobs_id, clean_session),
        )
        .await;
        match kind {
            BrokerKind::Bonker => {
                let refused = attempt.err().unwrap_or_else(|| {
                    panic!("alice connected with bob's client id (clean session {clean_session})")
                });
                assert!(
                    refused.0.contains("BadClientId"),
                    "refused as an identifier: {refused:?}"
                );
            }
            BrokerKind::Mosquitto => {
                let mut alice = attempt.expect("alice connects, under her own name");
                assert!(
                    !alice.session_present,
                    "alice resumed a session (clean session {clean_session})"
                );
                let sentinel = format!("{{\"id\":\"for-alice-{clean_session}\"}}");
                gateway
                    .publish("bonker/desk/alice/bonk", sentinel.clone(), false)
                    .await;
                let first = alice.next().await;
                assert_eq!(
                    (first.topic.as_str(), first.text()),
                    ("bonker/desk/alice/bonk", sentinel),
                    "alice received something of bob's session first"
                );
                alice.disconnect().await;
            }
        }
    }
    // Alice's own client id works as ever.
    Probe::connect_with(
        &url,
        &[],
        as_user("alice", Some("bonker-agent-alice"), false),
    )
    .await
    .expect("alice connects as herself")
    .disconnect()
    .await;

    let mut bob = Probe::connect_with(&url, &[], as_user("bob", bobs_id, false))
        .await
        .expect("bob reconnects");
    assert!(bob.session_present, "bob's session survived");
    let first = bob.next().await;
    assert_eq!(
        (first.topic.as_str(), first.text()),
        ("bonker/desk/bob/bonk", queued.to_owned()),
        "the bonk queued for bob waited for him"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_desk_cannot_take_over_another_desks_session_bonker_broker() {
    a_desk_cannot_take_over_another_desks_session(BrokerKind::Bonker).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_desk_cannot_take_over_another_desks_session_mosquitto() {
    a_desk_cannot_take_over_another_desks_session(BrokerKind::Mosquitto).await;
}
