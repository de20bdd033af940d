//! `syncbrok-bench`: benchmarks that report ratios measured in one run, because this machine
//! is shared and absolute figures drift. Each workload prints a table and, with `--json`, one
//! JSON object per result line for machines.
//!
//! Workloads so far (`space` is described in `space_bench.rs`):
//! - `storage`: durable appends of 1 KiB records with 1, 16 and 64 concurrent appenders under
//!   `fsync: always`, next to this disk's own fdatasync/s measured in the same run (the ratio
//!   shows group commit), and the time to reopen a log of 1 million records.

mod backlog;
mod chains;
mod cluster;
mod fanout;
mod joins;
mod measure;
mod peers;
mod round;
mod scheduled;
mod server;
mod sink;
mod space_bench;
mod storage_bench;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "syncbrok-bench",
    about = "Benchmarks of syncbrok, reported as ratios"
)]
struct Cli {
    #[command(subcommand)]
    workload: Workload,
}

#[derive(Subcommand)]
enum Workload {
    /// The storage log: group commit against raw fdatasync, and replay speed.
    Storage(storage_bench::Args),
    /// The broker in one process over loopback HTTP: deliveries/s, RAM per undelivered
    /// message, restart time.
    Space(space_bench::Args),
    /// Side by side: syncbrok, the HTTP limit, NATS JetStream and RabbitMQ on one fan-out
    /// workload (see scripts/bench-peers.sh for the peers).
    Fanout(fanout::Args),
    /// Parented chains through syncbrok: hop latency and order violations.
    Chains(chains::Args),
    /// Restart time of syncbrok with 1 million undelivered messages, RAM per message.
    Recovery(backlog::RecoveryArgs),
    /// 10 million messages with the subscribers down: RAM and disk, restart, then the drain.
    Backlog(backlog::BacklogArgs),
    /// 1 million messages published for later: RAM per scheduled message, and how late each
    /// arrives after its due time.
    Scheduled(scheduled::Args),
    /// Diamonds of six messages whose last waits for four parents (a join), against the same
    /// diamonds with one parent: deliveries/s, order, RAM per extra parent.
    Joins(joins::Args),
    /// A cluster of three against a single node on the fan-out workload (publish → ack
    /// latency, deliveries/s), then failover time over repeated leader kills.
    Cluster(cluster::Args),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.workload {
        Workload::Storage(args) => storage_bench::run(args),
        Workload::Space(args) => space_bench::run(args),
        Workload::Fanout(args) => fanout::run(args).map_err(|e| e.to_string().into()),
        Workload::Chains(args) => chains::run(args).map_err(|e| e.to_string().into()),
        Workload::Recovery(args) => backlog::recovery(args).map_err(|e| e.to_string().into()),
        Workload::Backlog(args) => backlog::backlog(args).map_err(|e| e.to_string().into()),
        Workload::Scheduled(args) => scheduled::run(args).map_err(|e| e.to_string().into()),
        Workload::Joins(args) => joins::run(args).map_err(|e| e.to_string().into()),
        Workload::Cluster(args) => cluster::run(args).map_err(|e| e.to_string().into()),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("syncbrok-bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
