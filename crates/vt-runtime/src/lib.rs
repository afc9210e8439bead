//! microVM runtimes for vt.
//!
//! * [`Runtime`]: starts an instance described by an [`InstanceSpec`] and returns a [`Vm`]
//!   handle. Backends: [`qemu::QemuRuntime`] (`qemu-system-x86_64 -M microvm`, KVM or TCG)
//!   and [`firecracker::FirecrackerRuntime`] (bare-metal KVM, optionally jailed);
//!   [`RuntimeKind`] picks one (`VT_RUNTIME=qemu|firecracker`, default qemu).
//! * `session.rs`: everything the backends share: spec checks, the scratch disk, state and
//!   event reporting behind the [`Vm`] handle, and the guest channel conversation (Hello →
//!   Launch → Ready → Log* → Exited → Shutdown, stop escalation, boot timeout), run against
//!   a small `Vmm` trait each backend implements for its VMM process. A backend only adds
//!   how its VMM is configured and spawned.
//! * [`State`]: the one instance lifecycle (allocated → preparing → booting → running →
//!   stopping → stopped | failed; running → suspended), with checked transitions.
//! * Suspend and resume: [`Vm::suspend`] saves a running VM to a [`snapshot`] in its work dir
//!   and ends its VMM; [`Runtime::restore`] loads it into a new VMM, once (qemu backend).
//! * The guest side is `vt-init` (PID 1); both sides speak `vt-guest-proto` over the guest
//!   channel. See `docs/runtime.md`.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

pub mod cgroup;
pub mod exec;
pub mod firecracker;
pub mod kvm;
pub mod lifecycle;
pub mod net;
pub mod qemu;
mod qmp;
mod select;
pub(crate) mod session;
pub mod snapshot;
pub mod testing;

pub use lifecycle::{InvalidTransition, State};
pub use select::RuntimeKind;
pub use snapshot::Snapshot;
pub use vt_guest_proto::{ExitStatus, Launch, Secret, Stream};

/// `bin` itself when it is a path, else the first `PATH` entry holding it (what
/// `Command::new(bin)` would run).
pub fn find_bin(bin: &std::path::Path) -> Option<PathBuf> {
    if bin.components().count() > 1 {
        return bin.is_file().then(|| bin.to_owned());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(bin)).find(|p| p.is_file())
}

/// Everything a runtime needs to boot one instance.
#[derive(Debug, Clone)]
pub struct InstanceSpec {
    /// Instance id (used in names and messages).
    pub id: String,
    /// The image's read-only ext4 root disk (attached read-only).
    pub root_disk: PathBuf,
    /// Per-instance directory owned by the runtime: scratch disk, channel socket, console and
    /// VMM logs live here.
    pub work_dir: PathBuf,
    /// Size of the writable scratch disk (the overlay's upper layer), bytes.
    pub scratch_size: u64,
    /// Memory cap (hard), MiB.
    pub memory_mib: u32,
    pub vcpus: u32,
    /// The CPU request in thousandths of a vCPU: a soft share (the cgroup's weight), never a cap.
    pub cpu_millis: u32,
    /// What guest init runs (argv, env with the `VT_*` variables, cwd, user, hostname).
    /// Its `network` is filled in from [`InstanceSpec::network`].
    pub launch: Launch,
    /// A tap device and address for the instance; `None`: loopback only.
    pub network: Option<net::NetworkSpec>,
    /// Volume disks to attach (read-write); guest init mounts each by its label.
    pub volumes: Vec<VolumeDisk>,
    /// From VMM start until the entrypoint runs; past it the instance fails.
    pub boot_timeout: Duration,
}

impl InstanceSpec {
    pub fn new(id: &str, root_disk: PathBuf, work_dir: PathBuf, launch: Launch) -> Self {
        Self {
            id: id.to_owned(),
            root_disk,
            work_dir,
            scratch_size: 256 << 20,
            memory_mib: 256,
            vcpus: 1,
            cpu_millis: 1000,
            launch,
            network: None,
            volumes: Vec::new(),
            boot_timeout: Duration::from_secs(120),
        }
    }
}

/// A volume: an ext4 image file on the host whose label guest init looks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeDisk {
    /// The volume's name: mounted at `/mnt/volumes/<name>` in the guest.
    pub name: String,
    pub disk: PathBuf,
    /// The ext4 label of `disk` (at most 16 bytes).
    pub label: String,
    /// Also bind-mounted here when not empty (the manifest's `path`).
    pub mount_path: String,
}

/// What a running instance reports, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmEvent {
    State(State),
    /// Output of the entrypoint: keep it, then [`Vm::ack`] its `seq` (until then the guest
    /// keeps it, and sends it again to the next agent if this one goes away).
    /// `at`: when the guest read it (its clock mapped onto this host's at its last `Ready`).
    Log {
        seq: u64,
        at: std::time::SystemTime,
        stream: Stream,
        data: Vec<u8>,
    },
    /// `bytes` of output were dropped while no agent was attached (acknowledge it too).
    LogLost {
        seq: u64,
        bytes: u64,
    },
}

/// Host-side times of one boot, measured from the call to [`Runtime::start`], plus the guest's
/// own clock (`CLOCK_BOOTTIME`, ≈ since its kernel started) at init start and entrypoint start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BootTimings {
    /// Scratch disk created and channel listening.
    pub prepared: Option<Duration>,
    /// VMM process spawned.
    pub vmm_spawned: Option<Duration>,
    /// Guest init's Hello received.
    pub guest_hello: Option<Duration>,
    /// `Ready` received: the entrypoint runs (after a restore: runs again).
    pub entrypoint: Option<Duration>,
    /// Restores only: the snapshot was loaded into the new VMM and the guest let run.
    pub snapshot_loaded: Option<Duration>,
    pub guest_init_started_us: Option<u64>,
    pub guest_entrypoint_started_us: Option<u64>,
}

impl BootTimings {
    /// VMM spawn → entrypoint started, as seen by the host.
    pub fn boot_to_entrypoint(&self) -> Option<Duration> {
        Some(self.entrypoint?.saturating_sub(self.vmm_spawned?))
    }
}

/// Requests to a running instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Deliver a signal to the entrypoint.
    Signal(i32),
    /// SIGTERM to the entrypoint, then power off after `grace`, then kill the VMM.
    Stop { grace: Duration },
    /// Kill the VMM now.
    Kill,
    /// Let go of the VM without stopping it: close the guest channel and leave the VMM
    /// running for another process to [`Runtime::attach`] to (what a node agent's crash
    /// does; the instance's state stays where it was).
    Abandon,
}

/// The final report of an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// `Stopped` or `Failed`.
    pub state: State,
    pub timings: BootTimings,
    /// How the VMM process ended (its exit code), when it was reaped.
    pub vmm_exit: Option<i32>,
}

/// Handle to one instance. Dropping it kills the VMM.
pub struct Vm {
    pub id: String,
    events: mpsc::Receiver<VmEvent>,
    control: mpsc::Sender<Control>,
    state: watch::Receiver<State>,
    task: JoinHandle<Outcome>,
    /// The VMM's process id once it is spawned (0 before).
    pid: std::sync::Arc<std::sync::atomic::AtomicU32>,
    /// The boot timings so far (updated at each state change).
    timings: std::sync::Arc<std::sync::Mutex<BootTimings>>,
    exec: exec::ExecHandle,
    acked: watch::Sender<u64>,
    suspend: mpsc::Sender<session::SuspendRequest>,
}

impl Vm {
    /// The next event; `None` once the instance has ended and all events were taken.
    pub async fn next_event(&mut self) -> Option<VmEvent> {
        self.events.recv().await
    }

    pub fn state(&self) -> State {
        self.state.borrow().clone()
    }

    /// The boot timings measured so far (complete once the state is `Running`).
    pub fn timings(&self) -> BootTimings {
        self.timings.lock().map(|t| t.clone()).unwrap_or_default()
    }

    /// The VMM's process id, once spawned (a node agent records it to adopt the VM later).
    pub fn vmm_pid(&self) -> Option<u32> {
        match self.pid.load(std::sync::atomic::Ordering::SeqCst) {
            0 => None,
            p => Some(p),
        }
    }

    /// Opens exec sessions in this instance (while it runs).
    pub fn exec_handle(&self) -> exec::ExecHandle {
        self.exec.clone()
    }

    /// Everything up to recorded sequence number `seq` is kept: the guest may forget it.
    pub fn ack(&self, seq: u64) {
        self.acked.send_if_modified(|a| {
            let newer = seq > *a;
            if newer {
                *a = seq;
            }
            newer
        });
    }

    /// Pause the VM, save it to a snapshot in its work dir ([`snapshot`]) and end its VMM:
    /// the instance becomes [`State::Suspended`] and [`Runtime::restore`] resumes it later
    /// in a new VMM. Only a running VM is suspended; when saving fails the VM runs on (the
    /// error says why). Open exec sessions end (the host side) as with any end of the VMM.
    pub async fn suspend(&self) -> Result<Snapshot, SuspendError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.suspend.send(tx).await.is_err() {
            return Err(SuspendError::Ended);
        }
        rx.await.map_err(|_| SuspendError::Ended)?
    }

    /// Send a control request (ignored once the instance has ended).
    pub async fn control(&self, c: Control) {
        let _ = self.control.send(c).await;
    }

    /// Wait for the end, discarding events not yet taken.
    pub async fn wait(mut self) -> Outcome {
        while self.events.recv().await.is_some() {}
        match (&mut self.task).await {
            Ok(o) => o,
            Err(e) => Outcome {
                state: State::Failed { reason: format!("runtime task ended abnormally: {e}"), exit: None },
                timings: BootTimings::default(),
                vmm_exit: None,
            },
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        // The task owns the VMM child with kill_on_drop; aborting it kills the VMM.
        if !self.task.is_finished() {
            self.task.abort();
        }
    }
}

/// Why [`Vm::suspend`] did not suspend the VM.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SuspendError {
    /// The backend (or this VM) cannot be saved: names what.
    #[error("the {0} cannot suspend VMs")]
    Unsupported(&'static str),
    /// Only a running VM (entrypoint started, guest attached) is suspended.
    #[error("the instance is {0}, not running: only a running VM is suspended")]
    NotRunning(&'static str),
    /// Saving failed; the VM was resumed and runs on.
    #[error("suspending failed (the VM runs on): {0}")]
    Failed(String),
    /// Saving failed and the paused VM could not be resumed: its VMM was ended (a VM is never
    /// left paused). The instance ends.
    #[error("suspending failed and the paused VM could not be resumed, so it was ended: {0}")]
    Lost(String),
    /// The instance ended before it could be suspended.
    #[error("the instance has ended")]
    Ended,
}

/// Errors before an instance exists (configuration, missing files).
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{0}")]
    Config(String),
    /// No snapshot to restore: none taken, already resumed (never twice), or it does not fit
    /// the spec given.
    #[error("{0}")]
    Snapshot(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A microVM backend.
pub trait Runtime: Send + Sync {
    /// Short backend name (`qemu`, `firecracker`).
    fn name(&self) -> &'static str;

    /// Allocate and start an instance. Returns as soon as the instance exists (state
    /// `Allocated`); preparation and boot proceed in the background and are reported as
    /// [`VmEvent::State`] events.
    fn start(&self, spec: InstanceSpec) -> BoxFuture<'_, Result<Vm, RuntimeError>>;

    /// Whether this backend puts each VMM in a cgroup of its own making (the jailer with a
    /// cgroup parent): the node agent then leaves the VMM where it is instead of moving it into
    /// its CPU-weight cgroup.
    fn places_vmms_in_cgroups(&self) -> bool {
        false
    }

    /// Whether [`Runtime::attach`] works: the VMs this backend starts keep their guest
    /// channel open for the next process (QEMU reconnects its chardev).
    fn can_attach(&self) -> bool {
        false
    }

    /// Take over a VM an earlier process started with this backend and that still runs (a
    /// node agent restarted): re-open its guest channel and resume the conversation. The
    /// [`Vm`] goes `preparing → booting → running` once the guest answers (within
    /// `spec.timeout`, else the VM is killed and the instance fails); its output from the
    /// time no one was attached comes first.
    fn attach(&self, spec: AttachSpec) -> BoxFuture<'_, Result<Vm, RuntimeError>> {
        Box::pin(async move {
            Err(RuntimeError::Config(format!("the {} runtime cannot re-attach to VM {}", self.name(), spec.id)))
        })
    }

    /// Whether [`Vm::suspend`] and [`Runtime::restore`] work.
    fn can_snapshot(&self) -> bool {
        false
    }

    /// Resume the instance suspended in `spec.work_dir` ([`Vm::suspend`]) in a new VMM: the
    /// same machine and devices (checked against `spec`: root disk, volumes, tap, memory,
    /// vCPUs), the scratch disk and volumes as they are, the tap made again; the guest is told
    /// it was restored and takes the host's wall clock. The snapshot is claimed first and
    /// deleted once the guest runs, so a second restore of it is refused
    /// ([`RuntimeError::Snapshot`]). The [`Vm`] goes `preparing → booting → running` (its
    /// `Ready` after the resume) like an attached one, its unacknowledged output first.
    fn restore(&self, spec: InstanceSpec) -> BoxFuture<'_, Result<Vm, RuntimeError>> {
        Box::pin(async move {
            Err(RuntimeError::Snapshot(format!(
                "the {} runtime cannot restore snapshots (instance {})",
                self.name(),
                spec.id
            )))
        })
    }
}

/// A VM to re-attach to (see [`Runtime::attach`]).
#[derive(Debug, Clone)]
pub struct AttachSpec {
    pub id: String,
    /// The instance's work dir, as given to [`Runtime::start`].
    pub work_dir: PathBuf,
    /// The VMM's process id (its command line names `work_dir`).
    pub pid: u32,
    /// How long the guest has to answer.
    pub timeout: Duration,
}
