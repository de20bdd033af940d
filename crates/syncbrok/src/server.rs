//! The API's HTTP server, plain or over TLS: one accept loop with a cap on open connections,
//! accept errors backed off, a deadline for request headers, idle connections closed, and a
//! bounded drain at shutdown.
//!
//! - **Connections**: at most `max_connections` are open; at the cap the loop stops accepting
//!   (new clients wait in the kernel's backlog) until one closes.
//! - **Headers** must arrive within `header_timeout` (hyper's own timer, per request).
//! - **Idle**: a connection with no bytes in either direction for `idle_timeout` is closed
//!   gracefully (a request under way finishes first); if it stays silent for another
//!   `idle_timeout`, it is dropped. So a client that stops reading its answer is cut off too.
//! - **Bodies** have their own deadline, applied by the router (`frontend::deadline`).
//! - **Recovery**: the broker listens before it recovers; until then `/healthz` answers and
//!   everything else is 503 ([`Routes`]).
//! - **Shutdown**: accepting stops, every connection is asked to close after its request under
//!   way, and the server waits at most `drain` for them.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use crate::limits::{ACCEPT_BACKOFF_MAX, ACCEPT_BACKOFF_MIN};

/// The routes served: the recovering ones (alive, not ready) from the moment the broker
/// listens, the API once the Space has recovered.
#[derive(Clone)]
pub struct Routes {
    api: Arc<OnceLock<axum::Router>>,
    recovering: axum::Router,
}

impl Routes {
    pub fn new(recovering: axum::Router) -> Routes {
        Routes {
            api: Arc::new(OnceLock::new()),
            recovering,
        }
    }

    /// From now on, requests go to `api`.
    pub fn recovered(&self, api: axum::Router) {
        let _ = self.api.set(api);
    }
}

/// Each request goes straight to the router of the moment (no outer router to route through
/// first: that was a routing pass per request).
impl tower_service::Service<hyper::Request<hyper::body::Incoming>> for Routes {
    type Response = axum::response::Response;
    type Error = Infallible;
    type Future = <axum::Router as tower_service::Service<axum::extract::Request>>::Future;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: hyper::Request<hyper::body::Incoming>) -> Self::Future {
        let mut router = self.api.get().unwrap_or(&self.recovering).clone();
        router.call(request.map(axum::body::Body::new))
    }
}

/// How the server treats connections (`server:` in the configuration).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    /// How long shutdown waits for open connections.
    pub drain: Duration,
}

/// Serves `router` until `shutdown` resolves, then drains (see the module's documentation).
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    routes: Routes,
    config: ServerConfig,
    shutdown: impl Future<Output = ()>,
) {
    let router = routes;
    let open = Arc::new(Semaphore::new(config.max_connections));
    let (stop, stopping) = watch::channel(false);
    let config = Arc::new(config);
    let mut backoff = ACCEPT_BACKOFF_MIN;
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = open.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => {
                backoff = ACCEPT_BACKOFF_MIN;
                a
            }
            Err(e) => {
                // Out of file descriptors, say: waiting is the only thing that helps.
                tracing::warn!(error = %e, retry_in = ?backoff, "accept failed");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = &mut shutdown => break,
                }
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (router, config, stopping, tls) = (
            router.clone(),
            config.clone(),
            stopping.clone(),
            tls.clone(),
        );
        tokio::spawn(async move {
            let _permit = permit;
            match tls {
                None => connection(stream, router, &config, stopping).await,
                Some(acceptor) => {
                    match tokio::time::timeout(config.header_timeout, acceptor.accept(stream)).await
                    {
                        Ok(Ok(tls)) => connection(tls, router, &config, stopping).await,
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
    drop(listener);
    let _ = stop.send(true);
    let all = u32::try_from(config.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(config.drain, open.acquire_many(all))
        .await
        .is_err()
    {
        let left = config.max_connections - open.available_permits();
        tracing::warn!(
            connections = left,
            "connections still open after the drain deadline are cut"
        );
    }
}

/// Serves one connection until it ends, goes idle, or the server stops.
async fn connection<S>(
    io: S,
    router: Routes,
    config: &ServerConfig,
    mut stopping: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Activity::new();
    let io = Watched {
        inner: io,
        activity: activity.clone(),
    };
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(config.header_timeout);
    let conn = http.serve_connection(TokioIo::new(io), TowerToHyperService::new(router));
    tokio::pin!(conn);
    let mut closing = *stopping.borrow();
    if closing {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        let quiet_until = activity.last() + config.idle_timeout;
        tokio::select! {
            _ = conn.as_mut() => return,
            () = tokio::time::sleep_until(quiet_until) => {
                if activity.last() + config.idle_timeout > Instant::now() {
                    continue;
                }
                if closing {
                    return; // silent through a graceful close as well: cut
                }
                conn.as_mut().graceful_shutdown();
                closing = true;
                activity.touch();
            }
            _ = stopping.changed(), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
        }
    }
}

/// When a connection last moved a byte, in milliseconds after `base`.
#[derive(Clone)]
struct Activity {
    base: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            base: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        }
    }

    fn touch(&self) {
        let ms = self.base.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.base + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// A connection's stream that notes every read and write in its [`Activity`].
struct Watched<S> {
    inner: S,
    activity: Activity,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
