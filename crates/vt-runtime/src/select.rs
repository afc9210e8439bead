//! Which backend a node runs: `VT_RUNTIME=qemu|firecracker` (default qemu).

use std::path::Path;
use std::sync::Arc;

use crate::firecracker::{FirecrackerConfig, FirecrackerRuntime};
use crate::qemu::{QemuConfig, QemuRuntime};
use crate::{Runtime, RuntimeError};

/// A microVM backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RuntimeKind {
    /// `qemu-system-x86_64 -M microvm`, KVM or TCG: works everywhere.
    #[default]
    Qemu,
    /// Firecracker (and its jailer when configured): bare-metal KVM hosts.
    Firecracker,
}

impl RuntimeKind {
    /// The environment variable naming the backend.
    pub const ENV: &'static str = "VT_RUNTIME";

    pub fn name(self) -> &'static str {
        match self {
            RuntimeKind::Qemu => "qemu",
            RuntimeKind::Firecracker => "firecracker",
        }
    }

    /// From `VT_RUNTIME`; unset or empty: qemu.
    pub fn from_env() -> Result<Self, RuntimeError> {
        match std::env::var(Self::ENV) {
            Ok(v) if !v.trim().is_empty() => v.parse().map_err(|e| RuntimeError::Config(format!("{}: {e}", Self::ENV))),
            _ => Ok(RuntimeKind::Qemu),
        }
    }

    /// The runtime of this kind for the guest kernel and initramfs in `guest_dir`, configured
    /// from the environment (`VT_QEMU_ACCEL`; `FIRECRACKER_BIN`).
    pub fn runtime_from_env(self, guest_dir: &Path) -> Result<Arc<dyn Runtime>, RuntimeError> {
        Ok(match self {
            RuntimeKind::Qemu => {
                let mut cfg = QemuConfig::from_guest_dir(guest_dir);
                if let Ok(a) = std::env::var("VT_QEMU_ACCEL") {
                    cfg.accel = a.parse().map_err(|e| RuntimeError::Config(format!("VT_QEMU_ACCEL: {e}")))?;
                }
                Arc::new(QemuRuntime::new(cfg)?)
            }
            RuntimeKind::Firecracker => Arc::new(FirecrackerRuntime::new(FirecrackerConfig::from_env(guest_dir))?),
        })
    }
}

impl std::str::FromStr for RuntimeKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "qemu" => Ok(RuntimeKind::Qemu),
            "firecracker" => Ok(RuntimeKind::Firecracker),
            o => Err(format!("unknown runtime {o:?} (qemu, firecracker)")),
        }
    }
}

impl std::fmt::Display for RuntimeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
