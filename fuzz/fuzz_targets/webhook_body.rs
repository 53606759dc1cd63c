//! The gateway's webhook body: JSON into `Notification` (what the `/webhook` handler's extractor
//! does), then the rules that turn each firing alert into a bonk.
//!
//! The body comes from whoever can reach the gateway (with a token, if one is configured). Besides
//! never panicking, the mapping must keep its promises for any notification that parses:
//! - one planned bonk per distinct firing alert, none for resolved ones;
//! - each bonk goes to a namespace topic under the configured prefix, never anywhere a label
//!   chose (no wildcard, no extra level);
//! - each bonk's payload stays far below the broker's packet limit and is read back unchanged
//!   by the agent's parser.
#![no_main]

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use bonker_gateway::alertmanager::{AlertStatus, BonkRules, Notification};
use bonker_protocol::{Bonk, Cluster, Namespace, Severity, Topics};
use libfuzzer_sys::fuzz_target;

/// The broker packet limit bonker's clients use (`bonker_client::MAX_PACKET_BYTES`).
const MAX_PACKET_BYTES: usize = 256 * 1024;

static RULES: LazyLock<BonkRules> = LazyLock::new(|| BonkRules {
    topics: Topics::default(),
    default_namespace: Namespace::new("default").expect("a valid namespace"),
    cluster: Some(Cluster::new("fuzz").expect("a valid cluster")),
    severity_overrides: HashMap::from([("oomkilled".to_owned(), Severity::Critical)]),
    kill_alerts: HashSet::from(["oomkilled".to_owned(), "nodeoomkill".to_owned()]),
});

fuzz_target!(|data: &[u8]| {
    let Ok(notification) = serde_json::from_slice::<Notification>(data) else {
        return;
    };
    let now = chrono::Utc::now();
    let plan = RULES.plan(&notification, now);
    let firing = notification
        .alerts
        .iter()
        .filter(|a| a.status == AlertStatus::Firing)
        .count();
    assert_eq!(plan.firing, firing);
    assert_eq!(plan.resolved, notification.alerts.len() - firing);
    assert_eq!(plan.bonks.len() + plan.repeated, firing);
    for planned in &plan.bonks {
        let level = planned
            .topic
            .strip_prefix("bonker/bonk/")
            .unwrap_or_else(|| panic!("bonk on a foreign topic {:?}", planned.topic));
        assert_eq!(level, planned.topic_namespace.as_str());
        assert!(
            !level.is_empty() && !level.contains(['/', '+', '#', '\0']),
            "a label chose the topic {:?}",
            planned.topic
        );
        let wire = planned.bonk.to_json();
        assert!(
            wire.len() < MAX_PACKET_BYTES / 4,
            "a bonk payload of {} bytes",
            wire.len()
        );
        let read = Bonk::parse_lenient(&wire);
        assert!(read.warnings.is_empty(), "{:?}", read.warnings);
        assert_eq!(read.bonk, planned.bonk, "the agent reads another bonk");
    }
});
