//! Per-instance cgroups: CPU is soft, memory is a hard cap.
//!
//! Each VMM process goes into its own cgroup whose CPU weight is proportional to the
//! instance's CPU request (`cpu_millis`): when the node is busy, CPU time is shared in
//! proportion to the requests; when it is idle, any instance may use more than it asked
//! for. Nothing caps CPU.
//!
//! No memory limit is set here. The guest's RAM (`-m <memory_mib>`) is the hard cap: the
//! guest cannot use more. QEMU's own memory (device emulation, and under TCG its
//! translation cache) comes on top of it, so a `memory.max` at the guest size would
//! OOM-kill the VMM; that overhead is the scheduler's to account for, per instance.
//!
//! Layouts (both found by [`CgroupRoot::detect`]; every path is injectable for tests):
//!
//! | hierarchy | instance cgroup | knob |
//! | --- | --- | --- |
//! | v2 (`/sys/fs/cgroup/cgroup.controllers` lists `cpu`, or `/sys/fs/cgroup/unified/...` in hybrid mode) | `<root>/vt.slice/<instance>` | `cpu.weight`, 1..=10000, 100 per CPU |
//! | v1 (`/sys/fs/cgroup/cpu/cpu.shares`) | `/sys/fs/cgroup/cpu/vt/<instance>` | `cpu.shares`, 2..=262144, 1024 per CPU |
//!
//! Under v2, `+cpu` is enabled in the `cgroup.subtree_control` of the root and of
//! `vt.slice` (which itself holds no process, as v2 requires). The parent is created once,
//! by `detect`; an instance cgroup is created before the VMM runs ([`Cgroup::create`]),
//! joined by the VMM ([`Cgroup::attach`]) and removed once the VMM is gone
//! ([`Cgroup::remove`]).

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the kernel's cgroup hierarchies are mounted.
pub const SYS_FS_CGROUP: &str = "/sys/fs/cgroup";
/// The parent of instance cgroups under v2, below the hierarchy's root.
pub const V2_PARENT: &str = "vt.slice";
/// The parent of instance cgroups under v1, below the cpu controller's root.
pub const V1_PARENT: &str = "vt";

/// How long [`Cgroup::remove`] retries while the kernel still counts an exited process.
const REMOVE_RETRY: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// No usable cgroup hierarchy: the runtime runs without CPU weights.
    #[error("no usable cgroup: {reason}")]
    Unavailable { reason: String },
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cgroup name {name:?} must be one path component: 1-255 bytes, no `/`, not `.` or `..`")]
    BadName { name: String },
    #[error("cgroup {} still has processes after {REMOVE_RETRY:?}; stop them first", path.display())]
    Busy { path: PathBuf },
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> CgroupError + 'a {
    move |source| CgroupError::Io { what, path: path.to_owned(), source }
}

/// A cgroup hierarchy with the cpu controller, prepared for instance cgroups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupRoot {
    /// cgroup v2; `root` is the hierarchy's mount point.
    V2 { root: PathBuf },
    /// cgroup v1; `cpu` is the cpu controller's mount point.
    V1 { cpu: PathBuf },
}

impl CgroupRoot {
    /// Find the host's cgroup hierarchy with the cpu controller and prepare vt's parent
    /// cgroup in it. `Unavailable` says why when there is none this process can use (e.g.
    /// not root): the runtime then boots VMs without a cgroup, with a warning.
    pub fn detect() -> Result<CgroupRoot, CgroupError> {
        Self::detect_in(Path::new(SYS_FS_CGROUP))
    }

    /// [`detect`](Self::detect) with the hierarchies under `base` instead of `/sys/fs/cgroup`.
    /// Prefers v2 (pure, then hybrid `unified/` when it has `cpu`), then v1 `cpu/`.
    pub fn detect_in(base: &Path) -> Result<CgroupRoot, CgroupError> {
        let root = Self::find(base)?;
        root.prepare().map_err(|e| CgroupError::Unavailable {
            reason: format!("{e} (vt needs root, or a delegated cgroup, to set CPU weights)"),
        })?;
        Ok(root)
    }

    fn find(base: &Path) -> Result<CgroupRoot, CgroupError> {
        let v2_cpu = |dir: &Path| {
            std::fs::read_to_string(dir.join("cgroup.controllers"))
                .ok()
                .map(|s| s.split_whitespace().any(|c| c == "cpu"))
        };
        match v2_cpu(base) {
            Some(true) => return Ok(CgroupRoot::V2 { root: base.to_owned() }),
            Some(false) => {
                return Err(CgroupError::Unavailable {
                    reason: format!(
                        "the cgroup v2 hierarchy at {} has no cpu controller (`cgroup.controllers`)",
                        base.display()
                    ),
                })
            }
            None => {}
        }
        let unified = base.join("unified");
        if v2_cpu(&unified) == Some(true) {
            return Ok(CgroupRoot::V2 { root: unified });
        }
        let cpu = base.join("cpu");
        if cpu.join("cpu.shares").is_file() {
            return Ok(CgroupRoot::V1 { cpu });
        }
        Err(CgroupError::Unavailable {
            reason: format!(
                "no cpu controller under {}: neither cgroup v2 (`cgroup.controllers` listing cpu) nor v1 (`cpu/cpu.shares`)",
                base.display()
            ),
        })
    }

    /// The directory instance cgroups are created in.
    pub fn parent(&self) -> PathBuf {
        match self {
            CgroupRoot::V2 { root } => root.join(V2_PARENT),
            CgroupRoot::V1 { cpu } => cpu.join(V1_PARENT),
        }
    }

    /// Create the parent; under v2, delegate the cpu controller down to it and below it.
    fn prepare(&self) -> Result<(), CgroupError> {
        let parent = self.parent();
        mkdir(&parent)?;
        if let CgroupRoot::V2 { root } = self {
            enable_cpu(root)?;
            enable_cpu(&parent)?;
        }
        Ok(())
    }
}

fn mkdir(dir: &Path) -> Result<(), CgroupError> {
    match std::fs::create_dir(dir) {
        Err(e) if e.kind() != ErrorKind::AlreadyExists || !dir.is_dir() => Err(io("create cgroup", dir)(e)),
        _ => Ok(()),
    }
}

/// Add `cpu` to `dir/cgroup.subtree_control` unless it is there.
fn enable_cpu(dir: &Path) -> Result<(), CgroupError> {
    let file = dir.join("cgroup.subtree_control");
    let current = std::fs::read_to_string(&file).or_else(|e| {
        if e.kind() == ErrorKind::NotFound {
            Ok(String::new())
        } else {
            Err(e)
        }
    });
    let current = current.map_err(io("read", &file))?;
    if current.split_whitespace().any(|c| c == "cpu") {
        return Ok(());
    }
    std::fs::write(&file, "+cpu").map_err(io("enable +cpu in", &file))
}

/// cgroup v2 `cpu.weight` for a CPU request: 100 per CPU (the kernel's default weight is
/// one CPU's worth), within 1..=10000.
pub fn cpu_weight(cpu_millis: u32) -> u32 {
    (cpu_millis / 10).clamp(1, 10_000)
}

/// cgroup v1 `cpu.shares` for a CPU request: 1024 per CPU, within 2..=262144.
pub fn cpu_shares(cpu_millis: u32) -> u64 {
    (u64::from(cpu_millis) * 1024 / 1000).clamp(2, 262_144)
}

/// One instance's cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup {
    path: PathBuf,
}

impl Cgroup {
    /// Create (or reuse, after an agent restart) the cgroup `name` under `root` and set its
    /// CPU weight from `cpu_millis`.
    pub fn create(root: &CgroupRoot, name: &str, cpu_millis: u32) -> Result<Cgroup, CgroupError> {
        if name.is_empty() || name.len() > 255 || name.contains('/') || name == "." || name == ".." {
            return Err(CgroupError::BadName { name: name.to_owned() });
        }
        let path = root.parent().join(name);
        mkdir(&path)?;
        let (knob, value) = match root {
            CgroupRoot::V2 { .. } => ("cpu.weight", cpu_weight(cpu_millis).to_string()),
            CgroupRoot::V1 { .. } => ("cpu.shares", cpu_shares(cpu_millis).to_string()),
        };
        let file = path.join(knob);
        std::fs::write(&file, value).map_err(io("set CPU weight in", &file))?;
        Ok(Cgroup { path })
    }

    /// The cgroup `name` under `root`, as it is (to remove one a previous agent created).
    pub fn of(root: &CgroupRoot, name: &str) -> Cgroup {
        Cgroup { path: root.parent().join(name) }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Move process `pid` (all its threads) into this cgroup.
    pub fn attach(&self, pid: u32) -> Result<(), CgroupError> {
        let file = self.path.join("cgroup.procs");
        std::fs::write(&file, pid.to_string()).map_err(io("attach a process to", &file))
    }

    /// The process ids in this cgroup.
    pub fn procs(&self) -> Result<Vec<u32>, CgroupError> {
        let file = self.path.join("cgroup.procs");
        let text = std::fs::read_to_string(&file).map_err(io("read", &file))?;
        Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
    }

    /// Remove the cgroup once its processes are gone (reaped). Idempotent: a cgroup that does
    /// not exist is removed. Retries for a moment while the kernel still counts an exited
    /// process, then fails with `Busy`. Blocks (at most ~2 s).
    pub fn remove(&self) -> Result<(), CgroupError> {
        let deadline = std::time::Instant::now() + REMOVE_RETRY;
        loop {
            match std::fs::remove_dir(&self.path) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
                Err(e) if e.raw_os_error() == Some(EBUSY) => {
                    if std::time::Instant::now() >= deadline {
                        return Err(CgroupError::Busy { path: self.path.clone() });
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(io("remove cgroup", &self.path)(e)),
            }
        }
    }
}

/// `EBUSY` on Linux: rmdir of a cgroup that still has processes (or children).
const EBUSY: i32 = 16;

#[cfg(test)]
mod tests {
    use super::*;

    fn read(p: &Path) -> String {
        std::fs::read_to_string(p).unwrap()
    }

    #[test]
    fn weights_are_proportional_and_clamped() {
        assert_eq!(cpu_weight(1000), 100);
        assert_eq!(cpu_weight(250), 25);
        assert_eq!(cpu_weight(2500), 250);
        assert_eq!((cpu_weight(0), cpu_weight(5)), (1, 1));
        assert_eq!(cpu_weight(200_000), 10_000);
        assert_eq!(cpu_shares(1000), 1024);
        assert_eq!(cpu_shares(500), 512);
        assert_eq!(cpu_shares(0), 2);
        assert_eq!(cpu_shares(u32::MAX), 262_144);
    }

    /// A pure cgroup v2 host: `cgroup.controllers` at the root lists cpu.
    #[test]
    fn v2_enables_cpu_down_to_the_instance_and_sets_the_weight() {
        let base = tempfile::tempdir().unwrap();
        let b = base.path();
        std::fs::write(b.join("cgroup.controllers"), "cpuset cpu io memory pids\n").unwrap();
        std::fs::write(b.join("cgroup.subtree_control"), "memory pids\n").unwrap();
        let root = CgroupRoot::detect_in(b).unwrap();
        assert_eq!(root, CgroupRoot::V2 { root: b.to_owned() });
        assert_eq!(read(&b.join("cgroup.subtree_control")), "+cpu");
        assert_eq!(read(&b.join("vt.slice/cgroup.subtree_control")), "+cpu");

        let cg = Cgroup::create(&root, "inst_1", 1500).unwrap();
        assert_eq!(cg.path(), b.join("vt.slice/inst_1"));
        assert_eq!(read(&cg.path().join("cpu.weight")), "150");
        cg.attach(4242).unwrap();
        assert_eq!(cg.procs().unwrap(), vec![4242]);
        // Created again (agent restart): reused, weight rewritten.
        let again = Cgroup::create(&root, "inst_1", 500).unwrap();
        assert_eq!(read(&again.path().join("cpu.weight")), "50");

        // rmdir needs an empty directory here (the kernel's control files are not files).
        for f in ["cpu.weight", "cgroup.procs"] {
            std::fs::remove_file(cg.path().join(f)).unwrap();
        }
        cg.remove().unwrap();
        assert!(!cg.path().exists());
        cg.remove().unwrap();
    }

    /// A second detect finds `cpu` already enabled and writes nothing.
    #[test]
    fn v2_cpu_already_enabled_is_left_alone() {
        let base = tempfile::tempdir().unwrap();
        let b = base.path();
        std::fs::write(b.join("cgroup.controllers"), "cpu memory\n").unwrap();
        std::fs::write(b.join("cgroup.subtree_control"), "cpu memory\n").unwrap();
        CgroupRoot::detect_in(b).unwrap();
        assert_eq!(read(&b.join("cgroup.subtree_control")), "cpu memory\n");
    }

    /// Hybrid mode (this dev machine): v2 at `unified/` without controllers, v1 `cpu/`.
    #[test]
    fn hybrid_without_cpu_on_v2_uses_v1_shares() {
        let base = tempfile::tempdir().unwrap();
        let b = base.path();
        std::fs::create_dir_all(b.join("unified")).unwrap();
        std::fs::write(b.join("unified/cgroup.controllers"), "").unwrap();
        std::fs::create_dir_all(b.join("cpu")).unwrap();
        std::fs::write(b.join("cpu/cpu.shares"), "1024\n").unwrap();
        let root = CgroupRoot::detect_in(b).unwrap();
        assert_eq!(root, CgroupRoot::V1 { cpu: b.join("cpu") });
        let cg = Cgroup::create(&root, "inst_2", 250).unwrap();
        assert_eq!(cg.path(), b.join("cpu/vt/inst_2"));
        assert_eq!(read(&cg.path().join("cpu.shares")), "256");
        assert!(!b.join("cpu/cgroup.subtree_control").exists(), "v1 has no subtree_control");
    }

    #[test]
    fn hybrid_with_cpu_on_v2_prefers_v2() {
        let base = tempfile::tempdir().unwrap();
        let b = base.path();
        std::fs::create_dir_all(b.join("unified")).unwrap();
        std::fs::write(b.join("unified/cgroup.controllers"), "cpu\n").unwrap();
        std::fs::create_dir_all(b.join("cpu")).unwrap();
        std::fs::write(b.join("cpu/cpu.shares"), "1024\n").unwrap();
        assert_eq!(CgroupRoot::detect_in(b).unwrap(), CgroupRoot::V2 { root: b.join("unified") });
    }

    #[test]
    fn unusable_hierarchies_say_why() {
        let base = tempfile::tempdir().unwrap();
        let b = base.path();
        let e = CgroupRoot::detect_in(b).unwrap_err().to_string();
        assert!(e.contains("no cpu controller under") && e.contains(&b.display().to_string()), "{e}");

        std::fs::write(b.join("cgroup.controllers"), "memory pids\n").unwrap();
        let e = CgroupRoot::detect_in(b).unwrap_err().to_string();
        assert!(e.contains("has no cpu controller"), "{e}");

        // The parent cannot be created (a file is in the way): unavailable, naming the path.
        std::fs::write(b.join("cgroup.controllers"), "cpu\n").unwrap();
        std::fs::write(b.join("vt.slice"), "").unwrap();
        let e = CgroupRoot::detect_in(b).unwrap_err();
        assert!(matches!(e, CgroupError::Unavailable { .. }), "{e:?}");
        assert!(e.to_string().contains(&b.join("vt.slice").display().to_string()), "{e}");
    }

    #[test]
    fn names_are_one_path_component() {
        let root = CgroupRoot::V1 { cpu: PathBuf::from("/nonexistent") };
        for bad in ["", ".", "..", "a/b", &"x".repeat(256)] {
            assert!(matches!(Cgroup::create(&root, bad, 1000), Err(CgroupError::BadName { .. })), "{bad:?}");
        }
        let e = Cgroup::create(&root, "inst_3", 1000).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/vt/inst_3"), "{e}");
    }

    /// The real thing: as root on a host with a usable hierarchy, a `sleep` joins a cgroup
    /// with the expected weight, and the cgroup is removed after it ends.
    #[test]
    fn real_cgroup_with_a_sleep_child() {
        let root = match CgroupRoot::detect() {
            Ok(r) => r,
            Err(e) => {
                eprintln!("SKIPPED: real cgroup test: {e}");
                return;
            }
        };
        let name = format!("vt-test-{}", std::process::id());
        let cg = Cgroup::create(&root, &name, 500).unwrap();
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let attached = cg.attach(child.id());
        let procs = cg.procs();
        let (knob, want) = match &root {
            CgroupRoot::V2 { .. } => ("cpu.weight", "50"),
            CgroupRoot::V1 { .. } => ("cpu.shares", "512"),
        };
        let value = std::fs::read_to_string(cg.path().join(knob));
        let _ = child.kill();
        let _ = child.wait();
        let removed = cg.remove();
        attached.unwrap();
        assert_eq!(procs.unwrap(), vec![child.id()]);
        assert_eq!(value.unwrap().trim(), want);
        removed.unwrap();
        assert!(!cg.path().exists());
        cg.remove().unwrap();
    }
}
