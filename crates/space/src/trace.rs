//! W3C trace context (`traceparent`, `tracestate`): accepted at publish, kept in the message's
//! record, and sent with every attempt, so that a trace crosses the broker.

use crate::limits::{TRACEPARENT_BYTES_MAX, TRACESTATE_BYTES_MAX};

/// Whether `v` is a `traceparent`: `version-traceid-parentid-flags` in lowercase hex (2, 32, 16
/// and 2 digits); version `ff` and all-zero ids are invalid. A later version may append fields
/// after a dash (kept as given).
pub fn is_traceparent(v: &str) -> bool {
    let hex = |s: &str, n: usize| {
        s.len() == n && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    let mut parts = v.splitn(5, '-');
    let (Some(version), Some(trace), Some(parent), Some(flags)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let rest_ok = match parts.next() {
        None => true,
        Some(_) => version != "00",
    };
    hex(version, 2)
        && version != "ff"
        && hex(trace, 32)
        && trace.bytes().any(|b| b != b'0')
        && hex(parent, 16)
        && parent.bytes().any(|b| b != b'0')
        && hex(flags, 2)
        && rest_ok
        && v.len() <= TRACEPARENT_BYTES_MAX
}

/// Whether `v` can be a `tracestate`: at most [`TRACESTATE_BYTES_MAX`] bytes of what a header
/// may carry (its list members are the tracing systems' business, passed on as they are).
pub fn is_tracestate(v: &str) -> bool {
    !v.is_empty() && v.len() <= TRACESTATE_BYTES_MAX && v.bytes().all(|b| (0x20..0x7f).contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparents_follow_the_w3c_grammar() {
        assert!(is_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert!(!is_traceparent(bad), "{bad}");
        }
        assert!(is_traceparent(
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra"
        ));
        assert!(is_tracestate("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"));
        assert!(!is_tracestate(""));
        assert!(!is_tracestate("a=b\r\nx: y"));
        assert!(!is_tracestate(&"a".repeat(TRACESTATE_BYTES_MAX + 1)));
    }
}
