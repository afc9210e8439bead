//! The data directory: the one place that knows every path under `<data-dir>`.
//!
//! ```text
//! <data-dir>/                      mode 0700
//!   vt.sqlite (+ -wal, -shm)       the embedded store (without --database-url)
//!   lock                           held (flock) by the one server or offline command using it
//!   master.key                     the master key that wraps the envs' secret keys (0600; docs/secrets.md)
//!   admin-token                    the first admin token, written on first start (0600)
//!   node-token                     the in-process agent's token, bound to its node (0600)
//!   console-password               the console user `vt`'s password: an admin token's secret (0600)
//!   registry/                      the built-in OCI registry (docs/registry.md)
//!   ingress-table.json             the route table the ingress last applied
//!   agent/instances/<id>.json      the agent's record of each instance it ran
//!   agent/vms/<id>/                per-VM work directories (scratch disk, sockets)
//!   agent/logs/<id>.log[.1]        instance logs
//!   agent/images/                  the image cache and root disks
//! ```

use std::io;
use std::path::{Path, PathBuf};

use vt_agent::AgentDirs;

/// A data directory taken by this process ([`DataDir::lock`]).
#[derive(Debug)]
pub struct DataDirLock {
    _file: std::fs::File,
}

#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// The layout under `root`, creating `root` (mode 0700) when missing.
    pub fn create(root: &Path) -> io::Result<DataDir> {
        std::fs::create_dir_all(root)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700))?;
        }
        Ok(DataDir { root: root.to_owned() })
    }

    /// The layout under `root`, as it is (for readers such as the CLI).
    pub fn at(root: &Path) -> DataDir {
        DataDir { root: root.to_owned() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn sqlite(&self) -> PathBuf {
        self.root.join("vt.sqlite")
    }

    pub fn master_key(&self) -> PathBuf {
        self.root.join("master.key")
    }

    /// Take the data directory for this process: one server (or offline
    /// command) at a time. Released when the lock is dropped or the process ends.
    pub fn lock(&self) -> io::Result<DataDirLock> {
        let path = self.root.join("lock");
        let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path)?;
        match file.try_lock() {
            Ok(()) => Ok(DataDirLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!(
                    "another vt server (or offline command) is using {}: it holds {}; stop it first",
                    self.root.display(),
                    path.display()
                ),
            )),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }

    pub fn admin_token(&self) -> PathBuf {
        self.root.join("admin-token")
    }

    pub fn node_token(&self) -> PathBuf {
        self.root.join("node-token")
    }

    /// A joined node's WireGuard private key (base64, 0600; docs/nodes.md).
    pub fn wireguard_key(&self) -> PathBuf {
        self.root.join("wireguard.key")
    }

    /// The mesh's userspace WireGuard device's output (boringtun, where the kernel has none).
    pub fn mesh_log(&self) -> PathBuf {
        self.root.join("mesh.log")
    }

    /// A joined node's enrollment: its id, name, labels and control plane (no secret).
    pub fn enrollment(&self) -> PathBuf {
        self.root.join("enrollment.json")
    }

    pub fn console_password(&self) -> PathBuf {
        self.root.join("console-password")
    }

    pub fn registry(&self) -> PathBuf {
        self.root.join("registry")
    }

    pub fn ingress_table(&self) -> PathBuf {
        self.root.join("ingress-table.json")
    }

    pub fn agent(&self) -> AgentDirs {
        let agent = self.root.join("agent");
        AgentDirs {
            instances: agent.join("instances"),
            vms: agent.join("vms"),
            logs: agent.join("logs"),
            images: agent.join("images"),
            volumes: agent.join("volumes"),
        }
    }
}
