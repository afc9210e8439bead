//! The Firecracker backend: the production runtime on bare-metal KVM hosts, driven through
//! Firecracker's API socket, optionally under its jailer. See `docs/runtime.md`
//! ("Firecracker backend").
//!
//! Per instance (`InstanceSpec::work_dir`; the files Firecracker uses are in the jail's root
//! instead when a jailer is configured, see [`jail`]):
//!
//! | file | what |
//! | --- | --- |
//! | `scratch.ext4` | writable scratch disk, `mkfs.ext4` by us (drive `scratch`) |
//! | `firecracker.socket` | Firecracker's API socket |
//! | `vsock.sock` | the vsock device's `uds_path` (Firecracker listens there for host-initiated connections; unused) |
//! | `vsock.sock_1024` | we listen here: guest init's connection to host port [`VSOCK_PORT`] arrives here (the guest channel) |
//! | `console.log` | Firecracker's stdout and stderr: the guest's serial console (`ttyS0`) |
//! | `firecracker.log` | Firecracker's own log (`PUT /logger`; copied out of the jail at the end) |
//! | `vmm.pid` | the Firecracker (or jailer, which execs it) pid |
//!
//! Boot: prepare (scratch disk, tap, jail, listener) → spawn Firecracker → wait for its API
//! socket → [`api::BootPlan::requests`] (logger, machine-config, boot-source, drives, network
//! interface, vsock, `InstanceStart`) → the guest channel conversation
//! ([`crate::session::Session::supervise`]). A rejected request fails the instance with
//! Firecracker's `fault_message` and kills Firecracker.
//!
//! Power: Firecracker has no power-off device on x86_64; it exits when the guest reboots
//! (`reboot=k`). The boot arguments carry `vt.poweroff=reboot`, which makes guest init reboot
//! where it would power off. A stop that the guest does not honour escalates to
//! `SendCtrlAltDel` (a reboot, hence an exit), then to killing Firecracker.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::net::{UnixListener, UnixStream};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use crate::snapshot::{self, VmmRecord};
use crate::{
    find_bin, AttachSpec, BoxFuture, Control, InstanceSpec, Launch, Outcome, Runtime, RuntimeError, Snapshot,
    SuspendError, Vm,
};

pub mod api;
pub mod jail;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;

pub use api::{ApiClient, ApiError, ApiRequest, BootPlan};
pub use jail::{vsock_listener_path, Jail, Layout};

use api::Action;
use vt_guest_proto::VSOCK_PORT;

use crate::session::{self, Session, Vmm};

/// The guest's vsock CID (each Firecracker VM has its own device, so every guest can be 3).
pub const GUEST_CID: u32 = 3;

/// Kernel command line before vt's words: serial console, exit on reboot (keyboard
/// controller reset), reboot 1 s after a panic, no PCI, and the i8042 probes Firecracker's
/// docs recommend skipping (its keyboard controller only carries Ctrl-Alt-Del).
pub const DEFAULT_BOOT_ARGS: &str =
    "console=ttyS0 reboot=k panic=1 pci=off i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd";

/// Tells guest init to reboot where it would power off (Firecracker exits on a reboot).
pub const POWEROFF_BY_REBOOT: &str = "vt.poweroff=reboot";

/// The jailer, when Firecracker runs under it (production: see `docs/runtime.md`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JailerConfig {
    pub jailer_bin: PathBuf,
    /// Each jail runs as uid = gid = `id_base + slot`, a slot of its own among `id_count`
    /// ([`Jail::claim`]). Pick a range no user or subordinate id range of the host uses.
    pub id_base: u32,
    pub id_count: u32,
    /// Jails are `<chroot_base_dir>/<firecracker file name>/<id>/root`. Put it on the
    /// filesystem of the guest files and images: read-only resources are hard-linked
    /// (copied otherwise).
    pub chroot_base_dir: PathBuf,
    /// Each jail joins a network namespace of its own (`/var/run/netns/vt-<id>`) holding
    /// the instance's tap, connected to the host by a veth pair
    /// ([`crate::net::NetworkSpec::create_in_netns`]).
    pub netns: bool,
    /// A cgroup v2 parent (relative to the v2 mount) for the jailer to put each Firecracker
    /// in (`<parent>/<id>`), with `memory.max` = the guest's memory +
    /// `memory_overhead_mib`. `None`: the jailer sets no cgroup.
    pub cgroup_parent: Option<String>,
    pub memory_overhead_mib: u32,
}

/// The default first jail uid/gid (`VT_JAILER_ID_BASE`): far above login users and the
/// usual subordinate id ranges.
pub const DEFAULT_JAIL_ID_BASE: u32 = 1_500_000_000;

impl JailerConfig {
    /// `jailer` from `PATH`, `/srv/jailer` (the jailer's default base), 65536 jail ids from
    /// `id_base`, a network namespace per jail, no cgroup.
    pub fn new(id_base: u32) -> Self {
        Self {
            jailer_bin: "jailer".into(),
            id_base,
            id_count: 65536,
            chroot_base_dir: "/srv/jailer".into(),
            netns: true,
            cgroup_parent: None,
            memory_overhead_mib: 128,
        }
    }

    /// From the environment when `JAILER_BIN` is set: `VT_JAILER_CHROOT_BASE`,
    /// `VT_JAILER_ID_BASE`, `VT_JAILER_CGROUP_PARENT` (each optional). A `VT_JAILER_ID_BASE`
    /// that is not a uid leaves no ids to give: [`FirecrackerRuntime::new`] refuses it.
    pub fn from_env() -> Option<Self> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let bin = var("JAILER_BIN")?;
        let base = var("VT_JAILER_ID_BASE").map(|v| v.parse::<u32>());
        let mut c = Self::new(match base {
            Some(Ok(b)) => b,
            _ => DEFAULT_JAIL_ID_BASE,
        });
        if matches!(base, Some(Err(_))) {
            c.id_count = 0;
        }
        c.jailer_bin = bin.into();
        if let Some(d) = var("VT_JAILER_CHROOT_BASE") {
            c.chroot_base_dir = d.into();
        }
        c.cgroup_parent = var("VT_JAILER_CGROUP_PARENT");
        Some(c)
    }
}

/// Node-wide configuration of the Firecracker backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirecrackerConfig {
    pub firecracker_bin: PathBuf,
    pub jailer: Option<JailerConfig>,
    /// Uncompressed kernel (`vmlinux`).
    pub kernel: PathBuf,
    /// initramfs holding vt-init as `/init` and the modules it loads (with
    /// `/etc/vt/modules.vsock`).
    pub initramfs: PathBuf,
    /// Kernel command line; vt adds `vt.poweroff=reboot` and `quiet` (or `vt.debug`).
    pub boot_args: String,
    /// Kernel messages on the console (`vt.debug` for init's step timings) instead of `quiet`.
    pub verbose_console: bool,
    pub mkfs_bin: PathBuf,
    /// How long Firecracker has to create its API socket after it is spawned.
    pub api_timeout: Duration,
}

impl FirecrackerConfig {
    /// Defaults for a guest directory prepared by `scripts/guest-kernel.sh`, Firecracker from
    /// `PATH`, no jailer.
    pub fn from_guest_dir(dir: &Path) -> Self {
        Self {
            firecracker_bin: "firecracker".into(),
            jailer: None,
            kernel: dir.join("vmlinux"),
            initramfs: dir.join("initramfs.cpio"),
            boot_args: DEFAULT_BOOT_ARGS.into(),
            verbose_console: false,
            mkfs_bin: "mkfs.ext4".into(),
            api_timeout: Duration::from_secs(5),
        }
    }

    /// [`Self::from_guest_dir`] with the Firecracker binary from `FIRECRACKER_BIN` when set,
    /// and the jailer when `JAILER_BIN` is set ([`JailerConfig::from_env`]).
    pub fn from_env(dir: &Path) -> Self {
        let mut c = Self::from_guest_dir(dir);
        if let Some(b) = std::env::var_os("FIRECRACKER_BIN").filter(|b| !b.is_empty()) {
            c.firecracker_bin = b.into();
        }
        c.jailer = JailerConfig::from_env();
        c
    }

    /// What this host lacks to boot with this config: kernel, initramfs, the binaries.
    /// Empty when it can boot (KVM aside: see [`probe_kvm`]).
    pub fn missing(&self) -> Vec<String> {
        let mut missing: Vec<String> = [&self.kernel, &self.initramfs]
            .into_iter()
            .filter(|p| !p.is_file())
            .map(|p| p.display().to_string())
            .collect();
        let mut bins = vec![&self.firecracker_bin, &self.mkfs_bin];
        if let Some(j) = &self.jailer {
            bins.push(&j.jailer_bin);
        }
        missing.extend(bins.into_iter().filter(|b| find_bin(b).is_none()).map(|b| b.display().to_string()));
        missing
    }
}

/// The kernel command line of an instance (`extra`: more words, e.g. `vt.probe`).
pub fn boot_args(cfg: &FirecrackerConfig, extra: &str) -> String {
    let mut c = cfg.boot_args.trim().to_owned();
    for w in [POWEROFF_BY_REBOOT, if cfg.verbose_console { "vt.debug" } else { "quiet" }, extra] {
        if !w.is_empty() {
            if !c.is_empty() {
                c.push(' ');
            }
            c.push_str(w);
        }
    }
    c
}

/// The Firecracker runtime.
pub struct FirecrackerRuntime {
    cfg: FirecrackerConfig,
    /// The Firecracker binary, resolved (the jailer needs an absolute path).
    exec: PathBuf,
}

impl FirecrackerRuntime {
    pub fn new(cfg: FirecrackerConfig) -> Result<Self, RuntimeError> {
        for (what, p) in [("kernel", &cfg.kernel), ("initramfs", &cfg.initramfs)] {
            if !p.is_file() {
                return Err(RuntimeError::Config(format!(
                    "guest {what} {} not found (run scripts/guest-kernel.sh)",
                    p.display()
                )));
            }
        }
        let exec = find_bin(&cfg.firecracker_bin).ok_or_else(|| {
            RuntimeError::Config(format!(
                "firecracker binary {} not found (set FIRECRACKER_BIN)",
                cfg.firecracker_bin.display()
            ))
        })?;
        // The jailer names the jail after the file (a symlink's target: what it copies).
        let exec = std::fs::canonicalize(&exec).unwrap_or(exec);
        if let Some(j) = &cfg.jailer {
            // The jailer only execs a file whose name contains "firecracker".
            let name = exec.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if !name.contains("firecracker") {
                return Err(RuntimeError::Config(format!(
                    "the jailer runs only a binary whose name contains `firecracker`, not {}",
                    exec.display()
                )));
            }
            if j.id_count == 0 || j.id_base.checked_add(j.id_count - 1).is_none() {
                return Err(RuntimeError::Config(format!(
                    "the jailer has no uids to give: {} from {} (VT_JAILER_ID_BASE must be a uid)",
                    j.id_count, j.id_base
                )));
            }
            if find_bin(&j.jailer_bin).is_none() {
                return Err(RuntimeError::Config(format!("jailer binary {} not found", j.jailer_bin.display())));
            }
        }
        Ok(Self { cfg, exec })
    }

    pub fn config(&self) -> &FirecrackerConfig {
        &self.cfg
    }

    /// The jail of instance `id` with its uid/gid claimed (the one it holds, if any).
    fn jail(&self, id: &str) -> Result<Option<Jail>, RuntimeError> {
        let Some(jc) = &self.cfg.jailer else { return Ok(None) };
        let mut j = Jail::new(jc, &self.exec, id);
        j.claim(jc).map_err(|source| RuntimeError::Io {
            what: format!("claim a jail uid under {}", jc.chroot_base_dir.display()),
            source,
        })?;
        Ok(Some(j))
    }
}

impl Runtime for FirecrackerRuntime {
    fn name(&self) -> &'static str {
        "firecracker"
    }

    fn places_vmms_in_cgroups(&self) -> bool {
        self.cfg.jailer.as_ref().is_some_and(|j| j.cgroup_parent.is_some())
    }

    fn start(&self, mut spec: InstanceSpec) -> BoxFuture<'_, Result<Vm, RuntimeError>> {
        Box::pin(async move {
            session::check_spec(&mut spec)?;
            if !(1..=32).contains(&spec.vcpus) {
                return Err(RuntimeError::Config(format!("{} vCPUs: Firecracker takes 1 to 32", spec.vcpus)));
            }
            let jail = self.jail(&spec.id)?;
            let layout = Layout::new(&spec.work_dir, jail);
            for sock in [layout.api_socket(), layout.channel_listener(VSOCK_PORT)] {
                // sun_path holds 108 bytes with the terminating NUL.
                if sock.as_os_str().len() > 107 {
                    return Err(RuntimeError::Config(format!("path too long for a unix socket: {}", sock.display())));
                }
            }
            let driver = Driver { cfg: self.cfg.clone(), exec: self.exec.clone(), layout, spec };
            let (id, launch, timeout) = (driver.spec.id.clone(), driver.spec.launch.clone(), driver.spec.boot_timeout);
            Ok(session::spawn_vm(&id, launch, timeout, driver.layout.console(), move |s, ctl| driver.run(s, ctl)))
        })
    }

    fn can_attach(&self) -> bool {
        true
    }

    /// Unjailed only: a jailed Firecracker's scratch disk and files live in its jail, which
    /// goes when the VMM ends.
    fn can_snapshot(&self) -> bool {
        self.cfg.jailer.is_none()
    }

    /// A new Firecracker configured with its logger only, then `PUT /snapshot/load` with
    /// `resume_vm`: the machine and its devices (drives, tap, vsock) come from the snapshot;
    /// the vsock device resets its connections on load, so guest init connects to
    /// `vsock.sock_1024` again, where the conversation of an attach (plus `Restored`) waits.
    fn restore(&self, mut spec: InstanceSpec) -> BoxFuture<'_, Result<Vm, RuntimeError>> {
        Box::pin(async move {
            if self.cfg.jailer.is_some() {
                return Err(RuntimeError::Snapshot(
                    "the firecracker runtime under the jailer cannot restore snapshots yet".into(),
                ));
            }
            session::check_spec(&mut spec)?;
            let claim = snapshot::claim_for(self.name(), &spec)?;
            let layout = Layout::new(&spec.work_dir, None);
            let driver = Driver { cfg: self.cfg.clone(), exec: self.exec.clone(), layout, spec };
            let (id, timeout, console) = (driver.spec.id.clone(), driver.spec.boot_timeout, driver.layout.console());
            Ok(session::spawn_vm(&id, Launch::default(), timeout, console, move |s, ctl| driver.restore(claim, s, ctl)))
        })
    }

    /// Guest init reconnects its vsock to the host port when the connection ends: listening
    /// on `<uds>_1024` again is all it takes (Firecracker forwards the guest's new connection).
    fn attach(&self, spec: AttachSpec) -> BoxFuture<'_, Result<Vm, RuntimeError>> {
        Box::pin(async move {
            let jail = self.jail(&spec.id)?;
            let layout = Layout::new(&spec.work_dir, jail);
            let console = layout.console();
            let (id, timeout) = (spec.id.clone(), spec.timeout);
            let run = move |mut s: Session, ctl: mpsc::Receiver<Control>| async move {
                s.resume = true;
                s.set(crate::State::Preparing).await;
                let sock = layout.channel_listener(VSOCK_PORT);
                let _ = std::fs::remove_file(&sock);
                let bound = UnixListener::bind(&sock).map_err(|e| format!("listen on {}: {e}", sock.display()));
                let listener = match bound.and_then(|l| match &layout.jail {
                    Some(j) => j.give(&sock).map(|()| l).map_err(|e| format!("chown {}: {e}", sock.display())),
                    None => Ok(l),
                }) {
                    Ok(l) => l,
                    Err(e) => {
                        s.fail(e, None).await;
                        return s.outcome(None);
                    }
                };
                s.set(crate::State::Booting).await;
                s.vmm_spawned(spec.pid, &spec.work_dir.join("vmm.pid"));
                let vmm = AdoptedFc {
                    vmm: session::Adopted::new(spec.pid, &spec.work_dir, layout.host(jail::LOG), layout.console()),
                    api: ApiClient::new(layout.api_socket()),
                };
                let outcome = s.supervise(vmm, listener, ctl).await;
                cleanup(&layout, &spec.id).await;
                outcome
            };
            Ok(session::spawn_vm(&id, Launch::default(), timeout, console, run))
        })
    }
}

/// A Firecracker an earlier process started: seen through `/proc`, powered off through its API.
struct AdoptedFc {
    vmm: session::Adopted,
    api: ApiClient,
}

impl Vmm for AdoptedFc {
    fn backend(&self) -> &'static str {
        "firecracker runtime"
    }

    fn wait(&mut self) -> impl std::future::Future<Output = std::io::Result<std::process::ExitStatus>> + Send {
        self.vmm.wait()
    }

    fn start_kill(&mut self) {
        self.vmm.start_kill()
    }

    fn power_off(&mut self) -> impl std::future::Future<Output = ()> + Send {
        send_ctrl_alt_del(self.api.clone())
    }

    fn failure(&self, status: &std::io::Result<std::process::ExitStatus>, booting: bool) -> String {
        self.vmm.failure(status, booting)
    }
}

/// Firecracker has no power button on x86: the guest's reboot ends it.
async fn send_ctrl_alt_del(api: ApiClient) {
    let api = api.with_timeout(Duration::from_secs(2));
    if let Err(e) = api.send(&ApiRequest::put("/actions", &Action::SendCtrlAltDel)).await {
        tracing::debug!(error = %e, "SendCtrlAltDel");
    }
}

/// Boot the kernel with `vt.probe` (init prints `vt-init: probe ok` and powers off, i.e.
/// reboots) and no devices. Returns Firecracker spawn → exit when the guest's init really ran
/// within `timeout`. Where KVM is not usable (here: PVM) the guest never gets there.
pub async fn probe_boot(cfg: &FirecrackerConfig, timeout: Duration) -> Result<Duration, String> {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("vt-fc-probe-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let r = probe_in(cfg, &dir, timeout).await;
    let _ = std::fs::remove_dir_all(&dir);
    r
}

async fn probe_in(cfg: &FirecrackerConfig, dir: &Path, timeout: Duration) -> Result<Duration, String> {
    let bin = find_bin(&cfg.firecracker_bin).ok_or_else(|| format!("{} not found", cfg.firecracker_bin.display()))?;
    let api = dir.join(jail::API_SOCKET);
    let console = dir.join("console.log");
    let start = Instant::now();
    let mut child = spawn_logged(&bin, &[OsString::from("--api-sock"), api.clone().into()], &console)?;
    wait_api(&api, &mut child, cfg.api_timeout)
        .await
        .map_err(|e| e.unwrap_or_else(|st| format!("firecracker exited ({st})")))?;
    let kernel = std::fs::canonicalize(&cfg.kernel).unwrap_or(cfg.kernel.clone());
    let initrd = std::fs::canonicalize(&cfg.initramfs).unwrap_or(cfg.initramfs.clone());
    let reqs = [
        ApiRequest::put("/machine-config", &api::MachineConfig { vcpu_count: 1, mem_size_mib: 128, smt: false }),
        ApiRequest::put(
            "/boot-source",
            &api::BootSource {
                kernel_image_path: kernel.to_string_lossy().into_owned(),
                initrd_path: Some(initrd.to_string_lossy().into_owned()),
                boot_args: boot_args(cfg, "vt.probe"),
            },
        ),
        ApiRequest::put("/actions", &Action::InstanceStart),
    ];
    ApiClient::new(&api).send_all(&reqs).await.map_err(|e| e.to_string())?;
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(st)) => {
            let took = start.elapsed();
            let text = std::fs::read_to_string(&console).unwrap_or_default();
            if text.contains("vt-init: probe ok") {
                Ok(took)
            } else {
                let last = session::last_line(&console);
                Err(format!("guest init did not run (firecracker exited: {st}; console: {last})"))
            }
        }
        Ok(Err(e)) => Err(format!("wait: {e}")),
        Err(_) => Err(format!("no guest reboot within {timeout:?}: {}", session::last_line(&console))),
    }
}

/// Ok when `/dev/kvm` exists, is not PVM ([`crate::kvm::KvmHost`], told at once) and a
/// [`probe_boot`] works within 10 s (its Firecracker is killed either way).
pub async fn probe_kvm(cfg: &FirecrackerConfig) -> Result<(), String> {
    if let Some(why) = crate::kvm::KvmHost::detect().unusable() {
        return Err(why.into());
    }
    probe_boot(cfg, Duration::from_secs(10)).await.map(|_| ())
}

/// Spawn `bin args` with stdin from /dev/null and stdout + stderr appended to `log`.
fn spawn_logged(bin: &Path, args: &[OsString], log: &Path) -> Result<Child, String> {
    let out = std::fs::File::create(log).map_err(|e| format!("create {}: {e}", log.display()))?;
    let err = out.try_clone().map_err(|e| format!("{}: {e}", log.display()))?;
    Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .kill_on_drop(true)
        // Its own process group: a Ctrl-C in the server's terminal is the server's to handle.
        .process_group(0)
        .spawn()
        .map_err(|e| format!("start {}: {e}", bin.display()))
}

/// Wait until Firecracker accepts connections on its API socket. `Err(Err(status))`: it
/// exited first; `Err(Ok(msg))`: another failure.
async fn wait_api(
    sock: &Path,
    child: &mut Child,
    timeout: Duration,
) -> Result<(), Result<String, std::process::ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if UnixStream::connect(sock).await.is_ok() {
            return Ok(());
        }
        match child.try_wait() {
            Ok(Some(st)) => return Err(Err(st)),
            Ok(None) => {}
            Err(e) => return Err(Ok(format!("wait for firecracker: {e}"))),
        }
        if Instant::now() > deadline {
            return Err(Ok(format!("firecracker did not open its API socket {} within {timeout:?}", sock.display())));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

struct Driver {
    cfg: FirecrackerConfig,
    exec: PathBuf,
    layout: Layout,
    spec: InstanceSpec,
}

impl Driver {
    async fn run(self, mut s: Session, ctl: mpsc::Receiver<Control>) -> Outcome {
        // Removes the tap (and the jail's network namespace) when this ends, however it ends.
        let tap = self.spec.network.as_ref().map(|n| crate::net::TapGuard(n.tap.clone()));
        let netns = self.layout.jail.as_ref().and_then(|j| j.netns.clone()).map(crate::net::NetnsGuard);
        // Removes the jail (detaching its loop devices) and frees its uid, also when this task
        // is aborted.
        let jail = self.layout.jail.clone().map(JailGuard);
        s.set(crate::State::Preparing).await;
        let listener = match self.prepare().await {
            Ok(l) => l,
            Err(e) => {
                s.fail(e, None).await;
                self.cleanup().await;
                return s.outcome(None);
            }
        };
        s.timings.prepared = Some(s.t0.elapsed());
        s.set(crate::State::Booting).await;
        let mut child = match self.spawn() {
            Ok(c) => c,
            Err(e) => {
                s.fail(e, None).await;
                self.cleanup().await;
                return s.outcome(None);
            }
        };
        s.vmm_spawned(child.id().unwrap_or(0), &self.spec.work_dir.join("vmm.pid"));
        let vmm = match self.boot(&mut child).await {
            Ok(()) => self.fc(child),
            Err(reason) => {
                // Leave nothing behind: the VMM goes, then its files.
                let _ = child.start_kill();
                let code = child.wait().await.ok().and_then(|st| st.code());
                s.fail(reason, None).await;
                self.cleanup().await;
                return s.outcome(code);
            }
        };
        let outcome = s.supervise(vmm, listener, ctl).await;
        if !outcome.state.is_terminal() {
            // Abandoned (`Control::Abandon`): Firecracker runs on in its jail, namespace and
            // tap; the agent that attaches to it cleans up when it ends.
            #[allow(clippy::mem_forget)] // the point: the guards must not remove them
            std::mem::forget((tap, netns, jail));
            return outcome;
        }
        self.cleanup().await;
        outcome
    }

    /// The running Firecracker as the conversation sees it.
    fn fc(&self, child: Child) -> Fc {
        Fc {
            child,
            api: ApiClient::new(self.layout.api_socket()),
            log: self.layout.host(jail::LOG),
            log_name: self.spec.work_dir.join(jail::LOG),
            console: self.layout.console(),
            work_dir: self.spec.work_dir.clone(),
            jailed: self.layout.jail.is_some(),
            record: VmmRecord::new("firecracker", vec![], &self.spec),
        }
    }

    /// The task of a restored VM (unjailed): tap, sockets, a new Firecracker, the snapshot
    /// loaded and resumed, then the conversation of an attach.
    async fn restore(self, mut claim: snapshot::Claim, mut s: Session, ctl: mpsc::Receiver<Control>) -> Outcome {
        let _tap = self.spec.network.as_ref().map(|n| crate::net::TapGuard(n.tap.clone()));
        s.resume = true;
        s.restored = true;
        s.set(crate::State::Preparing).await;
        let l = &self.layout;
        let prepared = async {
            let log = l.host(jail::LOG);
            std::fs::File::create(&log).map_err(|e| format!("create {}: {e}", log.display()))?;
            // Firecracker binds the vsock's uds_path again as it loads the device.
            for p in [l.api_socket(), l.host(jail::VSOCK_UDS)] {
                let _ = std::fs::remove_file(p);
            }
            if let Some(n) = &self.spec.network {
                n.create_tap().await.map_err(|e| format!("network: {e}"))?;
            }
            let sock = l.channel_listener(VSOCK_PORT);
            let _ = std::fs::remove_file(&sock);
            UnixListener::bind(&sock).map_err(|e| format!("listen on {}: {e}", sock.display()))
        };
        let listener = match prepared.await {
            Ok(listener) => listener,
            Err(e) => {
                claim.release();
                s.fail(e, None).await;
                self.cleanup().await;
                return s.outcome(None);
            }
        };
        s.timings.prepared = Some(s.t0.elapsed());
        s.set(crate::State::Booting).await;
        let mut child = match self.spawn() {
            Ok(c) => c,
            Err(e) => {
                claim.release();
                s.fail(e, None).await;
                self.cleanup().await;
                return s.outcome(None);
            }
        };
        s.vmm_spawned(child.id().unwrap_or(0), &self.spec.work_dir.join("vmm.pid"));
        let sock = l.api_socket();
        let loaded = match wait_api(&sock, &mut child, self.cfg.api_timeout).await {
            Ok(()) => {
                let reqs = api::restore_requests(Some(&l.vmm(jail::LOG)), &claim.path(), &claim.memory());
                ApiClient::new(&sock).send_all(&reqs).await.map_err(|e| e.to_string())
            }
            Err(Ok(msg)) => Err(msg),
            Err(Err(st)) => {
                Err(exit_reason(st, true, &l.host(jail::LOG), &self.spec.work_dir.join(jail::LOG), &l.console()))
            }
        };
        if let Err(e) = loaded {
            let _ = child.start_kill();
            let code = child.wait().await.ok().and_then(|st| st.code());
            // Whether the vCPUs ran is unknown once the load was sent; only a refusal before
            // it (or Firecracker's own refusal of it) gives the snapshot back.
            claim.release();
            s.fail(format!("restoring the snapshot failed: {e}"), None).await;
            self.cleanup().await;
            return s.outcome(code);
        }
        claim.consume();
        s.timings.snapshot_loaded = Some(s.t0.elapsed());
        let outcome = s.supervise(self.fc(child), listener, ctl).await;
        self.cleanup().await;
        outcome
    }

    /// Scratch disk, tap, jail and its resources, log file, the guest channel listener.
    async fn prepare(&self) -> Result<UnixListener, String> {
        let l = &self.layout;
        let dir = &self.spec.work_dir;
        tokio::fs::create_dir_all(dir).await.map_err(|e| format!("create {}: {e}", dir.display()))?;
        // A snapshot left here belongs to the scratch disk made again below.
        snapshot::remove(dir).map_err(|e| format!("remove the old snapshot in {}: {e}", dir.display()))?;
        if let Some(j) = &l.jail {
            let io = |what: &str, e: std::io::Error| format!("jail {}: {what}: {e}", j.root.display());
            j.create().map_err(|e| io("create", e))?;
            j.link(&self.cfg.kernel, jail::JAIL_KERNEL).map_err(|e| io("kernel", e))?;
            j.link(&self.cfg.initramfs, jail::JAIL_INITRAMFS).map_err(|e| io("initramfs", e))?;
            j.link(&self.spec.root_disk, jail::JAIL_ROOT_DISK).map_err(|e| io("root disk", e))?;
            // Never a link: the volume's own inode would be chowned.
            for (i, v) in self.spec.volumes.iter().enumerate() {
                j.attach_disk(&v.disk, &format!("vol{i}.ext4")).map_err(|e| io(&format!("volume {}", v.name), e))?;
            }
        }
        let scratch = l.host(jail::SCRATCH);
        session::make_scratch_disk(&self.cfg.mkfs_bin, &scratch, self.spec.scratch_size).await?;
        let log = l.host(jail::LOG);
        std::fs::File::create(&log).map_err(|e| format!("create {}: {e}", log.display()))?;
        for p in [l.api_socket(), l.host(jail::VSOCK_UDS)] {
            let _ = std::fs::remove_file(p);
        }
        match (&self.spec.network, l.jail.as_ref().and_then(|j| Some((j, j.netns.as_ref()?)))) {
            (Some(n), Some((j, ns))) => {
                n.create_in_netns(ns, (j.uid, j.gid)).await.map_err(|e| format!("network: {e}"))?
            }
            (Some(n), None) => n.create_tap().await.map_err(|e| format!("network: {e}"))?,
            // A jail without a network still gets its (empty) namespace: no host network.
            (None, Some((_, ns))) => {
                crate::net::delete_netns(ns).await.map_err(|e| format!("network: {e}"))?;
                crate::net::create_netns(ns).await.map_err(|e| format!("network: {e}"))?;
            }
            (None, None) => {}
        }
        let sock = l.channel_listener(VSOCK_PORT);
        let _ = std::fs::remove_file(&sock);
        let listener = UnixListener::bind(&sock).map_err(|e| format!("listen on {}: {e}", sock.display()))?;
        if let Some(j) = &l.jail {
            for p in [&scratch, &log, &sock] {
                // A scratch disk that mkfs did not create (tests) has nothing to hand over.
                if p.exists() {
                    j.give(p).map_err(|e| format!("chown {}: {e}", p.display()))?;
                }
            }
        }
        Ok(listener)
    }

    fn spawn(&self) -> Result<Child, String> {
        let console = self.layout.console();
        match (&self.cfg.jailer, &self.layout.jail) {
            (Some(jc), Some(j)) => {
                let bin = find_bin(&jc.jailer_bin).unwrap_or(jc.jailer_bin.clone());
                spawn_logged(&bin, &j.argv(jc, &self.exec, &self.cgroups()), &console)
            }
            _ => {
                let args = [
                    OsString::from("--api-sock"),
                    self.layout.api_socket().into(),
                    "--id".into(),
                    jail::jail_id(&self.spec.id).into(),
                ];
                spawn_logged(&self.exec, &args, &console)
            }
        }
    }

    /// What the jailer writes in the instance's cgroup v2 (with `cgroup_parent`): the guest's
    /// memory plus the VMM's overhead as `memory.max`, and the CPU request as `cpu.weight` (the
    /// weight the agent gives its own VMM cgroups, `crate::cgroup::cpu_weight`).
    fn cgroups(&self) -> Vec<String> {
        self.cfg.jailer.as_ref().map_or(vec![], |jc| jail_cgroups(jc, self.spec.memory_mib, self.spec.cpu_millis))
    }

    /// What Firecracker is told, with paths as it names them.
    fn plan(&self) -> BootPlan {
        let l = &self.layout;
        let jailed = l.jail.is_some();
        let res = |name: &str, host: &Path| if jailed { l.vmm(name) } else { abs(host) };
        BootPlan {
            log_path: Some(l.vmm(jail::LOG)),
            vcpus: self.spec.vcpus,
            memory_mib: self.spec.memory_mib,
            kernel: res(jail::JAIL_KERNEL, &self.cfg.kernel),
            initramfs: Some(res(jail::JAIL_INITRAMFS, &self.cfg.initramfs)),
            boot_args: boot_args(&self.cfg, ""),
            root_disk: res(jail::JAIL_ROOT_DISK, &self.spec.root_disk),
            scratch_disk: l.vmm(jail::SCRATCH),
            extra_disks: self
                .spec
                .volumes
                .iter()
                .enumerate()
                .map(|(i, v)| (format!("vol{i}"), res(&format!("vol{i}.ext4"), &v.disk)))
                .collect(),
            tap: self.spec.network.as_ref().map(|n| (n.tap.clone(), n.mac())),
            vsock_cid: GUEST_CID,
            vsock_uds: l.vmm(jail::VSOCK_UDS),
        }
    }

    /// Wait for the API socket, configure the machine, start it.
    async fn boot(&self, child: &mut Child) -> Result<(), String> {
        let sock = self.layout.api_socket();
        if let Err(e) = wait_api(&sock, child, self.cfg.api_timeout).await {
            return Err(match e {
                Ok(msg) => msg,
                Err(st) => exit_reason(
                    st,
                    true,
                    &self.layout.host(jail::LOG),
                    &self.spec.work_dir.join(jail::LOG),
                    &self.layout.console(),
                ),
            });
        }
        ApiClient::new(sock).send_all(&self.plan().requests()).await.map_err(|e| e.to_string())
    }

    async fn cleanup(&self) {
        cleanup(&self.layout, &self.spec.id).await
    }
}

/// After the VMM is gone: the jail (its log copied to the work dir first), the sockets.
/// (The tap goes with `run`'s `TapGuard`, or the agent's for an attached VM.)
async fn cleanup(l: &Layout, id: &str) {
    if let Some(j) = &l.jail {
        let _ = std::fs::copy(l.host(jail::LOG), l.work_dir.join(jail::LOG));
        if let Err(e) = j.remove() {
            tracing::warn!(instance = %id, error = %e, jail = %j.dir.display(), "jail not removed");
        }
        j.release();
        if let Some(ns) = &j.netns {
            if let Err(e) = crate::net::delete_netns(ns).await {
                tracing::warn!(instance = %id, error = %e, "network namespace not removed");
            }
        }
    } else {
        for p in [l.api_socket(), l.host(jail::VSOCK_UDS), l.channel_listener(VSOCK_PORT)] {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn abs(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_owned())
}

/// "firecracker exited (…) before its entrypoint started: <last log line> (console: …, log: …)".
/// `log` is read now; `log_name` is where it is kept after the VM (outside the jail).
fn exit_reason(status: std::process::ExitStatus, booting: bool, log: &Path, log_name: &Path, console: &Path) -> String {
    let mut s = format!("firecracker exited ({status})");
    if booting {
        s.push_str(" before its entrypoint started");
    }
    let last = session::last_line(log);
    if !last.is_empty() {
        s.push_str(&format!(": {last}"));
    }
    s.push_str(&format!(" (console: {}, log: {})", console.display(), log_name.display()));
    s
}

/// Removes a jail and releases its uid when dropped.
struct JailGuard(Jail);

impl Drop for JailGuard {
    fn drop(&mut self) {
        if let Err(e) = self.0.remove() {
            tracing::warn!(error = %e, jail = %self.0.dir.display(), "jail not removed");
        }
        self.0.release();
    }
}

/// The running Firecracker, as the guest channel conversation sees it.
struct Fc {
    child: Child,
    api: ApiClient,
    /// Firecracker's log where it writes it, and where it is kept after the VM.
    log: PathBuf,
    log_name: PathBuf,
    console: PathBuf,
    work_dir: PathBuf,
    jailed: bool,
    /// What the VM uses (written next to a snapshot of it).
    record: VmmRecord,
}

impl Fc {
    /// Pause, `PUT /snapshot/create` into the snapshot dir, commit. On an error the caller
    /// resumes the VM.
    async fn save(&mut self) -> Result<u64, String> {
        let d = snapshot::dir(&self.work_dir);
        tokio::fs::create_dir_all(&d).await.map_err(|e| format!("create {}: {e}", d.display()))?;
        let (state, memory) = (snapshot::partial(&self.work_dir), snapshot::memory_partial(&self.work_dir));
        let (state, memory) = (abs(&state), abs(&memory));
        self.api.send_all(&api::suspend_requests(&state, &memory)).await.map_err(|e| e.to_string())?;
        let (record, dir) = (self.record.clone(), self.work_dir.clone());
        tokio::task::spawn_blocking(move || snapshot::commit(&dir, &record))
            .await
            .map_err(|e| format!("commit the snapshot: {e}"))?
    }
}

impl Vmm for Fc {
    fn backend(&self) -> &'static str {
        "firecracker runtime"
    }

    async fn snapshot(&mut self) -> Result<Snapshot, SuspendError> {
        if self.jailed {
            return Err(SuspendError::Unsupported("firecracker runtime under the jailer"));
        }
        let start = Instant::now();
        let bytes = match self.save().await {
            Ok(b) => b,
            Err(e) => {
                for p in [snapshot::partial(&self.work_dir), snapshot::memory_partial(&self.work_dir)] {
                    let _ = tokio::fs::remove_file(p).await;
                }
                if let Err(r) = self.api.send(&ApiRequest::patch("/vm", &api::VmState::Resumed)).await {
                    // Never left paused: a VM that cannot go on is ended.
                    tracing::warn!(error = %r, "could not resume the VM after a failed suspend; ending it");
                    let _ = self.child.start_kill();
                    let _ = self.child.wait().await;
                    return Err(SuspendError::Lost(format!("{e}; resuming it failed: {r}")));
                }
                return Err(SuspendError::Failed(e));
            }
        };
        // Saved: Firecracker has no quit request; its state is on disk, so it is killed.
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        Ok(Snapshot { path: snapshot::dir(&self.work_dir).join("vmstate"), bytes, took: start.elapsed() })
    }

    fn wait(&mut self) -> impl std::future::Future<Output = std::io::Result<std::process::ExitStatus>> + Send {
        self.child.wait()
    }

    fn start_kill(&mut self) {
        let _ = self.child.start_kill();
    }

    fn power_off(&mut self) -> impl std::future::Future<Output = ()> + Send {
        send_ctrl_alt_del(self.api.clone())
    }

    fn failure(&self, status: &std::io::Result<std::process::ExitStatus>, booting: bool) -> String {
        match status {
            Ok(st) => exit_reason(*st, booting, &self.log, &self.log_name, &self.console),
            Err(e) => format!("waiting for firecracker: {e}"),
        }
    }
}

/// The cgroup v2 settings the jailer writes for an instance of `memory_mib` and `cpu_millis`
/// (none without a cgroup parent): `memory.max` (the guest's memory plus the VMM's overhead)
/// and `cpu.weight` (the weight the agent gives its own VMM cgroups).
fn jail_cgroups(jc: &JailerConfig, memory_mib: u32, cpu_millis: u32) -> Vec<String> {
    if jc.cgroup_parent.is_none() {
        return vec![];
    }
    let mib = u64::from(memory_mib) + u64::from(jc.memory_overhead_mib);
    vec![format!("memory.max={}", mib << 20), format!("cpu.weight={}", crate::cgroup::cpu_weight(cpu_millis))]
}
