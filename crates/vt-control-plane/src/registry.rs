//! The built-in OCI registry (`/v2/`, crate `vt-registry`), wired to the API's
//! tokens and orgs.
//!
//! A repository's first path component is the org that owns it
//! (`acme/web`). Its org's deployers and owners push, its viewers pull; a
//! node pulls the repositories of the images its instances run; an admin
//! does everything. Any other valid token gets the same `DENIED` for a
//! repository that exists and one that does not.

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use axum::http::StatusCode;
use axum::Router;
use chrono::{DateTime, Utc};
use vt_api::{BackgroundTask, GcReport, TaskState};
use vt_registry::{Access, Authorizer, BoxFuture, Limits, Storage, Verdict};
use vt_views::{OrgView, ReleaseView, ViewKind};

use crate::authz::{self, Action, Caller, Resource};
use crate::{auth, ApiErr, ControlPlane};

/// The registry's storage, or none.
pub(crate) enum Registry {
    Open(Storage),
    /// No storage given: `/v2/` answers 404.
    Off,
}

impl Registry {
    pub(crate) fn new(storage: Option<Storage>, limits: Limits) -> Registry {
        match storage {
            Some(storage) => Registry::Open(storage.with_limits(limits)),
            None => Registry::Off,
        }
    }

    /// The storage, for reads such as tag resolution.
    pub(crate) fn storage(&self) -> Option<&Storage> {
        match self {
            Registry::Open(s) => Some(s),
            Registry::Off => None,
        }
    }
}

/// A blob younger than this is never collected: a push uploads its layers before its manifest.
pub(crate) const GC_GRACE: Duration = Duration::from_secs(24 * 3600);
/// How often the registry is collected in the background.
const GC_EVERY: Duration = Duration::from_secs(3600);
const GC: &str =
    "deletes registry blobs no image or release references (a day old) and abandoned uploads, hourly, on the leader";

/// What the registry's garbage collection last did.
#[derive(Debug, Default)]
pub(crate) struct GcState(Mutex<GcStatus>);

#[derive(Debug, Default, Clone)]
struct GcStatus {
    runs: u64,
    last_at: Option<DateTime<Utc>>,
    last_error: Option<String>,
}

impl ControlPlane {
    /// Collect the registry now: every release's image is kept whatever the
    /// registry's manifests say.
    pub async fn registry_gc(&self) -> Result<GcReport, ApiErr> {
        let Some(storage) = self.registry.storage().cloned() else {
            return Err(ApiErr::new(
                StatusCode::NOT_FOUND,
                vt_api::ErrorCode::NotFound,
                "this server runs no registry",
            ));
        };
        let releases: Vec<ReleaseView> = self.views(Self::kind_query(ViewKind::Release)).await?;
        let keep: Vec<vt_image::Digest> = releases.iter().filter_map(|r| r.image_digest.parse().ok()).collect();
        let result = tokio::task::spawn_blocking(move || storage.gc(&keep, GC_GRACE, SystemTime::now()))
            .await
            .map_err(ApiErr::internal)?;
        let mut status = self.registry_gc.0.lock().unwrap_or_else(|e| e.into_inner());
        status.runs += 1;
        status.last_at = Some(Utc::now());
        status.last_error = result.as_ref().err().map(|e| e.to_string());
        let r = result.map_err(ApiErr::internal)?;
        if r.blobs_removed > 0 || r.uploads_expired > 0 {
            tracing::info!(
                blobs_removed = r.blobs_removed,
                bytes_freed = r.bytes_freed,
                uploads_expired = r.uploads_expired,
                "registry collected"
            );
        }
        Ok(GcReport {
            blobs_removed: r.blobs_removed,
            bytes_freed: r.bytes_freed,
            blobs_kept: r.blobs_kept,
            uploads_expired: r.uploads_expired,
        })
    }
}

/// Collect the registry every [`GC_EVERY`] while the control plane lives, and
/// publish the task's status.
pub(crate) fn start_gc(cp: &Arc<ControlPlane>) -> Option<tokio::task::JoinHandle<()>> {
    if cp.registry.storage().is_none() {
        cp.tasks.register("registry-gc", || crate::tasks::off("registry-gc", GC, "this server runs no registry"));
        return None;
    }
    let weak = Arc::downgrade(cp);
    cp.tasks.register("registry-gc", move || {
        let Some(cp) = weak.upgrade() else { return crate::tasks::off("registry-gc", GC, "stopped") };
        let s = cp.registry_gc.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        BackgroundTask {
            name: "registry-gc".into(),
            description: GC.into(),
            // One collector for a storage control planes share: the one leading.
            state: match (cp.leader.leading(), &s.last_error) {
                (false, _) => TaskState::Standby,
                (true, Some(_)) => TaskState::Failing,
                (true, None) => TaskState::Running,
            },
            activations: s.runs,
            last_activation_at: s.last_at,
            last_error: s.last_error,
        }
    });
    let weak = Arc::downgrade(cp);
    Some(tokio::spawn(async move {
        loop {
            tokio::time::sleep(GC_EVERY).await;
            let Some(cp) = weak.upgrade() else { return };
            if !cp.leader.leading() {
                continue;
            }
            if let Err(e) = cp.registry_gc().await {
                let why = e.internal.as_deref().unwrap_or(&e.message);
                tracing::warn!(error = %why, "registry gc failed; retried in an hour");
            }
        }
    }))
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
        let caller = match auth::authenticate(cp.store.as_ref(), token, Utc::now()).await? {
            Ok(c) => c,
            Err(e) => return Ok(Verdict::Unauthenticated(e.to_string())),
        };
        let Some(repository) = repository else { return Ok(Verdict::Allow) };
        let namespace = repository.split('/').next().unwrap_or_default();
        Ok(match caller {
            Caller::Admin { .. } => Verdict::Allow,
            Caller::Enroll { .. } => denied(repository),
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
        Registry::Off => {
            Router::new().fallback(|| async { (StatusCode::NOT_FOUND, "the registry needs a data directory\n") })
        }
    }
}
