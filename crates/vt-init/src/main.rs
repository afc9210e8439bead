//! vt guest init: PID 1 of every vt microVM (see `docs/runtime.md`).
//!
//! 1. mounts `/dev` (devtmpfs), `/proc`, `/sys` in the initramfs;
//! 2. loads the kernel modules listed in `/etc/vt/modules` (one path per line, dependency
//!    order) with `finit_module` (none with vt's own kernel: everything is built in, the list
//!    is absent);
//! 3. opens the guest channel (the virtio-console port named [`PORT_NAME`]), sends `Hello`;
//! 4. while the host answers: brings up loopback, mounts the read-only root disk (`/dev/vda`,
//!    ext4 label `vt-root`) and the scratch disk (`/dev/vdb`, label `vt-scratch`; in another
//!    order, found by those labels) and builds an overlay root from them; then waits for the
//!    host's `Hello` and `Launch`; switches into the new root; mounts `/dev/pts`, `/dev/shm`,
//!    `/run`, `/tmp`;
//! 5. with a network in the launch: loads `/etc/vt/modules.net` (before the root switch),
//!    configures the interface (addresses, MTU, default routes; `net`); writes `/etc/hosts`
//!    (and `/etc/resolv.conf` when given name servers); mounts volumes by label and writes
//!    secrets to a tmpfs at `/run/secrets` (`mounts`);
//! 6. starts the entrypoint (own session, stdin `/dev/null`, stdout/stderr piped), sends
//!    `Ready`, forwards its output as `Log` frames and host `Signal`s to it, reaps every zombie;
//! 7. when the entrypoint exits: kills what is left, drains the pipes, sends `Exited`, waits
//!    briefly for `Shutdown`, syncs and powers off.
//!
//! Any setup failure is reported as `Failed` on the channel (and on the console) before
//! powering off.
//!
//! Kernel command line words it reads: `vt.debug` (step timings on the console, printed once
//! the entrypoint runs), `vt.again` (with `vt.debug`: loopback, disks and overlay set up and
//! undone once before the real ones, which then show what each costs the second time it runs
//! in the VM; `vt-boot-bench --again`), `vt.probe` (print "vt-init: probe ok" and power off
//! at once: the host's accelerator probe boot).

#![allow(unsafe_code)] // PID 1 work is system calls.

mod mounts;
mod net;
mod supervise;
mod vsock;

use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::time::{Duration, Instant};

use vt_guest_proto::{ExitStatus, FrameBuffer, Launch, Message, Role, PORT_NAME, PROTOCOL_VERSION};

const SOFTWARE: &str = concat!("vt-init/", env!("CARGO_PKG_VERSION"));
const MODULES_LIST: &str = "/etc/vt/modules";
/// Modules for instances with a network (virtio_net and its dependencies).
const MODULES_NET_LIST: &str = "/etc/vt/modules.net";
const ROOT_DEV: &str = "/dev/vda";
const SCRATCH_DEV: &str = "/dev/vdb";
const ROOT_LABEL: &str = "vt-root";
const SCRATCH_LABEL: &str = "vt-scratch";
/// Where the root disk, the scratch disk and the overlay of them are mounted in the initramfs.
const LOWER: &str = "/vt/lower";
const SCRATCH: &str = "/vt/scratch";
const NEW_ROOT: &str = "/vt/root";
/// The overlay's upper and work directories, on the scratch disk.
const UPPER: &str = "/vt/scratch/upper";
const WORK: &str = "/vt/scratch/work";
const DEVICE_WAIT: Duration = Duration::from_secs(10);
/// Printed on the console by a probe boot (`vt.probe` on the kernel command line).
const PROBE_OK: &str = "probe ok";
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

type Result<T> = std::result::Result<T, String>;

/// `vt.debug` is on the kernel command line.
static DEBUG: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// Step timings for `vt.debug`: (CLOCK_BOOTTIME µs, step), kept in memory and printed once
/// the entrypoint runs ([`print_steps`]): a console line per step would cost more than some
/// of the steps under TCG.
static STEPS: std::sync::Mutex<Vec<(u64, String)>> = std::sync::Mutex::new(Vec::new());

/// Record a boot step's time (`vt.debug` only).
fn step(what: &str) {
    if DEBUG.load(std::sync::atomic::Ordering::Relaxed) {
        let at = boottime_us();
        if let Ok(mut steps) = STEPS.lock() {
            steps.push((at, what.to_owned()));
        }
    }
}

/// Print the recorded steps on the console (`vt.debug` only), also relative to init's start.
pub(crate) fn print_steps() {
    let Ok(mut steps) = STEPS.lock() else { return };
    let start = steps.first().map_or(0, |s| s.0);
    for (at, what) in steps.drain(..) {
        log(&format!("{at:>8} us  +{:>6.1} ms  {what}", at.saturating_sub(start) as f64 / 1000.0));
    }
}

fn main() {
    let init_started_us = boottime_us();
    let mut chan: Option<Channel> = None;
    let code = match run(init_started_us, &mut chan) {
        Ok(()) => 0,
        Err(e) => {
            log(&format!("fatal: {e}"));
            if let Some(c) = chan.as_mut() {
                let _ = c.send(&Message::Failed { reason: e });
                c.await_shutdown(Duration::from_secs(1));
            }
            1
        }
    };
    power_off(code);
}

fn log(msg: &str) {
    // stderr is /dev/console (the serial console) when the kernel found it in the initramfs.
    let _ = writeln!(std::io::stderr(), "vt-init: {msg}");
}

fn run(init_started_us: u64, chan: &mut Option<Channel>) -> Result<()> {
    mount_early()?;
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let has = |w: &str| cmdline.split_whitespace().any(|x| x == w);
    if has("vt.probe") {
        // Probe boot (the host checks an accelerator works): prove we got here, power off.
        log(PROBE_OK);
        power_off(0);
    }
    let dbg = has("vt.debug");
    if dbg {
        DEBUG.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Ok(mut steps) = STEPS.lock() {
            steps.push((init_started_us, "init started".to_owned()));
        }
    }
    let t = step;
    t("mounted /dev /proc /sys");
    load_modules(Path::new(MODULES_LIST), dbg)?;
    t("modules loaded");
    let c = chan.insert(Channel::open()?);
    t("channel open");
    c.send(&Message::hello(Role::Guest, SOFTWARE))?;
    if has("vt.again") && dbg {
        // Diagnostics (`vt-boot-bench --again`): the steps up to the overlay once more before
        // the real ones, undone, so the real ones show what a kernel path costs the second
        // time it runs in this VM (under TCG: without its first translation).
        first_round(&t)?;
    }
    // While the host answers (its Launch waits in the port's buffer): what needs nothing from
    // the launch. Under TCG the vCPU would otherwise idle through the host's round trip.
    net::loopback()?;
    t("loopback up");
    mount_disks(&t)?;
    make_upper(UPPER, WORK)?;
    t("made upper and work dirs");
    mount_overlay(UPPER, WORK)?;
    t("mounted the overlay");
    let launch = c.handshake()?;
    t("handshake done");
    if launch.argv.is_empty() {
        return Err("launch config has an empty argv".into());
    }
    if launch.network.is_some() {
        // From the initramfs, so before the root switch; the driver's probe runs meanwhile.
        load_modules(Path::new(MODULES_NET_LIST), dbg)?;
        t("network modules loaded");
    }
    switch_root()?;
    t("switched root");
    if !launch.hostname.is_empty() {
        let h = launch.hostname.as_bytes();
        if unsafe { libc::sethostname(h.as_ptr().cast(), h.len()) } != 0 {
            return Err(format!("sethostname: {}", errno()));
        }
    }
    if let Some(n) = &launch.network {
        let ifname = net::configure(n)?;
        t(&format!("network configured on {ifname}"));
    }
    net::write_etc(&launch.hostname, launch.network.as_ref())?;
    t("wrote /etc/hosts");
    mounts::volumes(&launch.volumes)?;
    let (uid, gid, _) = resolve_user(&launch.user)?;
    mounts::secrets(&launch.secrets, launch.secrets_version, uid, gid)?;
    t("volumes and secrets ready");
    secret_env(&launch)?;
    supervise::run(c, &launch, init_started_us)
}

// ---------------------------------------------------------------------------------------------
// Mounts and the root switch.

fn cstr(s: &str) -> CString {
    CString::new(s).unwrap_or_default()
}

fn errno() -> std::io::Error {
    std::io::Error::last_os_error()
}

fn mount(src: &str, target: &str, fstype: &str, flags: libc::c_ulong, data: &str) -> Result<()> {
    let _ = std::fs::create_dir_all(target);
    let (s, t, f, d) = (cstr(src), cstr(target), cstr(fstype), cstr(data));
    let r = unsafe {
        libc::mount(
            s.as_ptr(),
            t.as_ptr(),
            if fstype.is_empty() { std::ptr::null() } else { f.as_ptr() },
            flags,
            if data.is_empty() { std::ptr::null() } else { d.as_ptr().cast() },
        )
    };
    if r != 0 {
        let e = errno();
        if e.raw_os_error() == Some(libc::EBUSY) && flags & libc::MS_MOVE == 0 {
            return Ok(()); // already mounted (e.g. by the kernel)
        }
        return Err(format!("mount {src} on {target} ({fstype}): {e}"));
    }
    Ok(())
}

fn mount_early() -> Result<()> {
    let nodev = libc::MS_NOSUID | libc::MS_NOEXEC | libc::MS_NODEV;
    mount("devtmpfs", "/dev", "devtmpfs", libc::MS_NOSUID, "mode=0755")?;
    mount("proc", "/proc", "proc", nodev, "")?;
    mount("sysfs", "/sys", "sysfs", nodev, "")?;
    Ok(())
}

fn load_modules(list: &Path, dbg: bool) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(list) else {
        return Ok(()); // a kernel with everything built in needs no list
    };
    let empty = cstr("");
    for path in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let f = File::open(path).map_err(|e| format!("open module {path}: {e}"))?;
        let r = unsafe { libc::syscall(libc::SYS_finit_module, f.as_raw_fd(), empty.as_ptr(), 0 as libc::c_int) };
        if r != 0 {
            let e = errno();
            if e.raw_os_error() != Some(libc::EEXIST) {
                return Err(format!("finit_module {path}: {e}"));
            }
        }
        if dbg {
            log(&format!("{:>8} us  loaded {path}", boottime_us()));
        }
    }
    Ok(())
}

fn wait_for(path: &Path) -> Result<()> {
    let start = Instant::now();
    while !path.exists() {
        if start.elapsed() > DEVICE_WAIT {
            return Err(format!("{} did not appear within {DEVICE_WAIT:?}", path.display()));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

/// The ext4 volume label of a block device, `None` when it is not ext4.
fn ext4_label(dev: &Path) -> Option<String> {
    use std::io::{Seek, SeekFrom};
    let mut f = File::open(dev).ok()?;
    let mut sb = [0u8; 1024];
    f.seek(SeekFrom::Start(1024)).ok()?;
    f.read_exact(&mut sb).ok()?;
    if u16::from_le_bytes([sb[0x38], sb[0x39]]) != 0xEF53 {
        return None;
    }
    let label = &sb[0x78..0x88];
    let end = label.iter().position(|&b| b == 0).unwrap_or(label.len());
    Some(String::from_utf8_lossy(&label[..end]).into_owned())
}

/// The root and scratch disks by ext4 label (`vt-root` from vt-image, `vt-scratch` from the
/// runtime), when they are not where [`mount_disks`] looks first; else `/dev/vda` and
/// `/dev/vdb`.
fn find_disks() -> Result<(String, String)> {
    let (mut root, mut scratch) = (None, None);
    let mut names: Vec<String> = std::fs::read_dir("/sys/block")
        .map(|d| {
            d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| n.starts_with("vd")).collect()
        })
        .unwrap_or_default();
    names.sort();
    for n in names {
        let dev = format!("/dev/{n}");
        match ext4_label(Path::new(&dev)).as_deref() {
            Some(ROOT_LABEL) if root.is_none() => root = Some(dev),
            Some(SCRATCH_LABEL) if scratch.is_none() => scratch = Some(dev),
            _ => {}
        }
    }
    Ok((root.unwrap_or_else(|| ROOT_DEV.to_owned()), scratch.unwrap_or_else(|| SCRATCH_DEV.to_owned())))
}

/// Mount the root disk read-only at `/vt/lower` and the scratch disk at `/vt/scratch`.
///
/// Both backends attach the root disk first (`vda`, read-only) and the scratch disk second
/// (`vdb`): they are mounted so and their labels checked once mounted, which reads nothing
/// the mounts did not. Any other order (another VMM's, or a volume first) falls back to
/// reading every disk's label. `t`: step timings (`vt.debug`).
fn mount_disks(t: &dyn Fn(&str)) -> Result<()> {
    wait_for(Path::new(ROOT_DEV))?;
    wait_for(Path::new(SCRATCH_DEV))?;
    let in_order = mount(ROOT_DEV, LOWER, "ext4", libc::MS_RDONLY, "").is_ok()
        && mounted_label(LOWER).as_deref() == Some(ROOT_LABEL)
        && mount(SCRATCH_DEV, SCRATCH, "ext4", libc::MS_NOATIME, "").is_ok()
        && mounted_label(SCRATCH).as_deref() == Some(SCRATCH_LABEL);
    if in_order {
        t("mounted the root and scratch disks");
        return Ok(());
    }
    for dir in [SCRATCH, LOWER] {
        let _ = umount(dir);
    }
    let (root_dev, scratch_dev) = find_disks()?;
    if root_dev == scratch_dev {
        return Err(format!("root and scratch disk are both {root_dev}"));
    }
    t("found the disks by label");
    mount(&root_dev, LOWER, "ext4", libc::MS_RDONLY, "")?;
    mount(&scratch_dev, SCRATCH, "ext4", libc::MS_NOATIME, "")?;
    t("mounted the root and scratch disks");
    Ok(())
}

/// The label of the filesystem mounted at `dir` (`FS_IOC_GETFSLABEL`), `None` if it has
/// none or cannot tell.
fn mounted_label(dir: &str) -> Option<String> {
    /// `_IOR(0x94, 49, char[FSLABEL_MAX])` (include/uapi/linux/fs.h).
    const FS_IOC_GETFSLABEL: libc::c_ulong = 0x8100_9431;
    let f = File::open(dir).ok()?;
    let mut label = [0u8; 256];
    if unsafe { libc::ioctl(f.as_raw_fd(), FS_IOC_GETFSLABEL as _, label.as_mut_ptr()) } != 0 {
        return None;
    }
    let end = label.iter().position(|&b| b == 0).unwrap_or(label.len());
    (end > 0).then(|| String::from_utf8_lossy(&label[..end]).into_owned())
}

fn umount(dir: &str) -> Result<()> {
    let c = cstr(dir);
    if unsafe { libc::umount2(c.as_ptr(), 0) } != 0 {
        return Err(format!("umount {dir}: {}", errno()));
    }
    Ok(())
}

/// The overlay's upper and work directories on the scratch disk.
fn make_upper(upper: &str, work: &str) -> Result<()> {
    for d in [upper, work] {
        std::fs::create_dir_all(d).map_err(|e| format!("mkdir {d}: {e}"))?;
    }
    Ok(())
}

/// The overlay of the scratch disk's `upper` over the root disk at `/vt/root`.
fn mount_overlay(upper: &str, work: &str) -> Result<()> {
    mount("overlay", NEW_ROOT, "overlay", 0, &format!("lowerdir={LOWER},upperdir={upper},workdir={work}"))
}

/// `vt.again`: loopback, both disks and an overlay, then all undone (see [`run`]).
fn first_round(t: &dyn Fn(&str)) -> Result<()> {
    let (upper, work) = (format!("{SCRATCH}/first-upper"), format!("{SCRATCH}/first-work"));
    net::loopback()?;
    t("first round: loopback up");
    mount_disks(&|s: &str| t(&format!("first round: {s}")))?;
    make_upper(&upper, &work)?;
    t("first round: made upper and work dirs");
    mount_overlay(&upper, &work)?;
    t("first round: mounted the overlay");
    for dir in [NEW_ROOT, SCRATCH, LOWER] {
        umount(dir)?;
    }
    net::link("lo", false)?;
    t("first round: undone");
    Ok(())
}

/// Make `/vt/root` the root (with `/dev`, `/proc`, `/sys` moved into it) and mount
/// `/dev/pts`, `/dev/shm`, `/run`, `/tmp` in it. After the network modules are loaded: they
/// are in the initramfs.
fn switch_root() -> Result<()> {
    for m in ["/dev", "/proc", "/sys"] {
        mount(m, &format!("{NEW_ROOT}{m}"), "", libc::MS_MOVE, "")?;
    }
    // The initramfs is rootfs, which cannot be pivot_root'ed: move the new root over it and
    // chroot (what switch_root does). Its few MB stay allocated; they are not worth a walk.
    std::env::set_current_dir(NEW_ROOT).map_err(|e| format!("chdir {NEW_ROOT}: {e}"))?;
    mount(".", "/", "", libc::MS_MOVE, "")?;
    let dot = cstr(".");
    if unsafe { libc::chroot(dot.as_ptr()) } != 0 {
        return Err(format!("chroot: {}", errno()));
    }
    std::env::set_current_dir("/").map_err(|e| format!("chdir /: {e}"))?;
    let nodev = libc::MS_NOSUID | libc::MS_NODEV;
    mount("devpts", "/dev/pts", "devpts", libc::MS_NOSUID | libc::MS_NOEXEC, "mode=0620,ptmxmode=0666")?;
    mount("shm", "/dev/shm", "tmpfs", nodev, "mode=1777")?;
    mount("run", "/run", "tmpfs", nodev, "mode=0755")?;
    mount("tmp", "/tmp", "tmpfs", nodev, "mode=1777")?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The guest channel.

struct Channel {
    file: File,
    buf: FrameBuffer,
    eof: bool,
    /// A vsock connection (Firecracker), not a virtio-console port: reconnected by init.
    vsock: bool,
}

impl Channel {
    /// Find the virtio-console port named PORT_NAME through sysfs and open it.
    fn open() -> Result<Self> {
        let start = Instant::now();
        loop {
            if let Ok(dir) = std::fs::read_dir("/sys/class/virtio-ports") {
                for e in dir.flatten() {
                    let name = std::fs::read_to_string(e.path().join("name")).unwrap_or_default();
                    if name.trim() == PORT_NAME {
                        let dev = Path::new("/dev").join(e.file_name());
                        wait_for(&dev)?;
                        let file = std::fs::OpenOptions::new()
                            .read(true)
                            .write(true)
                            .open(&dev)
                            .map_err(|e| format!("open {}: {e}", dev.display()))?;
                        set_cloexec(file.as_raw_fd());
                        return Ok(Self { file, buf: FrameBuffer::new(), eof: false, vsock: false });
                    }
                }
            }
            // Firecracker: no virtio-console, the channel is vsock (vsock.rs).
            if let Some(file) = vsock::fallback()? {
                return Ok(Self { file, buf: FrameBuffer::new(), eof: false, vsock: true });
            }
            if start.elapsed() > DEVICE_WAIT {
                return Err(format!("no virtio-console port named {PORT_NAME}"));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn send(&mut self, m: &Message) -> Result<()> {
        let bytes = m.encode().map_err(|e| e.to_string())?;
        self.file.write_all(&bytes).map_err(|e| format!("channel write: {e}"))
    }

    /// Read once from the port (blocking) and feed the frame buffer.
    fn fill(&mut self) -> Result<()> {
        let mut b = [0u8; 16 * 1024];
        match self.file.read(&mut b) {
            Ok(0) => {
                self.eof = true;
                Ok(())
            }
            Ok(n) => {
                self.buf.push(&b[..n]);
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Ok(()),
            Err(e) => Err(format!("channel read: {e}")),
        }
    }

    fn next(&mut self) -> Result<Option<Message>> {
        self.buf.next_message().map_err(|e| format!("channel: {e}"))
    }

    /// Blocking: the next message (waiting while the host is not connected).
    fn recv(&mut self) -> Result<Message> {
        loop {
            if let Some(m) = self.next()? {
                return Ok(m);
            }
            self.fill()?;
            if self.eof {
                // No host connected yet: virtio ports read 0 then. Retry shortly.
                self.eof = false;
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }

    /// Wait for the host's Hello, then its Launch.
    fn handshake(&mut self) -> Result<Launch> {
        loop {
            match self.recv()? {
                Message::Hello { min_version, max_version, .. } => {
                    if min_version > PROTOCOL_VERSION || max_version < PROTOCOL_VERSION {
                        return Err(format!(
                            "host speaks protocol {min_version}..={max_version}, guest {PROTOCOL_VERSION}"
                        ));
                    }
                }
                Message::Launch(l) => return Ok(l),
                Message::Shutdown => power_off(0),
                other => log(&format!("ignoring {:?} before launch", other.message_type())),
            }
        }
    }

    /// After Exited: wait up to `limit` for the host's Shutdown (so it has read everything).
    fn await_shutdown(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            match self.next() {
                Ok(Some(Message::Shutdown)) | Err(_) => return,
                Ok(Some(_)) => continue,
                Ok(None) => {}
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.eof {
                return;
            }
            if !poll_in(self.file.as_raw_fd(), left) || self.fill().is_err() {
                return;
            }
        }
    }
}

fn poll_in(fd: RawFd, timeout: Duration) -> bool {
    let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    unsafe { libc::poll(&mut p, 1, ms) > 0 }
}

fn set_cloexec(fd: RawFd) {
    unsafe {
        libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
    }
}

// ---------------------------------------------------------------------------------------------
// The entrypoint.

/// `user` → (uid, gid, home) using the image's /etc/passwd and /etc/group.
fn resolve_user(user: &str) -> Result<(u32, u32, String)> {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let group = std::fs::read_to_string("/etc/group").unwrap_or_default();
    resolve_user_in(user, &passwd, &group)
}

fn resolve_user_in(user: &str, passwd: &str, group: &str) -> Result<(u32, u32, String)> {
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let entry = |pred: &dyn Fn(&[&str]) -> bool| {
        passwd.lines().map(|l| l.split(':').collect::<Vec<_>>()).find(|f| f.len() >= 7 && pred(f))
    };
    let (uid, mut gid, home) = if u.is_empty() || u == "root" {
        (0, 0, "/root".to_owned())
    } else if let Ok(uid) = u.parse::<u32>() {
        match entry(&|f| f[2] == u) {
            Some(f) => (uid, f[3].parse().unwrap_or(uid), f[5].to_owned()),
            None => (uid, uid, "/".to_owned()),
        }
    } else {
        let f = entry(&|f| f[0] == u).ok_or_else(|| format!("user {u:?} not in /etc/passwd"))?;
        let uid = f[2].parse().map_err(|_| format!("bad uid for {u:?}"))?;
        (uid, f[3].parse().unwrap_or(uid), f[5].to_owned())
    };
    if let Some(g) = g {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => group
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() >= 3 && f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| format!("group {g:?} not in /etc/group"))?,
        };
    }
    Ok((uid, gid, home))
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(format!("pipe: {}", errno()));
    }
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn sigchld_fd() -> Result<OwnedFd> {
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        if libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            return Err(format!("sigprocmask: {}", errno()));
        }
        let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK);
        if fd < 0 {
            return Err(format!("signalfd: {}", errno()));
        }
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

fn decode_status(st: libc::c_int) -> ExitStatus {
    if libc::WIFSIGNALED(st) {
        ExitStatus::Signal(libc::WTERMSIG(st))
    } else {
        ExitStatus::Code(libc::WEXITSTATUS(st))
    }
}

/// The secrets the launch names in `secret_env`, as environment variables (values are bytes:
/// an environment variable may hold anything but NUL).
fn secret_env(launch: &Launch) -> Result<Vec<(&std::ffi::OsStr, &std::ffi::OsStr)>> {
    use std::os::unix::ffi::OsStrExt;
    let mut out = vec![];
    for name in &launch.secret_env {
        let s = launch
            .secrets
            .iter()
            .find(|s| &s.name == name)
            .ok_or_else(|| format!("secret_env names {name:?}, which is not one of the instance's secrets"))?;
        if s.data.contains(&0) {
            return Err(format!(
                "secret {name:?} holds a NUL byte: it cannot be an environment variable (read /run/secrets/{name})"
            ));
        }
        out.push((std::ffi::OsStr::new(name.as_str()), std::ffi::OsStr::from_bytes(&s.data)));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------

fn boottime_us() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
}

fn power_off(code: i32) -> ! {
    unsafe {
        libc::sync();
        if libc::getpid() == 1 {
            // Firecracker ends the VM on a reboot, not a power-off (vsock.rs).
            libc::reboot(if vsock::reboot_for_power_off() { libc::RB_AUTOBOOT } else { libc::RB_POWER_OFF });
        }
    }
    // Not PID 1 (a test run): nothing to power off, leave with the code.
    #[allow(clippy::exit)]
    std::process::exit(code)
}

#[cfg(test)]
mod tests {
    use super::resolve_user_in;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nstaff:x:50:\n";

    #[test]
    fn users() {
        let r = |u| resolve_user_in(u, PASSWD, GROUP);
        assert_eq!(r("").unwrap(), (0, 0, "/root".into()));
        assert_eq!(r("root").unwrap(), (0, 0, "/root".into()));
        assert_eq!(r("app").unwrap(), (1000, 1001, "/home/app".into()));
        assert_eq!(r("1000").unwrap(), (1000, 1001, "/home/app".into()));
        assert_eq!(r("4242").unwrap(), (4242, 4242, "/".into()));
        assert_eq!(r("4242:7").unwrap(), (4242, 7, "/".into()));
        assert_eq!(r("app:staff").unwrap(), (1000, 50, "/home/app".into()));
        assert!(r("ghost").is_err());
        assert!(r("app:nogroup").is_err());
    }
}
