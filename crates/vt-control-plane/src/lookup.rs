//! Finding a resource by id or by name, as the caller may see it: the one
//! place that turns a path segment into a view.
//!
//! Lookups of org-scoped resources start at the org, which answers "not
//! found" to a caller that may not see it ([`crate::authz`]); everything under
//! it is then looked up within it.

use std::fmt::Display;
use std::str::FromStr;

use vt_ids::{markers, Hostname, Kind, Name, Ref};
use vt_views::{
    AppView, DeployView, EnvView, InstanceView, NodeView, OrgView, ReleaseView, RouteView, View, VolumeView,
    WorkspaceView,
};

use crate::authz::{Action, Resource};
use crate::{ApiErr, ApiResult, ControlPlane, Ctx};

/// A view that path segments name by id or by name.
pub trait Named: View {
    type Kind: Kind;
    /// What names it: a [`Name`] (orgs, apps, envs) or a [`Hostname`] (nodes, TLS routes).
    type Name: FromStr + Display;
}

macro_rules! named {
    ($($view:ty => $kind:ty, $name:ty;)*) => {
        $(impl Named for $view {
            type Kind = $kind;
            type Name = $name;
        })*
    };
}

named! {
    OrgView => markers::OrgKind, Name;
    AppView => markers::AppKind, Name;
    EnvView => markers::EnvKind, Name;
    NodeView => markers::NodeKind, Hostname;
    RouteView => markers::RouteKind, Hostname;
    VolumeView => markers::VolumeKind, Name;
    WorkspaceView => markers::WorkspaceKind, Name;
}

/// Input echoed in messages goes through this: quoted, cut at 80 characters.
pub(crate) use vt_ids::shown;

impl ControlPlane {
    /// The views `r` names under `parent` (`None`: cluster-wide kinds): the one
    /// with that id, or those with that name. A string that is neither names nothing.
    pub async fn find<T: Named>(&self, parent: Option<String>, r: &str) -> ApiResult<Vec<T>> {
        match Ref::<T::Kind, T::Name>::parse(r) {
            Ref::Id(id) => {
                let found = self.view::<T>(&id.to_string()).await?;
                Ok(found.filter(|v| parent.is_none() || v.parent_id() == parent).into_iter().collect())
            }
            Ref::Name(name) => {
                let mut query = Self::kind_query(T::KIND).name(name.to_string());
                if let Some(p) = parent {
                    query = query.parent(p);
                }
                self.views(query).await
            }
            Ref::Invalid(_) => Ok(vec![]),
        }
    }

    /// The one view `r` names under `parent`; names are unique where these kinds live.
    async fn find_one<T: Named>(&self, parent: Option<String>, r: &str) -> ApiResult<Option<T>> {
        Ok(self.find::<T>(parent, r).await?.into_iter().next())
    }

    /// An org the caller may see, by id or name.
    pub async fn lookup_org(&self, ctx: &Ctx, r: &str) -> ApiResult<OrgView> {
        let not_found = || ApiErr::not_found(format!("org {} not found; `vt org list` shows the orgs", shown(r)));
        let org = self.find_one::<OrgView>(None, r).await?.ok_or_else(not_found)?;
        ctx.authorize(Action::Read, Resource::Org(org.id), not_found)?;
        Ok(org)
    }

    /// An app of `org` (which the caller was allowed to see), by id or name.
    pub async fn lookup_app(&self, org: &OrgView, r: &str) -> ApiResult<AppView> {
        self.find_one(Some(org.id.to_string()), r).await?.ok_or_else(|| {
            ApiErr::not_found(format!("app {} not found in org `{}`; `vt app list` shows its apps", shown(r), org.name))
        })
    }

    /// An env of `app`, by id or name.
    pub async fn lookup_env(&self, app: &AppView, r: &str) -> ApiResult<EnvView> {
        self.find_one(Some(app.id.to_string()), r).await?.ok_or_else(|| {
            ApiErr::not_found(format!("env {} not found in app `{}`; `vt env list` shows its envs", shown(r), app.name))
        })
    }

    /// Org and app of a path (`/orgs/{org}/apps/{app}`).
    pub async fn lookup_app_scope(&self, ctx: &Ctx, org: &str, app: &str) -> ApiResult<(OrgView, AppView)> {
        let org = self.lookup_org(ctx, org).await?;
        let app = self.lookup_app(&org, app).await?;
        Ok((org, app))
    }

    /// Org, app and env of a path (`/orgs/{org}/apps/{app}/envs/{env}`).
    pub async fn lookup_env_scope(&self, ctx: &Ctx, org: &str, app: &str, env: &str) -> ApiResult<EnvScope> {
        let (org, app) = self.lookup_app_scope(ctx, org, app).await?;
        let env = self.lookup_env(&app, env).await?;
        Ok(EnvScope { org, app, env })
    }

    /// A node, by id or name. Nodes are cluster resources: callers that may
    /// not touch them get 403, never a hidden 404.
    /// A name a revoked node had may be taken again: the node that has it now is meant.
    pub async fn lookup_node(&self, r: &str) -> ApiResult<NodeView> {
        let mut found: Vec<NodeView> = self.find(None, r).await?;
        found.sort_by_key(|n| n.status == vt_events::NodeStatus::Revoked);
        found
            .into_iter()
            .next()
            .ok_or_else(|| ApiErr::not_found(format!("node {} not found; `vt node list` shows the nodes", shown(r))))
    }

    /// A release of `app`, by id.
    pub async fn lookup_release(&self, app: &AppView, r: &str) -> ApiResult<ReleaseView> {
        self.view::<ReleaseView>(r).await?.filter(|rel| rel.app_id == app.id).ok_or_else(|| {
            ApiErr::not_found(format!(
                "release {} not found in app `{}`; `vt release list` shows its releases",
                shown(r),
                app.name
            ))
        })
    }

    /// A deploy of `env`, by id.
    pub async fn lookup_deploy(&self, env: &EnvView, r: &str) -> ApiResult<DeployView> {
        self.view::<DeployView>(r).await?.filter(|d| d.env_id == env.id).ok_or_else(|| {
            ApiErr::not_found(format!(
                "deploy {} not found in env `{}`; `vt deploy list` shows its deploys",
                shown(r),
                env.name
            ))
        })
    }

    /// A route of `env`, by id, or by host name when only one route has it.
    pub async fn lookup_route(&self, env: &EnvView, r: &str) -> ApiResult<RouteView> {
        let mut found = self.find::<RouteView>(Some(env.id.to_string()), r).await?;
        match found.len() {
            0 => Err(ApiErr::not_found(format!(
                "route {} not found in env `{}`; `vt route list` shows its routes",
                shown(r),
                env.name
            ))),
            1 => Ok(found.remove(0)),
            _ => Err(ApiErr::conflict(format!(
                "hostname {} has routes on several ports; name the route by id (`vt route list`)",
                shown(r)
            ))),
        }
    }

    /// An instance the caller may `action`, by id: its org's members (by role)
    /// and the node it is placed on.
    pub async fn lookup_instance(&self, ctx: &Ctx, r: &str, action: Action) -> ApiResult<InstanceView> {
        let not_found = || ApiErr::not_found(format!("instance {} not found", shown(r)));
        let instance = self.view::<InstanceView>(r).await?.ok_or_else(not_found)?;
        ctx.authorize(action, Resource::Instance { org: instance.org_id, node: instance.node_id }, not_found)?;
        Ok(instance)
    }
}

/// Authorize `action` in `org`, which the caller found through [`ControlPlane::lookup_org`].
pub fn authorize_in(ctx: &Ctx, action: Action, org: &OrgView) -> ApiResult<()> {
    ctx.authorize(action, Resource::Org(org.id), || {
        ApiErr::not_found(format!("org `{}` not found; `vt org list` shows the orgs", org.name))
    })
}

/// An env with its org and app, as found from a path.
#[derive(Debug, Clone)]
pub struct EnvScope {
    pub org: OrgView,
    pub app: AppView,
    pub env: EnvView,
}

impl EnvScope {
    /// Authorize `action` on the env's org (its members by role, and admins).
    pub fn authorize(&self, ctx: &Ctx, action: Action) -> ApiResult<()> {
        authorize_in(ctx, action, &self.org)
    }
}
