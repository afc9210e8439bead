//! The edge: keeps an ingress's route table in step with the control plane.
//!
//! [`Edge`] is a reconciler. Its state is a cursor into the event log (the
//! version of the table last applied, persisted with the table in the
//! ingress's state file) and the ingress itself. An activation
//! ([`Edge::activate`]) takes no input: it reads the events after the cursor,
//! and when a route or instance event is among them (or on the first
//! activation) it recomputes the whole table from the views — every route with
//! the instances of its env and process type that are running, meant to run
//! and have an address — and hands it to [`vt_ingress::Ingress::apply`], which
//! swaps it in atomically. Activations are idempotent: an unchanged table is
//! not applied again. Each publishes an [`EdgeStatus`].
//!
//! A port the ingress cannot bind (held by another process, or privileged)
//! fails alone: the rest of the table is served, every activation retries the
//! port, and the edge reports each route's listener to the source when it
//! changes (`route.listener_changed`: listening, or failed and why), so the
//! route's view says what this node's ingress does with it.
//!
//! Where routes come from is a [`Source`]: [`StoreSource`] reads a store in the
//! same process (`vt server`); a joined node's edge (`vt server --role edge --join`)
//! reads its control plane's `GET /v1/nodes/{node}/routing` (`vt_server::remote_edge`).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use tokio::sync::{watch, Mutex};
use vt_events::{Actor, Envelope, Event, ListenerState, NewEvent, RouteListenerChanged, RouteProtocol};
use vt_ids::{EnvId, OrgId, RouteId};
use vt_ingress::{Backend, Ingress, Listener, Protocol, Route, RouteTable};
use vt_store::{AppendRequest, Store, ViewQuery};
use vt_views::{InstanceView, RouteView, ViewKind};

/// Projections whose views the table is computed from.
const PROJECTIONS: [&str; 2] = ["routes", "instances"];
/// Events read per page while catching up.
const PAGE: u32 = 1000;

#[derive(Debug, Clone, thiserror::Error)]
pub enum EdgeError {
    #[error("reading the control plane: {0}")]
    Source(String),
    #[error("the ingress refused the table: {0}")]
    Apply(String),
}

/// What happened in the log after a position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Changes {
    /// The log's position looked at (the cursor moves there).
    pub head: u64,
    /// Whether anything up to `head` can change the table (a route or an instance event).
    pub table: bool,
}

/// An instance that serves its process's routes: ready, with an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadyInstance {
    pub env_id: EnvId,
    pub process: String,
    pub address: IpAddr,
}

impl ReadyInstance {
    /// The instances of these views that run, are meant to run, passed their checks and have
    /// an address.
    pub fn of(instances: &[InstanceView]) -> Vec<ReadyInstance> {
        instances
            .iter()
            .filter(|i| i.is_ready())
            .filter_map(|i| {
                let address = i.address.as_deref()?.parse().ok()?;
                Some(ReadyInstance { env_id: i.env_id, process: i.process.clone(), address })
            })
            .collect()
    }
}

/// Where the edge reads the log and the views.
#[async_trait]
pub trait Source: Send + Sync + 'static {
    /// How far the log goes after `after`, and whether it changes the table.
    async fn changes_after(&self, after: u64) -> Result<Changes, EdgeError>;
    /// The lowest checkpoint of the projections the table is built from.
    async fn views_at(&self) -> Result<u64, EdgeError>;
    async fn routes(&self) -> Result<Vec<RouteView>, EdgeError>;
    async fn ready_instances(&self) -> Result<Vec<ReadyInstance>, EdgeError>;
    /// Record changes of routes' listeners (as `route.listener_changed` events).
    async fn report(&self, changes: Vec<RouteListenerChanged>) -> Result<(), EdgeError>;
    /// Moves when the log may have grown (a hint; the edge also polls).
    fn subscribe(&self) -> Option<watch::Receiver<u64>> {
        None
    }
}

/// A store in the same process.
pub struct StoreSource(pub Arc<dyn Store>);

fn source_err(e: impl std::fmt::Display) -> EdgeError {
    EdgeError::Source(e.to_string())
}

#[async_trait]
impl Source for StoreSource {
    async fn changes_after(&self, after: u64) -> Result<Changes, EdgeError> {
        let mut changes = Changes { head: after, table: false };
        loop {
            let events = self.0.read_events(changes.head, PAGE).await.map_err(source_err)?;
            let Some(last) = events.last() else { break };
            changes.head = last.seq;
            changes.table |= events.iter().any(changes_the_table);
            if events.len() < PAGE as usize {
                break;
            }
        }
        Ok(changes)
    }
    async fn views_at(&self) -> Result<u64, EdgeError> {
        let checkpoints = self.0.checkpoints().await.map_err(source_err)?;
        Ok(PROJECTIONS.iter().map(|p| checkpoints.get(*p).copied().unwrap_or(0)).min().unwrap_or(0))
    }
    async fn routes(&self) -> Result<Vec<RouteView>, EdgeError> {
        let rows = self.0.view_list(&ViewQuery::kind(ViewKind::Route)).await.map_err(source_err)?;
        rows.iter().map(|r| r.decode().map_err(source_err)).collect()
    }
    async fn ready_instances(&self) -> Result<Vec<ReadyInstance>, EdgeError> {
        let rows = self.0.view_list(&ViewQuery::kind(ViewKind::Instance)).await.map_err(source_err)?;
        let views: Vec<InstanceView> = rows.iter().map(|r| r.decode().map_err(source_err)).collect::<Result<_, _>>()?;
        Ok(ReadyInstance::of(&views))
    }
    async fn report(&self, changes: Vec<RouteListenerChanged>) -> Result<(), EdgeError> {
        let events = changes
            .into_iter()
            .map(|c| NewEvent::new(Event::RouteListenerChanged(c), Actor::system("edge"), None))
            .collect();
        self.0.append(AppendRequest { events, ..Default::default() }).await.map_err(source_err)?;
        Ok(())
    }
    fn subscribe(&self) -> Option<watch::Receiver<u64>> {
        Some(self.0.subscribe_head())
    }
}

/// What the edge last did; published after every activation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EdgeStatus {
    /// Every event up to here has been looked at.
    pub cursor: u64,
    /// Version (log seq) of the table in force.
    pub applied_seq: u64,
    pub routes: usize,
    pub backends: usize,
    /// Routes left out of the table because they conflict with others (ids and why).
    pub skipped: Vec<String>,
    /// Ports of the table the ingress could not bind, and why (retried every activation).
    pub failed_ports: Vec<String>,
    /// Views were behind the log; the activation will be retried.
    pub waiting_for_views: bool,
    pub last_error: Option<String>,
    pub activations: u64,
}

/// What one activation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing new that changes routes.
    Idle,
    /// A new table is in force.
    Applied { version: u64 },
    /// Recomputed; the table in force was already right.
    Unchanged,
    /// The views have not caught up with the log yet; try again shortly.
    ViewsBehind,
}

/// Keeps one [`Ingress`] in step with a [`Source`].
pub struct Edge {
    source: Arc<dyn Source>,
    ingress: Ingress,
    /// The name this node's listener reports go under.
    node: String,
    state: Mutex<State>,
    status: watch::Sender<EdgeStatus>,
}

struct State {
    cursor: u64,
    /// A recompute is owed (first activation, or events seen but not yet applied).
    dirty: bool,
    /// The org and env of each route of the last recompute (for reports).
    owners: HashMap<String, (OrgId, EnvId)>,
    /// Each route's listener as this node last reported it; `None` until the
    /// first recompute has read what the views hold from before a restart.
    reported: Option<HashMap<String, Reported>>,
}

type Reported = (ListenerState, Option<String>);

impl Edge {
    /// Start from the table the ingress loaded from its state file: its
    /// version is where the log is read from. Listener reports go under `node`.
    pub fn new(source: Arc<dyn Source>, ingress: Ingress, node: impl Into<String>) -> Arc<Edge> {
        let table = ingress.table();
        let status = EdgeStatus {
            cursor: table.version,
            applied_seq: table.version,
            routes: table.routes.len(),
            ..Default::default()
        };
        Arc::new(Edge {
            source,
            ingress,
            node: node.into(),
            state: Mutex::new(State { cursor: table.version, dirty: true, owners: HashMap::new(), reported: None }),
            status: watch::channel(status).0,
        })
    }

    pub fn ingress(&self) -> &Ingress {
        &self.ingress
    }

    pub fn status(&self) -> EdgeStatus {
        self.status.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<EdgeStatus> {
        self.status.subscribe()
    }

    /// The ingress's counters and the edge's own, in the Prometheus text format.
    pub fn metrics_text(&self) -> String {
        let s = self.status();
        let mut out = self.ingress.metrics_text();
        out.push_str("# HELP vt_edge_cursor Last event log seq the edge has looked at.\n# TYPE vt_edge_cursor gauge\n");
        out.push_str(&format!("vt_edge_cursor {}\n", s.cursor));
        out.push_str(
            "# HELP vt_edge_applied_seq Event log seq of the route table in force.\n# TYPE vt_edge_applied_seq gauge\n",
        );
        out.push_str(&format!("vt_edge_applied_seq {}\n", s.applied_seq));
        out.push_str("# HELP vt_edge_skipped_routes Routes left out of the table because they conflict.\n# TYPE vt_edge_skipped_routes gauge\n");
        out.push_str(&format!("vt_edge_skipped_routes {}\n", s.skipped.len()));
        out.push_str("# HELP vt_edge_error 1 if the last activation failed.\n# TYPE vt_edge_error gauge\n");
        out.push_str(&format!("vt_edge_error {}\n", u8::from(s.last_error.is_some())));
        out
    }

    /// One reconciliation step. Errors are also recorded in the status.
    pub async fn activate(&self) -> Result<Outcome, EdgeError> {
        let result = self.step().await;
        self.status.send_modify(|s| {
            s.activations += 1;
            s.waiting_for_views = matches!(result, Ok(Outcome::ViewsBehind));
            match &result {
                Err(e) => s.last_error = Some(e.to_string()),
                Ok(Outcome::ViewsBehind) => {}
                Ok(_) => s.last_error = None,
            }
        });
        result
    }

    async fn step(&self) -> Result<Outcome, EdgeError> {
        let mut state = self.state.lock().await;
        let outcome = self.follow(&mut state).await?;
        self.report_listeners(&mut state).await?;
        Ok(outcome)
    }

    /// Bring the table in force up to the log.
    async fn follow(&self, state: &mut State) -> Result<Outcome, EdgeError> {
        let changes = self.source.changes_after(state.cursor).await?;
        let target = changes.head;
        state.dirty |= changes.table;
        if !state.dirty {
            state.cursor = target;
            self.status.send_modify(|s| s.cursor = target);
            return Ok(Outcome::Idle);
        }
        if self.source.views_at().await? < target {
            return Ok(Outcome::ViewsBehind);
        }
        let routes = self.source.routes().await?;
        let instances = self.source.ready_instances().await?;
        state.owners = routes.iter().map(|r| (r.id.to_string(), (r.org_id, r.env_id))).collect();
        match state.reported.as_mut() {
            Some(reported) => reported.retain(|id, _| state.owners.contains_key(id)),
            None => {
                // What this node reported before a restart (the views are at the log's head).
                let mine = routes.iter().filter_map(|r| {
                    let l = r.listeners.iter().find(|l| l.node == self.node)?;
                    Some((r.id.to_string(), (l.state, l.reason.clone())))
                });
                state.reported = Some(mine.collect());
            }
        }
        let (mut table, skipped) = build_table(&routes, &instances);
        let current = self.ingress.table();
        let outcome = if current.routes == table.routes && current.version != 0 {
            Outcome::Unchanged
        } else {
            table.version = target;
            let (n_routes, n_backends) = (table.routes.len(), table.routes.iter().map(|r| r.backends.len()).sum());
            self.ingress.apply(table).await.map_err(|e| EdgeError::Apply(e.to_string()))?;
            self.status.send_modify(|s| {
                s.applied_seq = target;
                s.routes = n_routes;
                s.backends = n_backends;
            });
            // A fresh ingress's first table, empty, is not news (a server at rest says nothing).
            if current.version == 0 && n_routes == 0 {
                tracing::debug!(version = target, "ingress table applied (empty)");
            } else {
                tracing::info!(version = target, routes = n_routes, backends = n_backends, "ingress table applied");
            }
            Outcome::Applied { version: target }
        };
        state.cursor = target;
        state.dirty = false;
        self.status.send_modify(|s| {
            s.cursor = target;
            s.skipped = skipped;
        });
        Ok(outcome)
    }

    /// Retry the ports that failed, and report each route whose listener
    /// changed since it was last reported.
    async fn report_listeners(&self, state: &mut State) -> Result<(), EdgeError> {
        let listeners = self.ingress.rebind().await;
        let failed: Vec<String> = listeners
            .iter()
            .filter_map(|(port, l)| match l {
                Listener::Failed(why) => Some(format!("{port}: {why}")),
                Listener::Listening(_) => None,
            })
            .collect();
        self.status.send_modify(|s| s.failed_ports = failed);
        let Some(reported) = state.reported.as_mut() else { return Ok(()) };
        let mut changes = Vec::new();
        for route in &self.ingress.table().routes {
            let now: Reported = match listeners.get(&route.listen_port) {
                Some(Listener::Listening(_)) => (ListenerState::Listening, None),
                Some(Listener::Failed(why)) => {
                    (ListenerState::Failed, Some(format!("cannot listen on port {}: {why}", route.listen_port)))
                }
                None => continue,
            };
            let (Some((org_id, env_id)), Ok(route_id)) = (state.owners.get(&route.id), RouteId::parse(&route.id))
            else {
                continue;
            };
            if reported.get(&route.id) == Some(&now) {
                continue;
            }
            match &now.1 {
                Some(why) => tracing::warn!(route = %route.id, reason = %why, "route not served here; retrying"),
                None => tracing::info!(route = %route.id, port = route.listen_port, "route listening"),
            }
            let (state, reason) = now;
            let node = self.node.clone();
            changes.push(RouteListenerChanged { org_id: *org_id, env_id: *env_id, route_id, node, state, reason });
        }
        if changes.is_empty() {
            return Ok(());
        }
        self.source.report(changes.clone()).await?;
        for c in changes {
            reported.insert(c.route_id.to_string(), (c.state, c.reason));
        }
        Ok(())
    }

    /// Activate whenever the log moves (and at least every `poll`), until `shutdown`.
    pub async fn run(self: Arc<Self>, poll: Duration, shutdown: impl std::future::Future<Output = ()>) {
        let mut head = self.source.subscribe();
        tokio::pin!(shutdown);
        loop {
            let wait = match self.activate().await {
                Ok(Outcome::ViewsBehind) => Duration::from_millis(20),
                Ok(_) => poll,
                Err(e) => {
                    tracing::warn!(error = %e, "edge activation failed; retrying");
                    poll
                }
            };
            let moved = async {
                match head.as_mut() {
                    Some(h) => {
                        let _ = h.changed().await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(wait) => {}
                _ = moved => {}
            }
        }
    }
}

/// Whether an event can change the table (a route's own listener reports cannot).
fn changes_the_table(e: &Envelope) -> bool {
    let t = e.event_type.as_str();
    (t.starts_with("route.") && t != "route.listener_changed") || t.starts_with("instance.")
}

/// The table for these views: every route, with the ready instances of its env and
/// process type. Routes that would make the table invalid (a TLS and a TCP route on
/// one port, say) are left out and listed.
pub fn build_table(routes: &[RouteView], instances: &[ReadyInstance]) -> (RouteTable, Vec<String>) {
    let mut sorted: Vec<&RouteView> = routes.iter().collect();
    sorted.sort_by_key(|r| r.id);
    let mut table = RouteTable::default();
    let mut skipped = Vec::new();
    for r in sorted {
        let mut backends: Vec<Backend> = instances
            .iter()
            .filter(|i| i.env_id == r.env_id && i.process == r.process)
            .map(|i| Backend { addr: SocketAddr::new(i.address, r.backend_port), healthy: true })
            .collect();
        backends.sort_by_key(|b| b.addr);
        backends.dedup();
        let route = Route {
            id: r.id.to_string(),
            protocol: match r.protocol {
                RouteProtocol::Tls => Protocol::Tls,
                RouteProtocol::Tcp => Protocol::Tcp,
            },
            hostname: r.hostname.clone(),
            listen_port: r.port,
            proxy_protocol: r.proxy_protocol,
            backends,
        };
        table.routes.push(route);
        if let Err(e) = table.validate() {
            table.routes.pop();
            skipped.push(format!("{}: {e}", r.id));
        }
    }
    (table, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vt_events::{DesiredState, Health, InstanceStatus, Resources};
    use vt_ids::*;

    fn route(env_id: EnvId, protocol: RouteProtocol, host: Option<&str>, port: u16) -> RouteView {
        RouteView {
            id: RouteId::new(),
            org_id: OrgId::new(),
            app_id: AppId::new(),
            env_id,
            protocol,
            hostname: host.map(Into::into),
            port,
            process: "web".into(),
            backend_port: 8443,
            proxy_protocol: false,
            created_at: chrono::Utc::now(),
            listeners: vec![],
        }
    }

    fn instance(
        env_id: EnvId,
        process: &str,
        status: InstanceStatus,
        desired: DesiredState,
        address: Option<&str>,
    ) -> InstanceView {
        InstanceView {
            id: InstanceId::new(),
            org_id: OrgId::new(),
            app_id: AppId::new(),
            env_id,
            process: process.into(),
            release_id: ReleaseId::new(),
            deploy_id: None,
            node_id: NodeId::new(),
            resources: Resources { cpu_millis: 100, memory_mib: 64 },
            secrets_version: None,
            desired_state: desired,
            status,
            health: None,
            boot: None,
            ready_at: None,
            failure: None,
            volumes: vec![],
            resuming: false,
            reason: None,
            exit_code: None,
            address: address.map(Into::into),
            created_at: chrono::Utc::now(),
            updated_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn only_ready_addressed_instances_of_the_process_are_backends() {
        let (env, other) = (EnvId::new(), EnvId::new());
        let routes = vec![route(env, RouteProtocol::Tls, Some("a.example"), 443)];
        let instances = vec![
            instance(env, "web", InstanceStatus::Running, DesiredState::Running, Some("10.0.0.2")),
            instance(env, "web", InstanceStatus::Running, DesiredState::Running, Some("fd00::1")),
            instance(env, "web", InstanceStatus::Running, DesiredState::Running, None),
            instance(env, "web", InstanceStatus::Running, DesiredState::Stopped, Some("10.0.0.3")),
            instance(env, "web", InstanceStatus::Booting, DesiredState::Running, Some("10.0.0.4")),
            instance(env, "worker", InstanceStatus::Running, DesiredState::Running, Some("10.0.0.5")),
            instance(other, "web", InstanceStatus::Running, DesiredState::Running, Some("10.0.0.6")),
            InstanceView {
                health: Some(Health::Pending),
                ..instance(env, "web", InstanceStatus::Running, DesiredState::Running, Some("10.0.0.7"))
            },
            InstanceView {
                health: Some(Health::Failing),
                ..instance(env, "web", InstanceStatus::Running, DesiredState::Running, Some("10.0.0.8"))
            },
            InstanceView {
                health: Some(Health::Passing),
                ..instance(env, "web", InstanceStatus::Running, DesiredState::Running, Some("10.0.0.9"))
            },
        ];
        let (table, skipped) = build_table(&routes, &ReadyInstance::of(&instances));
        assert!(skipped.is_empty());
        let addrs: Vec<String> = table.routes[0].backends.iter().map(|b| b.addr.to_string()).collect();
        assert_eq!(addrs, ["10.0.0.2:8443", "10.0.0.9:8443", "[fd00::1]:8443"]);
    }

    #[test]
    fn conflicting_routes_are_skipped_not_fatal() {
        let env = EnvId::new();
        let routes = vec![
            route(env, RouteProtocol::Tls, Some("a.example"), 20000),
            route(env, RouteProtocol::Tcp, None, 20000),
            route(env, RouteProtocol::Tls, Some("b.example"), 443),
        ];
        let (table, skipped) = build_table(&routes, &[]);
        assert_eq!(table.routes.len(), 2);
        assert_eq!(skipped.len(), 1, "{skipped:?}");
        table.validate().unwrap();
    }
}
