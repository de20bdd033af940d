//! Delivery over the connection a lane keeps: one HTTP/1.1 connection per lane, made through
//! the same connector as the pooled client (`endpoints.allow`, the connection cap, TLS), and
//! used for one request at a time. No pool is consulted per attempt, and what every request
//! of the lane shares (the parsed endpoint, `Host`, the webhook header template) is made once.
//!
//! The connection is taken out of the lane's channel for the attempt and put back only once
//! the response was read to the end: an attempt dropped half-way (a timeout) or a response
//! left unread takes its connection with it. A kept connection the subscriber closed while it
//! was idle is replaced, and the request sent on the new one, when hyper gives the request
//! back unsent.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Request, Uri};
use http_body_util::Full;
use hyper::client::conn::http1::{self, SendRequest};
use space::{Attempt, Channel, HandlerKind, Outcome};

use crate::headers::WebhookHeaders;
use crate::{
    Answer, Connector, batch, error_chain, legacy_request, queue_headers, read_answer,
    single_outcome, unix_seconds_now, webhook_request_to,
};

/// What every request of a lane shares, made once: where it goes and the header values that
/// do not change from one attempt to the next.
struct Target {
    endpoint: Arc<str>,
    queue: Arc<str>,
    /// The endpoint, to connect to.
    uri: Uri,
    /// The request target on the connection: the endpoint's path and query.
    origin: Uri,
    host: HeaderValue,
    headers: WebhookHeaders,
    /// `syncbrok-queue`, for batches (single requests take it from `headers`).
    queue_header: HeaderValue,
    /// The subscriber's own headers (in `headers` too), for batches.
    own: space::CustomHeaders,
}

impl Target {
    fn of(a: &Attempt) -> Result<Target, String> {
        let uri = Uri::try_from(&*a.endpoint)
            .map_err(|e| format!("invalid endpoint {:?}: {e}", a.endpoint))?;
        let authority = uri
            .authority()
            .ok_or_else(|| format!("endpoint {uri} has no host"))?;
        // Without credentials (`user:pass@`), which a Host header never carries.
        let host_and_port = authority.as_str().rsplit('@').next().unwrap_or_default();
        let host = HeaderValue::from_str(host_and_port)
            .map_err(|_| format!("endpoint {uri} has a host no header can carry"))?;
        let origin = uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse::<Uri>()
            .map_err(|e| format!("endpoint {uri}: {e}"))?;
        let (source, queue) = queue_headers(&a.queue)?;
        Ok(Target {
            endpoint: a.endpoint.clone(),
            queue: a.queue.clone(),
            uri,
            origin,
            host,
            headers: WebhookHeaders::new(source, queue.clone(), a.secret.is_some(), &a.headers)?,
            queue_header: queue,
            own: a.headers.clone(),
        })
    }

    fn serves(&self, a: &Attempt) -> bool {
        self.endpoint == a.endpoint
            && self.queue == a.queue
            && self.headers.signed() == a.secret.is_some()
            && std::sync::Arc::ptr_eq(&self.own, &a.headers)
    }

    /// The attempt's request as it goes on the lane's connection (origin-form target, `Host`
    /// set), as a pooled client would send it.
    fn request(&self, a: &Attempt) -> Result<Request<Full<Bytes>>, String> {
        let mut request = match a.handler {
            HandlerKind::Webhook => webhook_request_to(
                a,
                self.origin.clone(),
                self.headers.of(a, unix_seconds_now())?,
            ),
            HandlerKind::Legacy => {
                let mut r = legacy_request(a)?;
                *r.uri_mut() = self.origin.clone();
                r
            }
        };
        request
            .headers_mut()
            .insert(http::header::HOST, self.host.clone());
        Ok(request)
    }

    /// The request of a batch (see [`crate::batch`]) on the lane's connection.
    fn batch_request(&self, attempts: &[Attempt]) -> Result<Request<Full<Bytes>>, String> {
        let body = batch::body(attempts);
        let mut headers = batch::headers(attempts, &body, &self.queue_header, unix_seconds_now())?;
        headers.insert(http::header::HOST, self.host.clone());
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = self.origin.clone();
        *request.headers_mut() = headers;
        Ok(request)
    }
}

/// The sending half of a lane's HTTP/1.1 connection.
type Sender = SendRequest<Full<Bytes>>;

/// What a lane keeps between attempts: its target, and its connection while it has one.
struct Kept {
    target: Target,
    sender: Option<Sender>,
}

/// The lane's target for `a` and its connection: those it kept if they serve `a`.
fn kept_for(channel: &mut Channel, a: &Attempt) -> Result<(Target, Option<Sender>), String> {
    match channel.take::<Kept>().filter(|k| k.target.serves(a)) {
        Some(k) => Ok((k.target, k.sender.filter(|s| !s.is_closed()))),
        None => Ok((Target::of(a)?, None)),
    }
}

fn failed(error: String) -> Outcome {
    Outcome::Failed {
        error,
        retry_after: None,
    }
}

/// One attempt over the lane's connection (made if the lane has none to this endpoint).
pub(crate) async fn deliver(
    connector: &Connector,
    attempt: Attempt,
    channel: &mut Channel,
) -> Outcome {
    let limit = crate::limits::RESPONSE_BODY_BYTES_MAX;
    match exchange(connector, channel, &attempt, limit, |t| t.request(&attempt)).await {
        Ok(answer) => single_outcome(attempt.handler, &answer),
        Err(error) => failed(error),
    }
}

/// One batch over the lane's connection: one outcome per attempt, in order.
pub(crate) async fn deliver_batch(
    connector: &Connector,
    attempts: Vec<Attempt>,
    channel: &mut Channel,
) -> Vec<Outcome> {
    let Some(first) = attempts.first() else {
        return Vec::new();
    };
    let limit = crate::limits::BATCH_ANSWER_BYTES_MAX;
    match exchange(connector, channel, first, limit, |t| {
        t.batch_request(&attempts)
    })
    .await
    {
        // A 2xx whose body could not be read whole may list failures that would be lost.
        Ok(answer) if answer.status.is_success() && !answer.whole => {
            let error = format!(
                "HTTP {} with a batch answer over {} KiB or cut off",
                answer.status.as_u16(),
                limit / 1024
            );
            vec![failed(error); attempts.len()]
        }
        Ok(answer) => {
            let ids: Vec<_> = attempts.iter().map(|a| a.message).collect();
            batch::outcomes(answer.status, answer.retry_after, &answer.body, &ids)
        }
        Err(error) => vec![failed(error); attempts.len()],
    }
}

/// The request `make` builds for the lane's target, sent on the lane's connection (made if it
/// has none to the endpoint of `a`), its answer read up to `limit` bytes; the target and a
/// connection that can carry the next request go back into the channel.
async fn exchange(
    connector: &Connector,
    channel: &mut Channel,
    a: &Attempt,
    limit: usize,
    make: impl FnOnce(&Target) -> Result<Request<Full<Bytes>>, String>,
) -> Result<Answer, String> {
    let (target, sender) = kept_for(channel, a)?;
    let sent = match make(&target) {
        Ok(request) => send(connector, &target, sender, request, limit).await,
        Err(error) => Err(error),
    };
    let (answer, sender) = match sent {
        Ok((answer, sender)) => (Ok(answer), sender),
        Err(error) => (Err(error), None),
    };
    channel.put(Kept { target, sender });
    answer
}

/// Sends a request on the lane's connection; returns the answer and the connection if it can
/// carry the next request.
async fn send(
    connector: &Connector,
    target: &Target,
    kept: Option<Sender>,
    mut request: Request<Full<Bytes>>,
    limit: usize,
) -> Result<(Answer, Option<Sender>), String> {
    let uri = &target.uri;
    let mut reused = kept.is_some();
    let mut sender = match kept {
        Some(sender) => sender,
        None => connect(connector, uri).await?,
    };
    let response = loop {
        if sender.ready().await.is_err() && reused {
            sender = connect(connector, uri).await?;
            reused = false;
        }
        match sender.try_send_request(request).await {
            Ok(response) => break response,
            Err(mut e) => match e.take_message() {
                // Never written: the kept connection was closed under it.
                Some(unsent) if reused => {
                    request = unsent;
                    sender = connect(connector, uri).await?;
                    reused = false;
                }
                _ => return Err(error_chain(&e.into_error())),
            },
        }
    };
    let answer = read_answer(response, limit).await;
    let whole = answer.whole;
    Ok((answer, whole.then_some(sender)))
}

/// A new HTTP/1.1 connection to the endpoint of `uri`; its driver runs on its own task and
/// ends when the lane drops the sender or the subscriber closes the connection.
async fn connect(connector: &Connector, uri: &Uri) -> Result<Sender, String> {
    use tower_service::Service;
    let mut connector = connector.clone();
    std::future::poll_fn(|cx| connector.poll_ready(cx))
        .await
        .map_err(|e| error_chain(&*e))?;
    let io = connector
        .call(uri.clone())
        .await
        .map_err(|e| error_chain(&*e))?;
    let (sender, connection) = http1::Builder::new()
        .handshake(io)
        .await
        .map_err(|e| error_chain(&e))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %error_chain(&e), "a subscriber connection ended");
        }
    });
    Ok(sender)
}
