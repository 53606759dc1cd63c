//! An office broker bridged to the cluster broker: Debian's mosquitto with a bridge `connection`
//! block (the one `docs/brokers.md` recommends), reaching the cluster broker through a
//! [`CuttableLink`], so that a test can cut the WAN between the two and restore it.

use std::net::SocketAddr;

use crate::broker::{BrokerKind, BrokerOptions, TestBroker};
use crate::guides;
use crate::proxy::CuttableLink;

/// The office broker, its bridge, and the link the bridge crosses. Both stop when dropped.
#[derive(Debug)]
pub struct TestBridge {
    office: TestBroker,
    link: CuttableLink,
    state_topic: String,
}

impl TestBridge {
    /// Starts a link to the cluster broker at `cluster`, then an office mosquitto whose bridge is
    /// configured with `connection` — a mosquitto.conf `connection` block — its `address` pointed
    /// at the link. Returns as soon as the office broker listens; await [`TestBridge::state_topic`]
    /// for the bridge itself.
    pub async fn start(cluster: SocketAddr, connection: &str) -> TestBridge {
        let link = CuttableLink::start(cluster).await;
        let connection = guides::with_setting(connection, "address", &link.addr().to_string());
        let remote_clientid = guides::setting(&connection, "remote_clientid")
            .split_whitespace()
            .nth(1)
            .expect("remote_clientid has a value")
            .to_owned();
        let office = TestBroker::start_with(
            BrokerKind::Mosquitto,
            BrokerOptions {
                // The bridge's connects, disconnects and refusals are logged as notices.
                mosquitto_config: Some(format!("log_type notice\n{connection}")),
                ..Default::default()
            },
        );
        TestBridge {
            office,
            link,
            state_topic: format!("$SYS/broker/connection/{remote_clientid}/state"),
        }
    }

    /// The office broker, where the desks connect.
    pub fn office(&self) -> &TestBroker {
        &self.office
    }

    /// The link between the bridge and the cluster broker.
    pub fn link(&self) -> &CuttableLink {
        &self.link
    }

    /// `$SYS/broker/connection/<remote_clientid>/state`, mosquitto's bridge notification: retained
    /// `1` on both brokers once the bridge is connected; `0` on the cluster broker (the bridge's
    /// last will) as soon as its connection drops.
    pub fn state_topic(&self) -> &str {
        &self.state_topic
    }
}
