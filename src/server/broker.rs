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

use super::catalog::Catalog;
use super::connection;
use super::context::{Advertised, ShardContext, ShardMessage, CONTROLLER_SHARD};
use super::handlers::{apply_catalog, controller_handle, publish};
use super::listeners::{bind_listeners, SocketBuffers};
use super::partitions::Partitions;
use super::profile::Profile;
use super::work;
use crate::cluster::MetadataStore;
use crate::log::{LogShard, ShardLogConfig};
use crate::shard::runtime::{io_memory_per_shard, memlock_limit_bytes, Mesh};
use crate::shard::{run_shards, RuntimeConfig, ShardStart};

/// How often shards look at the shutdown flag.
const SHUTDOWN_POLL: Duration = Duration::from_millis(50);
/// How long shutdown waits for in-flight requests.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How often retention runs over a shard's partitions.
const RETENTION_INTERVAL: Duration = Duration::from_secs(300);
/// How often a shard looks for group members past their timeouts.
const GROUP_SWEEP_INTERVAL: Duration = Duration::from_millis(100);

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
}

/// What every shard is started with.
struct Shared {
    options: BrokerOptions,
    main_fds: Mutex<Vec<Option<OwnedFd>>>,
    own_fds: Mutex<Vec<Option<OwnedFd>>>,
    advertised: Advertised,
    shutdown: Arc<AtomicBool>,
    recovered_partitions: AtomicUsize,
    started: Instant,
}

/// Holds an exclusive lock on the data directory for the broker's lifetime.
fn lock_data_dir(dir: &std::path::Path) -> Result<nix::fcntl::Flock<std::fs::File>, String> {
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("cannot create data directory {}: {e}", dir.display()))?;
    let path = dir.join(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
        format!(
            "data directory {} is in use by another broker ({e})",
            dir.display()
        )
    })
}

/// Runs a broker until it is told to stop. Returns once every shard has shut down.
pub fn run_broker(mut options: BrokerOptions) -> Result<(), String> {
    options.profile.check()?;
    crate::shard::runtime::tune_allocator();
    let _lock = lock_data_dir(&options.data_dir)?;
    // glommio opens directories relative to nothing: every path it sees is absolute.
    options.data_dir = options.data_dir.canonicalize().map_err(|e| {
        format!(
            "cannot resolve data directory {}: {e}",
            options.data_dir.display()
        )
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
    let shutdown = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, shutdown.clone())
            .map_err(|e| format!("cannot handle signal {signal}: {e}"))?;
    }
    let advertised = Advertised {
        host: options
            .advertised_host
            .clone()
            .unwrap_or_else(|| bound.main_address.ip().to_string()),
        port: bound.main_address.port(),
        shard_ports: bound.own_addresses.iter().map(|a| a.port()).collect(),
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
        recovered_partitions: AtomicUsize::new(0),
        started: Instant::now(),
    });
    let results = run_shards::<ShardMessage, Result<(), String>, _, _>(&runtime, move |start| {
        let shared = shared.clone();
        async move {
            let result = shard_main(start, shared.clone()).await;
            if result.is_err() {
                // A shard that cannot start stops the others (they may be waiting for it).
                shared.shutdown.store(true, Ordering::SeqCst);
            }
            result
        }
    })?;
    let failures: Vec<String> = results.into_iter().filter_map(Result::err).collect();
    if failures.is_empty() {
        tracing::info!("broker stopped cleanly");
        Ok(())
    } else {
        Err(failures.join("; "))
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

async fn shard_main(start: ShardStart<ShardMessage>, shared: Arc<Shared>) -> Result<(), String> {
    let options = &shared.options;
    let profile = options.profile.clone();
    let requests = glommio::executor().create_task_queue(
        Shares::Static(profile.runtime.request_shares),
        Latency::Matters(Duration::from_millis(1)),
        "requests",
    );
    let background = glommio::executor().create_task_queue(
        Shares::Static(profile.runtime.background_shares),
        Latency::NotImportant,
        "background",
    );
    let storage = LogShard::new(ShardLogConfig {
        cache_bytes: profile.storage.cache_bytes,
        open_files_max: profile.storage.open_files_max,
        faults: None,
        flush_queue: Some(background),
    });
    let controller = if start.shard_id == CONTROLLER_SHARD {
        let store = MetadataStore::open(&options.data_dir, &storage)
            .await
            .map_err(|e| e.to_string())?;
        Some(glommio::sync::RwLock::new(store))
    } else {
        None
    };
    let (senders, receivers) = match start.mesh {
        Some(Mesh { senders, receivers }) => (Some(senders), Some(receivers)),
        None => (None, None),
    };
    let context = Rc::new(ShardContext {
        shard_id: start.shard_id,
        shard_count: start.shard_count,
        broker_id: options.broker_id,
        advertised: shared.advertised.clone(),
        partitions: Partitions::new(
            options.data_dir.clone(),
            storage,
            profile.storage.flush,
            profile.storage.preallocate_bytes,
        ),
        profile,
        data_dir: options.data_dir.clone(),
        catalog: std::cell::RefCell::new(Arc::new(Catalog::default())),
        senders,
        groups: crate::group::Coordinator::new(start.shard_id),
        controller,
        shutdown_requested: shared.shutdown.clone(),
        stopping: std::cell::Cell::new(false),
        open_connections: std::cell::Cell::new(0),
        in_flight_requests: std::cell::Cell::new(0),
        ready_shards: Arc::new(AtomicUsize::new(0)),
    });
    if let Some(mut receivers) = receivers {
        for (_, stream) in receivers.streams() {
            let context = context.clone();
            glommio::spawn_local_into(
                async move {
                    while let Some(message) = stream.recv().await {
                        let context = context.clone();
                        glommio::spawn_local(async move { on_message(&context, message).await })
                            .detach();
                    }
                },
                requests,
            )
            .map_err(|e| e.to_string())?
            .detach();
        }
    }

    // The controller publishes the catalogue; every shard then recovers what it owns.
    if let Some(store) = &context.controller {
        let catalog = {
            let store = store.read().await.map_err(|e| e.to_string())?;
            Arc::new(Catalog::new(1, store.topics().cloned()))
        };
        publish(&context, catalog, Vec::new()).await;
    }
    while context.catalog().version == 0 {
        if context.shutdown_requested() {
            return Err(format!(
                "shard {} stopped before the catalogue arrived",
                context.shard_id
            ));
        }
        glommio::timer::sleep(Duration::from_millis(1)).await;
    }
    let recovery_started = Instant::now();
    let owned = context
        .catalog()
        .owned_by(context.shard_id, context.shard_count);
    for (topic, partition) in &owned {
        context
            .partitions
            .get(topic, *partition)
            .await
            .map_err(|e| e.to_string())?;
    }
    tracing::info!(shard = context.shard_id, partitions = owned.len(), elapsed = ?recovery_started.elapsed(), "shard recovered its partitions");
    context
        .groups
        .load(
            context.partitions.storage(),
            &context.data_dir,
            context.profile.storage.flush,
            context.shard_id,
            context.shard_count,
        )
        .await?;
    // Counted before this shard reports ready, so the controller's total is complete.
    shared
        .recovered_partitions
        .fetch_add(owned.len(), Ordering::SeqCst);
    if context.shard_id != CONTROLLER_SHARD {
        context
            .send(
                CONTROLLER_SHARD,
                ShardMessage::Ready {
                    shard: context.shard_id,
                    partitions: owned.len(),
                },
            )
            .await?;
    }

    for fds in [&shared.main_fds, &shared.own_fds] {
        let listener = listener_from(take_fd(fds, context.shard_id));
        let context = context.clone();
        glommio::spawn_local_into(accept_loop(context, listener), requests)
            .map_err(|e| e.to_string())?
            .detach();
    }
    glommio::spawn_local_into(retention_loop(context.clone()), background)
        .map_err(|e| e.to_string())?
        .detach();
    glommio::spawn_local_into(group_sweep_loop(context.clone()), requests)
        .map_err(|e| e.to_string())?
        .detach();
    if context.shard_id == CONTROLLER_SHARD {
        let ready = shared.clone();
        let shard_count = context.shard_count;
        let ready_shards = context.ready_shards.clone();
        glommio::spawn_local(async move {
            // The controller itself, plus every other shard's Ready message.
            while ready_shards.load(Ordering::SeqCst) + 1 < shard_count {
                glommio::timer::sleep(Duration::from_millis(1)).await;
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
        glommio::timer::sleep(SHUTDOWN_POLL).await;
    }
    shut_down(&context).await
}

impl Shared {
    fn advertised_address(&self) -> String {
        format!("{}:{}", self.advertised.host, self.advertised.port)
    }
}

async fn on_message(context: &Rc<ShardContext>, message: ShardMessage) {
    match message {
        ShardMessage::Catalog {
            catalog,
            deleted,
            applied,
        } => {
            apply_catalog(context, catalog, &deleted).await;
            let _ = applied.send(());
        }
        ShardMessage::Admin { request, reply } => {
            let _ = reply.send(controller_handle(context, request).await);
        }
        ShardMessage::Partitions { work, reply } => {
            let outcomes =
                futures::future::join_all(work.into_iter().map(|w| work::execute(context, w)))
                    .await;
            let _ = reply.send(outcomes);
        }
        ShardMessage::Wait { waits, wait, reply } => {
            work::wait_for_data(context, &waits, Instant::now() + wait).await;
            let _ = reply.send(());
        }
        ShardMessage::Group { request, reply } => {
            let _ = reply.send(super::groups::coordinate(context, request).await);
        }
        ShardMessage::Ready { shard, partitions } => {
            tracing::debug!(shard, partitions, "shard ready");
            context.ready_shards.fetch_add(1, Ordering::SeqCst);
        }
    }
}

async fn accept_loop(context: Rc<ShardContext>, listener: TcpListener) {
    loop {
        let accepted = listener.accept().await;
        if context.stopping.get() {
            return;
        }
        match accepted {
            Ok(stream) => {
                glommio::spawn_local(connection::serve(context.clone(), stream)).detach();
            }
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

async fn retention_loop(context: Rc<ShardContext>) {
    loop {
        glommio::timer::sleep(RETENTION_INTERVAL).await;
        for (_, log) in context.partitions.all() {
            if let Err(error) = log.enforce_retention(crate::log::now_ms()).await {
                tracing::warn!(dir = %log.dir().display(), %error, "retention failed");
            }
        }
    }
}

/// Removes group members past their session or rebalance timeouts.
async fn group_sweep_loop(context: Rc<ShardContext>) {
    while !context.stopping.get() {
        glommio::timer::sleep(GROUP_SWEEP_INTERVAL).await;
        super::groups::sweep(&context);
    }
}

async fn shut_down(context: &Rc<ShardContext>) -> Result<(), String> {
    context.stopping.set(true);
    tracing::info!(
        shard = context.shard_id,
        connections = context.open_connections.get(),
        "shutting down"
    );
    // In-flight requests finish (new ones are refused); give them a bounded time.
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    while context.in_flight_requests.get() > 0 && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(1)).await;
    }
    let groups_closed = context.groups.close().await;
    let closed = context.partitions.close_all().await.and(groups_closed);
    if let Some(store) = &context.controller {
        let store = store.read().await.map_err(|e| e.to_string())?;
        store.close().await?;
    }
    closed
}
