//! Apps of an org. Owners create them.

use vt_api::{App, CreateApp};
use vt_events::{AggregateType, AppCreated, Event};
use vt_ids::AppId;
use vt_store::{Claim, ClaimScope};
use vt_views::{AppView, ViewKind};

use super::{by_name, created, exists};
use crate::authz::Action;
use crate::lookup::authorize_in;
use crate::wire::{all, Wire};
use crate::{ApiResult, Committed, ControlPlane, Ctx, Plan};

impl ControlPlane {
    pub async fn app_create(&self, ctx: &Ctx, org: &str, req: CreateApp) -> ApiResult<Committed> {
        let org = self.lookup_org(ctx, org).await?;
        authorize_in(ctx, Action::Manage, &org)?;
        let id = AppId::new();
        let now = ctx.now();
        let name = req.name.into_string();
        let view = AppView {
            id,
            org_id: org.id,
            name: name.clone(),
            description: req.description.clone(),
            workspace_id: None,
            created_at: now,
            updated_at: now,
        };
        let plan = Plan::new(created(), view.wire())
            .event(Event::AppCreated(AppCreated {
                org_id: org.id,
                app_id: id,
                name: name.clone(),
                description: req.description,
                workspace_id: None,
            }))
            .expect(exists(AggregateType::Org, org.id))
            .claim(Claim { scope: ClaimScope::App(org.id), name, owner: id.to_string() });
        self.commit(ctx, plan).await
    }

    pub async fn app_list(&self, ctx: &Ctx, org: &str) -> ApiResult<Vec<App>> {
        let org = self.lookup_org(ctx, org).await?;
        let apps: Vec<AppView> = self.views(Self::kind_query(ViewKind::App).parent(org.id)).await?;
        Ok(all(by_name(apps, |a: &AppView| &a.name)))
    }

    pub async fn app_get(&self, ctx: &Ctx, org: &str, app: &str) -> ApiResult<App> {
        Ok(self.lookup_app_scope(ctx, org, app).await?.1.wire())
    }
}
