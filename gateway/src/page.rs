//! The fleet page: a live view of the desks and the latest bonks at `/`, with buttons that bonk
//! through `POST /bonk`, updated by Server-Sent Events from `GET /api/events`.
//!
//! # Why it is this small
//! The page is three files compiled into the binary (`include_str!`): nothing to build, nothing
//! fetched from elsewhere, one version with the gateway it talks to. The script inserts every
//! text from alerts and desks with `textContent`, and the Content-Security-Policy lets it load
//! only itself, so an alert summary holding markup shows as text and cannot run. Assets carry an
//! ETag and `Cache-Control: no-cache`: a browser revalidates each time and gets a 304.
//!
//! # Authentication
//! The page and its stream sit behind the same credentials as `/api/desks` and `/bonk`: with basic
//! auth a browser asks once and sends the credentials with every request of the page (the stream
//! and the bonk buttons included); with a bearer token only, a browser cannot log in and a reverse
//! proxy must add the header (`docs/fleet-page.md`).
//!
//! # The stream
//! Each stream starts with a snapshot and then relays [`crate::events`] as they come, never
//! polling anything. At most `max_event_streams` are served at once (one more gets 503, the page
//! retries later); each ends when the gateway shuts down, so a page open does not hold up a
//! restart. The event format is in `docs/fleet-page.md`.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{self, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio_util::sync::CancellationToken;

use crate::AppState;
use crate::error::ApiError;
use crate::events::Event;
use crate::fleet::Fleet;
use crate::mqtt::lock;

const INDEX_HTML: &str = include_str!("page/index.html");
const APP_JS: &str = include_str!("page/app.js");
const APP_CSS: &str = include_str!("page/app.css");

/// The page may load its own script, style and stream, and nothing else; `data:` images for the
/// empty favicon only.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// How long a browser waits before reconnecting a stream that broke (the SSE `retry:` field).
pub(crate) const RECONNECT_DELAY: Duration = Duration::from_secs(2);
/// Seconds a page waits before trying again when every stream place is taken.
const FULL_RETRY_AFTER_S: u64 = 30;
/// A comment line this often keeps proxies and NAT from closing a quiet stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// One embedded file.
#[derive(Debug)]
struct Asset {
    body: &'static str,
    content_type: &'static str,
    etag: &'static str,
}

/// A strong ETag from the file's bytes (FNV-1a, computed at compile time), quoted.
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    hash
}

const fn hex_etag(hash: u64) -> [u8; 18] {
    let digits = b"0123456789abcdef";
    let mut out = [b'"'; 18];
    let mut i = 0;
    while i < 16 {
        out[1 + i] = digits[((hash >> (60 - 4 * i)) & 0xf) as usize];
        i += 1;
    }
    out
}

macro_rules! etag {
    ($body:expr) => {{
        const BYTES: [u8; 18] = hex_etag(fnv1a($body.as_bytes()));
        match std::str::from_utf8(&BYTES) {
            Ok(etag) => etag,
            Err(_) => "\"0\"",
        }
    }};
}

static INDEX: Asset = Asset {
    body: INDEX_HTML,
    content_type: "text/html; charset=utf-8",
    etag: etag!(INDEX_HTML),
};
static SCRIPT: Asset = Asset {
    body: APP_JS,
    content_type: "text/javascript; charset=utf-8",
    etag: etag!(APP_JS),
};
static STYLE: Asset = Asset {
    body: APP_CSS,
    content_type: "text/css; charset=utf-8",
    etag: etag!(APP_CSS),
};

/// The three files' total size in bytes, kept small at compile time.
const PAGE_BYTES: usize = INDEX_HTML.len() + APP_JS.len() + APP_CSS.len();
const _: () = assert!(PAGE_BYTES < 40_000, "the fleet page is meant to stay small");

fn serve(asset: &Asset, headers: &HeaderMap) -> Response {
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|tag| tag.trim() == asset.etag));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            )],
            asset.body,
        )
            .into_response()
    };
    let headers = response.headers_mut();
    headers.insert(header::ETAG, HeaderValue::from_static(asset.etag));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    security_headers(headers);
    response
}

fn security_headers(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

/// `GET /`.
pub(crate) async fn index(headers: HeaderMap) -> Response {
    serve(&INDEX, &headers)
}

/// `GET /app.js`.
pub(crate) async fn script(headers: HeaderMap) -> Response {
    serve(&SCRIPT, &headers)
}

/// `GET /app.css`.
pub(crate) async fn style(headers: HeaderMap) -> Response {
    serve(&STYLE, &headers)
}

/// `GET /api/events`: a snapshot, then every change, as Server-Sent Events.
pub(crate) async fn events(State(state): State<AppState>) -> Result<Response, ApiError> {
    let max = state.settings().max_event_streams;
    let Ok(place) = state.stream_places().try_acquire_owned() else {
        state.metrics().event_stream_refused.inc();
        tracing::info!(
            max_event_streams = max,
            "refused an event stream: every place is taken"
        );
        let mut response = ApiError::Unavailable(format!(
            "{max} live event streams are open, the most this gateway serves \
             (max_event_streams); close a fleet page or raise the setting, and retry"
        ))
        .into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(FULL_RETRY_AFTER_S));
        return Ok(response);
    };
    let fleet = state.fleet_handle();
    let (receiver, snapshot) = lock(&fleet).subscribe();
    let stream = relay(Relay {
        receiver,
        first: Some(snapshot.into_event()),
        fleet,
        stop: state.stop_streams().clone(),
        _place: place,
        _open: state.metrics().event_streams_open_guard(),
    });
    let mut response = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // nginx buffers responses unless told not to; an event stream must not be.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    security_headers(headers);
    Ok(response)
}

/// What one stream holds while it is open.
struct Relay {
    receiver: broadcast::Receiver<Arc<Event>>,
    /// The snapshot still to send.
    first: Option<Event>,
    fleet: Arc<Mutex<Fleet>>,
    stop: CancellationToken,
    _place: OwnedSemaphorePermit,
    _open: crate::metrics::OpenStream,
}

fn relay(relay: Relay) -> impl Stream<Item = Result<sse::Event, Infallible>> {
    futures_util::stream::unfold(relay, |mut relay| async move {
        if let Some(snapshot) = relay.first.take() {
            let event = wire(&snapshot).retry(RECONNECT_DELAY);
            return Some((Ok(event), relay));
        }
        let received = tokio::select! {
            biased;
            () = relay.stop.cancelled() => return None,
            received = relay.receiver.recv() => received,
        };
        match received {
            Ok(event) => Some((Ok(wire(&event)), relay)),
            Err(RecvError::Lagged(missed)) => {
                tracing::debug!(
                    missed,
                    "an event stream fell behind; sending a fresh snapshot"
                );
                let (receiver, snapshot) = lock(&relay.fleet).subscribe();
                relay.receiver = receiver;
                Some((Ok(wire(&snapshot.into_event())), relay))
            }
            Err(RecvError::Closed) => None,
        }
    })
}

fn wire(event: &Event) -> sse::Event {
    sse::Event::default()
        .event(event.kind)
        .id(event.id.to_string())
        .data(&event.data)
}

#[cfg(test)]
mod tests {
    use bonker_protocol::DeskId;
    use futures_util::StreamExt;

    use super::*;

    fn desk(name: &str) -> DeskId {
        DeskId::new(name).expect("valid desk")
    }

    fn place() -> OwnedSemaphorePermit {
        Arc::new(tokio::sync::Semaphore::new(1))
            .try_acquire_owned()
            .expect("a free place")
    }

    /// The SSE text of one event, as axum writes it.
    async fn text(event: sse::Event) -> String {
        let stream = futures_util::stream::iter([Ok::<_, Infallible>(event)]);
        let body = Sse::new(stream).into_response().into_body();
        let bytes = axum::body::to_bytes(body, 1 << 20).await.expect("body");
        String::from_utf8(bytes.to_vec()).expect("utf-8")
    }

    #[tokio::test]
    async fn a_stream_that_falls_behind_gets_a_fresh_snapshot_and_goes_on() {
        let fleet = Arc::new(Mutex::new(Fleet::default()));
        let (receiver, snapshot) = lock(&fleet).subscribe();
        let stream = relay(Relay {
            receiver,
            first: Some(snapshot.into_event()),
            fleet: fleet.clone(),
            stop: CancellationToken::new(),
            _place: place(),
            _open: crate::metrics::Metrics::new().event_streams_open_guard(),
        });
        tokio::pin!(stream);
        let first = text(stream.next().await.expect("snapshot").expect("ok")).await;
        assert!(
            first.starts_with(
                "event: snapshot\nid: 0\ndata: {\"desks\":[],\"bonks\":[]}\nretry: 2000\n"
            ),
            "{first}"
        );
        // More changes than the ring holds while this reader is not reading.
        let now = chrono::Utc::now();
        for n in 0..crate::events::EVENT_BUFFER + 20 {
            let status: &[u8] = if n % 2 == 0 { b"online" } else { b"offline" };
            lock(&fleet)
                .record_status(desk("alice"), status, now)
                .expect("ok");
        }
        let caught_up = text(stream.next().await.expect("an event").expect("ok")).await;
        let last = (crate::events::EVENT_BUFFER + 20).to_string();
        assert!(
            caught_up.starts_with(&format!("event: snapshot\nid: {last}\n")),
            "{caught_up}"
        );
        assert!(caught_up.contains("\"desk\":\"alice\""), "{caught_up}");
        lock(&fleet)
            .record_status(desk("bob"), b"online", now)
            .expect("ok");
        let next = text(stream.next().await.expect("an event").expect("ok")).await;
        assert!(next.starts_with("event: desk\nid: "), "{next}");
        assert!(next.contains("\"desk\":\"bob\""), "{next}");
    }

    #[tokio::test]
    async fn streams_end_at_shutdown() {
        let fleet = Arc::new(Mutex::new(Fleet::default()));
        let stop = CancellationToken::new();
        let (receiver, snapshot) = lock(&fleet).subscribe();
        let stream = relay(Relay {
            receiver,
            first: Some(snapshot.into_event()),
            fleet,
            stop: stop.clone(),
            _place: place(),
            _open: crate::metrics::Metrics::new().event_streams_open_guard(),
        });
        tokio::pin!(stream);
        assert!(stream.next().await.is_some());
        stop.cancel();
        assert!(stream.next().await.is_none());
    }

    #[test]
    fn etags_are_quoted_hex_and_follow_the_content() {
        for asset in [&INDEX, &SCRIPT, &STYLE] {
            assert_eq!(asset.etag.len(), 18);
            assert!(asset.etag.starts_with('"') && asset.etag.ends_with('"'));
        }
        assert_ne!(INDEX.etag, SCRIPT.etag);
        assert_ne!(hex_etag(fnv1a(b"a")), hex_etag(fnv1a(b"b")));
    }

    #[test]
    fn the_page_is_small_and_loads_nothing_from_elsewhere() {
        for body in [INDEX_HTML, APP_JS, APP_CSS] {
            assert!(!body.contains("http://") && !body.contains("https://"));
            assert!(!body.contains("innerHTML"));
        }
        assert!(!INDEX_HTML.contains("<script>"), "no inline script");
        assert!(!INDEX_HTML.contains("style="), "no inline style");
    }
}
