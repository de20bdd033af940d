//! `serve --cluster`: the broker as one node of a cluster (see `crates/cluster`). Every node
//! serves its peers (`/cluster/raft/…`, behind the shared secret), `GET /v1/cluster` and its
//! metrics; the leader serves the API on its Space; a follower serves reads (`GET`, `HEAD`)
//! from its own Space, which is as recent as the entries it has applied, and answers anything
//! else with a `307` to the leader (a client that follows redirects resends its request there),
//! or a `503` while no leader is known.
//!
//! Data: the replicated log in `DATA/raft`, the broker log in `DATA/broker`.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use space::{Role, Space};
use storage::io::{Backend, FsBackend};
use tower_service::Service;

use crate::limits::{
    CLUSTER_ELECTION_TIMEOUT_DEFAULT_MS, CLUSTER_HEARTBEAT_DEFAULT_MS, CLUSTER_SEGMENT_BYTES,
    CLUSTER_SNAPSHOT_ENTRIES_DEFAULT, METRICS_BYTES_MAX, NEW_NODE_BYTES_MAX,
};

/// The cluster flags of `serve`.
#[derive(clap::Args, Default)]
pub struct ClusterArgs {
    /// Run as a node of a cluster: its id and the nodes come from these flags or the
    /// `cluster:` section of the configuration.
    #[arg(long, env = "SYNCBROK_CLUSTER")]
    pub cluster: bool,
    /// This node's id among --nodes, e.g. `--node-id 2`.
    #[arg(long, env = "SYNCBROK_NODE_ID")]
    pub node_id: Option<u64>,
    /// Every node of the cluster, this one included: `ID=URL` separated by commas, each URL
    /// where that node serves its API and its peers, e.g. `--nodes
    /// 1=http://10.0.0.1:10000,2=http://10.0.0.2:10000,3=http://10.0.0.3:10000`.
    #[arg(long, env = "SYNCBROK_NODES")]
    pub nodes: Option<String>,
    /// The secret every node sends its peers and requires of them.
    #[arg(long, env = "SYNCBROK_CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: Option<String>,
}

/// The cluster settings in force.
pub struct ClusterSettings {
    pub config: cluster::ClusterConfig,
}

fn parse_nodes(text: &str) -> anyhow::Result<BTreeMap<u64, String>> {
    let mut nodes = BTreeMap::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, url) = part
            .split_once('=')
            .with_context(|| format!("--nodes: {part:?} is not ID=URL"))?;
        let id: u64 = id
            .trim()
            .parse()
            .with_context(|| format!("--nodes: {id:?} is not a node id"))?;
        nodes.insert(id, url.trim().to_owned());
    }
    Ok(nodes)
}

fn check_url(id: u64, url: &str) -> anyhow::Result<()> {
    let uri: axum::http::Uri = url
        .parse()
        .with_context(|| format!("node {id}: {url:?} is not a URL"))?;
    if uri.scheme_str() != Some("http") || uri.authority().is_none() {
        anyhow::bail!(
            "node {id}: {url:?} must be http://host:port (the peer transport is plain HTTP; put it on a private network)"
        );
    }
    Ok(())
}

/// The cluster settings, when `--cluster` (or `SYNCBROK_CLUSTER`) asks for cluster mode.
pub fn resolve(
    args: &ClusterArgs,
    file: Option<&frontend::config::ClusterSection>,
) -> anyhow::Result<Option<ClusterSettings>> {
    if !args.cluster {
        return Ok(None);
    }
    let node_id = args
        .node_id
        .or(file.and_then(|f| f.node_id))
        .context("--cluster needs a node id (--node-id, or cluster.node_id)")?;
    let nodes = match &args.nodes {
        Some(text) => parse_nodes(text)?,
        None => file.map(|f| f.nodes.clone()).unwrap_or_default(),
    };
    if !nodes.contains_key(&node_id) {
        anyhow::bail!("node {node_id} is not among the nodes (--nodes, or cluster.nodes)");
    }
    for (id, url) in &nodes {
        check_url(*id, url)?;
    }
    let secret = args
        .cluster_secret
        .clone()
        .or(file.and_then(|f| f.secret.clone()));
    if secret.is_none() && nodes.len() > 1 {
        tracing::warn!("no cluster secret: anyone who reaches this node's port can act as a peer");
    }
    let heartbeat = file
        .and_then(|f| f.heartbeat)
        .map_or(Duration::from_millis(CLUSTER_HEARTBEAT_DEFAULT_MS), |s| s.0);
    let election = file.and_then(|f| f.election_timeout).map_or(
        Duration::from_millis(CLUSTER_ELECTION_TIMEOUT_DEFAULT_MS),
        |s| s.0,
    );
    let snapshot_entries = file
        .and_then(|f| f.snapshot_entries)
        .unwrap_or(CLUSTER_SNAPSHOT_ENTRIES_DEFAULT);
    if snapshot_entries == 0 {
        anyhow::bail!("cluster.snapshot_entries must be more than 0");
    }
    if heartbeat.is_zero() || election <= heartbeat {
        anyhow::bail!("cluster.election_timeout must be longer than cluster.heartbeat");
    }
    Ok(Some(ClusterSettings {
        config: cluster::ClusterConfig {
            node_id,
            nodes,
            secret: secret.map(Arc::from),
            heartbeat,
            election_timeout: (election, election * 2),
            segment_bytes: CLUSTER_SEGMENT_BYTES,
            snapshot_entries,
            entries_kept: (snapshot_entries / 4).max(1),
        },
    }))
}

/// Applies the configuration file's queues on a Space that has just opened.
pub type Bootstrap =
    std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<()>> + Send>>;

/// The API of the moment, and whether it is the leader's (else a follower's, for reads).
type Live = Arc<RwLock<Option<(Router, bool)>>>;

/// Starts the node, and serves through `routes` until the server stops.
pub async fn run(
    settings: ClusterSettings,
    data: &std::path::Path,
    open: impl Fn(Arc<dyn Backend>, Role) -> Result<Space, space::OpenError> + Send + Sync + 'static,
    api: impl Fn(Space) -> Router + Send + Sync + 'static,
    bootstrap: impl Fn(Space) -> Bootstrap + Send + Sync + 'static,
    tokens: frontend::auth::Tokens,
) -> anyhow::Result<(Arc<cluster::Node>, Router)> {
    let open_dir = |name: &str| -> anyhow::Result<Arc<dyn Backend>> {
        let dir = data.join(name);
        Ok(Arc::new(FsBackend::open(&dir).with_context(|| {
            format!("cannot open the data directory {}", dir.display())
        })?))
    };
    let node = Arc::new(
        cluster::Node::start(
            settings.config,
            open_dir("raft")?,
            open_dir("broker")?,
            Arc::new(open),
        )
        .await?,
    );
    let live: Live = Arc::new(RwLock::new(None));
    tokio::spawn(follow_live(node.clone(), live.clone(), api, bootstrap));
    let forwarding = Forwarding {
        node: node.clone(),
        live,
    };
    let status = Router::new()
        .route("/v1/cluster", get(status))
        .route("/metrics", get(metrics))
        .route("/v1/cluster/nodes", post(add_node))
        .route("/v1/cluster/nodes/{id}/promote", post(promote_node))
        .route("/v1/cluster/nodes/{id}", delete(remove_node))
        .layer(axum::middleware::from_fn_with_state(
            tokens,
            frontend::auth::check,
        ))
        .layer(axum::middleware::from_fn(frontend::cross_site::refuse))
        .with_state(forwarding.clone());
    let router = Router::new()
        .fallback(forward)
        .with_state(forwarding)
        .route("/healthz", get(|| async { "ok" }))
        .merge(status)
        .merge(cluster::peer_routes(node.raft().clone(), node.secret()));
    Ok((node, router))
}

/// Puts the leader's API in place when this node starts leading, and takes it away when it
/// stops.
async fn follow_live(
    node: Arc<cluster::Node>,
    live: Live,
    api: impl Fn(Space) -> Router,
    bootstrap: impl Fn(Space) -> Bootstrap,
) {
    let mut changes = node.serving();
    loop {
        let serving = changes.borrow_and_update().clone();
        let leading = serving.as_ref().is_some_and(|s| s.leading);
        let router = serving.as_ref().map(|s| (api(s.space.clone()), s.leading));
        *live.write().unwrap_or_else(|e| e.into_inner()) = router;
        if let Some(s) = serving
            && leading
            && let Err(e) = bootstrap(s.space).await
        {
            tracing::error!(error = %e, "cannot apply the configuration file");
        }
        if changes.changed().await.is_err() {
            return;
        }
    }
}

#[derive(Clone)]
struct Forwarding {
    node: Arc<cluster::Node>,
    live: Live,
}

async fn status(State(f): State<Forwarding>) -> Response {
    axum::Json(f.node.status()).into_response()
}

/// The node's cluster metrics, after its Space's.
async fn metrics(State(f): State<Forwarding>, request: Request) -> Response {
    let mut text = String::new();
    let api = f.live.read().unwrap_or_else(|e| e.into_inner()).clone();
    if let Some((mut api, _)) = api {
        let Ok(space) = api.call(request).await;
        if space.status() != StatusCode::OK {
            return space;
        }
        match axum::body::to_bytes(space.into_body(), METRICS_BYTES_MAX).await {
            Ok(bytes) => text = String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        }
    }
    text.push_str(&f.node.status().prometheus());
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response()
}

/// A node to add: `POST /v1/cluster/nodes`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NewNode {
    id: u64,
    /// Where it serves its API and its peers, `http://host:port`.
    address: String,
}

async fn add_node(State(f): State<Forwarding>, request: Request) -> Response {
    let path = path_of(&request);
    let body = match axum::body::to_bytes(request.into_body(), NEW_NODE_BYTES_MAX).await {
        Ok(b) => b,
        Err(e) => return problem(StatusCode::PAYLOAD_TOO_LARGE, &e.to_string()),
    };
    let new: NewNode = match serde_json::from_slice(&body) {
        Ok(n) => n,
        Err(e) => return problem(StatusCode::BAD_REQUEST, &format!("invalid node: {e}")),
    };
    if let Err(e) = check_url(new.id, &new.address) {
        return problem(StatusCode::BAD_REQUEST, &e.to_string());
    }
    let done = f.node.add_learner(new.id, &new.address).await;
    membership_answer(&f, done, &path, StatusCode::CREATED)
}

async fn promote_node(
    State(f): State<Forwarding>,
    axum::extract::Path(id): axum::extract::Path<u64>,
    request: Request,
) -> Response {
    let done = f.node.promote(id).await;
    membership_answer(&f, done, &path_of(&request), StatusCode::OK)
}

async fn remove_node(
    State(f): State<Forwarding>,
    axum::extract::Path(id): axum::extract::Path<u64>,
    request: Request,
) -> Response {
    let done = f.node.remove(id).await;
    membership_answer(&f, done, &path_of(&request), StatusCode::OK)
}

fn path_of(request: &Request) -> String {
    request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned()
}

fn problem(status: StatusCode, detail: &str) -> Response {
    frontend::problem::Problem::new(status, detail).into_response()
}

/// The status after a membership change, or why it did not happen (a follower sends the
/// client to the leader).
fn membership_answer(
    f: &Forwarding,
    done: Result<(), cluster::MembershipError>,
    path: &str,
    ok: StatusCode,
) -> Response {
    use cluster::MembershipError as E;
    match done {
        Ok(()) => (ok, axum::Json(f.node.status())).into_response(),
        Err(E::NotLeader { leader: Some(l) }) => redirect(&l, path),
        Err(E::NotLeader { leader: None }) => no_leader(),
        Err(E::Refused(why)) => problem(StatusCode::CONFLICT, &why),
        Err(E::Failed(why)) => problem(StatusCode::SERVICE_UNAVAILABLE, &why),
    }
}

fn no_leader() -> Response {
    let mut r = problem(
        StatusCode::SERVICE_UNAVAILABLE,
        "no leader yet: the cluster is electing one",
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

/// A `307` to the same path on the leader.
fn redirect(leader: &str, path: &str) -> Response {
    let target = format!("{}{path}", leader.trim_end_matches('/'));
    match HeaderValue::from_str(&target) {
        Ok(location) => (
            StatusCode::TEMPORARY_REDIRECT,
            [(header::LOCATION, location)],
            format!("the leader is at {leader}\n"),
        )
            .into_response(),
        Err(_) => no_leader(),
    }
}

/// The leader's API here; on a follower, reads from its own Space and a redirect to the
/// leader for the rest.
async fn forward(State(f): State<Forwarding>, request: Request) -> Response {
    let api = f.live.read().unwrap_or_else(|e| e.into_inner()).clone();
    let reading = matches!(*request.method(), Method::GET | Method::HEAD);
    if let Some((mut api, leading)) = api
        && (leading || reading)
    {
        let Ok(response) = api.call(request).await;
        return response;
    }
    match f.node.leader_address() {
        Some(leader) => redirect(&leader, &path_of(&request)),
        None => no_leader(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(node_id: Option<u64>, nodes: &str) -> ClusterArgs {
        ClusterArgs {
            cluster: true,
            node_id,
            nodes: Some(nodes.to_owned()),
            cluster_secret: Some("s".into()),
        }
    }

    #[test]
    fn nodes_are_read_as_id_equals_url() {
        let nodes = parse_nodes(" 1=http://a:1 , 2=http://b:2,").unwrap();
        assert_eq!(nodes.len(), 2);
        assert_eq!(nodes[&2], "http://b:2");
        assert!(parse_nodes("1:http://a:1").is_err());
        assert!(parse_nodes("x=http://a:1").is_err());
    }

    #[test]
    fn a_cluster_is_refused_what_it_cannot_run() {
        let off = ClusterArgs::default();
        assert!(resolve(&off, None).unwrap().is_none());
        let err = |a: ClusterArgs| {
            resolve(&a, None)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert!(err(args(None, "1=http://a:1")).contains("node id"));
        assert!(err(args(Some(3), "1=http://a:1,2=http://b:2")).contains("not among"));
        assert!(err(args(Some(1), "1=https://a:1")).contains("http://host:port"));
        assert!(err(args(Some(1), "1=http://a:1/x y")).contains("not a URL"));
        let ok = resolve(
            &args(Some(2), "1=http://a:1,2=http://b:2,3=http://c:3"),
            None,
        )
        .unwrap()
        .unwrap();
        assert_eq!(ok.config.node_id, 2);
        assert_eq!(ok.config.nodes.len(), 3);
        assert_eq!(ok.config.entries_kept, CLUSTER_SNAPSHOT_ENTRIES_DEFAULT / 4);
    }

    #[test]
    fn the_file_supplies_what_the_flags_leave_out() {
        let file: frontend::config::FileConfig = frontend::config::parse(
            std::path::Path::new("c.yml"),
            "cluster:\n  node_id: 3\n  nodes: {1: 'http://a:1', 3: 'http://c:3'}\n  secret: x\n  snapshot_entries: 0\n",
        )
        .unwrap();
        let flags = ClusterArgs {
            cluster: true,
            ..ClusterArgs::default()
        };
        let e = resolve(&flags, file.cluster.as_ref())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("snapshot_entries"), "{e}");
        let file: frontend::config::FileConfig = frontend::config::parse(
            std::path::Path::new("c.yml"),
            "cluster:\n  node_id: 3\n  nodes: {1: 'http://a:1', 3: 'http://c:3'}\n",
        )
        .unwrap();
        let s = resolve(&flags, file.cluster.as_ref()).unwrap().unwrap();
        assert_eq!(s.config.node_id, 3);
        assert!(s.config.secret.is_none());
    }
}
