//! Snapshots of volumes: asked for here (`snapshot.created`), taken by the volume's node,
//! which reports them (`snapshot.reported`); a completed snapshot is restored as a new
//! volume on the same node (`volume.created` with `from_snapshot`), never in place.

use super::volumes::{new_volume, Origin};
use axum::http::StatusCode;
use vt_api::{ReportSnapshot, RestoreSnapshot, Snapshot, SnapshotStatus};
use vt_events::{AggregateType, Event, SnapshotCreated, SnapshotReported};
use vt_ids::{SnapshotId, VolumeId};
use vt_store::{Expectation, ExpectedVersion};
use vt_views::{NodeView, SnapshotView, ViewKind, VolumeView};

use super::exists;
use crate::authz::Action;
use crate::lookup::{shown, EnvScope};
use crate::{ApiErr, ApiResult, Committed, ControlPlane, Ctx, Plan};

impl ControlPlane {
    /// Ask the volume's node for a snapshot of it (the node pauses the VM that has it, if
    /// any, for the copy).
    pub async fn snapshot_create(&self, ctx: &Ctx, scope: &EnvScope, volume: &str) -> ApiResult<Committed> {
        scope.authorize(ctx, Action::Deploy)?;
        self.fresh().await?;
        let v = self.lookup_volume(&scope.env, volume).await?;
        let node = self.lookup_node(&v.node_id.to_string()).await?;
        let view = SnapshotView {
            id: SnapshotId::new(),
            org_id: v.org_id,
            app_id: v.app_id,
            env_id: v.env_id,
            volume_id: v.id,
            volume_name: v.name.clone(),
            size_gib: v.size_gib,
            node_id: v.node_id,
            status: SnapshotStatus::Pending,
            bytes: None,
            took_ms: None,
            paused_ms: None,
            reason: None,
            created_at: ctx.now(),
            completed_at: None,
        };
        let plan = Plan::new(StatusCode::CREATED, wire(view.clone(), &node))
            .event(Event::SnapshotCreated(SnapshotCreated {
                org_id: v.org_id,
                app_id: v.app_id,
                env_id: v.env_id,
                snapshot_id: view.id,
                volume_id: v.id,
                volume_name: v.name,
                size_gib: v.size_gib,
                node_id: v.node_id,
            }))
            .expect(exists(AggregateType::Volume, v.id))
            .expect(Expectation {
                aggregate_type: AggregateType::Snapshot,
                aggregate_id: view.id.to_string(),
                expected: ExpectedVersion::NoStream,
            });
        self.commit(ctx, plan).await
    }

    /// The snapshots of a volume (by id), or of every volume that had a name (deleted ones
    /// too), oldest first.
    pub async fn snapshot_list(&self, ctx: &Ctx, scope: &EnvScope, volume: &str) -> ApiResult<Vec<Snapshot>> {
        scope.authorize(ctx, Action::Read)?;
        let mut all: Vec<SnapshotView> =
            self.views(Self::kind_query(ViewKind::Snapshot).parent(scope.env.id.to_string())).await?;
        match VolumeId::parse(volume) {
            Ok(id) => all.retain(|s| s.volume_id == id),
            Err(_) => all.retain(|s| s.volume_name == volume),
        }
        if all.is_empty() && self.find::<VolumeView>(Some(scope.env.id.to_string()), volume).await?.is_empty() {
            return Err(ApiErr::not_found(format!(
                "no volume {} in env `{}`, and no snapshot of one; `vt volume list` shows its volumes",
                shown(volume),
                scope.env.name
            )));
        }
        all.sort_by_key(|s| s.id);
        let nodes: Vec<NodeView> = self.views(Self::kind_query(ViewKind::Node)).await?;
        Ok(all
            .into_iter()
            .map(|s| match nodes.iter().find(|n| n.id == s.node_id) {
                Some(n) => wire(s, n),
                None => {
                    let node = s.node_id.to_string();
                    Snapshot { node, ..wire_bare(s) }
                }
            })
            .collect())
    }

    /// A completed snapshot as a new volume named `req.name`, on the snapshot's node, of the
    /// size the volume had then.
    pub async fn snapshot_restore(
        &self,
        ctx: &Ctx,
        scope: &EnvScope,
        snapshot: &str,
        req: RestoreSnapshot,
    ) -> ApiResult<Committed> {
        scope.authorize(ctx, Action::Deploy)?;
        self.fresh().await?;
        let not_found = || {
            ApiErr::not_found(format!(
                "snapshot {} not found in env `{}`; `vt volume snapshots NAME` lists them",
                shown(snapshot),
                scope.env.name
            ))
        };
        let id = SnapshotId::parse(snapshot).map_err(|_| not_found())?;
        let s: SnapshotView = self
            .view(&id.to_string())
            .await?
            .filter(|s: &SnapshotView| s.env_id == scope.env.id)
            .ok_or_else(not_found)?;
        if s.status != SnapshotStatus::Completed {
            return Err(ApiErr::conflict(format!(
                "snapshot {} is {}{}; only a completed snapshot can be restored",
                s.id,
                match s.status {
                    SnapshotStatus::Pending => "still being taken",
                    _ => "failed",
                },
                s.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default()
            )));
        }
        let name = req.name.to_string();
        self.restore_name_free(scope, &name).await?;
        // The restore is made on the snapshot's node, from its copy there.
        let node = self.lookup_node(&s.node_id.to_string()).await?;
        let plan = new_volume(ctx, scope, name, s.size_gib, &node, Origin::Snapshot(s.id))
            .expect(exists(AggregateType::Snapshot, s.id));
        self.commit(ctx, plan).await
    }

    /// A node reports a snapshot of one of its volumes: once; a repeat of the same report
    /// answers the snapshot as it is.
    pub async fn snapshot_report(
        &self,
        ctx: &Ctx,
        node: &str,
        snapshot: &str,
        req: ReportSnapshot,
    ) -> ApiResult<Committed> {
        let node = self.authorized_node(ctx, node, Action::Agent).await?;
        let not_found = || ApiErr::not_found(format!("snapshot {} not found on node {}", shown(snapshot), node.name));
        let id = SnapshotId::parse(snapshot).map_err(|_| not_found())?;
        let s: SnapshotView =
            self.view(&id.to_string()).await?.filter(|s: &SnapshotView| s.node_id == node.id).ok_or_else(not_found)?;
        if req.status == SnapshotStatus::Pending {
            return Err(ApiErr::invalid("status", "a node reports `completed` or `failed`"));
        }
        if s.status != SnapshotStatus::Pending {
            if s.status == req.status {
                return self.commit(ctx, Plan::new(StatusCode::OK, wire(s, &node))).await;
            }
            return Err(ApiErr::conflict(format!("snapshot {} was already reported {}", s.id, label(s.status))));
        }
        let mut view = s.clone();
        view.status = req.status;
        view.bytes = req.bytes;
        view.took_ms = req.took_ms;
        view.paused_ms = req.paused_ms;
        view.reason = req.reason.clone();
        view.completed_at = Some(ctx.now());
        let plan = Plan::new(StatusCode::OK, wire(view, &node))
            .event(Event::SnapshotReported(SnapshotReported {
                org_id: s.org_id,
                env_id: s.env_id,
                snapshot_id: s.id,
                status: req.status,
                bytes: req.bytes,
                took_ms: req.took_ms,
                paused_ms: req.paused_ms,
                reason: req.reason,
            }))
            // Pending when read: reported once.
            .expect(Expectation {
                aggregate_type: AggregateType::Snapshot,
                aggregate_id: s.id.to_string(),
                expected: ExpectedVersion::Exact(1),
            });
        self.commit(ctx, plan).await
    }

    /// The snapshots a node has still to take, by id.
    pub(crate) async fn snapshots_pending_on(&self, node: &NodeView) -> ApiResult<Vec<Snapshot>> {
        let mut pending: Vec<SnapshotView> = self.views(Self::kind_query(ViewKind::Snapshot)).await?;
        pending.retain(|s| s.node_id == node.id && s.status == SnapshotStatus::Pending);
        pending.sort_by_key(|s| s.id);
        Ok(pending.into_iter().map(|s| wire(s, node)).collect())
    }
}

fn label(s: SnapshotStatus) -> &'static str {
    match s {
        SnapshotStatus::Pending => "pending",
        SnapshotStatus::Completed => "completed",
        SnapshotStatus::Failed => "failed",
    }
}

fn wire(s: SnapshotView, node: &NodeView) -> Snapshot {
    Snapshot { node: node.name.clone(), ..wire_bare(s) }
}

fn wire_bare(s: SnapshotView) -> Snapshot {
    Snapshot {
        id: s.id,
        org_id: s.org_id,
        app_id: s.app_id,
        env_id: s.env_id,
        volume_id: s.volume_id,
        volume_name: s.volume_name,
        size_gib: s.size_gib,
        node: s.node_id.to_string(),
        node_id: s.node_id,
        status: s.status,
        bytes: s.bytes,
        took_ms: s.took_ms,
        paused_ms: s.paused_ms,
        reason: s.reason,
        created_at: s.created_at,
        completed_at: s.completed_at,
    }
}
