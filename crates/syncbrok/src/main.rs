//! The syncbrok binary. `serve` runs the broker: it recovers the Space from its data directory,
//! then serves the HTTP API until SIGTERM or Ctrl-C, and shuts down gracefully. `sink` is a
//! subscriber that prints what it receives, for trying things out.

mod client;
mod limits;
mod node;
mod server;
mod sink;
mod tls;

/// mimalloc rather than glibc's malloc: cheaper per allocation and without arena locks
/// (measured; see the workspace Cargo.toml and docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay`: the 16th entry of mimalloc's `mi_option_e` (v3, which the
/// `mimalloc` crate builds; its default, 1000 ms, is checked by a test so that a renumbering
/// cannot go unnoticed).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Memory freed is given back to the system at once rather than a second later, and only if
/// the freeing thread allocates again: with the default, pages freed by a thread that then
/// went quiet stayed resident, ~100 extra bytes per undelivered message in a 1-million backlog.
fn return_freed_memory_at_once() {
    // SAFETY: sets a process-wide integer option of the allocator; any value is allowed and
    // mimalloc reads it atomically on each purge.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
}

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use space::{Space, SpaceConfig, Span};
use storage::FsyncPolicy;
use storage::io::FsBackend;

#[derive(Parser)]
#[command(
    name = "syncbrok",
    version,
    about = "A durable HTTP-push message broker"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    target: client::Target,
}

/// `syncbrok serve`, parsed on its own: the broker is no client of a broker, so its help shows
/// none of the client flags (`--url`, `--token`, `-o`, …).
#[derive(Parser)]
#[command(
    name = "syncbrok serve",
    bin_name = "syncbrok serve",
    version,
    about = "Run the broker"
)]
struct ServeOnly {
    #[command(flatten)]
    args: ServeArgs,
}

/// `syncbrok sink`, parsed on its own, like `serve`.
#[derive(Parser)]
#[command(
    name = "syncbrok sink",
    bin_name = "syncbrok sink",
    version,
    about = "A subscriber for trying things out: prints every message it receives and acknowledges it"
)]
struct SinkOnly {
    #[command(flatten)]
    args: sink::SinkArgs,
}

/// What the command line asks for: `serve` and `sink` (when they come first) are read by
/// their own parsers, which know no client flags.
enum Parsed {
    Serve(ServeArgs),
    Sink(sink::SinkArgs),
    Client(Cli),
}

fn parse_command_line() -> Parsed {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let first = argv.get(1).and_then(|a| a.to_str()).map(str::to_owned);
    let rest = || {
        std::iter::once(std::ffi::OsString::from("syncbrok"))
            .chain(argv.iter().skip(2).cloned())
            .collect::<Vec<_>>()
    };
    match first.as_deref() {
        Some("serve") => Parsed::Serve(ServeOnly::parse_from(rest()).args),
        Some("sink") => Parsed::Sink(SinkOnly::parse_from(rest()).args),
        _ => Parsed::Client(Cli::parse()),
    }
}

fn run_serve(args: ServeArgs) -> anyhow::Result<()> {
    init_logs(args.log_json);
    runtime().and_then(|rt| rt.block_on(serve(args)))
}

fn run_sink(args: sink::SinkArgs) -> anyhow::Result<()> {
    runtime().and_then(|rt| rt.block_on(async { sink::run(args, shutdown_signal()).await }))
}

#[derive(Subcommand)]
enum Command {
    /// Run the broker.
    Serve(ServeArgs),
    /// A subscriber for trying things out: prints every message it receives and
    /// acknowledges it (answers `true`, so legacy subscriptions work too).
    Sink(sink::SinkArgs),
    /// Publish a message (the body from a file or standard input).
    Publish(client::PublishArgs),
    /// Create, list, show or delete queues.
    #[command(subcommand)]
    Queue(client::QueueCommand),
    /// Subscribe an endpoint to a queue.
    Subscribe(client::SubscribeArgs),
    /// List or redrive dead letters.
    #[command(subcommand, name = "dead-letters")]
    DeadLetters(client::DeadLettersCommand),
    /// Why a message is not delivered (yet): its verdict, the ancestors holding it back up to
    /// the root blocker, and the health of the subscribers.
    Explain(client::MessageArgs),
    /// A message's ancestors and descendants, as nodes and edges.
    Lineage(client::LineageArgs),
    /// Send a delivered message (with --subtree, and every delivered message below it, parents
    /// first) to its subscribers again, or publish copies of it with --as-new.
    Replay(client::ReplayArgs),
    /// Watch what happens to a queue's messages as it happens: published, delivered, failed,
    /// dead-lettered; a line each, until interrupted (or --count).
    Tail(client::TailArgs),
    /// Show a message, print its body, or discard it.
    #[command(subcommand)]
    Message(client::MessageCommand),
    /// List a queue's subscribers, show, pause, resume, rate-limit, filter, re-key or remove
    /// one.
    #[command(subcommand)]
    Subscribers(client::SubscribersCommand),
    /// A cluster's status and membership: `status`, `add-node`, `promote`, `remove-node`.
    #[command(subcommand)]
    Cluster(client::ClusterCommand),
    /// Print a completion script for a shell, e.g. `syncbrok completion bash >
    /// /etc/bash_completion.d/syncbrok`.
    Completion { shell: clap_complete::Shell },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Configuration file (YAML), e.g. `--config /etc/syncbrok.yml`. Without it,
    /// ./syncbrok.yml, else ./config.yml, else none.
    #[arg(long, env = "SYNCBROK_CONFIG")]
    config: Option<PathBuf>,
    /// Address of the HTTP API, e.g. `--listen 0.0.0.0:10000` [default: 127.0.0.1:10000].
    #[arg(long, env = "SYNCBROK_LISTEN")]
    listen: Option<SocketAddr>,
    /// Data directory, created if missing, e.g. `--data /var/lib/syncbrok` [default:
    /// ./syncbrok-data].
    #[arg(long, env = "SYNCBROK_DATA")]
    data: Option<PathBuf>,
    /// When appends reach the disk: `always` (group commit), `never`, or an interval such as
    /// `10ms` [default: always].
    #[arg(long, env = "SYNCBROK_FSYNC")]
    fsync: Option<String>,
    /// Largest message body accepted, in bytes, at most 64 MiB, e.g. `--max-body 4194304`
    /// [default: 1048576].
    #[arg(long, env = "SYNCBROK_MAX_BODY")]
    max_body: Option<usize>,
    /// How long in-flight deliveries may finish at shutdown, e.g. `--shutdown-grace 30s`
    /// [default: 10s].
    #[arg(long, env = "SYNCBROK_SHUTDOWN_GRACE")]
    shutdown_grace: Option<Span>,
    /// Serve the API over HTTPS with this certificate chain (PEM), e.g. `--tls-cert
    /// cert.pem`; needs --tls-key.
    #[arg(long, env = "SYNCBROK_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert, e.g. `--tls-key key.pem`.
    #[arg(long, env = "SYNCBROK_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Logs as JSON lines instead of text.
    #[arg(long, env = "SYNCBROK_LOG_JSON")]
    log_json: bool,
    /// Start on a damaged log: drop only the damaged records (stepping over them to the next
    /// valid one), keep every intact record, and report what was lost. For when a start stops
    /// with "corrupted at byte N".
    #[arg(long)]
    repair: bool,
    #[command(flatten)]
    cluster: node::ClusterArgs,
}

/// The settings in force: flags > environment > configuration file > defaults.
struct Settings {
    listen: SocketAddr,
    data: PathBuf,
    fsync: FsyncPolicy,
    max_body: usize,
    shutdown_grace: Span,
    segment_bytes: u64,
    reclaim_interval: Span,
    /// Certificate chain and key (PEM) for HTTPS on the API.
    tls: Option<(PathBuf, PathBuf)>,
    server: server::ServerConfig,
    body_timeout: std::time::Duration,
    cluster: Option<node::ClusterSettings>,
    file: frontend::config::FileConfig,
}

fn resolve(args: &ServeArgs) -> anyhow::Result<Settings> {
    let path = match &args.config {
        Some(p) => Some(p.clone()),
        None => ["syncbrok.yml", "config.yml"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists()),
    };
    let file = match &path {
        Some(p) => {
            tracing::info!(file = %p.display(), "reading configuration");
            frontend::config::load(p)?
        }
        None => frontend::config::FileConfig::default(),
    };
    let storage = file.storage.as_ref();
    let listen = match (args.listen, &file.listen) {
        (Some(l), _) => l,
        (None, Some(text)) => text
            .parse()
            .with_context(|| format!("listen {text:?} in the configuration file"))?,
        (None, None) => limits::LISTEN_DEFAULT.parse()?,
    };
    let data = args
        .data
        .clone()
        .or_else(|| storage.and_then(|s| s.path.clone()))
        .unwrap_or_else(|| PathBuf::from(limits::DATA_DIR_DEFAULT));
    let fsync = match (&args.fsync, storage.and_then(|s| s.fsync.as_deref())) {
        (Some(flag), _) => fsync_policy(flag)?,
        (None, Some("interval")) => {
            FsyncPolicy::Interval(storage.and_then(|s| s.fsync_interval).map_or(
                std::time::Duration::from_millis(limits::FSYNC_INTERVAL_DEFAULT_MS),
                |s| s.0,
            ))
        }
        (None, Some(text)) => fsync_policy(text)?,
        (None, None) => FsyncPolicy::Always,
    };
    let segment_bytes = storage
        .and_then(|s| s.segment_bytes)
        .unwrap_or(storage::limits::SEGMENT_BYTES_DEFAULT);
    let segment_range = storage::limits::SEGMENT_BYTES_MIN..=storage::limits::SEGMENT_BYTES_MAX;
    if !segment_range.contains(&segment_bytes) {
        anyhow::bail!(
            "storage.segment_bytes {segment_bytes} is outside {}..={}",
            segment_range.start(),
            segment_range.end()
        );
    }
    let reclaim_interval = storage
        .and_then(|s| s.reclaim_interval)
        .unwrap_or(Span::millis(space::limits::RECLAIM_INTERVAL_MS));
    if reclaim_interval.0.is_zero() {
        anyhow::bail!("storage.reclaim_interval must be more than 0");
    }
    let shutdown_grace = args
        .shutdown_grace
        .or(file.shutdown_grace)
        .unwrap_or(Span::secs(limits::SHUTDOWN_GRACE_DEFAULT_S));
    let (server, body_timeout) = server_settings(file.server.as_ref(), shutdown_grace)?;
    Ok(Settings {
        server,
        body_timeout,
        listen,
        data,
        fsync,
        segment_bytes,
        reclaim_interval,
        max_body: args
            .max_body
            .or(file.limits.as_ref().and_then(|l| l.max_body))
            .unwrap_or(frontend::limits::MAX_BODY_DEFAULT),
        shutdown_grace,
        tls: match (&args.tls_cert, &args.tls_key) {
            (Some(c), Some(k)) => Some((c.clone(), k.clone())),
            _ => file.tls.as_ref().map(|t| (t.cert.clone(), t.key.clone())),
        },
        cluster: node::resolve(&args.cluster, file.cluster.as_ref())?,
        file,
    })
}

/// The `server:` section with its defaults, checked; and the body deadline the router applies.
fn server_settings(
    section: Option<&frontend::config::ServerSection>,
    shutdown_grace: Span,
) -> anyhow::Result<(server::ServerConfig, std::time::Duration)> {
    let span = |value: Option<Span>, default_s: u64, name: &str| {
        let d = value.map_or(std::time::Duration::from_secs(default_s), |s| s.0);
        if d.is_zero() {
            anyhow::bail!("server.{name} must be more than 0");
        }
        Ok(d)
    };
    let max_connections = section
        .and_then(|s| s.max_connections)
        .unwrap_or(limits::MAX_CONNECTIONS_DEFAULT);
    if !(1..=limits::MAX_CONNECTIONS_MAX).contains(&max_connections) {
        anyhow::bail!(
            "server.max_connections {max_connections} is outside 1..={}",
            limits::MAX_CONNECTIONS_MAX
        );
    }
    let config = server::ServerConfig {
        max_connections,
        header_timeout: span(
            section.and_then(|s| s.header_timeout),
            limits::HEADER_TIMEOUT_DEFAULT_S,
            "header_timeout",
        )?,
        idle_timeout: span(
            section.and_then(|s| s.idle_timeout),
            limits::IDLE_TIMEOUT_DEFAULT_S,
            "idle_timeout",
        )?,
        drain: shutdown_grace.0,
    };
    let body_timeout = span(
        section.and_then(|s| s.body_timeout),
        frontend::limits::BODY_TIMEOUT_DEFAULT.as_secs(),
        "body_timeout",
    )?;
    Ok((config, body_timeout))
}

fn fsync_policy(text: &str) -> anyhow::Result<FsyncPolicy> {
    Ok(match text {
        "always" => FsyncPolicy::Always,
        "never" => FsyncPolicy::Never,
        interval => FsyncPolicy::Interval(
            interval
                .parse::<Span>()
                .with_context(|| format!("--fsync {interval:?}: use always, never or a duration"))?
                .0,
        ),
    })
}

fn init_logs(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Resolves on SIGTERM or Ctrl-C (SIGINT). The handlers are installed when this is called, not
/// when the future is first polled: a signal during recovery is not lost to the default action.
#[cfg(unix)]
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            (Ok(mut one), Err(_)) | (Err(_), Ok(mut one)) => {
                one.recv().await;
            }
            (Err(_), Err(_)) => std::future::pending().await,
        }
    }
}

#[cfg(not(unix))]
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// A shutdown signal that several waiters can await: set once a signal has come.
fn shutdown_watch() -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let signal = shutdown_signal();
    tokio::spawn(async move {
        signal.await;
        let _ = tx.send(true);
    });
    rx
}

async fn stopped(mut rx: tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// Says what a repair dropped: on stderr for the operator, and in the log.
fn report_repairs(report: &storage::RecoveryReport) {
    for lost in &report.repaired {
        let records: Vec<String> = lost
            .records
            .iter()
            .map(|r| {
                let mut s = r.kind.to_owned();
                if let Some(q) = r.queue {
                    s.push_str(&format!(" queue #{q}"));
                }
                for m in &r.messages {
                    s.push_str(&format!(" {m}"));
                }
                s
            })
            .collect();
        eprintln!(
            "repair: {}: dropped bytes {}..{} ({}): {}",
            lost.file,
            lost.offset,
            lost.offset + lost.bytes_dropped,
            lost.reason,
            if records.is_empty() {
                "no record".to_owned()
            } else {
                records.join("; ")
            }
        );
        tracing::warn!(file = %lost.file, offset = lost.offset, bytes = lost.bytes_dropped, reason = %lost.reason, lost = ?records, "repair dropped damaged records");
    }
    if !report.repaired.is_empty() {
        eprintln!(
            "repair: {} damaged range(s) dropped; every intact record was kept",
            report.repaired.len()
        );
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let stop = shutdown_watch();
    let settings = resolve(&args)?;
    if settings.max_body > frontend::limits::MAX_BODY_CEILING {
        anyhow::bail!(
            "max_body {} is over the ceiling of {} bytes",
            settings.max_body,
            frontend::limits::MAX_BODY_CEILING
        );
    }
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    let addr = listener.local_addr()?;
    let tls = match &settings.tls {
        None => None,
        Some((cert, key)) => Some(tls::acceptor(cert, key)?),
    };
    if settings.cluster.is_some() && args.repair {
        anyhow::bail!(
            "--repair is not for a cluster node: move its data directory aside and start it empty; it catches up from the others"
        );
    }
    if settings.cluster.is_some() && settings.tls.is_some() {
        anyhow::bail!(
            "a cluster node serves plain HTTP (its peers and the API share the port): put the cluster on a private network, or TLS in front of it"
        );
    }
    let routes = server::Routes::new(frontend::recovering_router());
    let server = tokio::spawn(server::serve(
        listener,
        tls,
        routes.clone(),
        settings.server.clone(),
        stopped(stop.clone()),
    ));
    if settings.cluster.is_some() {
        return serve_cluster(settings, args.repair, routes, server, addr).await;
    }
    tracing::info!(%addr, data = %settings.data.display(), "recovering the log; /healthz answers meanwhile");
    let space = tokio::select! {
        space = open_space(&settings, args.repair) => space?,
        () = stopped(stop.clone()) => {
            // Nothing recovery does on disk needs finishing: an exit here is as safe as a
            // crash, and what it did is redone at the next start.
            tracing::info!("stopped during recovery");
            std::process::exit(0);
        }
    };
    frontend::config::bootstrap(&space, &settings.file)
        .await
        .context("cannot apply the configuration file")?;
    routes.recovered(frontend::router(space.clone(), &api_config(&settings)));
    let scheme = scheme(&settings);
    // Watchers' event streams end when the broker stops, rather than hold the drain up.
    let (feed, stopping) = (space.clone(), stop.clone());
    tokio::spawn(async move {
        stopped(stopping).await;
        feed.close_feed();
    });
    tracing::info!(%addr, scheme, "syncbrok listening");
    // One line on stdout once the API is ready, for scripts and tests that start the broker
    // on port 0.
    println!("syncbrok listening on {scheme}://{addr}");
    if let Err(e) = server.await {
        tracing::error!(error = %e, "the HTTP server stopped");
    }
    tracing::info!("shutting down");
    space.shutdown(settings.shutdown_grace.0).await;
    tracing::info!("stopped");
    Ok(())
}

fn api_config(settings: &Settings) -> frontend::ApiConfig {
    frontend::ApiConfig {
        max_body: settings.max_body,
        tokens: settings
            .file
            .auth
            .as_ref()
            .map(|a| a.tokens.clone())
            .unwrap_or_default(),
        body_timeout: settings.body_timeout,
        https: settings.tls.is_some(),
    }
}

fn scheme(settings: &Settings) -> &'static str {
    if settings.tls.is_some() {
        "https"
    } else {
        "http"
    }
}

/// `serve --cluster`: the node starts, serves its peers and `/v1/cluster`, and the API while it
/// leads (see `node.rs`).
async fn serve_cluster(
    mut settings: Settings,
    repair: bool,
    routes: server::Routes,
    server: tokio::task::JoinHandle<()>,
    addr: SocketAddr,
) -> anyhow::Result<()> {
    let Some(cluster_settings) = settings.cluster.take() else {
        anyhow::bail!("not in cluster mode");
    };
    let (_, config, deliverer) = space_parts(&settings, repair)?;
    let api = api_config(&settings);
    let tokens = frontend::auth::Tokens(std::sync::Arc::new(api.tokens.clone()));
    let file = Arc::new(std::mem::take(&mut settings.file));
    tracing::info!(data = %settings.data.display(), "starting the cluster node");
    let (node, router) = node::run(
        cluster_settings,
        &settings.data,
        move |backend, role| {
            let (space, report) =
                Space::open_replicated(backend, config.clone(), deliverer.clone(), role)?;
            report_repairs(&report);
            Ok(space)
        },
        move |space| frontend::router(space, &api),
        move |space| {
            let file = file.clone();
            Box::pin(async move {
                frontend::config::bootstrap(&space, &file)
                    .await
                    .context("cannot apply the configuration file")
            })
        },
        tokens,
    )
    .await?;
    routes.recovered(router);
    let scheme = scheme(&settings);
    tracing::info!(%addr, scheme, "syncbrok listening (cluster node)");
    println!("syncbrok listening on {scheme}://{addr}");
    // Raft stopping on an error it cannot get past (a disk failing under the logs) leaves
    // nothing to serve: the process ends, for whoever supervises it to start it again.
    let watched = node.clone();
    let watcher = tokio::spawn(async move {
        let why = watched.failed().await;
        tracing::error!(error = %why, "the cluster node failed; exiting");
        std::process::exit(1);
    });
    if let Err(e) = server.await {
        tracing::error!(error = %e, "the HTTP server stopped");
    }
    tracing::info!("shutting down");
    // From here Raft stops because it was asked to.
    watcher.abort();
    if let Some(serving) = node.serving().borrow().clone() {
        serving.space.close_feed();
    }
    node.shutdown(settings.shutdown_grace.0).await;
    tracing::info!("stopped");
    Ok(())
}

/// What opening the Space takes: the log's settings, the Space's, the deliverer.
fn space_parts(
    settings: &Settings,
    repair: bool,
) -> anyhow::Result<(storage::Config, SpaceConfig, Arc<handler::HttpDeliverer>)> {
    let storage = storage::Config {
        fsync: settings.fsync,
        repair,
        segment_bytes: settings.segment_bytes,
        ..storage::Config::default()
    };

    let endpoint_allow = match settings
        .file
        .endpoints
        .as_ref()
        .and_then(|e| e.allow.as_ref())
    {
        Some(rules) => Some(
            space::endpoints::AllowList::parse(rules)
                .map_err(|e| anyhow::anyhow!("endpoints.allow: {e}"))?,
        ),
        None => None,
    };
    let endpoint_policy = space::endpoints::EndpointPolicy::new(endpoint_allow);
    let deliverer = Arc::new(handler::HttpDeliverer::with_policy(endpoint_policy.clone()));
    let config = SpaceConfig {
        endpoint_policy,
        reclaim_interval: settings.reclaim_interval.0,
        ..SpaceConfig::new(storage.clone())
    };
    Ok((storage, config, deliverer))
}

/// Recovers the Space from the data directory, on a blocking thread (recovery reads the whole
/// log), and reports what recovery found.
async fn open_space(settings: &Settings, repair: bool) -> anyhow::Result<Space> {
    let (_, config, deliverer) = space_parts(settings, repair)?;
    let backend = FsBackend::open(&settings.data)
        .with_context(|| format!("cannot open the data directory {}", settings.data.display()))?;
    let started = std::time::Instant::now();
    let opened =
        tokio::task::spawn_blocking(move || Space::open(Arc::new(backend), config, deliverer))
            .await
            .context("recovery stopped")?;
    let data = settings.data.display();
    let (space, report) = match opened {
        Ok(opened) => opened,
        Err(e @ space::OpenError::Storage(storage::OpenError::Corrupted { .. })) => {
            return Err(anyhow::Error::new(e).context(format!(
                "cannot recover {data}; `syncbrok serve --repair` drops only the damaged records and reports what was lost"
            )));
        }
        Err(e) => return Err(anyhow::Error::new(e).context(format!("cannot recover {data}"))),
    };
    report_repairs(&report);
    tracing::info!(
        records = report.records_replayed,
        segments = report.segments,
        ms = started.elapsed().as_millis() as u64,
        "recovered"
    );
    Ok(space)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")
}

fn main() -> std::process::ExitCode {
    return_freed_memory_at_once();
    let cli = match parse_command_line() {
        Parsed::Serve(args) => return exit_with(run_serve(args)),
        Parsed::Sink(args) => return exit_with(run_sink(args)),
        Parsed::Client(cli) => cli,
    };
    let result = match cli.command {
        Command::Serve(args) => run_serve(args),
        Command::Sink(args) => run_sink(args),
        Command::Publish(args) => {
            runtime().and_then(|rt| rt.block_on(client::publish(&cli.target, args)))
        }
        Command::Queue(c) => runtime().and_then(|rt| rt.block_on(client::queue(&cli.target, c))),
        Command::Subscribe(args) => {
            runtime().and_then(|rt| rt.block_on(client::subscribe(&cli.target, args)))
        }
        Command::DeadLetters(c) => {
            runtime().and_then(|rt| rt.block_on(client::dead_letters(&cli.target, c)))
        }
        Command::Explain(args) => {
            runtime().and_then(|rt| rt.block_on(client::explain(&cli.target, args)))
        }
        Command::Lineage(args) => {
            runtime().and_then(|rt| rt.block_on(client::lineage(&cli.target, args)))
        }
        Command::Replay(args) => {
            runtime().and_then(|rt| rt.block_on(client::replay(&cli.target, args)))
        }
        Command::Tail(args) => {
            runtime().and_then(|rt| rt.block_on(client::tail(&cli.target, args)))
        }
        Command::Message(c) => {
            runtime().and_then(|rt| rt.block_on(client::message(&cli.target, c)))
        }
        Command::Subscribers(c) => {
            runtime().and_then(|rt| rt.block_on(client::subscribers(&cli.target, c)))
        }
        Command::Cluster(c) => {
            runtime().and_then(|rt| rt.block_on(client::cluster(&cli.target, c)))
        }
        Command::Completion { shell } => {
            use clap::CommandFactory;
            use std::io::Write;
            // Into memory first: writing to a closed pipe is an error to report, not a panic.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "syncbrok", &mut script);
            std::io::stdout()
                .write_all(&script)
                .map_err(|e| anyhow::anyhow!("cannot write the completion script: {e}"))
        }
    };
    exit_with(result)
}

/// The exit status of a command: a client command says why it failed in it (docs/api.md).
fn exit_with(result: anyhow::Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("syncbrok: {e:#}");
            match e.downcast_ref::<client::Failure>() {
                Some(f) => std::process::ExitCode::from(f.kind.exit_code()),
                None => std::process::ExitCode::FAILURE,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_purge_delay_option_is_the_one_set() {
        // SAFETY: reads an allocator option.
        let default = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert_eq!(default, 1000, "mimalloc's option numbering changed");
        return_freed_memory_at_once();
        // SAFETY: as above.
        assert_eq!(
            unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) },
            0
        );
    }
}
