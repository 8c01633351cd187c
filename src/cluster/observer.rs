//! A broker that is not a controller voter (an *observer*) holds a copy of the metadata
//! image instead of a Raft log. Its controller shard asks the controller leader for the
//! image with the applied index it holds (`ControllerCall::FetchImage`); the leader answers
//! as soon as it has applied past that index (or after a bounded wait, with nothing), and
//! the observer installs the newer image whole. So a cluster started with three voters
//! takes a fourth, fifth, ... broker without changing its quorum, and partitions can be
//! placed on or moved to it like any other broker.
//!
//! The observer only ever moves forward: an image at an applied index it already passed
//! is ignored. Owned by the observer's controller shard.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::task::{Poll, Waker};

use super::metadata::{MetadataError, MetadataImage};
use super::raft::{ControllerNode, RaftStatus};

/// The metadata image of a broker that is not a voter.
pub struct Observer {
    node_id: u64,
    image: RefCell<MetadataImage>,
    /// The controller's applied index the image is at (0: none yet).
    applied: Cell<u64>,
    /// Bumped by every installed image; watchers wake on it.
    version: Cell<u64>,
    /// The voter that last answered as the controller leader.
    leader: Cell<Option<u64>>,
    watchers: RefCell<Vec<Waker>>,
}

impl Observer {
    /// `node_id`: this broker's Raft-style id (see `server::internal::raft_id`).
    pub fn new(node_id: u64) -> Observer {
        Observer {
            node_id,
            image: RefCell::new(MetadataImage::new()),
            applied: Cell::new(0),
            version: Cell::new(0),
            leader: Cell::new(None),
            watchers: RefCell::new(Vec::new()),
        }
    }

    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    pub fn image(&self) -> std::cell::Ref<'_, MetadataImage> {
        self.image.borrow()
    }

    pub fn applied(&self) -> u64 {
        self.applied.get()
    }

    pub fn version(&self) -> u64 {
        self.version.get()
    }

    pub fn leader(&self) -> Option<u64> {
        self.leader.get()
    }

    pub fn set_leader(&self, leader: Option<u64>) {
        self.leader.set(leader);
    }

    /// Installs the image the leader had at `applied`, if that is past what this observer
    /// holds. Returns whether it did; a snapshot that does not decode changes nothing.
    pub fn install(&self, applied: u64, snapshot: &[u8]) -> Result<bool, MetadataError> {
        if applied <= self.applied.get() {
            return Ok(false);
        }
        let image = MetadataImage::from_snapshot(snapshot)?;
        *self.image.borrow_mut() = image;
        self.applied.set(applied);
        self.version.set(self.version.get() + 1);
        for waker in self.watchers.borrow_mut().drain(..) {
            waker.wake();
        }
        Ok(true)
    }

    /// Waits until the image's version passes `seen`.
    pub async fn changed(&self, seen: u64) {
        poll_fn(|cx| {
            if self.version.get() > seen {
                return Poll::Ready(());
            }
            self.watchers.borrow_mut().push(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}

/// Where a controller shard reads the metadata: its voter's Raft node, or its observer.
#[derive(Clone, Copy)]
pub enum MetadataSource<'a> {
    Voter(&'a ControllerNode),
    Observer(&'a Observer),
}

impl MetadataSource<'_> {
    pub fn node_id(&self) -> u64 {
        match self {
            MetadataSource::Voter(node) => node.node_id(),
            MetadataSource::Observer(observer) => observer.node_id(),
        }
    }

    pub fn image(&self) -> std::cell::Ref<'_, MetadataImage> {
        match self {
            MetadataSource::Voter(node) => node.image(),
            MetadataSource::Observer(observer) => observer.image(),
        }
    }

    pub fn version(&self) -> u64 {
        match self {
            MetadataSource::Voter(node) => node.version(),
            MetadataSource::Observer(observer) => observer.version(),
        }
    }

    /// The catalogue every shard serves from, as of the image now.
    pub fn catalog(&self) -> std::sync::Arc<super::Catalog> {
        std::sync::Arc::new(super::Catalog::from_image(
            self.version(),
            self.applied(),
            &self.image(),
        ))
    }

    /// The controller's applied index this image is at.
    pub fn applied(&self) -> u64 {
        match self {
            MetadataSource::Voter(node) => node.applied(),
            MetadataSource::Observer(observer) => observer.applied(),
        }
    }

    /// The controller leader, as far as this broker knows.
    pub fn leader(&self) -> Option<u64> {
        match self {
            MetadataSource::Voter(node) => node.leader(),
            MetadataSource::Observer(observer) => observer.leader(),
        }
    }

    pub async fn changed(&self, seen: u64) {
        match self {
            MetadataSource::Voter(node) => node.changed(seen).await,
            MetadataSource::Observer(observer) => observer.changed(seen).await,
        }
    }

    /// What `cluster status` shows: a voter's Raft state, or an observer's image index.
    pub fn status(&self) -> RaftStatus {
        match self {
            MetadataSource::Voter(node) => node.status(),
            MetadataSource::Observer(observer) => RaftStatus {
                node_id: observer.node_id(),
                leader: observer.leader(),
                term: 0,
                role: "observer",
                committed: observer.applied(),
                applied: observer.applied(),
                last_index: observer.applied(),
                snapshot_index: 0,
                log_entries: 0,
                disk_bytes: 0,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::metadata::MetadataEvent;

    fn image_with_broker(broker: u32) -> Vec<u8> {
        let mut image = MetadataImage::new();
        image
            .apply(MetadataEvent::BrokerRegistered {
                broker,
                host: "127.0.0.1".into(),
                port: 9092,
                shard_ports: vec![],
                incarnation: 1,
            })
            .unwrap();
        image.to_snapshot()
    }

    #[test]
    fn an_observer_moves_forward_only_and_refuses_garbage() {
        let observer = Observer::new(4);
        assert_eq!((observer.applied(), observer.version()), (0, 0));
        assert!(observer.install(10, &image_with_broker(1)).unwrap());
        assert_eq!((observer.applied(), observer.version()), (10, 1));
        assert!(observer.image().broker(1).is_some());
        // An older or equal image is passed over, whatever it holds.
        assert!(!observer.install(10, &image_with_broker(2)).unwrap());
        assert!(!observer.install(3, &image_with_broker(2)).unwrap());
        assert!(observer.image().broker(2).is_none());
        // A snapshot that does not decode leaves the image as it was.
        assert!(observer.install(11, b"not an image").is_err());
        assert_eq!((observer.applied(), observer.version()), (10, 1));
        assert!(observer.install(12, &image_with_broker(2)).unwrap());
        assert!(observer.image().broker(2).is_some() && observer.image().broker(1).is_none());
        assert_eq!(
            MetadataSource::Observer(&observer).status().role,
            "observer"
        );
    }

    #[test]
    fn a_watcher_wakes_when_an_image_is_installed() {
        let woke = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(1 << 20)
            .spawn(|| async {
                let observer = std::rc::Rc::new(Observer::new(4));
                let waiting = glommio::spawn_local({
                    let observer = observer.clone();
                    async move { observer.changed(0).await }
                });
                glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
                observer.install(5, &image_with_broker(1)).unwrap();
                waiting.await;
                observer.version()
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(woke, 1);
    }
}
