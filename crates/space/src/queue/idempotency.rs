//! Idempotency keys of a queue: a publish that repeats a key within the queue's window gets the
//! first message's id back instead of a new message.

use std::collections::{HashMap, VecDeque};

use crate::model::MessageId;

/// A remembered `Idempotency-Key`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Remembered {
    pub id: MessageId,
    pub body_hash: u64,
    pub expires_at_ms: u64,
}

/// What identifies a body for idempotency: its length and CRC32C. Stable across builds and
/// machines (it is kept in snapshots), and cheap. A different body under the same key is a
/// client error, reported as a conflict; one that collides (one in 2³² of the same length)
/// gets the first message's id back.
pub(crate) fn body_hash(body: &[u8]) -> u64 {
    ((body.len() as u64) << 32) | u64::from(crc32c::crc32c(body))
}

/// Idempotency keys with their deadlines in arrival order, so that expiring them costs only
/// what expires (the sweeper runs every second; a full scan of a big window would not be idle).
#[derive(Default)]
pub(crate) struct IdempotencyKeys {
    keys: HashMap<String, Remembered>,
    deadlines: VecDeque<(u64, String)>,
    /// Keys forgotten before their window was over, to stay within `max_keys`.
    forgotten: u64,
}

impl IdempotencyKeys {
    pub fn get(&self, key: &str) -> Option<&Remembered> {
        self.keys.get(key)
    }

    /// Remembers `key`; then forgets the oldest keys while there are more than `max`.
    pub fn insert(&mut self, key: String, r: Remembered, max: u64) {
        self.deadlines.push_back((r.expires_at_ms, key.clone()));
        self.keys.insert(key, r);
        self.limit(max);
    }

    /// Forgets the oldest keys (in arrival order) while there are more than `max`.
    pub fn limit(&mut self, max: u64) {
        while self.keys.len() as u64 > max {
            let Some((at, key)) = self.deadlines.pop_front() else {
                break;
            };
            if self.keys.get(&key).is_some_and(|r| r.expires_at_ms == at) {
                self.keys.remove(&key);
                self.forgotten += 1;
            }
        }
    }

    pub fn forgotten(&self) -> u64 {
        self.forgotten
    }

    /// Forgets keys whose window is over. Deadlines are in arrival order; a window changed
    /// to be shorter only lets a key live until the ones before it expire.
    pub fn expire(&mut self, now_ms: u64) {
        while let Some((at, _)) = self.deadlines.front() {
            if *at > now_ms {
                break;
            }
            let Some((at, key)) = self.deadlines.pop_front() else {
                break;
            };
            if self.keys.get(&key).is_some_and(|r| r.expires_at_ms == at) {
                self.keys.remove(&key);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// The keys in arrival order (the order that expiry and `max_keys` go by, which a
    /// snapshot keeps).
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Remembered)> {
        self.deadlines.iter().filter_map(|(at, key)| {
            self.keys
                .get_key_value(key)
                .filter(|(_, r)| r.expires_at_ms == *at)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remembered(n: u128, expires_at_ms: u64) -> Remembered {
        Remembered {
            id: uuid::Uuid::from_u128(n),
            body_hash: 0,
            expires_at_ms,
        }
    }

    #[test]
    fn idempotency_keys_expire_in_deadline_order_and_a_renewed_key_stays() {
        let mut k = IdempotencyKeys::default();
        k.insert("a".into(), remembered(1, 10), 10);
        k.insert("b".into(), remembered(2, 20), 10);
        k.insert("a".into(), remembered(3, 30), 10); // reused after its window: renewed
        k.expire(15);
        assert_eq!(k.get("a").map(|r| r.id), Some(uuid::Uuid::from_u128(3)));
        assert!(k.get("b").is_some());
        k.expire(25);
        assert!(k.get("b").is_none());
        assert_eq!(k.len(), 1);
        k.expire(30);
        assert_eq!(k.len(), 0);
    }

    #[test]
    fn past_max_keys_the_oldest_are_forgotten_first_and_counted() {
        let mut k = IdempotencyKeys::default();
        k.insert("a".into(), remembered(1, 10), 2);
        k.insert("b".into(), remembered(2, 20), 2);
        k.insert("a".into(), remembered(3, 30), 2); // renewed: now the newest
        k.insert("c".into(), remembered(4, 40), 2);
        assert!(k.get("b").is_none(), "the oldest went");
        assert!(k.get("a").is_some() && k.get("c").is_some());
        assert_eq!(k.forgotten(), 1);
        let order: Vec<&str> = k.iter().map(|(key, _)| key.as_str()).collect();
        assert_eq!(order, ["a", "c"], "arrival order");
        k.limit(1);
        assert_eq!(
            k.iter().map(|(key, _)| key.as_str()).collect::<Vec<_>>(),
            ["c"]
        );
        assert_eq!(k.forgotten(), 2);
    }

    #[test]
    fn the_body_hash_is_stable_and_tells_bodies_apart() {
        // Pinned: it is kept in snapshots, so a new build must compute the same value.
        assert_eq!(body_hash(b"hello"), (5 << 32) | 0x9a71_bb4c);
        assert_ne!(body_hash(b"hello"), body_hash(b"hellp"));
        assert_ne!(body_hash(b""), body_hash(b"\0"));
    }
}
