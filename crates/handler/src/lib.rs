//! syncbrok's Handlers: how one attempt becomes one HTTP POST (docs/api.md, "Delivery").
//!
//! - `webhook`: the raw body with Standard Webhooks headers (`webhook-id`, `webhook-timestamp`,
//!   `webhook-signature`), CloudEvents binary-mode headers (`ce-*`) and `syncbrok-*` headers.
//!   Any 2xx acknowledges.
//! - `legacy`: the original broker's JSON `{"id", "content": base64}`; acknowledged only by a
//!   2xx whose body, trimmed, is `true`.
//!
//! One pooled keep-alive client (hyper-util) serves every subscriber, with `TCP_NODELAY`;
//! https endpoints go through rustls (ring provider, Mozilla's roots, optional extra roots).
//! Timeouts are the Space's: it drops the attempt's future when `delivery_timeout` passes.

pub mod batch;
mod guard;
mod headers;
mod lane;
pub mod limits;

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use base64::Engine;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::{HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use sha2::Sha256;
use space::endpoints::EndpointPolicy;
use space::{Attempt, Channel, Deliverer, HandlerKind, Outcome};

pub use space::time::rfc3339;

/// Header names, made once: parsing them per request showed in profiles.
pub mod names {
    use http::HeaderName;
    pub const WEBHOOK_ID: HeaderName = HeaderName::from_static("webhook-id");
    pub const WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static("webhook-timestamp");
    pub const WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");
    pub const CE_SPECVERSION: HeaderName = HeaderName::from_static("ce-specversion");
    pub const CE_ID: HeaderName = HeaderName::from_static("ce-id");
    pub const CE_SOURCE: HeaderName = HeaderName::from_static("ce-source");
    pub const CE_TYPE: HeaderName = HeaderName::from_static("ce-type");
    pub const CE_TIME: HeaderName = HeaderName::from_static("ce-time");
    pub const SYNCBROK_QUEUE: HeaderName = HeaderName::from_static("syncbrok-queue");
    pub const SYNCBROK_ATTEMPT: HeaderName = HeaderName::from_static("syncbrok-attempt");
    pub const SYNCBROK_PARENT: HeaderName = HeaderName::from_static("syncbrok-parent");
    pub const SYNCBROK_BATCH_SIZE: HeaderName = HeaderName::from_static("syncbrok-batch-size");
}

type Connector = hyper_rustls::HttpsConnector<guard::Guarded>;

/// Delivers attempts over HTTP/1.1, plain or TLS (rustls), with a shared connection pool.
#[derive(Clone)]
pub struct HttpDeliverer {
    /// For attempts made without a lane ([`Deliverer::deliver`]).
    client: Client<Connector, Full<Bytes>>,
    /// For the connections lanes keep ([`Deliverer::deliver_on`]).
    connector: Connector,
}

impl Default for HttpDeliverer {
    fn default() -> Self {
        HttpDeliverer::new()
    }
}

/// How a deliverer connects.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// What subscribers may connect to (`endpoints.allow`).
    pub policy: EndpointPolicy,
    /// Most connections open at once, to all subscribers together.
    pub max_connections: usize,
    /// Certificates (DER) trusted besides Mozilla's roots, e.g. a private CA.
    pub extra_roots: Vec<rustls::pki_types::CertificateDer<'static>>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            policy: EndpointPolicy::default(),
            max_connections: limits::OUTBOUND_CONNECTIONS_MAX,
            extra_roots: Vec::new(),
        }
    }
}

/// Why the TLS client could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up TLS for https endpoints: {0}")]
pub struct TlsError(String);

impl HttpDeliverer {
    /// A deliverer trusting Mozilla's root certificates for https endpoints, under the
    /// default endpoint policy (no link-local or unspecified addresses).
    pub fn new() -> HttpDeliverer {
        HttpDeliverer::with_policy(EndpointPolicy::default())
    }

    /// A deliverer whose every new connection must pass `policy` (`endpoints.allow`).
    pub fn with_policy(policy: EndpointPolicy) -> HttpDeliverer {
        HttpDeliverer::with_config(HttpConfig {
            policy,
            ..HttpConfig::default()
        })
        .expect("the built-in roots and the ring provider always make a TLS config")
    }

    /// A deliverer as `config` says.
    pub fn with_config(config: HttpConfig) -> Result<HttpDeliverer, TlsError> {
        let HttpConfig {
            policy,
            max_connections,
            extra_roots: extra,
        } = config;
        let mut roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        for cert in extra {
            roots.add(cert).map_err(|e| TlsError(e.to_string()))?;
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let http = guard::Guarded::new(policy, max_connections.max(1));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(limits::POOL_IDLE_PER_HOST)
            .pool_idle_timeout(Duration::from_secs(limits::POOL_IDLE_TIMEOUT_S))
            .build(connector.clone());
        Ok(HttpDeliverer { client, connector })
    }
}

impl Deliverer for HttpDeliverer {
    fn deliver(&self, attempt: Attempt) -> Pin<Box<dyn Future<Output = Outcome> + Send>> {
        let client = self.client.clone();
        Box::pin(async move {
            match send(&client, &attempt).await {
                Ok(outcome) => outcome,
                Err(error) => Outcome::Failed {
                    error,
                    retry_after: None,
                },
            }
        })
    }

    fn deliver_on<'a>(
        &'a self,
        attempt: Attempt,
        channel: &'a mut Channel,
    ) -> Pin<Box<dyn Future<Output = Outcome> + Send + 'a>> {
        Box::pin(lane::deliver(&self.connector, attempt, channel))
    }

    fn deliver_batch_on<'a>(
        &'a self,
        batch: Vec<Attempt>,
        channel: &'a mut Channel,
    ) -> Pin<Box<dyn Future<Output = Vec<Outcome>> + Send + 'a>> {
        Box::pin(lane::deliver_batch(&self.connector, batch, channel))
    }
}

async fn send(client: &Client<Connector, Full<Bytes>>, a: &Attempt) -> Result<Outcome, String> {
    let response = client
        .request(request_of(a)?)
        .await
        .map_err(|e| error_chain(&e))?;
    Ok(answer(a.handler, response).await.0)
}

/// The request of an attempt, as its handler makes it.
fn request_of(a: &Attempt) -> Result<Request<Full<Bytes>>, String> {
    match a.handler {
        HandlerKind::Webhook => webhook_request(a, unix_seconds_now()),
        HandlerKind::Legacy => legacy_request(a),
    }
}

/// A subscriber's response, read: its status, the wait it asked for (`Retry-After` on 429
/// and 503), its body (up to `limit` bytes), and whether the body was read to the
/// end (a connection may carry the next request only then).
struct Answer {
    status: StatusCode,
    retry_after: Option<Duration>,
    body: Bytes,
    whole: bool,
}

async fn read_answer(response: http::Response<hyper::body::Incoming>, limit: usize) -> Answer {
    let status = response.status();
    let retry_after =
        if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers()
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, SystemTime::now()))
        } else {
            None
        };
    let read = Limited::new(response.into_body(), limit)
        .collect()
        .await
        .map(|b| b.to_bytes());
    let whole = read.is_ok();
    Answer {
        status,
        retry_after,
        body: read.unwrap_or_default(),
        whole,
    }
}

/// What a subscriber's response means for the attempt, and whether its body was read to the
/// end.
async fn answer(
    handler: HandlerKind,
    response: http::Response<hyper::body::Incoming>,
) -> (Outcome, bool) {
    let a = read_answer(response, limits::RESPONSE_BODY_BYTES_MAX).await;
    (single_outcome(handler, &a), a.whole)
}

/// What an answer to a single message means.
fn single_outcome(handler: HandlerKind, a: &Answer) -> Outcome {
    let status = a.status;
    let acked = status.is_success()
        && match handler {
            HandlerKind::Webhook => true,
            HandlerKind::Legacy => a.body.trim_ascii() == b"true",
        };
    if acked {
        Outcome::Acked
    } else if status.is_success() {
        Outcome::Failed {
            error: format!(
                "HTTP {} without `true` in the body (legacy handler)",
                status.as_u16()
            ),
            retry_after: None,
        }
    } else {
        Outcome::Failed {
            error: format!("HTTP {}", status.as_u16()),
            retry_after: a.retry_after,
        }
    }
}

/// An error and its sources as one text, without the request's details (no secrets, no
/// bodies): hyper's own text of a failed request says only "client error".
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn unix_seconds_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn header(v: &str) -> Result<HeaderValue, String> {
    HeaderValue::from_str(v).map_err(|_| format!("invalid header value {v:?}"))
}

/// The webhook request of an attempt, at unix time `now_s`. Built straight into a header map
/// (no request builder, no `format!`): it is made for every delivery, and the builder's moves
/// and string formatting were a fifth of the broker's instructions under fan-out.
pub fn webhook_request(a: &Attempt, now_s: u64) -> Result<Request<Full<Bytes>>, String> {
    let uri = http::Uri::try_from(&*a.endpoint)
        .map_err(|e| format!("invalid endpoint {:?}: {e}", a.endpoint))?;
    let (source, queue) = queue_headers(&a.queue)?;
    let headers = headers::WebhookHeaders::new(source, queue, a.secret.is_some(), &a.headers)?
        .into_headers(a, now_s)?;
    Ok(webhook_request_to(a, uri, headers))
}

/// The `ce-source` and `syncbrok-queue` values of a queue's requests.
fn queue_headers(queue: &str) -> Result<(HeaderValue, HeaderValue), String> {
    let mut source = String::with_capacity("/queues/".len() + queue.len());
    source.push_str("/queues/");
    source.push_str(queue);
    Ok((header(&source)?, header(queue)?))
}

/// The webhook request of `a` to `uri` with its `headers`.
fn webhook_request_to(
    a: &Attempt,
    uri: http::Uri,
    headers: http::HeaderMap,
) -> Request<Full<Bytes>> {
    let mut request = Request::new(Full::new(a.body.clone()));
    *request.method_mut() = Method::POST;
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    request
}

/// The legacy request: the original broker's JSON.
pub fn legacy_request(a: &Attempt) -> Result<Request<Full<Bytes>>, String> {
    let content = base64::engine::general_purpose::STANDARD.encode(&a.body);
    // Both values are JSON-safe as written: a UUID and base64.
    let json = format!(r#"{{"id":"{}","content":"{content}"}}"#, a.message);
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(&*a.endpoint)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(json)))
        .map_err(|e| format!("cannot build the request: {e}"))?;
    headers::add_own(request.headers_mut(), &a.headers)?;
    Ok(request)
}

/// The `webhook-signature` of a request for `a`'s subscriber, if it has a secret: the
/// signature with its secret and, during a rotation's grace period, a space and the
/// signature with the secret it replaced (receivers accept a request if any one verifies).
pub(crate) fn signature(a: &Attempt, id: &str, timestamp_s: u64, body: &[u8]) -> Option<String> {
    let key = a.secret.as_ref()?;
    let mut value = sign(key, id, timestamp_s, body);
    if let Some(previous) = &a.previous_secret {
        value.push(' ');
        value.push_str(&sign(previous, id, timestamp_s, body));
    }
    Some(value)
}

/// The Standard Webhooks signature: `v1,` and the base64 HMAC-SHA256 of `{id}.{ts}.{body}`.
pub fn sign(key: &[u8], id: &str, timestamp_s: u64, body: &[u8]) -> String {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp_s.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

/// `Retry-After` as seconds or an HTTP date, relative to `now`.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if let Ok(seconds) = v.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn signatures_match_the_standard_webhooks_test_vector() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let key = space::decode_secret(secret).unwrap();
        assert_eq!(
            sign(
                &key,
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn retry_after_takes_seconds_and_http_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(30))
        );
        let past = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(parse_retry_after(&past, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
    }

    fn attempt(handler: HandlerKind) -> Attempt {
        Attempt {
            message: space::ids::message_id(1_700_000_000_000, 3, 9),
            queue: Arc::from("orders"),
            subscriber: 1,
            endpoint: Arc::from("http://127.0.0.1:9/hook"),
            handler,
            secret: Some(Arc::from(&b"key"[..])),
            previous_secret: None,
            body: Bytes::from_static(b"{\"a\":1}"),
            content_type: "application/json".into(),
            event_type: None,
            parents: space::Parents::One(space::ids::message_id(1_700_000_000_000, 3, 8)),
            trace: Some((
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned(),
                Some("congo=t61rcWkgMzE".to_owned()),
            )),
            published_at_ms: 1_700_000_000_000,
            number: 2,
            headers: Default::default(),
        }
    }

    #[test]
    fn a_webhook_request_carries_every_header_of_the_spec() {
        let a = attempt(HandlerKind::Webhook);
        let r = webhook_request(&a, 1_700_000_100).unwrap();
        let h = r.headers();
        let id = a.message.to_string();
        assert_eq!(r.method(), Method::POST);
        assert_eq!(h["content-type"], "application/json");
        assert_eq!(h["webhook-id"], id.as_str());
        assert_eq!(h["webhook-timestamp"], "1700000100");
        assert_eq!(
            h["webhook-signature"],
            sign(b"key", &id, 1_700_000_100, &a.body).as_str()
        );
        assert_eq!(h["ce-specversion"], "1.0");
        assert_eq!(h["ce-id"], id.as_str());
        assert_eq!(h["ce-source"], "/queues/orders");
        assert_eq!(h["ce-type"], "syncbrok.message");
        assert_eq!(h["ce-time"], "2023-11-14T22:13:20.000Z");
        assert_eq!(h["syncbrok-queue"], "orders");
        assert_eq!(h["syncbrok-attempt"], "2");
        let parent = a.parents.first().unwrap();
        assert_eq!(h["syncbrok-parent"], parent.to_string().as_str());
        // The publisher's trace context goes on, W3C and CloudEvents alike.
        let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(h["traceparent"], traceparent);
        assert_eq!(h["ce-traceparent"], traceparent);
        assert_eq!(h["tracestate"], "congo=t61rcWkgMzE");
        assert_eq!(h["ce-tracestate"], "congo=t61rcWkgMzE");
        // A join's parents go as one list, in the order they were named.
        let other = space::ids::message_id(1_700_000_000_000, 3, 2);
        let joined = Attempt {
            parents: space::Parents::new(&[parent, other]).unwrap(),
            ..a.clone()
        };
        let r = webhook_request(&joined, 1).unwrap();
        assert_eq!(
            r.headers()["syncbrok-parent"],
            format!("{parent}, {other}").as_str()
        );
        let unsigned = Attempt {
            secret: None,
            previous_secret: None,
            parents: space::Parents::None,
            trace: None,
            ..a
        };
        let r = webhook_request(&unsigned, 1).unwrap();
        assert!(r.headers().get("webhook-signature").is_none());
        assert!(r.headers().get("syncbrok-parent").is_none());
        assert_eq!(r.headers()["ce-type"], "syncbrok.message");
        // A typed message carries its type, in its place among the headers.
        let typed = Attempt {
            event_type: Some(Arc::from("order.created")),
            ..unsigned
        };
        let r = webhook_request(&typed, 1).unwrap();
        assert_eq!(r.headers()["ce-type"], "order.created");
        assert_eq!(r.headers()["ce-source"], "/queues/orders");
        assert_eq!(r.headers()["ce-time"], "2023-11-14T22:13:20.000Z");
    }

    #[test]
    fn a_legacy_request_is_the_original_json() {
        let a = attempt(HandlerKind::Legacy);
        let r = legacy_request(&a).unwrap();
        assert_eq!(r.headers()["content-type"], "application/json");
        let body = futures_body(r);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["id"], a.message.to_string());
        assert_eq!(v["content"], "eyJhIjoxfQ==");
    }

    fn futures_body(r: Request<Full<Bytes>>) -> Bytes {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async { r.into_body().collect().await.unwrap().to_bytes() })
    }
}
