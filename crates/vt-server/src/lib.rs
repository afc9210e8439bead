//! `vt server`, assembled: the one place that knows what runs in a server
//! process, where it keeps its files, and in which order it stops.
//!
//! [`Server::start`] opens the store in the data directory ([`DataDir`]),
//! makes the first admin token, binds the API port, and starts, each with a
//! published status (`GET /v1/system/tasks`):
//!
//! - the control plane and its two reconcilers, the projector and the
//!   scheduler (`vt-control-plane`), serving `/v1`, the registry at `/v2`,
//!   `/metrics` and `/healthz`;
//! - the ingress and the edge that feeds it routes from the store
//!   (`vt-ingress`, `vt-edge`), unless switched off;
//! - the node agent, with a node token of its own (`vt-agent`), unless
//!   switched off or the host cannot boot microVMs.
//!
//! [`Server::run`] serves both origins (`vt-front`): the API origin (`--listen`) and the
//! workspace origin (`--workspace-listen`), each with [`ConnectionLimits`] (header and body
//! read timeouts, a cap on connections per client), TLS when given a certificate, and a
//! limit on failed logins, until its shutdown future resolves, then stops in this order:
//!
//! 1. nothing waits for news any more: the agent stops following (and reporting), the
//!    control plane's long polls answer and its follow streams end;
//! 2. both origins stop accepting; requests in flight finish within the drain timeout
//!    ([`ServerConfig::drain_timeout`]);
//! 3. the agent stops its VMs within the VM stop timeout
//!    ([`ServerConfig::vm_stop_timeout`]): through their guests, killed past it, taps and
//!    cgroups removed, records kept so the next start boots the instances again;
//! 4. the edge and the ingress's listeners; last, the control plane's reconcilers.
//!
//! So a stop takes at most the drain timeout plus the VM stop timeout (and a second
//! more for the kill), however long an agent's long poll would have waited.

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use vt_api::{BackgroundTask, TaskState};
use vt_control_plane::{tasks, ControlPlane, Settings};
use vt_ids::Hostname;
pub use vt_store::SqliteOptions;
use vt_store::{PgStore, SqliteStore, Store, StoreError};

pub mod console;
pub mod data_dir;
pub mod edge_node;
pub mod exec;
mod front;
pub mod join;
pub mod logs;
pub mod master_key;
pub mod remote_edge;
pub mod tokens;

pub use data_dir::{DataDir, DataDirLock};
pub use vt_agent::NetworkConfig as NodeNetwork;
pub use vt_control_plane::NetworkSettings;
pub use vt_front::serve;
pub use vt_front::ConnectionLimits;

/// How a server is set up (the flags of `vt server`).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// `postgres://...`; `None` for the embedded SQLite store in the data directory.
    pub database_url: Option<String>,
    pub sqlite: SqliteOptions,
    /// The range TCP routes get their listener ports from.
    pub tcp_ports: RangeInclusive<u16>,
    /// Run the ingress, binding route ports on these addresses; `None`: no ingress (routes are still kept).
    pub ingress: Option<Vec<IpAddr>>,
    /// Run the node agent, registering this host as the node of this name; `None`: no agent.
    pub agent: Option<Hostname>,
    /// The master key file; `None`: `<data-dir>/master.key`, made on first start.
    pub master_key_file: Option<PathBuf>,
    /// Timeouts and the per-client connection cap of both origins' listeners.
    pub limits: ConnectionLimits,
    /// The API origin's certificate and key; `None`: plain HTTP.
    pub tls: Option<TlsFiles>,
    /// The workspace origin; `None`: not served.
    pub workspace: Option<WorkspaceOrigin>,
    /// The default workspace template: an OCI image layout (scripts/workspace-template.sh).
    pub workspace_template: Option<PathBuf>,
    /// How often the workspace origin's last accesses are recorded (`workspace.accessed`).
    pub workspace_access_every: Duration,
    /// The cluster's guest network (the control plane's): nodes' IPv4 ranges, the guests' MTU.
    pub network: NetworkSettings,
    /// This node's guest network (its agent's): the nftables table, egress, allow and deny lists.
    pub node_network: vt_agent::NetworkConfig,
    /// What large writes (registry uploads, unpacked layers, disks) leave free on the data directory's filesystem.
    pub disk_reserve: vt_disk::Reserve,
    /// Where volume backups go (a restic repository and its password file), if anywhere.
    pub backup: Option<vt_backup::Target>,
    /// Back every volume up this often (with `backup`).
    pub backup_every: Option<Duration>,
    /// Bytes the registry may hold per org; `None`: no quota.
    pub registry_quota: Option<u64>,
    /// Where the registry's storage is; `None`: `<data-dir>/registry`. Control planes on one
    /// database share one (a shared filesystem) so that each serves every image.
    pub registry_dir: Option<PathBuf>,
    /// A node without a heartbeat for this long is unreachable (its instances are placed elsewhere).
    pub heartbeat_timeout: Duration,
    /// How long requests in flight may take to finish once a shutdown begins.
    pub drain_timeout: Duration,
    /// How long the node agent's VMs may take to stop (through their guests) in a shutdown,
    /// after the drain; the ones left are killed.
    pub vm_stop_timeout: Duration,
    /// This node's WireGuard mesh (docs/nodes.md, "The mesh"); `None`: none.
    pub mesh: Option<MeshSettings>,
}

/// How a node meshes with the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshSettings {
    /// The UDP port its interface listens on (`--wireguard-port`).
    pub port: u16,
    /// Where the other nodes reach it (`--node-address`); `None`: the address this host uses
    /// toward the control plane (a joined node) or along its default route.
    pub address: Option<IpAddr>,
    /// The interface's name (`--mesh-interface`).
    pub interface: String,
}

impl Default for MeshSettings {
    fn default() -> Self {
        MeshSettings { port: vt_mesh::DEFAULT_PORT, address: None, interface: vt_agent::mesh::INTERFACE.into() }
    }
}

impl MeshSettings {
    /// The agent's mesh: the key in the data directory, the address given or found.
    pub(crate) fn agent_config(&self, data: &DataDir, toward: &str) -> Result<vt_agent::mesh::MeshConfig, ServerError> {
        let address = match self.address {
            Some(a) => a,
            None => local_address_toward(toward).ok_or_else(|| {
                ServerError::Config(format!(
                    "cannot tell which address the other nodes reach this one at (none routes toward {toward}): \
                     pass --node-address"
                ))
            })?,
        };
        Ok(vt_agent::mesh::MeshConfig {
            interface: self.interface.clone(),
            private_key: data.wireguard_key(),
            listen_port: self.port,
            address,
            log: Some(data.mesh_log()),
        })
    }
}

/// The source address this host would use toward `url`'s host (a UDP socket connected
/// there: no packet is sent). Loopback and unspecified answers are no answer.
fn local_address_toward(url: &str) -> Option<IpAddr> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next()?;
    let target = if authority.parse::<SocketAddr>().is_ok() {
        authority.to_owned()
    } else if authority.starts_with('[') || !authority.contains(':') {
        format!("{authority}:443")
    } else {
        authority.to_owned()
    };
    let addr = std::net::ToSocketAddrs::to_socket_addrs(&target).ok()?.next()?;
    let bind: SocketAddr = if addr.is_ipv6() { "[::]:0".parse().ok()? } else { "0.0.0.0:0".parse().ok()? };
    let socket = std::net::UdpSocket::bind(bind).ok()?;
    socket.connect(addr).ok()?;
    let local = socket.local_addr().ok()?.ip();
    (!local.is_loopback() && !local.is_unspecified()).then_some(local)
}

/// A certificate chain and its key, PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Where the workspace origin listens, and its certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceOrigin {
    pub listen: SocketAddr,
    pub tls: Option<TlsFiles>,
}

/// How often the workspace origin's last accesses are recorded, by default.
pub const DEFAULT_WORKSPACE_ACCESS_EVERY: Duration = Duration::from_secs(60);

/// The VM stop timeout of a shutdown, by default.
pub const DEFAULT_VM_STOP_TIMEOUT: Duration = Duration::from_secs(10);

impl ServerConfig {
    /// A control plane alone on `listen` (no ingress, no agent), its files in `data_dir`.
    pub fn new(data_dir: PathBuf, listen: SocketAddr) -> Self {
        ServerConfig {
            data_dir,
            listen,
            database_url: None,
            sqlite: SqliteOptions::default(),
            tcp_ports: vt_control_plane::app::routes::DEFAULT_TCP_PORTS,
            ingress: None,
            agent: None,
            master_key_file: None,
            limits: ConnectionLimits::default(),
            tls: None,
            workspace: None,
            workspace_template: None,
            workspace_access_every: DEFAULT_WORKSPACE_ACCESS_EVERY,
            network: Default::default(),
            node_network: Default::default(),
            disk_reserve: vt_disk::Reserve::default(),
            backup: None,
            backup_every: None,
            registry_quota: None,
            registry_dir: None,
            heartbeat_timeout: vt_control_plane::scheduler::SchedulerSettings::default().heartbeat_timeout,
            drain_timeout: serve::DEFAULT_DRAIN,
            vm_stop_timeout: DEFAULT_VM_STOP_TIMEOUT,
            mesh: None,
        }
    }

    /// What the flags cannot check one by one: no two prefixes of `--egress-allow`,
    /// `--egress-deny` and `--guest-ipv4-block` overlap (instances' own addresses are never an
    /// egress destination, and a prefix is allowed or denied, not both).
    pub fn check(&self) -> Result<(), ServerError> {
        let block = [vt_firewall::IpNet::V4(self.network.ipv4_block)];
        vt_firewall::prefix::check_overlaps(&[
            ("--egress-allow", &self.node_network.allow),
            ("--egress-deny", &self.node_network.deny),
            ("--guest-ipv4-block", &block),
        ])
        .map_err(|e| ServerError::Config(e.to_string()))?;
        vt_firewall::check_table_name(&self.node_network.table)
            .map_err(|e| ServerError::Config(format!("--nft-table: {e}")))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{0}")]
    Config(String),
    #[error("cannot create the data directory {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error("cannot take the data directory: {0}")]
    Locked(std::io::Error),
    #[error(transparent)]
    MasterKey(#[from] master_key::MasterKeyError),
    #[error("cannot open the store: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Tokens(#[from] tokens::TokenFileError),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Tls(#[from] vt_front::TlsError),
    #[error("cannot start the ingress: {0}")]
    Ingress(String),
    #[error("server failed: {0}")]
    Serve(std::io::Error),
}

/// Something the operator should read at start (the CLI prints these).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    Info(String),
    Warning(String),
}

/// The data directory and the store `config` names, the directory taken by
/// this process (the server's, and the offline commands').
pub async fn open_store(config: &ServerConfig) -> Result<(DataDir, DataDirLock, Arc<dyn Store>), ServerError> {
    let data = DataDir::create(&config.data_dir)
        .map_err(|source| ServerError::DataDir { path: config.data_dir.clone(), source })?;
    let lock = data.lock().map_err(ServerError::Locked)?;
    let store: Arc<dyn Store> = match &config.database_url {
        Some(url) => Arc::new(PgStore::connect(url).await?),
        None => Arc::new(SqliteStore::open(&data.sqlite(), config.sqlite.clone()).await?),
    };
    Ok((data, lock, store))
}

/// `vt server rebuild-views`: with no server running, rebuild the views of the
/// store `config` names from its log, and report the rows that differed.
pub async fn rebuild_views(config: &ServerConfig) -> Result<vt_api::RebuildReport, ServerError> {
    let (_, _lock, store) = open_store(config).await?;
    Ok(vt_control_plane::rebuild::rebuild_views(store).await?)
}

/// `vt server rotate-master-key`: with no server running, a new master key
/// that re-wraps every env's key; no secret value is touched.
pub async fn rotate_master_key(config: &ServerConfig) -> Result<master_key::Rotation, ServerError> {
    let (data, _lock, store) = open_store(config).await?;
    Ok(master_key::rotate(config, &data, store.as_ref()).await?)
}

/// A started server: every component running, the API port bound, not serving yet.
pub struct Server {
    pub control_plane: Arc<ControlPlane>,
    pub data: DataDir,
    /// Where the first start wrote the admin token.
    pub admin_token_written: Option<PathBuf>,
    pub notices: Vec<Notice>,
    /// The workspace origin, when it is served.
    pub front: Option<Arc<vt_front::Front>>,
    /// Who may load the web console at `/app/` (the console user).
    console: Arc<vt_front::auth::Gate>,
    /// Held while the server runs: one server per data directory.
    _lock: DataDirLock,
    listener: tokio::net::TcpListener,
    tls: Option<vt_front::Tls>,
    workspace_listener: Option<(tokio::net::TcpListener, Option<vt_front::Tls>)>,
    api_metrics: Arc<vt_front::OriginMetrics>,
    limits: ConnectionLimits,
    drain_timeout: Duration,
    vm_stop_timeout: Duration,
    ingress: Option<(vt_ingress::Ingress, JoinHandle<()>)>,
    agent: Option<(Arc<vt_agent::Agent>, JoinHandle<()>)>,
    /// The workspace origin's table follower and access recorder.
    front_tasks: Vec<JoinHandle<()>>,
}

/// What a caller may ask a running server while [`Server::run`] has it.
#[derive(Clone)]
pub struct ServerHandle {
    agent: Option<Arc<vt_agent::Agent>>,
}

impl ServerHandle {
    /// The VMs this server's node agent runs now.
    pub fn running_vms(&self) -> usize {
        self.agent.as_ref().map_or(0, |a| a.running_vms())
    }
}

/// How a stop went ([`Server::run`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stopped {
    /// VMs the agent was running when the stop began.
    pub vms: usize,
    /// Of those, the ones that had to be killed at the VM stop timeout.
    pub vms_killed: usize,
    /// From the shutdown future resolving to the API drained, and to the VMs gone.
    pub drained_in: Duration,
    pub vms_stopped_in: Duration,
}

impl Server {
    pub async fn start(config: &ServerConfig) -> Result<Server, ServerError> {
        config.check()?;
        let open_registry = |dir: &Path| std::fs::create_dir_all(dir).and_then(|()| vt_registry::Storage::open(dir));
        // A registry directory it cannot use is said before anything is written.
        let given_registry =
            match &config.registry_dir {
                Some(dir) => Some(open_registry(dir).map_err(|e| {
                    ServerError::Config(format!("--registry-dir {}: cannot use it: {e}", dir.display()))
                })?),
                None => None,
            };
        let (data, lock, store) = open_store(config).await?;
        let registry = match given_registry {
            Some(r) => r,
            None => open_registry(&data.registry()).map_err(|e| {
                ServerError::Config(format!("the registry in {}: cannot use it: {e}", data.registry().display()))
            })?,
        };
        let mut notices = vec![];
        let master_key = master_key::load(config, &data, store.as_ref(), &mut notices).await?;
        let admin_token_written = tokens::bootstrap_admin(store.as_ref(), &data).await?;
        notices.push(match &admin_token_written {
            Some(path) => Notice::Info(format!("wrote a new admin token to {}", path.display())),
            None => Notice::Info(format!(
                "the admin token was written on first start (in {})",
                data.admin_token().display()
            )),
        });
        let tls = config.tls.as_ref().map(|t| vt_front::Tls::from_pem_files(&t.cert, &t.key)).transpose()?;
        let workspace_tls = match &config.workspace {
            Some(WorkspaceOrigin { tls: Some(t), .. }) => Some(vt_front::Tls::from_pem_files(&t.cert, &t.key)?),
            _ => None,
        };
        let listener = bind(config.listen).await?;
        let addr = listener.local_addr().map_err(ServerError::Serve)?;
        let workspace_listener = match &config.workspace {
            Some(origin) => Some((bind(origin.listen).await?, workspace_tls)),
            None => None,
        };
        let workspace_origin = match &workspace_listener {
            Some((l, tls)) => {
                let at = l.local_addr().map_err(ServerError::Serve)?;
                Some(format!("{}://{at}", if tls.is_some() { "https" } else { "http" }))
            }
            None => None,
        };
        if let Some(t) = &config.workspace_template {
            if !t.join("index.json").is_file() {
                return Err(ServerError::Config(format!(
                    "--workspace-template {}: not an OCI image layout (no index.json); build it with scripts/workspace-template.sh",
                    t.display()
                )));
            }
        }
        // The instances of this process's agent: their logs are the files of the agent of this
        // data directory; their exec sessions are opened by that agent, once it runs. Other
        // nodes' are served through their channels (docs/nodes.md).
        let local = config.agent.is_some();
        let logs: Arc<dyn vt_control_plane::logs::LogSource> = Arc::new(logs::LocalLogs { dir: data.agent().logs });
        let exec = Arc::new(exec::LocalExec::default());
        let registry_dir = config.registry_dir.clone().unwrap_or_else(|| data.registry());
        let settings = Settings {
            registry_limits: vt_registry::Limits {
                // Uploads are checked against the free space where they are written.
                budget: Some(vt_disk::DiskBudget::new(
                    &registry_dir,
                    config.disk_reserve,
                    node_name(config).to_string(),
                )),
                namespace_quota: config.registry_quota,
            },
            registry: Some(registry),
            logs: local.then_some(logs),
            master_key: Some(Arc::new(master_key)),
            api_port: Some(addr.port()),
            network: config.network,
            exec: local.then(|| exec.clone() as Arc<dyn vt_control_plane::exec::ExecBackend>),
            exec_grant_ttl: None,
            workspaces: vt_control_plane::app::workspaces::WorkspaceSettings {
                template: config.workspace_template.clone(),
                origin: workspace_origin,
            },
        };
        let cp = ControlPlane::start(store, settings);
        let (console_token, new_console) = tokens::console_password(&cp, &data).await?;
        notices.push(Notice::Info(format!(
            "{} the console user `vt`'s password {} {}",
            if new_console { "wrote" } else { "kept" },
            if new_console { "to" } else { "in" },
            data.console_password().display()
        )));
        let console_login = || console::ConsoleLogin { store: cp.store.clone(), token: console_token };
        // The web console at /app/ on the API origin, behind the same console user.
        let console = Arc::new(
            vt_front::auth::Gate::new(Box::new(console_login()))
                .map_err(|e| ServerError::Config(format!("cannot make the console's session key: {e}")))?,
        );
        let mut front_tasks = vec![];
        let front = match &workspace_listener {
            Some(_) => {
                let front = vt_front::Front::new(Box::new(console_login()), vt_front::UpstreamLimits::default())
                    .map_err(|e| ServerError::Config(format!("cannot make the workspace origin's session key: {e}")))?;
                front_tasks = front::start(&cp, &front, config.workspace_access_every);
                Some(front)
            }
            None => None,
        };
        cp.ingress.set_tcp_ports(config.tcp_ports.clone());
        cp.scheduler.configure(vt_control_plane::scheduler::SchedulerSettings {
            heartbeat_timeout: config.heartbeat_timeout,
            ..cp.scheduler.settings()
        });
        cp.backups.set(config.backup.clone());
        cp.backups.set_every(config.backup_every);
        let (ingress, edge) = match &config.ingress {
            Some(addrs) => {
                let (ingress, task, edge) = start_ingress(&cp, &data, addrs, config.agent.as_ref()).await?;
                (Some((ingress, task)), Some(edge))
            }
            None => {
                cp.tasks.register("edge", || tasks::off("edge", EDGE, "switched off (`--no-ingress`)"));
                (None, None)
            }
        };
        let agent = match &config.agent {
            Some(node) => {
                let agent = start_agent(&cp, &data, addr, node, config, &mut notices).await?;
                if let Some((a, _)) = &agent {
                    exec.set_agent(a.clone());
                }
                agent
            }
            None => {
                cp.tasks.register("agent", || tasks::off("agent", AGENT, "switched off (`--no-agent`)"));
                None
            }
        };
        let api_metrics = vt_front::OriginMetrics::new("api");
        publish_metrics(&cp, edge, &api_metrics, front.as_ref());
        Ok(Server {
            control_plane: cp,
            data,
            admin_token_written,
            notices,
            front,
            console,
            _lock: lock,
            listener,
            tls,
            workspace_listener,
            api_metrics,
            limits: config.limits,
            drain_timeout: config.drain_timeout,
            vm_stop_timeout: config.vm_stop_timeout,
            ingress,
            agent,
            front_tasks,
        })
    }

    pub fn handle(&self) -> ServerHandle {
        ServerHandle { agent: self.agent.as_ref().map(|(a, _)| a.clone()) }
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Where the workspace origin listens, when it is served.
    pub fn workspace_addr(&self) -> Option<SocketAddr> {
        self.workspace_listener.as_ref().and_then(|(l, _)| l.local_addr().ok())
    }

    /// The schemes the origins are served with: (`http`|`https`, the workspace origin's).
    pub fn schemes(&self) -> (&'static str, &'static str) {
        let scheme = |tls: bool| if tls { "https" } else { "http" };
        (scheme(self.tls.is_some()), scheme(self.workspace_listener.as_ref().is_some_and(|(_, tls)| tls.is_some())))
    }

    /// Serve until `shutdown` resolves, then stop everything in order (see the crate docs).
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<Stopped, ServerError> {
        let app = api_origin(
            vt_control_plane::http::router(self.control_plane.clone()),
            vt_console::router(self.console.clone()),
            &self.api_metrics,
        );
        let began = Arc::new(std::sync::OnceLock::new());
        let (stopping, stop) = tokio::sync::watch::channel(false);
        let begin = {
            let (cp, agent, began) = (self.control_plane.clone(), self.handle().agent, began.clone());
            async move {
                shutdown.await;
                let _ = began.set(tokio::time::Instant::now());
                // Nothing waits for news from here on, so the drain waits for real requests only.
                if let Some(agent) = &agent {
                    agent.stop_following();
                }
                cp.close_streams();
                stopping.send_replace(true);
            }
        };
        let stopped = |mut stop: tokio::sync::watch::Receiver<bool>| async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        let workspace = match (self.workspace_listener, &self.front) {
            (Some((listener, tls)), Some(front)) => Some(tokio::spawn(serve(
                listener,
                tls,
                front.router(),
                self.limits,
                self.drain_timeout,
                stopped(stop.clone()),
            ))),
            _ => None,
        };
        let api = serve(self.listener, self.tls, app, self.limits, self.drain_timeout, stopped(stop));
        let (api, ()) = tokio::join!(api, begin);
        let mut served = api.map_err(ServerError::Serve);
        if let Some(workspace) = workspace {
            let ended = workspace.await.unwrap_or_else(|e| Err(std::io::Error::other(e)));
            served = served.and(ended.map_err(ServerError::Serve));
        }
        let began = began.get().copied().unwrap_or_else(tokio::time::Instant::now);
        let mut stopped = Stopped { drained_in: began.elapsed(), ..Stopped::default() };
        if let Some((agent, task)) = self.agent {
            (stopped.vms, stopped.vms_killed) = stop_vms(&agent, task, self.vm_stop_timeout).await;
        }
        stopped.vms_stopped_in = began.elapsed();
        if let Some((ingress, edge)) = self.ingress {
            edge.abort();
            ingress.close_listeners().await;
        }
        for task in self.front_tasks {
            task.abort();
        }
        if let Some(front) = &self.front {
            front::record_now(&self.control_plane, front).await;
        }
        self.control_plane.settle(Duration::from_secs(2)).await;
        self.control_plane.shutdown();
        served.map(|()| stopped)
    }
}

/// The API origin: the control plane's routes and the web console (`/app/`), counted, with
/// failed logins limited (refused as the API's `rate_limited` error).
fn api_origin(router: axum::Router, console: axum::Router, metrics: &Arc<vt_front::OriginMetrics>) -> axum::Router {
    let limiter = Arc::new(vt_front::LoginLimiter::new(vt_control_plane::http::too_many_logins));
    router
        .merge(console)
        .layer(axum::middleware::from_fn_with_state(limiter, vt_front::auth::limit_logins))
        .layer(axum::middleware::from_fn_with_state(metrics.clone(), vt_front::metrics::count))
}

/// `GET /metrics`: the ingress's counters (when it runs) and both origins'.
fn publish_metrics(
    cp: &ControlPlane,
    edge: Option<Arc<vt_edge::Edge>>,
    api: &Arc<vt_front::OriginMetrics>,
    front: Option<&Arc<vt_front::Front>>,
) {
    let (api, front) = (api.clone(), front.cloned());
    cp.ingress.set_metrics(move || {
        let mut text = edge.as_ref().map(|e| e.metrics_text()).unwrap_or_default();
        text.push_str(&api.text());
        if let Some(front) = &front {
            text.push_str(&front.metrics().text());
        }
        text
    });
}

/// A listener on `addr`.
async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, ServerError> {
    tokio::net::TcpListener::bind(addr).await.map_err(|source| ServerError::Listen { addr, source })
}

const EDGE: &str = "keeps the ingress's route table in step with routes and ready instances";
const AGENT: &str = "runs the instances placed on this node as microVMs and reports them";

/// The disk budget of this node's data directory.
fn disk_budget(config: &ServerConfig, data: &DataDir) -> vt_disk::DiskBudget {
    vt_disk::DiskBudget::new(data.root(), config.disk_reserve, node_name(config).to_string())
}

/// The node this server runs the agent of, or the host's name.
fn node_name(config: &ServerConfig) -> Hostname {
    config.agent.clone().unwrap_or_else(host_name)
}

/// The name this host goes by as a node: the host name, when it is one.
pub fn host_name() -> Hostname {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .and_then(|h| Hostname::parse(h.trim()).ok())
        .unwrap_or_else(|| Hostname::parse("local").unwrap_or_else(|e| unreachable!("`local` is a host name: {e}")))
}

/// The ingress and the edge that feeds it routes from this server's store. The
/// applied table is kept in the data directory, so routes are served from the
/// start, before the edge has caught up.
async fn start_ingress(
    cp: &Arc<ControlPlane>,
    data: &DataDir,
    addrs: &[IpAddr],
    config_node: Option<&Hostname>,
) -> Result<(vt_ingress::Ingress, JoinHandle<()>, Arc<vt_edge::Edge>), ServerError> {
    // Its listener reports go under the agent's node name (the host's, without an agent).
    let node = config_node.map_or_else(host_name, Clone::clone);
    let source = Arc::new(vt_edge::StoreSource(cp.store.clone()));
    let (ingress, task, edge) = ingress_and_edge(data, addrs, source, &node, Duration::from_secs(2)).await?;
    let status = edge.clone();
    cp.tasks.register("edge", move || {
        let s = status.status();
        BackgroundTask {
            name: "edge".into(),
            description: EDGE.into(),
            state: if s.last_error.is_some() { TaskState::Failing } else { TaskState::Running },
            activations: s.activations,
            last_activation_at: None,
            last_error: s.last_error,
        }
    });
    Ok((ingress, task, edge))
}

/// The ingress on `addrs` (its applied table kept in the data directory) and the edge that
/// feeds it from `source`, activated at every change and every `poll`.
pub(crate) async fn ingress_and_edge(
    data: &DataDir,
    addrs: &[IpAddr],
    source: Arc<dyn vt_edge::Source>,
    node: &Hostname,
    poll: Duration,
) -> Result<(vt_ingress::Ingress, JoinHandle<()>, Arc<vt_edge::Edge>), ServerError> {
    let config = vt_ingress::IngressConfig {
        bind_addrs: addrs.to_vec(),
        state_path: Some(data.ingress_table()),
        ..Default::default()
    };
    let ingress = vt_ingress::Ingress::start(config).await.map_err(|e| ServerError::Ingress(e.to_string()))?;
    let edge = vt_edge::Edge::new(source, ingress.clone(), node.to_string());
    let task = tokio::spawn(edge.clone().run(poll, std::future::pending()));
    Ok((ingress, task, edge))
}

/// The node agent, in this process, with its own node token: it registers this
/// host as node `node`, boots the instances placed on it and writes their logs
/// in the data directory, where the API reads them. Without a guest kernel it
/// is not started, and says why.
/// Stop the agent's VMs, through their guests within `timeout`, then killed: how many ran and
/// how many were killed.
async fn stop_vms(agent: &vt_agent::Agent, mut task: JoinHandle<()>, timeout: Duration) -> (usize, usize) {
    let vms = agent.running_vms();
    agent.stop_vms(timeout);
    // The agent kills what is left at the timeout; this is the backstop if it cannot.
    let backstop = timeout + Duration::from_secs(1);
    if tokio::time::timeout(backstop, &mut task).await.is_err() {
        let killed = agent.running_vms();
        task.abort();
        agent.kill_vms().await;
        (vms, killed)
    } else {
        (vms, agent.vms_killed_at_stop())
    }
}

/// The node agent's settings for this server's node: its control plane at `url` with `token`,
/// the node's network, disk budget and backup target.
fn agent_config(
    server: &ServerConfig,
    data: &DataDir,
    url: &str,
    token: String,
    node: &Hostname,
) -> vt_agent::AgentConfig {
    let mut config = vt_agent::AgentConfig::new(url, Some(token), node.clone(), data.agent());
    config.network = server.node_network.clone();
    config.disk_budget = Some(disk_budget(server, data));
    config.backup = server.backup.clone();
    config
}

async fn start_agent(
    cp: &Arc<ControlPlane>,
    data: &DataDir,
    addr: SocketAddr,
    node: &Hostname,
    server: &ServerConfig,
    notices: &mut Vec<Notice>,
) -> Result<Option<(Arc<vt_agent::Agent>, JoinHandle<()>)>, ServerError> {
    let token = tokens::local_node_token(cp, data, node).await?;
    // This node's instances are served by the agent of this process, not through a channel.
    if let Ok(Ok(vt_control_plane::authz::Caller::Node { node, .. })) =
        vt_control_plane::auth::authenticate(cp.store.as_ref(), &token, chrono::Utc::now()).await
    {
        cp.dispatch.serve_locally(node);
    }
    let mut config = agent_config(server, data, &format!("http://{addr}"), token, node);
    if let Some(mesh) = &server.mesh {
        // A single host that meshes (`--mesh`): its key is made like a joined node's.
        let key = join::WireguardKey::load_or_create(&data.wireguard_key())?;
        config.wireguard_public_key = Some(key.public());
        // No control plane elsewhere to look toward: the default route's address.
        config.mesh = Some(mesh.agent_config(data, "192.0.2.1:9")?);
    }
    match vt_agent::Agent::new(config) {
        Ok(agent) => {
            notices
                .push(Notice::Info(format!("node agent running as node `{node}` ({} microVMs)", agent.runtime_name())));
            if let Some(why) = agent.network_refusal() {
                notices.push(Notice::Warning(format!("instances will not start on this node: {why}")));
            }
            let status = agent.clone();
            cp.tasks.register("agent", move || {
                let mut s = status.status();
                // A mesh that cannot be configured is the agent's failure too.
                s.last_error = s.last_error.or_else(|| status.mesh_error().map(|e| format!("mesh: {e}")));
                BackgroundTask {
                    name: "agent".into(),
                    description: AGENT.into(),
                    state: if s.last_error.is_some() { TaskState::Failing } else { TaskState::Running },
                    activations: s.activations,
                    last_activation_at: s.last_activation_at,
                    last_error: s.last_error,
                }
            });
            let task = tokio::spawn(agent.clone().run());
            Ok(Some((agent, task)))
        }
        // Asked to mesh and cannot: the operator hears it now, not from a log.
        Err(e) if server.mesh.is_some() => Err(ServerError::Config(format!("the node agent cannot start: {e}"))),
        Err(e) => {
            let why = format!("the node agent is not running ({e}); instances placed on this host will not start");
            notices.push(Notice::Warning(why.clone()));
            cp.tasks.register("agent", move || tasks::off("agent", AGENT, &why));
            Ok(None)
        }
    }
}
