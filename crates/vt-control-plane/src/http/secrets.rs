//! An env's secrets, and an instance's secret values (for its node).

use axum::extract::{FromRequest, Path, Request, State};
use axum::Json;
use utoipa_axum::{router::OpenApiRouter, routes};
use vt_api::{ChangeSecrets, EnvSecrets, ErrorBody, InstanceSecrets};

use super::{Cp, JsonBody, Out};
use crate::{ApiErr, ApiResult, Committed, ControlPlane, Ctx};

pub(super) fn routes() -> OpenApiRouter<std::sync::Arc<ControlPlane>> {
    OpenApiRouter::new()
        .routes(routes!(secrets_list, secrets_change))
        .routes(routes!(secrets_deploy))
        .routes(routes!(instance_secrets))
}

type EnvPath = Path<(String, String, String)>;

/// A body that may carry secret values: errors name the field and what was
/// expected, never what was sent (serde's messages quote the offending value).
struct QuietBody<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned + utoipa::ToSchema + 'static> FromRequest<S> for QuietBody<T> {
    type Rejection = ApiErr;
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiErr> {
        match JsonBody::<T>::from_request(req, state).await {
            Ok(JsonBody(v)) => Ok(QuietBody(v)),
            Err(mut e) => {
                if let (vt_api::ErrorCode::InvalidField, Some(field)) = (e.code, &e.field) {
                    if let Some(expected) = e.message.split(", expected ").nth(1) {
                        e.message = format!("`{field}`: expected {expected} (what was sent is not repeated)");
                    } else if let Some((head, _)) = e.message.split_once("; got ") {
                        e.message = format!("{head} (what was sent is not repeated)");
                    }
                }
                Err(e)
            }
        }
    }
}

/// The env's secrets: names, versions, who set them when, what is staged. Never values.
#[utoipa::path(get, path = "/orgs/{org}/apps/{app}/envs/{env}/secrets", tag = "secrets",
    params(("org" = String, Path), ("app" = String, Path), ("env" = String, Path)),
    responses((status = 200, body = EnvSecrets), (status = "4XX", body = ErrorBody)))]
async fn secrets_list(State(cp): Cp, ctx: Ctx, Path((org, app, env)): EnvPath) -> Out<EnvSecrets> {
    let scope = cp.lookup_env_scope(&ctx, &org, &app, &env).await?;
    Ok(Json(cp.secrets_list(&ctx, &scope).await?))
}

/// Set and unset secrets (deployer). Without `stage`: a new secrets version,
/// with what was staged, and a deploy of kind `secrets` when the env runs a
/// release (`deploy` in the answer). Setting values the env already has makes no version.
#[utoipa::path(post, path = "/orgs/{org}/apps/{app}/envs/{env}/secrets", tag = "secrets", request_body = ChangeSecrets,
    params(("org" = String, Path), ("app" = String, Path), ("env" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 200, body = EnvSecrets), (status = "4XX", body = ErrorBody, description = "422 naming the field (`set.NAME`, `unset[i]`) for bad names, values that are empty, not base64 or too large, and limits; never quoting a value")))]
async fn secrets_change(
    State(cp): Cp,
    ctx: Ctx,
    Path((org, app, env)): EnvPath,
    QuietBody(req): QuietBody<ChangeSecrets>,
) -> ApiResult<Committed> {
    let scope = cp.lookup_env_scope(&ctx, &org, &app, &env).await?;
    cp.secrets_change(&ctx, &scope, req).await
}

/// Apply what is staged as one new secrets version, rolled out once (deployer).
#[utoipa::path(post, path = "/orgs/{org}/apps/{app}/envs/{env}/secrets/deploy", tag = "secrets",
    params(("org" = String, Path), ("app" = String, Path), ("env" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 200, body = EnvSecrets), (status = "4XX", body = ErrorBody, description = "409 when nothing is staged")))]
async fn secrets_deploy(State(cp): Cp, ctx: Ctx, Path((org, app, env)): EnvPath) -> ApiResult<Committed> {
    let scope = cp.lookup_env_scope(&ctx, &org, &app, &env).await?;
    cp.secrets_deploy(&ctx, &scope).await
}

/// The secret values an instance boots with: for the node it is placed on,
/// and nobody else (admins included).
#[utoipa::path(get, path = "/instances/{instance}/secrets", tag = "secrets", params(("instance" = String, Path, description = "id")),
    responses((status = 200, body = InstanceSecrets), (status = "4XX", body = ErrorBody)))]
async fn instance_secrets(State(cp): Cp, ctx: Ctx, Path(instance): Path<String>) -> Out<InstanceSecrets> {
    Ok(Json(cp.instance_secrets(&ctx, &instance).await?))
}
