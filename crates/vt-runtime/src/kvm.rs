//! What `/dev/kvm` is on this host, found without booting anything.
//!
//! A host may expose `/dev/kvm` and still not run our guests: under PVM (the `kvm_pvm`
//! module, a paravirtualized KVM for nested clouds) only kernels built as PVM guests run,
//! and a stock guest kernel dies after about 34 s with a KVM internal error. A probe boot
//! would wait for that (and QEMU's 10 s probe, on every server start, for nothing); the
//! loaded module says it at once.

use std::path::Path;

/// The kind of KVM this host offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvmHost {
    /// No `/dev/kvm`.
    Missing,
    /// PVM: runs PVM guest kernels only, not vt's guest kernel.
    Pvm,
    /// `/dev/kvm` from another module (hardware KVM, usually): a probe boot tells if it works.
    Present,
}

impl KvmHost {
    /// This host's, from `/dev/kvm` and `/sys/module`.
    pub fn detect() -> KvmHost {
        KvmHost::detect_in(Path::new("/dev/kvm"), Path::new("/sys/module"))
    }

    /// From the device node `dev` and the loaded modules' directory `modules`.
    pub fn detect_in(dev: &Path, modules: &Path) -> KvmHost {
        if !dev.exists() {
            KvmHost::Missing
        } else if modules.join("kvm_pvm").exists() {
            KvmHost::Pvm
        } else {
            KvmHost::Present
        }
    }

    /// Why microVMs cannot use KVM here, if it is known without a probe.
    pub fn unusable(self) -> Option<&'static str> {
        match self {
            KvmHost::Missing => Some("/dev/kvm does not exist"),
            KvmHost::Pvm => Some(
                "KVM on this host is PVM (module kvm_pvm): it runs only PVM guest kernels, and vt's guest kernel is not one",
            ),
            KvmHost::Present => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_pvm_apart() {
        let dir = std::env::temp_dir().join(format!("vt-kvm-detect-{}", std::process::id()));
        let (dev, modules) = (dir.join("kvm"), dir.join("module"));
        std::fs::create_dir_all(&modules).unwrap();
        assert_eq!(KvmHost::detect_in(&dev, &modules), KvmHost::Missing);
        std::fs::write(&dev, "").unwrap();
        std::fs::create_dir_all(modules.join("kvm_intel")).unwrap();
        assert_eq!(KvmHost::detect_in(&dev, &modules), KvmHost::Present);
        assert_eq!(KvmHost::Present.unusable(), None);
        std::fs::create_dir_all(modules.join("kvm_pvm")).unwrap();
        assert_eq!(KvmHost::detect_in(&dev, &modules), KvmHost::Pvm);
        assert!(KvmHost::Pvm.unusable().unwrap().contains("PVM"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
