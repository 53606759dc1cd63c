//! Knowing which publish the broker acknowledged.
//!
//! rumqttc 0.25 has no per-publish acknowledgement future; it reports packet ids as events. A
//! program that must know when the broker has a message (the gateway answering a webhook, the
//! watcher moving its resume point) correlates them with [`PubAcks`]:
//! 1. after each successful `try_publish`, [`PubAcks::handed_over`] queues what the caller wants
//!    back for it;
//! 2. rumqttc takes requests from its channel in order and reports each as
//!    `Outgoing::Publish(pkid)` when it writes it, so [`PubAcks::written`] gives the oldest
//!    handed-over entry that packet id (on a packet-id collision rumqttc first reports
//!    `Outgoing::AwaitAck`, and the `Outgoing::Publish` follows in order, because no other new
//!    request is taken meanwhile);
//! 3. `Incoming::PubAck(pkid)` hands the entry back through [`PubAcks::acked`].
//!
//! The order only holds while nothing else is in rumqttc's queues, so a program using this
//! publishes only while connected, takes every entry back with [`PubAcks::take_all`] when the
//! connection fails, and clears rumqttc's leftovers on every `ConnAck` ([`forget_old_connection`],
//! which a [`crate::link::Link`] made with `fresh_on_connect` calls): rumqttc would
//! otherwise re-send the old connection's publishes under their old packet ids, replay a queued
//! `Outgoing::Publish` of the old connection (handing the next PUBACK to the wrong entry), or keep
//! a stashed packet-id collision that blocks every new publish.

use std::collections::{HashMap, VecDeque};

use rumqttc::EventLoop;

/// Publishes between `try_publish` and the broker's PUBACK, with what each caller wants back.
#[derive(Debug)]
pub struct PubAcks<T> {
    /// Handed to rumqttc, not yet written (no packet id yet), in channel order, each with its
    /// place in the hand-over order.
    unsent: VecDeque<(u64, T)>,
    /// Written, waiting for the PUBACK, by packet id.
    unacked: HashMap<u16, (u64, T)>,
    /// The next entry's place in the hand-over order.
    next: u64,
}

impl<T> Default for PubAcks<T> {
    fn default() -> Self {
        Self {
            unsent: VecDeque::new(),
            unacked: HashMap::new(),
            next: 0,
        }
    }
}

impl<T> PubAcks<T> {
    /// Records a publish rumqttc accepted (`try_publish` returned `Ok`).
    pub fn handed_over(&mut self, entry: T) {
        self.unsent.push_back((self.next, entry));
        self.next += 1;
    }

    /// rumqttc wrote a publish with `pkid` (`Outgoing::Publish`). Returns false when no handed-over
    /// publish was waiting for it (a QoS 0 publish, or one the program did not track).
    pub fn written(&mut self, pkid: u16) -> bool {
        match self.unsent.pop_front() {
            Some(entry) => {
                // rumqttc reuses a packet id only after its PUBACK, so nothing is replaced.
                self.unacked.insert(pkid, entry);
                true
            }
            None => false,
        }
    }

    /// The broker acknowledged `pkid` (`Incoming::PubAck`): its entry, if it was tracked.
    pub fn acked(&mut self, pkid: u16) -> Option<T> {
        self.unacked.remove(&pkid).map(|(_, entry)| entry)
    }

    /// Handed over but not written yet: what still sits in rumqttc's request queue.
    pub fn unsent(&self) -> usize {
        self.unsent.len()
    }

    /// Handed over and not acknowledged yet.
    pub fn len(&self) -> usize {
        self.unsent.len() + self.unacked.len()
    }

    /// Nothing handed over is waiting for its PUBACK.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes every entry back (the connection failed: none of them will be acknowledged), in
    /// the order they were handed over.
    pub fn take_all(&mut self) -> Vec<T> {
        let mut entries: Vec<(u64, T)> = self.unacked.drain().map(|(_, entry)| entry).collect();
        entries.extend(self.unsent.drain(..));
        entries.sort_by_key(|(order, _)| *order);
        entries.into_iter().map(|(_, entry)| entry).collect()
    }
}

/// Clears what rumqttc kept of the previous connection; call on every `ConnAck` of a program that
/// correlates PUBACKs (see the module docs) and republishes by itself what was not acknowledged.
pub fn forget_old_connection(event_loop: &mut EventLoop) {
    event_loop.pending.clear();
    event_loop.state.collision = None;
    event_loop.state.events.clear();
}

#[cfg(test)]
mod tests {
    use super::PubAcks;

    #[test]
    fn entries_come_back_by_their_packet_ids_in_any_ack_order() {
        let mut acks = PubAcks::default();
        for entry in ["a", "b", "c"] {
            acks.handed_over(entry);
        }
        assert!(acks.written(7));
        assert!(acks.written(8));
        assert_eq!(acks.unsent(), 1);
        assert_eq!(acks.acked(8), Some("b"));
        assert_eq!(acks.acked(8), None, "one PUBACK, one entry");
        assert!(acks.written(9));
        assert_eq!(acks.acked(9), Some("c"));
        assert_eq!(acks.acked(7), Some("a"));
        assert!(acks.is_empty());
        assert!(!acks.written(10), "nothing was waiting for this publish");
    }

    #[test]
    fn a_failed_connection_gives_every_entry_back_in_order() {
        let mut acks = PubAcks::default();
        for entry in 1..=4 {
            acks.handed_over(entry);
        }
        assert!(acks.written(65_535));
        assert!(acks.written(2));
        assert_eq!(acks.take_all(), vec![1, 2, 3, 4]);
        assert!(acks.is_empty());
        assert_eq!(acks.acked(2), None);
    }
}
