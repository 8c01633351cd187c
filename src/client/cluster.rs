//! What a client knows of the cluster: its metadata, and one connection per broker address
//! (per shard address when routing is shard-aware).

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;

use super::connection::Connection;
use super::error::ClientError;
use crate::protocol::{
    ErrorCode, MetadataRequest, MetadataResponse, Request, Response, TopicMetadata,
};

/// Owned by the client's executor; shared by its producer, consumer and admin by `Rc`.
pub struct Cluster {
    /// The brokers to ask first (any of them; tried in turn).
    bootstrap: Vec<SocketAddr>,
    client_id: String,
    /// Connect straight to the shard that owns a partition (its own port from metadata).
    shard_aware: bool,
    metadata: RefCell<Option<Rc<MetadataResponse>>>,
    /// Where each topic's partitions are led, worked out from `metadata` on first use and
    /// dropped with it: a producer or consumer asks for every batch and every fetch, so a
    /// lookup must not walk (or copy) a topic's whole partition list.
    routes: RefCell<HashMap<String, Rc<TopicRoutes>>>,
    connections: RefCell<HashMap<SocketAddr, Connection>>,
    /// The newest leader epoch seen per partition: metadata older than it (from a broker
    /// cut off from the controller) is passed over for another broker's.
    epochs: RefCell<HashMap<(String, u32), u32>>,
    /// Where the next metadata refresh starts in `bootstrap` (each starts one further).
    next_bootstrap: std::cell::Cell<usize>,
    /// TLS to every broker, when set.
    tls: Option<crate::tls::ClientTls>,
    /// SCRAM-SHA-256 on every connection, when set.
    login: Option<crate::security::Login>,
}

impl Cluster {
    /// `bootstrap`: one broker address, or several separated by commas.
    pub fn new(
        bootstrap: &str,
        client_id: &str,
        shard_aware: bool,
    ) -> Result<Rc<Cluster>, ClientError> {
        Cluster::with_tls(bootstrap, client_id, shard_aware, None)
    }

    /// As `new`, connecting to every broker over TLS when `tls` is given.
    pub fn with_tls(
        bootstrap: &str,
        client_id: &str,
        shard_aware: bool,
        tls: Option<crate::tls::ClientTls>,
    ) -> Result<Rc<Cluster>, ClientError> {
        Cluster::with_security(bootstrap, client_id, shard_aware, tls, None)
    }

    /// As `with_tls`, authenticating every connection with SCRAM-SHA-256 when `login` is
    /// given.
    pub fn with_security(
        bootstrap: &str,
        client_id: &str,
        shard_aware: bool,
        tls: Option<crate::tls::ClientTls>,
        login: Option<crate::security::Login>,
    ) -> Result<Rc<Cluster>, ClientError> {
        let mut addresses = Vec::new();
        for one in bootstrap
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
        {
            let address = one
                .to_socket_addrs()
                .map_err(|e| ClientError::InvalidInput(format!("broker address '{one}': {e}")))?
                .next()
                .ok_or_else(|| {
                    ClientError::InvalidInput(format!("broker address '{one}' resolves to nothing"))
                })?;
            addresses.push(address);
        }
        if addresses.is_empty() {
            return Err(ClientError::InvalidInput(format!(
                "no broker address in '{bootstrap}'"
            )));
        }
        let bootstrap = addresses;
        Ok(Rc::new(Cluster {
            bootstrap,
            client_id: client_id.to_string(),
            shard_aware,
            metadata: RefCell::new(None),
            routes: RefCell::new(HashMap::new()),
            connections: RefCell::new(HashMap::new()),
            epochs: RefCell::new(HashMap::new()),
            next_bootstrap: std::cell::Cell::new(0),
            tls,
            login,
        }))
    }

    /// The bootstrap brokers' addresses, in the order given.
    pub fn bootstrap(&self) -> &[SocketAddr] {
        &self.bootstrap
    }

    pub fn shard_aware(&self) -> bool {
        self.shard_aware
    }

    /// A live connection to `address`, made on first use and again after a failure.
    pub async fn connection(&self, address: SocketAddr) -> Result<Connection, ClientError> {
        if let Some(connection) = self.connections.borrow().get(&address) {
            if !connection.is_broken() {
                return Ok(connection.clone());
            }
        }
        let connection = Connection::connect_as(
            address,
            &self.client_id,
            self.tls.as_ref(),
            self.login.as_ref(),
        )
        .await?;
        // Another task may have connected while this one did: keep one connection per address.
        let mut connections = self.connections.borrow_mut();
        if let Some(existing) = connections.get(&address).filter(|c| !c.is_broken()) {
            return Ok(existing.clone());
        }
        connections.insert(address, connection.clone());
        Ok(connection)
    }

    /// Whether a metadata answer names an older leader epoch than seen for some partition.
    fn older_than_seen(&self, response: &Response) -> bool {
        let Response::Metadata(metadata) = response else {
            return false;
        };
        let epochs = self.epochs.borrow();
        metadata.topics.iter().any(|topic| {
            topic.partitions.iter().any(|p| {
                epochs
                    .get(&(topic.name.clone(), p.partition))
                    .is_some_and(|&seen| p.leader_epoch < seen)
            })
        })
    }

    /// Sends a request any broker may answer to the bootstrap brokers in turn (starting
    /// one further along each time), moving on from one that cannot be reached or does
    /// not answer within `timeout`.
    pub async fn request_any(
        &self,
        request: &Request,
        timeout: std::time::Duration,
    ) -> Result<crate::protocol::DecodedResponse, ClientError> {
        self.request_any_preferring(request, timeout, |_| true)
            .await
    }

    /// As `request_any`, moving on also from an answer `usable` refuses (stale metadata);
    /// when no broker gives a usable one, the last answer is better than none.
    async fn request_any_preferring(
        &self,
        request: &Request,
        timeout: std::time::Duration,
        usable: impl Fn(&Response) -> bool,
    ) -> Result<crate::protocol::DecodedResponse, ClientError> {
        let start = self.next_bootstrap.get();
        self.next_bootstrap.set(start.wrapping_add(1));
        let count = self.bootstrap.len();
        let mut last = None;
        let mut unusable = None;
        for index in 0..count {
            let address = self.bootstrap[(start + index) % count];
            let asked = super::connection::within(timeout, async {
                let connection = self.connection(address).await?;
                connection.request_within(request, &[], timeout).await
            })
            .await
            .unwrap_or_else(|| {
                self.forget(address);
                Err(ClientError::Timeout(format!(
                    "{address}: no answer within {timeout:?}"
                )))
            });
            match asked {
                Ok(answer) if usable(&answer.response) => return Ok(answer),
                Ok(answer) => unusable = Some(answer),
                Err(
                    error @ (ClientError::Timeout(_)
                    | ClientError::Disconnected(_)
                    | ClientError::Io(_)),
                ) => last = Some(error),
                Err(error) => return Err(error),
            }
        }
        match unusable {
            Some(answer) => Ok(answer),
            None => Err(last.expect("at least one bootstrap address")),
        }
    }

    /// Drops the connection to `address` (it stopped answering): the next use connects
    /// again.
    fn forget(&self, address: SocketAddr) {
        self.connections.borrow_mut().remove(&address);
    }

    /// A connection to a bootstrap broker's main port: the first that answers.
    pub async fn any_connection(&self) -> Result<Connection, ClientError> {
        let mut last = None;
        for &address in &self.bootstrap {
            match self.connection(address).await {
                Ok(connection) => return Ok(connection),
                Err(error) => last = Some(error),
            }
        }
        Err(last.expect("at least one bootstrap address"))
    }

    /// Fetches metadata for every topic and caches it: from the first bootstrap broker
    /// that answers within `CLIENT_METADATA_TIMEOUT_MS` with no leader epoch older than
    /// this client has seen (a broker cut off from the controller answers with what it
    /// last knew). Each refresh starts one broker further along the bootstrap list.
    pub async fn refresh_metadata(&self) -> Result<Rc<MetadataResponse>, ClientError> {
        let request = Request::Metadata(MetadataRequest { topics: None });
        let timeout =
            std::time::Duration::from_millis(crate::constants::CLIENT_METADATA_TIMEOUT_MS);
        let response = self
            .request_any_preferring(&request, timeout, |r| !self.older_than_seen(r))
            .await?;
        if let Response::Metadata(metadata) = &response.response {
            let mut epochs = self.epochs.borrow_mut();
            for topic in &metadata.topics {
                for partition in &topic.partitions {
                    let seen = epochs
                        .entry((topic.name.clone(), partition.partition))
                        .or_insert(0);
                    *seen = (*seen).max(partition.leader_epoch);
                }
            }
        }
        match response.response {
            Response::Metadata(metadata) => {
                let metadata = Rc::new(metadata);
                *self.metadata.borrow_mut() = Some(metadata.clone());
                self.routes.borrow_mut().clear();
                Ok(metadata)
            }
            other => Err(ClientError::Protocol(format!(
                "metadata answered with {:?}",
                other.api_key()
            ))),
        }
    }

    /// Forgets cached metadata; the next use fetches it again.
    pub fn invalidate_metadata(&self) {
        *self.metadata.borrow_mut() = None;
        self.routes.borrow_mut().clear();
    }

    /// Cached metadata, fetched if there is none yet.
    pub async fn metadata(&self) -> Result<Rc<MetadataResponse>, ClientError> {
        let cached = self.metadata.borrow().clone();
        match cached {
            Some(metadata) => Ok(metadata),
            None => self.refresh_metadata().await,
        }
    }

    /// A topic's metadata (refreshing once if it is not known yet). Internal topics (`__`
    /// names), which full listings leave out, are asked for by name.
    pub async fn topic(&self, name: &str) -> Result<TopicMetadata, ClientError> {
        if name.starts_with("__") {
            let request = Request::Metadata(MetadataRequest {
                topics: Some(vec![name.to_string()]),
            });
            let timeout =
                std::time::Duration::from_millis(crate::constants::CLIENT_METADATA_TIMEOUT_MS);
            if let Response::Metadata(metadata) =
                self.request_any(&request, timeout).await?.response
            {
                if let Some(topic) = metadata
                    .topics
                    .into_iter()
                    .find(|t| t.name == name && t.error == ErrorCode::None)
                {
                    return Ok(topic);
                }
            }
            return Err(ClientError::UnknownTopic(name.to_string()));
        }
        for refresh in [false, true] {
            let metadata = if refresh {
                self.refresh_metadata().await?
            } else {
                self.metadata().await?
            };
            if let Some(topic) = metadata
                .topics
                .iter()
                .find(|t| t.name == name && t.error == ErrorCode::None)
            {
                return Ok(topic.clone());
            }
        }
        // Not listed: gone, or hidden from this principal (which only asking by name tells).
        let request = Request::Metadata(MetadataRequest {
            topics: Some(vec![name.to_string()]),
        });
        let timeout =
            std::time::Duration::from_millis(crate::constants::CLIENT_METADATA_TIMEOUT_MS);
        if let Response::Metadata(metadata) = self.request_any(&request, timeout).await?.response {
            let refused = metadata
                .topics
                .iter()
                .any(|t| t.name == name && t.error == ErrorCode::TopicAuthorizationFailed);
            if refused {
                return Err(ClientError::from_code(
                    ErrorCode::TopicAuthorizationFailed,
                    format!("not authorized to describe topic {name}"),
                ));
            }
        }
        Err(ClientError::UnknownTopic(name.to_string()))
    }

    /// How many partitions a topic has, from cached metadata (refreshed once if the topic
    /// is not known yet). Copies nothing: the producer asks for every message.
    pub async fn partition_count(&self, name: &str) -> Result<u32, ClientError> {
        let cached = self.metadata.borrow().clone();
        if let Some(metadata) = cached {
            let found = metadata
                .topics
                .iter()
                .find(|t| t.name == name && t.error == ErrorCode::None);
            if let Some(topic) = found {
                return Ok(topic.partitions.len() as u32);
            }
        }
        Ok(self.topic(name).await?.partitions.len() as u32)
    }

    /// The address to send a partition's requests to: the owning shard's own port when
    /// shard-aware, else the broker's main port.
    pub async fn address_for(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<SocketAddr, ClientError> {
        Ok(self.leader_for(topic, partition).await?.0)
    }

    /// The address for a partition's requests (see `address_for`) and the leader epoch
    /// the metadata gives, which requests carry so that a stale leader refuses them.
    pub async fn leader_for(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<(SocketAddr, u32), ClientError> {
        let cached = self.routes.borrow().get(topic).cloned();
        let routes = match cached {
            Some(routes) => routes,
            None => {
                let routes = Rc::new(self.topic_routes(topic).await?);
                self.routes
                    .borrow_mut()
                    .insert(topic.to_string(), routes.clone());
                routes
            }
        };
        match routes.partitions.get(&partition) {
            Some(Route::Leader { address, epoch }) => Ok((*address, *epoch)),
            Some(Route::NoLeader) => Err(ClientError::from_code(
                ErrorCode::NotLeaderOrFollower,
                "no leader",
            )),
            Some(Route::LeaderMissing(broker_id)) => Err(ClientError::Protocol(format!(
                "leader {broker_id} missing from metadata"
            ))),
            None => Err(ClientError::UnknownTopic(format!("{topic}/{partition}"))),
        }
    }

    /// The address and leader epoch of a partition's leader (as `leader_for`), from the
    /// routes already worked out, without waiting: `None` when the topic's routes are not
    /// cached yet or the partition has no leader in them (`leader_for` says why).
    pub fn cached_leader(&self, topic: &str, partition: u32) -> Option<(SocketAddr, u32)> {
        match self
            .routes
            .borrow()
            .get(topic)?
            .partitions
            .get(&partition)?
        {
            Route::Leader { address, epoch } => Some((*address, *epoch)),
            Route::NoLeader | Route::LeaderMissing(_) => None,
        }
    }

    /// Works out where each of a topic's partitions is led (refreshing metadata once if the
    /// topic is not known yet); each broker's address is resolved once.
    async fn topic_routes(&self, topic: &str) -> Result<TopicRoutes, ClientError> {
        let topic_metadata = self.topic(topic).await?;
        let metadata = self.metadata().await?;
        let mut partitions = HashMap::with_capacity(topic_metadata.partitions.len());
        let mut addresses: HashMap<(u32, u16), SocketAddr> = HashMap::new();
        for entry in &topic_metadata.partitions {
            let route = match entry.leader_broker {
                None => Route::NoLeader,
                Some(broker_id) => {
                    match metadata.brokers.iter().find(|b| b.broker_id == broker_id) {
                        None => Route::LeaderMissing(broker_id),
                        Some(broker) => {
                            let address = *addresses
                                .entry((broker_id, entry.shard))
                                .or_insert_with(|| {
                                    let port = match broker.shard_ports.get(entry.shard as usize) {
                                        Some(&port) if self.shard_aware => port,
                                        _ => broker.port,
                                    };
                                    self.resolve(&broker.host, port)
                                });
                            Route::Leader {
                                address,
                                epoch: entry.leader_epoch,
                            }
                        }
                    }
                }
            };
            partitions.insert(entry.partition, route);
        }
        Ok(TopicRoutes { partitions })
    }

    /// A broker's main port (the bootstrap IP stands in for a host this client cannot
    /// resolve).
    pub fn broker_address(&self, broker: &crate::protocol::BrokerMetadata) -> SocketAddr {
        self.resolve(&broker.host, broker.port)
    }

    /// An advertised host and port as an address; the bootstrap IP stands in for a host
    /// this client cannot resolve.
    fn resolve(&self, host: &str, port: u16) -> SocketAddr {
        (host, port)
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .unwrap_or_else(|| SocketAddr::new(self.bootstrap[0].ip(), port))
    }

    /// The connection for a partition's requests.
    pub async fn connection_for(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<Connection, ClientError> {
        let address = self.address_for(topic, partition).await?;
        self.connection(address).await
    }
}

/// Where one topic's partitions are led, by partition number.
struct TopicRoutes {
    partitions: HashMap<u32, Route>,
}

/// Where one partition's requests go, as the cached metadata says.
#[derive(Clone, Copy)]
enum Route {
    Leader {
        address: SocketAddr,
        epoch: u32,
    },
    /// The metadata names no leader (an election is under way).
    NoLeader,
    /// The metadata names a leader it does not list among its brokers.
    LeaderMissing(u32),
}
