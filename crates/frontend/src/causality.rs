//! Causality endpoints: why a message waits (`…/explain`), the graph around it (`…/lineage`),
//! and replays of delivered messages (`…/replay`), with their JSON shapes.

use std::collections::HashMap;

use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use space::time::rfc3339;
use space::{Explanation, LineageGraph, PendingDelivery};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::api::Api;
use crate::problem::Problem;
use crate::request::{ApiResult, body, json, message_id};
use crate::views::state_name;

/// A delivery still owed.
#[derive(Serialize, ToSchema)]
pub struct Pending {
    pub subscriber: u64,
    pub endpoint: String,
    /// in_flight, retry_scheduled, subscriber_saturated, subscriber_paused or queued.
    #[schema(value_type = String)]
    pub state: &'static str,
    pub attempts: u32,
    pub last_error: Option<String>,
    /// RFC 3339, when a retry is scheduled.
    pub next_attempt_at: Option<String>,
}

impl From<PendingDelivery> for Pending {
    fn from(p: PendingDelivery) -> Self {
        Pending {
            subscriber: p.subscriber,
            endpoint: p.endpoint,
            state: p.verdict.name(),
            attempts: p.attempts,
            last_error: p.last_error,
            next_attempt_at: p.next_attempt_at_ms.map(rfc3339),
        }
    }
}

/// An ancestor holding the message back.
#[derive(Serialize, ToSchema)]
pub struct Blocker {
    pub id: Uuid,
    pub queue: String,
    /// 1 for the parent, 2 for the grandparent, …
    pub depth: u32,
    /// Its state, or `removed` when the queue no longer holds it.
    #[schema(value_type = String)]
    pub state: &'static str,
    /// Its own verdict (why it is not delivered), or `removed`.
    #[schema(value_type = String)]
    pub reason: &'static str,
    pub pending: Vec<Pending>,
}

/// A subscriber's health since the broker started.
#[derive(Serialize, ToSchema)]
pub struct Health {
    pub id: u64,
    pub endpoint: String,
    /// active, paused or disabled.
    #[schema(value_type = String)]
    pub state: &'static str,
    pub in_flight: u32,
    pub max_in_flight: u32,
    pub consecutive_failures: u32,
    pub last_success_at: Option<String>,
    pub last_error: Option<String>,
}

/// Why a message is not delivered (yet).
#[derive(Serialize, ToSchema)]
pub struct Explain {
    pub id: Uuid,
    #[schema(value_type = String)]
    pub state: &'static str,
    /// delivered, in_flight, retry_scheduled, subscriber_saturated, subscriber_paused, queued,
    /// waiting_for_parent, parent_dead or dead.
    #[schema(value_type = String)]
    pub verdict: &'static str,
    /// Its own deliveries still owed.
    pub pending: Vec<Pending>,
    /// Ancestors holding it back, nearest first.
    pub blockers: Vec<Blocker>,
    /// The farthest of them: the one to look at.
    pub root_blocker: Option<Uuid>,
    pub subscribers: Vec<Health>,
    /// RFC 3339: the next scheduled change for it or its root blocker.
    pub next_change_at: Option<String>,
    /// The walk up its ancestors was cut at its bound (64).
    pub truncated: bool,
}

impl Explain {
    pub(crate) fn of(queue: &str, e: Explanation) -> Explain {
        Explain {
            id: e.id,
            state: state_name(e.state),
            verdict: e.verdict.name(),
            pending: e.pending.into_iter().map(Pending::from).collect(),
            blockers: e
                .blockers
                .into_iter()
                .map(|b| Blocker {
                    id: b.id,
                    queue: b.queue.unwrap_or_else(|| queue.to_owned()),
                    depth: b.depth,
                    state: b.state.map_or("removed", state_name),
                    reason: b.verdict.map_or("removed", |v| v.name()),
                    pending: b.pending.into_iter().map(Pending::from).collect(),
                })
                .collect(),
            root_blocker: e.root_blocker,
            subscribers: e
                .subscribers
                .into_iter()
                .map(|s| Health {
                    id: s.id,
                    endpoint: s.endpoint,
                    state: s.state.name(),
                    in_flight: s.in_flight,
                    max_in_flight: s.max_in_flight,
                    consecutive_failures: s.consecutive_failures,
                    last_success_at: s.last_success_at_ms.map(rfc3339),
                    last_error: s.last_error,
                })
                .collect(),
            next_change_at: e.next_change_at_ms.map(rfc3339),
            truncated: e.truncated,
        }
    }
}

/// A message of a lineage.
#[derive(Serialize, ToSchema)]
pub struct Node {
    pub id: Uuid,
    pub queue: String,
    /// Its state, or `removed` when the queue no longer holds it.
    #[schema(value_type = String)]
    pub state: &'static str,
}

/// Parent → child.
#[derive(Serialize, ToSchema)]
pub struct Edge {
    pub from: Uuid,
    pub to: Uuid,
}

/// Ancestors and descendants of a message.
#[derive(Serialize, ToSchema)]
pub struct Lineage {
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
    /// Cut at `up`, `down` or `limit`.
    pub truncated: bool,
}

impl Lineage {
    pub(crate) fn of(queue: &str, g: LineageGraph) -> Lineage {
        Lineage {
            nodes: g
                .nodes
                .into_iter()
                .map(|n| Node {
                    id: n.id,
                    queue: n.queue.unwrap_or_else(|| queue.to_owned()),
                    state: n.state.map_or("removed", state_name),
                })
                .collect(),
            edges: g
                .edges
                .into_iter()
                .map(|(from, to)| Edge { from, to })
                .collect(),
            truncated: g.truncated,
        }
    }
}

#[utoipa::path(get, path = "/v1/queues/{queue}/messages/{id}/explain", tag = "messages", params(("queue" = String, Path, description = "Queue name: 1 to 128 of A-Z a-z 0-9 . _ -"), ("id" = String, Path, description = "Message id")), responses((status = 200, description = "Why the message is where it is", body = Explain), (status = 400, description = "Malformed input", body = crate::problem::ProblemBody, content_type = "application/problem+json"), (status = 404, description = "No such queue or message", body = crate::problem::ProblemBody, content_type = "application/problem+json")))]
pub(crate) async fn explain(
    State(api): State<Api>,
    Path((queue, id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let id = message_id(&id, "message")?;
    let e = api.space.explain(&queue, id)?;
    Ok(Json(Explain::of(&queue, e)).into_response())
}

#[utoipa::path(get, path = "/v1/queues/{queue}/messages/{id}/lineage", tag = "messages", params(("queue" = String, Path, description = "Queue name: 1 to 128 of A-Z a-z 0-9 . _ -"), ("id" = String, Path, description = "Message id"), ("up" = Option<u32>, Query, description = "Levels of ancestors, 0 to 1000, default 32"), ("down" = Option<u32>, Query, description = "Levels of descendants, 0 to 1000, default 32"), ("limit" = Option<u32>, Query, description = "Messages in all, 1 to 5000, default 500")), responses((status = 200, description = "Ancestors and descendants", body = Lineage), (status = 400, description = "Malformed input", body = crate::problem::ProblemBody, content_type = "application/problem+json"), (status = 404, description = "No such queue or message", body = crate::problem::ProblemBody, content_type = "application/problem+json")))]
pub(crate) async fn lineage(
    State(api): State<Api>,
    Path((queue, id)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    use space::limits::{
        LINEAGE_LEVELS_DEFAULT, LINEAGE_LEVELS_MAX, LINEAGE_NODES_DEFAULT, LINEAGE_NODES_MAX,
    };
    let id = message_id(&id, "message")?;
    let levels = LINEAGE_LEVELS_MAX as usize;
    let up = bounded(&q, "up", 0, levels, LINEAGE_LEVELS_DEFAULT as usize)? as u32;
    let down = bounded(&q, "down", 0, levels, LINEAGE_LEVELS_DEFAULT as usize)? as u32;
    let limit = bounded(&q, "limit", 1, LINEAGE_NODES_MAX, LINEAGE_NODES_DEFAULT)?;
    let g = api.space.lineage(&queue, id, up, down, limit)?;
    Ok(Json(Lineage::of(&queue, g)).into_response())
}

/// What a replay takes (optional body).
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReplayRequest {
    /// `message` (default): the message alone; `subtree`: it and every delivered message below
    /// it, parents first.
    #[schema(value_type = Option<String>)]
    scope: Option<String>,
    /// Publish copies with new ids (each naming the message it copies as `replay_of`) instead
    /// of sending the same messages again.
    as_new: Option<bool>,
    /// Count what would be replayed, change nothing (answered 200).
    dry_run: Option<bool>,
}

/// What a replay did.
#[derive(Serialize, ToSchema)]
pub struct Replay {
    /// Messages sent again, or copied.
    pub replayed: u64,
    /// Parents the replayed messages name that retention already removed (not replayed).
    pub missing: Vec<Uuid>,
    /// With `as_new`: the copies' ids, in the order of the messages they copy.
    pub copies: Vec<Uuid>,
}

#[utoipa::path(post, path = "/v1/queues/{queue}/messages/{id}/replay", tag = "messages", params(("queue" = String, Path, description = "Queue name: 1 to 128 of A-Z a-z 0-9 . _ -"), ("id" = String, Path, description = "Message id")), request_body(content = Option<ReplayRequest>, content_type = "application/json"), responses((status = 202, description = "Sent again, or copied", body = Replay), (status = 200, description = "Dry run: what would be replayed", body = Replay), (status = 400, description = "Malformed input", body = crate::problem::ProblemBody, content_type = "application/problem+json"), (status = 404, description = "No such queue or message", body = crate::problem::ProblemBody, content_type = "application/problem+json"), (status = 409, description = "Nothing delivered in scope", body = crate::problem::ProblemBody, content_type = "application/problem+json"), (status = 413, description = "Too many copies for one batch", body = crate::problem::ProblemBody, content_type = "application/problem+json")))]
pub(crate) async fn replay(
    State(api): State<Api>,
    Path((queue, id)): Path<(String, String)>,
    b: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let id = message_id(&id, "message")?;
    let r: ReplayRequest = json(&body(b)?)?;
    let options = space::ReplayOptions {
        scope: crate::request::scope(r.scope.as_deref())?,
        as_new: r.as_new.unwrap_or(false),
        dry_run: r.dry_run.unwrap_or(false),
    };
    let done = api.space.replay(&queue, id, options).await?;
    let status = if options.dry_run {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((
        status,
        Json(Replay {
            replayed: done.replayed,
            missing: done.missing,
            copies: done.copies,
        }),
    )
        .into_response())
}

/// The query parameter `name`: a whole number in `min..=max`, or `default` when absent.
fn bounded(
    q: &HashMap<String, String>,
    name: &str,
    min: usize,
    max: usize,
    default: usize,
) -> ApiResult<usize> {
    let Some(text) = q.get(name) else {
        return Ok(default);
    };
    text.parse::<usize>()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| {
            Problem::bad_request(format!(
                "{name} {text:?} is not a number from {min} to {max}"
            ))
        })
}
