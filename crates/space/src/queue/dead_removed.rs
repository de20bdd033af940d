//! Dead messages that retention removed, remembered as ranges of their sequence numbers, so
//! that a child published later naming one of them is dead at once (its parent can never be
//! delivered) instead of going as if the parent had arrived.

use std::collections::BTreeMap;

use crate::limits::DEAD_REMOVED_RANGES_PER_QUEUE_MAX;

/// Disjoint, non-adjacent ranges `[start, end)` of sequence numbers.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct DeadRemoved {
    ranges: BTreeMap<u64, u64>,
    /// Ranges forgotten to stay within [`DEAD_REMOVED_RANGES_PER_QUEUE_MAX`].
    forgotten: u64,
}

impl DeadRemoved {
    pub fn insert(&mut self, seq: u64) {
        if self.contains(seq) {
            return;
        }
        let mut start = seq;
        let mut end = seq + 1;
        // Merge with a range ending at `seq` and one starting at `seq + 1`.
        if let Some((&s, &e)) = self.ranges.range(..=seq).next_back()
            && e == seq
        {
            start = s;
            self.ranges.remove(&s);
        }
        if let Some(e) = self.ranges.remove(&end) {
            end = e;
        }
        self.ranges.insert(start, end);
        while self.ranges.len() > DEAD_REMOVED_RANGES_PER_QUEUE_MAX {
            self.ranges.pop_first();
            self.forgotten += 1;
        }
    }

    pub fn contains(&self, seq: u64) -> bool {
        self.ranges
            .range(..=seq)
            .next_back()
            .is_some_and(|(_, &end)| seq < end)
    }

    pub fn ranges(&self) -> impl ExactSizeIterator<Item = (u64, u64)> + '_ {
        self.ranges.iter().map(|(s, e)| (*s, *e))
    }

    /// Puts back a range a snapshot stored.
    pub fn restore(&mut self, start: u64, end: u64) {
        if start < end {
            self.ranges.insert(start, end);
        }
    }

    /// Puts back the count of forgotten ranges a snapshot stored.
    pub fn restore_forgotten(&mut self, forgotten: u64) {
        self.forgotten = forgotten;
    }

    pub fn forgotten(&self) -> u64 {
        self.forgotten
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_of_sequences_are_one_range() {
        let mut d = DeadRemoved::default();
        for s in [5, 7, 6, 3, 9] {
            d.insert(s);
        }
        assert_eq!(
            d.ranges().collect::<Vec<_>>(),
            vec![(3, 4), (5, 8), (9, 10)]
        );
        d.insert(4);
        d.insert(8);
        assert_eq!(d.ranges().collect::<Vec<_>>(), vec![(3, 10)]);
        assert!(d.contains(3) && d.contains(9));
        assert!(!d.contains(2) && !d.contains(10));
    }
}
