//! What every backend does around its VMM, whatever the VMM: checking the spec
//! ([`check_spec`]), the scratch disk ([`make_scratch_disk`]), the instance's lifecycle
//! reporting ([`Session`], created with its [`Vm`] handle by [`spawn_vm`]), and the guest
//! channel conversation over a connected byte stream ([`Session::supervise`]).
//!
//! A backend implements [`Vmm`] for its running VMM: qemu for its `Child` (no power-off
//! request), Firecracker for its process plus API socket (`SendCtrlAltDel`).

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus as ProcessStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::UnixListener;
use tokio::process::Command;
use tokio::sync::{mpsc, watch};
use tokio::time::{sleep_until, Instant as TokioInstant};

use vt_guest_proto::{FrameBuffer, Message, Role, PROTOCOL_VERSION};

use crate::{
    exec, BootTimings, Control, ExitStatus, InstanceSpec, Launch, Outcome, RuntimeError, Snapshot, State, SuspendError,
    Vm, VmEvent,
};

/// A [`Vm::suspend`] call waiting for its answer.
pub(crate) type SuspendRequest = tokio::sync::oneshot::Sender<Result<Snapshot, SuspendError>>;

/// After `Shutdown` (or `Exited`/`Failed`), how long the guest has to power off before
/// [`Vmm::power_off`]; the same again before the VMM is killed: 10 s in all, also for a VMM
/// whose `power_off` does nothing (qemu).
pub(crate) const POWER_OFF_WAIT: Duration = if cfg!(test) { Duration::from_secs(1) } else { Duration::from_secs(5) };

/// The VMM process as the conversation needs it.
pub(crate) trait Vmm: Send {
    /// The VMM process ended (cancel-safe, like `Child::wait`).
    fn wait(&mut self) -> impl Future<Output = std::io::Result<ProcessStatus>> + Send;
    /// Kill the VMM now, without waiting for it.
    fn start_kill(&mut self);
    /// Leave the VMM running, handle dropped without killing it ([`Control::Abandon`]).
    fn leave(self)
    where
        Self: Sized,
    {
        #[allow(clippy::mem_forget)] // the point: its kill-on-drop must not run
        std::mem::forget(self);
    }
    /// Pause the VM, save its state to a snapshot in the work dir, and end the VMM (waiting
    /// for it). On an error the VM runs on. Default: the backend cannot.
    fn snapshot(&mut self) -> impl Future<Output = Result<Snapshot, SuspendError>> + Send {
        std::future::ready(Err(SuspendError::Unsupported(self.backend())))
    }
    /// What runs the VM, for messages ("qemu runtime").
    fn backend(&self) -> &'static str;
    /// Make the machine power off without the guest's cooperation (the guest did not answer
    /// `Shutdown`). Firecracker: `SendCtrlAltDel`; a VMM without such a request does nothing.
    fn power_off(&mut self) -> impl Future<Output = ()> + Send;
    /// Why the VMM ended by itself, for `State::Failed` (`booting`: before the entrypoint
    /// ran). Names the logs to look at.
    fn failure(&self, status: &std::io::Result<ProcessStatus>, booting: bool) -> String;
}

/// A VMM an earlier process started (a node agent restarted): not our child, so its end is
/// seen in `/proc` (its command line names the work dir, so a reused pid is not taken for
/// it) and its exit status is unknown.
pub(crate) struct Adopted {
    pid: u32,
    needle: String,
    log: PathBuf,
    console: PathBuf,
}

impl Adopted {
    pub fn new(pid: u32, work_dir: &Path, log: PathBuf, console: PathBuf) -> Self {
        Adopted { pid, needle: work_dir.display().to_string(), log, console }
    }

    fn alive(&self) -> bool {
        std::fs::read(format!("/proc/{}/cmdline", self.pid))
            .is_ok_and(|c| c.windows(self.needle.len()).any(|w| w == self.needle.as_bytes()))
    }
}

impl Vmm for Adopted {
    async fn wait(&mut self) -> std::io::Result<ProcessStatus> {
        while self.alive() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(std::os::unix::process::ExitStatusExt::from_raw(0))
    }

    fn start_kill(&mut self) {
        if self.alive() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &self.pid.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn();
        }
    }

    fn power_off(&mut self) -> impl Future<Output = ()> + Send {
        std::future::ready(())
    }

    fn backend(&self) -> &'static str {
        "qemu runtime, for a VM adopted after an agent restart,"
    }

    fn failure(&self, _status: &std::io::Result<ProcessStatus>, booting: bool) -> String {
        let mut s = "the VM (started before the agent restarted) ended".to_string();
        if booting {
            s.push_str(" before its guest answered");
        }
        let last = last_line(&self.log);
        if !last.is_empty() {
            s.push_str(&format!(": {last}"));
        }
        s.push_str(&format!(" (console: {})", self.console.display()));
        s
    }
}

/// One instance's reporting: state changes (checked by [`State::advance`]), events, timings,
/// the VMM pid. Owned by the backend's task; the [`Vm`] handle reads the other ends.
pub(crate) struct Session {
    pub launch: Launch,
    pub boot_timeout: Duration,
    /// For messages: where the guest console is written.
    pub console: PathBuf,
    pub state: State,
    pub t0: Instant,
    pub timings: BootTimings,
    pid: Arc<AtomicU32>,
    shared_timings: Arc<Mutex<BootTimings>>,
    events: mpsc::Sender<VmEvent>,
    state_tx: watch::Sender<State>,
    /// Exec sessions asked for (taken by `supervise`).
    exec: Option<mpsc::Receiver<exec::Open>>,
    /// The highest recorded sequence number the agent has kept (sent to the guest as `Ack`).
    acked: watch::Receiver<u64>,
    /// Attach to a guest that already runs (`Resume`) instead of launching one.
    pub resume: bool,
    /// Resuming a guest restored from a snapshot: it is also sent `Restored` (the wall clock).
    pub restored: bool,
    /// [`Vm::suspend`] calls (taken by `supervise`).
    suspend: Option<mpsc::Receiver<SuspendRequest>>,
}

/// Create the [`Vm`] handle and run `run` (the backend's driver) as its task.
pub(crate) fn spawn_vm<F, Fut>(id: &str, launch: Launch, boot_timeout: Duration, console: PathBuf, run: F) -> Vm
where
    F: FnOnce(Session, mpsc::Receiver<Control>) -> Fut,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    let (ev_tx, ev_rx) = mpsc::channel(256);
    let (ctl_tx, ctl_rx) = mpsc::channel(16);
    let (st_tx, st_rx) = watch::channel(State::Allocated);
    let (exec_tx, exec_rx) = mpsc::channel(8);
    let (acked_tx, acked_rx) = watch::channel(0);
    let (suspend_tx, suspend_rx) = mpsc::channel(1);
    let pid = Arc::new(AtomicU32::new(0));
    let timings = Arc::new(Mutex::new(BootTimings::default()));
    let session = Session {
        launch,
        boot_timeout,
        console,
        state: State::Allocated,
        t0: Instant::now(),
        timings: BootTimings::default(),
        pid: pid.clone(),
        shared_timings: timings.clone(),
        events: ev_tx,
        state_tx: st_tx,
        exec: Some(exec_rx),
        acked: acked_rx,
        resume: false,
        restored: false,
        suspend: Some(suspend_rx),
    };
    let task = tokio::spawn(run(session, ctl_rx));
    Vm {
        id: id.to_owned(),
        events: ev_rx,
        control: ctl_tx,
        state: st_rx,
        task,
        pid,
        timings,
        exec: exec::ExecHandle { tx: exec_tx },
        acked: acked_tx,
        suspend: suspend_tx,
    }
}

/// The conversation's state besides the lifecycle.
struct Conversation {
    exit: Option<ExitStatus>,
    pending: Pending,
    /// Resuming: what the guest sends before its `Hello` belongs to an earlier host.
    awaiting_hello: bool,
    /// The highest recorded sequence number seen (a resumed guest sends some again).
    last_seq: u64,
    /// When the guest's `CLOCK_BOOTTIME` was 0, by this host's clock (from its `Ready`).
    guest_boot: Option<std::time::SystemTime>,
    sessions: HashMap<u32, exec::GuestSide>,
}

/// Why the conversation ended before the VMM did.
enum Pending {
    None,
    Failed(String),
}

#[derive(Debug, Clone, Copy)]
enum DeadlineAction {
    BootTimeout,
    /// The stop grace is over: ask the guest to power off.
    Shutdown,
    /// The guest did not power off: ask the VMM.
    PowerOff,
    Kill,
}

impl Session {
    pub async fn set(&mut self, next: State) {
        if self.state.advance(next.clone()).is_ok() {
            if let Ok(mut t) = self.shared_timings.lock() {
                *t = self.timings.clone();
            }
            let _ = self.state_tx.send(next.clone());
            let _ = self.events.send(VmEvent::State(next)).await;
        }
    }

    pub async fn fail(&mut self, reason: String, exit: Option<ExitStatus>) {
        self.set(State::Failed { reason, exit }).await;
    }

    pub fn outcome(&self, vmm_exit: Option<i32>) -> Outcome {
        Outcome { state: self.state.clone(), timings: self.timings.clone(), vmm_exit }
    }

    /// Record the VMM's pid (for [`Vm::vmm_pid`]) and write it to `pid_file`, for a node agent
    /// restarted after a crash: the VMM that may still run there.
    pub fn vmm_spawned(&mut self, pid: u32, pid_file: &Path) {
        self.pid.store(pid, Ordering::SeqCst);
        let _ = std::fs::write(pid_file, format!("{pid}\n"));
        self.timings.vmm_spawned = Some(self.t0.elapsed());
    }

    /// Run the guest channel conversation until the VMM exits: accept the guest channel on
    /// `listener` (the VMM or the guest connects to it), answer `Hello` with `Hello` +
    /// `Launch`, report `Ready`, `Log`, `Exited`, `Failed`; apply [`Control`]s; enforce the
    /// boot timeout. Ends in `Stopped` or `Failed`.
    pub async fn supervise<V: Vmm>(
        mut self,
        mut vmm: V,
        listener: UnixListener,
        mut ctl: mpsc::Receiver<Control>,
    ) -> Outcome {
        let boot_deadline = TokioInstant::now() + self.boot_timeout;
        // Until the guest connects, a stop or kill ends the VMM at once: nothing runs in the
        // guest to stop gracefully.
        let mut ctl_open = true;
        let stream = loop {
            tokio::select! {
                r = listener.accept() => match r {
                    Ok((s, _)) => break s,
                    Err(e) => {
                        vmm.start_kill();
                        let st = vmm.wait().await.ok().and_then(|s| s.code());
                        self.fail(format!("guest channel accept: {e}"), None).await;
                        return self.outcome(st);
                    }
                },
                st = vmm.wait() => {
                    if self.state == State::Stopping {
                        self.set(State::Stopped { exit: None }).await;
                    } else {
                        let reason = vmm.failure(&st, self.state == State::Booting);
                        self.fail(reason, None).await;
                    }
                    return self.outcome(st.ok().and_then(|s| s.code()));
                }
                c = ctl.recv(), if ctl_open => match c {
                    Some(Control::Stop { .. }) => {
                        self.set(State::Stopping).await;
                        vmm.start_kill();
                    }
                    Some(Control::Kill) => vmm.start_kill(),
                    None => {
                        ctl_open = false;
                        vmm.start_kill();
                    }
                    Some(Control::Abandon) => {
                        vmm.leave();
                        return self.outcome(None);
                    }
                    Some(Control::Signal(_)) => {}
                },
                _ = sleep_until(boot_deadline) => {
                    vmm.start_kill();
                    let st = vmm.wait().await.ok().and_then(|s| s.code());
                    let reason = format!(
                        "the guest channel was not connected within {:?} (console: {})",
                        self.boot_timeout,
                        self.console.display()
                    );
                    self.fail(reason, None).await;
                    return self.outcome(st);
                }
            }
        };
        drop(listener);
        let (mut rd, mut wr) = stream.into_split();
        let mut fb = FrameBuffer::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut chan_open = true;
        let mut conv = Conversation {
            exit: None,
            pending: Pending::None,
            awaiting_hello: self.resume,
            last_seq: 0,
            guest_boot: None,
            sessions: HashMap::new(),
        };
        if self.resume {
            let hello = Message::hello(Role::Host, concat!("vt-runtime/", env!("CARGO_PKG_VERSION")));
            if send(&mut wr, &hello).await.is_err() || send(&mut wr, &Message::Resume).await.is_err() {
                conv.pending = Pending::Failed("could not write to the guest channel".into());
            }
            if self.restored {
                // As late as possible: the guest sets its clock to this.
                let wall_clock_us = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_micros() as u64);
                if send(&mut wr, &Message::Restored { wall_clock_us }).await.is_err() {
                    conv.pending = Pending::Failed("could not write to the guest channel".into());
                }
            }
        }
        let mut suspend_rx = self.suspend.take().unwrap_or_else(|| mpsc::channel(1).1);
        let mut exec_rx = self.exec.take().unwrap_or_else(|| mpsc::channel(1).1);
        let (to_guest_tx, mut to_guest) = mpsc::channel::<exec::ToGuest>(256);
        let mut acked = self.acked.clone();
        // A resumed guest may still hold sessions of an earlier host (hung up, ending within
        // seconds): start the ids elsewhere so a new one does not meet an old one.
        let mut next_session: u32 = if self.resume {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos()) | 1 << 31
        } else {
            0
        };
        let mut deadline = boot_deadline;
        let mut on_deadline = DeadlineAction::BootTimeout;
        let vmm_status = loop {
            tokio::select! {
                st = vmm.wait() => break st,
                r = rd.read(&mut buf), if chan_open => match r {
                    Ok(0) | Err(_) => chan_open = false,
                    Ok(n) => {
                        fb.push(&buf[..n]);
                        loop {
                            match fb.next_message() {
                                Ok(Some(m)) => {
                                    if let Some(a) = self.on_message(m, &mut wr, &mut conv).await {
                                        (deadline, on_deadline) = a;
                                    }
                                }
                                Ok(None) => break,
                                Err(_) if conv.awaiting_hello => {
                                    // The tail of what the guest sent an earlier host.
                                    fb.resync();
                                }
                                Err(e) => {
                                    conv.pending = Pending::Failed(format!("guest channel: {e}"));
                                    chan_open = false;
                                    vmm.start_kill();
                                    break;
                                }
                            }
                        }
                    }
                },
                Ok(()) = acked.changed() => {
                    let seq = *acked.borrow_and_update();
                    let _ = send(&mut wr, &Message::Ack { seq }).await;
                }
                Some(open) = exec_rx.recv() => {
                    if self.state != State::Running || !chan_open || conv.awaiting_hello {
                        let _ = open.reply.send(Err(format!("the instance is {}", self.state.name())));
                        continue;
                    }
                    next_session = next_session.wrapping_add(1).max(1);
                    while conv.sessions.contains_key(&next_session) {
                        next_session = next_session.wrapping_add(1).max(1);
                    }
                    let id = next_session;
                    let r = open.req;
                    let start = Message::ExecStart { id, argv: r.argv, env: r.env, cwd: r.cwd, user: r.user, tty: r.tty };
                    if let Err(e) = send(&mut wr, &start).await {
                        let _ = open.reply.send(Err(format!("guest channel: {e}")));
                        continue;
                    }
                    let (session, guest_side) = exec::session(id, to_guest_tx.clone());
                    conv.sessions.insert(id, guest_side);
                    let _ = open.reply.send(Ok(session));
                }
                Some(reply) = suspend_rx.recv() => {
                    if self.state != State::Running || !chan_open || conv.awaiting_hello {
                        let _ = reply.send(Err(SuspendError::NotRunning(self.state.name())));
                        continue;
                    }
                    match vmm.snapshot().await {
                        Ok(snap) => {
                            tracing::info!(bytes = snap.bytes, took_ms = snap.took.as_millis() as u64, "VM suspended");
                            // Host side of the exec sessions: they end with this VMM.
                            conv.sessions.clear();
                            self.set(State::Suspended).await;
                            let _ = reply.send(Ok(snap));
                            return self.outcome(None);
                        }
                        Err(e) => {
                            let _ = reply.send(Err(e));
                        }
                    }
                }
                Some(t) = to_guest.recv() => {
                    // A session that has ended takes nothing more.
                    if conv.sessions.contains_key(&t.session()) {
                        let _ = send(&mut wr, &t.into_message()).await;
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
                    Some(Control::Kill) | None => vmm.start_kill(),
                    Some(Control::Abandon) => {
                        drop((rd, wr));
                        vmm.leave();
                        return self.outcome(None);
                    }
                },
                _ = sleep_until(deadline) => match on_deadline {
                    DeadlineAction::BootTimeout => {
                        if self.state == State::Booting {
                            conv.pending = Pending::Failed(format!(
                                "the entrypoint did not start within {:?} (console: {})",
                                self.boot_timeout,
                                self.console.display()
                            ));
                            vmm.start_kill();
                        }
                        deadline = far_future();
                    }
                    DeadlineAction::Shutdown => {
                        let _ = send(&mut wr, &Message::Shutdown).await;
                        deadline = TokioInstant::now() + POWER_OFF_WAIT;
                        on_deadline = DeadlineAction::PowerOff;
                    }
                    DeadlineAction::PowerOff => {
                        vmm.power_off().await;
                        deadline = TokioInstant::now() + POWER_OFF_WAIT;
                        on_deadline = DeadlineAction::Kill;
                    }
                    DeadlineAction::Kill => {
                        vmm.start_kill();
                        deadline = far_future();
                    }
                },
            }
        };
        // Frames still in the socket after the VMM exited.
        while chan_open {
            match tokio::time::timeout(Duration::from_millis(200), rd.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => {
                    fb.push(&buf[..n]);
                    while let Ok(Some(m)) = fb.next_message() {
                        self.on_message(m, &mut wr, &mut conv).await;
                    }
                }
                _ => chan_open = false,
            }
        }
        let code = vmm_status.as_ref().ok().and_then(|s| s.code());
        // Open sessions end with the VM: their outputs close without an exit.
        conv.sessions.clear();
        match (conv.pending, conv.exit) {
            (Pending::Failed(reason), exit) => self.fail(reason, exit).await,
            (Pending::None, Some(e)) => {
                self.set(State::Stopping).await;
                self.set(State::Stopped { exit: Some(e) }).await;
            }
            (Pending::None, None) if self.state == State::Stopping => {
                self.set(State::Stopped { exit: None }).await;
            }
            (Pending::None, None) => {
                let reason = vmm.failure(&vmm_status, self.state == State::Booting);
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
        conv: &mut Conversation,
    ) -> Option<(TokioInstant, DeadlineAction)> {
        if conv.awaiting_hello && !matches!(m, Message::Hello { role: Role::Guest, .. }) {
            return None;
        }
        match m {
            Message::Hello { role: Role::Guest, min_version, max_version, .. } => {
                self.timings.guest_hello = Some(self.t0.elapsed());
                if min_version > PROTOCOL_VERSION || max_version < PROTOCOL_VERSION {
                    conv.pending = Pending::Failed(format!(
                        "guest init speaks protocol {min_version}..={max_version}, host {PROTOCOL_VERSION}"
                    ));
                    let _ = send(wr, &Message::Shutdown).await;
                    return None;
                }
                if conv.awaiting_hello {
                    // Resumed: the guest runs already; Ready and the unacknowledged output follow.
                    conv.awaiting_hello = false;
                    return None;
                }
                let hello = Message::hello(Role::Host, concat!("vt-runtime/", env!("CARGO_PKG_VERSION")));
                let launch = Message::Launch(self.launch.clone());
                if send(wr, &hello).await.is_err() || send(wr, &launch).await.is_err() {
                    conv.pending = Pending::Failed("could not write to the guest channel".into());
                }
                None
            }
            Message::Ready { init_started_us, entrypoint_started_us, now_us, .. } => {
                conv.guest_boot = std::time::SystemTime::now().checked_sub(Duration::from_micros(now_us));
                if self.restored && self.timings.entrypoint.is_none() {
                    self.timings.entrypoint = Some(self.t0.elapsed());
                }
                if !self.resume {
                    self.timings.entrypoint = Some(self.t0.elapsed());
                    self.timings.guest_init_started_us = Some(init_started_us);
                    self.timings.guest_entrypoint_started_us = Some(entrypoint_started_us);
                }
                if self.state == State::Booting {
                    self.set(State::Running).await;
                }
                None
            }
            Message::Log { seq, at_us, stream, data } => {
                if seq > conv.last_seq {
                    conv.last_seq = seq;
                    // Never later than now: a guest clock running ahead is not believed.
                    let now = std::time::SystemTime::now();
                    let guest = conv.guest_boot.and_then(|b| b.checked_add(Duration::from_micros(at_us)));
                    let at = guest.map_or(now, |t| t.min(now));
                    let _ = self.events.send(VmEvent::Log { seq, at, stream, data }).await;
                }
                None
            }
            Message::LogLost { seq, bytes } => {
                if seq > conv.last_seq {
                    conv.last_seq = seq;
                    let _ = self.events.send(VmEvent::LogLost { seq, bytes }).await;
                }
                None
            }
            Message::Exited { status, .. } => {
                conv.exit = Some(status);
                self.set(State::Stopping).await;
                // Acknowledge: the guest powers off once it has this.
                let _ = send(wr, &Message::Shutdown).await;
                Some((TokioInstant::now() + POWER_OFF_WAIT, DeadlineAction::PowerOff))
            }
            Message::Failed { reason } => {
                conv.pending = Pending::Failed(format!("guest init: {reason}"));
                let _ = send(wr, &Message::Shutdown).await;
                Some((TokioInstant::now() + POWER_OFF_WAIT, DeadlineAction::PowerOff))
            }
            Message::ExecOutput { id, stream, data } => {
                if let Some(s) = conv.sessions.get(&id) {
                    let o = match stream {
                        vt_guest_proto::Stream::Stdout => exec::ExecOutput::Stdout(data),
                        vt_guest_proto::Stream::Stderr => exec::ExecOutput::Stderr(data),
                    };
                    let _ = s.output.send(o);
                }
                None
            }
            Message::ExecExit { id, status } => {
                if let Some(s) = conv.sessions.remove(&id) {
                    let _ = s.output.send(exec::ExecOutput::Exit(status));
                }
                None
            }
            Message::ExecWindow { id, bytes } => {
                if let Some(s) = conv.sessions.get(&id) {
                    s.stdin_credit.add_permits(bytes as usize);
                }
                None
            }
            _ => None,
        }
    }
}

fn far_future() -> TokioInstant {
    TokioInstant::now() + Duration::from_secs(86400 * 365)
}

async fn send(wr: &mut OwnedWriteHalf, m: &Message) -> std::io::Result<()> {
    let bytes = m.encode().map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
    wr.write_all(&bytes).await
}

/// Check a spec and derive what the guest is told from it: the network and volume parts of
/// its `Launch` (from `network` and `volumes`). Same checks as the qemu backend's `start`.
pub(crate) fn check_spec(spec: &mut InstanceSpec) -> Result<(), RuntimeError> {
    spec.launch.network = spec.network.as_ref().map(|n| n.guest_config());
    spec.launch.volumes = spec
        .volumes
        .iter()
        .map(|v| vt_guest_proto::Volume { name: v.name.clone(), label: v.label.clone(), path: v.mount_path.clone() })
        .collect();
    if let Some(v) = spec.volumes.iter().find(|v| !v.disk.is_file()) {
        return Err(RuntimeError::Config(format!("volume {}: disk {} not found", v.name, v.disk.display())));
    }
    if spec.launch.argv.is_empty() {
        return Err(RuntimeError::Config("empty argv".into()));
    }
    if !spec.root_disk.is_file() {
        return Err(RuntimeError::Config(format!("root disk {} not found", spec.root_disk.display())));
    }
    Ok(())
}

/// A sparse, journal-less ext4 scratch disk labelled `vt-scratch` (guest init finds it by
/// that label): the overlay's upper layer. Same command as the qemu backend's.
pub(crate) async fn make_scratch_disk(mkfs: &Path, path: &Path, size: u64) -> Result<(), String> {
    let _ = tokio::fs::remove_file(path).await;
    let out = Command::new(mkfs)
        .args(["-q", "-F", "-t", "ext4", "-O", "^has_journal", "-L", "vt-scratch", "-E"])
        .arg("lazy_itable_init=1,nodiscard")
        .arg(path)
        .arg(format!("{}k", (size / 1024).max(8192)))
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| format!("run {}: {e}", mkfs.display()))?;
    if !out.status.success() {
        return Err(format!("mkfs.ext4 of the scratch disk failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(())
}

/// The last non-empty line of a log file ("" when there is none).
pub(crate) fn last_line(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_owned()
}
