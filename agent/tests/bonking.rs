//! The agent against real brokers (the bonker broker and mosquitto), with a simulated servo: what
//! gets performed, what gets acked, and that every pulse stays in the safe range.

mod common;

use bonker_tests::{BrokerKind, CuttableLink, TestBroker};
use common::{TestDesk, bonk, outcome, settings};
use serde_json::json;

const REST: u32 = bonker_agent::config::DEFAULT_REST_US;
const STRIKE: u32 = bonker_agent::config::DEFAULT_STRIKE_US;
const TAP: u32 = bonker_agent::config::DEFAULT_TAP_US;

/// A bonk on a watched namespace: exactly one move (strike, back to rest) and one `bonked` ack,
/// with timestamps and the namespace.
async fn watched_namespace_bonks_once(kind: BrokerKind) {
    let broker = TestBroker::start(kind);
    let desk = TestDesk::start(settings(&broker.url(), "alice", &["payments", "checkout"])).await;
    let mut acks = common::probe(&broker.url(), &["bonker/desk/alice/ack"]).await;
    let sender = common::probe(&broker.url(), &[]).await;
    sender
        .publish("bonker/bonk/payments", bonk("b-1", "critical"), false)
        .await;
    let ack = acks.next().await;
    assert_eq!(outcome(&ack), ("b-1".into(), "bonked".into()), "{kind}");
    let json = ack.json();
    assert_eq!(json["desk"], "alice");
    assert_eq!(json["namespace"], "payments");
    assert_eq!(json["severity"], "critical");
    assert!(json["received_at"].as_str() <= json["finished_at"].as_str());
    assert_eq!(desk.bonk_moves(REST), vec![vec![STRIKE, REST]], "{kind}");
    // Nothing else happens: the next ack is the sentinel's, and it made the second move.
    sender
        .publish("bonker/desk/alice/bonk", bonk("sentinel", "warning"), false)
        .await;
    assert_eq!(
        outcome(&acks.next().await),
        ("sentinel".into(), "bonked".into())
    );
    assert_eq!(
        desk.bonk_moves(REST),
        vec![vec![STRIKE, REST], vec![TAP, REST]],
        "{kind}"
    );
    desk.stop().await;
}

/// A namespace the desk does not watch: no move, no ack.
async fn unwatched_namespace_is_ignored(kind: BrokerKind) {
    let broker = TestBroker::start(kind);
    let desk = TestDesk::start(settings(&broker.url(), "alice", &["payments"])).await;
    let mut acks = common::probe(&broker.url(), &["bonker/desk/+/ack"]).await;
    let sender = common::probe(&broker.url(), &[]).await;
    sender
        .publish("bonker/bonk/checkout", bonk("not-mine", "critical"), false)
        .await;
    sender
        .publish("bonker/desk/alice/bonk", bonk("sentinel", "info"), false)
        .await;
    assert_eq!(
        outcome(&acks.next().await),
        ("sentinel".into(), "bonked".into()),
        "{kind}"
    );
    let moves = desk.bonk_moves(REST);
    assert_eq!(
        moves.len(),
        1,
        "{kind}: only the sentinel's wiggle: {moves:?}"
    );
    assert!(!moves[0].contains(&STRIKE));
    desk.stop().await;
}

/// `+` watches every namespace; hand-typed blank text on the desk topic is a full bonk.
async fn every_namespace_and_the_desk_topic(kind: BrokerKind) {
    let broker = TestBroker::start(kind);
    let desk = TestDesk::start(settings(&broker.url(), "bob", &["+"])).await;
    let mut acks = common::probe(&broker.url(), &["bonker/desk/bob/ack"]).await;
    let sender = common::probe(&broker.url(), &[]).await;
    sender
        .publish("bonker/bonk/anything", bonk("ns", "info"), false)
        .await;
    assert_eq!(outcome(&acks.next().await), ("ns".into(), "bonked".into()));
    sender.publish("bonker/desk/bob/bonk", " ", false).await;
    let ack = acks.next().await.json();
    assert_eq!(
        (ack["outcome"].as_str(), ack["severity"].as_str()),
        (Some("bonked"), Some("critical")),
        "{kind}"
    );
    assert!(ack.get("namespace").is_none());
    assert_eq!(desk.bonk_moves(REST).len(), 2);
    desk.stop().await;
}

/// The same bonk id twice: the second is acked `duplicate` and not performed.
async fn duplicates_are_acked_not_performed(kind: BrokerKind) {
    let broker = TestBroker::start(kind);
    let desk = TestDesk::start(settings(&broker.url(), "alice", &["payments"])).await;
    let mut acks = common::probe(&broker.url(), &["bonker/desk/alice/ack"]).await;
    let sender = common::probe(&broker.url(), &[]).await;
    let payload = bonk("same-alert", "critical");
    sender
        .publish("bonker/bonk/payments", payload.clone(), false)
        .await;
    sender
        .publish("bonker/desk/alice/bonk", payload, false)
        .await;
    // The duplicate is acked at once; the original when the arm is back at rest.
    let mut outcomes = [outcome(&acks.next().await), outcome(&acks.next().await)];
    outcomes.sort();
    assert_eq!(
        outcomes,
        [
            ("same-alert".into(), "bonked".into()),
            ("same-alert".into(), "duplicate".into())
        ],
        "{kind}"
    );
    assert_eq!(desk.bonk_moves(REST).len(), 1, "{kind}");
    desk.stop().await;
}

/// Over the rate limit: acked `rate_limited`, not performed now.
async fn bonks_over_the_rate_limit_are_acked_rate_limited(kind: BrokerKind) {
    let broker = TestBroker::start(kind);
    let mut s = settings(&broker.url(), "alice", &["payments"]);
    s.rate_limit.max_bonks = 2;
    s.rate_limit.per_s = 3600;
    let desk = TestDesk::start(s).await;
    let mut acks = common::probe(&broker.url(), &["bonker/desk/alice/ack"]).await;
    let sender = common::probe(&broker.url(), &[]).await;
    for n in 0..4 {
        sender
            .publish(
                "bonker/bonk/payments",
                bonk(&format!("storm-{n}"), "critical"),
                false,
            )
            .await;
    }
    let mut outcomes: Vec<(String, String)> = Vec::new();
    for _ in 0..4 {
        outcomes.push(outcome(&acks.next().await));
    }
    outcomes.sort();
    let expected: Vec<(String, String)> = [
        ("storm-0", "bonked"),
        ("storm-1", "bonked"),
        ("storm-2", "rate_limited"),
        ("storm-3", "rate_limited"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(outcomes, expected, "{kind}");
    assert_eq!(desk.bonk_moves(REST).len(), 2, "{kind}");
    desk.stop().await;
}

/// A bonk older than max_age_s (by sent_at, else fired_at) is acked `expired`, not performed.
async fn stale_bonks_expire(kind: BrokerKind) {
    let broker = TestBroker::start(kind);
    let desk = TestDesk::start(settings(&broker.url(), "alice", &["payments"])).await;
    let mut acks = common::probe(&broker.url(), &["bonker/desk/alice/ack"]).await;
    let sender = common::probe(&broker.url(), &[]).await;
    let an_hour_ago = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    sender
        .publish(
            "bonker/bonk/payments",
            json!({"id": "old-sent", "sent_at": an_hour_ago}).to_string(),
            false,
        )
        .await;
    sender
        .publish(
            "bonker/bonk/payments",
            json!({"id": "old-fired", "fired_at": an_hour_ago}).to_string(),
            false,
        )
        .await;
    let first = acks.next().await;
    assert_eq!(
        outcome(&first),
        ("old-sent".into(), "expired".into()),
        "{kind}"
    );
    assert!(
        first.json()["detail"]
            .as_str()
            .unwrap_or("")
            .contains("max_age_s")
    );
    assert_eq!(
        outcome(&acks.next().await),
        ("old-fired".into(), "expired".into())
    );
    assert!(desk.bonk_moves(REST).is_empty(), "{kind}");
    desk.stop().await;
}

/// Garbage on the bonk topics is logged and bonks with defaults; the agent keeps running.
async fn bad_payloads_never_stop_the_agent(kind: BrokerKind) {
    let broker = TestBroker::start(kind);
    let mut s = settings(&broker.url(), "alice", &["payments"]);
    s.rate_limit.max_bonks = 100;
    let desk = TestDesk::start(s).await;
    let mut acks = common::probe(&broker.url(), &["bonker/desk/alice/ack"]).await;
    let sender = common::probe(&broker.url(), &[]).await;
    let payloads: Vec<Vec<u8>> = vec![
        b"{\"severity\": \"warning\"".to_vec(),
        vec![0xff, 0xfe, 0x00],
        b"[1, 2, 3]".to_vec(),
        b"{\"severity\": 5, \"count\": -1, \"id\": 7}".to_vec(),
        vec![b'x'; 100_000],
        b"null".to_vec(),
    ];
    for payload in &payloads {
        sender
            .publish("bonker/bonk/payments", payload.clone(), false)
            .await;
    }
    // Each is a bonk with defaults (a full bonk); those arriving while the servo queue is full
    // are coalesced.
    for _ in &payloads {
        let ack = acks.next().await.json();
        let outcome = ack["outcome"].as_str().unwrap_or_default();
        assert!(
            matches!(outcome, "bonked" | "rate_limited"),
            "{kind}: {ack}"
        );
    }
    sender
        .publish("bonker/desk/alice/bonk", bonk("still-alive", "info"), false)
        .await;
    assert_eq!(
        outcome(&acks.next().await),
        ("still-alive".into(), "bonked".into()),
        "{kind}"
    );
    desk.stop().await;
}

/// Persistent session: bonks published while the desk is away are performed when it is back.
async fn bonks_published_while_away_are_performed_on_return(kind: BrokerKind) {
    let broker = TestBroker::start(kind);
    let desk = TestDesk::start(settings(&broker.url(), "carol", &["payments"])).await;
    let recorder = desk.recorder.clone();
    desk.stop().await;
    let mut acks = common::probe(&broker.url(), &["bonker/desk/carol/ack"]).await;
    let sender = common::probe(&broker.url(), &[]).await;
    sender
        .publish(
            "bonker/bonk/payments",
            bonk("while-away-1", "critical"),
            false,
        )
        .await;
    sender
        .publish(
            "bonker/desk/carol/bonk",
            bonk("while-away-2", "warning"),
            false,
        )
        .await;
    let desk =
        TestDesk::start_with_recorder(settings(&broker.url(), "carol", &["payments"]), recorder)
            .await;
    let mut outcomes = vec![outcome(&acks.next().await), outcome(&acks.next().await)];
    outcomes.sort();
    assert_eq!(
        outcomes,
        [
            ("while-away-1".into(), "bonked".into()),
            ("while-away-2".into(), "bonked".into())
        ],
        "{kind}"
    );
    assert_eq!(
        desk.bonk_moves(REST),
        vec![vec![STRIKE, REST], vec![TAP, REST]],
        "{kind}"
    );
    desk.stop().await;
}

/// A Wi-Fi drop: the connection dies under a running agent, bonks are published meanwhile, and
/// the agent performs them after it reconnects (persistent session), then announces `online` again.
async fn bonks_published_during_a_network_drop_are_performed(kind: BrokerKind) {
    let broker = TestBroker::start(kind);
    let proxy = CuttableLink::start(([127, 0, 0, 1], broker.port()).into()).await;
    let mut s = settings(&broker.url(), "judy", &["payments"]);
    s.mqtt.url = format!("mqtt://{}", proxy.addr());
    let desk = TestDesk::start(s).await;
    let mut status = common::probe(&broker.url(), &["bonker/desk/judy/status"]).await;
    assert_eq!(status.next().await.text(), "online");
    let mut acks = common::probe(&broker.url(), &["bonker/desk/judy/ack"]).await;
    proxy.cut();
    // The broker noticed: it published the desk's last will.
    assert_eq!(status.next().await.text(), "offline", "{kind}");
    let sender = common::probe(&broker.url(), &[]).await;
    sender
        .publish(
            "bonker/bonk/payments",
            bonk("during-drop-1", "critical"),
            false,
        )
        .await;
    sender
        .publish(
            "bonker/desk/judy/bonk",
            bonk("during-drop-2", "warning"),
            false,
        )
        .await;
    proxy.restore();
    assert_eq!(status.next().await.text(), "online", "{kind}");
    let mut outcomes = vec![outcome(&acks.next().await), outcome(&acks.next().await)];
    outcomes.sort();
    assert_eq!(
        outcomes,
        [
            ("during-drop-1".into(), "bonked".into()),
            ("during-drop-2".into(), "bonked".into())
        ],
        "{kind}"
    );
    assert_eq!(
        desk.bonk_moves(REST),
        vec![vec![STRIKE, REST], vec![TAP, REST]]
    );
    desk.stop().await;
}

/// Status is `online` (retained) while running and `offline` (retained) after a clean stop; health
/// is retained JSON describing the desk.
async fn status_and_health_are_retained(kind: BrokerKind) {
    let broker = TestBroker::start(kind);
    let dir = tempfile::tempdir().expect("tempdir");
    let thermometer = dir.path().join("temp");
    std::fs::write(&thermometer, "51234\n").expect("write");
    let mut s = settings(&broker.url(), "dave", &["payments", "checkout"]);
    s.soc_temp_file = thermometer;
    let desk = TestDesk::start(s).await;
    let mut late = common::probe(&broker.url(), &["bonker/desk/dave/+"]).await;
    let mut seen = std::collections::HashMap::new();
    // A subscriber that comes later gets both as retained messages (a live report the desk
    // publishes at that moment may arrive too, and proves nothing either way).
    while seen.len() < 2 {
        let message = late.next().await;
        if message.retain {
            seen.insert(message.topic.clone(), message);
        }
    }
    assert_eq!(seen["bonker/desk/dave/status"].text(), "online", "{kind}");
    let health = seen["bonker/desk/dave/health"].json();
    assert_eq!(health["desk"], "dave");
    assert_eq!(health["agent_version"], bonker_agent::VERSION);
    assert_eq!(health["bonks_total"], 0);
    assert_eq!(health["namespaces"], json!(["payments", "checkout"]));
    assert_eq!(health["servo"]["driver"], "simulated");
    assert_eq!(health["servo"]["state"], "rest");
    assert_eq!(health["soc_temp_c"], 51.2);
    assert!(health.get("bonk_delay_ms").is_none(), "no bonk yet");
    let sender = common::probe(&broker.url(), &[]).await;
    // Sent 30 s ago (it waited for the desk somewhere): the health report says how late it came.
    let sent_at = chrono::Utc::now() - chrono::Duration::seconds(30);
    sender
        .publish(
            "bonker/bonk/payments",
            json!({"id": "h", "pod": "api-1", "sent_at": sent_at}).to_string(),
            false,
        )
        .await;
    let health = late
        .next_on(|m| m.topic.ends_with("/health") && m.json()["bonks_total"] == 1)
        .await
        .json();
    assert_eq!(health["last_bonk_namespace"], "payments", "{kind}");
    assert_eq!(health["last_bonk_pod"], "api-1");
    assert!(health["last_bonk_at"].is_string());
    let delay = health["bonk_delay_ms"].as_i64().expect("bonk_delay_ms");
    assert!(
        (30_000..30_000 + bonker_tests::DEADLINE.as_millis() as i64).contains(&delay),
        "{kind}: bonk_delay_ms {delay}"
    );
    desk.stop().await;
    let offline = late.next_on(|m| m.topic.ends_with("/status")).await;
    assert_eq!(offline.text(), "offline", "{kind}");
    let mut later = common::probe(&broker.url(), &["bonker/desk/dave/status"]).await;
    let retained = later.next().await;
    assert_eq!(
        (retained.text().as_str(), retained.retain),
        ("offline", true),
        "{kind}"
    );
}

/// A retained bonk (someone used `mosquitto_pub -r`) is never performed on (re)connect.
async fn retained_bonks_are_not_replayed(kind: BrokerKind) {
    let broker = TestBroker::start(kind);
    let sender = common::probe(&broker.url(), &[]).await;
    sender
        .publish("bonker/bonk/payments", bonk("retained", "critical"), true)
        .await;
    let mut acks = common::probe(&broker.url(), &["bonker/desk/erin/ack"]).await;
    let desk = TestDesk::start(settings(&broker.url(), "erin", &["payments"])).await;
    let ack = acks.next().await;
    assert_eq!(
        outcome(&ack),
        ("retained".into(), "expired".into()),
        "{kind}"
    );
    assert!(
        ack.json()["detail"]
            .as_str()
            .unwrap_or("")
            .contains("mosquitto_pub -r -n")
    );
    assert!(desk.bonk_moves(REST).is_empty());
    desk.stop().await;
}

/// The broker restarts (losing everything, as the bonker broker and a mosquitto without
/// persistence do): the desk reconnects on its own, announces itself again and bonks.
async fn the_desk_comes_back_after_a_broker_restart(kind: BrokerKind) {
    let mut broker = TestBroker::start(kind);
    let desk = TestDesk::start(settings(&broker.url(), "ivy", &["payments"])).await;
    broker.restart();
    let mut status = common::probe(&broker.url(), &["bonker/desk/ivy/status"]).await;
    status.next_on(|m| m.text() == "online").await;
    let mut acks = common::probe(&broker.url(), &["bonker/desk/ivy/ack"]).await;
    let sender = common::probe(&broker.url(), &[]).await;
    sender
        .publish(
            "bonker/bonk/payments",
            bonk("after-restart", "critical"),
            false,
        )
        .await;
    assert_eq!(
        outcome(&acks.next().await),
        ("after-restart".into(), "bonked".into()),
        "{kind}"
    );
    desk.stop().await;
}

/// The advice of a retained bonk's `expired` ack, followed to the letter with `mosquitto_pub`:
/// the retained bonk is gone (a desk that connects later gets nothing), and the zero-length message
/// that cleared it — delivered to the live desk as an ordinary message — bonks nobody.
async fn clearing_a_retained_bonk_as_advised_bonks_nobody(kind: BrokerKind) {
    let broker = TestBroker::start(kind);
    let sender = common::probe(&broker.url(), &[]).await;
    sender
        .publish("bonker/bonk/payments", bonk("retained", "critical"), true)
        .await;
    let mut acks = common::probe(&broker.url(), &["bonker/desk/+/ack"]).await;
    let erin = TestDesk::start(settings(&broker.url(), "erin", &["payments"])).await;
    let ack = acks.next().await;
    assert_eq!(
        outcome(&ack),
        ("retained".into(), "expired".into()),
        "{kind}"
    );
    let detail = ack.json()["detail"].as_str().unwrap_or_default().to_owned();
    let advice = detail
        .split_once("mosquitto_pub ")
        .map(|(_, args)| args.to_owned())
        .unwrap_or_else(|| panic!("no mosquitto_pub advice in {detail:?}"));
    let port = broker.port().to_string();
    let status = std::process::Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port, "-q", "1"])
        .args(advice.split_whitespace())
        .status()
        .expect("mosquitto_pub runs");
    assert!(status.success(), "{kind}: mosquitto_pub {advice}");
    // The next ack is the sentinel's: the clearing message was not acked, nor performed.
    sender
        .publish(
            "bonker/bonk/payments",
            bonk("after-clearing", "info"),
            false,
        )
        .await;
    assert_eq!(
        outcome(&acks.next().await),
        ("after-clearing".into(), "bonked".into()),
        "{kind}"
    );
    assert_eq!(
        erin.bonk_moves(REST).len(),
        1,
        "{kind}: only the sentinel moved"
    );
    // A desk that connects now is not offered the retained bonk any more.
    let fay = TestDesk::start(settings(&broker.url(), "fay", &["payments"])).await;
    sender
        .publish("bonker/bonk/payments", bonk("for-fay", "info"), false)
        .await;
    let first_of_fay = loop {
        let ack = acks.next().await;
        if ack.json()["desk"] == "fay" {
            break ack;
        }
    };
    assert_eq!(
        outcome(&first_of_fay),
        ("for-fay".into(), "bonked".into()),
        "{kind}: the retained bonk was still there"
    );
    fay.stop().await;
    erin.stop().await;
}

bonker_tests::for_both_brokers!(
    the_desk_comes_back_after_a_broker_restart,
    bonks_published_during_a_network_drop_are_performed,
    watched_namespace_bonks_once,
    unwatched_namespace_is_ignored,
    every_namespace_and_the_desk_topic,
    duplicates_are_acked_not_performed,
    bonks_over_the_rate_limit_are_acked_rate_limited,
    stale_bonks_expire,
    bad_payloads_never_stop_the_agent,
    bonks_published_while_away_are_performed_on_return,
    status_and_health_are_retained,
    retained_bonks_are_not_replayed,
    clearing_a_retained_bonk_as_advised_bonks_nobody,
);
