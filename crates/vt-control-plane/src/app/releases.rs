//! Releases: an image pinned by digest plus a manifest, immutable.
//!
//! `image` names an image of the built-in registry in a repository of the
//! release's org (`<org>/...`): a node runs only images of its instances'
//! orgs, and pulls only what it runs. It is pinned by digest, or a tag
//! resolved here (`<org>/web:v1`, `<org>/web` for `latest`) and recorded in
//! `resolved_from`. When the digest names an index in the registry,
//! `image_digest` is its linux/amd64 manifest (what nodes run); otherwise the
//! digest of `image_ref`.

use vt_api::{CreateRelease, Release};
use vt_events::{AggregateType, Event, ReleaseCreated};
use vt_ids::ReleaseId;
use vt_image::oci::{ImageIndex, ManifestKind};
use vt_image::{Digest, ImageRef};
use vt_registry::Storage;
use vt_views::{AppView, OrgView, ReleaseView, ViewKind};

use super::{created, exists};
use crate::authz::Action;
use crate::lookup::authorize_in;
use crate::wire::{all, Wire};
use crate::{ApiErr, ApiResult, Committed, ControlPlane, Ctx, Plan};

/// Largest manifest accepted, in bytes.
const MAX_MANIFEST: usize = 256 * 1024;

/// What a release's `image` resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedImage {
    /// `repo@sha256:...`.
    pub image_ref: String,
    /// The manifest nodes run: the digest of `image_ref`, or an index's linux/amd64 manifest.
    pub image_digest: Digest,
    /// The tag reference the user gave, when there was one.
    pub resolved_from: Option<String>,
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

/// Parse a release's `image` and check it belongs to `org`: an image of the
/// built-in registry in a repository under the org's name.
pub fn parse_image(org: &OrgView, image: &str) -> ApiResult<ImageRef> {
    let r = ImageRef::parse(image).map_err(|e| ApiErr::invalid("image", format!("`image`: {e}")))?;
    if let Some(host) = r.registry() {
        return Err(ApiErr::invalid(
            "image",
            format!(
                "`image` is in another registry ({host}); nodes pull from this server's registry only: push it with `vt image push PATH --repo {}/...`",
                org.name
            ),
        ));
    }
    if r.namespace() != org.name {
        return Err(ApiErr::invalid(
            "image",
            format!(
                "`image` is in repository `{}`, which is not org `{}`'s; its images live under `{}/`",
                r.repository(),
                org.name,
                org.name
            ),
        ));
    }
    Ok(r)
}

/// Resolve a release's image: a digest passes through (an index in the
/// registry is resolved to its linux/amd64 manifest); a tag is looked up in
/// the built-in registry.
pub fn resolve_image(registry: Option<&Storage>, image: &ImageRef) -> ApiResult<ResolvedImage> {
    let repo = image.repository();
    if let Some(digest) = image.digest() {
        let platform = match registry {
            Some(reg) => platform_digest(reg, repo, digest)?,
            None => None,
        };
        return Ok(ResolvedImage {
            image_ref: format!("{repo}@{digest}"),
            image_digest: platform.unwrap_or_else(|| digest.clone()),
            resolved_from: None,
        });
    }
    let tag = image.tag_or_latest();
    let registry = registry.ok_or_else(|| {
        ApiErr::invalid(
            "image",
            format!("`image` {image} is a tag, and this server has no registry to resolve it; pin it by digest: `{repo}@sha256:<64 hex>`"),
        )
    })?;
    let found = registry.resolve(repo, tag).map_err(ApiErr::internal)?.ok_or_else(|| {
        ApiErr::invalid(
            "image",
            format!("`image`: tag `{tag}` of `{repo}` is not in the registry; push it with `vt image push PATH --repo {repo} --tag {tag}`, or pin a digest"),
        )
    })?;
    let image_digest = platform_digest(registry, repo, &found.digest)?.unwrap_or_else(|| found.digest.clone());
    Ok(ResolvedImage {
        image_ref: format!("{repo}@{}", found.digest),
        image_digest,
        resolved_from: Some(image.to_string()),
    })
}

/// The release's plan: the manifest parsed and normalized, the image resolved.
pub fn plan_release(ctx: &Ctx, app: &AppView, manifest: &str, image: ResolvedImage) -> ApiResult<Plan<Release>> {
    if manifest.len() > MAX_MANIFEST {
        return Err(ApiErr::invalid(
            "manifest",
            format!("`manifest` is {} bytes; the limit is {MAX_MANIFEST}", manifest.len()),
        ));
    }
    let manifest = vt_manifest::parse(manifest).map_err(|errors| {
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
        image_ref: image.image_ref,
        image_digest: image.image_digest.to_string(),
        resolved_from: image.resolved_from,
        manifest_hash: manifest.hash(),
        manifest: manifest.to_normalized_json(),
        created_at: ctx.now(),
    };
    let event = Event::ReleaseCreated(ReleaseCreated {
        org_id: app.org_id,
        app_id: app.id,
        release_id: id,
        image_ref: view.image_ref.clone(),
        image_digest: view.image_digest.clone(),
        resolved_from: view.resolved_from.clone(),
        manifest_hash: view.manifest_hash.clone(),
        manifest: view.manifest.clone(),
    });
    Ok(Plan::new(created(), view.wire()).event(event).expect(exists(AggregateType::App, app.id)))
}

impl ControlPlane {
    pub async fn release_create(&self, ctx: &Ctx, org: &str, app: &str, req: CreateRelease) -> ApiResult<Committed> {
        let (org, app) = self.lookup_app_scope(ctx, org, app).await?;
        authorize_in(ctx, Action::Deploy, &org)?;
        let image = parse_image(&org, &req.image)?;
        let resolved = resolve_image(self.registry.storage(), &image)?;
        let plan = plan_release(ctx, &app, &req.manifest, resolved)?;
        self.commit(ctx, plan).await
    }

    /// Releases of an app, newest first.
    pub async fn release_list(&self, ctx: &Ctx, org: &str, app: &str) -> ApiResult<Vec<Release>> {
        let (_, app) = self.lookup_app_scope(ctx, org, app).await?;
        let mut items: Vec<ReleaseView> = self.views(Self::kind_query(ViewKind::Release).parent(app.id)).await?;
        items.sort_by_key(|item| std::cmp::Reverse(item.id));
        Ok(all(items))
    }

    pub async fn release_get(&self, ctx: &Ctx, org: &str, app: &str, release: &str) -> ApiResult<Release> {
        let (_, app) = self.lookup_app_scope(ctx, org, app).await?;
        Ok(self.lookup_release(&app, release).await?.wire())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn org(name: &str) -> OrgView {
        let now = chrono::Utc::now();
        OrgView { id: vt_ids::OrgId::new(), name: name.into(), created_at: now, updated_at: now }
    }

    #[test]
    fn images_must_be_the_orgs_own() {
        let d = format!("sha256:{}", "a".repeat(64));
        let acme = org("acme");
        let ok = parse_image(&acme, &format!("acme/web@{d}")).unwrap();
        let r = resolve_image(None, &ok).unwrap();
        assert_eq!(
            (r.image_ref, r.image_digest.to_string(), r.resolved_from),
            (format!("acme/web@{d}"), d.clone(), None)
        );
        for (bad, says) in [
            (format!("other/web@{d}"), "not org `acme`'s"),
            (format!("registry.example/acme/web@{d}"), "another registry"),
            ("acme/web:.bad".to_owned(), "invalid tag"),
            (format!("acme/web@sha512:{d}"), "invalid digest"),
        ] {
            let err = parse_image(&acme, &bad).unwrap_err();
            assert_eq!(err.field.as_deref(), Some("image"));
            assert!(err.message.contains(says), "{bad}: {}", err.message);
        }
        let tagged = parse_image(&acme, "acme/web:v1").unwrap();
        let err = resolve_image(None, &tagged).unwrap_err();
        assert!(err.message.contains("is a tag"), "{}", err.message);
    }
}
