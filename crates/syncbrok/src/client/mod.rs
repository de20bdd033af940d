//! The CLI's client commands: a thin HTTP client of the API v1.

use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Method;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

mod output;
mod subscribers;
mod tail;
use output::View;
pub use subscribers::{SubscribeArgs, SubscribersCommand, subscribe, subscribers};
pub use tail::{TailArgs, tail};

/// Where the broker is, and how to authenticate.
#[derive(clap::Args, Clone)]
pub struct Target {
    /// The broker's address.
    #[arg(
        long,
        env = "SYNCBROK_URL",
        default_value = "http://127.0.0.1:10000",
        global = true
    )]
    pub url: String,
    /// A bearer token, when the broker has `auth.tokens`.
    #[arg(long, env = "SYNCBROK_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// With an https `--url`: a PEM file of certificates to trust besides Mozilla's roots
    /// (e.g. the broker's own self-signed certificate).
    #[arg(long, env = "SYNCBROK_CACERT", global = true)]
    pub cacert: Option<PathBuf>,
    /// With an https `--url`: accept any certificate (still encrypted, not authenticated).
    #[arg(long, global = true)]
    pub insecure: bool,
    /// Seconds to wait for the broker's answer before giving up.
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

#[derive(clap::Args)]
pub struct PublishArgs {
    pub queue: String,
    /// A message it waits for (parented mode); give it again for a join: the message waits
    /// until every parent is delivered (at most 16).
    #[arg(long, value_name = "ID")]
    pub parent: Vec<String>,
    #[arg(long)]
    pub content_type: Option<String>,
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Its event type (sent as `ce-type`; subscribers' `types` filters match it).
    #[arg(long = "type", value_name = "TYPE")]
    pub event_type: Option<String>,
    /// Deliver this long from now, e.g. 30s or 2h (at most 30d).
    #[arg(long, conflicts_with = "deliver_at")]
    pub delay: Option<String>,
    /// Deliver at this RFC 3339 time, e.g. 2026-12-24T18:00:00Z (at most 30 days ahead).
    #[arg(long)]
    pub deliver_at: Option<String>,
    /// Publish even an empty body (refused otherwise: an empty standard input is more often a
    /// mistake than a message).
    #[arg(long)]
    pub allow_empty: bool,
    /// A file with the body, or `-` (the default) for standard input.
    pub file: Option<PathBuf>,
}

#[derive(clap::Subcommand)]
pub enum QueueCommand {
    /// Create a queue, or update its settings (JSON as in the API).
    Create {
        name: String,
        /// Settings as JSON, e.g. '{"retry": {"max_attempts": 3}}'.
        #[arg(long)]
        settings: Option<String>,
    },
    /// List queues with their counts.
    List,
    /// Show a queue: settings, subscribers, counts.
    Show { name: String },
    /// Delete a queue and its messages. One that holds messages is deleted only after a yes
    /// on the terminal, or with --yes.
    Delete {
        name: String,
        /// Delete it even if it holds messages, without asking.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(clap::Args)]
pub struct MessageArgs {
    pub queue: String,
    /// The message's id.
    pub id: String,
}

#[derive(clap::Args)]
pub struct LineageArgs {
    pub queue: String,
    /// The message's id.
    pub id: String,
    /// Levels of ancestors (default 32).
    #[arg(long)]
    pub up: Option<u32>,
    /// Levels of descendants (default 32).
    #[arg(long)]
    pub down: Option<u32>,
    /// Messages in all (default 500).
    #[arg(long)]
    pub limit: Option<u32>,
}

#[derive(clap::Args)]
pub struct ReplayArgs {
    pub queue: String,
    /// The message's id (it must be delivered, and still held: see `retention.delivered`).
    pub id: String,
    /// Also every delivered message below it, parents before children.
    #[arg(long)]
    pub subtree: bool,
    /// Publish copies with new ids (each names the message it copies as `replay_of`) instead
    /// of sending the same messages again (receivers deduplicating on `webhook-id` would drop
    /// those).
    #[arg(long)]
    pub as_new: bool,
    /// Count what would be replayed; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(clap::Subcommand)]
pub enum DeadLettersCommand {
    /// List a queue's dead letters, a page at a time (`next` is the `--after` of the next).
    List {
        queue: String,
        #[command(flatten)]
        pages: Pages,
    },
    /// Send a queue's dead letters again (or one message's, with --message).
    Redrive {
        queue: String,
        #[arg(long)]
        message: Option<String>,
        /// With --message: also every dead message below it, parents first.
        #[arg(long, requires = "message")]
        subtree: bool,
        /// With --message: count what would be redriven, change nothing.
        #[arg(long, requires = "message")]
        dry_run: bool,
    },
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
    let url = format!("{base}{path}");
    let mut req = hyper::Request::builder().method(method).uri(&url);
    if let Some(t) = &target.token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let request = req
        .body(Full::new(body))
        .with_context(|| format!("cannot make a request to {url}"))?;
    client.request(request).await.map_err(|e| {
        failure(
            FailureKind::Unavailable,
            format!(
                "cannot reach {url}: {} (is the broker running at {base}? --url or SYNCBROK_URL names it)",
                handler::error_chain(&e)
            ),
        )
    })
}

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

pub async fn publish(target: &Target, args: PublishArgs) -> anyhow::Result<()> {
    let body = match args.file.as_deref() {
        None => read_stdin()?,
        Some(p) if p.as_os_str() == "-" => read_stdin()?,
        Some(p) => std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?,
    };
    if body.is_empty() && !args.allow_empty {
        bail!("the body is empty: give --allow-empty to publish an empty message");
    }
    let mut headers = Vec::new();
    if !args.parent.is_empty() {
        headers.push(("syncbrok-parent", args.parent.join(", ")));
    }
    if let Some(c) = args.content_type {
        headers.push(("content-type", c));
    }
    if let Some(t) = args.event_type {
        headers.push(("syncbrok-type", t));
    }
    if let Some(d) = args.delay {
        headers.push(("syncbrok-delay", d));
    }
    if let Some(t) = args.deliver_at {
        headers.push(("syncbrok-deliver-at", t));
    }
    if let Some(k) = args.idempotency_key {
        headers.push(("idempotency-key", k));
    }
    let path = format!("/v1/queues/{}/messages", args.queue);
    finish(
        target,
        call(target, Method::POST, &path, &headers, Bytes::from(body)).await?,
        View::Published,
    )
}

fn read_stdin() -> anyhow::Result<Vec<u8>> {
    use std::io::IsTerminal;
    if std::io::stdin().is_terminal() {
        bail!(
            "the body is read from standard input, which is a terminal: give a FILE, or pipe the body in (e.g. echo '{{}}' | syncbrok publish QUEUE)"
        );
    }
    let mut body = Vec::new();
    std::io::stdin()
        .read_to_end(&mut body)
        .context("cannot read standard input")?;
    Ok(body)
}

pub async fn queue(target: &Target, command: QueueCommand) -> anyhow::Result<()> {
    let get = Bytes::new;
    let (a, view) = match command {
        QueueCommand::Create { name, settings } => {
            let body = Bytes::from(settings.unwrap_or_default());
            let path = format!("/v1/queues/{name}");
            (
                call(target, Method::PUT, &path, &[], body).await?,
                View::Queue,
            )
        }
        QueueCommand::List => (
            call(target, Method::GET, "/v1/queues", &[], get()).await?,
            View::QueueList,
        ),
        QueueCommand::Show { name } => {
            let path = format!("/v1/queues/{name}");
            (
                call(target, Method::GET, &path, &[], get()).await?,
                View::Queue,
            )
        }
        QueueCommand::Delete { name, yes } => {
            let path = format!("/v1/queues/{name}");
            if !yes {
                confirm_delete(target, &name, &path).await?;
            }
            (
                call(target, Method::DELETE, &path, &[], get()).await?,
                View::Fields,
            )
        }
    };
    finish(target, a, view)
}

/// Deleting a queue that holds messages loses them: asks first on a terminal, refuses
/// elsewhere (a script says `--yes`).
async fn confirm_delete(target: &Target, name: &str, path: &str) -> anyhow::Result<()> {
    use std::io::{BufRead, IsTerminal, Write};
    let a = call(target, Method::GET, path, &[], Bytes::new()).await?;
    check(&a)?;
    let q: serde_json::Value =
        serde_json::from_slice(&a.body).context("the broker's answer is not JSON")?;
    let held: u64 = q["counts"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(_, n)| n.as_u64())
        .sum();
    if held == 0 {
        return Ok(());
    }
    let undelivered: u64 = ["scheduled", "waiting", "ready", "delivering"]
        .iter()
        .filter_map(|k| q["counts"][k].as_u64())
        .sum();
    let what = format!("queue {name:?} holds {held} messages ({undelivered} not delivered yet)");
    if !std::io::stdin().is_terminal() {
        return Err(failure(
            FailureKind::Refused,
            format!("{what}; deleting it loses them: add --yes to delete it anyway"),
        ));
    }
    eprint!("{what}. Delete it and its messages? [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .context("cannot read the answer")?;
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        Err(failure(FailureKind::Refused, "not deleted".into()))
    }
}

pub async fn dead_letters(target: &Target, command: DeadLettersCommand) -> anyhow::Result<()> {
    let a = match command {
        DeadLettersCommand::List { queue, pages } => {
            let path = format!("/v1/queues/{queue}/dead-letters");
            return list_pages(target, &path, "dead_letters", View::DeadLetters, &[], pages).await;
        }
        DeadLettersCommand::Redrive {
            queue,
            message: Some(id),
            subtree,
            dry_run,
        } => {
            let path = format!("/v1/queues/{queue}/messages/{id}/redrive");
            let scope = if subtree { "subtree" } else { "message" };
            let body = serde_json::json!({"scope": scope, "dry_run": dry_run}).to_string();
            call(target, Method::POST, &path, &[], Bytes::from(body)).await?
        }
        DeadLettersCommand::Redrive {
            queue,
            message: None,
            ..
        } => {
            let path = format!("/v1/queues/{queue}/dead-letters/redrive");
            call(target, Method::POST, &path, &[], Bytes::new()).await?
        }
    };
    finish(target, a, View::Fields)
}

pub async fn explain(target: &Target, args: MessageArgs) -> anyhow::Result<()> {
    let path = format!("/v1/queues/{}/messages/{}/explain", args.queue, args.id);
    finish(
        target,
        call(target, Method::GET, &path, &[], Bytes::new()).await?,
        View::Explain,
    )
}

pub async fn lineage(target: &Target, args: LineageArgs) -> anyhow::Result<()> {
    let path = with_query(
        format!("/v1/queues/{}/messages/{}/lineage", args.queue, args.id),
        &[
            ("up", args.up.map(|v| v.to_string())),
            ("down", args.down.map(|v| v.to_string())),
            ("limit", args.limit.map(|v| v.to_string())),
        ],
    );
    finish(
        target,
        call(target, Method::GET, &path, &[], Bytes::new()).await?,
        View::Lineage,
    )
}

pub async fn replay(target: &Target, args: ReplayArgs) -> anyhow::Result<()> {
    let path = format!("/v1/queues/{}/messages/{}/replay", args.queue, args.id);
    let scope = if args.subtree { "subtree" } else { "message" };
    let body = serde_json::json!({"scope": scope, "as_new": args.as_new, "dry_run": args.dry_run})
        .to_string();
    finish(
        target,
        call(target, Method::POST, &path, &[], Bytes::from(body)).await?,
        View::Fields,
    )
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
    /// Items per page (1–1000, default 100).
    #[arg(long)]
    limit: Option<u32>,
    /// Start after this message id (a page's `next`).
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

#[derive(clap::Subcommand)]
pub enum MessageCommand {
    /// A queue's messages in publish order, a page at a time (or --all), optionally of one
    /// state, e.g. `message list orders --state scheduled`.
    List {
        queue: String,
        /// scheduled, waiting, ready, delivering, delivered or dead.
        #[arg(long)]
        state: Option<String>,
        #[command(flatten)]
        pages: Pages,
    },
    /// A message: state, parent, children, deliveries.
    Show { queue: String, id: String },
    /// A message's body, raw, to standard output.
    Body { queue: String, id: String },
    /// Discard a message (its waiting children go on).
    Discard { queue: String, id: String },
}

pub async fn message(target: &Target, command: MessageCommand) -> anyhow::Result<()> {
    match command {
        MessageCommand::List {
            queue,
            state,
            pages,
        } => {
            let path = format!("/v1/queues/{queue}/messages");
            let query = [("state", state)];
            list_pages(target, &path, "messages", View::MessageList, &query, pages).await
        }
        MessageCommand::Show { queue, id } => {
            let path = format!("/v1/queues/{queue}/messages/{id}");
            finish(
                target,
                call(target, Method::GET, &path, &[], Bytes::new()).await?,
                View::Message,
            )
        }
        MessageCommand::Body { queue, id } => {
            use std::io::Write;
            let path = format!("/v1/queues/{queue}/messages/{id}/body");
            let a = call(target, Method::GET, &path, &[], Bytes::new()).await?;
            check(&a)?;
            std::io::stdout()
                .write_all(&a.body)
                .context("cannot write the body to standard output")
        }
        MessageCommand::Discard { queue, id } => {
            let path = format!("/v1/queues/{queue}/messages/{id}");
            finish(
                target,
                call(target, Method::DELETE, &path, &[], Bytes::new()).await?,
                View::Fields,
            )
        }
    }
}
