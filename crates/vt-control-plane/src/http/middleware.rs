//! Middleware: a request id for every request (outermost), then inside `/v1`
//! authentication into a [`Ctx`], `Idempotency-Key` for mutations and
//! `Vt-Min-Seq` for reads.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use vt_api::{ErrorCode, IDEMPOTENCY_KEY, MIN_SEQ_HEADER, REQUEST_ID_HEADER};
use vt_ids::RequestId;

use super::extract::{check_operation, read_body};
use crate::auth::{self, AuthError};
use crate::authz::Caller;
use crate::{ApiErr, Committed, ControlPlane, Ctx, IdempotencyKey};

tokio::task_local! {
    static REQUEST_ID: RequestId;
}

/// Longest wait for `Vt-Min-Seq`.
const WAIT_FOR_SEQ: Duration = Duration::from_secs(5);

/// The request id of the request being handled (a fresh one outside a request).
pub(super) fn current_request_id() -> RequestId {
    REQUEST_ID.try_with(|id| *id).unwrap_or_default()
}

/// The one value of header `name`, if any: a request that repeats it is refused, since
/// which of two values counts would be a guess.
fn single<'h>(headers: &'h HeaderMap, name: &str) -> Result<Option<&'h HeaderValue>, ApiErr> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(ApiErr::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidField,
            format!("`{name}` is sent more than once; send it once"),
        )
        .field(name));
    }
    Ok(first)
}

/// Outermost: a request id for every request, in a task-local for errors and in
/// a span for logs. The line for each request is at debug level (`RUST_LOG=debug`): an
/// agent's heartbeats and long polls are routine, and a server at rest says nothing.
pub(super) async fn request_id(req: Request, next: Next) -> Response {
    let id = RequestId::new();
    let span =
        tracing::info_span!("request", request_id = %id, method = %req.method(), path = %logged_path(req.uri().path()));
    let started = std::time::Instant::now();
    let mut resp = REQUEST_ID.scope(id, tracing::Instrument::instrument(next.run(req), span.clone())).await;
    span.in_scope(|| {
        tracing::debug!(status = resp.status().as_u16(), elapsed_ms = started.elapsed().as_millis() as u64, "handled")
    });
    if let Ok(v) = HeaderValue::from_str(&id.to_string()) {
        resp.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    resp
}

/// A request's path as logged: an exec grant's path holds the grant's secret, a node stream's
/// its request id; both are cut off.
fn logged_path(path: &str) -> std::borrow::Cow<'_, str> {
    const EXEC: &str = "/v1/exec/";
    if path.starts_with(EXEC) {
        return "/v1/exec/{grant}".into();
    }
    match path.strip_prefix("/v1/nodes/").and_then(|rest| rest.split_once("/streams/")) {
        Some((node, _)) => format!("/v1/nodes/{node}/streams/{{request}}").into(),
        None => path.into(),
    }
}

/// The caller a request's `Authorization` stands for: `Bearer <token>`, or the console
/// user's basic auth (user `vt`, a token as the password: the console's is in
/// `<data-dir>/console-password`).
pub(super) async fn caller(cp: &ControlPlane, headers: &HeaderMap) -> Result<Caller, ApiErr> {
    let value = single(headers, header::AUTHORIZATION.as_str())
        .map_err(|_| ApiErr::unauthorized("send one `Authorization` header"))?
        .and_then(|v| v.to_str().ok())
        .ok_or(AuthError::Missing)?;
    let (scheme, credentials) = value.split_once(' ').ok_or(AuthError::Missing)?;
    let secret = if scheme.eq_ignore_ascii_case("bearer") {
        credentials.trim().to_owned()
    } else if scheme.eq_ignore_ascii_case("basic") {
        console_password(credentials.trim())?
    } else {
        return Err(AuthError::Missing.into());
    };
    Ok(auth::authenticate(cp.store.as_ref(), &secret, chrono::Utc::now()).await??)
}

/// The password of `Basic <base64 of vt:password>`.
fn console_password(encoded: &str) -> Result<String, ApiErr> {
    use base64::Engine as _;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()
        .and_then(|d| String::from_utf8(d).ok())
        .ok_or_else(|| ApiErr::unauthorized("`Authorization: Basic` must be base64 of `vt:<password>`"))?;
    match decoded.split_once(':') {
        Some((CONSOLE_USER, password)) => Ok(password.to_owned()),
        _ => Err(ApiErr::unauthorized(
            "the console user is `vt`; its password is in <data-dir>/console-password (or send `Authorization: Bearer <token>`)",
        )),
    }
}

/// The console user's name (basic auth on both origins).
pub const CONSOLE_USER: &str = "vt";

/// Inside `/v1`: authenticate, then for mutations handle `Idempotency-Key`, and
/// for reads honour `Vt-Min-Seq`.
pub(super) async fn context(State(cp): State<Arc<ControlPlane>>, req: Request, next: Next) -> Result<Response, ApiErr> {
    let caller = caller(&cp, req.headers()).await?;
    let (parts, body) = req.into_parts();
    if let Some(path) = parts.extensions.get::<MatchedPath>() {
        check_operation(&parts.method, path.as_str(), &parts)?;
    }
    let req = Request::from_parts(parts, body);
    let mutation = matches!(*req.method(), Method::POST | Method::PUT | Method::PATCH | Method::DELETE);
    let mut ctx = Ctx::new(current_request_id(), caller);
    let req = if mutation {
        let key = match single(req.headers(), IDEMPOTENCY_KEY)? {
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
                let bytes = read_body(&parts.headers, body).await?;
                let request_hash = cp.request_hash(parts.method.as_str(), parts.uri.path(), &bytes);
                let k = IdempotencyKey { scope: ctx.actor().0, key, request_hash };
                if let Some(rec) = cp.store.idempotency_get(&k.scope, &k.key).await? {
                    return Ok(Committed::replay(&rec, &k)?.into_response());
                }
                ctx.idempotency = Some(k);
                Request::from_parts(parts, Body::from(bytes))
            }
        }
    } else {
        if let Some(v) = single(req.headers(), MIN_SEQ_HEADER)? {
            // A log position: 0 to 2^63-1, the largest `seq` a store holds.
            let seq: u64 =
                v.to_str().ok().and_then(|s| s.parse().ok()).filter(|s| i64::try_from(*s).is_ok()).ok_or_else(
                    || {
                        ApiErr::new(
                            StatusCode::BAD_REQUEST,
                            ErrorCode::InvalidField,
                            format!("`Vt-Min-Seq` must be an integer from 0 to {}", i64::MAX),
                        )
                        .field("Vt-Min-Seq")
                    },
                )?;
            cp.projector.wait_for(seq, WAIT_FOR_SEQ).await?;
        }
        req
    };
    let mut req = req;
    req.extensions_mut().insert(ctx);
    Ok(next.run(req).await)
}

/// Outside `/v1` (`/metrics`): an admin token.
pub(super) async fn admin_only(
    State(cp): State<Arc<ControlPlane>>,
    req: Request,
    next: Next,
) -> Result<Response, ApiErr> {
    let ctx = Ctx::new(current_request_id(), caller(&cp, req.headers()).await?);
    ctx.authorize_cluster(crate::authz::Action::Operate)?;
    Ok(next.run(req).await)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_grant_is_never_logged() {
        assert_eq!(super::logged_path("/v1/exec/vtx_0123"), "/v1/exec/{grant}");
        assert_eq!(super::logged_path("/v1/orgs"), "/v1/orgs");
        assert_eq!(super::logged_path("/v1/nodes/n1/streams/vtq_0123"), "/v1/nodes/n1/streams/{request}");
    }
}
