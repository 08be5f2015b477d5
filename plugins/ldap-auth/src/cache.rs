//! Answers kept for a while, so that a burst of logins by one device does not become a burst of
//! LDAP binds. Bounded: when full, expired entries go, and if that is not enough, all of them.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The most answers kept per kind of question.
const CACHE_ENTRIES_MAX: usize = 10_000;

pub struct Cache<K, V> {
    ttl: Duration,
    entries: Mutex<HashMap<K, (Instant, V)>>,
}

impl<K: Eq + Hash, V: Clone> Cache<K, V> {
    /// A zero TTL caches nothing.
    pub fn new(ttl: Duration) -> Cache<K, V> {
        Cache { ttl, entries: Mutex::new(HashMap::new()) }
    }

    pub fn get(&self, key: &K) -> Option<V> {
        if self.ttl.is_zero() {
            return None;
        }
        let entries = self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        entries.get(key).filter(|(stored, _)| stored.elapsed() < self.ttl).map(|(_, value)| value.clone())
    }

    pub fn put(&self, key: K, value: V) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if entries.len() >= CACHE_ENTRIES_MAX {
            entries.retain(|_, (stored, _)| stored.elapsed() < self.ttl);
            if entries.len() >= CACHE_ENTRIES_MAX {
                entries.clear();
            }
        }
        entries.insert(key, (Instant::now(), value));
    }
}
