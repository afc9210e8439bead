//! Stored views onto the API's resources (`vt_api::resources`): the one place
//! that decides what of a stored document a client sees.

use chrono::{DateTime, Utc};
use vt_api::{
    App, Deploy, Env, Instance, InstanceFailure, Node, Org, PhaseTiming, Release, Route, Scale, Token, TokenState,
    Volume,
};
use vt_views::{
    AppView, DeployView, EnvView, FailureKind, InstanceView, NodeView, OrgView, ReleaseView, RouteView, ScaleView,
    TokenView, VolumeView,
};

/// A stored view as the API shows it.
pub(crate) trait Wire {
    type Out;
    fn wire(self) -> Self::Out;
}

/// Every item of a list, wired.
pub(crate) fn all<T: Wire>(items: Vec<T>) -> Vec<T::Out> {
    items.into_iter().map(Wire::wire).collect()
}

impl Wire for OrgView {
    type Out = Org;
    fn wire(self) -> Org {
        Org { id: self.id, name: self.name, created_at: self.created_at, updated_at: self.updated_at }
    }
}

impl Wire for AppView {
    type Out = App;
    fn wire(self) -> App {
        App {
            id: self.id,
            org_id: self.org_id,
            name: self.name,
            description: self.description,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

impl Wire for EnvView {
    type Out = Env;
    fn wire(self) -> Env {
        Env {
            id: self.id,
            org_id: self.org_id,
            app_id: self.app_id,
            name: self.name,
            desired_release_id: self.desired_release_id,
            current_deploy_id: self.current_deploy_id,
            desired_secrets_version: self.desired_secrets_version,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

impl Wire for ReleaseView {
    type Out = Release;
    fn wire(self) -> Release {
        Release {
            id: self.id,
            org_id: self.org_id,
            app_id: self.app_id,
            image_ref: self.image_ref,
            image_digest: self.image_digest,
            resolved_from: self.resolved_from,
            manifest_hash: self.manifest_hash,
            manifest: self.manifest,
            created_at: self.created_at,
        }
    }
}

impl Wire for DeployView {
    type Out = Deploy;
    fn wire(self) -> Deploy {
        Deploy {
            id: self.id,
            org_id: self.org_id,
            app_id: self.app_id,
            env_id: self.env_id,
            release_id: self.release_id,
            previous_release_id: self.previous_release_id,
            secrets_version: self.secrets_version,
            previous_secrets_version: self.previous_secrets_version,
            kind: self.kind,
            status: self.status,
            reason: self.reason,
            phases: self
                .phases
                .into_iter()
                .map(|p| PhaseTiming { phase: p.phase, at: p.at, after_ms: p.after_ms })
                .collect(),
            failed_instance_id: self.failed_instance_id,
            reverted_to_release_id: self.reverted_to_release_id,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

impl Wire for ScaleView {
    type Out = Scale;
    fn wire(self) -> Scale {
        Scale {
            org_id: self.org_id,
            app_id: self.app_id,
            env_id: self.env_id,
            process: self.process,
            instances: self.instances,
            updated_at: self.updated_at,
        }
    }
}

impl Wire for InstanceView {
    type Out = Instance;
    fn wire(self) -> Instance {
        Instance {
            id: self.id,
            org_id: self.org_id,
            app_id: self.app_id,
            env_id: self.env_id,
            process: self.process,
            release_id: self.release_id,
            deploy_id: self.deploy_id,
            node_id: self.node_id,
            resources: self.resources,
            secrets_version: self.secrets_version,
            desired_state: self.desired_state,
            status: self.status,
            reason: self.reason,
            exit_code: self.exit_code,
            address: self.address,
            health: self.health,
            boot: self.boot,
            ready_at: self.ready_at,
            failure: self.failure.map(|f| InstanceFailure {
                kind: match f.kind {
                    FailureKind::Failed => vt_api::FailureKind::Failed,
                    FailureKind::Exited => vt_api::FailureKind::Exited,
                    FailureKind::Unhealthy => vt_api::FailureKind::Unhealthy,
                },
                at: f.at,
                exit_code: f.exit_code,
                reason: f.reason,
            }),
            volumes: self.volumes,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

impl Wire for VolumeView {
    type Out = Volume;
    /// `node` is the node's id here; the app layer puts its name in.
    fn wire(self) -> Volume {
        Volume {
            id: self.id,
            org_id: self.org_id,
            app_id: self.app_id,
            env_id: self.env_id,
            name: self.name,
            size_gib: self.size_gib,
            node_id: self.node_id,
            node: self.node_id.to_string(),
            attached_to: self.attached_to,
            from_snapshot: self.from_snapshot,
            from_backup: self.from_backup,
            backups: self.backups,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

impl Wire for RouteView {
    type Out = Route;
    fn wire(self) -> Route {
        Route {
            id: self.id,
            org_id: self.org_id,
            app_id: self.app_id,
            env_id: self.env_id,
            protocol: self.protocol,
            hostname: self.hostname,
            port: self.port,
            process: self.process,
            backend_port: self.backend_port,
            proxy_protocol: self.proxy_protocol,
            created_at: self.created_at,
            listeners: self.listeners,
            notes: vec![],
        }
    }
}

/// A node as clients see it: its view, its last heartbeat and its last disk report (current
/// state the store keeps beside the heartbeat, not in the view).
pub(crate) fn node(
    v: NodeView,
    last_heartbeat_at: Option<DateTime<Utc>>,
    disk: Option<(DateTime<Utc>, vt_api::DiskReport)>,
) -> Node {
    Node {
        id: v.id,
        name: v.name,
        status: v.status,
        status_reason: v.status_reason,
        capacity: v.capacity,
        allocatable: v.allocatable,
        labels: v.labels,
        address: v.address,
        subnet: v.subnet,
        ipv4_range: v.ipv4_range,
        wireguard_public_key: v.wireguard_public_key,
        wireguard_port: v.wireguard_port,
        runs_instances: v.runs_instances,
        registered_at: v.registered_at,
        updated_at: v.updated_at,
        last_heartbeat_at,
        disk: disk.map(|(_, d)| d),
        disk_reported_at: disk.map(|(at, _)| at),
    }
}

/// A token's state at `now`: revoked, expired, or active.
pub(crate) fn token_state(v: &TokenView, now: DateTime<Utc>) -> TokenState {
    match (v.revoked_at, v.expires_at) {
        (Some(_), _) => TokenState::Revoked,
        (None, Some(e)) if e <= now => TokenState::Expired,
        _ => TokenState::Active,
    }
}

/// A token as of `now` (its state depends on the clock).
pub(crate) fn token(v: TokenView, now: DateTime<Utc>) -> Token {
    let state = token_state(&v, now);
    Token {
        id: v.id,
        name: v.name,
        role: v.role,
        org_id: v.org_id,
        node_id: v.node_id,
        node_name: v.node_name,
        expires_at: v.expires_at,
        labels: v.labels,
        state,
        created_at: v.created_at,
        created_by: v.created_by,
        revoked_at: v.revoked_at,
        revoked_by: v.revoked_by,
    }
}
