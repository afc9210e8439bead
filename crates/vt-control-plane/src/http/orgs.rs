//! `/v1/orgs`.

use axum::extract::{Path, State};
use axum::Json;
use utoipa_axum::{router::OpenApiRouter, routes};
use vt_api::{CreateOrg, ErrorBody, List, Org};

use super::{Cp, JsonBody, Out};
use crate::{ApiResult, Committed, ControlPlane, Ctx};

pub(super) fn routes() -> OpenApiRouter<std::sync::Arc<ControlPlane>> {
    OpenApiRouter::new().routes(routes!(org_create, org_list)).routes(routes!(org_get))
}

/// Create an org (admin).
#[utoipa::path(post, path = "/orgs", tag = "orgs", request_body = CreateOrg,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for a repeated key")),
    responses((status = 201, body = Org), (status = "4XX", body = ErrorBody)))]
async fn org_create(State(cp): Cp, ctx: Ctx, JsonBody(req): JsonBody<CreateOrg>) -> ApiResult<Committed> {
    cp.org_create(&ctx, req).await
}

/// The orgs the caller may see (an org's token: its own), by name.
#[utoipa::path(get, path = "/orgs", tag = "orgs", responses((status = 200, body = List<Org>), (status = "4XX", body = ErrorBody)))]
async fn org_list(State(cp): Cp, ctx: Ctx) -> Out<List<Org>> {
    Ok(Json(List { items: cp.org_list(&ctx).await? }))
}

#[utoipa::path(get, path = "/orgs/{org}", tag = "orgs", params(("org" = String, Path, description = "id or name")),
    responses((status = 200, body = Org), (status = "4XX", body = ErrorBody)))]
async fn org_get(State(cp): Cp, ctx: Ctx, Path(org): Path<String>) -> Out<Org> {
    Ok(Json(cp.org_get(&ctx, &org).await?))
}
