//! The broker-wide ledger of what clients have made rumqttd remember, and the limits on it.
//!
//! Why: rumqttd keeps, for the life of the process and with no limit, every subscription filter
//! any client ever used (each with its own message log, never removed, not even on UNSUBSCRIBE),
//! every topic published that matched a filter, every retained message, and every client id it
//! ever saw (persistent sessions, and a few connection events for each clean one). A client — or
//! anyone, on an anonymous broker — could grow the broker without bound just by inventing names.
//! The front door (see [`crate::front`]) shows every CONNECT, SUBSCRIBE and PUBLISH to this ledger
//! before rumqttd sees it, and the ledger answers whether it fits. Because rumqttd never forgets,
//! neither does the ledger: past a limit, new names are refused until the broker restarts, while
//! everything already known keeps working. What each entry costs rumqttd is in `docs/brokers.md`.
//!
//! Names are kept as 64-bit keyed hashes, not strings: the ledger itself stays small (16–24 bytes
//! per entry) and a client cannot choose names that collide.
//!
//! One mutex, held for a few hash-set operations, serves every connection task: the checks are
//! far cheaper than a message through a channel to a task of their own would be.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;

/// The limits, as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Simultaneous connections, counted from CONNECT to close.
    pub(crate) max_connections: usize,
    /// Distinct subscription filters.
    pub(crate) max_filters: usize,
    /// Distinct topics published to (and last-will topics).
    pub(crate) max_topics: usize,
    /// Topics holding a retained message.
    pub(crate) max_retained: usize,
    /// Topic and payload bytes of all retained messages together.
    pub(crate) max_retained_bytes: u64,
    /// Distinct client ids.
    pub(crate) max_client_ids: usize,
}

/// Which limit refused something.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refusal {
    #[error("max_connections ({0}) reached")]
    Connections(usize),
    #[error(
        "max_filters ({0}) reached: the broker refuses new subscription filters until it restarts"
    )]
    Filters(usize),
    #[error("max_topics ({0}) reached: the broker refuses new topics until it restarts")]
    Topics(usize),
    #[error("max_client_ids ({0}) reached: the broker refuses new client ids until it restarts")]
    ClientIds(usize),
    #[error("the client id belongs to another user")]
    ClientIdOfAnotherUser,
}

/// A name's key in the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Key(u64);

/// The ledger shared by every connection.
#[derive(Debug)]
pub(crate) struct Ledger {
    limits: Limits,
    hasher: RandomState,
    books: Mutex<Books>,
}

#[derive(Debug, Default)]
struct Books {
    connections: usize,
    filters: HashSet<Key>,
    topics: HashSet<Key>,
    /// Topic → bytes of its retained message.
    retained: HashMap<Key, u64>,
    retained_bytes: u64,
    /// Client id → the username that first connected with it (`None`: no username).
    client_ids: HashMap<Key, Option<Key>>,
}

/// One open connection; dropping it frees its place under `max_connections`.
#[derive(Debug)]
pub(crate) struct ConnectionSlot<'a> {
    ledger: &'a Ledger,
}

impl Drop for ConnectionSlot<'_> {
    fn drop(&mut self) {
        self.ledger.books().connections -= 1;
    }
}

impl Ledger {
    pub(crate) fn new(limits: Limits) -> Self {
        Self {
            limits,
            hasher: RandomState::new(),
            books: Mutex::new(Books::default()),
        }
    }

    /// The key of a topic, filter or client id.
    pub(crate) fn key(&self, name: &str) -> Key {
        Key(self.hasher.hash_one(name))
    }

    fn books(&self) -> std::sync::MutexGuard<'_, Books> {
        // A panic while holding the lock leaves only counters behind: keep counting.
        self.books
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes a place under `max_connections`.
    pub(crate) fn open_connection(&self) -> Result<ConnectionSlot<'_>, Refusal> {
        let mut books = self.books();
        if books.connections >= self.limits.max_connections {
            return Err(Refusal::Connections(self.limits.max_connections));
        }
        books.connections += 1;
        Ok(ConnectionSlot { ledger: self })
    }

    /// Whether a CONNECT's client id and will topic fit, without recording them: they are
    /// recorded by [`Ledger::record_connect`] once the broker has accepted the connection, so
    /// that clients it refuses (a wrong password) cannot use up the limits. A client id belongs
    /// to the username that first connected with it: rumqttd would hand its session (the
    /// subscriptions, the queued messages) to anyone connecting with the same id, so another user
    /// is refused.
    pub(crate) fn check_connect(
        &self,
        client_id: Option<Key>,
        username: Option<Key>,
        will_topic: Option<Key>,
    ) -> Result<(), Refusal> {
        let books = self.books();
        if let Some(id) = client_id {
            match books.client_ids.get(&id) {
                Some(owner) if *owner != username => return Err(Refusal::ClientIdOfAnotherUser),
                Some(_) => {}
                None if books.client_ids.len() >= self.limits.max_client_ids => {
                    return Err(Refusal::ClientIds(self.limits.max_client_ids));
                }
                None => {}
            }
        }
        if let Some(topic) = will_topic {
            if !books.topics.contains(&topic) && books.topics.len() >= self.limits.max_topics {
                return Err(Refusal::Topics(self.limits.max_topics));
            }
        }
        Ok(())
    }

    /// Records an accepted connection's client id (with its username), will topic and retained
    /// will. Concurrent connects may each have passed [`Ledger::check_connect`], so this may
    /// exceed a limit by the number of clients connecting at that moment.
    pub(crate) fn record_connect(
        &self,
        client_id: Option<Key>,
        username: Option<Key>,
        will_topic: Option<Key>,
        retained_will: Option<(Key, u64)>,
    ) {
        let mut books = self.books();
        if let Some(id) = client_id {
            books.client_ids.entry(id).or_insert(username);
        }
        books.topics.extend(will_topic);
        if let Some((topic, bytes)) = retained_will {
            books.replace_retained(topic, bytes);
        }
    }

    /// Whether every filter of one SUBSCRIBE fits; records them all if so, none otherwise.
    pub(crate) fn admit_filters(&self, filters: &[Key]) -> Result<(), Refusal> {
        let mut books = self.books();
        let mut new: Vec<Key> = filters
            .iter()
            .copied()
            .filter(|f| !books.filters.contains(f))
            .collect();
        new.sort_unstable_by_key(|k| k.0);
        new.dedup();
        if books.filters.len() + new.len() > self.limits.max_filters {
            return Err(Refusal::Filters(self.limits.max_filters));
        }
        books.filters.extend(new);
        Ok(())
    }

    /// Whether a topic fits; records it if so.
    pub(crate) fn admit_topic(&self, topic: Key) -> Result<(), Refusal> {
        let mut books = self.books();
        if books.topics.contains(&topic) {
            return Ok(());
        }
        if books.topics.len() >= self.limits.max_topics {
            return Err(Refusal::Topics(self.limits.max_topics));
        }
        books.topics.insert(topic);
        Ok(())
    }

    /// Whether a retained message of `bytes` (topic and payload) on `topic` would fit, replacing
    /// the topic's current one.
    pub(crate) fn retained_fits(&self, topic: Key, bytes: u64) -> bool {
        self.books().retained_fits(topic, bytes, &self.limits)
    }

    /// Records a retained message if it fits, replacing the topic's current one; `false` if it
    /// does not fit (the broker then must not retain it).
    pub(crate) fn retain(&self, topic: Key, bytes: u64) -> bool {
        let mut books = self.books();
        if !books.retained_fits(topic, bytes, &self.limits) {
            return false;
        }
        books.replace_retained(topic, bytes);
        true
    }

    /// Forgets a topic's retained message: rumqttd clears it on any empty publish to the topic.
    pub(crate) fn clear_retained(&self, topic: Key) {
        let mut books = self.books();
        if let Some(bytes) = books.retained.remove(&topic) {
            books.retained_bytes -= bytes;
        }
    }
}

impl Books {
    fn retained_fits(&self, topic: Key, bytes: u64, limits: &Limits) -> bool {
        let current = self.retained.get(&topic).copied();
        let count = self.retained.len() + usize::from(current.is_none());
        let total = self.retained_bytes - current.unwrap_or(0) + bytes;
        count <= limits.max_retained && total <= limits.max_retained_bytes
    }

    fn replace_retained(&mut self, topic: Key, bytes: u64) {
        if let Some(previous) = self.retained.insert(topic, bytes) {
            self.retained_bytes -= previous;
        }
        self.retained_bytes += bytes;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger() -> Ledger {
        Ledger::new(Limits {
            max_connections: 2,
            max_filters: 3,
            max_topics: 2,
            max_retained: 2,
            max_retained_bytes: 100,
            max_client_ids: 1,
        })
    }

    #[test]
    fn connections_are_counted_until_closed() {
        let ledger = ledger();
        let a = ledger.open_connection().expect("first");
        let _b = ledger.open_connection().expect("second");
        assert_eq!(
            ledger.open_connection().err(),
            Some(Refusal::Connections(2))
        );
        drop(a);
        assert!(ledger.open_connection().is_ok());
    }

    #[test]
    fn filters_are_admitted_all_or_none_and_known_ones_always() {
        let ledger = ledger();
        let [a, b, c, d] = ["a", "b", "c", "d"].map(|f| ledger.key(f));
        ledger.admit_filters(&[a, b, a]).expect("two new");
        assert_eq!(ledger.admit_filters(&[c, d]), Err(Refusal::Filters(3)));
        ledger.admit_filters(&[a, c]).expect("one new: fits");
        ledger.admit_filters(&[a, b, c]).expect("all known");
        assert_eq!(ledger.admit_filters(&[d]), Err(Refusal::Filters(3)));
    }

    #[test]
    fn retained_messages_are_limited_by_count_and_bytes() {
        let ledger = ledger();
        let [a, b, c] = ["a", "b", "c"].map(|t| ledger.key(t));
        assert!(ledger.retain(a, 60));
        assert!(!ledger.retain(b, 41), "61 + 40 > 100 bytes");
        assert!(ledger.retain(b, 40));
        assert!(!ledger.retain(c, 1), "a third topic");
        assert!(ledger.retain(a, 10), "replacing frees the old size");
        assert!(!ledger.retain(c, 1), "still a third topic");
        ledger.clear_retained(a);
        assert!(ledger.retain(c, 60));
        assert!(!ledger.retained_fits(a, 1));
    }

    #[test]
    fn client_ids_are_recorded_only_once_accepted() {
        let ledger = ledger();
        let [alice, bob] = ["alice", "bob"].map(|id| ledger.key(id));
        ledger.check_connect(Some(alice), None, None).expect("room");
        ledger
            .check_connect(Some(bob), None, None)
            .expect("nothing recorded yet");
        ledger.record_connect(Some(alice), None, None, None);
        assert_eq!(
            ledger.check_connect(Some(bob), None, None),
            Err(Refusal::ClientIds(1))
        );
        ledger
            .check_connect(Some(alice), None, None)
            .expect("alice is known");
    }

    #[test]
    fn a_client_id_belongs_to_the_user_who_first_connected_with_it() {
        let ledger = ledger();
        let [id, alice, bob] = ["bonker-agent-bob", "alice", "bob"].map(|n| ledger.key(n));
        ledger
            .check_connect(Some(id), Some(alice), None)
            .expect("not recorded yet");
        ledger.record_connect(Some(id), Some(bob), None, None);
        ledger
            .check_connect(Some(id), Some(bob), None)
            .expect("bob again");
        assert_eq!(
            ledger.check_connect(Some(id), Some(alice), None),
            Err(Refusal::ClientIdOfAnotherUser)
        );
        assert_eq!(
            ledger.check_connect(Some(id), None, None),
            Err(Refusal::ClientIdOfAnotherUser),
            "nor without a username"
        );
        ledger.record_connect(Some(id), Some(alice), None, None);
        assert_eq!(
            ledger.check_connect(Some(id), Some(alice), None),
            Err(Refusal::ClientIdOfAnotherUser),
            "the first user keeps it"
        );
    }

    #[test]
    fn topics_are_limited() {
        let ledger = ledger();
        let [a, b, c] = ["a", "b", "c"].map(|t| ledger.key(t));
        ledger.admit_topic(a).expect("a");
        ledger.record_connect(None, None, Some(b), Some((b, 10)));
        assert_eq!(ledger.admit_topic(c), Err(Refusal::Topics(2)));
        assert_eq!(
            ledger.check_connect(None, None, Some(c)),
            Err(Refusal::Topics(2))
        );
        ledger.admit_topic(a).expect("known");
        assert!(!ledger.retain(c, 91), "the retained will counts");
    }
}
