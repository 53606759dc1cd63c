//! `bonker demo` is the README's first command: it must start, answer the curl it prints, and show
//! its desks bonking — and stop cleanly on SIGTERM.

use std::path::Path;
use std::process::Command;

use bonker_tests::{ChildProcess, DEADLINE, binary, free_port};

#[test]
fn the_demo_answers_its_own_curl_and_its_desks_bonk() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let (mqtt_port, http_port) = (free_port(), free_port());
    let mut command = Command::new(binary("bonker"));
    command
        .current_dir(&root)
        .arg("demo")
        .arg("--mqtt-port")
        .arg(mqtt_port.to_string())
        .arg("--http-port")
        .arg(http_port.to_string());
    let mut demo = ChildProcess::spawn("bonker demo", command);
    for desk in ["alice", "bob", "carol"] {
        demo.wait_for_line(&format!("desk {desk} is online"), DEADLINE);
    }

    // The curl line, exactly as printed.
    let curl = demo.wait_for_line("curl ", DEADLINE).trim().to_owned();
    assert!(
        curl.contains(&format!("127.0.0.1:{http_port}/webhook")),
        "{curl}"
    );
    let output = Command::new("sh")
        .current_dir(&root)
        .arg("-c")
        .arg(&curl)
        .output()
        .expect("curl runs");
    let body = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{curl} failed: {body}");
    let answer: serde_json::Value = serde_json::from_str(&body).expect("the gateway answers JSON");
    assert_eq!(answer["published"], 2, "{body}");

    // The example is two OOMKilled alerts in namespace payments: alice and carol bonk twice each.
    demo.wait_for_line("🐧 alice  BONK! (payments/api-7d4b9c-x2x8q", DEADLINE);
    demo.wait_for_line("🐧 carol  BONK! (payments/worker-5f8c7-k9zq2", DEADLINE);

    // The mosquitto_pub line, exactly as printed: bob (checkout) and carol tap.
    let publish = demo
        .wait_for_line("mosquitto_pub", DEADLINE)
        .trim()
        .to_owned();
    let status = Command::new("sh")
        .arg("-c")
        .arg(&publish)
        .status()
        .expect("sh");
    assert!(status.success(), "{publish}");
    demo.wait_for_line("🐧 bob    tap", DEADLINE);

    demo.signal(rustix::process::Signal::TERM);
    let status = demo.wait_exit(DEADLINE);
    assert!(
        status.success(),
        "demo exit: {status}; output:\n{}",
        demo.output()
    );
    assert!(demo.output().contains("bye"));
}
