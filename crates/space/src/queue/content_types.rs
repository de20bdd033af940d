//! The distinct content types of a queue, interned: a message keeps a 2-byte index instead of
//! its own string, so that showing a message needs no read of its record.

use std::collections::HashMap;
use std::sync::Arc;

use crate::limits::CONTENT_TYPES_PER_QUEUE_MAX;

/// An interned content type, or [`ContentType::UNKNOWN`] when the table was full: the content
/// type is then read from the message's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ContentType(u16);

impl ContentType {
    pub const UNKNOWN: ContentType = ContentType(u16::MAX);

    pub fn index(self) -> u16 {
        self.0
    }

    pub fn from_index(i: u16) -> ContentType {
        ContentType(i)
    }
}

#[derive(Default)]
pub(crate) struct ContentTypes {
    names: Vec<Arc<str>>,
    index: HashMap<Arc<str>, u16>,
    /// The last one interned: most queues carry one content type, and replay interns one per
    /// message, so a comparison saves a hash.
    last: Option<ContentType>,
}

impl ContentTypes {
    pub fn intern(&mut self, name: &str) -> ContentType {
        if let Some(last) = self.last
            && self
                .names
                .get(usize::from(last.0))
                .is_some_and(|n| &**n == name)
        {
            return last;
        }
        if let Some(i) = self.index.get(name) {
            self.last = Some(ContentType(*i));
            return ContentType(*i);
        }
        if self.names.len() >= CONTENT_TYPES_PER_QUEUE_MAX {
            return ContentType::UNKNOWN;
        }
        let i = self.names.len() as u16;
        let name: Arc<str> = Arc::from(name);
        self.names.push(name.clone());
        self.index.insert(name, i);
        self.last = Some(ContentType(i));
        ContentType(i)
    }

    pub fn name(&self, t: ContentType) -> Option<&Arc<str>> {
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
        let mut t = ContentTypes::default();
        let json = t.intern("application/json");
        assert_eq!(t.intern("application/json"), json);
        assert_eq!(t.name(json).map(|n| &**n), Some("application/json"));
        for i in 1..CONTENT_TYPES_PER_QUEUE_MAX {
            assert_ne!(t.intern(&format!("x/{i}")), ContentType::UNKNOWN);
        }
        assert_eq!(t.intern("one/too-many"), ContentType::UNKNOWN);
        assert_eq!(t.name(ContentType::UNKNOWN), None);
        assert_eq!(
            t.intern("application/json"),
            json,
            "known ones still resolve"
        );
    }
}
