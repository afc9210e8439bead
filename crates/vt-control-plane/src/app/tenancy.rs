//! Orgs, apps and envs.

use vt_api::{CreateApp, CreateEnv, CreateOrg};
use vt_events::{AggregateType, AppCreated, EnvCreated, Event, OrgCreated};
use vt_ids::{AppId, EnvId, OrgId};
use vt_store::Claim;
use vt_views::{AppView, EnvView, OrgView, ViewKind};

use super::{created, exists};
use crate::{validate, ApiErr, ApiResult, ControlPlane, Ctx, Plan};

fn admin(ctx: &Ctx) -> ApiResult<()> {
    if ctx.caller.is_admin() {
        Ok(())
    } else {
        Err(ApiErr::forbidden("this needs an admin token"))
    }
}

pub fn create_org(ctx: &Ctx, req: CreateOrg) -> ApiResult<Plan<OrgView>> {
    admin(ctx)?;
    validate::name("name", &req.name)?;
    let id = OrgId::new();
    let now = ctx.now();
    Ok(Plan::new(created(), OrgView { id, name: req.name.clone(), created_at: now, updated_at: now })
        .event(Event::OrgCreated(OrgCreated { org_id: id, name: req.name.clone() }))
        .claim(Claim { scope: "org".into(), name: req.name, owner: id.to_string() }))
}

pub fn create_app(ctx: &Ctx, org: &OrgView, req: CreateApp) -> ApiResult<Plan<AppView>> {
    admin(ctx)?;
    validate::name("name", &req.name)?;
    if let Some(d) = &req.description {
        validate::text("description", d, 1024)?;
    }
    let id = AppId::new();
    let now = ctx.now();
    let view = AppView {
        id,
        org_id: org.id,
        name: req.name.clone(),
        description: req.description.clone(),
        created_at: now,
        updated_at: now,
    };
    Ok(Plan::new(created(), view)
        .event(Event::AppCreated(AppCreated {
            org_id: org.id,
            app_id: id,
            name: req.name.clone(),
            description: req.description,
        }))
        .expect(exists(AggregateType::Org, org.id))
        .claim(Claim { scope: format!("app:{}", org.id), name: req.name, owner: id.to_string() }))
}

pub fn create_env(ctx: &Ctx, app: &AppView, req: CreateEnv) -> ApiResult<Plan<EnvView>> {
    admin(ctx)?;
    validate::name("name", &req.name)?;
    let id = EnvId::new();
    let now = ctx.now();
    let view = EnvView {
        id,
        org_id: app.org_id,
        app_id: app.id,
        name: req.name.clone(),
        desired_release_id: None,
        current_deploy_id: None,
        created_at: now,
        updated_at: now,
    };
    Ok(Plan::new(created(), view)
        .event(Event::EnvCreated(EnvCreated { org_id: app.org_id, app_id: app.id, env_id: id, name: req.name.clone() }))
        .expect(exists(AggregateType::App, app.id))
        .claim(Claim { scope: format!("env:{}", app.id), name: req.name, owner: id.to_string() }))
}

fn by_name<T>(mut items: Vec<T>, name: impl Fn(&T) -> &str) -> Vec<T> {
    items.sort_by(|a, b| name(a).cmp(name(b)));
    items
}

impl ControlPlane {
    pub async fn list_orgs(&self) -> ApiResult<Vec<OrgView>> {
        Ok(by_name(self.views(Self::kind_query(ViewKind::Org)).await?, |o: &OrgView| &o.name))
    }
    pub async fn list_apps(&self, org: &OrgView) -> ApiResult<Vec<AppView>> {
        Ok(by_name(self.views(Self::kind_query(ViewKind::App).parent(org.id)).await?, |a: &AppView| &a.name))
    }
    pub async fn list_envs(&self, app: &AppView) -> ApiResult<Vec<EnvView>> {
        Ok(by_name(self.views(Self::kind_query(ViewKind::Env).parent(app.id)).await?, |e: &EnvView| &e.name))
    }
}
