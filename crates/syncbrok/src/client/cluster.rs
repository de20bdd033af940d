//! `syncbrok cluster`: a cluster's status and its membership (`--url` may name any node; a
//! change goes to the leader).

use bytes::Bytes;
use hyper::Method;

use super::{Target, View, call, finish};

#[derive(clap::Subcommand)]
pub enum ClusterCommand {
    /// The nodes, the leader, the term, and how far each node's log is behind the leader's.
    Status,
    /// Add a node as a learner: it receives the log but does not vote, e.g. `add-node 4
    /// http://10.0.0.4:10000` (start it first with `serve --cluster --node-id 4`).
    AddNode {
        /// Its id, unused by any node of the cluster.
        id: u64,
        /// Where it serves its API and its peers, `http://host:port`.
        address: String,
    },
    /// Make a learner a voter (once its lag in `status` is small).
    Promote { id: u64 },
    /// Remove a node, voter or learner, from the cluster.
    RemoveNode { id: u64 },
}

pub async fn cluster(target: &Target, command: ClusterCommand) -> anyhow::Result<()> {
    let answer = match command {
        ClusterCommand::Status => {
            call(target, Method::GET, "/v1/cluster", &[], Bytes::new()).await?
        }
        ClusterCommand::AddNode { id, address } => {
            let body = serde_json::json!({"id": id, "address": address}).to_string();
            let headers = [("content-type", "application/json".to_owned())];
            call(
                target,
                Method::POST,
                "/v1/cluster/nodes",
                &headers,
                Bytes::from(body),
            )
            .await?
        }
        ClusterCommand::Promote { id } => {
            let path = format!("/v1/cluster/nodes/{id}/promote");
            call(target, Method::POST, &path, &[], Bytes::new()).await?
        }
        ClusterCommand::RemoveNode { id } => {
            let path = format!("/v1/cluster/nodes/{id}");
            call(target, Method::DELETE, &path, &[], Bytes::new()).await?
        }
    };
    finish(target, answer, View::Fields)
}
