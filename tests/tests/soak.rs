//! Soak: a steady stream of Alertmanager notifications through a real gateway to 50 desks, with
//! the resident memory of the gateway, the broker and every agent sampled as it runs. Memory must
//! level off: what the gateway and the desks remember is bounded by design (dedupe windows, the
//! fleet view), so after warm-up the series may only wobble.
//!
//! CI runs it for 140 s: long enough for the gateway to fill what it remembers (the fleet view's
//! 10,000 bonks and the dedupe window, capped here at 10,000 ids, are full after 100 s at 100/s),
//! so the run shows its memory level off at those caps rather than on the way to them. A desk's
//! dedupe memory (10,000 ids at 2 bonks/s per desk) and the bonker broker's filter logs (1 MiB
//! at 1.4 KB/s per namespace) fill only in the long run; in CI their growth is held to a bound.
//! The figures in docs/reliability.md come from the full run:
//!
//! ```sh
//! BONKER_SOAK_S=600 cargo test -p bonker-tests --test soak -- --nocapture
//! ```
//!
//! Knobs: `BONKER_SOAK_S` (duration, default 140), `BONKER_SOAK_RATE` (notifications per second,
//! default 100), `BONKER_SOAK_DESKS` (default 50), `BONKER_SOAK_SAMPLE_S` (sampling interval,
//! default 10 s, or a tenth of a short run), `BONKER_SOAK_BROKER` (`bonker` or `mosquitto`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bonker_tests::measure::{load_average, rss_kib};
use bonker_tests::{AgentProcess, BrokerKind, GatewayProcess, Probe, TestBroker};
use serde_json::json;

/// The gateway's dedupe window in the soak (production: 100,000 ids, about 28 MB more), so that
/// its memory levels off within the run.
const DEDUPE_CAP: usize = 10_000;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One memory sample, in KiB.
#[derive(Debug, Clone)]
struct Sample {
    at_s: u64,
    gateway: u64,
    broker: u64,
    agents_total: u64,
    agent_max: u64,
    sent: u64,
    acked: u64,
}

fn sample(
    started: Instant,
    gateway: u32,
    broker: u32,
    agents: &[u32],
    sent: u64,
    acked: u64,
) -> Sample {
    let agent_rss: Vec<u64> = agents.iter().filter_map(|pid| rss_kib(*pid)).collect();
    assert_eq!(
        agent_rss.len(),
        agents.len(),
        "an agent died during the soak"
    );
    Sample {
        at_s: started.elapsed().as_secs(),
        gateway: rss_kib(gateway).expect("the gateway died during the soak"),
        broker: rss_kib(broker).expect("the broker died during the soak"),
        agents_total: agent_rss.iter().sum(),
        agent_max: agent_rss.iter().copied().max().unwrap_or(0),
        sent,
        acked,
    }
}

fn notification(n: u64, desks: u64) -> String {
    json!({
        "version": "4", "status": "firing", "receiver": "bonker",
        "groupKey": format!("{{}}:{{alertname=\"OOMKilled\", pod=\"soak-{n}\"}}"),
        "alerts": [{
            "status": "firing",
            "labels": {"alertname": "OOMKilled", "severity": "critical",
                       "namespace": format!("ns-{:02}", n % desks), "pod": format!("soak-{n}"),
                       "container": "app", "reason": "OOMKilled"},
            "annotations": {"summary": format!("soak alert {n}")},
            "startsAt": chrono::Utc::now().to_rfc3339(),
            "endsAt": "0001-01-01T00:00:00Z",
            "fingerprint": format!("{n:016x}"),
        }],
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn steady_bonks_to_fifty_desks_with_bounded_memory() {
    let duration = Duration::from_secs(env_u64("BONKER_SOAK_S", 140));
    let rate = env_u64("BONKER_SOAK_RATE", 100).max(1);
    let desks = env_u64("BONKER_SOAK_DESKS", 50).max(1);
    let sample_every = Duration::from_secs(env_u64(
        "BONKER_SOAK_SAMPLE_S",
        (duration.as_secs() / 10).clamp(2, 10),
    ));
    let kind = match std::env::var("BONKER_SOAK_BROKER").as_deref() {
        Ok("mosquitto") => BrokerKind::Mosquitto,
        _ => BrokerKind::Bonker,
    };
    let load_before = load_average();
    let broker = TestBroker::start(kind);
    let url = broker.url();

    // Acks, counted by outcome as they arrive.
    let mut acks = Probe::connect(&url, &["bonker/desk/+/ack"]).await;
    let acked = Arc::new(AtomicU64::new(0));
    let outcomes: Arc<std::sync::Mutex<BTreeMap<String, u64>>> = Arc::default();
    let counter = {
        let acked = acked.clone();
        let outcomes = outcomes.clone();
        tokio::spawn(async move {
            while let Some(message) = acks.next_within(Duration::from_secs(3600)).await {
                let outcome = message.json()["outcome"].as_str().unwrap_or("?").to_owned();
                if let Ok(mut outcomes) = outcomes.lock() {
                    *outcomes.entry(outcome).or_default() += 1;
                }
                acked.fetch_add(1, Ordering::SeqCst);
            }
        })
    };

    let env = [
        ("BONKER_RATE_LIMIT__MAX_BONKS", "100000"),
        ("BONKER_SERVO__STROKE_MS", "10"),
        ("BONKER_LOG", "warn"),
    ];
    let mut starting = Vec::new();
    for n in 0..desks {
        let url = url.clone();
        starting.push(tokio::spawn(async move {
            let desk = format!("soak-{n:02}");
            let namespace = format!("ns-{n:02}");
            AgentProcess::start_with(&url, &desk, &[&namespace], &[], &env, Default::default())
                .await
        }));
    }
    let mut agents = Vec::new();
    for agent in starting {
        agents.push(agent.await.expect("an agent started"));
    }
    let mut gateway = GatewayProcess::start_with(
        &url,
        &[],
        &[
            ("BONKER_LOG", "warn"),
            ("BONKER_DEDUPE__MAX_ENTRIES", &DEDUPE_CAP.to_string()),
        ],
    )
    .await;
    let agent_pids: Vec<u32> = agents.iter_mut().map(|a| a.process().pid()).collect();
    let gateway_pid = gateway.process().pid();
    let broker_pid = broker.pid().expect("broker running");

    // The load: `rate` notifications per second, each one alert for one desk's namespace.
    let sent = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let client = reqwest::Client::new();
    let webhook = format!("{}/webhook", gateway.url());
    let started = Instant::now();
    let mut samples = vec![sample(started, gateway_pid, broker_pid, &agent_pids, 0, 0)];
    let mut next_sample = started + sample_every;
    let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut n = 0u64;
    let mut requests = tokio::task::JoinSet::new();
    while started.elapsed() < duration {
        ticker.tick().await;
        let body = notification(n, desks);
        n += 1;
        let client = client.clone();
        let webhook = webhook.clone();
        let sent_counter = sent.clone();
        let failed_counter = failed.clone();
        requests.spawn(async move {
            let ok = client
                .post(webhook)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                sent_counter.fetch_add(1, Ordering::SeqCst);
            } else {
                failed_counter.fetch_add(1, Ordering::SeqCst);
            }
        });
        while requests.try_join_next().is_some() {}
        if Instant::now() >= next_sample {
            next_sample += sample_every;
            samples.push(sample(
                started,
                gateway_pid,
                broker_pid,
                &agent_pids,
                sent.load(Ordering::SeqCst),
                acked.load(Ordering::SeqCst),
            ));
        }
    }
    while requests.join_next().await.is_some() {}
    let elapsed = started.elapsed();
    let total_sent = sent.load(Ordering::SeqCst);
    // Every notification bonks its one desk once.
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.load(Ordering::SeqCst) < total_sent && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    samples.push(sample(
        started,
        gateway_pid,
        broker_pid,
        &agent_pids,
        total_sent,
        acked.load(Ordering::SeqCst),
    ));
    counter.abort();
    let outcomes = outcomes.lock().map(|o| o.clone()).unwrap_or_default();

    eprintln!(
        "soak ({kind}): {total_sent} notifications in {elapsed:.1?} ({:.1}/s) to {desks} desks, \
         {} refused; acks {outcomes:?}; load average before {load_before:?}, after {:?}",
        total_sent as f64 / elapsed.as_secs_f64(),
        failed.load(Ordering::SeqCst),
        load_average()
    );
    eprintln!("   t(s)   sent  acked  gateway KiB  broker KiB  agents KiB (total / max)");
    for s in &samples {
        eprintln!(
            "{:>7} {:>6} {:>6} {:>12} {:>11} {:>12} / {}",
            s.at_s, s.sent, s.acked, s.gateway, s.broker, s.agents_total, s.agent_max
        );
    }
    if let Ok(path) = std::env::var("BONKER_SOAK_REPORT") {
        let mut text = format!(
            "| t (s) | notifications | acks | gateway RSS (KiB) | {kind} RSS (KiB) | agents RSS, total (KiB) | largest agent (KiB) |\n|---|---|---|---|---|---|---|\n"
        );
        for s in &samples {
            text.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} |\n",
                s.at_s, s.sent, s.acked, s.gateway, s.broker, s.agents_total, s.agent_max
            ));
        }
        let _ = std::fs::write(path, text);
    }

    assert_eq!(failed.load(Ordering::SeqCst), 0, "notifications refused");
    assert!(
        total_sent as f64 >= 0.9 * rate as f64 * duration.as_secs_f64(),
        "the load generator fell behind: {total_sent} in {elapsed:?}"
    );
    assert_eq!(
        acked.load(Ordering::SeqCst),
        total_sent,
        "every notification bonked its desk exactly once: {outcomes:?}"
    );
    assert_eq!(
        outcomes.get("bonked").copied().unwrap_or(0),
        total_sent,
        "{outcomes:?}"
    );
    // Memory: once the gateway's caps are full (its fleet view at 10,000 bonks, its dedupe window
    // here at 10,000 ids), each series may only wobble. A run too short to fill them (a knob set
    // by hand) compares from a third of the way in instead; the default run must fill them.
    let caps_full = bonker_gateway::fleet::MAX_TRACKED_BONKS.max(DEDUPE_CAP) as u64 * 11 / 10;
    let after_caps = samples.iter().position(|s| s.sent >= caps_full);
    if std::env::var("BONKER_SOAK_S").is_err() {
        assert!(
            after_caps.is_some_and(|at| at + 1 < samples.len()),
            "the default soak must run past the gateway's caps ({caps_full} notifications): {total_sent} sent"
        );
    }
    let reference = &samples[after_caps
        .unwrap_or(samples.len() / 3)
        .max(1)
        .min(samples.len() - 1)];
    let last = samples.last().expect("samples");
    let (from_s, to_s) = (reference.at_s, last.at_s);
    let within = |name: &str, from: u64, to: u64, slack_kib: u64| {
        assert!(
            to <= from + from * 15 / 100 + slack_kib,
            "{name} grew from {from} KiB at {from_s} s to {to} KiB at {to_s} s"
        );
    };
    within("the gateway", reference.gateway, last.gateway, 4 * 1024);
    // mosquitto holds only what is queued for someone. rumqttd keeps every message in its
    // filter's log until the log wraps, delivered or not, so the bonker broker grows until each
    // filter with traffic has a full log — here one per desk's namespace plus the ack, health and
    // status filters — and no further (broker_cli.rs shows one log levelling off). Allowed: those
    // logs, with half again for rumqttd's per-message bookkeeping.
    let broker_slack_kib = match kind {
        BrokerKind::Mosquitto => 4 * 1024,
        BrokerKind::Bonker => {
            let log_kib = (bonker_broker::settings::FILTER_LOG_BYTES / 1024) as u64;
            (desks + 3) * log_kib * 3 / 2
        }
    };
    within(
        &kind.to_string(),
        reference.broker,
        last.broker,
        broker_slack_kib,
    );
    within(
        "the largest agent",
        reference.agent_max,
        last.agent_max,
        2 * 1024,
    );
    drop(agents);
}
