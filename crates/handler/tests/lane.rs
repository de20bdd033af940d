//! The connection a delivery lane keeps, against real servers on loopback that count their
//! connections: reused from one attempt to the next, replaced when the subscriber closed it,
//! never reused after an attempt dropped half-way.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use handler::HttpDeliverer;
use space::{Channel, Deliverer, Outcome};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How the test server treats each connection.
#[derive(Clone, Copy)]
enum Behaviour {
    /// Keep-alive: answers every request 200.
    KeepAlive,
    /// Answers one request (keep-alive, by its headers), then closes the connection unasked.
    CloseAfterOne,
    /// Never answers the very first request it gets; answers the others.
    HangFirst,
}

struct Server {
    url: String,
    connections: Arc<AtomicUsize>,
    /// `Host` header of each request.
    hosts: Arc<std::sync::Mutex<Vec<String>>>,
}

/// Reads one request head (and its small body); returns its `Host`, or `None` at EOF.
async fn read_request(stream: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            while buf.len() < end + 4 + length {
                let n = stream.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let host = head
                .lines()
                .find_map(|l| l.strip_prefix("host:"))
                .map(|h| h.trim().to_string())
                .unwrap_or_default();
            return Some(host);
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn server(behaviour: Behaviour) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let connections = Arc::new(AtomicUsize::new(0));
    let hosts: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let requests = Arc::new(AtomicUsize::new(0));
    let (c, h) = (connections.clone(), hosts.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            c.fetch_add(1, Ordering::SeqCst);
            let (h, requests) = (h.clone(), requests.clone());
            tokio::spawn(async move {
                while let Some(host) = read_request(&mut stream).await {
                    h.lock().unwrap().push(host);
                    let n = requests.fetch_add(1, Ordering::SeqCst);
                    if matches!(behaviour, Behaviour::HangFirst) && n == 0 {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                    }
                    let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
                    if stream.write_all(answer).await.is_err() {
                        return;
                    }
                    if matches!(behaviour, Behaviour::CloseAfterOne) {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        return;
                    }
                }
            });
        }
    });
    Server {
        url,
        connections,
        hosts,
    }
}

#[tokio::test]
async fn a_lane_sends_its_attempts_over_one_connection() {
    let s = server(Behaviour::KeepAlive).await;
    let d = HttpDeliverer::new();
    let mut channel = Channel::default();
    for n in 0..5 {
        let outcome = d.deliver_on(common::attempt(&s.url, n), &mut channel).await;
        assert_eq!(outcome, Outcome::Acked);
    }
    assert_eq!(s.connections.load(Ordering::SeqCst), 1);
    let host = s
        .url
        .trim_start_matches("http://")
        .trim_end_matches("/hook");
    assert!(s.hosts.lock().unwrap().iter().all(|h| h == host));
    // Another lane has its own.
    let mut other = Channel::default();
    assert_eq!(
        d.deliver_on(common::attempt(&s.url, 9), &mut other).await,
        Outcome::Acked
    );
    assert_eq!(s.connections.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_connection_the_subscriber_closed_is_replaced_without_a_failed_attempt() {
    let s = server(Behaviour::CloseAfterOne).await;
    let d = HttpDeliverer::new();
    let mut channel = Channel::default();
    for n in 0..4 {
        let outcome = d.deliver_on(common::attempt(&s.url, n), &mut channel).await;
        assert_eq!(outcome, Outcome::Acked, "attempt {n}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(s.connections.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn a_connection_is_not_reused_after_an_attempt_dropped_half_way() {
    let s = server(Behaviour::HangFirst).await;
    let d = HttpDeliverer::new();
    let mut channel = Channel::default();
    let timed_out = tokio::time::timeout(
        Duration::from_millis(200),
        d.deliver_on(common::attempt(&s.url, 0), &mut channel),
    )
    .await;
    assert!(timed_out.is_err(), "the first request hangs");
    assert!(channel.is_empty(), "the hanging connection was kept");
    let outcome = d.deliver_on(common::attempt(&s.url, 1), &mut channel).await;
    assert_eq!(outcome, Outcome::Acked);
    assert_eq!(s.connections.load(Ordering::SeqCst), 2);
}
