//! Where one microVM's files live, with and without Firecracker's jailer.
//!
//! Without the jailer Firecracker runs as we do and names host paths: its files are in the
//! instance's work dir. With it (`docs/jailer.md` of Firecracker), the jailer creates
//! `<chroot_base>/<exec_file_name>/<id>/root`, copies the Firecracker binary into it, pivots
//! into it, drops to `uid:gid` and execs Firecracker: every path Firecracker is given must
//! be inside that root, named relative to it, and usable by `uid:gid`.
//!
//! - **Who**: every jail runs as a uid and gid of its own, `id_base + slot` ([`Jail::claim`]:
//!   a symlink `<chroot_base>/vt-ids/<slot>` → the jail id, made atomically, removed with
//!   the jail), so one jailed Firecracker cannot open another's files.
//! - **Read-only files** (kernel, initramfs, root disk) are hard-linked into the root (copied
//!   across filesystems): a link keeps the original's owner and mode, which must let the
//!   jail's user read it. Nothing outside the jail is chowned.
//! - **Writable disks the user owns** (volumes) are never linked nor chowned (a hard link is
//!   the same inode: chowning it would change the owner of the user's file on the host).
//!   Each is attached to a loop device and the jail gets a block-device node of its own for
//!   it ([`Jail::attach_disk`]: `mknod`, mode 0600, owned by the jail's user): Firecracker
//!   opens it by path like a file. The host file keeps its owner, mode and inode; the loop
//!   device is detached when the jail is removed.
//! - **Our files** (scratch disk, log, vsock listener) are created in the root and handed to
//!   the jail's user ([`Jail::give`]).
//! - **Network**: with `netns`, the jail joins `/var/run/netns/vt-<id>`, which holds the
//!   instance's tap (see [`crate::net::NetworkSpec::create_in_netns`]).
//!
//! `<chroot_base>/<exec_file_name>/<id>` is removed when the VM is gone.

use std::ffi::OsString;
use std::io::ErrorKind;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::JailerConfig;

/// API socket file name (in the work dir, or the jail's root).
pub const API_SOCKET: &str = "firecracker.socket";
/// vsock `uds_path` file name; guest-initiated connections to port P arrive on `<it>_P`.
pub const VSOCK_UDS: &str = "vsock.sock";
pub const SCRATCH: &str = "scratch.ext4";
/// Firecracker's own log (`PUT /logger`).
pub const LOG: &str = "firecracker.log";
/// Names of the linked resources inside a jail.
pub const JAIL_KERNEL: &str = "vmlinux";
pub const JAIL_INITRAMFS: &str = "initramfs.cpio";
pub const JAIL_ROOT_DISK: &str = "root.ext4";

/// The host-side Unix socket on which a guest-initiated vsock connection to `port` arrives:
/// `<uds_path>_<port>` (Firecracker's hybrid vsock, `docs/vsock.md`).
pub fn vsock_listener_path(uds_path: &Path, port: u32) -> PathBuf {
    let mut p = uds_path.as_os_str().to_owned();
    p.push(format!("_{port}"));
    PathBuf::from(p)
}

/// The jailer's `--id`: alphanumerics and hyphens, at most 64 characters. Instance ids
/// (`inst_...`) map `_` and anything else to `-`.
pub fn jail_id(instance_id: &str) -> String {
    instance_id.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' }).take(64).collect()
}

/// One jail: `dir` = `<chroot_base>/<exec_file_name>/<id>`, `root` = `dir/root`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jail {
    pub id: String,
    pub dir: PathBuf,
    pub root: PathBuf,
    /// Its user and group: `id_base + slot` once [`Jail::claim`]ed.
    pub uid: u32,
    pub gid: u32,
    /// The network namespace it joins (`vt-<id>`), when the jailer is configured with one.
    pub netns: Option<String>,
    /// `<chroot_base>/vt-ids`: one symlink per claimed slot.
    ids_dir: PathBuf,
}

impl Jail {
    pub fn new(cfg: &JailerConfig, firecracker_bin: &Path, instance_id: &str) -> Self {
        let id = jail_id(instance_id);
        let exec_name = firecracker_bin.file_name().map(|n| n.to_owned()).unwrap_or_else(|| "firecracker".into());
        let dir = cfg.chroot_base_dir.join(exec_name).join(&id);
        let root = dir.join("root");
        let netns = cfg.netns.then(|| format!("vt-{id}"));
        let ids_dir = cfg.chroot_base_dir.join("vt-ids");
        Self { id, dir, root, uid: cfg.id_base, gid: cfg.id_base, netns, ids_dir }
    }

    /// Take a uid/gid of this jail's own: `id_base + slot`, the slot this jail already holds
    /// (a restart, or a new agent attaching), else the first free one from a slot derived
    /// from the id. A slot is held by the symlink `vt-ids/<slot>` → jail id (`symlink` is
    /// atomic: two jails never take one slot); a slot whose jail directory is gone is stale
    /// and taken over.
    pub fn claim(&mut self, cfg: &JailerConfig) -> std::io::Result<()> {
        let slots = cfg.id_count.max(1);
        std::fs::create_dir_all(&self.ids_dir)?;
        let held = std::fs::read_dir(&self.ids_dir)?.filter_map(Result::ok).find_map(|e| {
            let target = std::fs::read_link(e.path()).ok()?;
            (target.as_os_str() == self.id.as_str()).then(|| e.file_name().to_str()?.parse::<u32>().ok()).flatten()
        });
        let slot = match held.filter(|s| *s < slots) {
            Some(s) => s,
            None => self.take_free_slot(slots)?,
        };
        let id = cfg.id_base.checked_add(slot).ok_or_else(|| std::io::Error::other("uid past u32::MAX"))?;
        (self.uid, self.gid) = (id, id);
        Ok(())
    }

    fn take_free_slot(&self, slots: u32) -> std::io::Result<u32> {
        let start = crate::net::fnv64(&self.id) % u64::from(slots);
        for i in 0..u64::from(slots) {
            let slot = u32::try_from((start + i) % u64::from(slots)).unwrap_or(0);
            let link = self.ids_dir.join(slot.to_string());
            match std::os::unix::fs::symlink(&self.id, &link) {
                Ok(()) => return Ok(slot),
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                    let owner = std::fs::read_link(&link).unwrap_or_default();
                    let parent = self.dir.parent().unwrap_or(&self.dir);
                    if owner.as_os_str().is_empty() || !parent.join(&owner).exists() {
                        // Stale: its jail is gone. Take it over (one of two racers wins).
                        let _ = std::fs::remove_file(&link);
                        if std::os::unix::fs::symlink(&self.id, &link).is_ok() {
                            return Ok(slot);
                        }
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Err(std::io::Error::other(format!(
            "all {slots} jail uids are taken (see {}; raise the jailer's id count)",
            self.ids_dir.display()
        )))
    }

    /// Give this jail's uid slot back (after [`Jail::remove`]).
    pub fn release(&self) {
        let Ok(entries) = std::fs::read_dir(&self.ids_dir) else { return };
        for e in entries.filter_map(Result::ok) {
            if std::fs::read_link(e.path()).is_ok_and(|t| t.as_os_str() == self.id.as_str()) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    /// The jailer's command line (after the program name): jailer options, `--`, then
    /// Firecracker's (the API socket, named inside the jail). `cgroups`: `file=value` pairs
    /// for the jailer to write in the instance's cgroup v2 (under `cfg.cgroup_parent`).
    pub fn argv(&self, cfg: &JailerConfig, firecracker_bin: &Path, cgroups: &[String]) -> Vec<OsString> {
        let mut a: Vec<OsString> = vec![
            "--id".into(),
            self.id.clone().into(),
            "--exec-file".into(),
            firecracker_bin.into(),
            "--uid".into(),
            self.uid.to_string().into(),
            "--gid".into(),
            self.gid.to_string().into(),
            "--chroot-base-dir".into(),
            cfg.chroot_base_dir.clone().into(),
        ];
        if let Some(ns) = &self.netns {
            a.extend(["--netns".into(), crate::net::netns_path(ns).into()]);
        }
        if let Some(parent) = cfg.cgroup_parent.as_ref().filter(|_| !cgroups.is_empty()) {
            a.extend(["--cgroup-version".into(), "2".into(), "--parent-cgroup".into(), parent.into()]);
            for c in cgroups {
                a.extend(["--cgroup".into(), c.into()]);
            }
        }
        a.extend(["--".into(), "--api-sock".into(), Path::new("/").join(API_SOCKET).into()]);
        a
    }

    /// Start from an empty root: remove what a previous run left, create `root`.
    pub fn create(&self) -> std::io::Result<()> {
        self.remove()?;
        std::fs::create_dir_all(&self.root)
    }

    /// Put a read-only `src` into the root as `name`: a hard link, or a copy (owned by the
    /// jail's user) when linking is impossible (another filesystem). A link keeps the
    /// original's owner and mode (nothing outside the jail is changed): it must be readable
    /// by the jail's user.
    pub fn link(&self, src: &Path, name: &str) -> std::io::Result<PathBuf> {
        let dst = self.root.join(name);
        let _ = std::fs::remove_file(&dst);
        if std::fs::hard_link(src, &dst).is_err() {
            std::fs::copy(src, &dst)?;
            self.give(&dst)?;
        }
        Ok(dst)
    }

    /// Give the writable disk `src` to the jail as `name` without touching `src`: attach it to
    /// a free loop device (`losetup --find`) and create a block-device node for that device
    /// in the root, mode 0600, owned by the jail's user. Needs root. The loop device is
    /// detached by [`Jail::remove`] (found again from the node).
    pub fn attach_disk(&self, src: &Path, name: &str) -> std::io::Result<PathBuf> {
        let dst = self.root.join(name);
        let out = Command::new("losetup")
            .arg("--find")
            .arg("--show")
            .arg(src)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| std::io::Error::other(format!("cannot run losetup (util-linux): {e}")))?;
        if !out.status.success() {
            let why = String::from_utf8_lossy(&out.stderr).trim().to_owned();
            return Err(std::io::Error::other(format!("losetup --find --show {}: {why}", src.display())));
        }
        let dev = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        let made = (|| {
            let rdev = std::fs::metadata(&dev)?.rdev();
            let (major, minor) = (dev_major(rdev), dev_minor(rdev));
            let _ = std::fs::remove_file(&dst);
            let st = Command::new("mknod")
                .args(["-m", "0600"])
                .arg(&dst)
                .args(["b", &major.to_string(), &minor.to_string()])
                .stdin(Stdio::null())
                .status()?;
            if !st.success() {
                return Err(std::io::Error::other(format!("mknod {} b {major} {minor}: {st}", dst.display())));
            }
            self.give(&dst)
        })();
        if let Err(e) = made {
            detach_loop(&dev);
            return Err(e);
        }
        Ok(dst)
    }

    /// Hand a file Firecracker writes to (or connects to) to the jail's user.
    pub fn give(&self, path: &Path) -> std::io::Result<()> {
        std::os::unix::fs::chown(path, Some(self.uid), Some(self.gid))
    }

    /// Remove the whole jail (`<chroot_base>/<exec>/<id>`), first detaching the loop devices
    /// its block-device nodes name.
    pub fn remove(&self) -> std::io::Result<()> {
        if let Ok(entries) = std::fs::read_dir(&self.root) {
            for e in entries.filter_map(Result::ok) {
                let Ok(m) = std::fs::symlink_metadata(e.path()) else { continue };
                if m.file_type().is_block_device() && dev_major(m.rdev()) == LOOP_MAJOR {
                    let sys = PathBuf::from(format!("/sys/dev/block/{}:{}", LOOP_MAJOR, dev_minor(m.rdev())));
                    if let Some(name) =
                        std::fs::canonicalize(sys).ok().and_then(|p| p.file_name().map(|n| n.to_owned()))
                    {
                        detach_loop(&Path::new("/dev").join(name));
                    }
                }
            }
        }
        remove_dir_all_if_exists(&self.dir)
    }
}

/// The block major of loop devices.
const LOOP_MAJOR: u64 = 7;

/// glibc's `major()`/`minor()` of a `dev_t`.
fn dev_major(rdev: u64) -> u64 {
    ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff)
}

fn dev_minor(rdev: u64) -> u64 {
    (rdev & 0xff) | ((rdev >> 12) & !0xff)
}

fn detach_loop(dev: &Path) {
    let done = Command::new("losetup").arg("-d").arg(dev).stdin(Stdio::null()).stderr(Stdio::null()).status();
    if !matches!(done, Ok(s) if s.success()) {
        tracing::warn!(device = %dev.display(), "loop device not detached");
    }
}

fn remove_dir_all_if_exists(p: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(p) {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Where one VM's files are, as the host sees them and as Firecracker names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The instance's work dir: console log and `vmm.pid` (kept after the VM).
    pub work_dir: PathBuf,
    /// Where Firecracker's files are on the host: the work dir, or the jail's root.
    pub vmm_dir: PathBuf,
    /// How Firecracker names `vmm_dir`: the same path, or `/` in a jail.
    pub vmm_view: PathBuf,
    pub jail: Option<Jail>,
}

impl Layout {
    pub fn new(work_dir: &Path, jail: Option<Jail>) -> Self {
        match jail {
            None => Self {
                work_dir: work_dir.to_owned(),
                vmm_dir: work_dir.to_owned(),
                vmm_view: work_dir.to_owned(),
                jail: None,
            },
            Some(j) => Self {
                work_dir: work_dir.to_owned(),
                vmm_dir: j.root.clone(),
                vmm_view: PathBuf::from("/"),
                jail: Some(j),
            },
        }
    }

    /// A file of Firecracker's, on the host.
    pub fn host(&self, name: &str) -> PathBuf {
        self.vmm_dir.join(name)
    }

    /// The same file as Firecracker names it.
    pub fn vmm(&self, name: &str) -> PathBuf {
        self.vmm_view.join(name)
    }

    pub fn api_socket(&self) -> PathBuf {
        self.host(API_SOCKET)
    }

    /// Where we listen for the guest channel (vsock port `port`).
    pub fn channel_listener(&self, port: u32) -> PathBuf {
        vsock_listener_path(&self.host(VSOCK_UDS), port)
    }

    pub fn console(&self) -> PathBuf {
        self.work_dir.join("console.log")
    }
}
