//! The agent's on-disk state: one JSON record per instance, written atomically
//! (temp file, fsync, rename), so a restarted agent knows what it was doing.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where an instance is, as this agent last recorded it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Preparing,
    Booting,
    Running,
    Stopping,
    Stopped,
    Failed,
    /// Saved to a snapshot in its work dir, no VMM (`vt_runtime::snapshot`): resumed when
    /// desired `running` again, never started by a restarted agent.
    Suspended,
}

impl Phase {
    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Stopped | Phase::Failed)
    }
    pub fn status(self) -> vt_events::InstanceStatus {
        use vt_events::InstanceStatus as S;
        match self {
            Phase::Preparing => S::Preparing,
            Phase::Booting => S::Booting,
            Phase::Running => S::Running,
            Phase::Stopping => S::Stopping,
            Phase::Stopped => S::Stopped,
            Phase::Failed => S::Failed,
            Phase::Suspended => S::Suspended,
        }
    }
}

/// Per-phase boot timings of one instance, milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PhaseTimings {
    /// Prepare start → the image's root disk is ready (pull + unpack + mkfs, or a cache hit).
    pub root_disk_ms: Option<f64>,
    /// Boot start → the VMM process is spawned (includes the scratch disk).
    pub vmm_spawned_ms: Option<f64>,
    /// Guest kernel start → guest init start (the guest's own clock).
    pub kernel_to_init_ms: Option<f64>,
    /// Guest init start → entrypoint started (the guest's own clock).
    pub init_to_entrypoint_ms: Option<f64>,
    /// Prepare start → the entrypoint runs, as the agent saw it.
    pub running_ms: Option<f64>,
    /// Prepare start → the first passing health check (= `running_ms` without a check).
    #[serde(default)]
    pub healthy_ms: Option<f64>,
}

impl PhaseTimings {
    /// As reported to the control plane (whole milliseconds).
    pub fn to_report(&self) -> vt_events::BootTimings {
        let ms = |v: Option<f64>| v.map(|v| v.max(0.0).round() as u64);
        vt_events::BootTimings {
            root_disk_ms: ms(self.root_disk_ms),
            vmm_spawned_ms: ms(self.vmm_spawned_ms),
            kernel_to_init_ms: ms(self.kernel_to_init_ms),
            init_to_entrypoint_ms: ms(self.init_to_entrypoint_ms),
            running_ms: ms(self.running_ms),
            healthy_ms: ms(self.healthy_ms),
        }
    }

    pub fn summary(&self) -> String {
        let f = |v: Option<f64>| v.map(|v| format!("{v:.0} ms")).unwrap_or_else(|| "-".into());
        format!(
            "root disk {}, VMM spawned {}, kernel→init {}, init→entrypoint {}, running after {}",
            f(self.root_disk_ms),
            f(self.vmm_spawned_ms),
            f(self.kernel_to_init_ms),
            f(self.init_to_entrypoint_ms),
            f(self.running_ms)
        )
    }
}

/// `<data-dir>/agent/instances/<id>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceRecord {
    pub id: String,
    pub phase: Phase,
    /// The VMM's process id while it may be alive.
    pub vm_pid: Option<u32>,
    /// The runtime's directory for this instance (scratch disk, channel socket, console log).
    pub work_dir: PathBuf,
    pub root_disk: Option<PathBuf>,
    pub release_id: String,
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
    /// The last status the control plane acknowledged for this record.
    pub reported: Option<Phase>,
    pub timings: PhaseTimings,
    /// The instance's address (on its tap), when it has a network.
    #[serde(default)]
    pub address: Option<String>,
    /// Its tap device, removed when the VM ends (also after an adoption).
    #[serde(default)]
    pub tap: Option<String>,
    /// Its health check, port resolved.
    #[serde(default)]
    pub probe: Option<crate::health::Probe>,
    /// Its private IPv4 (egress), leased from the node's range while its VM lives.
    #[serde(default)]
    pub ipv4: Option<String>,
    /// Its org (the private network it is in) and whether it is isolated (no private
    /// network): what a restarted agent rebuilds its rules from.
    #[serde(default)]
    pub org: Option<String>,
    #[serde(default)]
    pub isolated: bool,
    /// Its VM keeps its guest channel for the next agent (`Runtime::attach`); older records
    /// (and other runtimes) are watched through their process only.
    #[serde(default)]
    pub resumable: bool,
    pub updated_at: String,
}

impl InstanceRecord {
    pub fn new(id: &str, release_id: &str, work_dir: PathBuf) -> Self {
        InstanceRecord {
            id: id.to_owned(),
            phase: Phase::Preparing,
            vm_pid: None,
            work_dir,
            root_disk: None,
            release_id: release_id.to_owned(),
            exit_code: None,
            reason: None,
            reported: None,
            timings: PhaseTimings::default(),
            address: None,
            tap: None,
            probe: None,
            ipv4: None,
            org: None,
            isolated: false,
            resumable: false,
            updated_at: now(),
        }
    }
}

pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// The directory of instance records.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    pub fn open(dir: PathBuf) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        Ok(StateDir { dir })
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    pub fn load(&self, id: &str) -> Option<InstanceRecord> {
        let bytes = std::fs::read(self.path(id)).ok()?;
        match serde_json::from_slice(&bytes) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(instance = id, error = %e, "unreadable instance record; ignoring it");
                None
            }
        }
    }

    pub fn list(&self) -> Vec<InstanceRecord> {
        let mut ids: Vec<String> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_suffix(".json")).map(str::to_owned))
            .collect();
        ids.sort();
        ids.iter().filter_map(|id| self.load(id)).collect()
    }

    /// Write a record atomically: a crash leaves the old record or the new one, never a torn one.
    pub fn save(&self, rec: &mut InstanceRecord) -> std::io::Result<()> {
        rec.updated_at = now();
        let tmp = self.dir.join(format!(".{}.json.tmp", rec.id));
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(rec).map_err(std::io::Error::other)?)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, self.path(&rec.id))?;
        if let Ok(d) = std::fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

/// Whether `pid` is a live (not zombie) process whose command line mentions `needle`
/// (the instance's work dir), so a recycled pid is never mistaken for our VM.
pub fn vm_alive(pid: u32, needle: &str) -> bool {
    let proc = PathBuf::from(format!("/proc/{pid}"));
    let Ok(stat) = std::fs::read_to_string(proc.join("stat")) else {
        return false;
    };
    // State is the field after the parenthesized command name.
    let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next());
    if matches!(state, Some("Z") | Some("X") | None) {
        return false;
    }
    let cmdline = std::fs::read(proc.join("cmdline")).unwrap_or_default();
    String::from_utf8_lossy(&cmdline).contains(needle)
}

/// Send a signal with kill(1) (the workspace forbids `unsafe`, so no libc::kill).
pub async fn signal(pid: u32, sig: &str) {
    let _ = tokio::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .await;
}

pub fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}
