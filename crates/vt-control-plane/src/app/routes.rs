//! Ingress routes: a listener port (and, for TLS, a host name) to a process
//! type of an env and the port its instances listen on.
//!
//! Uniqueness is kept with claims taken in the append's transaction:
//! - `route-host:<port>` / hostname: one TLS route per host name per listener port;
//! - `route-port` / port: one TCP route per port (allocated, lowest free first,
//!   from the configured range).
//!
//! Deleting a route releases its claims in the same transaction.

use std::ops::RangeInclusive;
use std::sync::{Arc, RwLock};

use axum::http::StatusCode;
use vt_api::{CreateRoute, RouteProtocol};
use vt_events::{AggregateType, Event, RouteCreated, RouteDeleted};
use vt_ids::RouteId;
use vt_store::{Claim, Expectation, ExpectedVersion};
use vt_views::{AppView, EnvView, RouteView, ViewKind};

use super::exists;
use crate::{validate, ApiErr, ApiResult, ControlPlane, Ctx, Plan};

/// Claim scope prefix of TLS host names; the listener port follows the colon.
pub const HOST_SCOPE: &str = "route-host:";
/// Claim scope of TCP listener ports.
pub const PORT_SCOPE: &str = "route-port";
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

fn claims(route: &RouteView) -> Claim {
    let owner = route.id.to_string();
    match (route.protocol, &route.hostname) {
        (RouteProtocol::Tls, Some(h)) => Claim { scope: format!("{HOST_SCOPE}{}", route.port), name: h.clone(), owner },
        _ => Claim { scope: PORT_SCOPE.into(), name: route.port.to_string(), owner },
    }
}

/// Routes in a stable order: by listener port, then host name, then id.
fn sorted(mut routes: Vec<RouteView>) -> Vec<RouteView> {
    routes.sort_by(|a, b| (a.port, &a.hostname, a.id).cmp(&(b.port, &b.hostname, b.id)));
    routes
}

impl ControlPlane {
    /// Validate a new route and plan its creation. A TCP route gets the lowest
    /// port of the range that no route holds; a race for it is lost at commit
    /// with a `port` conflict, and the caller retries.
    pub async fn create_route(
        &self,
        ctx: &Ctx,
        app: &AppView,
        env: &EnvView,
        req: CreateRoute,
    ) -> ApiResult<Plan<RouteView>> {
        if !ctx.caller.is_admin() {
            return Err(ApiErr::forbidden("this needs an admin token"));
        }
        validate::name("process", &req.process)?;
        if req.backend_port == 0 {
            return Err(ApiErr::invalid("backend_port", "`backend_port` must be 1-65535"));
        }
        let range = self.ingress.tcp_ports();
        let (hostname, port) = match req.protocol {
            RouteProtocol::Tls => {
                let h = req.hostname.as_deref().ok_or_else(|| {
                    ApiErr::invalid("hostname", "a `tls` route needs `hostname`: the TLS server name clients ask for")
                })?;
                let h = validate::hostname("hostname", h)?;
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
                (Some(h), port)
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
        let id = RouteId::new();
        let view = RouteView {
            id,
            org_id: env.org_id,
            app_id: app.id,
            env_id: env.id,
            protocol: req.protocol,
            hostname: hostname.clone(),
            port,
            process: req.process.clone(),
            backend_port: req.backend_port,
            proxy_protocol: req.proxy_protocol,
            created_at: ctx.now(),
        };
        let claim = claims(&view);
        Ok(Plan::new(StatusCode::CREATED, view)
            .event(Event::RouteCreated(RouteCreated {
                org_id: env.org_id,
                app_id: app.id,
                env_id: env.id,
                route_id: id,
                protocol: req.protocol,
                hostname,
                port,
                process: req.process,
                backend_port: req.backend_port,
                proxy_protocol: req.proxy_protocol,
            }))
            .expect(exists(AggregateType::Env, env.id))
            .claim(claim))
    }

    async fn free_tcp_port(&self, range: &RangeInclusive<u16>) -> ApiResult<u16> {
        for port in range.clone() {
            if self.store.claim_owner(PORT_SCOPE, &port.to_string()).await?.is_none() {
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

    /// Plan a route's deletion; its host name or port is free once it commits.
    pub fn delete_route(&self, ctx: &Ctx, route: &RouteView) -> ApiResult<Plan<RouteView>> {
        if !ctx.caller.is_admin() {
            return Err(ApiErr::forbidden("this needs an admin token"));
        }
        Ok(Plan::new(StatusCode::OK, route.clone())
            .event(Event::RouteDeleted(RouteDeleted { org_id: route.org_id, env_id: route.env_id, route_id: route.id }))
            // Created and not yet deleted: a second delete cannot pass.
            .expect(Expectation {
                aggregate_type: AggregateType::Route,
                aggregate_id: route.id.to_string(),
                expected: ExpectedVersion::Exact(1),
            })
            .release(claims(route)))
    }

    /// A route of the env by id, or by host name when only one route has it.
    pub async fn route(&self, env: &EnvView, r: &str) -> ApiResult<RouteView> {
        let not_found = || {
            ApiErr::not_found(format!("route `{r}` not found in env `{}`; `vt route list` shows its routes", env.name))
        };
        if r.starts_with("route_") {
            return self.view::<RouteView>(r).await?.filter(|v| v.env_id == env.id).ok_or_else(not_found);
        }
        let mut found = self
            .views::<RouteView>(Self::kind_query(ViewKind::Route).parent(env.id).name(r.to_ascii_lowercase()))
            .await?;
        match found.len() {
            0 => Err(not_found()),
            1 => Ok(found.remove(0)),
            _ => Err(ApiErr::conflict(format!(
                "hostname `{r}` has routes on several ports; name the route by id (`vt route list`)"
            ))),
        }
    }

    pub async fn list_routes(&self, env: &EnvView) -> ApiResult<Vec<RouteView>> {
        Ok(sorted(self.views(Self::kind_query(ViewKind::Route).parent(env.id)).await?))
    }

    /// Every route of every env: what an ingress serves.
    pub async fn all_routes(&self, ctx: &Ctx) -> ApiResult<Vec<RouteView>> {
        if !ctx.caller.is_admin() && ctx.caller.role != vt_events::TokenRole::Node {
            return Err(ApiErr::forbidden("only admin and node tokens read every route"));
        }
        Ok(sorted(self.views(Self::kind_query(ViewKind::Route)).await?))
    }
}
