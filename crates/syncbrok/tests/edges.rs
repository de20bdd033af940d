//! The API server's edges against the real binary over loopback: clients that send half a
//! request, drip a body, go quiet, or open more connections than the cap. Timeouts are set
//! short in the configuration so that each case takes a second or two.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

fn broker(dir: &tempfile::TempDir, server: &str) -> common::Broker {
    let config = dir.path().join("syncbrok.yml");
    std::fs::write(&config, format!("server:\n{server}")).unwrap();
    common::spawn(
        &dir.path().join("data"),
        &["--config".as_ref(), config.as_os_str()],
        Stdio::null(),
    )
}

fn connect(b: &common::Broker) -> TcpStream {
    let addr = b.url.strip_prefix("http://").unwrap();
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// Reads until the server closes the connection; returns what it sent and how long it took.
fn until_closed(s: &mut TcpStream) -> (String, Duration) {
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the server did not close the connection: {e}"),
        }
    }
    (String::from_utf8_lossy(&got).into_owned(), start.elapsed())
}

/// Reads one whole response with `Content-Length` (the API always sends it).
fn response(s: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed before a response");
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got);
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            if got.len() >= end + 4 + len {
                return text.into_owned();
            }
        }
    }
}

const GET: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";

#[test]
fn half_a_request_is_cut_off_at_the_header_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(&dir, "  header_timeout: 1s\n  idle_timeout: 30s\n");
    let mut s = connect(&b);
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let (answer, took) = until_closed(&mut s);
    assert!(took < Duration::from_secs(5), "closed after {took:?}");
    assert!(!answer.contains("200 OK"), "{answer}");
    // Normal clients go on being served.
    let mut ok = connect(&b);
    ok.write_all(GET).unwrap();
    assert!(response(&mut ok).starts_with("HTTP/1.1 200"));
    b.terminate();
}

#[test]
fn a_silent_connection_is_closed_at_the_idle_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(&dir, "  idle_timeout: 1s\n");
    // One that never sent a byte, one that went quiet after a request on a kept-alive
    // connection.
    let mut never = connect(&b);
    let mut after = connect(&b);
    after.write_all(GET).unwrap();
    assert!(response(&mut after).starts_with("HTTP/1.1 200"));
    for s in [&mut never, &mut after] {
        let (rest, took) = until_closed(s);
        assert!(rest.is_empty(), "{rest}");
        assert!(took < Duration::from_secs(5), "closed after {took:?}");
    }
    b.terminate();
}

#[test]
fn a_dripped_body_is_answered_408_at_the_body_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(&dir, "  body_timeout: 1s\n  idle_timeout: 30s\n");
    let mut s = connect(&b);
    s.write_all(b"PUT /v1/queues/q HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        .unwrap();
    let start = Instant::now();
    let answer = response(&mut s);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("did not arrive within"), "{answer}");
    assert!(start.elapsed() < Duration::from_secs(5));
    b.terminate();
}

#[test]
fn past_the_connection_cap_new_clients_wait_until_one_closes() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(&dir, "  max_connections: 2\n  idle_timeout: 30s\n");
    let mut held: Vec<TcpStream> = (0..2).map(|_| connect(&b)).collect();
    for s in &mut held {
        s.write_all(GET).unwrap();
        assert!(response(s).starts_with("HTTP/1.1 200"));
    }
    let mut third = connect(&b); // the kernel completes the handshake; the broker waits
    third.write_all(GET).unwrap();
    third
        .set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    let mut buf = [0u8; 64];
    let err = third.read(&mut buf).expect_err("served past the cap");
    assert!(matches!(
        err.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    ));
    drop(held.pop());
    third
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert!(response(&mut third).starts_with("HTTP/1.1 200"));
    b.terminate();
}

#[test]
fn shutdown_does_not_wait_past_its_grace_for_a_stuck_client() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(
        &dir,
        "  idle_timeout: 1h\n  header_timeout: 1h\nshutdown_grace: 1s\n",
    );
    let mut s = connect(&b);
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap(); // never finished
    std::thread::sleep(Duration::from_millis(200));
    let start = Instant::now();
    let status = b.terminate();
    assert!(status.success(), "{status:?}");
    assert!(
        start.elapsed() < Duration::from_secs(6),
        "took {:?}",
        start.elapsed()
    );
}

/// Sends one HTTP/1.1 request and returns the response's head and body.
fn request(b: &common::Broker, head: &str, body: &[u8]) -> String {
    let mut s = connect(b);
    s.write_all(
        format!(
            "{head}\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .unwrap();
    s.write_all(body).unwrap();
    response(&mut s)
}

#[test]
fn sigterm_during_recovery_exits_0() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let b = common::spawn(&data, &[], Stdio::null());
    assert!(request(&b, "PUT /v1/queues/q HTTP/1.1", b"").starts_with("HTTP/1.1 201"));
    let entries = vec![r#"{"body":"x"}"#; 1000].join(",");
    let batch = format!(r#"{{"messages":[{entries}]}}"#);
    for _ in 0..20 {
        let answer = request(
            &b,
            "POST /v1/queues/q/messages/batch HTTP/1.1",
            batch.as_bytes(),
        );
        assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    }
    b.kill9();

    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_syncbrok"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(&data)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    for line in lines.by_ref() {
        if line.unwrap().contains("recovering the log") {
            break;
        }
    }
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}: {rest:?}");
    assert!(rest.iter().any(|l| l.contains("stopped")), "{rest:?}");
}

/// A subscriber server that answers every request 204 and counts them.
fn counting_sink() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let count = std::sync::Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let seen = seen.clone();
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = s.read(&mut chunk) else { return };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).into_owned();
                    let Some(end) = text.find("\r\n\r\n") else {
                        continue;
                    };
                    let len = text[..end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap())
                        })
                        .unwrap_or(0);
                    if buf.len() < end + 4 + len {
                        continue;
                    }
                    buf.drain(..end + 4 + len);
                    seen.fetch_add(1, Ordering::SeqCst);
                    if s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").is_err() {
                        return;
                    }
                }
            });
        }
    });
    (url, count)
}

/// `endpoints.allow` holds for subscribers restored from the log, not only for those added
/// under it: started again with a list that excludes it, the broker does not connect to a
/// subscriber added before, and the attempt's error says why.
#[test]
fn a_restored_subscriber_outside_a_narrower_allow_list_gets_nothing() {
    use std::sync::atomic::Ordering;
    let dir = tempfile::tempdir().unwrap();
    let (sink, received) = counting_sink();
    let b = broker(&dir, "  idle_timeout: 30s\n");
    assert!(request(&b, "PUT /v1/queues/q HTTP/1.1", b"").starts_with("HTTP/1.1 201"));
    let sub = format!(r#"{{"endpoint": "{sink}"}}"#);
    let answer = request(&b, "POST /v1/queues/q/subscribers HTTP/1.1", sub.as_bytes());
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    assert!(request(&b, "POST /v1/queues/q/messages HTTP/1.1", b"one").starts_with("HTTP/1.1 201"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while received.load(Ordering::SeqCst) < 1 {
        assert!(
            Instant::now() < deadline,
            "the first message was not delivered"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(b.terminate().success());

    let config = dir.path().join("syncbrok.yml");
    std::fs::write(&config, "endpoints:\n  allow: [\"10.0.0.0/8\"]\n").unwrap();
    let b = common::spawn(
        &dir.path().join("data"),
        &["--config".as_ref(), config.as_os_str()],
        Stdio::null(),
    );
    let published = request(&b, "POST /v1/queues/q/messages HTTP/1.1", b"two");
    assert!(published.starts_with("HTTP/1.1 201"), "{published}");
    let id = published
        .split("\"id\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let shown = request(&b, &format!("GET /v1/queues/q/messages/{id} HTTP/1.1"), b"");
        if shown.contains("endpoints.allow") {
            break;
        }
        assert!(Instant::now() < deadline, "no refusal shown: {shown}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        received.load(Ordering::SeqCst),
        1,
        "nothing more reached the subscriber"
    );
    b.terminate();
}
