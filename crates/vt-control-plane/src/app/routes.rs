//! Ingress routes: a listener port (and, for TLS, a host name) to a process
//! type of an env and the port its instances listen on.
//!
//! Uniqueness is kept with claims taken in the append's transaction:
//! - [`ClaimScope::RouteHost`]`(port)` / host name: one TLS route per host name
//!   per listener port;
//! - [`ClaimScope::Hostname`] / host name, owned by an org: a host name belongs
//!   to the first org that routes it, until its last route there is deleted;
//!   another org's claim is a 409 on `hostname` that does not name the owner;
//! - [`ClaimScope::RoutePort`] / port: one TCP route per port (allocated,
//!   lowest free first, from the configured range).
//!
//! Deleting a route releases its claims in the same transaction.

use std::ops::RangeInclusive;
use std::sync::{Arc, RwLock};

use axum::http::StatusCode;
use vt_api::{CreateRoute, ErrorCode, Route, RouteProtocol};
use vt_events::{AggregateType, Event, RouteCreated, RouteDeleted};
use vt_ids::RouteId;
use vt_store::{Claim, ClaimScope, Expectation, ExpectedVersion};
use vt_views::{RouteView, ViewKind};

use super::exists;
use crate::authz::Action;
use crate::lookup::EnvScope;
use crate::wire::{all, Wire};
use crate::{ApiErr, ApiResult, Committed, ControlPlane, Ctx, Plan};

/// Tries at taking the lowest free TCP port when concurrent creates race for it.
const PORT_RACE_RETRIES: usize = 8;
/// The default TCP route port range.
pub const DEFAULT_TCP_PORTS: RangeInclusive<u16> = 20000..=20999;
/// The default listener port of TLS routes.
pub const DEFAULT_TLS_PORT: u16 = 443;

type MetricsSource = Arc<dyn Fn() -> String + Send + Sync>;

/// What the control plane knows of the ingress beside it: the port range it
/// allocates TCP routes from, and where `GET /metrics` reads counters.
pub struct IngressSettings {
    tcp_ports: RwLock<RangeInclusive<u16>>,
    metrics: RwLock<Option<MetricsSource>>,
}

impl Default for IngressSettings {
    fn default() -> Self {
        IngressSettings { tcp_ports: RwLock::new(DEFAULT_TCP_PORTS), metrics: RwLock::new(None) }
    }
}

impl IngressSettings {
    pub fn tcp_ports(&self) -> RangeInclusive<u16> {
        self.tcp_ports.read().map(|r| r.clone()).unwrap_or(DEFAULT_TCP_PORTS)
    }
    pub fn set_tcp_ports(&self, ports: RangeInclusive<u16>) {
        if let Ok(mut r) = self.tcp_ports.write() {
            *r = ports;
        }
    }
    /// Text in the Prometheus exposition format, served at `GET /metrics`.
    pub fn set_metrics(&self, source: impl Fn() -> String + Send + Sync + 'static) {
        if let Ok(mut m) = self.metrics.write() {
            *m = Some(Arc::new(source));
        }
    }
    pub fn metrics_text(&self) -> Option<String> {
        let source = self.metrics.read().ok()?.clone()?;
        Some(source())
    }
}

/// The listener claim of a route: its host name on its port (TLS), or its port (TCP).
fn listener_claim(route: &RouteView) -> Claim {
    let owner = route.id.to_string();
    match (route.protocol, &route.hostname) {
        (RouteProtocol::Tls, Some(h)) => Claim { scope: ClaimScope::RouteHost(route.port), name: h.clone(), owner },
        _ => Claim { scope: ClaimScope::RoutePort, name: route.port.to_string(), owner },
    }
}

/// The org's ownership of a TLS route's host name.
fn hostname_claim(route: &RouteView) -> Option<Claim> {
    let h = route.hostname.as_ref()?;
    Some(Claim { scope: ClaimScope::Hostname, name: h.clone(), owner: route.org_id.to_string() })
}

/// Routes in a stable order: by listener port, then host name, then id.
fn sorted(mut routes: Vec<RouteView>) -> Vec<Route> {
    routes.sort_by(|a, b| (a.port, &a.hostname, a.id).cmp(&(b.port, &b.hostname, b.id)));
    all(routes)
}

impl ControlPlane {
    /// Create a route. A TCP route gets the lowest port of the range that no
    /// route holds; a race for it is lost at commit, and the port is picked again.
    pub async fn route_create(&self, ctx: &Ctx, scope: &EnvScope, req: CreateRoute) -> ApiResult<Committed> {
        scope.authorize(ctx, Action::Deploy)?;
        let mut attempt = 0;
        loop {
            let plan = self.plan_route(ctx, scope, &req).await?;
            match self.commit(ctx, plan).await {
                // Another create took the port we picked: pick again.
                Err(e)
                    if req.protocol == RouteProtocol::Tcp
                        && e.code == ErrorCode::NameTaken
                        && e.field.as_deref() == Some("port")
                        && attempt < PORT_RACE_RETRIES =>
                {
                    attempt += 1
                }
                other => return other,
            }
        }
    }

    async fn plan_route(&self, ctx: &Ctx, scope: &EnvScope, req: &CreateRoute) -> ApiResult<Plan<Route>> {
        if req.backend_port == 0 {
            return Err(ApiErr::invalid("backend_port", "`backend_port` must be 1-65535"));
        }
        let range = self.ingress.tcp_ports();
        let (hostname, port) = match req.protocol {
            RouteProtocol::Tls => {
                let h = req.hostname.clone().ok_or_else(|| {
                    ApiErr::invalid("hostname", "a `tls` route needs `hostname`: the TLS server name clients ask for")
                })?;
                let port = req.port.unwrap_or(DEFAULT_TLS_PORT);
                if port == 0 {
                    return Err(ApiErr::invalid("port", "`port` must be 1-65535"));
                }
                if range.contains(&port) {
                    return Err(ApiErr::invalid(
                        "port",
                        format!(
                            "port {port} is in the TCP route range {}-{}; TLS routes listen outside it (default 443)",
                            range.start(),
                            range.end()
                        ),
                    ));
                }
                (Some(h.into_string()), port)
            }
            RouteProtocol::Tcp => {
                if req.hostname.is_some() {
                    return Err(ApiErr::invalid(
                        "hostname",
                        "a `tcp` route is matched by port alone; remove `hostname` (or use protocol `tls`)",
                    ));
                }
                if req.port.is_some() {
                    return Err(ApiErr::invalid(
                        "port",
                        "a `tcp` route's port is allocated by the server; remove `port`",
                    ));
                }
                (None, self.free_tcp_port(&range).await?)
            }
        };
        let (org, app, env) = (&scope.org, &scope.app, &scope.env);
        let id = RouteId::new();
        let view = RouteView {
            id,
            org_id: org.id,
            app_id: app.id,
            env_id: env.id,
            protocol: req.protocol,
            hostname: hostname.clone(),
            port,
            process: req.process.to_string(),
            backend_port: req.backend_port,
            proxy_protocol: req.proxy_protocol,
            created_at: ctx.now(),
        };
        let mut plan = Plan::new(StatusCode::CREATED, ())
            .event(Event::RouteCreated(RouteCreated {
                org_id: org.id,
                app_id: app.id,
                env_id: env.id,
                route_id: id,
                protocol: req.protocol,
                hostname,
                port,
                process: req.process.to_string(),
                backend_port: req.backend_port,
                proxy_protocol: req.proxy_protocol,
            }))
            .expect(exists(AggregateType::Env, env.id))
            // The org's claim first: another org's host name fails on it, saying nothing of the other route.
            .claim(listener_claim(&view));
        if let Some(owned) = hostname_claim(&view) {
            plan.claims.insert(0, owned);
        }
        Ok(plan.respond(view.wire()))
    }

    async fn free_tcp_port(&self, range: &RangeInclusive<u16>) -> ApiResult<u16> {
        for port in range.clone() {
            if self.store.claim_owner(ClaimScope::RoutePort, &port.to_string()).await?.is_none() {
                return Ok(port);
            }
        }
        Err(ApiErr::conflict(format!(
            "every TCP route port ({}-{}) is taken; delete a TCP route or start the server with a wider `--ingress-tcp-ports`",
            range.start(),
            range.end()
        ))
        .field("port"))
    }

    /// Delete a route; its port or host name is free once it commits (the org
    /// keeps a host name while another of its routes uses it).
    pub async fn route_delete(&self, ctx: &Ctx, scope: &EnvScope, route: &str) -> ApiResult<Committed> {
        scope.authorize(ctx, Action::Deploy)?;
        let route = self.lookup_route(&scope.env, route).await?;
        let mut plan = Plan::new(StatusCode::OK, route.clone().wire())
            .event(Event::RouteDeleted(RouteDeleted { org_id: route.org_id, env_id: route.env_id, route_id: route.id }))
            // Created and not yet deleted: a second delete cannot pass.
            .expect(Expectation {
                aggregate_type: AggregateType::Route,
                aggregate_id: route.id.to_string(),
                expected: ExpectedVersion::Exact(1),
            })
            .release(listener_claim(&route));
        if let (Some(owned), Some(h)) = (hostname_claim(&route), &route.hostname) {
            let others: Vec<RouteView> =
                self.views(Self::kind_query(ViewKind::Route).org(route.org_id).name(h.clone())).await?;
            if others.iter().all(|r| r.id == route.id) {
                plan = plan.release(owned);
            }
        }
        self.commit(ctx, plan).await
    }

    pub async fn route_get(&self, ctx: &Ctx, scope: &EnvScope, route: &str) -> ApiResult<Route> {
        scope.authorize(ctx, Action::Read)?;
        Ok(self.lookup_route(&scope.env, route).await?.wire())
    }

    pub async fn route_list(&self, ctx: &Ctx, scope: &EnvScope) -> ApiResult<Vec<Route>> {
        scope.authorize(ctx, Action::Read)?;
        Ok(sorted(self.views(Self::kind_query(ViewKind::Route).parent(scope.env.id)).await?))
    }

    /// Every route of every env: what an ingress serves.
    pub async fn route_list_all(&self, ctx: &Ctx) -> ApiResult<Vec<Route>> {
        ctx.authorize_cluster(Action::Read)?;
        Ok(sorted(self.views(Self::kind_query(ViewKind::Route)).await?))
    }
}
