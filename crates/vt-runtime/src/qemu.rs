//! The qemu backend: `qemu-system-x86_64 -M microvm` with virtio-mmio devices (found by the
//! guest through ACPI, which therefore stays on), KVM when a probe boot on it succeeds,
//! otherwise software emulation (TCG).
//!
//! Per instance (`InstanceSpec::work_dir`):
//!
//! | file | what |
//! | --- | --- |
//! | `scratch.ext4` | writable scratch disk, `mkfs.ext4` by us, `/dev/vdb` in the guest |
//! | `channel.sock` | unix socket we listen on; QEMU connects to it as the virtio-console port `vt.channel` |
//! | `console.log` | the guest's serial console (`ttyS0`) |
//! | `qemu.log` | QEMU's own stdout/stderr |

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::UnixListener;
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, watch, OnceCell};
use tokio::time::{sleep_until, Instant as TokioInstant};

use vt_guest_proto::{FrameBuffer, Message, Role, PORT_NAME, PROTOCOL_VERSION};

use crate::{
    BootTimings, BoxFuture, Control, ExitStatus, InstanceSpec, Outcome, Runtime, RuntimeError,
    State, Vm, VmEvent,
};

/// Which accelerator QEMU uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Software emulation (works everywhere, slow).
    Tcg,
    /// KVM, without checking it works.
    Kvm,
    /// KVM if `/dev/kvm` exists and a probe boot on it succeeds (once per runtime), else TCG.
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
    pub mkfs_bin: PathBuf,
}

impl QemuConfig {
    /// Defaults for a guest directory prepared by `scripts/guest-kernel.sh`.
    /// What this host lacks to boot with this config: the guest kernel and
    /// initramfs, and the qemu and mkfs.ext4 binaries. Empty when it can boot.
    pub fn missing(&self) -> Vec<String> {
        let mut missing: Vec<String> = [&self.kernel, &self.initramfs].into_iter().filter(|p| !p.is_file()).map(|p| p.display().to_string()).collect();
        for bin in [&self.qemu_bin, &self.mkfs_bin] {
            let on_path = std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(bin).is_file()));
            if !on_path && !Path::new(bin).is_file() {
                missing.push(bin.display().to_string());
            }
        }
        missing
    }

    pub fn from_guest_dir(dir: &Path) -> Self {
        Self {
            qemu_bin: "qemu-system-x86_64".into(),
            kernel: dir.join("vmlinux"),
            initramfs: dir.join("initramfs.cpio"),
            accel: Accel::Tcg,
            tsc_khz: None,
            verbose_console: false,
            mkfs_bin: "mkfs.ext4".into(),
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
        Ok(Self {
            cfg,
            resolved_accel: Arc::new(OnceCell::new()),
        })
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
                    Accel::Auto => {
                        if Path::new("/dev/kvm").exists() && probe_kvm(&self.cfg).await {
                            Accel::Kvm
                        } else {
                            Accel::Tcg
                        }
                    }
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
            spec.launch.network = spec.network.as_ref().map(|n| n.guest_config());
            spec.launch.volumes = spec
                .volumes
                .iter()
                .map(|v| vt_guest_proto::Volume {
                    name: v.name.clone(),
                    label: v.label.clone(),
                    path: v.mount_path.clone(),
                })
                .collect();
            if let Some(v) = spec.volumes.iter().find(|v| !v.disk.is_file()) {
                return Err(RuntimeError::Config(format!(
                    "volume {}: disk {} not found",
                    v.name,
                    v.disk.display()
                )));
            }
            if spec.launch.argv.is_empty() {
                return Err(RuntimeError::Config("empty argv".into()));
            }
            if !spec.root_disk.is_file() {
                return Err(RuntimeError::Config(format!(
                    "root disk {} not found",
                    spec.root_disk.display()
                )));
            }
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
            let (ev_tx, ev_rx) = mpsc::channel(256);
            let (ctl_tx, ctl_rx) = mpsc::channel(16);
            let (st_tx, st_rx) = watch::channel(State::Allocated);
            let id = spec.id.clone();
            let pid = Arc::new(std::sync::atomic::AtomicU32::new(0));
            let timings = Arc::new(std::sync::Mutex::new(BootTimings::default()));
            let driver = Driver {
                pid: pid.clone(),
                shared_timings: timings.clone(),
                cfg: self.cfg.clone(),
                accel,
                tsc_khz,
                spec,
                events: ev_tx,
                state_tx: st_tx,
                state: State::Allocated,
                t0: Instant::now(),
                timings: BootTimings::default(),
            };
            let task = tokio::spawn(driver.run(ctl_rx));
            Ok(Vm {
                id,
                events: ev_rx,
                control: ctl_tx,
                state: st_rx,
                task,
                pid,
                timings,
            })
        })
    }
}

/// Host TSC frequency in kHz, from `/proc/cpuinfo` ("cpu MHz").
pub fn host_tsc_khz() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let mhz: f64 = text
        .lines()
        .find(|l| l.starts_with("cpu MHz"))?
        .split(':')
        .nth(1)?
        .trim()
        .parse()
        .ok()?;
    Some((mhz * 1000.0) as u64)
}

fn kernel_cmdline(cfg: &QemuConfig, accel: Accel, tsc_khz: Option<u64>, extra: &str) -> String {
    let mut c = String::from("console=ttyS0 panic=-1");
    if cfg.verbose_console {
        c.push_str(" vt.debug");
    } else {
        c.push_str(" quiet");
    }
    if accel == Accel::Tcg {
        // Without it about one TCG boot in six hangs calibrating against the PIT.
        if let Some(k) = tsc_khz {
            c.push_str(&format!(" tsc_early_khz={k}"));
        }
    }
    if !extra.is_empty() {
        c.push(' ');
        c.push_str(extra);
    }
    c
}

fn base_args(cfg: &QemuConfig, accel: Accel, memory_mib: u32, vcpus: u32) -> Vec<String> {
    let (accel_arg, cpu) = match accel {
        Accel::Kvm => ("kvm", "host"),
        _ => ("tcg", "max"),
    };
    let mut a: Vec<String> = vec![
        // ACPI stays on: the kernel finds the virtio-mmio devices only through it.
        "-M".into(),
        "microvm".into(),
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
/// within a few seconds (PVM-style nested "KVM" crawls, dies or makes QEMU abort instead).
pub async fn probe_kvm(cfg: &QemuConfig) -> bool {
    bare_boot(cfg, Accel::Kvm, Duration::from_secs(10))
        .await
        .is_ok()
}

/// The reference boot: the same kernel and initramfs with no devices at all, init powering
/// off as soon as it runs (`vt.probe`). Returns QEMU spawn → QEMU exit when the guest's init
/// really ran, within `timeout`. Benchmarks compare the full path against it.
pub async fn bare_boot(
    cfg: &QemuConfig,
    accel: Accel,
    timeout: Duration,
) -> Result<Duration, String> {
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
    pid: Arc<std::sync::atomic::AtomicU32>,
    shared_timings: Arc<std::sync::Mutex<BootTimings>>,
    cfg: QemuConfig,
    accel: Accel,
    tsc_khz: Option<u64>,
    spec: InstanceSpec,
    events: mpsc::Sender<VmEvent>,
    state_tx: watch::Sender<State>,
    state: State,
    t0: Instant,
    timings: BootTimings,
}

/// Why the driver loop ended before the VMM did.
enum Pending {
    None,
    Failed(String),
}

impl Driver {
    async fn set(&mut self, next: State) {
        if self.state.advance(next.clone()).is_ok() {
            if let Ok(mut t) = self.shared_timings.lock() {
                *t = self.timings.clone();
            }
            let _ = self.state_tx.send(next.clone());
            let _ = self.events.send(VmEvent::State(next)).await;
        }
    }

    async fn fail(&mut self, reason: String, exit: Option<ExitStatus>) {
        self.set(State::Failed { reason, exit }).await;
    }

    fn outcome(&self, vmm_exit: Option<i32>) -> Outcome {
        Outcome {
            state: self.state.clone(),
            timings: self.timings.clone(),
            vmm_exit,
        }
    }

    async fn run(mut self, ctl: mpsc::Receiver<Control>) -> Outcome {
        self.set(State::Preparing).await;
        let listener = match self.prepare().await {
            Ok(l) => l,
            Err(e) => {
                self.fail(e, None).await;
                return self.outcome(None);
            }
        };
        self.timings.prepared = Some(self.t0.elapsed());
        self.set(State::Booting).await;
        let child = match self.spawn() {
            Ok(c) => {
                let pid = c.id().unwrap_or(0);
                self.pid.store(pid, std::sync::atomic::Ordering::SeqCst);
                // For a node agent restarted after a crash: the VMM that may still run here.
                let _ = std::fs::write(self.spec.work_dir.join("vmm.pid"), format!("{pid}\n"));
                c
            }
            Err(e) => {
                self.fail(e, None).await;
                return self.outcome(None);
            }
        };
        self.timings.vmm_spawned = Some(self.t0.elapsed());
        let (id, tap) = (self.spec.id.clone(), self.spec.network.as_ref().map(|n| n.tap.clone()));
        let outcome = self.supervise(child, listener, ctl).await;
        if let Some(tap) = tap {
            if let Err(e) = crate::net::delete_tap(&tap).await {
                tracing::warn!(instance = %id, error = %e, "tap not removed; the next start of this instance replaces it");
            }
        }
        outcome
    }

    async fn prepare(&self) -> Result<UnixListener, String> {
        let dir = &self.spec.work_dir;
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| format!("create {}: {e}", dir.display()))?;
        let scratch = dir.join("scratch.ext4");
        let _ = tokio::fs::remove_file(&scratch).await;
        let out = Command::new(&self.cfg.mkfs_bin)
            .args([
                "-q",
                "-F",
                "-t",
                "ext4",
                "-O",
                "^has_journal",
                "-L",
                "vt-scratch",
                "-E",
            ])
            .arg("lazy_itable_init=1,nodiscard")
            .arg(&scratch)
            .arg(format!("{}k", (self.spec.scratch_size / 1024).max(8192)))
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| format!("run {}: {e}", self.cfg.mkfs_bin.display()))?;
        if !out.status.success() {
            return Err(format!(
                "mkfs.ext4 of the scratch disk failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        if let Some(n) = &self.spec.network {
            n.create_tap().await.map_err(|e| format!("network: {e}"))?;
        }
        let sock = dir.join("channel.sock");
        let _ = tokio::fs::remove_file(&sock).await;
        UnixListener::bind(&sock).map_err(|e| format!("listen on {}: {e}", sock.display()))
    }

    fn spawn(&self) -> Result<Child, String> {
        let dir = &self.spec.work_dir;
        let mut args = base_args(&self.cfg, self.accel, self.spec.memory_mib, self.spec.vcpus);
        args.extend([
            "-append".into(),
            kernel_cmdline(&self.cfg, self.accel, self.tsc_khz, ""),
            "-chardev".into(),
            format!("file,id=console,path={}", qpath(&dir.join("console.log"))),
            "-serial".into(),
            "chardev:console".into(),
            // Root disk first (vda), scratch second (vdb); init finds them by label anyway.
            "-drive".into(),
            format!(
                "id=root,file={},format=raw,if=none,readonly=on",
                qpath(&self.spec.root_disk)
            ),
            "-device".into(),
            "virtio-blk-device,drive=root".into(),
            "-drive".into(),
            format!(
                "id=scratch,file={},format=raw,if=none,discard=unmap",
                qpath(&dir.join("scratch.ext4"))
            ),
            "-device".into(),
            "virtio-blk-device,drive=scratch".into(),
            "-device".into(),
            "virtio-serial-device,max_ports=2".into(),
            "-chardev".into(),
            format!(
                "socket,id=channel,path={}",
                qpath(&dir.join("channel.sock"))
            ),
            "-device".into(),
            format!("virtserialport,chardev=channel,name={PORT_NAME}"),
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
        let log = std::fs::File::create(dir.join("qemu.log"))
            .map_err(|e| format!("create qemu.log: {e}"))?;
        let log2 = log.try_clone().map_err(|e| format!("qemu.log: {e}"))?;
        Command::new(&self.cfg.qemu_bin)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("start {}: {e}", self.cfg.qemu_bin.display()))
    }

    fn vmm_failure(&self, status: std::process::ExitStatus) -> String {
        let log = std::fs::read_to_string(self.spec.work_dir.join("qemu.log")).unwrap_or_default();
        let last = log
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        let mut s = format!("the VM exited ({status})");
        if self.state == State::Booting {
            s.push_str(" before its entrypoint started");
        }
        if !last.is_empty() {
            s.push_str(&format!(": {last}"));
        }
        s.push_str(&format!(
            " (console: {})",
            self.spec.work_dir.join("console.log").display()
        ));
        s
    }

    async fn supervise(
        mut self,
        mut child: Child,
        listener: UnixListener,
        mut ctl: mpsc::Receiver<Control>,
    ) -> Outcome {
        let boot_deadline = TokioInstant::now() + self.spec.boot_timeout;
        // QEMU connects as soon as it starts.
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    let _ = child.start_kill();
                    let st = child.wait().await.ok().and_then(|s| s.code());
                    self.fail(format!("guest channel accept: {e}"), None).await;
                    return self.outcome(st);
                }
            },
            st = child.wait() => {
                let reason = match &st {
                    Ok(s) => self.vmm_failure(*s),
                    Err(e) => format!("waiting for qemu: {e}"),
                };
                self.fail(reason, None).await;
                return self.outcome(st.ok().and_then(|s| s.code()));
            }
            _ = sleep_until(boot_deadline) => {
                let _ = child.start_kill();
                let st = child.wait().await.ok().and_then(|s| s.code());
                self.fail("qemu never connected the guest channel".into(), None).await;
                return self.outcome(st);
            }
        };
        drop(listener);
        let (mut rd, mut wr) = stream.into_split();
        let mut fb = FrameBuffer::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut chan_open = true;
        let mut exit: Option<ExitStatus> = None;
        let mut pending = Pending::None;
        // Next deadline and what happens then.
        let mut deadline = boot_deadline;
        let mut on_deadline = DeadlineAction::BootTimeout;
        let vmm_status = loop {
            tokio::select! {
                st = child.wait() => break st,
                r = rd.read(&mut buf), if chan_open => {
                    match r {
                        Ok(0) | Err(_) => chan_open = false,
                        Ok(n) => {
                            fb.push(&buf[..n]);
                            loop {
                                match fb.next_message() {
                                    Ok(Some(m)) => {
                                        if let Some(a) = self
                                            .on_message(m, &mut wr, &mut exit, &mut pending)
                                            .await
                                        {
                                            (deadline, on_deadline) = a;
                                        }
                                    }
                                    Ok(None) => break,
                                    Err(e) => {
                                        pending = Pending::Failed(format!("guest channel: {e}"));
                                        chan_open = false;
                                        let _ = child.start_kill();
                                        break;
                                    }
                                }
                            }
                        }
                    }
                }
                c = ctl.recv() => match c {
                    Some(Control::Signal(signo)) => {
                        let _ = send(&mut wr, &Message::Signal { signo }).await;
                    }
                    Some(Control::Stop { grace }) => {
                        self.set(State::Stopping).await;
                        let _ = send(&mut wr, &Message::Signal { signo: 15 }).await;
                        deadline = TokioInstant::now() + grace;
                        on_deadline = DeadlineAction::Shutdown;
                    }
                    Some(Control::Kill) | None => {
                        let _ = child.start_kill();
                    }
                },
                _ = sleep_until(deadline) => match on_deadline {
                    DeadlineAction::BootTimeout => {
                        if matches!(self.state, State::Booting) {
                            pending = Pending::Failed(format!(
                                "the entrypoint did not start within {:?}",
                                self.spec.boot_timeout
                            ));
                            let _ = child.start_kill();
                        }
                        deadline = far_future();
                    }
                    DeadlineAction::Shutdown => {
                        let _ = send(&mut wr, &Message::Shutdown).await;
                        deadline = TokioInstant::now() + Duration::from_secs(10);
                        on_deadline = DeadlineAction::Kill;
                    }
                    DeadlineAction::Kill => {
                        let _ = child.start_kill();
                        deadline = far_future();
                    }
                },
            }
        };
        // Frames still in the socket after QEMU exited.
        while chan_open {
            match tokio::time::timeout(Duration::from_millis(200), rd.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => {
                    fb.push(&buf[..n]);
                    while let Ok(Some(m)) = fb.next_message() {
                        self.on_message(m, &mut wr, &mut exit, &mut pending).await;
                    }
                }
                _ => chan_open = false,
            }
        }
        let code = vmm_status.as_ref().ok().and_then(|s| s.code());
        match (pending, exit) {
            (Pending::Failed(reason), exit) => self.fail(reason, exit).await,
            (Pending::None, Some(e)) => {
                self.set(State::Stopping).await;
                self.set(State::Stopped { exit: Some(e) }).await;
            }
            (Pending::None, None) if self.state == State::Stopping => {
                self.set(State::Stopped { exit: None }).await;
            }
            (Pending::None, None) => {
                let reason = match &vmm_status {
                    Ok(s) => self.vmm_failure(*s),
                    Err(e) => format!("waiting for qemu: {e}"),
                };
                self.fail(reason, None).await;
            }
        }
        self.outcome(code)
    }

    /// Handle one guest message; returns a new deadline when the phase changes.
    async fn on_message(
        &mut self,
        m: Message,
        wr: &mut OwnedWriteHalf,
        exit: &mut Option<ExitStatus>,
        pending: &mut Pending,
    ) -> Option<(TokioInstant, DeadlineAction)> {
        match m {
            Message::Hello {
                role: Role::Guest,
                min_version,
                max_version,
                ..
            } => {
                self.timings.guest_hello = Some(self.t0.elapsed());
                if min_version > PROTOCOL_VERSION || max_version < PROTOCOL_VERSION {
                    *pending = Pending::Failed(format!(
                        "guest init speaks protocol {min_version}..={max_version}, host {PROTOCOL_VERSION}"
                    ));
                    let _ = send(wr, &Message::Shutdown).await;
                    return None;
                }
                let hello = Message::hello(
                    Role::Host,
                    concat!("vt-runtime/", env!("CARGO_PKG_VERSION")),
                );
                let launch = Message::Launch(self.spec.launch.clone());
                if send(wr, &hello).await.is_err() || send(wr, &launch).await.is_err() {
                    *pending = Pending::Failed("could not write to the guest channel".into());
                }
                None
            }
            Message::Ready {
                init_started_us,
                entrypoint_started_us,
                ..
            } => {
                self.timings.entrypoint = Some(self.t0.elapsed());
                self.timings.guest_init_started_us = Some(init_started_us);
                self.timings.guest_entrypoint_started_us = Some(entrypoint_started_us);
                if self.state == State::Booting {
                    self.set(State::Running).await;
                }
                None
            }
            Message::Log { stream, data } => {
                let _ = self.events.send(VmEvent::Log { stream, data }).await;
                None
            }
            Message::Exited { status } => {
                *exit = Some(status);
                self.set(State::Stopping).await;
                // Acknowledge: the guest powers off once it has this.
                let _ = send(wr, &Message::Shutdown).await;
                Some((
                    TokioInstant::now() + Duration::from_secs(10),
                    DeadlineAction::Kill,
                ))
            }
            Message::Failed { reason } => {
                *pending = Pending::Failed(format!("guest init: {reason}"));
                let _ = send(wr, &Message::Shutdown).await;
                Some((
                    TokioInstant::now() + Duration::from_secs(10),
                    DeadlineAction::Kill,
                ))
            }
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum DeadlineAction {
    BootTimeout,
    Shutdown,
    Kill,
}

fn far_future() -> TokioInstant {
    TokioInstant::now() + Duration::from_secs(86400 * 365)
}

async fn send(wr: &mut OwnedWriteHalf, m: &Message) -> std::io::Result<()> {
    let bytes = m
        .encode()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
    wr.write_all(&bytes).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_has_tsc_under_tcg_only() {
        let cfg = QemuConfig::from_guest_dir(Path::new("/g"));
        let c = kernel_cmdline(&cfg, Accel::Tcg, Some(2445406), "");
        assert_eq!(c, "console=ttyS0 panic=-1 quiet tsc_early_khz=2445406");
        assert!(!c.contains("rtc=off") && !c.contains("acpi=off"));
        let k = kernel_cmdline(&cfg, Accel::Kvm, Some(1), "vt.probe");
        assert_eq!(k, "console=ttyS0 panic=-1 quiet vt.probe");
    }

    #[test]
    fn machine_args() {
        let cfg = QemuConfig::from_guest_dir(Path::new("/g"));
        let a = base_args(&cfg, Accel::Tcg, 512, 2).join(" ");
        assert!(
            a.starts_with("-M microvm -accel tcg -cpu max -m 512 -smp 2 "),
            "{a}"
        );
        assert!(a.contains("-kernel /g/vmlinux -initrd /g/initramfs.cpio"));
        assert_eq!(qpath(Path::new("/a,b")), "/a,,b");
        assert_eq!("auto".parse::<Accel>().unwrap(), Accel::Auto);
    }
}
