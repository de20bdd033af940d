//! Subscriber endpoints for the HTTP workloads: loopback hyper servers that read each request
//! body, hand each message of it to an observer and answer `200` at once. The same servers
//! stand behind syncbrok and behind the `http-limit` target, so the two are measured against
//! one ceiling. A CloudEvents batch (syncbrok's batched delivery) is parsed and each event's
//! body handed over in turn, as a receiver would: parsing is part of what a batch costs.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::measure::BenchResult;

/// Sees every request body a sink receives, before the sink answers.
pub type Observer = Arc<dyn Fn(&[u8]) + Send + Sync>;

/// A running sink; it stops when dropped.
pub struct Sink {
    pub url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Sink {
    /// A sink on a fresh loopback port.
    pub async fn start(observer: Observer) -> BenchResult<Self> {
        Self::start_on(TcpListener::bind("127.0.0.1:0").await?, observer)
    }

    /// A sink on `addr`, which a workload reserved earlier (a subscriber that comes back up).
    pub async fn start_at(addr: SocketAddr, observer: Observer) -> BenchResult<Self> {
        Self::start_on(TcpListener::bind(addr).await?, observer)
    }

    fn start_on(listener: TcpListener, observer: Observer) -> BenchResult<Self> {
        let url = format!("http://{}/hook", listener.local_addr()?);
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                let observer = observer.clone();
                connections.spawn(async move {
                    let service =
                        service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                            let observer = observer.clone();
                            async move {
                                let batched = request
                                    .headers()
                                    .get(hyper::header::CONTENT_TYPE)
                                    .is_some_and(|v| v == handler::batch::CONTENT_TYPE);
                                let body = match request.into_body().collect().await {
                                    Ok(collected) => collected.to_bytes(),
                                    Err(_) => Bytes::new(),
                                };
                                if batched {
                                    each_event(&body, &*observer);
                                } else {
                                    observer(&body);
                                }
                                Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::new())))
                            }
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Self { url, task })
    }
}

/// Hands the body of each event of a CloudEvents batch to `observer` (an unreadable batch or
/// event is handed over as it is, so the workload counts it as malformed).
fn each_event(batch: &[u8], observer: &(dyn Fn(&[u8]) + Send + Sync)) {
    use base64::Engine;
    #[derive(serde::Deserialize)]
    struct Event {
        data_base64: Option<String>,
    }
    let Ok(events) = serde_json::from_slice::<Vec<Event>>(batch) else {
        observer(batch);
        return;
    };
    for event in events {
        let body = event
            .data_base64
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .unwrap_or_default();
        observer(&body);
    }
}

/// A loopback address nothing listens on yet: a subscriber that is down until a sink is
/// started there.
pub fn reserve_port() -> BenchResult<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// The pooled keep-alive client every HTTP workload publishes with (hyper-util, TCP_NODELAY:
/// the client syncbrok itself delivers with).
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub fn http_client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1024)
        .build(connector)
}

/// Sends a request and reads the whole answer: its status and body.
pub async fn send(
    client: &HttpClient,
    request: hyper::Request<Full<Bytes>>,
) -> BenchResult<(hyper::StatusCode, Bytes)> {
    let response = client.request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, body))
}
