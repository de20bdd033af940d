//! A real HTTP subscriber on loopback whose answers each test scripts.

#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

/// A request the sink received.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
}

/// How the sink answers.
#[derive(Debug, Clone)]
pub enum Reply {
    Status(u16, &'static str),
    StatusWith(u16, &'static str, &'static str, &'static str),
    /// Answer after this long.
    Slow(Duration, u16),
    /// A status and a body made for the request.
    Body(u16, String),
}

type Script = dyn Fn(usize, &Received) -> Reply + Send + Sync;

pub struct Sink {
    pub addr: SocketAddr,
    pub received: Arc<Mutex<Vec<Received>>>,
    pub concurrent_max: Arc<AtomicUsize>,
}

impl Sink {
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.received.lock().unwrap().len()
    }
}

/// Starts a sink on `127.0.0.1:0`; `script(n, request)` answers the n-th request (0-based).
pub async fn start(script: impl Fn(usize, &Received) -> Reply + Send + Sync + 'static) -> Sink {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received: Arc<Mutex<Vec<Received>>> = Arc::default();
    let concurrent = Arc::new(AtomicUsize::new(0));
    let concurrent_max = Arc::new(AtomicUsize::new(0));
    let script: Arc<Script> = Arc::new(script);
    {
        let received = received.clone();
        let concurrent_max = concurrent_max.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let received = received.clone();
                let script = script.clone();
                let concurrent = concurrent.clone();
                let concurrent_max = concurrent_max.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let received = received.clone();
                        let script = script.clone();
                        let concurrent = concurrent.clone();
                        let concurrent_max = concurrent_max.clone();
                        async move {
                            let now = concurrent.fetch_add(1, Ordering::SeqCst) + 1;
                            concurrent_max.fetch_max(now, Ordering::SeqCst);
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await.unwrap().to_bytes();
                            let r = Received {
                                headers: parts.headers,
                                body,
                                at: Instant::now(),
                            };
                            let n = {
                                let mut all = received.lock().unwrap();
                                all.push(r.clone());
                                all.len() - 1
                            };
                            let reply = script(n, &r);
                            let response = match reply {
                                Reply::Status(code, body) => Response::builder()
                                    .status(code)
                                    .body(Full::new(Bytes::from_static(body.as_bytes()))),
                                Reply::StatusWith(code, body, name, value) => Response::builder()
                                    .status(code)
                                    .header(name, value)
                                    .body(Full::new(Bytes::from_static(body.as_bytes()))),
                                Reply::Body(code, body) => Response::builder()
                                    .status(code)
                                    .body(Full::new(Bytes::from(body))),
                                Reply::Slow(wait, code) => {
                                    tokio::time::sleep(wait).await;
                                    Response::builder()
                                        .status(code)
                                        .body(Full::new(Bytes::new()))
                                }
                            };
                            concurrent.fetch_sub(1, Ordering::SeqCst);
                            Ok::<_, Infallible>(response.unwrap())
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
    }
    Sink {
        addr,
        received,
        concurrent_max,
    }
}

/// Waits (bounded) until `cond` holds.
pub async fn eventually(what: &str, cond: impl Fn() -> bool) {
    for _ in 0..2000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("timed out waiting until {what}");
}

/// A webhook attempt of a small JSON body to `endpoint`; `n` makes its message id.
pub fn attempt(endpoint: &str, n: u128) -> space::Attempt {
    space::Attempt {
        message: space::MessageId::from_u128(0x0189_0000_0000_7000_8000_0000_0000_0000 + n),
        queue: Arc::from("q"),
        subscriber: 1,
        endpoint: Arc::from(endpoint),
        handler: space::HandlerKind::Webhook,
        secret: None,
        previous_secret: None,
        body: Bytes::from_static(b"{}"),
        content_type: "application/json".into(),
        event_type: None,
        parents: Default::default(),
        trace: None,
        published_at_ms: 0,
        number: 1,
        headers: Default::default(),
    }
}
