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
//!
//! What a route may point at and listen on:
//! - its `process` must be a process of the env's release (the one the env should run), with
//!   `backend_port` among that process's tcp `ports`. An env without a release yet takes the
//!   route as it is and says so in the answer's `notes`: the route serves nothing until a
//!   release of the env runs that process on that port;
//! - a TLS route listens on 443 or on a port from 1024 up, outside the TCP route range and
//!   never on the API's own port (the ingress binds every address); TCP route ports are
//!   allocated from the range, skipping the API's port.

use std::ops::RangeInclusive;
use std::sync::{Arc, RwLock};

use axum::http::StatusCode;
use vt_api::{CreateRoute, ErrorCode, Route, RouteProtocol};
use vt_events::{AggregateType, Event, RouteCreated, RouteDeleted};
use vt_ids::{EnvId, RouteId};
use vt_store::{Claim, ClaimScope, Expectation, ExpectedVersion};
use vt_views::{EnvView, RouteView, ViewKind};

use super::deploys::manifest_of;
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

/// Below this, only 443 may be a TLS route's port: the others are privileged, system services'.
const FIRST_UNPRIVILEGED_PORT: u16 = 1024;

/// What the control plane knows of the ingress beside it: the port range it
/// allocates TCP routes from, the API's port (no route takes it), and where
/// `GET /metrics` reads counters.
pub struct IngressSettings {
    tcp_ports: RwLock<RangeInclusive<u16>>,
    api_port: Option<u16>,
    metrics: RwLock<Option<MetricsSource>>,
}

impl Default for IngressSettings {
    fn default() -> Self {
        Self::new(None)
    }
}

impl IngressSettings {
    pub fn new(api_port: Option<u16>) -> Self {
        IngressSettings { tcp_ports: RwLock::new(DEFAULT_TCP_PORTS), api_port, metrics: RwLock::new(None) }
    }
    /// The API's own port, when the control plane was told it.
    pub fn api_port(&self) -> Option<u16> {
        self.api_port
    }
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
        // Decide from the env as it is now, and pin it: a deploy committed meanwhile fails this
        // create (409) rather than slip a release without the process under it.
        let (env, env_pin) = self.fresh_env(&scope.env).await?;
        let notes = self.check_backend(scope, &env, req).await?;
        let range = self.ingress.tcp_ports();
        let (hostname, port) = match req.protocol {
            RouteProtocol::Tls => {
                let h = req.hostname.clone().ok_or_else(|| {
                    ApiErr::invalid("hostname", "a `tls` route needs `hostname`: the TLS server name clients ask for")
                })?;
                let port = req.port.unwrap_or(DEFAULT_TLS_PORT);
                if port < FIRST_UNPRIVILEGED_PORT && port != DEFAULT_TLS_PORT {
                    return Err(ApiErr::invalid(
                        "port",
                        format!("port {port} is a privileged port, left to system services; TLS routes listen on 443 or on 1024-65535"),
                    ));
                }
                if Some(port) == self.ingress.api_port() {
                    return Err(ApiErr::invalid(
                        "port",
                        format!("port {port} is the API's own port; pick another listener port (default 443)"),
                    ));
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
        let (org, app, env) = (&scope.org, &scope.app, &env);
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
            listeners: vec![],
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
            .expect(env_pin)
            // The org's claim first: another org's host name fails on it, saying nothing of the other route.
            .claim(listener_claim(&view));
        if let Some(owned) = hostname_claim(&view) {
            plan.claims.insert(0, owned);
        }
        let mut route = view.wire();
        route.notes = notes;
        Ok(plan.respond(route))
    }

    /// The route's process and backend port against the env's release; the notes to answer
    /// with when there is no release to check them against.
    async fn check_backend(&self, scope: &EnvScope, env: &EnvView, req: &CreateRoute) -> ApiResult<Vec<String>> {
        let Some(release) = env.desired_release_id else {
            return Ok(vec![format!(
                "env `{}` has no release yet, so process `{}` and port {} could not be checked: the route \
                 serves nothing until a release of the env runs that process with tcp port {}",
                env.name, req.process, req.backend_port, req.backend_port
            )]);
        };
        let manifest = manifest_of(&self.lookup_release(&scope.app, &release.to_string()).await?)?;
        let Some(process) = manifest.processes.get(req.process.as_str()) else {
            let known: Vec<&str> = manifest.processes.keys().map(String::as_str).collect();
            return Err(ApiErr::invalid(
                "process",
                format!(
                    "the env's release {release} has no process `{}`; its processes are: {}",
                    req.process,
                    known.join(", ")
                ),
            ));
        };
        let tcp: Vec<u16> =
            process.ports.iter().filter(|p| p.protocol == vt_manifest::Protocol::Tcp).map(|p| p.port).collect();
        if !tcp.contains(&req.backend_port) {
            let declared = if tcp.is_empty() {
                "it declares no tcp port".to_owned()
            } else {
                format!("its tcp ports are {}", tcp.iter().map(u16::to_string).collect::<Vec<_>>().join(", "))
            };
            return Err(ApiErr::invalid(
                "backend_port",
                format!(
                    "process `{}` of the env's release {release} does not listen on tcp port {}: {declared}; \
                     route to one of them or add the port to the manifest's `ports`",
                    req.process, req.backend_port
                ),
            ));
        }
        Ok(vec![])
    }

    async fn free_tcp_port(&self, range: &RangeInclusive<u16>) -> ApiResult<u16> {
        for port in range.clone().filter(|p| Some(*p) != self.ingress.api_port()) {
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
        self.routes_of(scope.env.id).await
    }

    /// The routes of an env, by port, host name and id.
    pub(crate) async fn routes_of(&self, env: EnvId) -> ApiResult<Vec<Route>> {
        Ok(sorted(self.views(Self::kind_query(ViewKind::Route).parent(env)).await?))
    }

    /// Every route of every env: what an ingress serves.
    pub async fn route_list_all(&self, ctx: &Ctx) -> ApiResult<Vec<Route>> {
        ctx.authorize_cluster(Action::Read)?;
        Ok(sorted(self.views(Self::kind_query(ViewKind::Route)).await?))
    }
}
