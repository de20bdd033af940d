//! `syncbrok tail QUEUE`: what happens to a queue's messages, as it happens (the broker's
//! `GET /v1/queues/{queue}/events` stream), a line per event until interrupted or `--count`.

use anyhow::Context;
use bytes::{Buf, BytesMut};
use http_body_util::BodyExt;
use hyper::Method;
use serde_json::Value;

use super::output::Format;
use super::{Answer, QueueName, Target, check, send, within_timeout};

#[derive(clap::Args)]
pub struct TailArgs {
    /// The queue to watch, e.g. `orders`.
    pub queue: QueueName,
    /// Stop after this many events (e.g. `--count 10`); without it, watch until interrupted.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
}

/// One server-sent event: its name and data.
#[derive(Debug, PartialEq, Eq)]
struct SseEvent {
    name: String,
    data: String,
}

/// Takes the complete events off the front of `buf` (an event ends with a blank line; lines
/// starting with `:` are comments, the broker's keep-alives).
fn take_events(buf: &mut BytesMut) -> Vec<SseEvent> {
    let mut out = Vec::new();
    while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
        let block = buf.split_to(end + 2);
        let text = String::from_utf8_lossy(&block);
        let (mut name, mut data) = (String::from("message"), String::new());
        for line in text.lines() {
            if let Some(v) = line.strip_prefix("event:") {
                name = v.trim().to_owned();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.trim_start());
            }
        }
        if !data.is_empty() {
            out.push(SseEvent { name, data });
        }
    }
    out
}

/// The line printed for an event: its JSON (with `event` added) for `-o json`, else columns.
fn line(e: &SseEvent, format: Format) -> String {
    let mut v: Value = serde_json::from_str(&e.data).unwrap_or(Value::Null);
    if format == Format::Json {
        if let Some(o) = v.as_object_mut() {
            o.insert("event".into(), Value::from(e.name.clone()));
        }
        return v.to_string();
    }
    let text = |k: &str| match &v[k] {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let detail = match e.name.as_str() {
        "failed" => format!(
            "attempt {}: {} (next {})",
            text("attempt"),
            text("error"),
            text("next_attempt_at")
        ),
        "delivered" => format!("attempt {}", text("attempt")),
        "dead_lettered" => text("reason"),
        "lagged" => format!(
            "{} events missed: this terminal reads slower than they come",
            text("missed")
        ),
        _ => String::new(),
    };
    let subscriber = match text("subscriber") {
        s if s.is_empty() => "-".to_owned(),
        s => format!("sub {s}"),
    };
    format!(
        "{:<24}  {:<13}  {:<36}  {:<8}  {detail}",
        text("at"),
        e.name,
        text("id"),
        subscriber
    )
}

pub async fn tail(target: &Target, args: TailArgs) -> anyhow::Result<()> {
    let path = format!("/v1/queues/{}/events", args.queue);
    let headers = [("accept", "text/event-stream".to_owned())];
    // The timeout covers getting the stream, not watching it.
    let response = within_timeout(
        target,
        &path,
        send(target, Method::GET, &path, &headers, bytes::Bytes::new()),
    )
    .await?;
    if !response.status().is_success() {
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        return check(&Answer { status, body });
    }
    let mut body = response.into_body();
    let mut buf = BytesMut::new();
    let mut printed = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.context("the broker ended the stream")?;
        let Ok(mut data) = frame.into_data() else {
            continue;
        };
        buf.extend_from_slice(&data.copy_to_bytes(data.remaining()));
        for e in take_events(&mut buf) {
            if e.name == "watching" {
                eprintln!("watching queue {} (Ctrl-C stops)", args.queue);
                continue;
            }
            println!("{}", line(&e, target.output));
            printed += 1;
            if args.count.is_some_and(|n| printed >= n) {
                return Ok(());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_cut_at_blank_lines_and_comments_skipped() {
        let mut buf = BytesMut::from(
            &b": keep-alive\n\nevent: delivered\ndata: {\"id\":\"x\",\"attempt\":1}\n\nevent: fai"
                [..],
        );
        let got = take_events(&mut buf);
        assert_eq!(
            got,
            vec![SseEvent {
                name: "delivered".into(),
                data: "{\"id\":\"x\",\"attempt\":1}".into()
            }]
        );
        assert_eq!(
            &buf[..],
            b"event: fai",
            "the incomplete event waits for the rest"
        );
        let json = line(&got[0], Format::Json);
        assert_eq!(
            serde_json::from_str::<Value>(&json).unwrap()["event"],
            "delivered"
        );
        assert!(line(&got[0], Format::Table).contains("attempt 1"));
    }
}
