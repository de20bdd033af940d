//! Slots: the positions of subscribers in a queue's fan-out masks.

/// The position of a subscriber in fan-out masks. Slots are reused after a subscriber is
/// removed, never while it exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Slot(pub(super) u8);

impl Slot {
    pub(super) fn bit(self) -> u64 {
        1u64 << self.0
    }

    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// A set of slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Slots(pub(super) u64);

impl Slots {
    pub fn from_bits(bits: u64) -> Slots {
        Slots(bits)
    }

    pub fn bits(self) -> u64 {
        self.0
    }

    pub fn contains(self, slot: Slot) -> bool {
        self.0 & slot.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The slots in the set, lowest first (one step per slot, not per bit).
    pub fn iter(self) -> impl Iterator<Item = Slot> {
        let mut bits = self.0;
        std::iter::from_fn(move || {
            if bits == 0 {
                return None;
            }
            let i = bits.trailing_zeros() as u8;
            bits &= bits - 1;
            Some(Slot(i))
        })
    }
}
