//! `/v1/orgs/{org}/apps/{app}/envs` and `describe`.

use axum::extract::{Path, State};
use axum::Json;
use utoipa_axum::{router::OpenApiRouter, routes};
use vt_api::{CreateEnv, Env, EnvDescription, ErrorBody, List};

use super::{Cp, JsonBody, Out};
use crate::{ApiResult, Committed, ControlPlane, Ctx};

pub(super) fn routes() -> OpenApiRouter<std::sync::Arc<ControlPlane>> {
    OpenApiRouter::new().routes(routes!(env_create, env_list)).routes(routes!(env_get)).routes(routes!(env_describe))
}

/// Create an env (owner).
#[utoipa::path(post, path = "/orgs/{org}/apps/{app}/envs", tag = "envs", request_body = CreateEnv,
    params(("org" = String, Path), ("app" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 201, body = Env), (status = "4XX", body = ErrorBody)))]
async fn env_create(
    State(cp): Cp,
    ctx: Ctx,
    Path((org, app)): Path<(String, String)>,
    JsonBody(req): JsonBody<CreateEnv>,
) -> ApiResult<Committed> {
    cp.env_create(&ctx, &org, &app, req).await
}

/// The app's envs, by name.
#[utoipa::path(get, path = "/orgs/{org}/apps/{app}/envs", tag = "envs", params(("org" = String, Path), ("app" = String, Path)),
    responses((status = 200, body = List<Env>), (status = "4XX", body = ErrorBody)))]
async fn env_list(State(cp): Cp, ctx: Ctx, Path((org, app)): Path<(String, String)>) -> Out<List<Env>> {
    Ok(Json(List { items: cp.env_list(&ctx, &org, &app).await? }))
}

#[utoipa::path(get, path = "/orgs/{org}/apps/{app}/envs/{env}", tag = "envs",
    params(("org" = String, Path), ("app" = String, Path), ("env" = String, Path)),
    responses((status = 200, body = Env), (status = "4XX", body = ErrorBody)))]
async fn env_get(State(cp): Cp, ctx: Ctx, Path((org, app, env)): Path<(String, String, String)>) -> Out<Env> {
    let scope = cp.lookup_env_scope(&ctx, &org, &app, &env).await?;
    Ok(Json(cp.env_get(&ctx, &scope).await?))
}

/// Desired next to current for each process type, and why they differ.
#[utoipa::path(get, path = "/orgs/{org}/apps/{app}/envs/{env}/describe", tag = "envs",
    params(("org" = String, Path), ("app" = String, Path), ("env" = String, Path)),
    responses((status = 200, body = EnvDescription), (status = "4XX", body = ErrorBody)))]
async fn env_describe(
    State(cp): Cp,
    ctx: Ctx,
    Path((org, app, env)): Path<(String, String, String)>,
) -> Out<EnvDescription> {
    let scope = cp.lookup_env_scope(&ctx, &org, &app, &env).await?;
    Ok(Json(cp.env_describe(&ctx, &scope).await?))
}
