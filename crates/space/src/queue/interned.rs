//! The distinct content types (and event types) of a queue, interned: a message keeps a 2-byte
//! index instead of its own string, so that showing a message needs no read of its record.

use std::collections::HashMap;
use std::sync::Arc;

use crate::limits::CONTENT_TYPES_PER_QUEUE_MAX;

/// An interned name, or [`Interned::UNKNOWN`] when the table was full (the name is then read
/// from the message's record), or [`Interned::NONE`] for a message without one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Interned(u16);

impl Interned {
    pub const UNKNOWN: Interned = Interned(u16::MAX);
    pub const NONE: Interned = Interned(u16::MAX - 1);

    pub fn index(self) -> u16 {
        self.0
    }

    pub fn from_index(i: u16) -> Interned {
        Interned(i)
    }
}

#[derive(Default)]
pub(crate) struct Names {
    names: Vec<Arc<str>>,
    index: HashMap<Arc<str>, u16>,
    /// The last one interned: most queues carry one content type, and replay interns one per
    /// message, so a comparison saves a hash.
    last: Option<Interned>,
}

impl Names {
    pub fn intern(&mut self, name: &str) -> Interned {
        if let Some(last) = self.last
            && self
                .names
                .get(usize::from(last.0))
                .is_some_and(|n| &**n == name)
        {
            return last;
        }
        if let Some(i) = self.index.get(name) {
            self.last = Some(Interned(*i));
            return Interned(*i);
        }
        if self.names.len() >= CONTENT_TYPES_PER_QUEUE_MAX {
            return Interned::UNKNOWN;
        }
        let i = self.names.len() as u16;
        let name: Arc<str> = Arc::from(name);
        self.names.push(name.clone());
        self.index.insert(name, i);
        self.last = Some(Interned(i));
        Interned(i)
    }

    pub fn name(&self, t: Interned) -> Option<&Arc<str>> {
        self.names.get(usize::from(t.0))
    }

    /// Every name, in index order.
    pub fn all(&self) -> &[Arc<str>] {
        &self.names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_name_gets_the_same_index_until_the_table_is_full() {
        let mut t = Names::default();
        let json = t.intern("application/json");
        assert_eq!(t.intern("application/json"), json);
        assert_eq!(t.name(json).map(|n| &**n), Some("application/json"));
        for i in 1..CONTENT_TYPES_PER_QUEUE_MAX {
            assert_ne!(t.intern(&format!("x/{i}")), Interned::UNKNOWN);
        }
        assert_eq!(t.intern("one/too-many"), Interned::UNKNOWN);
        assert_eq!(t.name(Interned::UNKNOWN), None);
        assert_eq!(
            t.intern("application/json"),
            json,
            "known ones still resolve"
        );
    }
}
