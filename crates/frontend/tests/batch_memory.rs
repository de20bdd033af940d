//! A batch publish costs memory bounded by the limits, not by how many entries a client packs
//! into the JSON: a 24 MiB batch of empty entries (8 million of them) is refused with 413
//! having allocated little more than the request itself. Every allocation of this test binary
//! is counted; the API runs in-process on an ephemeral port.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use space::{Space, SpaceConfig};
use storage::sim::SimDisk;

struct Counting;

static NOW: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = NOW.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(now, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        NOW.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const MIB: usize = 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_tiny_entries_is_refused_within_bounded_memory() {
    let (space, _) = Space::open(
        Arc::new(SimDisk::new(1)),
        SpaceConfig::new(storage::Config::default()),
        Arc::new(handler::HttpDeliverer::new()),
    )
    .unwrap();
    space.put_queue("q", &Default::default()).await.unwrap();
    let router = frontend::router(space, &frontend::ApiConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/v1/queues/q/messages/batch",
        listener.local_addr().unwrap()
    );
    tokio::spawn(async move { axum::serve(listener, router).await });

    let limit = frontend::limits::BATCH_JSON_BYTES_MAX;
    let mut json = Vec::with_capacity(limit);
    json.extend_from_slice(b"{\"messages\":[{}");
    while json.len() + 4 < limit {
        json.extend_from_slice(b",{}");
    }
    json.extend_from_slice(b"]}");
    let json = Bytes::from(json);

    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let before = NOW.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let r = client
        .request(
            Request::builder()
                .method(Method::POST)
                .uri(&url)
                .header("content-type", "application/json")
                .body(Full::new(json.clone()))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = r.status();
    let body = r.into_body().collect().await.unwrap().to_bytes();
    let peak = PEAK.load(Ordering::Relaxed) - before;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("at most 1000 messages"), "{text}");
    // Measured: about 4.7 times the request (the client's and the server's buffers of the
    // JSON, the chunks it arrived in and their copy into one buffer); a thousand parsed
    // entries are nothing next to it. Before entries were counted as they were parsed, this
    // request took over 2 GiB.
    assert!(
        peak < 6 * limit,
        "peak {} MiB above the baseline for a {} MiB request",
        peak / MIB,
        limit / MIB
    );
}
