//! The resources as the API shows them.
//!
//! These are wire types, defined here and nowhere else: the control plane maps
//! its stored views onto them (`vt-control-plane/src/wire.rs`), so a stored
//! document can change shape without changing the API, and the API cannot
//! leak a field by accident. Field order is output order.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use vt_events::{
    BootTimings, Capacity, DeployKind, DeployPhase, DeployStatus, DesiredState, Health, InstanceStatus, NodeStatus,
    Resources, RouteListener, RouteProtocol, SnapshotStatus, TokenRole, VolumeAttachment, VolumeBackups,
};
use vt_ids::{AppId, DeployId, EnvId, InstanceId, NodeId, OrgId, ReleaseId, RouteId, SnapshotId, TokenId, VolumeId};

/// An org: the tenant. Everything else belongs to one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Org {
    pub id: OrgId,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct App {
    pub id: AppId,
    pub org_id: OrgId,
    pub name: String,
    pub description: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Env {
    pub id: EnvId,
    pub org_id: OrgId,
    pub app_id: AppId,
    pub name: String,
    /// The release this env should run (set by the latest deploy or rollback).
    pub desired_release_id: Option<ReleaseId>,
    /// The deploy that set it.
    pub current_deploy_id: Option<DeployId>,
    /// The secrets version this env should run.
    pub desired_secrets_version: Option<u64>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// An image pinned by digest plus a manifest; immutable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Release {
    pub id: ReleaseId,
    pub org_id: OrgId,
    pub app_id: AppId,
    /// `repository@sha256:...`: what nodes pull. Never a tag.
    pub image_ref: String,
    /// The manifest nodes run (an index's linux/amd64 manifest when `image_ref` is an index).
    pub image_digest: String,
    /// The tag the user gave, when the image was given by tag.
    pub resolved_from: Option<String>,
    pub manifest_hash: String,
    /// The normalized manifest.
    #[schema(value_type = Object)]
    pub manifest: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Deploy {
    pub id: DeployId,
    pub org_id: OrgId,
    pub app_id: AppId,
    pub env_id: EnvId,
    pub release_id: ReleaseId,
    pub previous_release_id: Option<ReleaseId>,
    /// The secrets version its instances run.
    pub secrets_version: Option<u64>,
    pub previous_secrets_version: Option<u64>,
    pub kind: DeployKind,
    pub status: DeployStatus,
    pub reason: Option<String>,
    /// The phases reached so far, in order; `created_at` is when it was accepted.
    pub phases: Vec<PhaseTiming>,
    /// When `failed`: the new-release instance whose failure failed it.
    pub failed_instance_id: Option<InstanceId>,
    /// When `failed`: the release its env went back to.
    pub reverted_to_release_id: Option<ReleaseId>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Deploy {
    pub fn phase(&self, phase: DeployPhase) -> Option<&PhaseTiming> {
        self.phases.iter().find(|p| p.phase == phase)
    }
}

/// When a deploy reached a phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PhaseTiming {
    pub phase: DeployPhase,
    pub at: DateTime<Utc>,
    /// Milliseconds since the deploy was accepted.
    pub after_ms: u64,
}

/// The desired instance count of one process type of an env.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Scale {
    pub org_id: OrgId,
    pub app_id: AppId,
    pub env_id: EnvId,
    pub process: String,
    pub instances: u32,
    pub updated_at: DateTime<Utc>,
}

/// One instance (one microVM) of a process type: desired and current state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Instance {
    pub id: InstanceId,
    pub org_id: OrgId,
    pub app_id: AppId,
    pub env_id: EnvId,
    pub process: String,
    pub release_id: ReleaseId,
    pub deploy_id: Option<DeployId>,
    pub node_id: NodeId,
    pub resources: Resources,
    /// The env's secrets version it got at boot.
    pub secrets_version: Option<u64>,
    /// What the control plane wants.
    pub desired_state: DesiredState,
    /// What the node last reported.
    pub status: InstanceStatus,
    /// Why it is in this status, in words a user can act on.
    pub reason: Option<String>,
    pub exit_code: Option<i32>,
    /// Where the instance is reachable (an IP address), as its node last reported.
    pub address: Option<String>,
    /// The health check's verdict while running (`None`: not reported yet).
    pub health: Option<Health>,
    /// Per-phase boot timings, once running.
    pub boot: Option<BootTimings>,
    /// When it first became ready (running, meant to run, passing).
    pub ready_at: Option<DateTime<Utc>>,
    /// How it failed while meant to run, once it did.
    pub failure: Option<InstanceFailure>,
    /// The volumes it mounts: per volume name of its process, the volume attached to it.
    #[serde(default)]
    pub volumes: Vec<VolumeAttachment>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// How an instance that was meant to run failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// Reported `failed`: the entrypoint exited non-zero, or the node could not start or keep it.
    Failed,
    /// Reported `stopped` without being asked to stop (the entrypoint exited 0).
    Exited,
    /// Reported `running` with its health check `failing`.
    Unhealthy,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct InstanceFailure {
    pub kind: FailureKind,
    pub at: DateTime<Utc>,
    pub exit_code: Option<i32>,
    /// The node's reason, as reported.
    pub reason: Option<String>,
}

/// A node (a host running the agent) with its liveness.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Node {
    pub id: NodeId,
    pub name: String,
    pub status: NodeStatus,
    pub status_reason: Option<String>,
    pub capacity: Capacity,
    pub allocatable: Capacity,
    pub labels: BTreeMap<String, String>,
    pub address: Option<String>,
    /// The node's IPv6 /64; its instances' addresses come from it.
    pub subnet: Option<String>,
    /// The node's IPv4 range; its instances' private IPv4 addresses (egress only, through NAT) come from it.
    pub ipv4_range: Option<String>,
    /// Its WireGuard public key (base64), when it registered one.
    pub wireguard_public_key: Option<String>,
    /// The UDP port of its WireGuard interface (at `address`), when it registered one.
    pub wireguard_port: Option<u16>,
    /// Whether the scheduler places instances on it: `false` for an edge-only node (`vt server
    /// --role edge --join`), which serves routes and is in the mesh but runs no VM.
    #[serde(default = "vt_events::yes")]
    pub runs_instances: bool,
    pub registered_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_heartbeat_at: Option<DateTime<Utc>>,
    /// Its disk as its agent last reported it with a heartbeat (current state, not an event);
    /// absent until it has (an edge-only node, an older agent).
    #[serde(default)]
    pub disk: Option<crate::DiskReport>,
    /// When `disk` was reported.
    #[serde(default)]
    pub disk_reported_at: Option<DateTime<Utc>>,
}

/// An ingress route: a listener port (and host name, for TLS) to a process type's port.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Route {
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
    /// Each node's ingress listener for the route, by node name, as last reported: `listening`,
    /// or `failed` with the reason (the port is held by another process, say; the ingress
    /// retries it). Empty until an ingress has reported.
    pub listeners: Vec<RouteListener>,
    /// Only in the answer that creates it: why the route was accepted as it is (say, created
    /// before the env has a release, so its process and port could not be checked yet).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// An API token, without its secret (that exists only in the answer that created it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Token {
    pub id: TokenId,
    pub name: String,
    pub role: TokenRole,
    /// The org of an org role (`owner`, `deployer`, `viewer`).
    pub org_id: Option<OrgId>,
    /// The node a `node` token is bound to, and its name.
    pub node_id: Option<NodeId>,
    pub node_name: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
    /// The labels an `enroll` token gives the node it enrolls.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// `active`, `expired` or `revoked`, at the time of the answer.
    pub state: TokenState,
    pub created_at: DateTime<Utc>,
    /// Who created it: `token:<id>` or `system:bootstrap`.
    pub created_by: String,
    pub revoked_at: Option<DateTime<Utc>>,
    pub revoked_by: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TokenState {
    Active,
    Expired,
    Revoked,
}

impl TokenState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Expired => "expired",
            Self::Revoked => "revoked",
        }
    }
}

/// The answer of `POST /v1/tokens`: the token and, this once, its secret.
#[derive(Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct IssuedToken {
    #[serde(flatten)]
    pub token: Token,
    /// `vt_<64 hex>`. Shown once; only its hash is stored.
    pub secret: String,
}

/// Never prints the secret.
impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedToken").field("token", &self.token).field("secret", &"<redacted>").finish()
    }
}

/// A volume of an env: a local ext4 disk on one node. Several volumes may share a name; each
/// instance of a process that mounts the name takes one free volume of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Volume {
    pub id: VolumeId,
    pub org_id: OrgId,
    pub app_id: AppId,
    pub env_id: EnvId,
    pub name: String,
    pub size_gib: u32,
    /// The node that holds it; instances that mount it run there.
    pub node_id: NodeId,
    /// That node's name.
    pub node: String,
    /// The instance that has it (from its allocation until it ends), if any.
    pub attached_to: Option<InstanceId>,
    /// The snapshot it was restored from.
    pub from_snapshot: Option<SnapshotId>,
    /// The backup (restic snapshot id) it was restored from.
    pub from_backup: Option<String>,
    /// Its backups: the one running, the last success (when, what it added) and the last failure.
    pub backups: VolumeBackups,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A backup of a volume in the server's backup repository (a restic snapshot), found by the
/// org, app, env and volume names it is tagged with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Backup {
    /// The restic snapshot id (64 hex digits; a unique prefix of 8 or more names it).
    pub id: String,
    pub time: String,
    pub volume: String,
    /// The id of the volume it was taken of (in the control plane that took it).
    pub volume_id: String,
    pub size_gib: u32,
    /// The node it was taken on.
    pub node: String,
}

/// A crash-consistent copy of a volume, kept on the volume's node (also after the volume is
/// deleted); restored as a new volume on that node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Snapshot {
    pub id: SnapshotId,
    pub org_id: OrgId,
    pub app_id: AppId,
    pub env_id: EnvId,
    pub volume_id: VolumeId,
    /// The volume's name and size when the snapshot was taken.
    pub volume_name: String,
    pub size_gib: u32,
    pub node_id: NodeId,
    /// That node's name.
    pub node: String,
    pub status: SnapshotStatus,
    /// Bytes the copy occupies on the node.
    pub bytes: Option<u64>,
    /// How long the copy took, and how long the VM that had the volume was paused for it.
    pub took_ms: Option<u64>,
    pub paused_ms: Option<u64>,
    /// Why it failed.
    pub reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
}
