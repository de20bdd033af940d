//! `/ui`: rates, queues with their counts, the disk, and what needs looking at.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::Extension;
use axum::extract::{Query, State};
use axum::response::Response;
use maud::{Markup, html};
use space::QueueInfo;

use super::widgets::{age, any_message_link, bytes, notice, queue_page, queue_pager};
use super::{Nav, Ui, Viewer, layout, rates};

/// Problems listed per kind at most.
const PROBLEMS_SHOWN_MAX: usize = 10;
/// How long the messages found holding back the most are shown before they are looked for
/// again (however many tabs refresh the overview).
pub const BLOCKING_REFRESH: Duration = Duration::from_secs(5);

/// A message holding back `below` waiting messages (at least, when `cut`).
#[derive(Clone)]
struct Root {
    queue: String,
    id: uuid::Uuid,
    below: usize,
    cut: bool,
}

/// The messages holding back the most, across queues, found at most every
/// [`BLOCKING_REFRESH`] and within one budget for all queues together.
#[derive(Default)]
pub(crate) struct Blocking {
    found: Mutex<Option<(Instant, Vec<Root>)>>,
}

impl Blocking {
    fn get(&self, ui: &Ui, queues: &[QueueInfo]) -> Vec<Root> {
        let mut found = self.found.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, roots)) = found.as_ref()
            && at.elapsed() < BLOCKING_REFRESH
        {
            return roots.clone();
        }
        let mut roots = Vec::new();
        let mut counted = 0;
        for q in queues.iter().filter(|q| q.counts.waiting > 0) {
            if counted >= space::limits::BLOCKING_ROOTS_COUNT_MAX {
                break;
            }
            let Ok(f) = ui.space.blocking_roots(&q.name) else {
                continue;
            };
            counted += f.roots.iter().map(|r| r.1).sum::<usize>();
            roots.extend(
                f.roots
                    .into_iter()
                    .take(PROBLEMS_SHOWN_MAX)
                    .map(|(id, below)| Root {
                        queue: q.name.clone(),
                        id,
                        below,
                        cut: f.cut,
                    }),
            );
        }
        roots.sort_by_key(|r| std::cmp::Reverse(r.below));
        roots.truncate(PROBLEMS_SHOWN_MAX);
        *found = Some((Instant::now(), roots.clone()));
        roots
    }
}

pub(crate) async fn page(
    State(ui): State<Ui>,
    Extension(viewer): Extension<Viewer>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let queues: Vec<QueueInfo> = ui
        .space
        .queue_names()
        .into_iter()
        .filter_map(|n| ui.space.queue_info(&n).ok())
        .collect();
    let series = ui.rates.series(&ui.space);
    let (names, next) = queue_page(
        queues.iter().map(|q| q.name.clone()).collect(),
        query.get("after"),
    );
    let shown: Vec<QueueInfo> = queues
        .iter()
        .filter(|q| names.binary_search(&q.name).is_ok())
        .cloned()
        .collect();
    let now = series.last().copied();
    let totals = ui.space.totals();
    let content = html! {
        h1 { "Overview" }
        (notice(&query))
        div data-live {
            @if let Some(why) = ui.space.refusing_writes() {
                p.error { "The log refuses writes: " (why) ". Nothing can be published or acknowledged until the broker is restarted." }
            }
            div.cards {
                (card("published/s", now.map_or(0.0, |r| r.published)))
                (card("delivered/s", now.map_or(0.0, |r| r.acked)))
                (card("failed attempts/s", now.map_or(0.0, |r| r.failed)))
                (count_card("in flight", totals.in_flight))
                (count_card("dead letters since start", totals.dead_lettered))
            }
            h2 { "Rates" }
            (rates::sparkline(&series))
            h2 { "Problems" }
            (problems(&ui, &queues))
            h2 { "Queues" }
            (queue_table(&shown))
            (queue_pager("/ui", next))
            h2 { "Disk" }
            (disk(&ui))
        }
    };
    layout("Overview", &viewer, Nav::Overview, content)
}

fn card(what: &str, per_second: f64) -> Markup {
    html! { div.card { div.v { (format!("{per_second:.1}")) } div.k { (what) } } }
}

fn count_card(what: &str, n: u64) -> Markup {
    html! { div.card { div.v { (n) } div.k { (what) } } }
}

/// Dead letters, failing subscribers and the messages holding back the most.
fn problems(ui: &Ui, queues: &[QueueInfo]) -> Markup {
    let dead: Vec<&QueueInfo> = queues.iter().filter(|q| q.counts.dead > 0).collect();
    let failing: Vec<(&QueueInfo, &space::SubscriberInfo)> = queues
        .iter()
        .flat_map(|q| q.subscribers.iter().map(move |s| (q, s)))
        .filter(|(_, s)| s.consecutive_failures > 0 || s.state == space::SubscriberState::Disabled)
        .collect();
    let blocking = ui.blocking.get(ui, queues);
    html! {
        @if dead.is_empty() && failing.is_empty() && blocking.is_empty() {
            p.ok-note { "Nothing needs looking at." }
        } @else {
            ul.problems {
                @for q in dead.iter().take(PROBLEMS_SHOWN_MAX) {
                    li { a href={ "/ui/dead-letters#q-" (q.name) } { (q.counts.dead) " dead" }
                        " in " a href={ "/ui/queues/" (q.name) } { (q.name) } }
                }
                @for (q, s) in failing.iter().take(PROBLEMS_SHOWN_MAX) {
                    li {
                        "Subscriber " a href="/ui/subscribers" { "#" (s.id) } " of "
                        a href={ "/ui/queues/" (q.name) } { (q.name) } " (" code { (s.endpoint) } "): "
                        @if s.state == space::SubscriberState::Disabled { "disabled; " }
                        (s.consecutive_failures) " failed attempts in a row"
                        @if let Some(e) = &s.last_error { ", last: " span.muted { (e) } }
                    }
                }
                @if dead.len() > PROBLEMS_SHOWN_MAX {
                    li.muted { "… and " (dead.len() - PROBLEMS_SHOWN_MAX) " more queues with dead messages" }
                }
                @if failing.len() > PROBLEMS_SHOWN_MAX {
                    li.muted { "… and " (failing.len() - PROBLEMS_SHOWN_MAX) " more failing subscribers" }
                }
                @for r in &blocking {
                    li { (any_message_link(r.id)) " holds back "
                        @if r.cut { "at least " } (r.below) " waiting message" @if r.below != 1 { "s" }
                        " in " a href={ "/ui/queues/" (r.queue) } { (r.queue) } }
                }
            }
        }
    }
}

fn queue_table(queues: &[QueueInfo]) -> Markup {
    html! {
        @if queues.is_empty() {
            p.muted { "No queues yet: create one with " code { "syncbrok queue create NAME" } " or " code { "PUT /v1/queues/NAME" } "." }
        } @else {
            table {
                thead { tr {
                    th { "Queue" } th.n { "Scheduled" } th.n { "Waiting" } th.n { "Ready" }
                    th.n { "Delivering" } th.n { "Delivered" } th.n { "Dead" }
                    th.n { "Oldest undelivered" } th.n { "Undelivered bytes" } th.n { "Subscribers" }
                } }
                tbody {
                    @for q in queues {
                        @let c = q.counts;
                        tr {
                            td { a href={ "/ui/queues/" (q.name) } { (q.name) } }
                            td.n { (c.scheduled) } td.n { (c.waiting) } td.n { (c.ready) }
                            td.n { (c.delivering) } td.n { (c.delivered) } td.n { (c.dead) }
                            td.n { (q.oldest_undelivered_age_ms.map(age).unwrap_or_else(|| "—".into())) }
                            td.n { (bytes(q.bytes)) }
                            td.n { (q.subscribers.len()) }
                        }
                    }
                }
            }
        }
    }
}

fn disk(ui: &Ui) -> Markup {
    let segments = ui.space.log_segments();
    let stats = ui.space.log_stats();
    html! {
        div.cards {
            div.card { div.v { (bytes(segments.iter().map(|s| s.bytes).sum())) } div.k { "log on disk" } }
            (count_card("segments", segments.len() as u64))
            (count_card("fsyncs since start", stats.syncs))
            (count_card("group writes since start", stats.writes))
            div.card { div.v { (bytes(stats.bytes)) } div.k { "written since start" } }
        }
    }
}
