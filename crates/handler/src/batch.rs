//! Batched delivery: several messages of one subscriber in one POST, as a CloudEvents batch
//! (`application/cloudevents-batch+json`, a JSON array of events in structured mode), signed
//! once over the whole body; and what the subscriber's answer means for each message.
//!
//! An event carries its message as `data` when the message's content type is JSON and its
//! body is valid JSON, else as `data_base64`; `syncbrokattempt` and (when set)
//! `syncbrokparent` are CloudEvents extension attributes.

use std::time::Duration;

use std::io::Write;

use bytes::{BufMut, Bytes};
use http::{HeaderMap, HeaderValue, StatusCode};
use space::{Attempt, MessageId, Outcome};

use crate::{header, names, signature};

/// The media type of a batch body.
pub const CONTENT_TYPE: &str = "application/cloudevents-batch+json";

/// The body of a batch: one structured CloudEvent per attempt, in order. A fresh buffer each
/// time: keeping one per lane saved ~7% of the broker's CPU under batched fan-out (the
/// allocator gives freed pages back at once, so a new buffer faults its pages in again) but
/// held ~30 MiB more with 128 lanes busy; memory won.
pub fn body(attempts: &[Attempt]) -> Bytes {
    let estimate: usize = attempts
        .iter()
        .map(|a| a.body.len().div_ceil(3) * 4 + 320 + a.content_type.len() + a.queue.len())
        .sum();
    let mut out = Vec::with_capacity(estimate + 2);
    out.push(b'[');
    for (n, a) in attempts.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        event(&mut out, a);
    }
    out.push(b']');
    Bytes::from(out)
}

/// One event, appended to `out`. Ids and times need no escaping; the queue name and the
/// content type go through the JSON string writer.
fn event(out: &mut Vec<u8>, a: &Attempt) {
    let mut id = [0u8; 36];
    out.put_slice(br#"{"specversion":"1.0","id":""#);
    out.put_slice(a.message.hyphenated().encode_lower(&mut id).as_bytes());
    out.put_slice(br#"","source":"/queues/"#);
    json_string_content(out, &a.queue);
    out.put_slice(br#"","type":""#);
    // Event types are checked at publish to need no escaping.
    let t = a.event_type.as_deref();
    out.put_slice(t.unwrap_or(space::limits::EVENT_TYPE_DEFAULT).as_bytes());
    out.put_slice(br#"","time":""#);
    out.put_slice(&space::time::rfc3339_bytes(a.published_at_ms));
    out.put_slice(br#"","datacontenttype":""#);
    json_string_content(out, &a.content_type);
    out.put_slice(br#"","syncbrokattempt":"#);
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{}", a.number);
    if let Some((parent, state)) = &a.trace {
        out.put_slice(br#","traceparent":""#);
        json_string_content(out, parent);
        out.put_u8(b'"');
        if let Some(state) = state {
            out.put_slice(br#","tracestate":""#);
            json_string_content(out, state);
            out.put_u8(b'"');
        }
    }
    // A join's parents are one string, comma-separated: extension attributes are strings.
    if !a.parents.is_empty() {
        out.put_slice(br#","syncbrokparent":""#);
        for (i, p) in a.parents.iter().enumerate() {
            if i > 0 {
                out.put_slice(b", ");
            }
            out.put_slice(p.hyphenated().encode_lower(&mut id).as_bytes());
        }
        out.put_u8(b'"');
    }
    if is_json(&a.content_type) && valid_json(&a.body) {
        out.put_slice(br#","data":"#);
        out.put_slice(&a.body);
    } else {
        use base64::Engine;
        out.put_slice(br#","data_base64":""#);
        let engine = &base64::engine::general_purpose::STANDARD;
        let at = out.len();
        out.resize(at + base64::encoded_len(a.body.len(), true).unwrap_or(0), 0);
        // The slot is exactly the encoded length, so encoding into it cannot fail.
        let _ = engine.encode_slice(&a.body, &mut out[at..]);
        out.put_u8(b'"');
    }
    out.put_u8(b'}');
}

/// `s` as the inside of a JSON string (escaped, without the quotes).
fn json_string_content(out: &mut Vec<u8>, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.put_slice(s.as_bytes());
        return;
    }
    let quoted = serde_json::to_string(s).unwrap_or_default();
    out.put_slice(&quoted.as_bytes()[1..quoted.len() - 1]);
}

/// Whether a content type is JSON: `application/json`, or any `…/…+json`, parameters aside.
fn is_json(content_type: &str) -> bool {
    let media = content_type.split(';').next().unwrap_or_default().trim();
    let ends_with = |suffix: &str| {
        media.len() >= suffix.len()
            && media.as_bytes()[media.len() - suffix.len()..]
                .eq_ignore_ascii_case(suffix.as_bytes())
    };
    media.eq_ignore_ascii_case("application/json") || (media.contains('/') && ends_with("+json"))
}

/// Whether `body` can go inline as `data`: UTF-8 JSON that strict parsers take — no lone
/// surrogate escapes, nesting within serde_json's own limit (128) — so that one message cannot
/// make its whole batch unreadable to its receiver. Anything else goes as `data_base64`.
fn valid_json(body: &[u8]) -> bool {
    std::str::from_utf8(body).is_ok() && serde_json::from_slice::<serde_json::Value>(body).is_ok()
}

/// The headers of a batch request: Standard Webhooks headers for the batch as a whole (a
/// fresh `webhook-id` per request: a batch is never sent twice with the same messages),
/// `syncbrok-queue`, `syncbrok-batch-size`, and the subscriber's own headers.
pub fn headers(
    attempts: &[Attempt],
    body: &[u8],
    queue: &HeaderValue,
    now_s: u64,
) -> Result<HeaderMap, String> {
    let first = attempts.first().ok_or("an empty batch")?;
    let mut text = [0u8; 36];
    let id = batch_id().hyphenated().encode_lower(&mut text).to_owned();
    let mut h = HeaderMap::with_capacity(8);
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(CONTENT_TYPE),
    );
    h.insert(names::WEBHOOK_ID, header(&id)?);
    h.insert(names::WEBHOOK_TIMESTAMP, HeaderValue::from(now_s));
    if let Some(signature) = signature(first, &id, now_s, body) {
        h.insert(names::WEBHOOK_SIGNATURE, header(&signature)?);
    }
    h.insert(names::SYNCBROK_QUEUE, queue.clone());
    h.insert(
        names::SYNCBROK_BATCH_SIZE,
        HeaderValue::from(attempts.len()),
    );
    crate::headers::add_own(&mut h, &first.headers)?;
    Ok(h)
}

/// A random (version 4) UUID for a batch.
fn batch_id() -> MessageId {
    let r = fastrand::u128(..);
    let v4 = (r & !(0xF << 76) & !(0x3 << 62)) | (0x4 << 76) | (0x2 << 62);
    MessageId::from_u128(v4)
}

/// What a subscriber's answer to a batch means for each of its messages (`ids`, in order):
/// a 2xx acknowledges every message, except those its JSON body lists under `failed`; any
/// other status fails them all.
pub fn outcomes(
    status: StatusCode,
    retry_after: Option<Duration>,
    body: &[u8],
    ids: &[MessageId],
) -> Vec<Outcome> {
    let all = |o: Outcome| vec![o; ids.len()];
    if !status.is_success() {
        return all(Outcome::Failed {
            error: format!("HTTP {}", status.as_u16()),
            retry_after,
        });
    }
    match failed_items(body) {
        Ok(failed) => ids
            .iter()
            .map(|id| match failed.iter().find(|f| f.0 == *id) {
                Some((_, retry_after)) => Outcome::Failed {
                    error: format!(
                        "HTTP {}, listed as failed in the batch answer",
                        status.as_u16()
                    ),
                    retry_after: *retry_after,
                },
                None => Outcome::Acked,
            })
            .collect(),
        Err(why) => all(Outcome::Failed {
            error: format!(
                "HTTP {} with an unreadable batch answer: {why}",
                status.as_u16()
            ),
            retry_after: None,
        }),
    }
}

/// The messages a 2xx answer lists as failed, with the wait each asked for. A body that is
/// empty, not JSON, or a JSON value without `failed` lists none; a `failed` that is not a
/// list of `{"id": "<message id>", "retry_after"?: <seconds>}` is an error (the subscriber
/// meant to refuse something, and what cannot be read is not taken as an acknowledgement).
fn failed_items(body: &[u8]) -> Result<Vec<(MessageId, Option<Duration>)>, String> {
    #[derive(serde::Deserialize)]
    struct Item {
        id: String,
        #[serde(default)]
        retry_after: Option<f64>,
    }
    if body.trim_ascii().is_empty() {
        return Ok(Vec::new());
    }
    let Ok(serde_json::Value::Object(mut answer)) = serde_json::from_slice(body) else {
        return Ok(Vec::new());
    };
    let Some(failed) = answer.remove("failed") else {
        return Ok(Vec::new());
    };
    let items: Vec<Item> =
        serde_json::from_value(failed).map_err(|e| format!("\"failed\": {e}"))?;
    items
        .into_iter()
        .map(|i| {
            let id = MessageId::parse_str(&i.id)
                .map_err(|_| format!("{:?} in \"failed\" is not a message id", i.id))?;
            let wait = match i.retry_after {
                None => None,
                Some(s) if s.is_finite() && s >= 0.0 => {
                    Some(Duration::from_secs_f64(s.min(u32::MAX as f64)))
                }
                Some(s) => return Err(format!("retry_after {s} of {} is not a wait", i.id)),
            };
            Ok((id, wait))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::sign;

    fn attempt(seq: u64, content_type: &str, body: &'static [u8]) -> Attempt {
        Attempt {
            message: space::ids::message_id(1_700_000_000_000, 3, seq),
            queue: Arc::from("orders \"eu\""),
            subscriber: 1,
            endpoint: Arc::from("http://127.0.0.1:9/hook"),
            handler: space::HandlerKind::Webhook,
            secret: Some(Arc::from(&b"key"[..])),
            previous_secret: None,
            body: Bytes::from_static(body),
            content_type: content_type.into(),
            event_type: None,
            parents: (seq > 0)
                .then(|| space::ids::message_id(1_700_000_000_000, 3, seq - 1))
                .into(),
            trace: (seq == 1).then(|| {
                (
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned(),
                    Some("congo=t61rcWkgMzE".to_owned()),
                )
            }),
            published_at_ms: 1_700_000_000_000,
            number: 2,
            headers: Default::default(),
        }
    }

    #[test]
    fn a_batch_is_an_array_of_structured_cloudevents() {
        let batch = [
            attempt(0, "application/json; charset=utf-8", br#"{"a": [1, 2]}"#),
            attempt(1, "text/plain", b"hi \xff"),
            attempt(2, "application/json", b"not json"),
            Attempt {
                event_type: Some(Arc::from("urn:order/created_v2")),
                ..attempt(3, "Application/VND.X+JSON", b"7")
            },
        ];
        let v: serde_json::Value = serde_json::from_slice(&body(&batch)).unwrap();
        let events = v.as_array().unwrap();
        assert_eq!(events.len(), 4);
        let e = &events[0];
        assert_eq!(e["specversion"], "1.0");
        assert_eq!(e["id"], batch[0].message.to_string());
        assert_eq!(e["source"], "/queues/orders \"eu\"");
        assert_eq!(e["type"], "syncbrok.message");
        assert_eq!(e["time"], "2023-11-14T22:13:20.000Z");
        assert_eq!(e["datacontenttype"], "application/json; charset=utf-8");
        assert_eq!(e["syncbrokattempt"], 2);
        assert!(e.get("syncbrokparent").is_none());
        assert!(e.get("traceparent").is_none());
        assert_eq!(
            events[1]["traceparent"],
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        assert_eq!(events[1]["tracestate"], "congo=t61rcWkgMzE");
        assert_eq!(e["data"], serde_json::json!({"a": [1, 2]}));
        assert_eq!(events[1]["data_base64"], "aGkg/w==");
        assert_eq!(
            events[1]["syncbrokparent"],
            batch[0].message.to_string().as_str()
        );
        // Declared JSON, but not: carried as bytes, never spliced into the array.
        assert_eq!(events[2]["data_base64"], "bm90IGpzb24=");
        assert_eq!(events[3]["data"], 7);
        assert_eq!(events[3]["type"], "urn:order/created_v2");
        assert_eq!(events[2]["type"], "syncbrok.message");
    }

    /// JSON that a lenient check would pass but strict receivers refuse goes as bytes: raw
    /// Latin-1 in a string, a lone surrogate escape, nesting past 128.
    #[test]
    fn json_strict_receivers_would_refuse_goes_as_base64() {
        let deep: &'static [u8] = Box::leak(
            format!("{}{}", "[".repeat(200), "]".repeat(200))
                .into_bytes()
                .into_boxed_slice(),
        );
        for json in [&b"{\"a\": \"caf\xe9\"}"[..], br#"["\ud800"]"#, deep] {
            let batch = [attempt(0, "application/json", json)];
            let text = body(&batch);
            let v: serde_json::Value = serde_json::from_slice(&text).expect("a readable batch");
            assert!(
                v[0].get("data").is_none(),
                "{:?}",
                String::from_utf8_lossy(json)
            );
            assert!(v[0]["data_base64"].is_string());
        }
    }

    #[test]
    fn headers_sign_the_whole_body_under_the_batch_id() {
        let batch = [
            attempt(0, "text/plain", b"a"),
            attempt(1, "text/plain", b"b"),
        ];
        let body = body(&batch);
        let h = headers(
            &batch,
            &body,
            &HeaderValue::from_static("orders"),
            1_700_000_100,
        )
        .unwrap();
        assert_eq!(h["content-type"], CONTENT_TYPE);
        assert_eq!(h["syncbrok-batch-size"], "2");
        assert_eq!(h["syncbrok-queue"], "orders");
        let id = h["webhook-id"].to_str().unwrap();
        assert_eq!(MessageId::parse_str(id).unwrap().get_version_num(), 4);
        assert_eq!(
            h["webhook-signature"],
            sign(b"key", id, 1_700_000_100, &body).as_str()
        );
        let again = headers(&batch, &body, &HeaderValue::from_static("orders"), 1).unwrap();
        assert_ne!(
            again["webhook-id"], h["webhook-id"],
            "a fresh id per request"
        );
    }

    #[test]
    fn answers_fail_what_they_list_and_acknowledge_the_rest() {
        let ids: Vec<MessageId> = (0..3)
            .map(|s| space::ids::message_id(1_700_000_000_000, 3, s))
            .collect();
        let ok = StatusCode::OK;
        for empty in [&b""[..], b"  \n", b"ok", b"{\"received\": 3}", b"[]"] {
            assert_eq!(outcomes(ok, None, empty, &ids), vec![Outcome::Acked; 3]);
        }
        let answer = format!(
            r#"{{"failed": [{{"id": "{}", "retry_after": 2.5}}, {{"id": "{}"}}]}}"#,
            ids[2], ids[0]
        );
        let o = outcomes(StatusCode::ACCEPTED, None, answer.as_bytes(), &ids);
        assert!(matches!(
            &o[0],
            Outcome::Failed {
                retry_after: None,
                ..
            }
        ));
        assert_eq!(o[1], Outcome::Acked);
        assert!(
            matches!(&o[2], Outcome::Failed { retry_after: Some(d), .. } if *d == Duration::from_millis(2500))
        );
        for unreadable in [
            &br#"{"failed": "all"}"#[..],
            br#"{"failed": [{"id": "nope"}]}"#,
            br#"{"failed": [{"id": "00000000-0000-0000-0000-000000000000", "retry_after": -1}]}"#,
        ] {
            let o = outcomes(ok, None, unreadable, &ids);
            assert!(
                o.iter().all(|o| matches!(o, Outcome::Failed { .. })),
                "{o:?}"
            );
        }
        let o = outcomes(
            StatusCode::TOO_MANY_REQUESTS,
            Some(Duration::from_secs(9)),
            b"",
            &ids,
        );
        assert!(o.iter().all(|o| matches!(o, Outcome::Failed { retry_after: Some(d), error } if *d == Duration::from_secs(9) && error == "HTTP 429")));
    }
}
