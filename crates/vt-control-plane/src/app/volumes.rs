//! Volumes: local ext4 disks of an env, each on one node.
//!
//! Several volumes of an env may share a name (the name a manifest's `[[volumes]]` mounts);
//! each instance of a process that mounts it takes one free volume of that name, on that
//! volume's node. The scheduler attaches (`volume.attached`, with the instance's allocation)
//! and detaches (`volume.detached`, once the instance has ended); this module creates,
//! extends and deletes. Every command pins the volume's version: a delete or an extend
//! cannot pass a concurrent attach unseen.

use std::collections::HashMap;

use axum::http::StatusCode;
use vt_api::{CreateVolume, ErrorCode, ExtendVolume, Volume};
use vt_events::{AggregateType, Event, NodeStatus, VolumeCreated, VolumeDeleted, VolumeExtended};
use vt_ids::{NodeId, VolumeId};
use vt_store::{Expectation, ExpectedVersion};
use vt_views::{EnvView, NodeView, ViewKind, VolumeView};

use super::exists;
use crate::authz::Action;
use crate::lookup::{shown, EnvScope};
use crate::wire::Wire;
use crate::{ApiErr, ApiResult, Committed, ControlPlane, Ctx, Plan};

impl ControlPlane {
    /// Create a volume on a node: the one named, or the ready node holding the fewest volumes
    /// (then the lowest name). Its node makes the disk when an instance first needs it.
    pub async fn volume_create(&self, ctx: &Ctx, scope: &EnvScope, req: CreateVolume) -> ApiResult<Committed> {
        scope.authorize(ctx, Action::Deploy)?;
        if req.size_gib == 0 || req.size_gib > vt_api::MAX_VOLUME_GIB {
            return Err(ApiErr::invalid(
                "size_gib",
                format!("size_gib must be 1-{} (GiB), got {}", vt_api::MAX_VOLUME_GIB, req.size_gib),
            ));
        }
        self.fresh().await?;
        let node = match &req.node {
            Some(n) => self.volume_node(n).await?,
            None => self.emptiest_node().await?,
        };
        let plan = new_volume(ctx, scope, req.name.to_string(), req.size_gib, &node, Origin::Empty)
            .expect(exists(AggregateType::Env, scope.env.id))
            .expect(exists(AggregateType::Node, node.id));
        self.commit(ctx, plan).await
    }

    /// A restore (from a snapshot or a backup) always makes a new volume: refused (409
    /// `name_taken` on `name`) when the env has a volume of that name.
    pub(crate) async fn restore_name_free(&self, scope: &EnvScope, name: &str) -> ApiResult<()> {
        let taken: Vec<VolumeView> = self
            .views(Self::kind_query(ViewKind::Volume).parent(scope.env.id.to_string()).name(name.to_owned()))
            .await?;
        if taken.is_empty() {
            return Ok(());
        }
        Err(ApiErr::new(
            StatusCode::CONFLICT,
            ErrorCode::NameTaken,
            format!(
                "env `{}` has a volume named `{name}`; a restore makes a new volume: pick another name",
                scope.env.name
            ),
        )
        .field("name"))
    }

    /// The node named to hold a volume (`node`): one that runs instances.
    pub(crate) async fn volume_node(&self, node: &str) -> ApiResult<NodeView> {
        let node = self.lookup_node(node).await.map_err(|e| e.field("node"))?;
        if !node.runs_instances {
            return Err(ApiErr::invalid(
                "node",
                format!(
                    "node `{}` is edge-only: it runs no instances, so no volume can live there; name a node that runs instances (`vt node list`), or leave `node` out",
                    node.name
                ),
            ));
        }
        Ok(node)
    }

    /// The ready node that runs instances holding the fewest volumes, then the lowest name.
    pub(crate) async fn emptiest_node(&self) -> ApiResult<NodeView> {
        let nodes: Vec<NodeView> = self.views(Self::kind_query(ViewKind::Node)).await?;
        let volumes: Vec<VolumeView> = self.views(Self::kind_query(ViewKind::Volume)).await?;
        let mut held: HashMap<NodeId, usize> = HashMap::new();
        for v in &volumes {
            *held.entry(v.node_id).or_default() += 1;
        }
        nodes
            .into_iter()
            .filter(|n| n.status == NodeStatus::Ready && n.runs_instances)
            .min_by(|a, b| {
                (held.get(&a.id).copied().unwrap_or(0), &a.name).cmp(&(held.get(&b.id).copied().unwrap_or(0), &b.name))
            })
            .ok_or_else(|| {
                ApiErr::conflict("no node is ready to hold the volume; start a node agent (`vt node list`)")
                    .field("node")
            })
    }

    /// Grow a volume; its node grows the disk and its file system before the next instance
    /// that takes it boots (an attached volume grows at its instance's next start).
    pub async fn volume_extend(
        &self,
        ctx: &Ctx,
        scope: &EnvScope,
        volume: &str,
        req: ExtendVolume,
    ) -> ApiResult<Committed> {
        scope.authorize(ctx, Action::Deploy)?;
        let (mut v, pin) = self.pinned_volume(&scope.env, volume).await?;
        if req.size_gib <= v.size_gib || req.size_gib > vt_api::MAX_VOLUME_GIB {
            return Err(ApiErr::invalid(
                "size_gib",
                format!(
                    "volume {} is {} GiB and only grows: size_gib must be {}-{}, got {}",
                    v.id,
                    v.size_gib,
                    v.size_gib + 1,
                    vt_api::MAX_VOLUME_GIB,
                    req.size_gib
                ),
            ));
        }
        v.size_gib = req.size_gib;
        v.updated_at = ctx.now();
        let node = self.lookup_node(&v.node_id.to_string()).await?;
        let plan = Plan::new(StatusCode::OK, with_node(v.clone().wire(), &node))
            .event(Event::VolumeExtended(VolumeExtended {
                org_id: v.org_id,
                env_id: v.env_id,
                volume_id: v.id,
                size_gib: req.size_gib,
            }))
            .expect(pin);
        self.commit(ctx, plan).await
    }

    /// Delete a volume that no instance has; its node removes the disk.
    pub async fn volume_delete(&self, ctx: &Ctx, scope: &EnvScope, volume: &str) -> ApiResult<Committed> {
        scope.authorize(ctx, Action::Deploy)?;
        let (v, pin) = self.pinned_volume(&scope.env, volume).await?;
        if let Some(instance) = v.attached_to {
            return Err(ApiErr::conflict(format!(
                "volume `{}` ({}) is attached to instance {instance}; scale its process down \
                 (or deploy a release that does not mount it) and delete it once the instance has stopped",
                v.name, v.id
            )));
        }
        let node = self.lookup_node(&v.node_id.to_string()).await?;
        let plan = Plan::new(StatusCode::OK, with_node(v.clone().wire(), &node))
            .event(Event::VolumeDeleted(VolumeDeleted {
                org_id: v.org_id,
                env_id: v.env_id,
                volume_id: v.id,
                node_id: v.node_id,
            }))
            // Free when read: an attach committed meanwhile fails this delete.
            .expect(pin);
        self.commit(ctx, plan).await
    }

    /// The env's volume `volume` (id or name) fresh from the views, pinned on its version
    /// ([`Self::fresh_pinned`]): every command on a volume decides from it.
    pub(crate) async fn pinned_volume(&self, env: &EnvView, volume: &str) -> ApiResult<(VolumeView, Expectation)> {
        self.fresh().await?;
        let id = self.lookup_volume(env, volume).await?.id;
        self.fresh_pinned(AggregateType::Volume, id, "volume").await
    }

    pub async fn volume_get(&self, ctx: &Ctx, scope: &EnvScope, volume: &str) -> ApiResult<Volume> {
        scope.authorize(ctx, Action::Read)?;
        let v = self.lookup_volume(&scope.env, volume).await?;
        let nodes = self.node_names().await?;
        Ok(named(v, &nodes))
    }

    /// The env's volumes, by name, then id.
    pub async fn volume_list(&self, ctx: &Ctx, scope: &EnvScope) -> ApiResult<Vec<Volume>> {
        scope.authorize(ctx, Action::Read)?;
        let mut volumes: Vec<VolumeView> =
            self.views(Self::kind_query(ViewKind::Volume).parent(scope.env.id.to_string())).await?;
        volumes.sort_by(|a, b| (&a.name, a.id).cmp(&(&b.name, b.id)));
        let nodes = self.node_names().await?;
        Ok(volumes.into_iter().map(|v| named(v, &nodes)).collect())
    }

    /// The volumes a node holds, by id (what its agent makes and attaches).
    pub(crate) async fn volumes_on(&self, node: &NodeView) -> ApiResult<Vec<Volume>> {
        let mut volumes: Vec<VolumeView> = self.views(Self::kind_query(ViewKind::Volume)).await?;
        volumes.retain(|v| v.node_id == node.id);
        volumes.sort_by_key(|v| v.id);
        Ok(volumes.into_iter().map(|v| with_node(v.wire(), node)).collect())
    }

    async fn node_names(&self) -> ApiResult<HashMap<NodeId, String>> {
        let nodes: Vec<NodeView> = self.views(Self::kind_query(ViewKind::Node)).await?;
        Ok(nodes.into_iter().map(|n| (n.id, n.name)).collect())
    }

    /// A volume of `env`, by id, or by name when one volume has it.
    pub async fn lookup_volume(&self, env: &EnvView, r: &str) -> ApiResult<VolumeView> {
        let mut found = self.find::<VolumeView>(Some(env.id.to_string()), r).await?;
        match found.len() {
            0 => Err(ApiErr::not_found(format!(
                "volume {} not found in env `{}`; `vt volume list` shows its volumes",
                shown(r),
                env.name
            ))),
            1 => Ok(found.remove(0)),
            n => {
                found.sort_by_key(|v| v.id);
                let ids: Vec<String> = found.iter().map(|v| v.id.to_string()).collect();
                Err(ApiErr::conflict(format!(
                    "{n} volumes are named {} ({}); name one by id",
                    shown(r),
                    ids.join(", ")
                )))
            }
        }
    }
}

/// What a new volume's disk starts as.
pub(crate) enum Origin {
    Empty,
    Snapshot(vt_ids::SnapshotId),
    Backup(String),
}

/// A new volume `name` of `scope`'s env on `node`: a plan appending its `volume.created`
/// (its id new: no stream yet), answering 201 with the volume as clients see it. Callers add
/// what else the creation depends on.
pub(crate) fn new_volume(
    ctx: &Ctx,
    scope: &EnvScope,
    name: String,
    size_gib: u32,
    node: &NodeView,
    origin: Origin,
) -> Plan<Volume> {
    let (from_snapshot, from_backup) = match origin {
        Origin::Empty => (None, None),
        Origin::Snapshot(s) => (Some(s), None),
        Origin::Backup(b) => (None, Some(b)),
    };
    let view = VolumeView {
        id: VolumeId::new(),
        org_id: scope.org.id,
        app_id: scope.app.id,
        env_id: scope.env.id,
        name,
        size_gib,
        node_id: node.id,
        attached_to: None,
        from_snapshot,
        from_backup: from_backup.clone(),
        backups: Default::default(),
        created_at: ctx.now(),
        updated_at: ctx.now(),
    };
    let created = VolumeCreated {
        org_id: view.org_id,
        app_id: view.app_id,
        env_id: view.env_id,
        volume_id: view.id,
        name: view.name.clone(),
        size_gib,
        node_id: node.id,
        from_snapshot,
        from_backup,
    };
    let id = view.id.to_string();
    Plan::new(StatusCode::CREATED, with_node(view.wire(), node)).event(Event::VolumeCreated(created)).expect(
        Expectation { aggregate_type: AggregateType::Volume, aggregate_id: id, expected: ExpectedVersion::NoStream },
    )
}

fn with_node(mut v: Volume, node: &NodeView) -> Volume {
    v.node = node.name.clone();
    v
}

fn named(v: VolumeView, nodes: &HashMap<NodeId, String>) -> Volume {
    let node = nodes.get(&v.node_id).cloned().unwrap_or_else(|| v.node_id.to_string());
    Volume { node, ..v.wire() }
}
