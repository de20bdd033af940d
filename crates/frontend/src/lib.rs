//! syncbrok's Frontends. So far: the HTTP API v1 (docs/api.md, "HTTP API"), JSON in and out except message
//! bodies, errors as `application/problem+json`; and the original broker's API ([`legacy`]).
//!
//! The API is a thin layer: it parses and bounds input, calls the [`space::Space`], and shapes
//! the answer ([`views`]). Status codes for Space errors are decided in [`problem`] only.

mod api;
pub mod auth;
mod batch;
pub mod causality;
pub mod config;
pub mod cross_site;
pub mod deadline;
mod events;
#[doc(hidden)]
pub mod fuzzing;
pub mod legacy;
pub mod limits;
pub mod metrics;
pub mod openapi;
pub mod problem;
mod request;
mod subscribers;
mod ui;
pub mod views;

use std::collections::HashMap;

use axum::Json;
use axum::Router;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use bytes::Bytes;
use serde::Deserialize;
use space::{MessageId, NewMessage, SettingsPatch, Space};

use crate::api::Api;
use crate::problem::Problem;
use crate::request::{
    ApiResult, after, body, due_time, header_text, json, message_id, page_limit, parent_list, scope,
};
use crate::views::{DeadLetterView, Message, Published, Queue};

/// How the API is served.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Largest message body accepted (`limits.max_body`).
    pub max_body: usize,
    /// `auth.tokens`; empty: no authentication.
    pub tokens: Vec<auth::Token>,
    /// How long a request's body may take to arrive, from its headers (`server.body_timeout`).
    pub body_timeout: std::time::Duration,
    /// Served over TLS: the dashboard's session cookie is `Secure`.
    pub https: bool,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            max_body: limits::MAX_BODY_DEFAULT,
            tokens: Vec::new(),
            body_timeout: limits::BODY_TIMEOUT_DEFAULT,
            https: false,
        }
    }
}

/// The API's routes over a Space that has finished recovering.
pub fn router(space: Space, config: &ApiConfig) -> Router {
    let max_body = config.max_body.min(limits::MAX_BODY_CEILING);
    let body_timeout = config.body_timeout;
    let api = Api {
        space,
        max_body,
        watchers: std::sync::Arc::new(tokio::sync::Semaphore::new(limits::WATCHERS_MAX)),
    };
    let router = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(|| async { Json(openapi::document()) }))
        .route("/v1/queues", get(list_queues))
        .route(
            "/v1/queues/{queue}",
            put(put_queue).get(get_queue).delete(delete_queue),
        )
        .route(
            "/v1/queues/{queue}/subscribers",
            post(subscribers::add).get(subscribers::list),
        )
        .route(
            "/v1/queues/{queue}/subscribers/{id}",
            get(subscribers::get)
                .patch(subscribers::patch)
                .delete(subscribers::remove),
        )
        .route(
            "/v1/queues/{queue}/subscribers/{id}/pause",
            post(subscribers::pause),
        )
        .route(
            "/v1/queues/{queue}/subscribers/{id}/resume",
            post(subscribers::resume),
        )
        .route(
            "/v1/queues/{queue}/subscribers/{id}/secret",
            post(subscribers::rotate_secret),
        )
        .route(
            "/v1/queues/{queue}/messages",
            post(publish)
                .get(list_messages)
                .layer(DefaultBodyLimit::max(max_body)),
        )
        .route(
            "/v1/queues/{queue}/messages/batch",
            post(publish_batch).layer(DefaultBodyLimit::max(limits::BATCH_JSON_BYTES_MAX)),
        )
        .route(
            "/v1/queues/{queue}/messages/{id}",
            get(get_message).delete(discard),
        )
        .route("/v1/queues/{queue}/messages/{id}/body", get(get_body))
        .route("/v1/queues/{queue}/messages/{id}/redrive", post(redrive))
        .route(
            "/v1/queues/{queue}/messages/{id}/explain",
            get(causality::explain),
        )
        .route(
            "/v1/queues/{queue}/messages/{id}/lineage",
            get(causality::lineage),
        )
        .route(
            "/v1/queues/{queue}/messages/{id}/replay",
            post(causality::replay),
        )
        .route("/v1/queues/{queue}/events", get(events::events))
        .route("/v1/queues/{queue}/dead-letters", get(dead_letters))
        .route("/v1/queues/{queue}/dead-letters/redrive", post(redrive_all))
        .fallback(|| async { Problem::new(StatusCode::NOT_FOUND, "no such resource") })
        .layer(DefaultBodyLimit::max(limits::JSON_BODY_MAX))
        .with_state(api.clone())
        .merge(legacy::router(api.space.clone()).layer(DefaultBodyLimit::max(max_body)))
        .merge(ui::router(
            api.space,
            &config.tokens,
            max_body,
            config.https,
        ));
    // Without tokens every request is allowed: no layer to pass through at all.
    let router = if config.tokens.is_empty() {
        router
    } else {
        router.layer(axum::middleware::from_fn_with_state(
            auth::Tokens(std::sync::Arc::new(config.tokens.clone())),
            auth::check,
        ))
    };
    router
        .layer(axum::middleware::from_fn(cross_site::refuse))
        .layer(axum::middleware::map_request(
            move |request: axum::extract::Request| async move {
                deadline::with_deadline(request, body_timeout)
            },
        ))
}

/// The OpenAPI 3.1 document of the API v1 as generated from the handlers and types (served
/// refined: [`openapi::document`]).
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "syncbrok",
        description = "A durable HTTP-push message broker: the HTTP API v1."
    ),
    paths(
        list_queues,
        put_queue,
        get_queue,
        delete_queue,
        subscribers::add,
        subscribers::list,
        subscribers::get,
        subscribers::patch,
        subscribers::remove,
        subscribers::pause,
        subscribers::resume,
        subscribers::rotate_secret,
        publish,
        publish_batch,
        list_messages,
        get_message,
        get_body,
        causality::explain,
        causality::lineage,
        causality::replay,
        events::events,
        discard,
        dead_letters,
        redrive,
        redrive_all,
        metrics
    ),
    components(schemas(problem::ProblemBody))
)]
struct ApiDoc;

/// The OpenAPI document served at `/openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    <ApiDoc as utoipa::OpenApi>::openapi()
}

/// Ready unless the log refuses writes: then nothing can be published or acknowledged until
/// the broker is restarted, and a load balancer should send clients elsewhere.
async fn ready(State(api): State<Api>) -> Response {
    match api.space.refusing_writes() {
        None => "ready".into_response(),
        Some(why) => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the log refuses writes: {why}"),
        )
        .into_response(),
    }
}

/// What the API answers while the Space recovers: alive, not ready, every other call 503 with
/// `Retry-After`. Served from the moment the broker listens until recovery is done.
pub fn recovering_router() -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .fallback(|| async {
            let mut p = Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the broker is recovering its log; retry shortly",
            );
            p.retry_after_s = Some(limits::RETRY_AFTER_RECOVERING_S);
            p
        })
}

#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
async fn metrics(State(api): State<Api>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics::render(&api.space),
    )
        .into_response()
}

#[utoipa::path(get, path = "/v1/queues", tag = "queues", responses((status = 200, description = "Queues with their counts", body = views::QueueList)))]
async fn list_queues(State(api): State<Api>) -> ApiResult<Response> {
    let mut queues = Vec::new();
    for name in api.space.queue_names() {
        if let Ok(q) = api.space.queue_info(&name) {
            queues.push(Queue::from(q));
        }
    }
    Ok(Json(views::QueueList { queues }).into_response())
}

#[utoipa::path(put, path = "/v1/queues/{queue}", tag = "queues", params(("queue" = String, Path, description = "Queue name: 1 to 128 of A-Z a-z 0-9 . _ -")), request_body(content = Object, description = "Settings to set; omitted ones keep their values", content_type = "application/json"), responses((status = 201, description = "Created", body = views::Queue), (status = 200, description = "Updated", body = views::Queue), (status = 400, description = "Malformed input", body = problem::ProblemBody, content_type = "application/problem+json"), (status = 404, description = "No such queue or message", body = problem::ProblemBody, content_type = "application/problem+json"), (status = 422, description = "Invalid settings", body = problem::ProblemBody, content_type = "application/problem+json")))]
async fn put_queue(
    State(api): State<Api>,
    Path(queue): Path<String>,
    b: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let patch: SettingsPatch = json(&body(b)?)?;
    let (info, created) = api.space.put_queue(&queue, &patch).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(Queue::from(info))).into_response())
}

#[utoipa::path(get, path = "/v1/queues/{queue}", tag = "queues", params(("queue" = String, Path, description = "Queue name: 1 to 128 of A-Z a-z 0-9 . _ -")), responses((status = 200, description = "The queue", body = views::Queue), (status = 400, description = "Malformed input", body = problem::ProblemBody, content_type = "application/problem+json"), (status = 404, description = "No such queue or message", body = problem::ProblemBody, content_type = "application/problem+json")))]
async fn get_queue(State(api): State<Api>, Path(queue): Path<String>) -> ApiResult<Response> {
    Ok(Json(Queue::from(api.space.queue_info(&queue)?)).into_response())
}

#[utoipa::path(delete, path = "/v1/queues/{queue}", tag = "queues", params(("queue" = String, Path, description = "Queue name: 1 to 128 of A-Z a-z 0-9 . _ -")), responses((status = 204, description = "Deleted"), (status = 400, description = "Malformed input", body = problem::ProblemBody, content_type = "application/problem+json"), (status = 404, description = "No such queue or message", body = problem::ProblemBody, content_type = "application/problem+json")))]
async fn delete_queue(State(api): State<Api>, Path(queue): Path<String>) -> ApiResult<StatusCode> {
    api.space.delete_queue(&queue).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/queues/{queue}/messages", tag = "messages", params(("queue" = String, Path, description = "Queue name: 1 to 128 of A-Z a-z 0-9 . _ -"), ("syncbrok-parent" = Option<String>, Header, description = "Parent message id, or a comma-separated list of up to 16 (a join: the message waits until every one is delivered); a parent may be in another queue of the Space"), ("idempotency-key" = Option<String>, Header, description = "Idempotency key"), ("syncbrok-type" = Option<String>, Header, description = "Event type (sent as ce-type; subscribers' types filters match it)"), ("syncbrok-delay" = Option<String>, Header, description = "Deliver this long from now, e.g. 30s (at most 30d)"), ("syncbrok-deliver-at" = Option<String>, Header, description = "Deliver at this RFC 3339 time (at most 30 days ahead)"), ("traceparent" = Option<String>, Header, description = "W3C trace context, kept with the message and sent with every attempt"), ("tracestate" = Option<String>, Header, description = "W3C trace state (with traceparent), at most 512 bytes")), request_body(content = Vec<u8>, description = "The raw body", content_type = "application/octet-stream"), responses((status = 201, description = "Accepted, durable", body = views::Published), (status = 200, description = "Repeated idempotency key", body = views::Published), (status = 400, description = "Malformed input", body = problem::ProblemBody, content_type = "application/problem+json"), (status = 404, description = "No such queue or message", body = problem::ProblemBody, content_type = "application/problem+json"), (status = 409, description = "Idempotency key reused with another body", body = problem::ProblemBody, content_type = "application/problem+json"), (status = 413, description = "Body too large", body = problem::ProblemBody, content_type = "application/problem+json"), (status = 422, description = "Unknown parent", body = problem::ProblemBody, content_type = "application/problem+json"), (status = 429, description = "Queue limit reached", body = problem::ProblemBody, content_type = "application/problem+json")))]
async fn publish(
    State(api): State<Api>,
    Path(queue): Path<String>,
    headers: HeaderMap,
    b: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let body = body(b)?;
    let parents = match header_text(&headers, "syncbrok-parent")? {
        Some(list) => parent_list(list)?,
        None => Vec::new(),
    };
    let content_type = header_text(&headers, header::CONTENT_TYPE.as_str())?.map(str::to_owned);
    let idempotency_key = header_text(&headers, "idempotency-key")?.map(str::to_owned);
    let event_type = header_text(&headers, "syncbrok-type")?.map(str::to_owned);
    let traceparent = header_text(&headers, "traceparent")?.map(str::to_owned);
    let tracestate = header_text(&headers, "tracestate")?.map(str::to_owned);
    let deliver_at = due_time(
        header_text(&headers, "syncbrok-delay")?,
        header_text(&headers, "syncbrok-deliver-at")?,
    )?;
    let m = api
        .space
        .publish(
            &queue,
            NewMessage {
                body,
                content_type,
                parents,
                idempotency_key,
                event_type,
                deliver_at,
                replay_of: None,
                traceparent,
                tracestate,
            },
        )
        .await?;
    let status = if m.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(Published {
            id: m.id,
            queue,
            parent: m.parents.first(),
            parents: m.parents.as_slice().to_vec(),
        }),
    )
        .into_response())
}

#[utoipa::path(post, path = "/v1/queues/{queue}/messages/batch", tag = "messages", params(("queue" = String, Path, description = "Queue name: 1 to 128 of A-Z a-z 0-9 . _ -")), request_body(content = batch::Batch, content_type = "application/json"), responses((status = 201, description = "All accepted", body = views::BatchPublished), (status = 400, description = "Malformed input", body = problem::ProblemBody, content_type = "application/problem+json"), (status = 404, description = "No such queue or message", body = problem::ProblemBody, content_type = "application/problem+json"), (status = 409, description = "Idempotency key reused with another body", body = problem::ProblemBody, content_type = "application/problem+json"), (status = 413, description = "Batch too large", body = problem::ProblemBody, content_type = "application/problem+json"), (status = 422, description = "Unknown parent", body = problem::ProblemBody, content_type = "application/problem+json"), (status = 429, description = "Queue limit reached", body = problem::ProblemBody, content_type = "application/problem+json")))]
async fn publish_batch(
    State(api): State<Api>,
    Path(queue): Path<String>,
    b: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let entries = batch::parse(&body(b)?, api.max_body)?;
    let published = api.space.publish_batch(&queue, entries).await?;
    let ids: Vec<MessageId> = published.iter().map(|p| p.id).collect();
    Ok((StatusCode::CREATED, Json(views::BatchPublished { ids })).into_response())
}

#[utoipa::path(get, path = "/v1/queues/{queue}/messages", tag = "messages", params(("queue" = String, Path, description = "Queue name: 1 to 128 of A-Z a-z 0-9 . _ -"), ("state" = Option<String>, Query, description = "scheduled, waiting, ready, delivering, delivered or dead"), ("limit" = Option<u32>, Query, description = "1 to 1000, default 100"), ("after" = Option<String>, Query, description = "The `next` of the previous page")), responses((status = 200, description = "A page of messages", body = views::MessagePage), (status = 400, description = "Malformed input", body = problem::ProblemBody, content_type = "application/problem+json"), (status = 404, description = "No such queue or message", body = problem::ProblemBody, content_type = "application/problem+json")))]
async fn list_messages(
    State(api): State<Api>,
    Path(queue): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let state = q
        .get("state")
        .map(|s| {
            views::parse_state(s).ok_or_else(|| {
                Problem::bad_request(format!(
                    "unknown state {s:?}: use scheduled, waiting, ready, delivering, delivered or dead"
                ))
            })
        })
        .transpose()?;
    let (page, next) = api
        .space
        .messages(&queue, state, after(&q)?, page_limit(&q)?)?;
    let mut messages = Vec::with_capacity(page.len());
    for (id, _) in page {
        match api.space.message(&queue, id) {
            Ok(m) => messages.push(Message::from(m)),
            // Removed since the page was taken.
            Err(space::MessageError::MessageNotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Json(views::MessagePage { messages, next }).into_response())
}

#[utoipa::path(get, path = "/v1/queues/{queue}/messages/{id}", tag = "messages", params(("queue" = String, Path, description = "Queue name: 1 to 128 of A-Z a-z 0-9 . _ -"), ("id" = String, Path, description = "Message id")), responses((status = 200, description = "The message", body = views::Message), (status = 400, description = "Malformed input", body = problem::ProblemBody, content_type = "application/problem+json"), (status = 404, description = "No such queue or message", body = problem::ProblemBody, content_type = "application/problem+json")))]
async fn get_message(
    State(api): State<Api>,
    Path((queue, id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let id = message_id(&id, "message")?;
    Ok(Json(Message::from(api.space.message(&queue, id)?)).into_response())
}

#[utoipa::path(get, path = "/v1/queues/{queue}/messages/{id}/body", tag = "messages", params(("queue" = String, Path, description = "Queue name: 1 to 128 of A-Z a-z 0-9 . _ -"), ("id" = String, Path, description = "Message id")), responses((status = 200, description = "The raw body, with its content type", body = Vec<u8>, content_type = "application/octet-stream"), (status = 400, description = "Malformed input", body = problem::ProblemBody, content_type = "application/problem+json"), (status = 404, description = "No such queue or message", body = problem::ProblemBody, content_type = "application/problem+json")))]
async fn get_body(
    State(api): State<Api>,
    Path((queue, id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let id = message_id(&id, "message")?;
    let (body, content_type) = api.space.body(&queue, id)?;
    // A body is whatever its publisher sent: a browser must never run it as a page of this
    // origin (where the dashboard lives).
    Ok((
        [
            (header::CONTENT_TYPE, content_type),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned()),
            (header::CONTENT_SECURITY_POLICY, "sandbox".to_owned()),
            (header::CONTENT_DISPOSITION, "attachment".to_owned()),
        ],
        body,
    )
        .into_response())
}

#[utoipa::path(delete, path = "/v1/queues/{queue}/messages/{id}", tag = "messages", params(("queue" = String, Path, description = "Queue name: 1 to 128 of A-Z a-z 0-9 . _ -"), ("id" = String, Path, description = "Message id")), responses((status = 204, description = "Discarded; waiting children released"), (status = 400, description = "Malformed input", body = problem::ProblemBody, content_type = "application/problem+json"), (status = 404, description = "No such queue or message", body = problem::ProblemBody, content_type = "application/problem+json")))]
async fn discard(
    State(api): State<Api>,
    Path((queue, id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let id = message_id(&id, "message")?;
    api.space.discard(&queue, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/v1/queues/{queue}/dead-letters", tag = "dead letters", params(("queue" = String, Path, description = "Queue name: 1 to 128 of A-Z a-z 0-9 . _ -"), ("limit" = Option<u32>, Query, description = "1 to 1000, default 100"), ("after" = Option<String>, Query, description = "The `next` of the previous page")), responses((status = 200, description = "Dead letters with reasons", body = views::DeadLetterPage), (status = 400, description = "Malformed input", body = problem::ProblemBody, content_type = "application/problem+json"), (status = 404, description = "No such queue or message", body = problem::ProblemBody, content_type = "application/problem+json")))]
async fn dead_letters(
    State(api): State<Api>,
    Path(queue): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let (page, next) = api
        .space
        .dead_letters(&queue, after(&q)?, page_limit(&q)?)?;
    let page: Vec<DeadLetterView> = page.into_iter().map(DeadLetterView::from).collect();
    Ok(Json(views::DeadLetterPage {
        dead_letters: page,
        next,
    })
    .into_response())
}

/// What a redrive of one message takes (optional body).
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RedriveRequest {
    /// `message` (default): the message alone; `subtree`: it and every dead message below it,
    /// parents first (children dead with their parent come back waiting for it).
    #[schema(value_type = Option<String>)]
    scope: Option<String>,
    /// Count what would be redriven, change nothing (answered 200).
    dry_run: Option<bool>,
}

#[utoipa::path(post, path = "/v1/queues/{queue}/messages/{id}/redrive", tag = "dead letters", params(("queue" = String, Path, description = "Queue name: 1 to 128 of A-Z a-z 0-9 . _ -"), ("id" = String, Path, description = "Message id")), request_body(content = Option<RedriveRequest>, content_type = "application/json"), responses((status = 202, description = "Sent again", body = views::Redriven), (status = 200, description = "Dry run: what would be sent again", body = views::Redriven), (status = 400, description = "Malformed input", body = problem::ProblemBody, content_type = "application/problem+json"), (status = 404, description = "No such queue or message", body = problem::ProblemBody, content_type = "application/problem+json"), (status = 409, description = "Nothing dead in scope", body = problem::ProblemBody, content_type = "application/problem+json")))]
async fn redrive(
    State(api): State<Api>,
    Path((queue, id)): Path<(String, String)>,
    b: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let id = message_id(&id, "message")?;
    let r: RedriveRequest = json(&body(b)?)?;
    let scope = scope(r.scope.as_deref())?;
    let dry_run = r.dry_run.unwrap_or(false);
    let n = api.space.redrive_scoped(&queue, id, scope, dry_run).await?;
    let status = if dry_run {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, Json(views::Redriven { redriven: n })).into_response())
}

#[utoipa::path(post, path = "/v1/queues/{queue}/dead-letters/redrive", tag = "dead letters", params(("queue" = String, Path, description = "Queue name: 1 to 128 of A-Z a-z 0-9 . _ -")), responses((status = 202, description = "Sent again", body = views::Redriven), (status = 400, description = "Malformed input", body = problem::ProblemBody, content_type = "application/problem+json"), (status = 404, description = "No such queue or message", body = problem::ProblemBody, content_type = "application/problem+json")))]
async fn redrive_all(State(api): State<Api>, Path(queue): Path<String>) -> ApiResult<Response> {
    let n = api.space.redrive_all(&queue).await?;
    Ok((StatusCode::ACCEPTED, Json(views::Redriven { redriven: n })).into_response())
}
