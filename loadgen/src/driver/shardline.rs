//! The shardline driver: the project's own client, each producer and consumer on its own
//! unpinned glommio executor thread (`producer.rs`, `consumer.rs`).

use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam::channel::Sender;
use shardline::client::{Admin, Cluster};

use super::Driver;
use crate::args::Args;
use crate::consumer::{self, ConsumerEvent};
use crate::producer::{self, ProducerReport};
use crate::stats::{Live, Plan, CLIENT_ID};

pub struct ShardlineDriver;

impl Driver for ShardlineDriver {
    fn ensure_topic(&self, args: &Args) -> Result<u32, String> {
        let args = args.clone();
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .name("loadgen-setup")
            .io_memory(shardline::constants::CLI_IO_MEMORY_BYTES)
            .spawn(move || async move { ensure_topic(&args).await })
            .map_err(|e| format!("cannot start an io_uring executor: {e}"))?
            .join()
            .map_err(|e| format!("executor failed: {e}"))?
    }

    fn spawn_producer(
        &self,
        plan: Plan,
        producer: u32,
        live: Arc<Live>,
        reports: Sender<ProducerReport>,
    ) -> JoinHandle<()> {
        producer::spawn(plan, producer, live, reports)
    }

    fn spawn_consumer(
        &self,
        plan: Plan,
        consumer: u32,
        live: Arc<Live>,
        events: Sender<ConsumerEvent>,
    ) -> JoinHandle<()> {
        consumer::spawn(plan, consumer, live, events)
    }
}

/// Creates the topic when it is missing; returns its partition count.
async fn ensure_topic(args: &Args) -> Result<u32, String> {
    let topic = args.topic.as_str();
    let cluster =
        Cluster::new(&args.broker, CLIENT_ID, args.shard_routing()).map_err(|e| e.to_string())?;
    let existing = Admin::new(cluster)
        .ensure_topic(topic, args.partitions)
        .await
        .map_err(|e| format!("topic '{topic}': {e}"))?;
    if existing != args.partitions {
        eprintln!("note: topic '{topic}' already exists with {existing} partitions; using them");
    }
    Ok(existing)
}
