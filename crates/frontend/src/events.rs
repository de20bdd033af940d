//! `GET /v1/queues/{queue}/events`: what happens to the queue's messages, as it happens, as
//! server-sent events (`syncbrok tail`, the dashboard). The first event, `watching`, says the
//! stream is live; then `published`, `delivered`, `failed` and `dead_lettered`, each with a
//! JSON body; `lagged` says how many events a watcher too slow to keep up missed. At most
//! [`WATCHERS_MAX`](crate::limits::WATCHERS_MAX) watchers at once; a stream ends when the
//! broker stops.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, StreamExt};
use serde_json::json;
use space::time::rfc3339;
use space::{FeedEvent, Happened, Watcher};
use tokio::sync::OwnedSemaphorePermit;
use tokio::sync::broadcast::error::RecvError;

use crate::api::Api;
use crate::problem::Problem;
use crate::request::ApiResult;

/// One event as a watcher reads it.
fn event_of(e: &FeedEvent) -> Event {
    let mut body = json!({
        "queue": &*e.queue,
        "id": e.message,
        "at": rfc3339(e.at_ms),
    });
    match &e.what {
        Happened::Published => {}
        Happened::Delivered {
            subscriber,
            attempt,
        } => {
            body["subscriber"] = json!(subscriber);
            body["attempt"] = json!(attempt);
        }
        Happened::Failed {
            subscriber,
            attempt,
            error,
            next_attempt_at_ms,
        } => {
            body["subscriber"] = json!(subscriber);
            body["attempt"] = json!(attempt);
            body["error"] = json!(error);
            body["next_attempt_at"] = json!(rfc3339(*next_attempt_at_ms));
        }
        Happened::DeadLettered { subscriber, reason } => {
            body["subscriber"] = json!(subscriber);
            body["reason"] = json!(match reason {
                storage::DeadReason::MaxAttempts => "max_attempts",
                storage::DeadReason::ParentDead => "parent_dead",
            });
        }
    }
    Event::default().event(e.what.name()).data(body.to_string())
}

/// A watcher's stream: its place in the feed, the queue it watches, and its place among the
/// watchers (given back when the stream ends).
struct Watching {
    watcher: Watcher,
    queue: Arc<str>,
    _permit: OwnedSemaphorePermit,
}

/// The next event of the watched queue, or `None` once the broker stops.
async fn next(mut w: Watching) -> Option<(Result<Event, Infallible>, Watching)> {
    loop {
        let got = tokio::select! {
            got = w.watcher.events.recv() => got,
            _ = w.watcher.closed.wait_for(|closed| *closed) => return None,
        };
        match got {
            Ok(e) if e.queue == w.queue => return Some((Ok(event_of(&e)), w)),
            Ok(_) => {}
            Err(RecvError::Lagged(missed)) => {
                let lagged = Event::default()
                    .event("lagged")
                    .data(json!({ "missed": missed }).to_string());
                return Some((Ok(lagged), w));
            }
            Err(RecvError::Closed) => return None,
        }
    }
}

#[utoipa::path(get, path = "/v1/queues/{queue}/events", tag = "messages", params(("queue" = String, Path, description = "Queue name: 1 to 128 of A-Z a-z 0-9 . _ -")), responses((status = 200, description = "Server-sent events: watching, then published, delivered, failed, dead_lettered (and lagged), each with a JSON body", content_type = "text/event-stream"), (status = 404, description = "No such queue", body = crate::problem::ProblemBody, content_type = "application/problem+json"), (status = 503, description = "Too many watchers", body = crate::problem::ProblemBody, content_type = "application/problem+json")))]
pub(crate) async fn events(
    State(api): State<Api>,
    Path(queue): Path<String>,
) -> ApiResult<Response> {
    api.space.queue_info(&queue)?;
    let permit = api.watchers.clone().try_acquire_owned().map_err(|_| {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{} watchers already: try again later",
                crate::limits::WATCHERS_MAX
            ),
        )
    })?;
    let watching = Watching {
        watcher: api.space.watch(),
        queue: Arc::from(queue.as_str()),
        _permit: permit,
    };
    let live = Event::default()
        .event("watching")
        .data(json!({ "queue": queue }).to_string());
    let stream =
        stream::once(async { Ok::<_, Infallible>(live) }).chain(stream::unfold(watching, next));
    let keep_alive = KeepAlive::new().interval(crate::limits::EVENTS_KEEP_ALIVE);
    Ok(Sse::new(stream).keep_alive(keep_alive).into_response())
}
