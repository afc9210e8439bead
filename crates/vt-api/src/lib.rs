//! The API's types: what goes over HTTP between `vt` and the control plane.
//!
//! Requests are strict (`deny_unknown_fields`) and parse names into their types
//! ([`Name`], [`Hostname`]): a misspelled field or a bad value is an error
//! naming it, never silently ignored. Their bounds (ranges, lengths, counts)
//! are `#[schema(...)]` attributes or the schemas of [`limits`]: the OpenAPI
//! document states them and the control plane checks requests against that
//! document, so the two cannot disagree. Responses are the resources of
//! [`resources`], defined here, not the stored views. Errors are [`ErrorBody`]
//! with a stable [`ErrorCode`].

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use vt_events::Envelope;

mod boot;
pub mod channel;
pub mod exec;
pub mod limits;
pub mod resources;
pub mod workspaces;
pub use boot::{nearest_rank, BootPhase, BootTimingSummary, BootTimingsQuery, PhaseStats};
pub use exec::{CreateExec, ExecGrant};
pub use resources::*;
pub use vt_events::{
    BootTimings, Capacity, DeployKind, DeployPhase, DeployStatus, DesiredState, Health, InstanceStatus, ListenerState,
    NodeStatus, PendingBackup, Resources, RouteListener, RouteProtocol, SnapshotStatus, TokenRole, VolumeAttachment,
    VolumeBackups,
};
pub use vt_ids::{EnvVarName, Hostname, Name};
pub use workspaces::{
    AddWorkspacePort, CreateWorkspace, Workspace, WorkspaceActivity, WorkspaceDesired, WorkspacePort, WorkspaceStatus,
};

/// Header carrying the client's idempotency key on mutations.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Response header set when a stored response is replayed for a repeated key.
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";
/// Response header: the log position a mutation reached (0 if it wrote nothing).
pub const SEQ_HEADER: &str = "vt-seq";
/// Request header on reads: wait until views reflect at least this seq.
pub const MIN_SEQ_HEADER: &str = "vt-min-seq";
/// Response header with the request id (also in every error body).
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Stable error codes. Clients match on these, never on messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The body is not valid JSON, or not the expected shape.
    MalformedRequest,
    /// A field has a bad value; `field` names it.
    InvalidField,
    /// A field the API does not know; `field` names it.
    UnknownField,
    Unauthorized,
    Forbidden,
    NotFound,
    /// A unique name is taken.
    NameTaken,
    /// The resource changed concurrently, or is in a state that does not allow this.
    Conflict,
    /// The idempotency key was used before with a different request.
    IdempotencyKeyReused,
    /// Views did not catch up in time; the write (if any) is committed.
    ProjectionLag,
    Internal,
    /// What was asked for existed but is used up or expired (an exec grant).
    Gone,
    /// This server cannot do it now (no node agent serves exec to it); retrying elsewhere or later may work.
    Unavailable,
    /// Too many failed logins from this client; retry after `Retry-After` seconds.
    RateLimited,
    /// The node has no room for this (a workspace start); the message names what to stop.
    CapacityExhausted,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MalformedRequest => "malformed_request",
            Self::InvalidField => "invalid_field",
            Self::UnknownField => "unknown_field",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::NameTaken => "name_taken",
            Self::Conflict => "conflict",
            Self::IdempotencyKeyReused => "idempotency_key_reused",
            Self::ProjectionLag => "projection_lag",
            Self::Internal => "internal",
            Self::Gone => "gone",
            Self::Unavailable => "unavailable",
            Self::RateLimited => "rate_limited",
            Self::CapacityExhausted => "capacity_exhausted",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ApiError,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ApiError {
    pub code: ErrorCode,
    /// For people: what went wrong and what to do.
    pub message: String,
    /// The offending field, as a path into the request body (`processes.web`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub field: Option<String>,
    pub request_id: String,
}

/// A list response. Items are in a stable order documented per endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct List<T> {
    pub items: Vec<T>,
}

/// A node's instances, as of view position `seq`: everything its agent needs
/// to run them, so a node never reads an org's resources.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeInstances {
    /// Every instance placed on the node (desired and current state), by id.
    pub items: Vec<Instance>,
    /// The releases those instances run, by id.
    pub releases: Vec<Release>,
    /// The volumes held by the node, by id: its agent makes their disks and attaches them.
    #[serde(default)]
    pub volumes: Vec<Volume>,
    /// Snapshots of its volumes still to take, by id.
    #[serde(default)]
    pub snapshots: Vec<Snapshot>,
    /// The position of the views these items reflect: pass it back as `after`
    /// to wait for the next change.
    pub seq: u64,
    /// The cluster's settings for guest networks.
    pub network: GuestNetwork,
    /// The private-network instances of every org with an instance on this node (this
    /// node's and other nodes'), by id: the node's resolver answers `.internal` names
    /// with them and its firewall lets each org's instances reach only their own org's.
    pub peers: Vec<Peer>,
    /// The node's WireGuard peers: every other node that is not revoked and registered a key,
    /// an address and a port, by name (docs/nodes.md, "The mesh").
    #[serde(default)]
    pub mesh: Vec<MeshPeer>,
}

/// What a node's ingress serves, as of view position `seq` (`GET /v1/nodes/{node}/routing`):
/// every route, and every ready instance with an address of the envs and processes they route
/// to. An edge on a joined node builds its table from it (docs/nodes.md, "Edges").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeRouting {
    /// Every route, by id.
    pub routes: Vec<Route>,
    /// The ready instances behind them, by env, process and address.
    pub instances: Vec<RoutedInstance>,
    /// The position of the views these reflect: pass it back as `after` to wait for the next change.
    pub seq: u64,
}

/// An instance an ingress sends a route's connections to: ready (running, meant to run,
/// passing its checks), with an address.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoutedInstance {
    pub env_id: vt_ids::EnvId,
    pub process: String,
    /// Its IPv6 (or IPv4) address.
    pub address: String,
}

/// A node's ingress reporting its listener for a route (`POST /v1/nodes/{node}/route-listeners`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteListenerReport {
    pub route_id: vt_ids::RouteId,
    pub state: ListenerState,
    /// Why it failed (`failed` only): the bind error, e.g. "Address already in use".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 500)]
    pub reason: Option<String>,
}

/// Another node as a node's WireGuard interface sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MeshPeer {
    pub node_id: vt_ids::NodeId,
    pub name: String,
    /// Its WireGuard public key (base64).
    pub public_key: String,
    /// Where its interface listens: `address:port` (`[address]:port` for IPv6).
    pub endpoint: String,
    /// What is routed to it through the tunnel: its instances' /64, which holds its own
    /// overlay address (`<subnet>::1`).
    pub allowed_ips: Vec<String>,
}

/// The cluster's settings for guest networks (docs/network.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GuestNetwork {
    /// The MTU of every guest's interface (and its tap).
    pub mtu: u16,
}

/// A live instance in its org's private network, as a node's resolver and firewall see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    pub instance_id: vt_ids::InstanceId,
    pub org_id: vt_ids::OrgId,
    /// The app's, env's and process's names: `<process>.<env>.<app>.internal`.
    pub app: String,
    pub env: String,
    pub process: String,
    /// Its IPv6 address, as its node reported it.
    pub address: String,
    /// Running, meant to run and passing its health check: names resolve to ready instances only.
    pub ready: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOrg {
    pub name: Name,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApp {
    pub name: Name,
    /// Free text, at most 1024 characters, no control characters but newline and tab.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 1024, pattern = "^[^\\x00-\\x08\\x0b-\\x1f\\x7f-\\x9f]*$")]
    pub description: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEnv {
    pub name: Name,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRelease {
    /// The image in the built-in registry, in a repository of the release's org
    /// (`<org>/...`): pinned by digest (`<org>/web@sha256:<64 hex>`) or by a tag
    /// resolved now (`<org>/web:v1`, `<org>/web` for `latest`).
    #[schema(max_length = 512)]
    pub image: String,
    /// The manifest in its TOML authoring form (at most 64 KiB).
    #[schema(max_length = 65536)]
    pub manifest: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDeploy {
    /// A release of the env's app.
    pub release_id: vt_ids::ReleaseId,
}

/// Desired instance counts per process type. Processes not named keep their count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetScale {
    /// Process name → instances (0 to 1000, and within the release's `scaling`); 1 to 64 processes.
    #[schema(schema_with = limits::scale_schema)]
    pub processes: BTreeMap<String, u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterNode {
    /// A host name, unique in the cluster. A node token may register only the node it is bound to, under its name.
    pub name: Hostname,
    pub capacity: Capacity,
    /// What the scheduler may hand out; defaults to `capacity`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocatable: Option<Capacity>,
    /// At most 64; keys `[prefix/]name` (`zone`, `example.com/gpu`), values up to 256 characters.
    #[serde(default)]
    #[schema(schema_with = limits::labels_schema)]
    pub labels: BTreeMap<String, String>,
    /// An IPv6 or IPv4 address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 45)]
    pub address: Option<String>,
    /// The node's WireGuard public key: 32 bytes, base64 (44 characters). Set at the node's
    /// first registration; a later registration may not change it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 44, max_length = 44, pattern = "^[A-Za-z0-9+/]{43}=$")]
    pub wireguard_public_key: Option<String>,
    /// The UDP port its WireGuard interface listens on, at `address`: with a key and an
    /// address, the node is a peer of every other node's mesh (docs/nodes.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 65535)]
    pub wireguard_port: Option<u16>,
    /// Whether the node runs instances [default: true]. `false`: an edge-only node (`vt server
    /// --role edge --join`): it is in the mesh and serves routes, and the scheduler places
    /// nothing on it. Set at the node's first registration; a later registration may not
    /// change it.
    #[serde(default = "vt_events::yes", skip_serializing_if = "vt_events::is_yes")]
    #[schema(default = true)]
    pub runs_instances: bool,
}

/// A single-use token that enrolls one new node (`vt node enroll-token create`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct CreateEnrollToken {
    /// Seconds until it expires, 60 s to 7 days [default: 900, 15 minutes].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 60, maximum = 604800)]
    pub ttl_secs: Option<u64>,
    /// The labels the enrolled node registers with (the same rules as a registration's).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schema(schema_with = limits::labels_schema)]
    pub labels: BTreeMap<String, String>,
}

/// A new node enrolls with an enrollment token (as its bearer token), once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrollNode {
    /// The name it will register under: a host name no node has.
    pub name: Hostname,
}

/// The answer of an enrollment: the node's own token, this once, and what it registers with.
#[derive(Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EnrolledNode {
    pub node_id: vt_ids::NodeId,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// The node's `node` token (`vt_<64 hex>`), bound to it. Shown once; only its hash is stored.
    pub secret: String,
}

/// Never prints the secret.
impl std::fmt::Debug for EnrolledNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrolledNode")
            .field("node_id", &self.node_id)
            .field("name", &self.name)
            .field("labels", &self.labels)
            .field("secret", &"<redacted>")
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<Capacity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocatable: Option<Capacity>,
    /// The node's disk as its agent measured it for this heartbeat. Absent (an older agent):
    /// the node's last report stays as it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<DiskReport>,
}

/// A node's disk: the filesystem holding its data directory, what vt's data on it holds, and
/// what its disk budget (`--disk-reserve`) still lets large writes take. Bytes throughout,
/// each at most 2^53 - 1; the parts of `used` together are at most `total_bytes`, `free_bytes`
/// is at most `total_bytes`, and `budget_free_bytes` at most `free_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DiskReport {
    /// The filesystem's size.
    #[schema(minimum = 0, maximum = 9007199254740991_u64)]
    pub total_bytes: u64,
    /// Free on it (to writers other than root).
    #[schema(minimum = 0, maximum = 9007199254740991_u64)]
    pub free_bytes: u64,
    /// What the node's disk budget keeps free for everything else (the store, logs, the host).
    #[schema(minimum = 0, maximum = 9007199254740991_u64)]
    pub reserve_bytes: u64,
    /// What large writes (images, root, scratch and volume disks, snapshots) may still take:
    /// free beyond the reserve.
    #[schema(minimum = 0, maximum = 9007199254740991_u64)]
    pub budget_free_bytes: u64,
    /// What the node's vt data holds on the filesystem, by what holds it (allocated bytes).
    pub used: DiskUse,
}

/// What a node's vt data holds on its disk, by what holds it (allocated bytes, so a sparse
/// disk counts what it really takes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DiskUse {
    /// The image cache: pulled blobs and the read-only root disks built from them.
    #[schema(minimum = 0, maximum = 9007199254740991_u64)]
    pub images_bytes: u64,
    /// The instances' scratch disks (their writable layer), kept while an instance is suspended.
    #[schema(minimum = 0, maximum = 9007199254740991_u64)]
    pub scratch_bytes: u64,
    /// Volume disks and volume snapshots kept on the node.
    #[schema(minimum = 0, maximum = 9007199254740991_u64)]
    pub volumes_bytes: u64,
    /// The memory snapshots of suspended instances (each until it is resumed or stopped).
    #[schema(minimum = 0, maximum = 9007199254740991_u64)]
    pub snapshots_bytes: u64,
    /// How many suspended instances hold a snapshot.
    #[schema(minimum = 0, maximum = 1000000)]
    pub snapshots: u32,
    /// Instance logs.
    #[schema(minimum = 0, maximum = 9007199254740991_u64)]
    pub logs_bytes: u64,
}

impl DiskUse {
    /// All of it, `None` when the sum overflows.
    pub fn total(&self) -> Option<u64> {
        [self.images_bytes, self.scratch_bytes, self.volumes_bytes, self.snapshots_bytes, self.logs_bytes]
            .into_iter()
            .try_fold(0u64, u64::checked_add)
    }
}

impl DiskReport {
    /// The first field that contradicts another (a report no filesystem could give), with why:
    /// what a control plane refuses. The schema bounds each number on its own.
    pub fn inconsistency(&self) -> Option<(&'static str, String)> {
        if self.free_bytes > self.total_bytes {
            return Some((
                "disk.free_bytes",
                format!("{} bytes free on a filesystem of {} bytes", self.free_bytes, self.total_bytes),
            ));
        }
        if self.budget_free_bytes > self.free_bytes {
            return Some((
                "disk.budget_free_bytes",
                format!("{} bytes free in the budget, more than the {} free", self.budget_free_bytes, self.free_bytes),
            ));
        }
        match self.used.total() {
            Some(used) if used <= self.total_bytes => None,
            Some(used) => Some((
                "disk.used",
                format!("{used} bytes used in all, more than the filesystem's {} bytes", self.total_bytes),
            )),
            None => Some(("disk.used", "the parts of `used` add up to more than 2^64 bytes".into())),
        }
    }
}

/// A node agent's report of an instance's current status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportInstanceStatus {
    pub status: InstanceStatus,
    /// Free text, at most 2048 characters, no control characters but newline and tab.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 2048, pattern = "^[^\\x00-\\x08\\x0b-\\x1f\\x7f-\\x9f]*$")]
    pub reason: Option<String>,
    /// The entrypoint's exit status as the guest reports it (any 32-bit value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = -2147483648, maximum = 2147483647)]
    pub exit_code: Option<i32>,
    /// The IP address (IPv6 or IPv4) where the instance's ports are reachable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 45)]
    pub address: Option<String>,
    /// The health check's verdict (only with `running`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
    /// Per-phase boot timings measured by the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot: Option<BootTimings>,
}

/// A new ingress route to a process type of the env.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRoute {
    /// `tls` (default): SNI passthrough, needs `hostname`. `tcp`: raw, on a port
    /// the control plane allocates from its range; no `hostname`, no `port`.
    #[serde(default = "default_protocol")]
    pub protocol: RouteProtocol,
    /// The TLS server name clients ask for (case-insensitive; stored lower case).
    /// The first org with a route for a host name owns it until its last such route is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<Hostname>,
    /// The ingress listener port of a `tls` route (default 443): 443, or 1024-65535 outside the
    /// TCP route range and other than the API's own port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 65535)]
    pub port: Option<u16>,
    /// The process type whose instances serve the route: a process of the env's release.
    pub process: Name,
    /// The port the instances listen on: one of the process's `ports` (tcp) in the env's release.
    #[schema(minimum = 1, maximum = 65535)]
    pub backend_port: u16,
    /// Send a PROXY protocol v2 header with the client's address first.
    #[serde(default)]
    pub proxy_protocol: bool,
}

/// The largest volume, GiB (64 TiB).
pub const MAX_VOLUME_GIB: u32 = 65536;

/// A new volume of the env.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateVolume {
    /// The name a manifest's `[[volumes]]` mounts; several volumes of an env may share it.
    pub name: Name,
    /// Its size, GiB.
    #[schema(minimum = 1, maximum = 65536)]
    pub size_gib: u32,
    /// The node (name or id) that holds it; default: the ready node holding the fewest volumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 63)]
    pub node: Option<String>,
}

/// A volume's new size: larger than it is (volumes never shrink).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtendVolume {
    /// The new size, GiB.
    #[schema(minimum = 1, maximum = 65536)]
    pub size_gib: u32,
}

/// A snapshot restored as a new volume (never in place).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreSnapshot {
    /// The new volume's name: no volume of the env may have it.
    pub name: Name,
}

/// A backup restored as a new volume (never in place).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreBackup {
    /// The new volume's name: no volume of the env may have it.
    pub name: Name,
    /// The node (name or id) to restore it on; default: the ready node holding the fewest volumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 63)]
    pub node: Option<String>,
}

/// A node reports a backup run of one of its volumes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportBackup {
    pub backup_id: vt_ids::BackupId,
    /// `completed` or `failed`.
    pub status: SnapshotStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 64, pattern = "^[0-9a-f]*$")]
    pub restic_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 9007199254740991_u64)]
    pub bytes_added: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 9007199254740991_u64)]
    pub bytes_processed: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 86400000)]
    pub took_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 2048, pattern = "^[^\\x00-\\x08\\x0b-\\x1f\\x7f-\\x9f]*$")]
    pub reason: Option<String>,
}

/// A node reports a snapshot it took, or could not take.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportSnapshot {
    /// `completed` or `failed`.
    pub status: SnapshotStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 9007199254740991_u64)]
    pub bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 86400000)]
    pub took_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 86400000)]
    pub paused_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 2048, pattern = "^[^\\x00-\\x08\\x0b-\\x1f\\x7f-\\x9f]*$")]
    pub reason: Option<String>,
}

fn default_protocol() -> RouteProtocol {
    RouteProtocol::Tls
}

/// A new token. `admin` and `node` tokens need an admin token; an org role
/// (`owner`, `deployer`, `viewer`) needs an owner of that org.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// Unique among the tokens of its org (or among admin and node tokens).
    pub name: Name,
    pub role: TokenRole,
    /// The org of an org role (id or name); absent for `admin` and `node`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 253)]
    pub org: Option<String>,
    /// The node a `node` token is for (id or name): a registered node, or the
    /// name a new node will register under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 253)]
    pub node: Option<String>,
    /// Seconds until the token expires (1 s to 10 years); absent: it never expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 315360000)]
    pub expires_in_secs: Option<u64>,
}

/// Filters of `GET /v1/tokens`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TokenQuery {
    /// Only the tokens of this org (id or name). An owner sees its org's tokens only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(max_length = 253)]
    pub org: Option<String>,
    /// Include revoked and expired tokens (default: active ones only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all: Option<bool>,
}

/// A page of the event log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EventPage {
    pub events: Vec<Envelope>,
    /// Pass as `after` to get the next page.
    pub next_after: u64,
    /// The last seq in the log when the page was read.
    pub head: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProjectionInfo {
    pub name: String,
    pub checkpoint: u64,
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SystemStatus {
    pub version: String,
    pub backend: String,
    pub head: u64,
    pub projections: Vec<ProjectionInfo>,
}

/// Desired versus current for one process type of an env.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProcessState {
    pub process: String,
    pub desired_instances: u32,
    pub desired_release_id: Option<String>,
    /// The env's secrets version its instances should run (`None`: no secrets).
    #[serde(default)]
    pub desired_secrets_version: Option<u64>,
    /// Live instances by the secrets version they run (`none`: without secrets).
    #[serde(default)]
    pub instances_by_secrets_version: BTreeMap<String, u32>,
    /// Instances by current status.
    pub instances_by_status: BTreeMap<String, u32>,
    /// Instances running the desired release (with the desired secrets version).
    pub running_desired_release: u32,
    /// Of those, the ones ready: passing their health check (or without one).
    pub ready_desired_release: u32,
    /// Consecutive failures of the desired release's instances, if any.
    pub crash_loop: Option<CrashLoop>,
    /// Why desired and current differ, in words; empty when they match.
    pub differences: Vec<String>,
}

/// Instances of a process keep failing: replacements wait longer each time
/// (1 s, doubling, up to 5 min) until one stays ready for 60 s.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CrashLoop {
    pub failures: u32,
    /// The latest failure in a few words (`exited with code 1`).
    pub last_failure: String,
    pub last_failure_at: DateTime<Utc>,
    /// When the next replacement may start (past once it has started).
    pub next_restart_at: DateTime<Utc>,
    /// Replacements waiting for `next_restart_at`.
    pub waiting: u32,
}

/// `vt describe`: an env's desired state next to what is running.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EnvDescription {
    pub env: Env,
    pub current_deploy: Option<Deploy>,
    pub processes: Vec<ProcessState>,
    /// The env's routes, each with its listeners (a failed one is also among its process's differences).
    pub routes: Vec<Route>,
}

/// A process type of an env that the scheduler cannot fully place.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UnplaceableProcess {
    pub org_id: String,
    pub env_id: String,
    pub process: String,
    /// Instances of the desired release wanted, and how many exist or were placed.
    pub wanted: u32,
    pub placed: u32,
    /// What is short and where, e.g. "needs 512 MiB memory; largest free is 256 MiB on node-2".
    pub reason: String,
    /// What could be stopped (or added) to make room.
    pub hint: String,
}

/// `GET /v1/system/scheduler`: the scheduler reconciler's last activation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SchedulerStatus {
    pub runs: u64,
    pub last_run_at: Option<DateTime<Utc>>,
    /// The error of the last activation, if it failed (it retries on the next).
    pub last_error: Option<String>,
    /// Instances allocated and stopped by the last activation that wrote something.
    pub last_allocated: u32,
    pub last_stopped: u32,
    pub unplaceable: Vec<UnplaceableProcess>,
    pub heartbeat_timeout_secs: u64,
    pub cpu_oversubscription: f64,
}

/// `POST /v1/system/rebuild-views` and `vt server rebuild-views`: the views
/// rebuilt from the log, and the rows that differed from the live ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RebuildReport {
    /// The log's head: every event up to it was replayed.
    pub events: u64,
    pub rows: usize,
    /// `<kind>/<id>` of each row whose rebuilt value differs from its value before.
    pub differing_rows: Vec<String>,
}

/// `POST /v1/system/gc` and `vt system gc`: what the registry's garbage collection did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct GcReport {
    /// Blobs no manifest or release references, older than the grace period (a day): deleted.
    pub blobs_removed: u64,
    pub bytes_freed: u64,
    /// Blobs referenced, or too young to judge.
    pub blobs_kept: u64,
    /// Uploads nobody wrote to for a day: deleted.
    pub uploads_expired: u64,
}

/// One background task of `vt server` (a reconciler, a follower, the node agent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BackgroundTask {
    /// `projector`, `scheduler`, `edge`, `agent`, ...
    pub name: String,
    /// What it does, in a few words.
    pub description: String,
    pub state: TaskState,
    /// Activations so far (a follower counts each change it applied).
    pub activations: u64,
    pub last_activation_at: Option<DateTime<Utc>>,
    /// The last activation's error; `None` once one succeeds again.
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Not started (yet), or switched off by a flag.
    Off,
    Running,
    /// The last activation failed; it retries.
    Failing,
    Stopped,
    /// Another control plane on the same store runs it; this one takes over if it goes.
    Standby,
}

/// `POST .../secrets`: set and unset secrets of an env. Values are base64
/// (any bytes); they are sealed at once and never shown again.
#[derive(Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeSecrets {
    /// Names (environment variable names) to set, with their values in base64.
    #[serde(default)]
    #[schema(schema_with = limits::secrets_set_schema)]
    pub set: BTreeMap<String, String>,
    /// Names to remove.
    #[serde(default)]
    #[schema(schema_with = limits::secrets_unset_schema)]
    pub unset: Vec<String>,
    /// Stage the change for the next version (`POST .../secrets/deploy`)
    /// instead of making a new version and rolling the env out now.
    #[serde(default)]
    pub stage: bool,
}

/// Never shows a value.
impl std::fmt::Debug for ChangeSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeSecrets")
            .field("set", &self.set.keys().collect::<Vec<_>>())
            .field("unset", &self.unset)
            .field("stage", &self.stage)
            .finish()
    }
}

/// An env's secrets: names and metadata, never values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EnvSecrets {
    pub env_id: vt_ids::EnvId,
    /// The latest secrets version (0: none yet).
    pub version: u64,
    /// The version the env's instances should run (`None`: no deploy since secrets were set).
    pub desired_version: Option<u64>,
    /// By name: the latest version's secrets, and what is staged.
    pub items: Vec<SecretInfo>,
    /// In the answer to a change: the version it made (`None`: staged, or every value was already so).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_version: Option<u64>,
    /// With a change that made a new version: the deploy rolling it out
    /// (`None` when the env has nothing deployed yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy: Option<Deploy>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SecretInfo {
    pub name: String,
    /// The version that set its current value (`None`: staged, not in a version yet).
    pub version: Option<u64>,
    pub set_at: Option<DateTime<Utc>>,
    /// Who set it: `token:<id>`.
    pub set_by: Option<String>,
    /// A change waiting for the next version.
    pub staged: Option<StagedChange>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StagedChange {
    /// `set` (a new value) or `unset`.
    pub change: SecretChange,
    pub staged_at: DateTime<Utc>,
    pub staged_by: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SecretChange {
    Set,
    Unset,
}

/// `GET /v1/instances/{id}/secrets`: what a node gives an instance at boot
/// (the node it is placed on only).
#[derive(Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct InstanceSecrets {
    pub version: u64,
    /// By name; values in base64.
    pub items: Vec<SecretValue>,
}

#[derive(Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SecretValue {
    pub name: String,
    pub value_base64: String,
}

/// Never shows a value.
impl std::fmt::Debug for InstanceSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.items.iter().map(|i| i.name.as_str()).collect();
        f.debug_struct("InstanceSecrets").field("version", &self.version).field("names", &names).finish()
    }
}
