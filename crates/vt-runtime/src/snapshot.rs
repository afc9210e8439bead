//! Snapshots of a suspended VM: node-local files in the instance's work dir, resumed at most
//! once.
//!
//! ```text
//! <work_dir>/snapshot/vmstate            the VMM's saved state (QEMU: guest memory and devices;
//!                                         Firecracker: the devices)
//! <work_dir>/snapshot/memory             Firecracker only: the guest's memory
//! <work_dir>/snapshot/vmm.json           how the VMM ran (its arguments) and what it used
//! <work_dir>/snapshot/vmstate.restoring  claimed by a restore (gone once the new VM runs)
//! <work_dir>/snapshot/resumed            the snapshot was resumed (when, in Unix seconds)
//! <work_dir>/vmm.json                     how the running VMM was started (so a VM adopted
//!                                         after an agent restart can be suspended too)
//! ```
//!
//! Disks are not copied: the root disk is read-only, the scratch disk and volumes stay where
//! they are and the restored VM opens them again. **A snapshot is resumed at most once**: the
//! guest's memory holds random state (entropy pools, TCP sequence numbers, nonces) that two
//! copies of one VM would share. [`claim`] renames `vmstate` to `vmstate.restoring` (atomic:
//! of two restores only one finds `vmstate`), and the restore deletes it as soon as the new
//! VMM has let the guest run; a restore that fails before that gives it back ([`Claim::release`]).
//! [`remove`] deletes a snapshot (the instance is deleted, or it is started afresh).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{InstanceSpec, RuntimeError};

/// The snapshot directory of an instance.
pub fn dir(work_dir: &Path) -> PathBuf {
    work_dir.join("snapshot")
}

fn vmstate(work_dir: &Path) -> PathBuf {
    dir(work_dir).join("vmstate")
}

fn claimed(work_dir: &Path) -> PathBuf {
    dir(work_dir).join("vmstate.restoring")
}

fn resumed(work_dir: &Path) -> PathBuf {
    dir(work_dir).join("resumed")
}

fn meta(work_dir: &Path) -> PathBuf {
    dir(work_dir).join("vmm.json")
}

/// Whether `work_dir` holds a snapshot that was never resumed.
pub fn exists(work_dir: &Path) -> bool {
    vmstate(work_dir).is_file()
}

/// The bytes the instance's snapshot takes on disk (0 when there is none): what a suspended
/// instance holds of its node's disk.
pub fn disk_usage(work_dir: &Path) -> u64 {
    std::fs::read_dir(dir(work_dir))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| std::os::unix::fs::MetadataExt::blocks(&m) * 512)
        .sum()
}

/// Delete the instance's snapshot, resumed or not (nothing to do when there is none).
pub fn remove(work_dir: &Path) -> std::io::Result<()> {
    let d = dir(work_dir);
    // Whatever is there goes, also something that is not a directory (it would stop the next
    // suspend from making one).
    let gone = match std::fs::symlink_metadata(&d) {
        Ok(m) if !m.is_dir() => std::fs::remove_file(&d),
        _ => std::fs::remove_dir_all(&d),
    };
    match gone {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// What a suspend wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The saved state (`<work_dir>/snapshot/vmstate`).
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// Pause → state saved → VMM gone.
    pub took: std::time::Duration,
}

/// How the suspended VMM ran: a restore starts the new VMM with the same arguments (same
/// machine, same devices in the same order) and checks the spec it is given still matches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct VmmRecord {
    /// The backend that wrote it (`qemu`).
    pub backend: String,
    pub args: Vec<String>,
    pub root_disk: PathBuf,
    pub volumes: Vec<PathBuf>,
    pub tap: Option<String>,
    pub memory_mib: u32,
    pub vcpus: u32,
}

impl VmmRecord {
    pub fn new(backend: &str, args: Vec<String>, spec: &InstanceSpec) -> Self {
        VmmRecord {
            backend: backend.to_owned(),
            args,
            root_disk: spec.root_disk.clone(),
            volumes: spec.volumes.iter().map(|v| v.disk.clone()).collect(),
            tap: spec.network.as_ref().map(|n| n.tap.clone()),
            memory_mib: spec.memory_mib,
            vcpus: spec.vcpus,
        }
    }

    /// Where `spec` differs from what the snapshot was taken with (the field named), if it does.
    pub fn mismatch(&self, backend: &str, spec: &InstanceSpec) -> Option<String> {
        let now = VmmRecord::new(backend, self.args.clone(), spec);
        let diff = |what: &str, was: &dyn std::fmt::Debug, is: &dyn std::fmt::Debug| {
            Some(format!("{what} is {is:?}, the snapshot was taken with {was:?}"))
        };
        if self.backend != now.backend {
            return diff("the runtime", &self.backend, &now.backend);
        }
        if self.root_disk != now.root_disk {
            return diff("root_disk", &self.root_disk, &now.root_disk);
        }
        if self.volumes != now.volumes {
            return diff("volumes", &self.volumes, &now.volumes);
        }
        if self.tap != now.tap {
            return diff("network (tap)", &self.tap, &now.tap);
        }
        if (self.memory_mib, self.vcpus) != (now.memory_mib, now.vcpus) {
            return diff("memory_mib/vcpus", &(self.memory_mib, self.vcpus), &(now.memory_mib, now.vcpus));
        }
        None
    }
}

/// Note how the VMM in `work_dir` runs (`<work_dir>/vmm.json`), for whoever suspends it.
pub(crate) fn write_running(work_dir: &Path, record: &VmmRecord) -> Result<(), String> {
    let p = work_dir.join("vmm.json");
    let json = serde_json::to_vec_pretty(record).map_err(|e| format!("vmm.json: {e}"))?;
    std::fs::write(&p, json).map_err(|e| format!("write {}: {e}", p.display()))
}

/// How the VMM in `work_dir` runs, when noted.
pub(crate) fn read_running(work_dir: &Path) -> Option<VmmRecord> {
    serde_json::from_slice(&std::fs::read(work_dir.join("vmm.json")).ok()?).ok()
}

/// Where a suspend writes, before it is complete (`vmstate.partial`), and the record.
pub(crate) fn partial(work_dir: &Path) -> PathBuf {
    dir(work_dir).join("vmstate.partial")
}

/// Where a VMM that saves memory apart (Firecracker) writes it before the commit.
pub(crate) fn memory_partial(work_dir: &Path) -> PathBuf {
    dir(work_dir).join("memory.partial")
}

fn memory(work_dir: &Path) -> PathBuf {
    dir(work_dir).join("memory")
}

/// Make the snapshot complete: the memory file and the record next to it, then
/// `vmstate.partial` → `vmstate` (all synced first: a crash leaves either no snapshot or a
/// whole one). Returns the bytes saved.
pub(crate) fn commit(work_dir: &Path, record: &VmmRecord) -> Result<u64, String> {
    let mut mem_bytes = 0;
    let mem = memory_partial(work_dir);
    if mem.exists() {
        let f = std::fs::File::open(&mem).map_err(|e| format!("open {}: {e}", mem.display()))?;
        f.sync_all().map_err(|e| format!("sync {}: {e}", mem.display()))?;
        mem_bytes = f.metadata().map(|m| m.len()).unwrap_or(0);
        std::fs::rename(&mem, memory(work_dir)).map_err(|e| format!("rename {}: {e}", mem.display()))?;
    }
    let part = partial(work_dir);
    let f = std::fs::File::open(&part).map_err(|e| format!("open {}: {e}", part.display()))?;
    f.sync_all().map_err(|e| format!("sync {}: {e}", part.display()))?;
    let bytes = f.metadata().map(|m| m.len()).unwrap_or(0);
    let json = serde_json::to_vec_pretty(record).map_err(|e| format!("vmm.json: {e}"))?;
    let m = meta(work_dir);
    std::fs::write(&m, json).map_err(|e| format!("write {}: {e}", m.display()))?;
    let _ = std::fs::remove_file(claimed(work_dir));
    let _ = std::fs::remove_file(resumed(work_dir));
    std::fs::rename(&part, vmstate(work_dir)).map_err(|e| format!("rename {}: {e}", part.display()))?;
    if let Ok(d) = std::fs::File::open(dir(work_dir)) {
        let _ = d.sync_all();
    }
    Ok(bytes + mem_bytes)
}

/// A snapshot taken by one restore: its state file (renamed `vmstate.restoring`) and record.
#[derive(Debug)]
pub(crate) struct Claim {
    work_dir: PathBuf,
    pub record: VmmRecord,
    /// Given back or consumed.
    done: bool,
}

/// Take `spec`'s snapshot for one restore by `backend`, or say why there is none to take or
/// why it does not fit the spec (then it is given back, untouched).
pub(crate) fn claim_for(backend: &str, spec: &InstanceSpec) -> Result<Claim, RuntimeError> {
    let mut claim = claim(&spec.work_dir)?;
    if let Some(why) = claim.record.mismatch(backend, spec) {
        claim.release();
        return Err(RuntimeError::Snapshot(format!(
            "the snapshot of instance {} does not fit its spec: {why}",
            spec.id
        )));
    }
    Ok(claim)
}

/// Take the instance's snapshot for one restore, or say why there is none to take.
pub(crate) fn claim(work_dir: &Path) -> Result<Claim, RuntimeError> {
    let (from, to) = (vmstate(work_dir), claimed(work_dir));
    if let Err(e) = std::fs::rename(&from, &to) {
        let reason = if e.kind() != std::io::ErrorKind::NotFound {
            format!("cannot claim {}: {e}", from.display())
        } else if to.exists() {
            format!(
                "the snapshot in {} is being restored now; a snapshot is resumed at most once",
                dir(work_dir).display()
            )
        } else if let Ok(at) = std::fs::read_to_string(resumed(work_dir)) {
            format!(
                "the snapshot in {} was resumed already (at {} Unix time); a snapshot is resumed at most once",
                dir(work_dir).display(),
                at.trim()
            )
        } else {
            format!("no snapshot in {} (never suspended, or already resumed)", dir(work_dir).display())
        };
        return Err(RuntimeError::Snapshot(reason));
    }
    let m = meta(work_dir);
    let record = std::fs::read(&m)
        .map_err(|e| format!("read {}: {e}", m.display()))
        .and_then(|b| serde_json::from_slice::<VmmRecord>(&b).map_err(|e| format!("{}: {e}", m.display())));
    match record {
        Ok(record) => Ok(Claim { work_dir: work_dir.to_owned(), record, done: false }),
        Err(e) => {
            let _ = std::fs::rename(&to, &from);
            Err(RuntimeError::Snapshot(e))
        }
    }
}

impl Claim {
    /// The claimed state file, for the VMM to load.
    pub fn path(&self) -> PathBuf {
        claimed(&self.work_dir)
    }

    /// The memory file of a VMM that saves it apart (Firecracker).
    pub fn memory(&self) -> PathBuf {
        memory(&self.work_dir)
    }

    /// The guest ran from it: it must never run from it again.
    pub fn consume(&mut self) {
        self.done = true;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let _ = std::fs::write(resumed(&self.work_dir), format!("{now}\n"));
        let _ = std::fs::remove_file(self.path());
        let _ = std::fs::remove_file(self.memory());
    }

    /// The guest never ran from it (the new VMM failed to load it): put it back.
    pub fn release(&mut self) {
        self.done = true;
        let _ = std::fs::rename(self.path(), vmstate(&self.work_dir));
    }
}

impl Drop for Claim {
    /// A restore that ends without saying (its task aborted): whether the guest ran is
    /// unknown, so the state is not given back.
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(self.path());
            let _ = std::fs::remove_file(self.memory());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dir: &Path) -> InstanceSpec {
        InstanceSpec::new("i", "/images/root.ext4".into(), dir.to_owned(), Default::default())
    }

    fn take(dir: &Path) -> u64 {
        std::fs::create_dir_all(super::dir(dir)).unwrap();
        std::fs::write(partial(dir), b"state").unwrap();
        commit(dir, &VmmRecord::new("qemu", vec!["-M".into(), "microvm".into()], &spec(dir))).unwrap()
    }

    #[test]
    fn a_snapshot_is_claimed_once_and_consumed() {
        let t = tempfile::tempdir().unwrap();
        assert!(matches!(claim(t.path()), Err(RuntimeError::Snapshot(r)) if r.contains("no snapshot")));
        assert_eq!(take(t.path()), 5);
        assert!(exists(t.path()));
        let mut c = claim(t.path()).unwrap();
        assert_eq!(c.record.args, ["-M", "microvm"]);
        assert!(!exists(t.path()));
        let second = claim(t.path()).unwrap_err().to_string();
        assert!(second.contains("being restored now; a snapshot is resumed at most once"), "{second}");
        c.consume();
        let third = claim(t.path()).unwrap_err().to_string();
        assert!(third.contains("was resumed already (at "), "{third}");
        // A new suspend makes a new snapshot to resume.
        take(t.path());
        claim(t.path()).unwrap().consume();
    }

    #[test]
    fn what_a_snapshot_takes_is_counted_and_removed_whatever_is_in_the_way() {
        let t = tempfile::tempdir().unwrap();
        assert_eq!(disk_usage(t.path()), 0);
        remove(t.path()).unwrap();
        take(t.path());
        assert!(disk_usage(t.path()) > 0, "its files take blocks");
        remove(t.path()).unwrap();
        assert_eq!((disk_usage(t.path()), dir(t.path()).exists()), (0, false));
        // A file where the snapshot directory goes (a failed suspend's leftover) goes too.
        std::fs::write(dir(t.path()), "in the way").unwrap();
        remove(t.path()).unwrap();
        assert!(!dir(t.path()).exists());
    }

    #[test]
    fn a_failed_load_gives_it_back_and_an_abandoned_one_does_not() {
        let t = tempfile::tempdir().unwrap();
        take(t.path());
        claim(t.path()).unwrap().release();
        assert!(exists(t.path()));
        drop(claim(t.path()).unwrap());
        assert!(!exists(t.path()));
        assert!(claim(t.path()).is_err());
        remove(t.path()).unwrap();
        remove(t.path()).unwrap();
        assert!(!dir(t.path()).exists());
    }

    #[test]
    fn a_changed_spec_is_named() {
        let t = tempfile::tempdir().unwrap();
        let s = spec(t.path());
        let r = VmmRecord::new("qemu", vec![], &s);
        assert_eq!(r.mismatch("qemu", &s), None);
        let mut other = s.clone();
        other.memory_mib = 512;
        assert!(r.mismatch("qemu", &other).unwrap().starts_with("memory_mib/vcpus"));
        other = s.clone();
        other.root_disk = "/images/other.ext4".into();
        assert!(r.mismatch("qemu", &other).unwrap().starts_with("root_disk"));
        assert!(r.mismatch("firecracker", &s).unwrap().starts_with("the runtime"));
    }
}
