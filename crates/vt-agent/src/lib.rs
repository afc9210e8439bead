//! The node agent: registers its node, follows the instances the control plane
//! placed on it, boots them as microVMs (vt-runtime) and reports every
//! transition back. See `docs/agent.md`.
//!
//! * State on disk, in the directories [`AgentDirs`] names: a record per instance
//!   (`<instances>/<id>.json`, [`state::InstanceRecord`]), written atomically at
//!   each transition. A restarted agent adopts a VM whose process is still alive
//!   (never starts a second one) and finishes half-done transitions (a record
//!   stuck in `preparing`/`booting` without a live VM is booted again).
//! * Logs: `<logs>/<id>.log` (+ `.log.1`), see [`logs`].
//! * The agent acts with a node token bound to its node: it reads only the
//!   instances placed on it, with the releases they run (`GET
//!   /v1/nodes/{node}/instances`), and pulls only their images.
//! * [`Agent::reconcile`] takes no input but state (the control plane's view of
//!   this node's instances, the records on disk, the supervisors in this process)
//!   and is idempotent: running it twice in a row does nothing the second time.
//! * A server that stops with its agent calls [`Agent::stop_following`] (no more
//!   requests, no more reports) and, once its API has drained, [`Agent::stop_vms`]:
//!   each VM is stopped through its guest (SIGTERM to the entrypoint, then power
//!   off) within the time given, and killed past it; records keep their phase, so
//!   the next start boots the instances again.

use std::collections::HashMap;
use std::path::PathBuf;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch, OnceCell};
use tokio::task::JoinSet;
use vt_api::{
    Heartbeat, Instance, NodeInstances, RegisterNode, Release, ReportInstanceStatus, ReportSnapshot, Snapshot,
    SnapshotStatus, Volume,
};
use vt_client::Client;
use vt_events::{Capacity, DesiredState, Health};
use vt_image::{Digest, ImageStore, RegistrySource, StoreOptions};
use vt_runtime::cgroup::{Cgroup, CgroupRoot};
use vt_runtime::firecracker::{FirecrackerConfig, FirecrackerRuntime};
use vt_runtime::net::NetworkSpec;
use vt_runtime::qemu::{QemuConfig, QemuRuntime};
use vt_runtime::{Control, ExitStatus, InstanceSpec, Launch, Runtime, RuntimeKind, Secret, State, VmEvent};

pub mod channel;
pub mod disk;
pub mod health;
pub mod logs;
pub mod mesh;
pub mod network;
pub mod state;
pub mod volumes;

pub use network::NetworkConfig;

use state::{InstanceRecord, Phase, StateDir};

/// The directories the agent keeps its state in (`vt server` puts them under
/// `<data-dir>/agent/`; its `DataDir` names them).
#[derive(Debug, Clone)]
pub struct AgentDirs {
    /// One record per instance this node ran: `<id>.json`.
    pub instances: PathBuf,
    /// Per-VM work directories (scratch disk, sockets): `<id>/`.
    pub vms: PathBuf,
    /// Instance logs: `<id>.log` and `<id>.log.1`.
    pub logs: PathBuf,
    /// The image cache and the root disks.
    pub images: PathBuf,
    /// Volume disks: `<volume id>.ext4` ([`volumes`]).
    pub volumes: PathBuf,
}

/// How the agent is set up.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The control plane's root URL (`http://127.0.0.1:7411`).
    pub server: String,
    /// Other URLs of the same control plane (control planes on one database), tried in order
    /// when the one in use cannot be connected to (`vt_client::Client::with_fallbacks`).
    pub fallback_servers: Vec<String>,
    /// A `node` token bound to this node (an admin token works too).
    pub token: Option<String>,
    /// The node's name (unique in the cluster; the name its token was issued for).
    pub node_name: vt_api::Hostname,
    /// Where the agent keeps its state.
    pub dirs: AgentDirs,
    /// The backend; `None`: from `VT_RUNTIME` (`qemu`, the default, or `firecracker`).
    pub runtime: Option<RuntimeKind>,
    /// The qemu backend's settings: kernel, initramfs, accelerator.
    pub qemu: QemuConfig,
    /// The Firecracker backend's settings (used when the backend is Firecracker).
    pub firecracker: FirecrackerConfig,
    /// The agent follows its node's instances by cursor (a change is seen at once); when
    /// nothing changes it reconciles this often anyway (re-reports, retries).
    pub resync_interval: Duration,
    pub heartbeat_interval: Duration,
    /// Memory kept for the host, subtracted from MemTotal.
    pub reserve_memory_mib: u32,
    /// Stop: SIGTERM to the entrypoint, power off after this long, then kill.
    pub stop_grace: Duration,
    /// A running instance asked to stop keeps serving this long first: the ingress stops
    /// sending it new connections (it is no longer ready) and requests in flight finish.
    pub drain: Duration,
    /// Rotate an instance's log file past this size (two files are kept).
    pub log_max_bytes: u64,
    /// Writable scratch disk per instance.
    pub scratch_size: u64,
    /// How often the image cache is collected: root disks and blobs of images no instance
    /// of the node may still boot or resume from go, unless written or used less than
    /// `image_gc_min_age` ago (a day: a rollback, or a workspace started again, within a day
    /// finds its image on the node).
    pub image_gc_every: Duration,
    pub image_gc_min_age: Duration,
    /// The guest network: the nftables table, egress, allow and deny lists, the resolver's upstream.
    pub network: NetworkConfig,
    /// The node's disk budget: unpacked images, root disks and scratch disks are checked
    /// against it before they are written. `None`: unchecked.
    pub disk_budget: Option<vt_disk::DiskBudget>,
    /// Where volume backups go (restic), if anywhere: backups asked for are taken and sent
    /// there; volumes restored from a backup are read from there.
    pub backup: Option<vt_backup::Target>,
    /// The labels the node registers with (an enrolled node's, from its enrollment token).
    pub labels: std::collections::BTreeMap<String, String>,
    /// The node's WireGuard public key (base64), registered with the node.
    pub wireguard_public_key: Option<String>,
    /// The node's mesh: its interface is configured with the peers the control plane sends,
    /// and it registers where the other nodes reach it. `None`: no mesh (a single host).
    pub mesh: Option<mesh::MeshConfig>,
}

impl AgentConfig {
    /// Defaults: the backend from `VT_RUNTIME` (default qemu), the guest kernel from
    /// `VT_GUEST_DIR` (default `/var/cache/vt/guest`), qemu's accelerator from
    /// `VT_QEMU_ACCEL` (default auto: KVM where it runs our guests, else TCG), Firecracker from `FIRECRACKER_BIN` (default `PATH`),
    /// a 10 s resync, 5 s heartbeats.
    pub fn new(server: &str, token: Option<String>, node_name: vt_api::Hostname, dirs: AgentDirs) -> Self {
        let guest_dir = vt_runtime::qemu::default_guest_dir();
        let mut qemu = QemuConfig::from_guest_dir(&guest_dir);
        if let Some(a) = std::env::var("VT_QEMU_ACCEL").ok().and_then(|a| a.parse().ok()) {
            qemu.accel = a;
        }
        AgentConfig {
            server: server.to_owned(),
            fallback_servers: vec![],
            token,
            node_name,
            dirs,
            runtime: None,
            qemu,
            firecracker: FirecrackerConfig::from_env(&guest_dir),
            resync_interval: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(5),
            reserve_memory_mib: 512,
            stop_grace: Duration::from_secs(10),
            drain: Duration::from_secs(2),
            log_max_bytes: 8 << 20,
            scratch_size: 256 << 20,
            image_gc_every: Duration::from_secs(3600),
            image_gc_min_age: Duration::from_secs(24 * 3600),
            network: NetworkConfig::default(),
            disk_budget: None,
            backup: None,
            labels: Default::default(),
            wireguard_public_key: None,
            mesh: None,
        }
    }
}

/// The first wait after a transient prepare failure; doubled each time up to [`PREPARE_RETRY_MAX`].
const PREPARE_RETRY_FIRST: Duration = Duration::from_secs(1);
const PREPARE_RETRY_MAX: Duration = Duration::from_secs(30);

/// A suspend that fails for now (the VMM's QMP did not answer in time, the snapshot could not
/// be written) is tried this many times in all, [`SUSPEND_RETRY_FIRST`] apart, doubling; then
/// the instance is stopped instead, with why. Never a VM left paused, never one left running
/// that was meant to be suspended.
const SUSPEND_ATTEMPTS: u32 = 3;
const SUSPEND_RETRY_FIRST: Duration = Duration::from_secs(1);

/// What follows a suspend attempt that did not suspend the VM.
#[derive(Debug, Clone, PartialEq, Eq)]
enum SuspendFailed {
    /// Transient: try again after `after`; `reason` is reported meanwhile.
    Retry { after: Duration, reason: String },
    /// Stop the instance instead: the reason its end is reported with.
    Stop(String),
}

/// Decide after attempt number `attempt` (from 1) failed with `e`: a failure to save, or a VM
/// whose guest channel is not attached for now, is retried up to [`SUSPEND_ATTEMPTS`] in all;
/// a backend (or an adopted VM) that cannot save at all, or the last failure, stops it.
fn after_failed_suspend(attempt: u32, e: &vt_runtime::SuspendError) -> SuspendFailed {
    use vt_runtime::SuspendError as E;
    let why = match e {
        E::Failed(why) => why.clone(),
        other => other.to_string(),
    };
    match e {
        E::Failed(_) | E::NotRunning(_) if attempt < SUSPEND_ATTEMPTS => {
            let after = SUSPEND_RETRY_FIRST * 2u32.pow(attempt.saturating_sub(1).min(8));
            SuspendFailed::Retry {
                after,
                reason: format!(
                    "cannot suspend (attempt {attempt} of {SUSPEND_ATTEMPTS}): {why}; the VM runs on, retrying in {} s",
                    after.as_secs()
                ),
            }
        }
        E::Failed(_) | E::NotRunning(_) => SuspendFailed::Stop(format!(
            "stopped instead of suspended: the suspend failed {attempt} times, the last: {why}"
        )),
        E::Unsupported(_) | E::Lost(_) | E::Ended => {
            SuspendFailed::Stop(format!("stopped instead of suspended: {why}"))
        }
    }
}

/// Why preparing an instance (pull, root disk, secrets, launch) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum PrepareError {
    /// Nothing is wrong with the instance: the registry or the control plane is unreachable or
    /// failing for now (connection refused, a timeout, a 5xx), or the node's disk is short.
    /// Retried with backoff; the instance stays `preparing` with the reason.
    #[error("{0}")]
    Transient(String),
    /// The release, its image or its launch is wrong (a bad manifest or digest, a hostile
    /// layer, a missing secret): the instance fails with the reason.
    #[error("{0}")]
    Fatal(String),
}

impl From<String> for PrepareError {
    fn from(why: String) -> Self {
        PrepareError::Fatal(why)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("control plane: {0}")]
    Client(#[from] vt_client::Error),
    #[error("{0}")]
    Other(String),
}

/// The node's capacity from `/proc`: all CPUs, MemTotal minus `reserve_mib`.
pub fn node_capacity(reserve_mib: u32) -> Capacity {
    let cpus = std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1);
    let mem_kib: u64 = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines().find(|l| l.starts_with("MemTotal:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(1 << 20);
    let mem_mib = (mem_kib / 1024) as u32;
    Capacity { cpu_millis: cpus * 1000, memory_mib: mem_mib.saturating_sub(reserve_mib).max(64) }
}

/// A node's registration (`POST /v1/nodes`): its name, capacity and labels, its WireGuard key,
/// where the other nodes reach it (`mesh`, when it meshes), and whether it runs instances
/// (`false`: an edge-only node, which the agent's registration never is).
pub fn registration(
    name: &vt_api::Hostname,
    capacity: Capacity,
    labels: &std::collections::BTreeMap<String, String>,
    wireguard_public_key: Option<&str>,
    mesh: Option<&mesh::MeshConfig>,
    runs_instances: bool,
) -> RegisterNode {
    RegisterNode {
        name: name.clone(),
        capacity,
        allocatable: None,
        labels: labels.clone(),
        address: mesh.map(|m| m.address.to_string()),
        wireguard_public_key: wireguard_public_key.map(str::to_owned),
        wireguard_port: mesh.map(|m| m.listen_port),
        runs_instances,
    }
}

/// What a supervisor is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// The control plane wants the instance stopped: drain, stop, report the end.
    Requested,
    /// The server hosting this agent stops: stop the VM through its guest with this grace,
    /// report nothing, keep the record's phase (the next start boots the instance again).
    Shutdown(Duration),
    /// The control plane wants the instance suspended: save the VM to a snapshot in its work
    /// dir (once it runs), end its VMM, report `suspended`.
    Suspend,
    /// The control plane wants it running again after a [`Stop::Suspend`]: call off a suspend
    /// not done yet (asked for while it boots, or waiting for a retry). One already done stays
    /// done (the instance is then resumed).
    Resume,
}

/// How far a shutdown of the agent has got (see [`Agent::stop_following`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shutdown {
    Running,
    StopFollowing,
    /// Stop every VM within this long.
    StopVms(Duration),
}

/// How long a re-attached guest has to answer (QEMU reconnects every second).
const ATTACH_TIMEOUT: Duration = Duration::from_secs(30);

/// How [`Agent::watch`] watches a VM.
struct Watch {
    /// When the instance's supervisor started (timings are measured from it).
    t0: Instant,
    /// Its CPU request (the cgroup's weight).
    cpu_millis: u32,
    /// Re-attached after an agent restart, not booted by this process.
    attached: bool,
    /// Resumed from its snapshot (`Runtime::restore`), not booted.
    resumed: bool,
    /// Said first in the reason of its `running` report (why it was booted afresh).
    note: Option<String>,
    /// A suspend asked for before it ran: done once it runs.
    suspend: bool,
    /// Its memory, MiB: what its snapshot may take on the node's disk.
    memory_mib: u32,
}

/// Why an exec session could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// No VM of the instance runs under this agent.
    #[error("the instance has no running VM on this node")]
    NotRunning,
    /// The VM refused (not running yet, or ending).
    #[error("{0}")]
    Refused(String),
}

/// A supervisor running in this process for one instance.
struct Supervised {
    stop: mpsc::Sender<Stop>,
    stop_sent: bool,
    suspend_sent: bool,
    /// Opens exec sessions in its VM, once it has one.
    exec: Option<vt_runtime::exec::ExecHandle>,
}

pub struct Agent {
    cfg: AgentConfig,
    client: Client,
    states: StateDir,
    runtime: Arc<dyn Runtime>,
    images: OnceCell<Arc<ImageStore>>,
    node: OnceCell<String>,
    /// The node's /64 from the control plane (instances get their addresses from it).
    subnet: Mutex<Option<String>>,
    /// Whether instances get a tap: `Err(why not)` on a host where this process cannot
    /// create one (then instances run with loopback only and health checks cannot reach them).
    taps: Result<(), String>,
    /// The guest network (rules, leases, resolver), where instances get taps.
    network: Option<Arc<network::Network>>,
    /// Where VMs get their CPU weight (CPU is soft: a share, not a cap); `None` where no
    /// cgroup hierarchy is usable (then VMs share the CPU equally).
    cgroups: Option<CgroupRoot>,
    supervised: Mutex<HashMap<String, Supervised>>,
    /// Snapshots and backups being taken in this process.
    snapshotting: Mutex<std::collections::HashSet<String>>,
    /// When the image cache was last collected (or the agent made).
    images_collected: Mutex<Instant>,
    keys: vt_client::IdempotencyKeys,
    status: Mutex<AgentStatus>,
    /// Set by [`Agent::stop_following`]: the control plane is going away with this process,
    /// so nothing is reported any more.
    shutting_down: AtomicBool,
    shutdown: watch::Sender<Shutdown>,
    /// VMs [`Agent::stop_vms`] had to kill at its timeout.
    killed_at_stop: AtomicU64,
    /// The node's WireGuard mesh, when it has one (`AgentConfig::mesh`).
    mesh: Option<Arc<mesh::NodeMesh>>,
}

/// What the agent's loop did last: its published status.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentStatus {
    /// The node's id, once registered.
    pub node_id: Option<String>,
    /// Reconciliations run (one per change of the node's instances, and per resync).
    pub activations: u64,
    pub last_activation_at: Option<DateTime<Utc>>,
    /// The last failure (registration, following, reconciling); `None` once one succeeds.
    pub last_error: Option<String>,
    /// Supervisors running in this process.
    pub supervised: usize,
}

impl Agent {
    pub fn new(cfg: AgentConfig) -> Result<Arc<Self>, AgentError> {
        let states = StateDir::open(cfg.dirs.instances.clone())?;
        std::fs::create_dir_all(&cfg.dirs.logs)?;
        let runtime = new_runtime(&cfg).map_err(|e| AgentError::Other(e.to_string()))?;
        tracing::debug!(runtime = runtime.name(), "microVM backend");
        let client = Client::new(&cfg.server, cfg.token.clone())
            .with_fallbacks(&cfg.fallback_servers)
            .with_retries(4, Duration::from_millis(250));
        let taps = vt_runtime::net::taps_available();
        if let Err(why) = &taps {
            tracing::warn!(%why, "instances on this node get no network");
        }
        let cgroups = if runtime.places_vmms_in_cgroups() {
            tracing::info!("the runtime places each VMM in its own cgroup (the jailer's), with its CPU weight");
            None
        } else {
            CgroupRoot::detect().map_err(|e| tracing::warn!(error = %e, "VMs run without a CPU weight")).ok()
        };
        let network = taps.is_ok().then(|| network::Network::new(cfg.network.clone()));
        Self::assemble(cfg, client, states, runtime, taps, network, cgroups)
    }

    /// [`Agent::new`] with the network given (tests: a fake firewall behind the same trait).
    pub fn with_network(cfg: AgentConfig, network: network::Network) -> Result<Arc<Self>, AgentError> {
        let states = StateDir::open(cfg.dirs.instances.clone())?;
        std::fs::create_dir_all(&cfg.dirs.logs)?;
        let runtime = new_runtime(&cfg).map_err(|e| AgentError::Other(e.to_string()))?;
        let client = Client::new(&cfg.server, cfg.token.clone())
            .with_fallbacks(&cfg.fallback_servers)
            .with_retries(4, Duration::from_millis(250));
        let taps = vt_runtime::net::taps_available();
        let cgroups = CgroupRoot::detect().ok();
        Self::assemble(cfg, client, states, runtime, taps, Some(network), cgroups)
    }

    fn assemble(
        cfg: AgentConfig,
        client: Client,
        states: StateDir,
        runtime: Arc<dyn Runtime>,
        taps: Result<(), String>,
        mut network: Option<network::Network>,
        cgroups: Option<CgroupRoot>,
    ) -> Result<Arc<Self>, AgentError> {
        // The mesh's tools are checked now: a node meant to mesh that cannot does not start.
        let mesh = match &cfg.mesh {
            None => None,
            Some(m) => {
                let mesh = mesh::NodeMesh::with_tools(m).map_err(AgentError::Other)?;
                if let Some(network) = &mut network {
                    network.set_mesh_interface(&m.interface);
                }
                Some(mesh)
            }
        };
        let keys = vt_client::IdempotencyKeys::new(format!("agent-{}", cfg.node_name));
        Ok(Arc::new(Agent {
            cfg,
            client,
            states,
            runtime,
            images: OnceCell::new(),
            node: OnceCell::new(),
            subnet: Mutex::new(None),
            taps,
            network: network.map(Arc::new),
            cgroups,
            supervised: Mutex::new(HashMap::new()),
            snapshotting: Mutex::new(std::collections::HashSet::new()),
            images_collected: Mutex::new(Instant::now()),
            keys,
            status: Mutex::new(AgentStatus::default()),
            shutting_down: AtomicBool::new(false),
            shutdown: watch::Sender::new(Shutdown::Running),
            killed_at_stop: AtomicU64::new(0),
            mesh,
        }))
    }

    pub fn config(&self) -> &AgentConfig {
        &self.cfg
    }

    /// The microVM backend's name (`qemu`, `firecracker`).
    pub fn runtime_name(&self) -> &'static str {
        self.runtime.name()
    }

    /// The loop's status now.
    pub fn status(&self) -> AgentStatus {
        let mut s = self.status.lock().unwrap_or_else(|p| p.into_inner()).clone();
        s.node_id = self.node.get().cloned();
        s.supervised = self.supervised.lock().unwrap_or_else(|p| p.into_inner()).len();
        s
    }

    /// One activation of the loop ended, with this error if it failed.
    fn record_activation(&self, error: Option<String>) {
        let mut s = self.status.lock().unwrap_or_else(|p| p.into_inner());
        s.activations += 1;
        s.last_activation_at = Some(Utc::now());
        s.last_error = error;
    }

    /// The first step of a shutdown of the server hosting this agent: stop following (no
    /// more requests to the control plane, which is going away) and report nothing from now
    /// on. The VMs keep running until [`Agent::stop_vms`].
    pub fn stop_following(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        self.shutdown.send_if_modified(|s| {
            let first = *s == Shutdown::Running;
            if first {
                *s = Shutdown::StopFollowing;
            }
            first
        });
    }

    /// Stop every VM this agent runs within `within`: through its guest first (SIGTERM to the
    /// entrypoint, power off after three quarters of `within`), killed when the time is up;
    /// their taps and cgroups are removed and their records keep their phase, so the next
    /// start boots the instances again. [`Agent::run`] returns once they are all gone.
    pub fn stop_vms(&self, within: Duration) {
        self.shutting_down.store(true, Ordering::SeqCst);
        self.shutdown.send_replace(Shutdown::StopVms(within));
    }

    /// VMs this agent's supervisors still run (or are booting).
    pub fn running_vms(&self) -> usize {
        self.supervised.lock().unwrap_or_else(|p| p.into_inner()).values().filter(|s| !s.stop.is_closed()).count()
    }

    /// VMs [`Agent::stop_vms`] had to kill because they were still running at its timeout.
    pub fn vms_killed_at_stop(&self) -> usize {
        self.killed_at_stop.load(Ordering::SeqCst) as usize
    }

    fn shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Kill the VMs this agent's supervisors still run, remove their taps and cgroups (for a
    /// shutdown of the process hosting the agent that cannot wait: dropping the supervisors does
    /// both too, but asynchronously, and a process that exits right away would orphan them).
    /// Their records stay; a new agent boots them again.
    pub async fn kill_vms(&self) {
        let ids: Vec<String> = self
            .supervised
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, s)| !s.stop.is_closed())
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            if let Some(rec) = self.states.load(&id) {
                if let Some(pid) = live_vm(&rec) {
                    state::signal(pid, "KILL").await;
                }
                // The supervisors' own cleanup may not get to run before the process exits.
                self.release_host_side(&rec).await;
                if let Some(net) = &self.network {
                    net.forget(&id);
                }
            }
        }
        // Every VM gone and its tap with it: nothing of vt's stays in the ruleset.
        if let Some(net) = &self.network {
            net.shutdown().await;
        }
    }

    /// Why instances cannot start on this node (no nftables, no forwarding), if they cannot.
    pub fn network_refusal(&self) -> Option<String> {
        self.network.as_ref().and_then(|n| n.refusal())
    }

    /// The records on disk (one per instance this node ever ran).
    pub fn records(&self) -> Vec<InstanceRecord> {
        self.states.list()
    }

    fn key(&self, what: &str) -> String {
        self.keys.next(what)
    }

    async fn images(&self) -> Result<Arc<ImageStore>, String> {
        let dir = self.cfg.dirs.images.clone();
        let opts = StoreOptions { budget: self.cfg.disk_budget.clone(), ..Default::default() };
        self.images
            .get_or_try_init(|| async move {
                tokio::task::spawn_blocking(move || ImageStore::open(&dir, opts).map(Arc::new))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| format!("cannot open the image cache: {e}"))
            })
            .await
            .cloned()
    }

    /// Register the node (repeatable) and remember its id.
    pub async fn register(&self) -> Result<String, AgentError> {
        let req = registration(
            &self.cfg.node_name,
            node_capacity(self.cfg.reserve_memory_mib),
            &self.cfg.labels,
            self.cfg.wireguard_public_key.as_deref(),
            self.cfg.mesh.as_ref(),
            true,
        );
        let node = self.client.node_register(&req, &self.key("register")).await?;
        let id = node.value.id.to_string();
        let _ = self.node.set(id.clone());
        *self.subnet.lock().unwrap_or_else(|p| p.into_inner()) = node.value.subnet.clone();
        if let Some(mesh) = &self.mesh {
            mesh.set_subnet(node.value.subnet.as_deref());
        }
        if let Some(net) = &self.network {
            net.set_node(node.value.subnet.as_deref(), node.value.ipv4_range.as_deref()).map_err(AgentError::Other)?;
        }
        Ok(id)
    }

    /// Run until [`Agent::stop_vms`] is done, or until the future is dropped: register
    /// (retrying), heartbeat, and reconcile at every change of the node's instances
    /// (followed by cursor) and every `resync_interval`, until [`Agent::stop_following`];
    /// then, on [`Agent::stop_vms`], stop the VMs and return. Dropping it stops the
    /// supervisors of this process, which kills their VMs; a new agent on the same data dir
    /// boots them again.
    pub async fn run(self: Arc<Self>) {
        self.sweep_cgroups().await;
        let mut tasks = JoinSet::new();
        let mut shutdown = self.shutdown.subscribe();
        let stopping = |s: &Shutdown| *s != Shutdown::Running;
        tokio::select! {
            () = self.clone().follow_instances(&mut tasks) => {}
            _ = shutdown.wait_for(stopping) => {}
        }
        let within = match shutdown.wait_for(|s| matches!(s, Shutdown::StopVms(_))).await.map(|s| *s) {
            Ok(Shutdown::StopVms(within)) => within,
            _ => Duration::ZERO,
        };
        self.stop_supervisors(&mut tasks, within).await;
    }

    /// Register, heartbeat and follow, forever (until [`Agent::run`] drops it).
    async fn follow_instances(self: Arc<Self>, tasks: &mut JoinSet<()>) {
        loop {
            match self.register().await {
                Ok(id) => {
                    tracing::debug!(node = %id, name = %self.cfg.node_name, "node registered");
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot register the node; retrying");
                    self.record_activation(Some(format!("cannot register the node: {e}")));
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        let hb = self.clone();
        let heartbeats = tokio::spawn(async move {
            loop {
                tokio::time::sleep(hb.cfg.heartbeat_interval).await;
                let node = hb.cfg.node_name.clone();
                let beat = Heartbeat { disk: hb.disk_report().await, ..Default::default() };
                if let Err(e) = hb.client.node_heartbeat(&node, &beat, &hb.key("hb")).await {
                    tracing::warn!(error = %e, "heartbeat failed");
                }
            }
        });
        // Heartbeats end with this future, however it ends; so do the mesh's passes.
        let _heartbeats = AbortOnDrop(heartbeats);
        let _mesh = self.mesh.clone().map(|m| AbortOnDrop(tokio::spawn(m.run(mesh::CHECK_INTERVAL))));
        // Follow the node's instances by cursor: each answer carries the views' position,
        // the next request waits for them to move past it (or `resync_interval`).
        let mut cursor: Option<u64> = None;
        loop {
            let node = &self.cfg.node_name;
            let answer = match cursor {
                Some(seq) => self.client.node_instances_follow(node, seq, self.cfg.resync_interval).await,
                None => self.client.node_instances(node).await,
            };
            match answer {
                Ok(list) => {
                    cursor = Some(list.seq);
                    if let Some(mesh) = &self.mesh {
                        mesh.follow(&list.mesh);
                    }
                    let result = self.reconcile(list, tasks).await;
                    self.record_activation(result.as_ref().err().map(|e| e.to_string()));
                    match result {
                        // Something here needs another look before the views change.
                        Ok(true) => cursor = None,
                        Ok(false) => {}
                        Err(e) => tracing::warn!(error = %e, "reconcile failed; retrying"),
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read this node's instances; retrying");
                    self.record_activation(Some(format!("cannot read this node's instances: {e}")));
                    cursor = None;
                    tokio::time::sleep(self.cfg.resync_interval.min(Duration::from_secs(1))).await;
                }
            }
            while let Some(r) = tasks.try_join_next() {
                if let Err(e) = r {
                    tracing::warn!(error = %e, "a supervisor ended abnormally");
                }
            }
        }
    }

    /// Stop every supervised VM within `within` (see [`Agent::stop_vms`]); kill what is left.
    async fn stop_supervisors(&self, tasks: &mut JoinSet<()>, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        let grace = (within * 3 / 4).max(Duration::from_millis(100));
        for s in self.supervised.lock().unwrap_or_else(|p| p.into_inner()).values() {
            let _ = s.stop.try_send(Stop::Shutdown(grace));
        }
        while let Ok(Some(_)) = tokio::time::timeout_at(deadline, tasks.join_next()).await {}
        let left = self.running_vms();
        self.killed_at_stop.store(left as u64, Ordering::SeqCst);
        if left > 0 {
            tracing::warn!(
                vms = left,
                within_ms = within.as_millis() as u64,
                "VMs still running at the stop timeout; killing them"
            );
            self.kill_vms().await;
        }
        tasks.shutdown().await;
        // A supervisor aborted in its cleanup (its VM ended late in the stop) left its cgroup.
        self.sweep_cgroups().await;
        // Every supervisor has ended with its VM, or was aborted after its VM was killed: no VM
        // of this agent runs, so its rules go (and the resolver stops) whatever order the
        // supervisors released them in.
        if let Some(net) = &self.network {
            net.forget_all();
            net.shutdown().await;
        }
        // No instance runs here any more: the node leaves the mesh until it starts again.
        if let Some(mesh) = self.mesh.clone() {
            match tokio::task::spawn_blocking(move || mesh.remove()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot remove the mesh interface"),
                Err(e) => tracing::warn!(error = %e, "removing the mesh interface ended abnormally"),
            }
        }
    }

    /// The mesh's last error, when the node has a mesh and its last pass failed.
    pub fn mesh_error(&self) -> Option<String> {
        self.mesh.as_ref().and_then(|m| m.last_error())
    }

    /// One activation: compare what the control plane wants on this node (`list`) with
    /// what runs here and act on the difference. Supervisors are spawned on `tasks`.
    /// Returns whether another activation is due without waiting for a change (a VM left
    /// half-booted by a previous agent was ended; the next activation boots it again).
    pub async fn reconcile(self: &Arc<Self>, list: NodeInstances, tasks: &mut JoinSet<()>) -> Result<bool, AgentError> {
        let mut again = false;
        // The rules first: the peers may have changed, and on the first activation the
        // instances whose VMs survived a previous agent get theirs back before anything starts.
        if let Some(net) = &self.network {
            if let Err(e) = net.observe(&list, || self.survivors()).await {
                tracing::warn!(error = %e, "the guest network's rules are not up to date");
            }
        }
        let releases: HashMap<String, Release> = list.releases.into_iter().map(|r| (r.id.to_string(), r)).collect();
        // Disks of volumes this node no longer holds (deleted) go; the others stay.
        let held: std::collections::BTreeSet<String> = list.volumes.iter().map(|v| v.id.to_string()).collect();
        for name in volumes::remove_others(&self.cfg.dirs.volumes, &held) {
            tracing::info!(disk = %name, "removed the disk of a deleted volume");
        }
        let volumes: HashMap<String, Volume> = list.volumes.into_iter().map(|v| (v.id.to_string(), v)).collect();
        for v in volumes.values() {
            let Some(pending) = v.backups.pending.clone() else { continue };
            let id = pending.id.to_string();
            if !self.snapshotting.lock().unwrap_or_else(|p| p.into_inner()).insert(id.clone()) {
                continue;
            }
            let (me, v) = (self.clone(), v.clone());
            tasks.spawn(async move {
                me.take_backup(v, pending).await;
                me.snapshotting.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
            });
        }
        for snap in list.snapshots {
            let id = snap.id.to_string();
            if !self.snapshotting.lock().unwrap_or_else(|p| p.into_inner()).insert(id.clone()) {
                continue;
            }
            let volume = volumes.get(&snap.volume_id.to_string()).cloned();
            let me = self.clone();
            tasks.spawn(async move {
                me.take_snapshot(snap, volume).await;
                me.snapshotting.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
            });
        }
        if self.image_gc_due() {
            let placed = list.items.iter().filter_map(|i| {
                let r = releases.get(&i.release_id.to_string())?;
                Some((i.desired_state, i.status, r.image_digest.as_str()))
            });
            self.collect_images(images_in_use(placed, &self.states.list()));
        }
        for inst in list.items {
            let id = inst.id.to_string();
            {
                let mut sup = self.supervised.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(s) = sup.get_mut(&id) {
                    if s.stop.is_closed() {
                        sup.remove(&id);
                    } else {
                        if inst.desired_state == DesiredState::Stopped && !s.stop_sent {
                            s.stop_sent = s.stop.try_send(Stop::Requested).is_ok();
                        }
                        if inst.desired_state == DesiredState::Suspended && !s.suspend_sent && !s.stop_sent {
                            s.suspend_sent = s.stop.try_send(Stop::Suspend).is_ok();
                        }
                        // Desired running again (a quick 1 → 0 → 1): a suspend not done yet is called off.
                        if inst.desired_state == DesiredState::Running && s.suspend_sent && !s.stop_sent {
                            s.suspend_sent = s.stop.try_send(Stop::Resume).is_err();
                        }
                        continue;
                    }
                }
            }
            let rec = self.states.load(&id).map(|r| self.still_suspended(r));
            let mounts = || -> Vec<Option<Volume>> {
                inst.volumes.iter().map(|a| volumes.get(&a.volume_id.to_string()).cloned()).collect()
            };
            match rec {
                // Suspended here: resumed when desired running, its snapshot deleted when desired
                // stopped, never started otherwise (also after an agent restart).
                Some(mut rec) if rec.phase == Phase::Suspended => match inst.desired_state {
                    DesiredState::Suspended => {
                        if inst.status != vt_events::InstanceStatus::Suspended {
                            self.report(&id, Phase::Suspended, rec.reason.clone(), None).await;
                        }
                    }
                    DesiredState::Running => {
                        tracing::info!(instance = %id, "resuming from its snapshot");
                        let release = releases.get(&inst.release_id.to_string()).cloned();
                        let mounts = mounts();
                        self.spawn_resumed(tasks, inst, release, mounts, rec);
                    }
                    DesiredState::Stopped => {
                        let reason = match vt_runtime::snapshot::remove(&rec.work_dir) {
                            Ok(()) => "stopped while suspended; its snapshot is deleted".to_owned(),
                            Err(e) => format!("stopped while suspended; its snapshot could not be deleted: {e}"),
                        };
                        tracing::info!(instance = %id, %reason, "suspended instance stopped");
                        rec.phase = Phase::Stopped;
                        rec.reason = Some(reason);
                        self.states.save(&mut rec)?;
                        self.report(&id, Phase::Stopped, rec.reason.clone(), None).await;
                    }
                },
                Some(rec) if rec.phase.is_terminal() => {
                    // Finished here; make sure the control plane knows.
                    if inst.status != rec.phase.status() && !inst.status.is_terminal() {
                        self.report(&id, rec.phase, rec.reason.clone(), rec.exit_code).await;
                    }
                }
                Some(mut rec) if live_vm(&rec).is_some() && matches!(rec.phase, Phase::Running | Phase::Stopping) => {
                    rec.vm_pid = live_vm(&rec);
                    tracing::info!(instance = %id, pid = rec.vm_pid, "adopting a VM still running from a previous agent");
                    if rec.resumable && self.runtime.can_attach() {
                        self.spawn_attached(tasks, rec, inst.desired_state, inst.resources.memory_mib);
                    } else {
                        self.spawn_adopted(tasks, rec, inst.desired_state);
                    }
                }
                Some(rec) if live_vm(&rec).is_some() => {
                    // Killed mid-boot: the guest never got (or we cannot tell whether it got)
                    // its launch over a channel that is gone. End that VM; the next
                    // activation boots a new one. Never two VMs at once.
                    let pid = live_vm(&rec).unwrap_or(0);
                    tracing::info!(instance = %id, pid, phase = ?rec.phase, "ending a VM left half-booted by a previous agent");
                    again = true;
                    state::signal(pid, "KILL").await;
                    let deadline = Instant::now() + Duration::from_secs(5);
                    while state::vm_alive(pid, &state::path_str(&rec.work_dir)) && Instant::now() < deadline {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                _ if inst.status.is_terminal() => {}
                rec if inst.desired_state == DesiredState::Running => {
                    if let Some(r) = &rec {
                        tracing::info!(instance = %id, phase = ?r.phase, "finishing a half-done start: booting again");
                    }
                    let release = releases.get(&inst.release_id.to_string()).cloned();
                    let mounts = mounts();
                    self.spawn_supervisor(tasks, inst, release, mounts);
                }
                rec => {
                    // Desired stopped and nothing runs here.
                    let mut rec = rec
                        .unwrap_or_else(|| InstanceRecord::new(&id, &inst.release_id.to_string(), self.work_dir(&id)));
                    rec.phase = Phase::Stopped;
                    rec.vm_pid = None;
                    rec.reason = Some(match inst.desired_state {
                        DesiredState::Suspended => "nothing runs on this node to suspend: stopped".into(),
                        _ => "stopped before it was started on this node".into(),
                    });
                    self.states.save(&mut rec)?;
                    self.report(&id, Phase::Stopped, rec.reason.clone(), None).await;
                }
            }
        }
        Ok(again)
    }

    /// A record a previous agent left preparing or booting with no VM and its snapshot
    /// unclaimed: a resume interrupted before it restored anything, so the instance is still
    /// suspended (resumed, or its snapshot deleted, as the control plane wants), never booted
    /// afresh over its snapshot.
    fn still_suspended(&self, mut rec: InstanceRecord) -> InstanceRecord {
        if matches!(rec.phase, Phase::Preparing | Phase::Booting)
            && live_vm(&rec).is_none()
            && vt_runtime::snapshot::exists(&rec.work_dir)
        {
            tracing::info!(instance = %rec.id, "a resume was interrupted before it restored anything: still suspended");
            rec.phase = Phase::Suspended;
            rec.reason =
                Some("suspended (its resume was interrupted by an agent restart; its snapshot is kept)".into());
            self.record(&mut rec);
        }
        rec
    }

    /// The instances whose VMs are alive (a previous agent's), as members of the network.
    fn survivors(&self) -> Vec<(String, vt_firewall::Member)> {
        self.states
            .list()
            .into_iter()
            .filter(|r| !r.phase.is_terminal() && live_vm(r).is_some())
            .filter_map(|r| {
                let member = vt_firewall::Member {
                    tap: r.tap.clone()?,
                    ipv6: r.address.as_deref()?.parse().ok()?,
                    ipv4: r.ipv4.as_deref().and_then(|a| a.parse().ok()),
                    org: r.org.clone().unwrap_or_default(),
                    class: if r.isolated { vt_firewall::Class::Isolated } else { vt_firewall::Class::Private },
                };
                Some((r.id, member))
            })
            .collect()
    }

    fn work_dir(&self, id: &str) -> PathBuf {
        self.cfg.dirs.vms.join(id)
    }

    fn track(&self, id: &str) -> mpsc::Receiver<Stop> {
        // Room for a suspend, its calling off, a requested stop and a shutdown after them.
        let (tx, rx) = mpsc::channel(4);
        self.supervised
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_owned(), Supervised { stop: tx, stop_sent: false, suspend_sent: false, exec: None });
        rx
    }

    /// `volumes`: per volume the instance mounts (in its order), the volume as the control plane
    /// listed it on this node.
    fn spawn_supervisor(
        self: &Arc<Self>,
        tasks: &mut JoinSet<()>,
        inst: Instance,
        release: Option<Release>,
        volumes: Vec<Option<Volume>>,
    ) {
        let stop = self.track(&inst.id.to_string());
        let me = self.clone();
        tasks.spawn(async move { me.supervise(inst, release, volumes, stop, None).await });
    }

    /// Resume the instance suspended in `rec` (its snapshot in its work dir): prepared as for a
    /// start (root disk, launch, network, volumes), then restored; booted afresh when that fails.
    fn spawn_resumed(
        self: &Arc<Self>,
        tasks: &mut JoinSet<()>,
        inst: Instance,
        release: Option<Release>,
        volumes: Vec<Option<Volume>>,
        rec: InstanceRecord,
    ) {
        let stop = self.track(&inst.id.to_string());
        let me = self.clone();
        tasks.spawn(async move { me.supervise(inst, release, volumes, stop, Some(rec)).await });
    }

    /// A VM a previous agent booted, whose guest channel this agent re-attaches to: watched
    /// like one it booted (output, exit status, health, exec).
    fn spawn_attached(
        self: &Arc<Self>,
        tasks: &mut JoinSet<()>,
        rec: InstanceRecord,
        desired: DesiredState,
        memory_mib: u32,
    ) {
        let stop = self.track(&rec.id);
        let me = self.clone();
        tasks.spawn(async move {
            let mut rec = rec;
            let id = rec.id.clone();
            if desired == DesiredState::Stopped {
                me.request_stop(&id);
            }
            let mut log = match logs::LogWriter::open(&me.cfg.dirs.logs, &id, me.cfg.log_max_bytes) {
                Ok(l) => l,
                Err(e) => {
                    return me
                        .fail(&mut rec, format!("cannot open the log file in {}: {e}", me.cfg.dirs.logs.display()))
                        .await
                }
            };
            let spec = vt_runtime::AttachSpec {
                id: id.clone(),
                work_dir: rec.work_dir.clone(),
                pid: rec.vm_pid.unwrap_or(0),
                timeout: ATTACH_TIMEOUT,
            };
            let admitted = Admitted::new(me.network.clone(), &id, rec.tap.clone());
            let vm = match me.runtime.attach(spec).await {
                Ok(vm) => vm,
                Err(e) => {
                    let _ = log.close();
                    return me.fail(&mut rec, format!("cannot re-attach to the VM: {e}")).await;
                }
            };
            let _ = log.note("the node agent restarted; re-attaching to the running VM");
            let suspend = desired == DesiredState::Suspended;
            let watch = Watch {
                t0: Instant::now(),
                cpu_millis: 0,
                attached: true,
                resumed: false,
                note: None,
                suspend,
                memory_mib: memory_mib.max(64),
            };
            me.watch(vm, rec, log, stop, admitted, watch).await;
        });
    }

    /// Ask a supervisor to stop its instance (once).
    fn request_stop(&self, id: &str) {
        let mut sup = self.supervised.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = sup.get_mut(id) {
            if !s.stop_sent {
                s.stop_sent = s.stop.try_send(Stop::Requested).is_ok();
            }
        }
    }

    fn set_exec(&self, id: &str, handle: vt_runtime::exec::ExecHandle) {
        if let Some(s) = self.supervised.lock().unwrap_or_else(|p| p.into_inner()).get_mut(id) {
            s.exec = Some(handle);
        }
    }

    /// Open an exec session in `instance`'s VM (it must run on this node, supervised here).
    pub async fn exec(
        &self,
        instance: &str,
        req: vt_runtime::exec::ExecRequest,
    ) -> Result<vt_runtime::exec::ExecSession, ExecError> {
        let handle = self
            .supervised
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(instance)
            .filter(|s| !s.stop.is_closed())
            .and_then(|s| s.exec.clone())
            .ok_or(ExecError::NotRunning)?;
        handle.open(req).await.map_err(ExecError::Refused)
    }

    fn spawn_adopted(self: &Arc<Self>, tasks: &mut JoinSet<()>, rec: InstanceRecord, desired: DesiredState) {
        let mut stop = self.track(&rec.id);
        let me = self.clone();
        tasks.spawn(async move {
            let mut rec = rec;
            let pid = rec.vm_pid.unwrap_or(0);
            let needle = state::path_str(&rec.work_dir);
            // The guest channel does not survive the agent (QEMU does not reconnect), so an
            // adopted VM is watched through its process only.
            if rec.phase != Phase::Stopping {
                rec.phase = Phase::Running;
                rec.reason = Some("adopted after an agent restart; its output after the restart is not captured".into());
                me.record(&mut rec);
                me.report(&rec.id, Phase::Running, rec.reason.clone(), None).await;
            }
            // Meant to be suspended, and it cannot be saved (no guest channel): stopped instead.
            let cannot_save = "stopped instead of suspended: a VM adopted after an agent restart without its guest channel cannot be saved";
            let mut instead = (desired == DesiredState::Suspended).then_some(cannot_save);
            let mut stopping = desired == DesiredState::Stopped || instead.is_some();
            let mut deadline: Option<Instant> = None;
            // A stop for the server's shutdown: the VMM gets SIGTERM, nothing is reported.
            let mut shutdown: Option<Duration> = None;
            loop {
                if stopping && deadline.is_none() {
                    if shutdown.is_none() {
                        rec.phase = Phase::Stopping;
                        me.record(&mut rec);
                        me.report(&rec.id, Phase::Stopping, None, None).await;
                    }
                    state::signal(pid, "TERM").await;
                    deadline = Some(Instant::now() + shutdown.unwrap_or(me.cfg.stop_grace));
                }
                if deadline.is_some_and(|d| Instant::now() > d) {
                    state::signal(pid, "KILL").await;
                }
                if !state::vm_alive(pid, &needle) {
                    break;
                }
                tokio::select! {
                    r = stop.recv(), if shutdown.is_none() => match r {
                        Some(Stop::Requested) => stopping = true,
                        // Watched through its process only: it cannot be saved; stopped instead.
                        Some(Stop::Suspend) => {
                            tracing::warn!(instance = %rec.id, "cannot suspend a VM adopted without its guest channel; stopping it instead");
                            (stopping, instead) = (true, Some(cannot_save));
                        }
                        // Already stopping instead of suspending: that cannot be called off.
                        Some(Stop::Resume) => {}
                        Some(Stop::Shutdown(grace)) => {
                            // Sooner than a requested stop's grace, if one is under way.
                            let sooner = Instant::now() + grace;
                            deadline = deadline.map(|d| d.min(sooner));
                            (stopping, shutdown) = (true, Some(grace));
                        }
                        None => {}
                    },
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
            }
            rec.vm_pid = None;
            me.release_host_side(&rec).await;
            if let Some(net) = &me.network {
                net.release(&rec.id).await;
            }
            if shutdown.is_some() {
                // Stopped with the server: the record keeps its phase; the next start boots it again.
                me.record(&mut rec);
                return;
            }
            let (phase, reason) = if let Some(why) = instead {
                (Phase::Stopped, format!("{why} (its exit status is unknown)"))
            } else if stopping {
                (Phase::Stopped, "stopped on request (the VM was adopted after an agent restart; its exit status is unknown)".to_string())
            } else {
                (Phase::Failed, "the VM ended while the agent was not attached to it (after an agent restart); its exit status is unknown — see its console log".to_string())
            };
            rec.phase = phase;
            rec.reason = Some(reason);
            me.record(&mut rec);
            me.report(&rec.id, phase, rec.reason.clone(), None).await;
        });
    }

    /// Report a transition; failures are logged (the next reconcile re-reports terminal ones).
    async fn report(&self, id: &str, phase: Phase, reason: Option<String>, exit_code: Option<i32>) {
        let req =
            ReportInstanceStatus { status: phase.status(), reason, exit_code, address: None, health: None, boot: None };
        self.send_report(id, phase, req).await
    }

    /// Report `running` with the address, the health verdict and the boot timings.
    async fn report_running(&self, rec: &InstanceRecord, health: Health, reason: Option<String>) {
        let req = ReportInstanceStatus {
            status: Phase::Running.status(),
            reason,
            exit_code: None,
            address: rec.address.clone(),
            health: Some(health),
            boot: Some(rec.timings.to_report()),
        };
        self.send_report(&rec.id, Phase::Running, req).await
    }

    async fn send_report(&self, id: &str, phase: Phase, req: ReportInstanceStatus) {
        if self.shutting_down() {
            // The control plane goes away with this process; the next start reports again.
            tracing::debug!(instance = id, status = phase.status().as_str(), "not reported: the server is stopping");
            return;
        }
        match self.client.instance_report_status(id, &req, &self.key("status")).await {
            Ok(_) => {
                if let Some(mut rec) = self.states.load(id) {
                    if rec.phase == phase && rec.reported != Some(phase) {
                        rec.reported = Some(phase);
                        self.record(&mut rec);
                    }
                }
            }
            Err(e) => {
                tracing::warn!(instance = id, status = phase.status().as_str(), error = %e, "cannot report the instance status")
            }
        }
    }

    /// Remove what the host keeps for a VM that is gone (or being killed): its tap and its
    /// cgroup. For VMs this process's runtime did not end itself.
    async fn release_host_side(&self, rec: &InstanceRecord) {
        if let Some(tap) = &rec.tap {
            if let Err(e) = vt_runtime::net::delete_tap(tap).await {
                tracing::warn!(instance = %rec.id, error = %e, "tap not removed");
            }
        }
        if let Some(root) = &self.cgroups {
            remove_cgroup(&rec.id, Cgroup::of(root, &rec.id)).await;
        }
    }

    /// Remove the cgroups of this node's instances whose VM is gone: a supervisor aborted in
    /// its cleanup (a stop that ran out of time) or an agent that crashed leaves them behind.
    async fn sweep_cgroups(&self) {
        let Some(root) = &self.cgroups else { return };
        for rec in self.states.list() {
            let cg = Cgroup::of(root, &rec.id);
            if cg.path().exists() && live_vm(&rec).is_none() {
                tracing::info!(instance = %rec.id, "removing the cgroup of a VM that is gone");
                remove_cgroup(&rec.id, cg).await;
            }
        }
    }

    /// Put the VMM in the instance's cgroup, weighted by its CPU request.
    fn cgroup_for(&self, id: &str, pid: u32, cpu_millis: u32) -> Option<Cgroup> {
        let root = self.cgroups.as_ref()?;
        Cgroup::create(root, id, cpu_millis)
            .and_then(|cg| cg.attach(pid).map(|()| cg))
            .map_err(|e| tracing::warn!(instance = id, error = %e, "no CPU weight for this VM"))
            .ok()
    }

    /// Write the crash-recovery record; a failure is logged as an error (the record on disk
    /// is the previous one, so a restarted agent may redo or miss this step). Returns whether
    /// it was written. What must not happen without its record (booting a VM) checks instead.
    fn record(&self, rec: &mut InstanceRecord) -> bool {
        match self.states.save(rec) {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(instance = %rec.id, error = %e, "cannot write the instance record");
                false
            }
        }
    }

    /// Whether the snapshot of instance `id` fits the node's disk budget: all of its memory
    /// (`memory_mib`), which is what a guest that touched all of it saves. Else why not, with
    /// what the snapshots of the node's suspended instances hold.
    fn snapshot_fits(&self, id: &str, memory_mib: u32) -> Result<(), String> {
        let Some(budget) = &self.cfg.disk_budget else { return Ok(()) };
        let what = format!("the snapshot of instance {id} (up to its {memory_mib} MiB of memory)");
        budget.check(&what, u64::from(memory_mib) << 20).map_err(|e| format!("{e}{}", self.snapshots_held()))
    }

    /// `; the snapshots of N suspended instances hold X on this node`, when there are any: for
    /// messages about the node's disk (a suspended instance's snapshot stays until it is
    /// resumed or stopped).
    fn snapshots_held(&self) -> String {
        let (n, bytes) = self.snapshot_usage();
        if n == 0 {
            return String::new();
        }
        let s = if n == 1 { "" } else { "s" };
        format!(
            "; the snapshots of {n} suspended instance{s} hold {} on this node (stopping them frees it)",
            vt_disk::human(bytes)
        )
    }

    /// Whether the image cache is to be collected now (every `image_gc_every`); if so, the
    /// next collection is due an interval from now.
    fn image_gc_due(&self) -> bool {
        let mut last = self.images_collected.lock().unwrap_or_else(|p| p.into_inner());
        let due = last.elapsed() >= self.cfg.image_gc_every;
        if due {
            *last = Instant::now();
        }
        due
    }

    /// Remove the root disks and blobs of the image cache that no image in `keep` needs (but
    /// what was written or used less than `image_gc_min_age` ago), in the background.
    fn collect_images(self: &Arc<Self>, keep: Vec<Digest>) {
        let me = self.clone();
        tokio::spawn(async move {
            let images = match me.images().await {
                Ok(i) => i,
                Err(e) => return tracing::warn!(error = %e, "image cache not collected"),
            };
            let min_age = me.cfg.image_gc_min_age;
            match tokio::task::spawn_blocking(move || images.gc(&keep, min_age)).await {
                Ok(Ok(r)) if r.removed_disks.is_empty() && r.removed_blobs.is_empty() => {}
                Ok(Ok(r)) => tracing::info!(
                    root_disks = r.removed_disks.len(),
                    blobs = r.removed_blobs.len(),
                    "image cache collected: removed what no instance of this node uses"
                ),
                Ok(Err(e)) => tracing::warn!(error = %e, "image cache not collected"),
                Err(e) => tracing::warn!(error = %e, "the image cache's collection failed"),
            }
        });
    }

    /// The node's disk now, for a heartbeat (`None`, logged, when it cannot be read: the
    /// heartbeat goes without it, and the control plane keeps the last report).
    pub async fn disk_report(&self) -> Option<vt_api::DiskReport> {
        let dirs = self.cfg.dirs.clone();
        let budget = disk::report_budget(&dirs, self.cfg.disk_budget.as_ref(), self.cfg.node_name.as_str());
        match tokio::task::spawn_blocking(move || disk::measure(&dirs, &budget)).await {
            Ok(Ok(r)) => Some(r),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot measure the node's disk; the heartbeat goes without it");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "the disk measuring task failed");
                None
            }
        }
    }

    /// The suspended instances of this node (and those being resumed: their snapshots are
    /// not claimed yet) and the bytes their snapshots take.
    pub fn snapshot_usage(&self) -> (usize, u64) {
        self.states
            .list()
            .iter()
            .filter(|r| vt_runtime::snapshot::exists(&r.work_dir))
            .map(|r| vt_runtime::snapshot::disk_usage(&r.work_dir))
            .fold((0, 0), |(n, total), b| (n + 1, total + b))
    }

    /// Remove an instance's place in the node's ruleset (it has no VM, and will not have one).
    async fn release_network(&self, id: &str) {
        if let Some(net) = &self.network {
            net.release(id).await;
        }
    }

    async fn set_phase(&self, rec: &mut InstanceRecord, phase: Phase, reason: Option<String>) {
        rec.phase = phase;
        rec.reason = reason.clone();
        self.record(rec);
        self.report(&rec.id, phase, reason, rec.exit_code).await;
    }

    async fn fail(&self, rec: &mut InstanceRecord, reason: String) {
        tracing::warn!(instance = %rec.id, %reason, "instance failed");
        rec.vm_pid = None;
        self.set_phase(rec, Phase::Failed, Some(reason)).await;
    }

    /// Prepare, boot and watch one instance until it ends.
    async fn supervise(
        self: Arc<Self>,
        inst: Instance,
        release: Option<Release>,
        volumes: Vec<Option<Volume>>,
        mut stop: mpsc::Receiver<Stop>,
        suspended: Option<InstanceRecord>,
    ) {
        let id = inst.id.to_string();
        let work_dir = self.work_dir(&id);
        let resume = suspended.is_some();
        // A resume keeps what the VM's memory holds: its IPv4 address (asked for again).
        let mut rec = InstanceRecord::new(&id, &inst.release_id.to_string(), work_dir.clone());
        let kept_ipv4 = suspended.and_then(|s| s.ipv4);
        rec.ipv4 = kept_ipv4.clone();
        let t0 = Instant::now();
        let why = resume.then(|| "resuming from its snapshot".to_owned());
        self.set_phase(&mut rec, Phase::Preparing, why).await;
        let mut suspend = false;
        let mut log = match logs::LogWriter::open(&self.cfg.dirs.logs, &id, self.cfg.log_max_bytes) {
            Ok(l) => l,
            Err(e) => {
                return self
                    .fail(&mut rec, format!("cannot open the log file in {}: {e}", self.cfg.dirs.logs.display()))
                    .await
            }
        };
        // A transient failure (the registry or the control plane unreachable, the disk short)
        // is waited out: the instance stays `preparing` with the reason, and is not failed
        // (so it counts toward no crash loop). A fatal one fails it.
        let mut backoff = PREPARE_RETRY_FIRST;
        let spec = loop {
            let why = match self.prepare(&inst, release.clone(), &volumes, &mut rec, t0, resume).await {
                Ok(s) => break s,
                Err(PrepareError::Fatal(reason)) => {
                    self.release_network(&id).await;
                    let _ = log.note(&format!("failed: {reason}"));
                    let _ = log.close();
                    return self.fail(&mut rec, reason).await;
                }
                Err(PrepareError::Transient(why)) => why,
            };
            let reason = format!("waiting: {why}; retrying in {} s", backoff.as_secs());
            let _ = log.note(&reason);
            tracing::warn!(instance = %id, %why, retry_in_s = backoff.as_secs(), "preparing the instance failed for now; retrying");
            self.set_phase(&mut rec, Phase::Preparing, Some(reason)).await;
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                r = stop.recv() => match r {
                    Some(Stop::Requested) => {
                        self.release_network(&id).await;
                        let _ = log.close();
                        discard_snapshot(&work_dir);
                        return self.set_phase(&mut rec, Phase::Stopped, Some("stopped on request before it booted".into())).await;
                    }
                    // Suspended again before it resumed: nothing was restored, the snapshot stays.
                    Some(Stop::Suspend) if resume => {
                        self.release_network(&id).await;
                        return self.resume_cancelled(&mut rec, log).await;
                    }
                    // Suspended before it runs: done once it runs.
                    Some(Stop::Suspend) => suspend = true,
                    Some(Stop::Resume) => suspend = false,
                    // The server stops: the record stays `preparing`; the next start prepares it again.
                    Some(Stop::Shutdown(_)) | None => {
                        self.release_network(&id).await;
                        let _ = log.close();
                        return;
                    }
                }
            }
            backoff = (backoff * 2).min(PREPARE_RETRY_MAX);
        };
        // Its rules go after its tap, however this task ends (also when it is aborted).
        let mut admitted = Admitted::new(self.network.clone(), &id, spec.network.as_ref().map(|n| n.tap.clone()));
        // What arrived while preparing (the last suspend or its calling off counts): nothing was booted.
        while let Ok(s) = stop.try_recv() {
            match s {
                Stop::Requested => {
                    let _ = log.close();
                    admitted.release().await;
                    discard_snapshot(&work_dir);
                    rec.phase = Phase::Stopped;
                    return self
                        .set_phase(&mut rec, Phase::Stopped, Some("stopped on request before it booted".into()))
                        .await;
                }
                // The server stops: the record stays `preparing`; the next start prepares it again.
                Stop::Shutdown(_) => {
                    let _ = log.close();
                    admitted.release().await;
                    return;
                }
                Stop::Suspend => suspend = true,
                Stop::Resume => suspend = false,
            }
        }
        // Suspended again before it resumed: nothing was restored, the snapshot stays.
        if resume && suspend {
            admitted.release().await;
            return self.resume_cancelled(&mut rec, log).await;
        }
        // A resume: restore the snapshot; booted afresh (the snapshot deleted) when it cannot be.
        let mut restored = None;
        let mut note = None;
        if resume {
            let refused = if rec.ipv4 != kept_ipv4 {
                Err(format!(
                    "its IPv4 address {} was taken meanwhile (it got {})",
                    kept_ipv4.as_deref().unwrap_or("none"),
                    rec.ipv4.as_deref().unwrap_or("none")
                ))
            } else {
                self.runtime.restore(spec.clone()).await.map_err(|e| e.to_string())
            };
            match refused {
                Ok(vm) => {
                    let _ = log.note("resuming from its snapshot");
                    restored = Some(vm);
                }
                Err(why) => {
                    tracing::warn!(instance = %id, %why, "cannot resume from the snapshot; booting afresh");
                    let _ = log.note(&format!("cannot resume from its snapshot ({why}); booting afresh"));
                    note = Some(format!("booted afresh: cannot resume from its snapshot ({why})"));
                }
            }
        }
        let resumed = restored.is_some();
        let vm = match restored {
            Some(vm) => vm,
            None => {
                // A fresh boot never leaves a snapshot behind to be resumed later.
                discard_snapshot(&work_dir);
                match self.runtime.start(spec).await {
                    Ok(vm) => vm,
                    Err(e) => {
                        let _ = log.close();
                        admitted.release().await;
                        return self.fail(&mut rec, format!("cannot start the microVM: {e}")).await;
                    }
                }
            }
        };
        rec.resumable = self.runtime.can_attach();
        self.set_exec(&id, vm.exec_handle());
        let watch = Watch {
            t0,
            cpu_millis: inst.resources.cpu_millis,
            attached: false,
            resumed,
            note,
            suspend,
            memory_mib: inst.resources.memory_mib.max(64),
        };
        self.watch(vm, rec, log, stop, admitted, watch).await;
    }

    /// A resume asked to suspend again before it restored anything (a quick 1 → 0): the
    /// snapshot is left as it is, the instance is `suspended` again and nothing boots.
    async fn resume_cancelled(&self, rec: &mut InstanceRecord, mut log: logs::LogWriter) {
        let why = "suspended again before it resumed: its snapshot is kept; resumed when desired running again";
        tracing::info!(instance = %rec.id, "{why}");
        let _ = log.note(why);
        let _ = log.close();
        rec.vm_pid = None;
        self.set_phase(rec, Phase::Suspended, Some(why.to_owned())).await;
    }

    /// Watch a VM until it ends: its output into the log (acknowledged once written), its
    /// transitions reported, its health checked, stops passed on.
    async fn watch(
        &self,
        mut vm: vt_runtime::Vm,
        mut rec: InstanceRecord,
        mut log: logs::LogWriter,
        mut stop: mpsc::Receiver<Stop>,
        mut admitted: Admitted,
        watch: Watch,
    ) {
        let id = rec.id.clone();
        let t0 = watch.t0;
        let mut stop_sent = false;
        // Stopped because the server stops (not asked by the control plane): reported never.
        let mut shutdown = false;
        let mut final_state: Option<State> = None;
        // Health verdict changes from the check task; reported only while `running`.
        let (health_tx, mut health_rx) = mpsc::channel::<health::Change>(4);
        let mut checks: Option<tokio::task::JoinHandle<()>> = None;
        let mut cgroup: Option<Cgroup> = None;
        // A stop of a serving instance waits for its connections to drain.
        let mut drain_until: Option<tokio::time::Instant> = None;
        // A suspend asked for (done once the VM runs), and what it saved once done.
        let mut suspend = watch.suspend;
        let mut suspended: Option<vt_runtime::Snapshot> = None;
        // Suspend attempts so far, and when the next one is due after a transient failure.
        let mut suspend_attempts = 0u32;
        let mut suspend_retry_at: Option<tokio::time::Instant> = None;
        // Why it is stopped instead of suspended: said first in the reason of its end.
        let mut instead: Option<String> = None;
        // The health verdict last reported (a report made for another reason repeats it).
        let mut health_now = Health::Pending;
        loop {
            if suspend && rec.phase == Phase::Running && !stop_sent && suspended.is_none() {
                (suspend, suspend_retry_at) = (false, None);
                suspend_attempts += 1;
                // Its snapshot (up to all of its memory) must fit the node's disk budget.
                let attempt = match self.snapshot_fits(&id, watch.memory_mib) {
                    Err(why) => Err(SuspendFailed::Stop(format!("stopped instead of suspended: {why}"))),
                    Ok(()) => {
                        let _ = log.note("suspend requested: saving the VM to a snapshot");
                        vm.suspend().await.map_err(|e| after_failed_suspend(suspend_attempts, &e))
                    }
                };
                match attempt {
                    Ok(snap) => {
                        if let Some(c) = checks.take() {
                            c.abort();
                        }
                        let _ = log.note(&format!(
                            "suspended: {} MiB saved to {} in {} ms",
                            snap.bytes / (1024 * 1024),
                            snap.path.display(),
                            snap.took.as_millis()
                        ));
                        // What the node's disk holds for suspended instances, now one more.
                        let (held, held_bytes) = self.snapshot_usage();
                        let free = self.cfg.disk_budget.as_ref().and_then(|b| b.available().ok());
                        tracing::info!(
                            instance = %id,
                            bytes = snap.bytes,
                            suspended_instances = held,
                            snapshot_bytes = held_bytes,
                            budget_free_bytes = free,
                            "suspended to a snapshot on this node's disk"
                        );
                        suspended = Some(snap);
                    }
                    Err(SuspendFailed::Retry { after, reason }) => {
                        tracing::warn!(instance = %id, attempt = suspend_attempts, %reason, "cannot suspend the VM; retrying");
                        let _ = log.note(&reason);
                        self.report_running(&rec, health_now, Some(reason)).await;
                        suspend_retry_at = Some(tokio::time::Instant::now() + after);
                    }
                    Err(SuspendFailed::Stop(reason)) => {
                        tracing::warn!(instance = %id, attempt = suspend_attempts, %reason, "cannot suspend the VM; stopping it");
                        let _ = log.note(&reason);
                        (stop_sent, suspend_retry_at, drain_until) = (true, None, None);
                        instead = Some(reason);
                        vm.control(Control::Stop { grace: self.cfg.stop_grace }).await;
                    }
                }
            }
            let ev = tokio::select! {
                ev = vm.next_event() => ev,
                Some(change) = health_rx.recv() => {
                    if rec.phase == Phase::Running && suspended.is_none() {
                        if change.first_pass {
                            rec.timings.healthy_ms = Some(t0.elapsed().as_secs_f64() * 1000.0);
                            self.record(&mut rec);
                        }
                        let _ = log.note(&format!("health: {}{}", change.health.as_str(), change.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default()));
                        let reason = change.reason.or_else(|| Some(format!("boot: {}", rec.timings.summary())));
                        health_now = change.health;
                        self.report_running(&rec, change.health, reason).await;
                    }
                    continue;
                }
                // Record the VMM pid as soon as it exists (a restarted agent looks for it).
                _ = tokio::time::sleep(Duration::from_millis(20)), if rec.vm_pid.is_none() => {
                    if let Some(pid) = vm.vmm_pid() {
                        rec.vm_pid = Some(pid);
                        self.record(&mut rec);
                        cgroup = self.cgroup_for(&id, pid, watch.cpu_millis);
                    }
                    continue;
                }
                r = stop.recv(), if !shutdown => {
                    match r {
                        Some(Stop::Requested) if !stop_sent && suspended.is_none() => {
                            (stop_sent, suspend_retry_at) = (true, None);
                            if rec.phase == Phase::Running && !self.cfg.drain.is_zero() {
                                let _ = log.note(&format!("stop requested; draining for {:?}", self.cfg.drain));
                                drain_until = Some(tokio::time::Instant::now() + self.cfg.drain);
                            } else {
                                let _ = log.note("stop requested");
                                vm.control(Control::Stop { grace: self.cfg.stop_grace }).await;
                            }
                        }
                        Some(Stop::Suspend) if !stop_sent && suspended.is_none() => suspend = true,
                        // Desired running again before the suspend was done: it runs on.
                        Some(Stop::Resume) if suspend || suspend_retry_at.is_some() => {
                            (suspend, suspend_retry_at, suspend_attempts) = (false, None, 0);
                            let why = "the suspend is called off: desired running again";
                            let _ = log.note(why);
                            tracing::info!(instance = %id, "{why}");
                            if rec.phase == Phase::Running {
                                self.report_running(&rec, health_now, Some(why.to_owned())).await;
                            }
                        }
                        Some(Stop::Shutdown(grace)) => {
                            // The ingress and the API go away with the server: no drain.
                            (shutdown, stop_sent, drain_until) = (true, true, None);
                            let _ = log.note(&format!("the server is stopping; stopping within {grace:?}"));
                            vm.control(Control::Stop { grace }).await;
                        }
                        _ => {}
                    }
                    continue;
                }
                // A suspend that failed for now is tried again.
                _ = tokio::time::sleep_until(suspend_retry_at.unwrap_or_else(tokio::time::Instant::now)), if suspend_retry_at.is_some() => {
                    (suspend_retry_at, suspend) = (None, true);
                    continue;
                }
                _ = tokio::time::sleep_until(drain_until.unwrap_or_else(tokio::time::Instant::now)), if drain_until.is_some() => {
                    drain_until = None;
                    vm.control(Control::Stop { grace: self.cfg.stop_grace }).await;
                    continue;
                }
            };
            let Some(ev) = ev else { break };
            if rec.vm_pid.is_none() {
                if let Some(pid) = vm.vmm_pid() {
                    rec.vm_pid = Some(pid);
                    self.record(&mut rec);
                    cgroup = self.cgroup_for(&id, pid, watch.cpu_millis);
                }
            }
            match ev {
                VmEvent::Log { seq, at, stream, data } => match log.write_at(stream, &data, at) {
                    // Written: the guest may forget it.
                    Ok(()) => vm.ack(seq),
                    Err(e) => tracing::warn!(instance = %id, error = %e, "cannot write the instance log"),
                },
                VmEvent::LogLost { seq, bytes } => {
                    let _ = log.note(&format!(
                        "{bytes} bytes of output were lost while no node agent was attached (the guest keeps 8 MiB)"
                    ));
                    vm.ack(seq);
                }
                VmEvent::State(State::Booting) if !watch.attached => {
                    self.set_phase(&mut rec, Phase::Booting, None).await
                }
                VmEvent::State(State::Running) if watch.attached => {
                    // Re-attached: the boot timings are the first agent's; the checks start over.
                    let health = match (&rec.probe, rec.address.as_deref().and_then(|a| a.parse().ok())) {
                        (Some(probe), Some(ip)) => {
                            checks = Some(tokio::spawn(health_checks(probe.clone(), ip, health_tx.clone())));
                            Health::Pending
                        }
                        _ => Health::Passing,
                    };
                    let _ = log.note("re-attached; what the instance printed while no agent was attached follows");
                    rec.phase = Phase::Running;
                    rec.reason = Some("re-attached after a node agent restart".into());
                    self.record(&mut rec);
                    health_now = health;
                    self.report_running(&rec, health, rec.reason.clone()).await;
                }
                VmEvent::State(State::Running) => {
                    let t = vm.timings();
                    let ms = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1000.0);
                    rec.timings.vmm_spawned_ms = ms(t.vmm_spawned).or(rec.timings.vmm_spawned_ms);
                    rec.timings.kernel_to_init_ms = t.guest_init_started_us.map(|u| u as f64 / 1000.0);
                    rec.timings.init_to_entrypoint_ms = match (t.guest_init_started_us, t.guest_entrypoint_started_us) {
                        (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / 1000.0),
                        _ => None,
                    };
                    rec.timings.running_ms = Some(t0.elapsed().as_secs_f64() * 1000.0);
                    let health = match (&rec.probe, rec.address.as_deref().and_then(|a| a.parse().ok())) {
                        (None, _) => {
                            rec.timings.healthy_ms = rec.timings.running_ms;
                            Health::Passing
                        }
                        (Some(probe), Some(ip)) => {
                            checks = Some(tokio::spawn(health_checks(probe.clone(), ip, health_tx.clone())));
                            Health::Pending
                        }
                        (Some(probe), None) => {
                            let why = self.taps.clone().err().unwrap_or_else(|| "the node has no subnet yet".into());
                            let _ = log.note(&format!(
                                "health: cannot check {}: the instance has no network ({why})",
                                probe.describe()
                            ));
                            Health::Failing
                        }
                    };
                    rec.phase = Phase::Running;
                    rec.reason = Some(match (&watch.note, watch.resumed) {
                        (_, true) => format!(
                            "resumed from its snapshot, running after {:.0} ms",
                            rec.timings.running_ms.unwrap_or_default()
                        ),
                        (Some(note), false) => format!("{note}; boot: {}", rec.timings.summary()),
                        (None, false) => format!("boot: {}", rec.timings.summary()),
                    });
                    self.record(&mut rec);
                    let reason = if health == Health::Failing {
                        Some(
                            "health check failing: the instance has no network, so its check cannot reach it"
                                .to_string(),
                        )
                    } else {
                        rec.reason.clone()
                    };
                    health_now = health;
                    self.report_running(&rec, health, reason).await;
                }
                VmEvent::State(State::Stopping) => {
                    if let Some(c) = checks.take() {
                        c.abort();
                    }
                    if !shutdown {
                        self.set_phase(&mut rec, Phase::Stopping, None).await
                    }
                }
                VmEvent::State(s @ (State::Stopped { .. } | State::Failed { .. } | State::Suspended)) => {
                    final_state = Some(s)
                }
                VmEvent::State(_) => {}
            }
        }
        if let Some(c) = checks.take() {
            c.abort();
        }
        let outcome = vm.wait().await;
        if watch.attached {
            // Not this process's VM: its tap and cgroup are the previous agent's to remove.
            self.release_host_side(&rec).await;
        }
        // The runtime removed the tap as the VM ended: now its rules go.
        admitted.release().await;
        if let Some(cg) = cgroup {
            remove_cgroup(&id, cg).await;
        }
        let end = final_state.unwrap_or(outcome.state);
        rec.vm_pid = None;
        if shutdown {
            // Stopped with the server: the record keeps its phase (`running`), nothing is
            // reported, and the next start boots the instance again.
            let _ = log.note(&format!("stopped with the server ({end}); the next start boots it again"));
            let _ = log.close();
            self.record(&mut rec);
            return;
        }
        if let (State::Suspended, Some(snap)) = (&end, &suspended) {
            let reason = format!(
                "suspended: {} MiB saved to a snapshot on this node in {} ms; resumed when desired running again",
                snap.bytes / (1024 * 1024),
                snap.took.as_millis()
            );
            let _ = log.close();
            return self.set_phase(&mut rec, Phase::Suspended, Some(reason)).await;
        }
        let (phase, mut reason, code) = describe_end(&end, stop_sent, &id);
        if let Some(why) = instead {
            // Nothing of a failed suspend is ever resumed.
            discard_snapshot(&rec.work_dir);
            reason = format!("{why}; {reason}");
        }
        rec.exit_code = code;
        let _ = log.note(&format!("{}: {reason}", if phase == Phase::Stopped { "stopped" } else { "failed" }));
        let _ = log.close();
        self.set_phase(&mut rec, phase, Some(reason)).await;
    }

    /// Pull the image, build the root disk and the launch: everything before the VMM. A
    /// `resume` asks the disk budget only for what it makes (its scratch disk is kept).
    async fn prepare(
        &self,
        inst: &Instance,
        release: Option<Release>,
        volumes: &[Option<Volume>],
        rec: &mut InstanceRecord,
        t0: Instant,
        resume: bool,
    ) -> Result<InstanceSpec, PrepareError> {
        // The node's answer carries the releases of its instances; a node never reads an org's resources.
        let release = release
            .ok_or_else(|| format!("the control plane sent no release {} with the instance", inst.release_id))?;
        let manifest = vt_manifest::from_normalized_json(&release.manifest)
            .map_err(|e| format!("the release manifest does not parse: {e}"))?;
        let image = vt_image::ImageRef::parse(&release.image_ref)
            .map_err(|e| format!("the release's image {} does not parse: {e}", release.image_ref))?;
        if image.registry().is_some() {
            return Err(PrepareError::Fatal(format!("image {} is in another registry; this node pulls from vt's built-in registry only (push it with `vt image push`)", release.image_ref)));
        }
        let repo = image.repository().to_owned();
        let digest: Digest =
            release.image_digest.parse().map_err(|e| format!("bad image digest {}: {e}", release.image_digest))?;
        let images = self.images().await?;
        // The registry of the control plane in use (every control plane serves the same one).
        let base = self.client.base().to_owned();
        let token = self.cfg.token.clone();
        let repo2 = repo.clone();
        let disk = tokio::task::spawn_blocking(move || {
            let src = RegistrySource::new(&base, &repo2, token)?;
            images.ensure_rootdisk(&src, &digest)
        })
        .await
        .map_err(|e| format!("image pull task: {e}"))?
        .map_err(|e| {
            let mut why = format!("cannot pull image {}@{}: {e}", repo, release.image_digest);
            if matches!(e, vt_image::Error::NoSpace(_)) {
                why.push_str(&self.snapshots_held());
            }
            if e.is_transient() {
                PrepareError::Transient(why)
            } else {
                PrepareError::Fatal(why)
            }
        })?;
        rec.timings.root_disk_ms = Some(t0.elapsed().as_secs_f64() * 1000.0);
        rec.root_disk = Some(disk.path.clone());
        let identity = vt_workload::Identity {
            app: inst.app_id.to_string(),
            env: inst.env_id.to_string(),
            process: inst.process.clone(),
            instance_id: inst.id.to_string(),
            release_id: inst.release_id.to_string(),
        };
        let mut launch =
            vt_workload::launch(&disk.info.config.config, &manifest, &identity).map_err(|e| e.to_string())?;
        if let Some(version) = inst.secrets_version {
            self.add_secrets(inst, version, &mut launch).await?;
        }
        if let Some(process) = manifest.processes.get(&inst.process) {
            rec.probe = health::Probe::from_manifest(process)?;
        }
        let subnet = self.subnet.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut network = match (&self.taps, subnet) {
            (Ok(()), Some(subnet)) => {
                Some(NetworkSpec::for_instance(&inst.id.to_string(), &subnet).map_err(|e| format!("network: {e}"))?)
            }
            _ => None,
        };
        let isolated =
            manifest.processes.get(&inst.process).is_some_and(|p| p.network == vt_manifest::NetworkClass::Isolated);
        rec.org = Some(inst.org_id.to_string());
        rec.isolated = isolated;
        if let (Some(n), Some(net)) = (network.as_mut(), &self.network) {
            // Its rules exist before its tap does; a node that cannot isolate it refuses here.
            let class = if isolated { vt_firewall::Class::Isolated } else { vt_firewall::Class::Private };
            // What the node lacks (a subnet yet, nftables, forwarding) is the node's to fix: waited out.
            let admission = net
                .admit(
                    &inst.id.to_string(),
                    &n.tap,
                    n.address,
                    &inst.org_id.to_string(),
                    class,
                    rec.ipv4.as_deref().and_then(|a| a.parse().ok()),
                )
                .await
                .map_err(PrepareError::Transient)?;
            n.ipv4 = admission.ipv4;
            n.gateway6 = Some(admission.gateway6);
            n.dns = admission.dns;
            n.mtu = admission.mtu;
            rec.ipv4 = admission.ipv4.map(|v| v.address.to_string());
        }
        let disks = self.volume_disks(inst, &manifest, volumes).await?;
        rec.address = network.as_ref().map(|n| n.address.to_string());
        rec.tap = network.as_ref().map(|n| n.tap.clone());
        // No VM boots that a restarted agent could not find again.
        self.states.save(rec).map_err(|e| PrepareError::Transient(format!("cannot write the instance record: {e}")))?;
        let mut spec = InstanceSpec::new(&inst.id.to_string(), disk.path, rec.work_dir.clone(), launch);
        spec.memory_mib = inst.resources.memory_mib.max(64);
        spec.vcpus = inst.resources.cpu_millis.div_ceil(1000).max(1);
        spec.cpu_millis = inst.resources.cpu_millis;
        // A resume keeps the scratch disk its snapshot needs (were the restore refused, the
        // fresh boot would remake it in place of the old one, its snapshot deleted first).
        let scratch = disk::scratch_disk_needed(resume, &rec.work_dir, self.cfg.scratch_size);
        if let (Some(budget), true) = (&self.cfg.disk_budget, scratch > 0) {
            budget
                .check(&format!("the scratch disk of instance {}", inst.id), scratch)
                .map_err(|e| PrepareError::Transient(format!("{e}{}", self.snapshots_held())))?;
        }
        spec.scratch_size = self.cfg.scratch_size;
        spec.network = network;
        spec.volumes = disks;
        Ok(spec)
    }

    /// Back up a volume of this node: a paused copy of its disk (as for a snapshot), sent to the
    /// backup repository, then removed; report how it went. A failure is reported with its
    /// reason (an unreachable repository, a wrong password) and never touches the workload.
    async fn take_backup(&self, v: Volume, pending: vt_api::PendingBackup) {
        let t0 = Instant::now();
        let result = match &self.cfg.backup {
            None => Err(format!("node {} has no backup repository configured", self.cfg.node_name)),
            Some(target) => {
                let vmm = v.attached_to.and_then(|i| self.states.load(&i.to_string())).and_then(|r| live_vm(&r));
                let origin = vt_backup::Origin {
                    org: pending.org.clone(),
                    app: pending.app.clone(),
                    env: pending.env.clone(),
                    volume: v.name.clone(),
                    volume_id: v.id.to_string(),
                    size_gib: v.size_gib,
                    node: self.cfg.node_name.to_string(),
                };
                let restic = vt_backup::Restic::new(target.clone());
                volumes::backup(
                    &self.cfg.dirs.volumes,
                    self.cfg.disk_budget.as_ref(),
                    &v,
                    &pending.id,
                    vmm,
                    &restic,
                    &origin,
                )
                .await
            }
        };
        let took_ms = Some(t0.elapsed().as_millis() as u64);
        let req = match result {
            Ok((restic_id, s)) => {
                tracing::info!(volume = %v.id, backup = %restic_id, bytes_added = s.bytes_added, bytes_processed = s.bytes_processed, ?took_ms, "volume backed up");
                vt_api::ReportBackup {
                    backup_id: pending.id,
                    status: SnapshotStatus::Completed,
                    restic_id: Some(restic_id),
                    bytes_added: Some(s.bytes_added),
                    bytes_processed: Some(s.bytes_processed),
                    took_ms,
                    reason: None,
                }
            }
            Err(reason) => {
                tracing::warn!(volume = %v.id, %reason, "volume backup failed");
                vt_api::ReportBackup {
                    backup_id: pending.id,
                    status: SnapshotStatus::Failed,
                    restic_id: None,
                    bytes_added: None,
                    bytes_processed: None,
                    took_ms,
                    reason: Some(reason),
                }
            }
        };
        let node = self.cfg.node_name.to_string();
        if let Err(e) = self.client.backup_report(&node, &v.id.to_string(), &req, &self.key("backup")).await {
            tracing::warn!(volume = %v.id, error = %e, "the backup's report did not reach the control plane; backed up again on the next activation");
        }
    }

    /// Take a snapshot of a volume of this node (pausing the VM that has it for the copy) and
    /// report it; a failure is reported with its reason and never touches the workload.
    async fn take_snapshot(&self, snap: Snapshot, volume: Option<Volume>) {
        let req = match volume {
            None => ReportSnapshot {
                status: SnapshotStatus::Failed,
                bytes: None,
                took_ms: None,
                paused_ms: None,
                reason: Some(format!("volume {} is no longer on node {}", snap.volume_id, self.cfg.node_name)),
            },
            Some(v) => {
                let vmm = v.attached_to.and_then(|i| self.states.load(&i.to_string())).and_then(|r| live_vm(&r));
                match volumes::snapshot(&self.cfg.dirs.volumes, self.cfg.disk_budget.as_ref(), &v, &snap, vmm).await {
                    Ok(t) => {
                        tracing::info!(snapshot = %snap.id, volume = %v.id, bytes = t.bytes, took_ms = t.took_ms, paused_ms = t.paused_ms, "snapshot taken");
                        ReportSnapshot {
                            status: SnapshotStatus::Completed,
                            bytes: Some(t.bytes),
                            took_ms: Some(t.took_ms),
                            paused_ms: Some(t.paused_ms),
                            reason: None,
                        }
                    }
                    Err(e) => {
                        tracing::warn!(snapshot = %snap.id, error = %e, "snapshot failed");
                        ReportSnapshot {
                            status: SnapshotStatus::Failed,
                            bytes: None,
                            took_ms: None,
                            paused_ms: None,
                            reason: Some(e.to_string()),
                        }
                    }
                }
            }
        };
        let node = self.cfg.node_name.to_string();
        if let Err(e) = self.client.snapshot_report(&node, &snap.id.to_string(), &req, &self.key("snapshot")).await {
            tracing::warn!(snapshot = %snap.id, error = %e, "the snapshot's report did not reach the control plane; reported again on the next activation");
        }
    }

    /// The disks of the volumes the instance mounts, made or grown as needed, each with the
    /// manifest's mount path. A volume the manifest does not mount in the process, or that
    /// the control plane did not list on this node, is the release's or the placement's
    /// fault: fatal. A short disk is waited out.
    async fn volume_disks(
        &self,
        inst: &Instance,
        manifest: &vt_manifest::Manifest,
        volumes: &[Option<Volume>],
    ) -> Result<Vec<vt_runtime::VolumeDisk>, PrepareError> {
        let mut disks = vec![];
        for (a, v) in inst.volumes.iter().zip(volumes) {
            let v = v.as_ref().ok_or_else(|| {
                PrepareError::Fatal(format!(
                    "volume {} (`{}`) is not on this node: the control plane does not list it here",
                    a.volume_id, a.name
                ))
            })?;
            let path =
                manifest.volumes_for(&inst.process).find(|m| m.name == a.name).map(|m| m.path.clone()).ok_or_else(
                    || {
                        PrepareError::Fatal(format!(
                            "volume `{}` is attached, and the release's manifest does not mount it in process `{}`",
                            a.name, inst.process
                        ))
                    },
                )?;
            let restic = self.cfg.backup.clone().map(vt_backup::Restic::new);
            let disk = volumes::ensure(&self.cfg.dirs.volumes, self.cfg.disk_budget.as_ref(), restic.as_ref(), v)
                .await
                .map_err(|e| match e {
                    volumes::VolumeError::NoSpace(why) => {
                        PrepareError::Transient(format!("{why}{}", self.snapshots_held()))
                    }
                    other => PrepareError::Fatal(other.to_string()),
                })?;
            disks.push(vt_runtime::VolumeDisk {
                name: a.name.clone(),
                disk,
                label: volumes::label(&v.id),
                mount_path: path,
            });
        }
        Ok(disks)
    }
}

impl Agent {
    /// The instance's secrets, from the control plane (only this node may read
    /// them), into its launch: files under `/run/secrets/`, the bundle, and the
    /// environment variables the manifest asks for. Never logged, never on a disk.
    async fn add_secrets(&self, inst: &Instance, version: u64, launch: &mut Launch) -> Result<(), PrepareError> {
        let got = self.client.instance_secrets(&inst.id.to_string()).await.map_err(|e| {
            let why = format!("cannot fetch the instance's secrets (version {version}): {e}");
            if e.is_transient() {
                PrepareError::Transient(why)
            } else {
                PrepareError::Fatal(why)
            }
        })?;
        if got.version != version {
            return Err(PrepareError::Fatal(format!(
                "the control plane sent secrets version {}, the instance runs version {version}",
                got.version
            )));
        }
        let mut secrets = Vec::with_capacity(got.items.len());
        for item in got.items {
            let data = base64::engine::general_purpose::STANDARD
                .decode(item.value_base64.as_bytes())
                .map_err(|_| format!("secret `{}` (version {version}) is not base64 in the answer", item.name))?;
            secrets.push(Secret { name: item.name, data });
        }
        if let Some(missing) = launch.secret_env.iter().find(|n| !secrets.iter().any(|s| &s.name == *n)) {
            return Err(PrepareError::Fatal(format!(
                "the manifest reads secret `{missing}` as an environment variable (`secret_env`), and secrets version {version} has no such secret"
            )));
        }
        launch.secrets = secrets;
        launch.secrets_version = version;
        Ok(())
    }
}

/// An instance's place in the node's ruleset, held by its supervisor: released (its rules
/// removed) after its VM's tap is gone, also when the supervisor is aborted (then the tap is
/// removed first, here).
struct Admitted {
    network: Option<Arc<network::Network>>,
    id: String,
    tap: Option<String>,
}

impl Admitted {
    fn new(network: Option<Arc<network::Network>>, id: &str, tap: Option<String>) -> Self {
        Admitted { network, id: id.to_owned(), tap }
    }

    /// The VM and its tap are gone: remove its rules.
    async fn release(&mut self) {
        if let Some(net) = self.network.take() {
            net.release(&self.id).await;
        }
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let (Some(net), Some(tap)) = (self.network.take(), self.tap.as_deref()) {
            net.release_now(&self.id, tap);
        }
    }
}

/// Delete an instance's snapshot, if it has one (a resume stopped before it booted, a fresh
/// boot): a snapshot never outlives the instance's last chance to be resumed.
fn discard_snapshot(work_dir: &std::path::Path) {
    if let Err(e) = vt_runtime::snapshot::remove(work_dir) {
        tracing::warn!(work_dir = %work_dir.display(), error = %e, "cannot delete the instance's snapshot");
    }
}

/// The images the node's instances may still boot or resume from: those of every instance
/// placed here (desired state, status, image digest) but the ones stopped for good (desired
/// stopped and ended), and the root disks of the VMs alive or suspended here (whatever the
/// control plane says).
fn images_in_use<'a>(
    placed: impl Iterator<Item = (DesiredState, vt_events::InstanceStatus, &'a str)>,
    records: &[InstanceRecord],
) -> Vec<Digest> {
    let placed = placed
        .filter(|(desired, status, _)| !(*desired == DesiredState::Stopped && status.is_terminal()))
        .filter_map(|(_, _, digest)| digest.parse::<Digest>().ok());
    let local = records
        .iter()
        .filter(|r| r.phase == Phase::Suspended || live_vm(r).is_some())
        .filter_map(|r| r.root_disk.as_deref()?.file_stem()?.to_str().and_then(|hex| Digest::from_hex(hex).ok()));
    let mut keep: Vec<Digest> = placed.chain(local).collect();
    keep.sort();
    keep.dedup();
    keep
}

/// Remove a VM's cgroup once the VM is gone (blocks up to ~2 s while the kernel lets go).
async fn remove_cgroup(id: &str, cg: Cgroup) {
    match tokio::task::spawn_blocking(move || cg.remove()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(instance = id, error = %e, "cgroup not removed"),
        Err(e) => tracing::warn!(instance = id, error = %e, "cgroup removal task failed"),
    }
}

/// Check `ip` with `probe` until aborted, sending each change of verdict.
async fn health_checks(probe: health::Probe, ip: std::net::IpAddr, changes: mpsc::Sender<health::Change>) {
    let started = Instant::now();
    let mut tracker = health::Tracker::new(probe.clone());
    loop {
        let result = probe.check(ip).await;
        if let Some(change) = tracker.observe(result, started.elapsed()) {
            if changes.send(change).await.is_err() {
                return;
            }
        }
        tokio::time::sleep(tracker.next_delay()).await;
    }
}

/// The backend `cfg.runtime` names (`VT_RUNTIME` when unset), with its config from `cfg`.
fn new_runtime(cfg: &AgentConfig) -> Result<Arc<dyn Runtime>, vt_runtime::RuntimeError> {
    let kind = match cfg.runtime {
        Some(k) => k,
        None => RuntimeKind::from_env()?,
    };
    Ok(match kind {
        RuntimeKind::Qemu => Arc::new(QemuRuntime::new(cfg.qemu.clone())?),
        RuntimeKind::Firecracker => Arc::new(FirecrackerRuntime::new(cfg.firecracker.clone())?),
    })
}

/// The VMM process of a record that is still alive: the recorded pid, else the pid file the
/// runtime writes right after spawning (covers a crash before the record got the pid).
fn live_vm(rec: &InstanceRecord) -> Option<u32> {
    let needle = state::path_str(&rec.work_dir);
    let from_file = std::fs::read_to_string(rec.work_dir.join("vmm.pid")).ok().and_then(|s| s.trim().parse().ok());
    [rec.vm_pid, from_file].into_iter().flatten().find(|&p| state::vm_alive(p, &needle))
}

/// The final status, a reason a user can act on, and the exit code.
fn describe_end(end: &State, stop_requested: bool, id: &str) -> (Phase, String, Option<i32>) {
    let logs = format!("`vt logs --instance {id}` shows its output");
    match end {
        State::Stopped { exit: Some(ExitStatus::Code(0)) } => {
            (Phase::Stopped, "the entrypoint exited with code 0".into(), Some(0))
        }
        State::Stopped { exit: Some(ExitStatus::Code(c)) } if stop_requested => {
            (Phase::Stopped, format!("stopped on request; the entrypoint exited with code {c}"), Some(*c))
        }
        State::Stopped { exit: Some(ExitStatus::Code(c)) } => {
            (Phase::Failed, format!("the entrypoint exited with code {c}; {logs}"), Some(*c))
        }
        State::Stopped { exit: Some(ExitStatus::Signal(s)) } if stop_requested => {
            (Phase::Stopped, format!("stopped on request (signal {s})"), Some(128 + s))
        }
        State::Stopped { exit: Some(ExitStatus::Signal(s)) } => {
            (Phase::Failed, format!("the entrypoint was killed by signal {s}; {logs}"), Some(128 + s))
        }
        State::Stopped { exit: None } if stop_requested => (Phase::Stopped, "stopped on request".into(), None),
        State::Stopped { exit: None } => {
            (Phase::Failed, "the VM stopped without reporting an exit status".into(), None)
        }
        State::Failed { reason, exit } => {
            let code = match exit {
                Some(ExitStatus::Code(c)) => Some(*c),
                Some(ExitStatus::Signal(s)) => Some(128 + s),
                None => None,
            };
            (Phase::Failed, reason.clone(), code)
        }
        other => (Phase::Failed, format!("the VM ended in state {other}"), None),
    }
}

/// Aborts the task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What an instance may still boot or resume from keeps its image; an instance stopped
    /// for good does not, nor does a record of a VM that ended here.
    #[test]
    fn images_in_use_are_the_placed_ones_and_the_suspended_ones() {
        use vt_events::InstanceStatus as S;
        let hex = |c: char| std::iter::repeat_n(c, 64).collect::<String>();
        let digest = |c: char| format!("sha256:{}", hex(c));
        let placed = [
            (DesiredState::Running, S::Running, digest('a')),
            (DesiredState::Stopped, S::Running, digest('b')), // still stopping
            (DesiredState::Stopped, S::Stopped, digest('c')), // done
            (DesiredState::Suspended, S::Suspended, digest('d')),
            (DesiredState::Running, S::Failed, digest('e')), // restarted
            (DesiredState::Running, S::Running, "not a digest".into()),
        ];
        let record = |id: &str, phase: Phase, c: char| {
            let mut r = InstanceRecord::new(id, "rel", PathBuf::from("/w"));
            r.phase = phase;
            r.root_disk = Some(PathBuf::from(format!("/images/rootdisks/{}.ext4", hex(c))));
            r
        };
        // Suspended here though the control plane no longer places it; an ended VM's record.
        let records = [record("i1", Phase::Suspended, 'f'), record("i2", Phase::Stopped, 'g')];
        let keep = images_in_use(placed.iter().map(|(d, s, i)| (*d, *s, i.as_str())), &records);
        let keep: Vec<String> = keep.iter().map(|d| d.to_string()).collect();
        assert_eq!(keep, ['a', 'b', 'd', 'e', 'f'].map(digest));
    }

    #[test]
    fn ends_are_described() {
        let (p, r, c) = describe_end(&State::Stopped { exit: Some(ExitStatus::Code(3)) }, false, "inst_x");
        assert_eq!((p, c), (Phase::Failed, Some(3)));
        assert!(r.contains("code 3") && r.contains("vt logs --instance inst_x"), "{r}");
        let (p, _, c) = describe_end(&State::Stopped { exit: Some(ExitStatus::Code(143)) }, true, "i");
        assert_eq!((p, c), (Phase::Stopped, Some(143)));
    }

    #[test]
    fn a_failed_suspend_is_retried_with_backoff_then_the_instance_is_stopped() {
        use vt_runtime::SuspendError as E;
        let timeout = E::Failed("saving the VM state did not finish within 120s".into());
        let plan: Vec<SuspendFailed> = (1..=SUSPEND_ATTEMPTS).map(|n| after_failed_suspend(n, &timeout)).collect();
        let SuspendFailed::Retry { after, reason } = &plan[0] else { panic!("{plan:?}") };
        assert_eq!(*after, Duration::from_secs(1));
        assert!(reason.starts_with("cannot suspend (attempt 1 of 3): saving the VM state did not finish"), "{reason}");
        assert!(reason.ends_with("the VM runs on, retrying in 1 s"), "{reason}");
        assert!(matches!(&plan[1], SuspendFailed::Retry { after, .. } if *after == Duration::from_secs(2)));
        let SuspendFailed::Stop(why) = &plan[2] else { panic!("{plan:?}") };
        assert_eq!(
            why,
            "stopped instead of suspended: the suspend failed 3 times, the last: saving the VM state did not finish within 120s"
        );
        // A guest channel not attached for now is retried like a failed save.
        assert!(matches!(after_failed_suspend(1, &E::NotRunning("booting")), SuspendFailed::Retry { .. }));
        // What cannot be saved at all, or is gone, is stopped at once: no retry.
        for e in [E::Unsupported("firecracker runtime under the jailer"), E::Lost("x".into()), E::Ended] {
            let SuspendFailed::Stop(why) = after_failed_suspend(1, &e) else { panic!("{e:?}") };
            assert!(why.starts_with("stopped instead of suspended: ") && why.contains(&e.to_string()), "{why}");
        }
    }

    #[test]
    fn capacity_from_proc() {
        let c = node_capacity(0);
        assert!(c.cpu_millis >= 1000 && c.memory_mib > 64);
    }
}
