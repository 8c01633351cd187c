//! A broker's life: bind, start the shards, recover, serve, and on SIGTERM or SIGINT stop
//! accepting, let in-flight requests finish, flush, close, exit.

use std::net::SocketAddr;
use std::os::fd::{IntoRawFd, OwnedFd};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use glommio::net::TcpListener;
use glommio::{Latency, Shares};

use super::connection;
use super::context::{Advertised, InFlight, ShardContext};
use super::error::{BrokerError, ListenError};
use super::listeners::{bind_listeners, SocketBuffers};
use super::partitions::Partitions;
use super::profile::Profile;
use crate::cluster::{Catalog, Controller};
use crate::constants::{
    ACCEPT_RETRY_MS, GROUP_SWEEP_INTERVAL_MS, REQUEST_QUEUE_LATENCY_MS, SHUTDOWN_POLL_MS,
    STARTUP_POLL_MS,
};
use crate::log::journal::JournalConfig;
use crate::log::{LogShard, ShardLogConfig};
use crate::shard::messages::{dispatch, ShardMessage};
use crate::shard::runtime::{io_memory_per_shard, memlock_limit_bytes, MeshEnds};
use crate::shard::{run_shards, Mesh, Ownership, RuntimeConfig, ShardStart};

/// Everything a broker is started with.
#[derive(Debug, Clone)]
pub struct BrokerOptions {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// Shard `i` also listens on `first_shard_port + i` (ephemeral ports when `None`).
    pub first_shard_port: Option<u16>,
    pub shard_count: usize,
    /// Pin shard threads to these CPUs (`None`: unpinned).
    pub cpus: Option<Vec<usize>>,
    pub profile: Profile,
    pub broker_id: u32,
    /// The host name clients are told to use (default: the listen address's IP).
    pub advertised_host: Option<String>,
    /// The port clients are told to use (default: the main listener's).
    pub advertised_port: Option<u16>,
    /// Serve Prometheus metrics over HTTP here (`GET /metrics`).
    pub metrics_listen: Option<SocketAddr>,
    /// The controller's voters: node id and internal listener. Empty: this broker alone
    /// is the cluster (a one-voter controller, no internal listener).
    pub controller_voters: Vec<(u32, SocketAddr)>,
    /// The replication factor of topics created without one (0: the smaller of 3 and the
    /// number of voters).
    pub default_replication_factor: u32,
    /// Applied controller entries between two controller snapshots.
    pub controller_snapshot_every: u64,
    /// Silence after which the controller fences a broker.
    pub broker_session_timeout_ms: u64,
    /// How often each shard applies retention and expires idle producers.
    pub retention_check_interval_ms: u64,
    /// TLS on the client and internal listeners (`None`: plaintext).
    pub tls: Option<crate::tls::ServerTlsFiles>,
    /// Enforce the access rules (deny what none allows).
    pub authorization: bool,
    /// Principals that may do anything (the brokers themselves, under mutual TLS).
    pub super_users: Vec<String>,
    /// Clients must authenticate with SCRAM-SHA-256 (or a client certificate).
    pub sasl: bool,
}

impl BrokerOptions {
    /// Whether this broker is a controller voter (alone, it is the only one); a broker
    /// that is not observes the metadata (`crate::cluster::observer`).
    pub fn is_voter(&self) -> bool {
        self.controller_voters.is_empty()
            || self
                .controller_voters
                .iter()
                .any(|(node, _)| *node == self.broker_id)
    }

    /// This broker's internal listener, if it is a declared voter.
    pub fn internal_listen(&self) -> Option<SocketAddr> {
        self.controller_voters
            .iter()
            .find(|(node, _)| *node == self.broker_id)
            .map(|(_, address)| *address)
    }
}

/// What every shard is started with.
struct Shared {
    options: BrokerOptions,
    tls: Option<Arc<crate::tls::ServerTls>>,
    /// Set by SIGHUP: the controller shard rereads the TLS files.
    reload_tls: Arc<AtomicBool>,
    /// The io memory each shard's executor was given.
    io_memory_bytes: usize,
    main_fds: Mutex<Vec<Option<OwnedFd>>>,
    own_fds: Mutex<Vec<Option<OwnedFd>>>,
    advertised: Advertised,
    shutdown: Arc<AtomicBool>,
    /// Stops the controller's Raft node and peers: set once the controlled shutdown is
    /// over (a stopping broker's voter still votes and commits until then).
    controller_stopped: Arc<AtomicBool>,
    recovered_partitions: AtomicUsize,
    started: Instant,
    /// The metrics listener, taken by the controller shard.
    metrics_fd: Mutex<Option<OwnedFd>>,
    /// The internal (controller) listener, taken by the controller shard.
    internal_fd: Mutex<Option<OwnedFd>>,
}

/// Holds an exclusive lock on the data directory for the broker's lifetime.
fn lock_data_dir(dir: &std::path::Path) -> Result<nix::fcntl::Flock<std::fs::File>, BrokerError> {
    let fail = |operation, source| BrokerError::DataDir {
        operation,
        path: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(|e| fail("create", e))?;
    let path = dir.join(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| fail("open the lock file in", e))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(
        |(_, source)| BrokerError::DataDirLocked {
            path: dir.to_path_buf(),
            source,
        },
    )
}

/// Runs a broker until it is told to stop. Returns once every shard has shut down.
pub fn run_broker(mut options: BrokerOptions) -> Result<(), BrokerError> {
    options.profile.check()?;
    crate::shard::runtime::tune_allocator();
    let _lock = lock_data_dir(&options.data_dir)?;
    // glommio opens directories relative to nothing: every path it sees is absolute.
    options.data_dir = options
        .data_dir
        .canonicalize()
        .map_err(|source| BrokerError::DataDir {
            operation: "resolve",
            path: options.data_dir.clone(),
            source,
        })?;
    let buffers = SocketBuffers {
        send_bytes: options.profile.network.socket_send_buffer_bytes,
        receive_bytes: options.profile.network.socket_receive_buffer_bytes,
    };
    let bound = bind_listeners(
        options.listen,
        options.shard_count,
        options.first_shard_port,
        buffers,
    )?;
    let metrics_fd = match options.metrics_listen {
        Some(address) => {
            let listener =
                std::net::TcpListener::bind(address).map_err(|source| ListenError::Socket {
                    operation: "bind the metrics listener on",
                    address,
                    source,
                })?;
            let bound = listener.local_addr().unwrap_or(address);
            tracing::info!("metrics on http://{bound}/metrics");
            Some(OwnedFd::from(listener))
        }
        None => None,
    };
    if !options.is_voter() {
        tracing::info!(
            voters = ?options.controller_voters.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            "node {} is not a controller voter: it observes the controller's metadata",
            options.broker_id
        );
    }
    if options.data_dir.join("__metadata").exists() && !options.data_dir.join("controller").exists()
    {
        return Err(BrokerError::Cluster(format!(
            "{} holds a catalogue from before the Raft controller (__metadata); this version keeps metadata in controller/ and cannot read it: start on a new data directory",
            options.data_dir.display()
        )));
    }
    let internal_fd = match options.internal_listen() {
        Some(address) => {
            let listener = super::listeners::bind_one(
                address,
                true,
                super::listeners::SocketBuffers {
                    send_bytes: 0,
                    receive_bytes: 0,
                },
            )?;
            tracing::info!("controller listener on {address}");
            Some(OwnedFd::from(listener))
        }
        None => None,
    };
    let shutdown = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, shutdown.clone())
            .map_err(|source| BrokerError::Signal { signal, source })?;
    }
    let tls = match &options.tls {
        Some(files) => {
            let tls = crate::tls::ServerTls::load(files.clone())?;
            if options.internal_listen().is_some() && !tls.has_internal() {
                return Err(BrokerError::Tls(crate::tls::TlsError::Config(
                    "brokers of a TLS cluster check each other's certificates: give --tls-ca (or --tls-client-ca)".into(),
                )));
            }
            if options.sasl && !options.controller_voters.is_empty() && files.client_ca.is_none() {
                return Err(BrokerError::Tls(crate::tls::TlsError::Config(
                    "under --sasl, the brokers of a cluster authenticate to each other with certificates: give --tls-client-ca".into(),
                )));
            }
            tracing::info!(cert = %files.cert.display(), mutual = files.client_ca.is_some(), "TLS on the client and internal listeners");
            Some(Arc::new(tls))
        }
        None => None,
    };
    if options.sasl && !options.controller_voters.is_empty() && options.tls.is_none() {
        return Err(BrokerError::Tls(crate::tls::TlsError::Config(
            "under --sasl, the brokers of a cluster authenticate to each other with certificates: give --tls-cert, --tls-key and --tls-client-ca".into(),
        )));
    }
    let reload_tls = Arc::new(AtomicBool::new(false));
    if tls.is_some() {
        let signal = signal_hook::consts::SIGHUP;
        signal_hook::flag::register(signal, reload_tls.clone())
            .map_err(|source| BrokerError::Signal { signal, source })?;
    }
    let advertised = Advertised {
        host: options
            .advertised_host
            .clone()
            .unwrap_or_else(|| bound.main_address.ip().to_string()),
        port: options.advertised_port.unwrap_or(bound.main_address.port()),
        shard_ports: bound.own_addresses.iter().map(|a| a.port()).collect(),
        // The start time in nanoseconds: a new value at every start.
        incarnation: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64),
    };
    tracing::info!(
        profile = %options.profile.name,
        shards = options.shard_count,
        pinned = ?options.cpus,
        flush = ?options.profile.storage.flush,
        "starting broker {} on {} (shard ports {:?})",
        options.broker_id,
        bound.main_address,
        advertised.shard_ports
    );
    // Batches that only a shard journal holds (a crash before their segments were
    // written) go back into their partitions before any shard opens one.
    crate::log::journal::replay_blocking(&options.data_dir).map_err(|reason| {
        BrokerError::Runtime {
            shard: 0,
            reason: format!("replaying the shard journals: {reason}"),
        }
    })?;
    let runtime = RuntimeConfig {
        shard_count: options.shard_count,
        cpus: options.cpus.clone(),
        io_memory_bytes: io_memory_per_shard(
            memlock_limit_bytes(),
            options.shard_count,
            options.profile.runtime.io_memory_bytes,
        ),
        spin_before_park: options.profile.spin_before_park(),
    };
    let shared = Arc::new(Shared {
        options,
        main_fds: Mutex::new(bound.main.into_iter().map(Some).collect()),
        own_fds: Mutex::new(bound.own.into_iter().map(Some).collect()),
        advertised,
        shutdown,
        controller_stopped: Arc::new(AtomicBool::new(false)),
        recovered_partitions: AtomicUsize::new(0),
        started: Instant::now(),
        metrics_fd: Mutex::new(metrics_fd),
        io_memory_bytes: runtime.io_memory_bytes,
        tls,
        reload_tls,
        internal_fd: Mutex::new(internal_fd),
    });
    let results =
        run_shards::<ShardMessage, Result<(), BrokerError>, _, _>(&runtime, move |start| {
            let shared = shared.clone();
            async move {
                let result = shard_main(start, shared.clone()).await;
                if result.is_err() {
                    // A shard that cannot start stops the others (they may be waiting for it).
                    shared.shutdown.store(true, Ordering::SeqCst);
                }
                result
            }
        })
        .map_err(|reason| BrokerError::ShardThread { shard: 0, reason })?;
    let failures: Vec<BrokerError> = results.into_iter().filter_map(Result::err).collect();
    if failures.is_empty() {
        tracing::info!("broker stopped cleanly");
        Ok(())
    } else {
        Err(BrokerError::Shards(failures))
    }
}

fn take_fd(fds: &Mutex<Vec<Option<OwnedFd>>>, shard: usize) -> OwnedFd {
    fds.lock().expect("fd table lock")[shard]
        .take()
        .expect("each shard takes its listener once")
}

fn listener_from(fd: OwnedFd) -> TcpListener {
    // SAFETY: the descriptor is a bound, listening TCP socket that we own and hand over.
    unsafe { std::os::fd::FromRawFd::from_raw_fd(fd.into_raw_fd()) }
}

fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

/// Opens this voter's controller: its Raft log, its node (driven by a task of its own until
/// `shutdown` is set) and its peers' senders.
async fn open_controller(
    options: &BrokerOptions,
    tls: Option<crate::tls::ClientTls>,
    shutdown: Arc<AtomicBool>,
) -> Result<(Controller, Rc<super::internal::Peers>), crate::cluster::raft::RaftStorageError> {
    use super::internal::{raft_id, Peers};
    let me = raft_id(options.broker_id);
    let voters: Vec<(u64, SocketAddr)> = if options.controller_voters.is_empty() {
        vec![(me, options.listen)]
    } else {
        options
            .controller_voters
            .iter()
            .map(|(node, address)| (raft_id(*node), *address))
            .collect()
    };
    let peers = Peers::new(&voters, me, tls);
    let raft_options = crate::cluster::raft::RaftOptions {
        node_id: me,
        voters: voters.iter().map(|(id, _)| *id).collect(),
        snapshot_every: options.controller_snapshot_every,
    };
    let sender = peers.clone();
    let node = crate::cluster::raft::ControllerNode::open(
        &options.data_dir.join("controller"),
        &raft_options,
        Box::new(move |to, message| sender.send(to, message)),
    )
    .await?;
    let node = Rc::new(node);
    let stop = {
        let shutdown = shutdown.clone();
        Rc::new(move || shutdown.load(Ordering::Relaxed)) as Rc<dyn Fn() -> bool>
    };
    peers.start(stop.clone());
    glommio::spawn_local(node.clone().run(move || stop())).detach();
    let factor = match options.default_replication_factor {
        0 => voters.len().min(3) as u32,
        factor => factor,
    };
    Ok((
        Controller::new(node, factor, options.broker_session_timeout_ms),
        peers,
    ))
}

async fn shard_main(
    start: ShardStart<ShardMessage>,
    shared: Arc<Shared>,
) -> Result<(), BrokerError> {
    let options = &shared.options;
    let shard_id = start.shard_id;
    let runtime_error = |reason: String| BrokerError::Runtime {
        shard: shard_id,
        reason,
    };
    let profile = options.profile.clone();
    let requests = glommio::executor().create_task_queue(
        Shares::Static(profile.runtime.request_shares),
        Latency::Matters(millis(REQUEST_QUEUE_LATENCY_MS)),
        "requests",
    );
    let background = glommio::executor().create_task_queue(
        Shares::Static(profile.runtime.background_shares),
        Latency::NotImportant,
        "background",
    );
    let clock = crate::clock::system();
    let storage = LogShard::new(ShardLogConfig {
        cache_bytes: profile.storage.cache_bytes,
        open_files_max: profile.storage.open_files_max,
        faults: None,
        flush_queue: Some(background),
        clock: clock.clone(),
        shard_flush_rounds: profile.storage.shard_flush_rounds,
        journal: (profile.storage.shard_journal_bytes > 0).then(|| JournalConfig {
            root: options.data_dir.clone(),
            shard: shard_id,
            capacity_bytes: profile.storage.shard_journal_bytes,
            segment_write_delay: Duration::from_millis(crate::constants::JOURNALED_WRITE_DELAY_MS),
        }),
    });
    let ownership = Ownership::new(options.broker_id, start.shard_count);
    let (controller, observer, peers) = if ownership.controller() != shard_id {
        (None, None, None)
    } else if options.is_voter() {
        let client_tls = shared.tls.as_ref().and_then(|t| t.client().cloned());
        let (controller, peers) =
            open_controller(options, client_tls, shared.controller_stopped.clone())
                .await
                .map_err(|source| BrokerError::Controller {
                    shard: shard_id,
                    source,
                })?;
        (Some(controller), None, Some(peers))
    } else {
        use super::internal::{raft_id, Peers};
        let me = raft_id(options.broker_id);
        let voters: Vec<(u64, SocketAddr)> = options
            .controller_voters
            .iter()
            .map(|(node, address)| (raft_id(*node), *address))
            .collect();
        let observer = Rc::new(crate::cluster::observer::Observer::new(me));
        let client_tls = shared.tls.as_ref().and_then(|t| t.client().cloned());
        (
            None,
            Some(observer),
            Some(Peers::new(&voters, me, client_tls)),
        )
    };
    let (senders, receivers) = match start.mesh {
        Some(MeshEnds { senders, receivers }) => (Some(senders), Some(receivers)),
        None => (None, None),
    };
    let context = Rc::new(ShardContext {
        shard_id,
        watch: start.watch.clone(),
        ownership,
        advertised: shared.advertised.clone(),
        partitions: Partitions::new(
            options.data_dir.clone(),
            storage,
            profile.storage.flush,
            profile.storage.preallocate_bytes,
        ),
        profile,
        data_dir: options.data_dir.clone(),
        clock: clock.clone(),
        catalog: std::cell::RefCell::new(Arc::new(Catalog::default())),
        mesh: Mesh::new(shard_id, start.shard_count, senders),
        groups: crate::group::Coordinator::new(shard_id, clock),
        replication: Default::default(),
        controller,
        observer,
        peers,
        shutdown_requested: shared.shutdown.clone(),
        controller_stopped: shared.controller_stopped.clone(),
        stopping: std::cell::Cell::new(false),
        open_connections: std::cell::Cell::new(0),
        in_flight_requests: InFlight::default(),
        ready_shards: Arc::new(AtomicUsize::new(0)),
        metrics: Default::default(),
        io_memory_bytes: shared.io_memory_bytes,
        tls: shared.tls.clone(),
        authorizer: crate::security::Authorizer::new(
            options.authorization,
            options.super_users.iter().cloned(),
        ),
        sasl_required: options.sasl,
        throttle: Default::default(),
        fetch_sessions: Default::default(),
    });
    if let Some(receivers) = receivers {
        let handler = context.clone();
        crate::shard::mesh::serve(receivers, requests, move |message| {
            let handler = handler.clone();
            async move { dispatch(&*handler, message).await }
        })
        .map_err(|e| runtime_error(e.to_string()))?;
    }

    // The controller publishes the catalogue; every shard then recovers what it owns.
    if let Some(controller) = &context.controller {
        // What this voter committed before it stopped is applied before anything is served.
        // Alone, it leads at once and commits everything it holds: wait for all of it, so
        // that the first catalogue is the whole one.
        let node = controller.node().clone();
        let committed = node.status().committed;
        let alone = options.controller_voters.len() <= 1;
        let caught_up = || {
            let status = node.status();
            status.applied >= committed
                && (!alone || (node.is_leader() && status.applied >= status.last_index))
        };
        while !caught_up() {
            if context.shutdown_requested() {
                return Err(BrokerError::StoppedEarly { shard: shard_id });
            }
            glommio::timer::sleep(millis(STARTUP_POLL_MS)).await;
        }
        let fd = shared.internal_fd.lock().expect("internal fd lock").take();
        if let Some(fd) = fd {
            glommio::spawn_local_into(
                accept_loop(context.clone(), listener_from(fd), super::internal::serve),
                requests,
            )
            .map_err(|e| runtime_error(e.to_string()))?
            .detach();
        }
        publish_and_follow_metadata(&context, requests)
            .await
            .map_err(runtime_error)?;
        if options.controller_voters.len() <= 1 {
            // Alone, this broker is the controller leader at once: it registers its current
            // addresses (and the offsets log is created) before it says it is ready, so a
            // topic can be created and a group joined as soon as it listens.
            let advertised = &context.advertised;
            let ready = || {
                let image = controller.node().image();
                let registered = image.broker(options.broker_id).is_some_and(|b| {
                    b.host == advertised.host
                        && b.port == advertised.port
                        && b.shard_ports == advertised.shard_ports
                        && b.incarnation == advertised.incarnation
                        && !b.fenced
                });
                registered && image.topic(crate::constants::OFFSETS_TOPIC_NAME).is_some()
            };
            while !ready() {
                if context.shutdown_requested() {
                    return Err(BrokerError::StoppedEarly { shard: shard_id });
                }
                glommio::timer::sleep(millis(STARTUP_POLL_MS)).await;
            }
            // Every shard takes the catalogue with this registration before the broker says
            // it listens.
            super::controller::publish_current(&context).await;
        }
    }
    if let Some(observer) = context.observer.clone() {
        // Not a voter: the first image comes from the controller leader, before anything
        // is served (as a voter first applies what it committed).
        glommio::spawn_local_into(super::controller::observe(context.clone()), requests)
            .map_err(|e| runtime_error(e.to_string()))?
            .detach();
        while observer.applied() == 0 {
            if context.shutdown_requested() {
                return Err(BrokerError::StoppedEarly { shard: shard_id });
            }
            glommio::timer::sleep(millis(STARTUP_POLL_MS)).await;
        }
        publish_and_follow_metadata(&context, requests)
            .await
            .map_err(runtime_error)?;
    }
    // The first catalogue is in place, and with it this shard's leader and follower roles.
    while context.catalog().version == 0 || context.replication.settled_version() == 0 {
        if context.shutdown_requested() {
            return Err(BrokerError::StoppedEarly { shard: shard_id });
        }
        glommio::timer::sleep(millis(STARTUP_POLL_MS)).await;
    }
    // What this broker stopped holding while it was down goes before anything is opened.
    context
        .partitions
        .remove_strays(&context.catalog(), options.broker_id, |topic, partition| {
            context.ownership.partition_shard(topic, partition) == shard_id
        });
    let recovery_started = Instant::now();
    let owned = context
        .ownership
        .partitions_of(&context.catalog(), shard_id);
    for (topic, partition) in &owned {
        context
            .partitions
            .get(topic, *partition)
            .await
            .map_err(|e| BrokerError::Partition {
                shard: shard_id,
                topic: topic.name.clone(),
                partition: *partition,
                reason: e.to_string(),
            })?;
    }
    tracing::info!(shard = shard_id, partitions = owned.len(), elapsed = ?recovery_started.elapsed(), "shard recovered its partitions");
    // The offsets partitions this shard leads were adopted with the catalogue.
    context.groups.mark_loaded();
    // Counted before this shard reports ready, so the controller's total is complete.
    shared
        .recovered_partitions
        .fetch_add(owned.len(), Ordering::SeqCst);
    let controller_shard = context.ownership.controller();
    if shard_id != controller_shard {
        let ready = ShardMessage::Ready {
            shard: shard_id,
            partitions: owned.len(),
        };
        if let Err(error) = context.mesh.tell(controller_shard, ready).await {
            return Err(runtime_error(error.to_string()));
        }
    }

    for fds in [&shared.main_fds, &shared.own_fds] {
        let listener = listener_from(take_fd(fds, shard_id));
        let context = context.clone();
        glommio::spawn_local_into(accept_loop(context, listener, connection::serve), requests)
            .map_err(|e| runtime_error(e.to_string()))?
            .detach();
    }
    glommio::spawn_local_into(
        retention_loop(context.clone(), options.retention_check_interval_ms),
        background,
    )
    .map_err(|e| runtime_error(e.to_string()))?
    .detach();
    glommio::spawn_local_into(
        crate::replication::leader::watch_in_sync(
            context.clone(),
            millis(crate::constants::IN_SYNC_CHECK_INTERVAL_MS),
        ),
        requests,
    )
    .map_err(|e| runtime_error(e.to_string()))?
    .detach();
    glommio::spawn_local_into(group_sweep_loop(context.clone()), requests)
        .map_err(|e| runtime_error(e.to_string()))?
        .detach();
    if let (true, Some(tls)) = (context.is_controller(), shared.tls.clone()) {
        glommio::spawn_local_into(
            reload_tls_on_signal(context.clone(), tls, shared.reload_tls.clone()),
            background,
        )
        .map_err(|e| runtime_error(e.to_string()))?
        .detach();
    }
    if context.is_controller() {
        let metrics = shared.metrics_fd.lock().expect("metrics fd lock").take();
        if let Some(fd) = metrics {
            glommio::spawn_local_into(
                accept_loop(context.clone(), listener_from(fd), super::metrics::answer),
                background,
            )
            .map_err(|e| runtime_error(e.to_string()))?
            .detach();
        }
        let ready = shared.clone();
        let shard_count = context.shard_count();
        let ready_shards = context.ready_shards.clone();
        glommio::spawn_local(async move {
            // The controller itself, plus every other shard's Ready message.
            while ready_shards.load(Ordering::SeqCst) + 1 < shard_count {
                glommio::timer::sleep(millis(STARTUP_POLL_MS)).await;
            }
            tracing::info!(
                "listening on {} ({} partitions recovered, ready in {:?})",
                ready.advertised_address(),
                ready.recovered_partitions.load(Ordering::SeqCst),
                ready.started.elapsed()
            );
        })
        .detach();
    }

    while !context.shutdown_requested() {
        glommio::timer::sleep(millis(SHUTDOWN_POLL_MS)).await;
    }
    shut_down(&context).await
}

impl Shared {
    fn advertised_address(&self) -> String {
        format!("{}:{}", self.advertised.host, self.advertised.port)
    }
}

/// Accepts connections until the shard stops, serving each with `serve` in a task of its
/// own (client connections, metrics scrapes).
pub(super) async fn accept_loop<Fut>(
    context: Rc<ShardContext>,
    listener: TcpListener,
    serve: fn(Rc<ShardContext>, glommio::net::TcpStream) -> Fut,
) where
    Fut: std::future::Future<Output = ()> + 'static,
{
    loop {
        let accepted = listener.accept().await;
        if context.stopping.get() {
            if accepted.is_ok() {
                let refused = &context.metrics.connections_refused;
                refused.set(refused.get() + 1);
            }
            return;
        }
        match accepted {
            Ok(stream) => {
                glommio::spawn_local(serve(context.clone(), stream)).detach();
            }
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                glommio::timer::sleep(millis(ACCEPT_RETRY_MS)).await;
            }
        }
    }
}

/// On the controller shard, once its metadata is current: publishes the first catalogue,
/// then keeps publishing changes and heartbeating the controller leader.
async fn publish_and_follow_metadata(
    context: &Rc<ShardContext>,
    queue: glommio::TaskQueueHandle,
) -> Result<(), String> {
    super::controller::publish_current(context).await;
    glommio::spawn_local_into(super::controller::publish_changes(context.clone()), queue)
        .map_err(|e| e.to_string())?
        .detach();
    glommio::spawn_local_into(super::controller::heartbeat_loop(context.clone()), queue)
        .map_err(|e| e.to_string())?
        .detach();
    Ok(())
}

/// Rereads the TLS certificate and key when SIGHUP sets `requested` (every shard accepts with
/// the new ones from then on), until the shard stops.
async fn reload_tls_on_signal(
    context: Rc<ShardContext>,
    tls: Arc<crate::tls::ServerTls>,
    requested: Arc<AtomicBool>,
) {
    while !context.stopping.get() {
        glommio::timer::sleep(millis(SHUTDOWN_POLL_MS)).await;
        if requested.swap(false, Ordering::SeqCst) {
            match tls.reload() {
                Ok(()) => tracing::info!("TLS certificate and key reloaded"),
                Err(error) => {
                    tracing::error!(%error, "TLS reload failed: the previous certificate stays")
                }
            }
        }
    }
}

async fn retention_loop(context: Rc<ShardContext>, interval_ms: u64) {
    loop {
        glommio::timer::sleep(millis(interval_ms)).await;
        let producer_idle_ms =
            i64::try_from(context.profile.storage.producer_idle_ms).unwrap_or(i64::MAX);
        for (_, log) in context.partitions.all() {
            if let Err(error) = log.enforce_retention().await {
                tracing::warn!(dir = %log.dir().display(), %error, "retention failed");
            }
            let expired = log.expire_producers(producer_idle_ms);
            if expired > 0 {
                tracing::debug!(dir = %log.dir().display(), expired, "idle producers forgotten");
            }
        }
    }
}

/// Removes group members past their session or rebalance timeouts.
async fn group_sweep_loop(context: Rc<ShardContext>) {
    while !context.stopping.get() {
        glommio::timer::sleep(millis(GROUP_SWEEP_INTERVAL_MS)).await;
        super::groups::sweep(&context);
    }
}

async fn shut_down(context: &Rc<ShardContext>) -> Result<(), BrokerError> {
    let shard = context.shard_id;
    super::controller::controlled_shutdown(context).await;
    context.controller_stopped.store(true, Ordering::SeqCst);
    context.stopping.set(true);
    tracing::info!(
        shard,
        connections = context.open_connections.get(),
        "shutting down"
    );
    // In-flight requests finish (new ones are refused); give them a bounded time.
    let drain_timeout = context.profile.network.shutdown_drain_timeout();
    let deadline = Instant::now() + drain_timeout;
    while context.in_flight_requests.count() > 0 && Instant::now() < deadline {
        glommio::timer::sleep(millis(STARTUP_POLL_MS)).await;
    }
    match context.in_flight_requests.count() {
        0 => tracing::info!(shard, "requests in flight drained"),
        left => tracing::warn!(
            shard,
            left,
            "requests still in flight after the drain timeout of {drain_timeout:?}: closing anyway"
        ),
    }
    let groups_closed = context
        .groups
        .close()
        .await
        .map_err(|source| BrokerError::CloseGroups { shard, source });
    let partitions_closed = context
        .partitions
        .close_all()
        .await
        .map_err(|failures| BrokerError::Close { shard, failures });
    partitions_closed.and(groups_closed)
}
