//! `/ui/queues/{queue}`: counts, subscriber health, messages by state (paged), a test
//! message, the settings.

use std::collections::HashMap;

use axum::Extension;
use axum::extract::{Path, Query, State};
use bytes::Bytes;
use maud::{Markup, html};
use space::{MessageState, NewMessage, SettingsPatch};

use super::session::Action;
use super::subscribers::subscriber_rows;
use super::widgets::{age, any_message_link, badge, bytes, message_link, notice, pager};
use super::{Nav, Ui, UiError, UiResult, Viewer, done, layout};
use crate::problem::Problem;
use crate::views::{self, parse_state, state_name};

/// Messages on a page of the list.
pub const MESSAGES_PER_PAGE: usize = 50;

const STATES: [MessageState; 6] = [
    MessageState::Scheduled,
    MessageState::Waiting,
    MessageState::Ready,
    MessageState::Delivering,
    MessageState::Delivered,
    MessageState::Dead,
];

pub(crate) async fn page(
    State(ui): State<Ui>,
    Extension(viewer): Extension<Viewer>,
    Path(queue): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> UiResult {
    let info = ui.space.queue_info(&queue)?;
    let state = query.get("state").and_then(|s| parse_state(s));
    let after = match query.get("after") {
        Some(a) => Some(crate::request::message_id(a, "after")?),
        None => None,
    };
    let (ids, next) = ui.space.messages(&queue, state, after, MESSAGES_PER_PAGE)?;
    let messages: Vec<views::Message> = ids
        .into_iter()
        .filter_map(|(id, _)| ui.space.message(&queue, id).ok())
        .map(views::Message::from)
        .collect();
    let counts = views::QueueCounts::from(info.counts);
    let count_of = |s: MessageState| match s {
        MessageState::Scheduled => counts.scheduled,
        MessageState::Waiting => counts.waiting,
        MessageState::Ready => counts.ready,
        MessageState::Delivering => counts.delivering,
        MessageState::Delivered => counts.delivered,
        MessageState::Dead => counts.dead,
    };
    let base = match state {
        Some(s) => format!("/ui/queues/{queue}?state={}", state_name(s)),
        None => format!("/ui/queues/{queue}"),
    };
    let subscribers: Vec<views::Subscriber> = info
        .subscribers
        .iter()
        .cloned()
        .map(views::Subscriber::from)
        .collect();
    let content = html! {
        h1 { "Queue " code { (queue) } }
        (notice(&query))
        div data-live {
            p.muted {
                "Oldest undelivered: " (info.oldest_undelivered_age_ms.map(age).unwrap_or_else(|| "none".into()))
                " · undelivered bytes: " (bytes(info.bytes))
            }
            (latencies(&info))
            h2 { "Subscribers" }
            (subscriber_rows(&viewer, &[(queue.as_str(), subscribers.as_slice())], false))
            h2 { "Messages" }
            p.tabs {
                a href={ "/ui/queues/" (queue) } class=[state.is_none().then_some("here")] { "all" }
                @for s in STATES {
                    a href={ "/ui/queues/" (queue) "?state=" (state_name(s)) }
                        class=[(state == Some(s)).then_some("here")] {
                        (state_name(s)) " (" (count_of(s)) ")"
                    }
                }
            }
            (message_table(&queue, &messages))
            (pager(&base, next))
        }
        @if viewer.can_act() {
            h2 { "Publish a test message" }
            (publish_form(&viewer, &queue))
        }
        h2 { "Settings" }
        (settings_form(&viewer, &queue, &info.settings))
    };
    Ok(layout(&queue, &viewer, Nav::None, content))
}

/// The queue's latencies since the broker started, as bucket bounds.
fn latencies(info: &space::QueueInfo) -> Markup {
    let show = |h: &space::latency::HistogramSnapshot, q: f64| match h.quantile_bound_s(q) {
        Some(s) if s < 1.0 => format!("≤ {} ms", s * 1000.0),
        Some(s) => format!("≤ {s} s"),
        None if h.count == 0 => "—".to_owned(),
        None => "> 300 s".to_owned(),
    };
    html! {
        table.latency {
            thead { tr { th { "Since start" } th.n { "Observed" } th.n { "p50" } th.n { "p99" } } }
            tbody {
                @for (what, h) in [("publish → first delivery", &info.first_delivery), ("parent acknowledged → child released", &info.release)] {
                    tr { td { (what) } td.n { (h.count) } td.n { (show(h, 0.5)) } td.n { (show(h, 0.99)) } }
                }
            }
        }
    }
}

fn message_table(queue: &str, messages: &[views::Message]) -> Markup {
    html! {
        @if messages.is_empty() {
            p.muted { "No messages here." }
        } @else {
            table {
                thead { tr { th { "Message" } th { "State" } th { "Type" } th.n { "Size" } th { "Published" } th { "Parents" } th { "Deliveries" } } }
                tbody {
                    @for m in messages {
                        tr {
                            td { (message_link(queue, m.id)) }
                            td { (badge(m.state)) }
                            td { (m.event_type) }
                            td.n { (bytes(m.size)) }
                            td { (m.published_at) }
                            td { @for p in &m.parents { (any_message_link(*p)) " " } }
                            td { @for d in &m.deliveries { (badge(d.state)) " " } }
                        }
                    }
                }
            }
        }
    }
}

fn publish_form(viewer: &Viewer, queue: &str) -> Markup {
    html! {
        form.stack method="post" action={ "/ui/queues/" (queue) "/publish" } {
            (viewer.csrf_field())
            label { "Body" textarea name="body" { "{\"hello\": \"world\"}" } }
            label { "Content type " input name="content_type" value="application/json"; }
            label { "Parents (ids, comma-separated; optional) " input name="parents" size="80"; }
            label { "Event type (optional) " input name="type"; }
            div { button.primary #publish type="submit" { "Publish" } }
        }
    }
}

fn settings_form(viewer: &Viewer, queue: &str, settings: &space::QueueSettings) -> Markup {
    let text = serde_json::to_string_pretty(settings).unwrap_or_default();
    html! {
        @if viewer.can_act() {
            form.stack method="post" action={ "/ui/queues/" (queue) "/settings" } {
                (viewer.csrf_field())
                p.muted { "Every setting of the queue as JSON (the API's names). Settings left out keep their values." }
                textarea name="settings" rows="18" { (text) }
                div { button #save-settings type="submit" { "Save settings" } }
            }
        } @else {
            pre { (text) }
        }
    }
}

pub(crate) async fn save_settings(
    State(ui): State<Ui>,
    Path(queue): Path<String>,
    action: Action,
) -> UiResult {
    // Saving a form must not bring back a queue deleted meanwhile.
    ui.space.queue_info(&queue)?;
    let text = action.field("settings").unwrap_or("{}");
    let patch: SettingsPatch = serde_json::from_str(text)
        .map_err(|e| Problem::bad_request(format!("the settings are not valid: {e}")))?;
    ui.space.put_queue(&queue, &patch).await?;
    Ok(done(&format!("/ui/queues/{queue}"), "saved"))
}

pub(crate) async fn publish(
    State(ui): State<Ui>,
    Path(queue): Path<String>,
    action: Action,
) -> UiResult {
    let body = action.field("body").unwrap_or("");
    if body.len() > ui.max_body {
        return Err(UiError(Problem::new(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the body is larger than limits.max_body ({} bytes)",
                ui.max_body
            ),
        )));
    }
    let parents = match action.field("parents") {
        Some(list) => crate::request::parent_list(list)?,
        None => Vec::new(),
    };
    let m = ui
        .space
        .publish(
            &queue,
            NewMessage {
                body: Bytes::copy_from_slice(body.as_bytes()),
                content_type: action.field("content_type").map(str::to_owned),
                parents,
                idempotency_key: None,
                event_type: action.field("type").map(str::to_owned),
                deliver_at: None,
                replay_of: None,
                traceparent: None,
                tracestate: None,
            },
        )
        .await?;
    Ok(done(
        &super::widgets::message_href(&queue, m.id),
        "published",
    ))
}
