//! The endpoint policy (`endpoints.allow`) on every new connection, on the address actually
//! connected to: host names are resolved here and only allowed addresses are tried; address
//! literals are checked before connecting. Whoever added a subscriber and however it was
//! restored, a connection it may not make is refused, and the attempt fails with the reason.
//! And the cap on open connections ([`crate::limits::OUTBOUND_CONNECTIONS_MAX`]): a
//! connection holds a permit until it is closed.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Uri;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use space::endpoints::EndpointPolicy;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower_service::Service;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Resolves a host name to the addresses of it the policy allows.
#[derive(Clone)]
pub(crate) struct Resolver {
    policy: Arc<EndpointPolicy>,
}

impl Service<Name> for Resolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str();
            let mut refused = None;
            let allowed: Vec<SocketAddr> = tokio::net::lookup_host((host, 0))
                .await?
                .filter(|a| match policy.check_address(host, a.ip()) {
                    Ok(()) => true,
                    Err(why) => {
                        refused.get_or_insert(why);
                        false
                    }
                })
                .collect();
            if allowed.is_empty() {
                let why = refused.unwrap_or_else(|| format!("{host} resolves to no address"));
                return Err(io::Error::new(io::ErrorKind::PermissionDenied, why));
            }
            Ok(allowed.into_iter())
        })
    }
}

/// The TCP connector, with the policy on address literals and on what names resolve to.
#[derive(Clone)]
pub(crate) struct Guarded {
    inner: HttpConnector<Resolver>,
    policy: Arc<EndpointPolicy>,
    open: Arc<Semaphore>,
}

impl Guarded {
    pub fn new(policy: EndpointPolicy, max_connections: usize) -> Guarded {
        let policy = Arc::new(policy);
        let mut inner = HttpConnector::new_with_resolver(Resolver {
            policy: policy.clone(),
        });
        inner.set_nodelay(true);
        inner.enforce_http(false);
        Guarded {
            inner,
            policy,
            open: Arc::new(Semaphore::new(max_connections)),
        }
    }
}

impl Service<Uri> for Guarded {
    type Response = Counted<<HttpConnector<Resolver> as Service<Uri>>::Response>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        if let Some(host) = uri.host() {
            let bare = host.trim_start_matches('[').trim_end_matches(']');
            if let Ok(ip) = bare.parse::<IpAddr>()
                && let Err(why) = self.policy.check_address(bare, ip)
            {
                let refused = io::Error::new(io::ErrorKind::PermissionDenied, why);
                return Box::pin(std::future::ready(Err(refused.into())));
            }
        }
        let mut inner = self.inner.clone();
        let open = self.open.clone();
        Box::pin(async move {
            let permit = open
                .acquire_owned()
                .await
                .map_err(|e| Box::new(e) as BoxError)?;
            let stream = inner.call(uri).await.map_err(Into::<BoxError>::into)?;
            Ok(Counted {
                inner: stream,
                _permit: permit,
            })
        })
    }
}

/// A connection that holds one of the cap's permits until it is dropped.
pub(crate) struct Counted<T> {
    inner: T,
    _permit: OwnedSemaphorePermit,
}

impl<T: hyper::rt::Read + Unpin> hyper::rt::Read for Counted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: hyper::rt::Write + Unpin> hyper::rt::Write for Counted<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
}

impl<T: Connection> Connection for Counted<T> {
    fn connected(&self) -> Connected {
        self.inner.connected()
    }
}
