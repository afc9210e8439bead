//! Backups of volumes to the server's restic repository (`vt server --backup-repo`).
//!
//! Asking for one appends `backup.requested` on the volume (one at a time per volume); the
//! volume's node copies the disk (paused VM, like a snapshot), sends the copy to the
//! repository and reports `backup.reported`: the volume's view keeps the last success (when,
//! the restic id, what it added) and the last failure, which never touches the workload.
//! Listing and restoring read the repository itself, by the names backups are tagged with,
//! so a control plane on a fresh data directory finds the backups of the same org, app, env
//! and volume names. A restore is always a new volume.

use std::sync::RwLock;

use super::volumes::{new_volume, Origin};
use axum::http::StatusCode;
use vt_api::{Backup, ErrorCode, ReportBackup, RestoreBackup, SnapshotStatus, Volume};
use vt_backup::Restic;
use vt_events::{AggregateType, BackupReported, BackupRequested, Event};
use vt_ids::{BackupId, VolumeId};
use vt_views::VolumeView;

use crate::authz::Action;
use crate::lookup::{shown, EnvScope};
use crate::wire::Wire;
use crate::{ApiErr, ApiResult, Committed, ControlPlane, Ctx, Plan};

/// The backup repository of this control plane, if it has one, and how often every volume is
/// backed up by itself.
#[derive(Default)]
pub struct BackupSettings {
    restic: RwLock<Option<Restic>>,
    every: RwLock<Option<std::time::Duration>>,
}

impl BackupSettings {
    pub fn set(&self, target: Option<vt_backup::Target>) {
        if let Ok(mut r) = self.restic.write() {
            *r = target.map(Restic::new);
        }
    }
    /// Back every volume up this often (from its creation, its last backup or its last failed
    /// one); `None`: only when asked. Needs a repository.
    pub fn set_every(&self, every: Option<std::time::Duration>) {
        if let Ok(mut e) = self.every.write() {
            *e = every;
        }
    }
    pub(crate) fn every(&self) -> Option<std::time::Duration> {
        let configured = self.restic.read().is_ok_and(|r| r.is_some());
        self.every.read().ok().and_then(|e| *e).filter(|_| configured)
    }
    fn restic(&self) -> ApiResult<Restic> {
        self.restic.read().ok().and_then(|r| r.clone()).ok_or_else(|| {
            ApiErr::conflict("this server has no backup repository: start `vt server` with `--backup-repo` and `--backup-password-file`")
        })
    }
}

fn restic_err(e: vt_backup::Error) -> ApiErr {
    match e {
        vt_backup::Error::NotFound(_) => ApiErr::not_found(e.to_string()),
        // The repository is the server's: its trouble is the operator's to fix, said as it is.
        other => ApiErr::new(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Internal, other.to_string()),
    }
}

/// Whether a volume is due for a scheduled backup at `now`: none running, and `every` has
/// passed since the latest of its creation, last success and last failure.
pub(crate) fn due(v: &VolumeView, every: std::time::Duration, now: chrono::DateTime<chrono::Utc>) -> bool {
    let b = &v.backups;
    let since = [Some(v.created_at), b.last_success_at, b.last_error_at].into_iter().flatten().max();
    let every = chrono::Duration::from_std(every).unwrap_or(chrono::Duration::MAX);
    b.pending.is_none() && since.is_some_and(|t| now - t >= every)
}

impl ControlPlane {
    /// Ask the volume's node for a backup now.
    pub async fn backup_create(&self, ctx: &Ctx, scope: &EnvScope, volume: &str) -> ApiResult<Committed> {
        scope.authorize(ctx, Action::Deploy)?;
        self.backups.restic()?;
        let (mut v, pin) = self.pinned_volume(&scope.env, volume).await?;
        if let Some(p) = &v.backups.pending {
            return Err(ApiErr::conflict(format!(
                "a backup of volume `{}` ({}) is already running ({}); `vt volume get {}` shows when it ends",
                v.name, v.id, p.id, v.id
            )));
        }
        let e = BackupRequested {
            org_id: v.org_id,
            env_id: v.env_id,
            volume_id: v.id,
            backup_id: BackupId::new(),
            org: scope.org.name.clone(),
            app: scope.app.name.clone(),
            env: scope.env.name.clone(),
            scheduled: false,
        };
        v.backups.pending = Some(vt_events::PendingBackup {
            id: e.backup_id,
            org: e.org.clone(),
            app: e.app.clone(),
            env: e.env.clone(),
            requested_at: ctx.now(),
        });
        let node = self.lookup_node(&v.node_id.to_string()).await?;
        let plan = Plan::new(StatusCode::CREATED, Volume { node: node.name.clone(), ..v.clone().wire() })
            .event(Event::BackupRequested(e))
            .expect(pin);
        self.commit(ctx, plan).await
    }

    /// The backups in the repository of the volumes of this env named `volume` (or of the
    /// volume with that id), oldest first.
    pub async fn backup_list(&self, ctx: &Ctx, scope: &EnvScope, volume: &str) -> ApiResult<Vec<Backup>> {
        scope.authorize(ctx, Action::Read)?;
        let restic = self.backups.restic()?;
        let name = match VolumeId::parse(volume) {
            Ok(_) => self.lookup_volume(&scope.env, volume).await?.name,
            Err(_) => volume.to_owned(),
        };
        let all = restic.list().await.map_err(restic_err)?;
        Ok(all
            .into_iter()
            .filter(|b| {
                let o = &b.origin;
                (o.org.as_str(), o.app.as_str(), o.env.as_str(), o.volume.as_str())
                    == (scope.org.name.as_str(), scope.app.name.as_str(), scope.env.name.as_str(), name.as_str())
            })
            .map(|b| Backup {
                id: b.id,
                time: b.time,
                volume: b.origin.volume,
                volume_id: b.origin.volume_id,
                size_gib: b.origin.size_gib,
                node: b.origin.node,
            })
            .collect())
    }

    /// A backup of this env (by its tags) as a new volume named `req.name` on a node.
    pub async fn backup_restore(
        &self,
        ctx: &Ctx,
        scope: &EnvScope,
        backup: &str,
        req: RestoreBackup,
    ) -> ApiResult<Committed> {
        scope.authorize(ctx, Action::Deploy)?;
        let restic = self.backups.restic()?;
        let b = restic.find(backup).await.map_err(restic_err)?;
        let o = &b.origin;
        if (o.org.as_str(), o.app.as_str(), o.env.as_str())
            != (scope.org.name.as_str(), scope.app.name.as_str(), scope.env.name.as_str())
        {
            return Err(ApiErr::not_found(format!(
                "backup {} is not of env `{}`; `vt volume backups NAME` lists this env's",
                shown(backup),
                scope.env.name
            )));
        }
        self.fresh().await?;
        let name = req.name.to_string();
        self.restore_name_free(scope, &name).await?;
        let node = match &req.node {
            Some(n) => self.volume_node(n).await?,
            None => self.emptiest_node().await?,
        };
        let plan = new_volume(ctx, scope, name, o.size_gib, &node, Origin::Backup(b.id))
            .expect(super::exists(AggregateType::Env, scope.env.id));
        self.commit(ctx, plan).await
    }

    /// A node reports a backup run of one of its volumes (once per run).
    pub async fn backup_report(&self, ctx: &Ctx, node: &str, volume: &str, req: ReportBackup) -> ApiResult<Committed> {
        let node = self.authorized_node(ctx, node, Action::Agent).await?;
        let not_found = || ApiErr::not_found(format!("volume {} not found on node {}", shown(volume), node.name));
        let id = VolumeId::parse(volume).map_err(|_| not_found())?;
        let (v, pin) = match self.fresh_pinned::<VolumeView>(AggregateType::Volume, id, "volume").await {
            Ok((v, pin)) if v.node_id == node.id => (v, pin),
            Ok(_) => return Err(not_found()),
            Err(e) if e.status == StatusCode::NOT_FOUND => return Err(not_found()),
            Err(e) => return Err(e),
        };
        if req.status == SnapshotStatus::Pending {
            return Err(ApiErr::invalid("status", "a node reports `completed` or `failed`"));
        }
        let wire = |v: VolumeView| Volume { node: node.name.clone(), ..v.wire() };
        if v.backups.pending.as_ref().is_none_or(|p| p.id != req.backup_id) {
            // Reported already (a retry), or not asked for: nothing to record.
            return self.commit(ctx, Plan::new(StatusCode::OK, wire(v))).await;
        }
        let plan = Plan::new(StatusCode::OK, wire(v.clone()))
            .event(Event::BackupReported(BackupReported {
                org_id: v.org_id,
                env_id: v.env_id,
                volume_id: v.id,
                backup_id: req.backup_id,
                status: req.status,
                restic_id: req.restic_id,
                bytes_added: req.bytes_added,
                bytes_processed: req.bytes_processed,
                took_ms: req.took_ms,
                reason: req.reason,
            }))
            .expect(pin);
        self.commit(ctx, plan).await
    }
}
