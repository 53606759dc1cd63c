//! `bonker-bench`: runs every benchmark section and writes the report (see the library's docs
//! for what each section measures). `bonker-bench desks …` is the fleet process the harness
//! starts for itself, `bonker-bench floor-desks …` the bare clients of the closed loop's floor.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};

use bonker_bench::report::{self, Results};
use bonker_bench::stack::{self, BrokerKind, Tools};
use bonker_bench::throughput::{self, CellSpec};
use bonker_bench::{delivery, desks, floor, footprint, kill_window, latency, machine, stats};

/// Measures bonker's latency, throughput and footprint on this machine and writes
/// docs/benchmarks.md (run through scripts/bench, which builds the release binaries first).
#[derive(Debug, Parser)]
#[command(name = "bonker-bench", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs a fleet of simulated desks until SIGTERM (the harness starts this itself).
    #[command(hide = true)]
    Desks(DesksArgs),
    /// Runs the floor's bare MQTT clients until SIGTERM (the harness starts this itself).
    #[command(hide = true)]
    FloorDesks(FloorDesksArgs),
}

/// Where a fleet of simulated clients connects, and how many.
#[derive(Debug, clap::Args)]
struct FleetArgs {
    /// The broker.
    #[arg(long)]
    mqtt: String,
    /// The namespace every client listens on.
    #[arg(long)]
    namespace: String,
    /// How many clients.
    #[arg(long)]
    count: usize,
    /// Client ids are this prefix and a four-digit number.
    #[arg(long)]
    id_prefix: String,
}

#[derive(Debug, clap::Args)]
struct FloorDesksArgs {
    #[command(flatten)]
    fleet: FleetArgs,
}

#[derive(Debug, clap::Args)]
struct DesksArgs {
    #[command(flatten)]
    fleet: FleetArgs,
    /// Log filter for the desks (default: no log output).
    #[arg(long)]
    log: Option<String>,
    /// Switch Home Assistant discovery and bonk events off.
    #[arg(long)]
    without_homeassistant: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Section {
    /// Webhook POST → 200.
    Webhook,
    /// POST → every desk acked, 1 to 1000 desks, both brokers.
    ClosedLoop,
    /// 100 concurrent webhooks, every bonk and ack counted.
    Delivery,
    /// Alerts per second with concurrent senders.
    Throughput,
    /// Binary sizes, agent memory and CPU.
    Footprint,
    /// The gateway's memory for 10,000 remembered kills, and beyond its cap.
    KillWindow,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Where the report goes.
    #[arg(long, value_name = "FILE", default_value = "docs/benchmarks.md")]
    out: PathBuf,
    /// Where the plot goes (default: benchmarks-latency.svg next to the report).
    #[arg(long, value_name = "FILE")]
    plot: Option<PathBuf>,
    /// Small counts and short windows, to try the harness; the report says so.
    #[arg(long)]
    quick: bool,
    /// Only these sections (repeatable); the others say "not measured".
    #[arg(long, value_enum, value_name = "SECTION")]
    only: Vec<Section>,
    /// Only these throughput cells, by their row number in the report's table (1 = first).
    #[arg(long, value_delimiter = ',', value_name = "N")]
    cells: Vec<usize>,
    /// Skip the closed loop's floor (bare MQTT clients round for round with bonker's), e.g. to
    /// see what its presence on the broker costs bonker's rounds.
    #[arg(long)]
    without_floor: bool,
    /// Fleet sizes for the closed loop.
    #[arg(long, value_delimiter = ',', default_value = "1,10,100,1000")]
    fleet_sizes: Vec<usize>,
    /// Start measuring once the 1-minute load average is below this…
    #[arg(long, default_value_t = 0.7)]
    max_load: f64,
    /// …waiting at most this many seconds for it (0: do not wait).
    #[arg(long, default_value_t = 600)]
    wait_for_quiet_s: u64,
    /// mosquitto.
    #[arg(long, value_name = "FILE")]
    mosquitto: Option<PathBuf>,
    /// Where the release binaries are (default: next to this program).
    #[arg(long, value_name = "DIR")]
    bin_dir: Option<PathBuf>,
    /// The agent binary whose footprint is measured (default: the release one in --bin-dir);
    /// scripts/bench passes the `pi` profile's, the build a Pi runs.
    #[arg(long, value_name = "FILE")]
    agent_bin: Option<PathBuf>,
    /// Keep the run's directory (configs and every process's log) and say where it is.
    #[arg(long)]
    keep_logs: bool,
    /// Log filter for the simulated desks, e.g. `warn` (default: they log nothing).
    #[arg(long, value_name = "FILTER")]
    desks_log: Option<String>,
    /// Log filter for bonker-broker (default: its own default), to measure what logging costs.
    #[arg(long, value_name = "FILTER")]
    broker_log: Option<String>,
}

impl RunArgs {
    fn wants(&self, section: Section) -> bool {
        self.only.is_empty() || self.only.contains(&section)
    }
}

/// Counts and time budgets of a run.
#[derive(Debug, Clone, Copy)]
struct Budget {
    webhook_requests: usize,
    webhook_time: Duration,
    rounds_small: usize,
    rounds_100: usize,
    rounds_1000: usize,
    closed_loop_time: Duration,
    burst: usize,
    burst_desks: usize,
    warm_up: Duration,
    window: Duration,
    idle: Duration,
    agent_bonks: usize,
}

const FULL: Budget = Budget {
    webhook_requests: 2000,
    webhook_time: Duration::from_secs(30),
    rounds_small: 1000,
    rounds_100: 500,
    rounds_1000: 200,
    closed_loop_time: Duration::from_secs(45),
    burst: 100,
    burst_desks: 10,
    warm_up: Duration::from_millis(700),
    window: Duration::from_secs(3),
    idle: Duration::from_secs(60),
    agent_bonks: 100,
};

const QUICK: Budget = Budget {
    webhook_requests: 200,
    webhook_time: Duration::from_secs(5),
    rounds_small: 100,
    rounds_100: 50,
    rounds_1000: 20,
    closed_loop_time: Duration::from_secs(5),
    burst: 100,
    burst_desks: 3,
    warm_up: Duration::from_millis(300),
    window: Duration::from_secs(1),
    idle: Duration::from_secs(5),
    agent_bonks: 20,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Desks(args)) => run_desks(args),
        Some(Command::FloorDesks(args)) => run_floor_desks(args),
        None => run_benchmarks(cli.run),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bonker-bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_desks(args: DesksArgs) -> Result<()> {
    if let Some(filter) = &args.log {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::try_new(filter)?)
            .with_writer(std::io::stderr)
            .init();
    }
    let runtime = tokio::runtime::Runtime::new().context("tokio runtime")?;
    runtime.block_on(desks::run(
        &args.fleet.mqtt,
        &args.fleet.namespace,
        args.fleet.count,
        &args.fleet.id_prefix,
        !args.without_homeassistant,
    ))
}

fn run_floor_desks(args: FloorDesksArgs) -> Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("tokio runtime")?;
    runtime.block_on(floor::run_desks(
        &args.fleet.mqtt,
        &args.fleet.namespace,
        args.fleet.count,
        &args.fleet.id_prefix,
    ))
}

fn find_mosquitto(given: Option<PathBuf>) -> PathBuf {
    given.unwrap_or_else(|| {
        ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .unwrap_or_else(|| PathBuf::from("mosquitto"))
    })
}

fn run_benchmarks(args: RunArgs) -> Result<()> {
    let budget = if args.quick { QUICK } else { FULL };
    let mosquitto = find_mosquitto(args.mosquitto.clone());
    let bin_dir = match &args.bin_dir {
        Some(dir) => dir.clone(),
        None => stack::sibling_dir()?,
    };
    let dir = tempfile::Builder::new()
        .prefix("bonker-bench-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let tools = Tools {
        bin_dir: bin_dir.clone(),
        mosquitto: mosquitto.clone(),
        self_exe: std::env::current_exe().context("cannot find this executable")?,
        dir: dir.path().to_path_buf(),
        desks_log: args.desks_log.clone(),
        broker_log: args.broker_log.clone(),
        agent_bin: args.agent_bin.clone(),
    };
    let plot_path = args.plot.clone().unwrap_or_else(|| {
        args.out
            .parent()
            .unwrap_or(Path::new("."))
            .join("benchmarks-latency.svg")
    });
    let plot_file = plot_relative_to_report(&plot_path, &args.out);

    let load_before = if args.wait_for_quiet_s > 0 {
        machine::wait_for_quiet(
            args.max_load,
            Duration::from_secs(args.wait_for_quiet_s),
            Duration::from_secs(30),
        )
    } else {
        machine::Load::now()
    };
    eprintln!(
        "measuring (load {}); logs in {}",
        load_before.map_or("unknown".to_owned(), |l| l.to_string()),
        dir.path().display()
    );
    let mut results = Results {
        machine: Some(machine::Machine::describe(&mosquitto)),
        date: chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
        load_before,
        quick: args.quick,
        plot_file,
        ..Results::default()
    };
    let started = Instant::now();
    let runtime = tokio::runtime::Runtime::new().context("tokio runtime")?;
    let measured = runtime.block_on(measure(&args, budget, &tools, &mut results));
    if args.keep_logs || measured.is_err() {
        let kept = dir.keep();
        eprintln!("the run's configs and logs are in {}", kept.display());
    }
    measured?;
    results.took = started.elapsed();
    results.load_after = machine::Load::now();

    let text = report::render(report::TEMPLATE, &results)?;
    if let Some(parent) = args.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.out, text)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    if !results.closed_loop.is_empty() {
        std::fs::write(&plot_path, report::plot(&results.closed_loop))
            .with_context(|| format!("cannot write {}", plot_path.display()))?;
    }
    eprintln!(
        "wrote {} in {:.0} s",
        args.out.display(),
        results.took.as_secs_f64()
    );
    Ok(())
}

/// The plot's path as the report should link it: its file name when both are in the same
/// directory, else the path as given.
fn plot_relative_to_report(plot: &Path, report: &Path) -> String {
    if plot.parent() == report.parent()
        && let Some(name) = plot.file_name()
    {
        return name.to_string_lossy().into_owned();
    }
    plot.display().to_string()
}

async fn measure(
    args: &RunArgs,
    budget: Budget,
    tools: &Tools,
    results: &mut Results,
) -> Result<()> {
    // The idle agent idles while the other sections run; it has its own broker, so nothing
    // they do reaches it.
    let agent = if args.wants(Section::Footprint) {
        results.sizes = footprint::binary_sizes(&tools.bin_dir, tools.agent_bin.as_deref());
        eprintln!("footprint: starting the agent's idle period");
        Some(footprint::AgentUnderTest::start(tools).await?)
    } else {
        None
    };

    let mark = |results: &mut Results, section: &'static str| {
        if let Some(load) = machine::Load::now() {
            results.section_loads.push((section, load));
        }
    };
    if args.wants(Section::Webhook) {
        mark(results, "webhook");
        for broker in BrokerKind::BOTH {
            eprintln!("webhook latency: {}", broker.as_str());
            let run = latency::webhook(
                tools,
                broker,
                10,
                budget.webhook_requests,
                budget.webhook_time,
            )
            .await?;
            eprintln!(
                "  p50 {} ms, p99 {} ms",
                stats::ms(run.latency.p50),
                stats::ms(run.latency.p99)
            );
            results.webhook.push(run);
        }
    }

    if args.wants(Section::ClosedLoop) {
        mark(results, "closed loop");
        for &desks in &args.fleet_sizes {
            if args.quick && desks > 100 {
                continue;
            }
            let rounds = match desks {
                0..=10 => budget.rounds_small,
                11..=100 => budget.rounds_100,
                _ => budget.rounds_1000,
            };
            // Brokers alternate per fleet size, so a change in the machine's load hits both.
            for broker in BrokerKind::BOTH {
                eprintln!("closed loop: {desks} desks on {}", broker.as_str());
                let run = latency::closed_loop(
                    tools,
                    broker,
                    desks,
                    true,
                    !args.without_floor,
                    rounds,
                    budget.closed_loop_time,
                )
                .await?;
                let cpu = |cpu_per_round: &[(String, Duration)]| {
                    cpu_per_round
                        .iter()
                        .map(|(name, cpu)| format!("{name} {} ms", stats::ms(*cpu)))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                eprintln!(
                    "  {} rounds: p50 {} ms, p99 {} ms, skew p50 {} ms; CPU per round: {}",
                    run.closed_loop.count,
                    stats::ms(run.closed_loop.p50),
                    stats::ms(run.closed_loop.p99),
                    stats::ms(run.skew.p50),
                    cpu(&run.cpu_per_round)
                );
                if let Some(floor) = &run.floor {
                    eprintln!(
                        "  floor: p50 {} ms, p99 {} ms, skew p50 {} ms; CPU per round: {}",
                        stats::ms(floor.closed_loop.p50),
                        stats::ms(floor.closed_loop.p99),
                        stats::ms(floor.skew.p50),
                        cpu(&floor.cpu_per_round)
                    );
                }
                results.closed_loop.push(run);
            }
        }
    }

    if args.wants(Section::Delivery) {
        mark(results, "delivery");
        for broker in BrokerKind::BOTH {
            eprintln!(
                "delivery: {} concurrent webhooks, {} desks, {}",
                budget.burst,
                budget.burst_desks,
                broker.as_str()
            );
            let run = delivery::burst(tools, broker, budget.burst, budget.burst_desks).await?;
            eprintln!("  exact: {}", run.exact());
            results.delivery.push(run);
        }
    }

    if args.wants(Section::KillWindow) {
        mark(results, "kill window");
        let n = kill_window::BONKS;
        eprintln!(
            "kill window: {n} watcher bonks with kills, {n} more beyond the cap, {n} without a kill"
        );
        let window = kill_window::measure(tools).await?;
        eprintln!(
            "  {:.0} bytes per kill beyond its id; capped at {}: {}",
            window.bytes_per_kill(),
            window.max_kills,
            window.capped()
        );
        results.kill_window = Some(window);
    }

    if args.wants(Section::Throughput) {
        mark(results, "throughput");
        let cells = throughput_cells()
            .into_iter()
            .enumerate()
            .filter(|(n, _)| args.cells.is_empty() || args.cells.contains(&(n + 1)))
            .map(|(_, spec)| spec);
        for spec in cells {
            eprintln!(
                "throughput: {} senders × {} alerts, {} desks, {}{}",
                spec.senders,
                spec.alerts_per_notification,
                spec.desks,
                spec.broker.as_str(),
                spec.gateway_log
                    .as_deref()
                    .map(|l| format!(", gateway log {l}"))
                    .unwrap_or_default()
            );
            let cell = throughput::cell(tools, spec, budget.warm_up, budget.window).await?;
            eprintln!(
                "  {:.0} alerts/s, {} failures; CPU {}",
                cell.alerts_per_s,
                cell.failures,
                cell.cpu
                    .iter()
                    .map(|c| format!("{} {:.0} %", c.name, c.percent_of_core))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            results.throughput.push(cell);
        }
    }

    if let Some(agent) = agent {
        mark(results, "footprint (bonks)");
        let left = budget.idle.saturating_sub(agent.idle_for());
        eprintln!(
            "footprint: agent idle for {:.0} s more, then {} bonks at 10/s",
            left.as_secs_f64(),
            budget.agent_bonks
        );
        let footprint = agent.finish(budget.idle, budget.agent_bonks, 10).await?;
        eprintln!(
            "  idle RSS {} KiB, idle CPU {} ms",
            footprint.idle_rss_kib,
            footprint.idle_cpu.as_millis()
        );
        results.agent = Some(footprint);
    }
    Ok(())
}

/// The throughput cells: the four sender/batch combinations on both brokers with one desk, then,
/// on the embedded broker, the variations that tell the bottleneck apart (no desks, ten desks,
/// gateway logging only warnings).
fn throughput_cells() -> Vec<CellSpec> {
    let mut cells = Vec::new();
    for broker in BrokerKind::BOTH {
        for (senders, alerts) in [(8, 1), (32, 1), (8, 50), (32, 50)] {
            cells.push(CellSpec {
                broker,
                senders,
                alerts_per_notification: alerts,
                desks: 1,
                gateway_log: None,
            });
        }
    }
    for (senders, alerts, desks, log) in [
        (32, 50, 0, None),
        (32, 50, 10, None),
        (32, 1, 1, Some("warn")),
        (32, 50, 1, Some("warn")),
    ] {
        cells.push(CellSpec {
            broker: BrokerKind::Bonker,
            senders,
            alerts_per_notification: alerts,
            desks,
            gateway_log: log.map(str::to_owned),
        });
    }
    cells
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
        let cli =
            Cli::try_parse_from(["bonker-bench", "--quick", "--only", "webhook"]).expect("parses");
        assert!(cli.run.quick && cli.run.wants(Section::Webhook));
        assert!(!cli.run.wants(Section::Footprint));
        let cli = Cli::try_parse_from(["bonker-bench", "--only", "kill-window"]).expect("parses");
        assert!(cli.run.wants(Section::KillWindow) && !cli.run.wants(Section::Webhook));
        assert_eq!(cli.run.fleet_sizes, [1, 10, 100, 1000]);
    }

    #[test]
    fn the_plot_is_linked_relative_to_the_report() {
        assert_eq!(
            plot_relative_to_report(
                Path::new("docs/benchmarks-latency.svg"),
                Path::new("docs/benchmarks.md")
            ),
            "benchmarks-latency.svg"
        );
        assert_eq!(
            plot_relative_to_report(Path::new("/tmp/p.svg"), Path::new("docs/b.md")),
            "/tmp/p.svg"
        );
    }
}
