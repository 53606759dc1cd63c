//! Properties that must hold for every input, not just the examples: payloads survive a round trip,
//! the lenient parser never fails, and no string — however hostile — yields a topic that escapes
//! its level or contains a wildcard.

use bonker_protocol::{
    Ack, Bonk, BonkId, DeskId, Health, Namespace, Outcome, Prefix, Route, ServoHealth, Severity,
    Source, Topics,
};
use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;

fn any_time() -> impl Strategy<Value = DateTime<Utc>> {
    (0i64..4_000_000_000, 0u32..1_000_000_000)
        .prop_map(|(s, n)| Utc.timestamp_opt(s, n).single().expect("valid timestamp"))
}

fn any_severity() -> impl Strategy<Value = Severity> {
    prop::sample::select(Severity::ALL.to_vec())
}

fn any_source() -> impl Strategy<Value = Source> {
    prop::sample::select(vec![
        Source::Alertmanager,
        Source::Manual,
        Source::Homeassistant,
        Source::Cli,
        Source::Http,
        Source::Watcher,
    ])
}

fn any_desk() -> impl Strategy<Value = DeskId> {
    "[A-Za-z0-9_-]{1,64}".prop_map(|s| DeskId::new(s).expect("valid desk"))
}

prop_compose! {
    fn any_bonk()(
        id in "[ -~]{1,64}",
        source in any_source(),
        severity in any_severity(),
        namespace in proptest::option::of(".{0,40}"),
        pod in proptest::option::of(".{0,40}"),
        summary in proptest::option::of(".{0,80}"),
        fired_at in proptest::option::of(any_time()),
        sent_at in proptest::option::of(any_time()),
        count in 1u32..10_000,
    ) -> Bonk {
        let mut bonk = Bonk::new(source, severity);
        bonk.id = BonkId::from_received(&id).unwrap_or_else(BonkId::random);
        bonk.namespace = namespace;
        bonk.pod = pod;
        bonk.summary = summary;
        bonk.fired_at = fired_at;
        bonk.sent_at = sent_at;
        bonk.count = count;
        bonk
    }
}

/// True when `topic` has exactly the levels expected and none is a wildcard or empty.
fn is_concrete(topic: &str, levels: usize) -> bool {
    let parts: Vec<&str> = topic.split('/').collect();
    parts.len() == levels
        && parts
            .iter()
            .all(|l| !l.is_empty() && !l.contains('+') && !l.contains('#') && !l.contains('\0'))
}

proptest! {
    #[test]
    fn bonks_round_trip_through_json(bonk in any_bonk()) {
        let back: Bonk = serde_json::from_slice(&bonk.to_json()).expect("parses");
        prop_assert_eq!(&back, &bonk);
        // The lenient parser agrees with serde on well-formed payloads.
        let lenient = Bonk::parse_lenient(&bonk.to_json());
        prop_assert!(lenient.warnings.is_empty(), "{:?}", lenient.warnings);
        prop_assert_eq!(lenient.bonk, bonk);
    }

    #[test]
    fn acks_and_health_round_trip(
        desk in any_desk(),
        outcome in prop::sample::select(Outcome::ALL.to_vec()),
        received_at in any_time(),
        finished_at in any_time(),
        severity in proptest::option::of(any_severity()),
        namespaces in prop::collection::vec("[a-z0-9-]{1,20}", 0..5),
        temp in proptest::option::of(-40.0f64..120.0),
    ) {
        let ack = Ack {
            version: 1,
            bonk_id: BonkId::random(),
            desk: desk.clone(),
            outcome,
            received_at,
            finished_at,
            severity,
            namespace: namespaces.first().cloned(),
            pod: namespaces.get(1).cloned(),
            count: severity.map(|_| namespaces.len() as u32 + 1),
            detail: None,
        };
        let back: Ack = serde_json::from_slice(&ack.to_json()).expect("ack parses");
        prop_assert_eq!(back, ack);
        let health = Health {
            version: 1,
            desk,
            agent_version: "1.2.3".into(),
            uptime_s: 5,
            started_at: None,
            bonks_total: 7,
            last_bonk_at: Some(received_at),
            last_bonk_namespace: None,
            last_bonk_pod: None,
            servo: ServoHealth { driver: "simulated".into(), state: "rest".into(), error: None },
            namespaces,
            soc_temp_c: temp,
            bonk_delay_ms: temp.map(|t| t as i64 - 40),
            sent_at: finished_at,
        };
        let back: Health = serde_json::from_slice(&health.to_json()).expect("health parses");
        prop_assert_eq!(back, health);
    }

    #[test]
    fn the_lenient_parser_never_fails(payload in prop::collection::vec(any::<u8>(), 0..512)) {
        let parsed = Bonk::parse_lenient(&payload);
        prop_assert!(!parsed.bonk.id.as_str().is_empty());
        prop_assert!(parsed.bonk.count >= 1);
    }

    #[test]
    fn the_lenient_parser_never_fails_on_json_shaped_input(payload in r#"\{[ -~]{0,200}\}?"#) {
        let parsed = Bonk::parse_lenient(payload.as_bytes());
        prop_assert!(!parsed.bonk.id.as_str().is_empty());
    }

    #[test]
    fn no_string_yields_an_escaping_or_wildcard_topic(
        namespace in ".{0,80}",
        desk in ".{0,80}",
        prefix in ".{0,40}",
    ) {
        let topics = match Prefix::new(prefix.clone()) {
            Ok(prefix) => Topics::new(prefix),
            Err(_) => Topics::default(),
        };
        let prefix_levels = topics.prefix().as_str().split('/').count();
        prop_assert!(is_concrete(topics.prefix().as_str(), prefix_levels));
        if let Ok(namespace) = Namespace::new(namespace) {
            let topic = topics.namespace_bonk(&namespace);
            prop_assert!(is_concrete(&topic, prefix_levels + 2), "{}", topic);
            prop_assert_eq!(topics.route(&topic), Some(Route::NamespaceBonk(namespace)));
        }
        if let Ok(desk) = DeskId::new(desk) {
            for topic in [
                topics.desk_bonk(&desk),
                topics.desk_ack(&desk),
                topics.desk_status(&desk),
                topics.desk_health(&desk),
            ] {
                prop_assert!(is_concrete(&topic, prefix_levels + 3), "{}", topic);
                prop_assert!(topics.route(&topic).is_some());
            }
        }
    }

    #[test]
    fn hostile_names_are_always_rejected(
        before in "[a-z0-9]{0,10}",
        bad in prop::sample::select(vec!["/", "+", "#", "\0", " ", "\n", "\t", "$"]),
        after in "[a-z0-9]{0,10}",
    ) {
        let value = format!("{before}{bad}{after}");
        prop_assert!(Namespace::new(value.as_str()).is_err());
        prop_assert!(DeskId::new(value.as_str()).is_err());
        prop_assert!(bonker_protocol::Cluster::new(value.as_str()).is_err());
    }

    #[test]
    fn alert_ids_are_deterministic(fingerprint in "[0-9a-f]{16}", secs in 0i64..4_000_000_000) {
        let starts_at = Utc.timestamp_opt(secs, 0).single().expect("valid").to_rfc3339();
        prop_assert_eq!(
            BonkId::for_alert(&fingerprint, &starts_at),
            BonkId::for_alert(&fingerprint, &starts_at)
        );
    }
}
