//! The CLI's client commands: a thin HTTP client of the API v1.

use std::path::PathBuf;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Method;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

mod cluster;
mod dead_letters;
mod messages;
mod output;
mod publish;
mod queues;
mod subscribers;
mod tail;
pub use cluster::{ClusterCommand, cluster};
pub use dead_letters::{DeadLettersCommand, dead_letters};
pub use messages::{
    LineageArgs, MessageArgs, MessageCommand, ReplayArgs, explain, lineage, message, replay,
};
use output::View;
pub use publish::{PublishArgs, publish};
pub use queues::{QueueCommand, queue};
pub use subscribers::{SubscribeArgs, SubscribersCommand, subscribe, subscribers};
pub use tail::{TailArgs, tail};

/// A queue name, checked as the command line is read: a mistake is a usage error in the CLI's
/// words, not the broker's answer to a malformed URL.
#[derive(Debug, Clone)]
pub struct QueueName(String);

impl std::str::FromStr for QueueName {
    type Err = String;

    fn from_str(s: &str) -> Result<QueueName, String> {
        space::validate_queue_name(s)
            .map(|()| QueueName(s.to_owned()))
            .map_err(|_| "a queue name is 1 to 128 of A-Z a-z 0-9 . _ - (e.g. orders)".to_owned())
    }
}

impl std::fmt::Display for QueueName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::ops::Deref for QueueName {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

/// A message id, checked as the command line is read.
#[derive(Debug, Clone, Copy)]
pub struct MessageRef(space::MessageId);

impl std::str::FromStr for MessageRef {
    type Err = String;

    fn from_str(s: &str) -> Result<MessageRef, String> {
        s.trim().parse().map(MessageRef).map_err(|_| {
            "a message id is the UUID a publish answered (e.g. 01a21208-2d41-7000-8000-040000000000)"
                .to_owned()
        })
    }
}

impl std::fmt::Display for MessageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Where the broker is, and how to authenticate.
#[derive(clap::Args, Clone)]
pub struct Target {
    /// The broker's address, e.g. `--url https://broker.example:10000`.
    #[arg(
        long,
        env = "SYNCBROK_URL",
        default_value = "http://127.0.0.1:10000",
        global = true
    )]
    pub url: String,
    /// A bearer token, when the broker has `auth.tokens`, e.g. `--token "$SYNCBROK_TOKEN"`.
    #[arg(long, env = "SYNCBROK_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// With an https `--url`: a PEM file of certificates to trust besides Mozilla's roots
    /// (e.g. the broker's own self-signed certificate).
    #[arg(long, env = "SYNCBROK_CACERT", global = true)]
    pub cacert: Option<PathBuf>,
    /// With an https `--url`: accept any certificate (still encrypted, not authenticated).
    #[arg(long, global = true)]
    pub insecure: bool,
    /// Seconds to wait for the broker's answer before giving up, e.g. `--timeout 5`.
    #[arg(long, env = "SYNCBROK_TIMEOUT", default_value_t = 30, global = true)]
    pub timeout: u64,
    /// Output: `table` (for people) or `json` (the broker's answer, for scripts).
    #[arg(
        short = 'o',
        long,
        env = "SYNCBROK_OUTPUT",
        value_enum,
        default_value_t = output::Format::Table,
        global = true
    )]
    pub output: output::Format,
    /// Print only the ids (or names) of what the answer is about, one per line.
    #[arg(short = 'q', long, global = true)]
    pub quiet: bool,
}

struct Answer {
    status: hyper::StatusCode,
    body: Bytes,
}

/// Why a command failed, as its exit status says (docs/api.md, "Command line"): scripts can
/// tell a missing resource from a refused request from a broker that is not there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// 404: no such queue, message or subscriber.
    NotFound,
    /// 400, 409, 413, 422, 429 and other 4xx: the broker refused the request as it is.
    Refused,
    /// 401, 403: the token is missing, unknown or not allowed to do this.
    Denied,
    /// Unreachable, or 5xx: the broker cannot serve now.
    Unavailable,
    /// No answer within `--timeout`.
    Timeout,
}

impl FailureKind {
    pub fn exit_code(self) -> u8 {
        match self {
            FailureKind::NotFound => 3,
            FailureKind::Refused | FailureKind::Denied => 4,
            FailureKind::Unavailable | FailureKind::Timeout => 5,
        }
    }

    fn of(status: hyper::StatusCode) -> FailureKind {
        match status.as_u16() {
            404 => FailureKind::NotFound,
            401 | 403 => FailureKind::Denied,
            500.. => FailureKind::Unavailable,
            _ => FailureKind::Refused,
        }
    }
}

/// A failed command: its kind and what to tell the user.
#[derive(Debug)]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

fn failure(kind: FailureKind, message: String) -> anyhow::Error {
    Failure { kind, message }.into()
}

async fn call(
    target: &Target,
    method: Method,
    path: &str,
    headers: &[(&str, String)],
    body: Bytes,
) -> anyhow::Result<Answer> {
    let exchange = async {
        let response = send(target, method, path, headers, body).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        anyhow::Ok(Answer { status, body })
    };
    within_timeout(target, path, exchange).await
}

/// `fut`, or a timeout failure after `--timeout` seconds.
async fn within_timeout<T>(
    target: &Target,
    path: &str,
    fut: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    let wait = std::time::Duration::from_secs(target.timeout);
    tokio::time::timeout(wait, fut).await.map_err(|_| {
        failure(
            FailureKind::Timeout,
            format!(
                "no answer from {}{path} within {}s (--timeout)",
                target.url.trim_end_matches('/'),
                target.timeout
            ),
        )
    })?
}

/// Sends a request to the broker and returns its response as it starts (status and headers;
/// the body streams). Every command's requests go through here.
async fn send(
    target: &Target,
    method: Method,
    path: &str,
    headers: &[(&str, String)],
    body: Bytes,
) -> anyhow::Result<hyper::Response<hyper::body::Incoming>> {
    let base = target.url.trim_end_matches('/');
    let https = base.starts_with("https://");
    if !https && !base.starts_with("http://") {
        bail!("--url {base:?} must start with http:// or https:// (e.g. http://127.0.0.1:10000)");
    }
    let tls = crate::tls::client_config(target.cacert.as_deref(), target.insecure)?;
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let mut url = format!("{base}{path}");
    // A cluster node that does not lead answers 307 with the leader's URL: the request goes
    // there (a few hops at most, during an election).
    for _ in 0..=REDIRECTS_MAX {
        let mut req = hyper::Request::builder().method(method.clone()).uri(&url);
        if let Some(t) = &target.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let request = req
            .body(Full::new(body.clone()))
            .with_context(|| format!("cannot make a request to {url}"))?;
        let response = client.request(request).await.map_err(|e| {
            failure(
                FailureKind::Unavailable,
                format!(
                    "cannot reach {url}: {} (is the broker running at {base}? --url or SYNCBROK_URL names it)",
                    handler::error_chain(&e)
                ),
            )
        })?;
        let redirected = matches!(
            response.status(),
            hyper::StatusCode::TEMPORARY_REDIRECT | hyper::StatusCode::PERMANENT_REDIRECT
        );
        match response.headers().get(hyper::header::LOCATION) {
            Some(location) if redirected => {
                let next = location
                    .to_str()
                    .context("a redirect to an unreadable location")?
                    .to_owned();
                if url.starts_with("https://") && !next.starts_with("https://") {
                    bail!("{url} redirects to {next}, which is not https: not followed");
                }
                url = next;
            }
            _ => return Ok(response),
        }
    }
    Err(failure(
        FailureKind::Unavailable,
        format!("more than {REDIRECTS_MAX} redirects from {base}{path}"),
    ))
}

/// Redirects followed per request (a cluster's followers send requests to the leader).
const REDIRECTS_MAX: usize = 3;

/// Fails with the problem's detail unless the answer is a success.
fn check(a: &Answer) -> anyhow::Result<()> {
    if !a.status.is_success() {
        let detail = serde_json::from_slice::<serde_json::Value>(&a.body)
            .ok()
            .and_then(|v| v["detail"].as_str().map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&a.body).into_owned());
        return Err(failure(
            FailureKind::of(a.status),
            format!("{}: {detail}", a.status),
        ));
    }
    Ok(())
}

/// Prints a successful answer as `target` asks (a table of `view`, JSON, or ids), or fails
/// with the problem's detail.
fn finish(target: &Target, a: Answer, view: View) -> anyhow::Result<()> {
    check(&a)?;
    match serde_json::from_slice::<serde_json::Value>(&a.body) {
        Ok(v) => print(target, &v, view),
        Err(_) if a.body.is_empty() => {}
        Err(_) => println!("{}", String::from_utf8_lossy(&a.body)),
    }
    Ok(())
}

fn print(target: &Target, v: &serde_json::Value, view: View) {
    let text = output::render(v, view, target.output, target.quiet);
    if !text.is_empty() {
        println!("{}", text.trim_end_matches('\n'));
    }
}

/// `path` with the query parameters that have a value.
fn with_query(mut path: String, params: &[(&str, Option<String>)]) -> String {
    let mut sep = '?';
    for (name, value) in params {
        if let Some(v) = value {
            path.push(sep);
            path.push_str(name);
            path.push('=');
            path.push_str(v);
            sep = '&';
        }
    }
    path
}

/// Which page of a list.
#[derive(clap::Args)]
pub struct Pages {
    /// Items per page (1–1000, default 100), e.g. `--limit 500`.
    #[arg(long)]
    limit: Option<u32>,
    /// Start after this id: the `next` of the page before, e.g. `--after
    /// 01a21208-2d41-7000-8000-040000000063`.
    #[arg(long)]
    after: Option<String>,
    /// Every page, one after the other, as one list.
    #[arg(long, conflicts_with = "after")]
    all: bool,
}

/// A paged list (`key` names its items in each page): one page, saying on stderr when more
/// follow, or (`all`) every page as one list.
async fn list_pages(
    target: &Target,
    path: &str,
    key: &str,
    view: View,
    query: &[(&str, Option<String>)],
    pages: Pages,
) -> anyhow::Result<()> {
    let Pages {
        limit,
        mut after,
        all,
    } = pages;
    let mut items = Vec::new();
    loop {
        let mut params = query.to_vec();
        params.push(("limit", limit.map(|l| l.to_string())));
        params.push(("after", after.clone()));
        let page_path = with_query(path.to_owned(), &params);
        let a = call(target, Method::GET, &page_path, &[], Bytes::new()).await?;
        check(&a)?;
        let mut page: serde_json::Value =
            serde_json::from_slice(&a.body).context("the broker's answer is not JSON")?;
        if !all {
            print(target, &page, view);
            if let Some(next) = page["next"].as_str() {
                eprintln!("more follow: --after {next}, or --all for every page");
            }
            return Ok(());
        }
        if let Some(page_items) = page[key].as_array_mut() {
            items.append(page_items);
        }
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => break,
        }
    }
    let mut whole = serde_json::json!({ "next": null });
    whole[key] = items.into();
    print(target, &whole, view);
    Ok(())
}
