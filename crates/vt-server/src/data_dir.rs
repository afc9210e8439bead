//! The data directory: the one place that knows every path under `<data-dir>`.
//!
//! ```text
//! <data-dir>/                      mode 0700
//!   vt.sqlite (+ -wal, -shm)       the embedded store (without --database-url)
//!   admin-token                    the first admin token, written on first start (0600)
//!   node-token                     the in-process agent's token, bound to its node (0600)
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

    pub fn admin_token(&self) -> PathBuf {
        self.root.join("admin-token")
    }

    pub fn node_token(&self) -> PathBuf {
        self.root.join("node-token")
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
        }
    }
}
