//! `syncbrok subscribe` and `syncbrok subscribers …`: add, list, show, pause, resume, rate
//! limit, rotate the secret, remove.

use anyhow::bail;
use bytes::Bytes;
use hyper::Method;

use super::{QueueName, Target, View, call, finish};

#[derive(clap::Args)]
pub struct SubscribeArgs {
    /// The queue, e.g. `orders`.
    pub queue: QueueName,
    /// Where deliveries go, e.g. `https://example.com/hooks/orders`.
    pub endpoint: String,
    /// How deliveries are made: `webhook` (the default) or `legacy` (the original broker's JSON),
    /// e.g. `--handler legacy`.
    #[arg(long)]
    pub handler: Option<String>,
    /// A `whsec_` secret to sign deliveries with, e.g. `--secret
    /// whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw`.
    #[arg(long, env = "SYNCBROK_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// Requests on the wire to it at once (1–4096, default 64), e.g. `--max-in-flight 8`.
    #[arg(long)]
    pub max_in_flight: Option<u32>,
    /// Deliver up to this many messages per request, as CloudEvents batches (1–1000), e.g.
    /// `--batch-max-messages 64`.
    #[arg(long)]
    pub batch_max_messages: Option<u32>,
    /// Bodies of one batch together, in bytes, at most (default 1 MiB), e.g.
    /// `--batch-max-bytes 262144`.
    #[arg(long)]
    pub batch_max_bytes: Option<u32>,
    /// A header sent with every request to it, e.g. --header 'Authorization: Bearer T'
    /// (repeatable; values are never shown back).
    #[arg(long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// At most this many messages a second to it (1–100000), e.g. `--rate-limit 50`.
    #[arg(long, value_name = "PER_SECOND")]
    pub rate_limit: Option<u32>,
    /// Take only messages of this event type: an exact name, or a prefix followed by `*`, e.g.
    /// `--type 'order.*'` (repeatable; without it, every message).
    #[arg(long = "type", value_name = "PATTERN")]
    pub types: Vec<String>,
}

pub async fn subscribe(target: &Target, args: SubscribeArgs) -> anyhow::Result<()> {
    let mut body = serde_json::json!({ "endpoint": args.endpoint });
    if let Some(h) = args.handler {
        body["handler"] = h.into();
    }
    if let Some(s) = args.secret {
        body["secret"] = s.into();
    }
    if let Some(m) = args.max_in_flight {
        body["max_in_flight"] = m.into();
    }
    let mut batch = serde_json::Map::new();
    if let Some(m) = args.batch_max_messages {
        batch.insert("max_messages".into(), m.into());
    }
    if let Some(b) = args.batch_max_bytes {
        batch.insert("max_bytes".into(), b.into());
    }
    if !batch.is_empty() {
        body["batch"] = batch.into();
    }
    let mut own = serde_json::Map::new();
    for h in &args.headers {
        let Some((name, value)) = h.split_once(':') else {
            bail!("--header {h:?} is not NAME: VALUE");
        };
        own.insert(name.trim().to_owned(), value.trim().into());
    }
    if !own.is_empty() {
        body["headers"] = own.into();
    }
    if let Some(n) = args.rate_limit {
        body["rate_limit"] = serde_json::json!({ "per_second": n });
    }
    if !args.types.is_empty() {
        body["types"] = args.types.into();
    }
    let path = format!("/v1/queues/{}/subscribers", args.queue);
    finish(
        target,
        call(
            target,
            Method::POST,
            &path,
            &[],
            Bytes::from(body.to_string()),
        )
        .await?,
        View::Subscriber,
    )
}

#[derive(clap::Subcommand)]
pub enum SubscribersCommand {
    /// A queue's subscribers (secrets never shown).
    List {
        /// The queue, e.g. `orders`.
        queue: QueueName,
    },
    /// One subscriber: its settings, state and health.
    Show {
        /// The queue, e.g. `orders`.
        queue: QueueName,
        /// The subscriber's id, as `subscribers list QUEUE` shows it, e.g. `3`.
        id: String,
    },
    /// Stop sending to it: its messages wait (they are not dead-lettered) until it is resumed.
    Pause {
        /// The queue, e.g. `orders`.
        queue: QueueName,
        /// The subscriber's id, as `subscribers list QUEUE` shows it, e.g. `3`.
        id: String,
    },
    /// Send to a paused or disabled subscriber again; its messages go in order.
    Resume {
        /// The queue, e.g. `orders`.
        queue: QueueName,
        /// The subscriber's id, as `subscribers list QUEUE` shows it, e.g. `3`.
        id: String,
    },
    /// Set its rate limit: messages a second, or `none`.
    RateLimit {
        /// The queue, e.g. `orders`.
        queue: QueueName,
        /// The subscriber's id, as `subscribers list QUEUE` shows it, e.g. `3`.
        id: String,
        /// Messages a second at most (1–100000), e.g. `50`; `none` lifts the limit.
        #[arg(value_name = "PER_SECOND|none")]
        limit: String,
    },
    /// Set the event types it takes from now on: exact names, or prefixes followed by `*`;
    /// none for every message.
    Types {
        /// The queue, e.g. `orders`.
        queue: QueueName,
        /// The subscriber's id, as `subscribers list QUEUE` shows it, e.g. `3`.
        id: String,
        /// Event types it takes, e.g. `order.created 'payment.*'`; none: every message.
        #[arg(value_name = "PATTERN")]
        patterns: Vec<String>,
    },
    /// Give it a new secret; the current one keeps signing beside it for the grace period.
    RotateSecret {
        /// The queue, e.g. `orders`.
        queue: QueueName,
        /// The subscriber's id, as `subscribers list QUEUE` shows it, e.g. `3`.
        id: String,
        /// The new `whsec_` secret, e.g. `--secret whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw`.
        #[arg(long, env = "SYNCBROK_NEW_SECRET", hide_env_values = true)]
        secret: String,
        /// How long the current secret keeps signing too, e.g. 24h (the default); 0s switches
        /// at once.
        #[arg(long)]
        grace: Option<String>,
    },
    /// Remove a subscriber by its id (`subscribers list` shows it).
    Remove {
        /// The queue, e.g. `orders`.
        queue: QueueName,
        /// The subscriber's id, as `subscribers list QUEUE` shows it, e.g. `3`.
        id: String,
    },
}

pub async fn subscribers(target: &Target, command: SubscribersCommand) -> anyhow::Result<()> {
    let one = |queue: &str, id: &str| format!("/v1/queues/{queue}/subscribers/{id}");
    let (method, path, body) = match command {
        SubscribersCommand::List { queue } => {
            (Method::GET, format!("/v1/queues/{queue}/subscribers"), None)
        }
        SubscribersCommand::Show { queue, id } => (Method::GET, one(&queue, &id), None),
        SubscribersCommand::Pause { queue, id } => {
            (Method::POST, format!("{}/pause", one(&queue, &id)), None)
        }
        SubscribersCommand::Resume { queue, id } => {
            (Method::POST, format!("{}/resume", one(&queue, &id)), None)
        }
        SubscribersCommand::RateLimit { queue, id, limit } => {
            let limit = match limit.as_str() {
                "none" => serde_json::Value::Null,
                n => match n.parse::<u32>() {
                    Ok(n) => serde_json::json!({ "per_second": n }),
                    Err(_) => bail!("rate limit {n:?}: give messages a second, or none"),
                },
            };
            let body = serde_json::json!({ "rate_limit": limit });
            (Method::PATCH, one(&queue, &id), Some(body))
        }
        SubscribersCommand::Types {
            queue,
            id,
            patterns,
        } => {
            let types = if patterns.is_empty() {
                serde_json::Value::Null
            } else {
                patterns.into()
            };
            let body = serde_json::json!({ "types": types });
            (Method::PATCH, one(&queue, &id), Some(body))
        }
        SubscribersCommand::RotateSecret {
            queue,
            id,
            secret,
            grace,
        } => {
            let mut body = serde_json::json!({ "secret": secret });
            if let Some(g) = grace {
                body["grace"] = g.into();
            }
            (
                Method::POST,
                format!("{}/secret", one(&queue, &id)),
                Some(body),
            )
        }
        SubscribersCommand::Remove { queue, id } => (Method::DELETE, one(&queue, &id), None),
    };
    let body = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
    let view = if path.ends_with("/subscribers") {
        View::SubscriberList
    } else if method == Method::DELETE {
        View::Fields
    } else {
        View::Subscriber
    };
    finish(target, call(target, method, &path, &[], body).await?, view)
}
