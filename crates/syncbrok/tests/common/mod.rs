//! What the binary's black-box tests share: the real `syncbrok serve`, started on port 0.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

pub struct Broker {
    pub child: Child,
    pub url: String,
}

/// Starts `syncbrok serve` on a free port with `data` and the extra arguments, and waits for
/// it to listen. Its stderr goes where `stderr` says.
pub fn spawn(data: &std::path::Path, extra: &[&std::ffi::OsStr], stderr: Stdio) -> Broker {
    let mut command = Command::new(env!("CARGO_BIN_EXE_syncbrok"));
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .args(extra)
        .stderr(stderr);
    start(command)
}

/// Runs `command` (a `syncbrok serve` that listens on port 0) and waits for it to listen.
pub fn start(mut command: Command) -> Broker {
    let mut child = command.stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("syncbrok listening on ")
        .unwrap_or_else(|| panic!("the broker did not start: {line:?}"))
        .to_owned();
    Broker { child, url }
}

impl Broker {
    pub fn terminate(mut self) -> std::process::ExitStatus {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        self.child.wait().unwrap()
    }

    /// SIGKILL, and what the broker wrote on stderr if it was piped.
    pub fn kill9(mut self) -> String {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        let mut stderr = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
        }
        stderr
    }
}

/// A subscriber on `127.0.0.1:0` (HTTP/1.1, keep-alive) answering every request with what
/// `answer` makes of it; returns its URL, `http://ADDR/hook`.
pub async fn hook_server<F, Fut>(answer: F) -> String
where
    F: Fn(hyper::Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = hyper::Response<http_body_util::Full<bytes::Bytes>>>
        + Send
        + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let answer = answer.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let answer = answer.clone();
                    async move { Ok::<_, std::convert::Infallible>(answer(req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    url
}

/// `syncbrok serve` on port 0 with `data` and `extra` arguments, its log discarded.
pub fn serving(data: &std::path::Path, extra: &[&str]) -> Broker {
    let extra: Vec<&std::ffi::OsStr> = extra.iter().map(std::ffi::OsStr::new).collect();
    spawn(data, &extra, Stdio::null())
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

pub async fn call(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Reply {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let mut r = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let response = client
        .request(r.body(Full::new(body.into())).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body,
    }
}

/// Creates queue `queue` at the broker `url` with `settings` (JSON) and subscribes `endpoints`.
pub async fn queue_with(url: &str, queue: &str, settings: &str, endpoints: &[&str]) {
    let r = call(
        Method::PUT,
        &format!("{url}/v1/queues/{queue}"),
        &[],
        settings.to_owned(),
    )
    .await;
    assert!(r.status.is_success(), "{:?}", r.body);
    for endpoint in endpoints {
        let r = call(
            Method::POST,
            &format!("{url}/v1/queues/{queue}/subscribers"),
            &[],
            serde_json::json!({ "endpoint": endpoint }).to_string(),
        )
        .await;
        assert!(r.status.is_success(), "{:?}", r.body);
    }
}

/// A subscriber that records (message id, body) and answers 200 `true`.
pub async fn sink() -> (String, Arc<Mutex<Vec<(String, Bytes)>>>) {
    let got: Arc<Mutex<Vec<(String, Bytes)>>> = Arc::default();
    let record = got.clone();
    let url = hook_server(move |req: Request<hyper::body::Incoming>| {
        let record = record.clone();
        async move {
            let header_id = req
                .headers()
                .get("webhook-id")
                .map(|v| v.to_str().unwrap().to_owned());
            let body = req.into_body().collect().await.unwrap().to_bytes();
            // Legacy deliveries carry the id in their JSON instead.
            let id = header_id.unwrap_or_else(|| {
                let v: Value = serde_json::from_slice(&body).unwrap();
                v["id"].as_str().unwrap().to_owned()
            });
            record.lock().unwrap().push((id, body));
            // `true` acknowledges legacy deliveries; webhooks ignore the body.
            hyper::Response::new(Full::new(Bytes::from("true")))
        }
    })
    .await;
    (url, got)
}

pub async fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub fn closed_port() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}/hook", l.local_addr().unwrap())
}

pub fn cli(url: &str, args: &[&str], stdin: &str) -> (bool, String, String) {
    let (code, out, err) = cli_code(url, args, stdin);
    (code == 0, out, err)
}

/// Runs the CLI against `url`: its exit status, standard output and standard error.
pub fn cli_code(url: &str, args: &[&str], stdin: &str) -> (i32, String, String) {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_syncbrok"))
        .arg("--url")
        .arg(url)
        // Tests read the broker's JSON; those of the tables say `-o table`.
        .env("SYNCBROK_OUTPUT", "json")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A command that ends without reading its input (it failed early) closes the pipe: its
    // exit code and stderr then say why, which the caller checks.
    if let Err(e) = child.stdin.take().unwrap().write_all(stdin.as_bytes()) {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// One request with a deadline, following a `307` (a cluster's follower sending it to the
/// leader) once; `None` when it could not be made or answered in time.
pub async fn call_following(
    client: &Client<HttpConnector, Full<Bytes>>,
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: &str,
    within: Duration,
) -> Option<(StatusCode, Bytes)> {
    let mut url = url.to_owned();
    for _ in 0..2 {
        let mut r = Request::builder().method(method.clone()).uri(&url);
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        let request = r.body(Full::new(Bytes::from(body.to_owned()))).ok()?;
        let response = tokio::time::timeout(within, client.request(request))
            .await
            .ok()?
            .ok()?;
        if response.status() == StatusCode::TEMPORARY_REDIRECT {
            url = response
                .headers()
                .get(http::header::LOCATION)?
                .to_str()
                .ok()?
                .to_owned();
            continue;
        }
        let status = response.status();
        let body = tokio::time::timeout(within, response.into_body().collect())
            .await
            .ok()?
            .ok()?
            .to_bytes();
        return Some((status, body));
    }
    None
}
