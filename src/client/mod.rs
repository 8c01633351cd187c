//! The Rust client: admin, producer and consumer over the wire protocol. It needs only the
//! protocol and the batch format, never the broker's insides, and runs on glommio.
//!
//! ```no_run
//! use shardline::client::{Admin, Cluster, Consumer, ConsumerConfig, Producer, ProducerConfig, StartFrom};
//!
//! glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
//!     .spawn(|| async move {
//!         let cluster = Cluster::new("127.0.0.1:9092", "example", true).unwrap();
//!         Admin::new(cluster.clone()).create_topic("orders", 8, &[]).await.unwrap();
//!
//!         let producer = Producer::new(cluster.clone(), ProducerConfig::default());
//!         let delivery = producer.send("orders", Some(b"customer-7"), b"one pizza").await.unwrap();
//!         let stored = delivery.wait().await.unwrap();
//!         println!("stored at partition {} offset {}", stored.partition, stored.offset);
//!
//!         let mut consumer = Consumer::new(cluster, ConsumerConfig::default());
//!         consumer.assign("orders", None, StartFrom::Earliest).await.unwrap();
//!         let fetched = consumer.poll().await.unwrap();
//!         fetched
//!             .for_each(|topic, partition, record| {
//!                 println!("{topic}/{partition}@{}: {:?}", record.offset, record.value);
//!             })
//!             .unwrap();
//!     })
//!     .unwrap()
//!     .join()
//!     .unwrap();
//! ```

pub mod admin;
pub mod cluster;
pub mod connection;
pub mod consumer;
pub mod error;
pub mod group;
mod group_admin;
mod outbox;
pub mod partitioner;
pub mod producer;
pub mod tuning;

pub use admin::Admin;
pub use cluster::Cluster;
pub use consumer::{Consumer, ConsumerConfig, Fetched, FetchedPartition, StartFrom};
pub use error::ClientError;
pub use group::{GroupConfig, GroupConsumer, OwnershipChange};
pub use partitioner::partition_for_key;
pub use producer::{Delivery, Producer, ProducerConfig, RecordMetadata};
pub use tuning::ClientTuning;
