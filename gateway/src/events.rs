//! The fleet page's live feed: every change to the fleet view as a Server-Sent Event, for
//! `GET /api/events`.
//!
//! # Why it is fed from inside the fleet view
//! [`crate::fleet::Fleet`] is changed by the MQTT task (status, health, acks, bonks seen on the
//! broker) and by webhooks (merged alerts), always under its one lock. It owns an [`Events`] hub
//! and announces each change while it still holds the lock, so the order of events is the order of
//! changes, and a stream that starts takes its snapshot and its subscription under the same lock:
//! nothing falls between the two.
//!
//! # Never slowing the MQTT task
//! Announcing is a `tokio::sync::broadcast` send, which never waits. The payload is built (and
//! serialised once, for every reader) only while a stream is open; with no page open an
//! announcement costs a counter check. A reader that falls more than [`EVENT_BUFFER`] events behind
//! (a slow phone, a stalled proxy) does not hold anything up: it misses events, notices
//! (`RecvError::Lagged`) and gets a fresh snapshot instead.
//!
//! # Memory
//! The broadcast ring holds at most [`EVENT_BUFFER`] events shared by all readers (each a desk
//! view, one ack, or one bonk with at most [`crate::fleet::MAX_EXPECTED_DESKS`] desks); each
//! stream adds its receiver, its place, and at most one snapshot being written (every desk and
//! the feed's [`crate::fleet::MAX_FEED`] bonks). Streams are capped by `max_event_streams`.
//!
//! # Ids
//! Every event has an id, a number that grows by one per change within one gateway process. A
//! stream always starts with a `snapshot` of the whole state, carrying the id of the last change it
//! includes; a browser that reconnects with `Last-Event-ID` gets a fresh snapshot too (no replay:
//! the snapshot is complete, and the ids start again after a gateway restart).

use std::sync::Arc;

use serde::Serialize;
use tokio::sync::broadcast;

/// Events kept for readers that are behind; a reader further behind gets a snapshot.
pub(crate) const EVENT_BUFFER: usize = 256;

/// One change, serialised once for every reader.
#[derive(Debug)]
pub struct Event {
    /// Its id (see the module docs).
    pub id: u64,
    /// The SSE event name: `desk`, `desk_removed`, `bonk`, `ack` or `snapshot`.
    pub kind: &'static str,
    /// The JSON payload.
    pub data: String,
}

/// The hub: a broadcast sender and the id of the last change.
#[derive(Debug)]
pub(crate) struct Events {
    sender: broadcast::Sender<Arc<Event>>,
    last_id: u64,
}

impl Default for Events {
    fn default() -> Self {
        Self {
            sender: broadcast::Sender::new(EVENT_BUFFER),
            last_id: 0,
        }
    }
}

impl Events {
    /// True while a stream is open: only then is an event worth building.
    pub(crate) fn listened(&self) -> bool {
        self.sender.receiver_count() > 0
    }

    /// The id of the last change announced.
    pub(crate) fn last_id(&self) -> u64 {
        self.last_id
    }

    /// Announces a change; `data` is only called while a stream is open.
    pub(crate) fn announce<T: Serialize>(&mut self, kind: &'static str, data: impl FnOnce() -> T) {
        if !self.listened() {
            return;
        }
        self.last_id += 1;
        let data = serde_json::to_string(&data()).unwrap_or_else(|_| "null".to_owned());
        // An error means the last reader left meanwhile: nothing to do.
        let _ = self.sender.send(Arc::new(Event {
            id: self.last_id,
            kind,
            data,
        }));
    }

    /// A new reader; it sees every change announced from now on.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.sender.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_built_without_a_reader_and_ids_count_changes() {
        let mut events = Events::default();
        events.announce("desk", || -> u32 { panic!("built without a reader") });
        assert_eq!(events.last_id(), 0);
        let mut reader = events.subscribe();
        events.announce("desk", || serde_json::json!({"desk": "alice"}));
        events.announce("ack", || 1);
        let first = reader.try_recv().expect("an event");
        assert_eq!(
            (first.id, first.kind, first.data.as_str()),
            (1, "desk", r#"{"desk":"alice"}"#)
        );
        assert_eq!(reader.try_recv().expect("an event").id, 2);
        assert_eq!(events.last_id(), 2);
    }

    #[test]
    fn a_reader_that_falls_behind_is_told_so() {
        let mut events = Events::default();
        let mut reader = events.subscribe();
        for n in 0..EVENT_BUFFER + 10 {
            events.announce("ack", || n);
        }
        assert!(matches!(
            reader.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(10))
        ));
    }
}
