//! Creates many single-partition topics on a running broker and times it; restart the broker
//! afterwards and read its "ready in" log line to see how long 10,000 topics take to load.
//!
//! `cargo run --release --example many_topics -- 127.0.0.1:9092 10000`

use std::rc::Rc;
use std::time::Instant;

use shardline::client::{Admin, Cluster};

/// Creations in flight at once.
const CONCURRENT_CREATES: usize = 32;

fn main() {
    let mut args = std::env::args().skip(1);
    let broker = args.next().unwrap_or_else(|| "127.0.0.1:9092".into());
    let count: usize = args
        .next()
        .map_or(10_000, |n| n.parse().expect("a topic count"));
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(1 << 20)
        .spawn(move || async move {
            let admin = Rc::new(Admin::new(
                Cluster::new(&broker, "many-topics", false).unwrap(),
            ));
            let started = Instant::now();
            let next = Rc::new(std::cell::Cell::new(0usize));
            let workers: Vec<_> = (0..CONCURRENT_CREATES)
                .map(|_| {
                    let (admin, next) = (admin.clone(), next.clone());
                    glommio::spawn_local(async move {
                        loop {
                            let i = next.get();
                            if i >= count {
                                break;
                            }
                            next.set(i + 1);
                            admin
                                .create_topic(&format!("topic-{i:05}"), 1, &[])
                                .await
                                .unwrap();
                        }
                    })
                })
                .collect();
            for worker in workers {
                worker.await;
            }
            let created = started.elapsed();
            let listed = Instant::now();
            let topics = admin.list_topics().await.unwrap();
            println!(
                "created {count} topics in {created:?} ({:.0}/s); metadata for {} topics in {:?}",
                count as f64 / created.as_secs_f64(),
                topics.len(),
                listed.elapsed()
            );
        })
        .unwrap()
        .join()
        .unwrap();
}
