//! Small pieces the pages share: state badges, message links, ages, pagers, notices.

use std::collections::HashMap;

use maud::{Markup, html};
use uuid::Uuid;

/// A message state (or a delivery's) as a coloured badge.
pub fn badge(state: &str) -> Markup {
    html! { span class={ "badge s-" (state) } { (state.replace('_', " ")) } }
}

/// The end of a message id: enough to tell messages of one page apart (the start of a UUIDv7
/// is its time, alike for messages published together).
pub fn short(id: Uuid) -> String {
    let s = id.simple().to_string();
    format!("…{}", &s[s.len() - 10..])
}

pub fn message_href(queue: &str, id: Uuid) -> String {
    format!("/ui/queues/{queue}/messages/{id}")
}

/// A link to a message, shown by its short id (the whole id on hover).
pub fn message_link(queue: &str, id: Uuid) -> Markup {
    html! { a.id href=(message_href(queue, id)) title=(id) { code { (short(id)) } } }
}

/// A link to a message of any queue (its id names its queue: `/ui/messages/{id}` finds it).
pub fn any_message_link(id: Uuid) -> Markup {
    html! { a.id href={ "/ui/messages/" (id) } title=(id) { code { (short(id)) } } }
}

/// Queues listed on a page of a list of queues …
pub const QUEUES_PER_PAGE: usize = 50;

/// … the page of `names` (sorted) after `after`, and the name to go on after, if any.
pub fn queue_page(mut names: Vec<String>, after: Option<&String>) -> (Vec<String>, Option<String>) {
    names.sort_unstable();
    let start = after.map_or(0, |a| names.partition_point(|n| n <= a));
    let page: Vec<String> = names
        .into_iter()
        .skip(start)
        .take(QUEUES_PER_PAGE + 1)
        .collect();
    if page.len() > QUEUES_PER_PAGE {
        let shown = page[..QUEUES_PER_PAGE].to_vec();
        let next = shown.last().cloned();
        (shown, next)
    } else {
        (page, None)
    }
}

/// "Next queues" when there are more.
pub fn queue_pager(base: &str, next: Option<String>) -> Markup {
    html! {
        @if let Some(n) = next {
            p.pager { a href={ (base) "?after=" (n) } { "Next queues →" } }
        }
    }
}

/// Milliseconds as a short duration: `850 ms`, `12 s`, `4 min`, `3 h`, `2 d`.
pub fn age(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..120_000 => format!("{} s", ms / 1_000),
        120_000..7_200_000 => format!("{} min", ms / 60_000),
        7_200_000..172_800_000 => format!("{} h", ms / 3_600_000),
        _ => format!("{} d", ms / 86_400_000),
    }
}

/// Bytes as `512 B`, `3.2 KiB`, `41.0 MiB`, `1.5 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// What a change just did, from the `done` the page was sent back with. Only notices known
/// here are shown: a link cannot make a page say something of its own.
pub fn notice(query: &HashMap<String, String>) -> Markup {
    let text = match query.get("done").map(String::as_str) {
        Some("redriven") => "Redriven: sent again to the subscribers that had not acknowledged it.",
        Some("redriven_all") => "Every dead message of the queue was sent again.",
        Some("discarded") => "Discarded: its waiting children go on.",
        Some("replayed") => "Replayed.",
        Some("published") => "Published.",
        Some("saved") => "Settings saved.",
        Some("paused") => "Subscriber paused: its messages wait.",
        Some("resumed") => "Subscriber resumed.",
        _ => return html! {},
    };
    html! { p.notice role="status" { (text) } }
}

/// "Next page" when there is one: the same page with `after` set.
pub fn pager(base: &str, next: Option<Uuid>) -> Markup {
    let sep = if base.contains('?') { '&' } else { '?' };
    html! {
        @if let Some(n) = next {
            p.pager { a href={ (base) (sep) "after=" (n) } { "Next page →" } }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_ages_read_well() {
        assert_eq!(age(850), "850 ms");
        assert_eq!(age(12_000), "12 s");
        assert_eq!(age(240_000), "4 min");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 * 1024 + 205), "3.2 KiB");
        assert_eq!(bytes(3 << 30), "3.0 GiB");
    }

    #[test]
    fn queues_page_by_name() {
        let names: Vec<String> = (0..120).map(|i| format!("q{i:03}")).rev().collect();
        let (first, next) = queue_page(names.clone(), None);
        assert_eq!((first.len(), first[0].as_str()), (QUEUES_PER_PAGE, "q000"));
        assert_eq!(next.as_deref(), Some("q049"));
        let (third, next) = queue_page(names.clone(), Some(&"q099".to_owned()));
        assert_eq!((third.len(), third[0].as_str(), next), (20, "q100", None));
        let (exact, next) = queue_page(names[..50].to_vec(), None);
        assert_eq!((exact.len(), next), (50, None));
    }

    #[test]
    fn only_known_notices_are_shown() {
        let q = |v: &str| HashMap::from([("done".to_owned(), v.to_owned())]);
        assert!(notice(&q("saved")).into_string().contains("Settings saved"));
        assert_eq!(notice(&q("<script>you won</script>")).into_string(), "");
    }
}
