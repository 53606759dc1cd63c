//! Every MQTT topic bonker publishes or subscribes to, spelled in exactly one place.
//!
//! | topic                          | published by                     | QoS / retained |
//! |--------------------------------|----------------------------------|----------------|
//! | `<prefix>/bonk/<namespace>`    | gateway, watcher, CLI, people     | 1 / no         |
//! | `<prefix>/desk/<desk>/bonk`    | the same, to bonk one desk        | 1 / no         |
//! | `<prefix>/desk/<desk>/ack`     | agent, one per bonk received      | 1 / no         |
//! | `<prefix>/desk/<desk>/status`  | agent; last will `offline`        | 1 / retained   |
//! | `<prefix>/desk/<desk>/health`  | agent, on connect and periodically| 1 / retained   |
//! | `<prefix>/desk/<desk>/last_bonk` | agent, the last `bonked` ack (Home Assistant on) | 1 / retained |
//!
//! Topics are built only from validated names ([`Namespace`], [`DeskId`], [`Prefix`]), so a topic
//! built here can never escape its level or contain a wildcard. [`Topics::route`] is the inverse:
//! it classifies an incoming topic so that subscribers never split strings themselves.

use crate::names::{DeskId, Namespace, Prefix, PrefixFilter};

/// How a kind of message is delivered: its MQTT QoS and whether the broker retains it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// MQTT QoS level (0, 1 or 2).
    pub qos: u8,
    /// Whether the message is published with the retain flag.
    pub retain: bool,
}

/// Bonks, to a namespace or a desk: QoS 1, never retained (a retained bonk would bonk every desk
/// that connects later).
pub const BONK_DELIVERY: Delivery = Delivery {
    qos: 1,
    retain: false,
};
/// Acks: QoS 1, not retained.
pub const ACK_DELIVERY: Delivery = Delivery {
    qos: 1,
    retain: false,
};
/// Desk status (`online` / `offline`): QoS 1, retained, also the agent's last will.
pub const STATUS_DELIVERY: Delivery = Delivery {
    qos: 1,
    retain: true,
};
/// Desk health: QoS 1, retained so a fresh subscriber sees the latest report at once.
pub const HEALTH_DELIVERY: Delivery = Delivery {
    qos: 1,
    retain: true,
};
/// A desk's last performed bonk: QoS 1, retained, so Home Assistant's "Last bonk" sensors read it
/// after a restart — and have nothing to read (unknown) before the desk's first bonk.
pub const LAST_BONK_DELIVERY: Delivery = Delivery {
    qos: 1,
    retain: true,
};

const BONK: &str = "bonk";
const DESK: &str = "desk";
const ACK: &str = "ack";
const STATUS: &str = "status";
const HEALTH: &str = "health";
const LAST_BONK: &str = "last_bonk";

/// Builds topics under one concrete prefix.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Topics {
    prefix: Prefix,
}

impl Topics {
    /// Topics under `prefix`.
    pub fn new(prefix: Prefix) -> Self {
        Self { prefix }
    }

    /// The prefix these topics live under.
    pub fn prefix(&self) -> &Prefix {
        &self.prefix
    }

    /// `<prefix>/bonk/<namespace>`: bonks every desk watching `namespace`.
    pub fn namespace_bonk(&self, namespace: &Namespace) -> String {
        format!("{}/{BONK}/{namespace}", self.prefix)
    }

    /// `<prefix>/desk/<desk>/bonk`: bonks one desk.
    pub fn desk_bonk(&self, desk: &DeskId) -> String {
        self.desk_topic(desk, BONK)
    }

    /// `<prefix>/desk/<desk>/ack`: the desk's acknowledgements.
    pub fn desk_ack(&self, desk: &DeskId) -> String {
        self.desk_topic(desk, ACK)
    }

    /// `<prefix>/desk/<desk>/status`: `online` / `offline`, retained.
    pub fn desk_status(&self, desk: &DeskId) -> String {
        self.desk_topic(desk, STATUS)
    }

    /// `<prefix>/desk/<desk>/health`: the desk's health report, retained.
    pub fn desk_health(&self, desk: &DeskId) -> String {
        self.desk_topic(desk, HEALTH)
    }

    /// `<prefix>/desk/<desk>/last_bonk`: the ack of the desk's last performed bonk, retained;
    /// absent until its first bonk.
    pub fn desk_last_bonk(&self, desk: &DeskId) -> String {
        self.desk_topic(desk, LAST_BONK)
    }

    fn desk_topic(&self, desk: &DeskId, leaf: &str) -> String {
        format!("{}/{DESK}/{desk}/{leaf}", self.prefix)
    }

    /// `<prefix>/bonk/+`: every namespace bonk.
    pub fn all_namespace_bonks(&self) -> String {
        format!("{}/{BONK}/+", self.prefix)
    }

    /// `<prefix>/desk/+/ack`: every desk's acks.
    pub fn all_acks(&self) -> String {
        format!("{}/{DESK}/+/{ACK}", self.prefix)
    }

    /// `<prefix>/desk/+/status`: every desk's status.
    pub fn all_statuses(&self) -> String {
        format!("{}/{DESK}/+/{STATUS}", self.prefix)
    }

    /// `<prefix>/desk/+/health`: every desk's health.
    pub fn all_health(&self) -> String {
        format!("{}/{DESK}/+/{HEALTH}", self.prefix)
    }

    /// `<prefix>/desk/+/bonk`: every desk bonk (for observers such as `bonker tail`).
    pub fn all_desk_bonks(&self) -> String {
        format!("{}/{DESK}/+/{BONK}", self.prefix)
    }

    /// Classifies `topic`, or `None` when it is not one of bonker's topics under this prefix.
    pub fn route(&self, topic: &str) -> Option<Route> {
        let rest = topic
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix('/')?;
        route_suffix(rest)
    }
}

/// Subscription filters for bonks, under a prefix that may hold `+` levels (one agent watching
/// several clusters that share a broker).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BonkFilters {
    prefix: PrefixFilter,
}

impl BonkFilters {
    /// Filters under `prefix`.
    pub fn new(prefix: PrefixFilter) -> Self {
        Self { prefix }
    }

    /// `<prefix>/bonk/<namespace>`.
    pub fn namespace(&self, namespace: &Namespace) -> String {
        format!("{}/{BONK}/{namespace}", self.prefix)
    }

    /// `<prefix>/bonk/+`: bonks for every namespace.
    pub fn every_namespace(&self) -> String {
        format!("{}/{BONK}/+", self.prefix)
    }

    /// Classifies `topic` against the filter prefix, matching `+` levels to any one level.
    pub fn route(&self, topic: &str) -> Option<Route> {
        let mut topic_levels = topic.split('/');
        for want in self.prefix.as_str().split('/') {
            let got = topic_levels.next()?;
            if want != "+" && want != got {
                return None;
            }
        }
        let rest: Vec<&str> = topic_levels.collect();
        route_suffix(&rest.join("/"))
    }
}

/// What an incoming bonker topic is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// A bonk for every desk watching a namespace.
    NamespaceBonk(Namespace),
    /// A bonk for one desk.
    DeskBonk(DeskId),
    /// A desk's ack.
    Ack(DeskId),
    /// A desk's status.
    Status(DeskId),
    /// A desk's health.
    Health(DeskId),
    /// A desk's last performed bonk.
    LastBonk(DeskId),
}

fn route_suffix(rest: &str) -> Option<Route> {
    let levels: Vec<&str> = rest.split('/').collect();
    match levels.as_slice() {
        [BONK, namespace] => Namespace::new(*namespace).ok().map(Route::NamespaceBonk),
        [DESK, desk, leaf] => {
            let desk = DeskId::new(*desk).ok()?;
            match *leaf {
                BONK => Some(Route::DeskBonk(desk)),
                ACK => Some(Route::Ack(desk)),
                STATUS => Some(Route::Status(desk)),
                HEALTH => Some(Route::Health(desk)),
                LAST_BONK => Some(Route::LastBonk(desk)),
                _ => None,
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(s: &str) -> Namespace {
        Namespace::new(s).expect("valid namespace")
    }

    fn desk(s: &str) -> DeskId {
        DeskId::new(s).expect("valid desk")
    }

    #[test]
    fn topics_match_the_documented_table() {
        let topics = Topics::default();
        assert_eq!(
            topics.namespace_bonk(&ns("payments")),
            "bonker/bonk/payments"
        );
        assert_eq!(topics.desk_bonk(&desk("alice")), "bonker/desk/alice/bonk");
        assert_eq!(topics.desk_ack(&desk("alice")), "bonker/desk/alice/ack");
        assert_eq!(
            topics.desk_status(&desk("alice")),
            "bonker/desk/alice/status"
        );
        assert_eq!(
            topics.desk_health(&desk("alice")),
            "bonker/desk/alice/health"
        );
        assert_eq!(
            topics.desk_last_bonk(&desk("alice")),
            "bonker/desk/alice/last_bonk"
        );
        assert_eq!(topics.all_acks(), "bonker/desk/+/ack");
        assert_eq!(topics.all_statuses(), "bonker/desk/+/status");
        assert_eq!(topics.all_health(), "bonker/desk/+/health");
        assert_eq!(topics.all_namespace_bonks(), "bonker/bonk/+");
    }

    #[test]
    fn multi_level_prefixes_are_respected() {
        let topics = Topics::new(Prefix::new("bonker/prod-eu").expect("valid"));
        assert_eq!(
            topics.namespace_bonk(&ns("default")),
            "bonker/prod-eu/bonk/default"
        );
        assert_eq!(
            topics.route("bonker/prod-eu/desk/bob/ack"),
            Some(Route::Ack(desk("bob")))
        );
        assert_eq!(topics.route("bonker/desk/bob/ack"), None);
        assert_eq!(topics.route("bonker/prod-eu-2/desk/bob/ack"), None);
    }

    #[test]
    fn route_is_the_inverse_of_the_builders() {
        let topics = Topics::default();
        let d = desk("carol");
        assert_eq!(
            topics.route(&topics.namespace_bonk(&ns("x"))),
            Some(Route::NamespaceBonk(ns("x")))
        );
        assert_eq!(
            topics.route(&topics.desk_bonk(&d)),
            Some(Route::DeskBonk(d.clone()))
        );
        assert_eq!(
            topics.route(&topics.desk_status(&d)),
            Some(Route::Status(d.clone()))
        );
        assert_eq!(
            topics.route(&topics.desk_health(&d)),
            Some(Route::Health(d.clone()))
        );
        assert_eq!(
            topics.route(&topics.desk_last_bonk(&d)),
            Some(Route::LastBonk(d))
        );
        assert_eq!(topics.route("bonker/bonk/Bad_NS"), None);
        assert_eq!(topics.route("bonker/desk/alice/other"), None);
        assert_eq!(topics.route("bonker/bonk/a/b"), None);
        assert_eq!(topics.route("other/bonk/a"), None);
    }

    #[test]
    fn wildcard_prefix_filters_match_any_cluster_level() {
        let filters = BonkFilters::new(PrefixFilter::new("bonker/+").expect("valid"));
        assert_eq!(filters.namespace(&ns("payments")), "bonker/+/bonk/payments");
        assert_eq!(filters.every_namespace(), "bonker/+/bonk/+");
        assert_eq!(
            filters.route("bonker/prod-eu/bonk/payments"),
            Some(Route::NamespaceBonk(ns("payments")))
        );
        assert_eq!(filters.route("bonker/bonk/payments"), None);
        assert_eq!(filters.route("other/prod/bonk/payments"), None);
    }
}
