//! Workspaces (docs/workspaces.md): browser development environments, one microVM each with
//! a home disk that persists, reached at `/workspace/{name}/` on the workspace origin.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use vt_ids::{InstanceId, Name, NodeId, OrgId, WorkspaceId};

pub use vt_events::WorkspaceDesired;

/// A workspace's default vCPUs, memory and home disk (Tidepool's defaults).
pub const DEFAULT_CPUS: u32 = 2;
pub const DEFAULT_MEMORY_MIB: u32 = 4096;
pub const DEFAULT_DISK_GIB: u32 = 10;
pub const MAX_CPUS: u32 = 64;
pub const MIN_MEMORY_MIB: u32 = 256;
pub const MAX_MEMORY_MIB: u32 = 262_144;
pub const MAX_DISK_GIB: u32 = 4096;
/// The port the IDE serves on in the guest (code-server in the default template).
pub const IDE_PORT: u16 = 8080;
/// Registered ports per workspace.
pub const MAX_PORTS: usize = 5;
/// The process that runs the IDE in the workspace's env.
pub const IDE_PROCESS: &str = "ide";
/// The IDE user's home, where the home disk is mounted.
pub const HOME: &str = "/home/vt";

/// A new workspace. It starts at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWorkspace {
    /// Unique on the platform: the workspace is served at `/workspace/{name}/`.
    pub name: Name,
    /// The org (name or id) that owns it.
    #[schema(max_length = 63)]
    pub org: String,
    /// vCPUs [default: 2].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 64)]
    pub cpus: Option<u32>,
    /// Memory, MiB: a hard cap [default: 4096].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 256, maximum = 262144)]
    pub memory_mib: Option<u32>,
    /// The home disk, GiB (sparse) [default: 10].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 4096)]
    pub disk_gib: Option<u32>,
    /// An image of the org in the built-in registry that serves an IDE on port 8080
    /// [default: the server's workspace template].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 512)]
    pub image: Option<String>,
}

/// A port to register: reachable at `/workspace/{name}/port/{port}/` (502 until something
/// listens on it in the workspace).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddWorkspacePort {
    #[schema(minimum = 1, maximum = 65535)]
    pub port: u16,
}

/// Where a workspace is in its life, from its desired state and its IDE instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WorkspaceStatus {
    /// Created, its first start under way.
    Creating,
    Starting,
    /// Its IDE is up and passes its health check.
    Running,
    Stopping,
    Stopped,
    /// Its IDE failed; the platform stopped it (`reason` says why). `vt workspace start` retries.
    Failed,
    /// Deleted: its VM stops, then its disk goes.
    Deleting,
    /// Being saved to a snapshot on its node (`vt workspace stop --suspend`).
    Suspending,
    /// Saved to a snapshot on its node, no VM running; `vt workspace start` resumes it as it was.
    Suspended,
}

impl WorkspaceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Creating => "creating",
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
            Self::Failed => "failed",
            Self::Deleting => "deleting",
            Self::Suspending => "suspending",
            Self::Suspended => "suspended",
        }
    }
}

/// A registered port and its path on the workspace origin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WorkspacePort {
    pub port: u16,
    /// `/workspace/{name}/port/{port}/`
    pub path: String,
}

/// One line of a workspace's activity (its events, newest last).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WorkspaceActivity {
    pub at: DateTime<Utc>,
    /// The event type (`workspace.created`, `workspace.failed`, ...).
    pub event: String,
    /// What happened, in words.
    pub detail: String,
}

/// A workspace: what it should be next to what it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Workspace {
    pub id: WorkspaceId,
    pub name: String,
    pub org_id: OrgId,
    pub desired: WorkspaceDesired,
    pub status: WorkspaceStatus,
    /// Why it is in this status when it is not the desired one (or failed).
    pub reason: Option<String>,
    /// The last lines its IDE printed, when it failed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub last_log_lines: Vec<String>,
    pub cpus: u32,
    pub memory_mib: u32,
    pub disk_gib: u32,
    /// `repository@sha256:...` of its IDE image, and the manifest nodes run.
    pub image_ref: String,
    pub image_digest: String,
    /// The node that holds its disk; it runs there.
    pub node_id: NodeId,
    pub node: String,
    /// Its IDE's instance while it has one.
    pub instance_id: Option<InstanceId>,
    /// That instance's address on the node.
    pub address: Option<String>,
    /// `/workspace/{name}/` on the workspace origin.
    pub path: String,
    /// That path's full URL, when the server knows its workspace origin's address.
    pub url: Option<String>,
    pub ports: Vec<WorkspacePort>,
    pub created_at: DateTime<Utc>,
    pub last_started_at: Option<DateTime<Utc>>,
    /// The HTTP front's last request to it (coalesced to the minute).
    pub last_accessed_at: Option<DateTime<Utc>>,
    pub activity: Vec<WorkspaceActivity>,
}

impl Workspace {
    /// `/workspace/{name}/`
    pub fn path_of(name: &str) -> String {
        format!("/workspace/{name}/")
    }
}
