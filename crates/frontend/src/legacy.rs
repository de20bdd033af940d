//! The original Go broker's HTTP API, so that its clients work unchanged (docs/api.md, "The original broker's API"):
//! `POST /queue`, `POST /subscrib`, `POST /msg`, with its exact response texts — but where it
//! silently dropped or crashed, a plain-text 400/404/422 and nothing stored.

use axum::Router;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use space::{Classify, HandlerKind, NewMessage, SettingsPatch, Space, SubscriberSpec};

#[derive(Clone)]
struct Legacy {
    space: Space,
}

/// The legacy routes.
pub fn router(space: Space) -> Router {
    Router::new()
        .route("/queue", post(queue))
        .route("/subscrib", post(subscribe))
        .route("/msg", post(message))
        .with_state(Legacy { space })
}

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (
        status,
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; charset=utf-8",
        )],
        body.into(),
    )
        .into_response()
}

fn error(e: impl Classify) -> Response {
    text(crate::problem::status_of(e.kind()), e.to_string())
}

/// The `queue` header, required and non-empty; the reason for a 400 otherwise.
fn queue_header(headers: &HeaderMap) -> Result<String, &'static str> {
    match headers.get("queue").map(|v| v.to_str()) {
        Some(Ok(q)) if !q.trim().is_empty() => Ok(q.trim().to_owned()),
        Some(Err(_)) => Err("the queue header is not visible ASCII"),
        _ => Err("missing queue header"),
    }
}

async fn queue(State(l): State<Legacy>, headers: HeaderMap) -> Response {
    let name = match queue_header(&headers) {
        Ok(n) => n,
        Err(why) => return text(StatusCode::BAD_REQUEST, why),
    };
    // An existing queue is left as it is (the original answered the same).
    if l.space.queue_info(&name).is_err()
        && let Err(e) = l.space.put_queue(&name, &SettingsPatch::default()).await
    {
        return error(e);
    }
    text(
        StatusCode::OK,
        format!("You posted new queue with name : {name}"),
    )
}

async fn subscribe(State(l): State<Legacy>, headers: HeaderMap) -> Response {
    let name = match queue_header(&headers) {
        Ok(n) => n,
        Err(why) => return text(StatusCode::BAD_REQUEST, why),
    };
    let endpoint = match headers.get("endpoint").map(|v| v.to_str()) {
        Some(Ok(e)) if !e.trim().is_empty() => e.trim().to_owned(),
        _ => return text(StatusCode::BAD_REQUEST, "missing endpoint header"),
    };
    let spec = SubscriberSpec {
        endpoint,
        handler: HandlerKind::Legacy,
        secret: None,
        max_in_flight: space::limits::MAX_IN_FLIGHT_DEFAULT,
        ..Default::default()
    };
    match l.space.add_subscriber(&name, spec).await {
        Ok(_) => text(
            StatusCode::OK,
            format!("You posted new subscriber for queue  : {name}"),
        ),
        Err(e) => error(e),
    }
}

async fn message(
    State(l): State<Legacy>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let name = match queue_header(&headers) {
        Ok(n) => n,
        Err(why) => return text(StatusCode::BAD_REQUEST, why),
    };
    let body = match body {
        Ok(b) => b,
        Err(r) => return text(crate::request::rejection_status(&r), r.body_text()),
    };
    let parent = match headers.get("parentid").map(|v| v.to_str()) {
        None => None,
        Some(Ok(p)) if p.trim().is_empty() => None,
        Some(Ok(p)) => match p.trim().parse() {
            Ok(id) => Some(id),
            Err(_) => {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!("ParentId {p:?} is not a message id"),
                );
            }
        },
        Some(Err(_)) => return text(StatusCode::BAD_REQUEST, "ParentId is not visible ASCII"),
    };
    let msg = NewMessage {
        body,
        content_type: None,
        parents: parent.into_iter().collect(),
        idempotency_key: None,
        ..Default::default()
    };
    match l.space.publish(&name, msg).await {
        Ok(m) => text(StatusCode::OK, m.id.to_string()),
        Err(e) => error(e),
    }
}
