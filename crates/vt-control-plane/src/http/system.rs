//! `/v1/system/...`: status, the scheduler, background tasks, boot timings, view repair.

use axum::extract::State;
use axum::Json;
use utoipa_axum::{router::OpenApiRouter, routes};
use vt_api::{
    BackgroundTask, BootTimingSummary, BootTimingsQuery, ErrorBody, GcReport, List, RebuildReport, SchedulerStatus,
    SystemStatus,
};

use super::{Cp, Out, QueryParams};
use crate::{ControlPlane, Ctx};

pub(super) fn routes() -> OpenApiRouter<std::sync::Arc<ControlPlane>> {
    OpenApiRouter::new()
        .routes(routes!(system_status))
        .routes(routes!(system_scheduler))
        .routes(routes!(system_tasks))
        .routes(routes!(system_boot_timings))
        .routes(routes!(system_rebuild_views))
        .routes(routes!(system_gc))
}

/// The store, the log's head, each projection's checkpoint (admin and nodes).
#[utoipa::path(get, path = "/system/status", tag = "system", responses((status = 200, body = SystemStatus), (status = "4XX", body = ErrorBody)))]
async fn system_status(State(cp): Cp, ctx: Ctx) -> Out<SystemStatus> {
    Ok(Json(cp.system_status(&ctx).await?))
}

/// The scheduler reconciler's last activation (admin and nodes).
#[utoipa::path(get, path = "/system/scheduler", tag = "system", responses((status = 200, body = SchedulerStatus), (status = "4XX", body = ErrorBody)))]
async fn system_scheduler(State(cp): Cp, ctx: Ctx) -> Out<SchedulerStatus> {
    Ok(Json(cp.system_scheduler(&ctx)?))
}

/// Every background task of the server with its status (admin and nodes).
#[utoipa::path(get, path = "/system/tasks", tag = "system", responses((status = 200, body = List<BackgroundTask>), (status = "4XX", body = ErrorBody)))]
async fn system_tasks(State(cp): Cp, ctx: Ctx) -> Out<List<BackgroundTask>> {
    Ok(Json(List { items: cp.system_tasks(&ctx)? }))
}

/// Per-phase boot-timing percentiles of the instances the caller may read.
#[utoipa::path(get, path = "/system/boot-timings", tag = "system", params(BootTimingsQuery),
    responses((status = 200, body = BootTimingSummary, description = "every phase in boot order, with count, p50/p95/p99 (nearest rank) and max in ms over the matching instances that reported it"),
        (status = "4XX", body = ErrorBody, description = "404 when `node` or `env` does not exist")))]
async fn system_boot_timings(
    State(cp): Cp,
    ctx: Ctx,
    QueryParams(q): QueryParams<BootTimingsQuery>,
) -> Out<BootTimingSummary> {
    Ok(Json(cp.system_boot_timings(&ctx, &q).await?))
}

/// Rebuild the views from the log; lists the rows that differed (admin).
#[utoipa::path(post, path = "/system/rebuild-views", tag = "system",
    responses((status = 200, body = RebuildReport), (status = "4XX", body = ErrorBody)))]
async fn system_rebuild_views(State(cp): Cp, ctx: Ctx) -> Out<RebuildReport> {
    Ok(Json(cp.system_rebuild_views(&ctx).await?))
}

/// Delete the registry blobs no image or release references (a day old or more) and abandoned
/// uploads, now rather than at the hourly run (admin). Safe to repeat.
#[utoipa::path(post, path = "/system/gc", tag = "system",
    responses((status = 200, body = GcReport), (status = "4XX", body = ErrorBody, description = "404 when the server runs no registry")))]
async fn system_gc(State(cp): Cp, ctx: Ctx) -> Out<GcReport> {
    Ok(Json(cp.system_gc(&ctx).await?))
}
