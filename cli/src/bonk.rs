//! `bonker bonk`: bonk a namespace or a desk by hand, then wait for the desks' acks.
//!
//! Which desks should answer is read from their retained status and health first, so that a
//! timeout can say exactly which desks stayed silent. Desk names come from the network, so every
//! line goes out through [`terminal::print_line`].

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Result, bail};
use bonker_protocol::{Ack, Bonk, DeskId, Namespace, Route, Severity, Source, Topics};
use tokio::time::Instant;

use crate::fleet;
use crate::session::Session;
use crate::terminal;

/// What to bonk.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    Namespace(Namespace),
    Desk(DeskId),
}

/// `bonker bonk` options.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub(crate) target: Target,
    pub(crate) severity: Severity,
    pub(crate) message: Option<String>,
    pub(crate) wait: Option<Duration>,
}

/// Publishes the bonk and reports the acks. Fails (exit code 1) when an expected desk did not
/// answer in time.
pub(crate) async fn run(mut session: Session, topics: &Topics, request: Request) -> Result<()> {
    let mut bonk = Bonk::new(Source::Cli, request.severity);
    bonk.summary = request.message.clone();
    let (topic, label) = match &request.target {
        Target::Namespace(namespace) => {
            bonk.namespace = Some(namespace.to_string());
            (
                topics.namespace_bonk(namespace),
                format!("namespace {namespace}"),
            )
        }
        Target::Desk(desk) => (topics.desk_bonk(desk), format!("desk {desk}")),
    };
    let Some(wait) = request.wait else {
        session.publish(&topic, bonk.to_json(), false).await?;
        terminal::print_line(&format!("bonk {} sent to {label}", bonk.id));
        session.disconnect().await;
        return Ok(());
    };

    // Who should answer: online desks watching the namespace, or the one desk.
    let desks = fleet::read(&mut session, topics).await?;
    let expected: BTreeSet<String> = match &request.target {
        Target::Namespace(namespace) => desks
            .values()
            .filter(|d| d.online && d.watches(namespace.as_str()))
            .map(|d| d.desk.clone())
            .collect(),
        Target::Desk(desk) => BTreeSet::from([desk.to_string()]),
    };
    session.subscribe(&[topics.all_acks()]).await?;
    session.publish(&topic, bonk.to_json(), false).await?;
    let sent = Instant::now();
    terminal::print_line(&format!(
        "bonk {} sent to {label} ({}); waiting up to {}s for {}",
        bonk.id,
        request.severity,
        wait.as_secs(),
        if expected.is_empty() {
            "any desk".to_owned()
        } else {
            expected.iter().cloned().collect::<Vec<_>>().join(", ")
        }
    ));

    let deadline = sent + wait;
    let mut answered = BTreeSet::new();
    while expected.is_empty() || !expected.is_subset(&answered) {
        let Some(message) = session.next_before(deadline).await? else {
            break;
        };
        let Some(Route::Ack(desk)) = topics.route(&message.topic) else {
            continue;
        };
        let Ok(ack) = serde_json::from_slice::<Ack>(&message.payload) else {
            continue;
        };
        if ack.bonk_id != bonk.id {
            continue;
        }
        let latency = sent.elapsed();
        terminal::print_line(&format!(
            "  {desk:<16} {:<12} {:>6} ms",
            ack.outcome.as_str(),
            latency.as_millis()
        ));
        answered.insert(desk.to_string());
    }
    session.disconnect().await;

    let missing: Vec<String> = expected.difference(&answered).cloned().collect();
    if !missing.is_empty() {
        bail!(
            "no ack within {}s from: {}",
            wait.as_secs(),
            missing.join(", ")
        );
    }
    if answered.is_empty() {
        bail!(
            "no desk acked within {}s (no online desk reports watching {label})",
            wait.as_secs()
        );
    }
    terminal::print_line(&format!("{} desk(s) acked", answered.len()));
    Ok(())
}
