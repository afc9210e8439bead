//! The edge of a joined node (`vt server --role edge --join URL`, docs/nodes.md, "Edges"): its
//! ingress serves every route, fed from the remote control plane's
//! `GET /v1/nodes/{node}/routing` with the node's own token, followed by cursor; its listener
//! reports go back through `POST /v1/nodes/{node}/route-listeners`.
//!
//! The table is built exactly as beside the control plane ([`vt_edge::Edge`] over a
//! [`Source`]); only where the routes and ready instances come from differs. Instances on
//! other nodes are reached through the mesh (their node's rules let this node's overlay
//! address in).

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use vt_api::{NodeRouting, RouteListenerReport};
use vt_edge::{Changes, EdgeError, ReadyInstance, Source};
use vt_events::RouteListenerChanged;
use vt_views::RouteView;

/// How long one follow request waits for the views to move.
const FOLLOW_WAIT: Duration = Duration::from_secs(10);
/// The pause after a failed request (the control plane is away): the edge retries after it.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Routes and ready instances from a remote control plane.
pub struct HttpSource {
    client: vt_client::Client,
    node: String,
    /// The last answer: what `views_at`, `routes` and `ready_instances` read.
    last: Mutex<Option<NodeRouting>>,
    keys: vt_client::IdempotencyKeys,
}

impl HttpSource {
    /// For node `node`, whose token `client` carries.
    pub fn new(client: vt_client::Client, node: impl Into<String>) -> HttpSource {
        let node = node.into();
        let keys = vt_client::IdempotencyKeys::new(format!("edge-{node}"));
        HttpSource { client, node, last: Mutex::new(None), keys }
    }

    fn last(&self) -> std::sync::MutexGuard<'_, Option<NodeRouting>> {
        self.last.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn failed(e: vt_client::Error) -> EdgeError {
        tokio::time::sleep(RETRY_AFTER).await;
        EdgeError::Source(e.to_string())
    }
}

#[async_trait]
impl Source for HttpSource {
    async fn changes_after(&self, after: u64) -> Result<Changes, EdgeError> {
        // The first request answers at once (the table is rebuilt from it); later ones wait
        // for the views to move past the cursor.
        let first = self.last().is_none();
        let routing = match self.client.node_routing(&self.node, (!first).then_some(after), FOLLOW_WAIT).await {
            Ok(r) => r,
            Err(e) => return Err(Self::failed(e).await),
        };
        let changes = Changes { head: routing.seq.max(after), table: first || routing.seq > after };
        *self.last() = Some(routing);
        Ok(changes)
    }

    async fn views_at(&self) -> Result<u64, EdgeError> {
        Ok(self.last().as_ref().map_or(0, |r| r.seq))
    }

    async fn routes(&self) -> Result<Vec<RouteView>, EdgeError> {
        let last = self.last();
        let routes = last.as_ref().map(|r| r.routes.as_slice()).unwrap_or_default();
        Ok(routes
            .iter()
            .map(|r| RouteView {
                id: r.id,
                org_id: r.org_id,
                app_id: r.app_id,
                env_id: r.env_id,
                protocol: r.protocol,
                hostname: r.hostname.clone(),
                port: r.port,
                process: r.process.clone(),
                backend_port: r.backend_port,
                proxy_protocol: r.proxy_protocol,
                created_at: r.created_at,
                listeners: r.listeners.clone(),
            })
            .collect())
    }

    async fn ready_instances(&self) -> Result<Vec<ReadyInstance>, EdgeError> {
        let last = self.last();
        let instances = last.as_ref().map(|r| r.instances.as_slice()).unwrap_or_default();
        instances
            .iter()
            .map(|i| {
                let address = i.address.parse().map_err(|e| {
                    EdgeError::Source(format!("the control plane sent `{}` as an instance's address: {e}", i.address))
                })?;
                Ok(ReadyInstance { env_id: i.env_id, process: i.process.clone(), address })
            })
            .collect()
    }

    async fn report(&self, changes: Vec<RouteListenerChanged>) -> Result<(), EdgeError> {
        let reports: Vec<RouteListenerReport> = changes
            .into_iter()
            .map(|c| RouteListenerReport { route_id: c.route_id, state: c.state, reason: c.reason })
            .collect();
        let key = self.keys.next("listeners");
        match self.client.node_route_listeners(&self.node, &reports, &key).await {
            Ok(_) => Ok(()),
            Err(e) => Err(Self::failed(e).await),
        }
    }
}
