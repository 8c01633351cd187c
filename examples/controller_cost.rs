//! What the controller costs at 10,000 partitions: its Raft log on disk, a snapshot, and the
//! time a voter takes to come back (open its log and snapshot, rebuild the image).
//!
//! One voter (a one-node Raft group, so every proposal commits on its own disk), on one
//! glommio executor, with the broker's real controller code:
//!
//! 1. three brokers register;
//! 2. `TOPICS` topics of `PARTITIONS_PER_TOPIC` partitions, replication factor 3, are created
//!    one proposal each (what `topic create` does);
//! 3. every partition changes its in-sync set once and its leader once (what a rolling
//!    restart of one broker causes: `2 x 10,000` partition events, one proposal each);
//! 4. the log is measured, a snapshot is taken (and timed), the log measured again;
//! 5. the voter is reopened from disk, and the time until its image is whole is measured.
//!
//! Run: `cargo run --release --example controller_cost`.

use std::rc::Rc;
use std::time::{Duration, Instant};

use shardline::cluster::metadata::MetadataEvent;
use shardline::cluster::raft::{ControllerNode, RaftOptions};

const TOPICS: usize = 100;
const PARTITIONS_PER_TOPIC: u32 = 100;

fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

async fn open(dir: &std::path::Path) -> Rc<ControllerNode> {
    let options = RaftOptions {
        node_id: 1,
        voters: vec![1],
        // Never on its own: this example snapshots when it wants to measure it.
        snapshot_every: u64::MAX / 2,
    };
    let node = Rc::new(
        ControllerNode::open(dir, &options, Box::new(|_, _| {}))
            .await
            .expect("the controller log opens"),
    );
    let driver = node.clone();
    glommio::spawn_local(driver.run(|| false)).detach();
    while !node.is_leader() {
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
    node
}

async fn propose(node: &ControllerNode, event: MetadataEvent) {
    node.propose(&event).await.expect("committed and applied");
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("controller");
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(1 << 20)
        .spawn(move || async move {
            let node = open(&path).await;
            for broker in 0..3 {
                propose(
                    &node,
                    MetadataEvent::BrokerRegistered {
                        broker,
                        host: "127.0.0.1".into(),
                        port: 9092 + broker as u16,
                        shard_ports: vec![19000 + broker as u16],
                        incarnation: 1,
                    },
                )
                .await;
            }
            let started = Instant::now();
            for t in 0..TOPICS {
                let event = node
                    .image()
                    .plan_create(&format!("topic-{t:03}"), PARTITIONS_PER_TOPIC, 3, &[], 0)
                    .unwrap();
                propose(&node, event).await;
            }
            let created = started.elapsed();
            let partitions = TOPICS * PARTITIONS_PER_TOPIC as usize;
            let started = Instant::now();
            let topics: Vec<_> = node.image().topics().cloned().collect();
            for topic in &topics {
                for (p, state) in topic.placement.iter().enumerate() {
                    let shrunk: Vec<u32> = state.replicas[..2].to_vec();
                    propose(
                        &node,
                        MetadataEvent::PartitionChanged {
                            topic_id: topic.topic_id,
                            partition: p as u32,
                            leader: state.leader,
                            leader_epoch: state.leader_epoch,
                            in_sync: shrunk.clone(),
                        },
                    )
                    .await;
                    propose(
                        &node,
                        MetadataEvent::PartitionChanged {
                            topic_id: topic.topic_id,
                            partition: p as u32,
                            leader: Some(state.replicas[1]),
                            leader_epoch: state.leader_epoch + 1,
                            in_sync: shrunk,
                        },
                    )
                    .await;
                }
            }
            let changed = started.elapsed();
            let status = node.status();
            let log_bytes = dir_bytes(&path);
            println!("partitions: {partitions} ({TOPICS} topics x {PARTITIONS_PER_TOPIC}, replication factor 3)");
            println!(
                "create {TOPICS} topics: {created:?} ({:?} a proposal)",
                created / TOPICS as u32
            );
            println!(
                "{} partition changes: {changed:?} ({:?} a proposal)",
                2 * partitions,
                changed / (2 * partitions) as u32
            );
            println!(
                "raft log: {} entries, {log_bytes} bytes on disk ({:.1} bytes an entry)",
                status.log_entries,
                log_bytes as f64 / status.log_entries as f64
            );
            // A copy of the log as it is, to measure a restart that replays every entry.
            let unsnapshotted = path.with_file_name("controller-no-snapshot");
            std::fs::create_dir_all(&unsnapshotted).unwrap();
            for entry in std::fs::read_dir(&path).unwrap() {
                let entry = entry.unwrap();
                std::fs::copy(entry.path(), unsnapshotted.join(entry.file_name())).unwrap();
            }
            let started = Instant::now();
            node.snapshot_now().await.unwrap();
            let snapshot_time = started.elapsed();
            let snapshot_bytes = std::fs::metadata(path.join("snapshot")).unwrap().len();
            println!(
                "snapshot at index {}: {snapshot_time:?} to encode, write, sync and compact; {snapshot_bytes} bytes; log and snapshot now {} bytes",
                node.status().snapshot_index,
                dir_bytes(&path)
            );
            let encode = Instant::now();
            let image_bytes = node.image().to_snapshot();
            println!(
                "encoding the image alone: {:?} ({} bytes)",
                encode.elapsed(),
                image_bytes.len()
            );
            let decode = Instant::now();
            let image = shardline::cluster::MetadataImage::from_snapshot(&image_bytes).unwrap();
            println!(
                "rebuilding the image from it: {:?} ({} topics)",
                decode.elapsed(),
                image.len()
            );
            // A voter coming back: open the disk, replay, be the leader with the whole image.
            let started = Instant::now();
            let again = open(&path).await;
            let reopened = started.elapsed();
            assert_eq!(again.image().len(), TOPICS);
            println!("a voter comes back (open snapshot + log, rebuild the image, lead): {reopened:?}");
            let started = Instant::now();
            let replayed = open(&unsnapshotted).await;
            while replayed.image().len() < TOPICS {
                glommio::timer::sleep(Duration::from_millis(1)).await;
            }
            println!(
                "the same without a snapshot (every entry replayed): {:?}",
                started.elapsed()
            );
            std::process::exit(0);
        })
        .unwrap()
        .join()
        .unwrap();
}
