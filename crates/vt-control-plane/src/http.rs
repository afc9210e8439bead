//! HTTP: routes, extractors, the request context and the OpenAPI document.
//!
//! Handlers only parse and delegate: every rule lives in `app`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, FromRequestParts, Path, Request, State};
use axum::http::{header, request::Parts, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::OpenApi;
use vt_api::*;
use vt_events::{NewEvent, TokenRole};
use vt_ids::RequestId;
use vt_views::NodeView;

use crate::{app, auth, ApiErr, ApiResult, Committed, ControlPlane, Ctx, IdempotencyKey};

mod routes_agent;
mod routes_api;
mod routes_sched;
mod routes_system;
pub use routes_agent::agent_log_path;

tokio::task_local! {
    static REQUEST_ID: RequestId;
}

/// Largest request body accepted.
const MAX_BODY: usize = 1024 * 1024;
const WAIT_FOR_SEQ: Duration = Duration::from_secs(5);

pub fn router(cp: Arc<ControlPlane>) -> Router {
    let v1 = Router::new()
        .route("/orgs", post(org_create).get(org_list))
        .route("/orgs/{org}", get(org_get))
        .route("/orgs/{org}/apps", post(app_create).get(app_list))
        .route("/orgs/{org}/apps/{app}", get(app_get))
        .route("/orgs/{org}/apps/{app}/envs", post(env_create).get(env_list))
        .route("/orgs/{org}/apps/{app}/envs/{env}", get(env_get))
        .route("/orgs/{org}/apps/{app}/envs/{env}/describe", get(env_describe))
        .route("/orgs/{org}/apps/{app}/envs/{env}/scale", get(scale_get).put(scale_set))
        .route("/orgs/{org}/apps/{app}/envs/{env}/deploys", post(deploy_create).get(deploy_list))
        .route("/orgs/{org}/apps/{app}/envs/{env}/deploys/{deploy}", get(deploy_get))
        .route("/orgs/{org}/apps/{app}/envs/{env}/rollback", post(routes_sched::env_rollback))
        .route("/orgs/{org}/apps/{app}/envs/{env}/instances", get(instance_list))
        .route("/orgs/{org}/apps/{app}/envs/{env}/routes", post(routes_api::route_create).get(routes_api::route_list))
        .route(
            "/orgs/{org}/apps/{app}/envs/{env}/routes/{route}",
            get(routes_api::route_get).delete(routes_api::route_delete),
        )
        .route("/routes", get(routes_api::route_list_all))
        .route("/orgs/{org}/apps/{app}/releases", post(release_create).get(release_list))
        .route("/orgs/{org}/apps/{app}/releases/{release}", get(release_get))
        .route("/instances/{instance}", get(instance_get))
        .route("/instances/{instance}/status", post(instance_report_status))
        .route("/instances/{instance}/logs", get(routes_agent::instance_logs))
        .route("/nodes", post(node_register).get(node_list))
        .route("/nodes/{node}", get(node_get))
        .route("/nodes/{node}/heartbeat", post(node_heartbeat))
        .route("/nodes/{node}/instances", get(routes_agent::node_instances))
        .route("/events", get(event_list))
        .route("/tokens", post(token_create))
        .route("/system/status", get(system_status))
        .route("/system/scheduler", get(routes_sched::system_scheduler))
        .route("/system/boot-timings", get(routes_system::system_boot_timings))
        .route("/system/rebuild-views", post(system_rebuild_views))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(cp.clone(), context));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(routes_api::metrics))
        .route("/v1/openapi.json", get(|| async { Json(ApiDoc::openapi()) }))
        .nest("/v1", v1)
        .nest_service("/v2", crate::registry::service(&cp))
        .layer(axum::middleware::from_fn(request_id))
        .with_state(cp)
}

async fn not_found() -> ApiErr {
    ApiErr::not_found("no such endpoint; GET /v1/openapi.json lists them")
}

/// Outermost: a request id for every request, in a task-local for errors and in
/// a span for logs.
async fn request_id(req: Request, next: Next) -> Response {
    let id = RequestId::new();
    let span = tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.uri().path());
    let started = std::time::Instant::now();
    let mut resp = REQUEST_ID.scope(id, tracing::Instrument::instrument(next.run(req), span.clone())).await;
    span.in_scope(|| {
        tracing::info!(status = resp.status().as_u16(), elapsed_ms = started.elapsed().as_millis() as u64, "handled")
    });
    if let Ok(v) = HeaderValue::from_str(&id.to_string()) {
        resp.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    resp
}

fn current_request_id() -> RequestId {
    REQUEST_ID.try_with(|id| *id).unwrap_or_default()
}

impl IntoResponse for ApiErr {
    fn into_response(self) -> Response {
        let request_id = current_request_id();
        if let Some(internal) = &self.internal {
            tracing::error!(%request_id, code = self.code.as_str(), error = %internal, "request failed");
        }
        let body = ErrorBody {
            error: vt_api::ApiError {
                code: self.code,
                message: self.message,
                field: self.field,
                request_id: request_id.to_string(),
            },
        };
        let mut resp = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"vt\""));
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

/// Inside `/v1`: authenticate, then for mutations handle `Idempotency-Key`, and
/// for reads honour `Vt-Min-Seq`.
async fn context(State(cp): State<Arc<ControlPlane>>, req: Request, next: Next) -> Result<Response, ApiErr> {
    let unauthorized = |msg: &str| ApiErr::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, msg);
    let secret = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .ok_or_else(|| {
            unauthorized("missing `Authorization: Bearer <token>`; the admin token is in <data-dir>/admin-token")
        })?;
    let caller =
        auth::authenticate(cp.store.as_ref(), secret).await?.ok_or_else(|| unauthorized("the token is not valid"))?;
    let mutation = matches!(*req.method(), Method::POST | Method::PUT | Method::PATCH | Method::DELETE);
    let mut ctx = Ctx::new(current_request_id(), caller);
    let req = if mutation {
        let key = match req.headers().get(IDEMPOTENCY_KEY) {
            None => None,
            Some(v) => {
                let key = v
                    .to_str()
                    .ok()
                    .filter(|k| !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| (0x21..0x7f).contains(&b)));
                Some(
                    key.ok_or_else(|| {
                        ApiErr::invalid("Idempotency-Key", "`Idempotency-Key` must be 1-255 visible ASCII characters")
                    })?
                    .to_owned(),
                )
            }
        };
        match key {
            None => req,
            Some(key) => {
                let (parts, body) = req.into_parts();
                let bytes = axum::body::to_bytes(body, MAX_BODY).await.map_err(|_| too_large())?;
                let mut h = Sha256::new();
                h.update(parts.method.as_str());
                h.update(b"\n");
                h.update(parts.uri.path());
                h.update(b"\n");
                h.update(&bytes);
                let k = IdempotencyKey { scope: ctx.caller.actor().0, key, request_hash: hex::encode(h.finalize()) };
                if let Some(rec) = cp.store.idempotency_get(&k.scope, &k.key).await? {
                    return Ok(Committed::replay(&rec, &k)?.into_response());
                }
                ctx.idempotency = Some(k);
                Request::from_parts(parts, Body::from(bytes))
            }
        }
    } else {
        if let Some(v) = req.headers().get(MIN_SEQ_HEADER) {
            let seq: u64 = v
                .to_str()
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| ApiErr::invalid("Vt-Min-Seq", "`Vt-Min-Seq` must be a non-negative integer"))?;
            cp.projector.wait_for(seq, WAIT_FOR_SEQ).await?;
        }
        req
    };
    let mut req = req;
    req.extensions_mut().insert(ctx);
    Ok(next.run(req).await)
}

fn too_large() -> ApiErr {
    ApiErr::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::MalformedRequest,
        format!("the request body is larger than {MAX_BODY} bytes"),
    )
}

impl<S: Send + Sync> FromRequestParts<S> for Ctx {
    type Rejection = ApiErr;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiErr> {
        parts.extensions.get::<Ctx>().cloned().ok_or_else(|| ApiErr::internal("request context missing"))
    }
}

/// A strict JSON body: malformed JSON, wrong types, unknown and missing fields
/// are 4xx errors that name the field.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiErr;
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiErr> {
        if let Some(ct) = req.headers().get(header::CONTENT_TYPE) {
            let ct = ct.to_str().unwrap_or_default();
            if !ct.starts_with("application/json") {
                return Err(ApiErr::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    ErrorCode::MalformedRequest,
                    format!("send `Content-Type: application/json`, not `{ct}`"),
                ));
            }
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|_| too_large())?;
        parse_json(&bytes).map(JsonBody)
    }
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiErr> {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => {}
        None => {
            return Err(ApiErr::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::MalformedRequest,
                "the request body is empty; send a JSON object",
            ))
        }
        Some(_) if serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_err() => {
            return Err(ApiErr::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::MalformedRequest,
                "the request body is not valid JSON; send a JSON object",
            ))
        }
        Some(_) => return Err(ApiErr::invalid("body", "the request body must be a JSON object")),
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let result: Result<T, _> = serde_path_to_error::deserialize(de);
    let err = match result {
        Ok(v) => return Ok(v),
        Err(e) => e,
    };
    let path = err.path().to_string();
    let inner = err.into_inner();
    if inner.is_syntax() || inner.is_eof() {
        return Err(ApiErr::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::MalformedRequest,
            format!("the request body is not valid JSON: {inner}"),
        ));
    }
    let msg = inner.to_string();
    let quoted = msg.split('`').nth(1).map(str::to_owned);
    let join = |name: &str| if path == "." || path.is_empty() { name.to_owned() } else { format!("{path}.{name}") };
    let message = msg.split(" at line ").next().unwrap_or(&msg).to_owned();
    if msg.starts_with("unknown field") {
        // The path already ends with the unknown key.
        return Err(ApiErr::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::UnknownField,
            format!("`{path}`: {message}; remove it or check its spelling"),
        )
        .field(path));
    }
    if msg.starts_with("missing field") {
        let field = join(quoted.as_deref().unwrap_or("?"));
        return Err(ApiErr::invalid(field.clone(), format!("missing field `{field}`")));
    }
    let field = if path == "." { "body".to_owned() } else { path };
    Err(ApiErr::invalid(field.clone(), format!("`{field}`: {message}")))
}

/// Query parameters, strictly parsed.
pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiErr;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiErr> {
        let q = parts.uri.query().unwrap_or_default();
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(q.as_bytes()));
        serde_path_to_error::deserialize(de).map(QueryParams).map_err(|e| {
            let field = e.path().to_string();
            let inner = e.into_inner();
            if field.is_empty() || field == "." {
                ApiErr::invalid("query", format!("bad query string: {inner}"))
            } else {
                ApiErr::invalid(field.clone(), format!("query parameter `{field}`: {inner}"))
            }
        })
    }
}

type Cp = State<Arc<ControlPlane>>;
type Out<T> = ApiResult<Json<T>>;

#[utoipa::path(post, path = "/v1/orgs", operation_id = "org_create", tag = "orgs", request_body = CreateOrg,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for a repeated key")),
    responses((status = 201, body = OrgView), (status = "4XX", body = ErrorBody)))]
async fn org_create(State(cp): Cp, ctx: Ctx, JsonBody(req): JsonBody<CreateOrg>) -> ApiResult<Committed> {
    cp.commit(&ctx, app::tenancy::create_org(&ctx, req)?).await
}

#[utoipa::path(get, path = "/v1/orgs", operation_id = "org_list", tag = "orgs", responses((status = 200, body = List<OrgView>)))]
async fn org_list(State(cp): Cp) -> Out<List<OrgView>> {
    Ok(Json(List { items: cp.list_orgs().await? }))
}

#[utoipa::path(get, path = "/v1/orgs/{org}", operation_id = "org_get", tag = "orgs", params(("org" = String, Path, description = "id or name")),
    responses((status = 200, body = OrgView), (status = "4XX", body = ErrorBody)))]
async fn org_get(State(cp): Cp, Path(org): Path<String>) -> Out<OrgView> {
    Ok(Json(cp.org(&org).await?))
}

#[utoipa::path(post, path = "/v1/orgs/{org}/apps", operation_id = "app_create", tag = "apps", request_body = CreateApp,
    params(("org" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 201, body = AppView), (status = "4XX", body = ErrorBody)))]
async fn app_create(
    State(cp): Cp,
    ctx: Ctx,
    Path(org): Path<String>,
    JsonBody(req): JsonBody<CreateApp>,
) -> ApiResult<Committed> {
    let org = cp.org(&org).await?;
    cp.commit(&ctx, app::tenancy::create_app(&ctx, &org, req)?).await
}

#[utoipa::path(get, path = "/v1/orgs/{org}/apps", operation_id = "app_list", tag = "apps", params(("org" = String, Path)), responses((status = 200, body = List<AppView>)))]
async fn app_list(State(cp): Cp, Path(org): Path<String>) -> Out<List<AppView>> {
    let org = cp.org(&org).await?;
    Ok(Json(List { items: cp.list_apps(&org).await? }))
}

#[utoipa::path(get, path = "/v1/orgs/{org}/apps/{app}", operation_id = "app_get", tag = "apps", params(("org" = String, Path), ("app" = String, Path)),
    responses((status = 200, body = AppView), (status = "4XX", body = ErrorBody)))]
async fn app_get(State(cp): Cp, Path((org, app)): Path<(String, String)>) -> Out<AppView> {
    Ok(Json(cp.org_app(&org, &app).await?.1))
}

#[utoipa::path(post, path = "/v1/orgs/{org}/apps/{app}/envs", operation_id = "env_create", tag = "envs", request_body = CreateEnv,
    params(("org" = String, Path), ("app" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 201, body = EnvView), (status = "4XX", body = ErrorBody)))]
async fn env_create(
    State(cp): Cp,
    ctx: Ctx,
    Path((org, app)): Path<(String, String)>,
    JsonBody(req): JsonBody<CreateEnv>,
) -> ApiResult<Committed> {
    let (_, app) = cp.org_app(&org, &app).await?;
    cp.commit(&ctx, app::tenancy::create_env(&ctx, &app, req)?).await
}

#[utoipa::path(get, path = "/v1/orgs/{org}/apps/{app}/envs", operation_id = "env_list", tag = "envs", params(("org" = String, Path), ("app" = String, Path)),
    responses((status = 200, body = List<EnvView>)))]
async fn env_list(State(cp): Cp, Path((org, app)): Path<(String, String)>) -> Out<List<EnvView>> {
    let (_, app) = cp.org_app(&org, &app).await?;
    Ok(Json(List { items: cp.list_envs(&app).await? }))
}

#[utoipa::path(get, path = "/v1/orgs/{org}/apps/{app}/envs/{env}", operation_id = "env_get", tag = "envs",
    params(("org" = String, Path), ("app" = String, Path), ("env" = String, Path)), responses((status = 200, body = EnvView), (status = "4XX", body = ErrorBody)))]
async fn env_get(State(cp): Cp, Path((org, app, env)): Path<(String, String, String)>) -> Out<EnvView> {
    Ok(Json(cp.org_app_env(&org, &app, &env).await?.2))
}

#[utoipa::path(get, path = "/v1/orgs/{org}/apps/{app}/envs/{env}/describe", operation_id = "env_describe", tag = "envs",
    params(("org" = String, Path), ("app" = String, Path), ("env" = String, Path)), responses((status = 200, body = EnvDescription), (status = "4XX", body = ErrorBody)))]
async fn env_describe(State(cp): Cp, Path((org, app, env)): Path<(String, String, String)>) -> Out<EnvDescription> {
    let (_, app, env) = cp.org_app_env(&org, &app, &env).await?;
    Ok(Json(cp.describe(&app, &env).await?))
}

#[utoipa::path(get, path = "/v1/orgs/{org}/apps/{app}/envs/{env}/scale", operation_id = "scale_get", tag = "scale",
    params(("org" = String, Path), ("app" = String, Path), ("env" = String, Path)), responses((status = 200, body = List<ScaleView>)))]
async fn scale_get(State(cp): Cp, Path((org, app, env)): Path<(String, String, String)>) -> Out<List<ScaleView>> {
    let (_, _, env) = cp.org_app_env(&org, &app, &env).await?;
    Ok(Json(List { items: cp.scales(&env).await? }))
}

#[utoipa::path(put, path = "/v1/orgs/{org}/apps/{app}/envs/{env}/scale", operation_id = "scale_set", tag = "scale", request_body = SetScale,
    params(("org" = String, Path), ("app" = String, Path), ("env" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 200, body = Vec<ScaleView>), (status = "4XX", body = ErrorBody)))]
async fn scale_set(
    State(cp): Cp,
    ctx: Ctx,
    Path((org, app, env)): Path<(String, String, String)>,
    JsonBody(req): JsonBody<SetScale>,
) -> ApiResult<Committed> {
    let (_, app, env) = cp.org_app_env(&org, &app, &env).await?;
    let plan = cp.set_scale(&ctx, &app, &env, req).await?;
    cp.commit(&ctx, plan).await
}

#[utoipa::path(post, path = "/v1/orgs/{org}/apps/{app}/envs/{env}/deploys", operation_id = "deploy_create", tag = "deploys", request_body = CreateDeploy,
    params(("org" = String, Path), ("app" = String, Path), ("env" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 201, body = DeployView), (status = "4XX", body = ErrorBody)))]
async fn deploy_create(
    State(cp): Cp,
    ctx: Ctx,
    Path((org, app, env)): Path<(String, String, String)>,
    JsonBody(req): JsonBody<CreateDeploy>,
) -> ApiResult<Committed> {
    let (_, app, env) = cp.org_app_env(&org, &app, &env).await?;
    let plan = cp.create_deploy(&ctx, &app, &env, req).await?;
    cp.commit(&ctx, plan).await
}

#[utoipa::path(get, path = "/v1/orgs/{org}/apps/{app}/envs/{env}/deploys", operation_id = "deploy_list", tag = "deploys",
    params(("org" = String, Path), ("app" = String, Path), ("env" = String, Path)), responses((status = 200, body = List<DeployView>)))]
async fn deploy_list(State(cp): Cp, Path((org, app, env)): Path<(String, String, String)>) -> Out<List<DeployView>> {
    let (_, _, env) = cp.org_app_env(&org, &app, &env).await?;
    Ok(Json(List { items: cp.list_deploys(&env).await? }))
}

#[utoipa::path(get, path = "/v1/orgs/{org}/apps/{app}/envs/{env}/deploys/{deploy}", operation_id = "deploy_get", tag = "deploys",
    params(("org" = String, Path), ("app" = String, Path), ("env" = String, Path), ("deploy" = String, Path)),
    responses((status = 200, body = DeployView), (status = "4XX", body = ErrorBody)))]
async fn deploy_get(
    State(cp): Cp,
    Path((org, app, env, deploy)): Path<(String, String, String, String)>,
) -> Out<DeployView> {
    let (_, _, env) = cp.org_app_env(&org, &app, &env).await?;
    Ok(Json(cp.deploy(&env, &deploy).await?))
}

#[utoipa::path(get, path = "/v1/orgs/{org}/apps/{app}/envs/{env}/instances", operation_id = "instance_list", tag = "instances",
    params(("org" = String, Path), ("app" = String, Path), ("env" = String, Path)), responses((status = 200, body = List<InstanceView>)))]
async fn instance_list(
    State(cp): Cp,
    Path((org, app, env)): Path<(String, String, String)>,
) -> Out<List<InstanceView>> {
    let (_, _, env) = cp.org_app_env(&org, &app, &env).await?;
    Ok(Json(List { items: cp.list_instances(&env).await? }))
}

#[utoipa::path(post, path = "/v1/orgs/{org}/apps/{app}/releases", operation_id = "release_create", tag = "releases", request_body = CreateRelease,
    params(("org" = String, Path), ("app" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 201, body = ReleaseView), (status = "4XX", body = ErrorBody)))]
async fn release_create(
    State(cp): Cp,
    ctx: Ctx,
    Path((org, app)): Path<(String, String)>,
    JsonBody(req): JsonBody<CreateRelease>,
) -> ApiResult<Committed> {
    let (_, app) = cp.org_app(&org, &app).await?;
    cp.commit(&ctx, cp.plan_release(&ctx, &app, req)?).await
}

#[utoipa::path(get, path = "/v1/orgs/{org}/apps/{app}/releases", operation_id = "release_list", tag = "releases",
    params(("org" = String, Path), ("app" = String, Path)), responses((status = 200, body = List<ReleaseView>)))]
async fn release_list(State(cp): Cp, Path((org, app)): Path<(String, String)>) -> Out<List<ReleaseView>> {
    let (_, app) = cp.org_app(&org, &app).await?;
    Ok(Json(List { items: cp.list_releases(&app).await? }))
}

#[utoipa::path(get, path = "/v1/orgs/{org}/apps/{app}/releases/{release}", operation_id = "release_get", tag = "releases",
    params(("org" = String, Path), ("app" = String, Path), ("release" = String, Path)), responses((status = 200, body = ReleaseView), (status = "4XX", body = ErrorBody)))]
async fn release_get(State(cp): Cp, Path((org, app, release)): Path<(String, String, String)>) -> Out<ReleaseView> {
    let (_, app) = cp.org_app(&org, &app).await?;
    Ok(Json(cp.release(&app, &release).await?))
}

#[utoipa::path(get, path = "/v1/instances/{instance}", operation_id = "instance_get", tag = "instances", params(("instance" = String, Path)),
    responses((status = 200, body = InstanceView), (status = "4XX", body = ErrorBody)))]
async fn instance_get(State(cp): Cp, Path(instance): Path<String>) -> Out<InstanceView> {
    Ok(Json(cp.instance(&instance).await?))
}

#[utoipa::path(post, path = "/v1/instances/{instance}/status", operation_id = "instance_report_status", tag = "instances", request_body = ReportInstanceStatus,
    params(("instance" = String, Path), ("Idempotency-Key" = Option<String>, Header)), responses((status = 200, body = InstanceView), (status = "4XX", body = ErrorBody)))]
async fn instance_report_status(
    State(cp): Cp,
    ctx: Ctx,
    Path(instance): Path<String>,
    JsonBody(req): JsonBody<ReportInstanceStatus>,
) -> ApiResult<Committed> {
    let instance = cp.instance(&instance).await?;
    let plan = cp.report_status(&ctx, &instance, req).await?;
    cp.commit(&ctx, plan).await
}

#[utoipa::path(post, path = "/v1/nodes", operation_id = "node_register", tag = "nodes", request_body = RegisterNode,
    params(("Idempotency-Key" = Option<String>, Header)), responses((status = 201, body = NodeView), (status = 200, body = NodeView), (status = "4XX", body = ErrorBody)))]
async fn node_register(State(cp): Cp, ctx: Ctx, JsonBody(req): JsonBody<RegisterNode>) -> ApiResult<Committed> {
    let plan = cp.register_node(&ctx, req).await?;
    cp.commit(&ctx, plan).await
}

#[utoipa::path(get, path = "/v1/nodes", operation_id = "node_list", tag = "nodes", responses((status = 200, body = List<NodeInfo>)))]
async fn node_list(State(cp): Cp) -> Out<List<NodeInfo>> {
    Ok(Json(List { items: cp.list_nodes().await? }))
}

#[utoipa::path(get, path = "/v1/nodes/{node}", operation_id = "node_get", tag = "nodes", params(("node" = String, Path)),
    responses((status = 200, body = NodeInfo), (status = "4XX", body = ErrorBody)))]
async fn node_get(State(cp): Cp, Path(node): Path<String>) -> Out<NodeInfo> {
    let node = cp.node(&node).await?;
    Ok(Json(cp.node_info(node).await?))
}

#[utoipa::path(post, path = "/v1/nodes/{node}/heartbeat", operation_id = "node_heartbeat", tag = "nodes", request_body = Heartbeat,
    params(("node" = String, Path)), responses((status = 200, body = NodeInfo), (status = "4XX", body = ErrorBody)))]
async fn node_heartbeat(
    State(cp): Cp,
    ctx: Ctx,
    Path(node): Path<String>,
    JsonBody(req): JsonBody<Heartbeat>,
) -> ApiResult<Committed> {
    let node: NodeView = cp.node(&node).await?;
    let plan = cp.heartbeat(&ctx, &node, req).await?;
    cp.commit(&ctx, plan).await
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct EventQuery {
    /// Return events with `seq > after` (default 0).
    after: Option<u64>,
    /// Page size, 1-1000 (default 100). Ignored with `follow`.
    limit: Option<u32>,
    /// Stream events as NDJSON, one envelope per line, as they are appended.
    follow: Option<bool>,
}

#[utoipa::path(get, path = "/v1/events", operation_id = "event_list", tag = "events", params(EventQuery),
    responses((status = 200, body = EventPage, description = "a page; with `follow=true`, an `application/x-ndjson` stream of envelopes"), (status = "4XX", body = ErrorBody)))]
async fn event_list(State(cp): Cp, QueryParams(q): QueryParams<EventQuery>) -> ApiResult<Response> {
    let after = q.after.unwrap_or(0);
    if q.follow.unwrap_or(false) {
        return Ok(follow(cp, after));
    }
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiErr::invalid("limit", format!("`limit` must be 1-1000; got {limit}")));
    }
    let head = cp.store.head().await?;
    let events = cp.store.read_events(after, limit).await?;
    let next_after = events.last().map(|e| e.seq).unwrap_or(after);
    Ok(Json(EventPage { events, next_after, head }).into_response())
}

fn follow(cp: Arc<ControlPlane>, after: u64) -> Response {
    let head = cp.store.subscribe_head();
    let stream = futures_util::stream::unfold((cp, after, head), |(cp, cursor, mut head)| async move {
        loop {
            match cp.store.read_events(cursor, 500).await {
                Ok(events) if !events.is_empty() => {
                    let next = events.last().map(|e| e.seq).unwrap_or(cursor);
                    let mut buf = Vec::new();
                    for e in &events {
                        if serde_json::to_writer(&mut buf, e).is_ok() {
                            buf.push(b'\n');
                        }
                    }
                    return Some((Ok::<_, Infallible>(Bytes::from(buf)), (cp, next, head)));
                }
                Ok(_) => {
                    tokio::select! {
                        _ = head.changed() => {}
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "event stream read failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    });
    ([(header::CONTENT_TYPE, "application/x-ndjson")], Body::from_stream(stream)).into_response()
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    pub name: String,
    pub role: TokenRole,
}

/// The secret appears in this response only.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct IssuedToken {
    pub token_id: String,
    pub name: String,
    pub role: TokenRole,
    pub secret: String,
}

#[utoipa::path(post, path = "/v1/tokens", operation_id = "token_create", tag = "tokens", request_body = CreateToken,
    responses((status = 201, body = IssuedToken), (status = "4XX", body = ErrorBody)))]
async fn token_create(State(cp): Cp, ctx: Ctx, JsonBody(req): JsonBody<CreateToken>) -> ApiResult<Response> {
    if !ctx.caller.is_admin() {
        return Err(ApiErr::forbidden("this needs an admin token"));
    }
    if ctx.idempotency.is_some() {
        // A replay would have to store the secret: refuse rather than keep it.
        return Err(ApiErr::invalid(
            "Idempotency-Key",
            "token creation cannot be replayed (the secret is never stored); send it without `Idempotency-Key`",
        ));
    }
    crate::validate::name("name", &req.name)?;
    let (secret, rec, event) = auth::issue(&req.name, req.role).map_err(ApiErr::internal)?;
    let ev = NewEvent::new(event, ctx.caller.actor(), Some(ctx.request_id));
    cp.store
        .append(vt_store::AppendRequest { events: vec![ev], tokens: vec![rec.clone()], ..Default::default() })
        .await?;
    Ok((StatusCode::CREATED, Json(IssuedToken { token_id: rec.token_id, name: req.name, role: req.role, secret }))
        .into_response())
}

#[utoipa::path(get, path = "/v1/system/status", operation_id = "system_status", tag = "system", responses((status = 200, body = SystemStatus)))]
async fn system_status(State(cp): Cp) -> Out<SystemStatus> {
    let backend = match cp.store.backend() {
        vt_store::Backend::Sqlite => "sqlite",
        vt_store::Backend::Postgres => "postgres",
    };
    Ok(Json(SystemStatus {
        version: env!("CARGO_PKG_VERSION").into(),
        backend: backend.into(),
        head: cp.store.head().await?,
        projections: cp
            .projector
            .status()
            .into_iter()
            .map(|s| ProjectionInfo { name: s.name, checkpoint: s.checkpoint, error: s.error })
            .collect(),
    }))
}

#[utoipa::path(post, path = "/v1/system/rebuild-views", operation_id = "system_rebuild_views", tag = "system",
    responses((status = 200, description = "views rebuilt from the log; lists rows that differ from before"), (status = "4XX", body = ErrorBody)))]
async fn system_rebuild_views(State(cp): Cp, ctx: Ctx) -> ApiResult<Response> {
    if !ctx.caller.is_admin() {
        return Err(ApiErr::forbidden("this needs an admin token"));
    }
    let report = crate::rebuild::rebuild_views(cp.store.clone()).await?;
    Ok(Json(report).into_response())
}

#[derive(OpenApi)]
#[openapi(
    info(title = "vt control plane", description = "The vt API. Every mutation accepts `Idempotency-Key`; errors are `ErrorBody` with a stable `code`."),
    paths(
        org_create, org_list, org_get, app_create, app_list, app_get, env_create, env_list, env_get, env_describe,
        scale_get, scale_set, deploy_create, deploy_list, deploy_get, instance_list, release_create, release_list, release_get,
        instance_get, instance_report_status, node_register, node_list, node_get, node_heartbeat, event_list, token_create,
        system_status, system_rebuild_views,
        routes_api::route_create, routes_api::route_list, routes_api::route_get, routes_api::route_delete, routes_api::route_list_all,
        routes_agent::node_instances, routes_agent::instance_logs,
        routes_sched::env_rollback, routes_sched::system_scheduler, routes_system::system_boot_timings
    ),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

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

/// The OpenAPI document as committed under `api/openapi.json`.
pub fn openapi_json() -> String {
    let mut s = ApiDoc::openapi().to_pretty_json().unwrap_or_default();
    s.push('\n');
    s
}
