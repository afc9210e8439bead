//! Handlers of ingress routes (`/v1/.../routes`, `/v1/routes`) and `GET /metrics`.

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use vt_api::*;

use super::{Cp, JsonBody, Out};
use crate::{ApiErr, ApiResult, Committed, Ctx};

/// Tries at taking the lowest free TCP port when concurrent creates race for it.
const PORT_RACE_RETRIES: usize = 8;

#[utoipa::path(post, path = "/v1/orgs/{org}/apps/{app}/envs/{env}/routes", operation_id = "route_create", tag = "routes", request_body = CreateRoute,
    params(("org" = String, Path), ("app" = String, Path), ("env" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 201, body = RouteView), (status = "4XX", body = ErrorBody, description = "409 `name_taken` with `field` `hostname` when the host name has a route on that port; 409 `conflict` with `field` `port` when the TCP range is exhausted")))]
pub(super) async fn route_create(
    State(cp): Cp,
    ctx: Ctx,
    Path((org, app, env)): Path<(String, String, String)>,
    JsonBody(req): JsonBody<CreateRoute>,
) -> ApiResult<Committed> {
    let (_, app, env) = cp.org_app_env(&org, &app, &env).await?;
    let mut attempt = 0;
    loop {
        let plan = cp.create_route(&ctx, &app, &env, req.clone()).await?;
        match cp.commit(&ctx, plan).await {
            // Another create took the port we picked: pick again.
            Err(e)
                if req.protocol == RouteProtocol::Tcp
                    && e.code == ErrorCode::NameTaken
                    && e.field.as_deref() == Some("port")
                    && attempt < PORT_RACE_RETRIES =>
            {
                attempt += 1
            }
            other => return other,
        }
    }
}

#[utoipa::path(get, path = "/v1/orgs/{org}/apps/{app}/envs/{env}/routes", operation_id = "route_list", tag = "routes",
    params(("org" = String, Path), ("app" = String, Path), ("env" = String, Path)), responses((status = 200, body = List<RouteView>, description = "by port, then hostname")))]
pub(super) async fn route_list(
    State(cp): Cp,
    Path((org, app, env)): Path<(String, String, String)>,
) -> Out<List<RouteView>> {
    let (_, _, env) = cp.org_app_env(&org, &app, &env).await?;
    Ok(Json(List { items: cp.list_routes(&env).await? }))
}

#[utoipa::path(get, path = "/v1/orgs/{org}/apps/{app}/envs/{env}/routes/{route}", operation_id = "route_get", tag = "routes",
    params(("org" = String, Path), ("app" = String, Path), ("env" = String, Path), ("route" = String, Path, description = "id, or a hostname with one route")),
    responses((status = 200, body = RouteView), (status = "4XX", body = ErrorBody)))]
pub(super) async fn route_get(
    State(cp): Cp,
    Path((org, app, env, route)): Path<(String, String, String, String)>,
) -> Out<RouteView> {
    let (_, _, env) = cp.org_app_env(&org, &app, &env).await?;
    Ok(Json(cp.route(&env, &route).await?))
}

#[utoipa::path(delete, path = "/v1/orgs/{org}/apps/{app}/envs/{env}/routes/{route}", operation_id = "route_delete", tag = "routes",
    params(("org" = String, Path), ("app" = String, Path), ("env" = String, Path), ("route" = String, Path, description = "id, or a hostname with one route"), ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 200, body = RouteView, description = "the deleted route"), (status = "4XX", body = ErrorBody)))]
pub(super) async fn route_delete(
    State(cp): Cp,
    ctx: Ctx,
    Path((org, app, env, route)): Path<(String, String, String, String)>,
) -> ApiResult<Committed> {
    let (_, _, env) = cp.org_app_env(&org, &app, &env).await?;
    let route = cp.route(&env, &route).await?;
    let plan = cp.delete_route(&ctx, &route)?;
    cp.commit(&ctx, plan).await
}

#[utoipa::path(get, path = "/v1/routes", operation_id = "route_list_all", tag = "routes",
    responses((status = 200, body = List<RouteView>, description = "every route of every env, by port, then hostname (admin and node tokens)"), (status = "4XX", body = ErrorBody)))]
pub(super) async fn route_list_all(State(cp): Cp, ctx: Ctx) -> Out<List<RouteView>> {
    Ok(Json(List { items: cp.all_routes(&ctx).await? }))
}

/// Prometheus text: the counters of the ingress running in this server.
pub(super) async fn metrics(State(cp): Cp) -> ApiResult<Response> {
    let text = cp
        .ingress
        .metrics_text()
        .ok_or_else(|| ApiErr::not_found("no ingress runs in this server (started with `--no-ingress`)"))?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response())
}
