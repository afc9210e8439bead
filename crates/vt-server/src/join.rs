//! A node that joined a remote control plane (`vt server --role agent,edge --join URL`;
//! docs/nodes.md): the node agent, and optionally the edge, run here, following the control plane over
//! HTTP(S) with the node's own token. An edge-only node (`--role edge`) enrolls here too and
//! runs in [`crate::edge_node`].
//!
//! The first start enrolls: it makes the node's WireGuard key pair (`<data-dir>/wireguard.key`,
//! 0600), exchanges the single-use enrollment token for the node's token (`<data-dir>/node-token`,
//! 0600, written before anything else uses it) and records the enrollment
//! (`<data-dir>/enrollment.json`: node id, name, labels, control plane). Later starts find them
//! and never need the enrollment token again. The agent registers with the key's public half.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use vt_api::{EnrollNode, Hostname};

use crate::data_dir::{DataDir, DataDirLock};
use crate::{Notice, ServerConfig, ServerError, Stopped};

/// How long a starting node waits for its first registration before it says it is ready.
const REGISTER_WAIT: Duration = Duration::from_secs(10);

/// Where a node joins, and with what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Join {
    /// The control plane's API URL (`https://cp.example:7411`).
    pub url: String,
    /// Other control planes on the same database (`--join URL,URL2`): the node turns to the
    /// next when the one it uses cannot be reached (docs/nodes.md).
    pub fallbacks: Vec<String>,
    /// The enrollment token (`vt node enroll-token create`); only the first start needs it.
    pub enroll_token: Option<String>,
}

impl Join {
    /// A client of the control plane with `token`, turning to the fallbacks as needed.
    pub fn client(&self, token: String) -> vt_client::Client {
        vt_client::Client::new(&self.url, Some(token)).with_fallbacks(&self.fallbacks)
    }
}

/// What `<data-dir>/enrollment.json` keeps: no secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrollment {
    pub node_id: String,
    pub name: String,
    pub labels: std::collections::BTreeMap<String, String>,
    pub control_plane: String,
}

/// A WireGuard key pair: the private key stays in the data directory.
pub struct WireguardKey {
    secret: x25519_dalek::StaticSecret,
}

impl WireguardKey {
    /// The key in `path`, or a new one written there (0600).
    pub fn load_or_create(path: &Path) -> Result<WireguardKey, ServerError> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let bad = |why: String| ServerError::Config(format!("{}: {why}", path.display()));
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let bytes: [u8; 32] = b64
                    .decode(text.trim())
                    .ok()
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| bad("not a WireGuard private key (32 bytes, base64)".into()))?;
                Ok(WireguardKey { secret: x25519_dalek::StaticSecret::from(bytes) })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut bytes = [0u8; 32];
                getrandom::fill(&mut bytes).map_err(|e| bad(format!("no randomness for a key: {e}")))?;
                let key = WireguardKey { secret: x25519_dalek::StaticSecret::from(bytes) };
                vt_secrets::write_private(path, format!("{}\n", b64.encode(key.secret.to_bytes())).as_bytes())
                    .map_err(|e| bad(format!("cannot write it: {e}")))?;
                Ok(key)
            }
            Err(e) => Err(bad(format!("cannot read it: {e}"))),
        }
    }

    /// The public key, base64 (what `wg` shows and peers configure).
    pub fn public(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(x25519_dalek::PublicKey::from(&self.secret).as_bytes())
    }
}

/// A started node: its agent, its edge or both, following the remote control plane.
pub struct NodeServer {
    pub data: DataDir,
    pub name: Hostname,
    pub enrollment: Enrollment,
    pub notices: Vec<Notice>,
    _lock: DataDirLock,
    agent: RunningAgent,
    edge: Option<(vt_ingress::Ingress, JoinHandle<()>)>,
    vm_stop_timeout: Duration,
}

impl NodeServer {
    pub async fn start(config: &ServerConfig, join: &Join) -> Result<NodeServer, ServerError> {
        config.check()?;
        let Some(name) = config.agent.clone() else {
            return Err(ServerError::Config(
                "a joined node without its agent is an edge-only node (`crate::edge_node::EdgeNode`)".into(),
            ));
        };
        let data = DataDir::create(&config.data_dir)
            .map_err(|source| ServerError::DataDir { path: config.data_dir.clone(), source })?;
        let lock = data.lock().map_err(ServerError::Locked)?;
        let mut notices = vec![];
        let key = WireguardKey::load_or_create(&data.wireguard_key())?;
        let (token, enrollment) = enroll(&data, join, &name, &mut notices).await?;
        notices.push(Notice::Info(format!(
            "node `{}` ({}) of {}; WireGuard public key {}",
            enrollment.name,
            enrollment.node_id,
            enrollment.control_plane,
            key.public()
        )));
        // The edge first: its ingress serves the table it kept from its last run at once.
        let edge = match &config.ingress {
            Some(addrs) => {
                let client = join.client(token.clone());
                let source = Arc::new(crate::remote_edge::HttpSource::new(client, name.to_string()));
                let (ingress, task, _) =
                    crate::ingress_and_edge(&data, addrs, source, &name, Duration::from_millis(250)).await?;
                notices.push(Notice::Info(format!("edge: the ingress serves every route on {addrs:?}")));
                Some((ingress, task))
            }
            None => None,
        };
        let agent = start_agent(config, &data, join, token, &name, &enrollment, &key, &mut notices).await?;
        Ok(NodeServer {
            data,
            name,
            enrollment,
            notices,
            _lock: lock,
            agent,
            edge,
            vm_stop_timeout: config.vm_stop_timeout,
        })
    }

    /// The VMs the agent runs now.
    pub fn running_vms(&self) -> usize {
        self.agent.agent.running_vms()
    }

    /// What the shutdown may ask while [`NodeServer::run`] owns the node.
    pub fn handle(&self) -> crate::ServerHandle {
        crate::ServerHandle { agent: Some(self.agent.agent.clone()) }
    }

    /// Run until `shutdown` resolves, then stop the VMs (through their guests, then killed) and
    /// the ingress's listeners.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) -> Result<Stopped, ServerError> {
        shutdown.await;
        let began = tokio::time::Instant::now();
        let mut stopped = Stopped::default();
        let RunningAgent { agent, task, channel } = self.agent;
        agent.stop_following();
        channel.abort();
        (stopped.vms, stopped.vms_killed) = crate::stop_vms(&agent, task, self.vm_stop_timeout).await;
        stopped.vms_stopped_in = began.elapsed();
        if let Some((ingress, task)) = self.edge {
            task.abort();
            ingress.close_listeners().await;
        }
        Ok(stopped)
    }
}

/// The node agent, following the control plane with the node's token, registering with its
/// WireGuard key (and in the mesh, unless `--no-mesh`). The first registration is tried before
/// it returns, so that a node said to be ready is known to the control plane; one that fails
/// (the control plane away) is retried by the agent.
#[allow(clippy::too_many_arguments)]
async fn start_agent(
    config: &ServerConfig,
    data: &DataDir,
    join: &Join,
    token: String,
    name: &Hostname,
    enrollment: &Enrollment,
    key: &WireguardKey,
    notices: &mut Vec<Notice>,
) -> Result<RunningAgent, ServerError> {
    let mut agent_config = crate::agent_config(config, data, &join.url, token, name);
    agent_config.fallback_servers = join.fallbacks.clone();
    agent_config.labels = enrollment.labels.clone();
    agent_config.wireguard_public_key = Some(key.public());
    if let Some(mesh) = &config.mesh {
        let mesh = mesh.agent_config(data, &join.url)?;
        notices.push(Notice::Info(format!(
            "mesh: interface `{}`, reached at {}",
            mesh.interface,
            SocketAddr::new(mesh.address, mesh.listen_port)
        )));
        agent_config.mesh = Some(mesh);
    }
    let agent = vt_agent::Agent::new(agent_config)
        .map_err(|e| ServerError::Config(format!("the node agent cannot start: {e}")))?;
    if let Some(why) = agent.network_refusal() {
        notices.push(Notice::Warning(format!("instances will not start on this node: {why}")));
    }
    match tokio::time::timeout(REGISTER_WAIT, agent.register()).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => notices.push(Notice::Warning(format!("not registered yet ({e}); the agent keeps trying"))),
        Err(_) => notices.push(Notice::Warning(format!(
            "not registered within {} s; the agent keeps trying",
            REGISTER_WAIT.as_secs()
        ))),
    }
    let task = tokio::spawn(agent.clone().run());
    // The control plane reaches this node's instances' logs and exec through the channel the
    // node opens (it never dials the node).
    let channel = tokio::spawn(agent.clone().serve_channel());
    Ok(RunningAgent { agent, task, channel })
}

/// A joined node's agent: its reconciler and its channel to the control plane.
struct RunningAgent {
    agent: Arc<vt_agent::Agent>,
    task: JoinHandle<()>,
    /// The node's channel to its control plane (`vt_agent::channel`).
    channel: JoinHandle<()>,
}

/// The node's token and enrollment: from the data directory, or enrolled now (an edge-only
/// node's too, `crate::edge_node`).
pub(crate) async fn enroll(
    data: &DataDir,
    join: &Join,
    name: &Hostname,
    notices: &mut Vec<Notice>,
) -> Result<(String, Enrollment), ServerError> {
    let recorded = std::fs::read(data.enrollment()).ok();
    let token = std::fs::read_to_string(data.node_token()).ok().map(|t| t.trim().to_owned());
    if let (Some(recorded), Some(token)) = (recorded, token) {
        let enrollment: Enrollment = serde_json::from_slice(&recorded).map_err(|e| {
            ServerError::Config(format!("{}: not an enrollment record: {e}", data.enrollment().display()))
        })?;
        if enrollment.name != name.as_str() {
            return Err(ServerError::Config(format!(
                "this data directory belongs to node `{}`; start it with `--node-name {}` (or use another --data-dir)",
                enrollment.name, enrollment.name
            )));
        }
        if join.enroll_token.is_some() {
            notices.push(Notice::Info(format!(
                "already enrolled as node `{}`: --enroll-token is not needed and was not used",
                enrollment.name
            )));
        }
        return Ok((token, enrollment));
    }
    let Some(enroll_token) = &join.enroll_token else {
        return Err(ServerError::Config(format!(
            "this host has not joined {} yet: pass --enroll-token TOKEN (an admin makes one with `vt node enroll-token create`)",
            join.url
        )));
    };
    let client = join.client(enroll_token.clone());
    let enrolled = client
        .node_enroll(&EnrollNode { name: name.clone() })
        .await
        .map_err(|e| ServerError::Config(format!("enrolling at {} failed: {e}", client.base())))?;
    // The token first: a crash after it leaves a node that can start again with it.
    crate::tokens::write_node_token(&data.node_token(), &enrolled.secret)?;
    let enrollment = Enrollment {
        node_id: enrolled.node_id.to_string(),
        name: enrolled.name,
        labels: enrolled.labels,
        control_plane: client.base().to_owned(),
    };
    let json = serde_json::to_vec_pretty(&enrollment).map_err(|e| ServerError::Config(e.to_string()))?;
    vt_secrets::write_private(&data.enrollment(), &json)
        .map_err(|e| ServerError::Config(format!("cannot write {}: {e}", data.enrollment().display())))?;
    notices.push(Notice::Info(format!("enrolled at {} as node `{}`", enrollment.control_plane, enrollment.name)));
    Ok((enrolled.secret, enrollment))
}
