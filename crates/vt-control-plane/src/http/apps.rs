//! `/v1/orgs/{org}/apps`.

use axum::extract::{Path, State};
use axum::Json;
use utoipa_axum::{router::OpenApiRouter, routes};
use vt_api::{App, CreateApp, ErrorBody, List};

use super::{Cp, JsonBody, Out};
use crate::{ApiResult, Committed, ControlPlane, Ctx};

pub(super) fn routes() -> OpenApiRouter<std::sync::Arc<ControlPlane>> {
    OpenApiRouter::new().routes(routes!(app_create, app_list)).routes(routes!(app_get))
}

/// Create an app (owner).
#[utoipa::path(post, path = "/orgs/{org}/apps", tag = "apps", request_body = CreateApp,
    params(("org" = String, Path, description = "id or name"), ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 201, body = App), (status = "4XX", body = ErrorBody)))]
async fn app_create(
    State(cp): Cp,
    ctx: Ctx,
    Path(org): Path<String>,
    JsonBody(req): JsonBody<CreateApp>,
) -> ApiResult<Committed> {
    cp.app_create(&ctx, &org, req).await
}

/// The org's apps, by name.
#[utoipa::path(get, path = "/orgs/{org}/apps", tag = "apps", params(("org" = String, Path, description = "id or name")),
    responses((status = 200, body = List<App>), (status = "4XX", body = ErrorBody)))]
async fn app_list(State(cp): Cp, ctx: Ctx, Path(org): Path<String>) -> Out<List<App>> {
    Ok(Json(List { items: cp.app_list(&ctx, &org).await? }))
}

#[utoipa::path(get, path = "/orgs/{org}/apps/{app}", tag = "apps",
    params(("org" = String, Path, description = "id or name"), ("app" = String, Path, description = "id or name")),
    responses((status = 200, body = App), (status = "4XX", body = ErrorBody)))]
async fn app_get(State(cp): Cp, ctx: Ctx, Path((org, app)): Path<(String, String)>) -> Out<App> {
    Ok(Json(cp.app_get(&ctx, &org, &app).await?))
}
