//! A subscriber as its user configured it: the settings its records carry, and their bounds.

use crate::delivery::{Batching, HandlerKind};
use crate::error::SubscriberError;
pub use crate::model::{RateLimit, SubscriberState};

/// Decodes a `whsec_<base64>` secret into its HMAC key.
pub fn decode_secret(secret: &str) -> Result<Vec<u8>, SubscriberError> {
    use base64::Engine;
    let encoded = secret
        .strip_prefix("whsec_")
        .ok_or(SubscriberError::InvalidSecret)?;
    let key = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| SubscriberError::InvalidSecret)?;
    if key.is_empty() {
        return Err(SubscriberError::InvalidSecret);
    }
    Ok(key)
}

/// A subscriber as its user configured it.
#[derive(Clone, PartialEq, Eq)]
pub struct SubscriberSpec {
    pub endpoint: String,
    pub handler: HandlerKind,
    /// `whsec_<base64>`; never shown by the API, nor by `Debug`.
    pub secret: Option<String>,
    pub max_in_flight: u32,
    pub batch: Batching,
    /// Headers sent with every request, e.g. `authorization` for a receiver behind auth:
    /// (name in lowercase, value). Values are never shown by the API, nor by `Debug`.
    pub headers: Vec<(String, String)>,
    /// Whether it receives messages now.
    pub state: SubscriberState,
    /// At most this many messages sent to it in any one-second window.
    pub rate_limit: Option<RateLimit>,
    /// The secret it had before the latest rotation, still signing until its grace period is
    /// over.
    pub previous_secret: Option<PreviousSecret>,
    /// The event types it takes (exact names, or prefixes followed by `*`); `None`: every
    /// message. Applied when a message is accepted: it shapes the message's fan-out set.
    pub types: Option<Vec<String>>,
}

impl Default for SubscriberSpec {
    /// A webhook subscriber with every setting at its default, and no endpoint yet.
    fn default() -> Self {
        SubscriberSpec {
            endpoint: String::new(),
            handler: HandlerKind::Webhook,
            secret: None,
            max_in_flight: crate::limits::MAX_IN_FLIGHT_DEFAULT,
            batch: Batching::default(),
            headers: Vec::new(),
            state: SubscriberState::Active,
            rate_limit: None,
            previous_secret: None,
            types: None,
        }
    }
}

impl RateLimit {
    pub fn validate(&self) -> Result<(), SubscriberError> {
        use crate::limits::RATE_LIMIT_PER_SECOND_MAX;
        if !(1..=RATE_LIMIT_PER_SECOND_MAX).contains(&self.per_second) {
            return Err(SubscriberError::InvalidRateLimit(self.per_second));
        }
        Ok(())
    }
}

/// A secret replaced by a rotation, still used to sign until `until_ms` (unix milliseconds).
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreviousSecret {
    pub secret: String,
    pub until_ms: u64,
}

impl std::fmt::Debug for PreviousSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreviousSecret")
            .field("secret", &"<redacted>")
            .field("until_ms", &self.until_ms)
            .finish()
    }
}

/// The settings of a subscriber kept in its record's `options` (JSON): those added after the
/// record's fixed fields. Each is left out when it has its default, so a subscriber without
/// any has empty options. Unknown fields are refused: a record that names one was written by
/// a newer build, and reading it as if the field were absent would change what it means.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Options {
    #[serde(skip_serializing_if = "is_default")]
    batch: Batching,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    headers: Vec<(String, String)>,
    #[serde(skip_serializing_if = "is_default")]
    state: SubscriberState,
    #[serde(skip_serializing_if = "Option::is_none")]
    rate_limit: Option<RateLimit>,
    #[serde(skip_serializing_if = "Option::is_none")]
    previous_secret: Option<PreviousSecret>,
    #[serde(skip_serializing_if = "Option::is_none")]
    types: Option<Vec<String>>,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

impl SubscriberSpec {
    /// The encoding of the settings kept in the record's `options`: empty if all are default.
    pub fn options(&self) -> bytes::Bytes {
        let options = Options {
            batch: self.batch,
            headers: self.headers.clone(),
            state: self.state,
            rate_limit: self.rate_limit,
            previous_secret: self.previous_secret.clone(),
            types: self.types.clone(),
        };
        let json = serde_json::to_vec(&options).unwrap_or_default();
        if json == b"{}" {
            return bytes::Bytes::new();
        }
        bytes::Bytes::from(json)
    }

    /// The spec of a subscriber record: its fixed fields and its `options`.
    pub fn from_record(
        endpoint: String,
        handler: HandlerKind,
        secret: Option<String>,
        max_in_flight: u32,
        options: &[u8],
    ) -> Result<SubscriberSpec, SubscriberError> {
        let options: Options = if options.is_empty() {
            Options::default()
        } else {
            serde_json::from_slice(options)
                .map_err(|e| SubscriberError::InvalidOptions(e.to_string()))?
        };
        let spec = SubscriberSpec {
            endpoint,
            handler,
            secret,
            max_in_flight,
            batch: options.batch,
            headers: options.headers,
            state: options.state,
            rate_limit: options.rate_limit,
            previous_secret: options.previous_secret,
            types: options.types,
        };
        // What was accepted once is within bounds; anything else was not written by a build
        // with these bounds, and is refused rather than used.
        spec.validate()?;
        Ok(spec)
    }

    /// Checks the settings that do not depend on the Space (bounds, combinations).
    pub fn validate(&self) -> Result<(), SubscriberError> {
        self.batch.validate()?;
        validate_headers(&self.headers)?;
        if let Some(r) = &self.rate_limit {
            r.validate()?;
        }
        if let Some(t) = &self.types {
            crate::event_type::check_filter(t).map_err(SubscriberError::InvalidTypes)?;
        }
        if let Some(s) = &self.secret {
            decode_secret(s)?;
        }
        if let Some(p) = &self.previous_secret {
            decode_secret(&p.secret)?;
            if self.secret.is_none() {
                return Err(SubscriberError::InvalidOptions(
                    "a previous secret without a current one".into(),
                ));
            }
        }
        if self.batch.is_batched() && self.handler == HandlerKind::Legacy {
            return Err(SubscriberError::InvalidBatch(
                "the legacy handler sends one message per request: batching needs the webhook handler".into(),
            ));
        }
        Ok(())
    }
}

impl std::fmt::Debug for SubscriberSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubscriberSpec")
            .field("endpoint", &self.endpoint)
            .field("handler", &self.handler)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("max_in_flight", &self.max_in_flight)
            .field("batch", &self.batch)
            .field(
                "headers",
                &self.headers.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .field("state", &self.state)
            .field("rate_limit", &self.rate_limit)
            .field("types", &self.types)
            .field(
                "previous_secret_until_ms",
                &self.previous_secret.as_ref().map(|p| p.until_ms),
            )
            .finish()
    }
}

/// Header names a subscriber may not set: those every request carries from the broker
/// (`content-type`, the Standard Webhooks, CloudEvents and `syncbrok-` families) and those
/// of HTTP's own framing and connection handling.
const RESERVED_HEADERS: [&str; 9] = [
    "content-type",
    "content-length",
    "host",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
];
const RESERVED_HEADER_PREFIXES: [&str; 4] = ["webhook-", "ce-", "syncbrok-", "proxy-"];

/// Checks a subscriber's own headers: at most `SUBSCRIBER_HEADERS_MAX`, names HTTP tokens in
/// lowercase, none reserved or twice, values of visible ASCII (spaces and tabs inside), all
/// together within `SUBSCRIBER_HEADER_BYTES_MAX`.
fn validate_headers(headers: &[(String, String)]) -> Result<(), SubscriberError> {
    use crate::limits::{SUBSCRIBER_HEADER_BYTES_MAX, SUBSCRIBER_HEADERS_MAX};
    let bad = |why: String| Err(SubscriberError::InvalidHeader(why));
    if headers.len() > SUBSCRIBER_HEADERS_MAX {
        return bad(format!("at most {SUBSCRIBER_HEADERS_MAX} headers"));
    }
    let total: usize = headers.iter().map(|(n, v)| n.len() + v.len()).sum();
    if total > SUBSCRIBER_HEADER_BYTES_MAX {
        return bad(format!(
            "names and values together over {SUBSCRIBER_HEADER_BYTES_MAX} bytes"
        ));
    }
    let token =
        |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&b);
    let visible = |b: u8| b == b' ' || b == b'\t' || (0x21..0x7f).contains(&b);
    for (i, (name, value)) in headers.iter().enumerate() {
        if name.is_empty() || !name.bytes().all(token) {
            return bad(format!("{name:?} is not a header name in lowercase"));
        }
        if RESERVED_HEADERS.contains(&name.as_str())
            || RESERVED_HEADER_PREFIXES.iter().any(|p| name.starts_with(p))
        {
            return bad(format!(
                "{name:?} is set by the broker, not by a subscriber"
            ));
        }
        if headers[..i].iter().any(|(n, _)| n == name) {
            return bad(format!("{name:?} given twice"));
        }
        if !value.bytes().all(visible) || value.trim() != value {
            return bad(format!(
                "the value of {name:?} is not visible ASCII without leading or trailing spaces"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_read_back_are_held_to_the_bounds_they_were_accepted_under() {
        let read = |handler, options: &[u8]| {
            SubscriberSpec::from_record("http://a/".into(), handler, None, 8, options)
        };
        let web = HandlerKind::Webhook;
        let spec = read(web, br#"{"batch": {"max_messages": 64}}"#).unwrap();
        assert_eq!(spec.batch.max_messages, 64);
        assert_eq!(
            spec.batch.max_bytes,
            crate::limits::DELIVERY_BATCH_BYTES_DEFAULT
        );
        assert_eq!(read(web, b"").unwrap().batch, Batching::default());
        assert_eq!(read(web, &spec.options()).unwrap(), spec);
        for bad in [
            &br#"{"batch": {"max_messages": 5000}}"#[..],
            br#"{"batch": {"max_bytes": 0}}"#,
            br#"{"rate_limit": 3}"#,
            br#"{"rate_limit": {"per_second": 0}}"#,
            br#"{"state": "sleeping"}"#,
            // A previous secret needs a current one (this record has none).
            br#"{"previous_secret": {"secret": "whsec_MTExMQ==", "until_ms": 5}}"#,
            br#"{"colour": "blue"}"#,
            b"not json",
        ] {
            assert!(read(web, bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        assert!(read(HandlerKind::Legacy, br#"{"batch": {"max_messages": 2}}"#).is_err());
        // Every setting survives its encoding; defaults take no bytes.
        assert!(SubscriberSpec::default().options().is_empty());
        let full = SubscriberSpec {
            endpoint: "http://a/".into(),
            secret: Some("whsec_MjIyMg==".into()),
            max_in_flight: 8,
            state: SubscriberState::Disabled,
            rate_limit: Some(RateLimit { per_second: 7 }),
            previous_secret: Some(PreviousSecret {
                secret: "whsec_MTExMQ==".into(),
                until_ms: 99,
            }),
            ..spec
        };
        let again = SubscriberSpec::from_record(
            "http://a/".into(),
            web,
            full.secret.clone(),
            8,
            &full.options(),
        );
        assert_eq!(again.unwrap(), full);
        let debug = format!("{full:?}");
        assert!(!debug.contains("whsec_"), "{debug}");
    }

    #[test]
    fn own_headers_are_checked_at_their_edges() {
        let spec = |headers: Vec<(String, String)>| SubscriberSpec {
            endpoint: "http://a/".into(),
            handler: HandlerKind::Webhook,
            secret: None,
            max_in_flight: 1,
            headers,
            ..Default::default()
        };
        let h = |n: &str, v: &str| (n.to_owned(), v.to_owned());
        let max = crate::limits::SUBSCRIBER_HEADERS_MAX;
        let many = |n: usize| {
            (0..n)
                .map(|i| h(&format!("x-h{i}"), "v"))
                .collect::<Vec<_>>()
        };
        assert!(spec(many(max)).validate().is_ok());
        assert!(spec(many(max + 1)).validate().is_err());
        // Names and values together: exactly at the bound, and one byte over.
        let at = crate::limits::SUBSCRIBER_HEADER_BYTES_MAX - "authorization".len();
        assert!(
            spec(vec![h("authorization", &"a".repeat(at))])
                .validate()
                .is_ok()
        );
        assert!(
            spec(vec![h("authorization", &"a".repeat(at + 1))])
                .validate()
                .is_err()
        );
        assert!(
            spec(vec![h("authorization", "Bearer x y"), h("x-tenant", "7")])
                .validate()
                .is_ok()
        );
        for reserved in [
            "content-type",
            "host",
            "content-length",
            "webhook-signature",
            "ce-type",
            "syncbrok-queue",
            "proxy-authorization",
        ] {
            let e = spec(vec![h(reserved, "x")]).validate().unwrap_err();
            assert!(
                e.to_string().contains("set by the broker"),
                "{reserved}: {e}"
            );
        }
        for (name, value) in [
            ("Authorization", "x"),
            ("bad name", "x"),
            ("", "x"),
            ("x-a", "line\nbreak"),
            ("x-a", " padded"),
            ("x-a", "caf\u{e9}"),
        ] {
            assert!(
                spec(vec![h(name, value)]).validate().is_err(),
                "{name:?}: {value:?}"
            );
        }
        assert!(spec(vec![h("x-a", "1"), h("x-a", "2")]).validate().is_err());
        assert_eq!(
            SubscriberSpec::from_record(
                "http://a/".into(),
                HandlerKind::Webhook,
                None,
                1,
                &spec(vec![h("authorization", "Bearer x")]).options()
            )
            .unwrap()
            .headers,
            vec![h("authorization", "Bearer x")]
        );
        let debug = format!("{:?}", spec(vec![h("authorization", "Bearer s3cret")]));
        assert!(
            debug.contains("authorization") && !debug.contains("s3cret"),
            "{debug}"
        );
    }
}
