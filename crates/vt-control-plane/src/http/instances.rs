//! Instances: an env's list, one by id, a node's status report, logs.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use utoipa_axum::{router::OpenApiRouter, routes};
use vt_api::{ErrorBody, Instance, List, ReportInstanceStatus};

use super::{Cp, JsonBody, Out, QueryParams};
use crate::{ApiResult, Committed, ControlPlane, Ctx};

pub(super) fn routes() -> OpenApiRouter<std::sync::Arc<ControlPlane>> {
    OpenApiRouter::new()
        .routes(routes!(instance_list))
        .routes(routes!(instance_get))
        .routes(routes!(instance_report_status))
        .routes(routes!(instance_logs))
}

/// The env's instances, by process then id.
#[utoipa::path(get, path = "/orgs/{org}/apps/{app}/envs/{env}/instances", tag = "instances",
    params(("org" = String, Path), ("app" = String, Path), ("env" = String, Path)), responses((status = 200, body = List<Instance>), (status = "4XX", body = ErrorBody)))]
async fn instance_list(
    State(cp): Cp,
    ctx: Ctx,
    Path((org, app, env)): Path<(String, String, String)>,
) -> Out<List<Instance>> {
    let scope = cp.lookup_env_scope(&ctx, &org, &app, &env).await?;
    Ok(Json(List { items: cp.instance_list(&ctx, &scope).await? }))
}

/// An instance: its org's members, and the node it is placed on.
#[utoipa::path(get, path = "/instances/{instance}", tag = "instances", params(("instance" = String, Path, description = "id")),
    responses((status = 200, body = Instance), (status = "4XX", body = ErrorBody)))]
async fn instance_get(State(cp): Cp, ctx: Ctx, Path(instance): Path<String>) -> Out<Instance> {
    Ok(Json(cp.instance_get(&ctx, &instance).await?))
}

/// A node agent reports an instance's status (the node it is placed on).
#[utoipa::path(post, path = "/instances/{instance}/status", tag = "instances", request_body = ReportInstanceStatus,
    params(("instance" = String, Path), ("Idempotency-Key" = Option<String>, Header)), responses((status = 200, body = Instance), (status = "4XX", body = ErrorBody)))]
async fn instance_report_status(
    State(cp): Cp,
    ctx: Ctx,
    Path(instance): Path<String>,
    JsonBody(req): JsonBody<ReportInstanceStatus>,
) -> ApiResult<Committed> {
    cp.instance_report_status(&ctx, &instance, req).await
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct LogQuery {
    /// Keep the response open and send new lines as they are written, until the instance ends.
    follow: Option<bool>,
    /// Start with the last N lines of the backlog (default: all of it), at most 1,000,000.
    #[param(maximum = 1000000)]
    tail: Option<usize>,
}

#[utoipa::path(get, path = "/instances/{instance}/logs", tag = "instances", params(("instance" = String, Path), LogQuery),
    responses((status = 200, content_type = "text/plain", description = "one line per output chunk: `<RFC3339 time> <stdout|stderr> <text>`; with `follow=true`, streamed until the instance ends"), (status = "4XX", body = ErrorBody)))]
async fn instance_logs(
    State(cp): Cp,
    ctx: Ctx,
    Path(instance): Path<String>,
    QueryParams(q): QueryParams<LogQuery>,
) -> ApiResult<Response> {
    let stream = cp.instance_logs(&ctx, &instance, q.tail, q.follow.unwrap_or(false)).await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], Body::from_stream(stream)).into_response())
}
