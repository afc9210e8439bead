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

impl crate::ControlPlane {
    /// A pin on the aggregate's version as the store has it now. Read it BEFORE the views a
    /// plan is decided from ([`Self::fresh_pinned`]): pinned after, a change landing between
    /// the two reads would slip under the pin with the plan made from the older view.
    pub(crate) async fn pin(&self, aggregate_type: AggregateType, id: impl ToString) -> crate::ApiResult<Expectation> {
        let id = id.to_string();
        let version = self.store.aggregate_version(aggregate_type, &id).await?;
        Ok(Expectation { aggregate_type, aggregate_id: id, expected: ExpectedVersion::Exact(version) })
    }

    /// Aggregate `id`'s view fresh from the views (everything committed so far), with a pin on
    /// its version read before them: a plan made from the view commits only if nothing changed
    /// the aggregate since. `what` names it in the 404 when it is gone.
    pub(crate) async fn fresh_pinned<V: vt_views::View>(
        &self,
        aggregate_type: AggregateType,
        id: impl ToString,
        what: &str,
    ) -> crate::ApiResult<(V, Expectation)> {
        let pin = self.pin(aggregate_type, id).await?;
        self.fresh().await?;
        let view =
            self.view(&pin.aggregate_id).await?.ok_or_else(|| crate::ApiErr::not_found(format!("{what} vanished")))?;
        Ok((view, pin))
    }
}

pub fn created() -> StatusCode {
    StatusCode::CREATED
}

/// Sorted by a name, for lists in a stable order.
fn by_name<T>(mut items: Vec<T>, name: impl Fn(&T) -> &str) -> Vec<T> {
    items.sort_by(|a, b| name(a).cmp(name(b)));
    items
}
