//! The hash of maps keyed by message ids (alone or with a subscriber). Message ids are issued by
//! the broker — time, queue number, sequence — and only looked up with ids a client names, never
//! inserted from them, so the hash need not resist collisions made on purpose; SipHash, the
//! standard map's default, showed in profiles of every delivery.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// A multiply-rotate hash over words, then a finaliser: a few instructions per word.
#[derive(Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl IdHasher {
    const K: u64 = 0x517c_c1b7_2722_0a95;

    fn mix(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(Self::K);
    }
}

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.mix(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.mix(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.mix(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.mix(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.mix(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.mix(n as u64);
    }

    /// The words mixed so far, finished so that every bit reaches every other (MurmurHash3's
    /// finaliser): the multiply-rotate steps alone leave the low bits, where the map picks a
    /// bucket, depending on the low bits of the input only.
    fn finish(&self) -> u64 {
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

pub(crate) type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;
pub(crate) type IdSet<K> = HashSet<K, BuildHasherDefault<IdHasher>>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    /// Ids of one queue differ in their sequence and time bits only: their hashes must still
    /// spread over the top bits (where the map takes its control bytes) and the bottom bits
    /// (its buckets).
    #[test]
    fn consecutive_ids_spread_over_high_and_low_bits() {
        let build = BuildHasherDefault::<IdHasher>::default();
        let mut top = HashSet::new();
        let mut bottom = HashSet::new();
        for seq in 0..4096u64 {
            let id = crate::ids::message_id(1_800_000_000_000 + seq / 16, 3, seq);
            let h = build.hash_one(id);
            top.insert(h >> 57);
            bottom.insert(h & 0xfff);
        }
        assert_eq!(top.len(), 128, "every 7-bit control value is used");
        assert!(bottom.len() > 2500, "only {} of 4096 buckets", bottom.len());
    }
}
