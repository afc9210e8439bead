//! Extractors: the request context, strict JSON bodies, strict query strings.
//! Each rejects bad input with an [`ApiErr`] that names the field.
//!
//! A JSON body is accepted only when:
//! - `Content-Type` is `application/json` (the media type in any case, at most a
//!   `charset=utf-8` parameter); a body without one is refused (415);
//! - it is at most [`MAX_BODY`] bytes, with or without `Idempotency-Key` (413 says the
//!   limit), and its framing is sound (a malformed chunked body is 400, a stalled one 408);
//! - it is one JSON value and nothing after it, with no key twice in an object ([`vt_json`]);
//! - it fits the request type's schema in the OpenAPI document ([`super::schema`]): objects
//!   as objects (serde's array form of a struct is refused), the ranges, lengths and counts
//!   the document states;
//! - the type then parses it (names, ids, host names).
//!
//! Query strings are checked the same way against the operation's parameters: each parameter
//! at most once, no unknown ones, values of the parameter's type within its range (400).
//! Every operation, with or without parameters, refuses query parameters and a body its
//! document entry does not declare ([`check_operation`]).

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{header, request::Parts, HeaderMap, StatusCode};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use vt_api::ErrorCode;
use vt_ids::{cut, shown};

use super::schema::{Pass, Schema, Violation};
use crate::{ApiErr, Ctx};

/// The largest request body accepted, with or without `Idempotency-Key` (2 MiB: an env's
/// secrets, up to 1 MiB of values, fit in one request base64-encoded).
pub const MAX_BODY: usize = 2 * 1024 * 1024;

/// Longest serde message passed on (they may quote input).
const MESSAGE: usize = 300;

impl<S: Send + Sync> FromRequestParts<S> for Ctx {
    type Rejection = ApiErr;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiErr> {
        parts.extensions.get::<Ctx>().cloned().ok_or_else(|| ApiErr::internal("request context missing"))
    }
}

/// A strict JSON body (see the module docs).
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + utoipa::ToSchema + 'static> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiErr;
    async fn from_request(req: Request, _: &S) -> Result<Self, ApiErr> {
        let typed = json_content_type(req.headers())?;
        let (parts, body) = req.into_parts();
        let bytes = read_body(&parts.headers, body).await?;
        if !bytes.iter().all(u8::is_ascii_whitespace) && !typed {
            return Err(unsupported("the request has a body but no `Content-Type`"));
        }
        parse_json(&bytes).map(JsonBody)
    }
}

fn unsupported(why: impl std::fmt::Display) -> ApiErr {
    ApiErr::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ErrorCode::MalformedRequest,
        format!("{why}; send `Content-Type: application/json` with a JSON object"),
    )
    .field("Content-Type")
}

/// Whether the request says its body is JSON: `Ok(false)` without `Content-Type`, an error
/// for any other media type, parameters other than `charset=utf-8`, or two such headers.
fn json_content_type(headers: &HeaderMap) -> Result<bool, ApiErr> {
    let mut values = headers.get_all(header::CONTENT_TYPE).iter();
    let Some(value) = values.next() else { return Ok(false) };
    if values.next().is_some() {
        return Err(unsupported("the request has two `Content-Type` headers"));
    }
    let text = value.to_str().map_err(|_| unsupported("`Content-Type` is not ASCII"))?;
    if is_json(text) {
        Ok(true)
    } else {
        Err(unsupported(format_args!("`Content-Type` is {}", shown(text))))
    }
}

/// `application/json`, any case, optionally with `charset=utf-8` (any case, quoted or not).
fn is_json(content_type: &str) -> bool {
    let mut parts = content_type.split(';');
    let media = parts.next().unwrap_or_default().trim();
    media.eq_ignore_ascii_case("application/json")
        && parts.all(|p| {
            p.split_once('=').is_some_and(|(k, v)| {
                let v = v.trim();
                let v = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(v);
                k.trim().eq_ignore_ascii_case("charset") && v.eq_ignore_ascii_case("utf-8")
            })
        })
}

pub(super) fn too_large() -> ApiErr {
    ApiErr::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::MalformedRequest,
        format!("the request body is larger than 2 MiB ({MAX_BODY} bytes), the largest accepted"),
    )
}

/// A request body, whole: at most [`MAX_BODY`] bytes. A declared `Content-Length` above the
/// limit is refused before anything is read; a body that stalls (the server's body read
/// timeout, an `io::ErrorKind::TimedOut` from below) is 408; one whose framing is broken
/// (a malformed chunked encoding, a connection closed early) is 400.
pub(super) async fn read_body(headers: &HeaderMap, body: Body) -> Result<Bytes, ApiErr> {
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(too_large());
    }
    let mut buf = Vec::with_capacity(declared.map_or(0, |n| n as usize));
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| body_error(&e))?;
        if buf.len() + chunk.len() > MAX_BODY {
            return Err(too_large());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buf))
}

fn body_error(e: &axum::Error) -> ApiErr {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut) {
            return ApiErr::new(
                StatusCode::REQUEST_TIMEOUT,
                ErrorCode::MalformedRequest,
                "the request body stalled: nothing arrived within the server's body read timeout; send it again",
            );
        }
        source = err.source();
    }
    let mut err = ApiErr::new(
        StatusCode::BAD_REQUEST,
        ErrorCode::MalformedRequest,
        "the request body is malformed (broken `Transfer-Encoding: chunked` framing, or the connection \
         ended early); send it again",
    );
    err.internal = Some(format!("reading the body: {e}"));
    err
}

/// Parse a strict JSON body into `T` (see the module docs).
pub fn parse_json<T: DeserializeOwned + utoipa::ToSchema + 'static>(bytes: &[u8]) -> Result<T, ApiErr> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiErr::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::MalformedRequest,
            "the request body is empty; send a JSON object",
        ));
    }
    let value = vt_json::parse(bytes).map_err(|e| {
        let err = ApiErr::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::MalformedRequest,
            format!("the request body is not valid JSON: {e}"),
        );
        match e {
            vt_json::JsonError::DuplicateKey { path, key } if path.is_empty() => err.field(cut(&key, 64)),
            vt_json::JsonError::DuplicateKey { path, key } => err.field(format!("{path}.{}", cut(&key, 64))),
            vt_json::JsonError::Syntax(_) => err,
        }
    })?;
    let schema = Schema::of::<T>();
    schema.check(&value, Pass::Shape).map_err(body_violation)?;
    let parsed: T = serde_path_to_error::deserialize(&value).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." || path.is_empty() { "body".to_owned() } else { path };
        let message = cut(&e.into_inner().to_string(), MESSAGE).into_owned();
        ApiErr::invalid(field.clone(), format!("`{field}`: {message}"))
    })?;
    schema.check(&value, Pass::Full).map_err(body_violation)?;
    Ok(parsed)
}

fn body_violation(v: Violation) -> ApiErr {
    let field = if v.path.is_empty() { "body".to_owned() } else { v.path };
    if v.unknown_field {
        return ApiErr::new(StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::UnknownField, v.message).field(field);
    }
    ApiErr::invalid(field, v.message)
}

/// What the document declares for an operation: its query parameters and whether it takes a body.
struct Declared {
    query: Vec<String>,
    body: bool,
}

/// Every operation of the document, by method and path template (`/v1/orgs/{org}`), built once.
fn declared(method: &axum::http::Method, path: &str) -> Option<&'static Declared> {
    type Operations = std::collections::HashMap<(String, String), Declared>;
    static OPERATIONS: std::sync::OnceLock<Operations> = std::sync::OnceLock::new();
    let ops = OPERATIONS.get_or_init(|| {
        let doc = serde_json::to_value(super::api()).unwrap_or_default();
        let mut ops = Operations::new();
        for (path, item) in doc["paths"].as_object().into_iter().flatten() {
            for (method, op) in item.as_object().into_iter().flatten() {
                let query = op["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|p| p["in"] == "query")
                    .filter_map(|p| p["name"].as_str().map(str::to_owned))
                    .collect();
                let body = op.get("requestBody").is_some();
                ops.insert((method.to_ascii_uppercase(), path.clone()), Declared { query, body });
            }
        }
        ops
    });
    ops.get(&(method.as_str().to_owned(), path.to_owned()))
}

/// A request to the operation at `path` (its template) carries only what the document declares
/// for it: no query parameter it does not list, and no body when it takes none.
pub(super) fn check_operation(method: &axum::http::Method, path: &str, parts: &Parts) -> Result<(), ApiErr> {
    let Some(op) = declared(method, path) else { return Ok(()) };
    for (name, _) in form_urlencoded::parse(parts.uri.query().unwrap_or_default().as_bytes()) {
        if !op.query.iter().any(|q| *q == name) {
            let takes = if op.query.is_empty() { "none".to_owned() } else { op.query.join(", ") };
            return Err(ApiErr::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::UnknownField,
                format!("unknown query parameter {}; this endpoint takes: {takes}", shown(&name)),
            )
            .field(cut(&name, 64)));
        }
    }
    let declared_length = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok());
    let has_body =
        declared_length.is_some_and(|n| n.trim() != "0") || parts.headers.contains_key(header::TRANSFER_ENCODING);
    if !op.body && has_body {
        return Err(ApiErr::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::MalformedRequest,
            format!("`{method} {path}` takes no request body; send none"),
        ));
    }
    Ok(())
}

/// Query parameters, strictly parsed (see the module docs).
pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + utoipa::IntoParams + 'static> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiErr;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiErr> {
        parse_query(parts.uri.query().unwrap_or_default()).map(QueryParams)
    }
}

fn bad_query(field: &str, message: impl Into<String>) -> ApiErr {
    ApiErr::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidField, message).field(field)
}

/// Parse a query string into `T`, checked against `T`'s parameters.
pub fn parse_query<T: DeserializeOwned + utoipa::IntoParams + 'static>(query: &str) -> Result<T, ApiErr> {
    let schema = Schema::query::<T>();
    let mut values = Map::new();
    for (name, raw) in form_urlencoded::parse(query.as_bytes()) {
        let Some(param) = schema.property(&name) else {
            let known = schema.property_names();
            let takes = if known.is_empty() { "none".to_owned() } else { known.join(", ") };
            return Err(ApiErr::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::UnknownField,
                format!("unknown query parameter {}; this endpoint takes: {takes}", shown(&name)),
            )
            .field(cut(&name, 64)));
        };
        if values.contains_key(name.as_ref()) {
            return Err(bad_query(&name, format!("query parameter `{name}` is given twice; send it once")));
        }
        let value = typed(param, &raw).map_err(|want| {
            bad_query(&name, format!("query parameter `{name}` must be {want}; got {}", shown(&raw)))
        })?;
        values.insert(name.into_owned(), value);
    }
    let value = Value::Object(values);
    schema.check(&value, Pass::Full).map_err(|v| {
        let field = v.path.split(['.', '[']).next().unwrap_or_default().to_owned();
        bad_query(&field, format!("query parameter {}", v.message))
    })?;
    serde_path_to_error::deserialize(&value).map_err(|e| {
        let field = e.path().to_string();
        let message = cut(&e.into_inner().to_string(), MESSAGE).into_owned();
        bad_query(&field, format!("query parameter `{field}`: {message}"))
    })
}

/// A query string value as the JSON its parameter's schema describes; `Err` says what was expected.
fn typed(param: &Value, raw: &str) -> Result<Value, &'static str> {
    let types: Vec<&str> = match &param["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    match types.into_iter().find(|t| *t != "null").unwrap_or("string") {
        "integer" => {
            let digits = raw.strip_prefix('-').unwrap_or(raw);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err("an integer");
            }
            // Beyond 64 bits: a float, which the range check then refuses.
            Ok(raw.parse::<i64>().map(Value::from).or_else(|_| raw.parse::<u64>().map(Value::from)).unwrap_or_else(
                |_| {
                    let f = raw.parse::<f64>().unwrap_or(f64::MAX).clamp(f64::MIN, f64::MAX);
                    serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
                },
            ))
        }
        "number" => raw
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .ok_or("a number"),
        "boolean" => match raw {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            _ => Err("`true` or `false`"),
        },
        _ => Ok(Value::String(raw.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_media_types() {
        for ok in [
            "application/json",
            "APPLICATION/JSON",
            "Application/Json; charset=utf-8",
            "application/json;charset=UTF-8",
            "application/json; charset=\"utf-8\"",
        ] {
            assert!(is_json(ok), "{ok}");
        }
        for bad in [
            "application/jsonp",
            "application/json-patch+json",
            "text/json",
            "application/json; charset=latin1",
            "application/json; v=1",
            "application/json;",
            "application/x-www-form-urlencoded",
            "",
        ] {
            assert!(!is_json(bad), "{bad}");
        }
    }
}
