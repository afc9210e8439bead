//! Extractors: the request context, strict JSON bodies, strict query strings.
//! Each rejects bad input with an [`ApiErr`] that names the field.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{header, request::Parts, StatusCode};
use serde::de::DeserializeOwned;
use vt_api::ErrorCode;

use super::middleware::too_large;
use crate::{ApiErr, Ctx};

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
