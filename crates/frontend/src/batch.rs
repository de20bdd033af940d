//! The body of a batch publish, turned into entries as it is parsed: each message is checked
//! and converted as soon as it is read, and the batch is refused at the first message past
//! [`BATCH_MESSAGES_MAX`] or the first byte of bodies past [`BATCH_BYTES_MAX`]. Memory for a
//! request is so bounded by the limits (the JSON itself is bounded by
//! [`crate::limits::BATCH_JSON_BYTES_MAX`]), not by how many tiny entries a client packs in.

use std::cell::Cell;
use std::fmt;

use axum::http::StatusCode;
use bytes::Bytes;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use space::limits::{BATCH_BYTES_MAX, BATCH_MESSAGES_MAX};
use space::{BatchEntry, BatchParent, NewMessage};

use crate::problem::Problem;

/// A batch publish, as the OpenAPI document describes it. (Parsed by [`parse`], not by serde
/// derive: see the module's documentation.)
#[allow(dead_code)]
#[derive(utoipa::ToSchema)]
pub(crate) struct Batch {
    /// 1 to 1000 messages, at most 16 MiB of bodies in all.
    messages: Vec<BatchItem>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BatchItem {
    body: Option<String>,
    body_base64: Option<String>,
    content_type: Option<String>,
    parent: Option<String>,
    parent_index: Option<usize>,
    /// A join: the message waits for every one of these (with `parent_indexes`, at most 16).
    parents: Option<Vec<String>>,
    /// A join on earlier entries of the batch.
    parent_indexes: Option<Vec<usize>>,
    idempotency_key: Option<String>,
    /// Its event type, as `Syncbrok-Type` gives it to a single publish.
    #[serde(rename = "type")]
    event_type: Option<String>,
    /// Deliver this long after it is accepted (`"30s"`), as `Syncbrok-Delay` does.
    delay: Option<String>,
    /// Deliver at this RFC 3339 time, as `Syncbrok-Deliver-At` does.
    deliver_at: Option<String>,
    /// W3C trace context, as the `traceparent` and `tracestate` headers give it to a single
    /// publish.
    traceparent: Option<String>,
    tracestate: Option<String>,
}

/// Parses a batch publish body. A body of only whitespace is an empty batch (refused too).
pub(crate) fn parse(json: &[u8], max_body: usize) -> Result<Vec<BatchEntry>, Problem> {
    if json.iter().all(u8::is_ascii_whitespace) {
        return Err(empty());
    }
    let refusal = Cell::new(None);
    let seed = Body {
        max_body,
        refusal: &refusal,
    };
    let mut de = serde_json::Deserializer::from_slice(json);
    let parsed = seed.deserialize(&mut de).and_then(|entries| {
        de.end()?;
        Ok(entries)
    });
    match (parsed, refusal.take()) {
        (_, Some(problem)) => Err(problem),
        (Ok(entries), None) if entries.is_empty() => Err(empty()),
        (Ok(entries), None) => Ok(entries),
        (Err(e), None) => Err(Problem::bad_request(format!("invalid JSON: {e}"))),
    }
}

fn empty() -> Problem {
    Problem::bad_request("a batch needs at least one message")
}

/// The top-level object: `messages`, other keys ignored.
struct Body<'a> {
    max_body: usize,
    refusal: &'a Cell<Option<Problem>>,
}

impl<'de> DeserializeSeed<'de> for Body<'_> {
    type Value = Vec<BatchEntry>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Body<'_> {
    type Value = Vec<BatchEntry>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object with a `messages` array")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut messages = None;
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Messages if messages.is_some() => {
                    return Err(de::Error::duplicate_field("messages"));
                }
                Key::Messages => {
                    messages = Some(map.next_value_seed(Messages {
                        max_body: self.max_body,
                        refusal: self.refusal,
                    })?);
                }
                Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        messages.ok_or_else(|| de::Error::missing_field("messages"))
    }
}

/// A key of the top-level object, without keeping the text of the ones ignored.
enum Key {
    Messages,
    Other,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Key, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(if v == "messages" {
                    Key::Messages
                } else {
                    Key::Other
                })
            }
        }
        d.deserialize_identifier(KeyVisitor)
    }
}

/// The `messages` array, converted entry by entry.
struct Messages<'a> {
    max_body: usize,
    refusal: &'a Cell<Option<Problem>>,
}

impl Messages<'_> {
    /// Stops the parse with `problem` as the answer.
    fn refuse<E: de::Error>(&self, problem: Problem) -> E {
        let text = problem.detail.clone();
        self.refusal.set(Some(problem));
        E::custom(text)
    }
}

impl<'de> DeserializeSeed<'de> for Messages<'_> {
    type Value = Vec<BatchEntry>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Messages<'_> {
    type Value = Vec<BatchEntry>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of messages")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut entries = Vec::new();
        let mut bytes = 0usize;
        while let Some(item) = seq.next_element::<BatchItem>()? {
            let i = entries.len();
            if i == BATCH_MESSAGES_MAX {
                return Err(self.refuse(too_large(format!(
                    "a batch holds at most {BATCH_MESSAGES_MAX} messages"
                ))));
            }
            let entry = item
                .into_entry(i, self.max_body)
                .map_err(|p| self.refuse(p))?;
            bytes += entry.message.body.len();
            if bytes > BATCH_BYTES_MAX {
                return Err(self.refuse(too_large(format!(
                    "message {i}: the batch's bodies pass {BATCH_BYTES_MAX} bytes"
                ))));
            }
            entries.push(entry);
        }
        Ok(entries)
    }
}

fn too_large(detail: String) -> Problem {
    Problem::new(StatusCode::PAYLOAD_TOO_LARGE, detail)
}

impl BatchItem {
    /// The entry this message of the batch (the `i`th) stands for.
    fn into_entry(self, i: usize, max_body: usize) -> Result<BatchEntry, Problem> {
        use base64::Engine;
        let body = match (self.body, self.body_base64) {
            (Some(text), None) => Bytes::from(text),
            (None, Some(b64)) => Bytes::from(
                base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .map_err(|e| Problem::bad_request(format!("message {i}: body_base64: {e}")))?,
            ),
            (None, None) => Bytes::new(),
            (Some(_), Some(_)) => {
                return Err(Problem::bad_request(format!(
                    "message {i}: give body or body_base64, not both"
                )));
            }
        };
        if body.len() > max_body {
            return Err(too_large(format!(
                "message {i}: body of {} bytes is over {max_body}",
                body.len()
            )));
        }
        let single = self.parent.is_some() || self.parent_index.is_some();
        let list = self.parents.is_some() || self.parent_indexes.is_some();
        if single && list {
            return Err(Problem::bad_request(format!(
                "message {i}: name parents with parent or parent_index, or with parents and \
                 parent_indexes, not both ways"
            )));
        }
        let mut parents = Vec::new();
        match (self.parent, self.parent_index) {
            (Some(_), Some(_)) => {
                return Err(Problem::bad_request(format!(
                    "message {i}: give parent or parent_index, not both"
                )));
            }
            (Some(p), None) => {
                parents.push(BatchParent::Id(crate::request::message_id(&p, "parent")?))
            }
            (None, Some(j)) => parents.push(BatchParent::Index(j)),
            (None, None) => {}
        }
        for p in self.parents.unwrap_or_default() {
            parents.push(BatchParent::Id(
                crate::request::message_id(&p, "parents")
                    .map_err(|e| Problem::bad_request(format!("message {i}: {}", e.detail)))?,
            ));
        }
        parents.extend(
            self.parent_indexes
                .unwrap_or_default()
                .into_iter()
                .map(BatchParent::Index),
        );
        Ok(BatchEntry {
            message: NewMessage {
                body,
                content_type: self.content_type,
                parents: Vec::new(),
                idempotency_key: self.idempotency_key,
                event_type: self.event_type,
                deliver_at: crate::due_time(self.delay.as_deref(), self.deliver_at.as_deref())
                    .map_err(|p| Problem::bad_request(format!("message {i}: {}", p.detail)))?,
                replay_of: None,
                traceparent: self.traceparent,
                tracestate: self.tracestate,
            },
            parents,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(r: Result<Vec<BatchEntry>, Problem>) -> StatusCode {
        r.err().map_or(StatusCode::OK, |p| p.status)
    }

    #[test]
    fn a_batch_at_its_limits_is_taken_and_one_past_them_refused() {
        let full = format!(
            "{{\"messages\": [{}]}}",
            vec!["{}"; BATCH_MESSAGES_MAX].join(",")
        );
        assert_eq!(
            parse(full.as_bytes(), 10).unwrap().len(),
            BATCH_MESSAGES_MAX
        );
        let over = format!(
            "{{\"messages\": [{}]}}",
            vec!["{}"; BATCH_MESSAGES_MAX + 1].join(",")
        );
        assert_eq!(
            status(parse(over.as_bytes(), 10)),
            StatusCode::PAYLOAD_TOO_LARGE
        );

        let body = "x".repeat(BATCH_BYTES_MAX / 4);
        let item = format!("{{\"body\": \"{body}\"}}");
        let four = format!("{{\"messages\": [{}]}}", [item.as_str(); 4].join(","));
        assert_eq!(parse(four.as_bytes(), BATCH_BYTES_MAX).unwrap().len(), 4);
        let five = format!(
            "{{\"messages\": [{}, {{\"body\": \"y\"}}]}}",
            [item.as_str(); 4].join(",")
        );
        let refused = parse(five.as_bytes(), BATCH_BYTES_MAX).unwrap_err();
        assert_eq!(refused.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(
            refused.detail.starts_with("message 4:"),
            "{}",
            refused.detail
        );
    }

    #[test]
    fn malformed_batches_are_400_with_the_reason() {
        for (json, why) in [
            ("", "at least one message"),
            ("{\"messages\": []}", "at least one message"),
            ("{}", "missing field `messages`"),
            (
                "{\"messages\": [{}], \"messages\": [{}]}",
                "duplicate field",
            ),
            ("{\"messages\": [{\"bogus\": 1}]}", "unknown field `bogus`"),
            ("{\"messages\": [{}]} x", "trailing characters"),
            (
                "{\"messages\": [{\"body\": \"a\", \"body_base64\": \"YQ==\"}]}",
                "not both",
            ),
            (
                "{\"messages\": [{\"parent\": \"nope\"}]}",
                "not a message id",
            ),
        ] {
            let p = parse(json.as_bytes(), 10).unwrap_err();
            assert_eq!(p.status, StatusCode::BAD_REQUEST, "{json}");
            assert!(p.detail.contains(why), "{json}: {}", p.detail);
        }
        let ok = parse(
            b"{\"other\": [1, {\"a\": 2}], \"messages\": [{\"body\": \"hi\"}]}",
            10,
        );
        assert_eq!(ok.unwrap()[0].message.body, Bytes::from_static(b"hi"));
    }

    #[test]
    fn a_body_over_max_body_is_413_naming_the_message() {
        let p = parse(b"{\"messages\": [{}, {\"body\": \"12345\"}]}", 4).unwrap_err();
        assert_eq!(p.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(p.detail.starts_with("message 1:"));
    }
}
