//! Materialized views and the projections that build them.
//!
//! A view is a typed document (`OrgView`, `InstanceView`, ...) stored as a
//! [`ViewRow`]: a kind, an id, a few indexed columns (org, parent, name) and the
//! document as JSON. A [`Projection`] owns one kind of view: for each event it
//! says which rows it touches and computes their new value from the old one.
//! Projections are pure functions of (row, event): they do no I/O, read no
//! clock and no other row, so replaying the log always gives the same views.
//! The store (`vt-store`) loads the rows, runs the projections and writes the
//! result together with each projection's checkpoint in one transaction.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use vt_events::*;
use vt_ids::*;

/// The kinds of views, one per projection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ViewKind {
    Org,
    App,
    Env,
    Release,
    Deploy,
    Scale,
    Instance,
    Node,
    Route,
    Token,
    Secrets,
    Volume,
    Snapshot,
    Workspace,
}

impl ViewKind {
    pub const ALL: [ViewKind; 14] = [
        Self::Org,
        Self::App,
        Self::Env,
        Self::Release,
        Self::Deploy,
        Self::Scale,
        Self::Instance,
        Self::Node,
        Self::Route,
        Self::Token,
        Self::Secrets,
        Self::Volume,
        Self::Snapshot,
        Self::Workspace,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Org => "org",
            Self::App => "app",
            Self::Env => "env",
            Self::Release => "release",
            Self::Deploy => "deploy",
            Self::Scale => "scale",
            Self::Instance => "instance",
            Self::Node => "node",
            Self::Route => "route",
            Self::Token => "token",
            Self::Secrets => "secrets",
            Self::Volume => "volume",
            Self::Snapshot => "snapshot",
            Self::Workspace => "workspace",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// One stored view document with its indexed columns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ViewRow {
    pub kind: ViewKind,
    pub id: String,
    pub org_id: Option<String>,
    pub parent_id: Option<String>,
    pub name: Option<String>,
    /// Sequence of the last event that changed this row.
    pub seq: u64,
    pub doc: serde_json::Value,
}

impl ViewRow {
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_value(self.doc.clone())
    }
}

/// A typed view document.
pub trait View: Serialize + DeserializeOwned {
    const KIND: ViewKind;
    fn id(&self) -> String;
    fn org_id(&self) -> Option<String>;
    fn parent_id(&self) -> Option<String>;
    fn name(&self) -> Option<String>;

    fn into_row(self, seq: u64) -> ViewRow {
        ViewRow {
            kind: Self::KIND,
            id: self.id(),
            org_id: self.org_id(),
            parent_id: self.parent_id(),
            name: self.name(),
            seq,
            // Plain data structs always serialize.
            doc: serde_json::to_value(&self).unwrap_or(serde_json::Value::Null),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrgView {
    pub id: OrgId,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppView {
    pub id: AppId,
    pub org_id: OrgId,
    pub name: String,
    pub description: Option<String>,
    /// The workspace this app carries: not one of the org's apps (no parent, no name in
    /// the index), reached only through its workspace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_id: Option<WorkspaceId>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnvView {
    pub id: EnvId,
    pub org_id: OrgId,
    pub app_id: AppId,
    pub name: String,
    /// The release this env should run (set by the latest deploy or rollback).
    pub desired_release_id: Option<ReleaseId>,
    /// The deploy that set it.
    pub current_deploy_id: Option<DeployId>,
    /// The secrets version this env should run (set with the desired release).
    #[serde(default)]
    pub desired_secrets_version: Option<u64>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl EnvView {
    /// What the env's instances should run.
    pub fn desired_revision(&self) -> Option<Revision> {
        Some(Revision { release: self.desired_release_id?, secrets: self.desired_secrets_version })
    }
}

/// What an instance runs: a release, with a secrets version of its env.
/// Instances of an older revision are replaced, health-gated, like those of
/// an older release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Revision {
    pub release: ReleaseId,
    pub secrets: Option<u64>,
}

impl Revision {
    /// In words, for messages: `release rel_...` or `release rel_... with secrets version N`.
    pub fn words(&self) -> String {
        match self.secrets {
            Some(n) => format!("release {} with secrets version {n}", self.release),
            None => format!("release {}", self.release),
        }
    }
}

/// `rel_...`, or `rel_...+secrets.N` (the scheduler's opaque group key).
impl std::fmt::Display for Revision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.secrets {
            Some(n) => write!(f, "{}+secrets.{n}", self.release),
            None => write!(f, "{}", self.release),
        }
    }
}

impl std::str::FromStr for Revision {
    type Err = String;
    fn from_str(s: &str) -> Result<Revision, String> {
        let (release, secrets) = match s.split_once("+secrets.") {
            Some((r, n)) => (r, Some(n.parse::<u64>().map_err(|e| format!("revision {s:?}: {e}"))?)),
            None => (s, None),
        };
        Ok(Revision { release: release.parse().map_err(|e| format!("revision {s:?}: {e}"))?, secrets })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReleaseView {
    pub id: ReleaseId,
    pub org_id: OrgId,
    pub app_id: AppId,
    pub image_ref: String,
    pub image_digest: String,
    pub resolved_from: Option<String>,
    pub manifest_hash: String,
    pub manifest: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeployView {
    pub id: DeployId,
    pub org_id: OrgId,
    pub app_id: AppId,
    pub env_id: EnvId,
    pub release_id: ReleaseId,
    pub previous_release_id: Option<ReleaseId>,
    /// The secrets version its instances run.
    #[serde(default)]
    pub secrets_version: Option<u64>,
    /// The secrets version before it.
    #[serde(default)]
    pub previous_secrets_version: Option<u64>,
    pub kind: DeployKind,
    pub status: DeployStatus,
    pub reason: Option<String>,
    /// The phases reached so far, in order; `created_at` is when it was accepted.
    #[serde(default)]
    pub phases: Vec<PhaseTiming>,
    /// When `failed`: the new-release instance whose failure failed it.
    #[serde(default)]
    pub failed_instance_id: Option<InstanceId>,
    /// When `failed`: the release its env went back to (none when there was
    /// no previous release: the env stays on this one).
    #[serde(default)]
    pub reverted_to_release_id: Option<ReleaseId>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl DeployView {
    pub fn phase(&self, phase: DeployPhase) -> Option<&PhaseTiming> {
        self.phases.iter().find(|p| p.phase == phase)
    }

    /// What the deploy's instances run.
    pub fn revision(&self) -> Revision {
        Revision { release: self.release_id, secrets: self.secrets_version }
    }

    /// What the env ran before it.
    pub fn previous_revision(&self) -> Option<Revision> {
        Some(Revision { release: self.previous_release_id?, secrets: self.previous_secrets_version })
    }
}

/// When a deploy reached a phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseTiming {
    pub phase: DeployPhase,
    pub at: DateTime<Utc>,
    /// Milliseconds since the deploy was accepted.
    pub after_ms: u64,
}

/// Desired instance count of one process type in one env.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScaleView {
    pub org_id: OrgId,
    pub app_id: AppId,
    pub env_id: EnvId,
    pub process: String,
    pub instances: u32,
    pub updated_at: DateTime<Utc>,
}

impl ScaleView {
    pub fn key(env_id: &EnvId, process: &str) -> String {
        format!("{env_id}/{process}")
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceView {
    pub id: InstanceId,
    pub org_id: OrgId,
    pub app_id: AppId,
    pub env_id: EnvId,
    pub process: String,
    pub release_id: ReleaseId,
    pub deploy_id: Option<DeployId>,
    pub node_id: NodeId,
    pub resources: Resources,
    /// The env's secrets version it gets at boot.
    #[serde(default)]
    pub secrets_version: Option<u64>,
    /// What the control plane wants.
    pub desired_state: DesiredState,
    /// What the node last reported.
    pub status: InstanceStatus,
    /// Why it is in this status, in words a user can act on.
    pub reason: Option<String>,
    pub exit_code: Option<i32>,
    /// Where the instance is reachable (an IP address), as its node last reported.
    #[serde(default)]
    pub address: Option<String>,
    /// The health check's verdict while running (`None`: not reported yet).
    #[serde(default)]
    pub health: Option<Health>,
    /// Per-phase boot timings, once running.
    #[serde(default)]
    pub boot: Option<BootTimings>,
    /// When it first became ready (running, meant to run, passing).
    #[serde(default)]
    pub ready_at: Option<DateTime<Utc>>,
    /// How it failed while meant to run, once it did; kept for good (the
    /// scheduler replaces it, and counts it towards a crash loop).
    #[serde(default)]
    pub failure: Option<InstanceFailure>,
    /// The volumes it mounts (its allocation decided them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeAttachment>,
    /// Reported preparing or booting since it was last reported `suspended`: its node is
    /// resuming it from its snapshot (the scheduler suspends it again, rather than stopping
    /// it, when its group is scaled to 0 meanwhile).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub resuming: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// How an instance that was meant to run failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// Reported `failed`: the entrypoint exited non-zero, or the node could not start or keep it.
    Failed,
    /// Reported `stopped` without being asked to stop (the entrypoint exited 0).
    Exited,
    /// Reported `running` with its health check `failing`.
    Unhealthy,
}

/// An instance's failure, as its node reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceFailure {
    pub kind: FailureKind,
    pub at: DateTime<Utc>,
    pub exit_code: Option<i32>,
    /// The node's reason, as reported.
    pub reason: Option<String>,
}

impl InstanceFailure {
    /// A few words: `exited with code 1`, `health check failed 3 times: ...`.
    pub fn summary(&self) -> String {
        match (self.kind, self.exit_code, &self.reason) {
            (FailureKind::Unhealthy, _, Some(r)) => r.clone(),
            (FailureKind::Unhealthy, _, None) => "health check failing".into(),
            (_, Some(c), _) if (129..=192).contains(&c) => format!("exited with code {c} (signal {})", c - 128),
            (_, Some(c), _) => format!("exited with code {c}"),
            (_, None, Some(r)) => r.clone(),
            (FailureKind::Failed, None, None) => "failed (no reason reported)".into(),
            (FailureKind::Exited, None, None) => "stopped without being asked to".into(),
        }
    }

    /// The summary and, when it only gave the exit code, the node's reason too.
    pub fn detail(&self) -> String {
        match (&self.exit_code, &self.reason) {
            (Some(_), Some(r)) if self.kind != FailureKind::Unhealthy => format!("{}: {r}", self.summary()),
            _ => self.summary(),
        }
    }
}

impl InstanceView {
    /// What it runs.
    pub fn revision(&self) -> Revision {
        Revision { release: self.release_id, secrets: self.secrets_version }
    }

    /// What `instance.allocated` projects to.
    pub fn allocated(e: &InstanceAllocated, at: DateTime<Utc>) -> InstanceView {
        InstanceView {
            id: e.instance_id,
            org_id: e.org_id,
            app_id: e.app_id,
            env_id: e.env_id,
            process: e.process.clone(),
            release_id: e.release_id,
            deploy_id: e.deploy_id,
            node_id: e.node_id,
            resources: e.resources,
            secrets_version: e.secrets_version,
            desired_state: DesiredState::Running,
            status: InstanceStatus::Allocated,
            reason: Some("waiting for the node agent to pick it up".into()),
            exit_code: None,
            address: None,
            health: None,
            boot: None,
            ready_at: None,
            failure: None,
            volumes: e.volumes.clone(),
            resuming: false,
            created_at: at,
            updated_at: at,
        }
    }

    /// Serving: running, meant to run, and passing its health check (an
    /// instance reported before health checks existed counts as passing).
    /// The ingress routes to these; a rollout counts these.
    pub fn is_ready(&self) -> bool {
        self.status == InstanceStatus::Running
            && self.desired_state == DesiredState::Running
            && matches!(self.health, None | Some(Health::Passing))
    }

    /// Meant to run and not ended: allocated, starting or running.
    pub fn is_live(&self) -> bool {
        self.desired_state == DesiredState::Running
            && !matches!(self.status, InstanceStatus::Stopping | InstanceStatus::Stopped | InstanceStatus::Failed)
    }

    /// Apply a node's status report made at `at` (the projection, and the
    /// command's answer, both use this).
    pub fn apply_report(&mut self, e: &InstanceStatusReported, at: DateTime<Utc>) {
        let from_snapshot = self.resuming || self.status == InstanceStatus::Suspended;
        self.resuming = from_snapshot && matches!(e.status, InstanceStatus::Preparing | InstanceStatus::Booting);
        self.status = e.status;
        self.reason = e.reason.clone();
        self.exit_code = e.exit_code;
        if e.address.is_some() {
            self.address = e.address.clone();
        }
        // Health and timings belong to a run: a report that leaves
        // `running` clears the health; timings are kept once known.
        self.health = if e.status == InstanceStatus::Running { e.health.or(self.health) } else { None };
        if e.boot.is_some() {
            self.boot = e.boot;
        }
        if self.ready_at.is_none() && self.is_ready() {
            self.ready_at = Some(at);
        }
        if self.failure.is_none() && self.desired_state == DesiredState::Running {
            let kind = match (e.status, self.health) {
                (InstanceStatus::Failed, _) => Some(FailureKind::Failed),
                (InstanceStatus::Stopped, _) => Some(FailureKind::Exited),
                (InstanceStatus::Running, Some(Health::Failing)) => Some(FailureKind::Unhealthy),
                _ => None,
            };
            self.failure =
                kind.map(|kind| InstanceFailure { kind, at, exit_code: e.exit_code, reason: e.reason.clone() });
        }
        self.updated_at = at;
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeView {
    pub id: NodeId,
    pub name: String,
    pub status: NodeStatus,
    pub status_reason: Option<String>,
    pub capacity: Capacity,
    pub allocatable: Capacity,
    pub labels: BTreeMap<String, String>,
    pub address: Option<String>,
    /// The node's IPv6 /64; its instances' addresses come from it.
    #[serde(default)]
    pub subnet: Option<String>,
    /// The node's IPv4 range; its instances' private IPv4 addresses (egress only, NAT) come from it.
    #[serde(default)]
    pub ipv4_range: Option<String>,
    /// Its WireGuard public key (base64), when it registered one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wireguard_public_key: Option<String>,
    /// The UDP port of its WireGuard interface, at `address`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wireguard_port: Option<u16>,
    /// Whether instances may be placed on it (`false`: an edge-only node; docs/nodes.md).
    #[serde(default = "vt_events::yes", skip_serializing_if = "vt_events::is_yes")]
    pub runs_instances: bool,
    pub registered_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A volume of an env: a local ext4 disk on one node, attached to at most one instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumeView {
    pub id: VolumeId,
    pub org_id: OrgId,
    pub app_id: AppId,
    pub env_id: EnvId,
    pub name: String,
    pub size_gib: u32,
    pub node_id: NodeId,
    /// The instance that has it, from its allocation until it ended.
    pub attached_to: Option<InstanceId>,
    /// The snapshot it was restored from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_snapshot: Option<SnapshotId>,
    /// The backup (restic snapshot id) it was restored from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_backup: Option<String>,
    /// Its backups: the one running, the last success and the last failure.
    #[serde(default)]
    pub backups: VolumeBackups,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A workspace (docs/workspaces.md): what it should be and what it is made of. Its current
/// state (starting, running, ...) is its env's instance's, read next to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkspaceView {
    pub id: WorkspaceId,
    pub org_id: OrgId,
    pub name: String,
    /// The hidden app and env that run its IDE (process `ide`), and their release.
    pub app_id: AppId,
    pub env_id: EnvId,
    pub release_id: ReleaseId,
    /// The home disk and the node that holds it.
    pub volume_id: VolumeId,
    pub node_id: NodeId,
    pub image_ref: String,
    pub image_digest: String,
    pub cpus: u32,
    pub memory_mib: u32,
    pub disk_gib: u32,
    pub desired: WorkspaceDesired,
    /// Registered ports, ascending.
    pub ports: Vec<u16>,
    /// Why the platform stopped it, until the next start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<WorkspaceFailure>,
    pub last_started_at: Option<DateTime<Utc>>,
    pub last_accessed_at: Option<DateTime<Utc>>,
    /// Its events in words, newest last, the last [`WorkspaceView::ACTIVITY`] (accesses are not activity).
    pub activity: Vec<WorkspaceActivity>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl WorkspaceView {
    pub const ACTIVITY: usize = 50;

    /// The view `workspace.created` makes at `at` (the projection, and the command's answer).
    pub fn created(e: &WorkspaceCreated, at: DateTime<Utc>) -> WorkspaceView {
        WorkspaceView {
            id: e.workspace_id,
            org_id: e.org_id,
            name: e.name.clone(),
            app_id: e.app_id,
            env_id: e.env_id,
            release_id: e.release_id,
            volume_id: e.volume_id,
            node_id: e.node_id,
            image_ref: e.image_ref.clone(),
            image_digest: e.image_digest.clone(),
            cpus: e.cpus,
            memory_mib: e.memory_mib,
            disk_gib: e.disk_gib,
            desired: WorkspaceDesired::Running,
            ports: vec![],
            failure: None,
            last_started_at: Some(at),
            last_accessed_at: None,
            activity: vec![WorkspaceActivity {
                at,
                event: "workspace.created".to_owned(),
                detail: format!(
                    "created with {} vCPU, {} MiB, a {} GiB home; starting",
                    e.cpus, e.memory_mib, e.disk_gib
                ),
            }],
            created_at: at,
            updated_at: at,
        }
    }

    /// Apply a later event of this workspace made at `at` (the projection, and the commands'
    /// answers); other events change nothing.
    pub fn apply(&mut self, event: &Event, at: DateTime<Utc>) {
        let w = self;
        let detail = match event {
            Event::WorkspaceDesiredStateChanged(e) => {
                if e.desired == WorkspaceDesired::Running && w.desired != WorkspaceDesired::Running {
                    w.last_started_at = Some(at);
                    w.failure = None;
                }
                let was = w.desired;
                w.desired = e.desired;
                Some(match e.desired {
                    WorkspaceDesired::Running if was == WorkspaceDesired::Suspended => {
                        "started: resumed from its snapshot".to_owned()
                    }
                    WorkspaceDesired::Running => "started".to_owned(),
                    WorkspaceDesired::Suspended => "suspended: its VM is saved to a snapshot on its node".to_owned(),
                    WorkspaceDesired::Stopped => "stopped".to_owned(),
                    WorkspaceDesired::Deleted => "deleted: its VM stops, then its disk goes".to_owned(),
                })
            }
            Event::WorkspaceFailed(e) => {
                w.desired = WorkspaceDesired::Stopped;
                w.failure = Some(WorkspaceFailure { instance_id: e.instance_id, reason: e.reason.clone(), at });
                Some(format!("failed and stopped: {}", e.reason))
            }
            Event::WorkspacePortAdded(e) => {
                if let Err(i) = w.ports.binary_search(&e.port) {
                    w.ports.insert(i, e.port);
                }
                Some(format!("port {} added", e.port))
            }
            Event::WorkspacePortRemoved(e) => {
                w.ports.retain(|p| *p != e.port);
                Some(format!("port {} removed", e.port))
            }
            Event::WorkspaceAccessed(e) => {
                // Only ever forward: a late report of an earlier access does not move it back.
                w.last_accessed_at = w.last_accessed_at.max(Some(e.at));
                None
            }
            _ => return,
        };
        if let Some(detail) = detail {
            if w.activity.len() == WorkspaceView::ACTIVITY {
                w.activity.remove(0);
            }
            w.activity.push(WorkspaceActivity { at, event: event.event_type().to_owned(), detail });
        }
        w.updated_at = at;
    }
}

/// One event of a workspace, in words.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkspaceActivity {
    pub at: DateTime<Utc>,
    pub event: String,
    pub detail: String,
}

/// How a workspace's IDE failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkspaceFailure {
    pub instance_id: InstanceId,
    pub reason: String,
    pub at: DateTime<Utc>,
}

/// A snapshot of a volume, on the volume's node; kept when the volume is deleted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotView {
    pub id: SnapshotId,
    pub org_id: OrgId,
    pub app_id: AppId,
    pub env_id: EnvId,
    pub volume_id: VolumeId,
    pub volume_name: String,
    pub size_gib: u32,
    pub node_id: NodeId,
    pub status: SnapshotStatus,
    pub bytes: Option<u64>,
    pub took_ms: Option<u64>,
    pub paused_ms: Option<u64>,
    pub reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
}

/// An ingress route: listener port (and host name, for TLS) to a process type's port.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteView {
    pub id: RouteId,
    pub org_id: OrgId,
    pub app_id: AppId,
    pub env_id: EnvId,
    pub protocol: RouteProtocol,
    /// Lower case; present for `tls`, absent for `tcp`.
    pub hostname: Option<String>,
    /// The ingress listener port.
    pub port: u16,
    pub process: String,
    pub backend_port: u16,
    pub proxy_protocol: bool,
    pub created_at: DateTime<Utc>,
    /// Each node's ingress listener for the route, as last reported, by node name.
    #[serde(default)]
    pub listeners: Vec<RouteListener>,
}

/// An API token: who holds which role where. Never its secret (only the
/// store's token table has the secret's hash).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenView {
    pub id: TokenId,
    pub name: String,
    pub role: TokenRole,
    /// The org of an org role.
    pub org_id: Option<OrgId>,
    /// The node a `node` token is bound to, and that node's name.
    pub node_id: Option<NodeId>,
    pub node_name: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
    /// The labels an `enroll` token gives the node it enrolls.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    pub created_at: DateTime<Utc>,
    /// Who created it (`token:<id>`, `system:bootstrap`).
    pub created_by: String,
    pub revoked_at: Option<DateTime<Utc>>,
    pub revoked_by: Option<String>,
}

/// An env's secrets, by name: metadata only (values are sealed in the store).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecretsView {
    pub org_id: OrgId,
    pub app_id: AppId,
    pub env_id: EnvId,
    /// The latest version (0: none yet).
    pub version: u64,
    /// The secrets of the latest version.
    pub live: BTreeMap<String, SecretMeta>,
    /// Changes waiting for the next version (`vt secrets deploy`).
    pub staged: BTreeMap<String, StagedSecret>,
    pub updated_at: DateTime<Utc>,
}

impl SecretsView {
    /// An env's secrets before any change.
    pub fn empty(org_id: OrgId, app_id: AppId, env_id: EnvId, at: DateTime<Utc>) -> SecretsView {
        SecretsView {
            org_id,
            app_id,
            env_id,
            version: 0,
            live: BTreeMap::new(),
            staged: BTreeMap::new(),
            updated_at: at,
        }
    }

    /// What `secrets.staged` does to it.
    pub fn apply_staged(&mut self, e: &SecretsStaged, at: DateTime<Utc>, actor: &str) {
        for (names, set) in [(&e.set, true), (&e.unset, false)] {
            for n in names {
                self.staged.insert(n.clone(), StagedSecret { set, staged_at: at, staged_by: actor.to_owned() });
            }
        }
        self.updated_at = at;
    }

    /// What `secrets.version_created` does to it.
    pub fn apply_version(&mut self, e: &SecretsVersionCreated, at: DateTime<Utc>, actor: &str) {
        self.version = e.version;
        for n in &e.set {
            self.live.insert(n.clone(), SecretMeta { version: e.version, set_at: at, set_by: actor.to_owned() });
        }
        self.live.retain(|n, _| e.names.contains(n));
        if e.from_staged {
            self.staged.clear();
        }
        self.updated_at = at;
    }
}

/// A secret of a version: when and by whom its value was last set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretMeta {
    /// The version that set the current value.
    pub version: u64,
    pub set_at: DateTime<Utc>,
    pub set_by: String,
}

/// A staged change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedSecret {
    /// `true`: a new value; `false`: removal.
    pub set: bool,
    pub staged_at: DateTime<Utc>,
    pub staged_by: String,
}

impl TokenView {
    /// What `token.created` projects to (the command's answer is the same).
    pub fn created(e: &TokenCreated, at: DateTime<Utc>, actor: &str) -> TokenView {
        TokenView {
            id: e.token_id,
            name: e.name.clone(),
            role: e.role,
            org_id: e.org_id,
            node_id: e.node_id,
            node_name: e.node_name.clone(),
            expires_at: e.expires_at,
            labels: e.labels.clone(),
            created_at: at,
            created_by: actor.to_owned(),
            revoked_at: None,
            revoked_by: None,
        }
    }
}

macro_rules! view {
    ($ty:ty, $kind:ident, id = |$s:ident| $id:expr, org = $org:expr, parent = $parent:expr, name = $name:expr) => {
        impl View for $ty {
            const KIND: ViewKind = ViewKind::$kind;
            fn id(&self) -> String {
                #[allow(unused_variables)]
                let $s = self;
                $id
            }
            fn org_id(&self) -> Option<String> {
                #[allow(unused_variables)]
                let $s = self;
                $org
            }
            fn parent_id(&self) -> Option<String> {
                #[allow(unused_variables)]
                let $s = self;
                $parent
            }
            fn name(&self) -> Option<String> {
                #[allow(unused_variables)]
                let $s = self;
                $name
            }
        }
    };
}

view!(
    OrgView,
    Org,
    id = |s| s.id.to_string(),
    org = Some(s.id.to_string()),
    parent = None,
    name = Some(s.name.clone())
);
view!(
    AppView,
    App,
    id = |s| s.id.to_string(),
    org = Some(s.org_id.to_string()),
    parent = s.workspace_id.is_none().then(|| s.org_id.to_string()),
    name = s.workspace_id.is_none().then(|| s.name.clone())
);
view!(
    WorkspaceView,
    Workspace,
    id = |s| s.id.to_string(),
    org = Some(s.org_id.to_string()),
    parent = Some(s.org_id.to_string()),
    name = Some(s.name.clone())
);
view!(
    EnvView,
    Env,
    id = |s| s.id.to_string(),
    org = Some(s.org_id.to_string()),
    parent = Some(s.app_id.to_string()),
    name = Some(s.name.clone())
);
view!(
    ReleaseView,
    Release,
    id = |s| s.id.to_string(),
    org = Some(s.org_id.to_string()),
    parent = Some(s.app_id.to_string()),
    name = None
);
view!(
    DeployView,
    Deploy,
    id = |s| s.id.to_string(),
    org = Some(s.org_id.to_string()),
    parent = Some(s.env_id.to_string()),
    name = None
);
view!(
    ScaleView,
    Scale,
    id = |s| ScaleView::key(&s.env_id, &s.process),
    org = Some(s.org_id.to_string()),
    parent = Some(s.env_id.to_string()),
    name = Some(s.process.clone())
);
view!(
    InstanceView,
    Instance,
    id = |s| s.id.to_string(),
    org = Some(s.org_id.to_string()),
    parent = Some(s.env_id.to_string()),
    name = Some(s.process.clone())
);
view!(
    RouteView,
    Route,
    id = |s| s.id.to_string(),
    org = Some(s.org_id.to_string()),
    parent = Some(s.env_id.to_string()),
    name = s.hostname.clone()
);
view!(
    VolumeView,
    Volume,
    id = |s| s.id.to_string(),
    org = Some(s.org_id.to_string()),
    parent = Some(s.env_id.to_string()),
    name = Some(s.name.clone())
);
view!(
    SnapshotView,
    Snapshot,
    id = |s| s.id.to_string(),
    org = Some(s.org_id.to_string()),
    parent = Some(s.env_id.to_string()),
    name = Some(s.volume_name.clone())
);
view!(NodeView, Node, id = |s| s.id.to_string(), org = None, parent = None, name = Some(s.name.clone()));
view!(
    SecretsView,
    Secrets,
    id = |s| s.env_id.to_string(),
    org = Some(s.org_id.to_string()),
    parent = Some(s.env_id.to_string()),
    name = None
);
view!(
    TokenView,
    Token,
    id = |s| s.id.to_string(),
    org = s.org_id.map(|o| o.to_string()),
    parent = s.org_id.map(|o| o.to_string()),
    name = Some(s.name.clone())
);

/// Why a projection could not apply an event. A projection that fails stops at
/// that event (its checkpoint does not move) and reports the error as its status.
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectionError(pub String);

impl std::fmt::Display for ProjectionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ProjectionError {}

/// Owns one kind of view.
pub trait Projection: Send + Sync {
    /// Stable name; the key of this projection's checkpoint.
    fn name(&self) -> &'static str;
    fn kind(&self) -> ViewKind;
    /// The ids of the rows of [`Self::kind`] this event changes (usually none or one).
    fn touches(&self, event: &Event) -> Vec<String>;
    /// The new value of row `id`, given its current value. `None` removes it.
    fn apply(
        &self,
        envelope: &Envelope,
        event: &Event,
        id: &str,
        current: Option<&ViewRow>,
    ) -> Result<Option<ViewRow>, ProjectionError>;
}

/// All projections, in a fixed order.
pub fn projections() -> Vec<Box<dyn Projection>> {
    vec![
        Box::new(Orgs),
        Box::new(Apps),
        Box::new(Envs),
        Box::new(Releases),
        Box::new(Deploys),
        Box::new(Scales),
        Box::new(Instances),
        Box::new(Nodes),
        Box::new(Routes),
        Box::new(Tokens),
        Box::new(Secrets),
        Box::new(Volumes),
        Box::new(Snapshots),
        Box::new(Workspaces),
    ]
}

fn current<T: View>(row: Option<&ViewRow>, what: &str, id: &str) -> Result<T, ProjectionError> {
    let row = row.ok_or_else(|| ProjectionError(format!("{what} for unknown {} `{id}`", T::KIND.as_str())))?;
    row.decode().map_err(|e| ProjectionError(format!("stored {} `{id}` does not decode: {e}", T::KIND.as_str())))
}

struct Orgs;
impl Projection for Orgs {
    fn name(&self) -> &'static str {
        "orgs"
    }
    fn kind(&self) -> ViewKind {
        ViewKind::Org
    }
    fn touches(&self, event: &Event) -> Vec<String> {
        match event {
            Event::OrgCreated(e) => vec![e.org_id.to_string()],
            _ => vec![],
        }
    }
    fn apply(
        &self,
        env: &Envelope,
        event: &Event,
        _id: &str,
        _current: Option<&ViewRow>,
    ) -> Result<Option<ViewRow>, ProjectionError> {
        Ok(match event {
            Event::OrgCreated(e) => Some(
                OrgView {
                    id: e.org_id,
                    name: e.name.clone(),
                    created_at: env.occurred_at,
                    updated_at: env.occurred_at,
                }
                .into_row(env.seq),
            ),
            _ => None,
        })
    }
}

struct Apps;
impl Projection for Apps {
    fn name(&self) -> &'static str {
        "apps"
    }
    fn kind(&self) -> ViewKind {
        ViewKind::App
    }
    fn touches(&self, event: &Event) -> Vec<String> {
        match event {
            Event::AppCreated(e) => vec![e.app_id.to_string()],
            _ => vec![],
        }
    }
    fn apply(
        &self,
        env: &Envelope,
        event: &Event,
        _id: &str,
        _current: Option<&ViewRow>,
    ) -> Result<Option<ViewRow>, ProjectionError> {
        Ok(match event {
            Event::AppCreated(e) => Some(
                AppView {
                    id: e.app_id,
                    org_id: e.org_id,
                    name: e.name.clone(),
                    description: e.description.clone(),
                    workspace_id: e.workspace_id,
                    created_at: env.occurred_at,
                    updated_at: env.occurred_at,
                }
                .into_row(env.seq),
            ),
            _ => None,
        })
    }
}

struct Envs;
impl Projection for Envs {
    fn name(&self) -> &'static str {
        "envs"
    }
    fn kind(&self) -> ViewKind {
        ViewKind::Env
    }
    fn touches(&self, event: &Event) -> Vec<String> {
        match event {
            Event::EnvCreated(e) => vec![e.env_id.to_string()],
            Event::DeployCreated(e) => vec![e.env_id.to_string()],
            Event::EnvReleaseReverted(e) => vec![e.env_id.to_string()],
            _ => vec![],
        }
    }
    fn apply(
        &self,
        env: &Envelope,
        event: &Event,
        id: &str,
        cur: Option<&ViewRow>,
    ) -> Result<Option<ViewRow>, ProjectionError> {
        Ok(Some(match event {
            Event::EnvCreated(e) => EnvView {
                id: e.env_id,
                org_id: e.org_id,
                app_id: e.app_id,
                name: e.name.clone(),
                desired_release_id: None,
                current_deploy_id: None,
                desired_secrets_version: None,
                created_at: env.occurred_at,
                updated_at: env.occurred_at,
            }
            .into_row(env.seq),
            Event::DeployCreated(e) => {
                let mut v: EnvView = current(cur, "deploy", id)?;
                v.desired_release_id = Some(e.release_id);
                v.desired_secrets_version = e.secrets_version;
                v.current_deploy_id = Some(e.deploy_id);
                v.updated_at = env.occurred_at;
                v.into_row(env.seq)
            }
            Event::EnvReleaseReverted(e) => {
                let mut v: EnvView = current(cur, "release revert", id)?;
                v.desired_release_id = Some(e.release_id);
                v.desired_secrets_version = e.secrets_version;
                v.updated_at = env.occurred_at;
                v.into_row(env.seq)
            }
            _ => return Ok(cur.cloned()),
        }))
    }
}

struct Releases;
impl Projection for Releases {
    fn name(&self) -> &'static str {
        "releases"
    }
    fn kind(&self) -> ViewKind {
        ViewKind::Release
    }
    fn touches(&self, event: &Event) -> Vec<String> {
        match event {
            Event::ReleaseCreated(e) => vec![e.release_id.to_string()],
            _ => vec![],
        }
    }
    fn apply(
        &self,
        env: &Envelope,
        event: &Event,
        _id: &str,
        cur: Option<&ViewRow>,
    ) -> Result<Option<ViewRow>, ProjectionError> {
        Ok(match event {
            Event::ReleaseCreated(e) => Some(
                ReleaseView {
                    id: e.release_id,
                    org_id: e.org_id,
                    app_id: e.app_id,
                    image_ref: e.image_ref.clone(),
                    image_digest: e.image_digest.clone(),
                    resolved_from: e.resolved_from.clone(),
                    manifest_hash: e.manifest_hash.clone(),
                    manifest: e.manifest.clone(),
                    created_at: env.occurred_at,
                }
                .into_row(env.seq),
            ),
            _ => cur.cloned(),
        })
    }
}

struct Deploys;
impl Projection for Deploys {
    fn name(&self) -> &'static str {
        "deploys"
    }
    fn kind(&self) -> ViewKind {
        ViewKind::Deploy
    }
    fn touches(&self, event: &Event) -> Vec<String> {
        match event {
            Event::DeployCreated(e) => vec![e.deploy_id.to_string()],
            Event::DeployStatusChanged(e) => vec![e.deploy_id.to_string()],
            Event::DeployPhaseReached(e) => vec![e.deploy_id.to_string()],
            Event::EnvReleaseReverted(e) => vec![e.deploy_id.to_string()],
            _ => vec![],
        }
    }
    fn apply(
        &self,
        env: &Envelope,
        event: &Event,
        id: &str,
        cur: Option<&ViewRow>,
    ) -> Result<Option<ViewRow>, ProjectionError> {
        Ok(Some(match event {
            Event::DeployCreated(e) => DeployView {
                id: e.deploy_id,
                org_id: e.org_id,
                app_id: e.app_id,
                env_id: e.env_id,
                release_id: e.release_id,
                previous_release_id: e.previous_release_id,
                secrets_version: e.secrets_version,
                previous_secrets_version: e.previous_secrets_version,
                kind: e.kind,
                status: DeployStatus::Pending,
                reason: None,
                phases: vec![],
                failed_instance_id: None,
                reverted_to_release_id: None,
                created_at: env.occurred_at,
                updated_at: env.occurred_at,
            }
            .into_row(env.seq),
            Event::DeployStatusChanged(e) => {
                let mut v: DeployView = current(cur, "status change", id)?;
                v.status = e.status;
                v.reason = e.reason.clone();
                if e.failed_instance_id.is_some() {
                    v.failed_instance_id = e.failed_instance_id;
                }
                v.updated_at = env.occurred_at;
                v.into_row(env.seq)
            }
            Event::DeployPhaseReached(e) => {
                let mut v: DeployView = current(cur, "phase", id)?;
                if v.phase(e.phase).is_none() {
                    let after_ms = u64::try_from((env.occurred_at - v.created_at).num_milliseconds()).unwrap_or(0);
                    v.phases.push(PhaseTiming { phase: e.phase, at: env.occurred_at, after_ms });
                    v.phases.sort_by_key(|p| p.phase);
                }
                v.updated_at = env.occurred_at;
                v.into_row(env.seq)
            }
            Event::EnvReleaseReverted(e) => {
                let mut v: DeployView = current(cur, "release revert", id)?;
                v.reverted_to_release_id = Some(e.release_id);
                v.updated_at = env.occurred_at;
                v.into_row(env.seq)
            }
            _ => return Ok(cur.cloned()),
        }))
    }
}

struct Scales;
impl Projection for Scales {
    fn name(&self) -> &'static str {
        "scales"
    }
    fn kind(&self) -> ViewKind {
        ViewKind::Scale
    }
    fn touches(&self, event: &Event) -> Vec<String> {
        match event {
            Event::ScaleSet(e) => vec![ScaleView::key(&e.env_id, &e.process)],
            _ => vec![],
        }
    }
    fn apply(
        &self,
        env: &Envelope,
        event: &Event,
        _id: &str,
        cur: Option<&ViewRow>,
    ) -> Result<Option<ViewRow>, ProjectionError> {
        Ok(match event {
            Event::ScaleSet(e) => Some(
                ScaleView {
                    org_id: e.org_id,
                    app_id: e.app_id,
                    env_id: e.env_id,
                    process: e.process.clone(),
                    instances: e.instances,
                    updated_at: env.occurred_at,
                }
                .into_row(env.seq),
            ),
            _ => cur.cloned(),
        })
    }
}

struct Instances;
impl Projection for Instances {
    fn name(&self) -> &'static str {
        "instances"
    }
    fn kind(&self) -> ViewKind {
        ViewKind::Instance
    }
    fn touches(&self, event: &Event) -> Vec<String> {
        match event {
            Event::InstanceAllocated(e) => vec![e.instance_id.to_string()],
            Event::InstanceDesiredStateChanged(e) => vec![e.instance_id.to_string()],
            Event::InstanceStatusReported(e) => vec![e.instance_id.to_string()],
            _ => vec![],
        }
    }
    fn apply(
        &self,
        env: &Envelope,
        event: &Event,
        id: &str,
        cur: Option<&ViewRow>,
    ) -> Result<Option<ViewRow>, ProjectionError> {
        Ok(Some(match event {
            Event::InstanceAllocated(e) => InstanceView::allocated(e, env.occurred_at).into_row(env.seq),
            Event::InstanceDesiredStateChanged(e) => {
                let mut v: InstanceView = current(cur, "desired state change", id)?;
                v.desired_state = e.desired;
                if e.reason.is_some() {
                    v.reason = e.reason.clone();
                }
                v.updated_at = env.occurred_at;
                v.into_row(env.seq)
            }
            Event::InstanceStatusReported(e) => {
                let mut v: InstanceView = current(cur, "status report", id)?;
                v.apply_report(e, env.occurred_at);
                v.into_row(env.seq)
            }
            _ => return Ok(cur.cloned()),
        }))
    }
}

struct Nodes;
impl Projection for Nodes {
    fn name(&self) -> &'static str {
        "nodes"
    }
    fn kind(&self) -> ViewKind {
        ViewKind::Node
    }
    fn touches(&self, event: &Event) -> Vec<String> {
        match event {
            Event::NodeRegistered(e) => vec![e.node_id.to_string()],
            Event::NodeCapacityChanged(e) => vec![e.node_id.to_string()],
            Event::NodeStatusChanged(e) => vec![e.node_id.to_string()],
            Event::NodeSubnetAssigned(e) => vec![e.node_id.to_string()],
            Event::NodeIpv4RangeAssigned(e) => vec![e.node_id.to_string()],
            Event::NodeEndpointChanged(e) => vec![e.node_id.to_string()],
            _ => vec![],
        }
    }
    fn apply(
        &self,
        env: &Envelope,
        event: &Event,
        id: &str,
        cur: Option<&ViewRow>,
    ) -> Result<Option<ViewRow>, ProjectionError> {
        Ok(Some(match event {
            Event::NodeRegistered(e) => NodeView {
                id: e.node_id,
                name: e.name.clone(),
                status: NodeStatus::Ready,
                status_reason: None,
                capacity: e.capacity,
                allocatable: e.allocatable,
                labels: e.labels.clone(),
                address: e.address.clone(),
                subnet: None,
                ipv4_range: None,
                wireguard_public_key: e.wireguard_public_key.clone(),
                wireguard_port: e.wireguard_port,
                runs_instances: e.runs_instances,
                registered_at: env.occurred_at,
                updated_at: env.occurred_at,
            }
            .into_row(env.seq),
            Event::NodeCapacityChanged(e) => {
                let mut v: NodeView = current(cur, "capacity change", id)?;
                v.capacity = e.capacity;
                v.allocatable = e.allocatable;
                v.updated_at = env.occurred_at;
                v.into_row(env.seq)
            }
            Event::NodeStatusChanged(e) => {
                let mut v: NodeView = current(cur, "status change", id)?;
                v.status = e.status;
                v.status_reason = e.reason.clone();
                v.updated_at = env.occurred_at;
                v.into_row(env.seq)
            }
            Event::NodeSubnetAssigned(e) => {
                let mut v: NodeView = current(cur, "subnet assignment", id)?;
                v.subnet = Some(e.subnet.clone());
                v.updated_at = env.occurred_at;
                v.into_row(env.seq)
            }
            Event::NodeIpv4RangeAssigned(e) => {
                let mut v: NodeView = current(cur, "IPv4 range assignment", id)?;
                v.ipv4_range = Some(e.range.clone());
                v.updated_at = env.occurred_at;
                v.into_row(env.seq)
            }
            Event::NodeEndpointChanged(e) => {
                let mut v: NodeView = current(cur, "endpoint change", id)?;
                v.address = e.address.clone();
                v.wireguard_port = e.wireguard_port;
                v.updated_at = env.occurred_at;
                v.into_row(env.seq)
            }
            _ => return Ok(cur.cloned()),
        }))
    }
}

struct Routes;
impl Projection for Routes {
    fn name(&self) -> &'static str {
        "routes"
    }
    fn kind(&self) -> ViewKind {
        ViewKind::Route
    }
    fn touches(&self, event: &Event) -> Vec<String> {
        match event {
            Event::RouteCreated(e) => vec![e.route_id.to_string()],
            Event::RouteDeleted(e) => vec![e.route_id.to_string()],
            Event::RouteListenerChanged(e) => vec![e.route_id.to_string()],
            _ => vec![],
        }
    }
    fn apply(
        &self,
        env: &Envelope,
        event: &Event,
        id: &str,
        cur: Option<&ViewRow>,
    ) -> Result<Option<ViewRow>, ProjectionError> {
        Ok(match event {
            Event::RouteCreated(e) => Some(
                RouteView {
                    id: e.route_id,
                    org_id: e.org_id,
                    app_id: e.app_id,
                    env_id: e.env_id,
                    protocol: e.protocol,
                    hostname: e.hostname.clone(),
                    port: e.port,
                    process: e.process.clone(),
                    backend_port: e.backend_port,
                    proxy_protocol: e.proxy_protocol,
                    created_at: env.occurred_at,
                    listeners: vec![],
                }
                .into_row(env.seq),
            ),
            Event::RouteDeleted(_) => None,
            // A report can race the route's deletion: it then changes nothing.
            Event::RouteListenerChanged(_) if cur.is_none() => None,
            Event::RouteListenerChanged(e) => {
                let mut v: RouteView = current(cur, "listener report", id)?;
                let listener = RouteListener {
                    node: e.node.clone(),
                    state: e.state,
                    reason: e.reason.clone(),
                    since: env.occurred_at,
                };
                match v.listeners.iter_mut().find(|l| l.node == e.node) {
                    Some(l) => *l = listener,
                    None => v.listeners.push(listener),
                }
                v.listeners.sort_by(|a, b| a.node.cmp(&b.node));
                Some(v.into_row(env.seq))
            }
            _ => cur.cloned(),
        })
    }
}

struct Volumes;
impl Projection for Volumes {
    fn name(&self) -> &'static str {
        "volumes"
    }
    fn kind(&self) -> ViewKind {
        ViewKind::Volume
    }
    fn touches(&self, event: &Event) -> Vec<String> {
        match event {
            Event::VolumeCreated(e) => vec![e.volume_id.to_string()],
            Event::VolumeExtended(e) => vec![e.volume_id.to_string()],
            Event::VolumeAttached(e) => vec![e.volume_id.to_string()],
            Event::VolumeDetached(e) => vec![e.volume_id.to_string()],
            Event::VolumeDeleted(e) => vec![e.volume_id.to_string()],
            Event::BackupRequested(e) => vec![e.volume_id.to_string()],
            Event::BackupReported(e) => vec![e.volume_id.to_string()],
            _ => vec![],
        }
    }
    fn apply(
        &self,
        env: &Envelope,
        event: &Event,
        id: &str,
        cur: Option<&ViewRow>,
    ) -> Result<Option<ViewRow>, ProjectionError> {
        let mut v: VolumeView = match event {
            Event::VolumeCreated(e) => {
                return Ok(Some(
                    VolumeView {
                        id: e.volume_id,
                        org_id: e.org_id,
                        app_id: e.app_id,
                        env_id: e.env_id,
                        name: e.name.clone(),
                        size_gib: e.size_gib,
                        node_id: e.node_id,
                        attached_to: None,
                        from_snapshot: e.from_snapshot,
                        from_backup: e.from_backup.clone(),
                        backups: VolumeBackups::default(),
                        created_at: env.occurred_at,
                        updated_at: env.occurred_at,
                    }
                    .into_row(env.seq),
                ))
            }
            Event::VolumeDeleted(_) => return Ok(None),
            // A backup report can race the volume's deletion: it then changes nothing.
            Event::BackupReported(_) if cur.is_none() => return Ok(None),
            Event::VolumeExtended(_)
            | Event::VolumeAttached(_)
            | Event::VolumeDetached(_)
            | Event::BackupRequested(_)
            | Event::BackupReported(_) => current(cur, event.event_type(), id)?,
            _ => return Ok(cur.cloned()),
        };
        match event {
            Event::VolumeExtended(e) => v.size_gib = e.size_gib,
            Event::VolumeAttached(e) => v.attached_to = Some(e.instance_id),
            Event::VolumeDetached(e) if v.attached_to == Some(e.instance_id) => v.attached_to = None,
            Event::BackupRequested(e) => {
                v.backups.pending = Some(PendingBackup {
                    id: e.backup_id,
                    org: e.org.clone(),
                    app: e.app.clone(),
                    env: e.env.clone(),
                    requested_at: env.occurred_at,
                })
            }
            Event::BackupReported(e) => {
                let b = &mut v.backups;
                if b.pending.as_ref().is_some_and(|p| p.id == e.backup_id) {
                    b.pending = None;
                }
                if e.status == SnapshotStatus::Completed {
                    b.last_success_at = Some(env.occurred_at);
                    b.last_success_id = e.restic_id.clone();
                    b.last_bytes_added = e.bytes_added;
                    b.last_bytes_processed = e.bytes_processed;
                    b.last_took_ms = e.took_ms;
                    b.last_error = None;
                    b.last_error_at = None;
                } else {
                    b.last_error = e.reason.clone();
                    b.last_error_at = Some(env.occurred_at);
                }
            }
            _ => {}
        }
        v.updated_at = env.occurred_at;
        Ok(Some(v.into_row(env.seq)))
    }
}

struct Snapshots;
impl Projection for Snapshots {
    fn name(&self) -> &'static str {
        "snapshots"
    }
    fn kind(&self) -> ViewKind {
        ViewKind::Snapshot
    }
    fn touches(&self, event: &Event) -> Vec<String> {
        match event {
            Event::SnapshotCreated(e) => vec![e.snapshot_id.to_string()],
            Event::SnapshotReported(e) => vec![e.snapshot_id.to_string()],
            _ => vec![],
        }
    }
    fn apply(
        &self,
        env: &Envelope,
        event: &Event,
        id: &str,
        cur: Option<&ViewRow>,
    ) -> Result<Option<ViewRow>, ProjectionError> {
        Ok(Some(match event {
            Event::SnapshotCreated(e) => SnapshotView {
                id: e.snapshot_id,
                org_id: e.org_id,
                app_id: e.app_id,
                env_id: e.env_id,
                volume_id: e.volume_id,
                volume_name: e.volume_name.clone(),
                size_gib: e.size_gib,
                node_id: e.node_id,
                status: SnapshotStatus::Pending,
                bytes: None,
                took_ms: None,
                paused_ms: None,
                reason: None,
                created_at: env.occurred_at,
                completed_at: None,
            }
            .into_row(env.seq),
            Event::SnapshotReported(e) => {
                let mut v: SnapshotView = current(cur, "snapshot report", id)?;
                v.status = e.status;
                v.bytes = e.bytes;
                v.took_ms = e.took_ms;
                v.paused_ms = e.paused_ms;
                v.reason = e.reason.clone();
                v.completed_at = Some(env.occurred_at);
                v.into_row(env.seq)
            }
            _ => return Ok(cur.cloned()),
        }))
    }
}

/// Replays events into rows in memory: the reference the stores are tested against,
/// and what a projection batch does before it writes.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct MemoryViews {
    pub rows: BTreeMap<(ViewKind, String), ViewRow>,
}

impl MemoryViews {
    pub fn apply(&mut self, envelope: &Envelope) -> Result<(), ProjectionError> {
        let event = envelope
            .decode()
            .map_err(|e| ProjectionError(format!("event {} (seq {}): {e}", envelope.event_id, envelope.seq)))?;
        for p in projections() {
            for id in p.touches(&event) {
                let key = (p.kind(), id);
                let new = p.apply(envelope, &event, &key.1, self.rows.get(&key))?;
                match new {
                    Some(row) => self.rows.insert(key, row),
                    None => self.rows.remove(&key),
                };
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;

struct Tokens;
impl Projection for Tokens {
    fn name(&self) -> &'static str {
        "tokens"
    }
    fn kind(&self) -> ViewKind {
        ViewKind::Token
    }
    fn touches(&self, event: &Event) -> Vec<String> {
        match event {
            Event::TokenCreated(e) => vec![e.token_id.to_string()],
            Event::TokenRevoked(e) => vec![e.token_id.to_string()],
            _ => vec![],
        }
    }
    fn apply(
        &self,
        env: &Envelope,
        event: &Event,
        id: &str,
        cur: Option<&ViewRow>,
    ) -> Result<Option<ViewRow>, ProjectionError> {
        Ok(Some(match event {
            Event::TokenCreated(e) => TokenView::created(e, env.occurred_at, &env.actor).into_row(env.seq),
            Event::TokenRevoked(_) => {
                let mut v: TokenView = current(cur, "revocation", id)?;
                if v.revoked_at.is_none() {
                    v.revoked_at = Some(env.occurred_at);
                    v.revoked_by = Some(env.actor.clone());
                }
                v.into_row(env.seq)
            }
            _ => return Ok(cur.cloned()),
        }))
    }
}

struct Secrets;
impl Projection for Secrets {
    fn name(&self) -> &'static str {
        "secrets"
    }
    fn kind(&self) -> ViewKind {
        ViewKind::Secrets
    }
    fn touches(&self, event: &Event) -> Vec<String> {
        match event {
            Event::SecretsStaged(e) => vec![e.env_id.to_string()],
            Event::SecretsVersionCreated(e) => vec![e.env_id.to_string()],
            _ => vec![],
        }
    }
    fn apply(
        &self,
        env: &Envelope,
        event: &Event,
        _id: &str,
        cur: Option<&ViewRow>,
    ) -> Result<Option<ViewRow>, ProjectionError> {
        let decode = |row: &ViewRow| -> Result<SecretsView, ProjectionError> {
            row.decode().map_err(|e| ProjectionError(format!("stored secrets of {} do not decode: {e}", row.id)))
        };
        let (org_id, app_id, env_id) = match event {
            Event::SecretsStaged(e) => (e.org_id, e.app_id, e.env_id),
            Event::SecretsVersionCreated(e) => (e.org_id, e.app_id, e.env_id),
            _ => return Ok(cur.cloned()),
        };
        let mut v = match cur {
            Some(row) => decode(row)?,
            None => SecretsView::empty(org_id, app_id, env_id, env.occurred_at),
        };
        match event {
            Event::SecretsStaged(e) => v.apply_staged(e, env.occurred_at, &env.actor),
            Event::SecretsVersionCreated(e) => v.apply_version(e, env.occurred_at, &env.actor),
            _ => {}
        }
        Ok(Some(v.into_row(env.seq)))
    }
}

struct Workspaces;
impl Projection for Workspaces {
    fn name(&self) -> &'static str {
        "workspaces"
    }
    fn kind(&self) -> ViewKind {
        ViewKind::Workspace
    }
    fn touches(&self, event: &Event) -> Vec<String> {
        match event {
            Event::WorkspaceCreated(e) => vec![e.workspace_id.to_string()],
            Event::WorkspaceDesiredStateChanged(e) => vec![e.workspace_id.to_string()],
            Event::WorkspaceFailed(e) => vec![e.workspace_id.to_string()],
            Event::WorkspacePortAdded(e) => vec![e.workspace_id.to_string()],
            Event::WorkspacePortRemoved(e) => vec![e.workspace_id.to_string()],
            Event::WorkspaceAccessed(e) => vec![e.workspace_id.to_string()],
            Event::WorkspaceDeleted(e) => vec![e.workspace_id.to_string()],
            _ => vec![],
        }
    }
    fn apply(
        &self,
        env: &Envelope,
        event: &Event,
        id: &str,
        cur: Option<&ViewRow>,
    ) -> Result<Option<ViewRow>, ProjectionError> {
        let mut w: WorkspaceView = match event {
            Event::WorkspaceCreated(e) => {
                return Ok(Some(WorkspaceView::created(e, env.occurred_at).into_row(env.seq)))
            }
            Event::WorkspaceDeleted(_) => return Ok(None),
            // An access can race the workspace's deletion: it then changes nothing.
            Event::WorkspaceAccessed(_) if cur.is_none() => return Ok(None),
            Event::WorkspaceDesiredStateChanged(_)
            | Event::WorkspaceFailed(_)
            | Event::WorkspacePortAdded(_)
            | Event::WorkspacePortRemoved(_)
            | Event::WorkspaceAccessed(_) => current(cur, event.event_type(), id)?,
            _ => return Ok(cur.cloned()),
        };
        w.apply(event, env.occurred_at);
        Ok(Some(w.into_row(env.seq)))
    }
}
