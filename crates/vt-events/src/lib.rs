//! The event log's wire format.
//!
//! Every state change in vt is an [`Event`] appended to one global log and never
//! rewritten. An event travels inside an [`Envelope`] that carries where it sits
//! in the log (`seq`), which aggregate it belongs to and at which version, who
//! caused it and why (actor, request id, correlation id) and when.
//!
//! [`Event`] is a closed enum: the set of things that can happen is listed here
//! and nowhere else. Each variant has a stable type name (`org.created`) and a
//! schema version; payloads are stored as JSON under that name and decoded back
//! with [`Event::decode`], which refuses unknown types and versions rather than
//! guessing. Adding a field with a default is compatible; anything else is a new
//! schema version with its own decoder.
//!
//! This crate does no I/O.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use vt_ids::{
    AppId, BackupId, DeployId, EnvId, EventId, ExecId, InstanceId, NodeId, OrgId, ReleaseId, RequestId, RouteId,
    SnapshotId, TokenId, VolumeId, WorkspaceId,
};

mod types;
pub use types::*;

/// The kinds of aggregates: the units of consistency. Appends check the expected
/// version per aggregate, so two writers racing on one aggregate cannot both win.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AggregateType {
    Org,
    App,
    Env,
    Release,
    Deploy,
    Instance,
    Node,
    Token,
    Route,
    /// An env's secrets (id: the env's id): their staging and versions.
    Secrets,
    /// A node's ingress (id: the node's name): what it reports of route listeners.
    Ingress,
    /// One exec session (id: its `exec_...` id): its grant and its end. Not the instance's
    /// aggregate, so an exec never races the instance's own changes.
    Exec,
    /// A volume: its size, and which instance has it.
    Volume,
    /// A snapshot of a volume: asked for, then reported by its node.
    Snapshot,
    /// A workspace: what it should be (running, stopped, deleted), its ports, its last access.
    Workspace,
}

impl AggregateType {
    pub const ALL: [AggregateType; 15] = [
        Self::Org,
        Self::App,
        Self::Env,
        Self::Release,
        Self::Deploy,
        Self::Instance,
        Self::Node,
        Self::Token,
        Self::Route,
        Self::Secrets,
        Self::Ingress,
        Self::Exec,
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
            Self::Instance => "instance",
            Self::Node => "node",
            Self::Token => "token",
            Self::Route => "route",
            Self::Secrets => "secrets",
            Self::Ingress => "ingress",
            Self::Exec => "exec",
            Self::Volume => "volume",
            Self::Snapshot => "snapshot",
            Self::Workspace => "workspace",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

impl std::fmt::Display for AggregateType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything that can happen. Serialized adjacently tagged: the tag is the
/// stable event type, the content is the payload stored in the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum Event {
    #[serde(rename = "org.created")]
    OrgCreated(OrgCreated),
    #[serde(rename = "app.created")]
    AppCreated(AppCreated),
    #[serde(rename = "env.created")]
    EnvCreated(EnvCreated),
    #[serde(rename = "env.scale_set")]
    ScaleSet(ScaleSet),
    #[serde(rename = "release.created")]
    ReleaseCreated(ReleaseCreated),
    #[serde(rename = "deploy.created")]
    DeployCreated(DeployCreated),
    #[serde(rename = "deploy.status_changed")]
    DeployStatusChanged(DeployStatusChanged),
    #[serde(rename = "instance.allocated")]
    InstanceAllocated(InstanceAllocated),
    #[serde(rename = "instance.desired_state_changed")]
    InstanceDesiredStateChanged(InstanceDesiredStateChanged),
    #[serde(rename = "instance.status_reported")]
    InstanceStatusReported(InstanceStatusReported),
    #[serde(rename = "node.registered")]
    NodeRegistered(NodeRegistered),
    #[serde(rename = "node.capacity_changed")]
    NodeCapacityChanged(NodeCapacityChanged),
    #[serde(rename = "node.status_changed")]
    NodeStatusChanged(NodeStatusChanged),
    #[serde(rename = "node.subnet_assigned")]
    NodeSubnetAssigned(NodeSubnetAssigned),
    #[serde(rename = "token.created")]
    TokenCreated(TokenCreated),
    #[serde(rename = "route.created")]
    RouteCreated(RouteCreated),
    #[serde(rename = "route.deleted")]
    RouteDeleted(RouteDeleted),
    #[serde(rename = "deploy.phase_reached")]
    DeployPhaseReached(DeployPhaseReached),
    #[serde(rename = "env.release_reverted")]
    EnvReleaseReverted(EnvReleaseReverted),
    #[serde(rename = "token.revoked")]
    TokenRevoked(TokenRevoked),
    #[serde(rename = "node.ipv4_range_assigned")]
    NodeIpv4RangeAssigned(NodeIpv4RangeAssigned),
    #[serde(rename = "secrets.staged")]
    SecretsStaged(SecretsStaged),
    #[serde(rename = "secrets.version_created")]
    SecretsVersionCreated(SecretsVersionCreated),
    #[serde(rename = "route.listener_changed")]
    RouteListenerChanged(RouteListenerChanged),
    #[serde(rename = "instance.exec_granted")]
    InstanceExecGranted(InstanceExecGranted),
    #[serde(rename = "instance.exec_ended")]
    InstanceExecEnded(InstanceExecEnded),
    #[serde(rename = "volume.created")]
    VolumeCreated(VolumeCreated),
    #[serde(rename = "volume.extended")]
    VolumeExtended(VolumeExtended),
    #[serde(rename = "volume.attached")]
    VolumeAttached(VolumeAttached),
    #[serde(rename = "volume.detached")]
    VolumeDetached(VolumeDetached),
    #[serde(rename = "volume.deleted")]
    VolumeDeleted(VolumeDeleted),
    #[serde(rename = "snapshot.created")]
    SnapshotCreated(SnapshotCreated),
    #[serde(rename = "snapshot.reported")]
    SnapshotReported(SnapshotReported),
    #[serde(rename = "backup.requested")]
    BackupRequested(BackupRequested),
    #[serde(rename = "backup.reported")]
    BackupReported(BackupReported),
    #[serde(rename = "workspace.created")]
    WorkspaceCreated(WorkspaceCreated),
    #[serde(rename = "workspace.desired_state_changed")]
    WorkspaceDesiredStateChanged(WorkspaceDesiredStateChanged),
    #[serde(rename = "workspace.failed")]
    WorkspaceFailed(WorkspaceFailed),
    #[serde(rename = "workspace.port_added")]
    WorkspacePortAdded(WorkspacePortAdded),
    #[serde(rename = "workspace.port_removed")]
    WorkspacePortRemoved(WorkspacePortRemoved),
    #[serde(rename = "workspace.accessed")]
    WorkspaceAccessed(WorkspaceAccessed),
    #[serde(rename = "workspace.deleted")]
    WorkspaceDeleted(WorkspaceDeleted),
    #[serde(rename = "node.endpoint_changed")]
    NodeEndpointChanged(NodeEndpointChanged),
}

/// Why stored bytes could not be decoded into an [`Event`].
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown event type `{0}`")]
    UnknownType(String),
    #[error("event type `{event_type}` has schema version {got}; this build reads up to {known}")]
    UnsupportedVersion { event_type: String, got: u32, known: u32 },
    #[error("payload of `{event_type}` does not match its schema: {source}")]
    Payload { event_type: String, source: serde_json::Error },
}

impl Event {
    /// The stable type names, in declaration order, with their current schema versions.
    pub const TYPES: &'static [(&'static str, u32)] = &[
        ("org.created", 1),
        ("app.created", 1),
        ("env.created", 1),
        ("env.scale_set", 1),
        ("release.created", 1),
        ("deploy.created", 1),
        ("deploy.status_changed", 1),
        ("instance.allocated", 1),
        ("instance.desired_state_changed", 1),
        ("instance.status_reported", 1),
        ("node.registered", 1),
        ("node.capacity_changed", 1),
        ("node.status_changed", 1),
        ("token.created", 1),
        ("route.created", 1),
        ("route.deleted", 1),
        ("node.subnet_assigned", 1),
        ("deploy.phase_reached", 1),
        ("env.release_reverted", 1),
        ("token.revoked", 1),
        ("secrets.staged", 1),
        ("secrets.version_created", 1),
        ("node.ipv4_range_assigned", 1),
        ("route.listener_changed", 1),
        ("instance.exec_granted", 1),
        ("instance.exec_ended", 1),
        ("volume.created", 1),
        ("volume.extended", 1),
        ("volume.attached", 1),
        ("volume.detached", 1),
        ("volume.deleted", 1),
        ("snapshot.created", 1),
        ("snapshot.reported", 1),
        ("backup.requested", 1),
        ("backup.reported", 1),
        ("workspace.created", 1),
        ("workspace.desired_state_changed", 1),
        ("workspace.failed", 1),
        ("workspace.port_added", 1),
        ("workspace.port_removed", 1),
        ("workspace.accessed", 1),
        ("workspace.deleted", 1),
        ("node.endpoint_changed", 1),
    ];

    pub fn event_type(&self) -> &'static str {
        match self {
            Event::OrgCreated(_) => "org.created",
            Event::AppCreated(_) => "app.created",
            Event::EnvCreated(_) => "env.created",
            Event::ScaleSet(_) => "env.scale_set",
            Event::ReleaseCreated(_) => "release.created",
            Event::DeployCreated(_) => "deploy.created",
            Event::DeployStatusChanged(_) => "deploy.status_changed",
            Event::InstanceAllocated(_) => "instance.allocated",
            Event::InstanceDesiredStateChanged(_) => "instance.desired_state_changed",
            Event::InstanceStatusReported(_) => "instance.status_reported",
            Event::NodeRegistered(_) => "node.registered",
            Event::NodeCapacityChanged(_) => "node.capacity_changed",
            Event::NodeStatusChanged(_) => "node.status_changed",
            Event::TokenCreated(_) => "token.created",
            Event::RouteCreated(_) => "route.created",
            Event::RouteDeleted(_) => "route.deleted",
            Event::NodeSubnetAssigned(_) => "node.subnet_assigned",
            Event::NodeIpv4RangeAssigned(_) => "node.ipv4_range_assigned",
            Event::NodeEndpointChanged(_) => "node.endpoint_changed",
            Event::DeployPhaseReached(_) => "deploy.phase_reached",
            Event::EnvReleaseReverted(_) => "env.release_reverted",
            Event::TokenRevoked(_) => "token.revoked",
            Event::SecretsStaged(_) => "secrets.staged",
            Event::SecretsVersionCreated(_) => "secrets.version_created",
            Event::RouteListenerChanged(_) => "route.listener_changed",
            Event::InstanceExecGranted(_) => "instance.exec_granted",
            Event::InstanceExecEnded(_) => "instance.exec_ended",
            Event::VolumeCreated(_) => "volume.created",
            Event::VolumeExtended(_) => "volume.extended",
            Event::VolumeAttached(_) => "volume.attached",
            Event::VolumeDetached(_) => "volume.detached",
            Event::VolumeDeleted(_) => "volume.deleted",
            Event::SnapshotCreated(_) => "snapshot.created",
            Event::SnapshotReported(_) => "snapshot.reported",
            Event::BackupRequested(_) => "backup.requested",
            Event::BackupReported(_) => "backup.reported",
            Event::WorkspaceCreated(_) => "workspace.created",
            Event::WorkspaceDesiredStateChanged(_) => "workspace.desired_state_changed",
            Event::WorkspaceFailed(_) => "workspace.failed",
            Event::WorkspacePortAdded(_) => "workspace.port_added",
            Event::WorkspacePortRemoved(_) => "workspace.port_removed",
            Event::WorkspaceAccessed(_) => "workspace.accessed",
            Event::WorkspaceDeleted(_) => "workspace.deleted",
        }
    }

    pub fn schema_version(&self) -> u32 {
        Self::current_version(self.event_type()).unwrap_or(1)
    }

    fn current_version(event_type: &str) -> Option<u32> {
        Self::TYPES.iter().find(|(t, _)| *t == event_type).map(|(_, v)| *v)
    }

    /// The aggregate this event belongs to.
    pub fn aggregate(&self) -> (AggregateType, String) {
        use AggregateType as A;
        match self {
            Event::OrgCreated(e) => (A::Org, e.org_id.to_string()),
            Event::AppCreated(e) => (A::App, e.app_id.to_string()),
            Event::EnvCreated(e) => (A::Env, e.env_id.to_string()),
            Event::ScaleSet(e) => (A::Env, e.env_id.to_string()),
            Event::ReleaseCreated(e) => (A::Release, e.release_id.to_string()),
            // A deploy changes what its env should run: it is serialized on the env.
            Event::DeployCreated(e) => (A::Env, e.env_id.to_string()),
            Event::DeployStatusChanged(e) => (A::Deploy, e.deploy_id.to_string()),
            Event::InstanceAllocated(e) => (A::Instance, e.instance_id.to_string()),
            Event::InstanceDesiredStateChanged(e) => (A::Instance, e.instance_id.to_string()),
            Event::InstanceStatusReported(e) => (A::Instance, e.instance_id.to_string()),
            Event::NodeRegistered(e) => (A::Node, e.node_id.to_string()),
            Event::NodeCapacityChanged(e) => (A::Node, e.node_id.to_string()),
            Event::NodeStatusChanged(e) => (A::Node, e.node_id.to_string()),
            Event::NodeSubnetAssigned(e) => (A::Node, e.node_id.to_string()),
            Event::NodeIpv4RangeAssigned(e) => (A::Node, e.node_id.to_string()),
            Event::NodeEndpointChanged(e) => (A::Node, e.node_id.to_string()),
            Event::TokenCreated(e) => (A::Token, e.token_id.to_string()),
            Event::RouteCreated(e) => (A::Route, e.route_id.to_string()),
            Event::RouteDeleted(e) => (A::Route, e.route_id.to_string()),
            Event::DeployPhaseReached(e) => (A::Deploy, e.deploy_id.to_string()),
            // It changes what the env should run, like a deploy.
            Event::EnvReleaseReverted(e) => (A::Env, e.env_id.to_string()),
            Event::TokenRevoked(e) => (A::Token, e.token_id.to_string()),
            Event::SecretsStaged(e) => (A::Secrets, e.env_id.to_string()),
            Event::SecretsVersionCreated(e) => (A::Secrets, e.env_id.to_string()),
            // Observations of a node's ingress: they never race the route's own changes.
            Event::RouteListenerChanged(e) => (A::Ingress, e.node.clone()),
            Event::InstanceExecGranted(e) => (A::Exec, e.exec_id.to_string()),
            Event::InstanceExecEnded(e) => (A::Exec, e.exec_id.to_string()),
            Event::VolumeCreated(e) => (A::Volume, e.volume_id.to_string()),
            Event::VolumeExtended(e) => (A::Volume, e.volume_id.to_string()),
            Event::VolumeAttached(e) => (A::Volume, e.volume_id.to_string()),
            Event::VolumeDetached(e) => (A::Volume, e.volume_id.to_string()),
            Event::VolumeDeleted(e) => (A::Volume, e.volume_id.to_string()),
            Event::SnapshotCreated(e) => (A::Snapshot, e.snapshot_id.to_string()),
            Event::SnapshotReported(e) => (A::Snapshot, e.snapshot_id.to_string()),
            // A volume has one backup running at a time: serialized on the volume.
            Event::BackupRequested(e) => (A::Volume, e.volume_id.to_string()),
            Event::BackupReported(e) => (A::Volume, e.volume_id.to_string()),
            Event::WorkspaceCreated(e) => (A::Workspace, e.workspace_id.to_string()),
            Event::WorkspaceDesiredStateChanged(e) => (A::Workspace, e.workspace_id.to_string()),
            Event::WorkspaceFailed(e) => (A::Workspace, e.workspace_id.to_string()),
            Event::WorkspacePortAdded(e) => (A::Workspace, e.workspace_id.to_string()),
            Event::WorkspacePortRemoved(e) => (A::Workspace, e.workspace_id.to_string()),
            Event::WorkspaceAccessed(e) => (A::Workspace, e.workspace_id.to_string()),
            Event::WorkspaceDeleted(e) => (A::Workspace, e.workspace_id.to_string()),
        }
    }

    /// The org this event is scoped to, when it has one.
    pub fn org_id(&self) -> Option<OrgId> {
        match self {
            Event::OrgCreated(e) => Some(e.org_id),
            Event::AppCreated(e) => Some(e.org_id),
            Event::EnvCreated(e) => Some(e.org_id),
            Event::ScaleSet(e) => Some(e.org_id),
            Event::ReleaseCreated(e) => Some(e.org_id),
            Event::DeployCreated(e) => Some(e.org_id),
            Event::DeployStatusChanged(e) => Some(e.org_id),
            Event::InstanceAllocated(e) => Some(e.org_id),
            Event::InstanceDesiredStateChanged(e) => Some(e.org_id),
            Event::InstanceStatusReported(e) => Some(e.org_id),
            Event::RouteCreated(e) => Some(e.org_id),
            Event::RouteDeleted(e) => Some(e.org_id),
            Event::DeployPhaseReached(e) => Some(e.org_id),
            Event::EnvReleaseReverted(e) => Some(e.org_id),
            // A token of an org role belongs to its org; admin and node tokens to none.
            Event::TokenCreated(e) => e.org_id,
            Event::TokenRevoked(e) => e.org_id,
            Event::SecretsStaged(e) => Some(e.org_id),
            Event::SecretsVersionCreated(e) => Some(e.org_id),
            Event::RouteListenerChanged(e) => Some(e.org_id),
            Event::InstanceExecGranted(e) => Some(e.org_id),
            Event::InstanceExecEnded(e) => Some(e.org_id),
            Event::VolumeCreated(e) => Some(e.org_id),
            Event::VolumeExtended(e) => Some(e.org_id),
            Event::VolumeAttached(e) => Some(e.org_id),
            Event::VolumeDetached(e) => Some(e.org_id),
            Event::VolumeDeleted(e) => Some(e.org_id),
            Event::SnapshotCreated(e) => Some(e.org_id),
            Event::SnapshotReported(e) => Some(e.org_id),
            Event::BackupRequested(e) => Some(e.org_id),
            Event::BackupReported(e) => Some(e.org_id),
            Event::WorkspaceCreated(e) => Some(e.org_id),
            Event::WorkspaceDesiredStateChanged(e) => Some(e.org_id),
            Event::WorkspaceFailed(e) => Some(e.org_id),
            Event::WorkspacePortAdded(e) => Some(e.org_id),
            Event::WorkspacePortRemoved(e) => Some(e.org_id),
            Event::WorkspaceAccessed(e) => Some(e.org_id),
            Event::WorkspaceDeleted(e) => Some(e.org_id),
            Event::NodeRegistered(_)
            | Event::NodeCapacityChanged(_)
            | Event::NodeStatusChanged(_)
            | Event::NodeSubnetAssigned(_)
            | Event::NodeIpv4RangeAssigned(_)
            | Event::NodeEndpointChanged(_) => None,
        }
    }

    /// The payload as stored in the log (without the type tag).
    pub fn payload(&self) -> serde_json::Value {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(mut m)) => m.remove("data").unwrap_or(serde_json::Value::Null),
            // Serializing plain data structs to JSON cannot fail.
            _ => serde_json::Value::Null,
        }
    }

    /// Decode a stored payload. Unknown types and newer schema versions are errors.
    pub fn decode(event_type: &str, schema_version: u32, payload: serde_json::Value) -> Result<Event, DecodeError> {
        let known = Self::current_version(event_type).ok_or_else(|| DecodeError::UnknownType(event_type.to_owned()))?;
        if schema_version == 0 || schema_version > known {
            return Err(DecodeError::UnsupportedVersion {
                event_type: event_type.to_owned(),
                got: schema_version,
                known,
            });
        }
        let tagged = serde_json::json!({ "type": event_type, "data": payload });
        serde_json::from_value(tagged)
            .map_err(|source| DecodeError::Payload { event_type: event_type.to_owned(), source })
    }
}

/// Who caused an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Actor(pub String);

impl Actor {
    pub fn system(component: &str) -> Self {
        Actor(format!("system:{component}"))
    }
    pub fn token(id: TokenId) -> Self {
        Actor(format!("token:{id}"))
    }
}

/// An event to append, with the metadata that does not depend on the log.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event_id: EventId,
    pub event: Event,
    pub request_id: Option<RequestId>,
    pub correlation_id: Option<String>,
    pub actor: Actor,
    pub occurred_at: DateTime<Utc>,
}

impl NewEvent {
    pub fn new(event: Event, actor: Actor, request_id: Option<RequestId>) -> Self {
        NewEvent {
            event_id: EventId::new(),
            event,
            request_id,
            correlation_id: request_id.map(|r| r.to_string()),
            actor,
            occurred_at: Utc::now(),
        }
    }

    pub fn correlated(mut self, correlation_id: impl Into<String>) -> Self {
        self.correlation_id = Some(correlation_id.into());
        self
    }
}

/// An event as it sits in the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Envelope {
    /// Global position in the log: dense, strictly increasing, assigned at commit.
    pub seq: u64,
    pub event_id: EventId,
    pub event_type: String,
    pub schema_version: u32,
    pub aggregate_type: AggregateType,
    pub aggregate_id: String,
    /// Version of the aggregate after this event (1 for its first event).
    pub aggregate_version: u64,
    pub org_id: Option<OrgId>,
    pub request_id: Option<RequestId>,
    pub correlation_id: Option<String>,
    pub actor: String,
    pub occurred_at: DateTime<Utc>,
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
}

impl Envelope {
    pub fn decode(&self) -> Result<Event, DecodeError> {
        Event::decode(&self.event_type, self.schema_version, self.payload.clone())
    }
}

/// Labels on a node, sorted for stable output.
pub type Labels = BTreeMap<String, String>;

#[cfg(test)]
mod tests;
