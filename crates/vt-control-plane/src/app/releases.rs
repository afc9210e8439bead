//! Releases: an image pinned by digest plus a manifest, immutable.
//!
//! `image` is `repo@sha256:...`, or a tag of the built-in registry (`repo:tag`, `repo` for
//! `latest`), resolved here to `repo@sha256:...` and recorded in `resolved_from`. When the
//! digest names an index in the registry, `image_digest` is its linux/amd64 manifest (what
//! nodes run); otherwise `image_digest` is the digest of `image_ref`.

use vt_api::CreateRelease;
use vt_events::{AggregateType, Event, ReleaseCreated};
use vt_ids::ReleaseId;
use vt_image::oci::{ImageIndex, ManifestKind};
use vt_image::Digest;
use vt_registry::Storage;
use vt_views::{AppView, ReleaseView, ViewKind};

use super::{created, exists};
use crate::{validate, ApiErr, ApiResult, ControlPlane, Ctx, Plan};

/// Largest manifest accepted, in bytes.
const MAX_MANIFEST: usize = 256 * 1024;

/// What a release's `image` resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedImage {
    /// `repo@sha256:...`.
    pub image_ref: String,
    /// The manifest nodes run: the digest of `image_ref`, or an index's linux/amd64 manifest.
    pub image_digest: String,
    /// The tag reference the user gave, when there was one.
    pub resolved_from: Option<String>,
}

/// Split `repo[:tag]` (a `:` before the last `/` belongs to a registry host).
fn split_tag(image: &str) -> (&str, &str) {
    match image.rfind(':') {
        Some(i) if !image[i..].contains('/') => (&image[..i], &image[i + 1..]),
        _ => (image, "latest"),
    }
}

/// For a manifest in the registry: the digest nodes run (an index's linux/amd64 manifest).
fn platform_digest(registry: &Storage, repo: &str, digest: &Digest) -> ApiResult<Option<Digest>> {
    let Some(m) = registry.manifest(repo, digest).map_err(ApiErr::internal)? else { return Ok(None) };
    if vt_image::oci::manifest_kind(&m.media_type) != Some(ManifestKind::Index) {
        return Ok(Some(m.digest));
    }
    let index: ImageIndex = serde_json::from_slice(&m.bytes).map_err(ApiErr::internal)?;
    let platform = index.linux_amd64().ok_or_else(|| {
        ApiErr::invalid(
            "image",
            format!("`image`: the index {repo}@{digest} has no linux/amd64 manifest; vt nodes run linux/amd64"),
        )
    })?;
    Ok(Some(platform.digest.clone()))
}

/// Resolve a release's `image`: digests pass through (an index in the registry is resolved to
/// its linux/amd64 manifest); tags are looked up in the built-in registry.
pub fn resolve_image(registry: Option<&Storage>, image: &str) -> ApiResult<ResolvedImage> {
    if image.contains('@') {
        let (repo, digest) = validate::image_ref("image", image)?;
        let mut image_digest = digest.clone();
        if let (Some(reg), Ok(d)) = (registry, digest.parse::<Digest>()) {
            if vt_registry::valid_name(&repo) {
                if let Some(p) = platform_digest(reg, &repo, &d)? {
                    image_digest = p.to_string();
                }
            }
        }
        return Ok(ResolvedImage { image_ref: image.to_owned(), image_digest, resolved_from: None });
    }
    let (repo, tag) = split_tag(image);
    if !vt_registry::valid_name(repo) || !vt_registry::valid_tag(tag) {
        // Not a reference to the built-in registry: only digests are accepted.
        validate::image_ref("image", image)?;
    }
    let registry = registry.ok_or_else(|| ApiErr::invalid("image", format!("`image` {image:?} is a tag, and this server has no registry to resolve it; pin it by digest: `repository@sha256:<64 hex>`")))?;
    let found = registry.resolve(repo, tag).map_err(ApiErr::internal)?.ok_or_else(|| {
        ApiErr::invalid("image", format!("`image`: tag `{tag}` of `{repo}` is not in the registry; push it with `vt image push PATH --repo {repo} --tag {tag}`, or pin a digest"))
    })?;
    let image_digest = platform_digest(registry, repo, &found.digest)?.unwrap_or_else(|| found.digest.clone());
    Ok(ResolvedImage {
        image_ref: format!("{repo}@{}", found.digest),
        image_digest: image_digest.to_string(),
        resolved_from: Some(image.to_owned()),
    })
}

pub fn create_release(
    ctx: &Ctx,
    app: &AppView,
    req: CreateRelease,
    image: ResolvedImage,
) -> ApiResult<Plan<ReleaseView>> {
    if !ctx.caller.is_admin() {
        return Err(ApiErr::forbidden("this needs an admin token"));
    }
    let digest = image.image_digest.clone();
    if req.manifest.len() > MAX_MANIFEST {
        return Err(ApiErr::invalid(
            "manifest",
            format!("`manifest` is {} bytes; the limit is {MAX_MANIFEST}", req.manifest.len()),
        ));
    }
    let manifest = vt_manifest::parse(&req.manifest).map_err(|errors| {
        let all: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        ApiErr::invalid(
            "manifest",
            format!(
                "the manifest is invalid ({} error{}): {}",
                all.len(),
                if all.len() == 1 { "" } else { "s" },
                all.join("; ")
            ),
        )
    })?;
    let id = ReleaseId::new();
    let view = ReleaseView {
        id,
        org_id: app.org_id,
        app_id: app.id,
        image_ref: image.image_ref.clone(),
        image_digest: digest.clone(),
        resolved_from: image.resolved_from.clone(),
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
        resolved_from: image.resolved_from,
        manifest_hash: view.manifest_hash.clone(),
        manifest: view.manifest.clone(),
    });
    Ok(Plan::new(created(), view).event(event).expect(exists(AggregateType::App, app.id)))
}

impl ControlPlane {
    /// Resolve the request's image (tags via the built-in registry), then plan the release.
    pub fn plan_release(&self, ctx: &Ctx, app: &AppView, req: CreateRelease) -> ApiResult<Plan<ReleaseView>> {
        if !ctx.caller.is_admin() {
            return Err(ApiErr::forbidden("this needs an admin token"));
        }
        let image = resolve_image(self.registry_storage().as_ref(), &req.image)?;
        create_release(ctx, app, req, image)
    }

    /// Releases of an app, newest first.
    pub async fn list_releases(&self, app: &AppView) -> ApiResult<Vec<ReleaseView>> {
        let mut items: Vec<ReleaseView> = self.views(Self::kind_query(ViewKind::Release).parent(app.id)).await?;
        items.sort_by_key(|item| std::cmp::Reverse(item.id));
        Ok(items)
    }

    pub async fn release(&self, app: &AppView, r: &str) -> ApiResult<ReleaseView> {
        self.view::<ReleaseView>(r).await?.filter(|rel| rel.app_id == app.id).ok_or_else(|| {
            ApiErr::not_found(format!(
                "release `{r}` not found in app `{}`; `vt release list` shows its releases",
                app.name
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_split() {
        assert_eq!(split_tag("acme/web:v1"), ("acme/web", "v1"));
        assert_eq!(split_tag("acme/web"), ("acme/web", "latest"));
        assert_eq!(split_tag("localhost:5000/acme/web"), ("localhost:5000/acme/web", "latest"));
        let err = resolve_image(None, "acme/web:v1").unwrap_err();
        assert_eq!(err.field.as_deref(), Some("image"));
        let d = format!("sha256:{}", "a".repeat(64));
        let r = resolve_image(None, &format!("acme/web@{d}")).unwrap();
        assert_eq!((r.image_digest, r.resolved_from), (d, None));
    }
}
