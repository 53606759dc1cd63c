//! The command line as people type it: the shared flags go before or after the subcommand, every
//! usage or configuration mistake exits 2 before anything is attempted (as for the daemons, and
//! clap's own usage errors), a failure at run time exits 1, and every program's `--help` is
//! clap's, each environment variable named once.

use std::process::{Command, Output, Stdio};

use bonker_tests::{BrokerKind, TestBroker, binary};

fn bonker(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bonker"))
        .args(args)
        .env_remove("BONKER_CONFIG")
        .env_remove("BONKER_PREFIX")
        .env_remove("BONKER_MQTT__URL")
        .stdin(Stdio::null())
        .output()
        .expect("bonker runs")
}

/// Runs `program` of the workspace with `args`, outside any configuration file, to its end.
fn run(program: &str, args: &[&str]) -> Output {
    Command::new(binary(program))
        .args(args)
        .env_remove("BONKER_CONFIG")
        .stdin(Stdio::null())
        .output()
        .expect("the program runs")
}

fn describe(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn shared_flags_go_before_or_after_the_subcommand() {
    let broker = TestBroker::start(BrokerKind::Bonker);
    let url = broker.url();
    for args in [
        vec!["--mqtt", url.as_str(), "fleet", "--json"],
        vec!["fleet", "--json", "--mqtt", url.as_str()],
        vec![
            "fleet",
            "--mqtt",
            url.as_str(),
            "--prefix",
            "bonker",
            "--json",
        ],
        vec![
            "bonk",
            "--no-wait",
            "--mqtt",
            url.as_str(),
            "--namespace",
            "payments",
        ],
    ] {
        let output = bonker(&args);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{args:?}: {}",
            describe(&output)
        );
    }
}

#[test]
fn mistakes_exit_2_and_run_time_failures_exit_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing.toml");
    let missing = missing.to_string_lossy();
    let bad_key = dir.path().join("bad.toml");
    std::fs::write(&bad_key, "prefx = \"bonker\"\n").expect("write");
    let bad_key = bad_key.to_string_lossy();
    let unreachable = format!("mqtt://127.0.0.1:{}", bonker_tests::free_port());
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (vec!["bonk", "--namespace", "a/#"], 2, "invalid namespace"),
        (vec!["bonk", "--desk", "bob/+"], 2, "invalid desk"),
        (vec!["fleet", "--prefix", "a/#"], 2, "invalid topic prefix"),
        (
            vec!["fleet", "--mqtt", "http://broker:1883"],
            2,
            "unknown scheme",
        ),
        (vec!["fleet", "--config", &missing], 2, "missing.toml"),
        (vec!["fleet", "--config", &bad_key], 2, "prefx"),
        (vec!["fleet", "--no-such-flag"], 2, "--no-such-flag"),
        (
            vec!["bonk", "--namespace", "a", "--desk", "b"],
            2,
            "cannot be used with",
        ),
        (
            vec!["fleet", "--mqtt", &unreachable],
            1,
            "cannot connect to the broker",
        ),
    ];
    for (args, code, says) in cases {
        let output = bonker(&args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(code),
            "{args:?}: {}",
            describe(&output)
        );
        assert!(
            stderr.contains(says),
            "{args:?} should say {says:?}: {stderr}"
        );
        // One statement of each cause, not the same one again through its chain of sources.
        let first_line = stderr.lines().next().unwrap_or_default();
        let halves = first_line.split(": ").collect::<Vec<_>>();
        for (n, part) in halves.iter().enumerate() {
            assert!(
                part.len() < 12 || !halves[n + 1..].iter().any(|later| later == part),
                "{args:?}: a cause is repeated: {first_line}"
            );
        }
    }
}

#[test]
fn every_program_s_help_names_each_variable_once() {
    for program in [
        "bonker",
        "bonker-gateway",
        "bonker-agent",
        "bonker-watcher",
        "bonker-broker",
    ] {
        let output = run(program, &["--help"]);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{program}: {}",
            describe(&output)
        );
        // clap wraps help text; join the lines so a wrapped `[env: …]` reads as one.
        let help = String::from_utf8_lossy(&output.stdout)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let mut named: Vec<&str> = help
            .match_indices("[env: ")
            .map(|(at, _)| {
                let rest = &help[at + 6..];
                let end = rest.find([']', '=']).unwrap_or(rest.len());
                &rest[..end]
            })
            .collect();
        assert!(
            !named.is_empty(),
            "{program}: no variables in --help:\n{help}"
        );
        let all = named.len();
        named.sort_unstable();
        named.dedup();
        assert_eq!(
            named.len(),
            all,
            "{program}: a variable named twice:\n{help}"
        );
    }
}

/// A file named in the MQTT settings that cannot be used is a configuration error in every
/// program that connects to a broker: exit 2 at start, naming the file, not exit 1 at the first
/// connection attempt.
#[test]
fn an_unusable_mqtt_file_is_a_configuration_error_everywhere() {
    let dir = tempfile::tempdir().expect("tempdir");
    let not_pem = dir.path().join("not-a-ca.pem");
    std::fs::write(&not_pem, "hello\n").expect("write");
    let missing = dir.path().join("missing").to_string_lossy().into_owned();
    let not_pem = not_pem.to_string_lossy().into_owned();
    let programs: [(&str, &[&str]); 4] = [
        ("bonker", &["fleet"]),
        ("bonker-gateway", &["--listen", "127.0.0.1:0"]),
        ("bonker-agent", &["--desk", "usage", "--servo", "simulated"]),
        (
            "bonker-watcher",
            &["--listen", "127.0.0.1:0", "--node-name", "usage"],
        ),
    ];
    let cases: [(&[&str], &str); 3] = [
        (&["--mqtt-ca-file", &missing], "mqtt.ca_file"),
        (&["--mqtt-ca-file", &not_pem], "holds no PEM certificate"),
        (
            &["--mqtt-username", "desk", "--mqtt-password-file", &missing],
            "mqtt.password_file",
        ),
    ];
    for (program, args) in programs {
        for (flags, says) in cases {
            let output = run(
                program,
                &[args, &["--mqtt", "mqtts://127.0.0.1:1"], flags].concat(),
            );
            assert_eq!(
                output.status.code(),
                Some(2),
                "{program} {flags:?}: {}",
                describe(&output)
            );
            assert!(
                String::from_utf8_lossy(&output.stderr).contains(says),
                "{program} {flags:?} should say {says:?}: {}",
                describe(&output)
            );
        }
    }
}

/// `--health-check`, as a container healthcheck runs it (same configuration as the program, no
/// shell in the image): 0 while the program answers, 1 once it is gone. The gateway is asked
/// for readiness (connected to its broker), the watcher for liveness, the broker for an answer to
/// an MQTT CONNECT.
#[test]
fn every_service_answers_its_health_check() {
    let check = |program: &str, args: &[&str]| run(program, &[args, &["--health-check"]].concat());
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let mut broker = TestBroker::start(BrokerKind::Bonker);
    let url = broker.url();
    let broker_listen = format!("127.0.0.1:{}", broker.port());
    let gateway = runtime.block_on(bonker_tests::GatewayProcess::start(&url, &[]));
    let gateway_listen = gateway.addr().to_string();
    let watcher_listen = format!("127.0.0.1:{}", bonker_tests::free_port());
    let mut watcher_command = Command::new(binary("bonker-watcher"));
    watcher_command
        .args(["--listen", &watcher_listen, "--node-name", "health-check"])
        .args(["--mqtt", &url, "--kmsg", "/nonexistent/kmsg"])
        .env("BONKER_LOG", "info");
    let mut watcher = bonker_tests::ChildProcess::spawn("bonker-watcher", watcher_command);
    watcher.wait_for_line("bonker-watcher starting", bonker_tests::DEADLINE);
    let watcher_args = [
        "--listen",
        &watcher_listen,
        "--node-name",
        "health-check",
        "--mqtt",
        &url,
    ];
    // The watcher serves /healthz once its loop runs: wait for the first healthy answer.
    let deadline = std::time::Instant::now() + bonker_tests::DEADLINE;
    while check("bonker-watcher", &watcher_args).status.code() != Some(0) {
        assert!(
            std::time::Instant::now() < deadline,
            "the watcher never became healthy: {}",
            watcher.output()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let services: [(&str, Vec<&str>); 3] = [
        ("bonker-broker", vec!["--listen", &broker_listen]),
        (
            "bonker-gateway",
            vec!["--listen", &gateway_listen, "--mqtt", &url],
        ),
        ("bonker-watcher", watcher_args.to_vec()),
    ];
    for (program, args) in &services {
        let output = check(program, args);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{program}: {}",
            describe(&output)
        );
    }
    watcher.kill();
    drop(gateway);
    broker.kill();
    for (program, args) in &services {
        let output = check(program, args);
        assert_eq!(
            output.status.code(),
            Some(1),
            "{program} is gone: {}",
            describe(&output)
        );
    }
}
