//! Where one microVM's files live, with and without Firecracker's jailer.
//!
//! Without the jailer Firecracker runs as we do and names host paths: its files are in the
//! instance's work dir. With it (`docs/jailer.md` of Firecracker), the jailer creates
//! `<chroot_base>/<exec_file_name>/<id>/root`, copies the Firecracker binary into it, pivots
//! into it, drops to `uid:gid` and execs Firecracker: every path Firecracker is given must
//! be inside that root, named relative to it, and usable by `uid:gid`. We hard-link (or
//! copy, across filesystems) the kernel, initramfs and root disk into the root, create the
//! scratch disk, the log file and the vsock listener there, chown what Firecracker writes
//! to, and remove `<chroot_base>/<exec_file_name>/<id>` when the VM is gone.

use std::ffi::OsString;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

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
    pub uid: u32,
    pub gid: u32,
}

impl Jail {
    pub fn new(cfg: &JailerConfig, firecracker_bin: &Path, instance_id: &str) -> Self {
        let id = jail_id(instance_id);
        let exec_name = firecracker_bin.file_name().map(|n| n.to_owned()).unwrap_or_else(|| "firecracker".into());
        let dir = cfg.chroot_base_dir.join(exec_name).join(&id);
        let root = dir.join("root");
        Self { id, dir, root, uid: cfg.uid, gid: cfg.gid }
    }

    /// The jailer's command line (after the program name): jailer options, `--`, then
    /// Firecracker's (the API socket, named inside the jail).
    pub fn argv(&self, cfg: &JailerConfig, firecracker_bin: &Path) -> Vec<OsString> {
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
        if let Some(ns) = &cfg.netns {
            a.extend(["--netns".into(), ns.into()]);
        }
        a.extend(["--".into(), "--api-sock".into(), Path::new("/").join(API_SOCKET).into()]);
        a
    }

    /// Start from an empty root: remove what a previous run left, create `root`.
    pub fn create(&self) -> std::io::Result<()> {
        remove_dir_all_if_exists(&self.dir)?;
        std::fs::create_dir_all(&self.root)
    }

    /// Put `src` into the root as `name`: a hard link, or a copy (owned by the jail's user)
    /// when linking is impossible (another filesystem). A link keeps the original's owner
    /// and mode: read-only resources must be readable by the jail's user.
    pub fn link(&self, src: &Path, name: &str) -> std::io::Result<PathBuf> {
        let dst = self.root.join(name);
        let _ = std::fs::remove_file(&dst);
        if std::fs::hard_link(src, &dst).is_err() {
            std::fs::copy(src, &dst)?;
            self.give(&dst)?;
        }
        Ok(dst)
    }

    /// Hand a file Firecracker writes to (or connects to) to the jail's user.
    pub fn give(&self, path: &Path) -> std::io::Result<()> {
        std::os::unix::fs::chown(path, Some(self.uid), Some(self.gid))
    }

    /// Remove the whole jail (`<chroot_base>/<exec>/<id>`).
    pub fn remove(&self) -> std::io::Result<()> {
        remove_dir_all_if_exists(&self.dir)
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
