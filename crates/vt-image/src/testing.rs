//! Helpers for tests and benchmarks: a busybox root filesystem and hand-built tar layers.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use fs_err as fs;

use crate::Result;

/// Where Debian's `busybox-static` installs its binary.
pub const BUSYBOX: &str = "/bin/busybox";

/// Fill `dir` with a tiny busybox root: `/bin/busybox` (0755), applet symlinks, `/etc`,
/// `/tmp` (1777). Needs `apt-get install -y busybox-static`.
pub fn busybox_rootfs(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir.join("bin"))?;
    fs::copy(BUSYBOX, dir.join("bin/busybox"))?;
    fs::set_permissions(dir.join("bin/busybox"), std::fs::Permissions::from_mode(0o755))?;
    for applet in ["sh", "ls", "cat", "echo", "env", "sleep", "mkdir", "mount", "uname", "wget", "id"] {
        std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet))?;
    }
    for d in ["etc", "proc", "sys", "dev", "root", "var"] {
        fs::create_dir_all(dir.join(d))?;
    }
    fs::create_dir_all(dir.join("tmp"))?;
    fs::set_permissions(dir.join("tmp"), std::fs::Permissions::from_mode(0o1777))?;
    fs::write(dir.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n")?;
    fs::write(dir.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n")?;
    Ok(())
}

/// A busybox image (entrypoint `/bin/sh`) written as an OCI layout under `tmp`, then its
/// read-only ext4 root disk built by an [`ImageStore`](crate::ImageStore) in `tmp/images`.
/// Returns the root disk's path. Needs `busybox-static` and `mkfs.ext4`.
pub fn busybox_root_disk(tmp: &Path) -> Result<std::path::PathBuf> {
    let rootfs = tmp.join("rootfs");
    busybox_rootfs(&rootfs)?;
    let layout = tmp.join("layout");
    let config = crate::oci::RuntimeConfig { entrypoint: Some(vec!["/bin/sh".into()]), ..Default::default() };
    let img = crate::layout::write_image(&rootfs, &layout, config, crate::layout::LayerFormat::Uncompressed)?;
    let store = crate::ImageStore::open(&tmp.join("images"), crate::StoreOptions::default())?;
    let src = crate::OciLayoutSource::open(&layout)?;
    Ok(store.ensure_rootdisk(&src, &img.manifest.digest)?.path)
}

/// Builds tar layers entry by entry, including malformed/hostile ones (names are written raw,
/// bypassing the `tar` crate's own path checks).
#[derive(Default)]
pub struct TarBuilder {
    out: Vec<u8>,
}

impl TarBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Append an entry with raw `name` (max 100 bytes) and `link` (max 100 bytes).
    pub fn raw(mut self, kind: tar::EntryType, name: &str, link: &str, mode: u32, data: &[u8]) -> Self {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(data.len() as u64);
        {
            let g = h.as_gnu_mut().expect("gnu header");
            g.name[..name.len()].copy_from_slice(name.as_bytes());
            g.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        if matches!(kind, tar::EntryType::Char | tar::EntryType::Block) {
            h.set_device_major(1).expect("major");
            h.set_device_minor(3).expect("minor");
        }
        h.set_cksum();
        self.out.extend_from_slice(h.as_bytes());
        self.out.extend_from_slice(data);
        self.out.resize(self.out.len().div_ceil(512) * 512, 0);
        self
    }

    pub fn owned(self, kind: tar::EntryType, name: &str, uid: u64, gid: u64, mode: u32, data: &[u8]) -> Self {
        let mut me = self.raw(kind, name, "", mode, data);
        // Patch uid/gid into the header just appended.
        let start = me.out.len() - data.len().div_ceil(512) * 512 - 512;
        let mut h = tar::Header::new_gnu();
        h.as_mut_bytes().copy_from_slice(&me.out[start..start + 512]);
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_cksum();
        me.out[start..start + 512].copy_from_slice(h.as_bytes());
        me
    }

    pub fn dir(self, name: &str, mode: u32) -> Self {
        self.raw(tar::EntryType::Directory, name, "", mode, b"")
    }
    pub fn file(self, name: &str, data: &[u8]) -> Self {
        self.raw(tar::EntryType::Regular, name, "", 0o644, data)
    }
    pub fn symlink(self, name: &str, target: &str) -> Self {
        self.raw(tar::EntryType::Symlink, name, target, 0o777, b"")
    }
    pub fn hardlink(self, name: &str, target: &str) -> Self {
        self.raw(tar::EntryType::Link, name, target, 0o644, b"")
    }

    /// Finish with the two zero blocks.
    pub fn build(mut self) -> Vec<u8> {
        self.out.extend_from_slice(&[0u8; 1024]);
        self.out
    }
}
