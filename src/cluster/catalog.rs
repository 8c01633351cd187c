//! The topic catalogue as every shard sees it: an immutable snapshot, replaced whole when
//! the controller shard commits a change, shared across shards by `Arc`.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::metadata::{BrokerRecord, MetadataImage};
use super::TopicSpec;

/// An immutable view of every topic. Cheap to share; replaced, never mutated.
#[derive(Debug, Default)]
pub struct Catalog {
    topics: BTreeMap<String, Arc<TopicSpec>>,
    brokers: BTreeMap<u32, BrokerRecord>,
    /// The access rules, indexed for checks.
    acls: crate::security::AclIndex,
    /// SCRAM credentials by user name.
    users: BTreeMap<String, crate::protocol::UserCredential>,
    /// Byte-rate quotas by entity.
    quotas: BTreeMap<crate::protocol::QuotaEntity, crate::protocol::Quota>,
    /// Bumped with every change, so shards can tell which snapshot is newer.
    pub version: u64,
    /// The controller log index the image was applied up to (0 when not from an image): a
    /// change the controller answered as done at index `i` shows in every catalogue with
    /// `applied >= i`.
    pub applied: u64,
}

impl Catalog {
    pub fn new(version: u64, topics: impl IntoIterator<Item = TopicSpec>) -> Catalog {
        let topics = topics
            .into_iter()
            .map(|t| (t.name.clone(), Arc::new(t)))
            .collect();
        Catalog {
            topics,
            brokers: BTreeMap::new(),
            acls: Default::default(),
            users: BTreeMap::new(),
            quotas: BTreeMap::new(),
            version,
            applied: 0,
        }
    }

    /// The catalogue of a metadata image.
    pub fn from_image(version: u64, applied: u64, image: &MetadataImage) -> Catalog {
        let mut catalog = Catalog::new(version, image.topics().cloned());
        catalog.applied = applied;
        catalog.brokers = image.brokers().map(|b| (b.broker, b.clone())).collect();
        catalog.acls = crate::security::AclIndex::new(image.acls());
        catalog.users = image.users().map(|u| (u.name.clone(), u.clone())).collect();
        catalog.quotas = image
            .quotas()
            .map(|q| (q.entity.clone(), q.clone()))
            .collect();
        catalog
    }

    /// A user's stored credential.
    pub fn user(&self, name: &str) -> Option<&crate::protocol::UserCredential> {
        self.users.get(name)
    }

    /// The quota of an entity, if it has one.
    pub fn quota(&self, entity: &crate::protocol::QuotaEntity) -> Option<&crate::protocol::Quota> {
        self.quotas.get(entity)
    }

    /// Whether any entity has a quota (else responses need no quota accounting).
    pub fn has_quotas(&self) -> bool {
        !self.quotas.is_empty()
    }

    pub fn quotas(&self) -> impl Iterator<Item = &crate::protocol::Quota> {
        self.quotas.values()
    }

    pub fn users(&self) -> impl Iterator<Item = &crate::protocol::UserCredential> {
        self.users.values()
    }

    pub fn acls(&self) -> &crate::security::AclIndex {
        &self.acls
    }

    pub fn brokers(&self) -> impl Iterator<Item = &BrokerRecord> {
        self.brokers.values()
    }

    pub fn broker(&self, broker: u32) -> Option<&BrokerRecord> {
        self.brokers.get(&broker)
    }

    pub fn topic(&self, name: &str) -> Option<&Arc<TopicSpec>> {
        self.topics.get(name)
    }

    pub fn topics(&self) -> impl Iterator<Item = &Arc<TopicSpec>> {
        self.topics.values()
    }

    pub fn len(&self) -> usize {
        self.topics.len()
    }

    pub fn is_empty(&self) -> bool {
        self.topics.is_empty()
    }
}
