//! `/v1/orgs/{org}/apps/{app}/releases`.

use axum::extract::{Path, State};
use axum::Json;
use utoipa_axum::{router::OpenApiRouter, routes};
use vt_api::{CreateRelease, ErrorBody, List, Release};

use super::{Cp, JsonBody, Out};
use crate::{ApiResult, Committed, ControlPlane, Ctx};

pub(super) fn routes() -> OpenApiRouter<std::sync::Arc<ControlPlane>> {
    OpenApiRouter::new().routes(routes!(release_create, release_list)).routes(routes!(release_get))
}

/// Create a release: an image of the org's repositories pinned by digest (a tag is resolved now) and a manifest (deployer).
#[utoipa::path(post, path = "/orgs/{org}/apps/{app}/releases", tag = "releases", request_body = CreateRelease,
    params(("org" = String, Path), ("app" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 201, body = Release), (status = "4XX", body = ErrorBody)))]
async fn release_create(
    State(cp): Cp,
    ctx: Ctx,
    Path((org, app)): Path<(String, String)>,
    JsonBody(req): JsonBody<CreateRelease>,
) -> ApiResult<Committed> {
    cp.release_create(&ctx, &org, &app, req).await
}

/// The app's releases, newest first.
#[utoipa::path(get, path = "/orgs/{org}/apps/{app}/releases", tag = "releases",
    params(("org" = String, Path), ("app" = String, Path)), responses((status = 200, body = List<Release>), (status = "4XX", body = ErrorBody)))]
async fn release_list(State(cp): Cp, ctx: Ctx, Path((org, app)): Path<(String, String)>) -> Out<List<Release>> {
    Ok(Json(List { items: cp.release_list(&ctx, &org, &app).await? }))
}

#[utoipa::path(get, path = "/orgs/{org}/apps/{app}/releases/{release}", tag = "releases",
    params(("org" = String, Path), ("app" = String, Path), ("release" = String, Path, description = "id")),
    responses((status = 200, body = Release), (status = "4XX", body = ErrorBody)))]
async fn release_get(
    State(cp): Cp,
    ctx: Ctx,
    Path((org, app, release)): Path<(String, String, String)>,
) -> Out<Release> {
    Ok(Json(cp.release_get(&ctx, &org, &app, &release).await?))
}
