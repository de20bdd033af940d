//! `syncbrok message`, `explain`, `lineage` and `replay`: one message, why it waits, the graph
//! around it, and sending what was delivered again.

use anyhow::Context;
use bytes::Bytes;
use hyper::Method;

use super::{
    MessageRef, Pages, QueueName, Target, View, call, check, finish, list_pages, with_query,
};

#[derive(clap::Args)]
pub struct MessageArgs {
    /// The queue, e.g. `orders`.
    pub queue: QueueName,
    /// The message's id, e.g. `01a21208-2d41-7000-8000-040000000000`.
    pub id: MessageRef,
}

#[derive(clap::Args)]
pub struct LineageArgs {
    /// The queue, e.g. `orders`.
    pub queue: QueueName,
    /// The message's id, e.g. `01a21208-2d41-7000-8000-040000000000`.
    pub id: MessageRef,
    /// Levels of ancestors (default 32, at most 1000), e.g. `--up 3`.
    #[arg(long)]
    pub up: Option<u32>,
    /// Levels of descendants (default 32, at most 1000), e.g. `--down 1`.
    #[arg(long)]
    pub down: Option<u32>,
    /// Messages in all (default 500, at most 5000), e.g. `--limit 50`.
    #[arg(long)]
    pub limit: Option<u32>,
}

#[derive(clap::Args)]
pub struct ReplayArgs {
    /// The queue, e.g. `orders`.
    pub queue: QueueName,
    /// The message's id, e.g. `01a21208-2d41-7000-8000-040000000000` (it must be delivered,
    /// and still held: see `retention.delivered`).
    pub id: MessageRef,
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

#[derive(clap::Subcommand)]
pub enum MessageCommand {
    /// A queue's messages in publish order, a page at a time (or --all), optionally of one
    /// state, e.g. `message list orders --state scheduled`.
    List {
        /// The queue, e.g. `orders`.
        queue: QueueName,
        /// Only messages in this state: scheduled, waiting, ready, delivering, delivered or dead,
        /// e.g. `--state waiting`.
        #[arg(long)]
        state: Option<String>,
        #[command(flatten)]
        pages: Pages,
    },
    /// A message: state, parent, children, deliveries.
    Show {
        /// The queue, e.g. `orders`.
        queue: QueueName,
        /// The message's id, as its publish answered it, e.g. `01a21208-2d41-7000-8000-040000000000`.
        id: MessageRef,
    },
    /// A message's body, raw, to standard output.
    Body {
        /// The queue, e.g. `orders`.
        queue: QueueName,
        /// The message's id, as its publish answered it, e.g. `01a21208-2d41-7000-8000-040000000000`.
        id: MessageRef,
    },
    /// Discard a message (its waiting children go on).
    Discard {
        /// The queue, e.g. `orders`.
        queue: QueueName,
        /// The message's id, as its publish answered it, e.g. `01a21208-2d41-7000-8000-040000000000`.
        id: MessageRef,
    },
    /// Why a message is not delivered yet (as `syncbrok explain`).
    Explain(MessageArgs),
    /// A message's ancestors and descendants (as `syncbrok lineage`).
    Lineage(LineageArgs),
    /// Send a delivered message again, or copy it (as `syncbrok replay`).
    Replay(ReplayArgs),
    /// Send a dead message again, e.g. `message redrive orders ID --subtree`.
    Redrive {
        /// The queue, e.g. `orders`.
        queue: QueueName,
        /// The message's id, as its publish answered it, e.g. `01a21208-2d41-7000-8000-040000000000`.
        id: MessageRef,
        /// Also every dead message below it, parents first.
        #[arg(long)]
        subtree: bool,
        /// Count what would be redriven; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
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
        MessageCommand::Explain(args) => explain(target, args).await,
        MessageCommand::Lineage(args) => lineage(target, args).await,
        MessageCommand::Replay(args) => replay(target, args).await,
        MessageCommand::Redrive {
            queue,
            id,
            subtree,
            dry_run,
        } => {
            let command = super::DeadLettersCommand::Redrive {
                queue,
                message: Some(id),
                subtree,
                dry_run,
            };
            super::dead_letters(target, command).await
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
