//! An edge-only node (`vt server --role edge --join URL`; docs/nodes.md, "Edges"): the ingress
//! and its follower of routes, on a host that runs no instances, reaching the instances on
//! every node through the WireGuard mesh.
//!
//! It enrolls as any joining node does ([`crate::join`]: the WireGuard key, the node token,
//! `enrollment.json`), then keeps the node's **membership** ([`Member`]) without an agent: it
//! registers the node as one that runs no instances (`runs_instances: false`, so the scheduler
//! never places anything on it) with its WireGuard key and endpoint, heartbeats, and follows
//! `GET /v1/nodes/{node}/instances` by cursor for its one useful field, the mesh peer list,
//! applied by the agent's own [`vt_agent::mesh::NodeMesh`]. No tap, no VMM, no firewall table:
//! its ingress dials instances from its overlay address (`<subnet>::1`, on its WireGuard
//! interface), which every other node lets in as a mesh peer's (`set mesh_nodes`,
//! docs/network.md).

use std::sync::Arc;
use std::time::Duration;

use tokio::task::{JoinHandle, JoinSet};
use vt_agent::mesh::NodeMesh;
use vt_api::{Heartbeat, Hostname, RegisterNode};

use crate::data_dir::{DataDir, DataDirLock};
use crate::join::{Enrollment, Join, WireguardKey};
use crate::{Notice, ServerConfig, ServerError};

/// How long a starting node waits for its first registration before it says it is ready.
const REGISTER_WAIT: Duration = Duration::from_secs(10);
/// How often it heartbeats (the agent's interval).
const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);
/// How long one follow request waits for the views to move.
const FOLLOW_WAIT: Duration = Duration::from_secs(10);
/// The pause after a failed request (the control plane is away).
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// A started edge-only node: its ingress and edge, its membership and its mesh.
pub struct EdgeNode {
    pub data: DataDir,
    pub name: Hostname,
    pub enrollment: Enrollment,
    pub notices: Vec<Notice>,
    _lock: DataDirLock,
    ingress: vt_ingress::Ingress,
    edge: JoinHandle<()>,
    member: JoinHandle<()>,
    mesh: Option<Arc<NodeMesh>>,
}

impl EdgeNode {
    /// Enroll (the first time), start the ingress on the table kept from the last run, then
    /// register (tried for up to 10 s before it returns: a node said to be ready is known to the
    /// control plane; the member keeps trying after) and follow.
    pub async fn start(config: &ServerConfig, join: &Join, name: Hostname) -> Result<EdgeNode, ServerError> {
        config.check()?;
        let Some(addrs) = &config.ingress else {
            return Err(ServerError::Config(
                "an edge-only node runs the ingress: leave out --no-ingress (or run `--role agent`)".into(),
            ));
        };
        let data = DataDir::create(&config.data_dir)
            .map_err(|source| ServerError::DataDir { path: config.data_dir.clone(), source })?;
        let lock = data.lock().map_err(ServerError::Locked)?;
        let mut notices = vec![];
        let key = WireguardKey::load_or_create(&data.wireguard_key())?;
        let (token, enrollment) = crate::join::enroll(&data, join, &name, &mut notices).await?;
        notices.push(Notice::Info(format!(
            "edge-only node `{}` ({}) of {}: it runs no instances; WireGuard public key {}",
            enrollment.name,
            enrollment.node_id,
            enrollment.control_plane,
            key.public()
        )));
        // The mesh's tools first: a node meant to mesh that cannot does not start.
        let mesh_config = config.mesh.as_ref().map(|m| m.agent_config(&data, &join.url)).transpose()?;
        let mesh = match &mesh_config {
            Some(m) => {
                let mesh = NodeMesh::with_tools(m)
                    .map_err(|e| ServerError::Config(format!("the edge-only node cannot start: {e}")))?;
                notices.push(Notice::Info(format!(
                    "mesh: interface `{}`, reached at {}",
                    m.interface,
                    std::net::SocketAddr::new(m.address, m.listen_port)
                )));
                Some(mesh)
            }
            None => {
                notices.push(Notice::Warning(
                    "no mesh (--no-mesh): the ingress reaches instances only where the network already routes them"
                        .into(),
                ));
                None
            }
        };
        // The ingress serves the table it kept from its last run at once.
        let client = join.client(token.clone());
        let source = Arc::new(crate::remote_edge::HttpSource::new(client, name.to_string()));
        let (ingress, edge, _) =
            crate::ingress_and_edge(&data, addrs, source, &name, Duration::from_millis(250)).await?;
        notices.push(Notice::Info(format!("edge: the ingress serves every route on {addrs:?}")));

        let member = Arc::new(Member {
            client: join.client(token).with_retries(4, Duration::from_millis(250)),
            registration: vt_agent::registration(
                &name,
                vt_agent::node_capacity(0),
                &enrollment.labels,
                Some(&key.public()),
                mesh_config.as_ref(),
                false,
            ),
            mesh: mesh.clone(),
            keys: vt_client::IdempotencyKeys::new(format!("edge-{name}")),
        });
        match tokio::time::timeout(REGISTER_WAIT, member.register()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => notices.push(Notice::Warning(format!("not registered yet ({e}); it keeps trying"))),
            Err(_) => notices
                .push(Notice::Warning(format!("not registered within {} s; it keeps trying", REGISTER_WAIT.as_secs()))),
        }
        let member = tokio::spawn(member.run());
        Ok(EdgeNode { data, name, enrollment, notices, _lock: lock, ingress, edge, member, mesh })
    }

    /// Run until `shutdown` resolves, then stop following, remove the mesh's interface (and its
    /// boringtun) and close the ingress's listeners.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) -> Result<(), ServerError> {
        shutdown.await;
        self.member.abort();
        let _ = self.member.await;
        if let Some(mesh) = self.mesh {
            match tokio::task::spawn_blocking(move || mesh.remove()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot remove the mesh interface"),
                Err(e) => tracing::warn!(error = %e, "removing the mesh interface ended abnormally"),
            }
        }
        self.edge.abort();
        self.ingress.close_listeners().await;
        Ok(())
    }
}

/// The node's membership without an agent: its registration, heartbeats and mesh.
struct Member {
    client: vt_client::Client,
    registration: RegisterNode,
    mesh: Option<Arc<NodeMesh>>,
    keys: vt_client::IdempotencyKeys,
}

impl Member {
    /// Register (repeatable); the node's /64 gives the mesh its overlay address.
    async fn register(&self) -> Result<(), vt_client::Error> {
        let node = self.client.node_register(&self.registration, &self.keys.next("register")).await?;
        if let Some(mesh) = &self.mesh {
            mesh.set_subnet(node.value.subnet.as_deref());
        }
        Ok(())
    }

    /// Register (retrying), heartbeat, apply the mesh and follow its peer list, until aborted
    /// (its heartbeats and mesh passes end with it).
    async fn run(self: Arc<Self>) {
        while let Err(e) = self.register().await {
            tracing::warn!(error = %e, "cannot register the node; retrying");
            tokio::time::sleep(RETRY_AFTER).await;
        }
        tracing::debug!(name = %self.registration.name, "edge-only node registered");
        let mut tasks = JoinSet::new();
        let me = self.clone();
        tasks.spawn(async move {
            loop {
                tokio::time::sleep(HEARTBEAT_EVERY).await;
                let name = me.registration.name.as_str();
                if let Err(e) = me.client.node_heartbeat(name, &Heartbeat::default(), &me.keys.next("hb")).await {
                    tracing::warn!(error = %e, "heartbeat failed");
                }
            }
        });
        let Some(mesh) = self.mesh.clone() else {
            // Nothing to follow: only heartbeats, until aborted.
            while tasks.join_next().await.is_some() {}
            return;
        };
        tasks.spawn(mesh.clone().run(vt_agent::mesh::CHECK_INTERVAL));
        // The peer list comes with the node's instances (none here), by cursor.
        let name = self.registration.name.as_str();
        let mut cursor: Option<u64> = None;
        loop {
            let answer = match cursor {
                Some(seq) => self.client.node_instances_follow(name, seq, FOLLOW_WAIT).await,
                None => self.client.node_instances(name).await,
            };
            match answer {
                Ok(list) => {
                    if !list.items.is_empty() {
                        tracing::warn!(
                            instances = list.items.len(),
                            "instances are placed on this edge-only node; it runs none"
                        );
                    }
                    cursor = Some(list.seq);
                    mesh.follow(&list.mesh);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read this node's mesh peers; retrying");
                    cursor = None;
                    tokio::time::sleep(RETRY_AFTER).await;
                }
            }
        }
    }
}
