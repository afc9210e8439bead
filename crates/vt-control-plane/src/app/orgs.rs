//! Orgs: the tenants. Only the operator creates them.

use vt_api::{CreateOrg, Org};
use vt_events::{Event, OrgCreated};
use vt_ids::OrgId;
use vt_store::{Claim, ClaimScope};
use vt_views::{OrgView, ViewKind};

use super::{by_name, created};
use crate::authz::Action;
use crate::wire::{all, Wire};
use crate::{ApiResult, Committed, ControlPlane, Ctx, Plan};

impl ControlPlane {
    pub async fn org_create(&self, ctx: &Ctx, req: CreateOrg) -> ApiResult<Committed> {
        ctx.authorize_cluster(Action::Operate)?;
        let id = OrgId::new();
        let now = ctx.now();
        let view = OrgView { id, name: req.name.to_string(), created_at: now, updated_at: now };
        let plan = Plan::new(created(), view.wire())
            .event(Event::OrgCreated(OrgCreated { org_id: id, name: req.name.to_string() }))
            .claim(Claim { scope: ClaimScope::Org, name: req.name.into_string(), owner: id.to_string() });
        self.commit(ctx, plan).await
    }

    /// The orgs the caller may see (an org member: its own), by name.
    pub async fn org_list(&self, ctx: &Ctx) -> ApiResult<Vec<Org>> {
        let mut query = Self::kind_query(ViewKind::Org);
        if let Some(org) = ctx.caller.org() {
            query = query.org(org);
        }
        let orgs: Vec<OrgView> = self.views(query).await?;
        let visible = orgs.into_iter().filter(|o| ctx.caller.sees_org(o.id)).collect();
        Ok(all(by_name(visible, |o: &OrgView| &o.name)))
    }

    pub async fn org_get(&self, ctx: &Ctx, org: &str) -> ApiResult<Org> {
        Ok(self.lookup_org(ctx, org).await?.wire())
    }
}
