//! HTTP: routes, the OpenAPI document, middleware and extractors.
//!
//! One module per resource, mirroring `app/`; each has a `routes()` that
//! registers its handlers together with their OpenAPI operations
//! (utoipa-axum), so the served routes and the document come from one list
//! and cannot diverge. Handlers only parse and call one app-layer operation.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use vt_api::{ErrorBody, ErrorCode, IDEMPOTENT_REPLAYED, SEQ_HEADER};

use crate::{ApiErr, ApiResult, Committed, ControlPlane};

mod apps;
mod channel;
mod deploys;
mod envs;
mod events;
mod exec;
mod extract;
mod instances;
mod middleware;
mod nodes;
mod orgs;
mod releases;
mod routes;
mod schema;
mod secrets;
mod system;
mod tokens;
mod volumes;
mod workspaces;

pub use extract::{parse_json, parse_query, JsonBody, QueryParams, MAX_BODY};

type Cp = State<Arc<ControlPlane>>;
type Out<T> = ApiResult<Json<T>>;

/// Every `/v1` operation, by resource.
/// A request to a WebSocket endpoint that is not an upgrade: 426 when the connection cannot be
/// upgraded, else 400, saying what to send (`client`: who sends it right, for the message).
pub(super) fn websocket_required(e: axum::extract::ws::rejection::WebSocketUpgradeRejection, client: &str) -> ApiErr {
    use axum::extract::ws::rejection::WebSocketUpgradeRejection;
    let status = match e {
        WebSocketUpgradeRejection::ConnectionNotUpgradable(_) => StatusCode::UPGRADE_REQUIRED,
        _ => StatusCode::BAD_REQUEST,
    };
    ApiErr::new(
        status,
        ErrorCode::MalformedRequest,
        format!(
            "this endpoint is a WebSocket: send `GET` with `Connection: Upgrade`, `Upgrade: websocket`, `Sec-WebSocket-Version: 13` and a `Sec-WebSocket-Key` ({client} does)"
        ),
    )
}

fn v1() -> OpenApiRouter<Arc<ControlPlane>> {
    OpenApiRouter::new()
        .merge(orgs::routes())
        .merge(apps::routes())
        .merge(envs::routes())
        .merge(releases::routes())
        .merge(deploys::routes())
        .merge(instances::routes())
        .merge(exec::routes())
        .merge(nodes::routes())
        .merge(channel::routes())
        .merge(routes::routes())
        .merge(secrets::routes())
        .merge(tokens::routes())
        .merge(volumes::routes())
        .merge(workspaces::routes())
        .merge(events::routes())
        .merge(system::routes())
}

/// The API as served: `/v1` (authenticated), `/v2` (the registry), `/v1/openapi.json`,
/// `/metrics` (admin), `/healthz`.
pub fn router(cp: Arc<ControlPlane>) -> Router {
    let (v1, _) = OpenApiRouter::new()
        .nest(
            "/v1",
            v1().fallback(not_found).layer(axum::middleware::from_fn_with_state(cp.clone(), middleware::context)),
        )
        .split_for_parts();
    let metrics = Router::new()
        .route("/metrics", get(metrics))
        .layer(axum::middleware::from_fn_with_state(cp.clone(), middleware::admin_only));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/v1/openapi.json", get(openapi))
        .merge(metrics)
        .merge(v1)
        .nest_service("/v2", crate::registry::service(&cp))
        .layer(axum::middleware::from_fn(middleware::request_id))
        .with_state(cp)
}

/// The OpenAPI document of the routes [`router`] serves.
pub fn api() -> utoipa::openapi::OpenApi {
    OpenApiRouter::with_openapi(ApiDoc::openapi()).nest("/v1", v1()).into_openapi()
}

/// `GET /v1/openapi.json`: the document, built once.
async fn openapi() -> Response {
    static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let doc = DOC.get_or_init(|| api().to_json().unwrap_or_default());
    ([(header::CONTENT_TYPE, "application/json")], doc.as_str()).into_response()
}

/// The OpenAPI document as committed under `api/openapi.json`.
pub fn openapi_json() -> String {
    let mut s = api().to_pretty_json().unwrap_or_default();
    s.push('\n');
    s
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "vt control plane",
        description = "The vt API. Every mutation accepts `Idempotency-Key`; errors are `ErrorBody` with a stable `code`. \
            Callers are tokens: `admin` (the operator), `node` (one node's agent), or an org role (`owner`, `deployer`, `viewer`). \
            A resource of an org the caller may not see answers 404, as if it did not exist; an action its role does not allow, 403."
    ),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

struct BearerAuth;
impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        openapi.security = Some(vec![SecurityRequirement::new("bearer", Vec::<String>::new())]);
    }
}

async fn not_found() -> ApiErr {
    ApiErr::not_found("no such endpoint; GET /v1/openapi.json lists them")
}

/// Prometheus text: the counters of the ingress running in this server.
async fn metrics(State(cp): Cp) -> ApiResult<Response> {
    let text = cp
        .ingress
        .metrics_text()
        .ok_or_else(|| ApiErr::not_found("no ingress runs in this server (started with `--no-ingress`)"))?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response())
}

/// 429 `rate_limited` with `Retry-After`: a client failed to log in too often (`vt-front`'s
/// limit on failed logins, on the API origin).
pub fn too_many_logins(wait: std::time::Duration) -> Response {
    let secs = wait.as_secs().max(1);
    let mut resp = ApiErr::new(
        StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::RateLimited,
        format!("too many failed logins from this address; try again in {secs} s"),
    )
    .into_response();
    resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
    resp
}

/// The longest error message and field path sent (in characters).
const MAX_MESSAGE: usize = 1024;
const MAX_FIELD: usize = 256;

impl IntoResponse for ApiErr {
    fn into_response(self) -> Response {
        let request_id = middleware::current_request_id();
        if let Some(internal) = &self.internal {
            tracing::error!(%request_id, code = self.code.as_str(), error = %internal, "request failed");
        }
        // Messages quote input through `vt_ids::shown`; this bounds whatever else slipped in.
        let body = ErrorBody {
            error: vt_api::ApiError {
                code: self.code,
                message: vt_ids::cut(&self.message, MAX_MESSAGE).into_owned(),
                field: self.field.map(|f| vt_ids::cut(&f, MAX_FIELD).into_owned()),
                request_id: request_id.to_string(),
            },
        };
        let mut resp = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            // Both schemes the API takes. A browser answers the basic challenge with the console
            // user's credentials it already holds for this realm (the web console's, at /app/).
            let h = resp.headers_mut();
            h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"vt\""));
            h.append(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"vt\", charset=\"UTF-8\""));
        }
        resp
    }
}

impl IntoResponse for Committed {
    fn into_response(self) -> Response {
        let mut resp = (self.status, [(header::CONTENT_TYPE, "application/json")], self.body).into_response();
        resp.headers_mut().insert(SEQ_HEADER, HeaderValue::from(self.seq));
        if self.replayed {
            resp.headers_mut().insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
        }
        resp
    }
}
