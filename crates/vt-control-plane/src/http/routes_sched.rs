//! Handlers of the scheduler's status and `rollback`.

use axum::extract::{Path, State};
use axum::Json;
use vt_api::*;

use super::{Cp, Out};
use crate::{ApiResult, Committed, Ctx};

#[utoipa::path(post, path = "/v1/orgs/{org}/apps/{app}/envs/{env}/rollback", operation_id = "env_rollback", tag = "deploys",
    params(("org" = String, Path), ("app" = String, Path), ("env" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 201, body = DeployView, description = "a deploy of kind `rollback` to the newest release in the env's deploy history other than the desired one"),
        (status = "4XX", body = ErrorBody, description = "409 `conflict` when the env has no previous release")))]
pub(super) async fn env_rollback(
    State(cp): Cp,
    ctx: Ctx,
    Path((org, app, env)): Path<(String, String, String)>,
) -> ApiResult<Committed> {
    let (_, app, env) = cp.org_app_env(&org, &app, &env).await?;
    let plan = cp.rollback(&ctx, &app, &env).await?;
    cp.commit(&ctx, plan).await
}

#[utoipa::path(get, path = "/v1/system/scheduler", operation_id = "system_scheduler", tag = "system", responses((status = 200, body = SchedulerStatus)))]
pub(super) async fn system_scheduler(State(cp): Cp) -> Out<SchedulerStatus> {
    Ok(Json(cp.scheduler.status()))
}
