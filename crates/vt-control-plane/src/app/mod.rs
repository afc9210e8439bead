//! The app layer: one module per resource. Every operation authorizes first
//! (lookups hide what the caller may not see; [`crate::Ctx::authorize`] checks
//! the action), then validates its input, reads what it decides from, and
//! commits a [`crate::Plan`]; queries read views and answer API resources.

use axum::http::StatusCode;
use vt_events::AggregateType;
use vt_store::{Expectation, ExpectedVersion};

pub mod apps;
pub mod backups;
pub mod boot_timings;
pub mod deploys;
pub mod enrollment;
pub mod envs;
pub mod events;
pub mod exec;
pub mod instances;
pub mod nodes;
pub mod orgs;
pub mod releases;
pub mod routes;
pub mod secrets;
pub mod snapshots;
pub mod system;
pub mod tokens;
pub mod volumes;
pub mod workspaces;

/// The aggregate must exist when the append commits (a parent that a command
/// found in a view cannot have vanished, and a stale view cannot invent one).
pub fn exists(aggregate_type: AggregateType, id: impl ToString) -> Expectation {
    Expectation { aggregate_type, aggregate_id: id.to_string(), expected: ExpectedVersion::Exists }
}

pub fn created() -> StatusCode {
    StatusCode::CREATED
}

/// Sorted by a name, for lists in a stable order.
fn by_name<T>(mut items: Vec<T>, name: impl Fn(&T) -> &str) -> Vec<T> {
    items.sort_by(|a, b| name(a).cmp(name(b)));
    items
}
