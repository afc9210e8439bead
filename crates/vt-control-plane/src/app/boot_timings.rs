//! Boot-timing percentiles over the instance views (`GET /v1/system/boot-timings`).

use vt_api::{BootTimingSummary, BootTimingsQuery};
use vt_views::{EnvView, InstanceView, ViewKind};

use crate::authz::{self, Action, Resource};
use crate::lookup::shown;
use crate::{ApiErr, ApiResult, ControlPlane, Ctx};

impl ControlPlane {
    /// Per-phase percentiles of the boot timings of every instance matching `q`
    /// (any status, stopped ones included) that the caller may read: an org's
    /// members see their org's instances, a node its own, an admin all.
    pub async fn system_boot_timings(&self, ctx: &Ctx, q: &BootTimingsQuery) -> ApiResult<BootTimingSummary> {
        let node = match &q.node {
            Some(n) => {
                let node = self.lookup_node(n).await?;
                ctx.authorize(Action::Read, Resource::Node(node.id), || ApiErr::not_found("node not found"))?;
                Some(node.id)
            }
            None => None,
        };
        let mut query = Self::kind_query(ViewKind::Instance);
        if let Some(env) = &q.env {
            let not_found = || ApiErr::not_found(format!("env {} not found", shown(env)));
            if !env.starts_with("env_") {
                return Err(ApiErr::invalid(
                    "env",
                    format!("`env` must be an env id (`env_...`); got {env:?}; `vt env get` shows it"),
                ));
            }
            let found: EnvView = self.view(env).await?.ok_or_else(not_found)?;
            ctx.authorize(Action::Read, Resource::Org(found.org_id), not_found)?;
            query = query.parent(env);
        }
        if let Some(process) = &q.process {
            query = query.name(process);
        }
        let readable = |i: &InstanceView| {
            authz::check(&ctx.caller, Action::Read, Resource::Instance { org: i.org_id, node: i.node_id }).is_ok()
        };
        let instances: Vec<InstanceView> = self
            .views::<InstanceView>(query)
            .await?
            .into_iter()
            .filter(|i| node.is_none_or(|n| i.node_id == n) && readable(i))
            .collect();
        Ok(BootTimingSummary::of(instances.len(), instances.iter().filter_map(|i| i.boot.as_ref())))
    }
}
