//! The node's disk as the agent reports it with each heartbeat (`vt_api::DiskReport`): the
//! filesystem of its data directory, what vt's data there holds by what holds it, and what the
//! disk budget still lets large writes take. The control plane keeps the last report per node
//! (docs/nodes.md, "Disk").

use std::path::Path;

use vt_api::{DiskReport, DiskUse};
use vt_disk::{allocated, DiskBudget, StatError};

use crate::AgentDirs;

/// The scratch disk's file name in an instance's work dir (both backends, unjailed).
pub(crate) const SCRATCH_DISK: &str = "scratch.ext4";

/// Measure the node's disk now (blocking: walks the agent's directories). The parts are
/// measured before the filesystem, so a report never shows more used than the filesystem had.
pub fn measure(dirs: &AgentDirs, budget: &DiskBudget) -> Result<DiskReport, StatError> {
    let mut used = DiskUse {
        images_bytes: allocated(&dirs.images),
        scratch_bytes: 0,
        volumes_bytes: allocated(&dirs.volumes),
        snapshots_bytes: 0,
        snapshots: 0,
        logs_bytes: allocated(&dirs.logs),
    };
    for entry in std::fs::read_dir(&dirs.vms).into_iter().flatten().flatten() {
        let work_dir = entry.path();
        used.scratch_bytes = used.scratch_bytes.saturating_add(allocated(&work_dir.join(SCRATCH_DISK)));
        // Whatever a snapshot directory holds takes room, resumable or not (a save in progress).
        used.snapshots_bytes = used.snapshots_bytes.saturating_add(vt_runtime::snapshot::disk_usage(&work_dir));
        if vt_runtime::snapshot::exists(&work_dir) {
            used.snapshots = used.snapshots.saturating_add(1);
        }
    }
    let fs = budget.usage()?;
    let reserve = budget.reserved(fs.total);
    Ok(DiskReport {
        total_bytes: fs.total,
        free_bytes: fs.free.min(fs.total),
        reserve_bytes: reserve,
        budget_free_bytes: fs.free.min(fs.total).saturating_sub(reserve),
        used,
    })
}

/// The budget a report is measured against: the agent's, or (an agent without one) the
/// filesystem of its work dirs with nothing reserved.
pub(crate) fn report_budget(dirs: &AgentDirs, budget: Option<&DiskBudget>, node: &str) -> DiskBudget {
    match budget {
        Some(b) => b.clone(),
        None => DiskBudget::new(existing_ancestor(&dirs.vms), vt_disk::Reserve::Bytes(0), node),
    }
}

/// `path`, or its nearest ancestor that exists (statvfs needs one).
fn existing_ancestor(path: &Path) -> std::path::PathBuf {
    path.ancestors().find(|p| p.exists()).unwrap_or(Path::new("/")).to_owned()
}

/// What a prepare must ask the budget for an instance's scratch disk: nothing when it resumes
/// and its scratch disk is still in its work dir (the snapshot needs that very disk, kept in
/// place while the instance was suspended; a resume creates none), else the whole disk.
pub(crate) fn scratch_disk_needed(resume: bool, work_dir: &Path, size: u64) -> u64 {
    if resume && work_dir.join(SCRATCH_DISK).is_file() {
        0
    } else {
        size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dirs(root: &Path) -> AgentDirs {
        let d = AgentDirs {
            instances: root.join("instances"),
            vms: root.join("vms"),
            logs: root.join("logs"),
            images: root.join("images"),
            volumes: root.join("volumes"),
        };
        for p in [&d.instances, &d.vms, &d.logs, &d.images, &d.volumes] {
            std::fs::create_dir_all(p).unwrap();
        }
        d
    }

    fn write(path: &Path, bytes: usize) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, vec![7u8; bytes]).unwrap();
    }

    const MIB: usize = 1 << 20;

    /// Each part counts what holds it: a suspended instance's snapshot as a snapshot (and its
    /// scratch disk as scratch), a running one's scratch disk only; sparse room is not counted.
    #[test]
    fn the_report_says_what_holds_the_disk() {
        let root = tempfile::tempdir().unwrap();
        let d = dirs(root.path());
        write(&d.images.join("rootdisks").join("a.ext4"), 3 * MIB);
        write(&d.volumes.join("vol_a.ext4"), 2 * MIB);
        write(&d.logs.join("inst_a.log"), MIB);
        let suspended = d.vms.join("inst_s");
        write(&suspended.join(SCRATCH_DISK), MIB);
        write(&suspended.join("snapshot").join("vmstate"), 4 * MIB);
        let running = d.vms.join("inst_r");
        std::fs::create_dir_all(&running).unwrap();
        // A sparse scratch disk of 256 MiB with 1 MiB written.
        let f = std::fs::File::create(running.join(SCRATCH_DISK)).unwrap();
        f.set_len(256 << 20).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, &vec![1u8; MIB], 0).unwrap();
        let budget = DiskBudget::new(root.path(), vt_disk::Reserve::Bytes(1 << 20), "n1");
        let r = measure(&d, &budget).unwrap();
        // Whole MiB: the directories themselves take a few KiB.
        let mib = |b: u64| b / MIB as u64;
        let u = r.used;
        assert_eq!(
            (mib(u.images_bytes), mib(u.volumes_bytes), mib(u.logs_bytes), mib(u.snapshots_bytes), u.snapshots),
            (3, 2, 1, 4, 1),
            "{u:?}"
        );
        assert_eq!(mib(u.scratch_bytes), 2, "two scratch disks of 1 MiB written each: {u:?}");
        assert_eq!(r.reserve_bytes, 1 << 20);
        assert_eq!(r.budget_free_bytes, r.free_bytes.saturating_sub(1 << 20));
        assert_eq!(r.inconsistency(), None, "{r:?}");
        // The snapshot gone (resumed or stopped): the report drops it.
        std::fs::remove_dir_all(suspended.join("snapshot")).unwrap();
        let after = measure(&d, &budget).unwrap().used;
        assert_eq!((after.snapshots_bytes, after.snapshots), (0, 0));
    }

    /// A resume keeps the scratch disk the snapshot needs: it asks the budget for none. A
    /// fresh start, or a resume whose scratch disk is gone, asks for the whole disk.
    #[test]
    fn a_resume_asks_no_room_for_the_scratch_disk_it_keeps() {
        let root = tempfile::tempdir().unwrap();
        let work_dir = root.path().join("inst_s");
        assert_eq!(scratch_disk_needed(true, &work_dir, 256 << 20), 256 << 20, "no scratch disk to keep");
        write(&work_dir.join(SCRATCH_DISK), 4096);
        assert_eq!(scratch_disk_needed(true, &work_dir, 256 << 20), 0);
        assert_eq!(scratch_disk_needed(false, &work_dir, 256 << 20), 256 << 20, "a fresh boot makes it again");
    }
}
