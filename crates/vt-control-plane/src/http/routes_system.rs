//! `GET /v1/system/boot-timings`: per-phase boot-timing percentiles.

use axum::extract::State;
use axum::Json;
use vt_api::*;

use super::{Cp, Out, QueryParams};

#[utoipa::path(get, path = "/v1/system/boot-timings", operation_id = "system_boot_timings", tag = "system", params(BootTimingsQuery),
    responses((status = 200, body = BootTimingSummary, description = "every phase in boot order, with count, p50/p95/p99 (nearest rank) and max in ms over the matching instances that reported it"),
        (status = "4XX", body = ErrorBody, description = "404 when `node` or `env` does not exist")))]
pub(super) async fn system_boot_timings(
    State(cp): Cp,
    QueryParams(q): QueryParams<BootTimingsQuery>,
) -> Out<BootTimingSummary> {
    Ok(Json(cp.boot_timings(&q).await?))
}
