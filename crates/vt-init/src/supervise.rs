//! After the launch: the entrypoint, exec sessions and the guest channel, in one poll loop.
//!
//! **The link.** The channel is non-blocking; what goes to the host waits in `tx`. Recorded
//! messages (`Log`, `LogLost`, `Exited`) carry a sequence number and stay in `recorded`
//! until the host acknowledges them (`Ack`). When the host goes away (the port hangs up: a
//! node agent was killed, QEMU reconnects its chardev to the next one) the link is
//! *detached*: the entrypoint keeps running, its output keeps being read and recorded (the
//! oldest is dropped past [`RECORD_CAP`], and a `LogLost` says how much), exec sessions are
//! hung up. When a host is back (the port no longer hangs up, or a vsock connect succeeds)
//! the link is *connected*; the host's `Resume` makes it *attached* again: `Hello`, `Ready`,
//! then every recorded message not yet acknowledged, in order.
//!
//! **Exec sessions** (`ExecStart`): a command in the instance's root with pipes or a
//! pseudo-terminal; its output is sent while the host's credit lasts ([`EXEC_WINDOW`],
//! renewed by `ExecWindow`), so a fast producer waits on its pipe instead of filling memory.
//! Stdin is credited back the same way once written to the process.

use std::collections::{HashMap, VecDeque};
use std::ffi::OsStr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vt_guest_proto::{ExitStatus, FrameBuffer, Launch, Message, Role, Stream, EXEC_WINDOW, MAX_LOG_CHUNK};

use super::{errno, log, pipe, resolve_user, secret_env, Channel, Result, DEFAULT_PATH, SOFTWARE};

/// Recorded output kept for a host that is not attached (or has not acknowledged it yet).
const RECORD_CAP: usize = 8 << 20;
/// How often a detached link checks whether a host is back.
const DETACHED_TICK: Duration = Duration::from_millis(50);
/// After `Exited`: how long an attached host has to answer `Shutdown`, and a detached one to
/// come back and collect the exit status.
const EXIT_WAIT_ATTACHED: Duration = Duration::from_secs(2);
const EXIT_WAIT_DETACHED: Duration = Duration::from_secs(600);
/// After a hang-up (`ExecClose`, or the host went away): SIGKILL for what is left.
const HANGUP_GRACE: Duration = Duration::from_secs(5);
const MAX_SESSIONS: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    Attached,
    /// A host is there, but has not sent `Resume` yet.
    Connected,
    Detached,
}

struct Recorded {
    seq: u64,
    frame: Vec<u8>,
    /// Output bytes this entry stands for, if it has to be dropped (`None`: never dropped).
    output: Option<u64>,
}

/// What goes to the host, and the state of the link.
struct Host<'c> {
    chan: &'c mut Channel,
    vsock: bool,
    link: Link,
    tx: Vec<u8>,
    tx_off: usize,
    recorded: VecDeque<Recorded>,
    recorded_bytes: usize,
    next_seq: u64,
    /// The entrypoint's pid and start times, for `Ready` (sent again after a `Resume`).
    ready: Option<(u32, u64, u64)>,
}

impl Host<'_> {
    fn fd(&self) -> RawFd {
        self.chan.file.as_raw_fd()
    }

    /// A message that only matters to the host attached now.
    fn live(&mut self, m: &Message) {
        if self.link == Link::Attached {
            // Only a Launch could exceed the payload limit.
            let _ = m.encode_into(&mut self.tx);
        }
    }

    /// A message kept until acknowledged (and sent again to the next host).
    fn record(&mut self, make: impl FnOnce(u64) -> Message, output: Option<u64>) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let Ok(frame) = make(seq).encode() else { return };
        if self.link == Link::Attached {
            self.tx.extend_from_slice(&frame);
        }
        self.recorded_bytes += frame.len();
        self.recorded.push_back(Recorded { seq, frame, output });
        if self.link != Link::Attached {
            self.make_room();
        }
    }

    /// Detached and over the cap: drop the oldest output, and say how much in a `LogLost`
    /// that takes the last dropped message's place in the sequence.
    fn make_room(&mut self) {
        let (mut lost, mut last) = (0u64, None);
        while self.recorded_bytes > RECORD_CAP && self.recorded.len() > 1 {
            let Some(out) = self.recorded.front().and_then(|r| r.output) else { break };
            let r = self.recorded.pop_front().expect("checked above");
            self.recorded_bytes -= r.frame.len();
            lost += out;
            last = Some(r.seq);
        }
        if let Some(seq) = last {
            if let Ok(frame) = (Message::LogLost { seq, bytes: lost }).encode() {
                self.recorded_bytes += frame.len();
                self.recorded.push_front(Recorded { seq, frame, output: Some(lost) });
            }
        }
    }

    /// `Ready`, stamped with the time it is sent (the host maps the guest's clock with it).
    fn ready_message(&self) -> Option<Message> {
        let (pid, init_started_us, entrypoint_started_us) = self.ready?;
        Some(Message::Ready { pid, init_started_us, entrypoint_started_us, now_us: super::boottime_us() })
    }

    fn ack(&mut self, seq: u64) {
        while self.recorded.front().is_some_and(|r| r.seq <= seq) {
            let r = self.recorded.pop_front().expect("checked above");
            self.recorded_bytes -= r.frame.len();
        }
    }

    /// Attached and the host is behind: stop reading the entrypoint until it acknowledges.
    fn backlogged(&self) -> bool {
        self.link == Link::Attached && self.recorded_bytes > RECORD_CAP
    }

    /// `Resume`: this host gets `Hello`, `Ready` and everything not acknowledged.
    fn resume(&mut self) {
        self.link = Link::Attached;
        self.tx.clear();
        self.tx_off = 0;
        let _ = Message::hello(Role::Guest, SOFTWARE).encode_into(&mut self.tx);
        if let Some(r) = self.ready_message() {
            let _ = r.encode_into(&mut self.tx);
        }
        for r in &self.recorded {
            self.tx.extend_from_slice(&r.frame);
        }
    }

    fn detach(&mut self) {
        if self.link != Link::Detached {
            log("the host went away; recording output until one is back");
        }
        self.link = Link::Detached;
        self.tx.clear();
        self.tx_off = 0;
        self.chan.buf = FrameBuffer::new();
    }

    /// Write what is pending, without blocking.
    fn flush(&mut self) {
        while self.link == Link::Attached && self.tx_off < self.tx.len() {
            let rest = &self.tx[self.tx_off..];
            let n = unsafe { libc::write(self.fd(), rest.as_ptr().cast(), rest.len()) };
            if n > 0 {
                self.tx_off += n as usize;
                continue;
            }
            match errno().raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) => return,
                _ => return self.detach(),
            }
        }
        self.tx.clear();
        self.tx_off = 0;
    }

    /// Read what the host sent, without blocking; hang-up and EOF detach.
    fn fill(&mut self) {
        let mut b = [0u8; 16 * 1024];
        loop {
            let n = unsafe { libc::read(self.fd(), b.as_mut_ptr().cast(), b.len()) };
            if n > 0 {
                self.chan.buf.push(&b[..n as usize]);
                continue;
            }
            match (n, errno().raw_os_error()) {
                (0, _) => return self.detach(),
                (_, Some(libc::EINTR)) => continue,
                (_, Some(libc::EAGAIN)) => return,
                _ => return self.detach(),
            }
        }
    }

    fn next(&mut self) -> Option<Message> {
        loop {
            match self.chan.buf.next_message() {
                Ok(m) => return m,
                Err(e) => {
                    let n = self.chan.buf.resync();
                    log(&format!("channel: {e}; skipped {n} bytes"));
                }
            }
        }
    }

    /// Detached: is a host back?
    fn probe(&mut self) {
        if self.vsock {
            if let Some(f) = super::vsock::reconnect() {
                set_nonblocking(f.as_raw_fd());
                self.chan.file = f;
                self.link = Link::Connected;
            }
            return;
        }
        let mut p = libc::pollfd { fd: self.fd(), events: libc::POLLIN, revents: 0 };
        if unsafe { libc::poll(&mut p, 1, 0) } >= 0 && p.revents & libc::POLLHUP == 0 {
            self.link = Link::Connected;
        }
    }
}

fn set_nonblocking(fd: RawFd) {
    unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK);
    }
}

fn kill_group(pid: i32, signo: i32) {
    unsafe { libc::kill(-pid, signo) };
}

/// One `vt exec` command.
struct Session {
    pid: i32,
    /// Where stdin goes (a pipe, or the terminal); `None` once closed.
    stdin: Option<OwnedFd>,
    stdin_buf: VecDeque<u8>,
    stdin_eof: bool,
    /// Output: stdout and stderr pipes, or the terminal as stdout.
    outs: Vec<(OwnedFd, Stream)>,
    /// The terminal, for resizes.
    pty: Option<RawFd>,
    /// Output bytes the host still takes.
    credit: u64,
    status: Option<ExitStatus>,
    /// Hung up: SIGKILL at this time; a hung-up session's output is discarded.
    kill_at: Option<Instant>,
}

impl Session {
    fn hang_up(&mut self) {
        if self.kill_at.is_none() && self.status.is_none() {
            kill_group(self.pid, libc::SIGHUP);
            self.kill_at = Some(Instant::now() + HANGUP_GRACE);
        }
    }
}

/// The environment and identity every command of this instance runs with.
struct Base {
    env: Vec<(String, String)>,
    cwd: String,
    user: String,
}

pub(crate) fn run(chan: &mut Channel, launch: &Launch, init_started_us: u64) -> Result<()> {
    let sigfd = super::sigchld_fd()?;
    let (uid, gid, home) = resolve_user(&launch.user)?;
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;

    let mut env: Vec<(String, String)> = launch.env.clone();
    let has = |env: &[(String, String)], k: &str| env.iter().any(|(key, _)| key == k);
    if !has(&env, "PATH") {
        env.push(("PATH".into(), DEFAULT_PATH.into()));
    }
    if !has(&env, "HOME") {
        env.push(("HOME".into(), home));
    }
    let secrets = secret_env(launch)?;
    let cwd = if launch.cwd.is_empty() { "/" } else { &launch.cwd };
    let mut cmd = Command::new(&launch.argv[0]);
    cmd.args(&launch.argv[1..])
        .env_clear()
        .envs(env.iter().map(|(k, v)| (OsStr::new(k), OsStr::new(v))))
        .envs(secrets.iter().copied())
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out_w))
        .stderr(Stdio::from(err_w));
    if uid != 0 || gid != 0 {
        cmd.uid(uid).gid(gid);
    }
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let vsock = chan.vsock;
    set_nonblocking(chan.file.as_raw_fd());
    let mut host = Host {
        chan,
        vsock,
        link: Link::Attached,
        tx: Vec::new(),
        tx_off: 0,
        recorded: VecDeque::new(),
        recorded_bytes: 0,
        next_seq: 1,
        ready: None,
    };
    super::step("spawning the entrypoint");
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let msg = format!("vt-init: cannot start {:?}: {e}\n", launch.argv[0]);
            let data = msg.into_bytes();
            let n = data.len() as u64;
            let at_us = super::boottime_us();
            host.record(|seq| Message::Log { seq, at_us, stream: Stream::Stderr, data }, Some(n));
            host.record(|seq| Message::Exited { seq, status: ExitStatus::Code(127) }, None);
            return finish(&mut host);
        }
    };
    drop(cmd); // closes our copies of the pipes' write ends
    let pid = child.id() as libc::pid_t;
    // Reaped below (PID 1 reaps every child): dropping the handle must not wait on it again.
    #[allow(clippy::mem_forget)]
    std::mem::forget(child);
    host.ready = Some((pid as u32, init_started_us, super::boottime_us()));
    super::step("entrypoint started");
    super::print_steps();
    if let Some(ready) = host.ready_message() {
        host.live(&ready);
    }

    // Exec sessions run with the entrypoint's environment (secrets included) and identity.
    let mut base_env = env;
    for (k, v) in secrets {
        base_env.push((k.to_string_lossy().into_owned(), v.to_string_lossy().into_owned()));
    }
    let base = Base { env: base_env, cwd: cwd.to_owned(), user: launch.user.clone() };

    for fd in [out_r.as_raw_fd(), err_r.as_raw_fd()] {
        set_nonblocking(fd);
    }
    let mut outs: [Option<(OwnedFd, Stream)>; 2] = [Some((out_r, Stream::Stdout)), Some((err_r, Stream::Stderr))];
    let mut status: Option<ExitStatus> = None;
    let mut sessions: HashMap<u32, Session> = HashMap::new();
    let mut buf = vec![0u8; MAX_LOG_CHUNK];
    loop {
        host.flush();
        if status.is_some() && outs.iter().all(Option::is_none) {
            break;
        }
        // Build the poll set: signals, the channel, the entrypoint's output, the sessions.
        let mut fds = vec![pfd(sigfd.as_raw_fd(), libc::POLLIN)];
        let chan_events = match host.link {
            Link::Detached => 0,
            Link::Connected => libc::POLLIN,
            Link::Attached if host.tx_off < host.tx.len() => libc::POLLIN | libc::POLLOUT,
            Link::Attached => libc::POLLIN,
        };
        fds.push(pfd(if chan_events == 0 { -1 } else { host.fd() }, chan_events));
        let paused = host.backlogged();
        for o in &outs {
            fds.push(pfd(o.as_ref().filter(|_| !paused).map_or(-1, |(fd, _)| fd.as_raw_fd()), libc::POLLIN));
        }
        let mut slots: Vec<(u32, Option<usize>)> = Vec::new(); // (session, index of an out; None: stdin)
        for (id, s) in &sessions {
            for (i, (fd, _)) in s.outs.iter().enumerate() {
                if s.credit > 0 || s.kill_at.is_some() {
                    slots.push((*id, Some(i)));
                    fds.push(pfd(fd.as_raw_fd(), libc::POLLIN));
                }
            }
            if let Some(fd) = &s.stdin {
                if !s.stdin_buf.is_empty() || s.stdin_eof {
                    slots.push((*id, None));
                    fds.push(pfd(fd.as_raw_fd(), libc::POLLOUT));
                }
            }
        }
        let now = Instant::now();
        let mut timeout = sessions.values().filter_map(|s| s.kill_at).map(|t| t.saturating_duration_since(now)).min();
        if host.link == Link::Detached {
            timeout = Some(timeout.map_or(DETACHED_TICK, |t| t.min(DETACHED_TICK)));
        }
        let ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as i32);
        let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if r < 0 {
            if errno().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(format!("poll: {}", errno()));
        }
        // Output first, so log lines precede the exit report.
        for (i, slot) in outs.iter_mut().enumerate() {
            if fds[2 + i].revents == 0 {
                continue;
            }
            let Some((fd, stream)) = slot.as_ref() else { continue };
            let stream = *stream;
            match read_some(fd.as_raw_fd(), &mut buf) {
                Read::Data(n) => {
                    let data = buf[..n].to_vec();
                    let at_us = super::boottime_us();
                    host.record(|seq| Message::Log { seq, at_us, stream, data }, Some(n as u64));
                }
                Read::Again => {}
                Read::End => *slot = None,
            }
        }
        for (k, (id, what)) in slots.iter().enumerate() {
            if fds[4 + k].revents == 0 {
                continue;
            }
            let Some(s) = sessions.get_mut(id) else { continue };
            match what {
                Some(i) => session_output(&mut host, *id, s, *i, &mut buf, false),
                None => session_stdin(&mut host, *id, s),
            }
        }
        if fds[0].revents != 0 {
            let mut info = [0u8; 128];
            while unsafe { libc::read(sigfd.as_raw_fd(), info.as_mut_ptr().cast(), info.len()) } > 0 {}
            loop {
                let mut st = 0;
                let p = unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG) };
                if p <= 0 {
                    break;
                }
                if p == pid && status.is_none() {
                    status = Some(super::decode_status(st));
                    // The entrypoint is gone: so is everything it left behind (their output
                    // already in the pipes is still drained), exec sessions included.
                    unsafe { libc::kill(-1, libc::SIGKILL) };
                } else if let Some(s) = sessions.values_mut().find(|s| s.pid == p) {
                    s.status = Some(super::decode_status(st));
                }
            }
        }
        // Sessions whose process ended: what it wrote is in its pipes; send that, then the exit.
        let ended: Vec<u32> = sessions.iter().filter(|(_, s)| s.status.is_some()).map(|(id, _)| *id).collect();
        for id in ended {
            let Some(s) = sessions.get_mut(&id) else { continue };
            for i in (0..s.outs.len()).rev() {
                session_output(&mut host, id, s, i, &mut buf, true);
            }
            if s.outs.is_empty() || s.kill_at.is_some() {
                let s = sessions.remove(&id).expect("listed above");
                host.live(&Message::ExecExit { id, status: s.status.unwrap_or(ExitStatus::Code(255)) });
            }
        }
        let now = Instant::now();
        for s in sessions.values_mut() {
            if s.kill_at.is_some_and(|t| t <= now) {
                kill_group(s.pid, libc::SIGKILL);
                s.kill_at = Some(now + HANGUP_GRACE);
            }
        }
        match host.link {
            Link::Detached => {
                host.probe();
                for s in sessions.values_mut() {
                    s.hang_up();
                }
            }
            Link::Connected | Link::Attached if fds[1].revents != 0 => {
                if fds[1].revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
                    host.fill();
                }
                while let Some(m) = host.next() {
                    if host.link == Link::Connected
                        && !matches!(m, Message::Resume | Message::Shutdown | Message::Ack { .. })
                    {
                        continue; // a host that has not resumed yet
                    }
                    match m {
                        Message::Resume => {
                            host.resume();
                            // A new host knows none of them (a VM restored from a snapshot
                            // may never have seen the old one go): hang them up.
                            for s in sessions.values_mut() {
                                s.hang_up();
                            }
                        }
                        Message::Restored { wall_clock_us } => restored(wall_clock_us),
                        Message::Ack { seq } => host.ack(seq),
                        Message::Signal { signo } if status.is_none() => unsafe {
                            libc::kill(pid, signo);
                        },
                        Message::Shutdown => {
                            unsafe { libc::kill(-1, libc::SIGKILL) };
                            super::power_off(0);
                        }
                        Message::ExecStart { id, argv, env, cwd, user, tty } => {
                            let req = ExecStart { argv, env, cwd, user, tty };
                            start_session(&mut host, &mut sessions, &base, id, req);
                        }
                        Message::ExecStdin { id, data } => {
                            if let Some(s) = sessions.get_mut(&id) {
                                if data.is_empty() {
                                    s.stdin_eof = true;
                                } else if s.stdin_buf.len() + data.len() <= EXEC_WINDOW as usize {
                                    s.stdin_buf.extend(data);
                                } else {
                                    log(&format!("exec {id}: stdin beyond the window; closing it"));
                                    s.stdin_buf.clear();
                                    s.stdin_eof = true;
                                }
                            }
                        }
                        Message::ExecResize { id, rows, cols } => {
                            if let Some(fd) = sessions.get(&id).and_then(|s| s.pty) {
                                set_winsize(fd, rows, cols);
                            }
                        }
                        Message::ExecSignal { id, signo } => {
                            if let Some(s) = sessions.get(&id) {
                                kill_group(s.pid, signo);
                            }
                        }
                        Message::ExecClose { id } => {
                            if let Some(s) = sessions.get_mut(&id) {
                                s.hang_up();
                            }
                        }
                        Message::ExecWindow { id, bytes } => {
                            if let Some(s) = sessions.get_mut(&id) {
                                s.credit = (s.credit + u64::from(bytes)).min(u64::from(EXEC_WINDOW));
                            }
                        }
                        other => log(&format!("ignoring {:?}", other.message_type())),
                    }
                }
            }
            _ => {}
        }
    }
    host.record(|seq| Message::Exited { seq, status: status.unwrap_or(ExitStatus::Code(255)) }, None);
    finish(&mut host)
}

/// After `Exited`: until a host acknowledges it with `Shutdown` (an attached host has
/// [`EXIT_WAIT_ATTACHED`], a detached one [`EXIT_WAIT_DETACHED`] to come back).
fn finish(host: &mut Host<'_>) -> Result<()> {
    let mut deadline = Instant::now() + EXIT_WAIT_ATTACHED;
    let mut was = host.link;
    loop {
        host.flush();
        if host.link != was {
            was = host.link;
            let wait = if was == Link::Attached { EXIT_WAIT_ATTACHED } else { EXIT_WAIT_DETACHED };
            deadline = Instant::now() + wait;
        } else if host.link != Link::Attached && deadline < Instant::now() + EXIT_WAIT_ATTACHED {
            // Detached since before the exit: give the host its long wait once.
            deadline = deadline.max(Instant::now() + EXIT_WAIT_DETACHED);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        if host.link == Link::Detached {
            std::thread::sleep(DETACHED_TICK.min(left));
            host.probe();
            continue;
        }
        let events = if host.tx_off < host.tx.len() { libc::POLLIN | libc::POLLOUT } else { libc::POLLIN };
        let mut p = pfd(host.fd(), events);
        let ms = left.as_millis().min(i32::MAX as u128) as i32;
        if unsafe { libc::poll(&mut p, 1, ms) } <= 0 {
            continue;
        }
        if p.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
            host.fill();
        }
        while let Some(m) = host.next() {
            match m {
                Message::Resume => host.resume(),
                Message::Restored { wall_clock_us } => restored(wall_clock_us),
                Message::Ack { seq } => host.ack(seq),
                Message::Shutdown => return Ok(()),
                _ => {}
            }
        }
    }
}

/// The VM was restored from a snapshot: its clock stood still meanwhile; take the host's.
fn restored(wall_clock_us: u64) {
    let ts = libc::timespec {
        tv_sec: (wall_clock_us / 1_000_000) as libc::time_t,
        tv_nsec: ((wall_clock_us % 1_000_000) * 1000) as libc::c_long,
    };
    if unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) } != 0 {
        log(&format!("restored from a snapshot; setting the clock failed: {}", errno()));
    } else {
        log("restored from a snapshot; clock set from the host");
    }
}

fn pfd(fd: RawFd, events: libc::c_short) -> libc::pollfd {
    libc::pollfd { fd, events, revents: 0 }
}

enum Read {
    Data(usize),
    Again,
    End,
}

fn read_some(fd: RawFd, buf: &mut [u8]) -> Read {
    loop {
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n > 0 {
            return Read::Data(n as usize);
        }
        match (n, errno().raw_os_error()) {
            (_, Some(libc::EINTR)) if n < 0 => continue,
            (_, Some(libc::EAGAIN)) if n < 0 => return Read::Again,
            // EOF, or EIO from a terminal whose other side is closed.
            _ => return Read::End,
        }
    }
}

/// Read a session's output `i` within its credit and send it; `drain`: the process ended,
/// so a pipe with nothing more to read now is done.
fn session_output(host: &mut Host<'_>, id: u32, s: &mut Session, i: usize, buf: &mut [u8], drain: bool) {
    loop {
        let Some((fd, stream)) = s.outs.get(i) else { return };
        let hung_up = s.kill_at.is_some();
        let room = if hung_up { buf.len() } else { buf.len().min(s.credit as usize) };
        if room == 0 {
            return;
        }
        match read_some(fd.as_raw_fd(), &mut buf[..room]) {
            Read::Data(n) => {
                if !hung_up {
                    s.credit -= n as u64;
                    host.live(&Message::ExecOutput { id, stream: *stream, data: buf[..n].to_vec() });
                }
                if !drain {
                    return;
                }
            }
            Read::Again if !drain => return,
            Read::Again | Read::End => {
                s.outs.remove(i);
                return;
            }
        }
    }
}

fn session_stdin(host: &mut Host<'_>, id: u32, s: &mut Session) {
    let Some(fd) = s.stdin.as_ref() else { return };
    let mut written = 0usize;
    while !s.stdin_buf.is_empty() {
        let (a, _) = s.stdin_buf.as_slices();
        let n = unsafe { libc::write(fd.as_raw_fd(), a.as_ptr().cast(), a.len()) };
        if n > 0 {
            s.stdin_buf.drain(..n as usize);
            written += n as usize;
            continue;
        }
        if n < 0 && errno().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        if n < 0 && errno().raw_os_error() == Some(libc::EAGAIN) {
            break;
        }
        // The process closed its stdin: what is left is dropped.
        s.stdin_buf.clear();
        s.stdin_eof = true;
        break;
    }
    if s.stdin_buf.is_empty() && s.stdin_eof && s.pty.is_none() {
        s.stdin = None;
    }
    if written > 0 {
        host.live(&Message::ExecWindow { id, bytes: written as u32 });
    }
}

struct ExecStart {
    argv: Vec<String>,
    env: Vec<(String, String)>,
    cwd: String,
    user: String,
    tty: Option<(u16, u16)>,
}

fn start_session(host: &mut Host<'_>, sessions: &mut HashMap<u32, Session>, base: &Base, id: u32, req: ExecStart) {
    let refuse = |host: &mut Host<'_>, msg: String, code: i32| {
        host.live(&Message::ExecOutput { id, stream: Stream::Stderr, data: format!("vt-init: {msg}\n").into_bytes() });
        host.live(&Message::ExecExit { id, status: ExitStatus::Code(code) });
    };
    if sessions.contains_key(&id) {
        return log(&format!("exec {id}: the id is in use; ignored"));
    }
    if sessions.len() >= MAX_SESSIONS {
        return refuse(host, format!("too many exec sessions at once (at most {MAX_SESSIONS})"), 126);
    }
    match spawn_session(base, &req) {
        Ok(s) => {
            sessions.insert(id, s);
        }
        Err(e) => refuse(host, e, 127),
    }
}

fn spawn_session(base: &Base, req: &ExecStart) -> Result<Session> {
    let Some(prog) = req.argv.first() else { return Err("exec: empty argv".into()) };
    let user = if req.user.is_empty() { &base.user } else { &req.user };
    let (uid, gid, home) = resolve_user(user)?;
    let cwd = if req.cwd.is_empty() { &base.cwd } else { &req.cwd };
    let mut env: Vec<(String, String)> =
        base.env.iter().filter(|(k, _)| !req.env.iter().any(|(rk, _)| rk == k)).cloned().collect();
    env.extend(req.env.iter().cloned());
    if !req.user.is_empty() {
        env.retain(|(k, _)| k != "HOME");
        env.push(("HOME".into(), home));
    }
    if req.tty.is_some() && !env.iter().any(|(k, _)| k == "TERM") {
        env.push(("TERM".into(), "xterm-256color".into()));
    }
    let mut cmd = Command::new(prog);
    cmd.args(&req.argv[1..]).env_clear().envs(env.iter().map(|(k, v)| (OsStr::new(k), OsStr::new(v)))).current_dir(cwd);
    if uid != 0 || gid != 0 {
        cmd.uid(uid).gid(gid);
    }
    let session = match req.tty {
        Some((rows, cols)) => {
            let (master, slave) = open_pty()?;
            set_winsize(master.as_raw_fd(), rows, cols);
            let dup = |fd: &OwnedFd| fd.try_clone().map_err(|e| format!("dup: {e}"));
            cmd.stdin(Stdio::from(dup(&slave)?)).stdout(Stdio::from(dup(&slave)?)).stderr(Stdio::from(slave));
            unsafe {
                cmd.pre_exec(|| {
                    libc::setsid();
                    // The terminal on stdin becomes the controlling terminal.
                    libc::ioctl(0, libc::TIOCSCTTY, 0);
                    Ok(())
                });
            }
            let child = cmd.spawn().map_err(|e| format!("cannot start {prog:?}: {e}"))?;
            drop(cmd);
            set_nonblocking(master.as_raw_fd());
            let stdin = master.try_clone().map_err(|e| format!("dup: {e}"))?;
            let pty = master.as_raw_fd();
            let pid = child.id() as i32;
            #[allow(clippy::mem_forget)]
            std::mem::forget(child);
            Session {
                pid,
                stdin: Some(stdin),
                stdin_buf: VecDeque::new(),
                stdin_eof: false,
                outs: vec![(master, Stream::Stdout)],
                pty: Some(pty),
                credit: u64::from(EXEC_WINDOW),
                status: None,
                kill_at: None,
            }
        }
        None => {
            let (in_r, in_w) = pipe()?;
            let (out_r, out_w) = pipe()?;
            let (err_r, err_w) = pipe()?;
            cmd.stdin(Stdio::from(in_r)).stdout(Stdio::from(out_w)).stderr(Stdio::from(err_w));
            unsafe {
                cmd.pre_exec(|| {
                    libc::setsid();
                    Ok(())
                });
            }
            let child = cmd.spawn().map_err(|e| format!("cannot start {prog:?}: {e}"))?;
            drop(cmd);
            for fd in [in_w.as_raw_fd(), out_r.as_raw_fd(), err_r.as_raw_fd()] {
                set_nonblocking(fd);
            }
            let pid = child.id() as i32;
            #[allow(clippy::mem_forget)]
            std::mem::forget(child);
            Session {
                pid,
                stdin: Some(in_w),
                stdin_buf: VecDeque::new(),
                stdin_eof: false,
                outs: vec![(out_r, Stream::Stdout), (err_r, Stream::Stderr)],
                pty: None,
                credit: u64::from(EXEC_WINDOW),
                status: None,
                kill_at: None,
            }
        }
    };
    Ok(session)
}

/// A new pseudo-terminal from `/dev/pts/ptmx`: (master, slave).
fn open_pty() -> Result<(OwnedFd, OwnedFd)> {
    let ptmx = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
        .open("/dev/pts/ptmx")
        .map_err(|e| format!("open /dev/pts/ptmx: {e}"))?;
    let fd = ptmx.as_raw_fd();
    let mut unlock: libc::c_int = 0;
    let mut n: libc::c_uint = 0;
    unsafe {
        if libc::ioctl(fd, libc::TIOCSPTLCK, &mut unlock) != 0 || libc::ioctl(fd, libc::TIOCGPTN, &mut n) != 0 {
            return Err(format!("pty: {}", errno()));
        }
    }
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(format!("/dev/pts/{n}"))
        .map_err(|e| format!("open /dev/pts/{n}: {e}"))?;
    Ok((OwnedFd::from(ptmx), OwnedFd::from(slave)))
}

fn set_winsize(fd: RawFd, rows: u16, cols: u16) {
    let ws = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
    unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) };
}

#[cfg(test)]
mod tests {
    use std::fs::File;

    use super::*;

    fn host(chan: &mut Channel, link: Link) -> Host<'_> {
        Host {
            chan,
            vsock: false,
            link,
            tx: Vec::new(),
            tx_off: 0,
            recorded: VecDeque::new(),
            recorded_bytes: 0,
            next_seq: 1,
            ready: None,
        }
    }

    fn channel() -> Channel {
        Channel { file: File::open("/dev/null").unwrap(), buf: FrameBuffer::new(), eof: false, vsock: false }
    }

    fn log(h: &mut Host<'_>, n: usize) {
        let data = vec![b'x'; n];
        h.record(|seq| Message::Log { seq, at_us: 5, stream: Stream::Stdout, data }, Some(n as u64));
    }

    fn decode_all(bytes: &[u8]) -> Vec<Message> {
        let mut fb = FrameBuffer::new();
        fb.push(bytes);
        std::iter::from_fn(|| fb.next_message().unwrap()).collect()
    }

    #[test]
    fn detached_output_is_capped_and_the_loss_takes_the_dropped_place() {
        let mut chan = channel();
        let mut h = host(&mut chan, Link::Detached);
        for _ in 0..300 {
            log(&mut h, MAX_LOG_CHUNK);
        }
        assert!(h.recorded_bytes <= RECORD_CAP + 64, "{}", h.recorded_bytes);
        assert!(h.tx.is_empty(), "nothing is written while detached");
        // The first entry says what was dropped, numbered as the last dropped message.
        let kept: Vec<Message> = h.recorded.iter().flat_map(|r| decode_all(&r.frame)).collect();
        let Message::LogLost { seq, bytes } = kept[0] else { panic!("{:?}", kept[0]) };
        let first_kept = match &kept[1] {
            Message::Log { seq, .. } => *seq,
            m => panic!("{m:?}"),
        };
        assert_eq!(seq + 1, first_kept);
        assert_eq!(bytes, seq * MAX_LOG_CHUNK as u64, "every dropped byte is counted");
        // Sequence numbers only grow.
        let seqs: Vec<u64> = h.recorded.iter().map(|r| r.seq).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");

        // Resume: Hello, then everything kept in order; an ack forgets what it covers.
        h.resume();
        let sent = decode_all(&h.tx);
        assert!(matches!(sent[0], Message::Hello { role: Role::Guest, .. }));
        assert_eq!(&sent[1..], &kept[..]);
        h.ack(first_kept);
        assert_eq!(h.recorded.front().map(|r| r.seq), Some(first_kept + 1));
    }

    #[test]
    fn attached_output_is_sent_and_kept_until_acknowledged() {
        let mut chan = channel();
        let mut h = host(&mut chan, Link::Attached);
        log(&mut h, 10);
        h.record(|seq| Message::Exited { seq, status: ExitStatus::Code(3) }, None);
        let sent = decode_all(&h.tx);
        assert_eq!(
            sent,
            [
                Message::Log { seq: 1, at_us: 5, stream: Stream::Stdout, data: vec![b'x'; 10] },
                Message::Exited { seq: 2, status: ExitStatus::Code(3) }
            ]
        );
        assert_eq!(h.recorded.len(), 2);
        h.ack(2);
        assert_eq!((h.recorded.len(), h.recorded_bytes), (0, 0));
        // Live messages are not kept, and not sent while detached.
        h.detach();
        h.live(&Message::ExecExit { id: 1, status: ExitStatus::Code(0) });
        assert!(h.tx.is_empty());
    }
}
