//! Instances: their desired and current state, their status as nodes report
//! it, their logs.

use axum::http::StatusCode;
use vt_api::{Instance, ReportInstanceStatus};
use vt_events::{AggregateType, Event, InstanceStatus, InstanceStatusReported};

use super::exists;
use crate::authz::Action;
use crate::logs::{LogError, LogSource, LogStream};
use crate::lookup::shown;
use crate::lookup::EnvScope;
use crate::wire::{all, Wire};
use crate::{ApiErr, ApiResult, Committed, ControlPlane, Ctx, Plan};

fn ip(field: &str, value: &str) -> ApiResult<()> {
    value
        .parse::<std::net::IpAddr>()
        .map(|_| ())
        .map_err(|_| ApiErr::invalid(field, format!("`{field}` must be an IPv6 or IPv4 address; got {}", shown(value))))
}

impl ControlPlane {
    /// Instances of an env, by process then id.
    pub async fn instance_list(&self, ctx: &Ctx, scope: &EnvScope) -> ApiResult<Vec<Instance>> {
        scope.authorize(ctx, Action::Read)?;
        Ok(all(self.instances_of(&scope.env).await?))
    }

    pub async fn instance_get(&self, ctx: &Ctx, instance: &str) -> ApiResult<Instance> {
        Ok(self.lookup_instance(ctx, instance, Action::Read).await?.wire())
    }

    /// A node agent reports an instance's current status: only the node it is
    /// placed on (or an admin). Terminal statuses are final.
    pub async fn instance_report_status(
        &self,
        ctx: &Ctx,
        instance: &str,
        req: ReportInstanceStatus,
    ) -> ApiResult<Committed> {
        let instance = self.lookup_instance(ctx, instance, Action::Agent).await?;
        if let Some(a) = &req.address {
            ip("address", a)?;
        }
        if req.health.is_some() && req.status != InstanceStatus::Running {
            return Err(ApiErr::invalid("health", "`health` is only reported with status `running`"));
        }
        if instance.status.is_terminal() && instance.status != req.status {
            return Err(ApiErr::conflict(format!(
                "instance {} is {} (final); a restarted instance gets a new id",
                instance.id,
                instance.status.as_str()
            )));
        }
        let mut view = instance.clone();
        let mut plan = Plan::new(StatusCode::OK, ()).expect(exists(AggregateType::Instance, instance.id));
        let address_changed = req.address.is_some() && req.address != instance.address;
        let health_changed = req.health.is_some() && req.health != instance.health;
        let boot_changed = req.boot.is_some() && req.boot != instance.boot;
        if address_changed
            || health_changed
            || boot_changed
            || (instance.status, &instance.reason, instance.exit_code) != (req.status, &req.reason, req.exit_code)
        {
            let e = InstanceStatusReported {
                org_id: instance.org_id,
                env_id: instance.env_id,
                instance_id: instance.id,
                node_id: instance.node_id,
                status: req.status,
                reason: req.reason,
                exit_code: req.exit_code,
                address: req.address,
                health: req.health,
                boot: req.boot,
            };
            // The answer is what the projection will make of it.
            view.apply_report(&e, ctx.now());
            plan = plan.event(Event::InstanceStatusReported(e));
        }
        self.commit(ctx, plan.respond(view.wire())).await
    }

    /// The instance's log lines: the last `tail` (or all), then with `follow`
    /// new ones until the instance ends or the server stops.
    pub async fn instance_logs(
        &self,
        ctx: &Ctx,
        instance: &str,
        tail: Option<usize>,
        follow: bool,
    ) -> ApiResult<LogStream> {
        let instance = self.lookup_instance(ctx, instance, Action::Read).await?;
        if self.dispatch.route(instance.node_id) == crate::channel::Route::NotConnected {
            return Err(self.node_not_connected(instance.node_id).await);
        }
        let store = self.store.clone();
        let id = instance.id.to_string();
        let closing = self.closing.subscribe();
        // Read the ended flag before the file: the last lines are never lost.
        let ended: crate::logs::Ended = Box::new(move || {
            let (store, id) = (store.clone(), id.clone());
            let closing = *closing.borrow();
            Box::pin(async move {
                if closing {
                    return true;
                }
                match store.view_get(vt_views::ViewKind::Instance, &id).await {
                    Ok(Some(row)) => {
                        row.decode::<vt_views::InstanceView>().map(|i| i.status.is_terminal()).unwrap_or(true)
                    }
                    _ => true,
                }
            })
        });
        self.dispatch.read(instance.id, instance.node_id, tail, follow, ended).await.map_err(|e| match e {
            LogError::Unreachable(m) => ApiErr::conflict(m),
            LogError::Failed(m) => ApiErr::new(
                StatusCode::BAD_GATEWAY,
                vt_api::ErrorCode::Unavailable,
                format!("the node could not serve the log: {m}"),
            ),
        })
    }

    /// 409: `node`'s agent has no channel to this control plane (named, with what to check).
    pub(crate) async fn node_not_connected(&self, node: vt_ids::NodeId) -> ApiErr {
        let name = match self.view::<vt_views::NodeView>(&node.to_string()).await {
            Ok(Some(n)) => format!("`{}` ({node})", n.name),
            _ => node.to_string(),
        };
        ApiErr::conflict(format!(
            "the agent of node {name} is not connected to this control plane, so it cannot serve logs or exec now; \
             is `vt server --role agent --join` running there? (`vt node get` shows its last heartbeat)"
        ))
    }
}
