//! The webhook headers of a subscriber's requests as a template: every name in its place, the
//! values that do not change from one attempt to the next (`ce-source`, `ce-specversion`,
//! `ce-type`, `syncbrok-queue`) already set. An attempt clones it and fills in the rest by
//! position: inserting a dozen headers one by one hashed each name, a few percent of the
//! broker's instructions under fan-out.

use http::{HeaderMap, HeaderValue};
use space::Attempt;

use crate::{header, names, signature};

pub(crate) struct WebhookHeaders {
    template: HeaderMap,
    signed: bool,
}

impl WebhookHeaders {
    /// The template for requests of a queue (`source`, `queue`: the values of `ce-source` and
    /// `syncbrok-queue`), with a signature slot if the subscriber has a secret, and the
    /// subscriber's own headers after the slots.
    pub fn new(
        source: HeaderValue,
        queue: HeaderValue,
        signed: bool,
        own: &[(String, String)],
    ) -> Result<WebhookHeaders, String> {
        let unset = || HeaderValue::from_static("");
        let mut template = HeaderMap::with_capacity(12);
        template.insert(http::header::CONTENT_TYPE, unset());
        template.insert(names::WEBHOOK_ID, unset());
        template.insert(names::WEBHOOK_TIMESTAMP, unset());
        if signed {
            template.insert(names::WEBHOOK_SIGNATURE, unset());
        }
        template.insert(names::CE_SPECVERSION, HeaderValue::from_static("1.0"));
        template.insert(names::CE_ID, unset());
        template.insert(names::CE_SOURCE, source);
        template.insert(names::CE_TYPE, HeaderValue::from_static("syncbrok.message"));
        template.insert(names::CE_TIME, unset());
        template.insert(names::SYNCBROK_QUEUE, queue);
        template.insert(names::SYNCBROK_ATTEMPT, unset());
        add_own(&mut template, own)?;
        Ok(WebhookHeaders { template, signed })
    }

    /// Whether the template has a signature slot.
    pub fn signed(&self) -> bool {
        self.signed
    }

    /// The headers of `a` at unix time `now_s`, from a copy of the template.
    pub fn of(&self, a: &Attempt, now_s: u64) -> Result<HeaderMap, String> {
        fill(self.template.clone(), self.signed, a, now_s)
    }

    /// [`WebhookHeaders::of`] for a template used once: filled in place, not copied.
    pub fn into_headers(self, a: &Attempt, now_s: u64) -> Result<HeaderMap, String> {
        fill(self.template, self.signed, a, now_s)
    }
}

/// Adds a subscriber's own headers (checked when it was added) to `headers`.
pub(crate) fn add_own(headers: &mut HeaderMap, own: &[(String, String)]) -> Result<(), String> {
    for (name, value) in own {
        let name = http::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("invalid header name {name:?}"))?;
        let value =
            HeaderValue::from_str(value).map_err(|_| format!("invalid value for header {name}"))?;
        headers.insert(name, value);
    }
    Ok(())
}

/// Fills the slots of `headers`, a template made with `signed`, for `a` at `now_s`.
fn fill(
    mut headers: HeaderMap,
    signed: bool,
    a: &Attempt,
    now_s: u64,
) -> Result<HeaderMap, String> {
    if a.secret.is_some() != signed {
        return Err("the header template was made for another subscriber (one with a secret, or one without)".into());
    }
    let mut id_text = [0u8; 36];
    let id_text: &str = a.message.hyphenated().encode_lower(&mut id_text);
    let id = header(id_text)?;
    let time = HeaderValue::from_bytes(&space::time::rfc3339_bytes(a.published_at_ms))
        .map_err(|e| format!("invalid time header: {e}"))?;
    // The template's slots, in order; `None` keeps the template's value. After
    // `webhook-timestamp` everything moves down one when there is a signature.
    let sig = usize::from(signed);
    let mut fills: [Option<HeaderValue>; 11] = Default::default();
    fills[0] = Some(header(&a.content_type)?);
    fills[1] = Some(id.clone());
    fills[2] = Some(HeaderValue::from(now_s));
    if let Some(signature) = signature(a, id_text, now_s, &a.body) {
        fills[3] = Some(header(&signature)?);
    }
    fills[4 + sig] = Some(id);
    if let Some(t) = &a.event_type {
        fills[6 + sig] = Some(header(t)?);
    }
    fills[7 + sig] = Some(time);
    fills[9 + sig] = Some(HeaderValue::from(a.number));
    for (slot, fill) in headers.values_mut().zip(fills) {
        if let Some(value) = fill {
            *slot = value;
        }
    }
    // The publisher's trace context goes on as it came (W3C, and as the CloudEvents
    // distributed-tracing extension in binary mode).
    if let Some((parent, state)) = &a.trace {
        let value = header(parent)?;
        headers.insert(http::HeaderName::from_static("traceparent"), value.clone());
        headers.insert(http::HeaderName::from_static("ce-traceparent"), value);
        if let Some(state) = state {
            let value = header(state)?;
            headers.insert(http::HeaderName::from_static("tracestate"), value.clone());
            headers.insert(http::HeaderName::from_static("ce-tracestate"), value);
        }
    }
    // A join's parents go as one list, as the publisher named them.
    match a.parents.as_slice() {
        [] => {}
        [p] => {
            let mut text = [0u8; 36];
            headers.insert(
                names::SYNCBROK_PARENT,
                header(p.hyphenated().encode_lower(&mut text))?,
            );
        }
        many => {
            let list: Vec<String> = many.iter().map(|p| p.to_string()).collect();
            headers.insert(names::SYNCBROK_PARENT, header(&list.join(", "))?);
        }
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn attempt(secret: Option<Arc<[u8]>>, parent: bool) -> Attempt {
        Attempt {
            message: space::MessageId::from_u128(7),
            queue: Arc::from("orders"),
            subscriber: 1,
            endpoint: Arc::from("http://127.0.0.1:1/hook"),
            handler: space::HandlerKind::Webhook,
            secret,
            previous_secret: None,
            body: bytes::Bytes::from_static(b"{}"),
            content_type: "application/json".into(),
            event_type: None,
            parents: parent.then(|| space::MessageId::from_u128(6)).into(),
            trace: None,
            published_at_ms: 1_700_000_000_000,
            number: 3,
            headers: Default::default(),
        }
    }

    /// Every slot of the template is filled, in the order the headers are documented, with or
    /// without a signature and a parent (the values themselves: the request test in lib.rs).
    #[test]
    fn every_slot_is_filled_in_order() {
        for (secret, parent) in [(None, false), (Some(Arc::<[u8]>::from(&b"k"[..])), true)] {
            let a = attempt(secret.clone(), parent);
            let (source, queue) = crate::queue_headers(&a.queue).unwrap();
            let own = [("authorization".to_owned(), "Bearer t".to_owned())];
            let h = WebhookHeaders::new(source, queue, secret.is_some(), &own)
                .unwrap()
                .of(&a, 1_700_000_000)
                .unwrap();
            let mut want = vec!["content-type", "webhook-id", "webhook-timestamp"];
            if secret.is_some() {
                want.push("webhook-signature");
            }
            want.extend([
                "ce-specversion",
                "ce-id",
                "ce-source",
                "ce-type",
                "ce-time",
                "syncbrok-queue",
                "syncbrok-attempt",
                "authorization",
            ]);
            if parent {
                want.push("syncbrok-parent");
            }
            assert_eq!(h.keys().map(|n| n.as_str()).collect::<Vec<_>>(), want);
            assert!(h.values().all(|v| !v.is_empty()), "{h:?}");
            assert_eq!(h["ce-id"], h["webhook-id"]);
        }
    }
}
