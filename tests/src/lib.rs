//! The fleet's test harness: real brokers, real processes, real MQTT clients — with helpers that
//! make each test read as the behaviour it checks.
//!
//! Every crate's integration tests use this (as a dev-dependency), and the end-to-end tests in
//! `tests/tests/` are built on it:
//! - [`broker::TestBroker`]: the bonker broker or Debian's mosquitto as a child process on a free
//!   loopback port, killable (`kill -9`) and restartable on the same port;
//! - [`probe::Probe`]: an MQTT client that subscribes, publishes with PUBACK, and awaits messages
//!   with a deadline — tests wait for events, never for time;
//! - [`alertmanager::TestAlertmanager`]: Debian's Alertmanager with a webhook route, alerts
//!   injected with `amtool alert add`, optionally clustered as an HA pair;
//! - [`prometheus`]: Debian's Prometheus evaluating the shipped rules against a test exporter
//!   that serves kube-state-metrics, cAdvisor and node-exporter series;
//! - [`proxy::RoundRobinProxy`]: a Kubernetes Service in miniature, in front of gateway replicas;
//!   [`proxy::CuttableLink`]: a WAN link that can be cut and restored;
//! - [`bridge::TestBridge`]: an office mosquitto bridged to the cluster broker across such a link;
//! - [`tls::TestCa`]: a throw-away CA and server certificate for TLS tests;
//! - [`homeassistant::TestHomeAssistant`]: a real Home Assistant with its MQTT integration on the
//!   test broker, its entities' states streamed back over MQTT;
//! - [`sse::SseStream`]: a Server-Sent Events reader that splits a stream as a browser does;
//! - [`webhook`]: Alertmanager webhook bodies for tests that post to the gateway themselves;
//! - [`guides`]: the configuration the user guides recommend, read from `docs/`;
//! - [`measure`]: resident memory of child processes, for soak and bad-input tests;
//! - [`process`]: locating the workspace's binaries and running them as children that are killed
//!   when the test ends, whatever happens.
//!
//! Only loopback addresses are ever used.

pub mod alertmanager;
pub mod bridge;
pub mod broker;
pub mod fleet;
pub mod guides;
pub mod homeassistant;
pub mod measure;
pub mod probe;
pub mod process;
pub mod prometheus;
pub mod proxy;
pub mod sse;
pub mod tls;
pub mod webhook;

pub use alertmanager::{AlertmanagerOptions, TestAlertmanager};
pub use bridge::TestBridge;
pub use broker::{BrokerKind, BrokerOptions, TestBroker};
pub use fleet::{AckTally, AgentProcess, GatewayProcess};
pub use probe::{Message, Probe, ProbeOptions};
pub use process::{ChildProcess, binary, free_port};
pub use proxy::{CuttableLink, RoundRobinProxy, StallableLink};
pub use sse::{SseEvent, SseStream};
pub use tls::TestCa;

/// The default deadline for awaiting a message or a state: generous, because CI machines are
/// slow and a test waits only as long as the event takes.
pub const DEADLINE: std::time::Duration = std::time::Duration::from_secs(15);

/// Turns each named `async fn(BrokerKind)` into two tests, `bonker_broker::<name>` and
/// `mosquitto::<name>`: every MQTT behaviour the fleet relies on is tested against both brokers.
#[macro_export]
macro_rules! for_both_brokers {
    ($($name:ident),* $(,)?) => {
        mod bonker_broker {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $name() {
                    super::$name($crate::BrokerKind::Bonker).await;
                }
            )*
        }
        mod mosquitto {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $name() {
                    super::$name($crate::BrokerKind::Mosquitto).await;
                }
            )*
        }
    };
}
