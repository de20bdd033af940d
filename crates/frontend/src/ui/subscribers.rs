//! `/ui/subscribers`: every subscriber of every queue with its health, paused and resumed from
//! here.

use std::collections::HashMap;

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use maud::{Markup, html};
use space::SubscriberUpdate;

use super::session::Action;
use super::widgets::{badge, notice, queue_page, queue_pager};
use super::{Nav, Ui, UiError, UiResult, Viewer, done, layout};
use crate::problem::Problem;
use crate::views;

pub(crate) async fn page(
    State(ui): State<Ui>,
    Extension(viewer): Extension<Viewer>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let (names, next) = queue_page(ui.space.queue_names(), query.get("after"));
    let mut all: Vec<(String, Vec<views::Subscriber>)> = Vec::new();
    for name in names {
        if let Ok(subs) = ui.space.subscribers(&name) {
            all.push((
                name,
                subs.into_iter().map(views::Subscriber::from).collect(),
            ));
        }
    }
    let groups: Vec<(&str, &[views::Subscriber])> = all
        .iter()
        .map(|(q, s)| (q.as_str(), s.as_slice()))
        .collect();
    let content = html! {
        h1 { "Subscribers" }
        (notice(&query))
        div data-live {
            (subscriber_rows(&viewer, &groups, true))
            (queue_pager("/ui/subscribers", next))
        }
    };
    layout("Subscribers", &viewer, Nav::Subscribers, content)
}

/// A table of subscribers, with pause and resume for an admin; `back_here`: the buttons come
/// back to this page (else to the queue's).
pub(crate) fn subscriber_rows(
    viewer: &Viewer,
    groups: &[(&str, &[views::Subscriber])],
    back_here: bool,
) -> Markup {
    let none = groups.iter().all(|(_, s)| s.is_empty());
    html! {
        @if none {
            p.muted { "No subscribers." }
        } @else {
            table {
                thead { tr {
                    th { "Queue" } th { "#" } th { "Endpoint" } th { "State" } th.n { "In flight" }
                    th.n { "Attempt p50 / p99" }
                    th.n { "Failures in a row" } th { "Last success" } th { "Last error" }
                    th { "Rate limit" } th { "Types" }
                    @if viewer.can_act() { th {} }
                } }
                tbody {
                    @for (queue, subs) in groups {
                        @for s in subs.iter() {
                            tr id={ "sub-" (queue) "-" (s.id) } {
                                td { a href={ "/ui/queues/" (queue) } { (queue) } }
                                td { (s.id) }
                                td { code { (s.endpoint) } " " span.muted { (s.handler) } }
                                td { (badge(s.state)) }
                                td.n { (s.health.in_flight) "/" (s.max_in_flight) }
                                td.n { (at_most(s.health.attempt_p50_ms)) " / " (at_most(s.health.attempt_p99_ms)) }
                                td.n { (s.health.consecutive_failures) }
                                td { (s.health.last_success_at.as_deref().unwrap_or("—")) }
                                td { span.muted { (s.health.last_error.as_deref().unwrap_or("—")) } }
                                td { @match &s.rate_limit { Some(r) => { (r.per_second) "/s" }, None => "—" } }
                                td { @match &s.types { Some(t) => { (t.join(", ")) }, None => "all" } }
                                @if viewer.can_act() {
                                    td { (switch(viewer, queue, s, back_here)) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A quantile's bucket bound, as "≤ 25 ms".
fn at_most(ms: Option<f64>) -> String {
    ms.map_or_else(|| "—".to_owned(), |ms| format!("≤ {ms} ms"))
}

fn switch(viewer: &Viewer, queue: &str, s: &views::Subscriber, back_here: bool) -> Markup {
    let (action, label) = if s.state == "active" {
        ("pause", "Pause")
    } else {
        ("resume", "Resume")
    };
    html! {
        form.inline method="post" action={ "/ui/queues/" (queue) "/subscribers/" (s.id) "/" (action) } {
            (viewer.csrf_field())
            @if back_here { input type="hidden" name="back" value="subscribers"; }
            button type="submit" { (label) }
        }
    }
}

pub(crate) async fn act(
    State(ui): State<Ui>,
    Path((queue, id, what)): Path<(String, String, String)>,
    action: Action,
) -> UiResult {
    let id: u64 = id
        .parse()
        .map_err(|_| Problem::bad_request(format!("subscriber {id:?} is not a number")))?;
    let (update, notice) = match what.as_str() {
        "pause" => (SubscriberUpdate::Pause, "paused"),
        "resume" => (SubscriberUpdate::Resume, "resumed"),
        other => {
            return Err(UiError(Problem::new(
                axum::http::StatusCode::NOT_FOUND,
                format!("no action {other:?} on a subscriber"),
            )));
        }
    };
    ui.space.update_subscriber(&queue, id, update).await?;
    let back = if action.field("back") == Some("subscribers") {
        "/ui/subscribers".to_owned()
    } else {
        format!("/ui/queues/{queue}")
    };
    Ok(done(&back, notice))
}
