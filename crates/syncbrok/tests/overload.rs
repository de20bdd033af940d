//! The overload suite: the real binary under hostile load, all at once — half-sent requests
//! holding connections (slowloris), 24 MiB batches of empty entries, oversized headers,
//! thousands of idle connections, many queues with many subscribers — while a normal client
//! publishes. Checked: the broker's RSS stays under a bound stated from its limits, the normal
//! client's publishes are answered, and every one of them is delivered.
//!
//! `OVERLOAD_SCALE` (default 1, what `cargo test` and CI run) multiplies the attackers;
//! `scripts/overload.sh` runs it at scale 10 against the release build.

mod common;

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MIB: u64 = 1024 * 1024;

fn scale() -> usize {
    std::env::var("OVERLOAD_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

async fn call(client: &HttpClient, method: Method, url: &str, body: Bytes) -> StatusCode {
    let r = Request::builder()
        .method(method)
        .uri(url)
        .body(Full::new(body))
        .unwrap();
    match client.request(r).await {
        Ok(response) => {
            let status = response.status();
            let _ = response.into_body().collect().await;
            status
        }
        Err(_) => StatusCode::from_u16(599).unwrap(),
    }
}

/// Distinct (message id, subscriber) pairs a sink received.
type Seen = Arc<std::sync::Mutex<std::collections::HashSet<(String, String)>>>;

/// A subscriber that acknowledges everything and records what it got, by message id and by
/// the query that tells its subscribers apart.
async fn sink() -> (String, Seen) {
    let seen: Seen = Arc::default();
    let record = seen.clone();
    let url = common::hook_server(move |req: Request<hyper::body::Incoming>| {
        let record = record.clone();
        async move {
            if let Some(id) = req.headers().get("webhook-id") {
                let id = id.to_str().unwrap_or_default().to_owned();
                let who = req.uri().query().unwrap_or_default().to_owned();
                record.lock().unwrap().insert((id, who));
            }
            let _ = req.into_body().collect().await;
            hyper::Response::new(Full::new(Bytes::new()))
        }
    })
    .await;
    (url, seen)
}

/// The broker's resident memory, from `/proc`.
fn rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Opens `n` connections that send half a request head, a byte every second, until `stop`.
async fn slowloris(addr: String, n: usize, stop: Arc<AtomicUsize>) {
    let mut tasks = Vec::new();
    for _ in 0..n {
        let addr = addr.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let Ok(mut s) = tokio::net::TcpStream::connect(&addr).await else {
                return;
            };
            if s.write_all(b"POST /v1/queues/q0/messages HTTP/1.1\r\nHost: x\r\n")
                .await
                .is_err()
            {
                return;
            }
            while stop.load(Ordering::Relaxed) == 0 {
                if s.write_all(b"X").await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// Sends `n` batches of 24 MiB of empty entries, `at_once` at a time; each must be refused.
async fn floods(url: String, n: usize, at_once: usize) -> usize {
    let limit = frontend::limits::BATCH_JSON_BYTES_MAX;
    let mut json = Vec::with_capacity(limit);
    json.extend_from_slice(b"{\"messages\":[{}");
    while json.len() + 4 < limit {
        json.extend_from_slice(b",{}");
    }
    json.extend_from_slice(b"]}");
    let json = Bytes::from(json);
    let client: HttpClient = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let sem = Arc::new(tokio::sync::Semaphore::new(at_once));
    let mut tasks = Vec::new();
    for _ in 0..n {
        let (client, url, json, sem) = (client.clone(), url.clone(), json.clone(), sem.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire().await;
            call(&client, Method::POST, &url, json).await
        }));
    }
    let mut refused = 0;
    for t in tasks {
        if t.await.unwrap() == StatusCode::PAYLOAD_TOO_LARGE {
            refused += 1;
        }
    }
    refused
}

/// Requests whose headers are far over any reasonable size: refused, not buffered.
async fn oversized_headers(addr: String, n: usize) -> usize {
    let mut closed_or_refused = 0;
    for _ in 0..n {
        let Ok(mut s) = tokio::net::TcpStream::connect(&addr).await else {
            closed_or_refused += 1;
            continue;
        };
        let big = "a".repeat(1024 * 1024);
        let head = format!("GET /v1/queues HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n");
        let _ = s.write_all(head.as_bytes()).await;
        let mut answer = vec![0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut answer))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(0);
        let text = String::from_utf8_lossy(&answer[..n]);
        if n == 0 || text.starts_with("HTTP/1.1 431") || text.starts_with("HTTP/1.1 400") {
            closed_or_refused += 1;
        }
    }
    closed_or_refused
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_load_leaves_normal_clients_served_and_memory_bounded() {
    let scale = scale();
    let dir = tempfile::tempdir().unwrap();
    let b = common::spawn(&dir.path().join("data"), &[], Stdio::null());
    let pid = b.child.id();
    let addr = b.url.strip_prefix("http://").unwrap().to_owned();
    let client: HttpClient = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let (hook, seen) = sink().await;

    // Many queues, each with several subscribers (all to the same sink).
    let queues = 20 * scale;
    for q in 0..queues {
        let url = format!("{}/v1/queues/q{q}", b.url);
        assert_eq!(
            call(&client, Method::PUT, &url, Bytes::new()).await,
            StatusCode::CREATED
        );
        for s in 0..4 {
            let sub = format!(r#"{{"endpoint": "{hook}?s={s}"}}"#);
            let url = format!("{}/v1/queues/q{q}/subscribers", b.url);
            assert_eq!(
                call(&client, Method::POST, &url, Bytes::from(sub)).await,
                StatusCode::CREATED
            );
        }
    }
    let baseline = rss_bytes(pid);

    // The attackers, all at once.
    let stop = Arc::new(AtomicUsize::new(0));
    let loris = tokio::spawn(slowloris(addr.clone(), 200 * scale, stop.clone()));
    let flood = tokio::spawn(floods(
        format!("{}/v1/queues/q0/messages/batch", b.url),
        4 * scale,
        2,
    ));
    let headers = tokio::spawn(oversized_headers(addr.clone(), 10 * scale));
    let idle: Vec<tokio::net::TcpStream> = {
        let mut v = Vec::new();
        for _ in 0..500 * scale.min(3) {
            if let Ok(s) = tokio::net::TcpStream::connect(&addr).await {
                v.push(s);
            }
        }
        v
    };
    let peak = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (peak, stop) = (peak.clone(), stop.clone());
        tokio::spawn(async move {
            while stop.load(Ordering::Relaxed) == 0 {
                peak.fetch_max(rss_bytes(pid) as usize, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    // The normal client, meanwhile, for as long as the floods last.
    let messages = 200 * scale;
    let mut accepted = 0;
    let mut slowest = Duration::ZERO;
    let mut i = 0;
    while i < messages || !flood.is_finished() || !headers.is_finished() {
        i += 1;
        let url = format!("{}/v1/queues/q{}/messages", b.url, i % queues);
        let started = Instant::now();
        let status = call(&client, Method::POST, &url, Bytes::from(format!("m{i}"))).await;
        slowest = slowest.max(started.elapsed());
        assert_eq!(status, StatusCode::CREATED, "a normal publish under load");
        accepted += 1;
    }
    let refused_floods = flood.await.unwrap();
    let refused_headers = headers.await.unwrap();
    stop.store(1, Ordering::Relaxed);
    let _ = loris.await;
    drop(idle);
    sampler.await.unwrap();

    // Every accepted message reaches each of its queue's four subscribers.
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.lock().unwrap().len() < 4 * accepted {
        assert!(
            Instant::now() < deadline,
            "{} of {} deliveries",
            seen.lock().unwrap().len(),
            4 * accepted
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let peak = peak.load(Ordering::Relaxed) as u64;
    // The bound: what the broker held before the attack, plus two floods in parallel at their
    // measured ~5× the 24 MiB request (tests/batch_memory.rs), plus 64 KiB per connection.
    let connections = (200 * scale + 500 * scale.min(3)) as u64;
    let bound = baseline + 2 * 5 * 24 * MIB + connections * 64 * 1024;
    eprintln!(
        "overload x{scale}: {accepted} publishes answered (slowest {slowest:?}), each delivered to its 4 subscribers; \
         {refused_floods}/{} floods refused; {refused_headers}/{} oversized heads refused; \
         RSS {} MiB before, peak {} MiB, bound {} MiB",
        4 * scale,
        10 * scale,
        baseline / MIB,
        peak / MIB,
        bound / MIB
    );
    assert_eq!(refused_floods, 4 * scale, "every flood is refused with 413");
    assert_eq!(
        refused_headers,
        10 * scale,
        "every oversized head is refused"
    );
    assert!(
        peak <= bound,
        "peak RSS {} MiB over the bound {} MiB",
        peak / MIB,
        bound / MIB
    );
    assert!(
        slowest < Duration::from_secs(10),
        "a publish took {slowest:?}"
    );
    assert!(b.terminate().success());
}
