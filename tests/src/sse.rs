//! A Server-Sent Events reader for tests: reads a `text/event-stream` response and splits it into
//! events the way the WHATWG HTML standard says a browser does (fields `event`, `data`, `id`,
//! `retry`; comment lines start with `:`; a blank line ends an event), with a deadline per event.

use std::time::Duration;

/// One event as a browser would dispatch it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field (`message` when absent).
    pub event: String,
    /// The `data:` lines, joined with newlines.
    pub data: String,
    /// The `id:` field, when the event had one.
    pub id: Option<String>,
    /// The `retry:` field, when the event had one.
    pub retry: Option<u64>,
}

impl SseEvent {
    /// The data parsed as JSON; panics with the data when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| {
            panic!("{} event data is not JSON ({e}): {}", self.event, self.data)
        })
    }
}

/// An open event stream.
#[derive(Debug)]
pub struct SseStream {
    response: reqwest::Response,
    buffer: Vec<u8>,
    /// Every raw line read so far (for format checks).
    pub lines: Vec<String>,
}

impl SseStream {
    /// Wraps a response (checks nothing: the test checks the status and headers).
    pub fn new(response: reqwest::Response) -> SseStream {
        SseStream {
            response,
            buffer: Vec::new(),
            lines: Vec::new(),
        }
    }

    /// The response's headers.
    pub fn headers(&self) -> &reqwest::header::HeaderMap {
        self.response.headers()
    }

    /// The next event, or `None` when the stream ends or `deadline` passes first.
    pub async fn next_within(&mut self, deadline: Duration) -> Option<SseEvent> {
        tokio::time::timeout(deadline, self.next_event())
            .await
            .ok()
            .flatten()
    }

    /// The next event; panics when the stream ends or [`crate::DEADLINE`] passes.
    pub async fn next(&mut self) -> SseEvent {
        self.next_within(crate::DEADLINE)
            .await
            .expect("an event within the deadline")
    }

    /// The next event named `name`, skipping others; panics at [`crate::DEADLINE`].
    pub async fn next_named(&mut self, name: &str) -> SseEvent {
        self.next_matching(|event| event.event == name).await
    }

    /// The next event for which `predicate` holds, skipping others; panics at
    /// [`crate::DEADLINE`].
    pub async fn next_matching(&mut self, predicate: impl Fn(&SseEvent) -> bool) -> SseEvent {
        let deadline = tokio::time::Instant::now() + crate::DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let event = self
                .next_within(left)
                .await
                .expect("the awaited event within the deadline");
            if predicate(&event) {
                return event;
            }
        }
    }

    async fn next_line(&mut self) -> Option<String> {
        loop {
            if let Some(end) = self.buffer.iter().position(|b| *b == b'\n' || *b == b'\r') {
                let mut line: Vec<u8> = self.buffer.drain(..=end).collect();
                let terminator = line.pop();
                // CRLF counts as one line end.
                if terminator == Some(b'\r') && self.buffer.first() == Some(&b'\n') {
                    self.buffer.remove(0);
                }
                let line = String::from_utf8_lossy(&line).into_owned();
                self.lines.push(line.clone());
                return Some(line);
            }
            let chunk = self.response.chunk().await.ok()??;
            self.buffer.extend_from_slice(&chunk);
        }
    }

    async fn next_event(&mut self) -> Option<SseEvent> {
        let mut event = SseEvent::default();
        let mut data: Vec<String> = Vec::new();
        let mut any = false;
        loop {
            let line = self.next_line().await?;
            if line.is_empty() {
                if any {
                    event.data = data.join("\n");
                    if event.event.is_empty() {
                        event.event = "message".to_owned();
                    }
                    return Some(event);
                }
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
                None => (line.as_str(), ""),
            };
            match field {
                "event" => event.event = value.to_owned(),
                "data" => data.push(value.to_owned()),
                "id" => event.id = Some(value.to_owned()),
                "retry" => event.retry = value.parse().ok(),
                _ => continue,
            }
            any = true;
        }
    }
}
