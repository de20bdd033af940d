//! The syncbrok binary. `serve` runs the broker: it recovers the Space from its data directory,
//! then serves the HTTP API until SIGTERM or Ctrl-C, and shuts down gracefully. `sink` is a
//! subscriber that prints what it receives, for trying things out.

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
}

#[derive(Subcommand)]
enum Command {
    /// Run the broker.
    Serve(ServeArgs),
    /// A subscriber for trying things out: prints every message it receives and
    /// acknowledges it (answers `true`, so legacy subscriptions work too).
    Sink(SinkArgs),
}

#[derive(clap::Args)]
struct SinkArgs {
    /// Address to listen on; subscribe `http://ADDR/` to a queue.
    #[arg(long, env = "SYNCBROK_SINK_LISTEN", default_value = "127.0.0.1:20000")]
    listen: SocketAddr,
}

/// Longest body the sink prints; the rest is cut.
const SINK_PRINT_BYTES_MAX: usize = 200;

async fn sink(args: SinkArgs) -> anyhow::Result<()> {
    use axum::http::HeaderMap;
    async fn receive(headers: HeaderMap, body: axum::body::Bytes) -> &'static str {
        let h = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_owned()
        };
        let text = String::from_utf8_lossy(&body[..body.len().min(SINK_PRINT_BYTES_MAX)]);
        let cut = if body.len() > SINK_PRINT_BYTES_MAX {
            "…"
        } else {
            ""
        };
        println!(
            "queue={} id={} parent={} attempt={} body={text}{cut}",
            h("syncbrok-queue"),
            h("webhook-id"),
            h("syncbrok-parent"),
            h("syncbrok-attempt"),
        );
        "true"
    }
    let router = axum::Router::new().fallback(axum::routing::post(receive));
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    println!(
        "syncbrok sink listening on http://{}/",
        listener.local_addr()?
    );
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("the sink failed")
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address of the HTTP API.
    #[arg(long, env = "SYNCBROK_LISTEN", default_value = "127.0.0.1:10000")]
    listen: SocketAddr,
    /// Data directory (created if missing).
    #[arg(long, env = "SYNCBROK_DATA", default_value = "./syncbrok-data")]
    data: PathBuf,
    /// When appends reach the disk: `always` (group commit), `never`, or an interval such as
    /// `10ms`.
    #[arg(long, env = "SYNCBROK_FSYNC", default_value = "always")]
    fsync: String,
    /// Largest message body accepted, in bytes (at most 64 MiB).
    #[arg(long, env = "SYNCBROK_MAX_BODY", default_value_t = frontend::limits::MAX_BODY_DEFAULT)]
    max_body: usize,
    /// How long in-flight deliveries may finish at shutdown.
    #[arg(long, env = "SYNCBROK_SHUTDOWN_GRACE", default_value = "10s")]
    shutdown_grace: Span,
    /// Logs as JSON lines instead of text.
    #[arg(long, env = "SYNCBROK_LOG_JSON")]
    log_json: bool,
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

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    for file in ["syncbrok.yml", "config.yml"] {
        if std::path::Path::new(file).exists() {
            tracing::warn!(%file, "configuration files are not read by this version yet; using flags, environment and defaults");
        }
    }
    let storage = storage::Config {
        fsync: fsync_policy(&args.fsync)?,
        ..storage::Config::default()
    };
    let backend = FsBackend::open(&args.data)
        .with_context(|| format!("cannot open the data directory {}", args.data.display()))?;
    let started = std::time::Instant::now();
    let (space, report) = Space::open(
        Arc::new(backend),
        SpaceConfig::new(storage),
        Arc::new(handler::HttpDeliverer::new()),
    )
    .with_context(|| format!("cannot recover {}", args.data.display()))?;
    tracing::info!(
        records = report.records_replayed,
        segments = report.segments,
        ms = started.elapsed().as_millis() as u64,
        "recovered"
    );
    let router = frontend::router(
        space.clone(),
        &frontend::ApiConfig {
            max_body: args.max_body,
        },
    );
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, data = %args.data.display(), "syncbrok listening");
    // One line on stdout, for scripts and tests that start the broker on port 0.
    println!("syncbrok listening on http://{addr}");
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("the HTTP server failed")?;
    tracing::info!("shutting down");
    space.shutdown(args.shutdown_grace.0).await;
    tracing::info!("stopped");
    Ok(())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => {
            init_logs(args.log_json);
            runtime().and_then(|rt| rt.block_on(serve(args)))
        }
        Command::Sink(args) => runtime().and_then(|rt| rt.block_on(sink(args))),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("syncbrok: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
