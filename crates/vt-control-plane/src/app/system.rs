//! The system endpoints: status, the scheduler, background tasks, view repair.

use vt_api::{BackgroundTask, ProjectionInfo, RebuildReport, SchedulerStatus, SystemStatus};

use crate::authz::Action;
use crate::{ApiResult, ControlPlane, Ctx};

impl ControlPlane {
    pub async fn system_status(&self, ctx: &Ctx) -> ApiResult<SystemStatus> {
        ctx.authorize_cluster(Action::Read)?;
        let backend = match self.store.backend() {
            vt_store::Backend::Sqlite => "sqlite",
            vt_store::Backend::Postgres => "postgres",
        };
        Ok(SystemStatus {
            version: env!("CARGO_PKG_VERSION").into(),
            backend: backend.into(),
            head: self.store.head().await?,
            projections: self
                .projector
                .status()
                .into_iter()
                .map(|s| ProjectionInfo { name: s.name, checkpoint: s.checkpoint, error: s.error })
                .collect(),
        })
    }

    pub fn system_scheduler(&self, ctx: &Ctx) -> ApiResult<SchedulerStatus> {
        ctx.authorize_cluster(Action::Read)?;
        Ok(self.scheduler.status())
    }

    pub fn system_tasks(&self, ctx: &Ctx) -> ApiResult<Vec<BackgroundTask>> {
        ctx.authorize_cluster(Action::Read)?;
        Ok(self.tasks.list())
    }

    /// Collect the registry's unreferenced blobs and abandoned uploads now (the operator's).
    pub async fn system_gc(&self, ctx: &Ctx) -> ApiResult<vt_api::GcReport> {
        ctx.authorize_cluster(Action::Operate)?;
        self.registry_gc().await
    }

    /// Rebuild the views from the log (the operator's repair).
    pub async fn system_rebuild_views(&self, ctx: &Ctx) -> ApiResult<RebuildReport> {
        ctx.authorize_cluster(Action::Operate)?;
        Ok(crate::rebuild::rebuild_views(self.store.clone()).await?)
    }
}
