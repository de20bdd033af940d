//! `/ui/dead-letters`: dead letters of every queue, grouped by reason and subscriber, with a
//! bulk redrive that first says how many it would send again.

use std::collections::{BTreeMap, HashMap};

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use maud::{Markup, html};

use super::session::Action;
use super::widgets::{badge, message_link, notice, queue_page, queue_pager};
use super::{Nav, Ui, UiResult, Viewer, done, layout};
use crate::views::DeadLetterView;

/// Dead letters of a queue read to group them (the oldest; the queue's page lists them all,
/// paged).
pub const DEAD_LETTERS_GROUPED_MAX: usize = 200;
/// Dead messages linked one by one per queue.
pub const DEAD_LETTERS_LISTED_MAX: usize = 20;

pub(crate) async fn page(
    State(ui): State<Ui>,
    Extension(viewer): Extension<Viewer>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    // Only queues with dead messages, a page of them at a time.
    let with_dead: Vec<String> = ui
        .space
        .queue_names()
        .into_iter()
        .filter(|n| ui.space.queue_info(n).is_ok_and(|i| i.counts.dead > 0))
        .collect();
    let (names, next) = queue_page(with_dead, query.get("after"));
    let mut sections = Vec::new();
    for name in names {
        let Ok(info) = ui.space.queue_info(&name) else {
            continue;
        };
        let Ok((letters, next)) = ui.space.dead_letters(&name, None, DEAD_LETTERS_GROUPED_MAX)
        else {
            continue;
        };
        let letters: Vec<DeadLetterView> = letters.into_iter().map(DeadLetterView::from).collect();
        sections.push(queue_section(
            &viewer,
            &name,
            info.counts.dead,
            &letters,
            next.is_some(),
        ));
    }
    let content = html! {
        h1 { "Dead letters" }
        (notice(&query))
        div data-live {
            @if sections.is_empty() { p.ok-note { "No dead letters." } }
            @for s in sections { (s) }
            (queue_pager("/ui/dead-letters", next))
        }
    };
    layout("Dead letters", &viewer, Nav::DeadLetters, content)
}

fn queue_section(
    viewer: &Viewer,
    queue: &str,
    dead_messages: u64,
    letters: &[DeadLetterView],
    more: bool,
) -> Markup {
    let mut groups: BTreeMap<(&str, String), (usize, Option<&str>)> = BTreeMap::new();
    for d in letters {
        let who = match (d.subscriber, &d.endpoint) {
            (Some(id), Some(e)) => format!("#{id} {e}"),
            (Some(id), None) => format!("#{id}"),
            _ => "every subscriber".to_owned(),
        };
        let g = groups.entry((d.reason, who)).or_insert((0, None));
        g.0 += 1;
        if g.1.is_none() {
            g.1 = d.last_error.as_deref();
        }
    }
    html! {
        section id={ "q-" (queue) } {
            h2 { a href={ "/ui/queues/" (queue) "?state=dead" } { (queue) } ": " (dead_messages) " dead messages" }
            table {
                thead { tr { th { "Reason" } th { "Subscriber" } th.n { "Dead letters" } th { "An error" } } }
                tbody {
                    @for ((reason, who), (n, error)) in &groups {
                        tr { td { (badge(reason)) } td { code { (who) } } td.n { (n) } td { span.muted { (error.unwrap_or("—")) } } }
                    }
                }
            }
            @if more { p.muted { "Grouped: the oldest " (DEAD_LETTERS_GROUPED_MAX) " dead letters." } }
            p {
                "Oldest: "
                @for id in oldest(letters) { (message_link(queue, id)) " " }
            }
            @if viewer.can_act() {
                form method="post" action={ "/ui/queues/" (queue) "/dead-letters/redrive" } {
                    (viewer.csrf_field())
                    button #{ "redrive-all-" (queue) } type="submit" { "Redrive all…" }
                }
            }
        }
    }
}

/// The first dead messages (a message dead for several subscribers once).
fn oldest(letters: &[DeadLetterView]) -> Vec<uuid::Uuid> {
    let mut ids: Vec<uuid::Uuid> = Vec::with_capacity(DEAD_LETTERS_LISTED_MAX);
    for d in letters {
        if ids.len() == DEAD_LETTERS_LISTED_MAX {
            break;
        }
        if !ids.contains(&d.id) {
            ids.push(d.id);
        }
    }
    ids
}

/// Without `confirm`: the dry run, how many would be sent again, and the button that does
/// it. With it: every dead message of the queue sent again.
pub(crate) async fn redrive_all(
    State(ui): State<Ui>,
    Extension(viewer): Extension<Viewer>,
    Path(queue): Path<String>,
    action: Action,
) -> UiResult {
    if action.field("confirm") == Some("yes") {
        ui.space.redrive_all(&queue).await?;
        return Ok(done("/ui/dead-letters", "redriven_all"));
    }
    let dead = ui.space.queue_info(&queue)?.counts.dead;
    let content = html! {
        h1 { "Redrive the dead messages of " code { (queue) } "?" }
        p #dry-run { "This sends " strong { (dead) } " dead messages of " (queue)
            " again to the subscribers that did not acknowledge them, attempts starting over." }
        form method="post" action={ "/ui/queues/" (queue) "/dead-letters/redrive" } {
            (viewer.csrf_field())
            input type="hidden" name="confirm" value="yes";
            button.primary #confirm type="submit" { "Redrive " (dead) " messages" }
            " " a href="/ui/dead-letters" { "Cancel" }
        }
    };
    Ok(layout("Redrive", &viewer, Nav::DeadLetters, content))
}
