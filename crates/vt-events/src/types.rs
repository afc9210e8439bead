//! Payload structs and the small value types they share.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::*;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrgCreated {
    pub org_id: OrgId,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppCreated {
    pub org_id: OrgId,
    pub app_id: AppId,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// The workspace this app carries (its one env runs the workspace's IDE): such an app
    /// is not listed with the org's apps and has no name of its own in the org.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_id: Option<WorkspaceId>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvCreated {
    pub org_id: OrgId,
    pub app_id: AppId,
    pub env_id: EnvId,
    pub name: String,
}

/// The desired number of instances of one process type in one env.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScaleSet {
    pub org_id: OrgId,
    pub app_id: AppId,
    pub env_id: EnvId,
    pub process: String,
    pub instances: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseCreated {
    pub org_id: OrgId,
    pub app_id: AppId,
    pub release_id: ReleaseId,
    /// `repository@sha256:...`: what nodes pull. Never a tag.
    pub image_ref: String,
    pub image_digest: String,
    /// The tag the user gave, if any, recorded as the resolution's input.
    #[serde(default)]
    pub resolved_from: Option<String>,
    /// `sha256:...` of the normalized manifest JSON.
    pub manifest_hash: String,
    /// The normalized manifest.
    pub manifest: serde_json::Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeployKind {
    Deploy,
    Rollback,
    /// The same release with a new secrets version: a rolling restart.
    Secrets,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployCreated {
    pub org_id: OrgId,
    pub app_id: AppId,
    pub env_id: EnvId,
    pub deploy_id: DeployId,
    pub release_id: ReleaseId,
    #[serde(default)]
    pub previous_release_id: Option<ReleaseId>,
    pub kind: DeployKind,
    /// The env's secrets version the deploy's instances run (`None`: the env has no secrets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets_version: Option<u64>,
    /// The secrets version before it (what a failed deploy goes back to).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_secrets_version: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeployStatus {
    /// Accepted; nothing scheduled yet.
    Pending,
    /// New instances are being started and old ones stopped.
    Rolling,
    Succeeded,
    Failed,
    /// A newer deploy to the same env took over before this one finished.
    Superseded,
}

impl DeployStatus {
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Superseded)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployStatusChanged {
    pub org_id: OrgId,
    pub env_id: EnvId,
    pub deploy_id: DeployId,
    pub status: DeployStatus,
    #[serde(default)]
    pub reason: Option<String>,
    /// With `failed`: the new-release instance whose failure failed the
    /// deploy (its logs say why).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_instance_id: Option<InstanceId>,
}

/// A point of a deploy's progress, each reached once and in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeployPhase {
    /// Every desired instance of the release is allocated to a node.
    Scheduled,
    /// Every one of them is booting or later: its image is on its node.
    ImageReady,
    /// Every one of them runs its entrypoint.
    Booted,
    /// Every one of them passes its health check (or has none).
    Healthy,
}

impl DeployPhase {
    pub const ALL: [DeployPhase; 4] = [Self::Scheduled, Self::ImageReady, Self::Booted, Self::Healthy];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::ImageReady => "image_ready",
            Self::Booted => "booted",
            Self::Healthy => "healthy",
        }
    }
}

/// The scheduler observed a deploy reach a phase; the event's time is when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployPhaseReached {
    pub org_id: OrgId,
    pub env_id: EnvId,
    pub deploy_id: DeployId,
    pub phase: DeployPhase,
}

/// A deploy failed and its env goes back to the release it ran before: the
/// env's desired release is `release_id` again. The failed deploy stays the
/// env's current deploy, so `vt describe` can say why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvReleaseReverted {
    pub org_id: OrgId,
    pub env_id: EnvId,
    /// The failed deploy.
    pub deploy_id: DeployId,
    /// The release the env runs again (the failed deploy's previous release).
    pub release_id: ReleaseId,
    /// The failed deploy's release.
    pub from_release_id: ReleaseId,
    pub reason: String,
    /// The secrets version the env runs again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets_version: Option<u64>,
}

/// Secrets were staged for the env's next secrets version: names only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretsStaged {
    pub org_id: OrgId,
    pub app_id: AppId,
    pub env_id: EnvId,
    /// Names given a (new) value.
    pub set: Vec<String>,
    /// Names to remove.
    pub unset: Vec<String>,
}

/// A new secrets version of the env: names only; the values are sealed in the store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretsVersionCreated {
    pub org_id: OrgId,
    pub app_id: AppId,
    pub env_id: EnvId,
    /// 1 for the env's first version, then one more each time.
    pub version: u64,
    /// Every secret of the version.
    pub names: Vec<String>,
    /// Names set (or set again) by this version.
    pub set: Vec<String>,
    /// Names removed by this version.
    pub unset: Vec<String>,
    /// The version applies what was staged (and clears it).
    pub from_staged: bool,
}

/// Resources of one instance: CPU is a soft share, memory a hard cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// Requested CPU in thousandths of a vCPU.
    pub cpu_millis: u32,
    /// Memory cap in MiB; the guest never gets more.
    pub memory_mib: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceAllocated {
    pub org_id: OrgId,
    pub app_id: AppId,
    pub env_id: EnvId,
    pub instance_id: InstanceId,
    pub process: String,
    pub release_id: ReleaseId,
    #[serde(default)]
    pub deploy_id: Option<DeployId>,
    pub node_id: NodeId,
    pub resources: Resources,
    /// The env's secrets version the instance gets at boot (`None`: no secrets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets_version: Option<u64>,
    /// The volumes it mounts, one per volume name of its process, each on its node and attached
    /// to it alone (`volume.attached` in the same append).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeAttachment>,
}

/// A volume an instance mounts: the manifest's volume name and the volume that serves it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeAttachment {
    pub name: String,
    pub volume_id: VolumeId,
}

/// What the control plane wants an instance to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DesiredState {
    Running,
    Stopped,
    /// Saved to a snapshot on its node and its VMM ended (`scaling.suspend`, a suspended
    /// workspace); `running` again resumes it there.
    Suspended,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceDesiredStateChanged {
    pub org_id: OrgId,
    pub env_id: EnvId,
    pub instance_id: InstanceId,
    pub desired: DesiredState,
    #[serde(default)]
    pub reason: Option<String>,
}

/// The lifecycle of an instance as the node reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InstanceStatus {
    Allocated,
    Preparing,
    Booting,
    Running,
    Stopping,
    Stopped,
    Failed,
    /// Saved to a snapshot on its node, no VMM running (resumed when desired `running`).
    Suspended,
}

impl InstanceStatus {
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Stopped | Self::Failed)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allocated => "allocated",
            Self::Preparing => "preparing",
            Self::Booting => "booting",
            Self::Running => "running",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
            Self::Failed => "failed",
            Self::Suspended => "suspended",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceStatusReported {
    pub org_id: OrgId,
    pub env_id: EnvId,
    pub instance_id: InstanceId,
    pub node_id: NodeId,
    pub status: InstanceStatus,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// Where the instance is reachable (an IP address), once the node knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// The health check's verdict while the instance runs; absent when the
    /// report says nothing about health (and in logs written before health).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
    /// Per-phase boot timings, in the report that makes the instance `running`
    /// (and again, with `healthy_ms`, when it first passes its health check).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot: Option<BootTimings>,
}

/// Whether a running instance passes its health check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Started; no check has passed yet (or the grace period still runs).
    Pending,
    /// The last check passed, or the process has no health check.
    Passing,
    /// `retries` consecutive checks failed after the grace period.
    Failing,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Passing => "passing",
            Self::Failing => "failing",
        }
    }
}

/// How long each phase of one instance's start took, in milliseconds (each at most a day: 86,400,000).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BootTimings {
    /// Start → the image's root disk is ready (pull, unpack, mkfs; or a cache hit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(maximum = 86400000)]
    pub root_disk_ms: Option<u64>,
    /// Boot start → the VMM process is spawned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(maximum = 86400000)]
    pub vmm_spawned_ms: Option<u64>,
    /// Guest kernel start → guest init start (guest clock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(maximum = 86400000)]
    pub kernel_to_init_ms: Option<u64>,
    /// Guest init start → entrypoint started (guest clock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(maximum = 86400000)]
    pub init_to_entrypoint_ms: Option<u64>,
    /// Start → the entrypoint runs, as the node saw it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(maximum = 86400000)]
    pub running_ms: Option<u64>,
    /// Start → the first passing health check (equal to `running_ms` without a check).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(maximum = 86400000)]
    pub healthy_ms: Option<u64>,
}

/// What a node has, and what of it the scheduler may hand out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Capacity {
    /// Thousandths of a vCPU: 1 to 1,000,000 (1000 vCPUs).
    #[schema(minimum = 1, maximum = 1000000)]
    pub cpu_millis: u32,
    /// MiB: 1 to 16,777,216 (16 TiB).
    #[schema(minimum = 1, maximum = 16777216)]
    pub memory_mib: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeRegistered {
    pub node_id: NodeId,
    pub name: String,
    pub capacity: Capacity,
    pub allocatable: Capacity,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub address: Option<String>,
    /// The node's WireGuard public key (base64), when it has one (an enrolled node made it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wireguard_public_key: Option<String>,
    /// The UDP port of its WireGuard interface, at `address`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wireguard_port: Option<u16>,
    /// Whether the scheduler may place instances on it: `false` for an edge-only node (`vt
    /// server --role edge --join`), which is in the mesh and serves routes but runs no VM.
    /// Absent (events recorded before it existed): `true`.
    #[serde(default = "yes", skip_serializing_if = "is_yes")]
    pub runs_instances: bool,
}

/// The default of a flag that was always on before it existed.
pub fn yes() -> bool {
    true
}

/// Whether a flag has its default ([`yes`]): left out when serialized, so old readers see
/// what they always saw.
pub fn is_yes(b: &bool) -> bool {
    *b
}

/// A node registered again from another address or WireGuard port: where its peers reach it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeEndpointChanged {
    pub node_id: NodeId,
    pub address: Option<String>,
    pub wireguard_port: Option<u16>,
}

/// The control plane gave a node its IPv6 /64 (out of the cluster's ULA /48):
/// the node's instances get their addresses from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSubnetAssigned {
    pub node_id: NodeId,
    /// `fdxx:xxxx:xxxx:yyyy::/64`.
    pub subnet: String,
}

/// The control plane gave a node its IPv4 range (out of the cluster's block):
/// its instances get their private IPv4 addresses for egress (NAT) from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeIpv4RangeAssigned {
    pub node_id: NodeId,
    /// `100.64.3.0/24`.
    pub range: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeCapacityChanged {
    pub node_id: NodeId,
    pub capacity: Capacity,
    pub allocatable: Capacity,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NodeStatus {
    Ready,
    /// Missed heartbeats; its instances are candidates for rescheduling.
    Unreachable,
    /// Takes no new instances.
    Draining,
    /// Revoked by an operator (`vt node revoke`): its tokens are dead, its instances are
    /// placed elsewhere, and it never comes back under this id.
    Revoked,
}

impl NodeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "ready",
            Self::Unreachable => "unreachable",
            Self::Draining => "draining",
            Self::Revoked => "revoked",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeStatusChanged {
    pub node_id: NodeId,
    pub status: NodeStatus,
    #[serde(default)]
    pub reason: Option<String>,
}

/// A token was issued. The secret is never in the log: only its id, name, role
/// and what the role is bound to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenCreated {
    pub token_id: TokenId,
    pub name: String,
    pub role: TokenRole,
    /// The org an org role (`owner`, `deployer`, `viewer`) acts in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_id: Option<OrgId>,
    /// The node a `node` token is bound to; the node may not be registered yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<NodeId>,
    /// That node's name: the only name the token may register the node under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// After this instant the token is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// The labels a node enrolled with an `enroll` token gets.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// A token was revoked: it is refused from the next request on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRevoked {
    pub token_id: TokenId,
    /// The token's org, for org roles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_id: Option<OrgId>,
}

/// What a token may do. `admin` is the operator; `node` is one node's agent;
/// `owner`, `deployer` and `viewer` act inside one org.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TokenRole {
    /// Everything, in every org; the nodes and the system endpoints.
    Admin,
    /// One node's agent: registers, heartbeats, follows and reports for that node only.
    Node,
    /// Everything in its org, its tokens included.
    Owner,
    /// Releases, deploys, scale, rollback and routes in its org; reads.
    Deployer,
    /// Reads, logs and events of its org.
    Viewer,
    /// Enrolls one new node, once (`vt node enroll-token create`): exchanged for that node's
    /// `node` token, then dead.
    Enroll,
}

impl TokenRole {
    pub const ALL: [TokenRole; 6] = [Self::Admin, Self::Node, Self::Owner, Self::Deployer, Self::Viewer, Self::Enroll];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Node => "node",
            Self::Owner => "owner",
            Self::Deployer => "deployer",
            Self::Viewer => "viewer",
            Self::Enroll => "enroll",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// True for the roles that act inside one org.
    pub fn is_org_role(self) -> bool {
        matches!(self, Self::Owner | Self::Deployer | Self::Viewer)
    }
}

impl std::fmt::Display for TokenRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How an ingress route is matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RouteProtocol {
    /// TLS passthrough, routed by the ClientHello's SNI host name (never terminated).
    Tls,
    /// Raw TCP, routed by listener port alone (a port allocated from the configured range).
    Tcp,
}

impl RouteProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tls => "tls",
            Self::Tcp => "tcp",
        }
    }
}

/// A route: a listener port (and, for TLS, a host name) to a process type of an env.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteCreated {
    pub org_id: OrgId,
    pub app_id: AppId,
    pub env_id: EnvId,
    pub route_id: RouteId,
    pub protocol: RouteProtocol,
    /// Lower case; required for `tls`, absent for `tcp`.
    #[serde(default)]
    pub hostname: Option<String>,
    /// The ingress listener port.
    pub port: u16,
    pub process: String,
    pub backend_port: u16,
    #[serde(default)]
    pub proxy_protocol: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteDeleted {
    pub org_id: OrgId,
    pub env_id: EnvId,
    pub route_id: RouteId,
}

/// Whether an ingress listens on a route's port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ListenerState {
    /// The port is bound; connections reach the route.
    Listening,
    /// The port could not be bound (held by another process, or privileged); the edge retries it.
    Failed,
}

impl ListenerState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Listening => "listening",
            Self::Failed => "failed",
        }
    }
}

/// What one node's ingress reports of a route's listener, when it changes
/// (not at every retry).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteListenerChanged {
    pub org_id: OrgId,
    pub env_id: EnvId,
    pub route_id: RouteId,
    /// The name of the node whose ingress reports.
    pub node: String,
    pub state: ListenerState,
    /// Why it failed (`failed` only): the bind error, e.g. "Address already in use".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A route's listener on one node, as last reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteListener {
    /// The node whose ingress reported it.
    pub node: String,
    pub state: ListenerState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When the ingress reported this state.
    pub since: DateTime<Utc>,
}

/// A `vt exec` grant was issued: who may run what in which instance. Never the grant's
/// secret, never environment values (their names only), never the session's bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceExecGranted {
    pub exec_id: ExecId,
    pub org_id: OrgId,
    pub env_id: EnvId,
    pub instance_id: InstanceId,
    /// The token that asked, and the only one that may open the session.
    pub token_id: TokenId,
    pub argv: Vec<String>,
    /// The names of the variables set (not their values).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env_names: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    pub tty: bool,
    /// After this instant the grant is refused.
    pub expires_at: DateTime<Utc>,
}

/// How an exec session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExecEnd {
    /// The command exited (`exit_code`) or was killed (`signal`).
    Exited,
    /// The client went away first; the command was hung up on.
    Disconnected,
    /// The client sent a frame that is not one; the session was closed.
    MalformedInput,
    /// The session could not be opened, or ended without an exit status (`reason`).
    Failed,
    /// The server stopped during the session.
    ServerStopped,
}

/// An exec session ended (one per session that was opened).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceExecEnded {
    pub exec_id: ExecId,
    pub org_id: OrgId,
    pub instance_id: InstanceId,
    pub end: ExecEnd,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// For people, when it did not exit (never the session's bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A volume of an env: a local ext4 disk of `size_gib` on `node_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeCreated {
    pub org_id: OrgId,
    pub app_id: AppId,
    pub env_id: EnvId,
    pub volume_id: VolumeId,
    /// The name a manifest's `[[volumes]]` mounts; several volumes may share it.
    pub name: String,
    pub size_gib: u32,
    pub node_id: NodeId,
    /// Restored from this snapshot (on the same node): its disk starts as the snapshot's copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_snapshot: Option<SnapshotId>,
    /// Restored from this backup (a restic snapshot id): its disk starts as the backup's image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_backup: Option<String>,
}

/// A volume's size grows (never shrinks); its node grows the disk before its next attach.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeExtended {
    pub org_id: OrgId,
    pub env_id: EnvId,
    pub volume_id: VolumeId,
    pub size_gib: u32,
}

/// A volume is given to an instance (the scheduler, with the instance's allocation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeAttached {
    pub org_id: OrgId,
    pub env_id: EnvId,
    pub volume_id: VolumeId,
    pub instance_id: InstanceId,
}

/// A volume is free again: the instance that had it ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeDetached {
    pub org_id: OrgId,
    pub env_id: EnvId,
    pub volume_id: VolumeId,
    pub instance_id: InstanceId,
}

/// A volume is gone (never while attached); its node removes the disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeDeleted {
    pub org_id: OrgId,
    pub env_id: EnvId,
    pub volume_id: VolumeId,
    pub node_id: NodeId,
}

/// A snapshot of a volume is asked for: its node copies the disk (docs/volumes.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotCreated {
    pub org_id: OrgId,
    pub app_id: AppId,
    pub env_id: EnvId,
    pub snapshot_id: SnapshotId,
    pub volume_id: VolumeId,
    /// The volume's name and size when the snapshot was asked for.
    pub volume_name: String,
    pub size_gib: u32,
    pub node_id: NodeId,
}

/// A snapshot's node reports it: the copy is complete, or why it failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotReported {
    pub org_id: OrgId,
    pub env_id: EnvId,
    pub snapshot_id: SnapshotId,
    pub status: SnapshotStatus,
    /// Bytes the copy occupies on the node (sparse: what the volume holds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// How long the copy took, and how long the VM that had the volume was paused for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub took_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Where a snapshot is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotStatus {
    /// Asked for; its node has not reported it yet.
    Pending,
    /// Copied: it can be restored as a new volume.
    Completed,
    Failed,
}

/// A backup of a volume is asked for (by a person, or by the schedule): its node copies the
/// disk and sends the copy to the backup repository.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupRequested {
    pub org_id: OrgId,
    pub env_id: EnvId,
    pub volume_id: VolumeId,
    pub backup_id: BackupId,
    /// Where it came from, as the backup's tags name it (a fresh control plane finds it by these).
    pub org: String,
    pub app: String,
    pub env: String,
    #[serde(default)]
    pub scheduled: bool,
}

/// The volume's node reports a backup run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupReported {
    pub org_id: OrgId,
    pub env_id: EnvId,
    pub volume_id: VolumeId,
    pub backup_id: BackupId,
    /// `completed` or `failed`.
    pub status: SnapshotStatus,
    /// The restic snapshot id, once completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restic_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_added: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_processed: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub took_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A volume's backups as its view shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VolumeBackups {
    /// A backup asked for and not reported yet.
    pub pending: Option<PendingBackup>,
    pub last_success_at: Option<DateTime<Utc>>,
    /// The restic snapshot id of the last successful backup.
    pub last_success_id: Option<String>,
    /// What the last successful backup added to the repository, and read.
    pub last_bytes_added: Option<u64>,
    pub last_bytes_processed: Option<u64>,
    pub last_took_ms: Option<u64>,
    /// The last failure, when it is newer than the last success.
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
}

/// A backup run asked for and not reported yet, with the names its tags carry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PendingBackup {
    pub id: BackupId,
    pub org: String,
    pub app: String,
    pub env: String,
    pub requested_at: DateTime<Utc>,
}

/// A workspace is created (docs/workspaces.md): its platform-wide name, and the hidden app, env,
/// release and home volume that carry it. Created meaning to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceCreated {
    pub org_id: OrgId,
    pub workspace_id: WorkspaceId,
    pub name: String,
    pub app_id: AppId,
    pub env_id: EnvId,
    pub release_id: ReleaseId,
    /// The home disk, on `node_id`: every start of the workspace runs there.
    pub volume_id: VolumeId,
    pub node_id: NodeId,
    /// `repository@sha256:...` of the IDE image, and the manifest nodes run.
    pub image_ref: String,
    pub image_digest: String,
    pub cpus: u32,
    pub memory_mib: u32,
    pub disk_gib: u32,
}

/// What a workspace should be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WorkspaceDesired {
    Running,
    Stopped,
    /// Being deleted: the VM stops, then the disk goes (`workspace.deleted`).
    Deleted,
    /// Its VM saved to a snapshot on its node (`vt workspace stop --suspend`); a start
    /// resumes it with its memory (processes, /tmp) as it was.
    Suspended,
}

impl WorkspaceDesired {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Stopped => "stopped",
            Self::Deleted => "deleted",
            Self::Suspended => "suspended",
        }
    }
}

/// A user starts, stops or deletes a workspace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceDesiredStateChanged {
    pub org_id: OrgId,
    pub workspace_id: WorkspaceId,
    pub desired: WorkspaceDesired,
}

/// The workspace's IDE failed while meant to run; the platform stopped it (no restart loop).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceFailed {
    pub org_id: OrgId,
    pub workspace_id: WorkspaceId,
    pub instance_id: InstanceId,
    /// Why, in words a user can act on (the instance's failure).
    pub reason: String,
}

/// A port of the workspace is reachable at `/workspace/{name}/port/{port}/`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkspacePortAdded {
    pub org_id: OrgId,
    pub workspace_id: WorkspaceId,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkspacePortRemoved {
    pub org_id: OrgId,
    pub workspace_id: WorkspaceId,
    pub port: u16,
}

/// The HTTP front served a request of the workspace (coalesced: at most one such event a
/// minute per workspace).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceAccessed {
    pub org_id: OrgId,
    pub workspace_id: WorkspaceId,
    /// The last request's time.
    pub at: DateTime<Utc>,
}

/// A deleted workspace is gone: its VM ended, its disk is deleted, its name is free.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceDeleted {
    pub org_id: OrgId,
    pub workspace_id: WorkspaceId,
}
