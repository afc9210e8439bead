//! The qemu backend: `qemu-system-x86_64 -M microvm` with virtio-mmio devices, KVM when a
//! probe boot on it succeeds, otherwise software emulation (TCG). The guest finds the devices
//! on its command line (vt's own kernel: `acpi=off`, QEMU lists them there) or through ACPI
//! (Debian's kernel, which has no command-line device discovery); see [`QemuConfig::acpi`].
//!
//! Per instance (`InstanceSpec::work_dir`):
//!
//! | file | what |
//! | --- | --- |
//! | `scratch.ext4` | writable scratch disk, `mkfs.ext4` by us, `/dev/vdb` in the guest |
//! | `channel.sock` | unix socket we listen on; QEMU connects to it as the virtio-console port `vt.channel` (and again, every second, when the listener went away: a restarted agent re-attaches) |
//! | `console.log` | the guest's serial console (`ttyS0`) |
//! | `qemu.log` | QEMU's own stdout/stderr |
//! | `vmm.pid` | QEMU's pid |
//! | `qmp.sock` | QEMU's machine protocol (QMP) socket: pause, save, resume |
//! | `vmm.json` | how QEMU was started (`crate::snapshot`): what a suspend records, also for a VM adopted after an agent restart |
//! | `snapshot/` | a suspended VM (`crate::snapshot`): `vmstate` (QEMU's migration stream), `vmm.json` |
//!
//! **Suspend** ([`crate::Vm::suspend`]): QMP `stop`, `migrate` to `exec:cat > snapshot/vmstate.partial`
//! (QEMU 7.2 has no `file:` migration URI), wait for `completed`, sync and rename it to
//! `vmstate`, `quit`. The disks stay where they are (root read-only; scratch and volumes are
//! flushed by `stop`). **Restore** ([`Runtime::restore`]): claim the snapshot, make the tap
//! again, listen on `channel.sock`, start QEMU with the recorded arguments plus
//! `-incoming exec:cat snapshot/vmstate.restoring`, wait for the load (QMP status leaves
//! `inmigrate`), `cont`, delete the state (never resumed twice), then the conversation of an
//! attach plus `Restored` (the guest takes the host's wall clock).
//!
//! Everything but the QEMU command line is shared with the Firecracker backend
//! (`crate::session`): spec checks, scratch disk, lifecycle, the guest channel conversation.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UnixListener;
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, OnceCell};

use vt_guest_proto::PORT_NAME;

use crate::kvm::KvmHost;
use crate::qmp::{shell_path, Qmp};
use crate::session::{self, Session, Vmm};
use crate::snapshot::{self, VmmRecord};
use crate::{
    AttachSpec, BoxFuture, Control, InstanceSpec, Launch, Outcome, Runtime, RuntimeError, Snapshot, State,
    SuspendError, Vm,
};

/// How long QEMU has to answer on its QMP socket after it was spawned.
const QMP_CONNECT: Duration = Duration::from_secs(10);
/// How long saving a VM's state may take.
const SAVE_TIMEOUT: Duration = Duration::from_secs(120);

/// Which accelerator QEMU uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Software emulation (works everywhere, slow).
    Tcg,
    /// KVM, without checking it works.
    Kvm,
    /// KVM if `/dev/kvm` exists, is not PVM ([`crate::kvm::KvmHost`]) and a probe boot on it
    /// succeeds (once per runtime), else TCG.
    Auto,
}

impl std::str::FromStr for Accel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tcg" => Ok(Accel::Tcg),
            "kvm" => Ok(Accel::Kvm),
            "auto" => Ok(Accel::Auto),
            o => Err(format!("unknown accelerator {o:?} (tcg, kvm, auto)")),
        }
    }
}

/// Node-wide configuration of the qemu backend.
#[derive(Debug, Clone)]
pub struct QemuConfig {
    pub qemu_bin: PathBuf,
    /// Uncompressed kernel (`vmlinux`, PVH entry) or a bzImage.
    pub kernel: PathBuf,
    /// initramfs holding vt-init as `/init` and the modules it loads.
    pub initramfs: PathBuf,
    pub accel: Accel,
    /// Host TSC frequency for `tsc_early_khz=` (needed under TCG); `None`: read /proc/cpuinfo.
    pub tsc_khz: Option<u64>,
    /// Kernel messages on the console (`vt.debug` for init's step timings) instead of `quiet`.
    pub verbose_console: bool,
    /// More words for the guest kernel's command line (empty by default; `vt-boot-bench
    /// --again` adds `vt.again`).
    pub boot_args: String,
    pub mkfs_bin: PathBuf,
    /// ACPI tables for the guest (`-M microvm`): Debian's kernel finds the virtio-mmio devices
    /// and powers off only through them. `false` for vt's own kernel (no ACPI):
    /// `-M microvm,acpi=off`, QEMU then puts `virtio_mmio.device=` words on the kernel command
    /// line, and the guest powers off by rebooting (`reboot=t vt.poweroff=reboot`; QEMU exits
    /// on it, `-no-reboot`), which also skips the ACPI interpreter's ~0.3 s of boot under TCG.
    pub acpi: bool,
}

/// A word in a guest directory's `kernel.features` (written by `scripts/guest-kernel.sh`):
/// the kernel has no ACPI ([`QemuConfig::acpi`]).
pub const FEATURE_NO_ACPI: &str = "no-acpi";

impl QemuConfig {
    /// Defaults for a guest directory prepared by `scripts/guest-kernel.sh`.
    /// What this host lacks to boot with this config: the guest kernel and
    /// initramfs, and the qemu and mkfs.ext4 binaries. Empty when it can boot.
    pub fn missing(&self) -> Vec<String> {
        let mut missing: Vec<String> = [&self.kernel, &self.initramfs]
            .into_iter()
            .filter(|p| !p.is_file())
            .map(|p| p.display().to_string())
            .collect();
        for bin in [&self.qemu_bin, &self.mkfs_bin] {
            if crate::find_bin(bin).is_none() {
                missing.push(bin.display().to_string());
            }
        }
        missing
    }

    /// `acpi` from the directory's `kernel.features` (absent: on, as Debian's kernel needs).
    pub fn from_guest_dir(dir: &Path) -> Self {
        let features = std::fs::read_to_string(dir.join("kernel.features")).unwrap_or_default();
        Self {
            qemu_bin: "qemu-system-x86_64".into(),
            kernel: dir.join("vmlinux"),
            initramfs: dir.join("initramfs.cpio"),
            accel: Accel::Auto,
            tsc_khz: None,
            verbose_console: false,
            boot_args: String::new(),
            mkfs_bin: "mkfs.ext4".into(),
            acpi: !features.split_whitespace().any(|w| w == FEATURE_NO_ACPI),
        }
    }
}

/// Where `scripts/guest-kernel.sh` puts the guest kernel and initramfs:
/// `$VT_GUEST_DIR`, default `/var/cache/vt/guest`.
pub fn default_guest_dir() -> PathBuf {
    std::env::var_os("VT_GUEST_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/var/cache/vt/guest"))
}

/// The qemu runtime.
pub struct QemuRuntime {
    cfg: QemuConfig,
    resolved_accel: Arc<OnceCell<Accel>>,
}

impl QemuRuntime {
    pub fn new(cfg: QemuConfig) -> Result<Self, RuntimeError> {
        for (what, p) in [("kernel", &cfg.kernel), ("initramfs", &cfg.initramfs)] {
            if !p.is_file() {
                return Err(RuntimeError::Config(format!(
                    "guest {what} {} not found (run scripts/guest-kernel.sh)",
                    p.display()
                )));
            }
        }
        Ok(Self { cfg, resolved_accel: Arc::new(OnceCell::new()) })
    }

    pub fn config(&self) -> &QemuConfig {
        &self.cfg
    }

    /// The accelerator instances will use (runs the KVM probe boot once under `Auto`).
    pub async fn accel(&self) -> Accel {
        *self
            .resolved_accel
            .get_or_init(|| async {
                match self.cfg.accel {
                    Accel::Auto => match KvmHost::detect().unusable() {
                        Some(why) => {
                            tracing::info!("microVMs run under TCG (software emulation): {why}");
                            Accel::Tcg
                        }
                        None if probe_kvm(&self.cfg).await => Accel::Kvm,
                        None => {
                            tracing::info!("microVMs run under TCG: a probe boot under KVM did not finish in 10 s");
                            Accel::Tcg
                        }
                    },
                    a => a,
                }
            })
            .await
    }
}

impl Runtime for QemuRuntime {
    fn name(&self) -> &'static str {
        "qemu"
    }

    fn start(&self, mut spec: InstanceSpec) -> BoxFuture<'_, Result<Vm, RuntimeError>> {
        Box::pin(async move {
            session::check_spec(&mut spec)?;
            let sock = spec.work_dir.join("channel.sock");
            if sock.as_os_str().len() >= 100 {
                return Err(RuntimeError::Config(format!(
                    "work dir path too long for a unix socket: {}",
                    sock.display()
                )));
            }
            let accel = self.accel().await;
            let tsc_khz = match self.cfg.tsc_khz {
                Some(k) => Some(k),
                None => host_tsc_khz(),
            };
            let (id, launch, timeout) = (spec.id.clone(), spec.launch.clone(), spec.boot_timeout);
            let console = spec.work_dir.join("console.log");
            let driver = Driver { cfg: self.cfg.clone(), accel, tsc_khz, spec };
            Ok(session::spawn_vm(&id, launch, timeout, console, move |s, ctl| driver.run(s, ctl)))
        })
    }

    fn can_attach(&self) -> bool {
        true
    }

    fn attach(&self, spec: AttachSpec) -> BoxFuture<'_, Result<Vm, RuntimeError>> {
        Box::pin(async move {
            let dir = spec.work_dir.clone();
            let console = dir.join("console.log");
            let run = move |mut s: Session, ctl: mpsc::Receiver<Control>| async move {
                s.resume = true;
                s.set(State::Preparing).await;
                // QEMU retries its chardev's connection every second (`reconnect=1`).
                let sock = dir.join("channel.sock");
                let _ = tokio::fs::remove_file(&sock).await;
                let listener = match UnixListener::bind(&sock) {
                    Ok(l) => l,
                    Err(e) => {
                        s.fail(format!("listen on {}: {e}", sock.display()), None).await;
                        return s.outcome(None);
                    }
                };
                s.set(State::Booting).await;
                s.vmm_spawned(spec.pid, &dir.join("vmm.pid"));
                let vmm = AdoptedQemu {
                    vmm: session::Adopted::new(spec.pid, &dir, dir.join("qemu.log"), dir.join("console.log")),
                    record: snapshot::read_running(&dir),
                    work_dir: dir.clone(),
                };
                s.supervise(vmm, listener, ctl).await
            };
            Ok(session::spawn_vm(&spec.id, Launch::default(), spec.timeout, console, run))
        })
    }

    fn can_snapshot(&self) -> bool {
        true
    }

    fn restore(&self, mut spec: InstanceSpec) -> BoxFuture<'_, Result<Vm, RuntimeError>> {
        Box::pin(async move {
            session::check_spec(&mut spec)?;
            let claim = snapshot::claim_for(self.name(), &spec)?;
            let (id, timeout) = (spec.id.clone(), spec.boot_timeout);
            let console = spec.work_dir.join("console.log");
            let cfg = self.cfg.clone();
            let run = move |s: Session, ctl: mpsc::Receiver<Control>| restore_vm(cfg, spec, claim, s, ctl);
            Ok(session::spawn_vm(&id, Launch::default(), timeout, console, run))
        })
    }
}

/// The task of a restored VM: tap, listener, QEMU loading the snapshot, `cont`, then the
/// conversation of an attach (plus `Restored`).
async fn restore_vm(
    cfg: QemuConfig,
    spec: InstanceSpec,
    mut claim: snapshot::Claim,
    mut s: Session,
    ctl: mpsc::Receiver<Control>,
) -> Outcome {
    let _tap = spec.network.as_ref().map(|n| crate::net::TapGuard(n.tap.clone()));
    let dir = spec.work_dir.clone();
    s.resume = true;
    s.restored = true;
    s.set(State::Preparing).await;
    let prepared = async {
        if let Some(n) = &spec.network {
            n.create_tap().await.map_err(|e| format!("network: {e}"))?;
        }
        let sock = dir.join("channel.sock");
        let _ = tokio::fs::remove_file(&sock).await;
        UnixListener::bind(&sock).map_err(|e| format!("listen on {}: {e}", sock.display()))
    };
    let listener = match prepared.await {
        Ok(l) => l,
        Err(e) => {
            claim.release();
            s.fail(e, None).await;
            return s.outcome(None);
        }
    };
    s.timings.prepared = Some(s.t0.elapsed());
    s.set(State::Booting).await;
    let incoming = match shell_path(&claim.path()) {
        Ok(p) => format!("exec:cat {p}"),
        Err(e) => {
            claim.release();
            s.fail(format!("snapshot: {e}"), None).await;
            return s.outcome(None);
        }
    };
    let mut args = claim.record.args.clone();
    args.extend(["-incoming".into(), incoming]);
    let child = match spawn_qemu(&cfg, &args, &dir) {
        Ok(c) => c,
        Err(e) => {
            claim.release();
            s.fail(e, None).await;
            return s.outcome(None);
        }
    };
    s.vmm_spawned(child.id().unwrap_or(0), &dir.join("vmm.pid"));
    if let Err(e) = snapshot::write_running(&dir, &claim.record) {
        tracing::warn!(error = %e, "an agent restarted later cannot suspend this VM");
    }
    let mut vmm = Qemu::new(child, &dir, claim.record.clone());
    // Loaded: QEMU leaves `inmigrate` (paused, the guest not run yet); then let it run.
    let loaded = async {
        let mut q = Qmp::connect(&vmm.qmp, QMP_CONNECT).await?;
        loop {
            match q.status().await?.as_str() {
                "inmigrate" => tokio::time::sleep(Duration::from_millis(5)).await,
                "paused" | "postmigrate" | "prelaunch" => break,
                other => return Err(format!("QEMU is {other} after loading the snapshot")),
            }
        }
        q.execute("cont", serde_json::json!({})).await.map(drop)
    };
    let r = tokio::select! {
        r = tokio::time::timeout(spec.boot_timeout, loaded) => r.unwrap_or_else(|_| Err(format!("not loaded within {:?}", spec.boot_timeout))),
        st = vmm.child.wait() => Err(vmm.failure(&st, true)),
    };
    if let Err(e) = r {
        vmm.start_kill();
        let _ = vmm.child.wait().await;
        // The guest never ran from it: the snapshot may be restored again.
        claim.release();
        s.fail(format!("restoring the snapshot failed: {e}"), None).await;
        return s.outcome(None);
    }
    // The guest runs: this snapshot must never run again.
    claim.consume();
    s.timings.snapshot_loaded = Some(s.t0.elapsed());
    s.supervise(vmm, listener, ctl).await
}

/// Host TSC frequency in kHz, from `/proc/cpuinfo` ("cpu MHz").
pub fn host_tsc_khz() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let mhz: f64 = text.lines().find(|l| l.starts_with("cpu MHz"))?.split(':').nth(1)?.trim().parse().ok()?;
    Some((mhz * 1000.0) as u64)
}

fn kernel_cmdline(cfg: &QemuConfig, accel: Accel, tsc_khz: Option<u64>, extra: &str) -> String {
    // no_timer_check: microvm's 8254 is not wired to the IO-APIC as the kernel's timer check
    // expects; the check fails and tries its fallbacks (~0.1 s of boot under TCG) for a timer
    // the kernel does not use afterwards (the local APIC's is).
    let mut c = String::from("console=ttyS0 panic=-1 no_timer_check");
    if cfg.verbose_console {
        c.push_str(" vt.debug");
    } else {
        c.push_str(" quiet");
    }
    if !cfg.acpi {
        // No ACPI power-off: reboot (a triple fault, no keyboard controller needed); QEMU
        // exits on it (-no-reboot).
        c.push_str(" reboot=t ");
        c.push_str(crate::firecracker::POWEROFF_BY_REBOOT);
    }
    if accel == Accel::Tcg {
        // Without it about one TCG boot in six hangs calibrating against the PIT.
        if let Some(k) = tsc_khz {
            c.push_str(&format!(" tsc_early_khz={k}"));
        }
    }
    for words in [cfg.boot_args.trim(), extra] {
        if !words.is_empty() {
            c.push(' ');
            c.push_str(words);
        }
    }
    c
}

fn base_args(cfg: &QemuConfig, accel: Accel, memory_mib: u32, vcpus: u32) -> Vec<String> {
    let (accel_arg, cpu) = match accel {
        Accel::Kvm => ("kvm", "host"),
        _ => ("tcg", "max"),
    };
    let mut a: Vec<String> = vec![
        // With ACPI the kernel finds the virtio-mmio devices through it; without, QEMU lists
        // them on the kernel command line.
        "-M".into(),
        if cfg.acpi { "microvm".into() } else { "microvm,acpi=off".into() },
        "-accel".into(),
        accel_arg.into(),
        "-cpu".into(),
        cpu.into(),
        "-m".into(),
        format!("{memory_mib}"),
        "-smp".into(),
        format!("{}", vcpus.max(1)),
        "-nodefaults".into(),
        "-no-user-config".into(),
        "-display".into(),
        "none".into(),
        "-no-reboot".into(),
        "-kernel".into(),
        cfg.kernel.display().to_string(),
        "-initrd".into(),
        cfg.initramfs.display().to_string(),
    ];
    a.shrink_to_fit();
    a
}

/// Escape a path for a QEMU option value (commas are doubled).
fn qpath(p: &Path) -> String {
    p.display().to_string().replace(',', ",,")
}

/// Boot the kernel with `vt.probe` under KVM: init powers off at once. True when that works
/// within a few seconds (a nested "KVM" that cannot run the guest crawls, dies or makes QEMU
/// abort instead; PVM is told apart before any boot, [`crate::kvm::KvmHost`]).
pub async fn probe_kvm(cfg: &QemuConfig) -> bool {
    bare_boot(cfg, Accel::Kvm, Duration::from_secs(10)).await.is_ok()
}

/// The reference boot: the same kernel and initramfs with no devices at all, init powering
/// off as soon as it runs (`vt.probe`). Returns QEMU spawn → QEMU exit when the guest's init
/// really ran, within `timeout`. Benchmarks compare the full path against it.
pub async fn bare_boot(cfg: &QemuConfig, accel: Accel, timeout: Duration) -> Result<Duration, String> {
    let dir = tempdir_in_tmp("vt-bare-boot").map_err(|e| format!("temp dir: {e}"))?;
    let console = dir.join("console.log");
    let mut args = base_args(cfg, accel, 128, 1);
    args.extend([
        "-append".into(),
        kernel_cmdline(cfg, accel, host_tsc_khz(), "vt.probe"),
        "-serial".into(),
        format!("file:{}", qpath(&console)),
    ]);
    let start = Instant::now();
    let child = Command::new(&cfg.qemu_bin)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn();
    let r = match child {
        Ok(mut c) => match tokio::time::timeout(timeout, c.wait()).await {
            Ok(Ok(st)) if st.success() => {
                let took = start.elapsed();
                let text = std::fs::read_to_string(&console).unwrap_or_default();
                if text.contains("vt-init: probe ok") {
                    Ok(took)
                } else {
                    Err("guest init did not run".to_string())
                }
            }
            Ok(Ok(st)) => Err(format!("qemu exited with {st}")),
            Ok(Err(e)) => Err(format!("wait: {e}")),
            Err(_) => Err(format!("no power-off within {timeout:?}")),
        },
        Err(e) => Err(format!("start qemu: {e}")),
    };
    let _ = std::fs::remove_dir_all(&dir);
    r
}

fn tempdir_in_tmp(prefix: &str) -> std::io::Result<PathBuf> {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("{prefix}-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

struct Driver {
    cfg: QemuConfig,
    accel: Accel,
    tsc_khz: Option<u64>,
    spec: InstanceSpec,
}

impl Driver {
    async fn run(self, mut s: Session, ctl: mpsc::Receiver<Control>) -> Outcome {
        // Removes the tap when this ends, however it ends.
        let _tap = self.spec.network.as_ref().map(|n| crate::net::TapGuard(n.tap.clone()));
        s.set(State::Preparing).await;
        let listener = match self.prepare().await {
            Ok(l) => l,
            Err(e) => {
                s.fail(e, None).await;
                return s.outcome(None);
            }
        };
        s.timings.prepared = Some(s.t0.elapsed());
        s.set(State::Booting).await;
        let child = match self.spawn() {
            Ok(c) => c,
            Err(e) => {
                s.fail(e, None).await;
                return s.outcome(None);
            }
        };
        let dir = &self.spec.work_dir;
        s.vmm_spawned(child.id().unwrap_or(0), &dir.join("vmm.pid"));
        let record = VmmRecord::new("qemu", self.args(), &self.spec);
        if let Err(e) = snapshot::write_running(dir, &record) {
            tracing::warn!(error = %e, "an agent restarted later cannot suspend this VM");
        }
        let vmm = Qemu::new(child, dir, record);
        s.supervise(vmm, listener, ctl).await
    }

    /// Scratch disk, tap, the guest channel listener.
    async fn prepare(&self) -> Result<UnixListener, String> {
        let dir = &self.spec.work_dir;
        tokio::fs::create_dir_all(dir).await.map_err(|e| format!("create {}: {e}", dir.display()))?;
        // A snapshot left here belongs to the scratch disk made again below: it can never be
        // resumed now.
        let stale = dir.to_owned();
        tokio::task::spawn_blocking(move || snapshot::remove(&stale))
            .await
            .map_err(|e| format!("remove the old snapshot: {e}"))?
            .map_err(|e| format!("remove the old snapshot in {}: {e}", dir.display()))?;
        session::make_scratch_disk(&self.cfg.mkfs_bin, &dir.join("scratch.ext4"), self.spec.scratch_size).await?;
        if let Some(n) = &self.spec.network {
            n.create_tap().await.map_err(|e| format!("network: {e}"))?;
        }
        let sock = dir.join("channel.sock");
        let _ = tokio::fs::remove_file(&sock).await;
        UnixListener::bind(&sock).map_err(|e| format!("listen on {}: {e}", sock.display()))
    }

    fn spawn(&self) -> Result<Child, String> {
        spawn_qemu(&self.cfg, &self.args(), &self.spec.work_dir)
    }

    /// QEMU's arguments for this instance (a restore reuses them: same machine, same devices).
    fn args(&self) -> Vec<String> {
        let dir = &self.spec.work_dir;
        let mut args = base_args(&self.cfg, self.accel, self.spec.memory_mib, self.spec.vcpus);
        args.extend([
            "-append".into(),
            kernel_cmdline(&self.cfg, self.accel, self.tsc_khz, ""),
            "-chardev".into(),
            // Appended to: a restored VM's console follows what it printed before.
            format!("file,id=console,path={},append=on", qpath(&dir.join("console.log"))),
            "-serial".into(),
            "chardev:console".into(),
            // Root disk first (vda), scratch second (vdb); init finds them by label anyway.
            "-drive".into(),
            format!("id=root,file={},format=raw,if=none,readonly=on", qpath(&self.spec.root_disk)),
            "-device".into(),
            "virtio-blk-device,drive=root".into(),
            "-drive".into(),
            format!("id=scratch,file={},format=raw,if=none,discard=unmap", qpath(&dir.join("scratch.ext4"))),
            "-device".into(),
            "virtio-blk-device,drive=scratch".into(),
            "-device".into(),
            "virtio-serial-device,max_ports=2".into(),
            "-chardev".into(),
            // `reconnect`: if the agent goes away, QEMU connects to the next one's listener.
            format!("socket,id=channel,path={},reconnect=1", qpath(&dir.join("channel.sock"))),
            "-device".into(),
            format!("virtserialport,chardev=channel,name={PORT_NAME}"),
            "-qmp".into(),
            format!("unix:{},server=on,wait=off", qpath(&dir.join("qmp.sock"))),
        ]);
        for (i, v) in self.spec.volumes.iter().enumerate() {
            args.extend([
                "-drive".into(),
                format!("id=vol{i},file={},format=raw,if=none", qpath(&v.disk)),
                "-device".into(),
                format!("virtio-blk-device,drive=vol{i}"),
            ]);
        }
        if let Some(n) = &self.spec.network {
            args.extend([
                "-netdev".into(),
                format!("tap,id=net0,ifname={},script=no,downscript=no", n.tap),
                "-device".into(),
                format!("virtio-net-device,netdev=net0,mac={}", n.mac()),
            ]);
        }
        args
    }
}

/// Spawn QEMU with `args`, its stdout/stderr to `dir/qemu.log`.
fn spawn_qemu(cfg: &QemuConfig, args: &[String], dir: &Path) -> Result<Child, String> {
    let log = std::fs::File::create(dir.join("qemu.log")).map_err(|e| format!("create qemu.log: {e}"))?;
    let log2 = log.try_clone().map_err(|e| format!("qemu.log: {e}"))?;
    Command::new(&cfg.qemu_bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .kill_on_drop(true)
        // Its own process group: a Ctrl-C in the terminal of `vt server` is the server's to
        // handle (stop the VMs in order, or leave them for adoption), not QEMU's.
        .process_group(0)
        .spawn()
        .map_err(|e| format!("start {}: {e}", cfg.qemu_bin.display()))
}

/// The running QEMU, as the guest channel conversation sees it.
struct Qemu {
    child: Child,
    /// QEMU's own stdout/stderr.
    log: PathBuf,
    console: PathBuf,
    qmp: PathBuf,
    work_dir: PathBuf,
    /// How it runs (written next to a snapshot of it).
    record: VmmRecord,
}

impl Qemu {
    fn new(child: Child, dir: &Path, record: VmmRecord) -> Self {
        Qemu {
            child,
            log: dir.join("qemu.log"),
            console: dir.join("console.log"),
            qmp: dir.join("qmp.sock"),
            work_dir: dir.to_owned(),
            record,
        }
    }
}

/// Pause the QEMU whose QMP socket is `work_dir/qmp.sock`, save it to a snapshot with
/// `record`, and ask it to quit; on an error resume it. `gone` waits for the process to end.
async fn suspend_qemu(
    work_dir: &Path,
    record: &VmmRecord,
    gone: impl std::future::Future<Output = ()>,
) -> Result<Snapshot, SuspendError> {
    let start = Instant::now();
    let mut q = Qmp::connect(&work_dir.join("qmp.sock"), Duration::from_secs(2)).await.map_err(SuspendError::Failed)?;
    let bytes = match save(&mut q, work_dir, record).await {
        Ok(b) => b,
        Err(e) => {
            // A save still under way (timed out) is cancelled before the VM goes on.
            let _ = q.execute("migrate_cancel", serde_json::json!({})).await;
            let _ = tokio::fs::remove_file(snapshot::partial(work_dir)).await;
            if let Err(c) = q.execute("cont", serde_json::json!({})).await {
                // Never left paused: a VM that cannot go on is ended.
                tracing::warn!(error = %c, "could not resume the VM after a failed suspend; ending it");
                let _ = q.execute("quit", serde_json::json!({})).await;
                gone.await;
                return Err(SuspendError::Lost(format!("{e}; resuming it failed: {c}")));
            }
            return Err(SuspendError::Failed(e));
        }
    };
    // Saved: this QEMU has done its part.
    let _ = q.execute("quit", serde_json::json!({})).await;
    gone.await;
    Ok(Snapshot { path: snapshot::dir(work_dir).join("vmstate"), bytes, took: start.elapsed() })
}

/// Pause, save to `snapshot/vmstate.partial`, commit it. On an error the caller resumes.
async fn save(q: &mut Qmp, work_dir: &Path, record: &VmmRecord) -> Result<u64, String> {
    let partial = snapshot::partial(work_dir);
    let d = snapshot::dir(work_dir);
    tokio::fs::create_dir_all(&d).await.map_err(|e| format!("create {}: {e}", d.display()))?;
    let uri = format!("exec:cat > {}", shell_path(&partial)?);
    q.execute("stop", serde_json::json!({})).await?;
    q.execute("migrate", serde_json::json!({ "uri": uri })).await?;
    q.wait_migration(SAVE_TIMEOUT).await?;
    let (record, dir) = (record.clone(), work_dir.to_owned());
    tokio::task::spawn_blocking(move || snapshot::commit(&dir, &record))
        .await
        .map_err(|e| format!("commit the snapshot: {e}"))?
}

impl Vmm for Qemu {
    fn backend(&self) -> &'static str {
        "qemu runtime"
    }

    async fn snapshot(&mut self) -> Result<Snapshot, SuspendError> {
        let child = &mut self.child;
        let gone = async {
            if tokio::time::timeout(Duration::from_secs(5), child.wait()).await.is_err() {
                let _ = child.start_kill();
                let _ = child.wait().await;
            }
        };
        suspend_qemu(&self.work_dir, &self.record, gone).await
    }

    fn wait(&mut self) -> impl std::future::Future<Output = std::io::Result<std::process::ExitStatus>> + Send {
        self.child.wait()
    }

    fn start_kill(&mut self) {
        let _ = self.child.start_kill();
    }

    /// QEMU has nothing to ask: the guest powers off itself, or QEMU is killed.
    fn power_off(&mut self) -> impl std::future::Future<Output = ()> + Send {
        std::future::ready(())
    }

    /// "the VM exited (…) before its entrypoint started: <last qemu.log line> (console: …)".
    fn failure(&self, status: &std::io::Result<std::process::ExitStatus>, booting: bool) -> String {
        let status = match status {
            Ok(st) => st,
            Err(e) => return format!("waiting for qemu: {e}"),
        };
        let mut s = format!("the VM exited ({status})");
        if booting {
            s.push_str(" before its entrypoint started");
        }
        let last = session::last_line(&self.log);
        if !last.is_empty() {
            s.push_str(&format!(": {last}"));
        }
        s.push_str(&format!(" (console: {})", self.console.display()));
        s
    }
}

/// A QEMU an earlier process started (`Runtime::attach`): watched through `/proc`, and
/// suspended over its QMP socket like one of ours when its `vmm.json` was written.
struct AdoptedQemu {
    vmm: session::Adopted,
    record: Option<VmmRecord>,
    work_dir: PathBuf,
}

impl Vmm for AdoptedQemu {
    fn backend(&self) -> &'static str {
        "qemu runtime, for a VM started without a vmm.json,"
    }

    async fn snapshot(&mut self) -> Result<Snapshot, SuspendError> {
        let Some(record) = self.record.clone() else {
            return Err(SuspendError::Unsupported(self.backend()));
        };
        let vmm = &mut self.vmm;
        let gone = async {
            if tokio::time::timeout(Duration::from_secs(5), vmm.wait()).await.is_err() {
                vmm.start_kill();
                let _ = vmm.wait().await;
            }
        };
        suspend_qemu(&self.work_dir, &record, gone).await
    }

    fn wait(&mut self) -> impl std::future::Future<Output = std::io::Result<std::process::ExitStatus>> + Send {
        self.vmm.wait()
    }

    fn start_kill(&mut self) {
        self.vmm.start_kill()
    }

    fn power_off(&mut self) -> impl std::future::Future<Output = ()> + Send {
        std::future::ready(())
    }

    fn failure(&self, status: &std::io::Result<std::process::ExitStatus>, booting: bool) -> String {
        self.vmm.failure(status, booting)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_has_tsc_under_tcg_only() {
        let cfg = QemuConfig::from_guest_dir(Path::new("/g"));
        let c = kernel_cmdline(&cfg, Accel::Tcg, Some(2445406), "");
        assert_eq!(c, "console=ttyS0 panic=-1 no_timer_check quiet tsc_early_khz=2445406");
        assert!(!c.contains("rtc=off") && !c.contains("acpi=off"));
        let k = kernel_cmdline(&cfg, Accel::Kvm, Some(1), "vt.probe");
        assert_eq!(k, "console=ttyS0 panic=-1 no_timer_check quiet vt.probe");
        let cfg = QemuConfig { boot_args: " vt.again ".into(), verbose_console: true, ..cfg };
        let k = kernel_cmdline(&cfg, Accel::Kvm, Some(1), "vt.probe");
        assert_eq!(k, "console=ttyS0 panic=-1 no_timer_check vt.debug vt.again vt.probe");
    }

    #[test]
    fn machine_args() {
        let cfg = QemuConfig::from_guest_dir(Path::new("/g"));
        let a = base_args(&cfg, Accel::Tcg, 512, 2).join(" ");
        assert!(a.starts_with("-M microvm -accel tcg -cpu max -m 512 -smp 2 "), "{a}");
        assert!(a.contains("-kernel /g/vmlinux -initrd /g/initramfs.cpio"));
        assert_eq!(qpath(Path::new("/a,b")), "/a,,b");
        assert_eq!("auto".parse::<Accel>().unwrap(), Accel::Auto);
    }

    #[test]
    fn a_kernel_without_acpi_boots_acpi_off_and_powers_off_by_rebooting() {
        let dir = tempfile::tempdir().unwrap();
        assert!(QemuConfig::from_guest_dir(dir.path()).acpi, "no kernel.features: ACPI on");
        std::fs::write(dir.path().join("kernel.features"), "no-acpi\n").unwrap();
        let cfg = QemuConfig::from_guest_dir(dir.path());
        assert!(!cfg.acpi);
        let a = base_args(&cfg, Accel::Tcg, 512, 1).join(" ");
        assert!(a.starts_with("-M microvm,acpi=off -accel tcg "), "{a}");
        let c = kernel_cmdline(&cfg, Accel::Tcg, Some(2445406), "");
        assert_eq!(c, "console=ttyS0 panic=-1 no_timer_check quiet reboot=t vt.poweroff=reboot tsc_early_khz=2445406");
    }
}
