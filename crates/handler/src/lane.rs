//! Delivery over the connection a lane keeps: one HTTP/1.1 connection per lane, made through
//! the same connector as the pooled client (`endpoints.allow`, the connection cap, TLS), and
//! used for one request at a time. No pool is consulted per attempt.
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
use space::{Attempt, Channel, Outcome};

use crate::{Connector, answer, error_chain, request_of};

/// What a lane keeps between attempts.
struct Kept {
    endpoint: Arc<str>,
    sender: SendRequest<Full<Bytes>>,
}

/// One attempt over the lane's connection (made if the lane has none to this endpoint).
pub(crate) async fn deliver(
    connector: &Connector,
    attempt: Attempt,
    channel: &mut Channel,
) -> Outcome {
    let kept = channel
        .take::<Kept>()
        .filter(|k| k.endpoint == attempt.endpoint && !k.sender.is_closed())
        .map(|k| k.sender);
    match send(connector, kept, &attempt).await {
        Ok((outcome, sender)) => {
            if let Some(sender) = sender {
                channel.put(Kept {
                    endpoint: attempt.endpoint.clone(),
                    sender,
                });
            }
            outcome
        }
        Err(error) => Outcome::Failed {
            error,
            retry_after: None,
        },
    }
}

/// Sends the attempt's request; returns its outcome and the connection if it can carry the
/// next request.
async fn send(
    connector: &Connector,
    kept: Option<SendRequest<Full<Bytes>>>,
    a: &Attempt,
) -> Result<(Outcome, Option<SendRequest<Full<Bytes>>>), String> {
    let mut request = request_of(a)?;
    let uri = request.uri().clone();
    to_origin_form(&mut request)?;
    let mut reused = kept.is_some();
    let mut sender = match kept {
        Some(sender) => sender,
        None => connect(connector, &uri).await?,
    };
    let response = loop {
        if sender.ready().await.is_err() && reused {
            sender = connect(connector, &uri).await?;
            reused = false;
        }
        match sender.try_send_request(request).await {
            Ok(response) => break response,
            Err(mut e) => match e.take_message() {
                // Never written: the kept connection was closed under it.
                Some(unsent) if reused => {
                    request = unsent;
                    sender = connect(connector, &uri).await?;
                    reused = false;
                }
                _ => return Err(error_chain(&e.into_error())),
            },
        }
    };
    let (outcome, whole) = answer(a.handler, response).await;
    Ok((outcome, whole.then_some(sender)))
}

/// A new HTTP/1.1 connection to the endpoint of `uri`; its driver runs on its own task and
/// ends when the lane drops the sender or the subscriber closes the connection.
async fn connect(connector: &Connector, uri: &Uri) -> Result<SendRequest<Full<Bytes>>, String> {
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

/// The request as it goes on its own connection: the path as its target and the endpoint's
/// authority as `Host`, as a pooled client would send it.
fn to_origin_form(request: &mut Request<Full<Bytes>>) -> Result<(), String> {
    let uri = request.uri();
    let authority = uri
        .authority()
        .ok_or_else(|| format!("endpoint {uri} has no host"))?;
    // Without credentials (`user:pass@`), which a Host header never carries.
    let host_and_port = authority.as_str().rsplit('@').next().unwrap_or_default();
    let host = HeaderValue::from_str(host_and_port)
        .map_err(|_| format!("endpoint {uri} has a host no header can carry"))?;
    let target = uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .parse::<Uri>()
        .map_err(|e| format!("endpoint {uri}: {e}"))?;
    request.headers_mut().insert(http::header::HOST, host);
    *request.uri_mut() = target;
    Ok(())
}
