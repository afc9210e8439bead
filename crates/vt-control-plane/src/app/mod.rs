//! The app layer: one module per resource. Commands validate their input, read
//! what they decide from, and return a [`crate::Plan`]; queries read views.

use axum::http::StatusCode;
use vt_events::AggregateType;
use vt_store::{Expectation, ExpectedVersion};
use vt_views::{AppView, EnvView, OrgView, ViewKind};

use crate::{ApiErr, ApiResult, ControlPlane};

pub mod boot_timings;
pub mod deploys;
pub mod nodes;
pub mod releases;
pub mod routes;
pub mod tenancy;

/// The aggregate must exist when the append commits (a parent that a command
/// found in a view cannot have vanished, and a stale view cannot invent one).
pub fn exists(aggregate_type: AggregateType, id: impl ToString) -> Expectation {
    Expectation { aggregate_type, aggregate_id: id.to_string(), expected: ExpectedVersion::Exists }
}

pub fn created() -> StatusCode {
    StatusCode::CREATED
}

impl ControlPlane {
    /// An org by id (`org_...`) or by name.
    pub async fn org(&self, r: &str) -> ApiResult<OrgView> {
        let found = if r.starts_with("org_") {
            self.view::<OrgView>(r).await?
        } else {
            self.views::<OrgView>(Self::kind_query(ViewKind::Org).name(r)).await?.into_iter().next()
        };
        found.ok_or_else(|| ApiErr::not_found(format!("org `{r}` not found; `vt org list` shows the orgs")))
    }

    pub async fn app(&self, org: &OrgView, r: &str) -> ApiResult<AppView> {
        let found = if r.starts_with("app_") {
            self.view::<AppView>(r).await?.filter(|a| a.org_id == org.id)
        } else {
            self.views::<AppView>(Self::kind_query(ViewKind::App).parent(org.id).name(r)).await?.into_iter().next()
        };
        found.ok_or_else(|| {
            ApiErr::not_found(format!("app `{r}` not found in org `{}`; `vt app list` shows its apps", org.name))
        })
    }

    pub async fn env(&self, app: &AppView, r: &str) -> ApiResult<EnvView> {
        let found = if r.starts_with("env_") {
            self.view::<EnvView>(r).await?.filter(|e| e.app_id == app.id)
        } else {
            self.views::<EnvView>(Self::kind_query(ViewKind::Env).parent(app.id).name(r)).await?.into_iter().next()
        };
        found.ok_or_else(|| {
            ApiErr::not_found(format!("env `{r}` not found in app `{}`; `vt env list` shows its envs", app.name))
        })
    }

    pub async fn org_app(&self, org: &str, app: &str) -> ApiResult<(OrgView, AppView)> {
        let org = self.org(org).await?;
        let app = self.app(&org, app).await?;
        Ok((org, app))
    }

    pub async fn org_app_env(&self, org: &str, app: &str, env: &str) -> ApiResult<(OrgView, AppView, EnvView)> {
        let (org, app) = self.org_app(org, app).await?;
        let env = self.env(&app, env).await?;
        Ok((org, app, env))
    }
}
