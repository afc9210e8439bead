//! Volume disks on this node: `<volumes>/<volume id>.ext4`, one sparse ext4 image per volume,
//! labelled so guest init finds it ([`label`]).
//!
//! A disk is made the first time an instance needs it (`mkfs.ext4` on a sparse file, written
//! aside and renamed into place: nothing half-made is ever attached), grown before a boot
//! when the volume was extended (`e2fsck -f`, then `resize2fs`; a marker file makes a grow
//! that was cut short finish on the next boot), and removed once the control plane no longer
//! lists the volume on this node. The disk budget is asked before a disk is made or grown,
//! for its full size: a node never promises more than it has.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::Command;
use vt_api::Volume;
use vt_ids::VolumeId;

/// Why a volume's disk could not be made ready: transient (the disk budget is short) or not.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("{0}")]
    NoSpace(String),
    #[error("volume {volume}: {message}")]
    Disk { volume: VolumeId, message: String },
}

/// The ext4 label of a volume's disk (16 bytes at most): `vtv` + the last 13 characters of
/// its id (the random part of the ULID).
pub fn label(id: &VolumeId) -> String {
    let s = id.to_string();
    format!("vtv{}", &s[s.len() - 13..])
}

/// The disk of `volume` in `dir`.
pub fn disk_path(dir: &Path, volume: &VolumeId) -> PathBuf {
    dir.join(format!("{volume}.ext4"))
}

fn bytes(gib: u32) -> u64 {
    u64::from(gib) << 30
}

/// Make the volume's disk ready at its size: made if missing, grown if smaller. Idempotent.
pub async fn ensure(dir: &Path, budget: Option<&vt_disk::DiskBudget>, v: &Volume) -> Result<PathBuf, VolumeError> {
    let disk = disk_path(dir, &v.id);
    let err = |message: String| VolumeError::Disk { volume: v.id, message };
    tokio::fs::create_dir_all(dir).await.map_err(|e| err(format!("create {}: {e}", dir.display())))?;
    let size = bytes(v.size_gib);
    let marker = dir.join(format!("{}.growing", v.id));
    match tokio::fs::metadata(&disk).await {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(b) = budget {
                b.check(&format!("the disk of volume {} ({} GiB)", v.id, v.size_gib), size)
                    .map_err(|e| VolumeError::NoSpace(e.to_string()))?;
            }
            let tmp = dir.join(format!("{}.ext4.tmp", v.id));
            let _ = tokio::fs::remove_file(&tmp).await;
            let f = std::fs::File::create(&tmp).map_err(|e| err(format!("create {}: {e}", tmp.display())))?;
            f.set_len(size).map_err(|e| err(format!("size {}: {e}", tmp.display())))?;
            drop(f);
            run(Command::new("mkfs.ext4")
                .args(["-q", "-F", "-t", "ext4", "-L", &label(&v.id), "-E", "lazy_itable_init=1,nodiscard"])
                .arg(&tmp))
            .await
            .map_err(err)?;
            sync(&tmp).await.map_err(err)?;
            tokio::fs::rename(&tmp, &disk).await.map_err(|e| err(format!("rename into {}: {e}", disk.display())))?;
            sync(dir).await.map_err(err)?;
        }
        Err(e) => return Err(err(format!("stat {}: {e}", disk.display()))),
        Ok(m) if m.len() < size || tokio::fs::try_exists(&marker).await.unwrap_or(false) => {
            if m.len() < size {
                if let Some(b) = budget {
                    b.check(&format!("growing volume {} to {} GiB", v.id, v.size_gib), size - m.len())
                        .map_err(|e| VolumeError::NoSpace(e.to_string()))?;
                }
                tokio::fs::write(&marker, b"").await.map_err(|e| err(format!("write {}: {e}", marker.display())))?;
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&disk)
                    .map_err(|e| err(format!("open {}: {e}", disk.display())))?;
                f.set_len(size).map_err(|e| err(format!("grow {}: {e}", disk.display())))?;
            }
            // e2fsck exits 1 when it fixed something: still fine to resize.
            let out = Command::new("e2fsck").args(["-f", "-y"]).arg(&disk).stdin(Stdio::null()).output().await;
            match out {
                Ok(o) if matches!(o.status.code(), Some(0 | 1)) => {}
                Ok(o) => return Err(err(format!("e2fsck: {}", String::from_utf8_lossy(&o.stdout).trim()))),
                Err(e) => return Err(err(format!("run e2fsck: {e}"))),
            }
            run(Command::new("resize2fs").arg(&disk)).await.map_err(err)?;
            sync(&disk).await.map_err(err)?;
            let _ = tokio::fs::remove_file(&marker).await;
        }
        Ok(_) => {}
    }
    Ok(disk)
}

/// Remove the disks of volumes no longer held by this node (deleted); `held` are their ids.
pub fn remove_others(dir: &Path, held: &BTreeSet<String>) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else { return vec![] };
    let mut removed = vec![];
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let id = name.split('.').next().unwrap_or_default();
        if VolumeId::parse(id).is_err() || held.contains(id) {
            continue;
        }
        if std::fs::remove_file(e.path()).is_ok() {
            removed.push(name);
        }
    }
    removed
}

async fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.stdin(Stdio::null()).output().await.map_err(|e| format!("run {:?}: {e}", cmd.as_std()))?;
    if !out.status.success() {
        return Err(format!(
            "{:?} failed ({}): {}",
            cmd.as_std().get_program(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

async fn sync(path: &Path) -> Result<(), String> {
    let p = path.to_owned();
    tokio::task::spawn_blocking(move || std::fs::File::open(&p).and_then(|f| f.sync_all()))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("fsync {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_fit_ext4_and_differ_per_volume() {
        let a = VolumeId::parse("vol_01jd8x6k3v9q4m2t7r5w0y1zcm").unwrap();
        assert_eq!(label(&a), "vtvm2t7r5w0y1zcm");
        assert!(label(&a).len() <= 16);
        assert_ne!(label(&a), label(&VolumeId::new()));
    }
}
