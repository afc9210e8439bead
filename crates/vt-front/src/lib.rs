//! The HTTP front: what browsers and the CLI reach over HTTP, on two origins.
//!
//! - The **API origin** (`vt server --listen`): the control plane's `/v1`, the registry's
//!   `/v2`, and later the console at `/app/`. The front gives it its listener ([`serve`]:
//!   limits, TLS), its counters ([`metrics`]) and the limit on failed logins
//!   ([`auth::limit_logins`]); the control plane authenticates (bearer tokens, or the
//!   console user's basic auth).
//! - The **workspace origin** (`--workspace-listen`): [`Front`], a reverse proxy that routes
//!   `/workspace/{name}/…` to the workspace's IDE and `/workspace/{name}/port/{N}/…` to a
//!   registered port ([`path`]), from a table built from the control plane's views and
//!   swapped whole ([`table`]). It accepts the console user's basic auth and its own session
//!   cookie only ([`auth`]): never a bearer token, never a cookie of the API origin, and it
//!   strips its credentials before a request reaches a workspace. WebSocket upgrades pass
//!   through, their `Origin` checked against this origin.
//!
//! The two origins are separate so that JavaScript a workspace serves can never call the
//! API with the user's credentials (Tidepool ADR-015).

pub mod access;
pub mod auth;
pub mod metrics;
pub mod pages;
pub mod path;
mod proxy;
pub mod serve;
pub mod table;
pub mod tls;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::extract::{Request, State};
use axum::response::Response;
use axum::Router;
use hyper::header::{self, HeaderValue};
use hyper::StatusCode;

pub use access::Accesses;
pub use auth::{Credentials, LoginLimiter};
pub use metrics::OriginMetrics;
pub use serve::{serve, ConnectionLimits, Peer};
pub use table::{Down, FrontTable, RouteState, TableError, WorkspaceRoute};
pub use tls::{Tls, TlsError};

/// How patient the workspace origin is with workspaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamLimits {
    /// A workspace's port must accept a connection within this (else 502).
    pub connect_timeout: Duration,
    /// A workspace must start answering (its response's headers) within this (else 504).
    pub response_timeout: Duration,
}

impl Default for UpstreamLimits {
    /// 5 s to connect, 60 s to answer.
    fn default() -> Self {
        UpstreamLimits { connect_timeout: Duration::from_secs(5), response_timeout: Duration::from_secs(60) }
    }
}

/// The workspace origin.
pub struct Front {
    table: ArcSwap<FrontTable>,
    gate: auth::Gate,
    limiter: Arc<LoginLimiter>,
    metrics: Arc<OriginMetrics>,
    accesses: Accesses,
    proxy: proxy::Proxy,
}

impl Front {
    /// A front with an empty table, letting in whom `credentials` accepts.
    pub fn new(credentials: Box<dyn Credentials>, upstream: UpstreamLimits) -> Result<Arc<Front>, getrandom::Error> {
        Ok(Arc::new(Front {
            table: ArcSwap::from_pointee(FrontTable::default()),
            gate: auth::Gate::new(credentials)?,
            limiter: Arc::default(),
            metrics: OriginMetrics::new("workspace"),
            accesses: Accesses::default(),
            proxy: proxy::Proxy::new(upstream),
        }))
    }

    /// Route by `table` from now on; requests in flight finish on the table they started with.
    pub fn apply(&self, table: FrontTable) {
        self.table.store(Arc::new(table));
    }

    pub fn table(&self) -> Arc<FrontTable> {
        self.table.load_full()
    }

    pub fn metrics(&self) -> &Arc<OriginMetrics> {
        &self.metrics
    }

    /// When each workspace was last reached, coalesced.
    pub fn accesses(&self) -> &Accesses {
        &self.accesses
    }

    /// The origin's routes: every path goes through [`Front::handle`], counted, with failed
    /// logins limited.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .fallback(handle)
            .with_state(self.clone())
            .layer(axum::middleware::from_fn_with_state(self.limiter.clone(), auth::limit_logins))
            .layer(axum::middleware::from_fn_with_state(self.metrics.clone(), metrics::count))
    }
}

async fn handle(State(front): State<Arc<Front>>, req: Request) -> Response {
    front.handle(req).await
}

impl Front {
    /// One request: its path checked, its caller let in, its workspace looked up, then
    /// proxied (or upgraded).
    pub async fn handle(&self, req: Request) -> Response {
        // The URI's bytes are shared, not copied: the path outlives the request moved on below.
        let uri = req.uri().clone();
        let target = match path::route(uri.path()) {
            Ok(t) => t,
            Err(e @ path::PathError::TooLong) => {
                return pages::page(StatusCode::URI_TOO_LONG, "Path too long", &e.to_string())
            }
            Err(e) => return pages::page(StatusCode::BAD_REQUEST, "Bad path", &e.to_string()),
        };
        let login = match self.gate.check(req.headers()).await {
            Ok(login) => login,
            Err(auth::Refusal::Unauthorized) => return pages::unauthorized(),
            Err(auth::Refusal::Unavailable(e)) => {
                tracing::warn!(error = %e, "cannot check the console user's credentials");
                return pages::page(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Cannot sign in now",
                    "The server could not check the password; try again in a moment.",
                );
            }
        };
        let peer = req.extensions().get::<Peer>().copied();
        let tls = peer.is_some_and(|p| p.tls);
        let mut resp = self.route(req, uri.path(), target, peer).await;
        if login == auth::Login::Basic {
            resp.headers_mut().append(header::SET_COOKIE, self.gate.sessions().set_cookie(tls));
        }
        resp
    }

    async fn route(&self, req: Request, path: &str, target: path::Target<'_>, peer: Option<Peer>) -> Response {
        let (name, port, rest) = match &target {
            path::Target::Redirect(to) => {
                let to = match req.uri().query() {
                    Some(q) => format!("{to}?{q}"),
                    None => to.clone(),
                };
                return pages::redirect(&to);
            }
            path::Target::Elsewhere => {
                return pages::page(
                    StatusCode::NOT_FOUND,
                    "Not found",
                    "Workspaces are at /workspace/NAME/; `vt workspace list` shows them.",
                )
            }
            path::Target::Ide { name, rest } => (name, None, *rest),
            path::Target::Port { name, port, rest } => (name, Some(*port), *rest),
        };
        let table = self.table.load();
        let Some(ws) = table.get(name) else {
            return pages::page(
                StatusCode::NOT_FOUND,
                "No such workspace",
                &format!("There is no workspace `{name}`. Create it with `vt workspace create {name}`."),
            );
        };
        let address = match &ws.state {
            RouteState::Serving { address } => *address,
            RouteState::Down(down) => return down_page(name, down),
        };
        let upstream_port = match port {
            None => ws.ide_port,
            Some(p) if ws.ports.contains(&p) => p,
            Some(p) => {
                return pages::page(
                    StatusCode::NOT_FOUND,
                    "Port not registered",
                    &format!(
                        "Port {p} is not registered for workspace `{name}`. Register it with \
                         `vt workspace port add {name} {p}` (at most {} ports).",
                        table::MAX_PORTS
                    ),
                )
            }
        };
        self.accesses.touch(name);
        // `rest` is the end of `path`: what comes before it is the prefix, as `Target::prefix` spells it.
        let prefix = &path[..path.len() - rest.len()];
        let to = proxy::To { address, port: upstream_port, rest, prefix, workspace: name, registered: port };
        let result = if proxy::is_upgrade(req.headers()) {
            if let Err(why) = proxy::check_origin(req.headers(), peer.is_some_and(|p| p.tls)) {
                return pages::page(StatusCode::FORBIDDEN, "Cross-origin WebSocket refused", &why);
            }
            self.proxy.upgrade(req, &to, peer, &self.metrics).await
        } else {
            self.proxy.forward(req, &to, peer).await
        };
        result.unwrap_or_else(|e| e.page(&to))
    }
}

fn down_page(name: &vt_ids::Name, down: &Down) -> Response {
    let (title, text) = match down {
        Down::Stopped => ("Workspace stopped", format!("Workspace `{name}` is stopped. Start it with `vt workspace start {name}`.")),
        Down::Starting => ("Workspace starting", format!("Workspace `{name}` is starting; reload this page in a few seconds.")),
        Down::Stopping => ("Workspace stopping", format!("Workspace `{name}` is stopping. Start it again with `vt workspace start {name}` once it has stopped.")),
        Down::Failed(reason) => ("Workspace failed", format!("Workspace `{name}` failed: {reason}. `vt workspace get {name}` shows why; `vt workspace start {name}` tries again.")),
    };
    let mut resp = pages::page(StatusCode::SERVICE_UNAVAILABLE, title, &text);
    if *down == Down::Starting {
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
    }
    resp
}
