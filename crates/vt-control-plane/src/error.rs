//! API errors: a stable code and a message for users, kept apart from the
//! internal detail, which is logged once and never sent.

use axum::http::StatusCode;
use vt_api::ErrorCode;
use vt_store::{ClaimScope, StoreError};

#[derive(Debug)]
pub struct ApiErr {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    pub field: Option<String>,
    /// Logged, never returned.
    pub internal: Option<String>,
}

pub type ApiResult<T> = Result<T, ApiErr>;

impl ApiErr {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        ApiErr { status, code, message: message.into(), field: None, internal: None }
    }
    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::InvalidField, message).field(field)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, ErrorCode::Conflict, message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, ErrorCode::Forbidden, message)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, message)
    }
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        ApiErr {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: ErrorCode::Internal,
            message: "internal error; the server log has the details under this request id".into(),
            field: None,
            internal: Some(detail.to_string()),
        }
    }
}

impl From<StoreError> for ApiErr {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NameTaken { scope, name, .. } => name_taken(scope, &name),
            StoreError::VersionConflict { aggregate_type, aggregate_id, .. } => {
                let mut err = ApiErr::conflict(format!(
                    "{aggregate_type} `{aggregate_id}` changed concurrently, or does not exist; read it again and retry"
                ));
                err.internal = Some(format!("version conflict on {aggregate_type} {aggregate_id}"));
                err
            }
            StoreError::Refused(why) => ApiErr::conflict(why),
            other if other.is_conflict() => ApiErr::conflict("the request raced another change; retry it"),
            other => ApiErr::internal(other),
        }
    }
}

/// A unique name another resource holds. Says which field, never who holds it
/// (the holder may be another org).
fn name_taken(scope: ClaimScope, name: &str) -> ApiErr {
    let taken =
        |field: &str, message: String| ApiErr::new(StatusCode::CONFLICT, ErrorCode::NameTaken, message).field(field);
    match scope {
        ClaimScope::RouteHost(port) => taken(
            "hostname",
            format!("hostname `{name}` already has a route on port {port}; delete that route first (`vt route list` shows it) or use another hostname or port"),
        ),
        ClaimScope::Hostname => taken(
            "hostname",
            format!("hostname `{name}` is used by the routes of another org; use a host name of your own"),
        ),
        ClaimScope::RoutePort => {
            taken("port", format!("port {name} is already used by another route; retry to get the next free port"))
        }
        ClaimScope::Workspace => taken(
            "name",
            format!("a workspace named `{name}` already exists on this platform (names are paths on one origin); pick another name"),
        ),
        ClaimScope::Node => taken("name", format!("a node named `{name}` is already registered; pick another name")),
        ClaimScope::Subnet => ApiErr::conflict("two nodes registered at once and drew the same subnet; retry"),
        ClaimScope::Ipv4Range => {
            ApiErr::conflict("two nodes registered at once and drew the same IPv4 range; retry")
        }
        ClaimScope::Org | ClaimScope::App(_) | ClaimScope::Env(_) => {
            let what = match scope {
                ClaimScope::Org => "org",
                ClaimScope::App(_) => "app",
                _ => "env",
            };
            taken("name", format!("{what} `{name}` already exists; pick another name or use the existing one"))
        }
    }
}

impl From<vt_store::WaitError> for ApiErr {
    fn from(e: vt_store::WaitError) -> Self {
        let mut err = ApiErr::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::ProjectionLag,
            "views are behind the requested position; retry shortly",
        );
        err.internal = Some(e.to_string());
        err
    }
}

impl From<crate::auth::AuthError> for ApiErr {
    fn from(e: crate::auth::AuthError) -> Self {
        ApiErr::unauthorized(e.to_string())
    }
}
