//! The built-in OCI registry (`/v2/`, crate `vt-registry`), wired to the API's
//! tokens and orgs.
//!
//! A repository's first path component is the org that owns it
//! (`acme/web`). Its org's deployers and owners push, its viewers pull; a
//! node pulls the repositories of the images its instances run; an admin
//! does everything. Any other valid token gets the same `DENIED` for a
//! repository that exists and one that does not.

use std::path::Path;
use std::sync::{Arc, Weak};

use axum::http::StatusCode;
use axum::Router;
use vt_registry::{Access, Authorizer, BoxFuture, Storage, Verdict};
use vt_views::OrgView;

use crate::authz::{self, Action, Caller, Resource};
use crate::{auth, ApiErr, ControlPlane};

/// The registry's storage, or why there is none.
pub(crate) enum Registry {
    Open(Storage),
    /// Opening it failed (logged); `/v2/` answers 503.
    Broken,
    /// No data directory: `/v2/` answers 404.
    Off,
}

impl Registry {
    pub(crate) fn open(dir: Option<&Path>) -> Registry {
        match dir.map(Storage::open) {
            Some(Ok(storage)) => Registry::Open(storage),
            Some(Err(e)) => {
                tracing::error!(error = %e, "cannot open the registry storage; /v2/ is off");
                Registry::Broken
            }
            None => Registry::Off,
        }
    }

    /// The storage, for reads such as tag resolution.
    pub(crate) fn storage(&self) -> Option<&Storage> {
        match self {
            Registry::Open(s) => Some(s),
            Registry::Broken | Registry::Off => None,
        }
    }
}

/// Authorizes registry requests with the API's tokens and the org rules above.
struct OrgAuthorizer {
    cp: Weak<ControlPlane>,
}

fn denied(repository: &str) -> Verdict {
    Verdict::Deny(format!("this token has no access to repository `{repository}`"))
}

impl OrgAuthorizer {
    async fn decide(&self, token: Option<&str>, repository: Option<&str>, access: Access) -> Result<Verdict, ApiErr> {
        let Some(cp) = self.cp.upgrade() else { return Err(ApiErr::internal("the control plane is shutting down")) };
        let Some(token) = token else {
            return Ok(Verdict::Unauthenticated(
                "authentication required: `Authorization: Bearer <vt token>`, or Basic with the token as password"
                    .into(),
            ));
        };
        let caller = match auth::authenticate(cp.store.as_ref(), token, chrono::Utc::now()).await? {
            Ok(c) => c,
            Err(e) => return Ok(Verdict::Unauthenticated(e.to_string())),
        };
        let Some(repository) = repository else { return Ok(Verdict::Allow) };
        let namespace = repository.split('/').next().unwrap_or_default();
        Ok(match caller {
            Caller::Admin { .. } => Verdict::Allow,
            Caller::Node { node, .. } => match access {
                Access::Pull if cp.node_runs_repository(node, repository).await? => Verdict::Allow,
                _ => denied(repository),
            },
            Caller::Member { org, .. } => {
                let owner: Option<OrgView> = cp.view(&org.to_string()).await?;
                if owner.is_none_or(|o| o.name != namespace) {
                    return Ok(denied(repository));
                }
                let action = match access {
                    Access::Pull => Action::Read,
                    Access::Push => Action::Deploy,
                };
                match authz::check(&caller, action, Resource::Org(org)) {
                    Ok(()) => Verdict::Allow,
                    Err(authz::Denied::Forbidden(why)) => Verdict::Deny(format!("{why} to push to `{repository}`")),
                    Err(authz::Denied::Hidden) => denied(repository),
                }
            }
        })
    }
}

impl Authorizer for OrgAuthorizer {
    fn authorize<'a>(
        &'a self,
        token: Option<&'a str>,
        repository: Option<&'a str>,
        access: Access,
    ) -> BoxFuture<'a, Result<Verdict, String>> {
        Box::pin(
            async move { self.decide(token, repository, access).await.map_err(|e| e.internal.unwrap_or(e.message)) },
        )
    }
}

/// The registry's routes, to mount with `.nest_service("/v2", registry::service(&cp))`.
pub fn service(cp: &Arc<ControlPlane>) -> Router {
    match &cp.registry {
        Registry::Open(storage) => {
            vt_registry::router(storage.clone(), Arc::new(OrgAuthorizer { cp: Arc::downgrade(cp) }))
        }
        Registry::Broken => Router::new().fallback(|| async {
            (StatusCode::SERVICE_UNAVAILABLE, "the registry storage could not be opened; see the server log\n")
        }),
        Registry::Off => {
            Router::new().fallback(|| async { (StatusCode::NOT_FOUND, "the registry needs a data directory\n") })
        }
    }
}
