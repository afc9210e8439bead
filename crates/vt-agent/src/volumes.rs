//! Volume disks on this node: `<volumes>/<volume id>.ext4`, one sparse ext4 image per volume,
//! labelled so guest init finds it ([`label`]).
//!
//! Snapshots are copies of a disk in `<volumes>/snapshots/<snapshot id>.ext4`, taken while the
//! VM that has the volume is paused (SIGSTOP to its VMM, SIGCONT after the copy): everything
//! the guest wrote before the pause is in the host's page cache, nothing after it, so the copy
//! is what a power cut at that instant would leave (crash-consistent; ext4's journal replays
//! it). The copy is `cp --reflink=auto --sparse=always`: a clone on file systems that have
//! them (XFS, btrfs: the pause is milliseconds), else a copy of the allocated blocks only. A
//! volume restored from a snapshot starts as its copy, journal replayed and relabelled.
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

use std::os::unix::fs::MetadataExt;
use std::time::Instant;

use tokio::process::Command;
use vt_api::{Snapshot, Volume};
use vt_ids::{SnapshotId, VolumeId};

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

/// Make the volume's disk ready at its size: made if missing (empty, or from its snapshot or
/// its backup), grown if smaller. Idempotent.
pub async fn ensure(
    dir: &Path,
    budget: Option<&vt_disk::DiskBudget>,
    restic: Option<&vt_backup::Restic>,
    v: &Volume,
) -> Result<PathBuf, VolumeError> {
    let disk = disk_path(dir, &v.id);
    let err = |message: String| VolumeError::Disk { volume: v.id, message };
    tokio::fs::create_dir_all(dir).await.map_err(|e| err(format!("create {}: {e}", dir.display())))?;
    let size = bytes(v.size_gib);
    let marker = dir.join(format!("{}.growing", v.id));
    match tokio::fs::metadata(&disk).await {
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound && (v.from_snapshot.is_some() || v.from_backup.is_some()) =>
        {
            let tmp = dir.join(format!("{}.ext4.tmp", v.id));
            let _ = tokio::fs::remove_file(&tmp).await;
            if let Some(snap) = v.from_snapshot {
                let src = snapshot_path(dir, &snap);
                let used = allocated(&src).map_err(|e| err(format!("snapshot {snap} is not on this node: {e}")))?;
                if let Some(b) = budget {
                    b.check(&format!("volume {} restored from snapshot {snap}", v.id), used)
                        .map_err(|e| VolumeError::NoSpace(e.to_string()))?;
                }
                copy(&src, &tmp).await.map_err(err)?;
            } else if let Some(backup) = &v.from_backup {
                let restic =
                    restic.ok_or_else(|| err(format!("backup {backup}: this node has no backup repository")))?;
                if let Some(b) = budget {
                    b.check(&format!("volume {} restored from backup {backup}", v.id), size)
                        .map_err(|e| VolumeError::NoSpace(e.to_string()))?;
                }
                if let Err(e) = restic.dump(backup, &tmp).await {
                    let _ = tokio::fs::remove_file(&tmp).await;
                    return Err(err(format!("restore from backup {backup}: {e}")));
                }
            }
            // A crash-consistent copy: replay its journal, then give it the new volume's label.
            fsck(&tmp).await.map_err(err)?;
            run(Command::new("tune2fs").args(["-L", &label(&v.id)]).arg(&tmp)).await.map_err(err)?;
            let len = std::fs::metadata(&tmp).map_err(|e| err(format!("stat {}: {e}", tmp.display())))?.len();
            if len < size {
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&tmp)
                    .and_then(|f| f.set_len(size))
                    .map_err(|e| err(format!("grow {}: {e}", tmp.display())))?;
                run(Command::new("resize2fs").arg(&tmp)).await.map_err(err)?;
            }
            sync(&tmp).await.map_err(err)?;
            tokio::fs::rename(&tmp, &disk).await.map_err(|e| err(format!("rename into {}: {e}", disk.display())))?;
            sync(dir).await.map_err(err)?;
        }
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
            fsck(&disk).await.map_err(err)?;
            run(Command::new("resize2fs").arg(&disk)).await.map_err(err)?;
            sync(&disk).await.map_err(err)?;
            let _ = tokio::fs::remove_file(&marker).await;
        }
        Ok(_) => {}
    }
    Ok(disk)
}

/// `e2fsck -f -y` (replays the journal); exit 1 means it fixed something, which is fine.
async fn fsck(disk: &Path) -> Result<(), String> {
    let out = Command::new("e2fsck").args(["-f", "-y"]).arg(disk).stdin(Stdio::null()).output().await;
    match out {
        Ok(o) if matches!(o.status.code(), Some(0 | 1)) => Ok(()),
        Ok(o) => Err(format!("e2fsck {}: {}", disk.display(), String::from_utf8_lossy(&o.stdout).trim())),
        Err(e) => Err(format!("run e2fsck: {e}")),
    }
}

/// Where a snapshot's copy is.
pub fn snapshot_path(dir: &Path, snapshot: &SnapshotId) -> PathBuf {
    dir.join("snapshots").join(format!("{snapshot}.ext4"))
}

/// Bytes a file occupies on disk (its allocated blocks).
fn allocated(path: &Path) -> std::io::Result<u64> {
    Ok(std::fs::metadata(path)?.blocks() * 512)
}

async fn copy(src: &Path, dst: &Path) -> Result<(), String> {
    run(Command::new("cp").args(["--reflink=auto", "--sparse=always"]).arg(src).arg(dst)).await
}

/// What taking a snapshot measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taken {
    pub bytes: u64,
    pub took_ms: u64,
    pub paused_ms: u64,
}

/// Copy the volume's disk into the snapshot `s`, pausing `vmm` (the process of the VM that has
/// the volume, if any) for the copy. Written aside and renamed into place; a snapshot already
/// there (a report that did not reach the control plane) is answered as it is.
pub async fn snapshot(
    dir: &Path,
    budget: Option<&vt_disk::DiskBudget>,
    v: &Volume,
    s: &Snapshot,
    vmm: Option<u32>,
) -> Result<Taken, VolumeError> {
    let err = |message: String| VolumeError::Disk { volume: v.id, message };
    let dst = snapshot_path(dir, &s.id);
    if let Ok(bytes) = allocated(&dst) {
        return Ok(Taken { bytes, took_ms: 0, paused_ms: 0 });
    }
    let src = ensure(dir, budget, None, v).await?;
    let parent = dst.parent().unwrap_or(dir);
    tokio::fs::create_dir_all(parent).await.map_err(|e| err(format!("create {}: {e}", parent.display())))?;
    let used = allocated(&src).map_err(|e| err(format!("stat {}: {e}", src.display())))?;
    if let Some(b) = budget {
        b.check(&format!("snapshot {} of volume {}", s.id, v.id), used)
            .map_err(|e| VolumeError::NoSpace(e.to_string()))?;
    }
    let tmp = parent.join(format!("{}.ext4.tmp", s.id));
    let _ = tokio::fs::remove_file(&tmp).await;
    let t0 = Instant::now();
    if let Some(pid) = vmm {
        crate::state::signal(pid, "STOP").await;
    }
    let copied = copy(&src, &tmp).await;
    if let Some(pid) = vmm {
        crate::state::signal(pid, "CONT").await;
    }
    let paused_ms = if vmm.is_some() { t0.elapsed().as_millis() as u64 } else { 0 };
    copied.map_err(err)?;
    sync(&tmp).await.map_err(err)?;
    tokio::fs::rename(&tmp, &dst).await.map_err(|e| err(format!("rename into {}: {e}", dst.display())))?;
    sync(parent).await.map_err(err)?;
    let bytes = allocated(&dst).map_err(|e| err(format!("stat {}: {e}", dst.display())))?;
    Ok(Taken { bytes, took_ms: t0.elapsed().as_millis() as u64, paused_ms })
}

/// Back up the volume: a copy of its disk taken with `vmm` paused (as for a snapshot), sent to
/// the repository with `origin`'s tags (retention applied), then removed. Returns the backup's
/// id and what it added.
pub async fn backup(
    dir: &Path,
    budget: Option<&vt_disk::DiskBudget>,
    v: &Volume,
    id: &vt_ids::BackupId,
    vmm: Option<u32>,
    restic: &vt_backup::Restic,
    origin: &vt_backup::Origin,
) -> Result<(String, vt_backup::Summary), String> {
    let src = ensure(dir, budget, Some(restic), v).await.map_err(|e| e.to_string())?;
    let used = allocated(&src).map_err(|e| format!("stat {}: {e}", src.display()))?;
    if let Some(b) = budget {
        b.check(&format!("the copy for backup {id} of volume {}", v.id), used).map_err(|e| e.to_string())?;
    }
    let tmp = dir.join(format!("{id}.backup.tmp"));
    let _ = tokio::fs::remove_file(&tmp).await;
    if let Some(pid) = vmm {
        crate::state::signal(pid, "STOP").await;
    }
    let copied = copy(&src, &tmp).await;
    if let Some(pid) = vmm {
        crate::state::signal(pid, "CONT").await;
    }
    let result = match copied {
        Ok(()) => restic.backup(&tmp, origin).await.map_err(|e| e.to_string()),
        Err(e) => Err(e),
    };
    let _ = tokio::fs::remove_file(&tmp).await;
    result
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
