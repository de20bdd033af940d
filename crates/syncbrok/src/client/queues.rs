//! `syncbrok queue`: create, list, show and (safely) delete queues.

use anyhow::Context;
use bytes::Bytes;
use hyper::Method;

use super::{FailureKind, QueueName, Target, View, call, check, failure, finish};

#[derive(clap::Subcommand)]
pub enum QueueCommand {
    /// Create a queue, or update its settings (JSON as in the API).
    Create {
        /// The queue's name: 1 to 128 of A-Z a-z 0-9 . _ -, e.g. `orders`.
        name: QueueName,
        /// Settings as JSON, e.g. '{"retry": {"max_attempts": 3}}'.
        #[arg(long)]
        settings: Option<String>,
    },
    /// List queues with their counts.
    List,
    /// Show a queue: settings, subscribers, counts.
    Show {
        /// The queue's name: 1 to 128 of A-Z a-z 0-9 . _ -, e.g. `orders`.
        name: QueueName,
    },
    /// Delete a queue and its messages. One that holds messages is deleted only after a yes
    /// on the terminal, or with --yes.
    Delete {
        /// The queue's name: 1 to 128 of A-Z a-z 0-9 . _ -, e.g. `orders`.
        name: QueueName,
        /// Delete it even if it holds messages, without asking.
        #[arg(long)]
        yes: bool,
    },
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
