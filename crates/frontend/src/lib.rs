//! syncbrok's Frontends. So far: the HTTP API v1 (SPEC §5), JSON in and out except message
//! bodies, errors as `application/problem+json`; and the original broker's API ([`legacy`]).
//!
//! The API is a thin layer: it parses and bounds input, calls the [`space::Space`], and shapes
//! the answer ([`views`]). Status codes for Space errors are decided in [`problem`] only.

pub mod auth;
pub mod config;
pub mod legacy;
pub mod metrics;
pub mod problem;
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
use space::{HandlerKind, MessageId, NewMessage, SettingsPatch, Space, SubscriberSpec};

use crate::problem::Problem;
use crate::views::{DeadLetterView, Message, Published, Queue, Subscriber};

/// Bounds of the API, each with its reason.
pub mod limits {
    /// Default `limits.max_body` (SPEC §4): bodies up to 1 MiB.
    pub const MAX_BODY_DEFAULT: usize = 1024 * 1024;
    /// Ceiling of `limits.max_body` (SPEC §4): the log holds records up to 96 MiB.
    pub const MAX_BODY_CEILING: usize = 64 * 1024 * 1024;
    /// JSON bodies of the other calls (settings, subscribers) are small.
    pub const JSON_BODY_MAX: usize = 64 * 1024;
    /// A batch's JSON: 16 MiB of bodies, base64 (4/3) and some framing.
    pub const BATCH_JSON_BYTES_MAX: usize = 24 * 1024 * 1024;
    /// Bearer tokens shorter than this are refused: they could be guessed.
    pub const TOKEN_BYTES_MIN: usize = 16;
    /// Page sizes (SPEC §8).
    pub const PAGE_DEFAULT: usize = 100;
    pub const PAGE_MAX: usize = 1000;
}

/// How the API is served.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Largest message body accepted (`limits.max_body`).
    pub max_body: usize,
    /// `auth.tokens`; empty: no authentication.
    pub tokens: Vec<auth::Token>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            max_body: limits::MAX_BODY_DEFAULT,
            tokens: Vec::new(),
        }
    }
}

#[derive(Clone)]
struct Api {
    space: Space,
    max_body: usize,
}

/// The API's routes over a Space that has finished recovering.
pub fn router(space: Space, config: &ApiConfig) -> Router {
    let max_body = config.max_body.min(limits::MAX_BODY_CEILING);
    let api = Api { space, max_body };
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ready" }))
        .route("/metrics", get(metrics))
        .route("/v1/queues", get(list_queues))
        .route(
            "/v1/queues/{queue}",
            put(put_queue).get(get_queue).delete(delete_queue),
        )
        .route(
            "/v1/queues/{queue}/subscribers",
            post(add_subscriber).get(list_subscribers),
        )
        .route(
            "/v1/queues/{queue}/subscribers/{id}",
            axum::routing::delete(remove_subscriber),
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
        .route("/v1/queues/{queue}/dead-letters", get(dead_letters))
        .route("/v1/queues/{queue}/dead-letters/redrive", post(redrive_all))
        .fallback(|| async { Problem::new(StatusCode::NOT_FOUND, "no such resource") })
        .layer(DefaultBodyLimit::max(limits::JSON_BODY_MAX))
        .with_state(api.clone())
        .merge(legacy::router(api.space).layer(DefaultBodyLimit::max(max_body)))
        .layer(axum::middleware::from_fn_with_state(
            auth::Tokens(std::sync::Arc::new(config.tokens.clone())),
            auth::check,
        ))
}

type ApiResult<T> = Result<T, Problem>;

fn body(b: Result<Bytes, BytesRejection>) -> ApiResult<Bytes> {
    b.map_err(|r| Problem::new(r.status(), r.body_text()))
}

fn json<T: for<'de> Deserialize<'de> + Default>(b: &Bytes) -> ApiResult<T> {
    if b.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(b).map_err(|e| Problem::bad_request(format!("invalid JSON: {e}")))
}

fn message_id(text: &str, what: &str) -> ApiResult<MessageId> {
    text.trim()
        .parse()
        .map_err(|_| Problem::bad_request(format!("{what} {text:?} is not a message id")))
}

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

async fn list_queues(State(api): State<Api>) -> ApiResult<Response> {
    let mut queues = Vec::new();
    for name in api.space.queue_names() {
        if let Ok(q) = api.space.queue_info(&name) {
            queues.push(Queue::from(q));
        }
    }
    Ok(Json(serde_json::json!({ "queues": queues })).into_response())
}

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

async fn get_queue(State(api): State<Api>, Path(queue): Path<String>) -> ApiResult<Response> {
    Ok(Json(Queue::from(api.space.queue_info(&queue)?)).into_response())
}

async fn delete_queue(State(api): State<Api>, Path(queue): Path<String>) -> ApiResult<StatusCode> {
    api.space.delete_queue(&queue).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct NewSubscriber {
    endpoint: Option<String>,
    handler: Option<String>,
    secret: Option<String>,
    max_in_flight: Option<u32>,
}

async fn add_subscriber(
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
            .unwrap_or(space::space::limits::MAX_IN_FLIGHT_DEFAULT),
    };
    let (info, created) = api.space.add_subscriber(&queue, spec).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(Subscriber::from(info))).into_response())
}

async fn list_subscribers(
    State(api): State<Api>,
    Path(queue): Path<String>,
) -> ApiResult<Response> {
    let subs: Vec<Subscriber> = api
        .space
        .subscribers(&queue)?
        .into_iter()
        .map(Subscriber::from)
        .collect();
    Ok(Json(serde_json::json!({ "subscribers": subs })).into_response())
}

async fn remove_subscriber(
    State(api): State<Api>,
    Path((queue, id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let id: u64 = id
        .parse()
        .map_err(|_| Problem::bad_request(format!("subscriber id {id:?} is not a number")))?;
    api.space.remove_subscriber(&queue, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> ApiResult<Option<&'a str>> {
    headers
        .get(name)
        .map(|v| {
            v.to_str()
                .map_err(|_| Problem::bad_request(format!("header {name} is not visible ASCII")))
        })
        .transpose()
}

async fn publish(
    State(api): State<Api>,
    Path(queue): Path<String>,
    headers: HeaderMap,
    b: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let body = body(b)?;
    let parent = header_text(&headers, "syncbrok-parent")?
        .map(|p| message_id(p, "Syncbrok-Parent"))
        .transpose()?;
    let content_type = header_text(&headers, header::CONTENT_TYPE.as_str())?.map(str::to_owned);
    let idempotency_key = header_text(&headers, "idempotency-key")?.map(str::to_owned);
    let m = api
        .space
        .publish(
            &queue,
            NewMessage {
                body,
                content_type,
                parent,
                idempotency_key,
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
            parent: m.parent,
        }),
    )
        .into_response())
}

#[derive(Deserialize, Default)]
struct Batch {
    messages: Vec<BatchItem>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchItem {
    body: Option<String>,
    body_base64: Option<String>,
    content_type: Option<String>,
    parent: Option<String>,
    parent_index: Option<usize>,
    idempotency_key: Option<String>,
}

async fn publish_batch(
    State(api): State<Api>,
    Path(queue): Path<String>,
    b: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    use base64::Engine;
    let batch: Batch = json(&body(b)?)?;
    if batch.messages.is_empty() {
        return Err(Problem::bad_request("a batch needs at least one message"));
    }
    let mut entries = Vec::with_capacity(batch.messages.len());
    for (i, m) in batch.messages.into_iter().enumerate() {
        let body = match (m.body, m.body_base64) {
            (Some(text), None) => Bytes::from(text),
            (None, Some(b64)) => Bytes::from(
                base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .map_err(|e| Problem::bad_request(format!("message {i}: body_base64: {e}")))?,
            ),
            (None, None) => Bytes::new(),
            (Some(_), Some(_)) => {
                return Err(Problem::bad_request(format!(
                    "message {i}: give body or body_base64, not both"
                )));
            }
        };
        if body.len() > api.max_body {
            return Err(Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "message {i}: body of {} bytes is over {}",
                    body.len(),
                    api.max_body
                ),
            ));
        }
        let parent = match (m.parent, m.parent_index) {
            (Some(p), None) => Some(space::BatchParent::Id(message_id(&p, "parent")?)),
            (None, Some(j)) => Some(space::BatchParent::Index(j)),
            (None, None) => None,
            (Some(_), Some(_)) => {
                return Err(Problem::bad_request(format!(
                    "message {i}: give parent or parent_index, not both"
                )));
            }
        };
        entries.push(space::BatchEntry {
            message: NewMessage {
                body,
                content_type: m.content_type,
                parent: None,
                idempotency_key: m.idempotency_key,
            },
            parent,
        });
    }
    let published = api.space.publish_batch(&queue, entries).await?;
    let ids: Vec<MessageId> = published.iter().map(|p| p.id).collect();
    Ok((StatusCode::CREATED, Json(serde_json::json!({ "ids": ids }))).into_response())
}

fn page_limit(q: &HashMap<String, String>) -> ApiResult<usize> {
    match q.get("limit") {
        None => Ok(limits::PAGE_DEFAULT),
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=limits::PAGE_MAX).contains(&n) => Ok(n),
            _ => Err(Problem::bad_request(format!(
                "limit {l:?} is outside 1..={}",
                limits::PAGE_MAX
            ))),
        },
    }
}

fn after(q: &HashMap<String, String>) -> ApiResult<Option<MessageId>> {
    q.get("after").map(|a| message_id(a, "after")).transpose()
}

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
                    "unknown state {s:?}: use waiting, ready, delivering, delivered or dead"
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
            Err(space::SpaceError::MessageNotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Json(serde_json::json!({ "messages": messages, "next": next })).into_response())
}

async fn get_message(
    State(api): State<Api>,
    Path((queue, id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let id = message_id(&id, "message")?;
    Ok(Json(Message::from(api.space.message(&queue, id)?)).into_response())
}

async fn get_body(
    State(api): State<Api>,
    Path((queue, id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let id = message_id(&id, "message")?;
    let (body, content_type) = api.space.body(&queue, id)?;
    Ok(([(header::CONTENT_TYPE, content_type)], body).into_response())
}

async fn discard(
    State(api): State<Api>,
    Path((queue, id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let id = message_id(&id, "message")?;
    api.space.discard(&queue, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn dead_letters(
    State(api): State<Api>,
    Path(queue): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let (page, next) = api
        .space
        .dead_letters(&queue, after(&q)?, page_limit(&q)?)?;
    let page: Vec<DeadLetterView> = page.into_iter().map(DeadLetterView::from).collect();
    Ok(Json(serde_json::json!({ "dead_letters": page, "next": next })).into_response())
}

async fn redrive(
    State(api): State<Api>,
    Path((queue, id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let id = message_id(&id, "message")?;
    api.space.redrive(&queue, id).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "redriven": 1 })),
    )
        .into_response())
}

async fn redrive_all(State(api): State<Api>, Path(queue): Path<String>) -> ApiResult<Response> {
    let n = api.space.redrive_all(&queue).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "redriven": n })),
    )
        .into_response())
}
