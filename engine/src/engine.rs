//! Starting and stopping the engine: binding listeners, building the mesh,
//! spawning one pinned thread per shard plus the control thread.

use std::net::SocketAddr;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use socket2::{Domain, Socket, Type};

use crate::auth::Authenticator;
use crate::config::{Config, Driver};
use crate::interest::{Interest, SHARDS_MAX};
use crate::mesh::{Mesh, MeshReceiver, MeshSender};
use crate::metrics::{self, AllShardMetrics};
use crate::shard::Shard;
use crate::tls::{TlsConfigs, TlsError};
use ringcast_store::{Store, StoreConfig, StoreError};

pub use crate::limits::MESH_QUEUE_CAPACITY;
use crate::limits::URING_ENTRIES;

/// The I/O driver actually in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverKind {
    IoUring,
    Epoll,
}

impl DriverKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DriverKind::IoUring => "io_uring",
            DriverKind::Epoll => "epoll",
        }
    }
}

/// State every thread reads; written only at startup (and per-shard
/// metrics, each by its own shard).
pub struct Shared {
    pub config: Config,
    pub interest: Arc<Interest>,
    /// The embedded store. Shards only submit requests and await replies;
    /// fjall runs on the store's own threads.
    pub store: Store,
    pub metrics: AllShardMetrics,
    pub auth: Authenticator,
    pub mesh: Arc<Mesh>,
    pub driver: DriverKind,
    pub started_at: Instant,
    /// Connection sockets all shards may hold (`server.fd_reserve`).
    pub fd_budget: crate::admission::FdBudget,
    /// The certificate and its reload, when `tls.cert_file` is set; which
    /// listeners use it is in `TlsConfigs::{websocket,api}_enabled`.
    pub tls: Option<Arc<TlsConfigs>>,
    /// The proxy thread's client, when any `[[proxy]]` is configured.
    pub proxies: Option<crate::proxy::Proxies>,
    /// The webhook thread, when `webhook.url` is set.
    pub webhooks: Option<crate::webhook::Webhooks>,
    /// Online and offline webhook events (`crate::presence`).
    pub presence: crate::presence::Presence,
    /// The pairs of the DMs touched since start (`crate::im`).
    pub dm_pairs: Arc<crate::im::DmPairs>,
    /// The DM policy backend's answers by pair (`crate::im::dm_policy`).
    pub dm_decisions: crate::im::dm_policy::DmDecisions,
    /// Who is online, last-seen times and the shards watching each user
    /// (`crate::presence::book`): presence for clients and the API.
    pub presence_book: crate::presence::book::PresenceBook,
    /// The cluster, when `cluster.nats_url` is set (docs/cluster.md).
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// Set by [`Shared::drain`]; each shard acts on it at its next tick.
    draining: std::sync::atomic::AtomicBool,
}

impl Shared {
    /// Takes the node out of service (`POST /api/drain`, SIGUSR1): at its
    /// next tick every shard closes its listener and closes its
    /// connections with 1012; the node keeps serving its API and, in a
    /// cluster, its store partition. Returns `false` if it was draining
    /// already.
    pub fn drain(&self) -> bool {
        if let Some(cluster) = &self.cluster {
            cluster
                .state
                .draining
                .store(true, std::sync::atomic::Ordering::Release);
        }
        !self
            .draining
            .swap(true, std::sync::atomic::Ordering::AcqRel)
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    #[error(
        "server.fd_reserve ({reserve}) leaves no file descriptors for connections under the \
         process's RLIMIT_NOFILE ({nofile}): lower server.fd_reserve or raise the limit \
         (ulimit -n, LimitNOFILE=)"
    )]
    FdReserve { reserve: usize, nofile: u64 },
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("server.driver = \"io_uring\" but io_uring is unavailable here (kernel too old, or blocked by seccomp); use \"auto\" or \"epoll\"")]
    IoUringUnavailable,
    #[error("server.shards = {0} is over the engine's maximum of {max}", max = SHARDS_MAX)]
    TooManyShards(usize),
    #[error("server.data_dir {path}: cannot create it: {source}")]
    DataDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open the store in server.data_dir {path}: {source}")]
    Store {
        path: std::path::PathBuf,
        source: StoreError,
    },
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("shard {shard} failed to start: {message}")]
    ShardStart { shard: usize, message: String },
    #[error(transparent)]
    Proxy(#[from] crate::proxy::ProxyStartError),
    #[error(transparent)]
    Webhook(#[from] crate::webhook::WebhookStartError),
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterStartError),
}

/// A running engine. Dropping it does not stop it; call `shutdown`.
pub struct Engine {
    pub ws_addr: SocketAddr,
    pub api_addr: SocketAddr,
    pub shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    /// Stopped after the shards and the control thread, before the store
    /// closes: it serves the partition to the other nodes until then.
    cluster_thread: Option<JoinHandle<()>>,
}

/// Whether io_uring works here, probed once per process.
///
/// The probe runs on a throwaway thread: creating and dropping a ring leaves
/// io_uring task work queued on the creating thread with a signal-style
/// notification, which makes that thread's next blocking `recv` with a
/// timeout fail with EINTR. Embedders (and tests) call `Engine::start` from
/// threads that go on to do blocking I/O.
fn uring_available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        std::thread::spawn(monoio::utils::detect_uring)
            .join()
            .unwrap_or(false)
    })
}

fn resolve_driver(driver: Driver) -> Result<DriverKind, EngineError> {
    let uring = uring_available();
    match (driver, uring) {
        (Driver::IoUring, false) => Err(EngineError::IoUringUnavailable),
        (Driver::IoUring | Driver::Auto, true) => Ok(DriverKind::IoUring),
        (Driver::Auto, false) => {
            tracing::warn!(
                "io_uring is unavailable (old kernel or seccomp); falling back to epoll"
            );
            Ok(DriverKind::Epoll)
        }
        (Driver::Epoll, _) => Ok(DriverKind::Epoll),
    }
}

fn bind(
    addr: SocketAddr,
    backlog: u32,
    reuse_port: bool,
    nonblocking: bool,
    what: &'static str,
) -> Result<std::net::TcpListener, EngineError> {
    let make = || -> std::io::Result<std::net::TcpListener> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
        socket.set_reuse_address(true)?;
        if reuse_port {
            socket.set_reuse_port(true)?;
        }
        socket.bind(&addr.into())?;
        socket.listen(backlog.min(i32::MAX as u32) as i32)?;
        socket.set_nonblocking(nonblocking)?;
        Ok(socket.into())
    };
    make().map_err(|source| EngineError::Bind { what, addr, source })
}

/// Runs `fut` to completion on a fresh monoio runtime of the given driver.
fn run_on_runtime<F: std::future::Future>(
    driver: DriverKind,
    fut: F,
) -> std::io::Result<F::Output> {
    match driver {
        DriverKind::IoUring => Ok(monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .with_entries(URING_ENTRIES)
            .enable_timer()
            .build()?
            .block_on(fut)),
        DriverKind::Epoll => Ok(monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()?
            .block_on(fut)),
    }
}

impl Engine {
    /// Binds every listener, starts every thread, and returns once all
    /// shards are accepting.
    pub fn start(config: Config) -> Result<Engine, EngineError> {
        let n_shards = config.server.shards.as_usize();
        if n_shards > SHARDS_MAX {
            return Err(EngineError::TooManyShards(n_shards));
        }
        let driver = resolve_driver(config.server.driver)?;
        // Before anything is bound or opened: a bad certificate stops the
        // start with the key and the file named.
        let tls = TlsConfigs::from_config(&config.tls)?.map(Arc::new);
        let nofile = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
        let fd_budget = crate::admission::FdBudget::under_limit(nofile, config.server.fd_reserve)
            .ok_or(EngineError::FdReserve {
            reserve: config.server.fd_reserve,
            nofile: nofile.unwrap_or(u64::MAX),
        })?;
        tracing::info!(
            connections_max = fd_budget.max(),
            reserve = config.server.fd_reserve,
            "file descriptor budget"
        );
        let data_dir = config.server.data_dir.clone();
        std::fs::create_dir_all(&data_dir).map_err(|source| EngineError::DataDir {
            path: data_dir.clone(),
            source,
        })?;
        let ws = &config.websocket;
        // Bind every shard's listener here so port 0 resolves once and all
        // shards share it through SO_REUSEPORT.
        // Shards accept after readiness, so their listeners never block.
        let first = bind(ws.listen, ws.backlog, true, true, "websocket.listen")?;
        let ws_addr = first.local_addr().map_err(|source| EngineError::Bind {
            what: "websocket.listen",
            addr: ws.listen,
            source,
        })?;
        let mut ws_listeners = vec![first];
        for _ in 1..n_shards {
            ws_listeners.push(bind(ws_addr, ws.backlog, true, true, "websocket.listen")?);
        }
        let cluster = crate::cluster::Cluster::new(&config);
        // The API listener joins the control thread's tokio runtime, which
        // needs it non-blocking. In a cluster every process of a host
        // shares the API port too (SO_REUSEPORT): any node answers for
        // the whole cluster.
        let api_listener = bind(
            config.api.listen,
            1024,
            cluster.is_some(),
            true,
            "api.listen",
        )?;
        // Never shared: where an operator reaches this process alone.
        let node_api_listener = match config.api.node_listen.parse::<SocketAddr>() {
            Ok(addr) => Some(bind(addr, 64, false, true, "api.node_listen")?),
            Err(_) => None,
        };
        let api_addr = api_listener
            .local_addr()
            .map_err(|source| EngineError::Bind {
                what: "api.listen",
                addr: config.api.listen,
                source,
            })?;

        // Producers: one row per shard, then the control thread, then the
        // store's writer thread, then the cluster thread if any.
        let rows = n_shards + 2 + usize::from(cluster.is_some());
        let (mesh, mut senders, receivers) =
            Mesh::build(n_shards, rows, config.server.mesh_lane_events);
        let missing = |what: &str| EngineError::ShardStart {
            shard: n_shards,
            message: format!("{what} mesh sender missing"),
        };
        let cluster_sender = match cluster {
            Some(_) => Some(senders.pop().ok_or_else(|| missing("cluster"))?),
            None => None,
        };
        let store_sender = senders.pop().ok_or_else(|| missing("store"))?;
        let control_sender = senders.pop().ok_or_else(|| missing("control"))?;
        assert_eq!(senders.len(), n_shards);
        assert_eq!(control_sender.producer_idx(), n_shards);
        assert_eq!(store_sender.producer_idx(), n_shards + 1);
        let interest = Arc::new(Interest::new());
        let webhook_waker = Arc::new(crate::webhook::Waker::default());
        let dm_pairs = Arc::new(crate::im::DmPairs::default());
        let mut store_config = StoreConfig::new(data_dir.clone());
        store_config.node_id = config.server.node_id.get();
        store_config.dedup_window = config.server.dedup_window;
        store_config.sync_interval_min = config.server.store_sync_interval;
        store_config.memtable_bytes_max = config.server.store_memtable_bytes_max as u64;
        store_config.conversations_per_user_max = config.im.conversations_per_user_max;
        store_config.group_members_max = config.im.group_members_max;
        store_config.groups_per_user_max = config.im.groups_per_user_max;
        store_config.dm_retention = crate::im::dm_retention(&config);
        store_config.group_retention = crate::im::group_retention(&config);
        // The set only serves the Offline events written after a crash.
        store_config.presence_set =
            crate::outbox::enabled(&config, crate::config::WebhookEvent::Offline);
        let store = Store::open_with_sink(
            store_config,
            crate::streams::StoreSink::new(
                store_sender,
                interest.clone(),
                webhook_waker.clone(),
                dm_pairs.clone(),
                cluster.as_ref().map(|(cluster, _)| cluster.clone()),
            ),
        )
        .map_err(|source| EngineError::Store {
            path: data_dir.clone(),
            source,
        })?;
        let auth = Authenticator::new(
            config.auth.jwt_secret.expose().as_bytes(),
            config.auth.leeway.as_secs(),
        );
        let proxies = crate::proxy::Proxies::start(&config)?;
        let webhooks = crate::webhook::Webhooks::start(&config, webhook_waker)?;
        let shared = Arc::new(Shared {
            proxies,
            webhooks,
            presence: crate::presence::Presence::new(
                &config,
                cluster.as_ref().map(|(cluster, _)| cluster.clone()),
            ),
            dm_pairs,
            dm_decisions: Default::default(),
            presence_book: crate::presence::book::PresenceBook::new(
                config.im.presence_offline_grace.as_millis() as u64,
                n_shards,
            )
            .with_cluster(cluster.as_ref().map(|(cluster, _)| cluster.clone())),
            interest,
            store,
            metrics: metrics::new_all(n_shards),
            auth,
            mesh,
            driver,
            started_at: Instant::now(),
            fd_budget,
            tls,
            cluster: cluster.as_ref().map(|(cluster, _)| cluster.clone()),
            draining: Default::default(),
            config,
        });
        tracing::info!(shards = n_shards, driver = driver.as_str(), %ws_addr, %api_addr, "starting");

        let cores = core_affinity::get_core_ids().unwrap_or_default();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<usize, EngineError>>();
        let mut threads = Vec::with_capacity(n_shards + 1);
        let mut senders = senders.into_iter();
        for ((shard_idx, listener), receiver) in ws_listeners.into_iter().enumerate().zip(receivers)
        {
            let sender = senders.next().ok_or(EngineError::ShardStart {
                shard: shard_idx,
                message: "mesh sender missing".into(),
            })?;
            let core = (shared.config.server.pin_cores && !cores.is_empty())
                .then(|| cores[pinned_core(&shared.config, shard_idx, cores.len())]);
            threads.push(spawn_shard(
                shard_idx,
                shared.clone(),
                sender,
                receiver,
                listener,
                core,
                ready_tx.clone(),
            ));
        }
        let control_shared = shared.clone();
        threads.push(
            std::thread::Builder::new()
                .name("ringcast-control".into())
                .spawn(move || {
                    if let Err(err) = crate::control::run(
                        control_shared,
                        control_sender,
                        api_listener,
                        node_api_listener,
                    ) {
                        tracing::error!(error = %err, "control runtime failed to start");
                    }
                })
                .map_err(|err| EngineError::ShardStart {
                    shard: n_shards,
                    message: err.to_string(),
                })?,
        );
        drop(ready_tx);
        for _ in 0..n_shards {
            match ready_rx.recv() {
                Ok(Ok(_)) => {}
                Ok(Err(err)) => {
                    shared.mesh.shutdown();
                    return Err(err);
                }
                Err(_) => {
                    shared.mesh.shutdown();
                    return Err(EngineError::ShardStart {
                        shard: 0,
                        message: "a shard thread exited during startup".into(),
                    });
                }
            }
        }
        // Once everything that writes events runs: the loop holds `Shared`.
        if let Some(webhooks) = &shared.webhooks {
            webhooks.launch(shared.clone());
        }
        let cluster_thread = match (cluster, cluster_sender) {
            (Some((cluster, parts)), Some(sender)) => {
                match crate::cluster::spawn(cluster, parts, shared.clone(), sender) {
                    Ok(thread) => Some(thread),
                    Err(err) => {
                        shared.mesh.shutdown();
                        return Err(err.into());
                    }
                }
            }
            _ => None,
        };
        Ok(Engine {
            ws_addr,
            api_addr,
            shared,
            threads,
            cluster_thread,
        })
    }

    /// Graceful stop: shards stop accepting, close connections with 1001
    /// after flushing, and exit; then the control thread stops.
    pub fn shutdown(self) {
        self.shared.mesh.shutdown();
        for thread in self.threads {
            let _ = thread.join();
        }
        if let (Some(cluster), Some(thread)) = (&self.shared.cluster, self.cluster_thread) {
            cluster.stop();
            let _ = thread.join();
        }
        // Before the store closes: its last hand-over needs the writer.
        if let Some(webhooks) = &self.shared.webhooks {
            webhooks.shutdown();
        }
        // Drains the store's queues, fsyncs and joins its threads. Tasks a
        // runtime dropped may still hold `Shared`, so close through it.
        if let Err(err) = self.shared.store.close() {
            tracing::error!(error = %err, "closing the store failed");
        }
        tracing::info!("stopped");
    }

    /// Re-reads the TLS certificate and key (SIGHUP). New handshakes use
    /// them once this returns `Ok`; open connections keep theirs. On error
    /// the current certificate stays. `Ok(false)` when TLS is off.
    pub fn reload_tls(&self) -> Result<bool, TlsError> {
        match &self.shared.tls {
            Some(tls) => tls.reload().map(|()| true),
            None => Ok(false),
        }
    }

    /// Takes the node out of service (SIGUSR1): see [`Shared::drain`].
    pub fn drain(&self) -> bool {
        self.shared.drain()
    }

    /// A handle that can ask for shutdown from another thread (signals).
    pub fn shutdown_trigger(&self) -> Arc<Mesh> {
        self.shared.mesh.clone()
    }
}

/// The core shard `shard_idx` is pinned to. Several engine processes of a
/// cluster share a host: each starts where the previous node's shards end
/// (by `server.node_id`), so they do not all pile onto the first cores.
fn pinned_core(config: &Config, shard_idx: usize, n_cores: usize) -> usize {
    let offset = if config.cluster.nats_url.is_empty() {
        0
    } else {
        usize::from(config.server.node_id.get()) * config.server.shards.as_usize()
    };
    (offset + shard_idx) % n_cores
}

fn spawn_shard(
    shard_idx: usize,
    shared: Arc<Shared>,
    sender: MeshSender,
    receiver: MeshReceiver,
    listener: std::net::TcpListener,
    core: Option<core_affinity::CoreId>,
    ready: mpsc::Sender<Result<usize, EngineError>>,
) -> JoinHandle<()> {
    let driver = shared.driver;
    let spawned = std::thread::Builder::new()
        .name(format!("ringcast-shard-{shard_idx}"))
        .spawn(move || {
            if let Some(core) = core {
                if !core_affinity::set_for_current(core) {
                    tracing::warn!(
                        shard = shard_idx,
                        core = core.id,
                        "could not pin shard thread"
                    );
                }
            }
            let ready_inner = ready.clone();
            let result = run_on_runtime(driver, async move {
                let shard = match Shard::new(shard_idx, shared, sender, listener.into()) {
                    Ok(shard) => shard,
                    Err(err) => {
                        let _ = ready_inner.send(Err(EngineError::ShardStart {
                            shard: shard_idx,
                            message: err.to_string(),
                        }));
                        return;
                    }
                };
                let _ = ready_inner.send(Ok(shard_idx));
                shard.run(receiver).await;
            });
            if let Err(err) = result {
                let _ = ready.send(Err(EngineError::ShardStart {
                    shard: shard_idx,
                    message: format!("runtime: {err}"),
                }));
            }
        });
    match spawned {
        Ok(handle) => handle,
        Err(err) => panic!("cannot spawn shard thread {shard_idx}: {err}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_processes_of_a_cluster_pin_their_shards_to_different_cores() {
        let mut config = Config::test_min();
        let shards = config.server.shards.as_usize();
        assert_eq!(
            pinned_core(&config, 1, 16),
            1,
            "a single node starts at core 0"
        );
        config.cluster.nats_url = "nats://127.0.0.1:4222".into();
        let mut used = std::collections::HashSet::new();
        for node in 0..4u8 {
            config.server.node_id = crate::config::NodeId::new(node).unwrap();
            for shard in 0..shards {
                assert!(
                    used.insert(pinned_core(&config, shard, 16)),
                    "core used twice"
                );
            }
        }
        config.server.node_id = crate::config::NodeId::new(9).unwrap();
        assert!(pinned_core(&config, 0, 16) < 16, "wraps around the cores");
    }
}
