//! `syncbrok dead-letters`: list them, and send them again.

use bytes::Bytes;
use hyper::Method;

use super::{MessageRef, Pages, QueueName, Target, View, call, finish, list_pages};

#[derive(clap::Subcommand)]
pub enum DeadLettersCommand {
    /// List a queue's dead letters, a page at a time (`next` is the `--after` of the next).
    List {
        /// The queue, e.g. `orders`.
        queue: QueueName,
        #[command(flatten)]
        pages: Pages,
    },
    /// Send a queue's dead letters again (or one message's, with --message).
    Redrive {
        /// The queue, e.g. `orders`.
        queue: QueueName,
        /// One message's id, e.g. `--message 01a21208-2d41-7000-8000-040000000000` (without it: every dead letter of the queue).
        #[arg(long)]
        message: Option<MessageRef>,
        /// With --message: also every dead message below it, parents first.
        #[arg(long, requires = "message")]
        subtree: bool,
        /// With --message: count what would be redriven, change nothing.
        #[arg(long, requires = "message")]
        dry_run: bool,
    },
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
