//! Subscriber endpoints: add, list, show, change (rate limit), pause, resume, rotate the
//! secret, remove.

use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::{Deserialize, Deserializer};
use space::{HandlerKind, Span, SubscriberId, SubscriberSpec, SubscriberUpdate};

use crate::api::Api;
use crate::problem::Problem;
use crate::request::{ApiResult, body, json};
use crate::views::{self, Subscriber};

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSubscriber {
    endpoint: Option<String>,
    handler: Option<String>,
    secret: Option<String>,
    max_in_flight: Option<u32>,
    batch: Option<views::Batch>,
    /// Headers sent with every request to it (e.g. `Authorization`); values never shown back.
    headers: Option<std::collections::BTreeMap<String, String>>,
    /// At most this many messages a second (none: no limit).
    rate_limit: Option<views::RateLimit>,
    /// The event types it takes: exact names, or prefixes followed by `*` (none: every
    /// message).
    types: Option<Vec<String>>,
}

/// What `PATCH` changes of a subscriber; fields left out keep their values.
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscriberPatch {
    /// A new rate limit, or `null` for none.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<views::RateLimit>)]
    rate_limit: Option<Option<views::RateLimit>>,
    /// The event types it takes from now on, or `null` for every message.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Vec<String>>)]
    types: Option<Option<Vec<String>>>,
}

/// A field given (even as `null`) is `Some`; one left out stays `None` (the default).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// A secret rotation.
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rotation {
    /// The new secret, `whsec_` and base64.
    secret: Option<String>,
    /// How long the current secret keeps signing beside the new one (default `24h`, at most
    /// `30d`; `0s` switches at once).
    #[schema(value_type = Option<String>, example = "24h")]
    grace: Option<Span>,
}

fn subscriber_id(text: &str) -> ApiResult<SubscriberId> {
    text.parse()
        .map_err(|_| Problem::bad_request(format!("subscriber id {text:?} is not a number")))
}

#[utoipa::path(post, path = "/v1/queues/{queue}/subscribers", operation_id = "add_subscriber", tag = "subscribers", params(("queue" = String, Path, description = "Queue name: 1 to 128 of A-Z a-z 0-9 . _ -")), request_body(content = NewSubscriber, content_type = "application/json"), responses((status = 201, description = "Added", body = views::Subscriber), (status = 200, description = "Already there (same endpoint)", body = views::Subscriber), (status = 400, description = "Malformed input", body = crate::problem::ProblemBody, content_type = "application/problem+json"), (status = 404, description = "No such queue or message", body = crate::problem::ProblemBody, content_type = "application/problem+json"), (status = 422, description = "Not allowed", body = crate::problem::ProblemBody, content_type = "application/problem+json")))]
pub(crate) async fn add(
    State(api): State<Api>,
    Path(queue): Path<String>,
    b: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let s: NewSubscriber = json(&body(b)?)?;
    let endpoint = s
        .endpoint
        .ok_or_else(|| Problem::bad_request("\"endpoint\" is required"))?;
    let handler = match s.handler.as_deref() {
        None => HandlerKind::Webhook,
        Some(h) => HandlerKind::parse(h).ok_or_else(|| {
            Problem::bad_request(format!("unknown handler {h:?}: use webhook or legacy"))
        })?,
    };
    let spec = SubscriberSpec {
        endpoint,
        handler,
        secret: s.secret,
        max_in_flight: s
            .max_in_flight
            .unwrap_or(space::limits::MAX_IN_FLIGHT_DEFAULT),
        batch: s.batch.unwrap_or_default().batching(),
        headers: views::own_headers(s.headers),
        rate_limit: s.rate_limit.map(views::RateLimit::setting),
        types: s.types,
        ..Default::default()
    };
    let (info, created) = api.space.add_subscriber(&queue, spec).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(Subscriber::from(info))).into_response())
}

#[utoipa::path(get, path = "/v1/queues/{queue}/subscribers", operation_id = "list_subscribers", tag = "subscribers", params(("queue" = String, Path, description = "Queue name: 1 to 128 of A-Z a-z 0-9 . _ -")), responses((status = 200, description = "Subscribers (secrets never shown)", body = views::SubscriberList), (status = 400, description = "Malformed input", body = crate::problem::ProblemBody, content_type = "application/problem+json"), (status = 404, description = "No such queue or message", body = crate::problem::ProblemBody, content_type = "application/problem+json")))]
pub(crate) async fn list(State(api): State<Api>, Path(queue): Path<String>) -> ApiResult<Response> {
    let subs: Vec<Subscriber> = api
        .space
        .subscribers(&queue)?
        .into_iter()
        .map(Subscriber::from)
        .collect();
    Ok(Json(views::SubscriberList { subscribers: subs }).into_response())
}

#[utoipa::path(get, path = "/v1/queues/{queue}/subscribers/{id}", operation_id = "get_subscriber", tag = "subscribers", params(("queue" = String, Path, description = "Queue name: 1 to 128 of A-Z a-z 0-9 . _ -"), ("id" = String, Path, description = "Subscriber id")), responses((status = 200, description = "The subscriber, with its state and health", body = views::Subscriber), (status = 400, description = "Malformed input", body = crate::problem::ProblemBody, content_type = "application/problem+json"), (status = 404, description = "No such queue or subscriber", body = crate::problem::ProblemBody, content_type = "application/problem+json")))]
pub(crate) async fn get(
    State(api): State<Api>,
    Path((queue, id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let id = subscriber_id(&id)?;
    let info = api
        .space
        .subscribers(&queue)?
        .into_iter()
        .find(|s| s.id == id)
        .ok_or_else(|| Problem::new(StatusCode::NOT_FOUND, format!("no subscriber {id}")))?;
    Ok(Json(Subscriber::from(info)).into_response())
}

/// Applies `update` and answers with the subscriber as it is now.
async fn update(api: &Api, queue: &str, id: &str, update: SubscriberUpdate) -> ApiResult<Response> {
    let id = subscriber_id(id)?;
    let info = api.space.update_subscriber(queue, id, update).await?;
    Ok(Json(Subscriber::from(info)).into_response())
}

#[utoipa::path(patch, path = "/v1/queues/{queue}/subscribers/{id}", operation_id = "update_subscriber", tag = "subscribers", params(("queue" = String, Path, description = "Queue name: 1 to 128 of A-Z a-z 0-9 . _ -"), ("id" = String, Path, description = "Subscriber id")), request_body(content = SubscriberPatch, content_type = "application/json"), responses((status = 200, description = "Changed (or nothing to change)", body = views::Subscriber), (status = 400, description = "Malformed input", body = crate::problem::ProblemBody, content_type = "application/problem+json"), (status = 404, description = "No such queue or subscriber", body = crate::problem::ProblemBody, content_type = "application/problem+json"), (status = 422, description = "Out of bounds", body = crate::problem::ProblemBody, content_type = "application/problem+json")))]
pub(crate) async fn patch(
    State(api): State<Api>,
    Path((queue, id)): Path<(String, String)>,
    b: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let p: SubscriberPatch = json(&body(b)?)?;
    let mut changes = Vec::new();
    if let Some(r) = p.rate_limit {
        changes.push(SubscriberUpdate::RateLimit(
            r.map(views::RateLimit::setting),
        ));
    }
    if let Some(t) = p.types {
        changes.push(SubscriberUpdate::Types(t));
    }
    // All of them in one change: a field refused changes nothing.
    let info = api
        .space
        .update_subscriber_with(&queue, subscriber_id(&id)?, changes)
        .await?;
    Ok(Json(Subscriber::from(info)).into_response())
}

#[utoipa::path(post, path = "/v1/queues/{queue}/subscribers/{id}/pause", operation_id = "pause_subscriber", tag = "subscribers", params(("queue" = String, Path, description = "Queue name: 1 to 128 of A-Z a-z 0-9 . _ -"), ("id" = String, Path, description = "Subscriber id")), responses((status = 200, description = "Paused: it receives nothing, its messages wait", body = views::Subscriber), (status = 400, description = "Malformed input", body = crate::problem::ProblemBody, content_type = "application/problem+json"), (status = 404, description = "No such queue or subscriber", body = crate::problem::ProblemBody, content_type = "application/problem+json")))]
pub(crate) async fn pause(
    State(api): State<Api>,
    Path((queue, id)): Path<(String, String)>,
) -> ApiResult<Response> {
    update(&api, &queue, &id, SubscriberUpdate::Pause).await
}

#[utoipa::path(post, path = "/v1/queues/{queue}/subscribers/{id}/resume", operation_id = "resume_subscriber", tag = "subscribers", params(("queue" = String, Path, description = "Queue name: 1 to 128 of A-Z a-z 0-9 . _ -"), ("id" = String, Path, description = "Subscriber id")), responses((status = 200, description = "Active again (from paused or disabled): its messages go in order", body = views::Subscriber), (status = 400, description = "Malformed input", body = crate::problem::ProblemBody, content_type = "application/problem+json"), (status = 404, description = "No such queue or subscriber", body = crate::problem::ProblemBody, content_type = "application/problem+json")))]
pub(crate) async fn resume(
    State(api): State<Api>,
    Path((queue, id)): Path<(String, String)>,
) -> ApiResult<Response> {
    update(&api, &queue, &id, SubscriberUpdate::Resume).await
}

#[utoipa::path(post, path = "/v1/queues/{queue}/subscribers/{id}/secret", operation_id = "rotate_secret", tag = "subscribers", params(("queue" = String, Path, description = "Queue name: 1 to 128 of A-Z a-z 0-9 . _ -"), ("id" = String, Path, description = "Subscriber id")), request_body(content = Rotation, content_type = "application/json"), responses((status = 200, description = "Rotated: both secrets sign until the grace period ends", body = views::Subscriber), (status = 400, description = "Malformed input or secret", body = crate::problem::ProblemBody, content_type = "application/problem+json"), (status = 404, description = "No such queue or subscriber", body = crate::problem::ProblemBody, content_type = "application/problem+json"), (status = 422, description = "Grace too long, or the same secret", body = crate::problem::ProblemBody, content_type = "application/problem+json")))]
pub(crate) async fn rotate_secret(
    State(api): State<Api>,
    Path((queue, id)): Path<(String, String)>,
    b: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let r: Rotation = json(&body(b)?)?;
    let secret = r
        .secret
        .ok_or_else(|| Problem::bad_request("\"secret\" is required"))?;
    let grace = r.grace.map_or(space::limits::SECRET_GRACE_DEFAULT, |g| g.0);
    update(
        &api,
        &queue,
        &id,
        SubscriberUpdate::RotateSecret { secret, grace },
    )
    .await
}

#[utoipa::path(delete, path = "/v1/queues/{queue}/subscribers/{id}", operation_id = "remove_subscriber", tag = "subscribers", params(("queue" = String, Path, description = "Queue name: 1 to 128 of A-Z a-z 0-9 . _ -"), ("id" = String, Path, description = "Subscriber id")), responses((status = 204, description = "Removed"), (status = 400, description = "Malformed input", body = crate::problem::ProblemBody, content_type = "application/problem+json"), (status = 404, description = "No such queue or message", body = crate::problem::ProblemBody, content_type = "application/problem+json")))]
pub(crate) async fn remove(
    State(api): State<Api>,
    Path((queue, id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let id = subscriber_id(&id)?;
    api.space.remove_subscriber(&queue, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
