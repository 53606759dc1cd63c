//! `docs/benchmarks.md`: the measured figures as Markdown tables, poured into a hand-written
//! template (`bench/template.md`) so that regenerating the figures keeps the explanations.
//!
//! The template names each generated part as `{{name}}`; [`render`] replaces every one it knows
//! and fails on one it does not, so a typo in the template cannot silently drop a table.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Result, bail};

use crate::delivery::Delivery;
use crate::footprint::{AgentFootprint, BinarySize};
use crate::kill_window::{Growth, KillWindow};
use crate::latency::{ClosedLoop, FLOOR_DESKS, FloorRatios, WebhookLatency, cpu_per_desk};
use crate::machine::{Load, Machine};
use crate::plot::{self, Series};
use crate::stack::{BROKER_SETTINGS_NOTE, BrokerKind};
use crate::stats::{ms, ratio};
use crate::throughput::Cell;

/// The hand-written part of the report.
pub const TEMPLATE: &str = include_str!("../template.md");

/// Targets, as the project set them for a two-core machine.
pub mod targets {
    use std::time::Duration;

    /// Webhook POST → 200, median.
    pub const WEBHOOK_P50: Duration = Duration::from_millis(1);
    /// The fleet sizes the closed loop is held to its floor at.
    pub const FLOOR_FLEETS: [usize; 2] = [100, 1000];
    /// Closed loop p50 over the floor's, at most.
    pub const OVER_FLOOR_P50: f64 = 1.3;
    /// Closed loop p99 over the floor's, at most.
    pub const OVER_FLOOR_P99: f64 = 1.5;
    /// First → last ack (p50) over the floor's first → last reply, at most.
    pub const OVER_FLOOR_SKEW: f64 = 1.3;
    /// The embedded broker's latency over mosquitto's.
    pub const BROKER_RATIO: f64 = 1.1;
    /// Alerts per second ingested.
    pub const ALERTS_PER_S: f64 = 20_000.0;
    /// Agent resident memory when idle, KiB.
    pub const AGENT_IDLE_RSS_KIB: u64 = 5 * 1024;
}

/// Everything one run measured.
#[derive(Debug, Default)]
pub struct Results {
    /// The machine.
    pub machine: Option<Machine>,
    /// When the run started (UTC, RFC 3339).
    pub date: String,
    /// Load averages before the first and after the last measurement.
    pub load_before: Option<Load>,
    /// See `load_before`.
    pub load_after: Option<Load>,
    /// The 1-minute load average as each section started: other work on the machine shows here.
    pub section_loads: Vec<(&'static str, Load)>,
    /// How long the run took.
    pub took: Duration,
    /// A quick run (small counts): not for publishing.
    pub quick: bool,
    /// Section 1.
    pub webhook: Vec<WebhookLatency>,
    /// Sections 2 and 3.
    pub closed_loop: Vec<ClosedLoop>,
    /// Section 4.
    pub throughput: Vec<Cell>,
    /// Section 5: sizes.
    pub sizes: Vec<BinarySize>,
    /// Section 5: the agent.
    pub agent: Option<AgentFootprint>,
    /// Section 6.
    pub delivery: Vec<Delivery>,
    /// Section 7.
    pub kill_window: Option<KillWindow>,
    /// The plot's file name, relative to the report.
    pub plot_file: String,
}

/// Fills the template with `results`.
pub fn render(template: &str, results: &Results) -> Result<String> {
    let mut parts: BTreeMap<&str, String> = BTreeMap::new();
    parts.insert("date", results.date.clone());
    parts.insert("machine", machine(results));
    parts.insert("targets", targets_table(results));
    parts.insert("webhook", webhook_table(&results.webhook));
    let defaults: Vec<ClosedLoop> = results
        .closed_loop
        .iter()
        .filter(|c| c.homeassistant)
        .cloned()
        .collect();
    parts.insert("closed_loop", closed_loop_table(&results.closed_loop));
    parts.insert("floor", floor_table(&results.closed_loop));
    parts.insert("brokers", broker_table(&defaults));
    parts.insert("plot", plot_link(results));
    parts.insert("throughput", throughput_table(&results.throughput));
    parts.insert(
        "footprint",
        footprint_tables(&results.sizes, results.agent.as_ref(), &results.throughput),
    );
    parts.insert("delivery", delivery_table(&results.delivery));
    parts.insert(
        "kill_window",
        kill_window_table(results.kill_window.as_ref()),
    );
    parts.insert("broker_settings", BROKER_SETTINGS_NOTE.to_owned());
    let mut out = String::with_capacity(template.len() * 2);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find("}}") else {
            bail!("an unclosed {{{{ in the template");
        };
        let name = rest[start + 2..start + end].trim();
        match parts.get(name) {
            Some(text) => out.push_str(text.trim_end()),
            None => bail!("the template names an unknown part {{{{{name}}}}}"),
        }
        rest = &rest[start + end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The plot of closed-loop latency against fleet size, both brokers, p50 and p99.
pub fn plot(closed_loop: &[ClosedLoop]) -> String {
    let closed_loop: Vec<&ClosedLoop> = closed_loop.iter().filter(|c| c.homeassistant).collect();
    let mut series = Vec::new();
    for (broker, colour, floor_colour) in [
        (BrokerKind::Bonker, "#1f77b4", "#9ecae1"),
        (BrokerKind::Mosquitto, "#e07b00", "#fdbe85"),
    ] {
        let runs: Vec<&ClosedLoop> = closed_loop
            .iter()
            .copied()
            .filter(|c| c.broker == broker)
            .collect();
        let floors: Vec<(usize, &crate::latency::FloorLoop)> = runs
            .iter()
            .filter_map(|c| Some((c.desks, c.floor.as_ref()?)))
            .collect();
        if !floors.is_empty() {
            for (label, dashed, pick) in [
                (
                    "p50",
                    false,
                    (|f: &crate::latency::FloorLoop| f.closed_loop.p50)
                        as fn(&crate::latency::FloorLoop) -> Duration,
                ),
                ("p99", true, |f: &crate::latency::FloorLoop| {
                    f.closed_loop.p99
                }),
            ] {
                series.push(Series {
                    label: format!("{} floor {label}", broker.as_str()),
                    colour: floor_colour,
                    dashed,
                    points: floors
                        .iter()
                        .map(|(desks, f)| (*desks as f64, pick(f).as_secs_f64() * 1000.0))
                        .collect(),
                });
            }
        }
        for (label, dashed, pick) in [
            (
                "p50",
                false,
                (|c: &ClosedLoop| c.closed_loop.p50) as fn(&ClosedLoop) -> Duration,
            ),
            ("p99", true, |c: &ClosedLoop| c.closed_loop.p99),
        ] {
            series.push(Series {
                label: format!("{} {label}", broker.as_str()),
                colour,
                dashed,
                points: runs
                    .iter()
                    .map(|c| (c.desks as f64, pick(c).as_secs_f64() * 1000.0))
                    .collect(),
            });
        }
    }
    plot::latency_vs_fleet(
        "Closed-loop latency against fleet size, and its floor",
        &series,
        &[],
    )
}

fn machine(results: &Results) -> String {
    let mut text = String::new();
    let load = |l: Option<Load>| l.map_or("unknown".to_owned(), |l| l.to_string());
    if let Some(m) = &results.machine {
        let _ = writeln!(text, "| | |\n|---|---|");
        let _ = writeln!(text, "| CPU | {} |", m.cpu_model);
        let _ = writeln!(text, "| cores | {} |", m.cores);
        let _ = writeln!(text, "| memory | {} MiB |", m.memory_mib);
        let _ = writeln!(text, "| kernel | Linux {} |", m.kernel);
        let _ = writeln!(text, "| compiler | {} |", m.rustc);
        let _ = writeln!(
            text,
            "| brokers | bonker-broker (rumqttd {}), {} |",
            m.rumqttd, m.mosquitto
        );
        let _ = writeln!(text, "| MQTT client | rumqttc {} |", m.rumqttc);
    }
    let _ = writeln!(
        text,
        "| load average (1 / 5 / 15 min) | {} before, {} after |",
        load(results.load_before),
        load(results.load_after)
    );
    if !results.section_loads.is_empty() {
        let loads: Vec<String> = results
            .section_loads
            .iter()
            .map(|(section, load)| format!("{section} {:.2}", load.one))
            .collect();
        let _ = writeln!(
            text,
            "| 1-minute load as each section started | {} |",
            loads.join(", ")
        );
    }
    let _ = writeln!(text, "| run took | {:.0} s |", results.took.as_secs_f64());
    if results.quick {
        let _ = writeln!(
            text,
            "\n**This was a quick run (`--quick`, small counts): its figures are not for \
             comparison.**"
        );
    }
    text
}

fn yes_no(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "met",
        Some(false) => "**missed**",
        None => "not measured",
    }
}

fn per_broker<T>(
    items: &[T],
    broker_of: impl Fn(&T) -> BrokerKind,
    describe: impl Fn(&T) -> String,
) -> String {
    let parts: Vec<String> = BrokerKind::BOTH
        .iter()
        .filter_map(|kind| {
            items
                .iter()
                .find(|i| broker_of(i) == *kind)
                .map(|i| format!("{} {}", kind.as_str(), describe(i)))
        })
        .collect();
    if parts.is_empty() {
        "–".to_owned()
    } else {
        parts.join(", ")
    }
}

fn targets_table(results: &Results) -> String {
    let mut text = String::from("| target | measured | |\n|---|---|---|\n");
    // Webhook p50.
    let met = (!results.webhook.is_empty()).then(|| {
        results
            .webhook
            .iter()
            .all(|w| w.latency.p50 <= targets::WEBHOOK_P50)
    });
    let _ = writeln!(
        text,
        "| webhook POST → 200 p50 ≤ {} ms | {} | {} |",
        ms(targets::WEBHOOK_P50),
        per_broker(
            &results.webhook,
            |w| w.broker,
            |w| format!("{} ms", ms(w.latency.p50))
        ),
        yes_no(met)
    );
    for desks in targets::FLOOR_FLEETS {
        let runs: Vec<&ClosedLoop> = results
            .closed_loop
            .iter()
            .filter(|c| c.desks == desks && c.homeassistant)
            .collect();
        let ratios: Vec<FloorRatios> = runs.iter().filter_map(|c| c.floor_ratios()).collect();
        let met = (!ratios.is_empty()).then(|| ratios.iter().all(within_floor_targets));
        let _ = writeln!(
            text,
            "| closed loop at {desks} desks within {:.1}× of its floor at p50, {:.1}× at p99, first \
             → last ack p50 within {:.1}× of the floor's | {} | {} |",
            targets::OVER_FLOOR_P50,
            targets::OVER_FLOOR_P99,
            targets::OVER_FLOOR_SKEW,
            per_broker(
                &runs,
                |c| c.broker,
                |c| match (c.floor_ratios(), &c.floor) {
                    (Some(r), Some(f)) => format!(
                        "p50 {} ({} / {} ms), p99 {} ({} / {} ms), skew {}",
                        times(Some(r.p50)),
                        ms(c.closed_loop.p50),
                        ms(f.closed_loop.p50),
                        times(Some(r.p99)),
                        ms(c.closed_loop.p99),
                        ms(f.closed_loop.p99),
                        times(r.skew_p50),
                    ),
                    _ => "no floor".to_owned(),
                }
            ),
            yes_no(met)
        );
    }
    let defaults: Vec<ClosedLoop> = results
        .closed_loop
        .iter()
        .filter(|c| c.homeassistant)
        .cloned()
        .collect();
    let ratios = broker_ratios(&defaults);
    let worst_p50 = ratios
        .iter()
        .map(|r| r.1)
        .fold(None, |a: Option<f64>, b| Some(a.map_or(b, |a| a.max(b))));
    let worst_p99 = ratios
        .iter()
        .map(|r| r.2)
        .fold(None, |a: Option<f64>, b| Some(a.map_or(b, |a| a.max(b))));
    let _ = writeln!(
        text,
        "| embedded broker within {:.1}× of mosquitto (closed loop, worst fleet size) | p50 {}, p99 {} | {} |",
        targets::BROKER_RATIO,
        worst_p50.map_or("–".to_owned(), |r| format!("{r:.2}×")),
        worst_p99.map_or("–".to_owned(), |r| format!("{r:.2}×")),
        yes_no(worst_p50.map(|r| r <= targets::BROKER_RATIO))
    );
    let best = |kind: BrokerKind| {
        results
            .throughput
            .iter()
            .filter(|c| c.spec.broker == kind && c.spec.desks > 0)
            .map(|c| c.alerts_per_s)
            .fold(None, |a: Option<f64>, b| Some(a.map_or(b, |a| a.max(b))))
    };
    let best_all = BrokerKind::BOTH
        .iter()
        .filter_map(|k| best(*k))
        .fold(None, |a: Option<f64>, b| Some(a.map_or(b, |a| a.max(b))));
    let _ = writeln!(
        text,
        "| ≥ {:.0} alerts/s ingested (desks attached, best configuration) | {} | {} |",
        targets::ALERTS_PER_S,
        BrokerKind::BOTH
            .iter()
            .filter_map(|k| best(*k).map(|v| format!("{} {v:.0}/s", k.as_str())))
            .collect::<Vec<_>>()
            .join(", "),
        yes_no(best_all.map(|v| v >= targets::ALERTS_PER_S))
    );
    let _ = writeln!(
        text,
        "| agent idle RSS ≤ {} MiB | {} | {} |",
        targets::AGENT_IDLE_RSS_KIB / 1024,
        results.agent.as_ref().map_or("–".to_owned(), |a| format!(
            "{:.2} MiB",
            mib(a.idle_rss_kib)
        )),
        yes_no(
            results
                .agent
                .as_ref()
                .map(|a| a.idle_rss_kib <= targets::AGENT_IDLE_RSS_KIB)
        )
    );
    let _ = writeln!(
        text,
        "| no lost bonks: 100 concurrent webhooks → exactly 100 bonks and 100 acks per desk | {} | {} |",
        per_broker(
            &results.delivery,
            |d| d.broker,
            |d| if d.exact() {
                "exact".to_owned()
            } else {
                "NOT exact".to_owned()
            }
        ),
        yes_no(
            (!results.delivery.is_empty()).then(|| results.delivery.iter().all(Delivery::exact))
        )
    );
    text
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn webhook_table(runs: &[WebhookLatency]) -> String {
    if runs.is_empty() {
        return "Not measured in this run.".to_owned();
    }
    let mut text = String::from(
        "| broker | desks attached | requests | p50 ms | p90 ms | p99 ms | max ms | non-200 |\n\
         |---|--:|--:|--:|--:|--:|--:|--:|\n",
    );
    for w in runs {
        let _ = writeln!(
            text,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            w.broker.as_str(),
            w.desks,
            w.latency.count,
            ms(w.latency.p50),
            ms(w.latency.p90),
            ms(w.latency.p99),
            ms(w.latency.max),
            w.failures
        );
    }
    text
}

fn closed_loop_table(runs: &[ClosedLoop]) -> String {
    if runs.is_empty() {
        return "Not measured in this run.".to_owned();
    }
    let mut text = String::from(
        "| desks | broker | rounds | POST → 200 p50 ms | closed loop p50 ms | p90 ms | p99 ms | \
         max ms | first → last ack p50 ms | p99 ms | not `bonked` | fleet online after |\n\
         |--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n",
    );
    for c in runs {
        let _ = writeln!(
            text,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} s |",
            desks_label(c),
            c.broker.as_str(),
            c.closed_loop.count,
            ms(c.webhook.p50),
            ms(c.closed_loop.p50),
            ms(c.closed_loop.p90),
            ms(c.closed_loop.p99),
            ms(c.closed_loop.max),
            ms(c.skew.p50),
            ms(c.skew.p99),
            c.not_bonked,
            c.fleet_start.as_secs_f64()
        );
    }
    text.push_str(
        "\nCPU time per round, by process (kernel accounting over the measured rounds, the pause \
         after each round included, so the trailing health reports are counted too):\n\n\
         | desks | broker | gateway ms | broker ms | desks ms | harness ms | all ms | 1-min load at start |\n\
         |--:|---|--:|--:|--:|--:|--:|--:|\n",
    );
    for c in runs {
        let cpu = |name: &str| {
            c.cpu_per_round
                .iter()
                .find(|(n, _)| n == name || (name == "broker" && n == c.broker.as_str()))
                .map(|(_, d)| *d)
        };
        let cell = |d: Option<Duration>| d.map_or("–".to_owned(), ms);
        let all: Duration = c.cpu_per_round.iter().map(|(_, d)| *d).sum();
        let _ = writeln!(
            text,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            desks_label(c),
            c.broker.as_str(),
            cell(cpu("gateway")),
            cell(cpu("broker")),
            cell(cpu("desks")),
            cell(cpu("harness")),
            ms(all),
            load_cell(c.load)
        );
    }
    text
}

fn load_cell(load: Option<f64>) -> String {
    load.map_or("–".to_owned(), |l| format!("{l:.2}"))
}

/// The fleet size, marked when the desks ran without Home Assistant.
fn desks_label(c: &ClosedLoop) -> String {
    if c.homeassistant {
        c.desks.to_string()
    } else {
        format!("{} (Home Assistant off)", c.desks)
    }
}

/// Whether one run's ratios to its floor meet the targets (a skew the floor does not have, as
/// with one desk, is not held against it).
fn within_floor_targets(r: &FloorRatios) -> bool {
    r.p50 <= targets::OVER_FLOOR_P50
        && r.p99 <= targets::OVER_FLOOR_P99
        && r.skew_p50.is_none_or(|s| s <= targets::OVER_FLOOR_SKEW)
}

/// A ratio as `1.07×`, or `–`.
fn times(ratio: Option<f64>) -> String {
    ratio.map_or("–".to_owned(), |r| format!("{r:.2}×"))
}

/// Microseconds, whole.
fn micros(duration: Option<Duration>) -> String {
    duration.map_or("–".to_owned(), |d| {
        format!("{:.0}", d.as_secs_f64() * 1e6)
    })
}

fn floor_table(runs: &[ClosedLoop]) -> String {
    let runs: Vec<&ClosedLoop> = runs.iter().filter(|c| c.floor.is_some()).collect();
    if runs.is_empty() {
        return "Not measured in this run.".to_owned();
    }
    let mut text = String::from(
        "| desks | broker | rounds each | closed loop p50 ms (bonker / floor) | ratio | p99 ms \
         (bonker / floor) | ratio | first → last p50 ms (bonker / floor) | ratio | first → last \
         p99 ms (bonker / floor) | ratio | CPU per desk per bonk µs (desks / bare clients) | ratio \
         | broker CPU per round ms (bonker / floor) | harness CPU per round ms (bonker / floor) |\n\
         |--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n",
    );
    for c in runs {
        let (Some(f), Some(r)) = (&c.floor, c.floor_ratios()) else {
            continue;
        };
        let process = |cpu: &[(String, Duration)], name: &str| {
            cpu.iter()
                .find(|(n, _)| n == name)
                .map_or("–".to_owned(), |(_, d)| ms(*d))
        };
        let _ = writeln!(
            text,
            "| {} | {} | {} | {} / {} | {} | {} / {} | {} | {} / {} | {} | {} / {} | {} | {} / {} | {} | {} / {} | {} / {} |",
            desks_label(c),
            c.broker.as_str(),
            c.closed_loop.count,
            ms(c.closed_loop.p50),
            ms(f.closed_loop.p50),
            times(Some(r.p50)),
            ms(c.closed_loop.p99),
            ms(f.closed_loop.p99),
            times(Some(r.p99)),
            ms(c.skew.p50),
            ms(f.skew.p50),
            times(r.skew_p50),
            ms(c.skew.p99),
            ms(f.skew.p99),
            times(r.skew_p99),
            micros(cpu_per_desk(&c.cpu_per_round, "desks", c.desks)),
            micros(cpu_per_desk(&f.cpu_per_round, FLOOR_DESKS, c.desks)),
            times(r.cpu_per_desk),
            process(&c.cpu_per_round, c.broker.as_str()),
            process(&f.cpu_per_round, c.broker.as_str()),
            process(&c.cpu_per_round, "harness"),
            process(&f.cpu_per_round, "harness"),
        );
    }
    text.push_str(
        "\nA ratio above 1 is what bonker costs beyond bare MQTT clients doing the same fan-out \
         on the same broker at the same time; the floor's rounds alternate with bonker's, one for \
         one.\n",
    );
    text
}

/// `(desks, p50 ratio, p99 ratio)` of bonker-broker over mosquitto for each fleet size run on
/// both.
fn broker_ratios(runs: &[ClosedLoop]) -> Vec<(usize, f64, f64)> {
    let mut ratios = Vec::new();
    for bonker in runs.iter().filter(|c| c.broker == BrokerKind::Bonker) {
        if let Some(mosquitto) = runs
            .iter()
            .find(|c| c.broker == BrokerKind::Mosquitto && c.desks == bonker.desks)
        {
            let r = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(1e-9);
            ratios.push((
                bonker.desks,
                r(bonker.closed_loop.p50, mosquitto.closed_loop.p50),
                r(bonker.closed_loop.p99, mosquitto.closed_loop.p99),
            ));
        }
    }
    ratios
}

fn broker_table(runs: &[ClosedLoop]) -> String {
    let mut text = String::from(
        "| desks | POST → 200 p50 ms (bonker-broker / mosquitto) | ratio | closed loop p50 ms \
         (bonker-broker / mosquitto) | ratio | closed loop p99 ms (bonker-broker / mosquitto) | \
         ratio |\n|--:|--:|--:|--:|--:|--:|--:|\n",
    );
    let mut any = false;
    for bonker in runs.iter().filter(|c| c.broker == BrokerKind::Bonker) {
        let Some(mosquitto) = runs
            .iter()
            .find(|c| c.broker == BrokerKind::Mosquitto && c.desks == bonker.desks)
        else {
            continue;
        };
        any = true;
        let _ = writeln!(
            text,
            "| {} | {} / {} | {} | {} / {} | {} | {} / {} | {} |",
            bonker.desks,
            ms(bonker.webhook.p50),
            ms(mosquitto.webhook.p50),
            ratio(bonker.webhook.p50, mosquitto.webhook.p50),
            ms(bonker.closed_loop.p50),
            ms(mosquitto.closed_loop.p50),
            ratio(bonker.closed_loop.p50, mosquitto.closed_loop.p50),
            ms(bonker.closed_loop.p99),
            ms(mosquitto.closed_loop.p99),
            ratio(bonker.closed_loop.p99, mosquitto.closed_loop.p99),
        );
    }
    if !any {
        return "Not measured on both brokers in this run.".to_owned();
    }
    text.push_str("\nA ratio above 1 means the embedded broker is slower.\n");
    text
}

fn plot_link(results: &Results) -> String {
    if results.closed_loop.is_empty() {
        return "Not measured in this run.".to_owned();
    }
    format!(
        "![Closed-loop latency against fleet size, p50 and p99, both brokers]({})",
        results.plot_file
    )
}

fn throughput_table(cells: &[Cell]) -> String {
    if cells.is_empty() {
        return "Not measured in this run.".to_owned();
    }
    let mut text = String::from(
        "| broker | senders | alerts per notification | desks | gateway log | alerts/s | \
         notifications/s | non-200 | CPU gateway | CPU broker | CPU desks | CPU harness | gateway \
         peak RSS | acks owed / seen | acks done after | 1-min load at start |\n\
         |---|--:|--:|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n",
    );
    for c in cells {
        let cpu = |name: &str| {
            c.cpu
                .iter()
                .find(|s| {
                    s.name == name
                        || (name == "broker"
                            && (s.name == "bonker-broker" || s.name == "mosquitto"))
                })
                .map_or("–".to_owned(), |s| format!("{:.0} %", s.percent_of_core))
        };
        let _ = writeln!(
            text,
            "| {} | {} | {} | {} | {} | {:.0} | {:.0} | {} | {} | {} | {} | {} | {:.1} MiB | {} / {} | {} | {} |",
            c.spec.broker.as_str(),
            c.spec.senders,
            c.spec.alerts_per_notification,
            c.spec.desks,
            c.spec.gateway_log.as_deref().unwrap_or("info (default)"),
            c.alerts_per_s,
            c.requests_per_s,
            c.failures,
            cpu("gateway"),
            cpu("broker"),
            cpu("desks"),
            cpu("harness"),
            mib(c.gateway_peak_rss_kib),
            c.acks_owed,
            c.acks_seen,
            c.ack_drain
                .map_or_else(|| missing(c), |d| format!("{:.1} s", d.as_secs_f64())),
            load_cell(c.load),
        );
    }
    text.push_str(
        "\nCPU is the share of one core each process used during the measured window \
         (the machine has two: 200 % in all).\n",
    );
    text
}

/// The acks that never came, and where the bonker broker says they went.
fn missing(c: &crate::throughput::Cell) -> String {
    let count = c.acks_owed.saturating_sub(c.acks_seen);
    match c.skipped {
        Some(s) if s.bonks_to_desks + s.acks_to_gateway > 0 => format!(
            "**{count} missing**: the broker skipped {} bonks to desks and {} acks to the \
             gateway that fell behind",
            s.bonks_to_desks, s.acks_to_gateway
        ),
        _ => format!("**{count} missing**"),
    }
}

fn footprint_tables(
    sizes: &[BinarySize],
    agent: Option<&AgentFootprint>,
    throughput: &[Cell],
) -> String {
    let mut text = String::new();
    if !sizes.is_empty() {
        text.push_str("| program | size (release, stripped) |\n|---|--:|\n");
        for size in sizes {
            let _ = writeln!(
                text,
                "| {} | {} |",
                size.name,
                size.bytes.map_or("not built".to_owned(), |b| format!(
                    "{:.2} MiB ({b} bytes)",
                    b as f64 / 1024.0 / 1024.0
                ))
            );
        }
    }
    if let Some(a) = agent {
        let _ = writeln!(
            text,
            "\n| agent (`bonker-agent` process, profile `{}`, simulated servo) | |\n|---|--:|\n\
             | RSS idle (after {:.0} s idle) | {:.2} MiB |\n\
             | CPU while idle for {:.0} s | {} |\n\
             | RSS after {} bonks at {:.0}/s | {:.2} MiB |\n\
             | peak RSS (VmHWM) | {:.2} MiB |\n\
             | CPU at {:.0} bonks/s | {:.0} ms over {:.1} s ({:.2} % of a core) |",
            a.build,
            a.idle_for.as_secs_f64(),
            mib(a.idle_rss_kib),
            a.idle_for.as_secs_f64(),
            idle_cpu(a),
            a.bonks,
            a.bonks_per_s,
            mib(a.busy_rss_kib),
            mib(a.peak_rss_kib),
            a.bonks_per_s,
            a.busy_cpu.as_secs_f64() * 1000.0,
            a.busy_for.as_secs_f64(),
            a.busy_cpu.as_secs_f64() / a.busy_for.as_secs_f64().max(1e-9) * 100.0,
        );
    }
    if let Some(peak) = throughput.iter().max_by_key(|c| c.gateway_peak_rss_kib) {
        let _ = writeln!(
            text,
            "\nThe gateway's peak resident memory (VmHWM) under load was {:.1} MiB ({} senders × {} \
             alerts, {} desks, {}; every cell is in the throughput table).",
            mib(peak.gateway_peak_rss_kib),
            peak.spec.senders,
            peak.spec.alerts_per_notification,
            peak.spec.desks,
            peak.spec.broker.as_str()
        );
    }
    if text.is_empty() {
        return "Not measured in this run.".to_owned();
    }
    text
}

/// The idle CPU time; the kernel counts in clock ticks (10 ms), so nothing at all reads as
/// "under one tick" rather than as a suspicious zero.
fn idle_cpu(a: &AgentFootprint) -> String {
    let tick = Duration::from_secs(1) / rustix::param::clock_ticks_per_second().max(1) as u32;
    if a.idle_cpu.is_zero() {
        return format!(
            "under {} ms (less than one tick of the kernel's accounting)",
            tick.as_millis()
        );
    }
    format!(
        "{:.0} ms ({:.3} % of a core)",
        a.idle_cpu.as_secs_f64() * 1000.0,
        a.idle_cpu.as_secs_f64() / a.idle_for.as_secs_f64().max(1e-9) * 100.0
    )
}

fn delivery_table(runs: &[Delivery]) -> String {
    if runs.is_empty() {
        return "Not measured in this run.".to_owned();
    }
    let mut text = String::from(
        "| broker | concurrent webhooks | desks | answered 200 | bonks published | bonks on the \
         topic (messages) | acks per desk (min – max) | duplicate acks | ack outcomes | last ack \
         after | exact |\n|---|--:|--:|--:|--:|--:|--:|--:|---|--:|---|\n",
    );
    for d in runs {
        let outcomes: Vec<String> = d
            .outcomes
            .iter()
            .map(|(outcome, n)| format!("{outcome} {n}"))
            .collect();
        let _ = writeln!(
            text,
            "| {} | {} | {} | {} | {} | {} ({}) | {} – {} | {} | {} | {} ms | {} |",
            d.broker.as_str(),
            d.webhooks,
            d.desks,
            d.answered_ok,
            d.published,
            d.bonks_on_topic,
            d.bonk_messages,
            d.min_acked_per_desk,
            d.max_acked_per_desk,
            d.duplicate_acks,
            outcomes.join(", "),
            ms(d.took),
            if d.exact() { "yes" } else { "**no**" }
        );
    }
    text
}

fn kill_window_table(window: Option<&KillWindow>) -> String {
    let Some(w) = window else {
        return "Not measured in this run.".to_owned();
    };
    let rss = |kib: u64| format!("{:.2} MiB ({kib} KiB)", mib(kib));
    let mut text = String::from(
        "| gateway | RSS before | RSS after | change | per bonk | after ÷ idle baseline | kills \
         remembered | took | 1-min load at start |\n|---|--:|--:|--:|--:|--:|--:|--:|--:|\n",
    );
    let mut row = |what: String, growth: &Growth, baseline_kib: u64| {
        let _ = writeln!(
            text,
            "| {what} | {} | {} | {:+} KiB | {:.0} bytes | {:.2}× | {} | {:.1} s | {} |",
            rss(growth.before_kib),
            rss(growth.after_kib),
            growth.delta_kib(),
            growth.bytes_per_bonk(w.bonks),
            growth.after_kib as f64 / baseline_kib.max(1) as f64,
            growth.kills_remembered,
            growth.took.as_secs_f64(),
            load_cell(growth.load),
        );
    };
    row(
        format!(
            "fresh, idle → {} watcher bonks with a `kill`, one pod each",
            w.bonks
        ),
        &w.kills,
        w.kills.before_kib,
    );
    row(
        format!(
            "the same → {} more kills ({} in all, beyond the cap)",
            w.bonks,
            2 * w.bonks
        ),
        &w.beyond_cap,
        w.kills.before_kib,
    );
    row(
        format!(
            "fresh, idle → {} watcher bonks without a `kill` (ids only)",
            w.bonks
        ),
        &w.ids_only,
        w.ids_only.before_kib,
    );
    let _ = writeln!(
        text,
        "\nA remembered kill cost **{:.0} bytes** of resident memory beyond its bonk's id: {:.0} \
         bytes per bonk with a `kill`, less {:.0} per bonk without ({:.0} KiB for {} kills). \
         Beyond the cap the gateway remembered {} kills (cap {}: {}) and grew by {:.0} bytes a \
         bonk: from {:.2}× its idle baseline after {} kills to {:.2}× after {}, peak `VmHWM` \
         {:.2} MiB. The bonks' JSON averaged {} bytes with the `kill`, {} without.",
        w.bytes_per_kill(),
        w.kills.bytes_per_bonk(w.bonks),
        w.ids_only.bytes_per_bonk(w.bonks),
        w.bytes_per_kill() * w.bonks as f64 / 1024.0,
        w.bonks,
        w.beyond_cap.kills_remembered,
        w.max_kills,
        if w.capped() { "held" } else { "**not held**" },
        w.beyond_cap.bytes_per_bonk(w.bonks),
        w.over_baseline(w.kills.after_kib),
        w.bonks,
        w.over_baseline(w.beyond_cap.after_kib),
        2 * w.bonks,
        mib(w.kills_peak_rss_kib),
        w.kill_payload_bytes,
        w.id_payload_bytes,
    );
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Summary;

    fn closed(broker: BrokerKind, desks: usize, p50_ms: u64, p99_ms: u64) -> ClosedLoop {
        let summary = Summary {
            count: 100,
            p50: Duration::from_millis(p50_ms),
            p90: Duration::from_millis(p99_ms),
            p99: Duration::from_millis(p99_ms),
            max: Duration::from_millis(p99_ms),
        };
        ClosedLoop {
            broker,
            desks,
            homeassistant: true,
            webhook: summary,
            closed_loop: summary,
            skew: summary,
            not_bonked: 0,
            fleet_start: Duration::from_secs(1),
            load: Some(0.5),
            cpu_per_round: vec![
                ("gateway".to_owned(), Duration::from_micros(300)),
                ("desks".to_owned(), Duration::from_millis(6)),
            ],
            floor: None,
        }
    }

    /// `closed` with a floor of `p50_ms` / `p99_ms`, a skew of half as much and bare clients
    /// that used a third of the desks' CPU.
    fn with_floor(mut run: ClosedLoop, p50_ms: u64, p99_ms: u64) -> ClosedLoop {
        let summary = |p50: u64, p99: u64| Summary {
            count: 100,
            p50: Duration::from_millis(p50),
            p90: Duration::from_millis(p99),
            p99: Duration::from_millis(p99),
            max: Duration::from_millis(p99),
        };
        run.floor = Some(crate::latency::FloorLoop {
            closed_loop: summary(p50_ms, p99_ms),
            skew: summary(p50_ms / 2, p99_ms / 2),
            cpu_per_round: vec![(FLOOR_DESKS.to_owned(), Duration::from_millis(2))],
        });
        run
    }

    #[test]
    fn the_template_is_filled_and_every_placeholder_is_known() {
        let results = Results {
            closed_loop: vec![
                closed(BrokerKind::Bonker, 100, 4, 9),
                closed(BrokerKind::Mosquitto, 100, 4, 8),
            ],
            plot_file: "benchmarks-latency.svg".to_owned(),
            ..Results::default()
        };
        let text = render(TEMPLATE, &results).expect("renders");
        assert!(!text.contains("{{"), "every placeholder replaced");
        assert!(text.contains("| 100 | bonker-broker |"));
        assert!(text.contains("1.12×"), "p99 ratio 9/8 is shown");
        assert!(text.contains("benchmarks-latency.svg"));
        assert!(render("{{nonsense}}", &results).is_err());
        assert!(render("{{date", &results).is_err());
    }

    #[test]
    fn the_kill_window_says_bytes_per_kill_and_whether_the_cap_held() {
        let growth = |before_kib, after_kib, kills_remembered| Growth {
            before_kib,
            after_kib,
            kills_remembered,
            took: Duration::from_millis(1500),
            load: Some(0.25),
        };
        let results = Results {
            kill_window: Some(KillWindow {
                bonks: 10_240,
                max_kills: 10_000,
                kill_payload_bytes: 712,
                id_payload_bytes: 540,
                kills: growth(10_000, 20_000, 10_000),
                beyond_cap: growth(20_000, 21_000, 10_000),
                ids_only: growth(10_000, 12_000, 0),
                kills_peak_rss_kib: 21_500,
            }),
            ..Results::default()
        };
        let text = render(TEMPLATE, &results).expect("renders");
        assert!(text.contains("| +10000 KiB | 1000 bytes | 2.00× | 10000 |"));
        assert!(text.contains("| +1000 KiB | 100 bytes | 2.10× | 10000 |"));
        assert!(
            text.contains("**800 bytes**"),
            "1000 per kill bonk less 200 per id"
        );
        assert!(text.contains("cap 10000: held"));
        assert!(kill_window_table(None).contains("Not measured"));
    }

    #[test]
    fn targets_say_met_missed_or_not_measured() {
        let results = Results {
            closed_loop: vec![
                closed(BrokerKind::Bonker, 100, 4, 12),
                closed(BrokerKind::Mosquitto, 100, 4, 8),
            ],
            ..Results::default()
        };
        let table = targets_table(&results);
        let line = |needle: &str| {
            table
                .lines()
                .find(|l| l.contains(needle))
                .unwrap_or_default()
                .to_owned()
        };
        assert!(line("at 100 desks").contains("not measured"), "no floor");
        assert!(line("at 1000 desks").contains("not measured"));
        assert!(line("within 1.1×").contains("met"), "p50 ratio is 1.00");
        assert!(line("agent idle RSS").contains("not measured"));
    }

    #[test]
    fn floor_targets_hold_every_ratio_against_its_own() {
        let results = |bonker: ClosedLoop| Results {
            closed_loop: vec![
                bonker,
                with_floor(closed(BrokerKind::Mosquitto, 1000, 12, 14), 10, 10),
            ],
            ..Results::default()
        };
        let line = |results: &Results| {
            targets_table(results)
                .lines()
                .find(|l| l.contains("at 1000 desks"))
                .unwrap_or_default()
                .to_owned()
        };
        // bonker-broker: p50 12/10, p99 14/10, skew 12/5 (the floor's skew is half its p50).
        let skewed = line(&results(with_floor(
            closed(BrokerKind::Bonker, 1000, 12, 14),
            10,
            10,
        )));
        assert!(skewed.contains("bonker-broker p50 1.20× (12.0 / 10.0 ms), p99 1.40×"));
        assert!(skewed.contains("skew 2.40×") && skewed.contains("**missed**"));
        let mut even = with_floor(closed(BrokerKind::Bonker, 1000, 12, 14), 10, 10);
        if let Some(floor) = &mut even.floor {
            floor.skew = even.skew;
        }
        let mut results_even = results(even);
        let mosquitto = &mut results_even.closed_loop[1];
        if let Some(floor) = &mut mosquitto.floor {
            floor.skew = mosquitto.skew;
        }
        assert!(
            line(&results_even).ends_with("| met |"),
            "{}",
            line(&results_even)
        );
        let slow = line(&results(with_floor(
            closed(BrokerKind::Bonker, 1000, 14, 14),
            10,
            10,
        )));
        assert!(slow.contains("p50 1.40×") && slow.contains("**missed**"));
    }

    #[test]
    fn the_floor_table_shows_both_sides_and_their_ratios() {
        let table = floor_table(&[
            with_floor(closed(BrokerKind::Bonker, 100, 13, 30), 10, 20),
            closed(BrokerKind::Mosquitto, 100, 4, 8),
        ]);
        let row = table
            .lines()
            .find(|l| l.starts_with("| 100 | bonker-broker |"))
            .expect("a row for the run with a floor");
        assert!(
            row.contains("| 13.0 / 10.0 | 1.30× | 30.0 / 20.0 | 1.50× |"),
            "{row}"
        );
        assert!(row.contains("| 13.0 / 5.00 | 2.60× |"), "skew p50: {row}");
        assert!(row.contains("| 60 / 20 | 3.00× |"), "CPU per desk: {row}");
        assert!(!table.contains("| mosquitto |"), "no floor, no row");
        assert!(floor_table(&[closed(BrokerKind::Bonker, 1, 1, 1)]).contains("Not measured"));
    }
}
