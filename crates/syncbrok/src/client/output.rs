//! How the client commands print what the broker answered: human tables by default, the
//! broker's JSON with `-o json` (for scripts), or only ids with `-q` (to capture them).

use serde_json::Value;

/// `-o`: the output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Tables and `key: value` lines, for people.
    #[default]
    Table,
    /// The broker's JSON, pretty-printed, for scripts.
    Json,
}

/// What an answer is, so that it gets its table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    QueueList,
    Queue,
    SubscriberList,
    Subscriber,
    Message,
    MessageList,
    /// `{"id", …}` of a published message.
    Published,
    DeadLetters,
    Explain,
    Lineage,
    /// Anything else: its fields as `key: value` lines.
    Fields,
}

/// The text to print for `v` (empty: print nothing).
pub fn render(v: &Value, view: View, format: Format, quiet: bool) -> String {
    if quiet {
        return ids(v, view).join("\n");
    }
    match format {
        Format::Json => serde_json::to_string_pretty(v).unwrap_or_default(),
        Format::Table => table_of(v, view),
    }
}

/// What `-q` prints: the ids (or names) the answer is about, one per line.
fn ids(v: &Value, view: View) -> Vec<String> {
    let each = |list: &Value, key: &str| -> Vec<String> {
        list.as_array()
            .into_iter()
            .flatten()
            .map(|item| text(&item[key]))
            .collect()
    };
    match view {
        View::QueueList => each(&v["queues"], "name"),
        View::Queue => vec![text(&v["name"])],
        View::SubscriberList => each(&v["subscribers"], "id"),
        View::DeadLetters => each(&v["dead_letters"], "id"),
        View::MessageList => each(&v["messages"], "id"),
        View::Lineage => each(&v["nodes"], "id"),
        _ if v["ids"].is_array() => v["ids"]
            .as_array()
            .into_iter()
            .flatten()
            .map(text)
            .collect(),
        _ if !v["id"].is_null() => vec![text(&v["id"])],
        _ => Vec::new(),
    }
}

fn table_of(v: &Value, view: View) -> String {
    match view {
        View::QueueList => table(
            &v["queues"],
            &[
                ("NAME", "/name"),
                ("SCHEDULED", "/counts/scheduled"),
                ("WAITING", "/counts/waiting"),
                ("READY", "/counts/ready"),
                ("DELIVERING", "/counts/delivering"),
                ("DELIVERED", "/counts/delivered"),
                ("DEAD", "/counts/dead"),
            ],
        ),
        View::Queue => {
            let mut out = fields(v, &["subscribers"]);
            out.push_str("\nsubscribers:\n");
            out.push_str(&subscribers(&v["subscribers"]));
            out
        }
        View::SubscriberList => subscribers(&v["subscribers"]),
        View::Message => {
            let mut out = fields(v, &["deliveries"]);
            out.push_str("\ndeliveries:\n");
            out.push_str(&table(
                &v["deliveries"],
                &[
                    ("SUBSCRIBER", "/subscriber"),
                    ("STATE", "/state"),
                    ("ATTEMPTS", "/attempts"),
                    ("NEXT ATTEMPT", "/next_attempt_at"),
                    ("LAST ERROR", "/last_error"),
                ],
            ));
            out
        }
        View::MessageList => table(
            &v["messages"],
            &[
                ("ID", "/id"),
                ("STATE", "/state"),
                ("TYPE", "/type"),
                ("PARENT", "/parent"),
                ("SIZE", "/size"),
                ("PUBLISHED", "/published_at"),
            ],
        ),
        View::Published if v["ids"].is_array() => ids(v, view).join("\n"),
        View::Published => text(&v["id"]),
        View::DeadLetters => table(
            &v["dead_letters"],
            &[
                ("ID", "/id"),
                ("SUBSCRIBER", "/subscriber"),
                ("REASON", "/reason"),
                ("ATTEMPTS", "/attempts"),
                ("DEAD AT", "/dead_at"),
                ("LAST ERROR", "/last_error"),
            ],
        ),
        View::Explain => {
            let mut out = fields(v, &["pending", "blockers", "subscribers"]);
            let pending = [
                ("SUBSCRIBER", "/subscriber"),
                ("STATE", "/state"),
                ("ATTEMPTS", "/attempts"),
                ("NEXT ATTEMPT", "/next_attempt_at"),
                ("LAST ERROR", "/last_error"),
            ];
            out.push_str("\npending:\n");
            out.push_str(&table(&v["pending"], &pending));
            out.push_str("\nblockers:\n");
            out.push_str(&table(
                &v["blockers"],
                &[
                    ("DEPTH", "/depth"),
                    ("ID", "/id"),
                    ("STATE", "/state"),
                    ("REASON", "/reason"),
                ],
            ));
            out.push_str("\nsubscribers:\n");
            out.push_str(&table(
                &v["subscribers"],
                &[
                    ("ID", "/id"),
                    ("STATE", "/state"),
                    ("IN FLIGHT", "/in_flight"),
                    ("FAILURES", "/consecutive_failures"),
                    ("LAST SUCCESS", "/last_success_at"),
                    ("LAST ERROR", "/last_error"),
                ],
            ));
            out
        }
        View::Lineage => {
            let mut out = table(&v["nodes"], &[("ID", "/id"), ("STATE", "/state")]);
            out.push_str("\nedges:\n");
            for e in v["edges"].as_array().into_iter().flatten() {
                out.push_str(&format!("{} -> {}\n", text(&e["from"]), text(&e["to"])));
            }
            if v["truncated"].as_bool() == Some(true) {
                out.push_str("(truncated: raise --up, --down or --limit)\n");
            }
            out
        }
        View::Subscriber | View::Fields => fields(v, &[]),
    }
}

fn subscribers(list: &Value) -> String {
    table(
        list,
        &[
            ("ID", "/id"),
            ("STATE", "/state"),
            ("ENDPOINT", "/endpoint"),
            ("HANDLER", "/handler"),
            ("IN FLIGHT", "/health/in_flight"),
            ("RATE/S", "/rate_limit/per_second"),
            ("TYPES", "/types"),
        ],
    )
}

/// A scalar as a cell: strings bare, `null` as `-`, lists joined with commas.
fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(items) if items.iter().all(|i| !i.is_object()) => {
            items.iter().map(text).collect::<Vec<_>>().join(",")
        }
        other => other.to_string(),
    }
}

/// Rows of `list` under `columns` (header, JSON pointer), aligned; `(none)` when empty.
fn table(list: &Value, columns: &[(&str, &str)]) -> String {
    let rows: Vec<Vec<String>> = list
        .as_array()
        .into_iter()
        .flatten()
        .map(|item| {
            columns
                .iter()
                .map(|(_, at)| text(item.pointer(at).unwrap_or(&Value::Null)))
                .collect()
        })
        .collect();
    if rows.is_empty() {
        return "(none)\n".into();
    }
    let mut widths: Vec<usize> = columns.iter().map(|(h, _)| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(columns.iter().map(|(h, _)| (*h).to_owned()).collect());
    for row in rows {
        out.push_str(&line(row));
    }
    out
}

/// An object's fields as `key: value` lines, nested objects as `key.sub: value`, leaving out
/// the keys in `skip` (shown as tables of their own).
fn fields(v: &Value, skip: &[&str]) -> String {
    let mut out = String::new();
    let mut walk = Vec::new();
    if let Some(obj) = v.as_object() {
        for (k, x) in obj.iter().rev() {
            if !skip.contains(&k.as_str()) {
                walk.push((k.clone(), x));
            }
        }
    } else {
        return format!("{}\n", text(v));
    }
    while let Some((key, x)) = walk.pop() {
        match x.as_object() {
            Some(obj) if !obj.is_empty() => {
                for (k, y) in obj.iter().rev() {
                    walk.push((format!("{key}.{k}"), y));
                }
            }
            _ => out.push_str(&format!("{key}: {}\n", text(x))),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_align_and_mark_what_is_missing() {
        let v = json!({"queues": [
            {"name": "orders", "counts": {"scheduled": 0, "waiting": 1, "ready": 20, "delivering": 3, "delivered": 0, "dead": 2}},
            {"name": "q", "counts": {"waiting": 0}},
        ]});
        let t = render(&v, View::QueueList, Format::Table, false);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "NAME    SCHEDULED  WAITING  READY  DELIVERING  DELIVERED  DEAD"
        );
        assert_eq!(
            lines[1],
            "orders  0          1        20     3           0          2"
        );
        assert_eq!(
            lines[2],
            "q       -          0        -      -           -          -"
        );
        assert_eq!(
            render(&v, View::QueueList, Format::Table, true),
            "orders\nq"
        );
        let empty = json!({"queues": []});
        assert_eq!(
            render(&empty, View::QueueList, Format::Table, false),
            "(none)\n"
        );
    }

    #[test]
    fn objects_print_as_fields_and_ids_alone_with_quiet() {
        let v = json!({"id": 7, "endpoint": "http://a/", "rate_limit": {"per_second": 5}, "types": ["a.*", "b"], "health": {"last_error": null}});
        let t = render(&v, View::Subscriber, Format::Table, false);
        assert!(t.contains("id: 7\n"), "{t}");
        assert!(t.contains("rate_limit.per_second: 5\n"), "{t}");
        assert!(t.contains("types: a.*,b\n"), "{t}");
        assert!(t.contains("health.last_error: -\n"), "{t}");
        assert_eq!(render(&v, View::Subscriber, Format::Table, true), "7");
        let published = json!({"id": "0190", "queue": "q", "parent": null});
        assert_eq!(
            render(&published, View::Published, Format::Table, false),
            "0190"
        );
        let json = render(&published, View::Published, Format::Json, false);
        assert_eq!(serde_json::from_str::<Value>(&json).unwrap(), published);
    }
}
