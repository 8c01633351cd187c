//! The shardline driver: the project's own client, each producer and consumer on its own
//! unpinned glommio executor thread (`producer.rs`, `consumer.rs`, `group.rs`). Set-up work
//! (topics, log ends, the group's state) runs on a short-lived executor of its own.

use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam::channel::Sender;
use shardline::client::{Admin, Cluster};
use shardline::protocol::{GroupState, OffsetSpec, ResetTo};

use super::Driver;
use crate::args::Args;
use crate::consumer::{self, ConsumerEvent};
use crate::producer::{self, ProducerReport};
use crate::stats::{Live, Plan};
use crate::topics;

/// How long the consumer group may take to become stable before the producers start.
const GROUP_STABLE_TIME_MAX: Duration = Duration::from_secs(60);
/// How often the group's state is asked for meanwhile.
const GROUP_STATE_POLL: Duration = Duration::from_millis(50);

pub struct ShardlineDriver;

/// Runs `work` on a fresh executor thread and waits for its result.
fn on_executor<T, F, W>(args: &Args, work: W) -> Result<T, String>
where
    T: Send + 'static,
    F: Future<Output = Result<T, String>> + 'static,
    W: FnOnce(Rc<Cluster>) -> F + Send + 'static,
{
    let args = args.clone();
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .name("loadgen-setup")
        .io_memory(shardline::constants::CLI_IO_MEMORY_BYTES)
        .spawn(move || async move {
            let cluster = args.cluster()?;
            work(cluster).await
        })
        .map_err(|e| format!("cannot start an io_uring executor: {e}"))?
        .join()
        .map_err(|e| format!("executor failed: {e}"))?
}

impl Driver for ShardlineDriver {
    fn ensure_topic(&self, args: &Args) -> Result<u32, String> {
        let setup = args.clone();
        let partitions = on_executor(args, move |cluster| async move {
            let partitions = if setup.topics.is_some() {
                let names = topics::topic_names(&setup.topic, setup.topics);
                let started = Instant::now();
                let partitions = topics::ensure_topics(&cluster, &names, setup.partitions).await?;
                eprintln!(
                    "{} topics ready in {:.1} s",
                    names.len(),
                    started.elapsed().as_secs_f64()
                );
                partitions
            } else {
                ensure_topic(&cluster, &setup).await?
            };
            if let Some(group) = &setup.consumer_group {
                reset_group_to_log_ends(&cluster, group, &setup).await?;
            }
            Ok(partitions)
        })?;
        Ok(partitions)
    }

    fn log_ends(&self, plan: &Plan) -> Result<Vec<u64>, String> {
        let names = plan.topics.clone();
        let pairs = topics::topic_partitions(names.len(), plan.partitions);
        on_executor(&plan.args, move |cluster| async move {
            topics::log_ends(&cluster, &names, &pairs).await
        })
    }

    fn wait_group_stable(&self, plan: &Plan) -> Result<(), String> {
        let group = plan
            .args
            .consumer_group
            .clone()
            .ok_or("no --consumer-group")?;
        let members = plan.args.consumers as usize;
        on_executor(&plan.args, move |cluster| async move {
            let admin = Admin::new(cluster);
            let deadline = Instant::now() + GROUP_STABLE_TIME_MAX;
            loop {
                let described = admin
                    .describe_group(&group)
                    .await
                    .map_err(|e| format!("describing group {group}: {e}"))?;
                if described.state == GroupState::Stable && described.members.len() == members {
                    return Ok(());
                }
                if Instant::now() >= deadline {
                    return Err(format!(
                        "group {group} not stable with {members} members after \
                         {GROUP_STABLE_TIME_MAX:?}: {:?} with {} members",
                        described.state,
                        described.members.len()
                    ));
                }
                glommio::timer::sleep(GROUP_STATE_POLL).await;
            }
        })
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
async fn ensure_topic(cluster: &Rc<Cluster>, args: &Args) -> Result<u32, String> {
    let topic = args.topic.as_str();
    let existing = Admin::new(cluster.clone())
        .ensure_topic(topic, args.partitions)
        .await
        .map_err(|e| format!("topic '{topic}': {e}"))?;
    if existing != args.partitions {
        eprintln!("note: topic '{topic}' already exists with {existing} partitions; using them");
    }
    Ok(existing)
}

/// A group that committed offsets before (an earlier run) starts at the log ends, like the
/// consumers without a group: its old offsets would replay earlier runs' messages.
async fn reset_group_to_log_ends(
    cluster: &Rc<Cluster>,
    group: &str,
    args: &Args,
) -> Result<(), String> {
    let admin = Admin::new(cluster.clone());
    let committed = admin
        .group_offsets(group)
        .await
        .map_err(|e| format!("offsets of group {group}: {e}"))?;
    if committed.is_empty() {
        return Ok(());
    }
    for topic in topics::topic_names(&args.topic, args.topics) {
        admin
            .reset_offsets(
                group,
                &topic,
                None,
                ResetTo::Spec(OffsetSpec::Latest),
                false,
            )
            .await
            .map_err(|e| format!("resetting group {group} on {topic} (is it in use?): {e}"))?;
    }
    eprintln!("note: group {group} had committed offsets; reset to the log ends");
    Ok(())
}
