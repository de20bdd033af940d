//! Event types and the filters subscribers select them with.
//!
//! A message may carry an event type (`Syncbrok-Type`): 1 to
//! [`EVENT_TYPE_BYTES_MAX`](crate::limits::EVENT_TYPE_BYTES_MAX) of `A-Z a-z 0-9 . _ - : /`;
//! one without is of type [`EVENT_TYPE_DEFAULT`](crate::limits::EVENT_TYPE_DEFAULT). A
//! subscriber's `types` filter is a list of patterns, each an exact type or a prefix followed by
//! `*` (`order.*`, or `*` alone for everything); its fan-out set then holds only the messages
//! whose type one of them matches.

use crate::limits::{EVENT_TYPE_BYTES_MAX, EVENT_TYPE_DEFAULT, TYPE_FILTERS_MAX};

fn is_type_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':' | b'/')
}

/// Whether `t` is an event type a message may carry.
pub fn is_event_type(t: &str) -> bool {
    !t.is_empty() && t.len() <= EVENT_TYPE_BYTES_MAX && t.bytes().all(is_type_byte)
}

/// Checks a subscriber's `types` filter: at most [`TYPE_FILTERS_MAX`] patterns, none twice,
/// each an event type or a prefix of one followed by `*`.
pub fn check_filter(patterns: &[String]) -> Result<(), String> {
    if patterns.is_empty() {
        return Err(
            "an empty list would match nothing: leave types out to take every message".into(),
        );
    }
    if patterns.len() > TYPE_FILTERS_MAX {
        return Err(format!("at most {TYPE_FILTERS_MAX} patterns"));
    }
    for (i, p) in patterns.iter().enumerate() {
        let prefix = p.strip_suffix('*').unwrap_or(p);
        let ok = if p.ends_with('*') {
            p.len() <= EVENT_TYPE_BYTES_MAX && prefix.bytes().all(is_type_byte)
        } else {
            is_event_type(p)
        };
        if !ok {
            return Err(format!(
                "{p:?} is neither an event type (1 to {EVENT_TYPE_BYTES_MAX} of A-Z a-z 0-9 . _ - : /) nor one's prefix followed by *"
            ));
        }
        if patterns[..i].contains(p) {
            return Err(format!("{p:?} given twice"));
        }
    }
    Ok(())
}

/// Whether a message of type `t` (`None`: the default type) passes `patterns`.
pub fn matches(patterns: &[String], t: Option<&str>) -> bool {
    let t = t.unwrap_or(EVENT_TYPE_DEFAULT);
    patterns.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => t.starts_with(prefix),
        None => p == t,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn patterns_match_exact_names_and_prefixes() {
        let f = filter(&["order.*", "payment.settled"]);
        assert!(matches(&f, Some("order.created")));
        assert!(matches(&f, Some("order.")));
        assert!(matches(&f, Some("payment.settled")));
        assert!(!matches(&f, Some("payment.settled.late")));
        assert!(!matches(&f, Some("orders")));
        assert!(!matches(&f, None));
        assert!(matches(&filter(&["syncbrok.message"]), None));
        assert!(matches(&filter(&["*"]), Some("anything")));
        assert!(matches(&filter(&["*"]), None));
    }

    #[test]
    fn types_and_filters_are_checked_at_their_edges() {
        let max = "a".repeat(EVENT_TYPE_BYTES_MAX);
        assert!(is_event_type(&max));
        assert!(!is_event_type(&format!("{max}a")));
        assert!(is_event_type("urn:order/created_v2-x"));
        for bad in ["", "order created", "order.*", "caf\u{e9}", "a\nb"] {
            assert!(!is_event_type(bad), "{bad:?}");
        }
        assert!(check_filter(&filter(&["order.*", "*", "x"])).is_ok());
        let many: Vec<String> = (0..TYPE_FILTERS_MAX).map(|i| format!("t{i}")).collect();
        assert!(check_filter(&many).is_ok());
        let mut too_many = many.clone();
        too_many.push("one.more".into());
        assert!(check_filter(&too_many).is_err());
        for bad in [&[][..], &["order*.x"], &["**"], &["a b*"], &["x", "x"]] {
            assert!(check_filter(&filter(bad)).is_err(), "{bad:?}");
        }
    }
}
