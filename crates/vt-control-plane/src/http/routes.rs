//! Ingress routes of an env, and every route (`/v1/routes`).

use axum::extract::{Path, State};
use axum::Json;
use utoipa_axum::{router::OpenApiRouter, routes};
use vt_api::{CreateRoute, ErrorBody, List, Route};

use super::{Cp, JsonBody, Out};
use crate::{ApiResult, Committed, ControlPlane, Ctx};

pub(super) fn routes() -> OpenApiRouter<std::sync::Arc<ControlPlane>> {
    OpenApiRouter::new()
        .routes(routes!(route_create, route_list))
        .routes(routes!(route_get, route_delete))
        .routes(routes!(route_list_all))
}

type EnvPath = Path<(String, String, String)>;

/// Create a route to a process type of the env (deployer).
#[utoipa::path(post, path = "/orgs/{org}/apps/{app}/envs/{env}/routes", tag = "routes", request_body = CreateRoute,
    params(("org" = String, Path), ("app" = String, Path), ("env" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 201, body = Route), (status = "4XX", body = ErrorBody, description = "409 `name_taken` with `field` `hostname` when the host name has a route on that port or belongs to another org; 409 `conflict` with `field` `port` when the TCP range is exhausted")))]
async fn route_create(
    State(cp): Cp,
    ctx: Ctx,
    Path((org, app, env)): EnvPath,
    JsonBody(req): JsonBody<CreateRoute>,
) -> ApiResult<Committed> {
    let scope = cp.lookup_env_scope(&ctx, &org, &app, &env).await?;
    cp.route_create(&ctx, &scope, req).await
}

/// The env's routes, by port, then hostname.
#[utoipa::path(get, path = "/orgs/{org}/apps/{app}/envs/{env}/routes", tag = "routes",
    params(("org" = String, Path), ("app" = String, Path), ("env" = String, Path)), responses((status = 200, body = List<Route>), (status = "4XX", body = ErrorBody)))]
async fn route_list(State(cp): Cp, ctx: Ctx, Path((org, app, env)): EnvPath) -> Out<List<Route>> {
    let scope = cp.lookup_env_scope(&ctx, &org, &app, &env).await?;
    Ok(Json(List { items: cp.route_list(&ctx, &scope).await? }))
}

#[utoipa::path(get, path = "/orgs/{org}/apps/{app}/envs/{env}/routes/{route}", tag = "routes",
    params(("org" = String, Path), ("app" = String, Path), ("env" = String, Path), ("route" = String, Path, description = "id, or a hostname with one route")),
    responses((status = 200, body = Route), (status = "4XX", body = ErrorBody)))]
async fn route_get(
    State(cp): Cp,
    ctx: Ctx,
    Path((org, app, env, route)): Path<(String, String, String, String)>,
) -> Out<Route> {
    let scope = cp.lookup_env_scope(&ctx, &org, &app, &env).await?;
    Ok(Json(cp.route_get(&ctx, &scope, &route).await?))
}

/// Delete a route (deployer).
#[utoipa::path(delete, path = "/orgs/{org}/apps/{app}/envs/{env}/routes/{route}", tag = "routes",
    params(("org" = String, Path), ("app" = String, Path), ("env" = String, Path), ("route" = String, Path, description = "id, or a hostname with one route"), ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 200, body = Route, description = "the deleted route"), (status = "4XX", body = ErrorBody)))]
async fn route_delete(
    State(cp): Cp,
    ctx: Ctx,
    Path((org, app, env, route)): Path<(String, String, String, String)>,
) -> ApiResult<Committed> {
    let scope = cp.lookup_env_scope(&ctx, &org, &app, &env).await?;
    cp.route_delete(&ctx, &scope, &route).await
}

/// Every route of every env, by port, then hostname: what an ingress serves (admin and nodes).
#[utoipa::path(get, path = "/routes", tag = "routes", responses((status = 200, body = List<Route>), (status = "4XX", body = ErrorBody)))]
async fn route_list_all(State(cp): Cp, ctx: Ctx) -> Out<List<Route>> {
    Ok(Json(List { items: cp.route_list_all(&ctx).await? }))
}
