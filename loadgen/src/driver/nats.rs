//! The NATS JetStream driver: async-nats. The topic is a file-storage stream named after
//! it, taking the subjects `<topic>.<partition>` (`nats_subject`); producers publish to the
//! subject of `partition_for(key)` and wait for the PubAck. Each consumer reads each of its
//! partitions through an ephemeral pull consumer filtered to that subject, delivering only
//! what is published after it was made, and acknowledges cumulatively (ack policy all)
//! after every poll so that nothing is redelivered.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use async_nats::jetstream::consumer::pull::{self, Stream as MessageStream};
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::stream::{Config as StreamConfig, StorageType};
use async_nats::jetstream::{self, Context};
use bytes::Bytes;
use crossbeam::channel::Sender;
use futures::stream::{SelectAll, StreamExt};
use futures::FutureExt;

use super::peer::{self, AckFuture, PeerConsumer, PeerProducer};
use super::{nats_partition, nats_subject, nats_topic_ok, Driver};
use crate::args::Args;
use crate::consumer::ConsumerEvent;
use crate::producer::ProducerReport;
use crate::stats::{Live, Plan};

/// Messages a pull consumer may have delivered and not yet acknowledged (the cumulative
/// ack after each poll keeps it far below this).
const ACK_PENDING_MAX: i64 = 1_000_000;
/// Messages one pull request asks for.
const PULL_BATCH_MESSAGES: usize = 1000;
/// Records one `poll` takes without waiting once the first has arrived.
const POLL_RECORDS_MAX: usize = 4096;
/// How long an idle ephemeral consumer outlives its client.
const CONSUMER_INACTIVE_THRESHOLD: Duration = Duration::from_secs(60);

pub struct NatsDriver;

impl Driver for NatsDriver {
    fn ensure_topic(&self, args: &Args) -> Result<u32, String> {
        peer::block_on(ensure_stream(args))??;
        Ok(args.partitions)
    }

    fn spawn_producer(
        &self,
        plan: Plan,
        producer: u32,
        live: Arc<Live>,
        reports: Sender<ProducerReport>,
    ) -> JoinHandle<()> {
        peer::spawn_producer(plan, producer, live, reports, |plan| async move {
            Ok(NatsProducer {
                context: connect(&plan.args).await?,
                topic: plan.args.topic.clone(),
            })
        })
    }

    fn spawn_consumer(
        &self,
        plan: Plan,
        consumer: u32,
        live: Arc<Live>,
        events: Sender<ConsumerEvent>,
    ) -> JoinHandle<()> {
        peer::spawn_consumer(
            plan,
            consumer,
            live,
            events,
            |plan, partitions| async move { NatsConsumer::connect(&plan.args, &partitions).await },
        )
    }
}

async fn connect(args: &Args) -> Result<Context, String> {
    let client = async_nats::connect(args.broker.as_str())
        .await
        .map_err(|e| format!("connecting to NATS at {}: {e}", args.broker))?;
    Ok(jetstream::new(client))
}

async fn ensure_stream(args: &Args) -> Result<(), String> {
    let topic = &args.topic;
    if !nats_topic_ok(topic) {
        return Err(format!(
            "topic '{topic}' cannot name a JetStream stream (no '.', '*', '>', spaces)"
        ));
    }
    let context = connect(args).await?;
    context
        .get_or_create_stream(StreamConfig {
            name: topic.clone(),
            subjects: vec![format!("{topic}.*")],
            storage: StorageType::File,
            num_replicas: 1,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("creating JetStream stream '{topic}': {e}"))?;
    Ok(())
}

struct NatsProducer {
    context: Context,
    topic: String,
}

impl PeerProducer for NatsProducer {
    async fn send(
        &mut self,
        partition: u32,
        _key: Option<&[u8]>,
        value: &[u8],
    ) -> Result<AckFuture, String> {
        let subject = nats_subject(&self.topic, partition);
        let ack = self
            .context
            .publish(subject, Bytes::copy_from_slice(value))
            .await
            .map_err(|e| format!("JetStream publish: {e}"))?;
        Ok(Box::pin(async move {
            ack.await
                .map(|_| ())
                .map_err(|e| format!("JetStream PubAck: {e}"))
        }))
    }
}

struct NatsConsumer {
    /// Per partition: its pull consumer and the last stream sequence read from it.
    consumers: Vec<(u32, PullConsumer, u64)>,
    messages: SelectAll<MessageStream>,
}

impl NatsConsumer {
    async fn connect(args: &Args, partitions: &[u32]) -> Result<NatsConsumer, String> {
        let context = connect(args).await?;
        let topic = &args.topic;
        let stream = context
            .get_stream(topic)
            .await
            .map_err(|e| format!("JetStream stream '{topic}': {e}"))?;
        let mut consumers = Vec::new();
        let mut messages = SelectAll::new();
        for &partition in partitions {
            let consumer: PullConsumer = stream
                .create_consumer(pull::Config {
                    filter_subject: nats_subject(topic, partition),
                    deliver_policy: DeliverPolicy::New,
                    ack_policy: AckPolicy::All,
                    max_ack_pending: ACK_PENDING_MAX,
                    inactive_threshold: CONSUMER_INACTIVE_THRESHOLD,
                    ..Default::default()
                })
                .await
                .map_err(|e| format!("JetStream consumer of {topic}/{partition}: {e}"))?;
            let stream = consumer
                .stream()
                .max_messages_per_batch(PULL_BATCH_MESSAGES)
                .messages()
                .await
                .map_err(|e| format!("pulling {topic}/{partition}: {e}"))?;
            messages.push(stream);
            consumers.push((partition, consumer, 0));
        }
        Ok(NatsConsumer {
            consumers,
            messages,
        })
    }
}

impl PeerConsumer for NatsConsumer {
    async fn poll(
        &mut self,
        wait: Duration,
        observe: &mut dyn FnMut(u32, &[u8]),
    ) -> Result<(), String> {
        let first = match tokio::time::timeout(wait, self.messages.next()).await {
            Err(_) | Ok(None) => return Ok(()),
            Ok(Some(first)) => first,
        };
        let mut received = Some(first);
        let mut taken = 0;
        let mut last_per_partition = Vec::new();
        while let Some(result) = received {
            let message = result.map_err(|e| format!("JetStream pull: {e}"))?;
            let partition = nats_partition(message.subject.as_str()).ok_or_else(|| {
                format!(
                    "JetStream message on unexpected subject {}",
                    message.subject
                )
            })?;
            let sequence = message
                .info()
                .map_err(|e| format!("JetStream message info: {e}"))?
                .stream_sequence;
            observe(partition, &message.payload);
            if let Some(entry) = self.consumers.iter_mut().find(|(p, _, _)| *p == partition) {
                entry.2 = entry.2.max(sequence);
            }
            last_per_partition.retain(|(p, _): &(u32, _)| *p != partition);
            last_per_partition.push((partition, message));
            taken += 1;
            if taken >= POLL_RECORDS_MAX {
                break;
            }
            received = self.messages.next().now_or_never().flatten();
        }
        for (partition, message) in last_per_partition {
            message
                .ack()
                .await
                .map_err(|e| format!("JetStream ack of partition {partition}: {e}"))?;
        }
        Ok(())
    }

    async fn behind(&mut self) -> Result<Option<String>, String> {
        for (partition, consumer, last_read) in &mut self.consumers {
            let info = consumer
                .info()
                .await
                .map_err(|e| format!("JetStream consumer info of partition {partition}: {e}"))?;
            // Every delivered message is acknowledged once it was read (cumulatively, after
            // each poll): nothing pending and nothing unacknowledged means all was read.
            if info.num_pending > 0 || info.num_ack_pending > 0 {
                return Ok(Some(format!(
                    "partition {partition}: {} not delivered, {} delivered and not yet read, \
                     read up to stream sequence {last_read}",
                    info.num_pending, info.num_ack_pending
                )));
            }
        }
        Ok(None)
    }
}
