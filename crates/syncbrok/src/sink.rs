//! `syncbrok sink`: a subscriber for trying things out. It prints one line per message it
//! receives and acknowledges it: a plain webhook or legacy request with `true` (so legacy
//! subscriptions work too), a CloudEvents batch with an empty 200 (every message of it).

use std::net::SocketAddr;

use anyhow::Context;
use axum::http::{HeaderMap, StatusCode};

#[derive(clap::Args)]
pub struct SinkArgs {
    /// Address to listen on, e.g. `--listen 127.0.0.1:20001`; subscribe `http://ADDR/` to a
    /// queue.
    #[arg(long, env = "SYNCBROK_SINK_LISTEN", default_value = "127.0.0.1:20000")]
    listen: SocketAddr,
}

/// Longest body the sink prints; the rest is cut.
const PRINT_BYTES_MAX: usize = 200;

/// Serves until `shutdown` completes.
pub async fn run(
    args: SinkArgs,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    async fn receive(headers: HeaderMap, body: axum::body::Bytes) -> (StatusCode, &'static str) {
        let (lines, answer) = lines(&headers, &body);
        for line in lines {
            println!("{line}");
        }
        answer
    }
    let router = axum::Router::new().fallback(axum::routing::post(receive));
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    println!(
        "syncbrok sink listening on http://{}/",
        listener.local_addr()?
    );
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
        .context("the sink failed")
}

/// The lines a request prints (one per message) and the answer it gets.
fn lines(headers: &HeaderMap, body: &[u8]) -> (Vec<String>, (StatusCode, &'static str)) {
    let h = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned()
    };
    let queue = h("syncbrok-queue");
    if h("content-type") == handler::batch::CONTENT_TYPE {
        let Ok(events) = serde_json::from_slice::<Vec<serde_json::Value>>(body) else {
            return (
                vec![format!(
                    "queue={queue} batch={} unreadable",
                    h("webhook-id")
                )],
                (StatusCode::BAD_REQUEST, "not a CloudEvents batch"),
            );
        };
        let lines = events.iter().map(|e| event_line(&queue, e)).collect();
        return (lines, (StatusCode::OK, ""));
    }
    let line = format!(
        "queue={queue} id={} parent={} attempt={} body={}",
        h("webhook-id"),
        h("syncbrok-parent"),
        h("syncbrok-attempt"),
        printable(body),
    );
    (vec![line], (StatusCode::OK, "true"))
}

/// One event of a batch, as a line like a single message's.
fn event_line(queue: &str, e: &serde_json::Value) -> String {
    use base64::Engine;
    let text = |field: &str| match &e[field] {
        serde_json::Value::Null => "-".to_owned(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let body = match (&e["data"], &e["data_base64"]) {
        (serde_json::Value::Null, serde_json::Value::String(b64)) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap_or_else(|_| b64.as_bytes().to_vec());
            printable(&bytes)
        }
        (data, _) => printable(data.to_string().as_bytes()),
    };
    format!(
        "queue={queue} id={} parent={} attempt={} body={body}",
        text("id"),
        text("syncbrokparent"),
        text("syncbrokattempt"),
    )
}

fn printable(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(PRINT_BYTES_MAX)]);
    let cut = if body.len() > PRINT_BYTES_MAX {
        "…"
    } else {
        ""
    };
    format!("{text}{cut}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_prints_a_line_per_message_and_is_acknowledged_whole() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "content-type",
            handler::batch::CONTENT_TYPE.parse().unwrap(),
        );
        headers.insert("syncbrok-queue", "orders".parse().unwrap());
        let body = br#"[{"id":"a","syncbrokattempt":1,"data":{"n":1}},
            {"id":"b","syncbrokattempt":2,"syncbrokparent":"a","data_base64":"aGk="}]"#;
        let (printed, answer) = lines(&headers, body);
        assert_eq!(
            printed,
            [
                r#"queue=orders id=a parent=- attempt=1 body={"n":1}"#,
                "queue=orders id=b parent=a attempt=2 body=hi",
            ]
        );
        assert_eq!(answer, (StatusCode::OK, ""));
        let (_, answer) = lines(&headers, b"{}");
        assert_eq!(answer.0, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn a_single_message_is_acknowledged_with_true() {
        let mut headers = HeaderMap::new();
        headers.insert("webhook-id", "m1".parse().unwrap());
        let (printed, answer) = lines(&headers, &[b'x'; 300]);
        assert!(printed[0].starts_with("queue=- id=m1 parent=- attempt=- body=xxx"));
        assert!(printed[0].ends_with("x…"));
        assert_eq!(answer, (StatusCode::OK, "true"));
    }
}
