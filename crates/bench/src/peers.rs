//! The peers syncbrok is measured against, driven through their own Rust clients, each set up
//! the way its users would for durable fan-out:
//!
//! - **NATS JetStream**: a file-storage stream, one durable pull consumer per subscriber with
//!   explicit acks (at most `in_flight` unacknowledged), publishes waiting for their PubAck.
//!   NATS 2.9 writes to the file system at once but fsyncs only on an interval (`sync_interval`
//!   appeared in 2.10); an acknowledged publish is not yet on the disk.
//! - **RabbitMQ**: a durable fanout exchange bound to one durable classic queue per subscriber,
//!   persistent messages, publisher confirms, manual acks with a prefetch of `in_flight`.
//!
//! Both servers are started by `scripts/bench-peers.sh`; this file only connects to them.
//! Every round declares fresh streams, consumers, exchanges and queues and deletes them after.

use std::sync::Arc;

use futures_util::StreamExt;
use futures_util::future::try_join_all;
use indicatif::ProgressBar;

use crate::measure::{BenchResult, Deliveries, stamped_body};
use crate::round::{Outcome, Round, Spec, publish_concurrently};

/// A NATS server with JetStream enabled.
pub struct Nats {
    pub url: String,
    /// The server's process, for its resident set and CPU time.
    pub pid: Option<u32>,
}

impl Nats {
    pub async fn fanout(&self, spec: &Spec, round: u32, bar: &ProgressBar) -> BenchResult<Outcome> {
        use async_nats::jetstream::{self, consumer, stream};
        const TARGET: &str = "nats";
        let client = async_nats::connect(&self.url).await?;
        let js = jetstream::new(client);
        let name = format!("BENCH{round}");
        let subject = format!("bench.{round}");
        let _ = js.delete_stream(&name).await;
        let stream = js
            .create_stream(stream::Config {
                name: name.clone(),
                subjects: vec![subject.clone()],
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await?;
        let deliveries = Deliveries::new();
        let mut consumers = tokio::task::JoinSet::new();
        for k in 0..spec.subscribers {
            let durable = format!("sub{k}");
            let pull = stream
                .create_consumer(consumer::pull::Config {
                    durable_name: Some(durable),
                    ack_policy: consumer::AckPolicy::Explicit,
                    max_ack_pending: i64::from(spec.in_flight),
                    ..Default::default()
                })
                .await?;
            // Each subscriber on a connection of its own, as separate services would be.
            let own = async_nats::connect(&self.url).await?;
            let stream_name = name.clone();
            let deliveries = deliveries.clone();
            let info = pull.cached_info().name.clone();
            consumers.spawn(async move {
                let js = jetstream::new(own);
                let pull: consumer::PullConsumer = js
                    .get_stream(&stream_name)
                    .await?
                    .get_consumer(&info)
                    .await?;
                let mut messages = pull.messages().await?;
                while let Some(message) = messages.next().await {
                    let message = message?;
                    deliveries.record(&message.payload);
                    message.ack().await?;
                }
                Ok::<_, async_nats::Error>(())
            });
        }

        let mut measure = Round::start(self.pid);
        let (publisher_js, publisher_subject, body_bytes) =
            (js.clone(), subject.clone(), spec.body_bytes);
        publish_concurrently(spec, move |n| {
            let (js, subject) = (publisher_js.clone(), publisher_subject.clone());
            async move {
                // A batch is `n` publishes in flight at once, then their acks: NATS's own way
                // of pipelining (it has no batch publish).
                let mut acks = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    let body = stamped_body(body_bytes);
                    acks.push(js.publish(subject.clone(), body.into()).await?);
                }
                try_join_all(acks.into_iter().map(std::future::IntoFuture::into_future)).await?;
                Ok(())
            }
        })
        .await?;
        measure.published();
        let outcome = measure.finish(TARGET, spec, &deliveries, bar).await?;
        consumers.abort_all();
        js.delete_stream(&name).await?;
        Ok(outcome)
    }
}

/// A RabbitMQ server.
pub struct Rabbit {
    pub url: String,
    /// The server's Erlang VM process, for its resident set and CPU time.
    pub pid: Option<u32>,
}

impl Rabbit {
    pub async fn fanout(&self, spec: &Spec, round: u32, bar: &ProgressBar) -> BenchResult<Outcome> {
        const TARGET: &str = "rabbitmq";
        use lapin::options::{
            BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
            ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
            QueueDeclareOptions, QueueDeleteOptions,
        };
        use lapin::types::FieldTable;
        use lapin::{
            BasicProperties, Confirmation, Connection, ConnectionProperties, ExchangeKind,
        };

        let connection = Connection::connect(&self.url, ConnectionProperties::default()).await?;
        let setup = connection.create_channel().await?;
        let exchange = format!("bench.{round}");
        setup
            .exchange_declare(
                exchange.clone().into(),
                ExchangeKind::Fanout,
                ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        let deliveries = Deliveries::new();
        let mut consumers = tokio::task::JoinSet::new();
        let mut queues = Vec::new();
        for k in 0..spec.subscribers {
            let queue = format!("bench.{round}.{k}");
            setup
                .queue_declare(
                    queue.clone().into(),
                    QueueDeclareOptions::durable(),
                    FieldTable::default(),
                )
                .await?;
            setup
                .queue_bind(
                    queue.clone().into(),
                    exchange.clone().into(),
                    "".into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            // Each subscriber on a connection of its own, as separate services would be.
            let own = Connection::connect(&self.url, ConnectionProperties::default()).await?;
            let channel = own.create_channel().await?;
            channel
                .basic_qos(
                    u16::try_from(spec.in_flight).unwrap_or(u16::MAX),
                    BasicQosOptions::default(),
                )
                .await?;
            let mut consumer = channel
                .basic_consume(
                    queue.clone().into(),
                    format!("sub{k}").into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            let deliveries = deliveries.clone();
            consumers.spawn(async move {
                let _connection = own;
                while let Some(delivery) = consumer.next().await {
                    let delivery = delivery?;
                    deliveries.record(&delivery.data);
                    delivery.ack(BasicAckOptions::default()).await?;
                }
                Ok::<_, lapin::Error>(())
            });
            queues.push(queue);
        }
        // One channel per publisher, each in confirm mode, over one connection.
        let mut channels = Vec::new();
        for _ in 0..spec.publishers {
            let channel = connection.create_channel().await?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            channels.push(channel);
        }
        let channels = Arc::new(channels);

        let mut measure = Round::start(self.pid);
        let next_channel = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (publisher_exchange, body_bytes) = (exchange.clone(), spec.body_bytes);
        publish_concurrently(spec, move |n| {
            let (exchange, channels, next_channel) = (
                publisher_exchange.clone(),
                channels.clone(),
                next_channel.clone(),
            );
            async move {
                let i = next_channel.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let channel = &channels[i % channels.len()];
                // A batch is `n` publishes, then their confirms.
                let mut confirms = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    let body = stamped_body(body_bytes);
                    confirms.push(
                        channel
                            .basic_publish(
                                exchange.clone().into(),
                                "".into(),
                                BasicPublishOptions::default(),
                                &body,
                                BasicProperties::default().with_delivery_mode(2),
                            )
                            .await?,
                    );
                }
                for confirm in try_join_all(confirms).await? {
                    if !matches!(confirm, Confirmation::Ack(_)) {
                        return Err(
                            format!("RabbitMQ did not confirm a publish: {confirm:?}").into()
                        );
                    }
                }
                Ok(())
            }
        })
        .await?;
        measure.published();
        let outcome = measure.finish(TARGET, spec, &deliveries, bar).await?;
        consumers.abort_all();
        for queue in queues {
            setup
                .queue_delete(queue.into(), QueueDeleteOptions::default())
                .await?;
        }
        setup
            .exchange_delete(exchange.into(), ExchangeDeleteOptions::default())
            .await?;
        let _ = connection.close(200, "done".into()).await;
        Ok(outcome)
    }
}
