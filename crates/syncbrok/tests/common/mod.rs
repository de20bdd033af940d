//! What the binary's black-box tests share: the real `syncbrok serve`, started on port 0.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

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
