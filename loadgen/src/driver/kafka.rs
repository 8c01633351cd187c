//! The Kafka driver: librdkafka through `rdkafka`. Producers use a `FutureProducer`
//! configured from `client_settings` (acks, idempotence, linger, batch size, no
//! compression) and let librdkafka's partitioner place keyed messages; consumers assign
//! their partitions explicitly at the high watermarks read before they report ready.

use std::collections::HashMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam::channel::Sender;
use futures::FutureExt;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

use super::peer::{self, AckFuture, PeerConsumer, PeerProducer};
use super::{client_settings, Driver, KAFKA_FETCH_WAIT_MS};
use crate::args::Args;
use crate::consumer::ConsumerEvent;
use crate::producer::ProducerReport;
use crate::stats::{Live, Plan, CLIENT_ID};

/// How long a metadata or watermark request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a new topic may take to have a leader for every partition.
const TOPIC_READY_TIME_MAX: Duration = Duration::from_secs(30);
const TOPIC_READY_POLL: Duration = Duration::from_millis(100);
/// How long `send` waits before retrying when librdkafka's queue is full.
const QUEUE_FULL_BACKOFF: Duration = Duration::from_millis(1);
/// Records one `poll` takes without waiting once the first has arrived.
const POLL_RECORDS_MAX: usize = 4096;
/// Settings in `client_settings` that belong to the consumer, not the producer.
const CONSUMER_SETTINGS: [&str; 1] = ["fetch.wait.max.ms"];

pub struct KafkaDriver;

impl Driver for KafkaDriver {
    fn ensure_topic(&self, args: &Args) -> Result<u32, String> {
        ensure_topic(args)
    }

    fn spawn_producer(
        &self,
        plan: Plan,
        producer: u32,
        live: Arc<Live>,
        reports: Sender<ProducerReport>,
    ) -> JoinHandle<()> {
        peer::spawn_producer(plan, producer, live, reports, |plan| async move {
            KafkaProducer::connect(&plan.args)
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
            |plan, partitions| async move { KafkaConsumer::connect(&plan.args, partitions) },
        )
    }
}

fn base_config(args: &Args) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &args.broker)
        .set("client.id", CLIENT_ID)
        .set("socket.nagle.disable", "true");
    config
}

fn ensure_topic(args: &Args) -> Result<u32, String> {
    let topic = args.topic.as_str();
    let admin: AdminClient<DefaultClientContext> = base_config(args)
        .create()
        .map_err(|e| format!("Kafka admin client for {}: {e}", args.broker))?;
    let partitions = i32::try_from(args.partitions).map_err(|e| e.to_string())?;
    let new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let options = AdminOptions::new().operation_timeout(Some(REQUEST_TIMEOUT));
    let results = peer::block_on(admin.create_topics([&new_topic], &options))?
        .map_err(|e| format!("creating Kafka topic '{topic}': {e}"))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => return Err(format!("creating Kafka topic '{name}': {code}")),
        }
    }
    let metadata_client: BaseConsumer = base_config(args)
        .create()
        .map_err(|e| format!("Kafka client for {}: {e}", args.broker))?;
    let deadline = Instant::now() + TOPIC_READY_TIME_MAX;
    loop {
        let metadata = metadata_client
            .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
            .map_err(|e| format!("metadata of Kafka topic '{topic}': {e}"))?;
        let ready = metadata.topics().first().and_then(|t| {
            let led = t.partitions().iter().all(|p| p.leader() >= 0);
            (t.error().is_none() && !t.partitions().is_empty() && led).then(|| t.partitions().len())
        });
        if let Some(count) = ready {
            let count = u32::try_from(count).map_err(|e| e.to_string())?;
            if count != args.partitions {
                eprintln!(
                    "note: topic '{topic}' already exists with {count} partitions; using them"
                );
            }
            return Ok(count);
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "Kafka topic '{topic}' has no leader for every partition after \
                 {TOPIC_READY_TIME_MAX:?}"
            ));
        }
        std::thread::sleep(TOPIC_READY_POLL);
    }
}

struct KafkaProducer {
    producer: FutureProducer,
    topic: String,
}

impl KafkaProducer {
    fn connect(args: &Args) -> Result<KafkaProducer, String> {
        let mut config = base_config(args);
        for (name, value) in client_settings(args)? {
            if !CONSUMER_SETTINGS.contains(&name) {
                config.set(name, value);
            }
        }
        let producer = config
            .create()
            .map_err(|e| format!("Kafka producer for {}: {e}", args.broker))?;
        Ok(KafkaProducer {
            producer,
            topic: args.topic.clone(),
        })
    }
}

impl PeerProducer for KafkaProducer {
    async fn send(
        &mut self,
        _partition: u32,
        key: Option<&[u8]>,
        value: &[u8],
    ) -> Result<AckFuture, String> {
        loop {
            let mut record = FutureRecord::<[u8], [u8]>::to(&self.topic).payload(value);
            if let Some(key) = key {
                record = record.key(key);
            }
            match self.producer.send_result(record) {
                Ok(delivery) => {
                    return Ok(Box::pin(async move {
                        match delivery.await {
                            Ok(Ok(_)) => Ok(()),
                            Ok(Err((error, _))) => Err(format!("Kafka delivery: {error}")),
                            Err(_) => Err("Kafka delivery cancelled".into()),
                        }
                    }));
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    tokio::time::sleep(QUEUE_FULL_BACKOFF).await;
                }
                Err((error, _)) => return Err(format!("Kafka send: {error}")),
            }
        }
    }
}

struct KafkaConsumer {
    consumer: StreamConsumer,
    topic: String,
    /// The next offset to read, per partition.
    next: HashMap<u32, i64>,
}

impl KafkaConsumer {
    fn connect(args: &Args, partitions: Vec<u32>) -> Result<KafkaConsumer, String> {
        let topic = args.topic.clone();
        let consumer: StreamConsumer = base_config(args)
            .set("group.id", format!("{CLIENT_ID}-{}", std::process::id()))
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "latest")
            .set("fetch.wait.max.ms", KAFKA_FETCH_WAIT_MS.to_string())
            .create()
            .map_err(|e| format!("Kafka consumer for {}: {e}", args.broker))?;
        let mut assignment = TopicPartitionList::new();
        let mut next = HashMap::new();
        for partition in partitions {
            let index = i32::try_from(partition).map_err(|e| e.to_string())?;
            let high = high_watermark_when_led(&consumer, &topic, index)?;
            assignment
                .add_partition_offset(&topic, index, Offset::Offset(high))
                .map_err(|e| format!("assigning {topic}/{partition}: {e}"))?;
            next.insert(partition, high);
        }
        consumer
            .assign(&assignment)
            .map_err(|e| format!("assigning {topic}: {e}"))?;
        Ok(KafkaConsumer {
            consumer,
            topic,
            next,
        })
    }
}

/// The high watermark of a partition, retried while the broker does not lead it yet (a
/// new topic's leaders show in the metadata a moment before they answer).
fn high_watermark_when_led(
    consumer: &StreamConsumer,
    topic: &str,
    partition: i32,
) -> Result<i64, String> {
    let deadline = Instant::now() + TOPIC_READY_TIME_MAX;
    loop {
        match consumer.fetch_watermarks(topic, partition, REQUEST_TIMEOUT) {
            Ok((_, high)) => return Ok(high),
            Err(_) if Instant::now() < deadline => std::thread::sleep(TOPIC_READY_POLL),
            Err(error) => return Err(format!("high watermark of {topic}/{partition}: {error}")),
        }
    }
}

impl PeerConsumer for KafkaConsumer {
    async fn poll(
        &mut self,
        wait: Duration,
        observe: &mut dyn FnMut(u32, &[u8]),
    ) -> Result<(), String> {
        let first = match tokio::time::timeout(wait, self.consumer.recv()).await {
            Err(_) => return Ok(()),
            Ok(received) => received,
        };
        let mut received = Some(first);
        let mut taken = 0;
        while let Some(result) = received {
            let message = result.map_err(|e| format!("Kafka consumer: {e}"))?;
            let partition = u32::try_from(message.partition()).map_err(|e| e.to_string())?;
            self.next.insert(partition, message.offset() + 1);
            observe(partition, message.payload().unwrap_or_default());
            taken += 1;
            if taken >= POLL_RECORDS_MAX {
                break;
            }
            received = self.consumer.recv().now_or_never();
        }
        Ok(())
    }

    async fn behind(&mut self) -> Result<Option<String>, String> {
        for (&partition, &next) in &self.next {
            let index = i32::try_from(partition).map_err(|e| e.to_string())?;
            let (_, high) = self
                .consumer
                .fetch_watermarks(&self.topic, index, REQUEST_TIMEOUT)
                .map_err(|e| format!("high watermark of {}/{partition}: {e}", self.topic))?;
            if next < high {
                return Ok(Some(format!(
                    "partition {partition} read to offset {next} of {high}"
                )));
            }
        }
        Ok(None)
    }
}
