//! Releases: an image pinned by digest plus a manifest, immutable.

use vt_api::CreateRelease;
use vt_events::{AggregateType, Event, ReleaseCreated};
use vt_ids::ReleaseId;
use vt_views::{AppView, ReleaseView, ViewKind};

use super::{created, exists};
use crate::{validate, ApiErr, ApiResult, ControlPlane, Ctx, Plan};

/// Largest manifest accepted, in bytes.
const MAX_MANIFEST: usize = 256 * 1024;

pub fn create_release(ctx: &Ctx, app: &AppView, req: CreateRelease) -> ApiResult<Plan<ReleaseView>> {
    if !ctx.caller.is_admin() {
        return Err(ApiErr::forbidden("this needs an admin token"));
    }
    let (_repo, digest) = validate::image_ref("image", &req.image)?;
    if req.manifest.len() > MAX_MANIFEST {
        return Err(ApiErr::invalid("manifest", format!("`manifest` is {} bytes; the limit is {MAX_MANIFEST}", req.manifest.len())));
    }
    let manifest = vt_manifest::parse(&req.manifest).map_err(|errors| {
        let all: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        ApiErr::invalid("manifest", format!("the manifest is invalid ({} error{}): {}", all.len(), if all.len() == 1 { "" } else { "s" }, all.join("; ")))
    })?;
    let id = ReleaseId::new();
    let view = ReleaseView {
        id,
        org_id: app.org_id,
        app_id: app.id,
        image_ref: req.image.clone(),
        image_digest: digest.clone(),
        resolved_from: None,
        manifest_hash: manifest.hash(),
        manifest: manifest.to_normalized_json(),
        created_at: ctx.now(),
    };
    let event = Event::ReleaseCreated(ReleaseCreated {
        org_id: app.org_id,
        app_id: app.id,
        release_id: id,
        image_ref: view.image_ref.clone(),
        image_digest: digest,
        resolved_from: None,
        manifest_hash: view.manifest_hash.clone(),
        manifest: view.manifest.clone(),
    });
    Ok(Plan::new(created(), view).event(event).expect(exists(AggregateType::App, app.id)))
}

impl ControlPlane {
    /// Releases of an app, newest first.
    pub async fn list_releases(&self, app: &AppView) -> ApiResult<Vec<ReleaseView>> {
        let mut items: Vec<ReleaseView> = self.views(Self::kind_query(ViewKind::Release).parent(app.id)).await?;
        items.sort_by(|a, b| b.id.cmp(&a.id));
        Ok(items)
    }

    pub async fn release(&self, app: &AppView, r: &str) -> ApiResult<ReleaseView> {
        self.view::<ReleaseView>(r)
            .await?
            .filter(|rel| rel.app_id == app.id)
            .ok_or_else(|| ApiErr::not_found(format!("release `{r}` not found in app `{}`; `vt release list` shows its releases", app.name)))
    }
}
