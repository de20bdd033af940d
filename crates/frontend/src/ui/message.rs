//! `/ui/queues/{queue}/messages/{id}`: a message with its body, its attempts per subscriber,
//! why it stands where it stands, its lineage drawn as a graph, and what can be done to it.

use std::collections::HashMap;
use std::fmt::Write;

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use maud::{Markup, html};
use space::limits::{LINEAGE_LEVELS_DEFAULT, LINEAGE_NODES_DEFAULT};
use space::{RedriveScope, ReplayOptions};

use super::session::Action;
use super::widgets::{any_message_link, badge, bytes, message_link, notice};
use super::{Nav, Ui, UiError, UiResult, Viewer, dag, done, layout};
use crate::causality::{Explain, Lineage};
use crate::problem::Problem;
use crate::views;

/// The most of a body a page shows (as text or JSON) …
pub const BODY_SHOWN_MAX: usize = 64 * 1024;
/// … and as a hex dump.
pub const BODY_HEX_SHOWN_MAX: usize = 8 * 1024;
/// Children listed (a parent may have millions).
pub const CHILDREN_SHOWN_MAX: usize = 50;

/// `/ui/messages/{id}`: a message of whichever queue issued it (its id names the queue).
pub(crate) async fn find(State(ui): State<Ui>, Path(id): Path<String>) -> UiResult {
    let id = crate::request::message_id(&id, "message")?;
    match ui.space.queue_of(id) {
        Some(queue) => Ok(
            axum::response::Redirect::to(&super::widgets::message_href(&queue, id)).into_response(),
        ),
        None => Err(UiError(Problem::new(
            StatusCode::NOT_FOUND,
            format!(
                "message {id} was never published by a queue of this broker (or its queue was deleted)"
            ),
        ))),
    }
}

pub(crate) async fn page(
    State(ui): State<Ui>,
    Extension(viewer): Extension<Viewer>,
    Path((queue, id)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: axum::http::HeaderMap,
) -> UiResult {
    let id = crate::request::message_id(&id, "message")?;
    let m = views::Message::from(ui.space.message(&queue, id)?);
    // The live refresh swaps only the live part: the body (read from the log) is not in it.
    let live_refresh = headers.contains_key("x-syncbrok-live");
    let explain = Explain::of(&queue, ui.space.explain(&queue, id)?);
    let graph = Lineage::of(
        &queue,
        ui.space.lineage(
            &queue,
            id,
            LINEAGE_LEVELS_DEFAULT,
            LINEAGE_LEVELS_DEFAULT,
            LINEAGE_NODES_DEFAULT,
        )?,
    );
    let view = query.get("view").map(String::as_str).unwrap_or("text");
    let body = if live_refresh {
        Ok(bytes::Bytes::new())
    } else {
        ui.space.body(&queue, id).map(|(b, _)| b)
    };
    let content = html! {
        h1 { "Message " code { (m.id) } }
        (notice(&query))
        div data-live {
            p { span #state class={ "badge s-" (m.state) } { (m.state) } " in queue " a href={ "/ui/queues/" (queue) } { (queue) } }
            (facts(&queue, &m))
            h2 { "Why it is where it is" }
            (explanation(&explain))
            h2 { "Attempts per subscriber" }
            (deliveries(&m))
            h2 { "Lineage" }
            (dag::draw(&graph, m.id))
        }
        @if viewer.can_act() {
            h2 { "Actions" }
            (actions(&viewer, &queue, &m))
        }
        h2 { "Body" }
        p.tabs {
            @for (v, label) in [("text", "text"), ("json", "pretty JSON"), ("hex", "hex")] {
                a href={ "?view=" (v) } class=[(view == v).then_some("here")] { (label) }
            }
        }
        @match body {
            Ok(b) => (show_body(&b, view)),
            Err(e) => p.error { "The body cannot be read: " (e) },
        }
    };
    Ok(layout(
        &format!("Message {}", m.id),
        &viewer,
        Nav::None,
        content,
    ))
}

fn facts(queue: &str, m: &views::Message) -> Markup {
    html! {
        dl.facts {
            dt { "Type" } dd { (m.event_type) }
            dt { "Content type" } dd { (m.content_type) }
            dt { "Size" } dd { (bytes(m.size)) }
            dt { "Published" } dd { (m.published_at) }
            @if let Some(at) = &m.deliver_at { dt { "Due" } dd { (at) } }
            dt { "Parents" } dd { @if m.parents.is_empty() { "none" } @for p in &m.parents { (any_message_link(*p)) " " } }
            dt { "Children" } dd {
                @if m.children.is_empty() { "none held" }
                @for c in m.children.iter().take(CHILDREN_SHOWN_MAX) { (message_link(queue, *c)) " " }
                @if m.children.len() > CHILDREN_SHOWN_MAX { "and " (m.children.len() - CHILDREN_SHOWN_MAX) " more" }
            }
            @if let Some(r) = m.replay_of { dt { "Copy of" } dd { (message_link(queue, r)) } }
            @if let Some(t) = &m.traceparent { dt { "traceparent" } dd { code { (t) } } }
            @if let Some(t) = &m.tracestate { dt { "tracestate" } dd { code { (t) } } }
        }
    }
}

/// What the verdict means, in a sentence.
fn verdict_text(verdict: &str) -> &'static str {
    match verdict {
        "delivered" => "Every subscriber of its fan-out set acknowledged it.",
        "in_flight" => "An attempt is on the wire.",
        "retry_scheduled" => "An attempt failed; the next one is scheduled.",
        "subscriber_saturated" => {
            "Its turn has come, but every in-flight slot of the subscriber is taken."
        }
        "subscriber_paused" => {
            "The subscriber is paused or disabled: nothing goes to it until it is resumed."
        }
        "queued" => "Behind other messages of the same subscriber.",
        "scheduled" => "Published for later: it goes when it is due.",
        "waiting_for_parent" => "A parent is not delivered yet.",
        "parent_dead" => {
            "A parent is dead: it waits for that parent to be redriven (or discarded)."
        }
        "dead" => "Its attempts ran out (or it died with its parent): redrive it to send it again.",
        _ => "",
    }
}

fn explanation(e: &Explain) -> Markup {
    html! {
        section #explain {
            p { (badge(e.verdict)) " " (verdict_text(e.verdict)) }
            @if let Some(root) = e.root_blocker {
                p { "The one to look at: " (any_message_link(root)) }
            }
            @if !e.blockers.is_empty() {
                table {
                    thead { tr { th { "Held back by" } th { "Queue" } th.n { "Depth" } th { "State" } th { "Why" } } }
                    tbody {
                        @for b in &e.blockers {
                            tr {
                                td { (message_link(&b.queue, b.id)) }
                                td { (b.queue) }
                                td.n { (b.depth) }
                                td { (badge(b.state)) }
                                td { (badge(b.reason)) }
                            }
                        }
                    }
                }
            }
            @if let Some(at) = &e.next_change_at { p.muted { "Next scheduled change: " (at) } }
            @if e.truncated { p.muted { "The walk up its ancestors stopped at its bound." } }
        }
    }
}

/// Each subscriber's deliveries of the message: published, attempts, the last error, the next
/// attempt or the acknowledgement.
fn deliveries(m: &views::Message) -> Markup {
    html! {
        @if m.deliveries.is_empty() {
            p.muted { "No subscriber takes it." }
        } @else {
            table {
                thead { tr { th { "Subscriber" } th { "State" } th { "Timeline" } } }
                tbody {
                    @for d in &m.deliveries {
                        tr {
                            td { "#" (d.subscriber) " " code { (d.endpoint) } }
                            td { (badge(d.state)) }
                            td {
                                ul.timeline {
                                    li { span.muted { (m.published_at) } " published" }
                                    @if d.attempts > 0 {
                                        li { (d.attempts) " attempt" @if d.attempts != 1 { "s" } " made"
                                            @if let Some(e) = &d.last_error { "; the last failed: " span.muted { (e) } } }
                                    }
                                    @if let Some(at) = &d.next_attempt_at { li { span.muted { (at) } " next attempt" } }
                                    @if let Some(at) = &d.acked_at { li { span.muted { (at) } " acknowledged" } }
                                    @if d.state == "dead" { li { "given up: a dead letter" } }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn actions(viewer: &Viewer, queue: &str, m: &views::Message) -> Markup {
    let to = |what: &str| format!("/ui/queues/{queue}/messages/{}/{what}", m.id);
    html! {
        div.cards {
            @if m.state == "dead" {
                form.card method="post" action=(to("redrive")) {
                    (viewer.csrf_field())
                    label { input type="checkbox" name="subtree" value="1"; " with every dead message below it" }
                    br;
                    button.primary #redrive type="submit" { "Redrive" }
                }
            }
            @if m.state == "delivered" {
                form.card method="post" action=(to("replay")) {
                    (viewer.csrf_field())
                    label { input type="checkbox" name="subtree" value="1"; " with its delivered descendants" } br;
                    label { input type="checkbox" name="as_new" value="1"; " as new messages (copies)" } br;
                    button #replay type="submit" { "Replay" }
                }
            }
            @if m.state != "delivered" {
                form.card method="post" action=(to("discard")) {
                    (viewer.csrf_field())
                    p.muted { "Give up on it; its waiting children go on." }
                    button.danger #discard type="submit" { "Discard" }
                }
            }
        }
    }
}

fn show_body(body: &[u8], view: &str) -> Markup {
    let cut = |max: usize| {
        (body.len() > max).then(|| {
            format!(
                "Showing the first {} of {}.",
                bytes(max as u64),
                bytes(body.len() as u64)
            )
        })
    };
    match view {
        "hex" => html! {
            @if let Some(c) = cut(BODY_HEX_SHOWN_MAX) { p.muted { (c) } }
            pre { (hex_dump(&body[..body.len().min(BODY_HEX_SHOWN_MAX)])) }
        },
        "json" if body.len() > BODY_SHOWN_MAX => html! {
            p.muted { "Too large to format (" (bytes(body.len() as u64)) "): see it as text." }
        },
        "json" => match serde_json::from_slice::<serde_json::Value>(body) {
            Ok(v) => html! { pre { (serde_json::to_string_pretty(&v).unwrap_or_default()) } },
            Err(e) => html! { p.error { "Not JSON: " (e) } },
        },
        _ => {
            let shown = &body[..body.len().min(BODY_SHOWN_MAX)];
            html! {
                @if let Some(c) = cut(BODY_SHOWN_MAX) { p.muted { (c) } }
                pre { (String::from_utf8_lossy(shown)) }
            }
        }
    }
}

/// Offset, sixteen bytes in hex, and the printable ones.
fn hex_dump(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 4 + 16);
    for (row, chunk) in bytes.chunks(16).enumerate() {
        let _ = write!(out, "{:08x}  ", row * 16);
        for i in 0..16 {
            match chunk.get(i) {
                Some(b) => {
                    let _ = write!(out, "{b:02x} ");
                }
                None => out.push_str("   "),
            }
        }
        out.push(' ');
        out.extend(chunk.iter().map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '.'
            }
        }));
        out.push('\n');
    }
    out
}

pub(crate) async fn act(
    State(ui): State<Ui>,
    Path((queue, id, what)): Path<(String, String, String)>,
    action: Action,
) -> UiResult {
    let id = crate::request::message_id(&id, "message")?;
    let scope = if action.field("subtree").is_some() {
        RedriveScope::Subtree
    } else {
        RedriveScope::Message
    };
    let here = super::widgets::message_href(&queue, id);
    match what.as_str() {
        "redrive" => {
            ui.space.redrive_scoped(&queue, id, scope, false).await?;
            Ok(done(&here, "redriven"))
        }
        "discard" => {
            ui.space.discard(&queue, id).await?;
            // A discarded message is gone: back to its queue.
            Ok(done(&format!("/ui/queues/{queue}"), "discarded"))
        }
        "replay" => {
            let options = ReplayOptions {
                scope,
                as_new: action.field("as_new").is_some(),
                dry_run: false,
            };
            let r = ui.space.replay(&queue, id, options).await?;
            let to = match r.copies.first() {
                Some(copy) => super::widgets::message_href(&queue, *copy),
                None => here,
            };
            Ok(done(&to, "replayed"))
        }
        other => Err(UiError(Problem::new(
            StatusCode::NOT_FOUND,
            format!("no action {other:?} on a message"),
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hex_dump_shows_offsets_bytes_and_text() {
        let d = hex_dump(b"syncbrok\x00\x01 body, seventeen!");
        let first = d.lines().next().unwrap();
        assert!(first.starts_with("00000000  73 79 6e 63"), "{first}");
        assert!(first.ends_with("syncbrok.. body,"), "{first}");
        assert!(d.lines().nth(1).unwrap().starts_with("00000010  "));
    }
}
