//! `/v1/events`: the log, by cursor; an org's members read their org's events.

use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use utoipa_axum::{router::OpenApiRouter, routes};
use vt_api::{ErrorBody, EventPage};

use super::{Cp, QueryParams};
use crate::{ApiResult, ControlPlane, Ctx};

pub(super) fn routes() -> OpenApiRouter<std::sync::Arc<ControlPlane>> {
    OpenApiRouter::new().routes(routes!(event_list))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct EventQuery {
    /// Return events with `seq > after` (default 0): a log position, 0 to 2^63-1.
    #[param(maximum = 9223372036854775807i64)]
    after: Option<u64>,
    /// Page size, 1-1000 (default 100). Ignored with `follow`.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// Stream events as NDJSON, one envelope per line, as they are appended.
    follow: Option<bool>,
    /// The last N events (1-1000) instead of a page after a position: not with `after` or `follow`.
    #[param(minimum = 1, maximum = 1000)]
    last: Option<u32>,
}

/// Events with `seq > after`: all of them for an admin, the org's for its members.
#[utoipa::path(get, path = "/events", tag = "events", params(EventQuery),
    responses((status = 200, body = EventPage, description = "a page; with `follow=true`, an `application/x-ndjson` stream of envelopes"), (status = "4XX", body = ErrorBody)))]
async fn event_list(State(cp): Cp, ctx: Ctx, QueryParams(q): QueryParams<EventQuery>) -> ApiResult<Response> {
    if let Some(n) = q.last {
        if q.after.is_some() || q.follow.unwrap_or(false) || q.limit.is_some() {
            return Err(crate::ApiErr::invalid(
                "last",
                "`last` is the newest events: give it without `after`, `limit` and `follow`",
            ));
        }
        return Ok(Json(cp.event_last(&ctx, n).await?).into_response());
    }
    let after = q.after.unwrap_or(0);
    if q.follow.unwrap_or(false) {
        let stream = cp.event_follow(&ctx, after)?;
        return Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], Body::from_stream(stream)).into_response());
    }
    Ok(Json(cp.event_list(&ctx, after, q.limit.unwrap_or(100)).await?).into_response())
}
