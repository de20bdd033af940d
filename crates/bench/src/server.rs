//! The real `syncbrok` binary as a child process, driven over its HTTP API, as users run it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;

use crate::measure::BenchResult;
use crate::sink::{HttpClient, send};

/// Where the workloads that run the binary find it, put its data and write their results.
#[derive(clap::Args)]
pub struct Output {
    /// Directory for syncbrok's data (a temporary directory is made inside it).
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// The syncbrok binary (default: next to this one).
    #[arg(long)]
    pub syncbrok_bin: Option<PathBuf>,
    /// Also write results as JSON lines to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

impl Output {
    pub fn binary(&self) -> PathBuf {
        self.syncbrok_bin.clone().unwrap_or_else(default_binary)
    }
}

/// Where the `syncbrok` binary is: `--syncbrok-bin`, else next to this benchmark's binary
/// (both are built into the same `target/` directory).
pub fn default_binary() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("syncbrok")))
        .unwrap_or_else(|| PathBuf::from("syncbrok"))
}

pub struct Server {
    child: Child,
    api: Api,
    /// From spawning the process to its "listening" line: recovery included, since the API is
    /// served only once the log is replayed.
    pub start_to_ready: Duration,
}

impl Server {
    /// Starts `syncbrok serve` on an ephemeral loopback port with its data in `data` and
    /// `fsync: always`; its log goes to `data/../server.log`.
    pub fn start(binary: &Path, data: &Path) -> BenchResult<Self> {
        Self::start_with(binary, data, "127.0.0.1:0", &[])
    }

    /// [`Server::start`] listening on `listen`, with `extra` arguments (a cluster node's).
    pub fn start_with(
        binary: &Path,
        data: &Path,
        listen: &str,
        extra: &[String],
    ) -> BenchResult<Self> {
        let log_path = data.with_extension("log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let started = Instant::now();
        let mut child = Command::new(binary)
            .args(["serve", "--listen", listen, "--fsync", "always", "--data"])
            .arg(data)
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let base = loop {
            match lines.next() {
                Some(line) => {
                    let line = line?;
                    if let Some(url) = line.strip_prefix("syncbrok listening on ") {
                        break url.trim().to_string();
                    }
                }
                None => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!(
                        "syncbrok exited before listening; see {}",
                        log_path.display()
                    )
                    .into());
                }
            }
        };
        let start_to_ready = started.elapsed();
        // Keep reading so that the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Ok(Self {
            child,
            api: Api { base: base.into() },
            start_to_ready,
        })
    }

    /// The API's client side, to move into tasks.
    pub fn api(&self) -> Api {
        self.api.clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, as a crash would.
    pub fn kill(mut self) -> BenchResult<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

impl std::ops::Deref for Server {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}

/// The client side of a server's API: cheap to clone into publisher tasks.
#[derive(Clone)]
pub struct Api {
    /// `http://127.0.0.1:PORT`
    pub base: Arc<str>,
}

impl Api {
    /// Sends a JSON request to the API and checks the status class is 2xx.
    pub async fn call(
        &self,
        client: &HttpClient,
        method: hyper::Method,
        path: &str,
        json: String,
    ) -> BenchResult<Bytes> {
        let request = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(json)))?;
        let (status, body) = send(client, request).await?;
        if !status.is_success() {
            return Err(format!("{path}: {status}: {}", String::from_utf8_lossy(&body)).into());
        }
        Ok(body)
    }

    /// Creates queue `bench` with `settings` (a JSON object) and one webhook subscriber per
    /// endpoint.
    pub async fn bench_queue(
        &self,
        client: &HttpClient,
        settings: &str,
        endpoints: &[String],
        in_flight: u32,
        delivery_batch: u32,
    ) -> BenchResult<()> {
        self.call(
            client,
            hyper::Method::PUT,
            "/v1/queues/bench",
            settings.to_string(),
        )
        .await?;
        for endpoint in endpoints {
            self.call(
                client,
                hyper::Method::POST,
                "/v1/queues/bench/subscribers",
                // Without `batch` when it is 1, so that builds from before batched delivery
                // can be measured by the same bench (`--syncbrok-bin`).
                if delivery_batch > 1 {
                    format!(
                        r#"{{"endpoint":"{endpoint}","max_in_flight":{in_flight},"batch":{{"max_messages":{delivery_batch}}}}}"#
                    )
                } else {
                    format!(r#"{{"endpoint":"{endpoint}","max_in_flight":{in_flight}}}"#)
                },
            )
            .await?;
        }
        Ok(())
    }

    /// Publishes one message (raw body) to queue `bench`, naming `parent` if given; returns
    /// the id.
    pub async fn publish(
        &self,
        client: &HttpClient,
        body: Vec<u8>,
        parent: Option<&str>,
    ) -> BenchResult<String> {
        let mut request = hyper::Request::post(format!("{}/v1/queues/bench/messages", self.base))
            .header("content-type", "application/octet-stream");
        if let Some(parent) = parent {
            request = request.header("syncbrok-parent", parent);
        }
        let (status, answer) = send(client, request.body(Full::new(Bytes::from(body)))?).await?;
        if status != hyper::StatusCode::CREATED {
            return Err(format!("publish: {status}: {}", String::from_utf8_lossy(&answer)).into());
        }
        let answer: serde_json::Value = serde_json::from_slice(&answer)?;
        answer["id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| "publish answer without an id".into())
    }

    /// Publishes bodies (UTF-8) in one batch request to queue `bench`.
    pub async fn publish_batch(&self, client: &HttpClient, bodies: &[Vec<u8>]) -> BenchResult<()> {
        self.publish_batch_with(client, bodies, false).await
    }

    /// Publishes bodies (UTF-8) in one batch request, each naming the one before it as its
    /// parent (`parent_index`): a whole chain, durable at once.
    pub async fn publish_chain(&self, client: &HttpClient, bodies: &[Vec<u8>]) -> BenchResult<()> {
        self.publish_batch_with(client, bodies, true).await
    }

    async fn publish_batch_with(
        &self,
        client: &HttpClient,
        bodies: &[Vec<u8>],
        chained: bool,
    ) -> BenchResult<()> {
        let mut json =
            String::with_capacity(bodies.iter().map(|b| b.len() + 12).sum::<usize>() + 16);
        json.push_str(r#"{"messages":["#);
        for (i, body) in bodies.iter().enumerate() {
            if i > 0 {
                json.push(',');
            }
            json.push_str(r#"{"body":"#);
            json.push_str(&serde_json::to_string(std::str::from_utf8(body)?)?);
            if chained && i > 0 {
                json.push_str(&format!(r#","parent_index":{}"#, i - 1));
            }
            json.push('}');
        }
        json.push_str("]}");
        let request = hyper::Request::post(format!("{}/v1/queues/bench/messages/batch", self.base))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(json)))?;
        let (status, answer) = send(client, request).await?;
        if status != hyper::StatusCode::CREATED {
            return Err(format!(
                "batch publish: {status}: {}",
                String::from_utf8_lossy(&answer)
            )
            .into());
        }
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
