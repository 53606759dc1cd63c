//! The fleet page in a real browser: Debian's Chromium, headless, driven over WebDriver by
//! chromedriver, against a real gateway process, a real broker (both kinds) and real agents with
//! simulated servos. Nothing is reloaded: every change must reach the page through its event
//! stream.
//!
//! Set `BONKER_SCREENSHOT=docs/fleet-page.png` (a path relative to the workspace) to write the
//! page's screenshot for the docs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bonker_protocol::{Bonk, BonkId, Detector, Kill, Severity, Source};
use bonker_tests::{
    AgentProcess, BrokerKind, ChildProcess, GatewayProcess, Probe, TestBroker, webhook,
};
use chrono::Utc;
use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use reqwest::StatusCode;
use serde_json::{Value, json};

const STARTS_AT: &str = "2026-11-21T10:00:00.123Z";
/// Text an alert could carry: it must show as text, never run or render as markup.
const HOSTILE_SUMMARY: &str =
    "<script>window.pwned = 1</script><img src=x onerror=\"window.pwned = 2\"><b>bold</b> & co";

/// Chromium under chromedriver, on a free port; both are killed when this is dropped.
struct Browser {
    client: Client,
    _driver: ChildProcess,
}

impl Browser {
    async fn start() -> Browser {
        let port = bonker_tests::free_port();
        let mut command = Command::new(chromedriver());
        command.arg(format!("--port={port}"));
        let mut driver = ChildProcess::spawn("chromedriver", command);
        driver.wait_for_line("successfully", bonker_tests::DEADLINE);
        let capabilities = json!({
            "goog:chromeOptions": {
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1200,900"],
            },
            "goog:loggingPrefs": {"browser": "ALL"},
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!("an object")
        };
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .unwrap_or_else(|e| panic!("no WebDriver session: {e}\n{}", driver.output()));
        Browser {
            client,
            _driver: driver,
        }
    }

    /// Waits until an element matching `css` is on the page.
    async fn wait_for(&self, css: &str) {
        self.client
            .wait()
            .at_most(bonker_tests::DEADLINE)
            .every(Duration::from_millis(10))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css} never appeared: {e}"));
    }

    /// Clicks the element matching `css`. The page rebuilds a desk's row when the desk changes
    /// (a health report), so an element found a moment before can be gone by the click: it is
    /// found again, until the deadline.
    async fn click(&self, css: &str) {
        let deadline = tokio::time::Instant::now() + bonker_tests::DEADLINE;
        loop {
            let element = self
                .client
                .find(Locator::Css(css))
                .await
                .unwrap_or_else(|e| panic!("{css} is not on the page: {e}"));
            match element.click().await {
                Ok(()) => return,
                Err(e)
                    if e.is_stale_element_reference() && tokio::time::Instant::now() < deadline => {
                }
                Err(e) => panic!("cannot click {css}: {e}"),
            }
        }
    }

    async fn js(&self, script: &str) -> Value {
        self.client
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// The browser's log since the last call (console messages, failed loads, CSP violations).
    async fn log(&self) -> Vec<Value> {
        match self.client.issue_cmd(BrowserLog).await {
            Ok(Value::Array(entries)) => entries,
            other => panic!("no browser log: {other:?}"),
        }
    }
}

/// chromedriver's log endpoint (`goog:loggingPrefs`), which W3C WebDriver lacks.
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/se/log",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _request_url: &url::Url) -> (axum::http::Method, Option<String>) {
        (
            axum::http::Method::POST,
            Some(r#"{"type":"browser"}"#.to_owned()),
        )
    }
}

fn chromedriver() -> PathBuf {
    for path in ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"] {
        if Path::new(path).exists() {
            return PathBuf::from(path);
        }
    }
    PathBuf::from("chromedriver")
}

/// Entries of `level` SEVERE (errors) other than those `allowed` says are expected.
fn errors(log: &[Value], allowed: impl Fn(&str) -> bool) -> Vec<String> {
    log.iter()
        .filter(|entry| entry["level"] == "SEVERE")
        .filter_map(|entry| entry["message"].as_str())
        .filter(|message| !allowed(message))
        .map(str::to_owned)
        .collect()
}

fn notification(fingerprint: &str, namespace: &str, pod: &str, summary: &str) -> Value {
    notification_at(fingerprint, namespace, pod, summary, STARTS_AT)
}

fn notification_at(
    fingerprint: &str,
    namespace: &str,
    pod: &str,
    summary: &str,
    starts_at: &str,
) -> Value {
    webhook::notification(vec![webhook::oom_alert(
        fingerprint,
        namespace,
        pod,
        summary,
        starts_at,
    )])
}

async fn post_webhook(gateway: &GatewayProcess, body: &Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/webhook", gateway.url()))
        .json(body)
        .send()
        .await
        .expect("POST /webhook");
    assert_eq!(response.status(), StatusCode::OK);
}

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or_default()
}

/// Records, in the page, when each feed row first appears and when it first shows alice's
/// outcome (the browser's clock is the test's: same machine).
const OBSERVE_FEED: &str = r#"
window.seen = {};
const feed = document.getElementById('feed');
new MutationObserver(() => {
  for (const item of feed.children) {
    const id = item.dataset.id;
    const seen = window.seen[id] || (window.seen[id] = { row: Date.now() });
    if (!seen.ack && item.querySelector('[data-desk="alice"]:not([data-outcome="waiting"])')) {
      seen.ack = Date.now();
    }
  }
}).observe(feed, { childList: true, subtree: true });
"#;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(rank).copied().unwrap_or(f64::NAN)
}

/// The page lists the desks; webhooks' bonks appear with each desk's ack; the identify button
/// wiggles one desk; a killed agent turns offline; a gateway restart on the same port is survived
/// without a reload; hostile alert text shows as text; the console stays clean.
async fn the_page_follows_the_fleet_live(kind: BrokerKind) {
    let broker = TestBroker::start(kind);
    let url = broker.url();
    let mut gateway = GatewayProcess::start(&url, &[]).await;
    let fast = [("BONKER_RATE_LIMIT__MAX_BONKS", "1000")];
    let probe = bonker_tests::ProbeOptions::default();
    let _alice =
        AgentProcess::start_with(&url, "alice", &["payments"], &[], &fast, probe.clone()).await;
    let _bob = AgentProcess::start(&url, "bob", &["checkout"], &[]).await;
    let mut carol = AgentProcess::start(&url, "carol", &["+"], &[]).await;

    let browser = Browser::start().await;
    browser
        .client
        .goto(&format!("{}/", gateway.url()))
        .await
        .expect("the page loads");
    for desk in ["alice", "bob", "carol"] {
        browser
            .wait_for(&format!(
                "#desks tr[data-desk=\"{desk}\"][data-status=\"online\"]"
            ))
            .await;
    }
    // The health report fills in what the desk watches.
    browser
        .wait_for("#desks tr[data-desk=\"alice\"] td.ns")
        .await;
    browser.js(OBSERVE_FEED).await;
    browser
        .js("window.marker = 'not reloaded'; return null;")
        .await;

    // Webhooks: each bonk appears, then alice's ack, timed from the POST.
    let mut rows = Vec::new();
    let mut acks = Vec::new();
    for n in 0..20 {
        let fingerprint = format!("fp-{n}");
        let id = BonkId::for_alert(&fingerprint, STARTS_AT).to_string();
        let summary = if n == 0 {
            HOSTILE_SUMMARY.to_owned()
        } else {
            format!("api-{n} ran out of memory")
        };
        let posted = now_ms();
        post_webhook(
            &gateway,
            &notification(&fingerprint, "payments", &format!("api-{n}"), &summary),
        )
        .await;
        browser
            .wait_for(&format!(
                "#feed li[data-id=\"{id}\"] [data-desk=\"alice\"][data-outcome=\"bonked\"]"
            ))
            .await;
        let seen = browser.js(&format!("return window.seen['{id}'];")).await;
        rows.push(seen["row"].as_f64().unwrap_or(f64::NAN) - posted);
        acks.push(seen["ack"].as_f64().unwrap_or(f64::NAN) - posted);
    }
    for (what, mut times) in [("row appears", rows), ("ack shown", acks)] {
        times.sort_by(f64::total_cmp);
        eprintln!(
            "fleet page, {kind:?}: webhook POST → {what}: p50 {:.1} ms, p95 {:.1} ms over {} bonks",
            percentile(&times, 0.5),
            percentile(&times, 0.95),
            times.len()
        );
    }
    let first = BonkId::for_alert("fp-0", STARTS_AT).to_string();
    let shown = browser
        .js(&format!(
            "const s = document.querySelector('#feed li[data-id=\"{first}\"] .summary');
             return [s.textContent, s.children.length, window.pwned === undefined];"
        ))
        .await;
    assert_eq!(shown, json!([HOSTILE_SUMMARY, 0, true]));
    let log = browser.log().await;
    assert_eq!(errors(&log, |_| false), Vec::<String>::new(), "{log:?}");

    // Identify: bob's Tux wiggles (an info bonk on his desk topic), acked on MQTT.
    let mut bob_acks = Probe::connect(&url, &["bonker/desk/bob/ack"]).await;
    browser
        .click("#desks tr[data-desk=\"bob\"] button.identify")
        .await;
    let ack = bob_acks.next().await.json();
    assert_eq!(
        (&ack["outcome"], &ack["severity"]),
        (&json!("bonked"), &json!("info"))
    );
    let identified = ack["bonk_id"].as_str().expect("bonk id").to_owned();
    browser
        .wait_for(&format!(
            "#feed li[data-id=\"{identified}\"] [data-desk=\"bob\"][data-outcome=\"bonked\"]"
        ))
        .await;

    // A killed agent: the broker publishes its last will, the row turns offline.
    carol.process().kill();
    browser
        .wait_for("#desks tr.offline[data-desk=\"carol\"][data-status=\"offline\"]")
        .await;

    // The watcher saw a kill first; the alert for it is merged into the watcher's bonk, and the
    // feed says so.
    let killed_at = Utc::now() - chrono::Duration::seconds(5);
    let mut bonk = Bonk::new(Source::Watcher, Severity::Critical);
    bonk.namespace = Some("payments".into());
    bonk.pod = Some("api-oom".into());
    bonk.container = Some("app".into());
    bonk.node = Some("node-a".into());
    bonk.summary = Some("the kernel killed api-oom".into());
    let mut kill = Kill::new(Detector::Kernel, killed_at);
    kill.namespace = bonk.namespace.clone();
    kill.pod = bonk.pod.clone();
    kill.container = bonk.container.clone();
    kill.node = bonk.node.clone();
    bonk.kill = Some(kill);
    Probe::connect(&url, &[])
        .await
        .publish("bonker/bonk/payments", bonk.to_json(), false)
        .await;
    browser
        .wait_for(&format!(
            "#feed li[data-id=\"{}\"] [data-desk=\"alice\"][data-outcome=\"bonked\"]",
            bonk.id
        ))
        .await;
    let starts_at = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let alert = BonkId::for_alert("fp-oom", &starts_at).to_string();
    post_webhook(
        &gateway,
        &notification_at(
            "fp-oom",
            "payments",
            "api-oom",
            "api-oom was OOMKilled",
            &starts_at,
        ),
    )
    .await;
    browser
        .wait_for(&format!(
            "#feed li.merged[data-id=\"{alert}\"] .merged-into"
        ))
        .await;
    let merged = browser
        .js(&format!(
            "return document.querySelector('#feed li[data-id=\"{alert}\"] .merged-into').textContent;"
        ))
        .await;
    // Its desks reacted to the watcher's bonk; the merged alert waits for nobody.
    let waiting = browser
        .js(&format!(
            "return document.querySelectorAll('#feed li[data-id=\"{alert}\"] [data-outcome]').length;"
        ))
        .await;
    assert_eq!(waiting, 0);
    let short = &bonk.id.to_string()[..8];
    assert!(
        merged.as_str().is_some_and(|text| text.contains(short)),
        "{merged}"
    );

    if kind == BrokerKind::Bonker
        && let Some(path) = std::env::var_os("BONKER_SCREENSHOT")
    {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path);
        let png = browser.client.screenshot().await.expect("a screenshot");
        std::fs::write(&path, png).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }

    // The gateway restarts on the same port; the page reconnects by itself. SIGTERM: an open
    // page must not hold up a shutdown (its stream ends, cleanly).
    let port = gateway.port();
    gateway.process().signal(rustix::process::Signal::TERM);
    let exited = gateway.process().wait_exit(bonker_tests::DEADLINE);
    assert!(exited.success(), "{exited}");
    browser.wait_for("#conn.bad").await;
    gateway = GatewayProcess::spawn(&url, port, &[], &[]);
    gateway.wait_ready().await;
    browser.wait_for("#conn.ok").await;
    browser
        .wait_for("#desks tr[data-desk=\"alice\"][data-status=\"online\"]")
        .await;
    browser
        .wait_for("#desks tr[data-desk=\"carol\"][data-status=\"offline\"]")
        .await;
    let after = BonkId::for_alert("fp-after-restart", STARTS_AT).to_string();
    post_webhook(
        &gateway,
        &notification(
            "fp-after-restart",
            "payments",
            "api-restarted",
            "after the restart",
        ),
    )
    .await;
    browser
        .wait_for(&format!(
            "#feed li[data-id=\"{after}\"] [data-desk=\"alice\"][data-outcome=\"bonked\"]"
        ))
        .await;
    assert_eq!(browser.js("return window.marker;").await, "not reloaded");
    // While the gateway was away the browser logged its failed reconnects, and nothing else.
    let log = browser.log().await;
    let unexpected = errors(&log, |message| {
        message.contains("api/events") && message.contains("ERR_CONNECTION_REFUSED")
    });
    assert_eq!(unexpected, Vec::<String>::new(), "{log:?}");

    // On a phone's width the page does not scroll sideways; only the desk table may.
    browser
        .client
        .set_window_size(390, 844)
        .await
        .expect("a phone-sized window");
    let fits = browser
        .js("return [document.documentElement.scrollWidth, window.innerWidth];")
        .await;
    assert!(
        fits[0].as_f64() <= fits[1].as_f64() && fits[1].as_f64() < Some(500.0),
        "{fits}"
    );
    if let Some(path) = std::env::var_os("BONKER_PHONE_SCREENSHOT") {
        let png = browser.client.screenshot().await.expect("a screenshot");
        std::fs::write(&path, png).expect("write the screenshot");
    }
    let _ = browser.client.close().await;
}

/// With basic auth on, the page needs it (401 with a Basic challenge, so a browser asks), and
/// once given — here in the URL, which Chromium takes for the whole origin — the page, its stream
/// and its buttons work.
async fn the_page_works_behind_basic_auth(kind: BrokerKind) {
    let broker = TestBroker::start(kind);
    let url = broker.url();
    let gateway = GatewayProcess::start_with(
        &url,
        &[],
        &[
            ("BONKER_AUTH__BASIC_USERNAME", "ops"),
            ("BONKER_AUTH__BASIC_PASSWORD", "s3cret"),
        ],
    )
    .await;
    let refused = reqwest::get(format!("{}/", gateway.url()))
        .await
        .expect("GET /");
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let challenge = refused
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(challenge.starts_with("Basic "), "{challenge}");
    let _alice = AgentProcess::start(&url, "alice", &["payments"], &[]).await;

    let browser = Browser::start().await;
    browser
        .client
        .goto(&format!("http://ops:s3cret@127.0.0.1:{}/", gateway.port()))
        .await
        .expect("the page loads");
    browser
        .wait_for("#desks tr[data-desk=\"alice\"][data-status=\"online\"]")
        .await;
    browser.wait_for("#conn.ok").await;
    let mut acks = Probe::connect(&url, &["bonker/desk/alice/ack"]).await;
    browser
        .click("#desks tr[data-desk=\"alice\"] button.identify")
        .await;
    assert_eq!(acks.next().await.json()["severity"], "info");
    let log = browser.log().await;
    assert_eq!(errors(&log, |_| false), Vec::<String>::new(), "{log:?}");
    let _ = browser.client.close().await;
}

bonker_tests::for_both_brokers!(
    the_page_follows_the_fleet_live,
    the_page_works_behind_basic_auth
);
