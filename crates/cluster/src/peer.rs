//! The peer transport: Raft's messages between nodes as JSON over HTTP POSTs to
//! `/cluster/raft/{append,vote,snapshot}` on each node's own server, with the cluster's shared
//! secret (when configured) in `syncbrok-cluster-secret`. A snapshot travels whole in one
//! request, at most [`PEER_BODY_BYTES_MAX`] bytes.

use std::io::Cursor;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use openraft::alias::{SnapshotOf, VoteOf};
use openraft::errors::{
    NetworkError, RPCError, RaftError, ReplicationClosed, StreamingError, Unreachable,
};
use openraft::network::v2::RaftNetworkV2;
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::storage::RaftStateMachine;
use openraft::{BasicNode, OptionalSend, Raft, Snapshot};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::types::Command;
use crate::types::TypeConfig;

type C = TypeConfig;

/// The largest request a node takes from a peer (a batch of entries, a whole snapshot).
pub const PEER_BODY_BYTES_MAX: usize = 256 << 20;
/// The header carrying the cluster's shared secret.
pub const SECRET_HEADER: &str = "syncbrok-cluster-secret";

/// Makes a client per peer, all over one pool of connections.
#[derive(Clone)]
pub struct Peers {
    client: Client<HttpConnector, Full<Bytes>>,
    secret: Option<Arc<str>>,
}

impl Peers {
    pub fn new(secret: Option<Arc<str>>) -> Peers {
        Peers {
            client: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
            secret,
        }
    }
}

impl RaftNetworkFactory<C> for Peers {
    type Network = Peer;

    async fn new_client(&mut self, _target: u64, node: &BasicNode) -> Peer {
        Peer {
            base: node.addr.trim_end_matches('/').to_owned(),
            client: self.client.clone(),
            secret: self.secret.clone(),
        }
    }
}

/// One peer, at its address (`http://host:port`).
pub struct Peer {
    base: String,
    client: Client<HttpConnector, Full<Bytes>>,
    secret: Option<Arc<str>>,
}

impl Peer {
    /// POSTs `request` to the peer's `path`, within `ttl`; the answer is the peer's `Result`.
    async fn call<Q: Serialize, A: DeserializeOwned>(
        &self,
        path: &str,
        request: &Q,
        ttl: Duration,
    ) -> Result<A, RPCError<C>> {
        let body = serde_json::to_vec(request).map_err(|e| NetworkError::new(&e))?;
        let mut r = http::Request::post(format!("{}/cluster/raft/{path}", self.base))
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(secret) = &self.secret {
            r = r.header(SECRET_HEADER, secret.as_ref());
        }
        let r = r
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| NetworkError::new(&e))?;
        let answer = match tokio::time::timeout(ttl, self.client.request(r)).await {
            Err(_) => {
                return Err(
                    NetworkError::from_string(format!("{path}: no answer within {ttl:?}")).into(),
                );
            }
            Ok(Err(e)) if e.is_connect() => return Err(Unreachable::new(&e).into()),
            Ok(Err(e)) => return Err(NetworkError::new(&e).into()),
            Ok(Ok(a)) => a,
        };
        let status = answer.status();
        let bytes = tokio::time::timeout(ttl, answer.into_body().collect())
            .await
            .map_err(|_| {
                NetworkError::from_string(format!(
                    "{path}: the answer did not arrive within {ttl:?}"
                ))
            })?
            .map_err(|e| NetworkError::new(&e))?
            .to_bytes();
        if status != StatusCode::OK {
            let text = String::from_utf8_lossy(&bytes);
            return Err(NetworkError::from_string(format!("{path}: HTTP {status}: {text}")).into());
        }
        let result: Result<A, RaftError<C>> =
            serde_json::from_slice(&bytes).map_err(|e| NetworkError::new(&e))?;
        result.map_err(|e| Unreachable::new(&e).into())
    }
}

impl RaftNetworkV2<C> for Peer {
    type SnapshotData = Cursor<Vec<u8>>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<C>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<C>, RPCError<C>> {
        self.call("append", &rpc, option.hard_ttl()).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<C>,
        option: RPCOption,
    ) -> Result<VoteResponse<C>, RPCError<C>> {
        self.call("vote", &rpc, option.hard_ttl()).await
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<C>,
        snapshot: SnapshotOf<C, Self::SnapshotData>,
        cancel: impl std::future::Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<C>, StreamingError<C>> {
        let request = (vote, snapshot.meta, Command(snapshot.snapshot.into_inner()));
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            answer = self.call("snapshot", &request, option.hard_ttl()) => Ok(answer?),
        }
    }
}

/// Compares without stopping at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn check_secret(
    State(secret): State<Option<Arc<str>>>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(secret) = secret {
        let presented = request
            .headers()
            .get(SECRET_HEADER)
            .map(HeaderValue::as_bytes)
            .unwrap_or_default();
        if !same(presented, secret.as_bytes()) {
            return (StatusCode::UNAUTHORIZED, "not a peer of this cluster").into_response();
        }
    }
    next.run(request).await
}

fn json<T: Serialize>(value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// Answers a peer: its request's JSON (400 when it is not), handled, the result as JSON.
async fn answer<Q, A, F>(body: &[u8], handle: impl FnOnce(Q) -> F) -> Response
where
    Q: DeserializeOwned,
    A: Serialize,
    F: std::future::Future<Output = A>,
{
    match serde_json::from_slice(body) {
        Ok(request) => json(&handle(request).await),
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}

/// The routes a node answers its peers on, to be served beside the API.
pub fn peer_routes<SM>(raft: Raft<C, SM>, secret: Option<Arc<str>>) -> Router
where
    SM: RaftStateMachine<C, SnapshotData = Cursor<Vec<u8>>>,
{
    Router::new()
        .route(
            "/cluster/raft/append",
            post(|State(raft): State<Raft<C, SM>>, body: Bytes| async move {
                answer(&body, |rpc| async move { raft.append_entries(rpc).await }).await
            }),
        )
        .route(
            "/cluster/raft/vote",
            post(|State(raft): State<Raft<C, SM>>, body: Bytes| async move {
                answer(&body, |rpc| async move { raft.vote(rpc).await }).await
            }),
        )
        .route(
            "/cluster/raft/snapshot",
            post(|State(raft): State<Raft<C, SM>>, body: Bytes| async move {
                answer(&body, |(vote, meta, Command(data))| async move {
                    let snapshot = Snapshot {
                        meta,
                        snapshot: Cursor::new(data),
                    };
                    let installed: Result<SnapshotResponse<C>, RaftError<C>> = raft
                        .install_full_snapshot(vote, snapshot)
                        .await
                        .map_err(RaftError::Fatal);
                    installed
                })
                .await
            }),
        )
        .layer(DefaultBodyLimit::max(PEER_BODY_BYTES_MAX))
        .layer(axum::middleware::from_fn_with_state(secret, check_secret))
        .with_state(raft)
}
