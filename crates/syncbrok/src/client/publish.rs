//! `syncbrok publish`: one message from a file or a pipe, or (`--ndjson`) a batch, a JSON
//! object per line, published all or nothing.

use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, bail};
use bytes::Bytes;
use hyper::Method;

use super::{MessageRef, QueueName, Target, View, call, finish};

#[derive(clap::Args)]
pub struct PublishArgs {
    /// The queue, e.g. `orders`.
    pub queue: QueueName,
    /// A message it waits for (parented mode), e.g. `--parent 01a21208-2d41-7000-8000-040000000000`;
    /// give it again for a join: the message waits until every parent is delivered (at most
    /// 16, of any queue).
    #[arg(long, value_name = "ID")]
    pub parent: Vec<MessageRef>,
    /// Its content type, e.g. `--content-type application/json` (default
    /// application/octet-stream).
    #[arg(long)]
    pub content_type: Option<String>,
    /// Publish it once for this key within the queue's idempotency window, e.g.
    /// `--idempotency-key order-42`.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Its event type, e.g. `--type order.created` (sent as `ce-type`; subscribers' `types`
    /// filters match it).
    #[arg(long = "type", value_name = "TYPE")]
    pub event_type: Option<String>,
    /// Deliver this long from now, e.g. 30s or 2h (at most 30d).
    #[arg(long, conflicts_with = "deliver_at")]
    pub delay: Option<String>,
    /// Deliver at this RFC 3339 time, e.g. 2026-12-24T18:00:00Z (at most 30 days ahead).
    #[arg(long)]
    pub deliver_at: Option<String>,
    /// Publish even an empty body (refused otherwise: an empty standard input is more often a
    /// mistake than a message).
    #[arg(long)]
    pub allow_empty: bool,
    /// The file is a batch: a JSON object per line, as the batch API takes them (`body` or
    /// `body_base64`, `content_type`, `parent`/`parents`, `parent_index`/`parent_indexes` counting
    /// lines from 0, `idempotency_key`, `type`, `delay`, `deliver_at`), e.g.
    /// `{"body": "{\"order\": 1}", "type": "order.created"}`. All are published or none (at most
    /// 1000 lines); the other flags do not apply.
    #[arg(long, conflicts_with_all = ["parent", "content_type", "idempotency_key", "event_type", "delay", "deliver_at", "allow_empty"])]
    pub ndjson: bool,
    /// A file with the body (or the batch), e.g. `order.json`, or `-` (the default) for
    /// standard input.
    pub file: Option<PathBuf>,
}

/// A batch request from NDJSON: `{"messages": [line, …]}`, each line checked to be a JSON
/// object (blank lines skipped), at most [`space::limits::BATCH_MESSAGES_MAX`].
fn batch_of_ndjson(text: &[u8]) -> anyhow::Result<String> {
    let text = std::str::from_utf8(text).context("the batch is not UTF-8 text")?;
    let mut messages = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("line {}: not JSON", n + 1))?;
        if !v.is_object() {
            bail!(
                "line {}: a message is a JSON object, e.g. {{\"body\": \"hello\"}}",
                n + 1
            );
        }
        messages.push(v);
    }
    if messages.is_empty() {
        bail!("the batch has no messages: give a JSON object per line");
    }
    let max = space::limits::BATCH_MESSAGES_MAX;
    if messages.len() > max {
        bail!(
            "the batch has {} messages; one publish takes at most {max} (split the file: each part is published all or nothing)",
            messages.len()
        );
    }
    Ok(serde_json::json!({ "messages": messages }).to_string())
}

pub async fn publish(target: &Target, args: PublishArgs) -> anyhow::Result<()> {
    let body = match args.file.as_deref() {
        None => read_stdin()?,
        Some(p) if p.as_os_str() == "-" => read_stdin()?,
        Some(p) => std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?,
    };
    if args.ndjson {
        let path = format!("/v1/queues/{}/messages/batch", args.queue);
        let batch = batch_of_ndjson(&body)?;
        return finish(
            target,
            call(target, Method::POST, &path, &[], Bytes::from(batch)).await?,
            View::Published,
        );
    }
    if body.is_empty() && !args.allow_empty {
        bail!("the body is empty: give --allow-empty to publish an empty message");
    }
    let mut headers = Vec::new();
    if !args.parent.is_empty() {
        let list: Vec<String> = args.parent.iter().map(|p| p.to_string()).collect();
        headers.push(("syncbrok-parent", list.join(", ")));
    }
    if let Some(c) = args.content_type {
        headers.push(("content-type", c));
    }
    if let Some(t) = args.event_type {
        headers.push(("syncbrok-type", t));
    }
    if let Some(d) = args.delay {
        headers.push(("syncbrok-delay", d));
    }
    if let Some(t) = args.deliver_at {
        headers.push(("syncbrok-deliver-at", t));
    }
    if let Some(k) = args.idempotency_key {
        headers.push(("idempotency-key", k));
    }
    let path = format!("/v1/queues/{}/messages", args.queue);
    finish(
        target,
        call(target, Method::POST, &path, &headers, Bytes::from(body)).await?,
        View::Published,
    )
}

fn read_stdin() -> anyhow::Result<Vec<u8>> {
    use std::io::IsTerminal;
    if std::io::stdin().is_terminal() {
        bail!(
            "the body is read from standard input, which is a terminal: give a FILE, or pipe the body in (e.g. echo '{{}}' | syncbrok publish QUEUE)"
        );
    }
    let mut body = Vec::new();
    std::io::stdin()
        .read_to_end(&mut body)
        .context("cannot read standard input")?;
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::batch_of_ndjson;

    #[test]
    fn ndjson_becomes_one_batch_or_a_reason() {
        let batch =
            batch_of_ndjson(b"{\"body\": \"a\"}\n\n{\"body\": \"b\", \"parent_index\": 0}\n")
                .unwrap();
        let v: serde_json::Value = serde_json::from_str(&batch).unwrap();
        assert_eq!(v["messages"].as_array().unwrap().len(), 2);
        assert_eq!(v["messages"][1]["parent_index"], 0);
        let e = batch_of_ndjson(b"{}\n[1]\n").unwrap_err().to_string();
        assert!(e.starts_with("line 2:"), "{e}");
        let e = batch_of_ndjson(b"{}\nnope\n").unwrap_err().to_string();
        assert!(e.starts_with("line 2: not JSON"), "{e}");
        assert!(batch_of_ndjson(b"\n").is_err());
        let many = "{}\n".repeat(1001);
        let e = batch_of_ndjson(many.as_bytes()).unwrap_err().to_string();
        assert!(e.contains("at most 1000"), "{e}");
    }
}
