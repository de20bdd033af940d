//! What a request brings, parsed and bounded the same way by every handler: its body (and
//! the deadline it must arrive by), JSON, message ids and parent lists, headers, paging, a due
//! time, a scope. Mistakes are 400 problems that name what was wrong.

use std::collections::HashMap;

use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use bytes::Bytes;
use serde::Deserialize;
use space::MessageId;

use crate::problem::Problem;
use crate::{deadline, limits};

pub(crate) type ApiResult<T> = Result<T, Problem>;

pub(crate) fn body(b: Result<Bytes, BytesRejection>) -> ApiResult<Bytes> {
    b.map_err(|r| Problem::new(rejection_status(&r), r.body_text()))
}

/// The status for a body that could not be read: 408 when it did not arrive in time.
pub(crate) fn rejection_status(r: &BytesRejection) -> StatusCode {
    if deadline::timed_out(r) {
        StatusCode::REQUEST_TIMEOUT
    } else {
        r.status()
    }
}

pub(crate) fn json<T: for<'de> Deserialize<'de> + Default>(b: &Bytes) -> ApiResult<T> {
    if b.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(b).map_err(|e| Problem::bad_request(format!("invalid JSON: {e}")))
}

/// When a message is due, from `Syncbrok-Delay` (a duration, `30s`) or `Syncbrok-Deliver-At`
/// (RFC 3339), or a batch entry's `delay` or `deliver_at`: at most one of them.
pub(crate) fn due_time(
    delay: Option<&str>,
    at: Option<&str>,
) -> ApiResult<Option<space::DeliverAt>> {
    match (delay, at) {
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(Problem::bad_request(
            "give a delay or a time to deliver at, not both",
        )),
        (Some(d), None) => d
            .parse::<space::Span>()
            .map(|s| Some(space::DeliverAt::After(s.0)))
            .map_err(|e| Problem::bad_request(format!("delay: {e}"))),
        (None, Some(t)) => space::time::parse_rfc3339(t.trim())
            .map(|ms| Some(space::DeliverAt::At(ms)))
            .ok_or_else(|| {
                Problem::bad_request(format!(
                    "deliver-at {t:?} is not an RFC 3339 time, e.g. 2026-12-02T10:00:00Z"
                ))
            }),
    }
}

pub(crate) fn message_id(text: &str, what: &str) -> ApiResult<MessageId> {
    text.trim()
        .parse()
        .map_err(|_| Problem::bad_request(format!("{what} {text:?} is not a message id")))
}

/// The ids of a `Syncbrok-Parent` header: one, or a comma-separated list (a join). How many
/// and whether one repeats is the Space's to check, so every way in says it alike.
pub(crate) fn parent_list(text: &str) -> ApiResult<Vec<MessageId>> {
    text.split(',')
        .map(|p| message_id(p, "Syncbrok-Parent"))
        .collect()
}

pub(crate) fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> ApiResult<Option<&'a str>> {
    headers
        .get(name)
        .map(|v| {
            v.to_str()
                .map_err(|_| Problem::bad_request(format!("header {name} is not visible ASCII")))
        })
        .transpose()
}

pub(crate) fn page_limit(q: &HashMap<String, String>) -> ApiResult<usize> {
    match q.get("limit") {
        None => Ok(limits::PAGE_DEFAULT),
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=limits::PAGE_MAX).contains(&n) => Ok(n),
            _ => Err(Problem::bad_request(format!(
                "limit {l:?} is outside 1..={}",
                limits::PAGE_MAX
            ))),
        },
    }
}

pub(crate) fn after(q: &HashMap<String, String>) -> ApiResult<Option<MessageId>> {
    q.get("after").map(|a| message_id(a, "after")).transpose()
}

/// The `scope` of a redrive or a replay: `message` (the default) or `subtree`.
pub(crate) fn scope(text: Option<&str>) -> ApiResult<space::RedriveScope> {
    match text {
        None | Some("message") => Ok(space::RedriveScope::Message),
        Some("subtree") => Ok(space::RedriveScope::Subtree),
        Some(other) => Err(Problem::bad_request(format!(
            "unknown scope {other:?}: use message or subtree"
        ))),
    }
}
