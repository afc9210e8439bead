//! Boot-timing percentiles over the instance views (`GET /v1/system/boot-timings`).

use vt_api::{BootTimingSummary, BootTimingsQuery};
use vt_views::{EnvView, InstanceView, ViewKind};

use crate::{ApiErr, ApiResult, ControlPlane};

impl ControlPlane {
    /// Per-phase percentiles of the boot timings of every instance matching `q` (any status,
    /// stopped ones included), over those that reported timings.
    pub async fn boot_timings(&self, q: &BootTimingsQuery) -> ApiResult<BootTimingSummary> {
        let node = match &q.node {
            Some(n) => Some(self.node(n).await?.id),
            None => None,
        };
        let mut query = Self::kind_query(ViewKind::Instance);
        if let Some(env) = &q.env {
            if !env.starts_with("env_") {
                return Err(ApiErr::invalid(
                    "env",
                    format!("`env` must be an env id (`env_...`); got {env:?}; `vt env get` shows it"),
                ));
            }
            self.view::<EnvView>(env).await?.ok_or_else(|| ApiErr::not_found(format!("env `{env}` not found")))?;
            query = query.parent(env);
        }
        if let Some(process) = &q.process {
            query = query.name(process);
        }
        let instances: Vec<InstanceView> = self
            .views::<InstanceView>(query)
            .await?
            .into_iter()
            .filter(|i| node.is_none_or(|n| i.node_id == n))
            .collect();
        Ok(BootTimingSummary::of(instances.len(), instances.iter().filter_map(|i| i.boot.as_ref())))
    }
}
