//! Deploys, rollback and scale of an env.

use axum::extract::{Path, State};
use axum::Json;
use utoipa_axum::{router::OpenApiRouter, routes};
use vt_api::{CreateDeploy, Deploy, ErrorBody, List, Scale, SetScale};

use super::{Cp, JsonBody, Out};
use crate::{ApiResult, Committed, ControlPlane, Ctx};

pub(super) fn routes() -> OpenApiRouter<std::sync::Arc<ControlPlane>> {
    OpenApiRouter::new()
        .routes(routes!(deploy_create, deploy_list))
        .routes(routes!(deploy_get))
        .routes(routes!(env_rollback))
        .routes(routes!(scale_get, scale_set))
}

type EnvPath = Path<(String, String, String)>;

/// Deploy a release of the app onto the env (deployer).
#[utoipa::path(post, path = "/orgs/{org}/apps/{app}/envs/{env}/deploys", tag = "deploys", request_body = CreateDeploy,
    params(("org" = String, Path), ("app" = String, Path), ("env" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 201, body = Deploy), (status = "4XX", body = ErrorBody)))]
async fn deploy_create(
    State(cp): Cp,
    ctx: Ctx,
    Path((org, app, env)): EnvPath,
    JsonBody(req): JsonBody<CreateDeploy>,
) -> ApiResult<Committed> {
    let scope = cp.lookup_env_scope(&ctx, &org, &app, &env).await?;
    cp.deploy_create(&ctx, &scope, req).await
}

/// The env's deploys, newest first.
#[utoipa::path(get, path = "/orgs/{org}/apps/{app}/envs/{env}/deploys", tag = "deploys",
    params(("org" = String, Path), ("app" = String, Path), ("env" = String, Path)), responses((status = 200, body = List<Deploy>), (status = "4XX", body = ErrorBody)))]
async fn deploy_list(State(cp): Cp, ctx: Ctx, Path((org, app, env)): EnvPath) -> Out<List<Deploy>> {
    let scope = cp.lookup_env_scope(&ctx, &org, &app, &env).await?;
    Ok(Json(List { items: cp.deploy_list(&ctx, &scope).await? }))
}

#[utoipa::path(get, path = "/orgs/{org}/apps/{app}/envs/{env}/deploys/{deploy}", tag = "deploys",
    params(("org" = String, Path), ("app" = String, Path), ("env" = String, Path), ("deploy" = String, Path, description = "id")),
    responses((status = 200, body = Deploy), (status = "4XX", body = ErrorBody)))]
async fn deploy_get(
    State(cp): Cp,
    ctx: Ctx,
    Path((org, app, env, deploy)): Path<(String, String, String, String)>,
) -> Out<Deploy> {
    let scope = cp.lookup_env_scope(&ctx, &org, &app, &env).await?;
    Ok(Json(cp.deploy_get(&ctx, &scope, &deploy).await?))
}

/// Return the env to its previous release (deployer).
#[utoipa::path(post, path = "/orgs/{org}/apps/{app}/envs/{env}/rollback", tag = "deploys",
    params(("org" = String, Path), ("app" = String, Path), ("env" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 201, body = Deploy, description = "a deploy of kind `rollback` to the newest release in the env's deploy history other than the desired one"),
        (status = "4XX", body = ErrorBody, description = "409 `conflict` when the env has no previous release")))]
async fn env_rollback(State(cp): Cp, ctx: Ctx, Path((org, app, env)): EnvPath) -> ApiResult<Committed> {
    let scope = cp.lookup_env_scope(&ctx, &org, &app, &env).await?;
    cp.env_rollback(&ctx, &scope).await
}

/// The env's desired instance counts, by process.
#[utoipa::path(get, path = "/orgs/{org}/apps/{app}/envs/{env}/scale", tag = "scale",
    params(("org" = String, Path), ("app" = String, Path), ("env" = String, Path)), responses((status = 200, body = List<Scale>), (status = "4XX", body = ErrorBody)))]
async fn scale_get(State(cp): Cp, ctx: Ctx, Path((org, app, env)): EnvPath) -> Out<List<Scale>> {
    let scope = cp.lookup_env_scope(&ctx, &org, &app, &env).await?;
    Ok(Json(List { items: cp.scale_get(&ctx, &scope).await? }))
}

/// Set desired instance counts (deployer); answers every process's count.
#[utoipa::path(put, path = "/orgs/{org}/apps/{app}/envs/{env}/scale", tag = "scale", request_body = SetScale,
    params(("org" = String, Path), ("app" = String, Path), ("env" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 200, body = Vec<Scale>), (status = "4XX", body = ErrorBody)))]
async fn scale_set(
    State(cp): Cp,
    ctx: Ctx,
    Path((org, app, env)): EnvPath,
    JsonBody(req): JsonBody<SetScale>,
) -> ApiResult<Committed> {
    let scope = cp.lookup_env_scope(&ctx, &org, &app, &env).await?;
    cp.scale_set(&ctx, &scope, req).await
}
